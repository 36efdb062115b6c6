/* dedupe: the event_id window: an open-addressing set of nonzero keys plus
 * a FIFO ring of the same keys with their arrival times, oldest first, for
 * expiry and eviction. Not thread-safe: the service holds the store lock;
 * it owns its arrays. */
#include "dedupe.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

/* The seed the unkeyed hash used before keyed hashing (snapshot format <= 2). */
#define LEGACY_SEED 0x65766e745f696400ull

struct Dedupe {
    HashKey key;
    int64_t window_s;
    uint64_t *table;    /* (mask+1,), 0 = empty */
    size_t mask;
    uint64_t *ring_key; /* (cap,) */
    uint32_t *ring_at;  /* (cap,): arrival, Unix seconds, nondecreasing from head */
    uint16_t *ring_shard; /* (cap,) or NULL: shards off */
    size_t cap, head, len;
    size_t legacy;      /* the oldest `legacy` entries are hash64 keys */
    uint64_t evicted_early;
};

int dedupe_create(Dedupe **out, size_t max_ids, int64_t window_s)
{
    if (max_ids == 0 || window_s < 0)
        return -EINVAL;
    Dedupe *d = calloc(1, sizeof *d);
    if (!d)
        return -ENOMEM;
    size_t cap = window_s == 0 ? 1 : max_ids; /* off: nothing is ever held */
    size_t size = 16;
    while (size < cap * 2)
        size <<= 1;
    d->mask = size - 1;
    d->cap = cap;
    d->window_s = window_s;
    d->table = util_table_alloc(size * sizeof(uint64_t)); /* probed at random: huge pages */
    d->ring_key = util_table_alloc(cap * sizeof(uint64_t));
    d->ring_at = util_table_alloc(cap * sizeof(uint32_t));
    if (!d->table || !d->ring_key || !d->ring_at) {
        dedupe_destroy(d);
        return -ENOMEM;
    }
    *out = d;
    return 0;
}

void dedupe_collapse(Dedupe *d)
{
    util_table_collapse(d->table, (d->mask + 1) * sizeof(uint64_t));
    util_table_collapse(d->ring_key, d->cap * sizeof(uint64_t));
    util_table_collapse(d->ring_at, d->cap * sizeof(uint32_t));
}

void dedupe_destroy(Dedupe *d)
{
    if (!d)
        return;
    util_table_free(d->table, (d->mask + 1) * sizeof(uint64_t));
    util_table_free(d->ring_key, d->cap * sizeof(uint64_t));
    util_table_free(d->ring_at, d->cap * sizeof(uint32_t));
    free(d->ring_shard);
    free(d);
}

int dedupe_set_key(Dedupe *d, const HashKey *key)
{
    if (d->len)
        return -EBUSY;
    /* its own key, apart from the shopper index's (domain separation) */
    d->key = (HashKey){key->k0, key->k1 ^ 0x6576656e745f6964ull};
    return 0;
}

static uint64_t nonzero(uint64_t k) { return k ? k : 1; }

static bool contains(const Dedupe *d, uint64_t key)
{
    for (size_t i = (size_t)key & d->mask;; i = (i + 1) & d->mask) {
        if (d->table[i] == key)
            return true;
        if (d->table[i] == 0)
            return false;
    }
}

bool dedupe_seen(const Dedupe *d, const char *event_id, size_t len, uint64_t *key)
{
    *key = nonzero(hash_keyed(&d->key, event_id, len));
    if (d->len == 0)
        return false;
    if (contains(d, *key))
        return true;
    return d->legacy > 0 && contains(d, nonzero(hash64(event_id, len, LEGACY_SEED)));
}

static void table_remove(Dedupe *d, uint64_t key)
{
    size_t i = (size_t)key & d->mask;
    while (d->table[i] != key) {
        if (d->table[i] == 0)
            return;
        i = (i + 1) & d->mask;
    }
    d->table[i] = 0;
    for (size_t j = (i + 1) & d->mask; d->table[j]; j = (j + 1) & d->mask) {
        if (probe_can_fill(i, j, (size_t)d->table[j] & d->mask, d->mask)) {
            d->table[i] = d->table[j];
            d->table[j] = 0;
            i = j;
        }
    }
}

/* key not in the table */
static void table_put(Dedupe *d, uint64_t key)
{
    size_t i = (size_t)key & d->mask;
    while (d->table[i] != 0)
        i = (i + 1) & d->mask;
    d->table[i] = key;
}

static void pop_oldest(Dedupe *d)
{
    table_remove(d, d->ring_key[d->head]);
    d->head = (d->head + 1) % d->cap;
    d->len--;
    if (d->legacy)
        d->legacy--;
}

