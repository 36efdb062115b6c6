/* http_shim: the request a fuzz input stands for, and what the answer
 * was. http_shim.c implements http_server.h's functions that
 * http_server.c bases on libmicrohttpd (http_send, http_send_page,
 * http_send_when_durable, http_header, http_query) over this instead, so
 * fuzz_http.c drives http_dispatch, the handlers and the service without a
 * socket; the rest (http_call.c) is linked as it is. Fuzz builds only; one
 * thread. */
#ifndef LTVD_FUZZ_HTTP_SHIM_H
#define LTVD_FUZZ_HTTP_SHIM_H

#include <stddef.h>

#define SHIM_MAX_FIELDS 32

typedef struct ShimField {
    const char *name, *value; /* NUL-terminated, in the request's buffer */
} ShimField;

/* Named as http_server.h forward-declares it: HttpCall.req points here. */
struct HttpRequest {
    ShimField headers[SHIM_MAX_FIELDS];
    size_t nheaders;
    ShimField args[SHIM_MAX_FIELDS]; /* query arguments, still percent-encoded */
    size_t nargs;
    /* the answer */
    int sends;                 /* http_send* calls: must end at exactly 1 */
    int status;
    char content_type[64];
    char header[64], value[64]; /* the extra header, if any */
    unsigned char *body;       /* malloc'd; the harness frees it */
    size_t body_len;
    unsigned long long held_seq; /* http_send_when_durable's seq */
};

#endif
