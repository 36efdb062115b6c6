/* http_cluster (private to the http_* files): the handlers' cluster mode
 * (cluster.h, docs/CLUSTER.md): answers naming the owner, reads forwarded
 * to the owner, batches split by owner. A forward never runs on a
 * libmicrohttpd thread: it is deferred to a forwarder (http_defer).
 *
 * Threads: a libmicrohttpd thread, or a forwarder for a deferred call. */
#ifndef LTVD_HTTP_CLUSTER_H
#define LTVD_HTTP_CLUSTER_H

#include <stdbool.h>
#include <stddef.h>

#include <cJSON.h>
#include "http_server.h"

/* A local answer; in cluster mode it names the owner (this node). */
int http_send_owned(HttpCall *c, int status, TextBuf *r);

/* Cluster mode, a request about shopper c->id: true (and *ret) when it is
 * answered here: forwarded to the owner (path, with its query) by a
 * forwarder (answered once the owner did), or 503 when the shopper's
 * partition has no live owner right now (it is moving, or a forwarded
 * request reached a node that no longer owns it). False: this node owns
 * it (or not cluster mode), answer locally. */
bool http_answered_by_owner(HttpCall *c, const char *path, int *ret);

/* POST /v1/ltv/batch in cluster mode: the ids this node owns are predicted
 * here, the others sent to their owners (one request per owner, with the
 * same as_of), and the answers merged in the request's order. On a
 * libmicrohttpd thread a batch with remote ids is deferred whole to a
 * forwarder (which runs handle_ltv_batch again). ids (n,) are valid; pv
 * (n,) and owner_of (n,) are scratch. */
int http_cluster_batch(HttpCall *c, const cJSON *as_of_item, const char **idv, const size_t *lens, size_t n,
                       int64_t as_of, PredictionView *pv, int *owner_of);

#endif
