/* Concurrency: the service API driven from several threads at once.
 *
 * Appliers post events for overlapping shoppers (every batch twice, by two
 * threads, so the dedupe window decides races), predictors read, and one
 * thread publishes models meanwhile. What a user would notice, asserted:
 *   - every event is applied exactly once (per-shopper counts and spend,
 *     applied and duplicate totals);
 *   - no prediction mixes models: a quiet shopper's prediction under
 *     version v equals what v's weights compute for it (phase A), or at
 *     least the same value every time v is seen (phase B); a batch of
 *     predictions carries one version; versions never go backwards;
 *   - once quiet, every shopper's prediction equals that of a service that
 *     replays the write-ahead log, in its order, under the serving model
 *     (the sequential history the concurrent one must be equivalent to).
 *
 * Phase A swaps models built here (service_model_swap, three different
 * networks in turn). Phase B runs the worker jobs instead: forced fallback
 * refits, network retrains (swap + rebuild of every state on the worker)
 * and snapshots. Built with -Db_sanitize=thread in CI (.ci/run). */
#include <cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "events.h"
#include "service.h"
#include "service_testing.h"
#include "test_util.h"
#include "wal.h"

#define HIDDEN 8
#define AS_OF 1735689600 /* 2025-01-01: a fixed as_of, so a prediction depends on state and model only */
#define T0 1704067200    /* 2024-01-01: the busy shoppers' first event */

#define NAPPLIERS 3
#define NPREDICTORS 2
#define NBUSY 24        /* shoppers the appliers write to */
#define BUSY_EVENTS 36  /* per busy shopper; fewer than model.recent_events */
#define NQUIET 16       /* shoppers nobody writes to during the run */
#define QUIET_EVENTS 6
#define BATCH 4
#define NBATCH (NBUSY * BUSY_EVENTS / BATCH)
#define NNETS 3
#define NSWAPS 150      /* phase A */
#define NRETRAINS 2     /* phase B */
#define NHIST 90        /* phase B: shoppers with a year of history to train on */

/* test_util.h's ASSERT counts in a plain int: fine on one thread, a data
 * race on several. Threads use CHECK, which counts atomically and stops the
 * process without running exit handlers under the others' feet. */
static atomic_ulong thread_checks;
#define CHECK(cond)                                                                      \
    do {                                                                                 \
        atomic_fetch_add_explicit(&thread_checks, 1, memory_order_relaxed);              \
        if (!(cond)) {                                                                   \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);     \
            fflush(stderr);                                                              \
            _exit(1);                                                                    \
        }                                                                                \
    } while (0)
