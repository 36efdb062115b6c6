/* jobs: the worker jobs: the fallback refit, the retrain (training-set
 * collection is trainset.c's; network training, the swap and the state rebuild), the RL
 * adjuster (maturing logged predictions, learning corrections), and the
 * request state of a retrain and of an asked-for snapshot.
 *
 * Threads: service_request_retrain, service_retrain_running and
 * service_request_snapshot on any thread; the rest on the libuv worker
 * thread, one job at a time (main.c). Jobs read the store in short locked
 * batches (store_visit) so the HTTP thread never waits long, publish a new
 * model by service_publish_if (never over a rollback made meanwhile), and
 * own everything they allocate until they free it.
 *
 * Priorities: the worker thread runs at the HTTP thread's priority and is
 * the only one of a job's threads that takes the store lock; the heavy
 * compute (fits, training, state rebuilds) runs on a short-lived thread at
 * nice 19 (service_run_niced, jobs_niced.c) that never takes it. A nice-19 thread preempted while
 * it held the lock kept the HTTP thread waiting for as long as the busy
 * cores did not run it (docs/PERFORMANCE.md, "Tail latency"). While the
 * server is busy both are paced to jobs.busy_cpu_share of the time (pace.h):
 * the compute threads between units of work, the worker between its walks'
 * batches, off the lock. */
#include "service_internal.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "refit_data.h"
#include "timeutil.h"
#include "trainer.h"

/* Slots a job visits per hold of the store lock, sized so that a hold
 * stays near 100 us (a GET's p99 at rest is about 500 us): about 0.5 us to
 * copy a slot's ring or the slot (the refit's walk: refit_data.c). */
#define WORKER_BATCH_COPY 128

/* ---- the retrain's state ------------------------------------------------ */

void service_set_retrain_notify(Service *s, void (*fn)(void *), void *arg)
{
    s->retrain_notify = fn;
    s->retrain_notify_arg = arg;
}

int service_request_retrain(Service *s, uint64_t *job)
{
    if (atomic_load(&s->model_follower))
        return -EPERM;
    int expected = RETRAIN_IDLE;
    if (!atomic_compare_exchange_strong(&s->retrain_state, &expected, RETRAIN_RUNNING)) {
        if (expected == RETRAIN_RUNNING)
            return -EBUSY;
        if (!atomic_compare_exchange_strong(&s->retrain_state, &expected, RETRAIN_RUNNING))
            return -EBUSY;
    }
    *job = atomic_fetch_add(&s->retrain_job, 1) + 1;
    if (s->retrain_notify)
        s->retrain_notify(s->retrain_notify_arg);
    return 0;
}

bool service_retrain_running(Service *s) { return atomic_load(&s->retrain_state) == RETRAIN_RUNNING; }

/* Worker: writes the serving model to storage.dir and its history
 * (model_history.c). */
static void save_serving_model(Service *s) { service_model_save(s, 0, 0); }

/* ---- an asked-for snapshot (POST /v1/admin/snapshot) -------------------- */

int service_request_snapshot(Service *s, uint64_t *job)
{
    uint64_t none = 0, next = atomic_fetch_add(&s->snapshot_jobs, 1) + 1; /* a refused request skips a number */
    if (!atomic_compare_exchange_strong(&s->snapshot_job, &none, next))
        return -EBUSY;
    *job = next;
    return 0;
}

uint64_t service_snapshot_requested(Service *s) { return atomic_load(&s->snapshot_job); }

void service_snapshot_request_done(Service *s, uint64_t job, int rc)
{
    log_msg(rc ? LOG_WARN : LOG_INFO, "requested snapshot done", "job=%llu result=%s", (unsigned long long)job,
            rc ? "failed" : "ok");
    atomic_store(&s->snapshot_job, 0);
}

/* ---- fallback refit ---------------------------------------------------- */

typedef struct FitJob {
    const CustomerSummary *sum;
    size_t n;
    FallbackFit *fit;
    size_t repeaters;
    const ColdExample *cold; /* (ncold,); NULL: the textbook prior */
    size_t ncold;
    const atomic_bool *cancel; /* shutdown */
} FitJob;

/* Compute thread: BG/NBD, then Gamma-Gamma, from the fit's starting point,
 * then the cold start from behaviour. */
