/* http_handlers: the handlers of the shoppers' and events' routes (events,
 * a shopper's prediction and summary, its erasure, batch predictions, the
 * cluster map; cluster mode's forwarding to a shopper's owner is
 * http_cluster.c); and
 * http_parse_json, the JSON body parser every handler that takes a body
 * uses (http_admin.c's rollback too). The model and operations routes are
 * http_admin.c, the population reports and the dashboard http_reports.c.
 * Each handler parses what the request carries (JSON body, query), calls
 * the service, chooses the status and passes a rendered body
 * (http_render.c) to http_send*. No routing, auth, JSON writing or
 * libmicrohttpd here.
 *
 * Threads: the libmicrohttpd thread of the call (or a forwarder's, for a
 * batch http_cluster.c deferred). Owns nothing past the
 * call: parsed JSON and scratch arrays are freed before returning. */
#include "http_handlers.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster.h"
#include "http_cluster.h"
#include "events.h"
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
cJSON *http_parse_json(HttpCall *c, int *ret)
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
    cJSON *root = http_parse_json(c, &perr);
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
    cJSON *root = http_parse_json(c, &perr);
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
