/* http_server: ltvd's HTTP server on libmicrohttpd. Start and stop, the
 * per-request context, feeding each body to http_body.c (which caps it by
 * limits.max_body_bytes and the body budget) and queuing answers; the
 * answers that wait on a suspended connection (a write's until the log has
 * it durable, a read's until a forwarder has the owner's answer) are
 * http_wait.c's. With http_wait.c the only file that talks to
 * libmicrohttpd (http_call.c holds the answers and helpers that need none
 * of it); routing and handling are http_routes.c and the handlers
 * (http_handlers.c, http_cluster.c, http_admin.c, http_reports.c).
 *
 * Threads: libmicrohttpd's internal poll thread (or server.threads of them)
 * runs on_request and on_completed; the WAL flusher thread calls
 * http_on_durable; the forwarder threads (cluster mode, http_defer.h) run
 * deferred requests and resume their connections; the main thread starts,
 * drains and stops. The held list
 * is guarded by held_lock, last in the lock order but for libmicrohttpd's
 * own (docs/ARCHITECTURE.md): http_on_durable may run with the store lock
 * held (a snapshot's wal_rotate syncs the log) or the log's io_lock held
 * (a write failure), so nothing under held_lock may take either; only
 * libmicrohttpd's suspend (and, at stop, its resume) runs under it, and
 * service_durable there is an atomic read. http_on_durable resumes outside
 * it (http_wait.c).
 *
 * Before any body byte is read, a request that announces a body is screened
 * on the handler's first call (headers complete): route, method, size and
 * token (http_screen), then the global body budget
 * (limits.max_inflight_body_bytes), which the declared Content-Length is
 * reserved from until on_completed, whatever way the request ends. A
 * refusal is answered on that first call: libmicrohttpd then sends no
 * "100 Continue", reads none of the body and closes the connection.
 *
 * The access log (server.access_log, read per request from the live config
 * like limits.max_body_bytes) has exactly one line per request, written
 * when its answer is queued: early (screen), direct (on_request), held
 * (send_held, with the time it waited), or never (on_completed: status=0
 * aborted=true). A line names the route's template, never the raw path,
 * and the {user_id} only as a keyed hash (SipHash-2-4 under a key drawn
 * per process), so user ids never reach the log. Every answer carries the
 * request's id (X-Request-Id: the client's if sane, else made here), and so
 * does every line logged on the thread while it is handled.
 *
 * Ownership: a Request is calloc'd on a connection's first call and freed
 * by on_completed; its body and a held answer's buffer with it. */
#include "http_api.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <microhttpd.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "http_internal.h"
#include "http_routes.h"
#include "timeutil.h"


/* ---- answering --------------------------------------------------------- */

/* Queues b with content_type and the header pairs hdrs (name, value, ...,
 * NULL): http_send's body. */
static int send_with(HttpCall *c, int status, TextBuf *b, const char *content_type, const char *const *hdrs)
{
    if (c->capture) {
        c->status = status;
        return http_answer_capture(c->capture, status, b, content_type, hdrs);
    }
    if (b->err) {
        textbuf_free(b);
        status = MHD_HTTP_INTERNAL_SERVER_ERROR;
    }
    struct MHD_Response *resp = b->b.p ? MHD_create_response_from_buffer(b->b.len, b->b.p, MHD_RESPMEM_MUST_FREE)
                                     : MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
    if (!resp) {
        textbuf_free(b);
        return -EIO;
    }
    *b = (TextBuf){0}; /* libmicrohttpd frees it */
    if (content_type)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
    for (; hdrs && hdrs[0]; hdrs += 2)
        MHD_add_response_header(resp, hdrs[0], hdrs[1]);
    if (c->req && c->req->request_id[0])
        MHD_add_response_header(resp, "X-Request-Id", c->req->request_id);
    c->status = status;
    enum MHD_Result ret = MHD_queue_response(c->conn, (unsigned)status, resp);
    MHD_destroy_response(resp);
    return ret == MHD_YES ? 0 : -EIO;
}

int http_send(HttpCall *c, int status, TextBuf *b, const char *content_type, const char *header,
              const char *value)
{
    const char *hdrs[] = {header, value, NULL};
    return send_with(c, status, b, content_type, header ? hdrs : NULL);
}

/* The dashboard's policy: its own files only, no inline script or style,
 * data fetched from this origin only, never framed (docs/SECURITY.md). */
#define PAGE_CSP                                                                                                \
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "     \
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

int http_send_page(HttpCall *c, int status, TextBuf *b, const char *content_type)
{
    static const char *const hdrs[] = {"Content-Security-Policy", PAGE_CSP,
                                       "X-Content-Type-Options", "nosniff",
                                       "Referrer-Policy", "no-referrer",
                                       "X-Frame-Options", "DENY",
                                       "Cache-Control", "no-cache",
                                       NULL};
    return send_with(c, status, b, content_type, hdrs);
}

