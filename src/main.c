/* main: command line, start-up, the libuv loop (signals, timers, worker
 * jobs), the config reload on SIGHUP and clean shutdown. The only place
 * that may exit. */
#include <errno.h>
#include <stdio.h>
#include <sys/resource.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

#include "cluster.h"
#include "config.h"
#include "healthcheck.h"
#include "history.h"
#include "http_api.h"
#include "jobsched.h"
#include "log.h"
#include "metrics.h"
#include "model.h"
#include "segments.h"
#include "service.h"
#include "wal.h"

extern void openblas_set_num_threads(int num_threads);

typedef struct App {
    uv_loop_t *loop;
    LtvdConfig cfg;
    Metrics metrics;
    Service *svc;
    HttpServer *http;
    uv_signal_t sigterm, sigint, sighup;
    const char *config_path; /* the sources, read again on SIGHUP */
    int argc;
    char **argv;
    uv_timer_t refit_timer, retrain_timer, snapshot_timer, adjuster_timer, segments_timer;
    Wal *wal;
    Cluster *cluster;   /* cluster mode (docs/CLUSTER.md): the stream is the log, no Wal */
    uv_async_t retrain_async;
    uv_work_t work;
    JobSched jobs;      /* which worker job runs next, one at a time (main thread only) */
    uv_work_t snapshot_work;
    bool snapshot_running; /* snapshots have their own slot: a retrain never delays one */
    bool stopping;
} App;

static void usage(FILE *f)
{
    fprintf(f, "usage: ltvd [--config FILE] [--set section.key=value ...] [--routes] [--version]\n"
               "       ltvd --check-config [--config FILE] [--set section.key=value ...]\n"
               "       ltvd --health-check http://127.0.0.1:PORT/readyz\n"
               "Serves live customer-lifetime-value predictions over HTTP (see README.md).\n"
               "--check-config: load and check the config (and storage.dir, model.bin), print the effective\n"
               "  config (tokens redacted); exit 0 if ltvd would start with it, 2 if not.\n"
               "--health-check: one GET; exit 0 on status 200, 1 on anything else (container probes).\n"
               "SIGHUP reloads the config (the keys marked reloadable by --check-config); SIGTERM stops.\n");
}

/* A probe has this long to connect and read the status line: shorter than
 * the HEALTHCHECK --timeout in deploy/Dockerfile. */
#define HEALTH_CHECK_TIMEOUT_MS 2000

/* --health-check URL. Exit 1 for every failure, a bad URL included: Docker
 * reserves exit status 2. */
static int health_check(const char *url)
{
    char why[256];
    int code = healthcheck_get(url, HEALTH_CHECK_TIMEOUT_MS, why, sizeof why);
    if (code == 200) {
        printf("ltvd health check %s: %s\n", url, why);
        return 0;
    }
    fprintf(stderr, "ltvd health check %s: %s\n", url, why[0] ? why : strerror(-code));
    return 1;
}

/* mkdir -p */
static int make_dirs(const char *path)
{
    char buf[CONFIG_STR_MAX];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(buf, 0750) != 0 && errno != EEXIST)
            return -errno;
        *p = '/';
    }
    if (mkdir(buf, 0750) != 0 && errno != EEXIST)
        return -errno;
    return 0;
}

/* The config from its sources, in order: defaults, the file, tokens from
 * the environment, every --set in order; then the exposure check. The same
 * at start, on SIGHUP and for --check-config. */
static int load_config(LtvdConfig *cfg, const char *config_path, int argc, char **argv, char *err, size_t errlen)
{
    config_defaults(cfg);
    int rc;
    if ((config_path && (rc = config_load_file(cfg, config_path, err, errlen)) != 0) ||
        (rc = config_apply_env(cfg, err, errlen)) != 0)
        return rc;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--set") == 0 && i + 1 < argc) {
            if ((rc = config_apply_set(cfg, argv[++i], err, errlen)) != 0)
                return rc;
        } else if (strcmp(argv[i], "--config") == 0) {
            i++;
        }
    }
    if ((rc = config_check_exposure(cfg, err, errlen)) != 0)
        return rc;
    return cluster_config_check(cfg, err, errlen);
}

