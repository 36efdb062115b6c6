/* hash: SipHash (keyed, written from Aumasson and Bernstein's
 * description, "SipHash: a fast short-input PRF", 2012), the old unkeyed
 * multiply-xorshift hash, and a table-driven CRC-32. Pure; any thread (a
 * forked snapshot child too); hash_key_random makes a system call. */
#include "hash.h"

#include <errno.h>
#include <pthread.h>
#include <string.h>
#include <sys/random.h>

int hash_key_random(HashKey *key)
{
    unsigned char b[16];
    size_t got = 0;
    while (got < sizeof b) {
        ssize_t r = getrandom(b + got, sizeof b - got, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return -errno;
        got += (size_t)r;
    }
    memcpy(&key->k0, b, 8);
    memcpy(&key->k1, b + 8, 8);
    return 0;
}

static inline uint64_t rotl(uint64_t x, int b) { return (x << b) | (x >> (64 - b)); }

/* Bytes as a little-endian number, whatever the host's order. */
static inline uint64_t load_le(const unsigned char *p, size_t n)
{
    uint64_t w = 0;
    for (size_t i = 0; i < n; i++)
        w |= (uint64_t)p[i] << (8 * i);
    return w;
}

/* The paper's SipRound: an ARX network on four 64-bit words. */
#define SIPROUND(v0, v1, v2, v3) \
    do {                        \
        v0 += v1;               \
        v1 = rotl(v1, 13);      \
        v1 ^= v0;               \
        v0 = rotl(v0, 32);      \
        v2 += v3;               \
        v3 = rotl(v3, 16);      \
        v3 ^= v2;               \
        v0 += v3;               \
        v3 = rotl(v3, 21);      \
        v3 ^= v0;               \
        v2 += v1;               \
        v1 = rotl(v1, 17);      \
        v1 ^= v2;               \
        v2 = rotl(v2, 32);      \
    } while (0)

/* c and d are constants at each call site below, so the loops unroll. */
static inline uint64_t siphash(const HashKey *key, const void *data, size_t len, int c, int d)
{
    const unsigned char *p = data;
    uint64_t v0 = key->k0 ^ 0x736f6d6570736575ull; /* "somepseudorandomlygeneratedbytes" */
    uint64_t v1 = key->k1 ^ 0x646f72616e646f6dull;
    uint64_t v2 = key->k0 ^ 0x6c7967656e657261ull;
    uint64_t v3 = key->k1 ^ 0x7465646279746573ull;
    size_t left = len;
    for (; left >= 8; p += 8, left -= 8) {
        uint64_t m;
        memcpy(&m, p, 8);
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
        m = __builtin_bswap64(m);
#endif
        v3 ^= m;
        for (int i = 0; i < c; i++)
            SIPROUND(v0, v1, v2, v3);
        v0 ^= m;
    }
    /* the last word: the remaining bytes, the length mod 256 in the top byte */
    uint64_t m = load_le(p, left) | ((uint64_t)len << 56);
    v3 ^= m;
    for (int i = 0; i < c; i++)
        SIPROUND(v0, v1, v2, v3);
    v0 ^= m;
    v2 ^= 0xff;
    for (int i = 0; i < d; i++)
        SIPROUND(v0, v1, v2, v3);
    return v0 ^ v1 ^ v2 ^ v3;
}

uint64_t hash_keyed(const HashKey *key, const void *data, size_t len) { return siphash(key, data, len, 1, 3); }

uint64_t hash_siphash(const HashKey *key, const void *data, size_t len, int c, int d)
{
    return siphash(key, data, len, c, d);
}

static uint64_t mix64(uint64_t x)
{
    x ^= x >> 32;
    x *= 0xd6e8feb86659fd93ull;
    x ^= x >> 32;
    x *= 0xd6e8feb86659fd93ull;
    x ^= x >> 32;
    return x;
}

uint64_t hash64(const void *data, size_t len, uint64_t seed)
{
    const unsigned char *p = data;
    uint64_t h = seed ^ (len * 0x9e3779b97f4a7c15ull);
    while (len >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        h = mix64(h ^ w) + 0x9e3779b97f4a7c15ull;
        p += 8;
        len -= 8;
    }
    uint64_t tail = 0;
    memcpy(&tail, p, len);
    return mix64(h ^ tail ^ ((uint64_t)len << 56));
}

/* CRC-32 (IEEE 802.3, reflected, polynomial 0xedb88320), eight bytes a
 * step ("slicing by 8"): crc_table[k][b] is the CRC of byte b followed by k
 * zero bytes. The files' format is the same as a byte-at-a-time CRC's; this
 * is 4-6x faster, which a restart that checks a multi-GB snapshot feels
 * (docs/PERFORMANCE.md, "Ten million shoppers"). */
static uint32_t crc_table[8][256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;

static void crc_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = (c & 1) ? 0xedb88320u ^ (c >> 1) : c >> 1;
        crc_table[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; i++)
        for (int k = 1; k < 8; k++)
            crc_table[k][i] = (crc_table[k - 1][i] >> 8) ^ crc_table[0][crc_table[k - 1][i] & 0xff];
}

uint32_t crc32_update(uint32_t crc, const void *data, size_t len)
{
    pthread_once(&crc_once, crc_init);
    const unsigned char *p = data;
    crc = ~crc;
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__ /* the words below are read as little-endian numbers */
    while (len >= 8) {
        uint32_t lo, hi;
        memcpy(&lo, p, 4);
        memcpy(&hi, p + 4, 4);
        lo ^= crc;
        crc = crc_table[7][lo & 0xff] ^ crc_table[6][(lo >> 8) & 0xff] ^ crc_table[5][(lo >> 16) & 0xff] ^
              crc_table[4][lo >> 24] ^ crc_table[3][hi & 0xff] ^ crc_table[2][(hi >> 8) & 0xff] ^
              crc_table[1][(hi >> 16) & 0xff] ^ crc_table[0][hi >> 24];
        p += 8;
        len -= 8;
    }
#endif
    while (len--)
        crc = crc_table[0][(crc ^ *p++) & 0xff] ^ (crc >> 8);
    return ~crc;
}