#define CHECK_REL(a, b, rel)                                                                        \
    do {                                                                                            \
        double a_ = (a), b_ = (b);                                                                  \
        if (!(fabs(a_ - b_) <= (rel) * fmax(fabs(b_), 1e-300)))                                      \
            fprintf(stderr, "%s:%d: %s = %.12g, expected %.12g\n", __FILE__, __LINE__, #a, a_, b_); \
        CHECK(fabs(a_ - b_) <= (rel) * fmax(fabs(b_), 1e-300));                                     \
    } while (0)

static void sleep_us(long us)
{
    struct timespec ts = {0, us * 1000L};
    nanosleep(&ts, NULL);
}

/* ---- events ------------------------------------------------------------- */

static double busy_value(int shopper, int k)
{
    return (k + shopper) % 4 == 3 ? (5.0 + 2.5 * (k % 7)) * (1 + shopper % 4) : 0.0;
}

/* Values are multiples of 0.5, exact in float and double, so the state
 * rebuilt from the recent-event ring is bit-identical to the one computed
 * event by event, and spend sums are exact in any order. */
static void busy_event_json(char *out, size_t n, int shopper, int k)
{
    static const char *const types[] = {"view", "click", "add_to_cart", "purchase"};
    int t = (k + shopper) % 4;
    int64_t ts = T0 + (int64_t)k * 3 * 86400 + shopper * 60;
    if (t == 3)
        snprintf(out, n, "{\"user_id\":\"b%02d\",\"type\":\"purchase\",\"value\":%.1f,\"ts\":%lld,"
                 "\"event_id\":\"b%02d-%02d\"}", shopper, busy_value(shopper, k), (long long)ts, shopper, k);
    else
        snprintf(out, n, "{\"user_id\":\"b%02d\",\"type\":\"%s\",\"ts\":%lld,\"event_id\":\"b%02d-%02d\"}",
                 shopper, types[t], (long long)ts, shopper, k);
}

/* Batch i holds events BATCH*i .. BATCH*i+BATCH-1 of the sequence that goes
 * round by round (event k of every shopper, then k+1): mostly in time order
 * per shopper, so the LSTM sees real sequences and races make a few late. */
static void batch_event(int i, int j, int *shopper, int *k)
{
    int e = i * BATCH + j;
    *shopper = (e * 7) % NBUSY; /* 7 is prime to NBUSY: every shopper once per round */
    *k = e / NBUSY;
}

/* The validation rules the posts go through (the test's config, set before
 * any thread starts; every event carries its ts). */
static LtvdConfig parse_cfg;

static int apply_json(Service *s, const char *json, ApplyResult *res, PredictionView *single)
{
    cJSON *root = cJSON_Parse(json);
    CHECK(root);
    EventBatch b;
    int rc = events_parse(root, &parse_cfg, 0, &b);
    if (rc == 0)
        rc = service_apply(s, b.events, b.n, res, b.single ? single : NULL);
    events_batch_free(&b);
    cJSON_Delete(root);
    return rc;
}

/* ---- shared run state ------------------------------------------------- */

typedef struct Run {
    Service *s;
    bool phase_b;
    atomic_uint_fast64_t published; /* highest model version published so far, or about to be (phase A) */
    atomic_int appliers_left;
    atomic_bool stop;               /* set once appliers and the model thread are done */
    atomic_int rounds_done;         /* phase B: worker rounds finished */
    atomic_bool jobs_done;
    atomic_uint_fast64_t predictions_checked;
    /* phase A: expected[net][q] = quiet shopper q's ltv under that network */
    double expected[NNETS][NQUIET], expected_p[NNETS][NQUIET];
    /* phase B: the first value seen for (version, quiet shopper) */
    pthread_mutex_t seen_lock;
    uint64_t seen_version[64];
    double seen_ltv[64][NQUIET];
    size_t nseen;
    LstmWeights *nets[NNETS];
    FallbackFit fit;
} Run;

typedef struct Worker {
    Run *run;
    int index;
    uint64_t last_version; /* versions one thread sees never go backwards */
} Worker;

/* Version v was published; phase A publishes 1, 2, ... in order. In phase B
 * versions come from the service and are checked for consistency instead. */
static void check_version(Worker *w, uint64_t v)
{
    CHECK(v >= w->last_version);
    w->last_version = v;
    if (!w->run->phase_b)
        CHECK(v >= 1 && v <= atomic_load(&w->run->published));
}

static void check_quiet(Worker *w, int q, const PredictionView *pv)
{
    Run *r = w->run;
    CHECK(pv->known && pv->events == QUIET_EVENTS);
    if (!r->phase_b) {
        int net = (int)(pv->model_version % NNETS);
        CHECK(pv->p.from_network);
        CHECK_REL(pv->p.ltv, r->expected[net][q], 1e-9);
        CHECK_REL(pv->p.p_active, r->expected_p[net][q], 1e-9);
        return;
    }
    pthread_mutex_lock(&r->seen_lock);
    size_t i = 0;
    while (i < r->nseen && r->seen_version[i] != pv->model_version)
        i++;
    if (i == r->nseen) {
        CHECK(r->nseen < 64);
        r->seen_version[i] = pv->model_version;
        for (int k = 0; k < NQUIET; k++)
            r->seen_ltv[i][k] = -1;
        r->nseen++;
    }
    if (r->seen_ltv[i][q] < 0)
        r->seen_ltv[i][q] = pv->p.ltv;
    double want = r->seen_ltv[i][q];
    pthread_mutex_unlock(&r->seen_lock);
    CHECK_REL(pv->p.ltv, want, 1e-9);
}

static void quiet_id(char *out, int q) { snprintf(out, 8, "q%02d", q); }

/* ---- threads ------------------------------------------------------------ */

/* Posts its share of the batches: batch i goes to appliers i % N and
 * (i + 1) % N, each starting at a different point of its list. */
static void *applier_main(void *arg)
{
    Worker *w = arg;
    Run *r = w->run;
    int mine[NBATCH], n = 0;
    for (int i = 0; i < NBATCH; i++)
        if (i % NAPPLIERS == w->index || (i + 1) % NAPPLIERS == w->index)
            mine[n++] = i;
    int start = w->index * (n / (2 * NAPPLIERS)); /* offset: the two posters of a batch race */
    for (int m = 0; m < n; m++) {
        int i = mine[(start + m) % n];
        if (r->phase_b) {
            /* spread over the worker's rounds: portion p once p rounds are
             * done, paced so that it lasts about as long as a round */
            int portion = m * (NRETRAINS + 1) / n;
            for (int waited = 0; atomic_load(&r->rounds_done) < portion && !atomic_load(&r->jobs_done) &&
                                 waited < 600000; waited++)
                sleep_us(100);
            if (atomic_load(&r->rounds_done) == portion)
                sleep_us(2000);
        }
        char json[BATCH * 160 + 32], one[160];
        ApplyResult res;
        PredictionView single;
        if (i % 5 == 0) {
            /* single events: the answer carries a prediction */
            for (int j = 0; j < BATCH; j++) {
                int sh, k;
                batch_event(i, j, &sh, &k);
                busy_event_json(one, sizeof one, sh, k);
                CHECK(apply_json(r->s, one, &res, &single) == 0);
                CHECK(res.accepted + res.duplicates == 1);
                check_version(w, single.model_version);
                CHECK(single.known && single.events >= 1);
            }
            continue;
        }
        size_t len = (size_t)snprintf(json, sizeof json, "{\"events\":[");
        for (int j = 0; j < BATCH; j++) {
            int sh, k;
            batch_event(i, j, &sh, &k);
            busy_event_json(one, sizeof one, sh, k);
            len += (size_t)snprintf(json + len, sizeof json - len, "%s%s", j ? "," : "", one);
        }
        snprintf(json + len, sizeof json - len, "]}");
        CHECK(apply_json(r->s, json, &res, NULL) == 0);
        CHECK(res.accepted + res.duplicates == BATCH);
        if (m % 8 == 0)
            sched_yield();
    }
    atomic_fetch_sub(&r->appliers_left, 1);
    return NULL;
}

static void *predictor_main(void *arg)
{
    Worker *w = arg;
    Run *r = w->run;
    char qa[8], qb[8], bx[8];
    for (unsigned it = 0; it < 2000000u && !atomic_load(&r->stop); it++) {
        int q = (int)((it * 5u + (unsigned)w->index) % NQUIET);
        quiet_id(qa, q);
        PredictionView pv[3];
        service_predict(r->s, qa, 3, AS_OF, &pv[0]);
        check_version(w, pv[0].model_version);
        check_quiet(w, q, &pv[0]);
        /* one lock, one model: a batch never straddles a swap */
        int q2 = (q + 7) % NQUIET;
        quiet_id(qb, q2);
        snprintf(bx, sizeof bx, "b%02d", (int)(it % NBUSY));
        const char *ids[3] = {qa, bx, qb};
        size_t lens[3] = {3, 3, 3};
        service_predict_many(r->s, ids, lens, 3, AS_OF, pv);
        CHECK(pv[0].model_version == pv[1].model_version && pv[1].model_version == pv[2].model_version);
        check_version(w, pv[0].model_version);
        check_quiet(w, q, &pv[0]);
        check_quiet(w, q2, &pv[2]);
        atomic_fetch_add(&r->predictions_checked, 4);
        if (it % 16 == 15)
            sleep_us(50); /* leave the worker some CPU on a small machine */
    }
    return NULL;
}

/* Phase A: publishes versions 2..NSWAPS+1, network v % NNETS, until the
 * appliers are done (and at least NSWAPS / 2 times). */
static void *swapper_main(void *arg)
{
    Run *r = arg;
    for (uint64_t v = 2; v <= NSWAPS + 1; v++) {
        Model *m;
        CHECK(model_create(&m, r->nets[v % NNETS], &r->fit, 182, MODEL_TRAINED, v) == 0);
        atomic_store(&r->published, v); /* before: a predictor may see v as soon as it is swapped in */
        service_model_swap(r->s, m);
        if (v > NSWAPS / 2 && atomic_load(&r->appliers_left) == 0)
            break;
        sleep_us(300);
    }
    return NULL;
}

/* Phase B: the worker's jobs while traffic runs, as main.c runs them (one
 * at a time): a forced refit, a network retrain (itself a refit, training,
 * swap and rebuild of every state) and a snapshot, round after round while
 * the appliers post (at least NRETRAINS rounds, at most 8). */
static void *jobs_main(void *arg)
{
    Run *r = arg;
    char err[256];
    for (int round = 0; round < 8 && (round < NRETRAINS || atomic_load(&r->appliers_left) > 0); round++) {
        CHECK(service_refit_fallback(r->s, true, err, sizeof err) == 0);
        uint64_t job;
        CHECK(service_request_retrain(r->s, &job) == 0);
        CHECK(service_request_retrain(r->s, &job) == -EBUSY); /* one at a time */
        service_run_retrain(r->s);
        ModelInfo mi;
        service_model_info(r->s, &mi);
        if (mi.retrain_state != RETRAIN_IDLE)
            fprintf(stderr, "retrain: %s\n", mi.retrain_error);
        CHECK(mi.retrain_state == RETRAIN_IDLE);
        CHECK(service_snapshot(r->s, round % 2 == 1, err, sizeof err) == 0);
        atomic_fetch_add(&r->rounds_done, 1);
    }
    atomic_store(&r->jobs_done, true);
    return NULL;
}

/* ---- setup and checks --------------------------------------------------- */

static void base_config(LtvdConfig *cfg, const char *dir)
{
    config_defaults(&parse_cfg);
    parse_cfg.clock = CLOCK_EVENT;
    config_defaults(cfg);
    cfg->clock = CLOCK_EVENT;
    cfg->model_hidden_size = HIDDEN;
    cfg->model_recent_events = 64;
    cfg->limits_max_users = 1000;
    cfg->limits_dedupe_max_ids = 100000;
    cfg->storage_fsync = WAL_FSYNC_NONE;
    snprintf(cfg->storage_dir, sizeof cfg->storage_dir, "%s", dir);
}

static LstmWeights *test_net(uint64_t seed, uint32_t id)
{
    LstmWeights *net;
    ASSERT(lstm_weights_create(&net, HIDDEN, seed, id) == 0);
    net->hybrid = true;
    for (size_t i = 0; i < 3u * (HIDDEN + HEAD_EXTRA); i++)
        net->head_w[i] *= 0.5f; /* the head reads h: predictions depend on the state */
    return net;
}

static Model *model_of(LstmWeights *net, const FallbackFit *fit, ModelStatus st, uint64_t version)
{
    Model *m;
    ASSERT(model_create(&m, net, fit, 182, st, version) == 0);
    return m;
}

static void quiet_events(Service *s)
{
    for (int q = 0; q < NQUIET; q++) {
        char json[1024];
        size_t len = (size_t)snprintf(json, sizeof json, "{\"events\":[");
        for (int k = 0; k < QUIET_EVENTS; k++)
            len += (size_t)snprintf(json + len, sizeof json - len,
                                    "%s{\"user_id\":\"q%02d\",\"type\":\"%s\",\"value\":%d,\"ts\":%lld}", k ? "," : "",
                                    q, k % 2 ? "purchase" : "view", 10 + q + k,
                                    (long long)(T0 - (int64_t)(40 - 5 * k - q) * 86400));
        snprintf(json + len, sizeof json - len, "]}");
        ApplyResult res;
        ASSERT(apply_json(s, json, &res, NULL) == 0 && res.accepted == QUIET_EVENTS);
    }
}

/* Phase B: shoppers with a year of history before T0, so that labels have
 * matured and the retrain has examples. The BG/NBD world, so the fallback's
 * fit converges: each arrives in the first 60 days and buys at its own
 * Poisson rate (exponential across shoppers) until it drops out, after each
 * purchase with its own probability (Beta(1, 3) across shoppers). Each
 * repeat purchase follows an add_to_cart a few days earlier: browsing that
 * the network can use and the fallback cannot see. */
static uint64_t hist_rng = 12345;
static double uniform01(void)
{
    hist_rng ^= hist_rng << 13;
    hist_rng ^= hist_rng >> 7;
    hist_rng ^= hist_rng << 17;
    return ((double)(hist_rng >> 11) + 0.5) / 9007199254740992.0;
}
static double normal01(void) { return sqrt(-2.0 * log(uniform01())) * cos(6.283185307179586 * uniform01()); }

static void history_events(Service *s)
{
    const int64_t start = T0 - 400 * 86400;
    for (int u = 0; u < NHIST; u++) {
        char json[32 * 150];
        size_t len = (size_t)snprintf(json, sizeof json, "{\"events\":[");
        double rate = -log(uniform01()) / 4.0 / 7.0;    /* purchases per day */
        double drop = 1.0 - pow(uniform01(), 1.0 / 3.0); /* after each purchase */
        double level = exp(3.0 + 0.5 * normal01());
        int n = 0;
        for (double t = 60 * uniform01(); t < 399.0 && n < 30; t += -log(uniform01()) / rate) {
            double value = floor(level * exp(0.5 * normal01()) * 2.0) / 2.0 + 0.5; /* a multiple of 0.5 */
            if (n) { /* the first purchase comes unannounced */
                double cart = t - fmin(3.0 * uniform01(), 0.9 * (-log(uniform01()) / rate));
                len += (size_t)snprintf(json + len, sizeof json - len,
                                        ",{\"user_id\":\"h%02d\",\"type\":\"add_to_cart\",\"ts\":%lld}", u,
                                        (long long)(start + (int64_t)(cart * 86400)));
            }
            len += (size_t)snprintf(json + len, sizeof json - len,
                                    "%s{\"user_id\":\"h%02d\",\"type\":\"purchase\",\"value\":%.1f,\"ts\":%lld}",
                                    n ? "," : "", u, value, (long long)(start + (int64_t)(t * 86400)));
            n++;
            if (uniform01() < drop)
                break;
        }
        snprintf(json + len, sizeof json - len, "]}");
        ApplyResult res;
        ASSERT(apply_json(s, json, &res, NULL) == 0);
    }
}

/* Every busy shopper got each of its events once, late or not. */
static void check_counts(Service *s, const Metrics *mx, uint64_t other_events)
{
    for (int sh = 0; sh < NBUSY; sh++) {
        char id[8];
        snprintf(id, sizeof id, "b%02d", sh);
        UserSummaryView v;
        ASSERT(service_user_summary(s, id, 3, &v) == 0);
        double spend = 0;
        uint32_t purchases = 0;
        for (int k = 0; k < BUSY_EVENTS; k++) {
            spend += busy_value(sh, k);
            purchases += (k + sh) % 4 == 3;
        }
        ASSERT(v.agg.events == BUSY_EVENTS);
        ASSERT(v.agg.purchases == purchases);
        ASSERT(v.agg.spend == spend); /* multiples of 0.5: exact in any order */
    }
    ASSERT(atomic_load(&mx->events_applied) == NBUSY * BUSY_EVENTS + other_events);
    ASSERT(atomic_load(&mx->events_duplicate) == NBUSY * BUSY_EVENTS); /* every batch was posted twice */
}

/* The service, once quiet, predicts for every shopper exactly what a fresh
 * service computes by replaying the log (and snapshot) it wrote, under the
 * model it serves now. */
static void check_against_replay(Service *s, const LtvdConfig *cfg, int nhist)
{
    static Metrics mref;
    metrics_init(&mref);
    Model *serving = service_model_acquire(s); /* the reference service takes this reference */
    Service *ref;
    ASSERT(service_create(&ref, cfg, &mref, serving) == 0);
    uint64_t next;
    char err[256];
    if (service_recover(ref, &next, err, sizeof err) != 0) {
        fprintf(stderr, "recover: %s\n", err);
        ASSERT(0);
    }
    int n = 0;
    for (int kind = 0; kind < 3; kind++) {
        int count = kind == 0 ? NBUSY : kind == 1 ? NQUIET : nhist;
        for (int i = 0; i < count; i++) {
            char id[8];
            snprintf(id, sizeof id, "%c%02d", "bqh"[kind], i);
            PredictionView a, b;
            service_predict(s, id, 3, AS_OF, &a);
            service_predict(ref, id, 3, AS_OF, &b);
            ASSERT(a.known && b.known && a.events == b.events && a.last_event_ts == b.last_event_ts);
            ASSERT(a.model_version == b.model_version && a.p.from_network == b.p.from_network);
            ASSERT_REL(a.p.ltv, b.p.ltv, 1e-9);
            ASSERT_REL(a.p.p_active, b.p.p_active, 1e-9);
            ASSERT_REL(a.p.p90, b.p.p90, 1e-9);
            n++;
        }
    }
    printf("  %d shoppers predicted as the replayed log says\n", n);
    service_destroy(ref);
}

static void remove_dir(const char *dir)
{
    DIR *d = opendir(dir);
    ASSERT(d);
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        char p[512];
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        unlink(p);
    }
    closedir(d);
    rmdir(dir);
}

