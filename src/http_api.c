/* http_api: routing, auth, body collection, JSON rendering and errors. */
#include "http_api.h"

#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <microhttpd.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "timeutil.h"

typedef enum {
    R_EVENTS,
    R_USER_LTV,
    R_USER,
    R_LTV_BATCH,
    R_MODEL,
    R_RETRAIN,
    R_HEALTHZ,
    R_READYZ,
    R_METRICS,
    R_UNKNOWN,
    R_COUNT
} RouteId;

static const char *const route_names[R_COUNT] = {
    "/v1/events", "/v1/users/{user_id}/ltv", "/v1/users/{user_id}", "/v1/ltv/batch", "/v1/model",
    "/v1/model/retrain", "/healthz", "/readyz", "/metrics", "unknown"};

static const HttpRoute routes[] = {
    {"POST", "/v1/events"},        {"GET", "/v1/users/{user_id}/ltv"}, {"GET", "/v1/users/{user_id}"},
    {"DELETE", "/v1/users/{user_id}"}, {"POST", "/v1/ltv/batch"},   {"GET", "/v1/model"},
    {"POST", "/v1/model/retrain"}, {"GET", "/healthz"},               {"GET", "/readyz"},
    {"GET", "/metrics"},
};

size_t http_routes(const HttpRoute **out)
{
    *out = routes;
    return sizeof routes / sizeof routes[0];
}

/* A response under construction: malloc'd, handed to libmicrohttpd. */
typedef struct Reply {
    char *p;
    size_t len, cap;
    bool oom;
} Reply;

/* Per-request context, created on the handler's first call. */
typedef struct Request {
    uint64_t t0;
    char *body; /* NUL-terminated once complete */
    size_t len, cap;
    bool too_large;
    /* a write whose answer waits for the log (group commit) */
    bool held;
    int route;
    int held_status;
    Reply held_reply;
    uint64_t wait_seq;
    struct MHD_Connection *conn;
    struct Request *next_held;
} Request;

struct HttpServer {
    struct MHD_Daemon *daemon;
    const LtvdConfig *cfg;
    Service *svc;
    Metrics *metrics;
    pthread_mutex_t held_lock; /* guards held (suspended connections) */
    Request *held;
    size_t nheld;
    atomic_bool draining;
};

/* Status of the response this thread queued last, for metrics. */
static _Thread_local int last_status;

/* Makes room for n more bytes (and a NUL); false (and r->oom) if it cannot. */
static bool reply_reserve(Reply *r, size_t n)
{
    if (r->oom)
        return false;
    if (r->len + n + 1 <= r->cap)
        return true;
    size_t cap = (r->cap ? r->cap * 2 : 512) + n;
    char *np = realloc(r->p, cap);
    if (!np) {
        r->oom = true;
        return false;
    }
    r->p = np;
    r->cap = cap;
    return true;
}

__attribute__((format(printf, 2, 3))) static void rp(Reply *r, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) {
        r->oom = true;
        return;
    }
    if (!reply_reserve(r, (size_t)n))
        return;
    va_start(ap, fmt);
    vsnprintf(r->p + r->len, r->cap - r->len, fmt, ap);
    va_end(ap);
    r->len += (size_t)n;
}

/* Appends n raw bytes. */
static void rp_raw(Reply *r, const char *s, size_t n)
{
    if (!reply_reserve(r, n))
        return;
    memcpy(r->p + r->len, s, n);
    r->len += n;
    r->p[r->len] = '\0';
}

#define RP_LIT(r, lit) rp_raw(r, lit, sizeof(lit) - 1)

