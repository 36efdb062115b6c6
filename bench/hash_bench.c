/* hash_bench: nanoseconds per hash of 16- and 64-byte ids: the old unkeyed
 * hash64 against SipHash-1-3 (hash_keyed, what ltvd uses) and SipHash-2-4.
 * Run by hand: build/bench/hash_bench [rounds]. Single thread; the ids
 * change every call so nothing is hoisted out of the loop. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hash.h"
#include "timeutil.h"

#define IDS 1024

static char ids[IDS][64];

typedef uint64_t (*HashFn)(const HashKey *k, const void *p, size_t n);

static uint64_t old_hash(const HashKey *k, const void *p, size_t n) { return hash64(p, n, k->k0); }
static uint64_t sip13(const HashKey *k, const void *p, size_t n) { return hash_keyed(k, p, n); }
static uint64_t sip24(const HashKey *k, const void *p, size_t n) { return hash_siphash(k, p, n, 2, 4); }

static double ns_per_hash(HashFn fn, size_t len, long rounds, uint64_t *sink)
{
    HashKey k = {0x0123456789abcdefull, 0xfedcba9876543210ull};
    uint64_t acc = 0, t0 = time_mono_ns();
    for (long r = 0; r < rounds; r++)
        for (int i = 0; i < IDS; i++)
            acc += fn(&k, ids[i], len);
    uint64_t t1 = time_mono_ns();
    *sink ^= acc;
    return (double)(t1 - t0) / ((double)rounds * IDS);
}

int main(int argc, char **argv)
{
    long rounds = argc > 1 ? atol(argv[1]) : 20000;
    if (rounds < 1)
        rounds = 1;
    for (int i = 0; i < IDS; i++)
        for (int j = 0; j < 64; j++)
            ids[i][j] = "abcdefghijklmnopqrstuvwxyz0123456789"[(i * 7 + j * 13 + (i >> 3) * j) % 36];
    const struct {
        const char *name;
        HashFn fn;
    } fns[] = {{"hash64 (old, unkeyed)", old_hash}, {"SipHash-1-3 (hash_keyed)", sip13}, {"SipHash-2-4", sip24}};
    uint64_t sink = 0;
    printf("%-26s %10s %10s\n", "ns/hash", "16 B", "64 B");
    for (size_t f = 0; f < sizeof fns / sizeof fns[0]; f++) {
        double a = ns_per_hash(fns[f].fn, 16, rounds, &sink), b = ns_per_hash(fns[f].fn, 64, rounds, &sink);
        printf("%-26s %10.2f %10.2f\n", fns[f].name, a, b);
    }
    return sink == 42; /* keeps the sums alive */
}
