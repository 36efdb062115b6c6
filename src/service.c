/* service: validation, all-or-nothing apply, predictions, erasure, the
 * serving model and the worker-side jobs. */
#include "service.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dedupe.h"
#include "encoding.h"
#include "hash.h"
#include "log.h"
#include "lstm.h"
#include "store.h"
#include "timeutil.h"

struct Service {
    LtvdConfig cfg;
    Metrics *metrics;
    Store *store;
    Dedupe *dedupe;              /* under the store lock */

    pthread_mutex_t model_lock;  /* guards model */
    Model *model;
    atomic_uint_fast64_t next_version;

    atomic_int_fast64_t event_clock;      /* newest applied event ts */
    atomic_uint_fast64_t purchases_total; /* purchase events applied (for refit growth) */
    uint64_t purchases_at_fit;            /* worker only */

    atomic_int retrain_state;    /* RetrainState */
    atomic_uint_fast64_t retrain_job;
    pthread_mutex_t err_lock;
    char retrain_error[256];
    void (*retrain_notify)(void *);
    void *retrain_notify_arg;

    atomic_bool ready;
};

/* Scratch for one LSTM step: [x; h] and z. One per thread, never reallocated. */
static _Thread_local float step_scratch[LSTM_MAX_INPUT + LSTM_MAX_HIDDEN + 4 * LSTM_MAX_HIDDEN];

int service_create(Service **out, const LtvdConfig *cfg, Metrics *metrics, Model *initial)
{
    Service *s = calloc(1, sizeof *s);
    if (!s)
        return -ENOMEM;
    s->cfg = *cfg;
    s->metrics = metrics;
    StoreConfig sc = {(size_t)cfg->limits_max_users, (int)cfg->model_hidden_size, (int)cfg->model_recent_events};
    int rc = store_create(&s->store, &sc);
    if (rc)
        goto fail;
    if ((rc = dedupe_create(&s->dedupe, (size_t)cfg->limits_dedupe_window)) != 0)
        goto fail;
    pthread_mutex_init(&s->model_lock, NULL);
    pthread_mutex_init(&s->err_lock, NULL);
    s->model = initial;
    atomic_init(&s->next_version, initial->version + 1);
    *out = s;
    return 0;
fail:
    store_destroy(s->store);
    free(s);
    return rc;
}

void service_destroy(Service *s)
{
    if (!s)
        return;
    model_release(s->model);
    dedupe_destroy(s->dedupe);
    store_destroy(s->store);
    pthread_mutex_destroy(&s->model_lock);
    pthread_mutex_destroy(&s->err_lock);
    free(s);
}

int64_t service_now(Service *s)
{
    if (s->cfg.clock == CLOCK_EVENT)
        return atomic_load(&s->event_clock);
    return time_now();
}

/* ---- validation -------------------------------------------------------- */

static bool utf8_valid(const unsigned char *p, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned char c = p[i];
        size_t extra;
        uint32_t cp;
        if (c < 0x80) {
            i++;
            continue;
        } else if ((c & 0xe0) == 0xc0) {
            extra = 1;
            cp = c & 0x1f;
        } else if ((c & 0xf0) == 0xe0) {
            extra = 2;
            cp = c & 0x0f;
        } else if ((c & 0xf8) == 0xf0) {
            extra = 3;
            cp = c & 0x07;
        } else {
            return false;
        }
        if (i + extra >= n)
            return false; /* truncated sequence */
        for (size_t k = 1; k <= extra; k++) {
            if ((p[i + k] & 0xc0) != 0x80)
                return false;
            cp = (cp << 6) | (p[i + k] & 0x3f);
        }
        if ((extra == 1 && cp < 0x80) || (extra == 2 && cp < 0x800) || (extra == 3 && cp < 0x10000) ||
            cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return false;
        i += extra + 1;
    }
    return true;
}

bool service_id_valid(const char *id, size_t len)
{
    return len >= 1 && len <= USER_ID_MAX && memchr(id, '\0', len) == NULL && utf8_valid((const unsigned char *)id, len);
}

static int fail_field(EventError *e, size_t index, const char *field, const char *reason)
{
    e->index = index;
    e->field = field;
    snprintf(e->reason, sizeof e->reason, "%s", reason);
    return -EINVAL;
}

