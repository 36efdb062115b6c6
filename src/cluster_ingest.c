/* cluster_ingest: POST /v1/events in cluster mode. The validated batch is
 * grouped by partition (each partition's events in their order, so one
 * shopper's events stay in order) and published as one JetStream message
 * per partition (more, in order, if its events exceed the server's
 * max_payload) to ltvd.ev.<p>, all at once (async publish), each with a
 * message id so that JetStream drops a retried copy within the stream's
 * duplicate window. The caller answers 200 only once every message is
 * acknowledged: stored by a quorum of the stream's replicas.
 *
 * Threads: any (an HTTP thread). Each call publishes through a JetStream
 * context of its own for the call's length (the library's wait for
 * acknowledgements and its error handler are per context): taken from a
 * small pool (c->pub_*, under pub_lock) and given back after, so a context
 * (and its reply subscription) is made once per concurrent caller, not
 * once per request. */
#include "cluster_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wal_record.h"

/* The failures JetStream reported for one call's messages. */
typedef struct PubFailures {
    pthread_mutex_t lock;
    size_t n;
    char why[160];
} PubFailures;

/* A JetStream context used by one call at a time, and the failures its
 * error handler records for that call. */
struct PubCtx {
    jsCtx *js;
    PubFailures f;
    struct PubCtx *next; /* in the pool, under pub_lock */
};

/* Contexts kept for reuse: one per HTTP thread is enough (server.threads
 * is at most 64); a caller beyond that makes and destroys its own. */
#define PUB_POOL_MAX 64

/* libnats' reply thread, for a message JetStream refused; the call waits
 * in js_PublishAsyncComplete until this returns. */
static void on_pub_error(jsCtx *js, jsPubAckErr *pae, void *closure)
{
    PubFailures *f = closure;
    pthread_mutex_lock(&f->lock);
    if (f->n++ == 0)
        snprintf(f->why, sizeof f->why, "%s", pae->ErrText ? pae->ErrText : natsStatus_GetText(pae->Err));
    pthread_mutex_unlock(&f->lock);
}

static void pubctx_free(PubCtx *pc)
{
    jsCtx_Destroy(pc->js);
    pthread_mutex_destroy(&pc->f.lock);
    free(pc);
}

/* A context from the pool, or a new one; NULL with s set if none. */
static PubCtx *pubctx_take(Cluster *c, natsStatus *s)
{
    pthread_mutex_lock(&c->pub_lock);
    PubCtx *pc = c->pub_free;
    if (pc) {
        c->pub_free = pc->next;
        c->pub_idle--;
    }
    pthread_mutex_unlock(&c->pub_lock);
    *s = NATS_OK;
    if (pc)
        return pc;
    if (!(pc = calloc(1, sizeof *pc))) {
        *s = NATS_NO_MEMORY;
        return NULL;
    }
    pthread_mutex_init(&pc->f.lock, NULL);
    jsOptions jo;
    jsOptions_Init(&jo);
    jo.Wait = c->cfg->cluster_publish_timeout_ms;
    jo.PublishAsync.ErrHandler = on_pub_error;
    jo.PublishAsync.ErrHandlerClosure = &pc->f;
    if ((*s = natsConnection_JetStream(&pc->js, c->nc, &jo)) != NATS_OK) {
        pubctx_free(pc);
        return NULL;
    }
    return pc;
}

/* Back to the pool (nothing of the call is pending on it any more). */
static void pubctx_give(Cluster *c, PubCtx *pc)
{
    pthread_mutex_lock(&c->pub_lock);
    bool keep = c->pub_idle < PUB_POOL_MAX;
    if (keep) {
        pc->next = c->pub_free;
        c->pub_free = pc;
        c->pub_idle++;
    }
    pthread_mutex_unlock(&c->pub_lock);
    if (!keep)
        pubctx_free(pc);
}

void cluster_ingest_close(Cluster *c)
{
    while (c->pub_free) {
        PubCtx *pc = c->pub_free;
        c->pub_free = pc->next;
        pubctx_free(pc);
    }
    c->pub_idle = 0;
}