static void rp_u64(Reply *r, uint64_t v)
{
    char tmp[24];
    int n = 0;
    do {
        tmp[sizeof tmp - 1 - n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    rp_raw(r, tmp + sizeof tmp - n, (size_t)n);
}

/* A number with at most 6 decimals, trailing zeros dropped (money and
 * probabilities need no more); non-finite values become 0. printf's %g costs
 * more than the rest of a prediction request. */
static void rp_num(Reply *r, double v)
{
    if (!isfinite(v))
        v = 0.0;
    if (fabs(v) >= 1e15) {
        rp(r, "%.17g", v);
        return;
    }
    if (v < 0) {
        RP_LIT(r, "-");
        v = -v;
    }
    uint64_t scaled = (uint64_t)(v * 1e6 + 0.5);
    uint64_t ip = scaled / 1000000, fp = scaled % 1000000;
    rp_u64(r, ip);
    if (!fp)
        return;
    char frac[8] = {'.'};
    int n = 6;
    while (fp % 10 == 0) {
        fp /= 10;
        n--;
    }
    for (int i = n; i >= 1; i--) {
        frac[i] = (char)('0' + fp % 10);
        fp /= 10;
    }
    rp_raw(r, frac, (size_t)n + 1);
}

/* Appends s as a JSON string literal (with quotes). */
static void rp_str(Reply *r, const char *s, size_t n)
{
    RP_LIT(r, "\"");
    size_t start = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\')
            continue;
        if (i > start)
            rp_raw(r, s + start, i - start);
        if (c == '"' || c == '\\')
            rp(r, "\\%c", c);
        else
            rp(r, "\\u%04x", c);
        start = i + 1;
    }
    if (n > start)
        rp_raw(r, s + start, n - start);
    RP_LIT(r, "\"");
}

static double finite_or_zero(double v) { return isfinite(v) ? v : 0.0; }

static enum MHD_Result send_reply(struct MHD_Connection *c, int status, Reply *r, const char *ctype,
                                  const char *hdr_name, const char *hdr_value)
{
    if (r->oom) {
        free(r->p);
        r->p = NULL;
        r->len = 0;
        status = MHD_HTTP_INTERNAL_SERVER_ERROR;
    }
    struct MHD_Response *resp =
        r->p ? MHD_create_response_from_buffer(r->len, r->p, MHD_RESPMEM_MUST_FREE)
             : MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
    if (!resp) {
        free(r->p);
        return MHD_NO;
    }
    if (ctype)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    if (hdr_name)
        MHD_add_response_header(resp, hdr_name, hdr_value);
    last_status = status;
    enum MHD_Result ret = MHD_queue_response(c, (unsigned)status, resp);
    MHD_destroy_response(resp);
    return ret;
}

static enum MHD_Result send_json(struct MHD_Connection *c, int status, Reply *r)
{
    return send_reply(c, status, r, "application/json", NULL, NULL);
}

static enum MHD_Result send_error(struct MHD_Connection *c, int status, const char *code, const char *message,
                                  const EventError *details, size_t ndetails)
{
    Reply r = {0};
    rp(&r, "{\"error\":{\"code\":\"%s\",\"message\":", code);
    rp_str(&r, message, strlen(message));
    rp(&r, ",\"details\":[");
    for (size_t i = 0; i < ndetails; i++) {
        rp(&r, "%s{\"index\":%zu,\"field\":\"%s\",\"reason\":", i ? "," : "", details[i].index, details[i].field);
        rp_str(&r, details[i].reason, strlen(details[i].reason));
        rp(&r, "}");
    }
    rp(&r, "]}}");
    const char *hn = NULL, *hv = NULL;
    if (status == MHD_HTTP_UNAUTHORIZED) {
        hn = MHD_HTTP_HEADER_WWW_AUTHENTICATE;
        hv = "Bearer";
    }
    return send_reply(c, status, &r, "application/json", hn, hv);
}

/* ---- request helpers --------------------------------------------------- */

static int hexval(char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

/* RFC 3986 percent-decoding ('+' stays '+'). -EINVAL on a bad escape or
 * when the result does not fit. */
static int percent_decode(const char *in, size_t n, char *out, size_t cap, size_t *out_len)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        char ch = in[i];
        if (ch == '%') {
            int hi, lo;
            if (i + 2 >= n)
                return -EINVAL;
            if ((hi = hexval(in[i + 1])) < 0 || (lo = hexval(in[i + 2])) < 0)
                return -EINVAL;
            ch = (char)(hi * 16 + lo);
            i += 2;
        }
        if (o >= cap)
            return -EINVAL;
        out[o++] = ch;
    }
    *out_len = o;
    return 0;
}

/* libmicrohttpd would decode the path before routing, turning a%2Fb into a
 * path separator; ltvd decodes each piece itself after routing. */
static size_t keep_raw(void *cls, struct MHD_Connection *c, char *s) { return strlen(s); }

static bool token_matches(const char *given, const char *expected)
{
    /* Constant time in the expected token's length: every byte is compared
     * and lengths differ only through the accumulated flag. */
    size_t gl = strlen(given), el = strlen(expected);
    unsigned char diff = (unsigned char)(gl != el);
    for (size_t i = 0; i < el; i++)
        diff |= (unsigned char)(expected[i] ^ (i < gl ? given[i] : 0));
    return diff == 0;
}

/* 0 if allowed; the token that applies may be empty (no auth). */
static bool authorized(struct MHD_Connection *c, const char *token)
{
    if (!token[0])
        return true;
    const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    if (!h || strncmp(h, "Bearer ", 7) != 0)
        return false;
    return token_matches(h + 7, token);
}

/* True if a string of valid JSON text holds the escape \u0000. */
static bool json_has_nul(const char *p, size_t n)
{
    const char *end = p + n;
    while ((p = memchr(p, '\\', (size_t)(end - p))) != NULL && end - p >= 2) {
        if (p[1] == 'u' && end - p >= 6 && memcmp(p + 2, "0000", 4) == 0)
            return true;
        p += 2; /* past the escaped character: "\\u0000" is a backslash, then text */
    }
    return false;
}

/* Parses the body as one JSON text into *out (the caller deletes it).
 * -EINVAL if it is not JSON, or if anything but JSON whitespace follows the
 * value (cJSON stops after the first value, so two concatenated events would
 * otherwise apply only the first). -EILSEQ if a string holds \u0000: ids are
 * C strings inside ltvd, and a NUL would cut one short (two client ids
 * becoming one shopper, an event_id a false duplicate). */