static void run_threads(Run *r, void *(*model_thread)(void *), void *model_arg)
{
    pthread_t ap[NAPPLIERS], pr[NPREDICTORS], mt;
    Worker aw[NAPPLIERS], pw[NPREDICTORS];
    atomic_store(&r->appliers_left, NAPPLIERS);
    atomic_store(&r->stop, false);
    for (int i = 0; i < NPREDICTORS; i++) {
        pw[i] = (Worker){r, i, 0};
        ASSERT(pthread_create(&pr[i], NULL, predictor_main, &pw[i]) == 0);
    }
    ASSERT(pthread_create(&mt, NULL, model_thread, model_arg) == 0);
    for (int i = 0; i < NAPPLIERS; i++) {
        aw[i] = (Worker){r, i, 0};
        ASSERT(pthread_create(&ap[i], NULL, applier_main, &aw[i]) == 0);
    }
    for (int i = 0; i < NAPPLIERS; i++)
        pthread_join(ap[i], NULL);
    pthread_join(mt, NULL);
    atomic_store(&r->stop, true);
    for (int i = 0; i < NPREDICTORS; i++)
        pthread_join(pr[i], NULL);
}

static Wal *open_wal(const LtvdConfig *cfg)
{
    WalConfig wc = {cfg->storage_dir, WAL_FSYNC_NONE, 0, 64 * 1024, 1 << 20, NULL, 1}; /* small segments: several files */
    Wal *wal;
    ASSERT(wal_open(&wal, &wc, 1, NULL, NULL) == 0);
    return wal;
}

