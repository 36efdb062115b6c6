/* cluster_consume: the owner applies its partitions. One ordered JetStream
 * consumer per owned partition (filter ltvd.ev.<p>, from the message after
 * the last one this process applied: the whole partition for a fresh
 * process, or the rest for a node that had it before), each message
 * applied to the service in stream order: an events batch (service_apply,
 * whose event_id window drops duplicates) or an erasure. A message the
 * service refuses whole for now (limits.max_users, memory), or one that
 * arrives once the lease may be lapsing, is not applied and stalls the
 * partition: nothing after it is applied until the cluster thread
 * restarts the consumer from it (cluster_consume_retry). Only a malformed
 * message is skipped.
 *
 * Threads: cluster_consume_start/stop on the cluster thread; on_message on
 * libnats' delivery threads, under the partition's apply_lock, which stop
 * also takes: once stop has returned, nothing of the partition is applied
 * (the lease may already be another node's). */
#include "cluster_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include "log.h"
#include "wal_record.h"

/* What a consumer's messages carry to the handler: the partition and the
 * generation the consumer was started under. Freed by libnats' on-complete
 * callback, once the last message of the closed subscription is handled. */
typedef struct ConsumeCtx {
    Partition *part;
    uint64_t gen;
} ConsumeCtx;

/* Applies one message's payload (kind byte, then wal_record.h's). Under
 * part->apply_lock. 0; -EBADMSG (malformed: it never will be applied, it
 * is skipped); -ENOSPC (limits.max_users) or -ENOMEM, nothing of it
 * applied: it is tried again later. */
static int apply_payload(Cluster *c, Partition *part, uint64_t seq, const unsigned char *p, size_t len)
{
    int rc = -EBADMSG;
    if (len >= 1 && p[0] == CLUSTER_MSG_EVENTS) {
        Event *ev = NULL;
        size_t n = 0;
        rc = wal_record_decode_events(p + 1, len - 1, &ev, &n);
        if (!rc) {
            ApplyResult res;
            rc = service_apply(c->svc, ev, n, &res, NULL);
        }
        free(ev);
    } else if (len >= 1 && p[0] == CLUSTER_MSG_ERASE) {
        const char *id;
        size_t id_len;
        rc = wal_record_decode_delete(p + 1, len - 1, &id, &id_len);
        if (!rc)
            rc = service_delete_user(c->svc, id, id_len, &(uint64_t){0});
        if (rc == -ENOENT)
            rc = 0; /* erased before, or never seen here */
        if (!rc) { /* a snapshot and a purge are due, to take the shopper's events off the stream */
            part->erase_seq = seq;
            if (!atomic_load(&part->erased_ms))
                atomic_store(&part->erased_ms, cluster_now_ms());
        }
    }
    return rc == -ENOSPC || rc == -ENOMEM || rc == -EBADMSG || !rc ? rc : -EBADMSG;
}

/* A message not applied now: the partition stalls (nothing after it is
 * applied) until the cluster thread restarts its consumer from it. Logged
 * and counted once per episode. Under part->apply_lock. */
static void stall(Cluster *c, Partition *part, uint64_t seq, const char *why, bool is_error)
{
    part->stalled = true;
    if (part->stall_logged)
        return;
    part->stall_logged = true;
    if (is_error)
        atomic_fetch_add(&c->consume_errors, 1);
    log_msg(is_error ? LOG_ERROR : LOG_WARN, "cluster: a stream message was not applied; retrying it",
            "partition=%u seq=%llu reason=\"%s\"", part->index, (unsigned long long)seq, why);
}

static void on_message(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *closure)
{
    ConsumeCtx *ctx = closure;
    Partition *part = ctx->part;
    Cluster *c = part->cluster;
    jsMsgMetaData *meta = NULL;
    if (natsMsg_GetMetaData(&meta, msg) != NATS_OK) {
        natsMsg_Destroy(msg);
        return;
    }
    uint64_t seq = meta->Sequence.Stream;
    jsMsgMetaData_Destroy(meta);
    pthread_mutex_lock(&part->apply_lock);
    if (part->owned && !part->stalled && part->gen == ctx->gen && seq > atomic_load(&part->applied_seq)) {
        if (!cluster_lease_fresh(c, part)) {
            /* the lease may lapse before this is applied: not now (the
             * tick restarts the consumer once it renewed, or stops it) */
            stall(c, part, seq, "lease_unrenewed", false);
        } else if (seq != atomic_load(&part->applied_seq) + 1) {
            /* p's stream numbers its messages without gaps but for purges:
             * the ones before this were purged before this node applied
             * them. Not applied: the restart loads the snapshot that covers
             * them, or refuses to go on (cluster_snapshot_load) */
            stall(c, part, seq, "messages purged before this node applied them", true);
        } else {
            int rc = apply_payload(c, part, seq, (const unsigned char *)natsMsg_GetData(msg), (size_t)natsMsg_GetDataLength(msg));
            if (rc == -ENOSPC || rc == -ENOMEM) {
                stall(c, part, seq, rc == -ENOSPC ? "limits.max_users reached" : "out of memory", true);
            } else {
                if (rc) { /* malformed: no retry can apply it */
                    atomic_fetch_add(&c->consume_errors, 1);
                    log_msg(LOG_ERROR, "cluster: a malformed stream message was skipped", "partition=%u seq=%llu",
                            part->index, (unsigned long long)seq);
                } else if (part->stall_logged) {
                    part->stall_logged = false;
                    log_msg(LOG_INFO, "cluster: applying again", "partition=%u seq=%llu", part->index,
                            (unsigned long long)seq);
                }
                atomic_store(&part->applied_seq, seq);
                atomic_fetch_add(&c->applied_msgs, 1);
            }
        }
    }
    pthread_mutex_unlock(&part->apply_lock);
    natsMsg_Destroy(msg);
}

