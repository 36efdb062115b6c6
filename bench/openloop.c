/* openloop: an open-loop HTTP/1.1 keep-alive load generator for the tail
 * benchmark (bench/tail_bench, docs/PERFORMANCE.md "Tail latency").
 *
 * Requests arrive at a constant rate R whatever the server does: request i
 * is due at t0 + i/R and goes out on connection i mod C. Its latency runs
 * from that due time to the last byte of its response. A connection carries
 * one request at a time (no pipelining), so when the server stalls, the
 * requests that fall due on a busy connection wait, and the wait counts
 * against them. A closed-loop tool (wrk) instead stops sending during a
 * stall and records one slow request where a client at a fixed arrival
 * rate would have seen hundreds: coordinated omission.
 *
 * Paths (and a POST body) come from a template: {id} becomes a uniform
 * random integer in [0, N) (seeded PRNG), {seq} the request's index i.
 * Requests due in the warm-up are sent but not counted. Latencies go to a
 * log-bucketed histogram (128 sub-buckets per power of two: < 0.8% relative
 * error, fixed 36 KiB). The result is one JSON line on stdout.
 *
 * Bounds: loopback targets only (127.0.0.0/8); at most connect (5 s) +
 * warm-up + duration + drain seconds of running, then it stops by itself;
 * requests still unanswered at the end are reported as "unfinished" and
 * enter the histogram with their latency so far (a lower bound). SIGINT or
 * SIGTERM ends the window early (a benchmark measuring "while a job runs"
 * stops it when the job is done): no request is scheduled after that, the
 * ones out are drained and the result covers the shortened window (none
 * if it came during the warm-up); a second signal kills.
 *
 * One thread, epoll; the wake-ups use epoll_pwait2's nanosecond timeout
 * with a 1 µs timer slack. The client's own lateness (it shares the CPU)
 * shows in "send_lag_us" (due time to send time, which also includes the
 * wait for a busy connection) and in "achieved_rps" below the rate.
 *
 *   openloop -r 50000 -c 32 -d 10 -w 2 -p '/v1/users/u{id}/ltv' -n 1000000 http://127.0.0.1:8080
 *   openloop -r 2000 -m POST -b '{"user_id":"u{id}","type":"view","event_id":"run1-{seq}"}' ... */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* ---- limits ------------------------------------------------------------ */

enum {
    MAX_CONNECTIONS = 10000,
    MAX_HEADERS = 16,            /* -H options */
    MAX_PATH_TEMPLATE = 4096,
    MAX_BODY_TEMPLATE = 65536,
    MAX_EXTRA_HEADERS = 8192,    /* all -H lines together */
    RESPONSE_HEAD_CAP = 16384,   /* status line + headers of one response */
    MAX_EVENTS = 256,
};
static const double MAX_RATE = 10e6, MAX_WARMUP_S = 600, MAX_DURATION_S = 3600, MAX_DRAIN_S = 600;
static const uint64_t CONNECT_TIMEOUT_NS = 5000000000ull;
static const uint64_t RECONNECT_BACKOFF_NS = 100000000ull; /* after a failed fresh connection */

/* ---- clock ------------------------------------------------------------- */

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* ---- histogram --------------------------------------------------------- */

/* Values in ns. Below 2*HIST_SUB a bucket is one ns; above, a value with its
 * top bit at m falls in one of HIST_SUB buckets of width 2^(m-HIST_SUB_BITS). */
enum {
    HIST_SUB_BITS = 7,
    HIST_SUB = 1 << HIST_SUB_BITS,
    HIST_MAX_BITS = 42, /* values clamp at 2^42 ns, about 73 minutes */
    HIST_BUCKETS = (HIST_MAX_BITS - HIST_SUB_BITS + 1) * HIST_SUB,
};

typedef struct {
    uint64_t counts[HIST_BUCKETS];
    uint64_t n, max;
    double sum;
} Hist;

static size_t hist_index(uint64_t v)
{
    if (v >= (1ull << HIST_MAX_BITS))
        v = (1ull << HIST_MAX_BITS) - 1;
    if (v < 2 * HIST_SUB)
        return (size_t)v;
    int m = 63 - __builtin_clzll(v);
    int shift = m - HIST_SUB_BITS;
    return (size_t)(shift + 1) * HIST_SUB + (size_t)((v >> shift) - HIST_SUB);
}

/* The largest value that lands in bucket i. */
static uint64_t hist_upper(size_t i)
{
    if (i < 2 * HIST_SUB)
        return i;
    int shift = (int)(i / HIST_SUB) - 1;
    uint64_t lower = (uint64_t)(i % HIST_SUB + HIST_SUB) << shift;
    return lower + (1ull << shift) - 1;
}

