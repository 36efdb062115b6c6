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

#include "calibration.h"
#include "config.h"
#include "hash.h"
#include "metrics.h"
#include "history.h"
#include "model.h"
#include "shopper.h"
#include "util.h"
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

/* One network training since start (GET /v1/model's retrain.runs): the
 * fallback's figures on the same validation split sit beside the
 * network's, which a model file does not keep. */
#define TRAIN_RUNS_KEPT 16
typedef struct TrainRun {
    uint64_t version;  /* the version it got if swapped in (allotted either way) */
    int64_t at;        /* service_now when it ended */
    TrainFigures f;
} TrainRun;

typedef struct ModelInfo {
    uint64_t version;
    ModelStatus status;
    int64_t trained_at;
    int horizon_days, hidden_size;
    TrainFigures train;
    HeadCalib calib;           /* the serving network's level shift and p's calibration (HEAD_CALIB_NONE: fallback) */
    FallbackFit fallback;
    RetrainState retrain_state;
    uint64_t retrain_job;
    char retrain_error[256];
    TrainFigures last_train;   /* of the last network training, swapped or not */
    TrainRun runs[TRAIN_RUNS_KEPT]; /* the last nruns trainings, oldest first */
    unsigned nruns;
    bool has_adj;
    AdjTable adj;
    bool network_enabled, adjuster_enabled;
    bool history_enabled;      /* train.history_events > 0 and the history opened */
    HistoryStats history;      /* the training history's figures (history.h) */
} ModelInfo;

/* Takes ownership of initial (the serving model at start). */
int service_create(Service **out, const LtvdConfig *cfg, Metrics *metrics, Model *initial);
void service_destroy(Service *s); /* NULL-safe */

/* "now" by the configured clock: wall time, or the newest event time seen. */
int64_t service_now(Service *s);

/* Applies validated events (events_parse) in order, all or nothing: first
 * to the log (when attached), then to the shoppers. -ENOSPC: they would
 * exceed limits.max_users; -EIO: the log failed; -ENOMEM: no memory for the
 * record or the new shoppers' slots; nothing applied on error. (The one
 * exception cannot happen after the slots are reserved: a shopper that
 * still cannot be created gives -ENOMEM after the rest of the batch was
 * applied; its event_id is not taken, so a retry applies just that event.)
 * An event_id joins the dedupe window only once its event is applied.
 * When single is not NULL it gets the updated prediction of
 * events[0]'s shopper (for a one-event post). */
int service_apply(Service *s, const Event *events, size_t n, ApplyResult *res, PredictionView *single);

/* ---- cluster mode: the state as shards (service_shard.c) ----------------
 * shard_of(arg, id, len) < nshards: the shard (partition) of a shopper. */
typedef uint32_t (*ServiceShardFn)(void *arg, const char *id, size_t len);
/* Main, before any event: the state is sharded. The store's and the
 * event_id window's hash keys are derived from key (the cluster's, so a
 * shard's window means the same on every node), and the window's ids are
 * marked with their shard. 0; -EBUSY (shoppers held already); -EINVAL
 * (nshards 0 or above 65535); -ENOMEM. */
int service_use_shards(Service *s, uint32_t nshards, ServiceShardFn shard_of, void *arg, const HashKey *key);
/* Appends shard's shoppers and event_id window to out (the format is in
 * service_shard.c); *users gets how many shoppers. The caller makes sure
 * no event of the shard is applied meanwhile. Walks the store a batch at a
 * time (the lock is free in between). 0, -ENOMEM (out as it was), -EINVAL
 * (not sharded). */
int service_shard_export(Service *s, uint32_t shard, ByteBuf *out, uint64_t *users);
/* Forgets the shoppers and window ids of every shard k with drop[k]
 * (nshards,); returns how many shoppers. Walks as above. */
size_t service_shard_drop(Service *s, const bool *drop);
/* Loads a copy made by service_shard_export into a node that holds none of
 * the shard's shoppers (after service_shard_drop), all or nothing: each
 * shopper's state is recomputed under this node's network at its first use.
 * 0; -EBADMSG (corrupt, another shard, or another model.hidden_size /
 * model.recent_events / build), -ENOSPC (limits.max_users), -ENOMEM, -EINVAL
 * (not sharded); err says which. */
int service_shard_import(Service *s, uint32_t shard, const void *data, size_t len, uint64_t *users, char *err,
                         size_t errlen);

