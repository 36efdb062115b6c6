/* service: validation, all-or-nothing apply, predictions, erasure, the
 * serving model and the worker-side jobs. */
#include "service.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "dedupe.h"
#include "encoding.h"
#include "hash.h"
#include "log.h"
#include "lstm.h"
#include "predlog.h"
#include "store.h"
#include "timeutil.h"
#include "trainer.h"
#include "util.h"

struct Service {
    LtvdConfig cfg;
    Metrics *metrics;
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
    char retrain_error[256];
    TrainFigures last_train;     /* under err_lock */
    void (*retrain_notify)(void *);
    void *retrain_notify_arg;

    atomic_bool ready;

    /* durability */
    Wal *wal;                    /* NULL until attached (and while replaying) */
    ByteBuf logbuf;              /* record being built; under the store lock */
    atomic_int_fast64_t last_snapshot_mono_s;
    atomic_uint_fast64_t wal_bytes_at_snapshot;
    atomic_int_fast64_t erasure_pending_since; /* mono seconds, 0 = none */
};

/* Slots the worker visits per hold of the store lock, sized so that a hold
 * stays near 100 us (a GET's p99 at rest is about 500 us): a slot is a few
 * cache misses to summarise, about 0.5 us to copy its ring, and up to 32
 * LSTM steps (about 20 us) to rebuild. */
#define WORKER_BATCH_SUMMARIES 512
#define WORKER_BATCH_COPY 128
#define WORKER_BATCH_REBUILD 4

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
    if (cfg->adjuster_enabled && cfg->adjuster_log_size > 0 &&
        (rc = predlog_create(&s->predlog, (size_t)cfg->adjuster_log_size)) != 0)
        goto fail;
    pthread_mutex_init(&s->model_lock, NULL);
    pthread_mutex_init(&s->err_lock, NULL);
    s->model = initial;
    atomic_init(&s->next_version, initial->version + 1);
    atomic_init(&s->last_snapshot_mono_s, (int64_t)(time_mono_ns() / 1000000000ull));
    *out = s;
    return 0;
fail:
    dedupe_destroy(s->dedupe);
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
    predlog_destroy(s->predlog);
    store_destroy(s->store);
    pthread_mutex_destroy(&s->model_lock);
    pthread_mutex_destroy(&s->err_lock);
    bytebuf_free(&s->logbuf);
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

