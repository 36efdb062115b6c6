/* service: what ltvd does, independent of HTTP: applies validated events
 * to shoppers all or nothing, serves predictions and summaries, erases
 * shoppers, holds the serving model (service.c); runs the worker jobs
 * (jobs.c); recovers at start and writes snapshots (durability.c).
 * Validating a request body is events.h's.
 *
 * Threads: a function marked "worker" runs on the libuv pool thread, one
 * job at a time (main.c serialises them); "main" on the libuv loop thread;
 * every other function on any thread (the HTTP thread calls them).
 * Shopper data is guarded by the store lock; the serving model by a
 * separate mutex never held while taking another lock.
 *
 * Ownership: the Service owns the shoppers and the serving model; what a
 * function fills (views, ModelInfo) is the caller's, with no pointer into
 * the Service. */
#ifndef LTVD_SERVICE_H
#define LTVD_SERVICE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "metrics.h"
#include "model.h"
#include "shopper.h"
#include "wal.h"

typedef struct Service Service;

typedef struct ApplyResult {
    size_t accepted, duplicates, late;
    uint64_t wait_seq; /* the answer may go out once the log is durable up to here (0: no wait) */
} ApplyResult;

typedef struct PredictionView {
    char user_id[USER_ID_MAX + 1];
    size_t user_len;
    bool known;
    int64_t as_of;
    int horizon_days;
    uint64_t model_version;
    uint32_t events;
    int64_t last_event_ts;
    Prediction p;
} PredictionView;

typedef struct UserSummaryView {
    ShopperAgg agg;
    unsigned recent_events;
} UserSummaryView;

typedef enum { RETRAIN_IDLE = 0, RETRAIN_RUNNING = 1, RETRAIN_FAILED = 2 } RetrainState;

typedef struct ModelInfo {
    uint64_t version;
    ModelStatus status;
    int64_t trained_at;
    int horizon_days, hidden_size;
    TrainFigures train;
    FallbackFit fallback;
    RetrainState retrain_state;
    uint64_t retrain_job;
    char retrain_error[256];
    TrainFigures last_train;   /* of the last network training, swapped or not */
    bool has_adj;
    AdjTable adj;
    bool network_enabled, adjuster_enabled;
} ModelInfo;

/* Takes ownership of initial (the serving model at start). */
int service_create(Service **out, const LtvdConfig *cfg, Metrics *metrics, Model *initial);
void service_destroy(Service *s); /* NULL-safe */

/* "now" by the configured clock: wall time, or the newest event time seen. */
int64_t service_now(Service *s);

/* Applies validated events (events_parse) in order, all or nothing: first
 * to the log (when attached), then to the shoppers. -ENOSPC: they would
 * exceed limits.max_users; -EIO: the log failed; -ENOMEM; nothing applied
 * on error. When single is not NULL it gets the updated prediction of
 * events[0]'s shopper (for a one-event post). */
int service_apply(Service *s, const Event *events, size_t n, ApplyResult *res, PredictionView *single);

/* Prediction for one shopper; as_of < 0 means now. */
void service_predict(Service *s, const char *id, size_t len, int64_t as_of, PredictionView *out);
/* Predictions for n shoppers under one lock and one model. */
void service_predict_many(Service *s, const char *const *ids, const size_t *lens, size_t n, int64_t as_of,
                          PredictionView *out);

int service_user_summary(Service *s, const char *id, size_t len, UserSummaryView *out); /* -ENOENT */
/* Erases the shopper and logs the erasure; *wait_seq as in ApplyResult. */
int service_delete_user(Service *s, const char *id, size_t len, uint64_t *wait_seq); /* -ENOENT */

/* The serving model, retained (caller releases). */
Model *service_model_acquire(Service *s);
void service_model_info(Service *s, ModelInfo *out);

/* The prediction log's figures (all zero without a log). */
void service_predlog_stats(Service *s, PredLogStats *out);

/* ---- worker jobs (jobs.c) ---------------------------------------------- */

/* Marks a retrain as started and calls the notify hook (which must only
 * hand the job to the loop: uv_async_send). -EBUSY while one runs. */
int service_request_retrain(Service *s, uint64_t *job);
/* Main, before serving. */
void service_set_retrain_notify(Service *s, void (*fn)(void *), void *arg);
bool service_retrain_running(Service *s);
/* Any thread, at shutdown: a running retrain stops at its next training
 * batch without swapping or saving anything (its job ends "stopped"), so
 * SIGTERM is not held up by a long training run. Not undone. */
void service_cancel_jobs(Service *s);
/* Worker: runs the retrain job the last request started: fallback refit,
 * network training (train.network), then the adjuster. */
void service_run_retrain(Service *s);
/* Worker: refits the fallback if logged purchases grew by
 * fallback.refit_growth since the last fit (or force). 0, 1 if skipped, <0. */
int service_refit_fallback(Service *s, bool force, char *err, size_t errlen);
/* Worker: the RL adjuster matures logged predictions and learns a new
 * correction table for the serving model (if adjuster.enabled). */
void service_run_adjuster(Service *s);

/* ---- durability (durability.c, docs/DURABILITY.md) --------------------- */

/* Start-up, main thread, before serving: loads the newest valid snapshot in
 * storage.dir and replays the write-ahead log after it. *next_seq gets the
 * sequence number the log continues with. */
int service_recover(Service *s, uint64_t *next_seq, char *err, size_t errlen);
/* Main: from now on every applied batch and erasure is appended to wal
 * (borrowed: main.c closes it after the last request). */
void service_attach_wal(Service *s, Wal *wal);
/* True once the log has made everything up to seq durable. */
bool service_durable(Service *s, uint64_t seq);
/* True once the log has failed (no write is accepted any more). */
bool service_log_failed(Service *s);
/* Worker (or main at shutdown): writes a snapshot, then removes the log
 * segments and snapshots it supersedes. fork_child: write it from a
 * copy-on-write child so the HTTP threads wait only for the fork. */
int service_snapshot(Service *s, bool fork_child, char *err, size_t errlen);
/* Main thread: is a snapshot due (interval, log growth, pending erasure)? */
bool service_snapshot_due(Service *s);

void service_set_ready(Service *s, bool ready);
bool service_ready(Service *s);
void service_gauges(Service *s, MetricsGauges *g);

#endif