/* ---- worker jobs -------------------------------------------------------- */

static void start_job(App *app);

/* Worker jobs yield the CPU to the HTTP thread without holding it up: the
 * worker thread keeps the HTTP thread's priority while it holds the store
 * lock, and runs its heavy compute on a thread at nice 19 (run_niced in
 * jobs.c; a snapshot's child renices itself, durability.c). On a small
 * machine a retrain competing at equal priority quadrupled the p99 of GET
 * ltv, and a whole worker at nice 19, preempted while it held the store
 * lock, kept the HTTP thread waiting for seconds (docs/PERFORMANCE.md). */

static void retrain_work_cb(uv_work_t *w)
{
    App *app = w->data;
    service_run_retrain(app->svc);
}

static void adjuster_work_cb(uv_work_t *w)
{
    App *app = w->data;
    service_run_adjuster(app->svc);
}

static void refit_work_cb(uv_work_t *w)
{
    App *app = w->data;
    char err[256];
    int rc = service_refit_fallback(app->svc, false, err, sizeof err);
    if (rc < 0)
        log_msg(LOG_WARN, "fallback refit failed", "error=\"%s\"", err);
}

static void job_done_cb(uv_work_t *w, int status)
{
    App *app = w->data;
    jobsched_done(&app->jobs);
    if (!app->stopping)
        start_job(app);
}

static void segments_work_cb(uv_work_t *w);

/* Starts the next wanted job, if any and the worker is free
 * (jobsched_next). Main thread. */
static void start_job(App *app)
{
    JobKind k = jobsched_next(&app->jobs);
    uv_work_cb fn = k == JOB_RETRAIN    ? retrain_work_cb
                    : k == JOB_REFIT    ? refit_work_cb
                    : k == JOB_SEGMENTS ? segments_work_cb
                    : k == JOB_ADJUSTER ? adjuster_work_cb
                                        : NULL;
    if (!fn)
        return;
    app->work.data = app;
    uv_queue_work(app->loop, &app->work, fn, job_done_cb);
}

static void retrain_async_cb(uv_async_t *a)
{
    App *app = a->data;
    jobsched_want(&app->jobs, JOB_RETRAIN);
    start_job(app);
}

/* HTTP thread -> main loop: a retrain was requested. */
static void notify_retrain(void *arg)
{
    App *app = arg;
    uv_async_send(&app->retrain_async);
}

static void retrain_timer_cb(uv_timer_t *t)
{
    App *app = t->data;
    uint64_t job;
    if (service_request_retrain(app->svc, &job) == 0)
        log_msg(LOG_INFO, "periodic retrain", "job=%llu", (unsigned long long)job);
}

static void refit_timer_cb(uv_timer_t *t)
{
    App *app = t->data;
    jobsched_want(&app->jobs, JOB_REFIT);
    start_job(app);
}

/* jobsched_adjuster_tick says when a tick adds no run of its own. Main
 * thread. */
static void adjuster_timer_cb(uv_timer_t *t)
{
    App *app = t->data;
    bool retrain_due_now =
        uv_is_active((uv_handle_t *)&app->retrain_timer) && uv_timer_get_due_in(&app->retrain_timer) == 0;
    jobsched_adjuster_tick(&app->jobs, service_retrain_running(app->svc), retrain_due_now);
    start_job(app);
}

static void segments_work_cb(uv_work_t *w)
{
    App *app = w->data;
    int rc = service_segments_refresh(app->svc);
    if (rc && rc != -ECANCELED)
        log_msg(LOG_WARN, "segments refresh failed", "error=\"%s\"", strerror(-rc));
}

/* Every second: the population summary (segments.c) is refreshed once it
 * is segments.refresh_s old, and as soon after start as the worker is
 * free. Main thread. */