/* Phase A: models published by a thread of the test. */
static void phase_swaps(void)
{
    static Run r;
    static Metrics mx;
    char dir[] = "/tmp/ltvd-conc-XXXXXX";
    ASSERT(mkdtemp(dir));
    LtvdConfig cfg;
    base_config(&cfg, dir);
    FallbackFit fit = {BGNBD_CDNOW_PRIOR, GG_CDNOW_PRIOR, 0, 0, 0, 0, {0}};
    r.fit = fit;
    for (int k = 0; k < NNETS; k++)
        r.nets[k] = test_net(100 + (uint64_t)k, 100 + (uint32_t)k);
    /* what each network predicts for the quiet shoppers, from services that
     * only ever knew that network */
    for (int k = 0; k < NNETS; k++) {
        static Metrics m1;
        metrics_init(&m1);
        Service *one;
        ASSERT(service_create(&one, &cfg, &m1, model_of(r.nets[k], &fit, MODEL_TRAINED, 1)) == 0);
        quiet_events(one);
        for (int q = 0; q < NQUIET; q++) {
            char id[8];
            quiet_id(id, q);
            PredictionView pv;
            service_predict(one, id, 3, AS_OF, &pv);
            ASSERT(pv.p.from_network);
            r.expected[k][q] = pv.p.ltv;
            r.expected_p[k][q] = pv.p.p_active;
        }
        service_destroy(one);
    }
    ASSERT(fabs(r.expected[0][0] - r.expected[1][0]) > 1e-6 * r.expected[0][0]); /* the networks differ */
    ASSERT(fabs(r.expected[1][0] - r.expected[2][0]) > 1e-6 * r.expected[1][0]);

    metrics_init(&mx);
    ASSERT(service_create(&r.s, &cfg, &mx, model_of(r.nets[1], &fit, MODEL_TRAINED, 1)) == 0);
    atomic_store(&r.published, 1);
    Wal *wal = open_wal(&cfg);
    service_attach_wal(r.s, wal);
    quiet_events(r.s);
    run_threads(&r, swapper_main, &r);

    check_counts(r.s, &mx, NQUIET * QUIET_EVENTS);
    uint64_t rebuilds = atomic_load(&mx.state_rebuilds), published = atomic_load(&r.published);
    printf("phase A: %llu swaps, %llu predictions checked, %llu state rebuilds, %llu late events\n",
           (unsigned long long)published - 1, (unsigned long long)atomic_load(&r.predictions_checked),
           (unsigned long long)rebuilds, (unsigned long long)atomic_load(&mx.events_late));
    ASSERT(published > NSWAPS / 2 && rebuilds > 0);
    wal_close(wal);
    check_against_replay(r.s, &cfg, 0);
    service_destroy(r.s);
    for (int k = 0; k < NNETS; k++)
        lstm_weights_release(r.nets[k]);
    remove_dir(dir);
}

