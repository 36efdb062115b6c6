/* refit_data: what a fallback refit fits on, gathered in one walk of the
 * store: the customers' BG/NBD summaries (a bounded uniform sample by id
 * hash) and the cold-start examples of shoppers without a purchase
 * (coldstart.h). docs/MODEL.md, "Fallback".
 *
 * Threads: service_collect_summaries on the libuv worker (the store is read
 * in locked batches of REFIT_BATCH_SUMMARIES); a SummarySample belongs to
 * one thread. */
#include "service_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "refit_data.h"

/* Slots summarised per hold of the store lock (a slot is a few cache
 * misses to summarise: a hold stays near 100 us; jobs.c). */
#define REFIT_BATCH_SUMMARIES 512

int summary_sample_init(SummarySample *ss, size_t cap)
{
    *ss = (SummarySample){.cap = cap};
    ss->arr = malloc((cap ? cap : 1) * sizeof *ss->arr);
    ss->keys = malloc((cap ? cap : 1) * sizeof *ss->keys);
    if (!ss->arr || !ss->keys) {
        summary_sample_free(ss);
        return -ENOMEM;
    }
    return 0;
}

void summary_sample_free(SummarySample *ss)
{
    free(ss->arr);
    free(ss->keys);
    *ss = (SummarySample){0};
}

static void summary_swap(SummarySample *ss, size_t a, size_t b)
{
    CustomerSummary cs = ss->arr[a];
    uint64_t k = ss->keys[a];
    ss->arr[a] = ss->arr[b], ss->keys[a] = ss->keys[b];
    ss->arr[b] = cs, ss->keys[b] = k;
}

/* A max-heap on the hash: the root is the largest hash kept, the first to
 * go when a smaller one comes. */
void summary_sample_add(SummarySample *ss, const CustomerSummary *cs, uint64_t key)
{
    ss->total++;
    size_t i;
    if (ss->n < ss->cap) {
        i = ss->n++;
        ss->arr[i] = *cs, ss->keys[i] = key;
        for (; i > 0 && ss->keys[(i - 1) / 2] < ss->keys[i]; i = (i - 1) / 2)
            summary_swap(ss, i, (i - 1) / 2);
        return;
    }
    if (ss->cap == 0 || key >= ss->keys[0])
        return;
    ss->arr[0] = *cs, ss->keys[0] = key;
    for (i = 0;;) {
        size_t l = 2 * i + 1, r = l + 1, big = i;
        if (l < ss->n && ss->keys[l] > ss->keys[big])
            big = l;
        if (r < ss->n && ss->keys[r] > ss->keys[big])
            big = r;
        if (big == i)
            return;
        summary_swap(ss, i, big);
        i = big;
    }
}

typedef struct SummaryWalk {
    SummarySample sample;
    int64_t now;
    const Store *store;
    ColdExample *cold;    /* (COLD_MAX_EXAMPLES,), NULL: none wanted */
    size_t ncold;
    int horizon_days;
    Event ring[1024];     /* one shopper's retained events (model.recent_events <= 1024) */
} SummaryWalk;

/* The cold-start cuts of u's retained events: only a ring that holds every
 * event since the shopper's first, or drops none of its purchases. */
static void collect_cold_cuts(SummaryWalk *w, UserState *u)
{
    if (!w->cold || w->ncold >= COLD_MAX_EXAMPLES || u->ring_len == 0 || u->ring_ctx.purchases_before > 0)
        return;
    size_t n = u->ring_len;
    for (unsigned k = 0; k < n; k++)
        store_ring_event(store_ring_at(w->store, u, k), &w->ring[k]);
    if (w->ring[0].type == EV_PURCHASE)
        return;
    int64_t first = u->ring_ctx.events_before > 0 ? u->ring_ctx.first_ts : w->ring[0].ts;
    coldstart_cuts(w->cold, &w->ncold, COLD_MAX_EXAMPLES, w->ring, n, u->ring_ctx.events_before, first, w->now,
                   w->horizon_days);
}

static int visit_summary(void *arg, UserState *u)
{
    SummaryWalk *w = arg;
    collect_cold_cuts(w, u);
    CustomerSummary cs;
    if (shopper_summary(&u->agg, w->now, &cs))
        summary_sample_add(&w->sample, &cs, u->hash);
    return 0;
}

/* Summaries by value: x, then t_x, T and m. */
static int cmp_summary(const void *a, const void *b)
{
    const CustomerSummary *x = a, *y = b;
    const double u[4] = {x->x, x->t_x, x->T, x->m}, v[4] = {y->x, y->t_x, y->T, y->m};
    for (int k = 0; k < 4; k++)
        if (u[k] != v[k])
            return u[k] < v[k] ? -1 : 1;
    return 0;
}

CustomerSummary *service_collect_summaries(Service *s, int64_t now, size_t *n_out, size_t *total, ColdExample *cold,
                                           size_t *ncold)
{
    SummaryWalk *w = calloc(1, sizeof *w); /* its ring is 56 KiB: not on the stack */
    if (!w)
        return NULL;
    *w = (SummaryWalk){.now = now, .store = s->store, .cold = cold, .horizon_days = (int)s->cfg.model_horizon_days};
    if (summary_sample_init(&w->sample, FALLBACK_FIT_MAX_CUSTOMERS)) {
        free(w);
        return NULL;
    }
    store_visit(s->store, REFIT_BATCH_SUMMARIES, visit_summary, w);
    CustomerSummary *arr = w->sample.arr;
    /* The sample's heap order follows the keyed hash, whose key each process
     * draws: sorted by value, the fit sums the same numbers in the same order
     * in every process, so the same shoppers give the same fit to the last
     * digit (and a network trained on it the same weights: its inputs
     * include the fallback's prediction). Which shoppers are sampled past
     * FALLBACK_FIT_MAX_CUSTOMERS still follows the keyed hash, so ids chosen
     * to be sampled cannot be made. */
    qsort(arr, w->sample.n, sizeof *arr, cmp_summary);
    *total = w->sample.total;
    *n_out = w->sample.n;
    *ncold = w->ncold;
    free(w->sample.keys);
    free(w);
    return arr;
}