static int parse_body(const Request *req, cJSON **out)
{
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(req->body, req->len, &end, false);
    if (!root)
        return -EINVAL;
    for (size_t i = (size_t)(end - req->body); i < req->len; i++) {
        char ch = req->body[i];
        if (ch != ' ' && ch != '\t' && ch != '\r' && ch != '\n') {
            cJSON_Delete(root);
            return -EINVAL;
        }
    }
    if (json_has_nul(req->body, req->len)) {
        cJSON_Delete(root);
        return -EILSEQ;
    }
    *out = root;
    return 0;
}

static enum MHD_Result send_body_error(struct MHD_Connection *c, int rc)
{
    if (rc == -EILSEQ)
        return send_error(c, 400, "invalid_request", "strings must not contain \\u0000", NULL, 0);
    return send_error(c, 400, "invalid_json", "request body is not valid JSON", NULL, 0);
}

/* Parses as_of from the query string or a JSON value; 1 if absent. */
static int parse_as_of_text(const char *v, int64_t *out)
{
    char *end;
    double d = strtod(v, &end);
    if (end != v && *end == '\0')
        return time_from_epoch(d, out) ? -EINVAL : 0;
    return time_parse_rfc3339(v, out) ? -EINVAL : 0;
}

/* ---- rendering --------------------------------------------------------- */

static void render_prediction(Reply *r, const PredictionView *p)
{
    char ts[TIME_RFC3339_LEN];
    RP_LIT(r, "{\"user_id\":");
    rp_str(r, p->user_id, p->user_len);
    if (p->known)
        RP_LIT(r, ",\"known\":true,\"as_of\":\"");
    else
        RP_LIT(r, ",\"known\":false,\"as_of\":\"");
    time_format_rfc3339(p->as_of, ts);
    rp_raw(r, ts, TIME_RFC3339_LEN - 1);
    RP_LIT(r, "\",\"horizon_days\":");
    rp_u64(r, (uint64_t)p->horizon_days);
    RP_LIT(r, ",\"ltv\":");
    rp_num(r, p->p.ltv);
    RP_LIT(r, ",\"p_active\":");
    rp_num(r, p->p.p_active);
    RP_LIT(r, ",\"p10\":");
    rp_num(r, p->p.p10);
    RP_LIT(r, ",\"p50\":");
    rp_num(r, p->p.p50);
    RP_LIT(r, ",\"p90\":");
    rp_num(r, p->p.p90);
    RP_LIT(r, ",\"model_version\":");
    rp_u64(r, p->model_version);
    if (p->p.from_network)
        RP_LIT(r, ",\"source\":\"network\",\"events\":");
    else
        RP_LIT(r, ",\"source\":\"fallback\",\"events\":");
    rp_u64(r, p->events);
    if (p->known) {
        RP_LIT(r, ",\"last_event_ts\":\"");
        time_format_rfc3339(p->last_event_ts, ts);
        rp_raw(r, ts, TIME_RFC3339_LEN - 1);
        RP_LIT(r, "\"}");
    } else {
        RP_LIT(r, ",\"last_event_ts\":null}");
    }
}

/* ---- handlers ---------------------------------------------------------- */

/* Answers now if the log already holds seq durably, else suspends the
 * connection until http_on_durable resumes it. Takes the reply. */
static enum MHD_Result reply_when_durable(HttpServer *h, struct MHD_Connection *c, Request *req, uint64_t seq,
                                          int status, Reply *r)
{
    if (seq) {
        pthread_mutex_lock(&h->held_lock);
        if (!service_durable(h->svc, seq)) {
            req->held = true;
            req->held_status = status;
            req->held_reply = *r;
            req->wait_seq = seq;
            req->conn = c;
            req->next_held = h->held;
            h->held = req;
            h->nheld++;
            MHD_suspend_connection(c);
            pthread_mutex_unlock(&h->held_lock);
            atomic_fetch_add_explicit(&h->metrics->durable_waits, 1, memory_order_relaxed);
            return MHD_YES;
        }
        pthread_mutex_unlock(&h->held_lock);
    }
    return status == 204 ? send_reply(c, status, r, NULL, NULL, NULL) : send_json(c, status, r);
}

void http_on_durable(void *arg, uint64_t seq)
{
    HttpServer *h = arg;
    pthread_mutex_lock(&h->held_lock);
    for (Request **pp = &h->held; *pp;) {
        Request *req = *pp;
        if (req->wait_seq <= seq) {
            *pp = req->next_held;
            h->nheld--;
            MHD_resume_connection(req->conn);
        } else {
            pp = &req->next_held;
        }
    }
    pthread_mutex_unlock(&h->held_lock);
}

size_t http_pending(HttpServer *h)
{
    pthread_mutex_lock(&h->held_lock);
    size_t n = h->nheld;
    pthread_mutex_unlock(&h->held_lock);
    return n;
}

void http_drain(HttpServer *h) { atomic_store(&h->draining, true); }