static int fit_fallback(void *arg)
{
    FitJob *j = arg;
    int rc = bgnbd_fit_cancel(j->sum, j->n, &j->fit->bg, j->cancel);
    rc = rc ? rc : gg_fit_cancel(j->sum, j->n, &j->fit->gg, &j->repeaters, j->cancel);
    if (rc)
        return rc;
    if (j->cold)
        return coldstart_fit(j->cold, j->ncold, &j->fit->cold);
    memset(&j->fit->cold, 0, sizeof j->fit->cold);
    j->fit->cold.state = COLD_PRIOR;
    return 0;
}

static int refit_fallback(Service *s, bool force, char *err, size_t errlen);

/* The worker thread is paced too while it runs a job (between its walks'
 * batches, off the store lock: store.c); a job inside another keeps it. */
int service_refit_fallback(Service *s, bool force, char *err, size_t errlen)
{
    Pace *was = pace_attach(&s->pace);
    int rc = refit_fallback(s, force, err, errlen);
    pace_attach(was);
    return rc;
}

static int refit_fallback(Service *s, bool force, char *err, size_t errlen)
{
    uint64_t purchases = atomic_load(&s->purchases_total);
    double growth = s->purchases_at_fit ? (double)purchases / (double)s->purchases_at_fit - 1.0 : INFINITY;
    if (!force && (purchases == s->purchases_at_fit || growth < s->cfg.fallback_refit_growth ||
                   atomic_load(&s->model_follower)))
        return 1;
    int64_t now = service_now(s);
    size_t n = 0, total = 0;
    bool behaviour = s->cfg.fallback_cold_start == 0;
    ColdExample *cold = behaviour ? malloc(COLD_MAX_EXAMPLES * sizeof *cold) : NULL;
    size_t ncold = 0;
    CustomerSummary *sum = behaviour && !cold ? NULL : service_collect_summaries(s, now, &n, &total, cold, &ncold);
    if (!sum) {
        free(cold);
        snprintf(err, errlen, "out of memory collecting summaries");
        return -ENOMEM;
    }
    Model *cur = service_model_acquire(s);
    FallbackFit fit = cur->fallback;
    uint64_t t0 = time_mono_ns();
    FitJob job = {.sum = sum, .n = n, .fit = &fit, .cold = cold, .ncold = ncold, .cancel = &s->cancel_jobs};
    int rc = service_run_niced(s, fit_fallback, &job);
    size_t repeaters = job.repeaters;
    free(sum);
    free(cold);
    if (rc == -ECANCELED) {
        model_release(cur);
        snprintf(err, errlen, "fallback fit stopped: ltvd is shutting down");
        return rc;
    }
    if (rc) {
        model_release(cur);
        snprintf(err, errlen, "fallback fit needs at least 10 shoppers with purchases and 3 repeat buyers "
                              "(have %zu shoppers)", n);
        atomic_fetch_add(&s->metrics->fallback_fit_failures, 1);
        return rc;
    }
    fit.customers = n;
    fit.repeat_buyers = repeaters;
    fit.purchases = purchases;
    fit.fitted_at = now;
    Model *next;
    rc = model_create(&next, cur->net, &fit, cur->horizon_days, cur->status, atomic_fetch_add(&s->next_version, 1));
    if (rc) {
        model_release(cur);
        return rc;
    }
    next->trained_at = cur->trained_at;
    next->train = cur->train;
    next->has_adj = cur->has_adj; /* a refit keeps the corrections; a new network resets them */
    next->adj = cur->adj;
    uint64_t from = cur->version, version = next->version;
    model_release(cur);
    if (service_publish_if(s, next, from)) {
        snprintf(err, errlen, "the serving model changed during the refit (a rollback): refit dropped");
        return 1;
    }
    s->purchases_at_fit = purchases;
    atomic_fetch_add(&s->metrics->fallback_fits, 1);
    atomic_store(&s->metrics->model_last_trained_unix, metrics_unix_now());
    log_msg(LOG_INFO, "fallback refit", "version=%llu customers=%zu of=%zu repeat_buyers=%zu r=%.4f alpha=%.4f "
            "a=%.4f b=%.4f p=%.3f q=%.3f v=%.3f cold_start=%s cold_examples=%llu cold_converted=%llu ms=%.1f",
            (unsigned long long)version, n, total, repeaters, fit.bg.r, fit.bg.alpha, fit.bg.a, fit.bg.b, fit.gg.p,
            fit.gg.q, fit.gg.v, (const char *[]){"prior", "capped", "fitted"}[fit.cold.state % 3],
            (unsigned long long)fit.cold.examples, (unsigned long long)fit.cold.converted, (time_mono_ns() - t0) / 1e6);
    save_serving_model(s);
    return 0;
}