void service_model_swap(Service *s, Model *m) { swap_model(s, m); }

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
static bool over_capacity(Service *s, const Event *events, size_t n)
{
    size_t room = (size_t)s->cfg.limits_max_users - store_count(s->store);
    size_t missing = 0;
    for (size_t i = 0; i < n; i++)
        missing += store_find(s->store, events[i].user_id, events[i].user_len) == NULL;
    if (missing <= room)
        return false;
    uint64_t *keys = malloc(missing * sizeof(uint64_t));
    if (!keys)
        return true;
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (!store_find(s->store, events[i].user_id, events[i].user_len))
            keys[k++] = hash64(events[i].user_id, events[i].user_len, 0);
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

/* ---- log records ----------------------------------------------------------
 * WAL_REC_EVENTS payload: u32 n, then per event: u8 type, u8 user_len,
 * u8 event_id_len (0: none), u8 0, i64 ts, f64 value, u32 quantity,
 * user_id bytes, event_id bytes. WAL_REC_DELETE: u8 user_len, user_id. */

/* Store lock held. */
static int log_events(Service *s, const Event *ev, size_t n, uint64_t *seq)
{
    size_t need = 4;
    for (size_t i = 0; i < n; i++)
        need += 24 + ev[i].user_len + ev[i].event_id_len;
    s->logbuf.len = 0;
    int rc = bytebuf_reserve(&s->logbuf, need);
    if (rc)
        return rc;
    unsigned char *p = s->logbuf.p;
    uint32_t n32 = (uint32_t)n;
    memcpy(p, &n32, 4);
    p += 4;
    for (size_t i = 0; i < n; i++) {
        const Event *e = &ev[i];
        p[0] = (unsigned char)e->type;
        p[1] = (unsigned char)e->user_len;
        p[2] = (unsigned char)(e->event_id ? e->event_id_len : 0);
        p[3] = 0;
        memcpy(p + 4, &e->ts, 8);
        memcpy(p + 12, &e->value, 8);
        memcpy(p + 20, &e->quantity, 4);
        p += 24;
        memcpy(p, e->user_id, e->user_len);
        p += e->user_len;
        if (e->event_id) {
            memcpy(p, e->event_id, e->event_id_len);
            p += e->event_id_len;
        }
    }
    return wal_append(s->wal, WAL_REC_EVENTS, s->logbuf.p, (size_t)(p - s->logbuf.p), seq);
}

/* Decodes a WAL_REC_EVENTS payload; *out is malloc'd, strings point into p. */
static int decode_events(const unsigned char *p, size_t len, Event **out, size_t *n_out)
{
    if (len < 4)
        return -EBADMSG;
    uint32_t n;
    memcpy(&n, p, 4);
    const unsigned char *end = p + len;
    p += 4;
    Event *ev = calloc(n ? n : 1, sizeof *ev);
    if (!ev)
        return -ENOMEM;
    for (uint32_t i = 0; i < n; i++) {
        if (end - p < 24 || end - p < 24 + p[1] + p[2] || p[0] >= EV_NTYPES || p[1] == 0) {
            free(ev);
            return -EBADMSG;
        }
        ev[i].type = (EventType)p[0];
        ev[i].user_len = p[1];
        ev[i].event_id_len = p[2];
        memcpy(&ev[i].ts, p + 4, 8);
        memcpy(&ev[i].value, p + 12, 8);
        memcpy(&ev[i].quantity, p + 20, 4);
        ev[i].user_id = (const char *)p + 24;
        ev[i].event_id = ev[i].event_id_len ? (const char *)p + 24 + ev[i].user_len : NULL;
        p += 24 + ev[i].user_len + ev[i].event_id_len;
    }
    *out = ev;
    *n_out = n;
    return 0;
}

/* Applies validated events in order. Store lock held; capacity checked. */
static void apply_events_locked(Service *s, const Event *events, size_t n, const LstmWeights *net, ApplyResult *res)
{
    for (size_t i = 0; i < n; i++) {
        const Event *ev = &events[i];
        if (ev->event_id) {
            uint64_t key = dedupe_key(ev->event_id, ev->event_id_len);
            if (dedupe_contains(s->dedupe, key)) {
                res->duplicates++;
                continue;
            }
            dedupe_insert(s->dedupe, key);
        }
        UserState *u = store_find(s->store, ev->user_id, ev->user_len);
        if (!u) {
            if (store_insert(s->store, ev->user_id, ev->user_len, &u))
                continue; /* cannot happen after over_capacity(); kept as a guard */
            u->net_id = net->id;
        }
        apply_one(s, u, ev, net, res);
        res->accepted++;
    }
}

int service_apply(Service *s, const EventBatch *b, ApplyResult *res, PredictionView *single)
{
    memset(res, 0, sizeof *res);
    Model *m = service_model_acquire(s);
    store_lock(s->store);
    if (over_capacity(s, b->events, b->n)) {
        store_unlock(s->store);
        model_release(m);
        atomic_fetch_add(&s->metrics->events_capacity, b->n);
        return -ENOSPC;
    }
    if (s->wal) {
        /* Log first: an event is applied only once its record is in the log
         * buffer, so memory never holds what the log could lose on its own. */
        int rc = log_events(s, b->events, b->n, &res->wait_seq);
        if (rc) {
            store_unlock(s->store);
            model_release(m);
            return rc == -ENOMEM ? -ENOMEM : -EIO;
        }
        if (s->cfg.storage_fsync != WAL_FSYNC_ALWAYS)
            res->wait_seq = 0; /* interval/none: acknowledged before the fsync */
    }
    apply_events_locked(s, b->events, b->n, m->net, res);
    if (single && b->single) {
        UserState *u = store_find(s->store, b->events[0].user_id, b->events[0].user_len);
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
    int64_t now = service_now(s);
    if (as_of < 0)
        as_of = now;
    /* a prediction of the present (not a what-if about another day) is
     * logged for the adjuster, to be compared with what follows */
    bool log_it = s->predlog && as_of <= now + 86400 && as_of >= now - 86400;
    store_lock(s->store);
    for (size_t i = 0; i < n; i++) {
        UserState *u = store_find(s->store, ids[i], lens[i]);
        fill_prediction(s, m, u, ids[i], lens[i], as_of, &out[i]);
        if (log_it && u && as_of >= u->agg.last_ts) {
            PredLogEntry e = {u->hash, as_of, out[i].p.uncorrected, u->agg.spend,
                              (float)((double)(as_of - u->agg.last_ts) / 86400.0),
                              (float)((double)(as_of - u->agg.first_ts) / 86400.0), m->version};
            predlog_record(s->predlog, &e);
        }
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

/* Removes a shopper and its pending logged prediction. Store lock held. */
static void erase_locked(Service *s, const char *id, size_t len)
{
    UserState *u = store_find(s->store, id, len);
    if (!u)
        return;
    if (s->predlog)
        predlog_forget(s->predlog, u->hash);
    store_remove(s->store, id, len);
}

int service_delete_user(Service *s, const char *id, size_t len, uint64_t *wait_seq)
{
    *wait_seq = 0;
    store_lock(s->store);
    if (!store_find(s->store, id, len)) {
        store_unlock(s->store);
        return -ENOENT;
    }
    if (s->wal) {
        unsigned char rec[1 + USER_ID_MAX];
        rec[0] = (unsigned char)len;
        memcpy(rec + 1, id, len);
        int rc = wal_append(s->wal, WAL_REC_DELETE, rec, 1 + len, wait_seq);
        if (rc) {
            store_unlock(s->store);
            return -EIO;
        }
        if (s->cfg.storage_fsync != WAL_FSYNC_ALWAYS)
            *wait_seq = 0;
        int64_t zero = 0;
        atomic_compare_exchange_strong(&s->erasure_pending_since, &zero,
                                       (int64_t)(time_mono_ns() / 1000000000ull) + 1);
    }
    erase_locked(s, id, len);
    store_unlock(s->store);
    atomic_fetch_add(&s->metrics->users_deleted, 1);
    return 0;
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
    out->has_adj = m->has_adj;
    out->adj = m->adj;
    model_release(m);
    out->retrain_state = (RetrainState)atomic_load(&s->retrain_state);
    out->retrain_job = atomic_load(&s->retrain_job);
    pthread_mutex_lock(&s->err_lock);
    memcpy(out->retrain_error, s->retrain_error, sizeof out->retrain_error);
    out->last_train = s->last_train;
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

/* Worker: writes the serving model to storage.dir (temp file + rename). */
static void save_serving_model(Service *s)
{
    char path[CONFIG_STR_MAX + 32];
    snprintf(path, sizeof path, "%s/%s", s->cfg.storage_dir, MODEL_FILE_NAME);
    Model *serving = service_model_acquire(s);
    int rc = model_save(serving, path);
    model_release(serving);
    if (rc)
        log_msg(LOG_WARN, "model save failed", "path=\"%s\" error=\"%s\"", path, strerror(-rc));
}

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
    for (size_t base = 0;; base += WORKER_BATCH_SUMMARIES) {
        store_lock(s->store);
        size_t high = store_slot_high(s->store);
        for (size_t i = base; i < base + WORKER_BATCH_SUMMARIES && i < high && n < cap; i++) {
            UserState *u = store_slot_at(s->store, i);
            if (u && shopper_summary(&u->agg, now, &arr[n]))
                n++;
        }
        store_unlock(s->store);
        if (base + WORKER_BATCH_SUMMARIES >= high || n >= cap)
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
    next->has_adj = cur->has_adj; /* a refit keeps the corrections; a new network resets them */
    next->adj = cur->adj;
    model_release(cur);
    swap_model(s, next);
    s->purchases_at_fit = purchases;
    atomic_fetch_add(&s->metrics->fallback_fits, 1);
    log_msg(LOG_INFO, "fallback refit", "version=%llu customers=%zu repeat_buyers=%zu r=%.4f alpha=%.4f a=%.4f "
            "b=%.4f p=%.3f q=%.3f v=%.3f ms=%.1f", (unsigned long long)next->version, n, repeaters, fit.bg.r,
            fit.bg.alpha, fit.bg.a, fit.bg.b, fit.gg.p, fit.gg.q, fit.gg.v, (time_mono_ns() - t0) / 1e6);
    save_serving_model(s);
    return 0;
}

/* Worker: copies shoppers' retained events into a training set, in short
 * locked batches. At most train.max_shoppers, chosen by id hash. For a
 * shopper whose ring has dropped events, the aggregates before the ring are
 * approximated from the totals (docs/MODEL.md, "Training"). */
static int collect_train_set(Service *s, TrainSet *set)
{
    memset(set, 0, sizeof *set);
    size_t users = store_count(s->store);
    uint64_t cap = (uint64_t)s->cfg.train_max_shoppers;
    uint64_t keep_below = users > cap ? (uint64_t)((double)UINT64_MAX * ((double)cap / (double)users)) : UINT64_MAX;
    size_t ring = (size_t)s->cfg.model_recent_events;
    size_t max_sh = users < cap ? users : (size_t)cap;
    set->shoppers = calloc(max_sh + 1, sizeof *set->shoppers);
    set->events = malloc((max_sh + 1) * ring * sizeof *set->events);
    if (!set->shoppers || !set->events) {
        free(set->shoppers);
        free(set->events);
        return -ENOMEM;
    }
    set->now = service_now(s);
    for (size_t base = 0;; base += WORKER_BATCH_COPY) {
        store_lock(s->store);
        size_t high = store_slot_high(s->store);
        for (size_t i = base; i < base + WORKER_BATCH_COPY && i < high && set->nshoppers < max_sh; i++) {
            UserState *u = store_slot_at(s->store, i);
            if (!u || u->ring_len == 0 || u->hash > keep_below)
                continue;
            TrainShopper *t = &set->shoppers[set->nshoppers++];
            t->first = set->nevents;
            t->n = u->ring_len;
            t->ctx0 = u->ring_ctx;
            t->key = u->hash;
            double ring_spend = 0;
            for (unsigned k = 0; k < u->ring_len; k++) {
                Event *e = &set->events[set->nevents++];
                store_ring_event(store_ring_at(s->store, u, k), e);
                ring_spend += e->type == EV_PURCHASE ? e->value : e->type == EV_REFUND ? -e->value : 0;
            }
            shopper_agg_init(&t->agg0);
            if (u->ring_ctx.events_before > 0) {
                ShopperAgg *a = &t->agg0;
                a->events = u->ring_ctx.events_before;
                a->purchases = u->ring_ctx.purchases_before;
                a->first_ts = u->ring_ctx.first_ts;
                a->last_ts = u->ring_ctx.prev_ts;
                a->spend = fmax(0.0, u->agg.spend - ring_spend);
                int32_t ring_day0 = (int32_t)(set->events[t->first].ts / 86400);
                if (u->agg.first_purchase_day >= 0 && u->agg.first_purchase_day < ring_day0 && a->purchases) {
                    a->first_purchase_day = a->last_purchase_day = u->agg.first_purchase_day;
                    a->purchase_days = 1;
                    a->first_day_spend = a->spend;
                }
            }
        }
        store_unlock(s->store);
        if (base + WORKER_BATCH_COPY >= high || set->nshoppers >= max_sh)
            break;
    }
    return 0;
}

/* Worker: rebuilds every shopper's state under net, in short locked
 * batches, so requests after a swap rarely pay for a rebuild. */
static void rebuild_all(Service *s, const LstmWeights *net)
{
    for (size_t base = 0;; base += WORKER_BATCH_REBUILD) {
        store_lock(s->store);
        size_t high = store_slot_high(s->store);
        for (size_t i = base; i < base + WORKER_BATCH_REBUILD && i < high; i++) {
            UserState *u = store_slot_at(s->store, i);
            if (u)
                ensure_state(s, u, net);
        }
        store_unlock(s->store);
        if (base + WORKER_BATCH_REBUILD >= high)
            break;
    }
}

static void train_config(Service *s, const Model *cur, TrainConfig *tc)
{
    memset(tc, 0, sizeof *tc);
    tc->hidden = (int)s->cfg.model_hidden_size;
    tc->horizon_days = cur->horizon_days;
    tc->seed = (uint64_t)s->cfg.train_seed;
    tc->max_epochs = (int)s->cfg.train_max_epochs;
    tc->lr = s->cfg.train_learning_rate;
    tc->batch = (int)s->cfg.train_batch;
    tc->cuts_per_shopper = (int)s->cfg.train_cuts_per_shopper;
    tc->grid_days = (int)s->cfg.train_grid_days;
    tc->max_examples = (size_t)s->cfg.train_max_examples;
    tc->bptt = (int)s->cfg.train_bptt_steps;
    tc->val_percent = (int)s->cfg.train_val_percent;
    tc->head = (int)s->cfg.train_head;
}

/* Realised net spend in (t, t + H] of a logged prediction, from the
 * shopper's aggregates now minus the spend at t and minus the retained
 * events after the window; -1 when the shopper is gone or its ring no
 * longer reaches back to the window's end. Under the store lock. */
static double realised_spend(void *arg, const PredLogEntry *e)
{
    Service *s = arg;
    UserState *u = store_find_hash(s->store, e->key);
    if (!u)
        return -1;
    int64_t end = e->t + (int64_t)s->cfg.model_horizon_days * 86400;
    double after = 0;
    bool covered = u->ring_ctx.events_before == 0; /* nothing has left the ring */
    for (unsigned k = u->ring_len; k-- > 0;) {
        const RecentEvent *r = store_ring_at(s->store, u, k);
        if ((int64_t)r->ts <= end) {
            covered = true;
            break;
        }
        after += r->type == EV_PURCHASE ? r->value : r->type == EV_REFUND ? -r->value : 0;
    }
    return covered ? fmax(0.0, u->agg.spend - e->spend_at - after) : -1;
}

/* Worker: turns logged predictions whose horizon has passed into pairs, in
 * short locked batches. */
static void mature_predictions(Service *s)
{
    int64_t matured_at = service_now(s) - (int64_t)s->cfg.model_horizon_days * 86400;
    size_t cursor = 0, left;
    do {
        store_lock(s->store);
        left = predlog_mature(s->predlog, matured_at, &cursor, 1024, realised_spend, s);
        store_unlock(s->store);
    } while (left);
}

/* Worker: the matured pairs the adjuster learns from: the prediction log's,
 * then a backtest of the serving model on matured validation cuts. */
static int adjuster_pairs(Service *s, const Model *cur, AdjPair **out, size_t *n, size_t *live)
{
    size_t cap = s->predlog ? (size_t)s->cfg.adjuster_log_size : 0;
    AdjPair *logged = malloc((cap ? cap : 1) * sizeof *logged);
    if (!logged)
        return -ENOMEM;
    *live = 0;
    if (s->predlog) {
        mature_predictions(s);
        store_lock(s->store);
        *live = predlog_pairs(s->predlog, logged, cap);
        store_unlock(s->store);
    }
    TrainSet set;
    if (collect_train_set(s, &set)) {
        free(logged);
        return -ENOMEM;
    }
    TrainConfig tc;
    train_config(s, cur, &tc);
    AdjPair *bt = NULL;
    size_t nbt = 0;
    int rc = trainer_backtest(&set, &tc, &cur->fallback, cur->status == MODEL_TRAINED ? cur->net : NULL, &bt, &nbt);
    free(set.events);
    free(set.shoppers);
    if (rc && rc != -ENODATA) {
        free(logged);
        return rc;
    }
    AdjPair *all = realloc(logged, (*live + nbt + 1) * sizeof *all);
    if (!all) {
        free(logged), free(bt);
        return -ENOMEM;
    }
    if (nbt)
        memcpy(all + *live, bt, nbt * sizeof *bt);
    free(bt);
    *out = all;
    *n = *live + nbt;
    return 0;
}

/* Worker: the RL adjuster learns corrections for the serving model from
 * matured pairs, and a model carrying them is published. 0, 1 if there was
 * nothing to learn from, <0 on error. */
static int run_adjuster(Service *s)
{
    Model *cur = service_model_acquire(s);
    AdjPair *pairs = NULL;
    size_t n = 0, live = 0;
    AdjTable t;
    int rc = adjuster_pairs(s, cur, &pairs, &n, &live);
    if (!rc)
        rc = adjuster_learn(pairs, n, (uint64_t)s->cfg.train_seed, 400, cur->has_adj ? &cur->adj : NULL, &t);
    free(pairs);
    if (rc) {
        model_release(cur);
        log_msg(LOG_INFO, "adjuster skipped", "reason=\"%s\" pairs=%zu", rc == -ENODATA ? "too few matured outcomes"
                : strerror(-rc), n);
        return rc == -ENODATA ? 1 : rc;
    }
    t.live_pairs = (uint32_t)live;
    t.backtest_pairs = (uint32_t)(n - live);
    Model *next;
    rc = model_create(&next, cur->net, &cur->fallback, cur->horizon_days, cur->status,
                      atomic_fetch_add(&s->next_version, 1));
    if (rc) {
        model_release(cur);
        return rc;
    }
    next->trained_at = cur->trained_at;
    next->train = cur->train;
    next->has_adj = true;
    next->adj = t;
    model_release(cur);
    int corrected = 0;
    for (int k = 0; k < ADJ_SEGMENTS; k++)
        corrected += t.action[k] != ADJ_IDENTITY;
    swap_model(s, next);
    save_serving_model(s);
    atomic_fetch_add(&s->metrics->adjuster_runs, 1);
    atomic_fetch_add(&s->metrics->adjuster_episodes, t.episodes);
    log_msg(LOG_INFO, "adjuster updated", "pairs=%zu live_pairs=%zu episodes=%llu corrected_segments=%d reward=%.4f",
            n, live, (unsigned long long)t.episodes, corrected, t.reward_greedy);
    return 0;
}

void service_run_adjuster(Service *s)
{
    if (!s->cfg.adjuster_enabled)
        return;
    int rc = run_adjuster(s);
    if (rc < 0)
        log_msg(LOG_WARN, "adjuster failed", "error=\"%s\"", strerror(-rc));
}

/* Worker: trains a network; swaps it in if it beats the serving model on
 * the validation split. 0, or <0 with err set. */
static int train_network(Service *s, char *err, size_t errlen)
{
    TrainSet set;
    int rc = collect_train_set(s, &set);
    if (rc) {
        snprintf(err, errlen, "out of memory collecting the training set");
        return rc;
    }
    Model *cur = service_model_acquire(s);
    TrainConfig tc;
    train_config(s, cur, &tc);
    uint64_t version = atomic_fetch_add(&s->next_version, 1);
    TrainResult tr;
    rc = trainer_run(&set, &tc, &cur->fallback, cur->status == MODEL_TRAINED ? cur->net : NULL, (uint32_t)version,
                     &tr, err, errlen);
    free(set.events);
    free(set.shoppers);
    if (rc) {
        model_release(cur);
        return rc;
    }
    TrainFigures f = {tr.examples, tr.users, (uint64_t)tr.epochs, tr.val_loss, tr.val_gini, tr.seconds,
                      tr.val_loss_other, tr.val_loss_fallback, tr.val_loss_serving, tr.val_gini_fallback,
                      tr.hybrid, false};
    f.swapped = tr.val_loss < tr.val_loss_serving;
    log_msg(LOG_INFO, "network trained", "hybrid=%s val_loss=%.5f other_variant=%.5f fallback=%.5f serving=%.5f "
            "val_gini=%.4f val_gini_fallback=%.4f level_shift=%.4f examples=%llu users=%llu epochs=%d seconds=%.2f swap=%s",
            tr.hybrid ? "true" : "false", tr.val_loss, tr.val_loss_other, tr.val_loss_fallback, tr.val_loss_serving,
            tr.val_gini, tr.val_gini_fallback, tr.level_shift,
            (unsigned long long)tr.examples, (unsigned long long)tr.users, tr.epochs, tr.seconds,
            f.swapped ? "true" : "false");
    pthread_mutex_lock(&s->err_lock);
    s->last_train = f;
    pthread_mutex_unlock(&s->err_lock);
    if (!f.swapped) {
        lstm_weights_release(tr.net);
        model_release(cur);
        return 0;
    }
    Model *next;
    rc = model_create(&next, tr.net, &cur->fallback, cur->horizon_days, MODEL_TRAINED, version);
    lstm_weights_release(tr.net);
    model_release(cur);
    if (rc)
        return rc;
    next->trained_at = service_now(s);
    next->train = f;
    swap_model(s, next); /* serving never pauses: states are checked per request */
    rebuild_all(s, next->net);
    save_serving_model(s);
    log_msg(LOG_INFO, "model swapped", "version=%llu", (unsigned long long)version);
    return 0;
}

void service_run_retrain(Service *s)
{
    uint64_t t0 = time_mono_ns();
    char err[256] = "";
    log_msg(LOG_INFO, "retrain start", "job=%llu network=%s", (unsigned long long)atomic_load(&s->retrain_job),
            s->cfg.train_network ? "true" : "false");
    int rc = service_refit_fallback(s, true, err, sizeof err);
    if (rc >= 0 && s->cfg.train_network) {
        rc = train_network(s, err, sizeof err);
        if (rc == -ENODATA) { /* young data: not a failure, the fallback serves on */
            log_msg(LOG_INFO, "network training skipped", "reason=\"%s\"", err);
            rc = 0;
        }
    }
    service_run_adjuster(s); /* also when the refit failed: the serving model is unchanged */
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
    log_msg(LOG_INFO, "retrain finish", "ms=%llu", (unsigned long long)ms);
}

void service_predlog_stats(Service *s, PredLogStats *out)
{
    memset(out, 0, sizeof *out);
    if (!s->predlog)
        return;
    store_lock(s->store);
    predlog_stats(s->predlog, out);
    store_unlock(s->store);
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
    g->adjuster_reward = m->has_adj ? m->adj.reward_greedy : 0.0;
    model_release(m);
    service_predlog_stats(s, &g->predlog);
    g->ready = service_ready(s);
    g->retrain_running = service_retrain_running(s);
    g->event_clock = atomic_load(&s->event_clock);
    if (s->wal) {
        WalStats ws;
        wal_stats(s->wal, &ws);
        g->wal_records = ws.records;
        g->wal_bytes = ws.bytes;
        g->wal_fsyncs = ws.fsyncs;
        g->wal_fsync_seconds = (double)ws.fsync_ns_total * 1e-9;
        g->wal_durable_seq = ws.durable_seq;
        g->wal_segments_removed = ws.segments_removed;
    }
}

/* ---- durability -----------------------------------------------------------
 * Snapshot file storage.dir/snapshot-<seq, 16 hex>.snap holds the state after
 * every log record below seq:
 *   char magic[8] "LTVDSNAP"; u32 format; u32 hidden; u32 ring_cap;
 *   u32 slot_bytes; u64 seq; i64 event_clock; u64 purchases_total;
 *   u64 users; u64 dedupe_keys; u32 net_id; u32 reserved;
 *   users x raw slot (slot_bytes each); dedupe_keys x u64 (oldest first);
 *   (format 2:) u64 predlog_entries; u64 predlog_pairs; predlog_entries x
 *   raw PredLogEntry; predlog_pairs x raw AdjPair (oldest first);
 *   u32 crc32 of everything before it.
 * Format 1 (no prediction log) is still read. */

#define SNAP_FORMAT 2u

typedef struct SnapHeader {
    char magic[8];
    uint32_t format, hidden, ring_cap, slot_bytes;
    uint64_t seq;
    int64_t event_clock;
    uint64_t purchases_total, users, dedupe_keys;
    uint32_t net_id, reserved;
} SnapHeader;

void service_attach_wal(Service *s, Wal *wal)
{
    store_lock(s->store);
    s->wal = wal;
    store_unlock(s->store);
}

bool service_durable(Service *s, uint64_t seq) { return !s->wal || wal_durable_seq(s->wal) >= seq; }
bool service_log_failed(Service *s) { return s->wal && wal_failed(s->wal); }

typedef struct SnapWriter {
    int fd;
    uint32_t crc;
    size_t len, total;
    int err;
    unsigned char buf[1 << 16];
} SnapWriter;

static void sw_put(SnapWriter *w, const void *p, size_t n)
{
    const unsigned char *c = p;
    w->crc = crc32_update(w->crc, c, n);
    w->total += n;
    while (n && !w->err) {
        size_t k = sizeof w->buf - w->len < n ? sizeof w->buf - w->len : n;
        memcpy(w->buf + w->len, c, k);
        w->len += k;
        c += k;
        n -= k;
        if (w->len == sizeof w->buf) {
            w->err = write_all(w->fd, w->buf, w->len);
            w->len = 0;
        }
    }
}

static void sw_dedupe_key(void *arg, uint64_t key) { sw_put(arg, &key, sizeof key); }

/* Writes the whole state to path and fsyncs it. Store lock held, or called
 * in a forked child (which owns a frozen copy of memory). No stdio, no
 * locks: safe in the child. */
static void sw_predlog_entry(void *arg, const PredLogEntry *e) { sw_put(arg, e, sizeof *e); }

/* The prediction log: pending entries, then matured pairs (none without a log). */
static void snapshot_write_predlog(Service *s, SnapWriter *w)
{
    PredLogStats st = {0};
    if (s->predlog)
        predlog_stats(s->predlog, &st);
    AdjPair *pairs = st.pairs ? malloc(st.pairs * sizeof *pairs) : NULL;
    uint64_t counts[2] = {st.pending, pairs ? st.pairs : 0};
    sw_put(w, counts, sizeof counts);
    if (s->predlog)
        predlog_foreach_entry(s->predlog, sw_predlog_entry, w);
    if (pairs) {
        predlog_pairs(s->predlog, pairs, st.pairs);
        sw_put(w, pairs, st.pairs * sizeof *pairs);
        free(pairs);
    }
}

static int snapshot_write(Service *s, const char *path, uint64_t seq, uint32_t net_id, size_t *bytes)
{
    SnapWriter *w = malloc(sizeof *w);
    if (!w)
        return -ENOMEM;
    w->fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
    w->crc = 0;
    w->len = w->total = 0;
    w->err = w->fd < 0 ? -errno : 0;
    if (w->err) {
        int e = w->err;
        free(w);
        return e;
    }
    SnapHeader h;
    memset(&h, 0, sizeof h);
    memcpy(h.magic, "LTVDSNAP", 8);
    h.format = SNAP_FORMAT;
    h.hidden = (uint32_t)s->cfg.model_hidden_size;
    h.ring_cap = (uint32_t)s->cfg.model_recent_events;
    h.slot_bytes = (uint32_t)store_slot_bytes(s->store);
    h.seq = seq;
    h.event_clock = atomic_load(&s->event_clock);
    h.purchases_total = atomic_load(&s->purchases_total);
    h.users = store_count(s->store);
    h.dedupe_keys = dedupe_count(s->dedupe);
    h.net_id = net_id;
    sw_put(w, &h, sizeof h);
    size_t high = store_slot_high(s->store);
    for (size_t i = 0; i < high; i++) {
        UserState *u = store_slot_at(s->store, i);
        if (u)
            sw_put(w, u, h.slot_bytes);
    }
    dedupe_foreach(s->dedupe, sw_dedupe_key, w);
    snapshot_write_predlog(s, w);
    uint32_t crc = w->crc;
    sw_put(w, &crc, 4);
    if (!w->err) /* the final partial buffer */
        w->err = write_all(w->fd, w->buf, w->len);
    if (!w->err && fsync(w->fd) != 0)
        w->err = -errno;
    close(w->fd);
    int rc = w->err;
    *bytes = w->total;
    free(w);
    return rc;
}

static int read_exact(int fd, void *p, size_t n)
{
    unsigned char *c = p;
    while (n) {
        ssize_t r = read(fd, c, n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -EBADMSG;
        c += r;
        n -= (size_t)r;
    }
    return 0;
}

/* Checks a snapshot's header and CRC without loading it. */
/* Reads n bytes of fd into the running crc. */
static int crc_section(int fd, uint64_t n, uint32_t *crc)
{
    static unsigned char buf[1 << 16];
    while (n) {
        size_t k = n < sizeof buf ? (size_t)n : sizeof buf;
        int rc = read_exact(fd, buf, k);
        if (rc)
            return rc;
        *crc = crc32_update(*crc, buf, k);
        n -= k;
    }
    return 0;
}

static int snapshot_check(Service *s, const char *path, SnapHeader *h, char *err, size_t errlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return -errno;
    }
    int rc = read_exact(fd, h, sizeof *h);
    if (rc || memcmp(h->magic, "LTVDSNAP", 8) != 0 || h->format < 1 || h->format > SNAP_FORMAT) {
        snprintf(err, errlen, "%s: not an ltvd snapshot of format 1 to %u", path, SNAP_FORMAT);
        close(fd);
        return -EBADMSG;
    }
    if (h->hidden != (uint32_t)s->cfg.model_hidden_size || h->ring_cap != (uint32_t)s->cfg.model_recent_events ||
        h->slot_bytes != store_slot_bytes(s->store)) {
        snprintf(err, errlen, "%s was written with model.hidden_size=%u model.recent_events=%u; this config has %lld "
                 "and %lld", path, h->hidden, h->ring_cap, (long long)s->cfg.model_hidden_size,
                 (long long)s->cfg.model_recent_events);
        close(fd);
        return -EINVAL;
    }
    uint32_t crc = crc32_update(0, h, sizeof *h);
    rc = crc_section(fd, h->users * h->slot_bytes + h->dedupe_keys * 8, &crc);
    uint64_t counts[2] = {0, 0};
    if (!rc && h->format >= 2 && (rc = read_exact(fd, counts, sizeof counts)) == 0) {
        crc = crc32_update(crc, counts, sizeof counts);
        if (counts[0] > ((uint64_t)1 << 40) || counts[1] > ((uint64_t)1 << 40))
            rc = -EBADMSG;
        else
            rc = crc_section(fd, counts[0] * sizeof(PredLogEntry) + counts[1] * sizeof(AdjPair), &crc);
    }
    uint32_t stored = 0;
    if (!rc)
        rc = read_exact(fd, &stored, 4);
    close(fd);
    if (rc || stored != crc) {
        snprintf(err, errlen, "%s: %s", path, rc ? "truncated" : "checksum mismatch");
        return -EBADMSG;
    }
    return 0;
}

static int snapshot_load(Service *s, const char *path, const SnapHeader *h, char *err, size_t errlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    SnapHeader skip;
    int rc = read_exact(fd, &skip, sizeof skip);
    UserState *slot = malloc(h->slot_bytes);
    if (!slot)
        rc = -ENOMEM;
    for (uint64_t i = 0; i < h->users && !rc; i++) {
        if ((rc = read_exact(fd, slot, h->slot_bytes)) != 0)
            break;
        rc = store_restore(s->store, slot);
        if (rc == -ENOSPC)
            snprintf(err, errlen, "%s holds %" PRIu64 " shoppers, more than limits.max_users=%lld", path, h->users,
                     (long long)s->cfg.limits_max_users);
    }
    for (uint64_t i = 0; i < h->dedupe_keys && !rc; i++) {
        uint64_t key;
        if ((rc = read_exact(fd, &key, 8)) == 0 && !dedupe_contains(s->dedupe, key))
            dedupe_insert(s->dedupe, key);
    }
    uint64_t counts[2] = {0, 0};
    if (!rc && h->format >= 2)
        rc = read_exact(fd, counts, sizeof counts);
    for (uint64_t i = 0; i < counts[0] && !rc; i++) { /* kept only while the adjuster is on */
        PredLogEntry e;
        if ((rc = read_exact(fd, &e, sizeof e)) == 0 && s->predlog)
            predlog_restore_entry(s->predlog, &e);
    }
    for (uint64_t i = 0; i < counts[1] && !rc; i++) {
        AdjPair p;
        if ((rc = read_exact(fd, &p, sizeof p)) == 0 && s->predlog)
            predlog_restore_pair(s->predlog, &p);
    }
    free(slot);
    close(fd);
    if (!rc) {
        atomic_store(&s->event_clock, h->event_clock);
        atomic_store(&s->purchases_total, h->purchases_total);
    }
    return rc;
}

/* Snapshot files in dir, newest (highest seq) first. */
static size_t list_snapshots(const char *dir, uint64_t *seqs, size_t cap)
{
    DIR *d = opendir(dir);
    if (!d)
        return 0;
    size_t n = 0;
    struct dirent *e;
    while ((e = readdir(d)) && n < cap) {
        uint64_t seq;
        char tail[8];
        if (strlen(e->d_name) == 30 && sscanf(e->d_name, "snapshot-%16" SCNx64 "%7s", &seq, tail) == 2 &&
            strcmp(tail, ".snap") == 0)
            seqs[n++] = seq;
        else if (strstr(e->d_name, ".snap.tmp")) {
            char p[CONFIG_STR_MAX + 64];
            snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
            unlink(p); /* left by a snapshot that did not finish */
        }
    }
    closedir(d);
    for (size_t i = 1; i < n; i++)
        for (size_t j = i; j > 0 && seqs[j] > seqs[j - 1]; j--) {
            uint64_t t = seqs[j];
            seqs[j] = seqs[j - 1];
            seqs[j - 1] = t;
        }
    return n;
}

static void snap_path(char *out, size_t n, const char *dir, uint64_t seq, bool tmp)
{
    snprintf(out, n, "%s/snapshot-%016" PRIx64 ".snap%s", dir, seq, tmp ? ".tmp" : "");
}

typedef struct ReplayCtx {
    Service *s;
    Model *m;
} ReplayCtx;

static int replay_record(void *arg, uint8_t kind, uint64_t seq, const unsigned char *p, size_t len)
{
    ReplayCtx *rc = arg;
    Service *s = rc->s;
    if (kind == WAL_REC_DELETE) {
        if (len < 1 || len != 1u + p[0])
            return -EBADMSG;
        store_lock(s->store);
        erase_locked(s, (const char *)p + 1, p[0]); /* absent is fine */
        store_unlock(s->store);
        /* the log still holds the erased shopper's events: compact soon */
        int64_t zero = 0;
        atomic_compare_exchange_strong(&s->erasure_pending_since, &zero,
                                       (int64_t)(time_mono_ns() / 1000000000ull) + 1);
        return 0;
    }
    if (kind != WAL_REC_EVENTS)
        return -EBADMSG;
    Event *ev;
    size_t n;
    int err = decode_events(p, len, &ev, &n);
    if (err)
        return err;
    ApplyResult res = {0};
    store_lock(s->store);
    if (over_capacity(s, ev, n)) {
        err = -ENOSPC;
    } else {
        apply_events_locked(s, ev, n, rc->m->net, &res);
    }
    store_unlock(s->store);
    free(ev);
    return err;
}

int service_recover(Service *s, uint64_t *next_seq, char *err, size_t errlen)
{
    uint64_t t0 = time_mono_ns();
    uint64_t seqs[64];
    size_t n = list_snapshots(s->cfg.storage_dir, seqs, 64);
    uint64_t from = 1;
    for (size_t i = 0; i < n; i++) {
        char path[CONFIG_STR_MAX + 64];
        SnapHeader h;
        snap_path(path, sizeof path, s->cfg.storage_dir, seqs[i], false);
        int rc = snapshot_check(s, path, &h, err, errlen);
        if (rc == -EINVAL)
            return rc; /* made for another shape: an operator must decide */
        if (rc) {
            log_msg(LOG_WARN, "snapshot unusable, trying an older one", "error=\"%s\"", err);
            continue;
        }
        if ((rc = snapshot_load(s, path, &h, err, errlen)) != 0)
            return rc;
        from = h.seq;
        log_msg(LOG_INFO, "snapshot loaded", "path=\"%s\" seq=%" PRIu64 " users=%" PRIu64 " ms=%.0f", path, h.seq,
                h.users, (time_mono_ns() - t0) / 1e6);
        break;
    }
    ReplayCtx ctx = {s, service_model_acquire(s)};
    WalReplayStats st;
    int rc = wal_replay(s->cfg.storage_dir, from, replay_record, &ctx, &st, err, errlen);
    model_release(ctx.m);
    if (rc)
        return rc;
    if (st.truncated) {
        atomic_fetch_add(&s->metrics->wal_truncations, 1);
        atomic_fetch_add(&s->metrics->wal_truncated_bytes, st.truncated_bytes);
    }
    *next_seq = st.last_seq + 1;
    if (st.records > 0)
        atomic_store(&s->last_snapshot_mono_s, INT64_MIN / 2); /* snapshot soon: the next start replays less */
    uint64_t ms = (time_mono_ns() - t0) / 1000000;
    atomic_store(&s->metrics->recovery_ms, ms);
    atomic_store(&s->metrics->recovery_records, st.records);
    log_msg(LOG_INFO, "recovery done", "snapshot_seq=%" PRIu64 " replayed=%" PRIu64 " segments=%" PRIu64
            " truncated_bytes=%" PRIu64 " users=%zu ms=%" PRIu64, from, st.records, st.segments, st.truncated_bytes,
            store_count(s->store), ms);
    return 0;
}

bool service_snapshot_due(Service *s)
{
    if (!s->wal)
        return false;
    int64_t now = (int64_t)(time_mono_ns() / 1000000000ull);
    int64_t erasure = atomic_load(&s->erasure_pending_since);
    if (erasure && now - erasure + 1 >= s->cfg.storage_erasure_snapshot_s)
        return true;
    WalStats ws;
    wal_stats(s->wal, &ws);
    if (ws.bytes - atomic_load(&s->wal_bytes_at_snapshot) >= (uint64_t)s->cfg.storage_snapshot_wal_bytes)
        return true;
    /* periodic, but only when something was logged since the last one (or
     * recovery replayed records: last_snapshot_mono_s was set far back) */
    int64_t last = atomic_load(&s->last_snapshot_mono_s);
    return now - last >= s->cfg.storage_snapshot_interval_s &&
           (ws.bytes != atomic_load(&s->wal_bytes_at_snapshot) || last < 0);
}

int service_snapshot(Service *s, bool fork_child, char *err, size_t errlen)
{
    if (!s->wal) {
        snprintf(err, errlen, "no write-ahead log attached");
        return -EINVAL;
    }
    uint64_t t0 = time_mono_ns();
    Model *m = service_model_acquire(s);
    uint32_t net_id = m->net->id;
    model_release(m);
    int64_t erasure_seen = atomic_load(&s->erasure_pending_since);
    WalStats ws;
    char tmp[CONFIG_STR_MAX + 64], path[CONFIG_STR_MAX + 64];
    uint64_t seq = 0;
    size_t bytes = 0;
    int rc;
    store_lock(s->store);
    rc = wal_rotate(s->wal, &seq); /* the snapshot covers exactly the records below seq */
    wal_stats(s->wal, &ws);
    snap_path(tmp, sizeof tmp, s->cfg.storage_dir, seq, true);
    snap_path(path, sizeof path, s->cfg.storage_dir, seq, false);
    pid_t pid = -1;
    if (!rc && fork_child) {
        pid = fork();
        if (pid == 0) {
            /* child: a frozen copy of memory; write it and leave */
            int crc = snapshot_write(s, tmp, seq, net_id, &bytes);
            _exit(crc ? 1 : 0);
        }
        if (pid < 0)
            rc = -errno;
    } else if (!rc) {
        rc = snapshot_write(s, tmp, seq, net_id, &bytes);
    }
    store_unlock(s->store);
    if (!rc && pid > 0) {
        int status = 0;
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
            ;
        rc = WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -EIO;
        struct stat st;
        if (!rc && stat(tmp, &st) == 0)
            bytes = (size_t)st.st_size;
    }
    if (!rc && rename(tmp, path) != 0)
        rc = -errno;
    if (rc) {
        unlink(tmp);
        snprintf(err, errlen, "snapshot failed: %s", strerror(-rc));
        atomic_fetch_add(&s->metrics->snapshot_failures, 1);
        log_msg(LOG_ERROR, "snapshot failed", "error=\"%s\"", strerror(-rc));
        return rc;
    }
    int dfd = open(s->cfg.storage_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
    /* The new snapshot supersedes every older snapshot and log segment: an
     * erased shopper's events leave the disk here. */
    uint64_t seqs[64];
    size_t n = list_snapshots(s->cfg.storage_dir, seqs, 64);
    for (size_t i = 0; i < n; i++) {
        if (seqs[i] < seq) {
            char old[CONFIG_STR_MAX + 64];
            snap_path(old, sizeof old, s->cfg.storage_dir, seqs[i], false);
            unlink(old);
        }
    }
    wal_remove_before(s->wal, seq);
    atomic_compare_exchange_strong(&s->erasure_pending_since, &erasure_seen, 0);
    atomic_store(&s->last_snapshot_mono_s, (int64_t)(time_mono_ns() / 1000000000ull));
    atomic_store(&s->wal_bytes_at_snapshot, ws.bytes);
    uint64_t ms = (time_mono_ns() - t0) / 1000000;
    atomic_fetch_add(&s->metrics->snapshots, 1);
    atomic_store(&s->metrics->snapshot_last_ms, ms);
    atomic_store(&s->metrics->snapshot_last_bytes, bytes);
    log_msg(LOG_INFO, "snapshot written", "path=\"%s\" seq=%" PRIu64 " users=%zu bytes=%zu ms=%" PRIu64, path, seq,
            store_count(s->store), bytes, ms);
    return 0;
}
