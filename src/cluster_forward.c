/* cluster_forward: a read on a node that does not own the shopper is
 * answered by the owner: one blocking HTTP/1.1 request to the owner's
 * advertised URL, its status and body relayed. Only http://IPV4:PORT (the
 * URL each node advertises in the membership bucket): no name lookups, no
 * TLS, no redirects.
 *
 * Keep-alive: a connection whose answer was complete (Content-Length, no
 * "Connection: close") goes back to a small pool per owner address, at
 * most POOL_PER_OWNER idle ones for each of POOL_OWNERS owners, each
 * closed once idle for the caller's idle_ms (at most half the owners'
 * server.connection_timeout_s, so never one the owner is closing). An
 * answer must say where it ends: by Content-Length, or by the owner's
 * close after "Connection: close"; a chunked one, or one with neither,
 * is refused at once (-EPROTO) rather than read until the deadline (ltvd
 * sends neither). A pooled connection the owner has closed
 * is seen (readable: its end, or bytes nobody asked for) and dropped
 * before use; one that breaks before a byte of the request was sent is
 * dropped and the request sent once more on a new connection. Once
 * anything was sent, a failure is the caller's (503 owner_unavailable).
 *
 * Threads: any (a forwarder thread, http_defer.h, which waits for the
 * owner: at most timeout_ms; never an HTTP worker). The pool is under its own lock, a leaf. Owns nothing past
 * the call but out->body, the caller's, and the pooled sockets
 * (cluster_forward_close_all closes them). */
#include "cluster.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
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

/* *sent: bytes sent so far (the caller's, not reset). */
static int send_all(int fd, const char *p, size_t n, int64_t deadline, size_t *sent)
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
        *sent += (size_t)w;
    }
    return 0;
}

/* ---- the pool ------------------------------------------------------------ */

#define POOL_OWNERS CLUSTER_MEMBERS_MAX
#define POOL_PER_OWNER 4

typedef struct OwnerPool {
    struct sockaddr_in sa; /* meaningful while n > 0 */
    size_t n;
    int fd[POOL_PER_OWNER];
    int64_t since_ms[POOL_PER_OWNER]; /* when each went idle */
} OwnerPool;

static pthread_mutex_t pool_lock = PTHREAD_MUTEX_INITIALIZER;
static OwnerPool pool[POOL_OWNERS]; /* under pool_lock */

static bool same_addr(const struct sockaddr_in *a, const struct sockaddr_in *b)
{
    return a->sin_addr.s_addr == b->sin_addr.s_addr && a->sin_port == b->sin_port;
}

/* Under pool_lock: closes op's connections idle idle_ms or longer. */
static void pool_expire(OwnerPool *op, int64_t now, int idle_ms)
{
    size_t kept = 0;
    for (size_t i = 0; i < op->n; i++) {
        if (now - op->since_ms[i] >= idle_ms) {
            close(op->fd[i]);
            continue;
        }
        op->fd[kept] = op->fd[i];
        op->since_ms[kept++] = op->since_ms[i];
    }
    op->n = kept;
}

/* An idle connection to sa that still looks open, or -1. */
static int pool_take(const struct sockaddr_in *sa, int idle_ms)
{
    for (int tries = 0; tries <= POOL_PER_OWNER; tries++) {
        int fd = -1;
        int64_t now = mono_ms();
        pthread_mutex_lock(&pool_lock);
        for (size_t k = 0; k < POOL_OWNERS && fd < 0; k++) {
            OwnerPool *op = &pool[k];
            pool_expire(op, now, idle_ms);
            if (op->n && same_addr(&op->sa, sa))
                fd = op->fd[--op->n]; /* the newest: the least likely to be closed by the owner */
        }
        pthread_mutex_unlock(&pool_lock);
        if (fd < 0)
            return -1;
        /* idle, nothing may be readable: readable is the owner's close (or
         * an answer nobody asked for) */
        struct pollfd p = {.fd = fd, .events = POLLIN | POLLRDHUP};
        if (poll(&p, 1, 0) == 0)
            return fd;
        close(fd);
    }
    return -1;
}

/* Keeps fd for the next request to sa, or closes it if the pool is full. */
static void pool_give(const struct sockaddr_in *sa, int fd, int idle_ms)
{
    int64_t now = mono_ms();
    OwnerPool *slot = NULL;
    pthread_mutex_lock(&pool_lock);
    for (size_t k = 0; k < POOL_OWNERS; k++) {
        OwnerPool *op = &pool[k];
        pool_expire(op, now, idle_ms);
        if (op->n && same_addr(&op->sa, sa)) {
            slot = op;
            break;
        }
        if (!slot && op->n == 0)
            slot = op; /* a free one, unless sa has its own further on */
    }
    bool kept = slot && slot->n < POOL_PER_OWNER;
    if (kept) {
        slot->sa = *sa;
        slot->fd[slot->n] = fd;
        slot->since_ms[slot->n++] = now;
    }
    pthread_mutex_unlock(&pool_lock);
    if (!kept)
        close(fd);
}

void cluster_forward_close_all(void)
{
    pthread_mutex_lock(&pool_lock);
    for (size_t k = 0; k < POOL_OWNERS; k++) {
        for (size_t i = 0; i < pool[k].n; i++)
            close(pool[k].fd[i]);
        pool[k].n = 0;
    }
    pthread_mutex_unlock(&pool_lock);
}

/* ---- one request ---------------------------------------------------------- */

/* In the answer's head (hlen bytes): its Content-Length (-1 when absent;
 * 0 for 204 and 304, which have no body), whether the owner closes the
 * connection after it and whether it comes chunked. */
