/* http_handlers: one handler per route. Each parses what the request
 * carries (JSON body, query), calls the service, chooses the status and
 * passes a rendered body (http_render.c) to http_send*. No routing, auth,
 * JSON writing or libmicrohttpd here.
 *
 * Threads: the libmicrohttpd thread of the call. Owns nothing past the
 * call: parsed JSON and scratch arrays are freed before returning. */
#include "http_handlers.h"

#include <errno.h>
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dashboard.h"
#include "cluster.h"
#include "http_cluster.h"
#include "events.h"
#include "log.h"
#include "segments.h"
#include "timeutil.h"

#define AS_OF_INVALID "as_of must be an RFC 3339 time or Unix seconds in 1970-2100"

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

/* Parses the body as one JSON text into *out (the caller deletes it), or
 * answers 400 and returns NULL. Anything but JSON whitespace after the value
 * is invalid_json (cJSON stops after the first value, so two concatenated
 * events would otherwise apply only the first); a string holding \u0000 is
 * invalid_request: ids are C strings inside ltvd, and a NUL would cut one
 * short (two client ids becoming one shopper, an event_id a false
 * duplicate). */
static cJSON *parse_body(HttpCall *c, int *ret)
{
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(c->body, c->body_len, &end, false);
    bool trailing = false;
    for (size_t i = root ? (size_t)(end - c->body) : c->body_len; i < c->body_len; i++) {
        char ch = c->body[i];
        if (ch != ' ' && ch != '\t' && ch != '\r' && ch != '\n')
            trailing = true;
    }
    if (!root || trailing) {
        cJSON_Delete(root);
        *ret = http_send_error(c, 400, "invalid_json", "request body is not valid JSON", NULL, 0);
        return NULL;
    }
    if (json_has_nul(c->body, c->body_len)) {
        cJSON_Delete(root);
        *ret = http_send_error(c, 400, "invalid_request", "strings must not contain \\u0000", NULL, 0);
        return NULL;
    }
    return root;
}


/* Percent-encodes s for a query value into out (cap). */
static void query_escape(const char *s, char *out, size_t cap)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t o = 0;
    for (; *s && o + 4 < cap; s++) {
        unsigned char ch = (unsigned char)*s;
        if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '-' ||
            ch == '.' || ch == '_' || ch == '~' || ch == ':') {
            out[o++] = (char)ch;
        } else {
            out[o++] = '%';
            out[o++] = hex[ch >> 4];
            out[o++] = hex[ch & 15];
        }
    }
    out[o] = '\0';
}

int handle_cluster(HttpCall *c)
{
    TextBuf r = {0};
    if (c->cluster)
        cluster_render_map(c->cluster, &r);
    else /* alone: it answers everything itself */
        TEXT_LIT(&r, "{\"mode\":\"single\",\"node\":null,\"partition_count\":0,\"members\":[],\"partitions\":[]}");
    return http_send_json(c, 200, &r);
}

