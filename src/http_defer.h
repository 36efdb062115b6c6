/* http_defer (private to the http_* files): answers that wait on another
 * node are computed off libmicrohttpd's threads. A handler that must wait
 * for an owner (a forwarded read, a batch's remote shares) calls
 * http_defer: its connection is suspended and a detached copy of the call
 * goes to a small pool of forwarder threads (cluster.forward_threads),
 * which run the job and capture its one answer; the connection is then
 * resumed and the answer sent by its libmicrohttpd thread. So an HTTP
 * worker never waits for another node, and two nodes forwarding to each
 * other cannot take all of each other's workers.
 *
 * Threads: http_defer on a libmicrohttpd thread; jobs on the pool's
 * threads; the pool is started by http_set_cluster (main) and stopped by
 * http_stop (main), which waits for the running jobs (each bounded by its
 * forward timeout) and answers the queued ones 503 not_ready. The queue
 * is bounded: when it is full http_defer answers 503 overloaded at once. */
#ifndef LTVD_HTTP_DEFER_H
#define LTVD_HTTP_DEFER_H

#include <stdbool.h>
#include <stddef.h>

#include "http_server.h"
#include "log.h"

/* The answer a detached call's http_send* captured (one header at most). */
typedef struct HttpAnswer {
    int status;           /* 0: none captured */
    TextBuf body;
    const char *content_type; /* a literal, or NULL */
    const char *header;       /* a literal, or NULL */
    char value[128];
} HttpAnswer;

/* A job (HttpDeferFn, http_server.h) answers its detached call (no query;
 * of the headers, Authorization and X-Ltvd-Forwarded) with one http_send*,
 * on a forwarder thread. */

typedef struct HttpDeferred {
    HttpCall call;        /* detached: conn NULL, capture = &answer */
    HttpAnswer answer;
    HttpDeferFn *fn;
    void *arg;
    void (*free_arg)(void *);
    void *conn;           /* the suspended connection: the server's */
    char *copy;           /* method, url, body and the headers, one block */
    const char *headers[5]; /* name, value, ..., NULL */
    char request_id[LOG_REQUEST_ID_MAX + 1];
    struct HttpDeferred *next;
} HttpDeferred;

typedef struct DeferPool DeferPool;

/* Called on a forwarder thread once d's answer is captured (the server
 * resumes d->conn; d is not touched by the pool after). */
typedef void DeferDoneFn(void *ctx, HttpDeferred *d);

/* Starts threads forwarder threads with room for queue_max waiting jobs.
 * 0 or -errno. */
int defer_pool_start(DeferPool **out, size_t threads, size_t queue_max, DeferDoneFn *done, void *ctx);
/* Refuses new jobs from now on, answers the queued ones 503 not_ready,
 * waits for the running ones and joins the threads. NULL-safe; again is a
 * no-op. */
void defer_pool_stop(DeferPool *p);
/* Stops p if running, and frees it. NULL-safe. */
void defer_pool_free(DeferPool *p);
/* Takes a place in the queue for one job: false when full or stopping.
 * Every true is followed by exactly one defer_pool_push. */
bool defer_pool_reserve(DeferPool *p);
void defer_pool_push(DeferPool *p, HttpDeferred *d);

/* A detached copy of c (method, url, body, id, the two headers), to answer
 * with fn(arg) on a forwarder thread. NULL on ENOMEM (arg not freed). */
HttpDeferred *http_deferred_new(const HttpCall *c, const char *request_id, HttpDeferFn *fn, void *arg,
                                void (*free_arg)(void *));
/* Frees d, its answer's body if not sent, and its arg. NULL-safe. */
void http_deferred_free(HttpDeferred *d);
/* http_send*'s body for a detached call: keeps the answer in a. */
int http_answer_capture(HttpAnswer *a, int status, TextBuf *b, const char *content_type, const char *const *hdrs);

#endif
