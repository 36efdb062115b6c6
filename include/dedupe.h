/* dedupe: the idempotency window: the event_ids accepted in the last
 * window_s seconds, at most max_ids of them.
 *
 * An id is remembered from its arrival (the server's wall clock when it
 * was accepted, or when recovery replayed it) until window_s seconds later;
 * dedupe_expire drops the ones older than that. When max_ids are held, the
 * oldest is evicted before its time to make room, and counted
 * (dedupe_evicted_early): that is the only way an id re-sent within the
 * window is not recognised. window_s = 0 turns the window off (nothing is
 * remembered, nothing is a duplicate).
 *
 * Keys are SipHash values of the event_id under the instance's secret key
 * (dedupe_set_key, kept in snapshots), so clients cannot aim ids at one
 * probe chain; a false duplicate needs a 64-bit collision inside the window
 * (~1e-7 with 4M ids held). Snapshots of format <= 2 hold keys of the old
 * unkeyed hash64 with no arrival time: dedupe_restore marks them legacy,
 * and while any is held dedupe_seen also looks an id up under the old
 * hash (docs/DURABILITY.md, "Upgrading a snapshot").
 *
 * Memory: 28 bytes per id of max_ids (an 8-byte key in a table of at least
 * 2 x max_ids positions, a power of two; an 8-byte key and a 4-byte arrival
 * time in the FIFO ring), allocated at create and touched as ids arrive.
 *
 * Not thread-safe: the service calls it under the store lock. It owns its
 * arrays. Times are Unix seconds (0 .. 2^32-1). */
#ifndef LTVD_DEDUPE_H
#define LTVD_DEDUPE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "hash.h"

typedef struct Dedupe Dedupe;

/* max_ids >= 1; window_s >= 0 (0: off). */
int dedupe_create(Dedupe **out, size_t max_ids, int64_t window_s);
void dedupe_destroy(Dedupe *d); /* NULL-safe */
/* store_collapse's counterpart for the window's arrays: any thread, no
 * lock needed (the arrays never move). */
void dedupe_collapse(Dedupe *d);
/* Sets the secret hash key; only while the window is empty (-EBUSY). */
int dedupe_set_key(Dedupe *d, const HashKey *key);

/* Forgets every id that arrived more than window_s seconds before now. */
void dedupe_expire(Dedupe *d, int64_t now);
/* Is event_id in the window? *key gets its key, for dedupe_insert. */
bool dedupe_seen(const Dedupe *d, const char *event_id, size_t len, uint64_t *key);
/* Remembers a key (from dedupe_seen, not in the window) as arrived at now
 * (or at the newest arrival so far if the clock went back), evicting the
 * oldest early if max_ids are held. */
void dedupe_insert(Dedupe *d, uint64_t key, int64_t now);

size_t dedupe_count(const Dedupe *d);
size_t dedupe_capacity(const Dedupe *d); /* max_ids; 0 while off */
uint64_t dedupe_evicted_early(const Dedupe *d); /* since create */
/* How many of the oldest keys are of the old unkeyed hash. */
size_t dedupe_legacy_count(const Dedupe *d);

/* Shards (cluster mode, docs/CLUSTER.md): each key may carry the shard
 * (partition) of the event it stands for, so that a shard's part of the
 * window can be handed to another node or forgotten. Off by default;
 * dedupe_use_shards turns it on while the window is empty (-EBUSY
 * otherwise, -ENOMEM): 2 more bytes per id of max_ids. */
#define DEDUPE_NO_SHARD 0xFFFFu
int dedupe_use_shards(Dedupe *d);
/* Is this key (nonzero) in the window? */
bool dedupe_holds(const Dedupe *d, uint64_t key);
/* dedupe_insert, the key marked as of shard (< DEDUPE_NO_SHARD). */
void dedupe_insert_shard(Dedupe *d, uint64_t key, int64_t now, uint32_t shard);
/* Every key of shard with its arrival time, oldest first. */
void dedupe_foreach_shard(const Dedupe *d, uint32_t shard, void (*fn)(void *arg, uint64_t key, int64_t arrival),
                          void *arg);
/* Forgets every key of every shard k < nshards with drop[k]; the others
 * keep their order and arrival times. O(max_ids). */
void dedupe_drop_shards(Dedupe *d, const bool *drop, size_t nshards);

/* Snapshots: every key with its arrival time, oldest first; and restoring
 * them, oldest first (the legacy ones before any other). A key already held
 * is skipped. */
void dedupe_foreach(const Dedupe *d, void (*fn)(void *arg, uint64_t key, int64_t arrival), void *arg);
void dedupe_restore(Dedupe *d, uint64_t key, int64_t arrival, bool legacy);

#endif