int handle_events(HttpCall *c)
{
    int perr;
    cJSON *root = parse_body(c, &perr);
    if (!root)
        return perr;
    EventBatch b;
    int rc = events_parse(root, c->cfg, time_now(), &b);
    if (rc == -EINVAL)
        atomic_fetch_add(&c->metrics->events_rejected, b.n);
    int ret;
    if (rc == -E2BIG) {
        char msg[128];
        snprintf(msg, sizeof msg, "a batch holds at most %lld events (limits.max_batch_events)",
                 (long long)c->cfg->limits_max_batch_events);
        ret = http_send_error(c, 413, "payload_too_large", msg, NULL, 0);
    } else if (rc == -EPROTO) {
        ret = http_send_error(c, 400, "invalid_request", "body must be an event object or {\"events\": [...]}",
                              b.errors, b.nerrors);
    } else if (rc == -EINVAL) {
        ret = http_send_error(c, 400, "invalid_event",
                              b.single ? "the event is invalid; nothing was applied"
                                       : "some events are invalid; nothing was applied",
                              b.errors, b.nerrors);
    } else if (rc) {
        ret = http_send_error(c, 500, "internal", "out of memory", NULL, 0);
    } else if (c->cluster) {
        /* the stream is the log: 200 once JetStream holds every event; the
         * owners apply them (and drop duplicates) as they consume */
        char err[256];
        rc = cluster_publish_events(c->cluster, b.events, b.n, err, sizeof err);
        if (rc == -ENOMEM) {
            ret = http_send_error(c, 500, "internal", "out of memory; the events were not published", NULL, 0);
        } else if (rc) {
            ret = http_send_error(c, 503, "cluster_unavailable", err, NULL, 0);
        } else {
            ApplyResult res = {.accepted = b.n};
            TextBuf r = {0};
            render_applied(&r, &res, NULL);
            ret = http_send_json(c, 200, &r);
        }
    } else {
        ApplyResult res;
        PredictionView pv;
        rc = service_apply(c->svc, b.events, b.n, &res, b.single ? &pv : NULL);
        if (rc == -ENOSPC) {
            ret = http_send_error(c, 503, "capacity",
                                  "the shopper table is full (limits.max_users); the events were not applied", NULL,
                                  0);
        } else if (rc == -ENOMEM) {
            ret = http_send_error(c, 500, "internal", "out of memory; the events were not applied", NULL, 0);
        } else if (rc) {
            ret = http_send_error(c, 503, "storage_failed",
                                  "the write-ahead log cannot be written; the events were not applied", NULL, 0);
        } else {
            TextBuf r = {0};
            render_applied(&r, &res, b.single ? &pv : NULL);
            ret = http_send_when_durable(c, res.wait_seq, 200, &r);
        }
    }
    events_batch_free(&b);
    cJSON_Delete(root);
    return ret;
}

int handle_user_ltv(HttpCall *c)
{
    int64_t as_of = -1; /* now */
    char text[128];
    int rc = http_query(c, "as_of", text, sizeof text);
    if (rc != -ENOENT && (rc || time_parse(text, &as_of)))
        return http_send_error(c, 400, "invalid_request", AS_OF_INVALID, NULL, 0);
    char q[400] = ""; /* as_of for a forward to the owner */
    if (c->cluster && rc == 0)
        query_escape(text, q, sizeof q);
    bool explain = false;
    rc = http_query(c, "explain", text, sizeof text);
    if (rc != -ENOENT) {
        explain = rc == 0 && (strcmp(text, "true") == 0 || strcmp(text, "1") == 0);
        if (rc || !(explain || strcmp(text, "false") == 0 || strcmp(text, "0") == 0))
            return http_send_error(c, 400, "invalid_request", "explain must be true or false", NULL, 0);
    }
    char path[1024];
    if (c->cluster)
        snprintf(path, sizeof path, "%s?explain=%s%s%s", c->url, explain ? "true" : "false", q[0] ? "&as_of=" : "",
                 q);
    int ret;
    if (http_answered_by_owner(c, path, &ret))
        return ret;
    PredictionView pv;
    TextBuf r = {0};
    if (explain) {
        Explanation ex;
        service_explain(c->svc, c->id, c->id_len, as_of, &pv, &ex);
        render_explained(&r, &pv, &ex);
    } else {
        service_predict(c->svc, c->id, c->id_len, as_of, &pv);
        render_prediction(&r, &pv);
    }
    return http_send_owned(c, 200, &r);
}

/* as_of of a batch body: absent or null (now), an RFC 3339 or Unix-seconds
 * string, or a number of Unix seconds. */
static int batch_as_of(const cJSON *v, int64_t *out)
{
    *out = -1;
    if (!v || cJSON_IsNull(v))
        return 0;
    if (cJSON_IsString(v))
        return time_parse(v->valuestring, out);
    if (cJSON_IsNumber(v))
        return time_from_epoch(v->valuedouble, out);
    return -EINVAL;
}


