/* metrics: counters and fixed-bucket histograms, and their Prometheus
 * text: ltvd's own series, ltvd_build_info, and the process_* figures read
 * from /proc/self at each scrape. Any thread counts (relaxed atomics);
 * /metrics renders into a buffer the caller frees.
 *
 * Every series a fresh process can know of is on the page from the start,
 * at zero, so that rate() sees the first increment: all counters and
 * gauges, the fsync histogram, every (route, code) pair the caller lists
 * for the request counter and the 2xx pairs for the latency histogram;
 * other pairs appear once seen. */
#include "metrics.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "ltvd_commit.h"
#include "util.h"

#ifndef LTVD_VERSION
#define LTVD_VERSION "unknown"
#endif

/* The statuses counted by their own label; anything else is code="other". */
static const int http_codes[METRICS_NCODES - 1] = {200, 202, 204, 400, 401, 403, 404, 405, 408, 409,
                                                    411, 413, 414, 415, 429, 431, 500, 501, 503};
static const double bucket_le[METRICS_NBUCKETS - 1] = {0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
                                                         0.01,    0.025,  0.05,    0.1,    0.25,  1.0};
/* fdatasync on a local SSD takes tens of microseconds to a few ms; on
 * network or failing storage, up to seconds. */
static const double fsync_le[METRICS_FSYNC_NBUCKETS - 1] = {0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005,
                                                              0.001,   0.0025,   0.005,   0.01,   0.025,   0.05,
                                                              0.1,     0.25,     0.5,     1.0};

void metrics_init(Metrics *m) { memset(m, 0, sizeof *m); }

uint64_t metrics_unix_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec;
}

static int code_index(int code)
{
    for (int i = 0; i < METRICS_NCODES - 1; i++)
        if (http_codes[i] == code)
            return i;
    return METRICS_NCODES - 1;
}

/* The index of the first bucket whose bound is >= sec (the last: +Inf). */
static int bucket_of(const double *le, int nbounds, double sec)
{
    int b = 0;
    while (b < nbounds && sec > le[b])
        b++;
    return b;
}

uint64_t metrics_requests_total(const void *arg)
{
    const Metrics *m = arg;
    uint64_t n = 0;
    for (int r = 0; r < METRICS_MAX_ROUTES; r++)
        for (int c = 0; c < METRICS_NCODES; c++)
            n += atomic_load_explicit(&m->req_count[r][c], memory_order_relaxed);
    return n;
}

void metrics_observe(Metrics *m, int route, int http_status, uint64_t ns)
{
    if (route < 0 || route >= METRICS_MAX_ROUTES)
        return;
    int s = code_index(http_status);
    atomic_fetch_add_explicit(&m->req_count[route][s], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&m->req_sum_ns[route][s], ns, memory_order_relaxed);
    int b = bucket_of(bucket_le, METRICS_NBUCKETS - 1, (double)ns * 1e-9);
    atomic_fetch_add_explicit(&m->req_bucket[route][s][b], 1, memory_order_relaxed);
}

void metrics_fsync_observe(MetricsFsync *h, uint64_t ns)
{
    int b = bucket_of(fsync_le, METRICS_FSYNC_NBUCKETS - 1, (double)ns * 1e-9);
    atomic_fetch_add_explicit(&h->bucket[b], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->sum_ns, ns, memory_order_relaxed);
}

/* ---- rendering ----------------------------------------------------------- */

#define LOAD(x) ((unsigned long long)atomic_load_explicit(&(x), memory_order_relaxed))

