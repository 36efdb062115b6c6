/* cluster_forward: a read on a node that does not own the shopper is
 * answered by the owner: one blocking HTTP/1.1 request (Connection:
 * close) to the owner's advertised URL, its status and body relayed.
 * Only http://IPV4:PORT (the URL each node advertises in the membership
 * bucket): no name lookups, no TLS, no redirects.
 *
 * Threads: any (an HTTP thread, which waits for the owner: at most
 * timeout_ms). Owns nothing past the call but out->body, the caller's. */
#include "cluster.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int cluster_parse_base(const char *url, struct sockaddr_in *sa)
{
    char host[64];
    unsigned port = 80;
    if (strncmp(url, "http://", 7) != 0)
        return -EINVAL;
    const char *h = url + 7, *colon = strchr(h, ':');
    size_t hl = colon ? (size_t)(colon - h) : strcspn(h, "/");
    if (hl == 0 || hl >= sizeof host)
        return -EINVAL;
    memcpy(host, h, hl);
    host[hl] = '\0';
    if (colon && (sscanf(colon + 1, "%u", &port) != 1 || port == 0 || port > 65535))
        return -EINVAL;
    memset(sa, 0, sizeof *sa);
    sa->sin_family = AF_INET;
    sa->sin_port = htons((uint16_t)port);
    if (strcmp(host, "localhost") == 0)
        snprintf(host, sizeof host, "127.0.0.1");
    return inet_pton(AF_INET, host, &sa->sin_addr) == 1 ? 0 : -EINVAL;
}

static int wait_fd(int fd, short events, int64_t deadline)
{
    for (;;) {
        int64_t left = deadline - mono_ms();
        if (left <= 0)
            return -ETIMEDOUT;
        struct pollfd p = {.fd = fd, .events = events};
        int r = poll(&p, 1, (int)left);
        if (r > 0)
            return 0;
        if (r < 0 && errno != EINTR)
            return -errno;
    }
}

static int send_all(int fd, const char *p, size_t n, int64_t deadline)
{
    while (n > 0) {
        int rc = wait_fd(fd, POLLOUT, deadline);
        if (rc)
            return rc;
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR || errno == EAGAIN)
                continue;
            return -errno;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Splits the raw answer in resp into status and body (after the blank
 * line; Content-Length, when given, must match what came). */
static int parse_reply(ByteBuf *resp, ClusterReply *out)
{
    unsigned char *end = memmem(resp->p, resp->len, "\r\n\r\n", 4);
    int status;
    if (!end || resp->len < 12 || sscanf((const char *)resp->p, "HTTP/1.%*c %d", &status) != 1 || status < 100 ||
        status > 599)
        return -EPROTO;
    size_t hlen = (size_t)(end - resp->p) + 4, blen = resp->len - hlen;
    *end = '\0';
    for (char *line = strstr((char *)resp->p, "\r\n"); line; line = strstr(line + 2, "\r\n")) {
        unsigned long long cl;
        if (strncasecmp(line + 2, "Content-Length:", 15) == 0 && sscanf(line + 17, "%llu", &cl) == 1 &&
            cl != blen)
            return -EPROTO;
    }
    out->status = status;
    if (blen && bytebuf_put(&out->body, resp->p + hlen, blen))
        return -ENOMEM;
    return 0;
}

int cluster_forward(const char *base_url, const char *method, const char *path, const char *auth,
                    const char *body, size_t len, int timeout_ms, ClusterReply *out)
{
    memset(out, 0, sizeof *out);
    struct sockaddr_in sa;
    if (cluster_parse_base(base_url, &sa))
        return -EINVAL;
    int64_t deadline = mono_ms() + timeout_ms;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    int rc = 0;
    ByteBuf resp = {0};
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        if (errno != EINPROGRESS) {
            rc = -errno;
            goto out;
        }
        int soerr = 0;
        socklen_t sl = sizeof soerr;
        if ((rc = wait_fd(fd, POLLOUT, deadline)) != 0)
            goto out;
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) != 0 || soerr) {
            rc = soerr ? -soerr : -errno;
            goto out;
        }
    }
    char head[1024 + 512];
    int hn = snprintf(head, sizeof head,
                      "%s %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\nX-Ltvd-Forwarded: 1\r\n"
                      "Content-Type: application/json\r\nContent-Length: %zu\r\n%s%s%s\r\n",
                      method, path, base_url + 7, len, auth ? "Authorization: " : "", auth ? auth : "",
                      auth ? "\r\n" : "");
    if (hn < 0 || (size_t)hn >= sizeof head) {
        rc = -EINVAL;
        goto out;
    }
    if ((rc = send_all(fd, head, (size_t)hn, deadline)) || (len && (rc = send_all(fd, body, len, deadline))))
        goto out;
    for (;;) {
        if ((rc = wait_fd(fd, POLLIN, deadline)) != 0)
            goto out;
        if ((rc = bytebuf_reserve(&resp, 16384)) != 0)
            goto out;
        ssize_t r = recv(fd, resp.p + resp.len, resp.cap - resp.len, 0);
        if (r < 0) {
            if (errno == EINTR || errno == EAGAIN)
                continue;
            rc = -errno;
            goto out;
        }
        if (r == 0)
            break;
        resp.len += (size_t)r;
        if (resp.len > CLUSTER_FORWARD_MAX_BYTES) {
            rc = -EMSGSIZE;
            goto out;
        }
    }
    rc = parse_reply(&resp, out);
out:
    close(fd);
    bytebuf_free(&resp);
    if (rc)
        bytebuf_free(&out->body);
    return rc;
}