int handle_ltv_batch(HttpCall *c)
{
    int perr;
    cJSON *root = parse_body(c, &perr);
    if (!root)
        return perr;
    int ret;
    const cJSON *ids = cJSON_GetObjectItemCaseSensitive(root, "user_ids");
    int64_t as_of;
    if (!cJSON_IsObject(root) || !cJSON_IsArray(ids)) {
        ret = http_send_error(c, 400, "invalid_request", "body must be {\"user_ids\": [...], \"as_of\": optional}",
                              NULL, 0);
        goto out;
    }
    if (batch_as_of(cJSON_GetObjectItemCaseSensitive(root, "as_of"), &as_of)) {
        ret = http_send_error(c, 400, "invalid_request", AS_OF_INVALID, NULL, 0);
        goto out;
    }
    size_t n = (size_t)cJSON_GetArraySize(ids);
    if (n > (size_t)c->cfg->limits_max_batch_ids) {
        char msg[128];
        snprintf(msg, sizeof msg, "at most %lld user_ids per request (limits.max_batch_ids)",
                 (long long)c->cfg->limits_max_batch_ids);
        ret = http_send_error(c, 413, "payload_too_large", msg, NULL, 0);
        goto out;
    }
    /* (n,) each, bounded by limits.max_batch_ids */
    const char **idv = malloc((n + 1) * sizeof *idv);
    size_t *lens = malloc((n + 1) * sizeof *lens);
    PredictionView *pv = malloc((n + 1) * sizeof *pv);
    EventError *errs = malloc((n + 1) * sizeof *errs);
    if (!idv || !lens || !pv || !errs) {
        ret = http_send_error(c, 500, "internal", "out of memory", NULL, 0);
        goto out_free;
    }
    size_t i = 0, nerr = 0;
    for (const cJSON *it = ids->child; it; it = it->next, i++) {
        if (!cJSON_IsString(it) || !shopper_id_valid(it->valuestring, strlen(it->valuestring))) {
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
        ret = http_send_error(c, 400, "invalid_request", "some user_ids are invalid", errs, nerr);
        goto out_free;
    }
    if (c->cluster) {
        int *owner_of = malloc((n + 1) * sizeof *owner_of); /* (n,) */
        ret = owner_of ? http_cluster_batch(c, cJSON_GetObjectItemCaseSensitive(root, "as_of"), idv, lens, n, as_of, pv,
                                       owner_of)
                       : http_send_error(c, 500, "internal", "out of memory", NULL, 0);
        free(owner_of);
        goto out_free;
    }
    service_predict_many(c->svc, idv, lens, n, as_of, pv);
    TextBuf r = {0};
    render_predictions(&r, pv, n);
    ret = http_send_json(c, 200, &r);
out_free:
    free(idv);
    free(lens);
    free(pv);
    free(errs);
out:
    cJSON_Delete(root);
    return ret;
}

int handle_user_get(HttpCall *c)
{
    int ret;
    if (http_answered_by_owner(c, c->url, &ret))
        return ret;
    UserSummaryView v;
    if (service_user_summary(c->svc, c->id, c->id_len, &v))
        return http_send_error(c, 404, "not_found", "unknown user", NULL, 0);
    TextBuf r = {0};
    render_user(&r, c->id, c->id_len, &v);
    return http_send_owned(c, 200, &r);
}

int handle_user_delete(HttpCall *c)
{
    if (c->cluster) {
        /* Any node publishes the erasure to the shopper's partition, with
         * no existence check: the owner may not have applied the shopper's
         * acknowledged events yet (just ingested, or replaying after a
         * failover), and they are before the erasure in the stream. The
         * owner erases as it applies; an unknown id is a no-op there. */
        char err[256];
        int rc = cluster_publish_erase(c->cluster, c->id, c->id_len, err, sizeof err);
        if (rc)
            return http_send_error(c, 503, "cluster_unavailable", err, NULL, 0);
        TextBuf r = {0};
        return http_send_json(c, 204, &r);
    }
    uint64_t seq;
    int rc = service_delete_user(c->svc, c->id, c->id_len, &seq);
    if (rc == -ENOENT)
        return http_send_error(c, 404, "not_found", "unknown user", NULL, 0);
    if (rc)
        return http_send_error(c, 503, "storage_failed", "the write-ahead log cannot be written", NULL, 0);
    TextBuf r = {0};
    return http_send_when_durable(c, seq, 204, &r);
}

int handle_model(HttpCall *c)
{
    ModelInfo mi;
    PredLogStats pl;
    service_model_info(c->svc, &mi);
    service_predlog_stats(c->svc, &pl);
    TextBuf r = {0};
    render_model(&r, &mi, &pl);
    return http_send_json(c, 200, &r);
}

int handle_retrain(HttpCall *c)
{
    uint64_t job;
    if (service_request_retrain(c->svc, &job))
        return http_send_error(c, 409, "conflict", "a retrain is already running", NULL, 0);
    TextBuf r = {0};
    render_job(&r, job);
    return http_send_json(c, 202, &r);
}

int handle_healthz(HttpCall *c)
{
    TextBuf r = {0};
    render_status(&r, "ok");
    return http_send_json(c, 200, &r);
}

int handle_readyz(HttpCall *c)
{
    if (c->draining) /* a load balancer must stop sending before the listener closes */
        return http_send_error(c, 503, "not_ready", "shutting down", NULL, 0);
    if (!service_ready(c->svc))
        return http_send_error(c, 503, "not_ready", "recovering state and loading the model", NULL, 0);
    if (service_log_failed(c->svc)) /* after ready: the log is attached. Every write would be refused */
        return http_send_error(c, 503, "storage_failed",
                               "the write-ahead log cannot be written; writes resume once storage.dir takes them again", NULL, 0);
    TextBuf r = {0};
    render_status(&r, "ready");
    return http_send_json(c, 200, &r);
}

int handle_metrics(HttpCall *c)
{
    MetricsGauges g;
    MetricsRoute routes[ROUTE_COUNT];
    service_gauges(c->svc, &g);
    http_route_metrics(routes);
    TextBuf r = {0};
    if (metrics_render(c->metrics, routes, ROUTE_COUNT, &g, &r))
        return http_send_error(c, 500, "internal", "out of memory", NULL, 0);
    if (c->cluster)
        cluster_render_metrics(c->cluster, &r);
    return http_send(c, 200, &r, "text/plain; version=0.0.4", NULL, NULL);
}

/* ---- operations: snapshot on request, the model history ------------------ */

int handle_admin_snapshot(HttpCall *c)
{
    uint64_t job;
    if (c->cluster) /* no Wal, no snapshots: the stream is the log (docs/CLUSTER.md) */
        return http_send_error(c, 409, "conflict",
                               "cluster mode keeps no snapshots: the JetStream stream holds the state", NULL, 0);
    if (service_request_snapshot(c->svc, &job))
        return http_send_error(c, 409, "conflict", "a requested snapshot is already queued or being written", NULL,
                               0);
    TextBuf r = {0};
    render_job(&r, job);
    return http_send_json(c, 202, &r);
}

int handle_models_list(HttpCall *c)
{
    ModelFileInfo *files = calloc(MODEL_HISTORY_MAX + 1, sizeof *files);
    if (!files)
        return http_send_error(c, 500, "internal", "out of memory", NULL, 0);
    size_t n = service_models_list(c->svc, files, MODEL_HISTORY_MAX + 1);
    Model *m = service_model_acquire(c->svc);
    uint64_t serving = m->version;
    model_release(m);
    TextBuf r = {0};
    render_models(&r, serving, (int)c->cfg->model_keep, files, n);
    free(files);
    return http_send_json(c, 200, &r);
}

/* A model version: decimal digits, 1 to 2^53 (a JSON number stays exact). */
static bool parse_version(const char *s, size_t n, uint64_t *out)
{
    uint64_t v = 0;
    if (n == 0 || n > 16)
        return false;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (uint64_t)(s[i] - '0');
    }
    *out = v;
    return v >= 1 && v <= (1ull << 53);
}

