/* trainset: the training set a retrain (and the backtest) reads: the
 * sampled shoppers' events, from their recent-event rings and, with
 * train.history_events > 0, the training history on disk (history.h)
 * before them (docs/MODEL.md, "Training history").
 *
 * Threads: a libuv worker thread (one training job at a time); the store
 * is read in short locked batches (store_visit), the history outside the
 * lock, while a snapshot in another worker may archive into and compact it
 * (history_load reads its own copy of the file). */
#include "service_internal.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "dataset.h"
#include "log.h"
#include "timeutil.h"

/* Slots copied per hold of the store lock (about 0.5 us each: jobs.c). */
#define TRAINSET_BATCH 128

/* What a merge with the history needs of a shopper besides its ring. */
typedef struct ShopperTotals {
    EncodeContext ctx;  /* after all its in-order events */
    ShopperAgg agg;
} ShopperTotals;

typedef struct TrainSetWalk {
    TrainSet *set;
    ShopperTotals *totals; /* (max_shoppers,), NULL without a history */
    const Store *store;
    size_t max_shoppers;
    uint64_t keep_below;  /* id hashes above this are left out */
} TrainSetWalk;

static double net_spend(const Event *e)
{
    return e->type == EV_PURCHASE ? e->value : e->type == EV_REFUND ? -e->value : 0;
}

/* The aggregates before a shopper's first retained event (at day0) from
 * its totals: ctx0 says how many events and purchases came before, the
 * spend before is the total's minus the retained events' (docs/MODEL.md,
 * "Training"). */
static void agg_before(ShopperAgg *a, const EncodeContext *ctx0, const ShopperAgg *total, double retained_spend,
                       int32_t day0)
{
    shopper_agg_init(a);
    if (ctx0->events_before == 0)
        return;
    a->events = ctx0->events_before;
    a->purchases = ctx0->purchases_before;
    a->first_ts = ctx0->first_ts;
    a->last_ts = ctx0->prev_ts;
    a->spend = fmax(0.0, total->spend - retained_spend);
    if (total->first_purchase_day >= 0 && total->first_purchase_day < day0 && a->purchases) {
        a->first_purchase_day = a->last_purchase_day = total->first_purchase_day;
        a->purchase_days = 1;
        a->first_day_spend = a->spend;
    }
}

/* Copies one shopper's ring into the set, with the encoder context and
 * aggregates from before it. */
static int visit_train_shopper(void *arg, UserState *u)
{
    TrainSetWalk *w = arg;
    TrainSet *set = w->set;
    if (set->nshoppers >= w->max_shoppers)
        return 1;
    uint64_t key = store_stable_hash(u); /* the same sample and split on every instance */
    if (u->ring_len == 0 || key > w->keep_below)
        return 0;
    if (w->totals)
        w->totals[set->nshoppers] = (ShopperTotals){.ctx = u->ctx, .agg = u->agg};
    TrainShopper *t = &set->shoppers[set->nshoppers++];
    t->first = set->nevents;
    t->n = u->ring_len;
    t->ctx0 = u->ring_ctx;
    t->key = key;
    double ring_spend = 0;
    for (unsigned k = 0; k < u->ring_len; k++) {
        Event *e = &set->events[set->nevents++];
        store_ring_event(store_ring_at(w->store, u, k), e);
        ring_spend += net_spend(e);
    }
    agg_before(&t->agg0, &u->ring_ctx, &u->agg, ring_spend, (int32_t)(set->events[t->first].ts / 86400));
    return set->nshoppers >= w->max_shoppers;
}

/* ---- the event budget ------------------------------------------------------ */

typedef struct KeyIndex {
    uint64_t key; /* first: cmp_leading_key */
    size_t shopper;
} KeyIndex;

typedef struct KeyEvents {
    uint64_t key; /* first: cmp_leading_key */
    uint64_t events;
} KeyEvents;