static void hist_record(Hist *h, uint64_t v)
{
    h->counts[hist_index(v)]++;
    h->n++;
    h->sum += (double)v;
    if (v > h->max)
        h->max = v;
}

/* The value at percentile p (0 < p <= 100): the upper edge of the bucket
 * holding the ceil(p/100 * n)-th smallest value, at most the maximum. */
static uint64_t hist_percentile(const Hist *h, double p)
{
    if (!h->n)
        return 0;
    double x = p / 100.0 * (double)h->n;
    uint64_t rank = (uint64_t)x;
    if ((double)rank < x || rank < 1)
        rank++;
    if (rank > h->n)
        rank = h->n;
    uint64_t seen = 0;
    for (size_t i = 0; i < HIST_BUCKETS; i++) {
        seen += h->counts[i];
        if (seen >= rank) {
            uint64_t v = hist_upper(i);
            return v < h->max ? v : h->max;
        }
    }
    return h->max;
}

/* ---- templates --------------------------------------------------------- */

/* A path or body with {id} and {seq} placeholders, split at them. */
enum { SEG_TEXT, SEG_ID, SEG_SEQ };
typedef struct {
    int kind;
    const char *text; /* SEG_TEXT: not NUL-terminated */
    size_t len;
} Segment;

typedef struct {
    Segment *segs;
    size_t n;
    size_t max_len; /* longest expansion: text + 20 digits per placeholder */
} Template;

static int template_parse(Template *t, const char *s)
{
    size_t cap = 1;
    for (const char *p = s; *p; p++)
        cap += *p == '{' ? 2 : 0;
    t->segs = calloc(cap + 1, sizeof *t->segs);
    if (!t->segs)
        return -ENOMEM;
    t->n = 0;
    t->max_len = 0;
    const char *start = s;
    for (const char *p = s;; p++) {
        int kind = -1;
        size_t skip = 0;
        if (*p == '{' && strncmp(p, "{id}", 4) == 0)
            kind = SEG_ID, skip = 4;
        else if (*p == '{' && strncmp(p, "{seq}", 5) == 0)
            kind = SEG_SEQ, skip = 5;
        if (kind < 0 && *p)
            continue;
        if (p > start) {
            t->segs[t->n++] = (Segment){SEG_TEXT, start, (size_t)(p - start)};
            t->max_len += (size_t)(p - start);
        }
        if (kind < 0)
            break;
        t->segs[t->n++] = (Segment){kind, NULL, 0};
        t->max_len += 20;
        p += skip - 1;
        start = p + 1;
    }
    return 0;
}

static size_t put_u64(char *out, uint64_t v)
{
    char tmp[20];
    size_t n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    for (size_t i = 0; i < n; i++)
        out[i] = tmp[n - 1 - i];
    return n;
}

/* Writes the expansion to out (room for t->max_len); returns its length. */
static size_t template_expand(const Template *t, char *out, uint64_t id, uint64_t seq)
{
    size_t len = 0;
    for (size_t i = 0; i < t->n; i++) {
        const Segment *g = &t->segs[i];
        if (g->kind == SEG_TEXT) {
            memcpy(out + len, g->text, g->len);
            len += g->len;
        } else {
            len += put_u64(out + len, g->kind == SEG_ID ? id : seq);
        }
    }
    return len;
}

