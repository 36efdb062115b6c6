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

/* The metrics label and the statuses of every RouteId: out (ROUTE_COUNT,). */
void http_route_metrics(MetricsRoute out[ROUTE_COUNT]);

#endif
