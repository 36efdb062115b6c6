/* http_call: the part of http_server.h that needs no libmicrohttpd: the
 * answers built on http_send (JSON, the error object) and a query value's
 * decoding. http_server.c supplies the rest (http_send, http_header, the
 * query lookup) over libmicrohttpd; in the fuzz build fuzz/http_shim.c
 * supplies it instead, and this file serves both as it is.
 *
 * Threads: the libmicrohttpd thread of the call (http_server.h). */
#include <errno.h>
#include <string.h>

#include "http_routes.h"
#include "http_server.h"

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

int http_query_decode(const char *raw, char *buf, size_t cap)
{
    if (!raw)
        return -ENOENT;
    size_t len;
    if (http_percent_decode(raw, strlen(raw), buf, cap - 1, &len))
        return -EINVAL;
    buf[len] = '\0';
    return 0;
}