/* splitmix64: a small, well-mixed generator; one stream for the run. */
static uint64_t rng_next(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* ---- the run ----------------------------------------------------------- */

typedef enum { CONN_DOWN, CONN_CONNECTING, CONN_IDLE, CONN_SENDING, CONN_WAITING } ConnState;

typedef struct {
    int fd;
    uint32_t idx;       /* this connection's number c: it carries requests c, c+C, c+2C, ... */
    ConnState state;
    bool fresh;         /* connected, no response yet: a failure now backs off */
    uint64_t next;      /* k of the next request to send (global index idx + k*C) */
    uint64_t retry_ns;  /* CONN_DOWN: no reconnect before this */
    uint64_t due_ns;    /* the request in flight: when it was due */
    char *out;          /* the request being sent: (out_cap,) */
    size_t out_len, out_off;
    char head[RESPONSE_HEAD_CAP]; /* response status line and headers */
    size_t head_len;
    int64_t body_left;  /* -1 while reading the head */
    int status;
    bool close_after;   /* the response said Connection: close (or was HTTP/1.0) */
} Conn;

typedef struct {
    /* options */
    struct sockaddr_in addr;
    char host[64];
    double rate, warmup_s, duration_s, drain_s;
    uint32_t conns;
    uint64_t ids, seed;
    const char *method, *path_src, *body_src;
    char extra_headers[MAX_EXTRA_HEADERS]; /* "Name: value\r\n" lines */
    size_t extra_len;
    bool has_content_type;
    bool stopped;     /* the window was ended early by a signal */
    /* derived */
    Template path, body;
    size_t out_cap;
    char *body_buf; /* (body.max_len,) */
    uint64_t rng;
    uint64_t t0, warm_end, end, deadline;
    double period_ns;
    uint64_t total;   /* requests due in [t0, end) */
    uint64_t gi;      /* next request index the schedule has not reached */
    uint64_t settled; /* requests answered, failed or given up */
    int ep;
    Conn *conn;       /* (conns,) */
    /* results, for requests due in [warm_end, end) */
    Hist lat, lag;
    uint64_t completed_in_window; /* responses that arrived inside the window (achieved_rps) */
    uint64_t non2xx, errors, unfinished;
} Run;

static uint64_t due_of(const Run *r, uint64_t i)
{
    return r->t0 + (uint64_t)((double)i * r->period_ns);
}

static bool in_window(const Run *r, uint64_t due)
{
    return due >= r->warm_end && due < r->end;
}

static uint64_t conn_global(const Run *r, const Conn *c)
{
    return c->idx + c->next * r->conns;
}

static void conn_close(Conn *c)
{
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    c->state = CONN_DOWN;
}

/* Starts a non-blocking connect; the connection is CONNECTING or IDLE
 * after, or DOWN when the connect failed at once. */
static void conn_open(Run *r, Conn *c, uint64_t now)
{
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) {
        c->state = CONN_DOWN;
        c->retry_ns = now + RECONNECT_BACKOFF_NS;
        return;
    }
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    int rc = connect(c->fd, (struct sockaddr *)&r->addr, sizeof r->addr);
    if (rc < 0 && errno != EINPROGRESS) {
        conn_close(c);
        c->retry_ns = now + RECONNECT_BACKOFF_NS;
        return;
    }
    struct epoll_event ev = {.events = EPOLLIN | (rc < 0 ? EPOLLOUT : 0), .data.ptr = c};
    if (epoll_ctl(r->ep, EPOLL_CTL_ADD, c->fd, &ev) < 0) {
        conn_close(c);
        c->retry_ns = now + RECONNECT_BACKOFF_NS;
        return;
    }
    c->state = rc < 0 ? CONN_CONNECTING : CONN_IDLE;
    c->fresh = true;
}

static void set_events(Run *r, Conn *c, uint32_t events)
{
    struct epoll_event ev = {.events = events, .data.ptr = c};
    epoll_ctl(r->ep, EPOLL_CTL_MOD, c->fd, &ev);
}

static void conn_fail(Run *r, Conn *c, uint64_t now);
static void conn_catch_up(Run *r, Conn *c, uint64_t now);

/* Writes what is left of the request; SENDING until it is all out. */
static void conn_write(Run *r, Conn *c, uint64_t now)
{
    while (c->out_off < c->out_len) {
        ssize_t n = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
        if (n > 0) {
            c->out_off += (size_t)n;
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if (c->state != CONN_SENDING)
                set_events(r, c, EPOLLIN | EPOLLOUT);
            c->state = CONN_SENDING;
            return;
        } else {
            conn_fail(r, c, now);
            return;
        }
    }
    if (c->state == CONN_SENDING)
        set_events(r, c, EPOLLIN);
    c->state = CONN_WAITING;
}

/* Sends the connection's next request (it is IDLE and the request is due). */
static void conn_send(Run *r, Conn *c, uint64_t now)
{
    uint64_t i = conn_global(r, c);
    uint64_t id = r->ids > 1 ? rng_next(&r->rng) % r->ids : 0;
    char *o = c->out;
    size_t len = 0;
    len += (size_t)sprintf(o, "%s ", r->method);
    len += template_expand(&r->path, o + len, id, i);
    len += (size_t)sprintf(o + len, " HTTP/1.1\r\nHost: %s\r\n", r->host);
    memcpy(o + len, r->extra_headers, r->extra_len);
    len += r->extra_len;
    if (r->body_src) {
        size_t blen = template_expand(&r->body, r->body_buf, id, i);
        if (!r->has_content_type)
            len += (size_t)sprintf(o + len, "Content-Type: application/json\r\n");
        len += (size_t)sprintf(o + len, "Content-Length: %zu\r\n\r\n", blen);
        memcpy(o + len, r->body_buf, blen);
        len += blen;
    } else {
        memcpy(o + len, "\r\n", 2);
        len += 2;
    }
    c->out_len = len;
    c->out_off = 0;
    c->due_ns = due_of(r, i);
    c->head_len = 0;
    c->body_left = -1;
    c->status = 0;
    c->close_after = false;
    if (in_window(r, c->due_ns))
        hist_record(&r->lag, now > c->due_ns ? now - c->due_ns : 0);
    c->state = CONN_WAITING; /* in flight from here: a failed write counts */
    conn_write(r, c, now);
}

