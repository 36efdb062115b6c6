/* explain: a prediction taken apart (include/explain.h). The shopper's
 * slot is copied under one hold of the store lock (its state brought up to
 * the serving network first, as a plain GET does); the parts and the
 * leave-one-out replays run on the copy, outside the lock.
 *
 * Leave-one-out: for each of the EXPLAIN_EVENTS newest retained events, the
 * LSTM is replayed over the ring without it (from the state before it,
 * saved in one forward pass) and the head evaluated on that state with the
 * same aggregates; the event's effect is the LTV of the whole ring replayed
 * from a zero state (the baseline: the served state also remembers events
 * older than the ring) minus that one. So
 * it measures what the network remembers of the event; its part in the
 * aggregates (and so in the fallback) stays. Bounded: ring_len +
 * K(K-1)/2 steps and K + 1 head evaluations, K = EXPLAIN_EVENTS. */
#include "explain.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "encoding.h"
#include "lstm.h"
#include "service_internal.h"

/* Scratch for one LSTM step: [x; h] and z. One per thread. */
static _Thread_local float explain_scratch[LSTM_MAX_INPUT + LSTM_MAX_HIDDEN + 4 * LSTM_MAX_HIDDEN];

/* The fallback's part, as model_predict computes it (model_fallback: BG/NBD
 * + Gamma-Gamma with a purchase, the cold start from behaviour without). */
static void explain_fallback(const Model *m, const ShopperAgg *agg, const RecentSummary *rs, int64_t as_of,
                             Explanation *ex)
{
    CustomerSummary cs;
    FallbackOutput fo;
    ex->has_purchase = agg && shopper_summary(agg, as_of, &cs);
    model_fallback(&m->fallback, m->horizon_days, agg, rs, as_of, &fo);
    /* the branch model_fallback took */
    if (ex->has_purchase)
        ex->source = "bgnbd";
    else if (!agg || agg->events == 0 || m->fallback.cold.state == COLD_PRIOR)
        ex->source = "prior";
    else
        ex->source = m->fallback.cold.state == COLD_FITTED ? "cold_start" : "cold_start_capped";
    if (ex->has_purchase) {
        ex->frequency = cs.x;
        ex->recency_weeks = cs.t_x;
        ex->tenure_weeks = cs.T;
        ex->weeks_since_last = cs.T - cs.t_x;
        ex->mean_spend = cs.m;
    }
    ex->fallback_ltv = fo.ltv;
    ex->p_alive = fo.p_alive;
    ex->fallback_p_active = fo.p_active;
    ex->expected_purchases = fo.expected_purchases;
    ex->value_per_purchase = fo.value;
    ex->spend = agg ? agg->spend : 0.0;
}

/* Advances (h, c) (H,) each and ctx over u's retained events [from, to)
 * under net: one LSTM step per event. */
static void explain_replay(const Service *s, const LstmWeights *net, UserState *u, unsigned from, unsigned to,
                           float *h, float *c, EncodeContext *ctx)
{
    float x[FEATURE_DIM]; /* (I,) */
    for (unsigned k = from; k < to; k++) {
        Event ev;
        store_ring_event(store_ring_at(s->store, u, k), &ev);
        encode_event(x, &ev, ctx);
        lstm_step(&net->cfg, net->w, net->b, x, h, c, explain_scratch);
        encode_context_advance(ctx, &ev);
    }
}

/* Leave-one-out over the newest retained events of u (a copy, its state
 * under m->net). state: (EXPLAIN_EVENTS + 1, 2H) floats of scratch. */
