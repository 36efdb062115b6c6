/* cluster_forward.c against a fake owner on loopback (a thread here that
 * answers each request as the test sets): a kept-alive connection is
 * reused while idle less than idle_ms and not after; an answer that is
 * chunked, or has neither Content-Length nor "Connection: close", fails
 * with -EPROTO (it used to be read until the deadline); one that ends with
 * the owner's close after "Connection: close" is read to that end. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "cluster.h"
#include "test_util.h"

enum { ANSWER_LENGTH, ANSWER_CHUNKED, ANSWER_NO_LENGTH, ANSWER_CLOSE };

static atomic_int mode;     /* how the owner answers the next request */
static atomic_int accepted; /* connections the owner accepted */
static atomic_bool stop;
static int listen_fd;

/* Waits up to 100 ms for fd to be readable: 1, 0 (not yet) or -1. */
static int readable(int fd)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    int r = poll(&p, 1, 100);
    return r < 0 ? -1 : r;
}

/* One connection at a time: reads each request's head, answers it. */
static void *owner_main(void *arg)
{
    (void)arg;
    while (!atomic_load(&stop)) {
        if (readable(listen_fd) <= 0)
            continue;
        int fd = accept(listen_fd, NULL, NULL);
        if (fd < 0)
            continue;
        atomic_fetch_add(&accepted, 1);
        char buf[4096];
        size_t have = 0;
        while (!atomic_load(&stop)) {
            int r = readable(fd);
            if (r < 0)
                break;
            if (r == 0)
                continue;
            ssize_t n = recv(fd, buf + have, sizeof buf - 1 - have, 0);
            if (n <= 0)
                break; /* the forwarder closed it */
            have += (size_t)n;
            buf[have] = '\0';
            if (!strstr(buf, "\r\n\r\n"))
                continue; /* the requests here have no body */
            have = 0;
            const char *a = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
            int m = atomic_load(&mode);
            if (m == ANSWER_CHUNKED)
                a = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n";
            else if (m == ANSWER_NO_LENGTH)
                a = "HTTP/1.1 200 OK\r\n\r\nok";
            else if (m == ANSWER_CLOSE)
                a = "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nok";
            if (send(fd, a, strlen(a), MSG_NOSIGNAL) < 0 || m == ANSWER_CLOSE)
                break;
        }
        close(fd);
    }
    return NULL;
}

/* One GET through cluster_forward: its rc; *status and the body's bytes. */
static int get(const char *url, int idle_ms, int *status, char *body, size_t cap)
{
    ClusterReply rep;
    int rc = cluster_forward(url, "GET", "/v1/users/u/ltv", NULL, "", 0, 30000, idle_ms, &rep);
    body[0] = '\0';
    *status = 0;
    if (rc == 0) {
        *status = rep.status;
        snprintf(body, cap, "%.*s", (int)rep.body.len, rep.body.p ? (const char *)rep.body.p : "");
        bytebuf_free(&rep.body);
    }
    return rc;
}

int main(void)
{
    listen_fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t sl = sizeof sa;
    ASSERT(listen_fd >= 0 && bind(listen_fd, (struct sockaddr *)&sa, sizeof sa) == 0 && listen(listen_fd, 8) == 0);
    ASSERT(getsockname(listen_fd, (struct sockaddr *)&sa, &sl) == 0);
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%u", ntohs(sa.sin_port));
    pthread_t owner;
    ASSERT(pthread_create(&owner, NULL, owner_main, NULL) == 0);
    int status;
    char body[64];

    /* with a length: kept alive, the second request on the same connection */
    ASSERT(get(url, 10000, &status, body, sizeof body) == 0 && status == 200 && strcmp(body, "ok") == 0);
    ASSERT(get(url, 10000, &status, body, sizeof body) == 0 && status == 200);
    ASSERT(atomic_load(&accepted) == 1);

    /* idle longer than idle_ms: not used again, a new connection */
    usleep(200 * 1000);
    ASSERT(get(url, 50, &status, body, sizeof body) == 0 && status == 200);
    ASSERT(atomic_load(&accepted) == 2);

    /* chunked, or no end given: refused at once, never read to the deadline */
    atomic_store(&mode, ANSWER_CHUNKED);
    ASSERT(get(url, 10000, &status, body, sizeof body) == -EPROTO);
    atomic_store(&mode, ANSWER_NO_LENGTH);
    ASSERT(get(url, 10000, &status, body, sizeof body) == -EPROTO);

    /* "Connection: close" and no length: read to the owner's close */
    atomic_store(&mode, ANSWER_CLOSE);
    ASSERT(get(url, 10000, &status, body, sizeof body) == 0 && status == 200 && strcmp(body, "ok") == 0);
    atomic_store(&mode, ANSWER_LENGTH);
    ASSERT(get(url, 10000, &status, body, sizeof body) == 0 && status == 200 && strcmp(body, "ok") == 0);

    atomic_store(&stop, true);
    pthread_join(owner, NULL);
    cluster_forward_close_all();
    close(listen_fd);
    TEST_DONE("test_forward");
}