/* Validates one event object; on error fills *err and returns -EINVAL. */
static int parse_event(Service *s, const cJSON *o, size_t index, int64_t wall_now, Event *ev, EventError *err)
{
    if (!cJSON_IsObject(o))
        return fail_field(err, index, "event", "must be a JSON object");
    memset(ev, 0, sizeof *ev);
    const cJSON *uid = cJSON_GetObjectItemCaseSensitive(o, "user_id");
    if (!uid)
        return fail_field(err, index, "user_id", "is required");
    if (!cJSON_IsString(uid))
        return fail_field(err, index, "user_id", "must be a string");
    ev->user_id = uid->valuestring;
    ev->user_len = strlen(uid->valuestring);
    if (ev->user_len == 0 || ev->user_len > USER_ID_MAX)
        return fail_field(err, index, "user_id", "must be 1 to 128 bytes");
    if (!utf8_valid((const unsigned char *)ev->user_id, ev->user_len))
        return fail_field(err, index, "user_id", "must be valid UTF-8");

    const cJSON *type = cJSON_GetObjectItemCaseSensitive(o, "type");
    if (!type)
        return fail_field(err, index, "type", "is required");
    int t = cJSON_IsString(type) ? event_type_parse(type->valuestring) : -1;
    if (t < 0)
        return fail_field(err, index, "type", "must be one of view, click, add_to_cart, purchase, refund");
    ev->type = (EventType)t;

    const cJSON *ts = cJSON_GetObjectItemCaseSensitive(o, "ts");
    if (!ts || cJSON_IsNull(ts)) {
        ev->ts = wall_now;
    } else if (cJSON_IsString(ts)) {
        int rc = time_parse_rfc3339(ts->valuestring, &ev->ts);
        if (rc == -ERANGE)
            return fail_field(err, index, "ts", "must lie between 1970 and 2100");
        if (rc)
            return fail_field(err, index, "ts", "must be an RFC 3339 timestamp or Unix seconds");
    } else if (cJSON_IsNumber(ts)) {
        int rc = time_from_epoch(ts->valuedouble, &ev->ts);
        if (rc)
            return fail_field(err, index, "ts", "must be Unix seconds between 1970 and 2100");
    } else {
        return fail_field(err, index, "ts", "must be an RFC 3339 string or a number of Unix seconds");
    }
    if (s->cfg.clock == CLOCK_WALL && ev->ts > wall_now + s->cfg.limits_max_future_s)
        return fail_field(err, index, "ts", "is too far in the future (limits.max_future_s)");

    const cJSON *value = cJSON_GetObjectItemCaseSensitive(o, "value");
    bool monetary = ev->type == EV_PURCHASE || ev->type == EV_REFUND;
    if (value) {
        if (!cJSON_IsNumber(value))
            return fail_field(err, index, "value", "must be a number");
        if (!isfinite(value->valuedouble) || value->valuedouble > 1e12)
            return fail_field(err, index, "value", "must be finite (at most 1e12)");
        if (value->valuedouble < 0)
            return fail_field(err, index, "value", "must be >= 0");
        ev->value = value->valuedouble;
    } else if (monetary) {
        return fail_field(err, index, "value", "is required for purchase and refund");
    }

    const cJSON *q = cJSON_GetObjectItemCaseSensitive(o, "quantity");
    ev->quantity = 1;
    if (q) {
        if (!cJSON_IsNumber(q) || q->valuedouble != floor(q->valuedouble))
            return fail_field(err, index, "quantity", "must be an integer");
        if (q->valuedouble < 1 || q->valuedouble > 1e9)
            return fail_field(err, index, "quantity", "must be between 1 and 1e9");
        ev->quantity = (uint32_t)q->valuedouble;
    }

    const cJSON *eid = cJSON_GetObjectItemCaseSensitive(o, "event_id");
    if (eid && !cJSON_IsNull(eid)) {
        if (!cJSON_IsString(eid))
            return fail_field(err, index, "event_id", "must be a string");
        size_t n = strlen(eid->valuestring);
        if (n == 0 || n > EVENT_ID_MAX)
            return fail_field(err, index, "event_id", "must be 1 to 128 bytes");
        ev->event_id = eid->valuestring;
        ev->event_id_len = n;
    }
    return 0;
}