/* The request in flight (if any) failed: count it, drop the connection,
 * and deal with what is due on it. */
static void conn_fail(Run *r, Conn *c, uint64_t now)
{
    bool had_request = c->state == CONN_SENDING || c->state == CONN_WAITING;
    bool was_fresh = c->fresh;
    conn_close(c);
    c->retry_ns = was_fresh ? now + RECONNECT_BACKOFF_NS : now;
    if (had_request) {
        if (in_window(r, c->due_ns))
            r->errors++;
        r->settled++;
        c->next++;
    }
    conn_catch_up(r, c, now);
}

/* After a connection frees up (answered, connected or failed): sends its
 * oldest due request, or reconnects for it, or, while it is down and
 * backing off, counts each due request as an error. */
static void conn_catch_up(Run *r, Conn *c, uint64_t now)
{
    while (conn_global(r, c) < r->total && due_of(r, conn_global(r, c)) <= now) {
        if (c->state == CONN_IDLE) {
            conn_send(r, c, now);
            return;
        }
        if (c->state != CONN_DOWN)
            return; /* connecting or busy: it comes back here */
        if (now >= c->retry_ns) {
            conn_open(r, c, now);
            if (c->state != CONN_DOWN)
                continue;
        }
        if (in_window(r, due_of(r, conn_global(r, c))))
            r->errors++;
        r->settled++;
        c->next++;
    }
}

/* Case-insensitive search for a header line "name: value" in head[0, len). */
static const char *find_header(const char *head, size_t len, const char *name)
{
    size_t nl = strlen(name);
    for (const char *p = head; p + nl + 2 < head + len; p++) {
        if (p[0] == '\n' && strncasecmp(p + 1, name, nl) == 0 && p[1 + nl] == ':') {
            p += 2 + nl;
            while (*p == ' ' || *p == '\t')
                p++;
            return p;
        }
    }
    return NULL;
}

/* The whole response is in: record it, then free the connection. */
static void conn_done(Run *r, Conn *c, uint64_t now)
{
    uint64_t lat = now - c->due_ns;
    if (in_window(r, c->due_ns)) {
        hist_record(&r->lat, lat);
        if (c->status < 200 || c->status > 299)
            r->non2xx++;
    }
    if (now >= r->warm_end && now < r->end)
        r->completed_in_window++;
    r->settled++;
    c->next++;
    c->fresh = false;
    if (c->close_after) {
        conn_close(c);
        c->retry_ns = now;
    } else {
        c->state = CONN_IDLE;
    }
    conn_catch_up(r, c, now);
}

/* Parses the status line and headers in head[0, end); returns 0 or -1 for a
 * response this tool does not read (no Content-Length, chunked). */
static int parse_head(Conn *c, size_t end)
{
    c->head[end - 1] = '\0'; /* the last '\n' of "\r\n\r\n": headers end before it */
    if (end < 12 || strncmp(c->head, "HTTP/1.", 7) != 0)
        return -1;
    c->status = atoi(c->head + 9);
    if (c->head[7] == '0')
        c->close_after = true;
    const char *v = find_header(c->head, end, "connection");
    if (v && strncasecmp(v, "close", 5) == 0)
        c->close_after = true;
    if (find_header(c->head, end, "transfer-encoding"))
        return -1;
    v = find_header(c->head, end, "content-length");
    if (!v) /* no body only for 1xx, 204, 304 */
        return (c->status == 204 || c->status == 304) ? (c->body_left = 0, 0) : -1;
    char *e;
    long long cl = strtoll(v, &e, 10);
    if (e == v || cl < 0)
        return -1;
    c->body_left = cl;
    return 0;
}

