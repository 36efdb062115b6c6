/* hash: 64-bit string hashing for the shopper table and the dedupe window,
 * and CRC-32 (IEEE) for file checksums. Pure functions, any thread. */
#ifndef LTVD_HASH_H
#define LTVD_HASH_H

#include <stddef.h>
#include <stdint.h>

uint64_t hash64(const void *data, size_t len, uint64_t seed);
uint32_t crc32_update(uint32_t crc, const void *data, size_t len);

#endif
