/* http_handlers: the handlers of the shoppers' and events' routes (events,
 * a shopper's prediction and summary, its erasure, batch predictions, the
 * cluster map), with cluster mode's forwarding to a shopper's owner; and
 * http_parse_json, the JSON body parser every handler that takes a body
 * uses (http_admin.c's rollback too). The model and operations routes are
 * http_admin.c, the population reports and the dashboard http_reports.c.
 * Each handler parses what the request carries (JSON body, query), calls
 * the service, chooses the status and passes a rendered body
 * (http_render.c) to http_send*. No routing, auth, JSON writing or
 * libmicrohttpd here.
 *
 * Threads: the libmicrohttpd thread of the call. Owns nothing past the
 * call: parsed JSON and scratch arrays are freed before returning. */
#include "http_handlers.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster.h"
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

/* ---- cluster mode (cluster.h, docs/CLUSTER.md) --------------------------- */

/* A forwarded read waits this long for the owner. */
#define FORWARD_TIMEOUT_MS 5000

/* A local answer; in cluster mode it names the owner (this node). */
static int send_owned(HttpCall *c, int status, TextBuf *r)
{
    if (!c->cluster)
        return http_send_json(c, status, r);
    return http_send(c, status, r, "application/json", "X-Ltvd-Owner", cluster_node_id(c->cluster));
}

/* The owner's answer, relayed as it came (status and JSON body), naming it. */
static int relay(HttpCall *c, ClusterReply *rep, const char *owner)
{
    TextBuf r = {.b = rep->body};
    rep->body = (ByteBuf){0};
    if (rep->status == 204)
        return http_send_json(c, 204, &r);
    return http_send(c, rep->status, &r, "application/json", "X-Ltvd-Owner", owner);
}

/* Cluster mode, a request about shopper c->id: true (and *ret) when it was
 * answered here: forwarded to the owner (path, with its query), or 503
 * when the shopper's partition has no live owner right now (it is moving,
 * or a forwarded request reached a node that no longer owns it). False:
 * this node owns it (or not cluster mode), answer locally. */