void http_drain(HttpServer *h) { atomic_store(&h->draining, true); }

/* ---- reading the request ----------------------------------------------- */

const char *http_header(const HttpCall *c, const char *name)
{
    if (!c->conn) {
        for (const char *const *p = c->headers; p && p[0]; p += 2)
            if (strcasecmp(p[0], name) == 0)
                return p[1];
        return NULL;
    }
    return MHD_lookup_connection_value(c->conn, MHD_HEADER_KIND, name);
}

int http_query(const HttpCall *c, const char *name, char *buf, size_t cap)
{
    return http_query_decode(c->conn ? MHD_lookup_connection_value(c->conn, MHD_GET_ARGUMENT_KIND, name) : NULL,
                             buf, cap);
}

/* libmicrohttpd would decode the path before routing, turning a%2Fb into a
 * path separator; ltvd decodes each piece itself after routing. */
static size_t keep_raw(void *cls, struct MHD_Connection *c, char *s) { return strlen(s); }

/* ---- request ids and the access log ------------------------------------ */

/* The config of the last reload (SIGHUP), else the one of the start. */
static const LtvdConfig *cfg_now(HttpServer *h)
{
    const LtvdConfig *live = config_live();
    return live ? live : h->cfg;
}

/* 1 to LOG_REQUEST_ID_MAX bytes of [A-Za-z0-9._-]: safe in a header and a
 * log line as it is. */
static bool request_id_sane(const char *v)
{
    size_t n = 0;
    for (; v[n]; n++) {
        char ch = v[n];
        bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '.' ||
                  ch == '_' || ch == '-';
        if (!ok || n >= LOG_REQUEST_ID_MAX)
            return false;
    }
    return n > 0;
}

/* A bijection on 64 bits (splitmix64's finalizer): distinct counter values
 * give distinct ids, which do not show how many came before. */
static uint64_t mix_bits(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* The client's X-Request-Id if sane, else 16 hex digits unique in this
 * process (until its counter wraps, after 2^64 requests). */
static void request_id_assign(HttpServer *h, struct MHD_Connection *conn, HttpRequest *req)
{
    const char *v = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "X-Request-Id");
    if (v && request_id_sane(v)) {
        memcpy(req->request_id, v, strlen(v) + 1);
        return;
    }
    uint64_t n = atomic_fetch_add_explicit(&h->next_request_id, 1, memory_order_relaxed);
    snprintf(req->request_id, sizeof req->request_id, "%016" PRIx64, mix_bits(n));
}

/* Keeps what the access log needs of a routed call: its route id and the
 * keyed hash of its {user_id} (percent-decoded, as the handlers see it). */
static void request_note_route(HttpServer *h, HttpRequest *req, const HttpCall *c)
{
    req->route = c->route;
    if (!c->param || !http_route_has_user(c->route))
        return;
    char id[USER_ID_MAX];
    size_t n;
    bool decoded = http_percent_decode(c->param, c->param_len, id, sizeof id, &n) == 0;
    req->has_user = true;
    /* SipHash-2-4, a PRF: without the key (drawn per process, never logged)
     * a hash in the log cannot be matched against a dictionary of user ids,
     * and the lines of two processes cannot be joined */
    req->user_hash = decoded ? hash_siphash(&h->user_key, id, n, 2, 4)
                             : hash_siphash(&h->user_key, c->param, c->param_len, 2, 4);
}

void http_access_log(HttpServer *h, HttpRequest *req, int status, const char *how)
{
    if (req->logged)
        return;
    req->logged = true;
    LogLine l;
    if (!cfg_now(h)->server_access_log || !log_begin(&l, LOG_INFO, "request"))
        return;
    const char *path = http_route_path(req->route);
    log_str(&l, "method", req->method);
    log_str(&l, "path", path ? path : "unmatched");
    if (req->has_user) {
        char hex[17];
        snprintf(hex, sizeof hex, "%016" PRIx64, req->user_hash);
        log_str(&l, "user", hex);
    }
    log_int(&l, "status", status);
    log_num(&l, "us", (double)(time_mono_ns() - req->t0) / 1e3, 1);
    if (how)
        log_bool(&l, how, true);
    log_end(&l);
}

/* ---- the body (http_body.c keeps it and the budget) --------------------- */

/* Does the request announce a body? *declared: its Content-Length, or -1
 * when it comes chunked (libmicrohttpd has refused a malformed length). */
static bool announces_body(struct MHD_Connection *conn, int64_t *declared)
{
    const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (cl) {
        char *end;
        errno = 0;
        unsigned long long v = strtoull(cl, &end, 10);
        *declared = (errno || v > INT64_MAX) ? INT64_MAX : (int64_t)v;
        return *declared > 0;
    }
    if (MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_TRANSFER_ENCODING)) {
        *declared = -1;
        return true;
    }
    return false;
}