int service_parse_events(Service *s, const cJSON *root, EventBatch *b)
{
    memset(b, 0, sizeof *b);
    int64_t wall_now = time_now();
    if (!cJSON_IsObject(root)) {
        b->errors = &b->one_error;
        b->nerrors = 1;
        fail_field(&b->one_error, 0, "body", "must be an event object or {\"events\": [...]}");
        return -EPROTO;
    }
    const cJSON *arr = cJSON_GetObjectItemCaseSensitive(root, "events");
    if (!arr) {
        b->single = true;
        b->events = &b->one;
        b->n = 1;
        b->errors = &b->one_error;
        if (parse_event(s, root, 0, wall_now, &b->one, &b->one_error)) {
            b->nerrors = 1;
            return -EINVAL;
        }
        return 0;
    }
    if (!cJSON_IsArray(arr)) {
        b->errors = &b->one_error;
        b->nerrors = 1;
        fail_field(&b->one_error, 0, "events", "must be an array");
        return -EPROTO;
    }
    size_t n = (size_t)cJSON_GetArraySize(arr);
    if (n == 0) {
        b->errors = &b->one_error;
        b->nerrors = 1;
        fail_field(&b->one_error, 0, "events", "must not be empty");
        return -EPROTO;
    }
    if (n > (size_t)s->cfg.limits_max_batch_events)
        return -E2BIG;
    b->events = malloc(n * sizeof(Event));
    b->errors = malloc(n * sizeof(EventError));
    if (!b->events || !b->errors) {
        free(b->events);
        free(b->errors);
        memset(b, 0, sizeof *b);
        return -ENOMEM;
    }
    b->n = n;
    size_t i = 0;
    for (const cJSON *it = arr->child; it; it = it->next, i++)
        if (parse_event(s, it, i, wall_now, &b->events[i], &b->errors[b->nerrors]))
            b->nerrors++;
    if (b->nerrors)
        atomic_fetch_add(&s->metrics->events_rejected, n);
    return b->nerrors ? -EINVAL : 0;
}

void service_batch_free(EventBatch *b)
{
    if (b->events && b->events != &b->one)
        free(b->events);
    if (b->errors && b->errors != &b->one_error)
        free(b->errors);
    memset(b, 0, sizeof *b);
}

/* ---- state ------------------------------------------------------------- */

Model *service_model_acquire(Service *s)
{
    pthread_mutex_lock(&s->model_lock);
    Model *m = s->model;
    model_retain(m);
    pthread_mutex_unlock(&s->model_lock);
    return m;
}

static void swap_model(Service *s, Model *m)
{
    pthread_mutex_lock(&s->model_lock);
    Model *old = s->model;
    s->model = m;
    pthread_mutex_unlock(&s->model_lock);
    model_release(old);
}

/* Recomputes h and c from the retained events when they were computed under
 * other weights, so a prediction never mixes versions. Store lock held. */
static void ensure_state(Service *s, UserState *u, const LstmWeights *net)
{
    if (u->net_id == net->id)
        return;
    float *h = store_user_h(s->store, u), *c = store_user_c(s->store, u);
    size_t H = (size_t)net->cfg.hidden;
    memset(h, 0, H * sizeof(float));
    memset(c, 0, H * sizeof(float));
    EncodeContext ctx = u->ring_ctx;
    float x[FEATURE_DIM]; /* (I,) */
    for (unsigned k = 0; k < u->ring_len; k++) {
        Event ev;
        store_ring_event(store_ring_at(s->store, u, k), &ev);
        encode_event(x, &ev, &ctx);
        lstm_step(&net->cfg, net->w, net->b, x, h, c, step_scratch);
        encode_context_advance(&ctx, &ev);
    }
    u->net_id = net->id;
    atomic_fetch_add_explicit(&s->metrics->state_rebuilds, 1, memory_order_relaxed);
}