static enum MHD_Result handle_events(HttpServer *h, struct MHD_Connection *c, Request *req)
{
    cJSON *root;
    int prc = parse_body(req, &root);
    if (prc)
        return send_body_error(c, prc);
    EventBatch b;
    int rc = service_parse_events(h->svc, root, &b);
    enum MHD_Result ret;
    if (rc == -E2BIG) {
        char msg[128];
        snprintf(msg, sizeof msg, "a batch holds at most %lld events (limits.max_batch_events)",
                 (long long)h->cfg->limits_max_batch_events);
        ret = send_error(c, 413, "payload_too_large", msg, NULL, 0);
    } else if (rc == -EPROTO) {
        ret = send_error(c, 400, "invalid_request", "body must be an event object or {\"events\": [...]}", b.errors,
                         b.nerrors);
    } else if (rc == -EINVAL) {
        ret = send_error(c, 400, "invalid_event", b.single ? "the event is invalid; nothing was applied"
                                                           : "some events are invalid; nothing was applied",
                         b.errors, b.nerrors);
    } else if (rc) {
        ret = send_error(c, 500, "internal", "out of memory", NULL, 0);
    } else {
        ApplyResult res;
        PredictionView pv;
        rc = service_apply(h->svc, &b, &res, b.single ? &pv : NULL);
        if (rc == -ENOSPC) {
            ret = send_error(c, 503, "capacity",
                             "the shopper table is full (limits.max_users); the events were not applied", NULL, 0);
        } else if (rc) {
            ret = send_error(c, 503, "storage_failed",
                             "the write-ahead log cannot be written; the events were not applied", NULL, 0);
        } else {
            Reply r = {0};
            RP_LIT(&r, "{\"accepted\":");
            rp_u64(&r, res.accepted);
            RP_LIT(&r, ",\"duplicates\":");
            rp_u64(&r, res.duplicates);
            RP_LIT(&r, ",\"late\":");
            rp_u64(&r, res.late);
            if (b.single) {
                RP_LIT(&r, ",\"prediction\":");
                render_prediction(&r, &pv);
            }
            RP_LIT(&r, "}");
            ret = reply_when_durable(h, c, req, res.wait_seq, 200, &r);
        }
    }
    service_batch_free(&b);
    cJSON_Delete(root);
    return ret;
}

static enum MHD_Result handle_user_ltv(HttpServer *h, struct MHD_Connection *c, const char *id, size_t len)
{
    int64_t as_of = -1;
    const char *q = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "as_of");
    if (q) {
        char dec[128];
        size_t dl;
        if (percent_decode(q, strlen(q), dec, sizeof dec - 1, &dl) || (dec[dl] = '\0', parse_as_of_text(dec, &as_of)))
            return send_error(c, 400, "invalid_request", "as_of must be an RFC 3339 time or Unix seconds in 1970-2100",
                              NULL, 0);
    }
    PredictionView pv;
    service_predict(h->svc, id, len, as_of, &pv);
    Reply r = {0};
    render_prediction(&r, &pv);
    return send_json(c, 200, &r);
}

static enum MHD_Result handle_ltv_batch(HttpServer *h, struct MHD_Connection *c, Request *req)
{
    cJSON *root;
    int prc = parse_body(req, &root);
    if (prc)
        return send_body_error(c, prc);
    enum MHD_Result ret;
    const cJSON *ids = cJSON_GetObjectItemCaseSensitive(root, "user_ids");
    const cJSON *aso = cJSON_GetObjectItemCaseSensitive(root, "as_of");
    int64_t as_of = -1;
    if (!cJSON_IsObject(root) || !cJSON_IsArray(ids)) {
        ret = send_error(c, 400, "invalid_request", "body must be {\"user_ids\": [...], \"as_of\": optional}", NULL, 0);
        goto out;
    }
    if (aso && !cJSON_IsNull(aso)) {
        int bad = cJSON_IsString(aso) ? time_parse_rfc3339(aso->valuestring, &as_of)
                  : cJSON_IsNumber(aso) ? time_from_epoch(aso->valuedouble, &as_of)
                                        : -EINVAL;
        if (bad) {
            ret = send_error(c, 400, "invalid_request", "as_of must be an RFC 3339 time or Unix seconds in 1970-2100",
                             NULL, 0);
            goto out;
        }
    }
    size_t n = (size_t)cJSON_GetArraySize(ids);
    if (n > (size_t)h->cfg->limits_max_batch_ids) {
        char msg[128];
        snprintf(msg, sizeof msg, "at most %lld user_ids per request (limits.max_batch_ids)",
                 (long long)h->cfg->limits_max_batch_ids);
        ret = send_error(c, 413, "payload_too_large", msg, NULL, 0);
        goto out;
    }
    const char **idv = malloc((n + 1) * sizeof *idv);
    size_t *lens = malloc((n + 1) * sizeof *lens);
    PredictionView *pv = malloc((n + 1) * sizeof *pv);
    EventError *errs = malloc((n + 1) * sizeof *errs);
    if (!idv || !lens || !pv || !errs) {
        ret = send_error(c, 500, "internal", "out of memory", NULL, 0);
        goto out_free;
    }
    size_t i = 0, nerr = 0;
    for (const cJSON *it = ids->child; it; it = it->next, i++) {
        if (!cJSON_IsString(it) || !service_id_valid(it->valuestring, strlen(it->valuestring))) {
            errs[nerr].index = i;
            errs[nerr].field = "user_ids";
            snprintf(errs[nerr].reason, sizeof errs[nerr].reason, "must be a string of 1 to 128 bytes of UTF-8");
            nerr++;
            continue;
        }
        idv[i] = it->valuestring;
        lens[i] = strlen(it->valuestring);
    }
    if (nerr) {
        ret = send_error(c, 400, "invalid_request", "some user_ids are invalid", errs, nerr);
        goto out_free;
    }
    service_predict_many(h->svc, idv, lens, n, as_of, pv);
    Reply r = {0};
    rp(&r, "{\"predictions\":[");
    for (i = 0; i < n; i++) {
        if (i)
            rp(&r, ",");
        render_prediction(&r, &pv[i]);
    }
    rp(&r, "]}");
    ret = send_json(c, 200, &r);
out_free:
    free(idv);
    free(lens);
    free(pv);
    free(errs);
out:
    cJSON_Delete(root);
    return ret;
}

