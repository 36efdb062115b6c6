/* http_wait: the answers that wait, on suspended connections. A write's
 * answer held until the write-ahead log has it durable (group commit),
 * resumed by the WAL flusher (http_on_durable) or by http_stop; a request
 * deferred to a forwarder (http_defer: a read for another node's
 * shopper), resumed by the forwarder once it has the answer. Either is
 * then answered on its libmicrohttpd thread (http_send_held,
 * http_send_deferred, called by http_server.c's request handler).
 * http_set_cluster starts the forwarders (http_stop stops them).
 *
 * Threads and locks: see http_server.c's header comment (held_lock, last
 * in the lock order but for libmicrohttpd's own); the forwarders' queue
 * lock is http_defer.c's, a leaf. A connection is suspended before its
 * resumer can know of it (under held_lock, or before the forwarder's
 * queue has it), so a resume never comes before its suspend.
 *
 * Ownership: a held answer's buffer is the request's (freed by
 * on_completed); a deferred job is the pool's until it ran, then the
 * request's (freed when its answer is sent, or by on_completed). */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "http_internal.h"
#include "timeutil.h"

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
        if (!service_durable(h->svc, seq) && h->stopping) {
            /* http_stop released the held list: a connection suspended
             * now would reach MHD_stop_daemon suspended */
            pthread_mutex_unlock(&h->held_lock);
            textbuf_free(b);
            return http_send_error(c, 503, "not_ready", "shutting down before the write was durable", NULL, 0);
        }
        if (!service_durable(h->svc, seq)) {
            req->held = true;
            req->linked = true;
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

/* Resumes the held connections whose write is now durable. They are taken
 * off the list under held_lock and resumed after it is released, RESUME_BATCH
 * at a time: each MHD_resume_connection takes libmicrohttpd's own lock and
 * writes its wake-up descriptor, and the HTTP thread, which takes held_lock
 * for every write it holds, must not wait behind those (on 2 cores the
 * flusher can lose its core while holding the lock). An unlinked connection
 * stays suspended until resumed here, so it cannot end meanwhile; `resuming`
 * tells http_stop to wait for these before it stops the daemon. */
#define RESUME_BATCH 64

void http_on_durable(void *arg, uint64_t seq)
{
    HttpServer *h = arg;
    struct MHD_Connection *due[RESUME_BATCH];
    for (;;) {
        size_t n = 0;
        pthread_mutex_lock(&h->held_lock);
        for (HttpRequest **pp = &h->held; *pp && n < RESUME_BATCH;) {
            HttpRequest *req = *pp;
            if (req->wait_seq <= seq) {
                *pp = req->next_held;
                h->nheld--;
                req->linked = false;
                due[n++] = req->conn;
            } else {
                pp = &req->next_held;
            }
        }
        if (n)
            atomic_fetch_add(&h->resuming, 1);
        pthread_mutex_unlock(&h->held_lock);
        if (!n)
            return;
        for (size_t i = 0; i < n; i++)
            MHD_resume_connection(due[i]);
        atomic_fetch_sub(&h->resuming, 1);
        if (n < RESUME_BATCH)
            return;
    }
}

size_t http_pending(HttpServer *h)
{
    pthread_mutex_lock(&h->held_lock);
    size_t n = h->nheld;
    pthread_mutex_unlock(&h->held_lock);
    return n;
}

void http_held_unlink(HttpServer *h, HttpRequest *req)
{
    for (HttpRequest **pp = &h->held; *pp; pp = &(*pp)->next_held) {
        if (*pp == req) {
            *pp = req->next_held;
            h->nheld--;
            req->linked = false;
            return;
        }
    }
}

size_t http_held_release_all(HttpServer *h)
{
    size_t n = 0;
    pthread_mutex_lock(&h->held_lock);
    h->stopping = true;
    while (h->held) {
        HttpRequest *req = h->held;
        h->held = req->next_held;
        h->nheld--;
        req->linked = false;
        req->abandoned = true;
        atomic_fetch_add(&h->abandoned, 1);
        MHD_resume_connection(req->conn);
        n++;
    }
    pthread_mutex_unlock(&h->held_lock);
    return n;
}

enum MHD_Result http_send_held(HttpServer *h, HttpCall *call, HttpRequest *req)
{
    req->held = false;
    int rc;
    if (req->abandoned)
        atomic_fetch_sub(&h->abandoned, 1);
    bool durable = service_durable(h->svc, req->wait_seq); /* durable wins: a later failure is not this write's */
    if (req->abandoned && !durable && !service_log_failed(h->svc)) {
        textbuf_free(&req->held_reply);
        rc = http_send_error(call, 503, "not_ready", "shutting down before the write was durable", NULL, 0);
    } else if (!durable && service_log_failed(h->svc)) {
        textbuf_free(&req->held_reply);
        rc = http_send_error(call, 503, "storage_failed", "the write-ahead log failed before the write was durable",
                             NULL, 0);
    } else {
        rc = http_send_json(call, req->held_status, &req->held_reply);
    }
    metrics_observe(h->metrics, req->route, call->status, time_mono_ns() - req->t0);
    http_access_log(h, req, call->status, "held");
    return rc ? MHD_NO : MHD_YES;
}

enum MHD_Result http_send_deferred(HttpServer *h, HttpCall *call, HttpRequest *req)
{
    HttpAnswer *a = &req->deferred->answer;
    int rc = http_send(call, a->status, &a->body, a->content_type, a->header, a->value);
    http_deferred_free(req->deferred);
    req->deferred = NULL;
    atomic_fetch_sub(&h->deferred, 1);
    metrics_observe(h->metrics, req->route, call->status, time_mono_ns() - req->t0);
    http_access_log(h, req, call->status, NULL);
    return rc ? MHD_NO : MHD_YES;
}

/* A forwarder's job is done: its connection goes back to libmicrohttpd. */
static void deferred_done(void *ctx, HttpDeferred *d) { MHD_resume_connection(d->conn); }

int http_defer(HttpCall *c, HttpDeferFn *fn, void *arg, void (*free_arg)(void *))
{
    HttpServer *h = c->server;
    HttpDeferred *d = http_deferred_new(c, c->req->request_id, fn, arg, free_arg);
    if (!d) {
        if (free_arg)
            free_arg(arg);
        return http_send_error(c, 500, "internal", "out of memory", NULL, 0);
    }
    if (!h->defer || !defer_pool_reserve(h->defer)) {
        http_deferred_free(d);
        if (!h->defer || atomic_load(&h->draining))
            return http_send_error(c, 503, "not_ready", "shutting down", NULL, 0);
        TextBuf b = {0};
        render_error(&b, "overloaded", "too many forwarded requests waiting (cluster.forward_threads); retry later",
                     NULL, 0);
        return http_send(c, 503, &b, "application/json", MHD_HTTP_HEADER_RETRY_AFTER, "1");
    }
    d->conn = c->conn;
    c->req->deferred = d;
    atomic_fetch_add(&h->deferred, 1);
    MHD_suspend_connection(c->conn); /* before the push: the forwarder resumes it */
    defer_pool_push(h->defer, d);
    return 0;
}

int http_set_cluster(HttpServer *h, Cluster *cluster)
{
    /* a waiting job holds a suspended connection: 32 per forwarder, each
     * one a few ms while the owners answer, bounds them well below
     * server.max_connections' default */
    size_t n = (size_t)h->cfg->cluster_forward_threads;
    int rc = defer_pool_start(&h->defer, n, n * 32, deferred_done, h);
    if (rc == 0)
        atomic_store(&h->cluster, cluster);
    return rc;
}