void dedupe_expire(Dedupe *d, int64_t now)
{
    while (d->len && (int64_t)d->ring_at[d->head] + d->window_s < now)
        pop_oldest(d);
}

static uint32_t clamp_time(int64_t t) { return t < 0 ? 0 : t > (int64_t)UINT32_MAX ? UINT32_MAX : (uint32_t)t; }

static void push(Dedupe *d, uint64_t key, int64_t now, uint32_t shard)
{
    if (d->len == d->cap) {
        pop_oldest(d);
        d->evicted_early++;
    }
    uint32_t at = clamp_time(now);
    if (d->len) {
        uint32_t newest = d->ring_at[(d->head + d->len - 1) % d->cap];
        if (at < newest)
            at = newest; /* keep the ring in arrival order if the clock steps back */
    }
    table_put(d, key);
    size_t tail = (d->head + d->len) % d->cap;
    d->ring_key[tail] = key;
    d->ring_at[tail] = at;
    if (d->ring_shard)
        d->ring_shard[tail] = (uint16_t)(shard < DEDUPE_NO_SHARD ? shard : DEDUPE_NO_SHARD);
    d->len++;
}

void dedupe_insert(Dedupe *d, uint64_t key, int64_t now)
{
    if (d->window_s > 0)
        push(d, key, now, DEDUPE_NO_SHARD);
}

void dedupe_insert_shard(Dedupe *d, uint64_t key, int64_t now, uint32_t shard)
{
    if (d->window_s > 0)
        push(d, key, now, shard);
}

void dedupe_restore(Dedupe *d, uint64_t key, int64_t arrival, bool legacy)
{
    key = nonzero(key);
    if (d->window_s == 0 || contains(d, key) || (legacy && d->len > d->legacy))
        return; /* a legacy key after a keyed one would break the front-of-ring rule */
    push(d, key, arrival, DEDUPE_NO_SHARD);
    if (legacy)
        d->legacy++;
}

size_t dedupe_count(const Dedupe *d) { return d->len; }
size_t dedupe_capacity(const Dedupe *d) { return d->window_s ? d->cap : 0; }
uint64_t dedupe_evicted_early(const Dedupe *d) { return d->evicted_early; }
size_t dedupe_legacy_count(const Dedupe *d) { return d->legacy; }

void dedupe_foreach(const Dedupe *d, void (*fn)(void *arg, uint64_t key, int64_t arrival), void *arg)
{
    for (size_t i = 0; i < d->len; i++) {
        size_t k = (d->head + i) % d->cap;
        fn(arg, d->ring_key[k], d->ring_at[k]);
    }
}

bool dedupe_holds(const Dedupe *d, uint64_t key) { return d->len && contains(d, key); }

int dedupe_use_shards(Dedupe *d)
{
    if (d->len)
        return -EBUSY;
    if (d->ring_shard)
        return 0;
    d->ring_shard = malloc(d->cap * sizeof *d->ring_shard);
    return d->ring_shard ? 0 : -ENOMEM;
}

void dedupe_foreach_shard(const Dedupe *d, uint32_t shard, void (*fn)(void *arg, uint64_t key, int64_t arrival),
                          void *arg)
{
    if (!d->ring_shard)
        return;
    for (size_t i = 0; i < d->len; i++) {
        size_t k = (d->head + i) % d->cap;
        if (d->ring_shard[k] == shard)
            fn(arg, d->ring_key[k], d->ring_at[k]);
    }
}

void dedupe_drop_shards(Dedupe *d, const bool *drop, size_t nshards)
{
    if (!d->ring_shard)
        return;
    /* compact the ring in place (the write index never passes the read
     * index), then rebuild the table from what is left */
    size_t kept = 0, legacy = 0;
    for (size_t i = 0; i < d->len; i++) {
        size_t r = (d->head + i) % d->cap;
        uint16_t sh = d->ring_shard[r];
        if (sh < nshards && drop[sh])
            continue;
        size_t w = (d->head + kept) % d->cap;
        d->ring_key[w] = d->ring_key[r];
        d->ring_at[w] = d->ring_at[r];
        d->ring_shard[w] = sh;
        if (i < d->legacy)
            legacy++;
        kept++;
    }
    if (kept == d->len)
        return;
    d->len = kept;
    d->legacy = legacy;
    memset(d->table, 0, (d->mask + 1) * sizeof *d->table);
    for (size_t i = 0; i < d->len; i++)
        table_put(d, d->ring_key[(d->head + i) % d->cap]);
}