static void header(TextBuf *o, const char *name, const char *type, const char *help)
{
    textbuf_printf(o, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void counter(TextBuf *o, const char *name, const char *help, unsigned long long v)
{
    header(o, name, "counter", help);
    textbuf_printf(o, "%s %llu\n", name, v);
}

static void gauge(TextBuf *o, const char *name, const char *help, long long v)
{
    header(o, name, "gauge", help);
    textbuf_printf(o, "%s %lld\n", name, v);
}

static void gauge_f(TextBuf *o, const char *name, const char *help, double v)
{
    header(o, name, "gauge", help);
    textbuf_printf(o, "%s %.9g\n", name, v);
}

static const char *code_label(int s, char buf[8])
{
    if (s == METRICS_NCODES - 1)
        return "other";
    snprintf(buf, 8, "%d", http_codes[s]);
    return buf;
}

/* shown[s]: is code index s listed in codes ("200 400 ...", NULL: "200")? */
static void listed_codes(const char *codes, bool shown[METRICS_NCODES])
{
    memset(shown, 0, METRICS_NCODES * sizeof shown[0]);
    if (!codes)
        codes = "200";
    for (const char *p = codes; *p;) {
        char *end;
        long c = strtol(p, &end, 10);
        if (end == p)
            break;
        int s = code_index((int)c);
        if (s != METRICS_NCODES - 1)
            shown[s] = true;
        p = end;
    }
}

static void render_requests(TextBuf *o, Metrics *m, const MetricsRoute *routes, int nroutes)
{
    char cl[8];
    bool shown[METRICS_NCODES];
    header(o, "ltvd_http_requests_total", "counter", "HTTP requests answered, by route and status code.");
    for (int r = 0; r < nroutes; r++) {
        listed_codes(routes[r].codes, shown);
        for (int s = 0; s < METRICS_NCODES; s++) {
            unsigned long long n = LOAD(m->req_count[r][s]);
            if (n || shown[s])
                textbuf_printf(o, "ltvd_http_requests_total{route=\"%s\",code=\"%s\"} %llu\n", routes[r].label,
                               code_label(s, cl), n);
        }
    }
    header(o, "ltvd_http_request_duration_seconds", "histogram",
           "Time from request start to response queued, by route and status code.");
    for (int r = 0; r < nroutes; r++) {
        listed_codes(routes[r].codes, shown);
        for (int s = 0; s < METRICS_NCODES; s++) {
            unsigned long long total = LOAD(m->req_count[r][s]);
            bool ok = s < METRICS_NCODES - 1 && http_codes[s] < 300;
            if (!total && !(shown[s] && ok))
                continue;
            const char *route = routes[r].label, *code = code_label(s, cl);
            unsigned long long cum = 0;
            for (int b = 0; b < METRICS_NBUCKETS; b++) {
                cum += LOAD(m->req_bucket[r][s][b]);
                if (b < METRICS_NBUCKETS - 1)
                    textbuf_printf(o, "ltvd_http_request_duration_seconds_bucket{route=\"%s\",code=\"%s\",le=\"%g\"} %llu\n",
                                   route, code, bucket_le[b], cum);
                else
                    textbuf_printf(o, "ltvd_http_request_duration_seconds_bucket{route=\"%s\",code=\"%s\",le=\"+Inf\"} %llu\n",
                                   route, code, cum);
            }
            textbuf_printf(o, "ltvd_http_request_duration_seconds_sum{route=\"%s\",code=\"%s\"} %.9f\n", route, code,
                           (double)LOAD(m->req_sum_ns[r][s]) * 1e-9);
            /* the count from the buckets: a scrape racing an observation stays consistent */
            textbuf_printf(o, "ltvd_http_request_duration_seconds_count{route=\"%s\",code=\"%s\"} %llu\n", route, code,
                           cum);
        }
    }
}

static void render_fsync(TextBuf *o, MetricsFsync *h)
{
    const char *name = "ltvd_wal_fsync_duration_seconds";
    header(o, name, "histogram", "Latency of the write-ahead log's group-commit fdatasync.");
    unsigned long long cum = 0;
    for (int b = 0; b < METRICS_FSYNC_NBUCKETS; b++) {
        cum += LOAD(h->bucket[b]);
        if (b < METRICS_FSYNC_NBUCKETS - 1)
            textbuf_printf(o, "%s_bucket{le=\"%g\"} %llu\n", name, fsync_le[b], cum);
        else
            textbuf_printf(o, "%s_bucket{le=\"+Inf\"} %llu\n", name, cum);
    }
    textbuf_printf(o, "%s_sum %.9f\n%s_count %llu\n", name, (double)LOAD(h->sum_ns) * 1e-9, name, cum);
}

/* The figures of /proc/self/stat, /proc/stat and /proc/self/fd. */
typedef struct ProcFigures {
    double cpu_seconds, start_time;
    unsigned long long vsize, rss_bytes, threads;
    long long open_fds, max_fds;
} ProcFigures;

static long long count_open_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return -1;
    long long n = 0;
    int own = dirfd(d);
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (e->d_name[0] != '.' && atoi(e->d_name) != own)
            n++;
    closedir(d);
    return n;
}

/* 0, or -errno if /proc is not readable (then the process_* series are left out). */
static int read_proc(ProcFigures *pf)
{
    char buf[1024];
    FILE *f = fopen("/proc/self/stat", "re");
    if (!f)
        return -errno;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *p = strrchr(buf, ')'); /* the command name may hold spaces and parentheses */
    if (!p)
        return -EINVAL;
    /* after ")": fields 3.. of proc(5); utime 14, stime 15, num_threads 20, starttime 22, vsize 23, rss 24 */
    unsigned long long utime, stime, threads, start, vsize, rss;
    if (sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu %*d %*d %*d %*d %llu %*d %llu %llu %llu",
               &utime, &stime, &threads, &start, &vsize, &rss) != 6)
        return -EINVAL;
    long tck = sysconf(_SC_CLK_TCK), page = sysconf(_SC_PAGESIZE);
    if (tck <= 0 || page <= 0)
        return -EINVAL;
    unsigned long long btime = 0;
    if ((f = fopen("/proc/stat", "re")) != NULL) {
        char line[256];
        while (fgets(line, sizeof line, f))
            if (sscanf(line, "btime %llu", &btime) == 1)
                break;
        fclose(f);
    }
    if (!btime)
        return -EINVAL;
    pf->cpu_seconds = (double)(utime + stime) / (double)tck;
    pf->start_time = (double)btime + (double)start / (double)tck;
    pf->vsize = vsize;
    pf->rss_bytes = rss * (unsigned long long)page;
    pf->threads = threads;
    pf->open_fds = count_open_fds();
    struct rlimit rl;
    pf->max_fds = getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY ? (long long)rl.rlim_cur : -1;
    return 0;
}