/* Publishes n messages (partition parts[i], payload bodies[i]) and waits
 * for every acknowledgement. */
static int publish_all(Cluster *c, size_t n, const uint32_t *parts, const ByteBuf *bodies, char *err,
                       size_t errlen)
{
    int rc = 0;
    natsStatus s;
    PubCtx *pc = pubctx_take(c, &s);
    jsCtx *js = pc ? pc->js : NULL;
    PubFailures *f = pc ? &pc->f : NULL;
    if (f) {
        pthread_mutex_lock(&f->lock);
        f->n = 0;
        f->why[0] = '\0';
        pthread_mutex_unlock(&f->lock);
    }
    uint64_t first = atomic_fetch_add(&c->next_msg, n);
    for (size_t i = 0; s == NATS_OK && i < n; i++) {
        char subject[48], msgid[CLUSTER_NODE_MAX + 64];
        snprintf(subject, sizeof subject, CLUSTER_SUBJECT_PREFIX "%u", parts[i]);
        snprintf(msgid, sizeof msgid, "%s-%016llx-%llu", c->node, (unsigned long long)c->nonce,
                 (unsigned long long)(first + i));
        natsMsg *m = NULL;
        s = natsMsg_Create(&m, subject, NULL, (const char *)bodies[i].p, (int)bodies[i].len);
        if (s == NATS_OK) {
            jsPubOptions po;
            jsPubOptions_Init(&po);
            po.MsgId = msgid;
            char stream[32];
            cluster_stream_name(stream, sizeof stream, parts[i]);
            po.ExpectStream = stream;
            s = js_PublishMsgAsync(js, &m, &po);
        }
        natsMsg_Destroy(m); /* a no-op once the library took it */
    }
    if (s == NATS_OK) {
        jsPubOptions po;
        jsPubOptions_Init(&po);
        po.MaxWait = c->cfg->cluster_publish_timeout_ms;
        s = js_PublishAsyncComplete(js, &po);
    }
    size_t failed = 0;
    char why[sizeof f->why] = "";
    if (pc) {
        natsMsgList pending = {0};
        if (js_PublishAsyncGetPendingList(&pending, js) == NATS_OK)
            natsMsgList_Destroy(&pending); /* unacknowledged: dropped, the call fails */
        /* An acknowledgement whose on_pub_error is running right now was
         * taken off the pending list before the call, and the library
         * counts it until the handler returns: wait for those (nothing
         * else is pending now). An answer that comes later finds no
         * pending message and calls nothing, so the context is clean for
         * the next call. */
        (void)js_PublishAsyncComplete(js, NULL);
        pthread_mutex_lock(&f->lock);
        failed = f->n;
        snprintf(why, sizeof why, "%s", f->why);
        pthread_mutex_unlock(&f->lock);
        pubctx_give(c, pc);
    }
    if (s == NATS_TIMEOUT) {
        snprintf(err, errlen, "JetStream did not acknowledge every message within cluster.publish_timeout_ms "
                              "(%lld ms): is a quorum of the NATS servers up?",
                 (long long)c->cfg->cluster_publish_timeout_ms);
        rc = -ETIMEDOUT;
    } else if (s != NATS_OK) {
        snprintf(err, errlen, "cannot publish to JetStream: %s (is a quorum of the NATS servers up?)",
                 natsStatus_GetText(s));
        rc = -EIO;
    } else if (failed) {
        snprintf(err, errlen, "JetStream refused %zu of %zu messages: %s (is a quorum of the NATS servers up?)",
                 failed, n, why);
        rc = -EIO;
    }
    return rc;
}

/* Room for a message's headers (message id, expected stream) within the
 * server's max_payload, which counts them. */
#define HEADER_ROOM 1024

/* Encodes one partition's run of events (n,) as messages of at most limit
 * bytes each, appended to bodies/parts at *nmsg (room for one message per
 * event is there): the whole run if it fits, else its halves, in order.
 * A single event always fits (an event is at most a few hundred bytes).
 * 0 or -ENOMEM. */
