/* store: the in-memory table of shoppers.
 *
 * Each shopper (UserState) lives in a fixed-size slot holding its id, its
 * aggregates, the LSTM state h and c, and a ring of its most recent in-order
 * events (kept so its state can be rebuilt under new weights). Slots come
 * from chunks of STORE_CHUNK_SLOTS allocated as the table grows, never per
 * event; the table refuses new shoppers beyond max_users (-ENOSPC).
 *
 * Locking: the caller holds store_lock() around every call except
 * store_create/destroy, store_visit (which takes the lock itself) and the
 * figures (store_count, store_bytes, store_slot_bytes, store_config), which
 * are atomic or immutable. The store owns every slot; a UserState pointer
 * is valid only while the lock is held.
 *
 * The index hashes ids with SipHash under a secret HashKey (hash.h), so
 * ids chosen by clients cannot be aimed at one probe chain. store_create
 * leaves the key zero: the service sets its instance's key before the
 * first insert (a snapshot carries it). */
#ifndef LTVD_STORE_H
#define LTVD_STORE_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "encoding.h"
#include "hash.h"
#include "shopper.h"

/* 16384 slots: at the default model (896-byte slots) a chunk is exactly
 * seven 2 MiB huge pages (util_table_alloc), and other sizes lose at most
 * one partial huge page per chunk to small pages. A build may choose
 * smaller chunks (the fuzz build does: a fresh table per input would
 * otherwise map 16384 slots). */
#ifndef STORE_CHUNK_SLOTS
#define STORE_CHUNK_SLOTS 16384u
#endif

/* One retained event: 12 bytes. */
typedef struct RecentEvent {
    uint32_t ts;       /* Unix seconds (fits: ts <= 2100) */
    float value;
    uint16_t quantity; /* saturated at 65535 */
    uint8_t type;      /* EventType */
    uint8_t pad;
} RecentEvent;

typedef struct UserState {
    uint64_t hash;        /* store_hash(id); free-list link while the slot is free */
    uint32_t net_id;      /* LstmWeights id that h and c were computed under */
    uint16_t ring_head;   /* index of the oldest retained event */
    uint16_t ring_len;
    ShopperAgg agg;       /* every event, late ones included */
    EncodeContext ctx;    /* encoder context after the newest in-order event */
    EncodeContext ring_ctx; /* encoder context before the oldest retained event */
    uint8_t id_len;       /* 0 marks a free slot */
    char id[USER_ID_MAX + 1];
    float data[];         /* h (H,), c (H,), then RecentEvent ring (R,) */
} UserState;

typedef struct StoreConfig {
    size_t max_users;
    int hidden;    /* H */
    int ring_cap;  /* R, <= 65535 */
} StoreConfig;

typedef struct Store Store;

int store_create(Store **out, const StoreConfig *cfg);
void store_destroy(Store *s); /* NULL-safe */

/* Sets the index's hash key; only while no slot was ever used (-EBUSY). */
int store_set_key(Store *s, const HashKey *key);
const HashKey *store_key(const Store *s);
/* The hash of an id under the store's key (what UserState.hash holds). */
uint64_t store_hash(const Store *s, const char *id, size_t len);
/* An unkeyed hash of u's id (the index's hash before it was keyed): the
 * same on every instance, for choices that must not depend on the key
 * (the training sample and its validation split), never for a table. */
uint64_t store_stable_hash(const UserState *u);
/* The same of an id (the training history's key, history.h). */
uint64_t store_stable_hash_id(const char *id, size_t len);
/* Allocates the slots n more store_insert calls need (at most up to
 * max_users), so that they cannot fail with -ENOMEM. 0 or -ENOMEM. */
int store_reserve(Store *s, size_t n);

/* After a snapshot's fork: the table's pages split by writes while the
 * child lived merged back into huge pages (util_table_collapse), so the
 * next fork is short again. Takes the lock only to read the chunk count;
 * the copying runs outside it, on the caller's thread. */
void store_collapse(Store *s);

void store_lock(Store *s);
void store_unlock(Store *s);

/* Lock held: if another thread is waiting for the lock, lets it take the
 * lock first (waiting up to 1 ms for it to), then takes it back. For a
 * long run of short steps under the lock (a batch of predictions). */
void store_let_waiters(Store *s);

UserState *store_find(Store *s, const char *id, size_t len);
/* The shopper whose id hashes to h (the first, in the 2^-64 case of two). */
UserState *store_find_hash(Store *s, uint64_t h);
/* Inserts a new shopper (must not exist) with zeroed state. -ENOSPC at cap. */
int store_insert(Store *s, const char *id, size_t len, UserState **out);
/* -ENOENT if absent. */
int store_remove(Store *s, const char *id, size_t len);

float *store_user_h(const Store *s, UserState *u); /* (H,) */
float *store_user_c(const Store *s, UserState *u); /* (H,) */
/* The k-th retained event, oldest first (k < u->ring_len). */
RecentEvent *store_ring_at(const Store *s, UserState *u, unsigned k);
/* Appends an in-order event, evicting the oldest (and advancing ring_ctx). */
void store_ring_push(const Store *s, UserState *u, const Event *ev);
/* The event a retained record stands for (no ids). */
void store_ring_event(const RecentEvent *r, Event *out);

/* Re-creates a shopper from a snapshot's raw slot (same stride). -EEXIST,
 * -ENOSPC, -EINVAL as store_insert; -EBADMSG if the slot's ring (length,
 * start, event types) or id is not one this table could have written. */
int store_restore(Store *s, const UserState *raw);
/* A hint before store_restore of raw's id: starts loading the index entry
 * it will probe, so that a loader can overlap the cache misses of the next
 * few shoppers (snapshot_load). Changes nothing. */
void store_prefetch(const Store *s, const UserState *raw);

/* Every shopper under one hold of the lock (snapshots): slots
 * [0, store_slot_high), store_slot_at gives NULL for a free one. */
size_t store_slot_high(Store *s);
UserState *store_slot_at(Store *s, size_t idx);

/* fn returns 0 to go on, anything else to stop the walk. Store lock held. */
typedef int (*StoreVisitFn)(void *arg, UserState *u);
/* Worker: calls fn for every shopper in slot order, taking the lock for at
 * most `batch` slots at a time and releasing it in between, so an HTTP
 * thread waits for one batch at most (a thread waiting for the lock gets
 * it between batches). The caller must not hold the lock.
 * A shopper added or removed during the walk may or may not be visited. */
void store_visit(Store *s, size_t batch, StoreVisitFn fn, void *arg);
/* Worker: the same from slot `from` on; returns the slot to go on from
 * after fn stopped the walk, SIZE_MAX once every slot was visited. */
size_t store_visit_from(Store *s, size_t from, size_t batch, StoreVisitFn fn, void *arg);

size_t store_count(const Store *s);
size_t store_bytes(const Store *s);  /* slots + index, allocated */
size_t store_slot_bytes(const Store *s);
const StoreConfig *store_config(const Store *s); /* as created */

#endif
