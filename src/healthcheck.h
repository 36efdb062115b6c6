/* healthcheck: `ltvd --health-check URL`, a tiny HTTP/1.1 GET for container
 * health probes (Docker's HEALTHCHECK), so the image needs no curl or shell.
 *
 * Only http://IPV4[:PORT]/PATH and http://localhost[:PORT]/PATH: no name
 * lookups, no TLS, no redirects. Meant for the loopback address of the
 * ltvd it runs next to. Blocking; call from main only. */
#ifndef LTVD_HEALTHCHECK_H
#define LTVD_HEALTHCHECK_H

#include <stddef.h>

/* Connects, sends GET, reads the status line; all within timeout_ms.
 * Returns the HTTP status code (100-599) on an answer, or -errno (-EINVAL for
 * a URL it does not take, -ETIMEDOUT, -ECONNREFUSED, -EPROTO for an answer
 * that is not HTTP) with a one-line reason in err. */
int healthcheck_get(const char *url, int timeout_ms, char *err, size_t errlen);

#endif