/* Reads one number from path: 0 and *v, or -1 (absent, unreadable, "max"). */
static int read_u64_file(const char *path, unsigned long long *v)
{
    FILE *f = fopen(path, "re");
    if (!f)
        return -1;
    int ok = fscanf(f, "%llu", v) == 1;
    fclose(f);
    return ok ? 0 : -1;
}

/* The limit file under mount/own, else at the mount's root: 0 and *v, or -1. */
static int read_limit(const char *mount, const char *own, const char *file, unsigned long long *v)
{
    char p[1024];
    snprintf(p, sizeof p, "%s%s/%s", mount, own, file);
    if (read_u64_file(p, v) == 0)
        return 0;
    snprintf(p, sizeof p, "%s/%s", mount, file);
    return read_u64_file(p, v);
}

/* The memory limit of the cgroup ltvd runs in (a container's, a systemd
 * unit's MemoryMax), in bytes; 0 if none is set or none can be read. v2:
 * memory.max; v1: memory.limit_in_bytes. The path of /proc/self/cgroup is
 * tried under /sys/fs/cgroup, then the mount's root (in a container the
 * mount is the container's own cgroup). */
static unsigned long long cgroup_memory_limit(void)
{
    char line[512], v1[400] = "", v2[400] = "";
    FILE *f = fopen("/proc/self/cgroup", "re");
    if (!f)
        return 0;
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = '\0';
        char *ctl = strchr(line, ':'), *path = ctl ? strchr(ctl + 1, ':') : NULL;
        if (!path)
            continue;
        *path++ = '\0'; /* "id:controllers:path" -> line "id", ctl "controllers", path */
        *ctl++ = '\0';
        if (strcmp(line, "0") == 0 && !ctl[0])
            snprintf(v2, sizeof v2, "%s", path);
        else if (strstr(ctl, "memory"))
            snprintf(v1, sizeof v1, "%s", path);
    }
    fclose(f);
    unsigned long long v;
    if ((v1[0] && read_limit("/sys/fs/cgroup/memory", v1, "memory.limit_in_bytes", &v) == 0) ||
        read_limit("/sys/fs/cgroup", v2, "memory.max", &v) == 0)
        return v >= (1ull << 60) ? 0 : v; /* v1 writes "no limit" as a huge number */
    return 0;
}

