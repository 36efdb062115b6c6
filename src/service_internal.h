/* service_internal: the Service struct and the functions the service's own
 * files share: service.c (requests), jobs.c (worker jobs) and durability.c
 * (recovery and snapshots). Other modules use include/service.h.
 *
 * Ownership: a Service owns its store, dedupe window, prediction log and
 * one reference to the serving model; it keeps a copy of the config and
 * borrows metrics and the write-ahead log (main.c owns both).
 *
 * Locks (docs/ARCHITECTURE.md has the whole order): the store lock guards
 * the store, the dedupe window, the prediction log and logbuf, and orders
 * the log's appends; model_lock guards `model` alone and is taken with no
 * other lock held and nothing taken under it; err_lock guards
 * retrain_error, last_train, runs and the backtest's calibration. Everything else is atomic or written only
 * by the thread named beside it. */
#ifndef LTVD_SERVICE_INTERNAL_H
#define LTVD_SERVICE_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>

#include "dedupe.h"
#include "encoding.h"
#include "history.h"
#include "pace.h"
#include "predlog.h"
#include "service.h"
#include "store.h"
#include "util.h"

struct Service {
    LtvdConfig cfg;
    Metrics *metrics;
    Pace pace;                   /* the compute threads' share of a core while the server is busy */
    Store *store;
    Dedupe *dedupe;              /* under the store lock */
    PredLog *predlog;            /* under the store lock; NULL: adjuster off or adjuster.log_size = 0 */

    pthread_mutex_t model_lock;  /* guards model */
    Model *model;
    atomic_uint_fast64_t next_version;

    atomic_int_fast64_t event_clock;      /* newest applied event ts */
    atomic_uint_fast64_t purchases_total; /* purchase events applied (for refit growth) */
    uint64_t purchases_at_fit;            /* worker only */

    atomic_int retrain_state;    /* RetrainState */
    atomic_uint_fast64_t retrain_job;
    pthread_mutex_t err_lock;
    char retrain_error[256];     /* under err_lock */
    TrainFigures last_train;     /* under err_lock */
    TrainRun runs[TRAIN_RUNS_KEPT]; /* under err_lock: a ring, the newest at (runs_total - 1) % TRAIN_RUNS_KEPT */
    uint64_t runs_total;         /* under err_lock */
    Calibration backtest_cal;    /* under err_lock: the serving model's backtest by decile (pairs 0: none yet) */
    uint64_t backtest_cal_version; /* under err_lock: the model it backtested */
    int64_t backtest_cal_at;     /* under err_lock: when (service_now) */
    Calibration live_cal;        /* under err_lock: the prediction log's pairs by decile, as of... */
    uint64_t live_cal_generation; /* under err_lock: ...this predlog_pair_generation (0: never computed) */
    void (*retrain_notify)(void *);
    void *retrain_notify_arg;

    atomic_bool ready;
    atomic_bool model_follower;  /* cluster mode: the model comes from the cluster's trainer (service_shard.c) */
    atomic_bool cancel_jobs;     /* set once at shutdown: a running retrain stops at its next batch */
    atomic_uint fail_inserts;    /* tests only (service_testing.h): shopper creations to fail */

    /* durability */
    Wal *wal;                    /* NULL until attached (and while replaying); set under the store lock */
    ByteBuf logbuf;              /* record being built; under the store lock */
    History *history;            /* training history (train.history_events > 0), opened by service_recover; the
                                  * snapshot worker archives into it (service_snapshot) while a training job
                                  * in another worker reads it (history.h: history_load may run beside) */
    atomic_int_fast64_t last_snapshot_mono_s;
    atomic_uint_fast64_t wal_bytes_at_snapshot;
    atomic_int_fast64_t erasure_pending_since; /* mono seconds, 0 = none */
    atomic_uint_fast64_t snapshot_job;       /* asked-for snapshot queued or running, 0 = none */
    atomic_uint_fast64_t snapshot_jobs;      /* asked-for snapshots so far */

    /* cluster mode (service_shard.c): set once before the first event */
    uint32_t nshards;            /* 0: not sharded */
    ServiceShardFn shard_of;
    void *shard_arg;

    /* segments (segments.c) */
    pthread_mutex_t seg_lock;    /* guards segments alone; a leaf, like model_lock */
    struct Segments *segments;   /* the published result, NULL before the first refresh */
    unsigned char *seg_peaks;    /* worker only: (seg_npeaks,) 20-byte entries by id hash (segments.c) */
    size_t seg_npeaks;
};

/* Readies a model about to serve (not yet shared): with the adjuster off
 * its table, if it carries one, is set aside (has_adj false), so
 * adjuster.enabled=false serves the network's own predictions whatever
 * file or job the model came from. Called by the publications below and
 * for the initial model. */
void service_adopt_model(const Service *s, Model *m);

/* Groups the log's pairs (n,), copied when its pair generation was
 * `generation`, into the calibration GET /v1/calibration serves (so no
 * request sorts them or copies them under the store lock). Worker or main. */
void service_live_calibration_set(Service *s, const AdjPair *pairs, size_t n, uint64_t generation);

/* Makes m (ownership taken) the serving model. Shoppers' states catch up
 * lazily (service_ensure_state) before a prediction or event uses them. Any
 * thread; takes model_lock only. */
void service_publish(Service *s, Model *m);

/* Makes m (ownership taken) the serving model only if the serving one is
 * still version expect (a rollback may have replaced it while a job built
 * m from it); else releases m and returns -ESTALE. */
int service_publish_if(Service *s, Model *m, uint64_t expect);

/* Recomputes u's h and c from its retained events if they were computed
 * under other weights than net, so a prediction never mixes versions.
 * Store lock held. */
void service_ensure_state(Service *s, UserState *u, const LstmWeights *net);
/* The shopper's part of a prediction view: its id (cut at USER_ID_MAX),
 * as_of, the model's horizon and version, what u (NULL: unknown) holds. */
void service_fill_view(PredictionView *pv, const Model *m, const UserState *u, const char *id, size_t len,
                       int64_t as_of);
void service_recent_summary(const Service *s, const UserState *u, int64_t as_of, RecentSummary *rs);

/* Forgets a shopper (absent: nothing) and its pending predictions. Store
 * lock held. */
void service_erase_locked(Service *s, const char *id, size_t len);

/* Recovery (main thread, before serving): re-applies a logged batch under
 * net (-ENOSPC: it would overflow limits.max_users), and a logged erasure
 * (absent shoppers are fine). Neither logs anything. */
int service_replay_events(Service *s, const Event *ev, size_t n, const LstmWeights *net);
void service_replay_erase(Service *s, const char *id, size_t len);

/* Worker: the training set (trainset.c): the rings of at most
 * train.max_shoppers shoppers chosen by id hash, after the training
 * history's events when it is on. Free set->events and set->shoppers.
 * 0 or -ENOMEM/-errno (set then empty). */
struct TrainSet;
int service_collect_train_set(Service *s, struct TrainSet *set);

/* Worker: runs fn(arg) on a short-lived thread at the lowest priority
 * (service_lower_priority), paced by s->pace while the server is busy
 * (pace.h; s NULL: not paced), and waits for it (jobs.c); fn must not take
 * the store lock. */
int service_run_niced(Service *s, int (*fn)(void *arg), void *arg);
/* The calling thread (or a forked child) to the lowest CPU priority:
 * nice 19 (jobs.c says why not SCHED_IDLE). */
void service_lower_priority(void);

#endif