int handle_model_export(HttpCall *c)
{
    uint64_t version;
    if (!parse_version(c->id, c->id_len, &version))
        return http_send_error(c, 400, "invalid_request", "the version must be a whole number from 1 to 2^53", NULL,
                               0);
    TextBuf r = {0};
    int rc = service_model_export(c->svc, version, &r.b);
    if (rc == -ENOENT)
        return http_send_error(c, 404, "not_found", "no model of this version in the history", NULL, 0);
    if (rc)
        return http_send_error(c, 500, "internal", "cannot read the model file", NULL, 0);
    char disposition[64];
    snprintf(disposition, sizeof disposition, "attachment; filename=\"model-%llu.bin\"", (unsigned long long)version);
    return http_send(c, 200, &r, "application/octet-stream", "Content-Disposition", disposition);
}

int handle_model_import(HttpCall *c)
{
    if (c->body_len == 0)
        return http_send_error(c, 400, "invalid_model", "send a model file (GET /v1/models/{version}) as the body",
                               NULL, 0);
    ModelFileInfo info;
    char err[512];
    int rc = service_model_import(c->svc, c->body, c->body_len, &info, err, sizeof err);
    if (rc == -EINVAL)
        return http_send_error(c, 400, "invalid_model", err, NULL, 0);
    if (rc)
        return http_send_error(c, 500, "internal", err, NULL, 0);
    TextBuf r = {0};
    render_model_file(&r, &info);
    return http_send_json(c, 201, &r);
}

