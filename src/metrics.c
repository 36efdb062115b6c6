/* metrics: counters and fixed-bucket histograms, and their Prometheus
 * text. Any thread counts (relaxed atomics); /metrics renders into a
 * buffer the caller frees. */
#include "metrics.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

static const int status_codes[METRICS_NSTATUS - 1] = {200, 202, 204, 400, 401, 404, 405, 409, 413, 500, 503};
static const double bucket_le[METRICS_NBUCKETS - 1] = {0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
                                                         0.01,    0.025,  0.05,    0.1,    0.25,  1.0};

void metrics_init(Metrics *m) { memset(m, 0, sizeof *m); }

static int status_index(int code)
{
    for (int i = 0; i < METRICS_NSTATUS - 1; i++)
        if (status_codes[i] == code)
            return i;
    return METRICS_NSTATUS - 1;
}

void metrics_observe(Metrics *m, int route, int http_status, uint64_t ns)
{
    if (route < 0 || route >= METRICS_MAX_ROUTES)
        return;
    int s = status_index(http_status);
    atomic_fetch_add_explicit(&m->req_count[route][s], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&m->req_sum_ns[route][s], ns, memory_order_relaxed);
    double sec = (double)ns * 1e-9;
    int b = 0;
    while (b < METRICS_NBUCKETS - 1 && sec > bucket_le[b])
        b++;
    atomic_fetch_add_explicit(&m->req_bucket[route][s][b], 1, memory_order_relaxed);
}

#define LOAD(x) ((unsigned long long)atomic_load_explicit(&(x), memory_order_relaxed))

static void counter(TextBuf *o, const char *name, const char *help, unsigned long long v)
{
    textbuf_printf(o, "# HELP %s %s\n# TYPE %s counter\n%s %llu\n", name, help, name, name, v);
}

static void gauge(TextBuf *o, const char *name, const char *help, long long v)
{
    textbuf_printf(o, "# HELP %s %s\n# TYPE %s gauge\n%s %lld\n", name, help, name, name, v);
}

static const char *status_label(int s, char *buf)
{
    if (s == METRICS_NSTATUS - 1)
        return "other";
    snprintf(buf, 8, "%d", status_codes[s]);
    return buf;
}