static void explain_events(const Service *s, const Model *m, UserState *u, const RecentSummary *rs, int64_t as_of,
                           float *state, Explanation *ex)
{
    const LstmWeights *net = m->net;
    size_t H = (size_t)net->cfg.hidden;
    unsigned n = u->ring_len, K = n < EXPLAIN_EVENTS ? n : EXPLAIN_EVENTS, first = n - K;
    EncodeContext saved_ctx[EXPLAIN_EVENTS];
    float *h = state + (size_t)EXPLAIN_EVENTS * 2 * H, *c = h + H; /* (H,) each */
    memset(h, 0, 2 * H * sizeof(float));
    EncodeContext ctx = u->ring_ctx;
    /* one pass, saving the state before each event left out */
    explain_replay(s, net, u, 0, first, h, c, &ctx);
    for (unsigned k = first; k < n; k++) {
        memcpy(state + (size_t)(k - first) * 2 * H, h, 2 * H * sizeof(float));
        saved_ctx[k - first] = ctx;
        explain_replay(s, net, u, k, k + 1, h, c, &ctx);
    }
    /* the baseline: the ring replayed from a zero state, as each "without"
     * is (the served state also remembers events older than the ring) */
    Prediction base;
    model_predict(m, h, &u->agg, rs, as_of, &base);
    for (unsigned j = first; j < n; j++) {
        memcpy(h, state + (size_t)(j - first) * 2 * H, 2 * H * sizeof(float));
        ctx = saved_ctx[j - first];
        explain_replay(s, net, u, j + 1, n, h, c, &ctx);
        Prediction without;
        model_predict(m, h, &u->agg, rs, as_of, &without);
        Event ev;
        store_ring_event(store_ring_at(s->store, u, j), &ev);
        ExplainEvent e = {.ts = ev.ts, .type = ev.type, .value = ev.value, .effect = base.ltv - without.ltv};
        unsigned at = ex->nevents++;
        while (at > 0 && fabs(ex->events[at - 1].effect) < fabs(e.effect)) { /* by |effect|, largest first */
            ex->events[at] = ex->events[at - 1];
            at--;
        }
        ex->events[at] = e;
    }
}

void service_explain(Service *s, const char *id, size_t len, int64_t as_of, PredictionView *pv, Explanation *ex)
{
    memset(ex, 0, sizeof *ex);
    Model *m = service_model_acquire(s);
    if (as_of < 0)
        as_of = service_now(s);
    size_t stride = store_slot_bytes(s->store), H = (size_t)m->net->cfg.hidden;
    /* the slot copy, then (EXPLAIN_EVENTS + 1, 2H) floats of states */
    unsigned char *buf = malloc(stride + (EXPLAIN_EVENTS + 1) * 2 * H * sizeof(float));
    UserState *u = NULL;
    store_lock(s->store);
    UserState *found = store_find(s->store, id, len);
    if (found && buf) {
        service_ensure_state(s, found, m->net);
        memcpy(buf, found, stride);
        u = (UserState *)buf;
    }
    store_unlock(s->store);
    if (found && !u) { /* out of memory for the copy: predict under the lock, unexplained */
        free(buf);
        model_release(m);
        service_predict(s, id, len, as_of, pv);
        ex->ltv = pv->p.ltv;
        return;
    }
    service_fill_view(pv, m, u, id, len, as_of);
    RecentSummary rs;
    service_recent_summary(s, u, as_of, &rs);
    model_predict(m, u ? store_user_h(s->store, u) : NULL, u ? &u->agg : NULL, &rs, as_of, &pv->p);
    atomic_fetch_add_explicit(&s->metrics->predictions, 1, memory_order_relaxed);
    explain_fallback(m, u ? &u->agg : NULL, &rs, as_of, ex);
    ex->network_used = pv->p.from_network;
    ex->network_ltv = pv->p.uncorrected;
    ex->adjuster_used = m->has_adj && u;
    ex->adjuster_multiplier = 1.0;
    if (ex->adjuster_used) {
        double recency = fmax(0.0, (double)(as_of - u->agg.last_ts) / 86400.0);
        double tenure = fmax(0.0, (double)(as_of - u->agg.first_ts) / 86400.0);
        ex->adjuster_multiplier = adjuster_multiplier(&m->adj, pv->p.uncorrected, recency, tenure);
    }
    ex->ltv = pv->p.ltv;
    ex->ring_events = u ? u->ring_len : 0;
    if (u && ex->network_used)
        explain_events(s, m, u, &rs, as_of, (float *)(buf + stride), ex);
    free(buf);
    model_release(m);
}