static void segments_timer_cb(uv_timer_t *t)
{
    App *app = t->data;
    if (service_segments_due(app->svc))
        jobsched_want(&app->jobs, JOB_SEGMENTS);
    start_job(app);
}

static void snapshot_work_cb(uv_work_t *w)
{
    App *app = w->data;
    char err[256];
    uint64_t asked = service_snapshot_requested(app->svc); /* one asked for later waits for the next tick */
    int rc = service_snapshot(app->svc, true, err, sizeof err);
    if (asked)
        service_snapshot_request_done(app->svc, asked, rc);
}

static void snapshot_done_cb(uv_work_t *w, int status)
{
    App *app = w->data;
    app->snapshot_running = false;
}

/* Every second: is a snapshot due (interval, log growth, an erasure) or
 * asked for (POST /v1/admin/snapshot)?
 * Snapshots run in their own worker slot, beside a retrain, refit or
 * adjuster run (libuv's pool has 4 threads): an erasure's snapshot must
 * come within storage.erasure_snapshot_s even while a retrain takes
 * minutes (docs/DURABILITY.md). Main thread. */
static void snapshot_timer_cb(uv_timer_t *t)
{
    App *app = t->data;
    if (app->snapshot_running || app->stopping ||
        !(service_snapshot_due(app->svc) || service_snapshot_requested(app->svc)))
        return;
    app->snapshot_running = true;
    app->snapshot_work.data = app;
    uv_queue_work(app->loop, &app->snapshot_work, snapshot_work_cb, snapshot_done_cb);
}

/* ---- reload ------------------------------------------------------------- */

/* SIGHUP: reads the config's sources again. Published whole if only
 * reloadable keys changed; otherwise the running config stays, whole, and
 * the error is logged. Main thread. */
static void on_sighup(uv_signal_t *s, int signum)
{
    App *app = s->data;
    (void)signum;
    if (app->stopping)
        return;
    static LtvdConfig next; /* main thread only; too big for a comfortable stack frame */
    char err[512] = "", changed[1024];
    const LtvdConfig *cur = config_live();
    int rc = load_config(&next, app->config_path, app->argc, app->argv, err, sizeof err);
    if (!rc)
        rc = config_diff(cur, &next, changed, sizeof changed, err, sizeof err);
    if (!rc && changed[0])
        rc = config_publish(&next, err, sizeof err);
    /* logged, then counted: a reload the metric shows is already in the log */
    if (rc) {
        log_msg(LOG_ERROR, "config reload failed: the running config is kept", "error=\"%s\"", err);
        atomic_fetch_add(&app->metrics.config_reloads_error, 1);
        return;
    }
    log_set_level((LogLevel)next.log_level);
    log_set_format((LogFormat)next.log_format);
    log_msg(LOG_INFO, "config reloaded", "changed=\"%s\"", changed[0] ? changed : "nothing");
    atomic_fetch_add(&app->metrics.config_reloads_ok, 1);
}

/* ---- shutdown ----------------------------------------------------------- */

static void on_signal(uv_signal_t *s, int signum)
{
    App *app = s->data;
    if (app->stopping)
        return;
    app->stopping = app->jobs.stopping = true;
    log_msg(LOG_INFO, "shutdown", "signal=%d", signum);
    service_cancel_jobs(app->svc); /* a running retrain stops at its next batch */
    http_quiesce(app->http);  /* stop accepting connections */
    http_drain(app->http);    /* new requests on open connections get 503 */
    /* Make every logged record durable: held answers go out. */
    if (app->wal)
        wal_sync(app->wal);
    for (int i = 0; i < 500 && http_pending(app->http) > 0; i++)
        uv_sleep(10);
    uv_sleep(50);             /* let resumed answers reach their sockets */
    http_stop(app->http);     /* finish in-flight requests */
    /* A write answered without waiting (fsync interval/none) can still be
     * published after this point, by the flusher or the final snapshot's
     * sync: the log stops calling into the server before it is freed. */
    wal_detach_callback(app->wal);
    http_destroy(app->http);
    app->http = NULL;
    /* no request uses the cluster any more: give the partitions back now,
     * so the other nodes take them at once rather than at lease expiry */
    cluster_stop(app->cluster);
    app->cluster = NULL;
    uv_close((uv_handle_t *)&app->sigterm, NULL);
    uv_close((uv_handle_t *)&app->sigint, NULL);
    uv_close((uv_handle_t *)&app->sighup, NULL);
    uv_close((uv_handle_t *)&app->refit_timer, NULL);
    uv_close((uv_handle_t *)&app->retrain_timer, NULL);
    uv_close((uv_handle_t *)&app->snapshot_timer, NULL);
    uv_close((uv_handle_t *)&app->adjuster_timer, NULL);
    uv_close((uv_handle_t *)&app->segments_timer, NULL);
    uv_close((uv_handle_t *)&app->retrain_async, NULL);
    /* The loop ends once a running worker job has finished; a retrain stops
     * at its next batch (service_cancel_jobs above). */
}

