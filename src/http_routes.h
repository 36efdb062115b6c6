/* http_routes (private to the http_* files): the route table and the router
 * that reads it. One row per (method, path): its route id (the metrics
 * label), the token class that guards it, and its handler. Routing, auth,
 * `ltvd --routes` and the metrics labels all read that one table.
 *
 * Threads: the table is constant; http_dispatch runs on a libmicrohttpd
 * thread for the call it is given. */
#ifndef LTVD_HTTP_ROUTES_H
#define LTVD_HTTP_ROUTES_H

#include "http_server.h"

/* What the metrics count requests by: a path of the table (all its
 * methods together), or unknown. The label is the OpenAPI path. */
typedef enum RouteId {
    ROUTE_EVENTS,
    ROUTE_USER_LTV,
    ROUTE_USER,
    ROUTE_LTV_BATCH,
    ROUTE_MODEL,
    ROUTE_RETRAIN,
    ROUTE_ROLLBACK,
    ROUTE_MODELS,
    ROUTE_MODEL_FILE,
    ROUTE_ADMIN_SNAPSHOT,
    ROUTE_CALIBRATION,
    ROUTE_SEGMENTS,
    ROUTE_LIST_TOP,
    ROUTE_LIST_CHURN,
    ROUTE_DASHBOARD,
    ROUTE_DASHBOARD_ASSET,
    ROUTE_CLUSTER,
    ROUTE_HEALTHZ,
    ROUTE_READYZ,
    ROUTE_METRICS,
    ROUTE_UNKNOWN,
    ROUTE_COUNT
} RouteId;

/* Which configured bearer token a route asks for (an empty token: no auth).
 * Open routes ask for none and answer even while ltvd recovers or drains. */
typedef enum TokenClass { TOKEN_OPEN, TOKEN_READ, TOKEN_INGEST, TOKEN_ADMIN } TokenClass;

/* Answers c (one http_send*); 0, or -EIO if the answer could not be queued. */
typedef int HttpHandler(HttpCall *c);

/* Routes c by the table and answers it: 404, 405 (with Allow), 413, 503
 * while draining or recovering, 401, 400 for a bad {user_id}, else the
 * row's handler. Sets c->route. 0 or -EIO as a handler. */
int http_dispatch(HttpCall *c);

/* Screens a request that announces a body, from its headers alone, before
 * any of the body is read (declared: its Content-Length, or -1 when the
 * length is not known, chunked). Answers 404, 405, 413 (a Content-Length
 * over limits.max_body_bytes, or a body over 1 KiB or chunked on a route
 * that takes none),
 * 503 while draining, or 401, in that order, and sets *reason to the
 * MetricsReject of the answer; or answers nothing (c->status stays 0,
 * *reason -1): the body may be read and the request dispatched. Sets
 * c->route. 0 or -EIO as http_dispatch. */
int http_screen(HttpCall *c, int64_t declared, int *reason);

/* The path of route id in OpenAPI form (/v1/users/{user_id}/ltv), or NULL
 * for ROUTE_UNKNOWN: what the access log names a request by. */
const char *http_route_path(int route);

/* Does route id's path hold a {user_id}? */
bool http_route_has_user(int route);

/* The metrics label and the statuses of every RouteId: out (ROUTE_COUNT,). */
void http_route_metrics(MetricsRoute out[ROUTE_COUNT]);

/* RFC 3986 percent-decoding ('+' stays '+'). -EINVAL on a bad escape or
 * when the result does not fit in cap bytes. libmicrohttpd is told not to
 * decode (a%2Fb must not become a path separator before routing): ltvd
 * decodes each piece itself. */
int http_percent_decode(const char *in, size_t n, char *out, size_t cap, size_t *out_len);

#endif
