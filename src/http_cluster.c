/* http_cluster: the handlers' cluster mode (http_cluster.h): the owner's
 * name on local answers, forwarded reads and split batches. The forwards
 * themselves run on the forwarder threads (http_defer): a libmicrohttpd
 * thread only finds the owner and defers.
 *
 * Threads: a libmicrohttpd thread, or a forwarder for a deferred call.
 * Owns nothing past the call but a deferred job's arguments, which the
 * forwarder frees (http_defer's free_arg). */
#include "http_cluster.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster.h"
#include "http_handlers.h"

/* A forwarded read waits this long for the owner (on a forwarder). */
#define FORWARD_TIMEOUT_MS 5000

int http_send_owned(HttpCall *c, int status, TextBuf *r)
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

/* A read for its owner: where to, and the path (with its query). */
typedef struct ForwardJob {
    char node[CLUSTER_NODE_MAX], url[CLUSTER_URL_MAX];
    char path[]; /* NUL-terminated */
} ForwardJob;

/* On a forwarder: one exchange with the owner, its answer relayed. */
static void forward_job(HttpCall *dc, void *arg)
{
    ForwardJob *j = arg;
    ClusterReply rep;
    int rc = cluster_forward(j->url, dc->method, j->path, http_header(dc, "Authorization"), dc->body, dc->body_len,
                             FORWARD_TIMEOUT_MS, cluster_forward_idle_ms(dc->cfg), &rep);
    if (rc) {
        char msg[256];
        snprintf(msg, sizeof msg, "the shopper's owner (node %s at %s) did not answer: %s", j->node, j->url,
                 strerror(-rc));
        http_send_error(dc, 503, "owner_unavailable", msg, NULL, 0);
        return;
    }
    relay(dc, &rep, j->node);
}

bool http_answered_by_owner(HttpCall *c, const char *path, int *ret)
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
    size_t plen = strlen(path);
    ForwardJob *j = malloc(sizeof *j + plen + 1);
    if (!j) {
        *ret = http_send_error(c, 500, "internal", "out of memory", NULL, 0);
        return true;
    }
    memcpy(j->node, node, sizeof j->node);
    memcpy(j->url, url, sizeof j->url);
    memcpy(j->path, path, plen + 1);
    *ret = http_defer(c, forward_job, j, free);
    return true;
}

/* One remote owner's share of a batch: which ids (their positions in the
 * request) and, once it answered, its predictions in that order. */
typedef struct BatchShare {
    char node[CLUSTER_NODE_MAX], url[CLUSTER_URL_MAX];
    cJSON *ids;     /* the body's user_ids */
    cJSON *answer;  /* the owner's parsed answer */
    const cJSON *next; /* its next prediction to merge */
} BatchShare;

/* A batch with remote shares, on a forwarder: all of it again, detached. */
static void batch_job(HttpCall *dc, void *arg)
{
    (void)arg;
    handle_ltv_batch(dc);
}

int http_cluster_batch(HttpCall *c, const cJSON *as_of_item, const char **idv, const size_t *lens, size_t n,
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
    if (nshares && !c->capture) { /* on a libmicrohttpd thread: never wait for an owner there */
        ret = http_defer(c, batch_job, NULL, NULL);
        goto out;
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
                                        strlen(text), FORWARD_TIMEOUT_MS, cluster_forward_idle_ms(c->cfg), &rep)
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
    ret = http_send_owned(c, 200, &r);
out:
    for (size_t k = 0; k < nshares; k++) {
        cJSON_Delete(shares[k].ids);
        cJSON_Delete(shares[k].answer);
    }
    return ret;
}