/* ---- start-up ----------------------------------------------------------- */

/* Could ltvd use storage.dir: an existing directory it may read, write and
 * search, or one make_dirs could create (its nearest existing parent is
 * writable); and does model.bin in it load under this config? */
static int check_storage(const LtvdConfig *cfg, char *err, size_t errlen)
{
    struct stat st;
    if (stat(cfg->storage_dir, &st) == 0) {
        if (!S_ISDIR(st.st_mode)) {
            snprintf(err, errlen, "storage.dir %s is not a directory", cfg->storage_dir);
            return -ENOTDIR;
        }
        if (access(cfg->storage_dir, R_OK | W_OK | X_OK) != 0) {
            snprintf(err, errlen, "storage.dir %s: %s (ltvd needs to read, write and list it)", cfg->storage_dir,
                     strerror(errno));
            return -EACCES;
        }
    } else {
        char parent[CONFIG_STR_MAX];
        snprintf(parent, sizeof parent, "%s", cfg->storage_dir);
        for (;;) { /* up to the nearest existing ancestor; each turn shortens parent */
            char *slash = strrchr(parent, '/');
            if (!slash) {
                snprintf(parent, sizeof parent, ".");
                break;
            }
            slash[slash == parent ? 1 : 0] = '\0';
            if (slash == parent || stat(parent, &st) == 0)
                break;
        }
        if (stat(parent, &st) != 0 || !S_ISDIR(st.st_mode) || access(parent, W_OK | X_OK) != 0) {
            snprintf(err, errlen, "storage.dir %.200s does not exist and cannot be created under %.200s",
                     cfg->storage_dir, parent);
            return -EACCES;
        }
        return 0;
    }
    char path[CONFIG_STR_MAX + 32], why[512];
    snprintf(path, sizeof path, "%s/%s", cfg->storage_dir, MODEL_FILE_NAME);
    if (stat(path, &st) != 0)
        return 0;
    Model *m;
    if (model_load(&m, path, (int)cfg->model_hidden_size, why, sizeof why) != 0) {
        snprintf(err, errlen, "%s", why);
        return -EINVAL;
    }
    int horizon = m->horizon_days;
    model_release(m);
    if (horizon != (int)cfg->model_horizon_days) {
        snprintf(err, errlen, "%s was made for model.horizon_days=%d, config says %lld", path, horizon,
                 (long long)cfg->model_horizon_days);
        return -EINVAL;
    }
    return 0;
}

/* --check-config: exit 0 and the effective config if ltvd would start with
 * it, else 2 and why. */
static int check_config(const char *config_path, int argc, char **argv)
{
    static LtvdConfig cfg;
    char err[512];
    if (load_config(&cfg, config_path, argc, argv, err, sizeof err) || check_storage(&cfg, err, sizeof err)) {
        fprintf(stderr, "ltvd: config error: %s\n", err);
        return 2;
    }
    config_print(&cfg, stdout);
    printf("# config ok%s%s\n", config_path ? ": " : " (no --config: defaults and --set)",
           config_path ? config_path : "");
    return 0;
}