/* ---- libmicrohttpd callbacks ------------------------------------------- */

/* The call handed to routing and the handlers, with an empty body. */
static HttpCall call_of(HttpServer *h, struct MHD_Connection *conn, HttpRequest *req, const char *method,
                        const char *url)
{
    return (HttpCall){
        .server = h,
        .svc = h->svc,
        .cluster = atomic_load(&h->cluster),
        .cfg = h->cfg,
        .metrics = h->metrics,
        .conn = conn,
        .req = req,
        .method = method,
        .url = url,
        .body = "",
        .draining = atomic_load(&h->draining),
    };
}

/* The first call of a request that announces a body: refuses it from its
 * headers (http_screen, then the body budget), or reserves its declared
 * length and lets the body come. */
static enum MHD_Result screen(HttpServer *h, struct MHD_Connection *conn, HttpRequest *req, const char *url,
                              const char *method, int64_t declared)
{
    HttpCall call = call_of(h, conn, req, method, url);
    int reason;
    int rc = http_screen(&call, declared, &reason);
    request_note_route(h, req, &call);
    if (!call.status && declared < 0) {
        req->body.chunked = true; /* reserved chunk by chunk in http_body_append */
        return MHD_YES;
    }
    if (!call.status && http_body_admit(&h->budget, &req->body, declared))
        return MHD_YES;
    if (!call.status) {
        reason = REJECT_OVERLOADED;
        rc = http_body_send_overloaded(&call);
    }
    req->answered_early = true;
    atomic_fetch_add_explicit(&h->metrics->http_rejected[reason], 1, memory_order_relaxed);
    metrics_observe(h->metrics, call.route, call.status, time_mono_ns() - req->t0);
    http_access_log(h, req, call.status, "early");
    return rc ? MHD_NO : MHD_YES;
}

/* One call of the request handler for req (first: its first call). */
static enum MHD_Result request_step(HttpServer *h, struct MHD_Connection *conn, HttpRequest *req, bool first,
                                    const char *url, const char *method, const char *upload_data,
                                    size_t *upload_size)
{
    if (first) {
        int64_t declared;
        if (announces_body(conn, &declared))
            return screen(h, conn, req, url, method, declared);
        /* answered on a later call: answering on the first makes
         * libmicrohttpd close keep-alive connections */
        return MHD_YES;
    }
    if (req->answered_early) {
        *upload_size = 0; /* libmicrohttpd reads no body after an early answer; should it, it is dropped */
        return MHD_YES;
    }
    if (*upload_size) {
        size_t n = *upload_size;
        *upload_size = 0;
        return http_body_append(&h->budget, &req->body, upload_data, n) ? MHD_NO : MHD_YES;
    }
    HttpCall call = call_of(h, conn, req, method, url);
    call.body = req->body.text.b.p ? (const char *)req->body.text.b.p : "";
    call.body_len = req->body.text.b.len;
    call.body_too_large = req->body.too_large;
    call.route = req->route; /* the screen's, for an overloaded chunked body; the router sets it again */
    if (req->held)
        return http_send_held(h, &call, req); /* resumed: the log holds its records (or failed) */
    if (req->deferred)
        return http_send_deferred(h, &call, req); /* resumed: its forwarder has the answer */
    int rc = req->body.overloaded ? http_body_send_overloaded(&call) : http_dispatch(&call);
    request_note_route(h, req, &call);
    if (req->held || req->deferred)
        return MHD_YES; /* answered (measured, logged) once resumed */
    metrics_observe(h->metrics, call.route, call.status, time_mono_ns() - req->t0);
    http_access_log(h, req, call.status, NULL);
    return rc ? MHD_NO : MHD_YES;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                                  const char *version, const char *upload_data, size_t *upload_size, void **con_cls)
{
    HttpServer *h = cls;
    HttpRequest *req = *con_cls;
    bool first = !req;
    if (first) {
        req = calloc(1, sizeof *req);
        if (!req)
            return MHD_NO;
        req->t0 = time_mono_ns();
        req->route = ROUTE_UNKNOWN;
        request_id_assign(h, conn, req);
        snprintf(req->method, sizeof req->method, "%s", method);
        req->body.max = cfg_now(h)->limits_max_body_bytes;
        *con_cls = req;
    }
    log_set_request_id(req->request_id); /* for every line logged while handling it */
    enum MHD_Result r = request_step(h, conn, req, first, url, method, upload_data, upload_size);
    log_set_request_id(NULL);
    return r;
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls, enum MHD_RequestTerminationCode toe)
{
    HttpServer *h = cls;
    HttpRequest *req = *con_cls;
    if (!req)
        return;
    if (!req->logged) {
        /* never answered: the client went away (a held write's too), a
         * timeout, an error, or the daemon stopping */
        log_set_request_id(req->request_id);
        http_access_log(h, req, 0, "aborted");
        log_set_request_id(NULL);
    }
    if (req->held) {
        /* ended (client gone, daemon stopping) before its answer went out:
         * it may still be linked, where http_on_durable would find it */
        pthread_mutex_lock(&h->held_lock);
        if (req->linked)
            http_held_unlink(h, req);
        pthread_mutex_unlock(&h->held_lock);
        if (req->abandoned)
            atomic_fetch_sub(&h->abandoned, 1);
    }
    if (req->deferred) { /* resumed, then ended before its answer went out */
        http_deferred_free(req->deferred);
        atomic_fetch_sub(&h->deferred, 1);
    }
    http_body_end(&h->budget, &req->body);
    textbuf_free(&req->held_reply);
    free(req);
    *con_cls = NULL;
}