static void conn_read(Run *r, Conn *c, uint64_t now)
{
    if (c->state != CONN_WAITING) {
        /* nothing asked: EOF is the server closing an idle keep-alive
         * connection; bytes are a protocol error */
        char tmp[512];
        ssize_t n = recv(c->fd, tmp, sizeof tmp, 0);
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            return;
        if (n == 0 && c->state == CONN_IDLE) {
            conn_close(c);
            c->retry_ns = now;
            return;
        }
        conn_fail(r, c, now);
        return;
    }
    ssize_t n;
    if (c->body_left < 0) {
        n = recv(c->fd, c->head + c->head_len, sizeof c->head - 1 - c->head_len, 0);
        if (n > 0) {
            size_t from = c->head_len > 3 ? c->head_len - 3 : 0;
            c->head_len += (size_t)n;
            c->head[c->head_len] = '\0';
            char *e = strstr(c->head + from, "\r\n\r\n");
            if (!e) {
                if (c->head_len >= sizeof c->head - 1)
                    conn_fail(r, c, now); /* headers too large */
                return;
            }
            size_t end = (size_t)(e - c->head) + 4;
            size_t extra = c->head_len - end;
            if (parse_head(c, end) < 0 || (int64_t)extra > c->body_left) {
                conn_fail(r, c, now); /* unreadable, or bytes past the response */
                return;
            }
            c->body_left -= (int64_t)extra;
            if (c->body_left == 0)
                conn_done(r, c, now);
            return;
        }
    } else {
        char sink[65536];
        size_t want = c->body_left < (int64_t)sizeof sink ? (size_t)c->body_left : sizeof sink;
        n = recv(c->fd, sink, want, 0);
        if (n > 0) {
            c->body_left -= n;
            if (c->body_left == 0)
                conn_done(r, c, now);
            return;
        }
    }
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    conn_fail(r, c, now); /* EOF or error before the response was complete */
}

static void conn_event(Run *r, Conn *c, uint32_t events, uint64_t now)
{
    if (c->state == CONN_CONNECTING) {
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err) {
            conn_fail(r, c, now);
            return;
        }
        c->state = CONN_IDLE;
        set_events(r, c, EPOLLIN);
        conn_catch_up(r, c, now);
        return;
    }
    if ((events & EPOLLOUT) && c->state == CONN_SENDING)
        conn_write(r, c, now);
    if ((events & (EPOLLIN | EPOLLHUP | EPOLLERR)) && c->fd >= 0)
        conn_read(r, c, now);
}

/* Opens every connection; 0 once all are up within CONNECT_TIMEOUT_NS. */
static int connect_all(Run *r)
{
    uint64_t start = now_ns();
    for (uint32_t i = 0; i < r->conns; i++) {
        conn_open(r, &r->conn[i], start);
        if (r->conn[i].state == CONN_DOWN)
            return -ECONNREFUSED;
    }
    struct epoll_event evs[MAX_EVENTS];
    for (;;) {
        uint32_t up = 0;
        for (uint32_t i = 0; i < r->conns; i++) {
            if (r->conn[i].state == CONN_DOWN)
                return -ECONNREFUSED;
            up += r->conn[i].state == CONN_IDLE;
        }
        if (up == r->conns)
            return 0;
        if (now_ns() - start > CONNECT_TIMEOUT_NS)
            return -ETIMEDOUT;
        int n = epoll_wait(r->ep, evs, MAX_EVENTS, 100);
        for (int k = 0; k < n; k++) {
            Conn *c = evs[k].data.ptr;
            if (c->state != CONN_CONNECTING)
                continue;
            int err = 0;
            socklen_t len = sizeof err;
            getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
            if (err)
                return -err;
            c->state = CONN_IDLE;
            set_events(r, c, EPOLLIN);
        }
    }
}

static volatile sig_atomic_t stop_requested;

static void on_stop_signal(int sig)
{
    (void)sig;
    stop_requested = 1;
}

/* Ends the window at `now`: requests due from now on are not sent (during
 * the warm-up the window is empty). */
static void stop_early(Run *r, uint64_t now)
{
    r->stopped = true;
    if (now >= r->end)
        return;
    /* every request below gi is due at or before now, gi's is after */
    r->end = now + 1;
    r->total = r->gi;
    if (r->warm_end > r->end)
        r->warm_end = r->end;
    uint64_t deadline = now + (uint64_t)(r->drain_s * 1e9);
    if (deadline < r->deadline)
        r->deadline = deadline;
}

static void run_loop(Run *r)
{
    struct epoll_event evs[MAX_EVENTS];
    for (;;) {
        uint64_t now = now_ns();
        if (stop_requested && !r->stopped)
            stop_early(r, now);
        /* the schedule: each request that fell due goes out now, unless its
         * connection is still busy with an earlier one (then it goes out as
         * soon as that is answered, its wait counting in its latency) */
        while (r->gi < r->total && due_of(r, r->gi) <= now) {
            Conn *c = &r->conn[r->gi % r->conns];
            if (c->next == r->gi / r->conns)
                conn_catch_up(r, c, now);
            r->gi++;
        }
        if (r->settled >= r->total || now >= r->deadline)
            return;
        /* a connection that is down never holds due requests (they were
         * sent on a new connection or counted as errors), so the next
         * wake-up is the schedule's */
        uint64_t wake = r->gi < r->total ? due_of(r, r->gi) : r->deadline;
        uint64_t wait = wake > now ? wake - now : 0;
        struct timespec ts = {.tv_sec = (time_t)(wait / 1000000000ull), .tv_nsec = (long)(wait % 1000000000ull)};
        int n = epoll_pwait2(r->ep, evs, MAX_EVENTS, &ts, NULL);
        if (n < 0 && errno != EINTR) {
            perror("openloop: epoll_pwait2");
            return;
        }
        now = now_ns();
        for (int k = 0; k < n; k++)
            conn_event(r, evs[k].data.ptr, evs[k].events, now);
    }
}