static int encode_run(ByteBuf *bodies, uint32_t *parts, size_t *nmsg, uint32_t p, const Event *ev, size_t n,
                      size_t limit)
{
    ByteBuf payload = {0};
    if (wal_record_encode_events(&payload, ev, n))
        return -ENOMEM;
    if (payload.len + 1 > limit && n > 1) {
        bytebuf_free(&payload);
        int rc = encode_run(bodies, parts, nmsg, p, ev, n / 2, limit);
        return rc ? rc : encode_run(bodies, parts, nmsg, p, ev + n / 2, n - n / 2, limit);
    }
    ByteBuf *b = &bodies[*nmsg];
    if (bytebuf_reserve(b, payload.len + 1)) {
        bytebuf_free(&payload);
        return -ENOMEM;
    }
    b->p[0] = CLUSTER_MSG_EVENTS;
    memcpy(b->p + 1, payload.p, payload.len);
    b->len = payload.len + 1;
    bytebuf_free(&payload);
    parts[(*nmsg)++] = p;
    return 0;
}

int cluster_publish_events(Cluster *c, const Event *ev, size_t n, char *err, size_t errlen)
{
    uint32_t P = c->nparts;
    if (n == 0)
        return 0;
    /* (n,) each, bounded by limits.max_batch_events; counts and starts (P + 1,) */
    uint32_t *part_of = malloc(n * sizeof *part_of);
    size_t *start = calloc(P + 1, sizeof *start);
    Event *sorted = malloc(n * sizeof *sorted);
    uint32_t *parts = malloc(n * sizeof *parts);
    ByteBuf *bodies = calloc(n, sizeof *bodies);
    size_t nmsg = 0;
    int rc = -ENOMEM;
    if (!part_of || !start || !sorted || !parts || !bodies) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    /* a stable counting sort by partition */
    for (size_t i = 0; i < n; i++) {
        part_of[i] = cluster_partition_of(c, ev[i].user_id, ev[i].user_len);
        start[part_of[i] + 1]++;
    }
    for (uint32_t p = 0; p < P; p++)
        start[p + 1] += start[p];
    for (size_t i = 0; i < n; i++)
        sorted[start[part_of[i]]++] = ev[i];
    /* A message over the server's max_payload would be refused on every
     * try: a partition's run is split into messages that fit (published in
     * order on one connection, so stored in order). */
    int64_t max_payload = natsConnection_GetMaxPayload(c->nc);
    size_t limit = max_payload > 4 * HEADER_ROOM ? (size_t)max_payload - HEADER_ROOM : 64u << 10;
    /* start[p] is now the end of partition p's run; its beginning is start[p - 1] (0 for p = 0) */
    for (uint32_t p = 0; p < P; p++) {
        size_t b = p ? start[p - 1] : 0, e = start[p];
        if (e > b && encode_run(bodies, parts, &nmsg, p, sorted + b, e - b, limit)) {
            snprintf(err, errlen, "out of memory");
            goto out;
        }
    }
    rc = publish_all(c, nmsg, parts, bodies, err, errlen);
out:
    for (size_t i = 0; bodies && i < nmsg; i++)
        bytebuf_free(&bodies[i]);
    free(part_of);
    free(start);
    free(sorted);
    free(parts);
    free(bodies);
    return rc;
}

int cluster_publish_erase(Cluster *c, const char *id, size_t len, char *err, size_t errlen)
{
    unsigned char rec[1 + WAL_RECORD_DELETE_MAX];
    rec[0] = CLUSTER_MSG_ERASE;
    size_t reclen = 1 + wal_record_encode_delete(rec + 1, id, len);
    ByteBuf body = {.p = rec, .len = reclen, .cap = reclen};
    uint32_t p = cluster_partition_of(c, id, len);
    return publish_all(c, 1, &p, &body, err, errlen);
}
