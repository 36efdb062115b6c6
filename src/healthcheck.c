/* healthcheck: one HTTP GET over a non-blocking TCP socket, every step
 * bounded by one deadline. Reads the status line only. */
#include "healthcheck.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define HC_PATH_MAX 1024

typedef struct HcTarget {
    struct sockaddr_in addr;
    char host[64];          /* as written in the URL, for the Host header */
    char path[HC_PATH_MAX]; /* starts with '/' */
} HcTarget;

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* http://HOST[:PORT][/PATH] with HOST an IPv4 literal or "localhost". */
static int parse_url(const char *url, HcTarget *t, char *err, size_t errlen)
{
    static const char scheme[] = "http://";
    if (strncmp(url, scheme, sizeof scheme - 1) != 0) {
        snprintf(err, errlen, "URL must start with http://");
        return -EINVAL;
    }
    const char *host = url + sizeof scheme - 1;
    size_t hlen = strcspn(host, ":/");
    if (hlen == 0 || hlen >= sizeof t->host) {
        snprintf(err, errlen, "URL has no host, or a host longer than %zu bytes", sizeof t->host - 1);
        return -EINVAL;
    }
    memcpy(t->host, host, hlen);
    t->host[hlen] = '\0';
    memset(&t->addr, 0, sizeof t->addr);
    t->addr.sin_family = AF_INET;
    const char *ip = strcmp(t->host, "localhost") == 0 ? "127.0.0.1" : t->host;
    if (inet_pton(AF_INET, ip, &t->addr.sin_addr) != 1) {
        snprintf(err, errlen, "host '%s' is not an IPv4 address or localhost (no name lookups)", t->host);
        return -EINVAL;
    }
    const char *p = host + hlen;
    unsigned long port = 80;
    if (*p == ':') {
        char *end;
        errno = 0;
        port = strtoul(p + 1, &end, 10);
        if (errno || end == p + 1 || port < 1 || port > 65535 || (*end && *end != '/')) {
            snprintf(err, errlen, "bad port in URL");
            return -EINVAL;
        }
        p = end;
    }
    t->addr.sin_port = htons((uint16_t)port);
    const char *path = *p ? p : "/";
    size_t plen = strlen(path);
    if (plen >= sizeof t->path) {
        snprintf(err, errlen, "URL path longer than %d bytes", HC_PATH_MAX - 1);
        return -EINVAL;
    }
    for (size_t i = 0; i < plen; i++) {
        unsigned char ch = (unsigned char)path[i];
        if (ch <= 0x20 || ch >= 0x7f) { /* no spaces or CR/LF into the request line */
            snprintf(err, errlen, "URL path has a space, control or non-ASCII byte (percent-encode it)");
            return -EINVAL;
        }
    }
    memcpy(t->path, path, plen + 1);
    return 0;
}

/* Waits for `events` on fd until the deadline. */
static int wait_fd(int fd, short events, int64_t deadline)
{
    for (;;) {
        int64_t left = deadline - mono_ms();
        if (left <= 0)
            return -ETIMEDOUT;
        struct pollfd pfd = {fd, events, 0};
        int n = poll(&pfd, 1, (int)left);
        if (n > 0)
            return 0;
        if (n < 0 && errno != EINTR)
            return -errno;
    }
}

static int connect_by(int fd, const HcTarget *t, int64_t deadline)
{
    if (connect(fd, (const struct sockaddr *)&t->addr, sizeof t->addr) == 0)
        return 0;
    if (errno != EINPROGRESS && errno != EINTR)
        return -errno;
    int rc = wait_fd(fd, POLLOUT, deadline);
    if (rc)
        return rc;
    int soerr = 0;
    socklen_t len = sizeof soerr;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len) != 0)
        return -errno;
    return soerr ? -soerr : 0;
}

static int send_all(int fd, const char *buf, size_t len, int64_t deadline)
{
    size_t off = 0;
    while (off < len) {
        ssize_t n = send(fd, buf + off, len - off, MSG_NOSIGNAL);
        if (n > 0) {
            off += (size_t)n;
        } else if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
            int rc = wait_fd(fd, POLLOUT, deadline);
            if (rc)
                return rc;
        } else {
            return n < 0 ? -errno : -EPIPE;
        }
    }
    return 0;
}

/* Reads until the end of the status line (or the buffer is full, or EOF)
 * and returns its code: "HTTP/1.x NNN ...". */
static int read_status(int fd, int64_t deadline, char *err, size_t errlen)
{
    char buf[256];
    size_t len = 0;
    while (len < sizeof buf - 1 && !memchr(buf, '\n', len)) {
        ssize_t n = recv(fd, buf + len, sizeof buf - 1 - len, 0);
        if (n > 0) {
            len += (size_t)n;
        } else if (n == 0) {
            break;
        } else if (errno == EAGAIN || errno == EINTR) {
            int rc = wait_fd(fd, POLLIN, deadline);
            if (rc) {
                snprintf(err, errlen, "no answer within the timeout");
                return rc;
            }
        } else {
            snprintf(err, errlen, "read failed: %s", strerror(errno));
            return -errno;
        }
    }
    buf[len] = '\0';
    int code = 0;
    if (len < 12 || strncmp(buf, "HTTP/1.", 7) != 0 || buf[8] != ' ' || sscanf(buf + 9, "%3d", &code) != 1 ||
        code < 100 || code > 599) {
        buf[strcspn(buf, "\r\n")] = '\0';
        snprintf(err, errlen, "not an HTTP answer: '%.60s'", buf);
        return -EPROTO;
    }
    buf[strcspn(buf, "\r\n")] = '\0';
    snprintf(err, errlen, "%s", buf);
    return code;
}

int healthcheck_get(const char *url, int timeout_ms, char *err, size_t errlen)
{
    HcTarget t;
    err[0] = '\0';
    int rc = parse_url(url, &t, err, errlen);
    if (rc)
        return rc;
    int64_t deadline = mono_ms() + timeout_ms;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, errlen, "socket: %s", strerror(errno));
        return -errno;
    }
    rc = connect_by(fd, &t, deadline);
    if (rc) {
        snprintf(err, errlen, "cannot connect: %s", rc == -ETIMEDOUT ? "timed out" : strerror(-rc));
        goto out;
    }
    char req[HC_PATH_MAX + 256];
    int n = snprintf(req, sizeof req,
                     "GET %s HTTP/1.1\r\nHost: %s:%u\r\nUser-Agent: ltvd-health-check\r\nConnection: close\r\n\r\n",
                     t.path, t.host, (unsigned)ntohs(t.addr.sin_port));
    rc = send_all(fd, req, (size_t)n, deadline);
    if (rc) {
        snprintf(err, errlen, "cannot send the request: %s", rc == -ETIMEDOUT ? "timed out" : strerror(-rc));
        goto out;
    }
    rc = read_status(fd, deadline, err, errlen);
out:
    close(fd);
    return rc;
}
