/* dedupe: the event_id window: an open-addressing set of nonzero keys plus
 * a FIFO ring of the same keys in arrival order, for eviction. Not
 * thread-safe: the service holds the store lock; it owns its arrays. */
#include "dedupe.h"

#include <errno.h>
#include <stdlib.h>

#include "hash.h"

struct Dedupe {
    uint64_t *table; /* (mask+1,), 0 = empty */
    size_t mask;
    uint64_t *fifo;  /* (capacity,) */
    size_t capacity, head, len;
    uint64_t evictions; /* keys forgotten because the window was full */
};

int dedupe_create(Dedupe **out, size_t capacity)
{
    if (capacity == 0)
        return -EINVAL;
    Dedupe *d = calloc(1, sizeof *d);
    if (!d)
        return -ENOMEM;
    size_t size = 16;
    while (size < capacity * 2)
        size <<= 1;
    d->mask = size - 1;
    d->capacity = capacity;
    d->table = calloc(size, sizeof(uint64_t));
    d->fifo = calloc(capacity, sizeof(uint64_t));
    if (!d->table || !d->fifo) {
        dedupe_destroy(d);
        return -ENOMEM;
    }
    *out = d;
    return 0;
}

void dedupe_destroy(Dedupe *d)
{
    if (!d)
        return;
    free(d->table);
    free(d->fifo);
    free(d);
}

uint64_t dedupe_key(const char *event_id, size_t len)
{
    uint64_t k = hash64(event_id, len, 0x65766e745f696400ull);
    return k ? k : 1;
}

bool dedupe_contains(const Dedupe *d, uint64_t key)
{
    for (size_t i = (size_t)key & d->mask;; i = (i + 1) & d->mask) {
        if (d->table[i] == key)
            return true;
        if (d->table[i] == 0)
            return false;
    }
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

void dedupe_insert(Dedupe *d, uint64_t key)
{
    if (d->len == d->capacity) {
        table_remove(d, d->fifo[d->head]);
        d->head = (d->head + 1) % d->capacity;
        d->len--;
        d->evictions++;
    }
    size_t i = (size_t)key & d->mask;
    while (d->table[i] != 0)
        i = (i + 1) & d->mask;
    d->table[i] = key;
    d->fifo[(d->head + d->len) % d->capacity] = key;
    d->len++;
}

size_t dedupe_count(const Dedupe *d) { return d->len; }
size_t dedupe_capacity(const Dedupe *d) { return d->capacity; }
uint64_t dedupe_evictions(const Dedupe *d) { return d->evictions; }

void dedupe_foreach(const Dedupe *d, void (*fn)(void *arg, uint64_t key), void *arg)
{
    for (size_t i = 0; i < d->len; i++)
        fn(arg, d->fifo[(d->head + i) % d->capacity]);
}