int handle_model_rollback(HttpCall *c)
{
    int ret;
    cJSON *root = parse_body(c, &ret);
    if (!root)
        return ret;
    const cJSON *v = cJSON_IsObject(root) ? cJSON_GetObjectItemCaseSensitive(root, "version") : NULL;
    bool ok = cJSON_IsNumber(v) && v->valuedouble >= 1 && v->valuedouble <= 9007199254740992.0 &&
              v->valuedouble == (double)(uint64_t)v->valuedouble && cJSON_GetArraySize(root) == 1;
    uint64_t version = ok ? (uint64_t)v->valuedouble : 0;
    cJSON_Delete(root);
    if (!ok)
        return http_send_error(c, 400, "invalid_request",
                               "the body must be {\"version\": N}, N a version listed by GET /v1/models", NULL, 0);
    ModelFileInfo info;
    char err[512];
    int rc = service_model_rollback(c->svc, version, &info, err, sizeof err);
    if (rc == -ENOENT)
        return http_send_error(c, 404, "not_found", err, NULL, 0);
    if (rc)
        return http_send_error(c, 409, "conflict", err, NULL, 0);
    TextBuf r = {0};
    render_model_file(&r, &info);
    return http_send_json(c, 200, &r);
}

/* ---- the dashboard: its data, its files ------------------------------------ */

int handle_calibration(HttpCall *c)
{
    CalibrationView v;
    if (service_calibration(c->svc, &v))
        return http_send_error(c, 500, "internal", "out of memory", NULL, 0);
    TextBuf r = {0};
    render_calibration(&r, &v);
    return http_send_json(c, 200, &r);
}

static int send_asset(HttpCall *c, const DashboardAsset *a)
{
    TextBuf r = {0};
    textbuf_append(&r, (const char *)a->data, a->len);
    return http_send_page(c, 200, &r, a->content_type);
}

int handle_dashboard(HttpCall *c) { return send_asset(c, dashboard_asset("index.html", 10)); }