/* Phase B: the service's own jobs publish models. */
static void phase_jobs(void)
{
    static Run r;
    static Metrics mx;
    char dir[] = "/tmp/ltvd-conc-XXXXXX";
    ASSERT(mkdtemp(dir));
    LtvdConfig cfg;
    base_config(&cfg, dir);
    cfg.model_horizon_days = 60;
    cfg.train_network = true;
    cfg.train_max_epochs = 6;
    cfg.train_seed = 3;
    cfg.train_grid_days = 20;
    FallbackFit fit = {BGNBD_CDNOW_PRIOR, GG_CDNOW_PRIOR, 0, 0, 0, 0, {0}};
    LstmWeights *init = test_net(9, 0x80000009u);
    metrics_init(&mx);
    ASSERT(service_create(&r.s, &cfg, &mx, model_of(init, &fit, MODEL_FALLBACK, 1)) == 0);
    lstm_weights_release(init);
    r.phase_b = true;
    pthread_mutex_init(&r.seen_lock, NULL);
    Wal *wal = open_wal(&cfg);
    service_attach_wal(r.s, wal);
    history_events(r.s);
    quiet_events(r.s);
    uint64_t before = atomic_load(&mx.events_applied);
    run_threads(&r, jobs_main, &r);

    check_counts(r.s, &mx, before);
    ModelInfo mi;
    service_model_info(r.s, &mi);
    printf("phase B: version %llu, status %s, last training: %llu examples, val loss %.4f vs serving %.4f, "
           "%llu state rebuilds, %zu versions seen by predictors, %d rounds\n",
           (unsigned long long)mi.version, mi.status == MODEL_TRAINED ? "trained" : "fallback",
           (unsigned long long)mi.last_train.examples, mi.last_train.val_loss, mi.last_train.val_loss_serving,
           (unsigned long long)atomic_load(&mx.state_rebuilds), r.nseen, atomic_load(&r.rounds_done));
    /* a network was trained and swapped in while events arrived, so every
     * state was rebuilt on the worker while the appliers wrote */
    ASSERT(mi.status == MODEL_TRAINED && atomic_load(&mx.state_rebuilds) > 0);
    int rounds = atomic_load(&r.rounds_done);
    ASSERT(rounds >= NRETRAINS && atomic_load(&mx.retrain_runs) == (uint64_t)rounds);
    ASSERT(atomic_load(&mx.fallback_fits) == 2u * (uint64_t)rounds && atomic_load(&mx.snapshots) == (uint64_t)rounds);
    ASSERT(r.nseen >= 2);
    wal_close(wal);
    check_against_replay(r.s, &cfg, NHIST);
    service_destroy(r.s);
    pthread_mutex_destroy(&r.seen_lock);
    remove_dir(dir);
}

int main(void)
{
    phase_swaps();
    phase_jobs();
    printf("%lu checks on the threads\n", (unsigned long)atomic_load(&thread_checks));
    TEST_DONE("test_concurrency");
}