static void render_process(TextBuf *o)
{
    ProcFigures pf;
    if (read_proc(&pf))
        return;
    header(o, "process_cpu_seconds_total", "counter", "User and system CPU time spent, in seconds.");
    textbuf_printf(o, "process_cpu_seconds_total %.2f\n", pf.cpu_seconds);
    gauge(o, "process_resident_memory_bytes", "Resident memory size in bytes.", (long long)pf.rss_bytes);
    gauge(o, "process_virtual_memory_bytes", "Virtual memory size in bytes.", (long long)pf.vsize);
    header(o, "process_start_time_seconds", "gauge", "Start time of the process since the Unix epoch, in seconds.");
    textbuf_printf(o, "process_start_time_seconds %.2f\n", pf.start_time);
    gauge(o, "process_threads", "Threads of the process.", (long long)pf.threads);
    if (pf.open_fds >= 0)
        gauge(o, "process_open_fds", "Open file descriptors.", pf.open_fds);
    if (pf.max_fds >= 0)
        gauge(o, "process_max_fds", "The soft limit on open file descriptors.", pf.max_fds);
    gauge(o, "ltvd_memory_limit_bytes", "Memory limit of ltvd's cgroup (container, systemd MemoryMax); 0: none.",
          (long long)cgroup_memory_limit());
}

static void render_build_info(TextBuf *o)
{
    char compiler[64];
#if defined(__clang__)
    snprintf(compiler, sizeof compiler, "clang %d.%d.%d", __clang_major__, __clang_minor__, __clang_patchlevel__);
#elif defined(__GNUC__)
    snprintf(compiler, sizeof compiler, "gcc %d.%d.%d", __GNUC__, __GNUC_MINOR__, __GNUC_PATCHLEVEL__);
#else
    snprintf(compiler, sizeof compiler, "unknown");
#endif
    header(o, "ltvd_build_info", "gauge", "Always 1; the labels say which build of ltvd this is.");
    textbuf_printf(o, "ltvd_build_info{version=\"%s\",commit=\"%s\",compiler=\"%s\"} 1\n", LTVD_VERSION, LTVD_COMMIT,
                   compiler);
}