static enum MHD_Result handle_user(HttpServer *h, struct MHD_Connection *c, Request *req, const char *method,
                                   const char *id, size_t len)
{
    if (strcmp(method, "DELETE") == 0) {
        uint64_t seq;
        int rc = service_delete_user(h->svc, id, len, &seq);
        if (rc == -ENOENT)
            return send_error(c, 404, "not_found", "unknown user", NULL, 0);
        if (rc)
            return send_error(c, 503, "storage_failed", "the write-ahead log cannot be written", NULL, 0);
        Reply r = {0};
        return reply_when_durable(h, c, req, seq, 204, &r);
    }
    UserSummaryView v;
    if (service_user_summary(h->svc, id, len, &v))
        return send_error(c, 404, "not_found", "unknown user", NULL, 0);
    char first[TIME_RFC3339_LEN], last[TIME_RFC3339_LEN];
    time_format_rfc3339(v.agg.first_ts, first);
    time_format_rfc3339(v.agg.last_ts, last);
    Reply r = {0};
    rp(&r, "{\"user_id\":");
    rp_str(&r, id, len);
    rp(&r,
       ",\"events\":%u,\"purchases\":%u,\"refunds\":%u,\"purchase_days\":%u,\"spend\":%.10g,"
       "\"first_event_ts\":\"%s\",\"last_event_ts\":\"%s\",\"recent_events\":%u}",
       v.agg.events, v.agg.purchases, v.agg.refunds, v.agg.purchase_days, v.agg.spend, first, last, v.recent_events);
    return send_json(c, 200, &r);
}