int handle_dashboard_asset(HttpCall *c)
{
    if (c->param_len == strlen(DASHBOARD_CHARTJS) && memcmp(c->param, DASHBOARD_CHARTJS, c->param_len) == 0) {
        TextBuf r = {0};
        int rc = dashboard_read_file(c->cfg->dashboard_chartjs_path, &r);
        if (rc) {
            log_msg(LOG_WARN, "chart.js unreadable", "path=\"%s\" error=\"%s\"", c->cfg->dashboard_chartjs_path,
                    strerror(-rc));
            return http_send_error(c, 404, "not_found",
                                   "Chart.js cannot be read from dashboard.chartjs_path: install Debian's "
                                   "libjs-chart.js or point the key at chart.min.js (the log says why)",
                                   NULL, 0);
        }
        return http_send_page(c, 200, &r, "text/javascript; charset=utf-8");
    }
    const DashboardAsset *a = dashboard_asset(c->param, c->param_len);
    if (!a || strcmp(a->name, "index.html") == 0) /* the page itself is /dashboard */
        return http_send_error(c, 404, "not_found", "no such dashboard file", NULL, 0);
    return send_asset(c, a);
}

/* ---- segments and lists (segments.c computes them on the worker) --------- */

#define LIST_LIMIT_DEFAULT 100
#define LIST_LIMIT_MAX 1000

/* 503 until the worker has published the first result: it is computed as
 * soon after start as the worker is free. */
static int send_segments_not_ready(HttpCall *c)
{
    TextBuf b = {0};
    render_error(&b, "not_ready", "the first population summary is being computed; retry shortly", NULL, 0);
    return http_send(c, 503, &b, "application/json", "Retry-After", "5");
}

static double segments_age(const Segments *g) { return (double)(time_mono_ns() - g->computed_mono_ns) / 1e9; }

int handle_segments(HttpCall *c)
{
    Segments *g = service_segments_acquire(c->svc);
    if (!g)
        return send_segments_not_ready(c);
    TextBuf r = {0};
    render_segments(&r, g, segments_age(g));
    segments_release(g);
    return http_send_json(c, 200, &r);
}

/* A query number in [lo, hi]: 0, -ENOENT if absent, -EINVAL. */
static int query_number(HttpCall *c, const char *name, double lo, double hi, double *out)
{
    char text[64], *end;
    int rc = http_query(c, name, text, sizeof text);
    if (rc)
        return rc;
    double v = strtod(text, &end);
    if (end == text || *end || !isfinite(v) || v < lo || v > hi)
        return -EINVAL;
    *out = v;
    return 0;
}

typedef struct ListQuery {
    size_t limit, from;
    double min_value, max_p_active;
} ListQuery;

/* Parses limit, cursor and (churn) the thresholds, or answers 400 (409 for a
 * cursor of another result) and returns -1 with *ret set. A cursor is
 * "<generation hex>.<position>": opaque to clients. */
