/* hash: 64-bit string hashing for the shopper table and the dedupe window,
 * and CRC-32 (IEEE) for file checksums. Pure functions, any thread. */
#ifndef LTVD_HASH_H
#define LTVD_HASH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

uint64_t hash64(const void *data, size_t len, uint64_t seed);
uint32_t crc32_update(uint32_t crc, const void *data, size_t len);

/* Linear probing with backward-shift deletion (the shopper index, the
 * dedupe set, the prediction log): may the entry at position j, whose home
 * position is home, move back into the hole? Yes unless home lies
 * cyclically in (hole, j]. The table has mask + 1 positions. */
static inline bool probe_can_fill(size_t hole, size_t j, size_t home, size_t mask)
{
    return ((j - home) & mask) >= ((j - hole) & mask);
}

#endif