static enum MHD_Result handle_model(HttpServer *h, struct MHD_Connection *c)
{
    ModelInfo mi;
    service_model_info(h->svc, &mi);
    static const char *const states[] = {"idle", "running", "failed"};
    char trained[TIME_RFC3339_LEN] = "", fitted[TIME_RFC3339_LEN] = "";
    if (mi.trained_at)
        time_format_rfc3339(mi.trained_at, trained);
    if (mi.fallback.fitted_at)
        time_format_rfc3339(mi.fallback.fitted_at, fitted);
    Reply r = {0};
    rp(&r, "{\"version\":%llu,\"status\":\"%s\",", (unsigned long long)mi.version,
       mi.status == MODEL_TRAINED ? "trained" : "fallback");
    if (mi.trained_at)
        rp(&r, "\"trained_at\":\"%s\",", trained);
    else
        rp(&r, "\"trained_at\":null,");
    rp(&r,
       "\"horizon_days\":%d,\"hidden_size\":%d,"
       "\"training\":{\"examples\":%llu,\"users\":%llu,\"epochs\":%llu,\"val_loss\":%.6g,\"val_gini\":%.6g,"
       "\"seconds\":%.3f},",
       mi.horizon_days, mi.hidden_size, (unsigned long long)mi.train.examples, (unsigned long long)mi.train.users,
       (unsigned long long)mi.train.epochs, finite_or_zero(mi.train.val_loss), finite_or_zero(mi.train.val_gini),
       mi.train.seconds);
    const FallbackFit *f = &mi.fallback;
    rp(&r,
       "\"fallback\":{\"model\":\"bgnbd+gamma_gamma\",\"fitted\":%s,\"fitted_at\":%s%s%s,\"customers\":%llu,"
       "\"repeat_buyers\":%llu,\"purchases\":%llu,\"bgnbd\":{\"r\":%.6g,\"alpha\":%.6g,\"a\":%.6g,\"b\":%.6g},"
       "\"gamma_gamma\":{\"p\":%.6g,\"q\":%.6g,\"v\":%.6g}},",
       f->fitted_at ? "true" : "false", f->fitted_at ? "\"" : "", f->fitted_at ? fitted : "null",
       f->fitted_at ? "\"" : "", (unsigned long long)f->customers, (unsigned long long)f->repeat_buyers,
       (unsigned long long)f->purchases, f->bg.r, f->bg.alpha, f->bg.a, f->bg.b, f->gg.p, f->gg.q, f->gg.v);
    rp(&r, "\"retrain\":{\"state\":\"%s\",\"job\":%llu,\"last_error\":", states[mi.retrain_state],
       (unsigned long long)mi.retrain_job);
    if (mi.retrain_error[0])
        rp_str(&r, mi.retrain_error, strlen(mi.retrain_error));
    else
        rp(&r, "null");
    const TrainFigures *lt = &mi.last_train;
    rp(&r,
       ",\"network\":%s,\"last_training\":{\"examples\":%llu,\"users\":%llu,\"epochs\":%llu,"
       "\"head\":\"%s\",\"val_loss\":%.6g,\"val_loss_other_head\":%.6g,\"val_loss_fallback\":%.6g,"
       "\"val_loss_serving\":%.6g,\"val_gini\":%.6g,\"val_gini_fallback\":%.6g,\"seconds\":%.3f,\"swapped\":%s}},",
       mi.network_enabled ? "true" : "false", (unsigned long long)lt->examples, (unsigned long long)lt->users,
       (unsigned long long)lt->epochs, lt->epochs ? (lt->hybrid ? "hybrid" : "lstm_only") : "none",
       finite_or_zero(lt->val_loss), finite_or_zero(lt->val_loss_other), finite_or_zero(lt->val_loss_fallback),
       finite_or_zero(lt->val_loss_serving), finite_or_zero(lt->val_gini), finite_or_zero(lt->val_gini_fallback),
       lt->seconds, lt->swapped ? "true" : "false");
    PredLogStats pl;
    service_predlog_stats(h->svc, &pl);
    rp(&r, "\"adjuster\":{\"enabled\":%s,\"active\":%s,\"prediction_log\":{\"capacity\":%zu,\"pending\":%zu,"
           "\"matured_pairs\":%zu,\"pairs_predicted\":%.6g,\"pairs_realised\":%.6g,\"logged\":%llu,"
           "\"matured\":%llu,\"dropped_full\":%llu,\"dropped_unknown\":%llu}",
       mi.adjuster_enabled ? "true" : "false", mi.has_adj ? "true" : "false", pl.cap, pl.pending, pl.pairs,
       pl.pairs_predicted, pl.pairs_realised, (unsigned long long)pl.logged, (unsigned long long)pl.matured,
       (unsigned long long)pl.dropped_full, (unsigned long long)pl.dropped_unknown);
    if (mi.has_adj) {
        const AdjTable *t = &mi.adj;
        int shown = t->runs < 8 ? (int)t->runs : 8;
        rp(&r, ",\"runs\":%u,\"episodes\":%llu,\"live_pairs\":%u,\"backtest_pairs\":%u,\"reward\":%.6g,"
               "\"reward_trend\":[", t->runs, (unsigned long long)t->episodes, t->live_pairs, t->backtest_pairs,
           t->reward_greedy);
        for (int k = 8 - shown; k < 8; k++)
            rp(&r, "%s%.6g", k > 8 - shown ? "," : "", t->trend[k]);
        rp(&r, "],\"multipliers\":[");
        for (int a = 0; a < ADJ_ACTIONS; a++)
            rp(&r, "%s%g", a ? "," : "", ADJ_MULTIPLIERS[a]);
        rp(&r, "],\"recency_buckets_days\":[30,90,180,null],\"tenure_buckets_days\":[90,180,365,null],"
               "\"segments\":[");
        int first = 1;
        for (int sgm = 0; sgm < ADJ_SEGMENTS; sgm++) {
            if (!t->pairs[sgm])
                continue; /* no outcomes: x1.0, nothing learned */
            rp(&r, "%s{\"segment\":%d,\"value_decile\":%d,\"recency_bucket\":%d,\"tenure_bucket\":%d,"
                   "\"pairs\":%u,\"ratio\":%.4g,\"action\":%g,\"q\":[", first ? "" : ",", sgm,
               sgm / (ADJ_RECENCY * ADJ_TENURE) + 1, sgm / ADJ_TENURE % ADJ_RECENCY, sgm % ADJ_TENURE, t->pairs[sgm],
               finite_or_zero(t->ratio[sgm]), ADJ_MULTIPLIERS[t->action[sgm]]);
            first = 0;
            for (int a = 0; a < ADJ_ACTIONS; a++)
                rp(&r, "%s%.4g", a ? "," : "", t->q[sgm][a]);
            rp(&r, "],\"visits\":[");
            for (int a = 0; a < ADJ_ACTIONS; a++)
                rp(&r, "%s%u", a ? "," : "", t->visits[sgm][a]);
            rp(&r, "]}");
        }
        rp(&r, "]");
    }
    rp(&r, "}}");
    return send_json(c, 200, &r);
}

static enum MHD_Result handle_retrain(HttpServer *h, struct MHD_Connection *c)
{
    uint64_t job;
    if (service_request_retrain(h->svc, &job))
        return send_error(c, 409, "conflict", "a retrain is already running", NULL, 0);
    Reply r = {0};
    rp(&r, "{\"job\":%llu}", (unsigned long long)job);
    return send_json(c, 202, &r);
}