/* Orders KeyEvents and KeyIndex alike: by their leading key. */
static int cmp_leading_key(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

/* The sampled shoppers by id hash: ki (key, index in set), keys alone;
 * both malloc'd. 0 or -ENOMEM. */
static int sorted_keys(const TrainSet *set, KeyIndex **ki_out, uint64_t **keys_out)
{
    size_t n = set->nshoppers;
    KeyIndex *ki = malloc((n ? n : 1) * sizeof *ki);
    uint64_t *keys = malloc((n ? n : 1) * sizeof *keys);
    if (!ki || !keys) {
        free(ki), free(keys);
        return -ENOMEM;
    }
    for (size_t i = 0; i < n; i++)
        ki[i] = (KeyIndex){set->shoppers[i].key, i};
    qsort(ki, n, sizeof *ki, cmp_leading_key);
    for (size_t i = 0; i < n; i++)
        keys[i] = ki[i].key;
    *ki_out = ki;
    *keys_out = keys;
    return 0;
}

/* The history's records of each sampled shopper, in set order (*out
 * malloc'd); NULL if the history cannot be read (a warning: this training
 * reads the rings). A read of the whole history: logged at debug with its
 * time. 0 or -ENOMEM. */
static int count_history(Service *s, const TrainSet *set, uint32_t **out)
{
    *out = NULL;
    size_t n = set->nshoppers;
    KeyIndex *ki;
    uint64_t *keys;
    if (sorted_keys(set, &ki, &keys))
        return -ENOMEM;
    uint64_t t0 = time_mono_ns(), records = 0;
    uint32_t *sorted = malloc((n ? n : 1) * sizeof *sorted), *counts = malloc((n ? n : 1) * sizeof *counts);
    int rc = sorted && counts ? history_count(s->history, keys, n, sorted) : -ENOMEM;
    if (!rc) {
        for (size_t i = 0; i < n; i++) {
            counts[ki[i].shopper] = sorted[i];
            records += sorted[i];
        }
        *out = counts;
        counts = NULL;
        log_msg(LOG_DEBUG, "training history counted for train.max_events", "shoppers=%zu records=%llu ms=%.1f", n,
                (unsigned long long)records, (double)(time_mono_ns() - t0) / 1e6);
    } else if (rc != -ENOMEM) {
        log_msg(LOG_WARN, "training history unreadable: this training reads the recent-event rings only",
                "error=\"%s\"", strerror(-rc));
        rc = 0;
    }
    free(ki), free(keys), free(sorted), free(counts);
    return rc;
}

/* Shopper i's events: its ring, or with the history (counts, in set
 * order) its records there or its ring if more (the ring's events are
 * mostly archived already; those logged since the last snapshot are not,
 * at most a ring's worth, so the set can pass the budget by that). */
static uint64_t events_of(const TrainSet *set, const uint32_t *counts, size_t i)
{
    uint64_t n = set->shoppers[i].n;
    return counts && counts[i] > n ? counts[i] : n;
}

/* Keeps the set within `budget` events (train.max_events): each sampled
 * shopper will hold at most min(events_of, per_shopper). If together they
 * hold more, the shoppers with the highest id hashes go until they fit (one
 * shopper stays whatever its size). The sample stays a uniform one by id
 * hash, the same on every instance, with a lower threshold. totals (NULL
 * without the history) is kept in step. 0 or -ENOMEM. */
static int fit_event_budget(TrainSet *set, ShopperTotals *totals, const uint32_t *counts, size_t per_shopper,
                            uint64_t budget)
{
    size_t n = set->nshoppers;
    uint64_t sum = 0;
    for (size_t i = 0; i < n; i++) {
        uint64_t ev = events_of(set, counts, i);
        sum += ev < per_shopper ? ev : per_shopper;
    }
    if (sum <= budget)
        return 0;
    KeyEvents *ke = malloc(n * sizeof *ke);
    if (!ke)
        return -ENOMEM;
    for (size_t i = 0; i < n; i++) {
        uint64_t ev = events_of(set, counts, i);
        ke[i] = (KeyEvents){set->shoppers[i].key, ev < per_shopper ? ev : per_shopper};
    }
    qsort(ke, n, sizeof *ke, cmp_leading_key);
    uint64_t held = ke[0].events, cutoff = ke[0].key; /* one shopper at least, whatever its size */
    for (size_t k = 1; k < n && held + ke[k].events <= budget; k++) {
        held += ke[k].events;
        cutoff = ke[k].key;
    }
    free(ke);
    /* the kept shoppers and their ring events move down, in walk order */
    size_t out = 0, at = 0;
    for (size_t i = 0; i < n; i++) {
        TrainShopper t = set->shoppers[i];
        if (t.key > cutoff)
            continue;
        memmove(set->events + at, set->events + t.first, t.n * sizeof *set->events);
        t.first = at;
        at += t.n;
        set->shoppers[out] = t;
        if (totals)
            totals[out] = totals[i];
        out++;
    }
    set->nevents = at;
    Event *shrunk = realloc(set->events, (at ? at : 1) * sizeof *set->events);
    if (shrunk)
        set->events = shrunk; /* the copy was sized for every sampled ring */
    log_msg(LOG_INFO, "training sample cut to train.max_events", "shoppers_before=%zu shoppers=%zu events=%llu "
            "budget=%llu", n, out, (unsigned long long)held, (unsigned long long)budget);
    set->nshoppers = out;
    return 0;
}

/* ---- with the history ---------------------------------------------------- */

/* How many of ring (n) come after the history hist (nh, both oldest
 * first); *from gets the first of them. The history holds a run of the
 * shopper's events in log order (all of them since the history was turned
 * on or last reset), the ring the newest in-order ones: ring events older
 * than the history's newest are in it (or before it: ring_before), and of
 * those at its newest time, as many as the history has there. */
static size_t ring_after(const HistoryEvent *hist, size_t nh, const Event *ring, size_t n, size_t *from)
{
    *from = 0;
    if (nh == 0)
        return n;
    int64_t last = hist[nh - 1].ts;
    size_t same = 0;
    for (size_t i = nh; i > 0 && hist[i - 1].ts == last; i--)
        same++;
    size_t k = 0;
    while (k < n && (ring[k].ts < last || (ring[k].ts == last && same > 0))) {
        if (ring[k].ts == last)
            same--;
        k++;
    }
    *from = k;
    return n - k;
}

/* How many of ring (n) come before the history's oldest event: events
 * logged before the history began (a history turned on or reset since),
 * which it does not have. 0 without a history. */
static size_t ring_before(const HistoryEvent *hist, size_t nh, const Event *ring, size_t n)
{
    size_t k = 0;
    while (nh > 0 && k < n && ring[k].ts < hist[0].ts)
        k++;
    return k;
}

/* Replaces each sampled shopper's ring in set by the ring events older
 * than its history (a young history), its history, and the ring events
 * newer than it, the newest `cap` kept, with the context
 * and aggregates before them approximated from the totals; *merged says
 * so. A history that cannot be read leaves set as the rings made it, with
 * a warning (*merged false). 0 or -ENOMEM. */
static int merge_history(Service *s, TrainSet *set, const ShopperTotals *totals, size_t cap, bool *merged)
{
    *merged = false;
    size_t n = set->nshoppers;
    KeyIndex *ki;
    uint64_t *keys;
    if (sorted_keys(set, &ki, &keys))
        return -ENOMEM;
    HistoryEvents he;
    int rc = history_load(s->history, keys, n, set->now, &he);
    free(keys);
    if (rc) {
        /* the set stays the rings': this training goes on without the history */
        log_msg(LOG_WARN, "training history unreadable: this training reads the recent-event rings only",
                "error=\"%s\"", strerror(-rc));
        free(ki);
        return 0;
    }
    size_t *slot = malloc((n ? n : 1) * sizeof *slot); /* shopper -> its place in keys */
    if (!slot) {
        free(ki);
        history_events_free(&he);
        return -ENOMEM;
    }
    for (size_t i = 0; i < n; i++)
        slot[ki[i].shopper] = i;
    free(ki);
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        const TrainShopper *t = &set->shoppers[i];
        const HistoryEvent *h = he.events + he.start[slot[i]];
        size_t nh = he.start[slot[i] + 1] - he.start[slot[i]], from;
        size_t m = ring_before(h, nh, set->events + t->first, t->n) + nh +
                   ring_after(h, nh, set->events + t->first, t->n, &from);
        total += m < cap ? m : cap;
    }
    Event *ev = malloc((total ? total : 1) * sizeof *ev);
    if (!ev) {
        free(slot);
        history_events_free(&he);
        return -ENOMEM;
    }
    size_t at = 0, from_history = 0;
    for (size_t i = 0; i < n; i++) {
        if (i % 256 == 0)
            pace_point();
        TrainShopper *t = &set->shoppers[i];
        const HistoryEvent *h = he.events + he.start[slot[i]];
        size_t nh = he.start[slot[i] + 1] - he.start[slot[i]], from;
        size_t nb = ring_before(h, nh, set->events + t->first, t->n);
        size_t nr = ring_after(h, nh, set->events + t->first, t->n, &from);
        size_t m = nb + nh + nr, skip = m > cap ? m - cap : 0, first = at;
        /* oldest first, the oldest `skip` left out: ring before, history, ring after */
        for (size_t k = skip; k < nb; k++)
            ev[at++] = set->events[t->first + k];
        size_t hskip = skip > nb ? skip - nb : 0;
        for (size_t k = hskip; k < nh; k++)
            ev[at++] = (Event){.ts = h[k].ts, .value = h[k].value, .quantity = h[k].quantity,
                               .type = (EventType)h[k].type};
        for (size_t k = hskip > nh ? hskip - nh : 0; k < nr; k++)
            ev[at++] = set->events[t->first + from + k];
        size_t kept = at - first, kept_history = nh > hskip ? nh - hskip : 0;
        from_history += kept_history;
        t->first = first;
        t->n = kept;
        if (kept_history == 0)
            continue; /* the ring alone: its exact context stays */
        const ShopperTotals *tt = &totals[i];
        uint32_t purchases = 0;
        double spend = 0;
        for (size_t k = first; k < at; k++) {
            purchases += ev[k].type == EV_PURCHASE;
            spend += net_spend(&ev[k]);
        }
        EncodeContext c = {0};
        if (tt->ctx.events_before > kept) {
            c.events_before = tt->ctx.events_before - (uint32_t)kept;
            c.purchases_before = tt->ctx.purchases_before > purchases ? tt->ctx.purchases_before - purchases : 0;
            c.first_ts = tt->ctx.first_ts;
            c.prev_ts = ev[first].ts; /* not kept: the first retained event's time */
        }
        t->ctx0 = c;
        agg_before(&t->agg0, &c, &tt->agg, spend, (int32_t)(ev[first].ts / 86400));
    }
    free(slot);
    history_events_free(&he);
    free(set->events);
    set->events = ev;
    set->nevents = at;
    set->history_events = from_history;
    *merged = true;
    return 0;
}