/* Cluster mode: a node that follows the cluster's model (docs/CLUSTER.md,
 * "One model for the cluster") changes its serving model only when told
 * to (service_model_import and service_model_rollback still work): a
 * requested retrain is refused (-EPERM), and scheduled refits and adjuster
 * runs do nothing. Any thread. */
void service_set_model_follower(Service *s, bool follow);
bool service_model_follower(Service *s);
/* The serving model's version. Any thread. */
uint64_t service_model_version(Service *s);

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

/* GET /v1/calibration: predicted against realised by decile. */
typedef struct CalibrationView {
    int horizon_days;
    bool has_live;          /* a prediction log exists (adjuster.enabled, adjuster.log_size > 0) */
    Calibration live;       /* its matured pairs, as of the last maturing (retrain or adjuster run) */
    bool has_backtest;      /* a retrain has backtested a serving model */
    Calibration backtest;   /* that model's predictions at the validation cuts against their outcomes */
    uint64_t backtest_version;
    int64_t backtest_at;
} CalibrationView;

/* Fills out. The live part is the one grouped when the pairs last
 * changed (an adjuster run's maturing, recovery); only if they were never
 * grouped does the call copy them under the store lock and group them
 * itself. 0 or -ENOMEM. */
int service_calibration(Service *s, CalibrationView *out);

/* Groups the prediction log's pairs for GET /v1/calibration (after a
 * snapshot restored them). Main, before serving; or the worker. */
void service_live_calibration_refresh(Service *s);

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

/* POST /v1/admin/snapshot: asks for a snapshot now; *job numbers the
 * request. -EBUSY while an asked-for snapshot is queued or being written.
 * Main's snapshot timer (each second) starts it as the next worker job. */
int service_request_snapshot(Service *s, uint64_t *job);
/* Main: the asked-for snapshot job waiting or running, 0 if none. */
uint64_t service_snapshot_requested(Service *s);
/* Worker: the asked-for snapshot job ended (rc: service_snapshot's). */
void service_snapshot_request_done(Service *s, uint64_t job, int rc);

/* ---- model history (model_history.c, docs/OPERATIONS.md) --------------- */

/* Each saved serving model is also storage.dir/model-<version>.bin (the
 * newest model.keep are kept, and always the serving one); model.bin is a
 * copy of the serving one's file, so a rollback survives a restart.
 * All of it is serialised by one lock (history_lock), taken before
 * model_lock and never under another lock. */
#define MODEL_HISTORY_MAX 100 /* model.keep's upper bound */

typedef struct ModelFileInfo {
    uint64_t version;
    bool serving;
    bool valid;          /* loads as at start: format, checksum, shapes, horizon */
    char error[320];     /* why not, when !valid */
    uint64_t bytes;
    ModelStatus status;
    bool hybrid;
    int64_t trained_at;  /* 0: never */
    int64_t fitted_at;   /* the fallback's; 0: the prior */
    TrainFigures train;
} ModelFileInfo;

/* Main, before serving: the model loaded from model.bin gets its history
 * file if it has none, and new versions start above every file's. */
void service_history_init(Service *s);
/* Worker: saves the serving model (model-<version>.bin, model.bin) and
 * trims the history to model.keep. replaces: the version that version `by`
 * supersedes in the history (an adjuster run's parent: the same network
 * and fallback with an older table), whose file is removed only when `by`
 * is the model serving and its file is written (a rollback in between
 * leaves both alone); 0: none. */
void service_model_save(Service *s, uint64_t replaces, uint64_t by);
/* The history, newest first, into out (cap,); returns how many. */
size_t service_models_list(Service *s, ModelFileInfo *out, size_t cap);
/* model-<version>.bin serves from now on (swapped in like a retrain's) and
 * becomes model.bin. -ENOENT: no such file; -EINVAL: it does not load (err
 * says why). *info: the file's. */
int service_model_rollback(Service *s, uint64_t version, ModelFileInfo *info, char *err, size_t errlen);
/* The bytes of model-<version>.bin, or of the serving model if it is that
 * version and has no file (the prior), into *out (empty on entry; the
 * caller frees it). -ENOENT, -EIO. */
int service_model_export(Service *s, uint64_t version, ByteBuf *out);
/* Checks data (len bytes) as model_load checks model.bin at start, gives it
 * the next version and adds it to the history; it serves once rolled back
 * to. -EINVAL (err says why), -EIO. *info: the new file's. */
int service_model_import(Service *s, const void *data, size_t len, ModelFileInfo *info, char *err, size_t errlen);

void service_set_ready(Service *s, bool ready);
bool service_ready(Service *s);
void service_gauges(Service *s, MetricsGauges *g);

#endif
