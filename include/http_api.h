/* http_api: ltvd's HTTP v1 API, as main.c sees it. Start, drain and stop
 * the server; tell it when the write-ahead log has made records durable;
 * list the routes. Inside: http_server.c (libmicrohttpd: requests, bodies,
 * held answers), http_routes.c (the one route table: routing, auth,
 * metrics labels), http_handlers.c, http_admin.c and http_reports.c (one
 * handler per route), http_render.c (the JSON).
 *
 * Threads: libmicrohttpd runs one internal thread that waits with poll(2)
 * for all connections, or a pool of server.threads such threads; the
 * handlers run there. http_start, http_quiesce, http_drain, http_stop and
 * http_destroy are for the main thread; http_on_durable for the log's flusher thread.
 * The server borrows cfg, svc and metrics, which must outlive it. */
#ifndef LTVD_HTTP_API_H
#define LTVD_HTTP_API_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "cluster.h"
#include "config.h"
#include "metrics.h"
#include "service.h"

typedef struct HttpServer HttpServer;

/* Listens on server.bind:server.port, with server.max_connections,
 * server.max_connections_per_ip, server.connection_timeout_s, and uploads
 * screened from their headers against limits.max_body_bytes and
 * limits.max_inflight_body_bytes (http_server.c). -EINVAL if server.bind
 * is not an IPv4 address, -EADDRINUSE if libmicrohttpd cannot start,
 * -ENOMEM. */
int http_start(HttpServer **out, const LtvdConfig *cfg, Service *svc, Metrics *metrics);
/* Stops accepting new connections; in-flight requests go on. */
void http_quiesce(HttpServer *h);
/* Finishes in-flight requests and closes every connection; h stays valid
 * (http_on_durable may still be called) until http_destroy. A write still
 * held for the log is answered first (503 not_ready unless it became
 * durable meanwhile; its connection resumed, never left suspended), and no
 * write is held from then on. NULL-safe. */
void http_stop(HttpServer *h);
/* Stops (if not yet) and frees. The log's durable callback must no longer
 * reach h (wal_detach_callback). NULL-safe. */
void http_destroy(HttpServer *h);
uint16_t http_port(HttpServer *h);
/* Main, cluster mode, before ltvd is ready: starts the forwarder threads
 * (cluster.forward_threads), then the handlers route writes through the
 * stream and forward reads to their owner on those threads (cluster.h).
 * 0, or -errno (no thread could start; h is left alone). */
int http_set_cluster(HttpServer *h, Cluster *cluster);

/* Write-ahead log callback (flusher thread): answers the requests that were
 * waiting for records up to seq to become durable. UINT64_MAX wakes all
 * (the log failed; they get an error). */
void http_on_durable(void *h, uint64_t seq);
/* Shutdown, main thread: new requests get 503 from now on. */
void http_drain(HttpServer *h);
/* Requests still waiting for the log. */
size_t http_pending(HttpServer *h);

/* Writes the route table to f, one "METHOD /path" line per route, paths in
 * OpenAPI form (/v1/users/{user_id}/ltv): `ltvd --routes`. */
void http_routes_print(FILE *f);

#endif
