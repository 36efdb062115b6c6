/* store: the shopper table: an open-addressing index (linear probing,
 * backward-shift deletion) over slots in chunks, with an intrusive free
 * list, and the batched walk the worker uses. Callers hold its lock
 * (include/store.h); it owns every slot. */
#include "store.h"

#include <errno.h>
#include <sched.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "hash.h"
#include "timeutil.h"
#include "pace.h"
#include "util.h"

#define NO_SLOT UINT32_MAX

#ifdef LTVD_LOCK_STATS
#include <dlfcn.h>
#include <stdio.h>
#include <time.h>

/* Lock-hold instrumentation, compiled in only with -DLTVD_LOCK_STATS
 * (docs/PERFORMANCE.md, "Tail latency"): each hold of the store lock is
 * timed, with the wait before it, per call site (the caller's address, or
 * the visit function of a store_visit walk). Once a second a thread of its
 * own appends the sites active in that second to the file named by
 * $LTVD_LOCK_STATS and starts the next second afresh. The figures live
 * under the store lock itself. */
#define LS_SITES 64
#define LS_BUCKETS 40 /* hold times by power of two of ns */

typedef struct LockSite {
    const void *site;
    uint64_t n, hold_ns, hold_max, wait_ns, wait_max;
    uint32_t hold_hist[LS_BUCKETS];
} LockSite;

typedef struct LockStats {
    LockSite sites[LS_SITES];
    FILE *out;
    pthread_t dumper;
    atomic_bool stop;
} LockStats;

static _Thread_local uint64_t ls_since;
static _Thread_local LockSite *ls_site;
#endif

struct Store {
    pthread_mutex_t lock;
    StoreConfig cfg;
    size_t stride;           /* bytes per slot */
    uint32_t *index;         /* (index_mask+1,): slot+1, 0 = empty */
    size_t index_mask;
    unsigned char **chunks;  /* (max_chunks,) */
    size_t max_chunks, nchunks;
    size_t high;             /* slots ever handed out */
    uint32_t free_head;      /* NO_SLOT when empty */
    atomic_size_t count;
    atomic_size_t bytes;
    HashKey key;             /* secret; set while empty */
    atomic_int waiters;      /* threads blocked in store_lock */
#ifdef LTVD_LOCK_STATS
    LockStats *ls;
#endif
};

static void ls_start(Store *s); /* the lock-hold figures: nothing without LTVD_LOCK_STATS */
static void ls_stop(Store *s);

int store_create(Store **out, const StoreConfig *cfg)
{
    if (cfg->max_users == 0 || cfg->max_users >= NO_SLOT || cfg->ring_cap < 1 || cfg->ring_cap > 65535 ||
        cfg->hidden < 1)
        return -EINVAL;
    Store *s = calloc(1, sizeof *s);
    if (!s)
        return -ENOMEM;
    s->cfg = *cfg;
    size_t raw = sizeof(UserState) + 2u * (size_t)cfg->hidden * sizeof(float) +
                 (size_t)cfg->ring_cap * sizeof(RecentEvent);
    s->stride = (raw + 7u) & ~(size_t)7u;
    size_t isize = 16;
    while (isize < cfg->max_users * 2)
        isize <<= 1;
    s->index_mask = isize - 1;
    s->index = util_table_alloc(isize * sizeof(uint32_t));
    s->max_chunks = (cfg->max_users + STORE_CHUNK_SLOTS - 1) / STORE_CHUNK_SLOTS;
    s->chunks = calloc(s->max_chunks, sizeof(*s->chunks));
    s->free_head = NO_SLOT;
    if (!s->index || !s->chunks || pthread_mutex_init(&s->lock, NULL) != 0) {
        util_table_free(s->index, isize * sizeof(uint32_t));
        free(s->chunks);
        free(s);
        return -ENOMEM;
    }
    atomic_init(&s->count, 0);
    atomic_init(&s->waiters, 0);
    atomic_init(&s->bytes, isize * sizeof(uint32_t));
    ls_start(s);
    *out = s;
    return 0;
}

void store_destroy(Store *s)
{
    if (!s)
        return;
    ls_stop(s);
    for (size_t i = 0; i < s->nchunks; i++)
        util_table_free(s->chunks[i], STORE_CHUNK_SLOTS * s->stride);
    free(s->chunks);
    util_table_free(s->index, (s->index_mask + 1) * sizeof(uint32_t));
    pthread_mutex_destroy(&s->lock);
    free(s);
}

