/* http_shim: http_server.h's functions for the fuzz build (http_shim.h).
 * What libmicrohttpd would send is kept in the HttpRequest for the harness
 * to check: exactly one answer per request, its status, type and body.
 * http_send_json, http_send_error and http_query_decode (http_call.c) and
 * http_percent_decode (http_routes.c) are ltvd's own, linked as they are. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "http_routes.h"
#include "http_server.h"
#include "http_shim.h"

int http_send(HttpCall *c, int status, TextBuf *b, const char *content_type, const char *header,
              const char *value)
{
    struct HttpRequest *r = c->req;
    if (b->err) {
        textbuf_free(b);
        status = 500;
    }
    r->sends++;
    free(r->body);
    r->body = b->b.p;
    r->body_len = b->b.len;
    *b = (TextBuf){0};
    r->status = status;
    snprintf(r->content_type, sizeof r->content_type, "%s", content_type ? content_type : "");
    snprintf(r->header, sizeof r->header, "%s", header ? header : "");
    snprintf(r->value, sizeof r->value, "%s", value ? value : "");
    c->status = status;
    return 0;
}

int http_send_page(HttpCall *c, int status, TextBuf *b, const char *content_type)
{
    return http_send(c, status, b, content_type, "Content-Security-Policy", "default-src 'none'");
}

int http_send_when_durable(HttpCall *c, uint64_t seq, int status, TextBuf *b)
{
    /* No log in the fuzz service: every write is "durable" at once. */
    c->req->held_seq = seq;
    return http_send_json(c, status, b);
}

int http_defer(HttpCall *c, HttpDeferFn *fn, void *arg, void (*free_arg)(void *))
{
    /* only cluster mode defers, and the fuzz build has none */
    if (free_arg)
        free_arg(arg);
    return http_send_error(c, 503, "not_ready", "no forwarders in the fuzz build", NULL, 0);
}

const char *http_header(const HttpCall *c, const char *name)
{
    const struct HttpRequest *r = c->req;
    for (size_t i = 0; i < r->nheaders; i++)
        if (strcasecmp(r->headers[i].name, name) == 0)
            return r->headers[i].value;
    return NULL;
}

int http_query(const HttpCall *c, const char *name, char *buf, size_t cap)
{
    const struct HttpRequest *r = c->req;
    const char *v = NULL;
    for (size_t i = 0; i < r->nargs && !v; i++)
        if (strcmp(r->args[i].name, name) == 0)
            v = r->args[i].value;
    return http_query_decode(v, buf, cap);
}