/* ---- the rebuild ------------------------------------------------------------ */

/* Shoppers a rebuild copies out per hold of the store lock. */
#define REBUILD_BATCH 256

typedef struct RebuildWalk {
    unsigned char *copies; /* (REBUILD_BATCH, stride): the slots as found */
    unsigned char *built;  /* (REBUILD_BATCH, stride): the same, rebuilt */
    size_t stride, n;
    uint32_t net_id;
    Service *s;
    const LstmWeights *net;
} RebuildWalk;

/* Copies the next batch of shoppers not yet under net. Store lock held. */
static int visit_rebuild_copy(void *arg, UserState *u)
{
    RebuildWalk *w = arg;
    if (u->net_id != w->net_id)
        memcpy(w->copies + w->n++ * w->stride, u, w->stride);
    return w->n == REBUILD_BATCH;
}

/* Compute thread: the copies' states under net. */
static int rebuild_copies(void *arg)
{
    RebuildWalk *w = arg;
    memcpy(w->built, w->copies, w->n * w->stride);
    for (size_t i = 0; i < w->n; i++) {
        if (i % 16 == 0)
            pace_point(); /* a job's unit: 16 states, about 0.5 ms */
        service_ensure_state(w->s, (UserState *)(w->built + i * w->stride), w->net);
    }
    return 0;
}

/* Worker: rebuilds every shopper's state under net, so requests after a
 * swap rarely pay for a rebuild: copies of REBUILD_BATCH shoppers taken
 * under the lock, their states computed outside it at nice 19, and written
 * back under it to each shopper whose slot has not changed since its copy
 * (one that has was rebuilt by a request, or will be). */
static void rebuild_all(Service *s, const LstmWeights *net)
{
    RebuildWalk w = {.stride = store_slot_bytes(s->store), .net_id = net->id, .s = s, .net = net};
    w.copies = malloc(REBUILD_BATCH * w.stride);
    w.built = malloc(REBUILD_BATCH * w.stride);
    size_t hidden = (size_t)store_config(s->store)->hidden;
    for (size_t at = w.copies && w.built ? 0 : SIZE_MAX; at != SIZE_MAX && !atomic_load(&s->cancel_jobs);) {
        w.n = 0;
        at = store_visit_from(s->store, at, WORKER_BATCH_COPY, visit_rebuild_copy, &w);
        if (w.n)
            service_run_niced(s, rebuild_copies, &w);
        store_lock(s->store);
        for (size_t i = 0; i < w.n; i++) {
            UserState *was = (UserState *)(w.copies + i * w.stride), *now = (UserState *)(w.built + i * w.stride);
            UserState *u = store_find_hash(s->store, was->hash);
            if (!u || memcmp(u, was, w.stride) != 0)
                continue;
            memcpy(store_user_h(s->store, u), store_user_h(s->store, now), 2 * hidden * sizeof(float));
            u->net_id = now->net_id;
        }
        store_unlock(s->store);
    }
    free(w.copies);
    free(w.built);
}

static void train_config(Service *s, const Model *cur, TrainConfig *tc)
{
    *tc = (TrainConfig){
        .hidden = (int)s->cfg.model_hidden_size,
        .horizon_days = cur->horizon_days,
        .seed = (uint64_t)s->cfg.train_seed,
        .max_epochs = (int)s->cfg.train_max_epochs,
        .lr = s->cfg.train_learning_rate,
        .mean_loss_weight = s->cfg.train_mean_loss_weight,
        .mean_shrink = s->cfg.train_mean_shrink,
        .batch = (int)s->cfg.train_batch,
        .cuts_per_shopper = (int)s->cfg.train_cuts_per_shopper,
        .grid_days = (int)s->cfg.train_grid_days,
        .max_examples = (size_t)s->cfg.train_max_examples,
        .bptt = (int)s->cfg.train_bptt_steps,
        .val_percent = (int)s->cfg.train_val_percent,
        .head = (int)s->cfg.train_head,
        .level = (int)s->cfg.train_level,
        .ring = (int)s->cfg.model_recent_events,
        .cancel = &s->cancel_jobs,
    };
}