/* At the deadline: every request due in the window and not settled is
 * unfinished; it enters the histogram with its latency so far. */
static void count_unfinished(Run *r, uint64_t now)
{
    for (uint32_t i = 0; i < r->conns; i++) {
        Conn *c = &r->conn[i];
        for (uint64_t g = conn_global(r, c); g < r->total; g += r->conns) {
            uint64_t due = due_of(r, g);
            if (!in_window(r, due))
                continue;
            r->unfinished++;
            hist_record(&r->lat, now > due ? now - due : 0);
        }
    }
}

/* ---- output ------------------------------------------------------------ */

static void json_string(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\')
            fprintf(f, "\\%c", ch);
        else if (ch < 0x20)
            fprintf(f, "\\u%04x", ch);
        else
            fputc(ch, f);
    }
    fputc('"', f);
}

static void json_hist(FILE *f, const Hist *h)
{
    fprintf(f, "{\"p50\":%.1f,\"p90\":%.1f,\"p99\":%.1f,\"p99_9\":%.1f,\"max\":%.1f,\"mean\":%.1f}",
            hist_percentile(h, 50) / 1e3, hist_percentile(h, 90) / 1e3, hist_percentile(h, 99) / 1e3,
            hist_percentile(h, 99.9) / 1e3, h->max / 1e3, h->n ? h->sum / (double)h->n / 1e3 : 0.0);
}

static void print_result(const Run *r)
{
    FILE *f = stdout;
    double window_s = r->end > r->warm_end ? (double)(r->end - r->warm_end) / 1e9 : 0.0;
    fprintf(f, "{\"target\":\"%s\",\"method\":", r->host);
    json_string(f, r->method);
    fprintf(f, ",\"path\":");
    json_string(f, r->path_src);
    fprintf(f, ",\"ids\":%llu,\"rate\":%.3f,\"connections\":%u,\"warmup_s\":%.3f,\"duration_s\":%.3f,"
               "\"requests\":%llu,\"answered\":%llu,\"errors\":%llu,\"unfinished\":%llu,\"non2xx\":%llu,"
               "\"achieved_rps\":%.1f,\"stopped_early\":%s,\"latency_us\":",
            (unsigned long long)r->ids, r->rate, r->conns, r->warmup_s, window_s,
            (unsigned long long)(r->lat.n + r->errors), (unsigned long long)(r->lat.n - r->unfinished),
            (unsigned long long)r->errors, (unsigned long long)r->unfinished, (unsigned long long)r->non2xx,
            window_s > 0 ? (double)r->completed_in_window / window_s : 0.0, r->stopped ? "true" : "false");
    json_hist(f, &r->lat);
    fprintf(f, ",\"send_lag_us\":");
    json_hist(f, &r->lag);
    fprintf(f, "}\n");
    fflush(f);
}

/* ---- command line ------------------------------------------------------ */

static void usage(FILE *f)
{
    fprintf(f,
            "usage: openloop -r RATE [options] http://127.0.0.1:PORT\n"
            "  -r, --rate R          requests per second, constant arrival (required)\n"
            "  -c, --connections C   keep-alive connections, request i on i mod C (default 32)\n"
            "  -d, --duration S      measured seconds (default 10)\n"
            "  -w, --warmup S        seconds sent first and not counted (default 2)\n"
            "      --drain S         seconds to wait for late answers after the end (default 5)\n"
            "  -p, --path T          path template; {id} random in [0, N), {seq} the request index (default /)\n"
            "  -n, --ids N           range of {id} (default 1)\n"
            "  -s, --seed S          PRNG seed (default 1)\n"
            "  -m, --method M        GET or POST (default GET; POST needs --body)\n"
            "  -b, --body T          request body template, sent as application/json\n"
            "  -H, --header 'N: V'   extra request header (repeatable)\n"
            "Prints one JSON line: requests, achieved_rps, errors, non2xx, unfinished, latency_us\n"
            "{p50,p90,p99,p99_9,max,mean} from each request's due time, send_lag_us.\n"
            "SIGINT/SIGTERM end the window early (duration_s then says how long it was).\n");
}