int store_set_key(Store *s, const HashKey *key)
{
    if (atomic_load(&s->count) || s->high)
        return -EBUSY;
    s->key = *key;
    return 0;
}

const HashKey *store_key(const Store *s) { return &s->key; }
uint64_t store_hash(const Store *s, const char *id, size_t len) { return hash_keyed(&s->key, id, len); }

uint64_t store_stable_hash_id(const char *id, size_t len) { return hash64(id, len, 0x6c7476645f757372ull); }
uint64_t store_stable_hash(const UserState *u) { return store_stable_hash_id(u->id, u->id_len); }

/* One more chunk of STORE_CHUNK_SLOTS zeroed slots. -ENOMEM. */
static int add_chunk(Store *s)
{
    unsigned char *c = util_table_alloc(STORE_CHUNK_SLOTS * s->stride);
    if (!c)
        return -ENOMEM;
    s->chunks[s->nchunks++] = c;
    atomic_fetch_add(&s->bytes, STORE_CHUNK_SLOTS * s->stride);
    return 0;
}

int store_reserve(Store *s, size_t n)
{
    size_t room = s->cfg.max_users - atomic_load(&s->count);
    if (n > room)
        n = room;
    /* slots handed out without a new chunk: the free list plus the rest of the last chunk */
    while (s->nchunks * STORE_CHUNK_SLOTS - atomic_load(&s->count) < n && s->nchunks < s->max_chunks)
        if (add_chunk(s))
            return -ENOMEM;
    return 0;
}

void store_collapse(Store *s)
{
    store_lock(s);
    size_t n = s->nchunks; /* chunks[0, n) never change once set */
    store_unlock(s);
    for (size_t i = 0; i < n; i++)
        util_table_collapse(s->chunks[i], STORE_CHUNK_SLOTS * s->stride);
    util_table_collapse(s->index, (s->index_mask + 1) * sizeof(uint32_t));
}

/* Takes the lock, counting the threads that had to wait for it: glibc's
 * mutex is not fair, and a walk that released it and took it straight back
 * could keep a woken waiter out for the whole walk (store_let_waiters). */
static void mutex_take(Store *s)
{
    if (pthread_mutex_trylock(&s->lock) == 0)
        return;
    atomic_fetch_add(&s->waiters, 1);
    pthread_mutex_lock(&s->lock);
    atomic_fetch_sub(&s->waiters, 1);
}

#ifdef LTVD_LOCK_STATS
static uint64_t ls_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void lock_at(Store *s, const void *site)
{
    uint64_t t0 = ls_now();
    mutex_take(s);
    ls_since = ls_now();
    ls_site = NULL;
    if (!s->ls)
        return;
    for (size_t i = 0; i < LS_SITES; i++) {
        LockSite *k = &s->ls->sites[i];
        if (k->site == site || !k->site) {
            k->site = site;
            ls_site = k;
            break;
        }
    }
    if (ls_site) {
        uint64_t w = ls_since - t0;
        ls_site->wait_ns += w;
        ls_site->wait_max = w > ls_site->wait_max ? w : ls_site->wait_max;
    }
}

void store_lock(Store *s) { lock_at(s, __builtin_return_address(0)); }

void store_unlock(Store *s)
{
    if (ls_site) {
        uint64_t d = ls_now() - ls_since;
        unsigned b = d ? 63u - (unsigned)__builtin_clzll(d) : 0;
        ls_site->n++;
        ls_site->hold_ns += d;
        ls_site->hold_max = d > ls_site->hold_max ? d : ls_site->hold_max;
        ls_site->hold_hist[b < LS_BUCKETS ? b : LS_BUCKETS - 1]++;
        ls_site = NULL;
    }
    pthread_mutex_unlock(&s->lock);
}

/* Upper bound of the hold time below which a fraction q of the holds fall. */
static uint64_t ls_quantile(const LockSite *k, double q)
{
    uint64_t seen = 0;
    for (unsigned b = 0; b < LS_BUCKETS; b++) {
        seen += k->hold_hist[b];
        if ((double)seen >= q * (double)k->n)
            return 2ull << b;
    }
    return 0;
}