static enum MHD_Result handle_metrics(HttpServer *h, struct MHD_Connection *c)
{
    MetricsGauges g;
    service_gauges(h->svc, &g);
    Reply r = {0};
    if (metrics_render(h->metrics, route_names, R_COUNT, &g, &r.p, &r.len))
        return send_error(c, 500, "internal", "out of memory", NULL, 0);
    r.cap = r.len + 1;
    return send_reply(c, 200, &r, "text/plain; version=0.0.4", NULL, NULL);
}

/* ---- routing ----------------------------------------------------------- */

/* Splits /v1/users/{id}[/ltv]; returns R_USER, R_USER_LTV or R_UNKNOWN and
 * the raw (still percent-encoded) id. */
static RouteId match_users(const char *rest, const char **id, size_t *idlen)
{
    const char *slash = strchr(rest, '/');
    if (!slash) {
        *id = rest;
        *idlen = strlen(rest);
        return *idlen ? R_USER : R_UNKNOWN;
    }
    if (strcmp(slash, "/ltv") != 0 || slash == rest)
        return R_UNKNOWN;
    *id = rest;
    *idlen = (size_t)(slash - rest);
    return R_USER_LTV;
}

static RouteId route_of(const char *url, const char **id, size_t *idlen)
{
    static const struct {
        const char *path;
        RouteId id;
    } fixed[] = {{"/v1/events", R_EVENTS}, {"/v1/ltv/batch", R_LTV_BATCH}, {"/v1/model", R_MODEL},
                 {"/v1/model/retrain", R_RETRAIN}, {"/healthz", R_HEALTHZ}, {"/readyz", R_READYZ},
                 {"/metrics", R_METRICS}};
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++)
        if (strcmp(url, fixed[i].path) == 0)
            return fixed[i].id;
    if (strncmp(url, "/v1/users/", 10) == 0)
        return match_users(url + 10, id, idlen);
    return R_UNKNOWN;
}

static const char *allowed_methods(RouteId r)
{
    switch (r) {
    case R_EVENTS:
    case R_LTV_BATCH:
    case R_RETRAIN:
        return "POST";
    case R_USER:
        return "GET, DELETE";
    default:
        return "GET";
    }
}

static bool method_allowed(RouteId r, const char *method)
{
    if (r == R_USER)
        return strcmp(method, "GET") == 0 || strcmp(method, "DELETE") == 0;
    return strcmp(method, allowed_methods(r)) == 0;
}

