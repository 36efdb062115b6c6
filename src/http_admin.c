/* http_admin: the handlers of the model and operations routes: the serving
 * model and its retrain, the model history (list, export, import,
 * rollback), a snapshot on request, health, readiness and the metrics.
 * As in http_handlers.c: parse, call the service, choose the status, pass
 * a rendered body to http_send*.
 *
 * Threads: the libmicrohttpd thread of the call (an import or a rollback
 * loads and publishes a model there, under model_history.c's lock). Owns
 * nothing past the call. */
#include "http_handlers.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include "cluster.h"

/* Cluster mode: the model is changed on the cluster's trainer only. */
#define FOLLOWER_MSG                                                                                     \
    "in cluster mode the model is trained and changed on the trainer node only (GET /v1/cluster's "     \
    "trainer), and every node serves what it publishes"

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
    int rc = service_request_retrain(c->svc, &job);
    if (rc == -EPERM)
        return http_send_error(c, 409, "conflict", FOLLOWER_MSG, NULL, 0);
    if (rc)
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
    if (c->cluster) /* no Wal, no snapshot file: partitions are snapshotted into JetStream (docs/CLUSTER.md) */
        return http_send_error(c, 409, "conflict",
                               "cluster mode snapshots each partition into JetStream on its own schedule "
                               "(cluster.snapshot_interval_s), not on request",
                               NULL, 0);
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
    if (service_model_follower(c->svc))
        return http_send_error(c, 409, "conflict", FOLLOWER_MSG, NULL, 0);
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
    if (service_model_follower(c->svc))
        return http_send_error(c, 409, "conflict", FOLLOWER_MSG, NULL, 0);
    int ret;
    cJSON *root = http_parse_json(c, &ret);
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