/* One line per site active in the last second: wall time, the site (its
 * offset in its binary: addr2line -f -e BINARY OFFSET), holds, total and
 * max hold, p50/p99 (power-of-two upper bounds), total and max wait. */
static void *ls_dumper(void *arg)
{
    Store *s = arg;
    LockSite copy[LS_SITES];
    while (!atomic_load(&s->ls->stop)) {
        struct timespec second = {1, 0};
        nanosleep(&second, NULL);
        pthread_mutex_lock(&s->lock);
        memcpy(copy, s->ls->sites, sizeof copy);
        memset(s->ls->sites, 0, sizeof s->ls->sites);
        pthread_mutex_unlock(&s->lock);
        struct timespec wall;
        clock_gettime(CLOCK_REALTIME, &wall);
        for (size_t i = 0; i < LS_SITES && copy[i].site; i++) {
            LockSite *k = &copy[i];
            if (!k->n)
                continue;
            Dl_info di;
            uintptr_t off = (uintptr_t)k->site;
            const char *sym = "?";
            if (dladdr(k->site, &di) && di.dli_fbase) {
                off -= (uintptr_t)di.dli_fbase;
                sym = di.dli_sname ? di.dli_sname : "?";
            }
            fprintf(s->ls->out, "%lld.%03ld site=0x%lx sym=%s n=%llu hold_ms=%.3f hold_max_us=%.1f "
                    "hold_p50_us<=%.1f hold_p99_us<=%.1f wait_ms=%.3f wait_max_us=%.1f\n", (long long)wall.tv_sec,
                    wall.tv_nsec / 1000000, (unsigned long)off, sym, (unsigned long long)k->n, k->hold_ns / 1e6,
                    k->hold_max / 1e3, ls_quantile(k, 0.5) / 1e3, ls_quantile(k, 0.99) / 1e3, k->wait_ns / 1e6,
                    k->wait_max / 1e3);
        }
        fflush(s->ls->out);
    }
    return NULL;
}

static void ls_start(Store *s)
{
    const char *path = getenv("LTVD_LOCK_STATS");
    if (!path || !*path || !(s->ls = calloc(1, sizeof *s->ls)))
        return;
    if (!(s->ls->out = fopen(path, "a")) || pthread_create(&s->ls->dumper, NULL, ls_dumper, s) != 0) {
        if (s->ls->out)
            fclose(s->ls->out);
        free(s->ls);
        s->ls = NULL;
    }
}

static void ls_stop(Store *s)
{
    if (!s->ls)
        return;
    atomic_store(&s->ls->stop, true);
    pthread_join(s->ls->dumper, NULL);
    fclose(s->ls->out);
    free(s->ls);
}
#else
static void lock_at(Store *s, const void *site)
{
    (void)site;
    mutex_take(s);
}

void store_lock(Store *s) { mutex_take(s); }
void store_unlock(Store *s) { pthread_mutex_unlock(&s->lock); }
static void ls_start(Store *s) { (void)s; }
static void ls_stop(Store *s) { (void)s; }
#endif

static inline UserState *slot(const Store *s, uint32_t i)
{
    return (UserState *)(s->chunks[i / STORE_CHUNK_SLOTS] + (size_t)(i % STORE_CHUNK_SLOTS) * s->stride);
}

/* Index position holding id, or the empty position where it would go. */
static size_t probe(const Store *s, const char *id, size_t len, uint64_t h, int *found)
{
    size_t i = (size_t)h & s->index_mask;
    for (;;) {
        uint32_t e = s->index[i];
        if (e == 0) {
            *found = 0;
            return i;
        }
        const UserState *u = slot(s, e - 1);
        if (u->hash == h && u->id_len == len && memcmp(u->id, id, len) == 0) {
            *found = 1;
            return i;
        }
        i = (i + 1) & s->index_mask;
    }
}

UserState *store_find(Store *s, const char *id, size_t len)
{
    if (len == 0 || len > USER_ID_MAX)
        return NULL;
    int found;
    uint64_t h = hash_keyed(&s->key, id, len);
    size_t i = probe(s, id, len, h, &found);
    return found ? slot(s, s->index[i] - 1) : NULL;
}