/* set->served: each shopper's last `ring` events, with the context and
 * aggregates advanced through the ones before (what a rebuild from the ring
 * starts from). */
static int as_served(TrainSet *set, size_t ring)
{
    set->served = malloc((set->nshoppers ? set->nshoppers : 1) * sizeof *set->served);
    if (!set->served)
        return -ENOMEM;
    for (size_t i = 0; i < set->nshoppers; i++) {
        if (i % 256 == 0)
            pace_point();
        TrainShopper *v = &set->served[i];
        *v = set->shoppers[i];
        size_t skip = v->n > ring ? v->n - ring : 0;
        for (size_t k = 0; k < skip; k++) {
            const Event *e = &set->events[v->first + k];
            encode_context_advance(&v->ctx0, e);
            shopper_agg_apply(&v->agg0, e);
        }
        v->first += skip;
        v->n -= skip;
    }
    return 0;
}

/* What follows the walk, off the store lock: the event budget and the
 * training history's merge, run at nice 19 and paced like the rest of a
 * job's compute (a read of the whole history: 0.4-0.6 s of CPU at 200,000
 * shoppers, which at the worker's priority took a GET's p99 to 570 ms). */
typedef struct CollectRest {
    Service *s;
    TrainSet *set;
    ShopperTotals *totals;
    size_t ring;
} CollectRest;

