/* http_shim: http_server.h's functions for the fuzz build (http_shim.h).
 * What libmicrohttpd would send is kept in the HttpRequest for the harness
 * to check: exactly one answer per request, its status, type and body.
 * http_percent_decode is a second implementation of the one in
 * http_server.c (that file also starts the server, so it cannot be linked
 * without libmicrohttpd): keep the two alike. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

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

int http_send_json(HttpCall *c, int status, TextBuf *b)
{
    return http_send(c, status, b, status == 204 ? NULL : "application/json", NULL, NULL);
}

int http_send_error(HttpCall *c, int status, const char *code, const char *message, const EventError *details,
                    size_t ndetails)
{
    TextBuf b = {0};
    render_error(&b, code, message, details, ndetails);
    if (status == 401)
        return http_send(c, status, &b, "application/json", "WWW-Authenticate", "Bearer");
    return http_send(c, status, &b, "application/json", NULL, NULL);
}

int http_send_when_durable(HttpCall *c, uint64_t seq, int status, TextBuf *b)
{
    /* No log in the fuzz service: every write is "durable" at once. */
    c->req->held_seq = seq;
    return http_send_json(c, status, b);
}

const char *http_header(const HttpCall *c, const char *name)
{
    const struct HttpRequest *r = c->req;
    for (size_t i = 0; i < r->nheaders; i++)
        if (strcasecmp(r->headers[i].name, name) == 0)
            return r->headers[i].value;
    return NULL;
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
    const struct HttpRequest *r = c->req;
    const char *v = NULL;
    for (size_t i = 0; i < r->nargs && !v; i++)
        if (strcmp(r->args[i].name, name) == 0)
            v = r->args[i].value;
    if (!v)
        return -ENOENT;
    size_t len;
    if (http_percent_decode(v, strlen(v), buf, cap - 1, &len))
        return -EINVAL;
    buf[len] = '\0';
    return 0;
}