int metrics_render(const Metrics *mc, const MetricsRoute *routes, int nroutes, const MetricsGauges *g,
                   TextBuf *out)
{
    Metrics *m = (Metrics *)mc; /* atomic loads take non-const pointers */
    TextBuf *o = out;
    if ((o->err = bytebuf_reserve(&o->b, 32768)))
        return o->err;
    if (nroutes > METRICS_MAX_ROUTES)
        nroutes = METRICS_MAX_ROUTES;
    render_build_info(o);
    render_requests(o, m, routes, nroutes);
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
    header(o, "ltvd_jobs_paced_seconds_total", "counter",
           "Time the jobs' threads slept to leave the HTTP thread a core (jobs.busy_cpu_share).");
    textbuf_printf(o, "ltvd_jobs_paced_seconds_total %.9g\n", (double)LOAD(m->jobs_paced_ns) * 1e-9);
    gauge_f(o, "ltvd_retrain_last_duration_seconds", "Duration of the last retrain job.",
            (double)LOAD(m->retrain_last_ns) * 1e-9);
    gauge(o, "ltvd_retrain_last_success_timestamp_seconds",
          "Unix time the last retrain job succeeded (0: none since the process started).",
          (long long)LOAD(m->retrain_last_success_unix));
    gauge(o, "ltvd_model_last_trained_timestamp_seconds",
          "Unix time a refit or a newly trained network last became the serving model (0: none since start).",
          (long long)LOAD(m->model_last_trained_unix));
    counter(o, "ltvd_snapshots_total", "Snapshots written.", LOAD(m->snapshots));
    counter(o, "ltvd_snapshot_failures_total", "Snapshots that failed.", LOAD(m->snapshot_failures));
    gauge_f(o, "ltvd_snapshot_last_duration_seconds", "Duration of the last snapshot.",
            (double)LOAD(m->snapshot_last_ns) * 1e-9);
    gauge_f(o, "ltvd_snapshot_last_pause_seconds",
            "How long the last snapshot held the store lock (the log's rotation and the fork): requests wait that long.",
            (double)LOAD(m->snapshot_last_pause_ns) * 1e-9);
    gauge(o, "ltvd_snapshot_last_bytes", "Size of the last snapshot.", (long long)LOAD(m->snapshot_last_bytes));
    gauge(o, "ltvd_snapshot_last_success_timestamp_seconds",
          "Unix time the last snapshot was written (0: none since the process started).",
          (long long)LOAD(m->snapshot_last_success_unix));
    counter(o, "ltvd_wal_truncations_total", "Torn or corrupt log tails truncated at start.", LOAD(m->wal_truncations));
    counter(o, "ltvd_wal_truncated_bytes_total", "Bytes cut off torn or corrupt log tails.",
            LOAD(m->wal_truncated_bytes));
    gauge_f(o, "ltvd_recovery_duration_seconds", "Time from start to ready (snapshot load + log replay).",
            (double)LOAD(m->recovery_ns) * 1e-9);
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
    header(o, "ltvd_wal_fsync_seconds_total", "counter", "Time spent in fdatasync.");
    textbuf_printf(o, "ltvd_wal_fsync_seconds_total %.6f\n", g->wal_fsync_seconds);
    render_fsync(o, &m->wal_fsync);
    gauge(o, "ltvd_wal_durable_seq", "Highest log record known durable.", (long long)g->wal_durable_seq);
    counter(o, "ltvd_wal_segments_removed_total", "Log segments removed after snapshots.",
            (unsigned long long)g->wal_segments_removed);
    gauge(o, "ltvd_wal_failed", "1 while the log cannot be written: writes are refused until it recovers by itself "
          "(docs/DURABILITY.md).", g->wal_failed ? 1 : 0);
    counter(o, "ltvd_wal_recoveries_total", "Log failures recovered from without a restart (room again on the disk).",
            (unsigned long long)g->wal_recoveries);
    counter(o, "ltvd_adjuster_runs_total", "RL adjuster learning runs.", LOAD(m->adjuster_runs));
    counter(o, "ltvd_adjuster_episodes_total", "Simulated episodes (Q updates) of the RL adjuster.",
            LOAD(m->adjuster_episodes));
    header(o, "ltvd_adjuster_reward", "gauge", "Mean reward of the served correction policy on its replay set.");
    textbuf_printf(o, "ltvd_adjuster_reward %.6f\n", g->adjuster_reward);
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
    gauge(o, "ltvd_users_max", "The shopper table's capacity (limits.max_users).", (long long)g->users_max);
    gauge(o, "ltvd_state_bytes", "Bytes allocated for shopper state and its index.", (long long)g->state_bytes);
    gauge(o, "ltvd_dedupe_entries", "event_ids held in the dedupe window.", (long long)g->dedupe_entries);
    gauge(o, "ltvd_dedupe_window", "Capacity of the dedupe window in event_ids (limits.dedupe_max_ids; 0: off).",
          (long long)g->dedupe_window);
    counter(o, "ltvd_dedupe_evicted_early_total",
            "event_ids forgotten before limits.dedupe_window_s had passed, to stay within limits.dedupe_max_ids.",
            (unsigned long long)g->dedupe_evicted_early);
    gauge(o, "ltvd_model_version", "Version of the serving model.", (long long)g->model_version);
    gauge(o, "ltvd_ready", "1 once the service is ready.", (long long)g->ready);
    gauge(o, "ltvd_event_clock_seconds", "Newest event time seen (the clock when clock=event).",
          (long long)g->event_clock);
    render_process(o);
    /* config reloads (SIGHUP, main.c) */
    textbuf_printf(o, "# HELP ltvd_config_reloads_total Config reloads on SIGHUP, by result (error: the config "
                   "running before was kept).\n# TYPE ltvd_config_reloads_total counter\n"
                   "ltvd_config_reloads_total{result=\"ok\"} %llu\nltvd_config_reloads_total{result=\"error\"} %llu\n",
                   LOAD(m->config_reloads_ok), LOAD(m->config_reloads_error));
    if (o->err) {
        int rc = o->err;
        textbuf_free(o);
        return rc;
    }
    return 0;
}
