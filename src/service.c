/* service: the request side of the service: all-or-nothing apply (log
 * first, then the shoppers), predictions, summaries, erasure, and the
 * serving model's holder. Called on the HTTP thread (and by recovery and
 * the worker jobs through service_internal.h); include/service.h says who
 * owns what. */
#include "service_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "encoding.h"
#include "hash.h"
#include "lstm.h"
#include "segments.h"
#include "service_testing.h"
#include "timeutil.h"
#include "wal_record.h"

/* Scratch for one LSTM step: [x; h] and z. One per thread, never reallocated. */
static _Thread_local float step_scratch[LSTM_MAX_INPUT + LSTM_MAX_HIDDEN + 4 * LSTM_MAX_HIDDEN];

int service_create(Service **out, const LtvdConfig *cfg, Metrics *metrics, Model *initial)
{
    Service *s = calloc(1, sizeof *s);
    if (!s)
        return -ENOMEM;
    s->cfg = *cfg;
    s->metrics = metrics;
    pace_init(&s->pace, cfg->jobs_busy_cpu_share > 0 ? cfg->jobs_busy_cpu_share : 1.0,
              metrics ? metrics_requests_total : NULL, metrics, metrics ? &metrics->jobs_paced_ns : NULL,
              &s->cancel_jobs);
    StoreConfig sc = {
        .max_users = (size_t)cfg->limits_max_users,
        .hidden = (int)cfg->model_hidden_size,
        .ring_cap = (int)cfg->model_recent_events,
    };
    HashKey key; /* this instance's; a snapshot's replaces it (service_recover) */
    int rc = hash_key_random(&key);
    if (rc)
        goto fail;
    if ((rc = store_create(&s->store, &sc)) != 0)
        goto fail;
    if ((rc = dedupe_create(&s->dedupe, (size_t)cfg->limits_dedupe_max_ids, cfg->limits_dedupe_window_s)) != 0)
        goto fail;
    store_set_key(s->store, &key);
    dedupe_set_key(s->dedupe, &key);
    if (cfg->adjuster_enabled && cfg->adjuster_log_size > 0 &&
        (rc = predlog_create(&s->predlog, (size_t)cfg->adjuster_log_size)) != 0)
        goto fail;
    pthread_mutex_init(&s->model_lock, NULL);
    pthread_mutex_init(&s->err_lock, NULL);
    service_segments_init(s);
    service_adopt_model(s, initial);
    s->model = initial;
    atomic_init(&s->next_version, initial->version + 1);
    atomic_init(&s->last_snapshot_mono_s, (int64_t)(time_mono_ns() / 1000000000ull));
    *out = s;
    return 0;
fail:
    dedupe_destroy(s->dedupe);
    store_destroy(s->store);
    free(s);
    return rc;
}

void service_destroy(Service *s)
{
    if (!s)
        return;
    model_release(s->model);
    dedupe_destroy(s->dedupe);
    predlog_destroy(s->predlog);
    store_destroy(s->store);
    pthread_mutex_destroy(&s->model_lock);
    pthread_mutex_destroy(&s->err_lock);
    service_segments_destroy(s);
    bytebuf_free(&s->logbuf);
    history_close(s->history);
    free(s);
}

int64_t service_now(Service *s)
{
    if (s->cfg.clock == CLOCK_EVENT)
        return atomic_load(&s->event_clock);
    return time_now();
}

/* ---- the serving model -------------------------------------------------- */

Model *service_model_acquire(Service *s)
{
    pthread_mutex_lock(&s->model_lock);
    Model *m = s->model;
    model_retain(m);
    pthread_mutex_unlock(&s->model_lock);
    return m;
}

void service_adopt_model(const Service *s, Model *m)
{
    if (!s->cfg.adjuster_enabled)
        m->has_adj = false;
}

void service_publish(Service *s, Model *m)
{
    service_adopt_model(s, m);
    pthread_mutex_lock(&s->model_lock);
    Model *old = s->model;
    s->model = m;
    pthread_mutex_unlock(&s->model_lock);
    model_release(old);
}