/* Applies one event to its shopper. Store lock held. */
static void apply_one(Service *s, UserState *u, const Event *ev, const LstmWeights *net, ApplyResult *res)
{
    ensure_state(s, u, net);
    bool late = u->agg.events > 0 && ev->ts < u->ctx.prev_ts;
    if (late) {
        /* Too old to feed the LSTM (time would run backwards): it counts in
         * the aggregates only. docs/SEMANTICS.md, "Late events". */
        res->late++;
    } else {
        float x[FEATURE_DIM]; /* (I,) */
        encode_event(x, ev, &u->ctx);
        lstm_step(&net->cfg, net->w, net->b, x, store_user_h(s->store, u), store_user_c(s->store, u), step_scratch);
        encode_context_advance(&u->ctx, ev);
        store_ring_push(s->store, u, ev);
    }
    shopper_agg_apply(&u->agg, ev);
    if (ev->type == EV_PURCHASE)
        atomic_fetch_add_explicit(&s->purchases_total, 1, memory_order_relaxed);
    int64_t clk = atomic_load_explicit(&s->event_clock, memory_order_relaxed);
    while (ev->ts > clk && !atomic_compare_exchange_weak(&s->event_clock, &clk, ev->ts))
        ;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Would the batch create more shoppers than the table has room for?
 * Store lock held. Counts distinct missing ids exactly only when the cheap
 * upper bound says it might. */
static bool over_capacity(Service *s, const EventBatch *b)
{
    size_t room = (size_t)s->cfg.limits_max_users - store_count(s->store);
    size_t missing = 0;
    for (size_t i = 0; i < b->n; i++)
        missing += store_find(s->store, b->events[i].user_id, b->events[i].user_len) == NULL;
    if (missing <= room)
        return false;
    uint64_t *keys = malloc(missing * sizeof(uint64_t));
    if (!keys)
        return true;
    size_t k = 0;
    for (size_t i = 0; i < b->n; i++)
        if (!store_find(s->store, b->events[i].user_id, b->events[i].user_len))
            keys[k++] = hash64(b->events[i].user_id, b->events[i].user_len, 0);
    qsort(keys, k, sizeof *keys, cmp_u64);
    size_t distinct = k ? 1 : 0;
    for (size_t i = 1; i < k; i++)
        distinct += keys[i] != keys[i - 1];
    free(keys);
    return distinct > room;
}

static void fill_prediction(Service *s, const Model *m, UserState *u, const char *id, size_t len, int64_t as_of,
                            PredictionView *out)
{
    size_t n = len > USER_ID_MAX ? USER_ID_MAX : len;
    memcpy(out->user_id, id, n);
    out->user_id[n] = '\0';
    out->user_len = n;
    out->as_of = as_of;
    out->horizon_days = m->horizon_days;
    out->model_version = m->version;
    out->known = u != NULL;
    out->events = u ? u->agg.events : 0;
    out->last_event_ts = u ? u->agg.last_ts : 0;
    if (u)
        ensure_state(s, u, m->net);
    model_predict(m, u ? store_user_h(s->store, u) : NULL, u ? &u->agg : NULL, as_of, &out->p);
    atomic_fetch_add_explicit(&s->metrics->predictions, 1, memory_order_relaxed);
}

int service_apply(Service *s, const EventBatch *b, ApplyResult *res, PredictionView *single)
{
    memset(res, 0, sizeof *res);
    Model *m = service_model_acquire(s);
    const LstmWeights *net = m->net;
    store_lock(s->store);
    if (over_capacity(s, b)) {
        store_unlock(s->store);
        model_release(m);
        atomic_fetch_add(&s->metrics->events_capacity, b->n);
        return -ENOSPC;
    }
    UserState *u = NULL;
    for (size_t i = 0; i < b->n; i++) {
        const Event *ev = &b->events[i];
        if (ev->event_id) {
            uint64_t key = dedupe_key(ev->event_id, ev->event_id_len);
            if (dedupe_contains(s->dedupe, key)) {
                res->duplicates++;
                continue;
            }
            dedupe_insert(s->dedupe, key);
        }
        u = store_find(s->store, ev->user_id, ev->user_len);
        if (!u) {
            int rc = store_insert(s->store, ev->user_id, ev->user_len, &u);
            if (rc) /* cannot happen after over_capacity(); kept as a guard */
                continue;
            u->net_id = net->id;
        }
        apply_one(s, u, ev, net, res);
        res->accepted++;
    }
    if (single && b->single) {
        u = store_find(s->store, b->events[0].user_id, b->events[0].user_len);
        fill_prediction(s, m, u, b->events[0].user_id, b->events[0].user_len, service_now(s), single);
    }
    store_unlock(s->store);
    model_release(m);
    atomic_fetch_add_explicit(&s->metrics->events_applied, res->accepted, memory_order_relaxed);
    atomic_fetch_add_explicit(&s->metrics->events_duplicate, res->duplicates, memory_order_relaxed);
    atomic_fetch_add_explicit(&s->metrics->events_late, res->late, memory_order_relaxed);
    return 0;
}

void service_predict(Service *s, const char *id, size_t len, int64_t as_of, PredictionView *out)
{
    service_predict_many(s, &id, &len, 1, as_of, out);
}

void service_predict_many(Service *s, const char *const *ids, const size_t *lens, size_t n, int64_t as_of,
                          PredictionView *out)
{
    Model *m = service_model_acquire(s);
    if (as_of < 0)
        as_of = service_now(s);
    store_lock(s->store);
    for (size_t i = 0; i < n; i++) {
        UserState *u = store_find(s->store, ids[i], lens[i]);
        fill_prediction(s, m, u, ids[i], lens[i], as_of, &out[i]);
    }
    store_unlock(s->store);
    model_release(m);
}

int service_user_summary(Service *s, const char *id, size_t len, UserSummaryView *out)
{
    store_lock(s->store);
    UserState *u = store_find(s->store, id, len);
    if (u) {
        out->agg = u->agg;
        out->recent_events = u->ring_len;
    }
    store_unlock(s->store);
    return u ? 0 : -ENOENT;
}

int service_delete_user(Service *s, const char *id, size_t len)
{
    store_lock(s->store);
    int rc = store_remove(s->store, id, len);
    store_unlock(s->store);
    if (!rc)
        atomic_fetch_add(&s->metrics->users_deleted, 1);
    return rc;
}

/* ---- model and jobs ---------------------------------------------------- */

void service_model_info(Service *s, ModelInfo *out)
{
    Model *m = service_model_acquire(s);
    memset(out, 0, sizeof *out);
    out->version = m->version;
    out->status = m->status;
    out->trained_at = m->trained_at;
    out->horizon_days = m->horizon_days;
    out->hidden_size = m->net->cfg.hidden;
    out->train = m->train;
    out->fallback = m->fallback;
    model_release(m);
    out->retrain_state = (RetrainState)atomic_load(&s->retrain_state);
    out->retrain_job = atomic_load(&s->retrain_job);
    pthread_mutex_lock(&s->err_lock);
    memcpy(out->retrain_error, s->retrain_error, sizeof out->retrain_error);
    pthread_mutex_unlock(&s->err_lock);
    out->network_enabled = s->cfg.train_network;
    out->adjuster_enabled = s->cfg.adjuster_enabled;
}

void service_set_retrain_notify(Service *s, void (*fn)(void *), void *arg)
{
    s->retrain_notify = fn;
    s->retrain_notify_arg = arg;
}

int service_request_retrain(Service *s, uint64_t *job)
{
    int expected = RETRAIN_IDLE;
    if (!atomic_compare_exchange_strong(&s->retrain_state, &expected, RETRAIN_RUNNING)) {
        if (expected == RETRAIN_RUNNING)
            return -EBUSY;
        if (!atomic_compare_exchange_strong(&s->retrain_state, &expected, RETRAIN_RUNNING))
            return -EBUSY;
    }
    *job = atomic_fetch_add(&s->retrain_job, 1) + 1;
    if (s->retrain_notify)
        s->retrain_notify(s->retrain_notify_arg);
    return 0;
}

bool service_retrain_running(Service *s) { return atomic_load(&s->retrain_state) == RETRAIN_RUNNING; }

/* Worker: per-shopper BG/NBD summaries at now, collected in short locked
 * batches so the HTTP threads never wait long. */
static CustomerSummary *collect_summaries(Service *s, int64_t now, size_t *n_out)
{
    store_lock(s->store);
    size_t cap = store_count(s->store) + 1, n = 0;
    store_unlock(s->store);
    CustomerSummary *arr = malloc(cap * sizeof *arr);
    if (!arr)
        return NULL;
    for (size_t base = 0;; base += 4096) {
        store_lock(s->store);
        size_t high = store_slot_high(s->store);
        for (size_t i = base; i < base + 4096 && i < high && n < cap; i++) {
            UserState *u = store_slot_at(s->store, i);
            if (u && shopper_summary(&u->agg, now, &arr[n]))
                n++;
        }
        store_unlock(s->store);
        if (base + 4096 >= high || n >= cap)
            break;
    }
    *n_out = n;
    return arr;
}

int service_refit_fallback(Service *s, bool force, char *err, size_t errlen)
{
    uint64_t purchases = atomic_load(&s->purchases_total);
    double growth = s->purchases_at_fit ? (double)purchases / (double)s->purchases_at_fit - 1.0 : INFINITY;
    if (!force && (purchases == s->purchases_at_fit || growth < s->cfg.fallback_refit_growth))
        return 1;
    int64_t now = service_now(s);
    size_t n = 0;
    CustomerSummary *sum = collect_summaries(s, now, &n);
    if (!sum) {
        snprintf(err, errlen, "out of memory collecting summaries");
        return -ENOMEM;
    }
    Model *cur = service_model_acquire(s);
    FallbackFit fit = cur->fallback;
    uint64_t t0 = time_mono_ns();
    size_t repeaters = 0;
    int rc = bgnbd_fit(sum, n, &fit.bg);
    if (!rc)
        rc = gg_fit(sum, n, &fit.gg, &repeaters);
    free(sum);
    if (rc) {
        model_release(cur);
        snprintf(err, errlen, "fallback fit needs at least 10 shoppers with purchases and 3 repeat buyers "
                              "(have %zu shoppers)", n);
        atomic_fetch_add(&s->metrics->fallback_fit_failures, 1);
        return rc;
    }
    fit.customers = n;
    fit.repeat_buyers = repeaters;
    fit.purchases = purchases;
    fit.fitted_at = now;
    Model *next;
    rc = model_create(&next, cur->net, &fit, cur->horizon_days, cur->status, atomic_fetch_add(&s->next_version, 1));
    if (rc) {
        model_release(cur);
        return rc;
    }
    next->trained_at = cur->trained_at;
    next->train = cur->train;
    model_release(cur);
    swap_model(s, next);
    s->purchases_at_fit = purchases;
    atomic_fetch_add(&s->metrics->fallback_fits, 1);
    log_msg(LOG_INFO, "fallback refit", "version=%llu customers=%zu repeat_buyers=%zu r=%.4f alpha=%.4f a=%.4f "
            "b=%.4f p=%.3f q=%.3f v=%.3f ms=%.1f", (unsigned long long)next->version, n, repeaters, fit.bg.r,
            fit.bg.alpha, fit.bg.a, fit.bg.b, fit.gg.p, fit.gg.q, fit.gg.v, (time_mono_ns() - t0) / 1e6);
    char path[CONFIG_STR_MAX + 32];
    snprintf(path, sizeof path, "%s/%s", s->cfg.storage_dir, MODEL_FILE_NAME);
    Model *serving = service_model_acquire(s);
    int src = model_save(serving, path);
    model_release(serving);
    if (src)
        log_msg(LOG_WARN, "model save failed", "path=\"%s\" error=\"%s\"", path, strerror(-src));
    return 0;
}

void service_run_retrain(Service *s)
{
    uint64_t t0 = time_mono_ns();
    char err[256] = "";
    log_msg(LOG_INFO, "retrain start", "job=%llu network=%s", (unsigned long long)atomic_load(&s->retrain_job),
            s->cfg.train_network ? "true" : "false");
    int rc = service_refit_fallback(s, true, err, sizeof err);
    uint64_t ms = (time_mono_ns() - t0) / 1000000;
    atomic_store(&s->metrics->retrain_last_ms, ms);
    atomic_fetch_add(&s->metrics->retrain_runs, 1);
    pthread_mutex_lock(&s->err_lock);
    snprintf(s->retrain_error, sizeof s->retrain_error, "%s", rc < 0 ? err : "");
    pthread_mutex_unlock(&s->err_lock);
    if (rc < 0) {
        atomic_fetch_add(&s->metrics->retrain_failures, 1);
        atomic_store(&s->retrain_state, RETRAIN_FAILED);
        log_msg(LOG_WARN, "retrain failed", "error=\"%s\" ms=%llu", err, (unsigned long long)ms);
        return;
    }
    atomic_store(&s->retrain_state, RETRAIN_IDLE);
    log_msg(LOG_INFO, "retrain finish", "ms=%llu network_trained=false", (unsigned long long)ms);
}

void service_set_ready(Service *s, bool ready) { atomic_store(&s->ready, ready); }
bool service_ready(Service *s) { return atomic_load(&s->ready); }

void service_gauges(Service *s, MetricsGauges *g)
{
    memset(g, 0, sizeof *g);
    g->users = store_count(s->store);
    g->state_bytes = store_bytes(s->store);
    store_lock(s->store);
    g->dedupe_entries = dedupe_count(s->dedupe);
    store_unlock(s->store);
    Model *m = service_model_acquire(s);
    g->model_version = m->version;
    model_release(m);
    g->ready = service_ready(s);
    g->retrain_running = service_retrain_running(s);
    g->event_clock = atomic_load(&s->event_clock);
}
