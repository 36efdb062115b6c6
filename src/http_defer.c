/* http_defer: the forwarder pool and detached calls (http_defer.h).
 *
 * Threads: the pool's threads take jobs from a FIFO under the pool's lock
 * (a leaf: nothing else is taken under it). A job runs without the lock;
 * its answer is handed back through done(), the last touch of the job.
 * Ownership: the pool owns a queued job; once it ran, the server does
 * (freed by http_deferred_free when the answer is sent or the request
 * ends). */
#include "http_defer.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct DeferPool {
    pthread_mutex_t lock;
    pthread_cond_t wake;
    HttpDeferred *head, *tail; /* the queue, FIFO */
    size_t queued, reserved, queue_max;
    bool stopping;
    DeferDoneFn *done;
    void *ctx;
    size_t nthreads;
    pthread_t threads[];
};

static void *pool_main(void *arg)
{
    DeferPool *p = arg;
    pthread_mutex_lock(&p->lock);
    for (;;) {
        while (!p->head && !(p->stopping && p->reserved == 0))
            pthread_cond_wait(&p->wake, &p->lock);
        HttpDeferred *d = p->head;
        if (!d)
            break; /* stopping, nothing queued nor about to be */
        p->head = d->next;
        if (!p->head)
            p->tail = NULL;
        p->queued--;
        bool run = !p->stopping;
        pthread_mutex_unlock(&p->lock);
        log_set_request_id(d->request_id);
        if (run)
            d->fn(&d->call, d->arg);
        if (!d->answer.status) { /* stopping, or a job that did not answer */
            TextBuf b = {0};
            render_error(&b, "not_ready", run ? "the request was not answered" : "shutting down", NULL, 0);
            http_answer_capture(&d->answer, 503, &b, "application/json", NULL);
        }
        log_set_request_id(NULL);
        p->done(p->ctx, d);
        pthread_mutex_lock(&p->lock);
    }
    pthread_mutex_unlock(&p->lock);
    return NULL;
}

int defer_pool_start(DeferPool **out, size_t threads, size_t queue_max, DeferDoneFn *done, void *ctx)
{
    DeferPool *p = calloc(1, sizeof *p + threads * sizeof p->threads[0]);
    if (!p)
        return -ENOMEM;
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->wake, NULL);
    p->queue_max = queue_max;
    p->done = done;
    p->ctx = ctx;
    for (; p->nthreads < threads; p->nthreads++) {
        if (pthread_create(&p->threads[p->nthreads], NULL, pool_main, p) != 0) {
            defer_pool_free(p);
            return -EAGAIN;
        }
    }
    *out = p;
    return 0;
}

void defer_pool_stop(DeferPool *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->lock);
    p->stopping = true;
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->lock);
    for (size_t i = 0; i < p->nthreads; i++)
        pthread_join(p->threads[i], NULL);
    p->nthreads = 0;
}

void defer_pool_free(DeferPool *p)
{
    if (!p)
        return;
    defer_pool_stop(p);
    pthread_cond_destroy(&p->wake);
    pthread_mutex_destroy(&p->lock);
    free(p);
}

bool defer_pool_reserve(DeferPool *p)
{
    pthread_mutex_lock(&p->lock);
    bool ok = !p->stopping && p->queued + p->reserved < p->queue_max;
    if (ok)
        p->reserved++;
    pthread_mutex_unlock(&p->lock);
    return ok;
}

void defer_pool_push(DeferPool *p, HttpDeferred *d)
{
    d->next = NULL;
    pthread_mutex_lock(&p->lock);
    p->reserved--;
    if (p->tail)
        p->tail->next = d;
    else
        p->head = d;
    p->tail = d;
    p->queued++;
    pthread_cond_signal(&p->wake);
    pthread_mutex_unlock(&p->lock);
}

/* Appends s (n bytes) and a NUL at *at; returns where it went. */
static char *put(char **at, const char *s, size_t n)
{
    char *where = *at;
    memcpy(where, s, n);
    where[n] = '\0';
    *at += n + 1;
    return where;
}

HttpDeferred *http_deferred_new(const HttpCall *c, const char *request_id, HttpDeferFn *fn, void *arg,
                                void (*free_arg)(void *))
{
    static const char *const names[] = {"Authorization", "X-Ltvd-Forwarded"};
    const char *vals[2];
    size_t need = strlen(c->method) + strlen(c->url) + c->body_len + 3;
    for (size_t i = 0; i < 2; i++) {
        vals[i] = http_header(c, names[i]);
        need += vals[i] ? strlen(vals[i]) + 1 : 0;
    }
    HttpDeferred *d = calloc(1, sizeof *d);
    char *at = d ? malloc(need) : NULL;
    if (!at) {
        free(d);
        return NULL;
    }
    d->copy = at;
    d->call = *c;
    d->call.conn = NULL;
    d->call.req = NULL;
    d->call.param = NULL;
    d->call.status = 0;
    d->call.capture = &d->answer;
    d->call.method = put(&at, c->method, strlen(c->method));
    d->call.url = put(&at, c->url, strlen(c->url));
    d->call.body = put(&at, c->body, c->body_len);
    size_t k = 0;
    for (size_t i = 0; i < 2; i++) {
        if (vals[i]) {
            d->headers[k++] = names[i];
            d->headers[k++] = put(&at, vals[i], strlen(vals[i]));
        }
    }
    d->headers[k] = NULL;
    d->call.headers = d->headers;
    snprintf(d->request_id, sizeof d->request_id, "%s", request_id);
    d->fn = fn;
    d->arg = arg;
    d->free_arg = free_arg;
    return d;
}

void http_deferred_free(HttpDeferred *d)
{
    if (!d)
        return;
    textbuf_free(&d->answer.body);
    if (d->free_arg)
        d->free_arg(d->arg);
    free(d->copy);
    free(d);
}

int http_answer_capture(HttpAnswer *a, int status, TextBuf *b, const char *content_type, const char *const *hdrs)
{
    textbuf_free(&a->body); /* a second answer replaces the first: none is expected */
    a->status = status;
    a->body = *b;
    *b = (TextBuf){0};
    a->content_type = content_type;
    a->header = hdrs && hdrs[0] ? hdrs[0] : NULL;
    snprintf(a->value, sizeof a->value, "%s", a->header ? hdrs[1] : "");
    return 0;
}