/* ---- start and stop ---------------------------------------------------- */

int http_start(HttpServer **out, const LtvdConfig *cfg, Service *svc, Metrics *metrics)
{
    HttpServer *h = calloc(1, sizeof *h);
    if (!h)
        return -ENOMEM;
    h->cfg = cfg;
    h->svc = svc;
    h->metrics = metrics;
    http_body_budget_init(&h->budget, cfg->limits_max_inflight_body_bytes, metrics);
    pthread_mutex_init(&h->held_lock, NULL);
    int rc;
    uint64_t seed[3];
    if (getrandom(seed, sizeof seed, 0) != (ssize_t)sizeof seed) {
        rc = -EIO;
        goto fail;
    }
    atomic_init(&h->next_request_id, seed[0]);
    h->user_key = (HashKey){seed[1], seed[2]};
    struct sockaddr_in addr = {0};
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)cfg->server_port);
    if (inet_pton(AF_INET, cfg->server_bind, &addr.sin_addr) != 1) {
        rc = -EINVAL;
        goto fail;
    }
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_TURBO;
    h->daemon = MHD_start_daemon(
        flags, 0, NULL, NULL, on_request, h, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&addr,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, h, MHD_OPTION_UNESCAPE_CALLBACK, keep_raw, NULL,
        MHD_OPTION_THREAD_POOL_SIZE, (unsigned)(cfg->server_threads > 1 ? cfg->server_threads : 0),
        MHD_OPTION_CONNECTION_LIMIT, (unsigned)cfg->server_max_connections, MHD_OPTION_PER_IP_CONNECTION_LIMIT,
        (unsigned)cfg->server_max_connections_per_ip, MHD_OPTION_CONNECTION_TIMEOUT,
        (unsigned)cfg->server_connection_timeout_s,
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)8192, MHD_OPTION_LISTEN_BACKLOG_SIZE, 1024u, MHD_OPTION_END);
    if (!h->daemon) {
        rc = -EADDRINUSE;
        goto fail;
    }
    *out = h;
    return 0;
fail:
    pthread_mutex_destroy(&h->held_lock);
    free(h);
    return rc;
}

void http_quiesce(HttpServer *h)
{
    if (h && h->daemon) {
        MHD_socket fd = MHD_quiesce_daemon(h->daemon);
        if (fd != MHD_INVALID_SOCKET)
            close(fd);
    }
}

void http_stop(HttpServer *h)
{
    if (h && h->daemon) {
        /* libmicrohttpd aborts on a connection still suspended: answer the
         * held ones now (not durable in time: 503), and give the resumed
         * a bounded moment to get their answer queued and sent */
        bool released = http_held_release_all(h) > 0;
        /* a flusher may have unlinked some to resume them just before:
         * they are suspended until it has */
        for (int i = 0; i < 1000 && atomic_load(&h->resuming) > 0; i++)
            usleep(1000);
        if (released) {
            for (int i = 0; i < 100 && atomic_load(&h->abandoned) > 0; i++)
                usleep(10000);
            usleep(20000); /* queued: let the poll thread write them out */
        }
        /* the forwarders finish their jobs (each within its timeout) and
         * answer the queued ones 503: every deferred connection resumed */
        defer_pool_stop(h->defer);
        if (atomic_load(&h->deferred) > 0) {
            for (int i = 0; i < 100 && atomic_load(&h->deferred) > 0; i++)
                usleep(10000);
            usleep(20000);
        }
        MHD_stop_daemon(h->daemon);
        h->daemon = NULL;
    }
}

void http_destroy(HttpServer *h)
{
    if (!h)
        return;
    http_stop(h);
    defer_pool_free(h->defer);
    pthread_mutex_destroy(&h->held_lock);
    free(h);
}

uint16_t http_port(HttpServer *h)
{
    const union MHD_DaemonInfo *i = MHD_get_daemon_info(h->daemon, MHD_DAEMON_INFO_BIND_PORT);
    return i ? i->port : 0;
}