static bool answered_by_owner(HttpCall *c, const char *path, int *ret)
{
    if (!c->cluster)
        return false;
    uint32_t p = cluster_partition_of(c->cluster, c->id, c->id_len);
    bool self;
    char node[CLUSTER_NODE_MAX], url[CLUSTER_URL_MAX];
    int rc = cluster_owner(c->cluster, p, &self, node, url);
    if (!rc && self)
        return false;
    if (rc || http_header(c, "X-Ltvd-Forwarded")) {
        *ret = http_send_error(c, 503, "partition_unavailable",
                               "the shopper's partition has no owner right now (it is moving to another node); retry",
                               NULL, 0);
        return true;
    }
    ClusterReply rep;
    rc = cluster_forward(url, c->method, path, http_header(c, "Authorization"), c->body, c->body_len,
                         FORWARD_TIMEOUT_MS, &rep);
    if (rc) {
        char msg[256];
        snprintf(msg, sizeof msg, "the shopper's owner (node %s at %s) did not answer: %s", node, url, strerror(-rc));
        *ret = http_send_error(c, 503, "owner_unavailable", msg, NULL, 0);
        return true;
    }
    *ret = relay(c, &rep, node);
    return true;
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
    if (answered_by_owner(c, path, &ret))
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
    return send_owned(c, 200, &r);
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


/* One remote owner's share of a batch: which ids (their positions in the
 * request) and, once it answered, its predictions in that order. */
typedef struct BatchShare {
    char node[CLUSTER_NODE_MAX], url[CLUSTER_URL_MAX];
    cJSON *ids;     /* the body's user_ids */
    cJSON *answer;  /* the owner's parsed answer */
    const cJSON *next; /* its next prediction to merge */
} BatchShare;

/* POST /v1/ltv/batch in cluster mode: the ids this node owns are predicted
 * here, the others sent to their owners (one request per owner, with the
 * same as_of), and the answers merged in the request's order. ids (n,) are
 * valid; pos (n,) and pv (n,) are scratch. */
static int cluster_batch(HttpCall *c, const cJSON *as_of_item, const char **idv, const size_t *lens, size_t n,
                         int64_t as_of, PredictionView *pv, int *owner_of)
{
    BatchShare shares[CLUSTER_MEMBERS_MAX];
    size_t nshares = 0, nlocal = 0;
    int ret = 0;
    bool forwarded = http_header(c, "X-Ltvd-Forwarded") != NULL;
    for (size_t i = 0; i < n; i++) {
        bool self;
        char node[CLUSTER_NODE_MAX], url[CLUSTER_URL_MAX];
        uint32_t p = cluster_partition_of(c->cluster, idv[i], lens[i]);
        if (cluster_owner(c->cluster, p, &self, node, url) || (!self && forwarded)) {
            ret = http_send_error(c, 503, "partition_unavailable",
                                  "a shopper's partition has no owner right now (it is moving to another node); retry",
                                  NULL, 0);
            goto out;
        }
        if (self) {
            owner_of[i] = -1;
            nlocal++;
            continue;
        }
        size_t k = 0;
        while (k < nshares && strcmp(shares[k].node, node) != 0)
            k++;
        if (k == nshares) {
            if (nshares == CLUSTER_MEMBERS_MAX) {
                ret = http_send_error(c, 500, "internal", "too many owners", NULL, 0);
                goto out;
            }
            memset(&shares[k], 0, sizeof shares[k]);
            snprintf(shares[k].node, sizeof shares[k].node, "%s", node);
            snprintf(shares[k].url, sizeof shares[k].url, "%s", url);
            shares[k].ids = cJSON_CreateArray();
            nshares++;
        }
        owner_of[i] = (int)k;
        cJSON_AddItemToArray(shares[k].ids, cJSON_CreateStringReference(idv[i]));
    }
    for (size_t k = 0; k < nshares; k++) {
        cJSON *body = cJSON_CreateObject();
        cJSON_AddItemReferenceToObject(body, "user_ids", shares[k].ids);
        if (as_of_item)
            cJSON_AddItemToObject(body, "as_of", cJSON_Duplicate(as_of_item, true));
        char *text = cJSON_PrintUnformatted(body);
        cJSON_Delete(body);
        ClusterReply rep;
        int rc = text ? cluster_forward(shares[k].url, "POST", "/v1/ltv/batch", http_header(c, "Authorization"), text,
                                        strlen(text), FORWARD_TIMEOUT_MS, &rep)
                      : -ENOMEM;
        free(text);
        if (rc) {
            char msg[256];
            snprintf(msg, sizeof msg, "an owner (node %s at %s) did not answer: %s", shares[k].node, shares[k].url,
                     strerror(-rc));
            ret = http_send_error(c, 503, "owner_unavailable", msg, NULL, 0);
            goto out;
        }
        if (rep.status != 200) { /* its error is the request's */
            ret = relay(c, &rep, shares[k].node);
            goto out;
        }
        shares[k].answer = cJSON_ParseWithLength((const char *)rep.body.p, rep.body.len);
        bytebuf_free(&rep.body);
        const cJSON *preds = cJSON_GetObjectItemCaseSensitive(shares[k].answer, "predictions");
        if (!cJSON_IsArray(preds) || cJSON_GetArraySize(preds) != cJSON_GetArraySize(shares[k].ids)) {
            ret = http_send_error(c, 503, "owner_unavailable", "an owner's answer could not be read", NULL, 0);
            goto out;
        }
        shares[k].next = preds->child;
    }
    /* local ones: one lock, one model, packed at the front of idv's copy */
    const char **lid = malloc((nlocal + 1) * sizeof *lid);
    size_t *llen = malloc((nlocal + 1) * sizeof *llen);
    if (!lid || !llen) {
        free(lid);
        free(llen);
        ret = http_send_error(c, 500, "internal", "out of memory", NULL, 0);
        goto out;
    }
    for (size_t i = 0, j = 0; i < n; i++)
        if (owner_of[i] < 0) {
            lid[j] = idv[i];
            llen[j++] = lens[i];
        }
    service_predict_many(c->svc, lid, llen, nlocal, as_of, pv);
    free(lid);
    free(llen);
    TextBuf r = {0};
    TEXT_LIT(&r, "{\"predictions\":[");
    for (size_t i = 0, j = 0; i < n; i++) {
        if (i)
            TEXT_LIT(&r, ",");
        if (owner_of[i] < 0) {
            render_prediction(&r, &pv[j++]);
            continue;
        }
        BatchShare *sh = &shares[owner_of[i]];
        char *item = cJSON_PrintUnformatted(sh->next);
        if (item)
            textbuf_append(&r, item, strlen(item));
        else
            r.err = -ENOMEM;
        free(item);
        sh->next = sh->next->next;
    }
    TEXT_LIT(&r, "]}");
    ret = send_owned(c, 200, &r);
out:
    for (size_t k = 0; k < nshares; k++) {
        cJSON_Delete(shares[k].ids);
        cJSON_Delete(shares[k].answer);
    }
    return ret;
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
        ret = owner_of ? cluster_batch(c, cJSON_GetObjectItemCaseSensitive(root, "as_of"), idv, lens, n, as_of, pv,
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
    if (answered_by_owner(c, c->url, &ret))
        return ret;
    UserSummaryView v;
    if (service_user_summary(c->svc, c->id, c->id_len, &v))
        return http_send_error(c, 404, "not_found", "unknown user", NULL, 0);
    TextBuf r = {0};
    render_user(&r, c->id, c->id_len, &v);
    return send_owned(c, 200, &r);
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
