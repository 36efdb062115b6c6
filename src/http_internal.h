/* http_internal (private to http_server.c and http_wait.c): the server
 * and the per-request context, and what the two files share. Only these
 * two files talk to libmicrohttpd.
 *
 * Threads and locks: as in http_server.c's header comment. */
#ifndef LTVD_HTTP_INTERNAL_H
#define LTVD_HTTP_INTERNAL_H

#include <microhttpd.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "hash.h"
#include "http_api.h"
#include "http_body.h"
#include "http_defer.h"
#include "http_server.h"
#include "log.h"

/* Per-request context, created on the handler's first call. */
typedef struct HttpRequest {
    uint64_t t0;
    char request_id[LOG_REQUEST_ID_MAX + 1];
    char method[16];      /* for the access log, cut to fit */
    bool has_user;        /* the route holds a {user_id}: user_hash is its keyed hash */
    uint64_t user_hash;
    bool logged;          /* its access log line is out (or was not due) */
    HttpBody body;        /* its max: limits.max_body_bytes when the request came */
    int route;
    bool answered_early;  /* refused on the first call, before the body */
    /* a write whose answer waits for the log (group commit) */
    bool held;
    bool linked;          /* in the held list (guarded by held_lock) */
    bool abandoned;       /* resumed by http_stop, not by the log */
    int held_status;
    TextBuf held_reply;
    uint64_t wait_seq;
    struct MHD_Connection *conn;
    struct HttpRequest *next_held;
    HttpDeferred *deferred; /* answered by a forwarder (http_defer): suspended until it is */
} HttpRequest;

struct HttpServer {
    struct MHD_Daemon *daemon;
    const LtvdConfig *cfg;
    Service *svc;
    Metrics *metrics;
    _Atomic(Cluster *) cluster;  /* cluster mode: set once by main before ltvd is ready; NULL otherwise */
    pthread_mutex_t held_lock; /* guards held, nheld, stopping and each request's linked */
    HttpRequest *held;         /* suspended connections waiting for the log */
    size_t nheld;
    bool stopping;             /* http_stop began: nothing is held any more */
    atomic_bool draining;
    HttpBodyBudget budget;         /* limits.max_inflight_body_bytes, bodies in flight */
    atomic_int abandoned;          /* resumed by http_stop and not yet answered */
    atomic_int resuming;           /* http_on_durable calls between unlinking and resuming */
    atomic_uint_fast64_t next_request_id; /* from a random start; mixed into the ids made here */
    HashKey user_key;              /* the access log's user hash key, random per process */
    DeferPool *defer;              /* cluster mode: the forwarders (http_defer.h), else NULL */
    atomic_int deferred;           /* requests http_defer suspended, not yet answered or ended */
};

/* The request's one access log line (if server.access_log is on now):
 * method, route template, user hash, status, microseconds since its first
 * byte, and how it ended (how: "early", "held", "aborted" or NULL). The
 * request id comes from the thread's (log_set_request_id). */
void http_access_log(HttpServer *h, HttpRequest *req, int status, const char *how);

/* ---- http_wait.c: answers that wait --------------------------------------- */

/* Takes req out of the held list. held_lock held. */
void http_held_unlink(HttpServer *h, HttpRequest *req);
/* Resumes every held request to be answered without waiting for the log
 * any longer (503 not_ready unless it became durable meanwhile), and
 * holds none from now on. Returns how many were resumed. */
size_t http_held_release_all(HttpServer *h);
/* The answer of a held write, once its connection is resumed. */
enum MHD_Result http_send_held(HttpServer *h, HttpCall *call, HttpRequest *req);
/* The answer of a deferred request, once its forwarder resumed it. */
enum MHD_Result http_send_deferred(HttpServer *h, HttpCall *call, HttpRequest *req);

#endif