/* include/service_testing.h: the publication a retrain makes, for tests. */
void service_model_swap(Service *s, Model *m) { service_publish(s, m); }

/* include/service_testing.h: shopper creations that fail as if out of memory. */
void service_fail_shopper_inserts(Service *s, unsigned n) { atomic_store(&s->fail_inserts, n); }

/* A new shopper for ev. Store lock held. */
static int insert_shopper(Service *s, const Event *ev, UserState **u)
{
    unsigned f = atomic_load(&s->fail_inserts);
    while (f > 0 && !atomic_compare_exchange_weak(&s->fail_inserts, &f, f - 1))
        ;
    if (f > 0)
        return -ENOMEM;
    return store_insert(s->store, ev->user_id, ev->user_len, u);
}

/* ---- shoppers' state ---------------------------------------------------- */

void service_ensure_state(Service *s, UserState *u, const LstmWeights *net)
{
    if (u->net_id == net->id)
        return;
    float *h = store_user_h(s->store, u), *c = store_user_c(s->store, u);
    size_t H = (size_t)net->cfg.hidden;
    memset(h, 0, H * sizeof(float));
    memset(c, 0, H * sizeof(float));
    EncodeContext ctx = u->ring_ctx;
    float x[FEATURE_DIM]; /* (I,) */
    for (unsigned k = 0; k < u->ring_len; k++) {
        Event ev;
        store_ring_event(store_ring_at(s->store, u, k), &ev);
        encode_event(x, &ev, &ctx);
        lstm_step(&net->cfg, net->w, net->b, x, h, c, step_scratch);
        encode_context_advance(&ctx, &ev);
    }
    u->net_id = net->id;
    atomic_fetch_add_explicit(&s->metrics->state_rebuilds, 1, memory_order_relaxed);
}

