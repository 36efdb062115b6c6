/* dedupe: a bounded window of recently seen event_ids.
 *
 * Keys are 64-bit hashes of the event_id (a false duplicate needs a 64-bit
 * collision within the window: ~1e-7 for a window of 1M). When full, the
 * oldest key is forgotten (FIFO), so an event_id repeated after `capacity`
 * newer ids is applied again: that is the documented window.
 * Not thread-safe: the service calls it under the store lock. */
#ifndef LTVD_DEDUPE_H
#define LTVD_DEDUPE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct Dedupe Dedupe;

int dedupe_create(Dedupe **out, size_t capacity);
void dedupe_destroy(Dedupe *d); /* NULL-safe */
uint64_t dedupe_key(const char *event_id, size_t len);
bool dedupe_contains(const Dedupe *d, uint64_t key);
/* Inserts key (not already present), evicting the oldest when full. */
void dedupe_insert(Dedupe *d, uint64_t key);
size_t dedupe_count(const Dedupe *d);
size_t dedupe_capacity(const Dedupe *d);
/* Keys forgotten so far because the window was full (the oldest first). */
uint64_t dedupe_evictions(const Dedupe *d);
/* Calls fn for every key, oldest first (for snapshots). */
void dedupe_foreach(const Dedupe *d, void (*fn)(void *arg, uint64_t key), void *arg);

#endif
