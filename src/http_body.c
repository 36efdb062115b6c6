/* http_body: request bodies as they arrive, capped per request by
 * limits.max_body_bytes and together by the body budget,
 * limits.max_inflight_body_bytes (http_body.h). http_server.c feeds it
 * libmicrohttpd's upload chunks; nothing here talks to libmicrohttpd.
 *
 * Threads: any libmicrohttpd thread; the budget is atomics, a body its
 * request's thread's alone. */
#include "http_body.h"

#include <errno.h>
#include <stdlib.h>

void http_body_budget_init(HttpBodyBudget *b, int64_t cap, Metrics *metrics)
{
    b->cap = cap;
    b->metrics = metrics;
    atomic_init(&b->inflight, 0);
}

/* Reserves n bytes of the budget for body: false if they do not fit
 * (nothing reserved). While body's total stays within
 * HTTP_SMALL_BODY_BYTES the reservation is made even over the budget. */
static bool reserve(HttpBodyBudget *b, HttpBody *body, int64_t n)
{
    if (body->reserved + n <= HTTP_SMALL_BODY_BYTES) {
        atomic_fetch_add(&b->inflight, n);
    } else {
        int_fast64_t cur = atomic_load(&b->inflight);
        do {
            if (cur + n > b->cap)
                return false;
        } while (!atomic_compare_exchange_weak(&b->inflight, &cur, cur + n));
    }
    body->reserved += n;
    atomic_fetch_add_explicit(&b->metrics->http_body_inflight_bytes, n, memory_order_relaxed);
    return true;
}

static void release(HttpBodyBudget *b, HttpBody *body)
{
    if (!body->reserved)
        return;
    atomic_fetch_sub(&b->inflight, body->reserved);
    atomic_fetch_sub_explicit(&b->metrics->http_body_inflight_bytes, body->reserved, memory_order_relaxed);
    body->reserved = 0;
}

bool http_body_admit(HttpBodyBudget *b, HttpBody *body, int64_t declared)
{
    if (!reserve(b, body, declared))
        return false;
    /* the whole body at once: memory is what was reserved, not the
     * doubling growth's up to twice that (pages come as bytes do) */
    if (declared > HTTP_SMALL_BODY_BYTES && (body->text.b.p = malloc((size_t)declared + 1)))
        body->text.b.cap = (size_t)declared + 1;
    return true;
}

int http_body_append(HttpBodyBudget *b, HttpBody *body, const char *data, size_t n)
{
    if (body->too_large || body->overloaded)
        return 0;
    if (body->text.b.len + n > (size_t)body->max) {
        body->too_large = true;
    } else if (body->chunked && !reserve(b, body, (int64_t)n)) {
        body->overloaded = true;
        atomic_fetch_add_explicit(&b->metrics->http_rejected[REJECT_OVERLOADED], 1, memory_order_relaxed);
    } else {
        textbuf_append(&body->text, data, n);
        return body->text.err;
    }
    textbuf_free(&body->text);
    release(b, body);
    return 0;
}

void http_body_end(HttpBodyBudget *b, HttpBody *body)
{
    release(b, body);
    textbuf_free(&body->text);
}

int http_body_send_overloaded(HttpCall *c)
{
    TextBuf t = {0};
    render_error(&t, "overloaded", "too many request bodies in flight (limits.max_inflight_body_bytes); retry later",
                 NULL, 0);
    return http_send(c, 503, &t, "application/json", "Retry-After", "1");
}