typedef struct TrainJob {
    const TrainSet *set;
    const TrainConfig *tc;
    const FallbackFit *fit;
    const LstmWeights *serving;
    uint32_t new_id;
    TrainResult *out;
    AdjPair **pairs; /* a backtest's */
    size_t *npairs;
    char *err;
    size_t errlen;
} TrainJob;

/* Compute thread: trainer_run. */
static int train_job(void *arg)
{
    TrainJob *j = arg;
    return trainer_run(j->set, j->tc, j->fit, j->serving, j->new_id, j->out, j->err, j->errlen);
}

/* Compute thread: trainer_backtest. */
static int backtest_job(void *arg)
{
    TrainJob *j = arg;
    return trainer_backtest(j->set, j->tc, j->fit, j->serving, j->pairs, j->npairs);
}

/* ---- adjuster ------------------------------------------------------------ */

/* Realised net spend in (t, t + H] of a logged prediction, from the
 * shopper's aggregates now minus the spend at t and minus the retained
 * events after the window; -1 when the shopper is gone or its ring no
 * longer reaches back to the window's end. Under the store lock. */
static double realised_spend(void *arg, const PredLogEntry *e)
{
    Service *s = arg;
    UserState *u = store_find_hash(s->store, e->key);
    if (!u)
        return -1;
    int64_t end = e->t + (int64_t)s->cfg.model_horizon_days * 86400;
    double after = 0;
    bool covered = u->ring_ctx.events_before == 0; /* nothing has left the ring */
    for (unsigned k = u->ring_len; k-- > 0;) {
        const RecentEvent *r = store_ring_at(s->store, u, k);
        if ((int64_t)r->ts <= end) {
            covered = true;
            break;
        }
        after += r->type == EV_PURCHASE ? r->value : r->type == EV_REFUND ? -r->value : 0;
    }
    return covered ? fmax(0.0, u->agg.spend - e->spend_at - after) : -1;
}

/* Worker: turns logged predictions whose horizon has passed into pairs, in
 * short locked batches. */
static void mature_predictions(Service *s)
{
    int64_t matured_at = service_now(s) - (int64_t)s->cfg.model_horizon_days * 86400;
    size_t cursor = 0, left;
    do {
        store_lock(s->store);
        left = predlog_mature(s->predlog, matured_at, &cursor, 256, realised_spend, s);
        store_unlock(s->store);
    } while (left);
}

/* Worker: the serving model's backtest (its predictions at the matured
 * validation cuts, with their outcomes) into *bt (malloc'd, caller frees;
 * NULL and 0 when there is none); its deciles become GET /v1/calibration's
 * backtest. 0 or <0. */
static int backtest_serving(Service *s, const Model *cur, AdjPair **bt, size_t *nbt)
{
    *bt = NULL;
    *nbt = 0;
    TrainSet set;
    if (service_collect_train_set(s, &set))
        return -ENOMEM;
    TrainConfig tc;
    train_config(s, cur, &tc);
    TrainJob job = {.set = &set, .tc = &tc, .fit = &cur->fallback, .serving = cur->status == MODEL_TRAINED ? cur->net
                    : NULL, .pairs = bt, .npairs = nbt};
    int rc = service_run_niced(s, backtest_job, &job);
    free(set.events);
    free(set.shoppers);
    free(set.served);
    if (rc == -ENODATA)
        return 0;
    if (rc)
        return rc;
    Calibration cal;
    if (calibration_compute(*bt, *nbt, &cal) == 0) {
        pthread_mutex_lock(&s->err_lock);
        s->backtest_cal = cal;
        s->backtest_cal_version = cur->version;
        s->backtest_cal_at = service_now(s);
        pthread_mutex_unlock(&s->err_lock);
    }
    return 0;
}

/* Worker: the matured pairs the adjuster learns from (adjuster_select):
 * those the serving network served (by its id), its newest horizon of them
 * when that holds ADJ_RECENT_MIN;
 * otherwise all of them, then a backtest of the serving model on matured
 * validation cuts. The backtest runs either way: it is also
 * GET /v1/calibration's. */
