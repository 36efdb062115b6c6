/* service: what ltvd does, independent of HTTP. Validates events, applies
 * them to shoppers atomically, serves predictions and summaries, erases
 * shoppers, holds the serving model and runs the worker-side jobs (fallback
 * refit, retrain).
 *
 * Threads: every function not marked "worker" may be called from any HTTP
 * thread. Shopper data is guarded by the store lock; the serving model by a
 * separate mutex that is never held while taking the store lock. Worker
 * functions run on a libuv pool thread, one at a time (main.c serialises
 * them). */
#ifndef LTVD_SERVICE_H
#define LTVD_SERVICE_H

#include <cJSON.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "metrics.h"
#include "model.h"
#include "shopper.h"
#include "wal.h"

typedef struct Service Service;

/* One problem with one event of a batch. */
typedef struct EventError {
    size_t index;
    const char *field;
    char reason[112];
} EventError;

/* A validated request body. events[i] points into the cJSON tree it came
 * from, which must outlive the batch. */
typedef struct EventBatch {
    Event *events;       /* (n,) */
    size_t n;
    EventError *errors;  /* (nerrors,): at most one per event */
    size_t nerrors;
    bool single;         /* body was one event object, not {"events": [...]} */
    Event one;           /* storage for a single event */
    EventError one_error;
} EventBatch;

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

/* Validates a parsed body. 0: all valid; -EINVAL: b->errors says why;
 * -E2BIG: more than limits.max_batch_events; -EPROTO: body is not an event
 * or {"events": [...]} (b->errors[0] says why). Free with service_batch_free. */
int service_parse_events(Service *s, const cJSON *root, EventBatch *b);
void service_batch_free(EventBatch *b);

/* Applies a validated batch, all or nothing. -ENOSPC: it would exceed
 * limits.max_users (nothing applied). For a single event, *single gets the
 * shopper's updated prediction when single is not NULL. */
int service_apply(Service *s, const EventBatch *b, ApplyResult *res, PredictionView *single);

/* A user_id as accepted in events: 1..128 bytes of UTF-8 without NUL. */
bool service_id_valid(const char *id, size_t len);

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
/* Publishes m (takes ownership) as the serving model. Shoppers' states are
 * recomputed from their recent events before any prediction uses the new
 * weights. Any thread. */
void service_model_swap(Service *s, Model *m);
void service_model_info(Service *s, ModelInfo *out);

/* Marks a retrain as started and calls the notify hook. -EBUSY while one runs. */
int service_request_retrain(Service *s, uint64_t *job);
void service_set_retrain_notify(Service *s, void (*fn)(void *), void *arg);
/* Worker: the RL adjuster matures logged predictions and learns a new
 * correction table for the serving model (if adjuster.enabled). */
void service_run_adjuster(Service *s);
/* The prediction log's figures (all zero without a log). */
void service_predlog_stats(Service *s, PredLogStats *out);
/* Worker: runs the retrain job the last request started. */
void service_run_retrain(Service *s);
/* Worker: refits the fallback if logged purchases grew by
 * fallback.refit_growth since the last fit (or force). 0, 1 if skipped, <0. */
int service_refit_fallback(Service *s, bool force, char *err, size_t errlen);
bool service_retrain_running(Service *s);

/* ---- durability (docs/DURABILITY.md) ----------------------------------- */

/* Start-up, main thread, before serving: loads the newest valid snapshot in
 * storage.dir and replays the write-ahead log after it. *next_seq gets the
 * sequence number the log continues with. */
int service_recover(Service *s, uint64_t *next_seq, char *err, size_t errlen);
/* From now on every applied batch and erasure is appended to wal. */
void service_attach_wal(Service *s, struct Wal *wal);
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
