/* http_server: ltvd's HTTP server on libmicrohttpd. Start and stop, the
 * per-request context, body collection (capped by limits.max_body_bytes),
 * queuing answers, and holding the answers of writes until the write-ahead
 * log has them durable (group commit), then resuming them. The only file
 * that talks to libmicrohttpd; routing and handling are http_routes.c and
 * http_handlers.c.
 *
 * Threads: libmicrohttpd's internal poll thread (or server.threads of them)
 * runs on_request and on_completed; the WAL flusher thread calls
 * http_on_durable; the main thread starts, drains and stops. The held list
 * is guarded by held_lock, last in the lock order but for libmicrohttpd's
 * own (docs/ARCHITECTURE.md): http_on_durable may run with the store lock
 * held (a snapshot's wal_rotate syncs the log) or the log's io_lock held
 * (a write failure), so nothing under held_lock may take either; only
 * libmicrohttpd's suspend and resume run under it, and service_durable
 * there is an atomic read.
 *
 * Ownership: a Request is calloc'd on a connection's first call and freed
 * by on_completed; its body and a held answer's buffer with it. */
#include "http_api.h"

#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "http_routes.h"
#include "http_server.h"
#include "log.h"
#include "timeutil.h"

/* Per-request context, created on the handler's first call. */
typedef struct HttpRequest {
    uint64_t t0;
    TextBuf body;
    bool too_large;
    int route;
    /* a write whose answer waits for the log (group commit) */
    bool held;
    int held_status;
    TextBuf held_reply;
    uint64_t wait_seq;
    struct MHD_Connection *conn;
    struct HttpRequest *next_held;
} HttpRequest;

struct HttpServer {
    struct MHD_Daemon *daemon;
    const LtvdConfig *cfg;
    Service *svc;
    Metrics *metrics;
    pthread_mutex_t held_lock; /* guards held and nheld */
    HttpRequest *held;         /* suspended connections waiting for the log */
    size_t nheld;
    atomic_bool draining;
};

/* ---- answering --------------------------------------------------------- */

int http_send(HttpCall *c, int status, TextBuf *b, const char *content_type, const char *header,
              const char *value)
{
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
    if (header)
        MHD_add_response_header(resp, header, value);
    c->status = status;
    enum MHD_Result ret = MHD_queue_response(c->conn, (unsigned)status, resp);
    MHD_destroy_response(resp);
    return ret == MHD_YES ? 0 : -EIO;
}

int http_send_json(HttpCall *c, int status, TextBuf *b)
{
    return http_send(c, status, b, status == 204 ? NULL : "application/json", NULL, NULL);
}

int http_send_error(HttpCall *c, int status, const char *code, const char *message, const EventError *details,
                    size_t ndetails)
{
    TextBuf b = {0};
    render_error(&b, code, message, details, ndetails);
    if (status == MHD_HTTP_UNAUTHORIZED)
        return http_send(c, status, &b, "application/json", MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer");
    return http_send(c, status, &b, "application/json", NULL, NULL);
}

int http_send_when_durable(HttpCall *c, uint64_t seq, int status, TextBuf *b)
{
    HttpServer *h = c->server;
    HttpRequest *req = c->req;
    if (seq) {
        pthread_mutex_lock(&h->held_lock);
        if (!service_durable(h->svc, seq) && service_log_failed(h->svc)) {
            /* the failure's wake-up (http_on_durable) may have run already:
             * holding now would wait for ever */
            pthread_mutex_unlock(&h->held_lock);
            textbuf_free(b);
            return http_send_error(c, 503, "storage_failed", "the write-ahead log failed before the write was durable",
                                   NULL, 0);
        }
        if (!service_durable(h->svc, seq)) {
            req->held = true;
            req->held_status = status;
            req->held_reply = *b;
            *b = (TextBuf){0};
            req->wait_seq = seq;
            req->conn = c->conn;
            req->next_held = h->held;
            h->held = req;
            h->nheld++;
            MHD_suspend_connection(c->conn);
            pthread_mutex_unlock(&h->held_lock);
            atomic_fetch_add_explicit(&h->metrics->durable_waits, 1, memory_order_relaxed);
            return 0;
        }
        pthread_mutex_unlock(&h->held_lock);
    }
    return http_send_json(c, status, b);
}

void http_on_durable(void *arg, uint64_t seq)
{
    HttpServer *h = arg;
    pthread_mutex_lock(&h->held_lock);
    for (HttpRequest **pp = &h->held; *pp;) {
        HttpRequest *req = *pp;
        if (req->wait_seq <= seq) {
            *pp = req->next_held;
            h->nheld--;
            MHD_resume_connection(req->conn);
        } else {
            pp = &req->next_held;
        }
    }
    pthread_mutex_unlock(&h->held_lock);
}

size_t http_pending(HttpServer *h)
{
    pthread_mutex_lock(&h->held_lock);
    size_t n = h->nheld;
    pthread_mutex_unlock(&h->held_lock);
    return n;
}

void http_drain(HttpServer *h) { atomic_store(&h->draining, true); }

/* ---- reading the request ----------------------------------------------- */

const char *http_header(const HttpCall *c, const char *name)
{
    return MHD_lookup_connection_value(c->conn, MHD_HEADER_KIND, name);
}

static int hexval(char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

int http_percent_decode(const char *in, size_t n, char *out, size_t cap, size_t *out_len)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        char ch = in[i];
        if (ch == '%') {
            int hi, lo;
            if (i + 2 >= n)
                return -EINVAL;
            if ((hi = hexval(in[i + 1])) < 0 || (lo = hexval(in[i + 2])) < 0)
                return -EINVAL;
            ch = (char)(hi * 16 + lo);
            i += 2;
        }
        if (o >= cap)
            return -EINVAL;
        out[o++] = ch;
    }
    *out_len = o;
    return 0;
}

