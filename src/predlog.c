/* predlog: served predictions waiting for their outcome, and the matured
 * pairs. Linear probing with backward-shift deletion, so the table never
 * fills with tombstones. Not thread-safe: the service holds the store
 * lock; the log owns its table and ring. */
#include "predlog.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "hash.h"

typedef struct KahanSum {
    double s, c; /* the sum, and what rounding took from it */
} KahanSum;

struct PredLog {
    PredLogEntry *slots;  /* (mask + 1,); key 0 marks an empty slot */
    size_t mask, cap, count;
    AdjPair *pairs;       /* ring (cap,) */
    size_t pair_head, pair_len;
    KahanSum pairs_predicted, pairs_realised; /* the ring's sums, kept as pairs come and go */
    uint64_t pair_generation;                 /* + 1 per pair pushed */
    uint64_t logged, matured, dropped_full, dropped_unknown;
};

static uint64_t nonzero(uint64_t key) { return key ? key : 1; }

/* Neumaier's compensated sum: what the running sums lose to rounding as
 * pairs are added and taken away is carried in c, so they stay within a
 * rounding of the ring's exact sum however many pairs pass, and no pass
 * over the ring (milliseconds under the store lock at the largest
 * adjuster.log_size) is needed to correct them. */
static void kahan_add(KahanSum *k, double x)
{
    if (!isfinite(x)) /* never one (a pair's values are finite): it would stay in the sums for good */
        return;
    double t = k->s + x;
    k->c += fabs(k->s) >= fabs(x) ? (k->s - t) + x : (x - t) + k->s;
    k->s = t;
}

int predlog_create(PredLog **out, size_t cap)
{
    if (cap < 1)
        return -EINVAL;
    PredLog *l = calloc(1, sizeof *l);
    if (!l)
        return -ENOMEM;
    size_t size = 8;
    while (size < 2 * cap) /* load factor <= 1/2 */
        size *= 2;
    l->slots = calloc(size, sizeof *l->slots);
    l->pairs = malloc(cap * sizeof *l->pairs);
    if (!l->slots || !l->pairs) {
        predlog_destroy(l);
        return -ENOMEM;
    }
    l->mask = size - 1;
    l->cap = cap;
    *out = l;
    return 0;
}

void predlog_destroy(PredLog *l)
{
    if (!l)
        return;
    free(l->slots);
    free(l->pairs);
    free(l);
}

static size_t home(const PredLog *l, uint64_t key) { return (size_t)(key * 0x9e3779b97f4a7c15ull >> 17) & l->mask; }

/* Position of key, or of the empty slot where it would go. */
static size_t find(const PredLog *l, uint64_t key)
{
    size_t i = home(l, key);
    while (l->slots[i].key && l->slots[i].key != key)
        i = (i + 1) & l->mask;
    return i;
}

static void remove_at(PredLog *l, size_t hole)
{
    for (size_t i = (hole + 1) & l->mask; l->slots[i].key; i = (i + 1) & l->mask) {
        if (probe_can_fill(hole, i, home(l, l->slots[i].key), l->mask)) {
            l->slots[hole] = l->slots[i];
            hole = i;
        }
    }
    l->slots[hole].key = 0;
    l->count--;
}

/* 1 if e was inserted, 0 if its shopper is pending already, -1 if full. */
static int insert(PredLog *l, const PredLogEntry *e)
{
    uint64_t key = nonzero(e->key);
    size_t i = find(l, key);
    if (l->slots[i].key)
        return 0; /* one pending prediction per shopper */
    if (l->count >= l->cap)
        return -1;
    l->slots[i] = *e;
    l->slots[i].key = key;
    l->count++;
    return 1;
}

void predlog_record(PredLog *l, const PredLogEntry *e)
{
    int r = insert(l, e);
    l->logged += r > 0;
    l->dropped_full += r < 0;
}

void predlog_restore_entry(PredLog *l, const PredLogEntry *e) { insert(l, e); }

void predlog_foreach_entry(const PredLog *l, void (*fn)(void *arg, const PredLogEntry *e), void *arg)
{
    for (size_t i = 0; i <= l->mask; i++)
        if (l->slots[i].key)
            fn(arg, &l->slots[i]);
}

void predlog_forget(PredLog *l, uint64_t key)
{
    size_t i = find(l, nonzero(key));
    if (l->slots[i].key)
        remove_at(l, i);
}

static void push_pair(PredLog *l, const AdjPair *p)
{
    AdjPair *slot = &l->pairs[(l->pair_head + l->pair_len) % l->cap];
    if (l->pair_len < l->cap) {
        l->pair_len++;
    } else {
        kahan_add(&l->pairs_predicted, -slot->pred);
        kahan_add(&l->pairs_realised, -slot->actual);
        l->pair_head = (l->pair_head + 1) % l->cap;
    }
    *slot = *p;
    kahan_add(&l->pairs_predicted, p->pred);
    kahan_add(&l->pairs_realised, p->actual);
    l->pair_generation++;
}

size_t predlog_mature(PredLog *l, int64_t matured_at, size_t *cursor, size_t span, PredLogOutcome outcome,
                      void *arg)
{
    size_t size = l->mask + 1, i = *cursor;
    size_t end = i + span < size ? i + span : size;
    while (i < end) {
        PredLogEntry *e = &l->slots[i];
        if (!e->key || e->t > matured_at) {
            i++;
            continue;
        }
        double y = outcome(arg, e);
        if (y >= 0) {
            AdjPair p = {.pred = e->pred, .actual = y, .recency_days = e->recency_days, .tenure_days = e->tenure_days,
                         .t = e->t, .net = e->net_id};
            push_pair(l, &p);
            l->matured++;
        } else {
            l->dropped_unknown++;
        }
        remove_at(l, i); /* a later entry may have moved into i: look again */
    }
    *cursor = i;
    return size - i;
}

void predlog_restore_pair(PredLog *l, const AdjPair *p) { push_pair(l, p); }

size_t predlog_pairs(const PredLog *l, AdjPair *out, size_t max)
{
    size_t n = l->pair_len < max ? l->pair_len : max;
    for (size_t k = 0; k < n; k++)
        out[k] = l->pairs[(l->pair_head + l->pair_len - n + k) % l->cap];
    return n;
}

void predlog_stats(const PredLog *l, PredLogStats *out)
{
    *out = (PredLogStats){l->logged, l->matured, l->dropped_full, l->dropped_unknown,
                          l->count, l->pair_len, l->cap, l->pairs_predicted.s + l->pairs_predicted.c,
                          l->pairs_realised.s + l->pairs_realised.c};
}

uint64_t predlog_pair_generation(const PredLog *l) { return l->pair_generation; }

static uint32_t max_below(uint32_t max, uint32_t id, uint32_t below) { return id < below && id > max ? id : max; }

uint32_t predlog_max_net(const PredLog *l, uint32_t below)
{
    uint32_t max = 0;
    for (size_t i = 0; i <= l->mask; i++)
        if (l->slots[i].key)
            max = max_below(max, l->slots[i].net_id, below);
    for (size_t k = 0; k < l->pair_len; k++)
        max = max_below(max, l->pairs[(l->pair_head + k) % l->cap].net, below);
    return max;
}