static enum MHD_Result dispatch(HttpServer *h, struct MHD_Connection *c, const char *url, const char *method,
                                Request *req, RouteId route, const char *raw_id, size_t raw_len)
{
    if (route == R_UNKNOWN)
        return send_error(c, 404, "not_found", "no such route", NULL, 0);
    if (!method_allowed(route, method)) {
        Reply r = {0};
        rp(&r, "{\"error\":{\"code\":\"method_not_allowed\",\"message\":\"use %s\",\"details\":[]}}",
           allowed_methods(route));
        return send_reply(c, 405, &r, "application/json", MHD_HTTP_HEADER_ALLOW, allowed_methods(route));
    }
    if (req->too_large) {
        char msg[96];
        snprintf(msg, sizeof msg, "request body is larger than %lld bytes (limits.max_body_bytes)",
                 (long long)h->cfg->limits_max_body_bytes);
        return send_error(c, 413, "payload_too_large", msg, NULL, 0);
    }
    switch (route) {
    case R_HEALTHZ: {
        Reply r = {0};
        rp(&r, "{\"status\":\"ok\"}");
        return send_json(c, 200, &r);
    }
    case R_READYZ: {
        if (!service_ready(h->svc))
            return send_error(c, 503, "not_ready", "recovering state and loading the model", NULL, 0);
        Reply r = {0};
        rp(&r, "{\"status\":\"ready\"}");
        return send_json(c, 200, &r);
    }
    case R_METRICS:
        return handle_metrics(h, c);
    default:
        break;
    }
    if (atomic_load(&h->draining))
        return send_error(c, 503, "not_ready", "shutting down", NULL, 0);
    const char *token = h->cfg->auth_read_token;
    if (route == R_EVENTS)
        token = h->cfg->auth_ingest_token;
    else if (route == R_RETRAIN || (route == R_USER && strcmp(method, "DELETE") == 0))
        token = h->cfg->auth_admin_token;
    if (!authorized(c, token))
        return send_error(c, 401, "unauthorized", "missing or wrong bearer token", NULL, 0);
    if (!service_ready(h->svc))
        return send_error(c, 503, "not_ready", "recovering state and loading the model", NULL, 0);
    char id[USER_ID_MAX + 1];
    size_t idlen = 0;
    if (route == R_USER || route == R_USER_LTV) {
        if (percent_decode(raw_id, raw_len, id, USER_ID_MAX, &idlen) || !service_id_valid(id, idlen))
            return send_error(c, 400, "invalid_request",
                              "user_id must be 1 to 128 bytes of UTF-8 after percent-decoding", NULL, 0);
        id[idlen] = '\0';
    }
    switch (route) {
    case R_EVENTS:
        return handle_events(h, c, req);
    case R_USER_LTV:
        return handle_user_ltv(h, c, id, idlen);
    case R_USER:
        return handle_user(h, c, req, method, id, idlen);
    case R_LTV_BATCH:
        return handle_ltv_batch(h, c, req);
    case R_MODEL:
        return handle_model(h, c);
    case R_RETRAIN:
        return handle_retrain(h, c);
    default:
        return send_error(c, 404, "not_found", "no such route", NULL, 0);
    }
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                  const char *version, const char *upload_data, size_t *upload_size, void **con_cls)
{
    HttpServer *h = cls;
    Request *req = *con_cls;
    if (!req) {
        req = calloc(1, sizeof *req);
        if (!req)
            return MHD_NO;
        req->t0 = time_mono_ns();
        *con_cls = req;
        return MHD_YES;
    }
    if (*upload_size) {
        size_t n = *upload_size;
        *upload_size = 0;
        if (req->too_large || req->len + n > (size_t)h->cfg->limits_max_body_bytes) {
            req->too_large = true;
            free(req->body);
            req->body = NULL;
            req->len = req->cap = 0;
            return MHD_YES;
        }
        if (req->len + n + 1 > req->cap) {
            size_t cap = req->cap ? req->cap : 1024;
            while (cap < req->len + n + 1)
                cap *= 2;
            char *nb = realloc(req->body, cap);
            if (!nb)
                return MHD_NO;
            req->body = nb;
            req->cap = cap;
        }
        memcpy(req->body + req->len, upload_data, n);
        req->len += n;
        req->body[req->len] = '\0';
        return MHD_YES;
    }
    if (req->held) {
        /* resumed: the log now holds this request's records (or failed) */
        req->held = false;
        last_status = 0;
        enum MHD_Result ret;
        if (service_log_failed(h->svc)) {
            free(req->held_reply.p);
            ret = send_error(c, 503, "storage_failed", "the write-ahead log failed before the write was durable",
                             NULL, 0);
        } else {
            ret = req->held_status == 204 ? send_reply(c, 204, &req->held_reply, NULL, NULL, NULL)
                                          : send_json(c, req->held_status, &req->held_reply);
        }
        metrics_observe(h->metrics, req->route, last_status, time_mono_ns() - req->t0);
        return ret;
    }
    if (!req->body)
        req->body = (char *)calloc(1, 1);
    if (!req->body)
        return MHD_NO;
    const char *raw_id = NULL;
    size_t raw_len = 0;
    RouteId route = route_of(url, &raw_id, &raw_len);
    last_status = 0;
    req->route = route;
    enum MHD_Result ret = dispatch(h, c, url, method, req, route, raw_id, raw_len);
    if (req->held)
        return ret; /* answered (and measured) once resumed */
    uint64_t ns = time_mono_ns() - req->t0;
    metrics_observe(h->metrics, route, last_status, ns);
    if (h->cfg->server_access_log)
        log_msg(LOG_INFO, "request", "method=%s path=\"%.200s\" status=%d us=%.1f", method, url, last_status,
                ns / 1e3);
    return ret;
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls, enum MHD_RequestTerminationCode toe)
{
    Request *req = *con_cls;
    if (!req)
        return;
    if (req->held)
        free(req->held_reply.p);
    free(req->body);
    free(req);
    *con_cls = NULL;
}

int http_start(HttpServer **out, const LtvdConfig *cfg, Service *svc, Metrics *metrics)
{
    HttpServer *h = calloc(1, sizeof *h);
    if (!h)
        return -ENOMEM;
    h->cfg = cfg;
    h->svc = svc;
    h->metrics = metrics;
    pthread_mutex_init(&h->held_lock, NULL);
    struct sockaddr_in addr = {0};
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)cfg->server_port);
    if (inet_pton(AF_INET, cfg->server_bind, &addr.sin_addr) != 1) {
        free(h);
        return -EINVAL;
    }
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_TURBO;
    h->daemon = MHD_start_daemon(
        flags, 0, NULL, NULL, on_request, h, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&addr,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, h, MHD_OPTION_UNESCAPE_CALLBACK, keep_raw, NULL,
        MHD_OPTION_THREAD_POOL_SIZE, (unsigned)(cfg->server_threads > 1 ? cfg->server_threads : 0),
        MHD_OPTION_CONNECTION_LIMIT, 4096u, MHD_OPTION_CONNECTION_TIMEOUT, 60u,
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)8192, MHD_OPTION_LISTEN_BACKLOG_SIZE, 1024u, MHD_OPTION_END);
    if (!h->daemon) {
        free(h);
        return -EADDRINUSE;
    }
    *out = h;
    return 0;
}

void http_quiesce(HttpServer *h)
{
    if (h && h->daemon) {
        MHD_socket fd = MHD_quiesce_daemon(h->daemon);
        if (fd != MHD_INVALID_SOCKET)
            close(fd);
    }
}

void http_stop(HttpServer *h)
{
    if (!h)
        return;
    if (h->daemon)
        MHD_stop_daemon(h->daemon);
    pthread_mutex_destroy(&h->held_lock);
    free(h);
}

uint16_t http_port(HttpServer *h)
{
    const union MHD_DaemonInfo *i = MHD_get_daemon_info(h->daemon, MHD_DAEMON_INFO_BIND_PORT);
    return i ? i->port : 0;
}
