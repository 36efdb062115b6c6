/* service_shard: the service's side of cluster mode (docs/CLUSTER.md): the
 * state as shards (partitions): a shard's shoppers and event_id window
 * written out so that another node can load them, loaded from such a
 * copy, and forgotten when this node no longer applies the shard; and the
 * follower switch (a node that serves the cluster's model and trains none
 * itself).
 *
 * A shard's copy (all numbers in this build's byte order; nodes of one
 * cluster run one build):
 *   char magic[8] "LTVDSHRD"; u32 format (1); u32 hidden; u32 ring_cap;
 *   u32 slot_bytes; u32 shard; u32 reserved; u64 users; u64 ids;
 *   users x raw slot (slot_bytes each);
 *   ids x {u64 key; i64 arrival (Unix seconds)}, oldest first;
 *   u32 crc32 of everything before it.
 * The slots are the store's own (as in a snapshot file); the ids are the
 * window's keys under the cluster's shared key (service_use_shards), so
 * they mean the same on every node. */
#include "service_internal.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#define SHARD_MAGIC "LTVDSHRD"
#define SHARD_FORMAT 1u

typedef struct ShardHeader {
    char magic[8];
    uint32_t format, hidden, ring_cap, slot_bytes, shard, reserved;
    uint64_t users, ids;
} ShardHeader;

typedef struct ShardId {
    uint64_t key;
    int64_t arrival;
} ShardId;

/* The net_id of a loaded shopper: no weights have it (ids are never 0,
 * include/model.h), so its state is recomputed under this node's network
 * before it is used (the copy's h and c were computed under the sender's).
 * (It was UINT32_MAX, the untrained network's id at train.seed 2^31 - 1.) */
#define NET_ID_NONE 0u

int service_use_shards(Service *s, uint32_t nshards, ServiceShardFn shard_of, void *arg, const HashKey *key)
{
    if (nshards == 0 || nshards > DEDUPE_NO_SHARD)
        return -EINVAL;
    store_lock(s->store);
    int rc = store_count(s->store) || dedupe_count(s->dedupe) ? -EBUSY : 0;
    if (!rc) {
        /* apart from the partition hash (domain separation); the window
         * derives its own from it (dedupe_set_key) */
        HashKey k = {key->k0 ^ 0x73686172645f6b30ull, key->k1 ^ 0x73686172645f6b31ull};
        rc = store_set_key(s->store, &k);
        if (!rc)
            rc = dedupe_set_key(s->dedupe, &k);
        if (!rc)
            rc = dedupe_use_shards(s->dedupe);
    }
    if (!rc) {
        s->nshards = nshards;
        s->shard_of = shard_of;
        s->shard_arg = arg;
    }
    store_unlock(s->store);
    return rc;
}

void service_set_model_follower(Service *s, bool follow) { atomic_store(&s->model_follower, follow); }
bool service_model_follower(Service *s) { return atomic_load(&s->model_follower); }

uint64_t service_model_version(Service *s)
{
    Model *m = service_model_acquire(s);
    uint64_t v = m->version;
    model_release(m);
    return v;
}

typedef struct ExportWalk {
    Service *s;
    uint32_t shard;
    size_t slot_bytes;
    ByteBuf *out;
    uint64_t users;
    int64_t event_clock;
    int err;
} ExportWalk;

static int export_shopper(void *arg, UserState *u)
{
    ExportWalk *w = arg;
    if (w->s->shard_of(w->s->shard_arg, u->id, u->id_len) != w->shard)
        return 0;
    if ((w->err = bytebuf_put(w->out, u, w->slot_bytes)) != 0)
        return 1;
    w->users++;
    return 0;
}

static void export_id(void *arg, uint64_t key, int64_t arrival)
{
    ExportWalk *w = arg;
    if (!w->err)
        w->err = bytebuf_put(w->out, &(ShardId){key, arrival}, sizeof(ShardId));
}

int service_shard_export(Service *s, uint32_t shard, ByteBuf *out, uint64_t *users)
{
    if (!s->shard_of)
        return -EINVAL;
    const StoreConfig *sc = store_config(s->store);
    size_t start = out->len;
    ShardHeader h = {.format = SHARD_FORMAT,
                     .hidden = (uint32_t)sc->hidden,
                     .ring_cap = (uint32_t)sc->ring_cap,
                     .slot_bytes = (uint32_t)store_slot_bytes(s->store),
                     .shard = shard};
    memcpy(h.magic, SHARD_MAGIC, sizeof h.magic);
    int rc = bytebuf_put(out, &h, sizeof h);
    if (rc)
        return rc;
    ExportWalk w = {.s = s, .shard = shard, .slot_bytes = h.slot_bytes, .out = out};
    store_visit(s->store, 1024, export_shopper, &w);
    size_t ids_at = out->len;
    if (!w.err) {
        store_lock(s->store);
        dedupe_foreach_shard(s->dedupe, shard, export_id, &w);
        store_unlock(s->store);
    }
    if (w.err) {
        out->len = start;
        return w.err;
    }
    h.users = w.users;
    h.ids = (out->len - ids_at) / sizeof(ShardId);
    memcpy(out->p + start, &h, sizeof h);
    uint32_t crc = crc32_update(0, out->p + start, out->len - start);
    if ((rc = bytebuf_put(out, &crc, sizeof crc)) != 0) {
        out->len = start;
        return rc;
    }
    *users = w.users;
    return 0;
}

typedef struct DropWalk {
    Service *s;
    const bool *drop;
    size_t dropped;
} DropWalk;