static int parse_double(const char *s, double lo, double hi, double *out)
{
    char *e;
    errno = 0;
    double v = strtod(s, &e);
    if (errno || e == s || *e || !(v >= lo && v <= hi))
        return -EINVAL;
    *out = v;
    return 0;
}

static int parse_u64(const char *s, uint64_t lo, uint64_t hi, uint64_t *out)
{
    char *e;
    errno = 0;
    unsigned long long v = strtoull(s, &e, 10);
    if (errno || e == s || *e || *s == '-' || v < lo || v > hi)
        return -EINVAL;
    *out = v;
    return 0;
}

/* http://HOST:PORT[/], HOST a 127.x.y.z address or localhost. */
static int parse_url(Run *r, const char *url)
{
    if (strncmp(url, "http://", 7) != 0)
        return -EINVAL;
    const char *h = url + 7;
    const char *colon = strchr(h, ':');
    if (!colon || colon == h || (size_t)(colon - h) >= 40)
        return -EINVAL;
    char host[40];
    memcpy(host, h, (size_t)(colon - h));
    host[colon - h] = '\0';
    char *e;
    long port = strtol(colon + 1, &e, 10);
    if (e == colon + 1 || (*e && strcmp(e, "/") != 0) || port < 1 || port > 65535)
        return -EINVAL;
    memset(&r->addr, 0, sizeof r->addr);
    r->addr.sin_family = AF_INET;
    r->addr.sin_port = htons((uint16_t)port);
    if (strcmp(host, "localhost") == 0)
        strcpy(host, "127.0.0.1");
    if (inet_pton(AF_INET, host, &r->addr.sin_addr) != 1)
        return -EINVAL;
    if ((ntohl(r->addr.sin_addr.s_addr) >> 24) != 127)
        return -EPERM;
    snprintf(r->host, sizeof r->host, "%s:%ld", host, port);
    return 0;
}

static int add_header(Run *r, const char *h)
{
    const char *colon = strchr(h, ':');
    size_t len = strlen(h);
    if (!colon || colon == h || strpbrk(h, "\r\n") || r->extra_len + len + 2 > sizeof r->extra_headers)
        return -EINVAL;
    memcpy(r->extra_headers + r->extra_len, h, len);
    memcpy(r->extra_headers + r->extra_len + len, "\r\n", 2);
    r->extra_len += len + 2;
    if ((size_t)(colon - h) == 12 && strncasecmp(h, "content-type", 12) == 0)
        r->has_content_type = true;
    return 0;
}