static int load_or_create_model(const LtvdConfig *cfg, Model **out)
{
    char path[CONFIG_STR_MAX + 32], err[512] = "";
    snprintf(path, sizeof path, "%s/%s", cfg->storage_dir, MODEL_FILE_NAME);
    struct stat st;
    if (stat(path, &st) == 0) {
        int rc = model_load(out, path, (int)cfg->model_hidden_size, err, sizeof err);
        if (rc) {
            log_msg(LOG_ERROR, "cannot load model", "error=\"%s\" hint=\"move the file away to start afresh\"", err);
            return rc;
        }
        if (err[0])
            log_msg(LOG_WARN, "model loaded without its network", "reason=\"%s\"", err);
        if ((*out)->horizon_days != (int)cfg->model_horizon_days) {
            log_msg(LOG_ERROR, "cannot load model",
                    "error=\"%s was made for horizon_days=%d, config says %lld\" hint=\"move the file away\"", path,
                    (*out)->horizon_days, (long long)cfg->model_horizon_days);
            model_release(*out);
            return -EINVAL;
        }
        log_msg(LOG_INFO, "model loaded", "path=\"%s\" version=%llu status=%s", path,
                (unsigned long long)(*out)->version, (*out)->status == MODEL_TRAINED ? "trained" : "fallback");
        return 0;
    }
    LstmWeights *net;
    /* ids of untrained networks have the top bit set and follow the seed,
     * so states computed under another seed are never taken for ours;
     * trained networks take their model version as id */
    uint32_t id = NET_ID_UNTRAINED | ((uint32_t)cfg->train_seed & ~NET_ID_UNTRAINED);
    int rc = lstm_weights_create(&net, (int)cfg->model_hidden_size, (uint64_t)cfg->train_seed, id);
    if (rc)
        return rc;
    FallbackFit fit = {.bg = BGNBD_CDNOW_PRIOR, .gg = GG_CDNOW_PRIOR}; /* fitted_at 0: the prior */
    fit.cold.state = cfg->fallback_cold_start == 1 ? COLD_PRIOR : COLD_CAPPED;
    rc = model_create(out, net, &fit, (int)cfg->model_horizon_days, MODEL_FALLBACK, 1);
    lstm_weights_release(net);
    if (!rc)
        log_msg(LOG_INFO, "no model file: serving the fallback with its prior", "path=\"%s\"", path);
    return rc;
}