static void on_complete(void *closure) { free(closure); }

int cluster_consume_start(Cluster *c, Partition *part)
{
    ConsumeCtx *ctx = malloc(sizeof *ctx);
    if (!ctx)
        return -ENOMEM;
    /* a drop of p's state asked for when it was given up is not wanted now;
     * one under way ends first (it holds the lock), and none starts while
     * the snapshot loads (taking) */
    pthread_mutex_lock(&part->apply_lock);
    atomic_store(&part->drop_pending, false);
    part->taking = true;
    part->loaded = false;
    pthread_mutex_unlock(&part->apply_lock);
    int loaded = cluster_snapshot_load(c, part);
    pthread_mutex_lock(&part->apply_lock);
    part->taking = false;
    part->loaded = loaded == 0;
    part->owned = true;
    part->stalled = false;
    ctx->gen = ++part->gen;
    pthread_mutex_unlock(&part->apply_lock);
    ctx->part = part;
    if (loaded) { /* still ours (the lease is kept): the next tick tries again */
        free(ctx);
        return -EIO;
    }

    char subject[64];
    snprintf(subject, sizeof subject, CLUSTER_SUBJECT_PREFIX "%u", part->index);
    uint64_t from = atomic_load(&part->applied_seq) + 1;
    jsSubOptions so;
    jsSubOptions_Init(&so);
    char stream[32];
    cluster_stream_name(stream, sizeof stream, part->index);
    so.Stream = stream;
    so.Ordered = true;
    so.Config.DeliverPolicy = js_DeliverByStartSequence;
    so.Config.OptStartSeq = from;
    /* idle heartbeats every second: the library recreates a consumer whose
     * NATS server died after missing two, rather than the default 5 s's */
    so.Config.Heartbeat = (int64_t)1000 * 1000000;
    jsErrCode jerr = 0;
    natsSubscription *sub = NULL;
    natsStatus s = js_Subscribe(&sub, c->js_tick, subject, on_message, ctx, NULL, &so, &jerr);
    if (s == NATS_OK)
        s = natsSubscription_SetOnCompleteCB(sub, on_complete, ctx);
    if (s != NATS_OK) {
        /* still ours (the lease is kept): the cluster thread tries again at
         * its next tick; nothing is applied meanwhile */
        if (sub) {
            natsSubscription_Unsubscribe(sub);
            natsSubscription_Destroy(sub); /* ctx may be in use by a message: leaked, once */
        } else {
            free(ctx);
        }
        log_msg(LOG_WARN, "cluster: cannot start a consumer", "partition=%u error=\"%s\" code=%d", part->index,
                natsStatus_GetText(s), (int)jerr);
        return -EIO;
    }
    part->sub = sub;
    return 0;
}

void cluster_consume_stop(Cluster *c, Partition *part)
{
    pthread_mutex_lock(&part->apply_lock);
    part->owned = false;
    part->gen++;
    pthread_mutex_unlock(&part->apply_lock);
    if (part->sub) {
        /* an unsubscribe deletes the ordered consumer, a JetStream request:
         * not without a connection, where it would wait out its timeout (a
         * tick) for every partition stopped; JetStream drops an ephemeral
         * consumer nobody listens to by itself, after its inactivity
         * threshold */
        if (natsConnection_Status(c->nc) == NATS_CONN_STATUS_CONNECTED)
            natsSubscription_Unsubscribe(part->sub);
        natsSubscription_Destroy(part->sub);
        part->sub = NULL;
    }
}

void cluster_consume_check(Cluster *c, Partition *part)
{
    if (!part->sub)
        return;
    jsConsumerInfo *ci = NULL;
    jsErrCode jerr = 0;
    natsStatus s = natsSubscription_GetConsumerInfo(&ci, part->sub, NULL, &jerr);
    jsConsumerInfo_Destroy(ci);
    if (s != NATS_NOT_FOUND && jerr != JSConsumerNotFoundErr)
        return;
    log_msg(LOG_WARN, "cluster: a partition's consumer is gone; restarting it", "partition=%u from_seq=%llu",
            part->index, (unsigned long long)atomic_load(&part->applied_seq) + 1);
    cluster_consume_stop(c, part);
    if (cluster_consume_start(c, part) != 0)
        log_msg(LOG_WARN, "cluster: cannot restart the consumer; the lease will lapse", "partition=%u", part->index);
}

void cluster_consume_retry(Cluster *c, Partition *part)
{
    /* the snapshot thread holds the lock through its requests: skipped
     * this tick rather than waited for (the leases are renewed meanwhile) */
    if (pthread_mutex_trylock(&part->apply_lock) != 0)
        return;
    bool retry = part->owned && part->stalled;
    pthread_mutex_unlock(&part->apply_lock);
    if (!retry || !cluster_lease_fresh(c, part))
        return;
    cluster_consume_stop(c, part);
    if (cluster_consume_start(c, part) != 0)
        log_msg(LOG_WARN, "cluster: cannot restart the consumer; the next tick tries again", "partition=%u",
                part->index);
}
