/* http_api: the HTTP v1 API on libmicrohttpd. Handlers only parse the
 * request, call the service and render JSON.
 *
 * Threading: libmicrohttpd runs its own epoll thread(s) (server.threads);
 * handlers run there. http_start/http_stop are called from the main thread.
 * A request's context is stored on the handler's first call and answered on
 * a later one: answering on the first call makes libmicrohttpd close
 * keep-alive connections. */
#ifndef LTVD_HTTP_API_H
#define LTVD_HTTP_API_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "metrics.h"
#include "service.h"

typedef struct HttpServer HttpServer;

typedef struct HttpRoute {
    const char *method;
    const char *path;  /* OpenAPI form, e.g. /v1/users/{user_id}/ltv */
} HttpRoute;

int http_start(HttpServer **out, const LtvdConfig *cfg, Service *svc, Metrics *metrics);
/* Stops accepting new connections; in-flight requests go on. */
void http_quiesce(HttpServer *h);
/* Finishes in-flight requests, closes everything and frees. NULL-safe. */
void http_stop(HttpServer *h);
uint16_t http_port(HttpServer *h);

/* Write-ahead log callback (flusher thread): answers the requests that were
 * waiting for records up to seq to become durable. UINT64_MAX wakes all
 * (the log failed; they get an error). */
void http_on_durable(void *h, uint64_t seq);
/* Shutdown, main thread: new requests get 503 from now on. */
void http_drain(HttpServer *h);
/* Requests still waiting for the log. */
size_t http_pending(HttpServer *h);

/* The routing table, for --routes and the spec test. */
size_t http_routes(const HttpRoute **out);

#endif
