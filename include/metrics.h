/* metrics: process-wide counters and latency histograms, rendered in the
 * Prometheus text format (base units: seconds, bytes; docs/OPERATIONS.md
 * lists them). Every field is atomic (relaxed): the HTTP threads, the log's
 * flusher and the worker write, /metrics reads. */
#ifndef LTVD_METRICS_H
#define LTVD_METRICS_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "predlog.h"
#include "util.h"

#define METRICS_MAX_ROUTES 32
#define METRICS_NCODES 20          /* see metrics.c: http_codes[] + "other" */
#define METRICS_NBUCKETS 14        /* request latency buckets incl. +Inf */
#define METRICS_FSYNC_NBUCKETS 17  /* fsync latency buckets incl. +Inf: 10 us .. 1 s */

/* The log's fdatasync latency: per-bucket counts (not cumulative) and the
 * sum. Written by whichever thread syncs the log, read by /metrics. */
typedef struct MetricsFsync {
    atomic_uint_fast64_t bucket[METRICS_FSYNC_NBUCKETS];
    atomic_uint_fast64_t sum_ns;
} MetricsFsync;

/* Why the HTTP server refused a request from its headers, before reading
 * its body (and a chunked upload that outgrew the body budget). */
typedef enum MetricsReject {
    REJECT_TOO_LARGE,         /* Content-Length over limits.max_body_bytes */
    REJECT_BODY_NOT_ALLOWED,  /* a body on a route that takes none */
    REJECT_OVERLOADED,        /* over limits.max_inflight_body_bytes */
    REJECT_UNAUTHORIZED,      /* missing or wrong token */
    REJECT_NOT_FOUND,         /* unknown path */
    REJECT_METHOD,            /* method the path does not serve */
    REJECT_DRAINING,          /* shutting down */
    REJECT_COUNT
} MetricsReject;

typedef struct Metrics {
    /* (route, code): code is an index into metrics.c's http_codes[] */
    atomic_uint_fast64_t req_count[METRICS_MAX_ROUTES][METRICS_NCODES];
    atomic_uint_fast64_t req_sum_ns[METRICS_MAX_ROUTES][METRICS_NCODES];
    atomic_uint_fast64_t req_bucket[METRICS_MAX_ROUTES][METRICS_NCODES][METRICS_NBUCKETS];

    atomic_uint_fast64_t events_applied;
    atomic_uint_fast64_t events_duplicate;
    atomic_uint_fast64_t events_late;
    atomic_uint_fast64_t events_rejected;   /* in posts refused as invalid (a single event too) */
    atomic_uint_fast64_t events_capacity;   /* refused: shopper table full */
    atomic_uint_fast64_t predictions;
    atomic_uint_fast64_t state_rebuilds;    /* shopper states recomputed for new weights */
    atomic_uint_fast64_t users_deleted;

    atomic_uint_fast64_t fallback_fits;
    atomic_uint_fast64_t fallback_fit_failures;
    atomic_uint_fast64_t retrain_runs;
    atomic_uint_fast64_t retrain_failures;
    atomic_uint_fast64_t retrain_last_ns;             /* duration of the last retrain job */
    atomic_uint_fast64_t jobs_paced_ns;               /* compute threads asleep in pace_point (jobs.busy_cpu_share) */
    atomic_uint_fast64_t retrain_last_success_unix;   /* wall clock, s; 0: none since start */
    atomic_uint_fast64_t model_last_trained_unix;     /* wall clock, s, of the last refit or swap; 0: none */

    atomic_uint_fast64_t snapshots;
    atomic_uint_fast64_t snapshot_failures;
    atomic_uint_fast64_t snapshot_last_ns;
    atomic_uint_fast64_t snapshot_last_pause_ns;      /* store lock held: log rotation and the fork */
    atomic_uint_fast64_t snapshot_last_bytes;
    atomic_uint_fast64_t snapshot_last_success_unix;  /* wall clock, s; 0: none since start */
    atomic_uint_fast64_t wal_truncations;
    atomic_uint_fast64_t wal_truncated_bytes;
    atomic_uint_fast64_t recovery_ns;
    atomic_uint_fast64_t recovery_records;
    atomic_uint_fast64_t durable_waits;     /* responses held for group commit */
    atomic_uint_fast64_t adjuster_runs;
    atomic_uint_fast64_t adjuster_episodes;
    MetricsFsync wal_fsync;

    /* config reloads (SIGHUP), written by main */
    atomic_uint_fast64_t config_reloads_ok;
    atomic_uint_fast64_t config_reloads_error;

    atomic_uint_fast64_t http_rejected[REJECT_COUNT];  /* answered before the body was read */
    atomic_int_fast64_t http_body_inflight_bytes;      /* body bytes reserved by uploads in flight */
} Metrics;

/* Gauges the renderer asks the caller for. */
typedef struct MetricsGauges {
    uint64_t users, users_max, state_bytes, dedupe_entries, dedupe_window;
    uint64_t dedupe_evicted_early; /* since start: ids the dedupe cap pushed out before their time */
    uint64_t model_version, ready, retrain_running;
    uint64_t wal_records, wal_bytes, wal_fsyncs, wal_durable_seq, wal_segments_removed;
    bool wal_failed;
    uint64_t wal_recoveries;
    double wal_fsync_seconds;
    double adjuster_reward;
    PredLogStats predlog;
    int64_t event_clock;
} MetricsGauges;

/* What /metrics shows of one route before any request: the statuses the
 * route can answer (its OpenAPI responses plus 500), as "200 400 401 ...";
 * the request counter has every one from the start, the latency histogram
 * the 2xx ones. NULL: "200". */
typedef struct MetricsRoute {
    const char *label;
    const char *codes;
} MetricsRoute;

/* Zeroes m. */
void metrics_init(Metrics *m);
/* Any thread: one answered request. Statuses outside metrics.c's list are
 * counted as code="other". */
void metrics_observe(Metrics *m, int route, int http_status, uint64_t ns);
/* Requests answered so far, every route and status (m: a Metrics). */
uint64_t metrics_requests_total(const void *m);
/* Any thread: one fdatasync of the log that took ns. */
void metrics_fsync_observe(MetricsFsync *h, uint64_t ns);
/* Wall-clock Unix seconds, for the *_timestamp_seconds fields. */
uint64_t metrics_unix_now(void);
/* Renders the Prometheus text into *out (empty on entry; the caller owns
 * it): the counters, the gauges g, the process_* figures of /proc/self and
 * ltvd_build_info. 0, or out->err with *out freed. Any thread. */
int metrics_render(const Metrics *m, const MetricsRoute *routes, int nroutes, const MetricsGauges *g,
                   TextBuf *out);

#endif