/* Applies one event to its shopper. Store lock held. */
static void apply_one(Service *s, UserState *u, const Event *ev, const LstmWeights *net, ApplyResult *res)
{
    service_ensure_state(s, u, net);
    bool late = u->agg.events > 0 && ev->ts < u->ctx.prev_ts;
    if (late) {
        /* Too old to feed the LSTM (time would run backwards): it counts in
         * the aggregates only. docs/SEMANTICS.md, "Late events". */
        res->late++;
    } else {
        float x[FEATURE_DIM]; /* (I,) */
        encode_event(x, ev, &u->ctx);
        lstm_step(&net->cfg, net->w, net->b, x, store_user_h(s->store, u), store_user_c(s->store, u), step_scratch);
        encode_context_advance(&u->ctx, ev);
        store_ring_push(s->store, u, ev);
    }
    shopper_agg_apply(&u->agg, ev);
    if (ev->type == EV_PURCHASE)
        atomic_fetch_add_explicit(&s->purchases_total, 1, memory_order_relaxed);
    int64_t clk = atomic_load_explicit(&s->event_clock, memory_order_relaxed);
    while (ev->ts > clk && !atomic_compare_exchange_weak(&s->event_clock, &clk, ev->ts))
        ;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Would the batch create more shoppers than the table has room for?
 * Store lock held. Counts distinct missing ids exactly only when the cheap
 * upper bound says it might. *missing gets that upper bound. */
static bool over_capacity(Service *s, const Event *events, size_t n, size_t *missing_out)
{
    size_t room = (size_t)s->cfg.limits_max_users - store_count(s->store);
    size_t missing = 0;
    for (size_t i = 0; i < n; i++)
        missing += store_find(s->store, events[i].user_id, events[i].user_len) == NULL;
    *missing_out = missing;
    if (missing <= room)
        return false;
    uint64_t *keys = malloc(missing * sizeof(uint64_t));
    if (!keys)
        return true;
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (!store_find(s->store, events[i].user_id, events[i].user_len))
            keys[k++] = store_hash(s->store, events[i].user_id, events[i].user_len);
    qsort(keys, k, sizeof *keys, cmp_u64);
    size_t distinct = k ? 1 : 0;
    for (size_t i = 1; i < k; i++)
        distinct += keys[i] != keys[i - 1];
    free(keys);
    return distinct > room;
}

void service_fill_view(PredictionView *pv, const Model *m, const UserState *u, const char *id, size_t len,
                       int64_t as_of)
{
    size_t n = len > USER_ID_MAX ? USER_ID_MAX : len;
    memcpy(pv->user_id, id, n);
    pv->user_id[n] = '\0';
    pv->user_len = n;
    pv->as_of = as_of;
    pv->horizon_days = m->horizon_days;
    pv->model_version = m->version;
    pv->known = u != NULL;
    pv->events = u ? u->agg.events : 0;
    pv->last_event_ts = u ? u->agg.last_ts : 0;
}

static void fill_prediction(Service *s, const Model *m, UserState *u, const char *id, size_t len, int64_t as_of,
                            PredictionView *out)
{
    service_fill_view(out, m, u, id, len, as_of);
    RecentSummary rs;
    if (u)
        service_ensure_state(s, u, m->net);
    service_recent_summary(s, u, as_of, &rs);
    model_predict(m, u ? store_user_h(s->store, u) : NULL, u ? &u->agg : NULL, &rs, as_of, &out->p);
    atomic_fetch_add_explicit(&s->metrics->predictions, 1, memory_order_relaxed);
}

/* Applies validated events in order; each event_id joins the window only
 * once its event is applied, so an event that could not be applied is not
 * a duplicate when the client sends it again. Store lock held; capacity
 * checked and slots reserved. Returns how many events could not be applied
 * (none, unless a shopper could not be created). */
static size_t apply_events_locked(Service *s, const Event *events, size_t n, const LstmWeights *net,
                                  ApplyResult *res)
{
    int64_t now = time_now(); /* arrival of the batch's event_ids */
    dedupe_expire(s->dedupe, now);
    size_t failed = 0;
    for (size_t i = 0; i < n; i++) {
        const Event *ev = &events[i];
        uint64_t key = 0;
        if (ev->event_id && dedupe_seen(s->dedupe, ev->event_id, ev->event_id_len, &key)) {
            res->duplicates++;
            continue;
        }
        UserState *u = store_find(s->store, ev->user_id, ev->user_len);
        if (!u) {
            if (insert_shopper(s, ev, &u)) {
                failed++; /* not after over_capacity() and store_reserve(); a guard */
                continue;
            }
            u->net_id = net->id;
        }
        apply_one(s, u, ev, net, res);
        if (ev->event_id && s->shard_of)
            dedupe_insert_shard(s->dedupe, key, now, s->shard_of(s->shard_arg, ev->user_id, ev->user_len));
        else if (ev->event_id)
            dedupe_insert(s->dedupe, key, now);
        res->accepted++;
    }
    return failed;
}

/* Appends the events' record to the log. Store lock held (log order is
 * apply order). */
static int log_events(Service *s, const Event *ev, size_t n, uint64_t *seq)
{
    int rc = wal_record_encode_events(&s->logbuf, ev, n);
    if (rc)
        return rc;
    return wal_append(s->wal, WAL_REC_EVENTS, s->logbuf.p, s->logbuf.len, seq);
}

int service_apply(Service *s, const Event *events, size_t n, ApplyResult *res, PredictionView *single)
{
    memset(res, 0, sizeof *res);
    Model *m = service_model_acquire(s);
    store_lock(s->store);
    size_t missing;
    if (over_capacity(s, events, n, &missing)) {
        store_unlock(s->store);
        model_release(m);
        atomic_fetch_add(&s->metrics->events_capacity, n);
        return -ENOSPC;
    }
    if (store_reserve(s->store, missing)) { /* before the log: nothing applied */
        store_unlock(s->store);
        model_release(m);
        return -ENOMEM;
    }
    if (s->wal) {
        /* Log first: an event is applied only once its record is in the log
         * buffer, so memory never holds what the log could lose on its own. */
        int rc = log_events(s, events, n, &res->wait_seq);
        if (rc) {
            store_unlock(s->store);
            model_release(m);
            return rc == -ENOMEM ? -ENOMEM : -EIO;
        }
        if (s->cfg.storage_fsync != WAL_FSYNC_ALWAYS)
            res->wait_seq = 0; /* interval/none: acknowledged before the fsync */
    }
    size_t failed = apply_events_locked(s, events, n, m->net, res);
    if (single && n > 0) {
        UserState *u = store_find(s->store, events[0].user_id, events[0].user_len);
        fill_prediction(s, m, u, events[0].user_id, events[0].user_len, service_now(s), single);
    }
    store_unlock(s->store);
    model_release(m);
    atomic_fetch_add_explicit(&s->metrics->events_applied, res->accepted, memory_order_relaxed);
    atomic_fetch_add_explicit(&s->metrics->events_duplicate, res->duplicates, memory_order_relaxed);
    atomic_fetch_add_explicit(&s->metrics->events_late, res->late, memory_order_relaxed);
    /* The client is told to send the batch again: its applied events are
     * recognised by event_id then, the others applied. */
    return failed ? -ENOMEM : 0;
}

int service_replay_events(Service *s, const Event *ev, size_t n, const LstmWeights *net)
{
    ApplyResult res = {0};
    int rc = 0;
    size_t missing;
    store_lock(s->store);
    if (over_capacity(s, ev, n, &missing))
        rc = -ENOSPC;
    else if (store_reserve(s->store, missing) || apply_events_locked(s, ev, n, net, &res))
        rc = -ENOMEM;
    store_unlock(s->store);
    return rc;
}

/* What u's retained events up to as_of say of its browsing (u NULL or
 * without events: nothing). u is a slot of s->store or a copy of one. */
void service_recent_summary(const Service *s, const UserState *u, int64_t as_of, RecentSummary *rs)
{
    recent_summary_init(rs);
    for (unsigned k = 0; u && k < u->ring_len; k++) {
        Event ev;
        store_ring_event(store_ring_at(s->store, (UserState *)u, k), &ev);
        if (ev.ts <= as_of)
            recent_summary_apply(rs, &ev);
    }
}

void service_predict(Service *s, const char *id, size_t len, int64_t as_of, PredictionView *out)
{
    service_predict_many(s, &id, &len, 1, as_of, out);
}

/* Predictions per hold of the store lock in a batch: one is a few us (a
 * state rebuild about 20), so a hold stays well under a millisecond where a
 * batch of limits.max_batch_ids (10,000) under one hold kept every other
 * request waiting for tens of ms. Each prediction reads its shopper as it
 * is at that moment; the model is the same for the whole batch. */
#define PREDICT_BATCH_HOLD 64

void service_predict_many(Service *s, const char *const *ids, const size_t *lens, size_t n, int64_t as_of,
                          PredictionView *out)
{
    Model *m = service_model_acquire(s);
    int64_t now = service_now(s);
    if (as_of < 0)
        as_of = now;
    /* a prediction of the present (not a what-if about another day) is
     * logged for the adjuster, to be compared with what follows */
    bool log_it = s->predlog && as_of <= now + 86400 && as_of >= now - 86400;
    store_lock(s->store);
    for (size_t i = 0; i < n; i++) {
        if (i && i % PREDICT_BATCH_HOLD == 0)
            store_let_waiters(s->store); /* a waiting request goes first */
        UserState *u = store_find(s->store, ids[i], lens[i]);
        fill_prediction(s, m, u, ids[i], lens[i], as_of, &out[i]);
        if (log_it && u && as_of >= u->agg.last_ts) {
            PredLogEntry e = {
                .key = u->hash,
                .t = as_of,
                .pred = out[i].p.uncorrected,
                .spend_at = u->agg.spend,
                .recency_days = (float)((double)(as_of - u->agg.last_ts) / 86400.0),
                .tenure_days = (float)((double)(as_of - u->agg.first_ts) / 86400.0),
                .model_version = m->version,
                .net_id = m->net->id,
            };
            predlog_record(s->predlog, &e);
        }
    }
    store_unlock(s->store);
    model_release(m);
}

int service_user_summary(Service *s, const char *id, size_t len, UserSummaryView *out)
{
    store_lock(s->store);
    UserState *u = store_find(s->store, id, len);
    if (u) {
        out->agg = u->agg;
        out->recent_events = u->ring_len;
    }
    store_unlock(s->store);
    return u ? 0 : -ENOENT;
}

/* Removes a shopper and its pending logged prediction. Store lock held. */
void service_erase_locked(Service *s, const char *id, size_t len)
{
    UserState *u = store_find(s->store, id, len);
    if (!u)
        return;
    if (s->predlog)
        predlog_forget(s->predlog, u->hash);
    store_remove(s->store, id, len);
}

/* The log still holds an erased shopper's events: a snapshot is due within
 * storage.erasure_snapshot_s (service_snapshot_due) to take them off disk. */
static void note_erasure(Service *s)
{
    int64_t zero = 0;
    atomic_compare_exchange_strong(&s->erasure_pending_since, &zero, (int64_t)(time_mono_ns() / 1000000000ull) + 1);
}

int service_delete_user(Service *s, const char *id, size_t len, uint64_t *wait_seq)
{
    *wait_seq = 0;
    store_lock(s->store);
    if (!store_find(s->store, id, len)) {
        store_unlock(s->store);
        return -ENOENT;
    }
    if (s->wal) {
        unsigned char rec[WAL_RECORD_DELETE_MAX];
        size_t reclen = wal_record_encode_delete(rec, id, len);
        if (wal_append(s->wal, WAL_REC_DELETE, rec, reclen, wait_seq)) {
            store_unlock(s->store);
            return -EIO;
        }
        if (s->cfg.storage_fsync != WAL_FSYNC_ALWAYS)
            *wait_seq = 0;
        note_erasure(s);
    }
    service_erase_locked(s, id, len);
    store_unlock(s->store);
    atomic_fetch_add(&s->metrics->users_deleted, 1);
    return 0;
}

void service_replay_erase(Service *s, const char *id, size_t len)
{
    store_lock(s->store);
    service_erase_locked(s, id, len);
    store_unlock(s->store);
    note_erasure(s);
}

/* ---- figures ------------------------------------------------------------ */

void service_model_info(Service *s, ModelInfo *out)
{
    Model *m = service_model_acquire(s);
    memset(out, 0, sizeof *out);
    out->version = m->version;
    out->status = m->status;
    out->trained_at = m->trained_at;
    out->horizon_days = m->horizon_days;
    out->hidden_size = m->net->cfg.hidden;
    out->train = m->train;
    out->calib = m->status == MODEL_TRAINED ? m->net->calib : HEAD_CALIB_NONE;
    out->fallback = m->fallback;
    out->has_adj = m->has_adj;
    out->adj = m->adj;
    model_release(m);
    out->retrain_state = (RetrainState)atomic_load(&s->retrain_state);
    out->retrain_job = atomic_load(&s->retrain_job);
    pthread_mutex_lock(&s->err_lock);
    memcpy(out->retrain_error, s->retrain_error, sizeof out->retrain_error);
    out->last_train = s->last_train;
    out->nruns = s->runs_total < TRAIN_RUNS_KEPT ? (unsigned)s->runs_total : TRAIN_RUNS_KEPT;
    for (unsigned k = 0; k < out->nruns; k++)
        out->runs[k] = s->runs[(s->runs_total - out->nruns + k) % TRAIN_RUNS_KEPT];
    pthread_mutex_unlock(&s->err_lock);
    out->network_enabled = s->cfg.train_network;
    out->adjuster_enabled = s->cfg.adjuster_enabled;
    out->history_enabled = s->history != NULL;
    if (s->history)
        history_stats(s->history, &out->history);
    else
        memset(&out->history, 0, sizeof out->history);
}

void service_predlog_stats(Service *s, PredLogStats *out)
{
    memset(out, 0, sizeof *out);
    if (!s->predlog)
        return;
    store_lock(s->store);
    predlog_stats(s->predlog, out);
    store_unlock(s->store);
}

int service_calibration(Service *s, CalibrationView *out)
{
    memset(out, 0, sizeof *out);
    out->horizon_days = (int)s->cfg.model_horizon_days;
    pthread_mutex_lock(&s->err_lock);
    out->has_backtest = s->backtest_cal.pairs > 0;
    out->backtest = s->backtest_cal;
    out->backtest_version = s->backtest_cal_version;
    out->backtest_at = s->backtest_cal_at;
    pthread_mutex_unlock(&s->err_lock);
    if (!s->predlog)
        return 0;
    /* the pairs change only as an adjuster run matures them (which groups
     * them next) and at recovery (which groups them): between the two, as
     * during a maturing pass, the last grouping is served */
    pthread_mutex_lock(&s->err_lock);
    bool cached = s->live_cal_generation != 0;
    pthread_mutex_unlock(&s->err_lock);
    if (!cached)
        service_live_calibration_refresh(s);
    pthread_mutex_lock(&s->err_lock);
    out->has_live = s->live_cal_generation != 0;
    out->live = s->live_cal;
    pthread_mutex_unlock(&s->err_lock);
    return out->has_live ? 0 : -ENOMEM;
}

void service_live_calibration_set(Service *s, const AdjPair *pairs, size_t n, uint64_t generation)
{
    Calibration cal;
    if (calibration_compute(pairs, n, &cal))
        return; /* out of memory: the last one stays */
    pthread_mutex_lock(&s->err_lock);
    if (generation + 1 >= s->live_cal_generation) { /* never an older copy's over a newer one's (0: never) */
        s->live_cal = cal;
        s->live_cal_generation = generation + 1;
    }
    pthread_mutex_unlock(&s->err_lock);
}

void service_live_calibration_refresh(Service *s)
{
    if (!s->predlog)
        return;
    PredLogStats st;
    store_lock(s->store);
    predlog_stats(s->predlog, &st);
    uint64_t generation = predlog_pair_generation(s->predlog); /* as of the count: never newer than the copy */
    store_unlock(s->store);
    /* as many as the ring holds now (not its capacity: at the largest
     * adjuster.log_size that would be 480 MB at every start); any that
     * mature meanwhile are grouped by the adjuster run that matures them */
    AdjPair *pairs = malloc((st.pairs ? st.pairs : 1) * sizeof *pairs);
    if (!pairs)
        return;
    store_lock(s->store);
    size_t n = predlog_pairs(s->predlog, pairs, st.pairs);
    store_unlock(s->store);
    service_live_calibration_set(s, pairs, n, generation);
    free(pairs);
}

void service_set_ready(Service *s, bool ready) { atomic_store(&s->ready, ready); }
bool service_ready(Service *s) { return atomic_load(&s->ready); }

void service_gauges(Service *s, MetricsGauges *g)
{
    memset(g, 0, sizeof *g);
    g->users = store_count(s->store);
    g->users_max = (uint64_t)s->cfg.limits_max_users;
    g->state_bytes = store_bytes(s->store);
    store_lock(s->store);
    dedupe_expire(s->dedupe, time_now());
    g->dedupe_entries = dedupe_count(s->dedupe);
    g->dedupe_evicted_early = dedupe_evicted_early(s->dedupe);
    g->dedupe_window = dedupe_capacity(s->dedupe);
    store_unlock(s->store);
    Model *m = service_model_acquire(s);
    g->model_version = m->version;
    g->adjuster_reward = m->has_adj ? m->adj.reward_greedy : 0.0;
    model_release(m);
    service_predlog_stats(s, &g->predlog);
    g->ready = service_ready(s);
    g->retrain_running = service_retrain_running(s);
    g->event_clock = atomic_load(&s->event_clock);
    if (s->wal) {
        WalStats ws;
        wal_stats(s->wal, &ws);
        g->wal_records = ws.records;
        g->wal_bytes = ws.bytes;
        g->wal_fsyncs = ws.fsyncs;
        g->wal_fsync_seconds = (double)ws.fsync_ns_total * 1e-9;
        g->wal_durable_seq = ws.durable_seq;
        g->wal_segments_removed = ws.segments_removed;
        g->wal_failed = wal_failed(s->wal);
        g->wal_recoveries = ws.recoveries;
    }
}

