/* metrics: process-wide counters and latency histograms, rendered in the
 * Prometheus text format. Every field is atomic (relaxed): the HTTP threads
 * and the worker write, /metrics reads. */
#ifndef LTVD_METRICS_H
#define LTVD_METRICS_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "predlog.h"
#include "util.h"

#define METRICS_MAX_ROUTES 16
#define METRICS_NSTATUS 12   /* see metrics.c: status_codes[] + "other" */
#define METRICS_NBUCKETS 14  /* latency buckets incl. +Inf */

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
    atomic_uint_fast64_t req_count[METRICS_MAX_ROUTES][METRICS_NSTATUS];
    atomic_uint_fast64_t req_sum_ns[METRICS_MAX_ROUTES][METRICS_NSTATUS];
    atomic_uint_fast64_t req_bucket[METRICS_MAX_ROUTES][METRICS_NSTATUS][METRICS_NBUCKETS];

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
    atomic_uint_fast64_t retrain_last_ms;

    atomic_uint_fast64_t snapshots;
    atomic_uint_fast64_t snapshot_failures;
    atomic_uint_fast64_t snapshot_last_ms;
    atomic_uint_fast64_t snapshot_last_bytes;
    atomic_uint_fast64_t wal_truncations;
    atomic_uint_fast64_t wal_truncated_bytes;
    atomic_uint_fast64_t recovery_ms;
    atomic_uint_fast64_t recovery_records;
    atomic_uint_fast64_t durable_waits;     /* responses held for group commit */
    atomic_uint_fast64_t adjuster_runs;
    atomic_uint_fast64_t adjuster_episodes;

    atomic_uint_fast64_t http_rejected[REJECT_COUNT];  /* answered before the body was read */
    atomic_int_fast64_t http_body_inflight_bytes;      /* body bytes reserved by uploads in flight */
} Metrics;

/* Gauges the renderer asks the caller for. */
typedef struct MetricsGauges {
    uint64_t users, state_bytes, dedupe_entries, model_version, ready, retrain_running;
    uint64_t wal_records, wal_bytes, wal_fsyncs, wal_durable_seq, wal_segments_removed;
    double wal_fsync_seconds;
    double adjuster_reward;
    PredLogStats predlog;
    int64_t event_clock;
} MetricsGauges;

void metrics_init(Metrics *m);
void metrics_observe(Metrics *m, int route, int http_status, uint64_t ns);
/* Renders the Prometheus text into *out (empty on entry; the caller owns
 * it). 0, or out->err with *out freed. */
int metrics_render(const Metrics *m, const char *const *route_names, int nroutes, const MetricsGauges *g,
                   TextBuf *out);

#endif
