/* hash: 64-bit string hashing for the shopper table and the dedupe window,
 * and CRC-32 (IEEE) for file checksums.
 *
 * Two string hashes. hash_keyed is SipHash-1-3 under a secret 128-bit
 * HashKey: what the shopper index and the dedupe window use, so that
 * clients who choose user_ids and event_ids cannot make them collide
 * (hash flooding) without the key. Each instance draws its key once
 * (hash_key_random, getrandom(2)) and keeps it in its snapshots. hash64 is
 * the old unkeyed function: kept to read snapshots written before the key
 * existed (format <= 2) and for choices that must be the same on every
 * instance but are not worth attacking (the training sample and its
 * validation split).
 *
 * Pure functions, any thread (a forked snapshot child too), except
 * hash_key_random, which makes a system call. */
#ifndef LTVD_HASH_H
#define LTVD_HASH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct HashKey {
    uint64_t k0, k1; /* secret: never logged or served */
} HashKey;

/* Fills key from getrandom(2). 0 or -errno. */
int hash_key_random(HashKey *key);
/* SipHash-1-3 of data under key. */
uint64_t hash_keyed(const HashKey *key, const void *data, size_t len);
/* SipHash with c compression and d finalization rounds (2-4 is the
 * paper's recommended variant; tests check it against the paper's vector). */
uint64_t hash_siphash(const HashKey *key, const void *data, size_t len, int c, int d);
/* The unkeyed multiply-xorshift hash (see above: not for tables that hold
 * client-chosen strings). */
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
