/* http_server (private to the http_* files): one request as the router and
 * the handlers see it, and the ways to answer it. Only http_server.c talks
 * to libmicrohttpd.
 *
 * Threads: an HttpCall lives on the stack of a libmicrohttpd thread for one
 * call of the request handler; everything here runs on that thread. Each
 * request is answered exactly once, by one http_send* call. */
#ifndef LTVD_HTTP_SERVER_H
#define LTVD_HTTP_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "http_api.h"
#include "http_render.h"
#include "metrics.h"
#include "service.h"

struct MHD_Connection;
struct HttpRequest;
struct HttpAnswer;

typedef struct HttpCall {
    /* borrowed from the server for the call */
    HttpServer *server;
    Service *svc;
    Cluster *cluster;         /* cluster mode (cluster.h), else NULL */
    const LtvdConfig *cfg;
    Metrics *metrics;
    struct MHD_Connection *conn;
    struct HttpRequest *req;
    const char *method, *url; /* url: the raw path, without the query */
    const char *body;         /* NUL-terminated, "" when there is none */
    size_t body_len;
    bool body_too_large;      /* over limits.max_body_bytes: body is "" */
    bool draining;            /* shutting down: only open routes answer */
    /* set by the router */
    int route;                /* RouteId, for the metrics */
    const char *param;        /* the raw (percent-encoded) {user_id} or {version} segment, or NULL */
    size_t param_len;
    char id[USER_ID_MAX + 1]; /* the route's {user_id}, percent-decoded */
    size_t id_len;
    /* set by http_send*: the status queued, 0 while none */
    int status;
    /* a detached call (http_defer.h), run off libmicrohttpd's threads: conn
     * is NULL, http_send* keeps its answer here, http_header reads headers
     * (name, value, ..., NULL) and http_query finds nothing */
    struct HttpAnswer *capture;
    const char *const *headers;
} HttpCall;

/* Every http_send* returns 0 once the answer is queued, -EIO if
 * libmicrohttpd refused it (the connection is then closed). Each takes b:
 * its buffer goes to libmicrohttpd, which frees it; b is left empty. A
 * buffer that ran out of memory is answered 500 with no body. */
int http_send(HttpCall *c, int status, TextBuf *b, const char *content_type, const char *header,
              const char *value);
/* A file of the dashboard (page, script, style, Chart.js) with its content
 * type and the page's headers: Content-Security-Policy (no inline script,
 * same-origin fetches, no framing), nosniff, no referrer, no-cache. */
int http_send_page(HttpCall *c, int status, TextBuf *b, const char *content_type);
/* application/json; 204 goes out with no body and no content type.
 * (http_call.c, as http_send_error and http_query_decode) */
int http_send_json(HttpCall *c, int status, TextBuf *b);
/* The error object of render_error; a 401 carries WWW-Authenticate: Bearer. */
int http_send_error(HttpCall *c, int status, const char *code, const char *message, const EventError *details,
                    size_t ndetails);
/* A write's answer: sent now if the log holds everything up to seq durably
 * (or seq is 0), else held, and sent by the thread that resumes the
 * connection once http_on_durable reports seq (503 storage_failed if the
 * log failed meanwhile). */
int http_send_when_durable(HttpCall *c, uint64_t seq, int status, TextBuf *b);

/* Answers c later, off libmicrohttpd's threads: c's connection is
 * suspended and fn(dc, arg) runs on a forwarder thread with dc a detached
 * copy of c (http_defer.h); its answer is sent once it returns. free_arg
 * (if not NULL) frees arg in any case. Answers at once instead: 503
 * overloaded (Retry-After: 1) when the forwarders' queue is full, 503
 * not_ready when stopping, 500 without memory. 0 or -EIO. */
typedef void HttpDeferFn(HttpCall *dc, void *arg);
int http_defer(HttpCall *c, HttpDeferFn *fn, void *arg, void (*free_arg)(void *));

/* A request header, NULL if absent. Valid for the call. */
const char *http_header(const HttpCall *c, const char *name);
/* The query argument name, percent-decoded into buf (cap bytes, NUL
 * included). -ENOENT if absent, -EINVAL if badly escaped or too long. */
int http_query(const HttpCall *c, const char *name, char *buf, size_t cap);
/* http_query's decoding of the raw (still percent-encoded) value raw, NULL
 * if absent: the same returns. */
int http_query_decode(const char *raw, char *buf, size_t cap);

#endif