static int collect_rest(void *arg)
{
    CollectRest *c = arg;
    Service *s = c->s;
    TrainSet *set = c->set;
    size_t ring = c->ring;
    size_t hcap = (size_t)s->cfg.train_history_events;
    if (hcap < ring)
        hcap = ring;
    if (hcap > DATASET_MAX_EVENTS)
        hcap = DATASET_MAX_EVENTS;
    uint64_t budget = (uint64_t)s->cfg.train_max_events;
    uint32_t *counts = NULL; /* the history's records of each sampled shopper */
    bool history = s->history != NULL, merged = false;
    int rc = 0;
    /* each shopper holds at most hcap events: at or below nshoppers x hcap
     * the budget cannot bind, and the history is not read just to count */
    if (history && (uint64_t)set->nshoppers * hcap > budget) {
        rc = count_history(s, set, &counts);
        history = counts != NULL; /* unreadable: the rings */
    }
    if (!rc)
        rc = fit_event_budget(set, history ? c->totals : NULL, counts, history ? hcap : ring, budget);
    free(counts);
    if (!rc && history)
        rc = merge_history(s, set, c->totals, hcap, &merged);
    if (!rc && merged)
        rc = as_served(set, ring);
    return rc;
}

int service_collect_train_set(Service *s, TrainSet *set)
{
    memset(set, 0, sizeof *set);
    size_t users = store_count(s->store);
    uint64_t cap = (uint64_t)s->cfg.train_max_shoppers;
    size_t ring = (size_t)s->cfg.model_recent_events;
    TrainSetWalk w = {
        .set = set,
        .store = s->store,
        .max_shoppers = users < cap ? users : (size_t)cap,
        .keep_below = users > cap ? (uint64_t)((double)UINT64_MAX * ((double)cap / (double)users)) : UINT64_MAX,
    };
    set->shoppers = calloc(w.max_shoppers + 1, sizeof *set->shoppers);
    set->events = malloc((w.max_shoppers + 1) * ring * sizeof *set->events);
    if (s->history)
        w.totals = malloc((w.max_shoppers + 1) * sizeof *w.totals);
    if (!set->shoppers || !set->events || (s->history && !w.totals)) {
        free(set->shoppers);
        free(set->events);
        free(w.totals);
        memset(set, 0, sizeof *set);
        return -ENOMEM;
    }
    set->now = service_now(s);
    store_visit(s->store, TRAINSET_BATCH, visit_train_shopper, &w);
    CollectRest rest = {.s = s, .set = set, .totals = w.totals, .ring = ring};
    int rc = service_run_niced(s, collect_rest, &rest);
    free(w.totals);
    if (rc) {
        free(set->shoppers);
        free(set->events);
        free(set->served);
        memset(set, 0, sizeof *set);
    }
    return rc;
}