UserState *store_find_hash(Store *s, uint64_t h)
{
    for (size_t i = (size_t)h & s->index_mask; s->index[i]; i = (i + 1) & s->index_mask) {
        UserState *u = slot(s, s->index[i] - 1);
        if (u->hash == h)
            return u;
    }
    return NULL;
}

static int take_slot(Store *s, uint32_t *out)
{
    if (s->free_head != NO_SLOT) {
        *out = s->free_head;
        s->free_head = (uint32_t)slot(s, s->free_head)->hash;
        return 0;
    }
    if (s->high >= s->cfg.max_users)
        return -ENOSPC;
    if (s->high / STORE_CHUNK_SLOTS >= s->nchunks && add_chunk(s))
        return -ENOMEM;
    *out = (uint32_t)s->high++;
    return 0;
}

int store_insert(Store *s, const char *id, size_t len, UserState **out)
{
    if (len == 0 || len > USER_ID_MAX)
        return -EINVAL;
    int found;
    uint64_t h = hash_keyed(&s->key, id, len);
    size_t pos = probe(s, id, len, h, &found);
    if (found)
        return -EEXIST;
    if (atomic_load(&s->count) >= s->cfg.max_users)
        return -ENOSPC;
    uint32_t si;
    int rc = take_slot(s, &si);
    if (rc)
        return rc;
    UserState *u = slot(s, si);
    memset(u, 0, s->stride);
    u->hash = h;
    u->id_len = (uint8_t)len;
    memcpy(u->id, id, len);
    shopper_agg_init(&u->agg);
    s->index[pos] = si + 1;
    atomic_fetch_add(&s->count, 1);
    *out = u;
    return 0;
}

int store_remove(Store *s, const char *id, size_t len)
{
    if (len == 0 || len > USER_ID_MAX)
        return -ENOENT;
    int found;
    uint64_t h = hash_keyed(&s->key, id, len);
    size_t i = probe(s, id, len, h, &found);
    if (!found)
        return -ENOENT;
    uint32_t si = s->index[i] - 1;
    /* Backward-shift deletion keeps every probe chain unbroken. */
    s->index[i] = 0;
    size_t j = i;
    for (;;) {
        j = (j + 1) & s->index_mask;
        uint32_t e = s->index[j];
        if (e == 0)
            break;
        size_t home = (size_t)slot(s, e - 1)->hash & s->index_mask;
        if (probe_can_fill(i, j, home, s->index_mask)) {
            s->index[i] = e;
            s->index[j] = 0;
            i = j;
        }
    }
    UserState *u = slot(s, si);
    memset(u, 0, s->stride); /* erase: no trace of the shopper stays in memory */
    u->hash = s->free_head;
    s->free_head = si;
    atomic_fetch_sub(&s->count, 1);
    return 0;
}

float *store_user_h(const Store *s, UserState *u) { return u->data; }
float *store_user_c(const Store *s, UserState *u) { return u->data + s->cfg.hidden; }

static RecentEvent *ring_base(const Store *s, UserState *u)
{
    return (RecentEvent *)(u->data + 2 * s->cfg.hidden);
}

RecentEvent *store_ring_at(const Store *s, UserState *u, unsigned k)
{
    return ring_base(s, u) + (u->ring_head + k) % (unsigned)s->cfg.ring_cap;
}

void store_ring_event(const RecentEvent *r, Event *out)
{
    memset(out, 0, sizeof *out);
    out->ts = r->ts;
    out->value = r->value;
    out->quantity = r->quantity;
    out->type = (EventType)r->type;
}

void store_ring_push(const Store *s, UserState *u, const Event *ev)
{
    unsigned cap = (unsigned)s->cfg.ring_cap;
    if (u->ring_len == cap) {
        Event old;
        store_ring_event(store_ring_at(s, u, 0), &old);
        encode_context_advance(&u->ring_ctx, &old);
        u->ring_head = (uint16_t)((u->ring_head + 1) % cap);
        u->ring_len--;
    }
    RecentEvent *r = store_ring_at(s, u, u->ring_len);
    r->ts = (uint32_t)ev->ts;
    r->value = (float)ev->value;
    r->quantity = (uint16_t)(ev->quantity > 65535 ? 65535 : ev->quantity);
    r->type = (uint8_t)ev->type;
    r->pad = 0;
    u->ring_len++;
}