int http_query(const HttpCall *c, const char *name, char *buf, size_t cap)
{
    const char *v = MHD_lookup_connection_value(c->conn, MHD_GET_ARGUMENT_KIND, name);
    if (!v)
        return -ENOENT;
    size_t len;
    if (http_percent_decode(v, strlen(v), buf, cap - 1, &len))
        return -EINVAL;
    buf[len] = '\0';
    return 0;
}

/* libmicrohttpd would decode the path before routing, turning a%2Fb into a
 * path separator; ltvd decodes each piece itself after routing. */
static size_t keep_raw(void *cls, struct MHD_Connection *c, char *s) { return strlen(s); }

/* Appends an upload chunk to the body, or drops the body once it passes
 * limits.max_body_bytes (the request is then answered 413). -ENOMEM. */
static int collect_body(HttpServer *h, HttpRequest *req, const char *data, size_t n)
{
    if (req->too_large || req->body.b.len + n > (size_t)h->cfg->limits_max_body_bytes) {
        req->too_large = true;
        textbuf_free(&req->body);
        return 0;
    }
    textbuf_append(&req->body, data, n);
    return req->body.err;
}

/* ---- libmicrohttpd callbacks ------------------------------------------- */

/* The answer of a held write, once its connection is resumed. */
static enum MHD_Result send_held(HttpServer *h, HttpCall *call, HttpRequest *req)
{
    req->held = false;
    int rc;
    if (service_log_failed(h->svc)) {
        textbuf_free(&req->held_reply);
        rc = http_send_error(call, 503, "storage_failed", "the write-ahead log failed before the write was durable",
                             NULL, 0);
    } else {
        rc = http_send_json(call, req->held_status, &req->held_reply);
    }
    metrics_observe(h->metrics, req->route, call->status, time_mono_ns() - req->t0);
    return rc ? MHD_NO : MHD_YES;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                                  const char *version, const char *upload_data, size_t *upload_size, void **con_cls)
{
    HttpServer *h = cls;
    HttpRequest *req = *con_cls;
    if (!req) {
        /* answered on a later call: answering on the first makes
         * libmicrohttpd close keep-alive connections */
        req = calloc(1, sizeof *req);
        if (!req)
            return MHD_NO;
        req->t0 = time_mono_ns();
        *con_cls = req;
        return MHD_YES;
    }
    if (*upload_size) {
        size_t n = *upload_size;
        *upload_size = 0;
        return collect_body(h, req, upload_data, n) ? MHD_NO : MHD_YES;
    }
    HttpCall call = {
        .server = h,
        .svc = h->svc,
        .cfg = h->cfg,
        .metrics = h->metrics,
        .conn = conn,
        .req = req,
        .method = method,
        .url = url,
        .body = req->body.b.p ? (const char *)req->body.b.p : "",
        .body_len = req->body.b.len,
        .body_too_large = req->too_large,
        .draining = atomic_load(&h->draining),
    };
    if (req->held)
        return send_held(h, &call, req); /* resumed: the log holds its records (or failed) */
    int rc = http_dispatch(&call);
    req->route = call.route;
    if (req->held)
        return MHD_YES; /* answered (and measured) once resumed */
    uint64_t ns = time_mono_ns() - req->t0;
    metrics_observe(h->metrics, call.route, call.status, ns);
    if (h->cfg->server_access_log)
        log_msg(LOG_INFO, "request", "method=%s path=\"%.200s\" status=%d us=%.1f", method, url, call.status,
                ns / 1e3);
    return rc ? MHD_NO : MHD_YES;
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls, enum MHD_RequestTerminationCode toe)
{
    HttpRequest *req = *con_cls;
    if (!req)
        return;
    textbuf_free(&req->held_reply);
    textbuf_free(&req->body);
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
    pthread_mutex_init(&h->held_lock, NULL);
    struct sockaddr_in addr = {0};
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)cfg->server_port);
    if (inet_pton(AF_INET, cfg->server_bind, &addr.sin_addr) != 1) {
        pthread_mutex_destroy(&h->held_lock);
        free(h);
        return -EINVAL;
    }
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_TURBO;
    h->daemon = MHD_start_daemon(
        flags, 0, NULL, NULL, on_request, h, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&addr,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, h, MHD_OPTION_UNESCAPE_CALLBACK, keep_raw, NULL,
        MHD_OPTION_THREAD_POOL_SIZE, (unsigned)(cfg->server_threads > 1 ? cfg->server_threads : 0),
        MHD_OPTION_CONNECTION_LIMIT, 4096u, MHD_OPTION_CONNECTION_TIMEOUT, 60u,
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)8192, MHD_OPTION_LISTEN_BACKLOG_SIZE, 1024u, MHD_OPTION_END);
    if (!h->daemon) {
        pthread_mutex_destroy(&h->held_lock);
        free(h);
        return -EADDRINUSE;
    }
    *out = h;
    return 0;
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
        MHD_stop_daemon(h->daemon);
        h->daemon = NULL;
    }
}

void http_destroy(HttpServer *h)
{
    if (!h)
        return;
    http_stop(h);
    pthread_mutex_destroy(&h->held_lock);
    free(h);
}

uint16_t http_port(HttpServer *h)
{
    const union MHD_DaemonInfo *i = MHD_get_daemon_info(h->daemon, MHD_DAEMON_INFO_BIND_PORT);
    return i ? i->port : 0;
}
