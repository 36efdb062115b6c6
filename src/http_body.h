/* http_body (private to the http_* files): a request's body as it
 * arrives, and the body budget every body in flight is reserved from.
 *
 * A body is capped by limits.max_body_bytes (as the request found it):
 * past it the body is dropped and the router answers 413. All bodies in
 * flight together are capped by limits.max_inflight_body_bytes: a
 * declared Content-Length is reserved whole from the budget before any
 * byte is read, a chunked body chunk by chunk as it comes; what does not
 * fit is answered 503 overloaded. A body of up to HTTP_SMALL_BODY_BYTES
 * is admitted even over the budget.
 *
 * Threads: the budget is shared by every libmicrohttpd thread (atomics); a
 * HttpBody belongs to its request, used only by the thread running its
 * call. Ownership: a HttpBody's text and reservation last until
 * http_body_end. */
#ifndef LTVD_HTTP_BODY_H
#define LTVD_HTTP_BODY_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "http_server.h"
#include "metrics.h"
#include "util.h"

/* A body up to this size is admitted even over the body budget: a small
 * write or batch read keeps being served while big uploads fill it. What
 * such bodies can hold is bounded by server.max_connections × this. */
#define HTTP_SMALL_BODY_BYTES 65536

typedef struct HttpBodyBudget {
    int64_t cap;                  /* limits.max_inflight_body_bytes */
    Metrics *metrics;             /* borrowed: the reserved bytes, the overloaded refusals */
    atomic_int_fast64_t inflight; /* bytes reserved by every body in flight */
} HttpBodyBudget;

typedef struct HttpBody {
    TextBuf text;     /* what came so far; empty once dropped */
    int64_t max;      /* limits.max_body_bytes when the request came */
    int64_t reserved; /* bytes of the budget held until http_body_end */
    bool chunked;     /* no Content-Length: reserved as the body arrives */
    bool too_large;   /* passed max: dropped, answered 413 */
    bool overloaded;  /* a chunked body outgrew the budget: dropped, answered 503 */
} HttpBody;

void http_body_budget_init(HttpBodyBudget *b, int64_t cap, Metrics *metrics);

/* Reserves a body's declared length (> 0) before any of it is read: false
 * if it does not fit (nothing reserved). An admitted body over
 * HTTP_SMALL_BODY_BYTES gets its whole buffer now. */
bool http_body_admit(HttpBodyBudget *b, HttpBody *body, int64_t declared);

/* Appends an upload chunk, or drops the body once it passes body->max
 * (too_large) or, chunked, outgrows the budget (overloaded, counted as a
 * refusal): its reservation is then given back. 0 or -ENOMEM. */
int http_body_append(HttpBodyBudget *b, HttpBody *body, const char *data, size_t n);

/* Gives the body's reservation back and frees its text; the request ended. */
void http_body_end(HttpBodyBudget *b, HttpBody *body);

/* The answer to a body the budget refused: 503 overloaded, Retry-After: 1. */
int http_body_send_overloaded(HttpCall *c);

#endif