int metrics_render(const Metrics *mc, const char *const *route_names, int nroutes, const MetricsGauges *g,
                   TextBuf *out)
{
    Metrics *m = (Metrics *)mc; /* atomic loads take non-const pointers */
    TextBuf *o = out;
    if ((o->err = bytebuf_reserve(&o->b, 16384)))
        return o->err;
    char sl[8];
    textbuf_printf(o, "# HELP ltvd_http_requests_total HTTP requests by route and status.\n"
             "# TYPE ltvd_http_requests_total counter\n");
    for (int r = 0; r < nroutes; r++)
        for (int s = 0; s < METRICS_NSTATUS; s++)
            if (LOAD(m->req_count[r][s]))
                textbuf_printf(o, "ltvd_http_requests_total{route=\"%s\",status=\"%s\"} %llu\n", route_names[r],
                     status_label(s, sl), LOAD(m->req_count[r][s]));
    textbuf_printf(o, "# HELP ltvd_http_request_duration_seconds Time from request start to response queued.\n"
             "# TYPE ltvd_http_request_duration_seconds histogram\n");
    for (int r = 0; r < nroutes; r++) {
        for (int s = 0; s < METRICS_NSTATUS; s++) {
            unsigned long long total = LOAD(m->req_count[r][s]);
            if (!total)
                continue;
            unsigned long long cum = 0;
            const char *st = status_label(s, sl);
            for (int b = 0; b < METRICS_NBUCKETS; b++) {
                cum += LOAD(m->req_bucket[r][s][b]);
                if (b < METRICS_NBUCKETS - 1)
                    textbuf_printf(o, "ltvd_http_request_duration_seconds_bucket{route=\"%s\",status=\"%s\",le=\"%g\"} %llu\n",
                         route_names[r], st, bucket_le[b], cum);
                else
                    textbuf_printf(o, "ltvd_http_request_duration_seconds_bucket{route=\"%s\",status=\"%s\",le=\"+Inf\"} %llu\n",
                         route_names[r], st, cum);
            }
            textbuf_printf(o, "ltvd_http_request_duration_seconds_sum{route=\"%s\",status=\"%s\"} %.9f\n", route_names[r], st,
                 (double)LOAD(m->req_sum_ns[r][s]) * 1e-9);
            textbuf_printf(o, "ltvd_http_request_duration_seconds_count{route=\"%s\",status=\"%s\"} %llu\n", route_names[r],
                 st, total);
        }
    }
    counter(o, "ltvd_events_applied_total", "Events applied to shoppers.", LOAD(m->events_applied));
    counter(o, "ltvd_events_duplicate_total", "Events acknowledged as repeats of a seen event_id.",
            LOAD(m->events_duplicate));
    counter(o, "ltvd_events_late_total", "Events older than their shopper's newest (aggregates only).",
            LOAD(m->events_late));
    counter(o, "ltvd_events_rejected_total", "Events in batches refused for invalid input.",
            LOAD(m->events_rejected));
    counter(o, "ltvd_events_capacity_rejected_total", "Events refused because the shopper table was full.",
            LOAD(m->events_capacity));
    counter(o, "ltvd_predictions_total", "Predictions served.", LOAD(m->predictions));
    counter(o, "ltvd_state_rebuilds_total", "Shopper states recomputed under new network weights.",
            LOAD(m->state_rebuilds));
    counter(o, "ltvd_users_deleted_total", "Shoppers erased on request.", LOAD(m->users_deleted));
    counter(o, "ltvd_fallback_fits_total", "BG/NBD + Gamma-Gamma refits that succeeded.", LOAD(m->fallback_fits));
    counter(o, "ltvd_fallback_fit_failures_total", "BG/NBD + Gamma-Gamma refits that failed.",
            LOAD(m->fallback_fit_failures));
    counter(o, "ltvd_retrain_runs_total", "Retrain jobs run.", LOAD(m->retrain_runs));
    counter(o, "ltvd_retrain_failures_total", "Retrain jobs that failed.", LOAD(m->retrain_failures));
    gauge(o, "ltvd_retrain_last_duration_ms", "Duration of the last retrain job.", (long long)LOAD(m->retrain_last_ms));
    counter(o, "ltvd_snapshots_total", "Snapshots written.", LOAD(m->snapshots));
    counter(o, "ltvd_snapshot_failures_total", "Snapshots that failed.", LOAD(m->snapshot_failures));
    gauge(o, "ltvd_snapshot_last_duration_ms", "Duration of the last snapshot.", (long long)LOAD(m->snapshot_last_ms));
    gauge(o, "ltvd_snapshot_last_bytes", "Size of the last snapshot.", (long long)LOAD(m->snapshot_last_bytes));
    counter(o, "ltvd_wal_truncations_total", "Torn or corrupt log tails truncated at start.", LOAD(m->wal_truncations));
    counter(o, "ltvd_wal_truncated_bytes_total", "Bytes cut off torn or corrupt log tails.",
            LOAD(m->wal_truncated_bytes));
    gauge(o, "ltvd_recovery_duration_ms", "Time from start to ready (snapshot load + log replay).",
          (long long)LOAD(m->recovery_ms));
    gauge(o, "ltvd_recovery_replayed_records", "Log records replayed at start.", (long long)LOAD(m->recovery_records));
    counter(o, "ltvd_durable_waits_total", "Responses held until their log records were durable.",
            LOAD(m->durable_waits));
    static const char *const reject_reasons[REJECT_COUNT] = {
        "too_large", "body_not_allowed", "overloaded", "unauthorized", "not_found", "method_not_allowed", "draining"};
    textbuf_printf(o, "# HELP ltvd_http_rejected_total Requests answered from their headers, before any body byte was "
                      "read (overloaded: also chunked uploads stopped mid-way).\n"
                      "# TYPE ltvd_http_rejected_total counter\n");
    for (int r = 0; r < REJECT_COUNT; r++)
        textbuf_printf(o, "ltvd_http_rejected_total{reason=\"%s\"} %llu\n", reject_reasons[r], LOAD(m->http_rejected[r]));
    gauge(o, "ltvd_http_body_inflight_bytes", "Request body bytes reserved by uploads in flight (declared lengths).",
          (long long)atomic_load_explicit(&m->http_body_inflight_bytes, memory_order_relaxed));
    counter(o, "ltvd_wal_records_total", "Records appended to the write-ahead log.", (unsigned long long)g->wal_records);
    counter(o, "ltvd_wal_bytes_total", "Bytes written to the write-ahead log.", (unsigned long long)g->wal_bytes);
    counter(o, "ltvd_wal_fsyncs_total", "fdatasync calls on the log (one per group commit).",
            (unsigned long long)g->wal_fsyncs);
    textbuf_printf(o, "# HELP ltvd_wal_fsync_seconds_total Time spent in fdatasync.\n# TYPE ltvd_wal_fsync_seconds_total counter\n"
             "ltvd_wal_fsync_seconds_total %.6f\n", g->wal_fsync_seconds);
    gauge(o, "ltvd_wal_durable_seq", "Highest log record known durable.", (long long)g->wal_durable_seq);
    counter(o, "ltvd_wal_segments_removed_total", "Log segments removed after snapshots.",
            (unsigned long long)g->wal_segments_removed);
    counter(o, "ltvd_adjuster_runs_total", "RL adjuster learning runs.", LOAD(m->adjuster_runs));
    counter(o, "ltvd_adjuster_episodes_total", "Simulated episodes (Q updates) of the RL adjuster.",
            LOAD(m->adjuster_episodes));
    textbuf_printf(o, "# HELP ltvd_adjuster_reward Mean reward of the served correction policy on its replay set.\n"
             "# TYPE ltvd_adjuster_reward gauge\nltvd_adjuster_reward %.6f\n", g->adjuster_reward);
    counter(o, "ltvd_predlog_logged_total", "Served predictions logged for the adjuster.",
            (unsigned long long)g->predlog.logged);
    counter(o, "ltvd_predlog_matured_total", "Logged predictions compared with their realised spend.",
            (unsigned long long)g->predlog.matured);
    counter(o, "ltvd_predlog_dropped_total", "Logged predictions dropped: log full, or outcome unknowable.",
            (unsigned long long)(g->predlog.dropped_full + g->predlog.dropped_unknown));
    gauge(o, "ltvd_predlog_pending", "Logged predictions waiting for their horizon to pass.",
          (long long)g->predlog.pending);
    gauge(o, "ltvd_predlog_pairs", "Matured (prediction, outcome) pairs kept for the adjuster.",
          (long long)g->predlog.pairs);
    gauge(o, "ltvd_retrain_running", "1 while a retrain job runs.", (long long)g->retrain_running);
    gauge(o, "ltvd_users", "Shoppers in memory.", (long long)g->users);
    gauge(o, "ltvd_state_bytes", "Bytes allocated for shopper state and its index.", (long long)g->state_bytes);
    gauge(o, "ltvd_dedupe_entries", "event_ids in the dedupe window.", (long long)g->dedupe_entries);
    gauge(o, "ltvd_model_version", "Version of the serving model.", (long long)g->model_version);
    gauge(o, "ltvd_ready", "1 once the service is ready.", (long long)g->ready);
    gauge(o, "ltvd_event_clock_seconds", "Newest event time seen (the clock when clock=event).",
          (long long)g->event_clock);
    if (o->err) {
        int rc = o->err;
        textbuf_free(o);
        return rc;
    }
    return 0;
}