static int drop_shopper(void *arg, UserState *u)
{
    DropWalk *w = arg;
    uint32_t k = w->s->shard_of(w->s->shard_arg, u->id, u->id_len);
    if (k < w->s->nshards && w->drop[k]) {
        /* slots never move: freeing the one being visited leaves the walk's
         * place intact. The id is copied: the slot is cleared. */
        char id[USER_ID_MAX + 1];
        size_t len = u->id_len;
        memcpy(id, u->id, len);
        service_erase_locked(w->s, id, len);
        w->dropped++;
    }
    return 0;
}

size_t service_shard_drop(Service *s, const bool *drop)
{
    if (!s->shard_of)
        return 0;
    DropWalk w = {.s = s, .drop = drop};
    store_visit(s->store, 1024, drop_shopper, &w);
    store_lock(s->store);
    dedupe_drop_shards(s->dedupe, drop, s->nshards);
    store_unlock(s->store);
    return w.dropped;
}

/* Checks a copy's header, sizes and CRC against this node's store. */
static int shard_check(Service *s, uint32_t shard, const unsigned char *p, size_t len, ShardHeader *h, char *err,
                       size_t errlen)
{
    const StoreConfig *sc = store_config(s->store);
    if (len < sizeof *h + sizeof(uint32_t)) {
        snprintf(err, errlen, "shard copy of %zu bytes is truncated", len);
        return -EBADMSG;
    }
    memcpy(h, p, sizeof *h);
    if (memcmp(h->magic, SHARD_MAGIC, sizeof h->magic) != 0 || h->format != SHARD_FORMAT || h->shard != shard) {
        snprintf(err, errlen, "not a format %u copy of shard %u", SHARD_FORMAT, shard);
        return -EBADMSG;
    }
    if (h->hidden != (uint32_t)sc->hidden || h->ring_cap != (uint32_t)sc->ring_cap ||
        h->slot_bytes != store_slot_bytes(s->store)) {
        snprintf(err, errlen,
                 "shard %u was written for model.hidden_size %u, model.recent_events %u, %u-byte slots; "
                 "this node has %d, %d, %zu",
                 shard, h->hidden, h->ring_cap, h->slot_bytes, sc->hidden, sc->ring_cap, store_slot_bytes(s->store));
        return -EBADMSG;
    }
    size_t body = len - sizeof *h - sizeof(uint32_t);
    if (h->users > body / h->slot_bytes || h->ids > body / sizeof(ShardId) ||
        h->users * h->slot_bytes + h->ids * sizeof(ShardId) != body) {
        snprintf(err, errlen, "shard %u: %zu bytes do not hold %llu shoppers and %llu ids", shard, len,
                 (unsigned long long)h->users, (unsigned long long)h->ids);
        return -EBADMSG;
    }
    uint32_t crc;
    memcpy(&crc, p + len - sizeof crc, sizeof crc);
    if (crc32_update(0, p, len - sizeof crc) != crc) {
        snprintf(err, errlen, "shard %u: CRC mismatch (corrupt copy)", shard);
        return -EBADMSG;
    }
    return 0;
}

int service_shard_import(Service *s, uint32_t shard, const void *data, size_t len, uint64_t *users, char *err,
                         size_t errlen)
{
    const unsigned char *p = data;
    ShardHeader h;
    int rc = s->shard_of ? shard_check(s, shard, p, len, &h, err, errlen) : -EINVAL;
    if (rc)
        return rc;
    const unsigned char *slots = p + sizeof h;
    store_lock(s->store);
    if (store_count(s->store) + h.users > (size_t)s->cfg.limits_max_users) {
        store_unlock(s->store);
        snprintf(err, errlen, "shard %u: %llu shoppers would exceed limits.max_users (%lld held)", shard,
                 (unsigned long long)h.users, (long long)store_count(s->store));
        return -ENOSPC;
    }
    if ((rc = store_reserve(s->store, h.users)) != 0) {
        store_unlock(s->store);
        snprintf(err, errlen, "shard %u: no memory for %llu shoppers", shard, (unsigned long long)h.users);
        return -ENOMEM;
    }
    int64_t clock = 0;
    uint64_t done = 0;
    for (; done < h.users; done++) {
        const UserState *raw = (const UserState *)(slots + done * h.slot_bytes);
        if (raw->id_len == 0 || raw->id_len > USER_ID_MAX ||
            s->shard_of(s->shard_arg, raw->id, raw->id_len) != shard) { /* not one of this shard's */
            rc = -EBADMSG;
            break;
        }
        if ((rc = store_restore(s->store, raw)) != 0)
            break;
        UserState *u = store_find(s->store, raw->id, raw->id_len);
        u->net_id = NET_ID_NONE;
        if (raw->agg.last_ts > clock)
            clock = raw->agg.last_ts;
    }
    if (rc) { /* all or nothing: take back what was loaded */
        snprintf(err, errlen, "shard %u: shopper %llu of %llu cannot be loaded (%s)", shard,
                 (unsigned long long)done + 1, (unsigned long long)h.users, strerror(-rc));
        for (uint64_t i = 0; i < done; i++) {
            const UserState *raw = (const UserState *)(slots + i * h.slot_bytes);
            service_erase_locked(s, raw->id, raw->id_len);
        }
        store_unlock(s->store);
        return rc == -ENOMEM ? -ENOMEM : -EBADMSG;
    }
    const unsigned char *ids = slots + h.users * h.slot_bytes;
    for (uint64_t i = 0; i < h.ids; i++) {
        ShardId e;
        memcpy(&e, ids + i * sizeof e, sizeof e);
        if (e.key && !dedupe_holds(s->dedupe, e.key))
            dedupe_insert_shard(s->dedupe, e.key, e.arrival, shard);
    }
    store_unlock(s->store);
    int64_t clk = atomic_load(&s->event_clock);
    while (clock > clk && !atomic_compare_exchange_weak(&s->event_clock, &clk, clock))
        ;
    *users = h.users;
    return 0;
}