static int parse_args(Run *r, int argc, char **argv)
{
    static const struct option opts[] = {
        {"rate", required_argument, 0, 'r'},   {"connections", required_argument, 0, 'c'},
        {"duration", required_argument, 0, 'd'}, {"warmup", required_argument, 0, 'w'},
        {"drain", required_argument, 0, 'D'},  {"path", required_argument, 0, 'p'},
        {"ids", required_argument, 0, 'n'},    {"seed", required_argument, 0, 's'},
        {"method", required_argument, 0, 'm'}, {"body", required_argument, 0, 'b'},
        {"header", required_argument, 0, 'H'}, {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    r->conns = 32;
    r->duration_s = 10;
    r->warmup_s = 2;
    r->drain_s = 5;
    r->path_src = "/";
    r->ids = 1;
    r->seed = 1;
    r->method = "GET";
    int headers = 0, opt;
    uint64_t u;
    while ((opt = getopt_long(argc, argv, "r:c:d:w:p:n:s:m:b:H:h", opts, NULL)) != -1) {
        int rc = 0;
        switch (opt) {
        case 'r': rc = parse_double(optarg, 1e-3, MAX_RATE, &r->rate); break;
        case 'c':
            rc = parse_u64(optarg, 1, MAX_CONNECTIONS, &u);
            r->conns = (uint32_t)u;
            break;
        case 'd': rc = parse_double(optarg, 1e-3, MAX_DURATION_S, &r->duration_s); break;
        case 'w': rc = parse_double(optarg, 0, MAX_WARMUP_S, &r->warmup_s); break;
        case 'D': rc = parse_double(optarg, 0, MAX_DRAIN_S, &r->drain_s); break;
        case 'p':
            r->path_src = optarg;
            rc = (optarg[0] == '/' && strlen(optarg) <= MAX_PATH_TEMPLATE && !strpbrk(optarg, " \r\n")) ? 0 : -EINVAL;
            break;
        case 'n': rc = parse_u64(optarg, 1, UINT64_MAX / 2, &r->ids); break;
        case 's': rc = parse_u64(optarg, 0, UINT64_MAX, &r->seed); break;
        case 'm':
            r->method = optarg;
            rc = (strcmp(optarg, "GET") == 0 || strcmp(optarg, "POST") == 0) ? 0 : -EINVAL;
            break;
        case 'b':
            r->body_src = optarg;
            rc = strlen(optarg) <= MAX_BODY_TEMPLATE ? 0 : -EINVAL;
            break;
        case 'H': rc = ++headers > MAX_HEADERS ? -EINVAL : add_header(r, optarg); break;
        case 'h': usage(stdout); exit(0);
        default: return -EINVAL;
        }
        if (rc) {
            fprintf(stderr, "openloop: bad value for -%c: %s\n", opt, optarg);
            return -EINVAL;
        }
    }
    if (optind != argc - 1 || r->rate <= 0) {
        usage(stderr);
        return -EINVAL;
    }
    int rc = parse_url(r, argv[optind]);
    if (rc) {
        fprintf(stderr, "openloop: %s: %s\n", argv[optind],
                rc == -EPERM ? "only loopback targets (127.0.0.0/8)" : "expected http://HOST:PORT");
        return rc;
    }
    if ((strcmp(r->method, "POST") == 0) != (r->body_src != NULL)) {
        fprintf(stderr, "openloop: a body goes with POST, and POST needs a body\n");
        return -EINVAL;
    }
    return 0;
}

/* Allows C connections plus a few descriptors under RLIMIT_NOFILE. */
static int raise_fd_limit(uint32_t conns)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
        return -errno;
    rlim_t want = (rlim_t)conns + 32;
    if (rl.rlim_cur >= want)
        return 0;
    if (rl.rlim_max < want)
        return -EMFILE;
    rl.rlim_cur = want;
    return setrlimit(RLIMIT_NOFILE, &rl) < 0 ? -errno : 0;
}

int main(int argc, char **argv)
{
    static Run run; /* two 36 KiB histograms: not on the stack */
    Run *r = &run;
    if (parse_args(r, argc, argv) < 0)
        return 2;
    if (raise_fd_limit(r->conns) < 0) {
        fprintf(stderr, "openloop: RLIMIT_NOFILE too low for %u connections\n", r->conns);
        return 2;
    }
    if (template_parse(&r->path, r->path_src) < 0 || (r->body_src && template_parse(&r->body, r->body_src) < 0))
        return 1;
    r->out_cap = 64 + r->path.max_len + sizeof r->host + r->extra_len + 80 + r->body.max_len;
    r->body_buf = malloc(r->body.max_len + 1);
    r->conn = calloc(r->conns, sizeof *r->conn);
    r->ep = epoll_create1(EPOLL_CLOEXEC);
    if (!r->body_buf || !r->conn || r->ep < 0) {
        fprintf(stderr, "openloop: out of memory\n");
        return 1;
    }
    for (uint32_t i = 0; i < r->conns; i++) {
        r->conn[i].fd = -1;
        r->conn[i].idx = i;
        r->conn[i].out = malloc(r->out_cap);
        if (!r->conn[i].out) {
            fprintf(stderr, "openloop: out of memory\n");
            return 1;
        }
    }
    r->rng = r->seed;
    prctl(PR_SET_TIMERSLACK, 1000UL, 0, 0, 0); /* wake-ups within 1 µs of the due time, not 50 */
    struct sigaction sa = {.sa_handler = on_stop_signal, .sa_flags = SA_RESETHAND}; /* no SA_RESTART: wakes epoll */
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    int rc = connect_all(r);
    if (rc < 0) {
        fprintf(stderr, "openloop: cannot connect to %s: %s\n", r->host, strerror(-rc));
        return 1;
    }
    r->period_ns = 1e9 / r->rate;
    r->t0 = now_ns() + 1000000; /* 1 ms from now */
    r->warm_end = r->t0 + (uint64_t)(r->warmup_s * 1e9);
    r->end = r->warm_end + (uint64_t)(r->duration_s * 1e9);
    r->deadline = r->end + (uint64_t)(r->drain_s * 1e9);
    /* requests due before end: i < (end - t0) / period */
    r->total = (uint64_t)((double)(r->end - r->t0) / r->period_ns);
    while (r->total && due_of(r, r->total - 1) >= r->end)
        r->total--;
    while (due_of(r, r->total) < r->end)
        r->total++;
    run_loop(r);
    if (r->settled < r->total)
        count_unfinished(r, now_ns());
    print_result(r);
    for (uint32_t i = 0; i < r->conns; i++) {
        conn_close(&r->conn[i]);
        free(r->conn[i].out);
    }
    free(r->conn);
    free(r->body_buf);
    free(r->path.segs);
    free(r->body.segs);
    close(r->ep);
    return 0;
}