static int adjuster_pairs(Service *s, const Model *cur, AdjPair **out, size_t *n, size_t *live)
{
    size_t cap = s->predlog ? (size_t)s->cfg.adjuster_log_size : 0, nlive = 0;
    AdjPair *logged = malloc((cap ? cap : 1) * sizeof *logged);
    if (!logged)
        return -ENOMEM;
    if (s->predlog) {
        mature_predictions(s);
        store_lock(s->store);
        nlive = predlog_pairs(s->predlog, logged, cap);
        uint64_t generation = predlog_pair_generation(s->predlog);
        store_unlock(s->store);
        service_live_calibration_set(s, logged, nlive, generation); /* GET /v1/calibration's live part */
    }
    AdjPair *bt = NULL;
    size_t nbt = 0;
    int rc = backtest_serving(s, cur, &bt, &nbt);
    AdjPair *all = rc ? NULL : malloc((nlive + nbt + 1) * sizeof *all);
    if (all) {
        int64_t h = (int64_t)s->cfg.model_horizon_days * 86400;
        *n = adjuster_select(logged, nlive, bt, nbt, h, service_now(s) - h, cur->net->id, all, live);
    }
    free(logged);
    free(bt);
    if (rc)
        return rc;
    if (!all)
        return -ENOMEM;
    *out = all;
    return 0;
}

/* Worker, after a retrain when the adjuster is off (its run backtests
 * otherwise): the serving model's backtest, for GET /v1/calibration. */
static void calibrate_serving(Service *s)
{
    if (atomic_load(&s->cancel_jobs)) /* shutting down: not worth a pass over the validation cuts */
        return;
    Model *cur = service_model_acquire(s);
    AdjPair *bt = NULL;
    size_t nbt = 0;
    int rc = backtest_serving(s, cur, &bt, &nbt);
    model_release(cur);
    free(bt);
    if (rc)
        log_msg(LOG_WARN, "backtest failed", "error=\"%s\"", strerror(-rc));
}

typedef struct LearnJob {
    const AdjPair *pairs;
    size_t n;
    uint64_t seed;
    const AdjTable *prev;
    AdjTable *out;
} LearnJob;

/* Compute thread: adjuster_learn. */
static int learn_job(void *arg)
{
    LearnJob *j = arg;
    return adjuster_learn(j->pairs, j->n, j->seed, 400, j->prev, j->out);
}

/* Worker: the RL adjuster learns corrections for the serving model from
 * matured pairs, and a model carrying them is published. 0, 1 if there was
 * nothing to learn from, <0 on error. */
static int run_adjuster(Service *s)
{
    Model *cur = service_model_acquire(s);
    AdjPair *pairs = NULL;
    size_t n = 0, live = 0;
    AdjTable t;
    int rc = adjuster_pairs(s, cur, &pairs, &n, &live);
    LearnJob job = {.pairs = pairs, .n = n, .seed = (uint64_t)s->cfg.train_seed, .prev = cur->has_adj ? &cur->adj
                    : NULL, .out = &t};
    if (!rc)
        rc = service_run_niced(s, learn_job, &job);
    free(pairs);
    if (rc) {
        model_release(cur);
        log_msg(LOG_INFO, "adjuster skipped", "reason=\"%s\" pairs=%zu", rc == -ENODATA ? "too few matured outcomes"
                : strerror(-rc), n);
        return rc == -ENODATA ? 1 : rc;
    }
    t.live_pairs = (uint32_t)live;
    t.backtest_pairs = (uint32_t)(n - live);
    Model *next;
    rc = model_create(&next, cur->net, &cur->fallback, cur->horizon_days, cur->status,
                      atomic_fetch_add(&s->next_version, 1));
    if (rc) {
        model_release(cur);
        return rc;
    }
    next->trained_at = cur->trained_at;
    next->train = cur->train;
    next->has_adj = true;
    next->adj = t;
    uint64_t from = cur->version, to = next->version;
    model_release(cur);
    int corrected = 0;
    for (int k = 0; k < ADJ_SEGMENTS; k++)
        corrected += t.action[k] != ADJ_IDENTITY;
    if (service_publish_if(s, next, from)) {
        log_msg(LOG_INFO, "adjuster skipped", "reason=\"the serving model changed meanwhile (a rollback)\"");
        return 1;
    }
    service_model_save(s, from, to); /* the parent with an older table: its history file goes */
    atomic_fetch_add(&s->metrics->adjuster_runs, 1);
    atomic_fetch_add(&s->metrics->adjuster_episodes, t.episodes);
    log_msg(LOG_INFO, "adjuster updated", "pairs=%zu live_pairs=%zu episodes=%llu corrected_segments=%d reward=%.4f",
            n, live, (unsigned long long)t.episodes, corrected, t.reward_greedy);
    return 0;
}