static void head_fields(const unsigned char *head, size_t hlen, long long *cl, bool *closes, bool *chunked)
{
    *cl = -1;
    *closes = false;
    *chunked = false;
    int status = 0;
    if (hlen > 12 && sscanf((const char *)head, "HTTP/1.%*c %3d", &status) == 1 && (status == 204 || status == 304))
        *cl = 0;
    const char *p = (const char *)head, *end = p + hlen;
    while (p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        size_t n = eol ? (size_t)(eol - p) : (size_t)(end - p);
        char line[256];
        if (n < sizeof line) {
            memcpy(line, p, n);
            line[n] = '\0';
            unsigned long long v;
            if (strncasecmp(line, "Content-Length:", 15) == 0 && sscanf(line + 15, "%llu", &v) == 1 &&
                v <= CLUSTER_FORWARD_MAX_BYTES)
                *cl = (long long)v;
            else if (strncasecmp(line, "Connection:", 11) == 0 && strcasestr(line + 11, "close"))
                *closes = true;
            else if (strncasecmp(line, "Transfer-Encoding:", 18) == 0)
                *chunked = true;
        }
        p += n + 1;
    }
}

/* Reads one answer into resp: up to its Content-Length, or to the end of
 * the connection when it has none and says "Connection: close"; -EPROTO
 * at once for a chunked answer or one that says neither. *reusable: the
 * connection can carry the next request. */
static int read_reply(int fd, int64_t deadline, ByteBuf *resp, bool *reusable)
{
    size_t hlen = 0;
    long long cl = -1;
    bool closes = false, chunked = false, eof = false;
    *reusable = false;
    while (!(hlen && cl >= 0 && resp->len >= hlen + (size_t)cl)) {
        int rc = wait_fd(fd, POLLIN, deadline);
        if (rc)
            return rc;
        if ((rc = bytebuf_reserve(resp, 16384)) != 0)
            return rc;
        ssize_t r = recv(fd, resp->p + resp->len, resp->cap - resp->len, 0);
        if (r < 0) {
            if (errno == EINTR || errno == EAGAIN)
                continue;
            return -errno;
        }
        if (r == 0) {
            eof = true;
            break;
        }
        size_t was = resp->len;
        resp->len += (size_t)r;
        if (resp->len > CLUSTER_FORWARD_MAX_BYTES)
            return -EMSGSIZE;
        if (!hlen) {
            const unsigned char *e = memmem(resp->p + (was > 3 ? was - 3 : 0), resp->len - (was > 3 ? was - 3 : 0),
                                            "\r\n\r\n", 4);
            if (e) {
                hlen = (size_t)(e - resp->p) + 4;
                head_fields(resp->p, hlen, &cl, &closes, &chunked);
                if (chunked || (cl < 0 && !closes))
                    return -EPROTO; /* no end this reader can find before the deadline */
            }
        }
    }
    if (!hlen)
        return -EPROTO;
    *reusable = !eof && !closes && cl >= 0 && resp->len == hlen + (size_t)cl;
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

/* A new connection to sa, within deadline: the socket, or -errno. */
static int open_conn(const struct sockaddr_in *sa, int64_t deadline)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    int rc = 0;
    if (connect(fd, (const struct sockaddr *)sa, sizeof *sa) != 0) {
        if (errno != EINPROGRESS) {
            rc = -errno;
        } else if ((rc = wait_fd(fd, POLLOUT, deadline)) == 0) {
            int soerr = 0;
            socklen_t sl = sizeof soerr;
            if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) != 0 || soerr)
                rc = soerr ? -soerr : -errno;
        }
    }
    if (rc) {
        close(fd);
        return rc;
    }
    return fd;
}

int cluster_forward(const char *base_url, const char *method, const char *path, const char *auth,
                    const char *body, size_t len, int timeout_ms, int idle_ms, ClusterReply *out)
{
    memset(out, 0, sizeof *out);
    struct sockaddr_in sa;
    if (cluster_parse_base(base_url, &sa))
        return -EINVAL;
    int64_t deadline = mono_ms() + timeout_ms;
    char head[1024 + 512];
    int hn = snprintf(head, sizeof head,
                      "%s %s HTTP/1.1\r\nHost: %s\r\nX-Ltvd-Forwarded: 1\r\n"
                      "Content-Type: application/json\r\nContent-Length: %zu\r\n%s%s%s\r\n",
                      method, path, base_url + 7, len, auth ? "Authorization: " : "", auth ? auth : "",
                      auth ? "\r\n" : "");
    if (hn < 0 || (size_t)hn >= sizeof head)
        return -EINVAL;
    int rc;
    for (int attempt = 0;; attempt++) {
        int fd = attempt == 0 ? pool_take(&sa, idle_ms) : -1;
        bool pooled = fd >= 0;
        if (!pooled && (fd = open_conn(&sa, deadline)) < 0)
            return fd;
        size_t sent = 0;
        bool reusable = false;
        ByteBuf resp = {0};
        rc = send_all(fd, head, (size_t)hn, deadline, &sent);
        if (!rc && len)
            rc = send_all(fd, body, len, deadline, &sent);
        if (!rc)
            rc = read_reply(fd, deadline, &resp, &reusable);
        if (!rc)
            rc = parse_reply(&resp, out);
        bytebuf_free(&resp);
        if (!rc && reusable)
            pool_give(&sa, fd, idle_ms);
        else
            close(fd);
        /* a pooled connection found broken before anything went out: once
         * more on a new one (after a byte was sent, never: the owner may
         * have the request) */
        if (rc && pooled && sent == 0 && attempt == 0)
            continue;
        break;
    }
    if (rc)
        bytebuf_free(&out->body);
    return rc;
}