/* Are a raw slot's ring and id ones this table could have written? The
 * readers trust them: training copies ring_len events into a set sized by
 * ring_cap, the encoder indexes by event type. */
static bool restorable(const Store *s, const UserState *raw)
{
    unsigned cap = (unsigned)s->cfg.ring_cap;
    if (raw->ring_len > cap || raw->ring_head >= cap)
        return false;
    const RecentEvent *ring = (const RecentEvent *)(raw->data + 2 * s->cfg.hidden);
    for (unsigned k = 0; k < raw->ring_len; k++)
        if (ring[(raw->ring_head + k) % cap].type >= EV_NTYPES)
            return false;
    /* purchase days: both -1 (none), or 0 <= first <= last within the time range */
    const ShopperAgg *a = &raw->agg;
    int32_t max_day = (int32_t)(TIME_MAX_TS / 86400);
    bool none = a->first_purchase_day == -1 && a->last_purchase_day == -1;
    if (!none && !(a->first_purchase_day >= 0 && a->first_purchase_day <= a->last_purchase_day &&
                   a->last_purchase_day <= max_day))
        return false;
    if (a->first_ts < TIME_MIN_TS || a->first_ts > TIME_MAX_TS || a->last_ts < TIME_MIN_TS || a->last_ts > TIME_MAX_TS)
        return false;
    return raw->id_len == 0 || shopper_id_valid(raw->id, raw->id_len);
}

void store_prefetch(const Store *s, const UserState *raw)
{
    if (raw->id_len == 0 || raw->id_len > USER_ID_MAX)
        return;
    uint64_t h = hash_keyed(&s->key, raw->id, raw->id_len);
    __builtin_prefetch(&s->index[(size_t)h & s->index_mask], 1);
}

int store_restore(Store *s, const UserState *raw)
{
    if (!restorable(s, raw))
        return -EBADMSG;
    UserState *u;
    int rc = store_insert(s, raw->id, raw->id_len, &u);
    if (rc)
        return rc;
    uint64_t h = u->hash;
    memcpy(u, raw, s->stride);
    u->hash = h;
    memset(u->id + u->id_len, 0, sizeof u->id - u->id_len); /* ids are NUL-terminated in the table */
    return 0;
}

size_t store_slot_high(Store *s) { return s->high; }

/* Between a walk's batches: the lock is free for a moment, and a thread
 * waiting for it gets it first. */
static void walk_pause(Store *s)
{
    pace_point(); /* a job's walk on a paced worker sleeps here, off the lock (pace.h) */
    if (!atomic_load(&s->waiters))
        return;
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    do {
        sched_yield();
        clock_gettime(CLOCK_MONOTONIC, &t);
    } while (atomic_load(&s->waiters) && (t.tv_sec - t0.tv_sec) * 1000000000L + (t.tv_nsec - t0.tv_nsec) < 1000000L);
}

void store_let_waiters(Store *s)
{
    if (!atomic_load(&s->waiters))
        return;
    store_unlock(s);
    walk_pause(s);
    store_lock(s);
}

size_t store_visit_from(Store *s, size_t from, size_t batch, StoreVisitFn fn, void *arg)
{
    bool stop = false;
    size_t i = from, high;
    do {
        lock_at(s, (const void *)fn);
        high = s->high;
        for (size_t end = i + batch; i < end && i < high && !stop; i++) {
            UserState *u = store_slot_at(s, i);
            if (u)
                stop = fn(arg, u) != 0;
        }
        store_unlock(s);
        if (!stop && i < high)
            walk_pause(s);
    } while (!stop && i < high);
    return stop ? i : SIZE_MAX;
}

void store_visit(Store *s, size_t batch, StoreVisitFn fn, void *arg)
{
    store_visit_from(s, 0, batch, fn, arg);
}

UserState *store_slot_at(Store *s, size_t idx)
{
    if (idx >= s->high)
        return NULL;
    UserState *u = slot(s, (uint32_t)idx);
    return u->id_len ? u : NULL;
}

size_t store_count(const Store *s) { return atomic_load(&((Store *)s)->count); }
size_t store_bytes(const Store *s) { return atomic_load(&((Store *)s)->bytes); }
size_t store_slot_bytes(const Store *s) { return s->stride; }
const StoreConfig *store_config(const Store *s) { return &s->cfg; }