void service_run_adjuster(Service *s)
{
    if (!s->cfg.adjuster_enabled || atomic_load(&s->model_follower))
        return;
    Pace *was = pace_attach(&s->pace);
    int rc = run_adjuster(s);
    pace_attach(was);
    if (rc < 0)
        log_msg(LOG_WARN, "adjuster failed", "error=\"%s\"", strerror(-rc));
}

/* ---- retrain ------------------------------------------------------------ */

/* Worker: trains a network; swaps it in if it beats the serving model on
 * the validation split. 0, or <0 with err set. */
static int train_network(Service *s, char *err, size_t errlen)
{
    TrainSet set;
    int rc = service_collect_train_set(s, &set);
    if (rc) {
        snprintf(err, errlen, "out of memory collecting the training set");
        return rc;
    }
    Model *cur = service_model_acquire(s);
    TrainConfig tc;
    train_config(s, cur, &tc);
    uint64_t version = atomic_fetch_add(&s->next_version, 1);
    TrainResult tr;
    TrainJob job = {.set = &set, .tc = &tc, .fit = &cur->fallback, .serving = cur->status == MODEL_TRAINED ? cur->net
                    : NULL, .new_id = (uint32_t)version, .out = &tr, .err = err, .errlen = errlen};
    rc = service_run_niced(s, train_job, &job);
    uint64_t set_events = set.nevents, set_history = set.history_events;
    free(set.events);
    free(set.shoppers);
    free(set.served);
    if (rc) {
        model_release(cur);
        return rc;
    }
    TrainFigures f = {
        .examples = tr.examples,
        .users = tr.users,
        .events = set_events,
        .history_events = set_history,
        .epochs = (uint64_t)tr.epochs,
        .val_loss = tr.val_loss,
        .val_gini = tr.val_gini,
        .seconds = tr.seconds,
        .val_loss_other = tr.val_loss_other,
        .val_loss_fallback = tr.val_loss_fallback,
        .val_loss_serving = tr.val_loss_serving,
        .val_gini_fallback = tr.val_gini_fallback,
        .level_shift = tr.level_shift,
        .p_scale = tr.p_scale,
        .p_offset = tr.p_offset,
        .m_shrink = tr.m_shrink,
        .m_center = tr.m_center,
        .val_total_error_fallback = tr.val_total_error_fallback,
        .val_total_error_held_out = tr.val_total_error_held_out,
        .val_total_error_network = tr.val_total_error_network,
        .level_shoppers = tr.level_shoppers,
        .level_buyers = tr.level_buyers,
        .level_rule = tr.level_rule,
        .hybrid = tr.hybrid,
        .seasonal = tr.seasonal,
        .seasonal_events = tr.seasonal_events,
        .swapped = tr.val_loss < tr.val_loss_serving,
    };
    log_msg(LOG_INFO, "network trained", "hybrid=%s seasonal=%s seasonal_events=%s val_loss=%.5f other_variant=%.5f fallback=%.5f serving=%.5f "
            "val_gini=%.4f val_gini_fallback=%.4f level_shift=%.4f p_scale=%.4f p_offset=%.4f m_shrink=%.4g m_center=%.4f level_rule=%s "
            "val_total_error_fallback=%.4f "
            "val_total_error_held_out=%.4f val_total_error_network=%.4f examples=%llu users=%llu events=%llu history_events=%llu epochs=%d "
            "epochs_other=%d seconds=%.2f swap=%s",
            tr.hybrid ? "true" : "false", tr.seasonal ? "true" : "false", tr.seasonal_events ? "true" : "false", tr.val_loss, tr.val_loss_other, tr.val_loss_fallback, tr.val_loss_serving,
            tr.val_gini, tr.val_gini_fallback, tr.level_shift, tr.p_scale, tr.p_offset, tr.m_shrink, tr.m_center,
            model_level_rule_name(tr.level_rule), tr.val_total_error_fallback, tr.val_total_error_held_out,
            tr.val_total_error_network,
            (unsigned long long)tr.examples, (unsigned long long)tr.users, (unsigned long long)set_events,
            (unsigned long long)set_history, tr.epochs, tr.epochs_other, tr.seconds,
            f.swapped ? "true" : "false");
    pthread_mutex_lock(&s->err_lock);
    s->last_train = f;
    s->runs[s->runs_total++ % TRAIN_RUNS_KEPT] = (TrainRun){.version = version, .at = service_now(s), .f = f};
    pthread_mutex_unlock(&s->err_lock);
    if (!f.swapped) {
        lstm_weights_release(tr.net);
        model_release(cur);
        return 0;
    }
    Model *next;
    rc = model_create(&next, tr.net, &cur->fallback, cur->horizon_days, MODEL_TRAINED, version);
    lstm_weights_release(tr.net);
    uint64_t from = cur->version;
    model_release(cur);
    if (rc)
        return rc;
    next->trained_at = service_now(s);
    next->train = f;
    model_retain(next); /* for the rebuild: a rollback may replace it at once */
    if (service_publish_if(s, next, from)) { /* serving never pauses: states are checked per request */
        model_release(next);
        log_msg(LOG_INFO, "trained network dropped", "reason=\"the serving model changed during training (a rollback)\"");
        return 0;
    }
    atomic_store(&s->metrics->model_last_trained_unix, metrics_unix_now());
    rebuild_all(s, next->net);
    model_release(next);
    save_serving_model(s);
    log_msg(LOG_INFO, "model swapped", "version=%llu", (unsigned long long)version);
    return 0;
}