static int list_query(HttpCall *c, const Segments *g, size_t total, bool churn, ListQuery *q, int *ret)
{
    *q = (ListQuery){.limit = LIST_LIMIT_DEFAULT, .max_p_active = 1.0};
    double limit = LIST_LIMIT_DEFAULT;
    int rc = query_number(c, "limit", 1, LIST_LIMIT_MAX, &limit);
    if (rc == -EINVAL || limit != (double)(size_t)limit) {
        *ret = http_send_error(c, 400, "invalid_request", "limit must be a whole number from 1 to 1000", NULL, 0);
        return -1;
    }
    q->limit = (size_t)limit;
    if (churn) {
        if (query_number(c, "min_value", 0, 1e15, &q->min_value) == -EINVAL) {
            *ret = http_send_error(c, 400, "invalid_request", "min_value must be a number >= 0", NULL, 0);
            return -1;
        }
        if (query_number(c, "max_p_active", 0, 1, &q->max_p_active) == -EINVAL) {
            *ret = http_send_error(c, 400, "invalid_request", "max_p_active must be a number from 0 to 1", NULL, 0);
            return -1;
        }
    }
    char text[64];
    rc = http_query(c, "cursor", text, sizeof text);
    if (rc == -ENOENT)
        return 0;
    unsigned long long gen, pos;
    int used = 0;
    if (rc || sscanf(text, "%16llx.%llu%n", &gen, &pos, &used) != 2 || text[used] || text[0] == '-' ||
        strchr(text, '+') || strchr(text, ' ')) {
        *ret = http_send_error(c, 400, "invalid_request", "cursor must be a next_cursor this list returned", NULL, 0);
        return -1;
    }
    if (gen != g->generation) {
        *ret = http_send_error(c, 409, "cursor_expired",
                               "the list was recomputed since this cursor was given; start again without a cursor",
                               NULL, 0);
        return -1;
    }
    if (pos > total) {
        *ret = http_send_error(c, 400, "invalid_request", "cursor must be a next_cursor this list returned", NULL, 0);
        return -1;
    }
    q->from = (size_t)pos;
    return 0;
}

/* Cluster mode: does this node own the shopper's partition now (the map,
 * at most a tick old)? A node keeps the shoppers of a partition it gave
 * up, stale (even erased since by the new owner): its lists skip them. */
static bool owned_here(HttpCall *c, const char *id)
{
    size_t len = strlen(id);
    bool self;
    char node[CLUSTER_NODE_MAX], url[CLUSTER_URL_MAX];
    return cluster_owner(c->cluster, cluster_partition_of(c->cluster, id, len), &self, node, url) == 0 && self;
}

/* Answers one page of list (n,) from g: rows that pass the thresholds and
 * whose shopper still exists (in cluster mode: in a partition this node
 * owns), from the cursor's position on. */
static int send_list(HttpCall *c, Segments *g, const SegmentRow *list, size_t total, bool churn)
{
    ListQuery q;
    int ret;
    if (list_query(c, g, total, churn, &q, &ret))
        return ret;
    const SegmentRow **page = malloc(q.limit * sizeof *page), **cand = malloc(q.limit * sizeof *cand);
    bool *live = malloc(q.limit * sizeof *live);
    if (!page || !cand || !live) {
        free(page), free(cand), free(live);
        return http_send_error(c, 500, "internal", "out of memory", NULL, 0);
    }
    size_t n = 0, pos = q.from;
    while (n < q.limit && pos < total) {
        size_t k = 0;
        for (; pos < total && k < q.limit - n; pos++) {
            const SegmentRow *r = &list[pos];
            double value = r->ltv > r->spend ? r->ltv : r->spend;
            if (!churn || (value >= q.min_value && r->p_active <= q.max_p_active))
                cand[k++] = r;
        }
        service_segments_live(c->svc, cand, k, live);
        for (size_t i = 0; i < k; i++)
            if (live[i] && (!c->cluster || owned_here(c, cand[i]->user_id)))
                page[n++] = cand[i];
    }
    char cursor[64];
    if (pos < total)
        snprintf(cursor, sizeof cursor, "%llx.%zu", (unsigned long long)g->generation, pos);
    TextBuf r = {0};
    render_segment_list(&r, g, segments_age(g), page, n, total, pos < total ? cursor : NULL);
    free(page), free(cand), free(live);
    return http_send_json(c, 200, &r);
}

int handle_list_top(HttpCall *c)
{
    Segments *g = service_segments_acquire(c->svc);
    if (!g)
        return send_segments_not_ready(c);
    int ret = send_list(c, g, g->top, g->ntop, false);
    segments_release(g);
    return ret;
}

int handle_list_churn(HttpCall *c)
{
    Segments *g = service_segments_acquire(c->svc);
    if (!g)
        return send_segments_not_ready(c);
    int ret = send_list(c, g, g->churn, g->nchurn, true);
    segments_release(g);
    return ret;
}