int main(int argc, char **argv)
{
    static App app;
    char err[512];
    const char *config_path = NULL;
    bool check_only = false;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--config") == 0 && i + 1 < argc) {
            config_path = argv[++i];
        } else if (strcmp(argv[i], "--set") == 0 && i + 1 < argc) {
            i++;
        } else if (strcmp(argv[i], "--check-config") == 0) {
            check_only = true;
        } else if (strcmp(argv[i], "--routes") == 0) {
            http_routes_print(stdout);
            return 0;
        } else if (strcmp(argv[i], "--health-check") == 0 && i + 1 < argc) {
            return health_check(argv[i + 1]);
        } else if (strcmp(argv[i], "--version") == 0) {
            printf("ltvd 0.1.0\n");
            return 0;
        } else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return 0;
        } else {
            fprintf(stderr, "ltvd: unknown argument '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
    if (check_only)
        return check_config(config_path, argc, argv);
    /* Before anything is created: a refused start leaves no trace. */
    if (load_config(&app.cfg, config_path, argc, argv, err, sizeof err) ||
        config_publish(&app.cfg, err, sizeof err)) {
        fprintf(stderr, "ltvd: %s\n", err);
        return 2;
    }
    app.config_path = config_path;
    app.argc = argc;
    app.argv = argv;
    log_set_level((LogLevel)app.cfg.log_level);
    log_set_format((LogFormat)app.cfg.log_format);
    openblas_set_num_threads(1); /* one LSTM step is tiny; threads only add latency */

    char cfgline[4096];
    config_format(&app.cfg, cfgline, sizeof cfgline);
    log_msg(LOG_INFO, "starting", "version=0.1.0 %s", cfgline);
    if (!config_bind_is_loopback(&app.cfg)) {
        if (!app.cfg.auth_ingest_token[0] || !app.cfg.auth_admin_token[0])
            log_msg(LOG_WARN, "serving writes without auth on a non-loopback address (auth.allow_open=true)",
                    "addr=%s ingest_token=%s admin_token=%s", app.cfg.server_bind,
                    app.cfg.auth_ingest_token[0] ? "set" : "empty", app.cfg.auth_admin_token[0] ? "set" : "empty");
        if (!app.cfg.auth_read_token[0])
            log_msg(LOG_INFO, "reads are open to the network: auth.read_token is empty", "addr=%s",
                    app.cfg.server_bind);
    }

    int rc = make_dirs(app.cfg.storage_dir);
    if (rc) {
        log_msg(LOG_ERROR, "cannot create storage.dir", "path=\"%s\" error=\"%s\"", app.cfg.storage_dir, strerror(-rc));
        return 1;
    }
    metrics_init(&app.metrics);
    Model *model;
    if (load_or_create_model(&app.cfg, &model))
        return 1;
    if ((rc = service_create(&app.svc, &app.cfg, &app.metrics, model)) != 0) {
        model_release(model);
        log_msg(LOG_ERROR, "cannot create service", "error=\"%s\"", strerror(-rc));
        return 1;
    }
    app.loop = uv_default_loop();
    uv_signal_init(app.loop, &app.sigterm);
    uv_signal_init(app.loop, &app.sigint);
    app.sigterm.data = app.sigint.data = &app;
    uv_signal_start(&app.sigterm, on_signal, SIGTERM);
    uv_signal_start(&app.sigint, on_signal, SIGINT);
    uv_signal_init(app.loop, &app.sighup);
    app.sighup.data = &app;
    uv_signal_start(&app.sighup, on_sighup, SIGHUP);
    uv_async_init(app.loop, &app.retrain_async, retrain_async_cb);
    app.retrain_async.data = &app;
    service_set_retrain_notify(app.svc, notify_retrain, &app);
    uv_timer_init(app.loop, &app.refit_timer);
    uv_timer_init(app.loop, &app.retrain_timer);
    uv_timer_init(app.loop, &app.snapshot_timer);
    uv_timer_init(app.loop, &app.adjuster_timer);
    uv_timer_init(app.loop, &app.segments_timer);
    app.refit_timer.data = app.retrain_timer.data = app.snapshot_timer.data = app.adjuster_timer.data = &app;
    app.segments_timer.data = &app;
    bool clustered = cluster_configured(&app.cfg);
    if (clustered) /* no retrain, refit or model change of its own until it holds the trainer lease */
        service_set_model_follower(app.svc, true);
    if (!clustered) /* in cluster mode the stream holds the state (docs/CLUSTER.md) */
        uv_timer_start(&app.snapshot_timer, snapshot_timer_cb, 1000, 1000);
    uv_timer_start(&app.segments_timer, segments_timer_cb, 1000, 1000);
    uint64_t refit_ms = (uint64_t)app.cfg.fallback_refit_s * 1000;
    uv_timer_start(&app.refit_timer, refit_timer_cb, refit_ms, refit_ms);
    if (app.cfg.train_interval_s > 0) {
        uint64_t ms = (uint64_t)app.cfg.train_interval_s * 1000;
        uv_timer_start(&app.retrain_timer, retrain_timer_cb, ms, ms);
    }
    if (app.cfg.adjuster_enabled && app.cfg.adjuster_interval_s > 0) {
        uint64_t ms = (uint64_t)app.cfg.adjuster_interval_s * 1000;
        uv_timer_start(&app.adjuster_timer, adjuster_timer_cb, ms, ms);
    }

    if ((rc = http_start(&app.http, &app.cfg, app.svc, &app.metrics)) != 0) {
        log_msg(LOG_ERROR, "cannot listen", "addr=%s:%lld error=\"%s\"", app.cfg.server_bind,
                (long long)app.cfg.server_port, rc == -EINVAL ? "server.bind is not an IPv4 address" : "bind failed");
        service_destroy(app.svc);
        return 1;
    }
    log_msg(LOG_INFO, "listening", "addr=%s:%u threads=%lld", app.cfg.server_bind, http_port(app.http),
            (long long)app.cfg.server_threads);
    if (clustered) {
        if ((rc = cluster_start(&app.cluster, &app.cfg, app.svc, &app.metrics, http_port(app.http), err,
                                sizeof err)) != 0) {
            log_msg(LOG_ERROR, "cannot join the cluster: not starting", "error=\"%s\"", err);
            http_destroy(app.http);
            service_destroy(app.svc);
            return 1;
        }
        service_history_init(app.svc);
        /* cluster mode trains from the rings (docs/CLUSTER.md): a training
         * history a single node left here would be out of every erasure's reach */
        history_remove(app.cfg.storage_dir);
        if ((rc = http_set_cluster(app.http, app.cluster)) != 0) {
            log_msg(LOG_ERROR, "cannot start the forwarder threads: not starting", "error=\"%s\"", strerror(-rc));
            http_destroy(app.http);
            cluster_stop(app.cluster);
            service_destroy(app.svc);
            return 1;
        }
        service_set_ready(app.svc, true);
        log_msg(LOG_INFO, "ready", "mode=cluster node=%s", cluster_node_id(app.cluster));
        uv_run(app.loop, UV_RUN_DEFAULT);
        uv_loop_close(app.loop);
        service_destroy(app.svc);
        config_live_free();
        log_msg(LOG_INFO, "stopped", NULL);
        return 0;
    }
    /* Serving /healthz and /readyz (503) while the state comes back. */
    uint64_t next_seq = 1;
    if ((rc = service_recover(app.svc, &next_seq, err, sizeof err)) != 0) {
        log_msg(LOG_ERROR, "recovery failed: not starting", "error=\"%s\"", err);
        http_destroy(app.http);
        service_destroy(app.svc);
        return 1;
    }
    service_history_init(app.svc); /* after recovery: a refused start leaves no new file */
    WalConfig wc = {
        .dir = app.cfg.storage_dir,
        .fsync = (WalFsync)app.cfg.storage_fsync,
        .interval_ms = (int)app.cfg.storage_fsync_interval_ms,
        .segment_bytes = (size_t)app.cfg.storage_wal_segment_bytes,
        .buffer_bytes = (size_t)app.cfg.storage_wal_buffer_bytes,
        .fsync_latency = &app.metrics.wal_fsync,
        .sync_lanes = (int)app.cfg.storage_sync_lanes,
    };
    if ((rc = wal_open(&app.wal, &wc, next_seq, http_on_durable, app.http)) != 0) {
        log_msg(LOG_ERROR, "cannot open the write-ahead log", "dir=\"%s\" error=\"%s\"", app.cfg.storage_dir,
                strerror(-rc));
        http_destroy(app.http);
        service_destroy(app.svc);
        return 1;
    }
    service_attach_wal(app.svc, app.wal);
    service_set_ready(app.svc, true);
    log_msg(LOG_INFO, "ready", "next_seq=%llu fsync=%s", (unsigned long long)next_seq,
            app.cfg.storage_fsync == WAL_FSYNC_ALWAYS ? "always"
            : app.cfg.storage_fsync == WAL_FSYNC_INTERVAL ? "interval" : "none");

    uv_run(app.loop, UV_RUN_DEFAULT); /* returns after the signal, once a running job is done */
    uv_loop_close(app.loop);
    /* Clean shutdown: a final snapshot, so the next start replays nothing. */
    if (service_snapshot(app.svc, false, err, sizeof err) != 0)
        log_msg(LOG_WARN, "final snapshot failed; the log still holds everything", "error=\"%s\"", err);
    wal_close(app.wal);
    service_destroy(app.svc);
    config_live_free();
    log_msg(LOG_INFO, "stopped", NULL);
    return 0;
}