void service_cancel_jobs(Service *s)
{
    atomic_store(&s->cancel_jobs, true);
}

static void run_retrain(Service *s);

void service_run_retrain(Service *s)
{
    Pace *was = pace_attach(&s->pace);
    run_retrain(s);
    pace_attach(was);
}

static void run_retrain(Service *s)
{
    uint64_t t0 = time_mono_ns();
    char err[256] = "";
    log_msg(LOG_INFO, "retrain start", "job=%llu network=%s", (unsigned long long)atomic_load(&s->retrain_job),
            s->cfg.train_network ? "true" : "false");
    int rc = service_refit_fallback(s, true, err, sizeof err);
    if (rc >= 0 && s->cfg.train_network) {
        rc = train_network(s, err, sizeof err);
        if (rc == -ENODATA) { /* young data: not a failure, the fallback serves on */
            log_msg(LOG_INFO, "network training skipped", "reason=\"%s\"", err);
            rc = 0;
        }
    }
    if (rc == -ECANCELED) { /* shutting down: the refit above stands, no network was swapped in */
        atomic_store(&s->retrain_state, RETRAIN_IDLE);
        log_msg(LOG_INFO, "retrain stopped", "reason=\"%s\"", err);
        return;
    }
    service_run_adjuster(s); /* also when the refit failed: the serving model is unchanged */
    if (!s->cfg.adjuster_enabled)
        calibrate_serving(s);
    uint64_t ns = time_mono_ns() - t0, ms = ns / 1000000;
    atomic_store(&s->metrics->retrain_last_ns, ns);
    atomic_fetch_add(&s->metrics->retrain_runs, 1);
    pthread_mutex_lock(&s->err_lock);
    snprintf(s->retrain_error, sizeof s->retrain_error, "%s", rc < 0 ? err : "");
    pthread_mutex_unlock(&s->err_lock);
    if (rc < 0) {
        atomic_fetch_add(&s->metrics->retrain_failures, 1);
        atomic_store(&s->retrain_state, RETRAIN_FAILED);
        log_msg(LOG_WARN, "retrain failed", "error=\"%s\" ms=%llu", err, (unsigned long long)ms);
        return;
    }
    atomic_store(&s->retrain_state, RETRAIN_IDLE);
    atomic_store(&s->metrics->retrain_last_success_unix, metrics_unix_now());
    log_msg(LOG_INFO, "retrain finish", "ms=%llu", (unsigned long long)ms);
}

