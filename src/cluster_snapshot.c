/* cluster_snapshot: partition snapshots in JetStream, and the purge of the
 * event stream behind them (docs/CLUSTER.md, "Snapshots and purge").
 *
 * The owner of a partition writes its shoppers and event_id window
 * (service_shard_export) to the stream LTVD_SNAPSHOTS as chunks on
 * ltvd.snap.c.<p>, then a manifest on ltvd.snap.m.<p> naming the chunks'
 * stream sequences and the event-stream sequence the copy covers. The
 * manifest is published only if the last manifest of p is still the one
 * this node knows (expected last subject sequence), so a node that lost the
 * lease cannot put an older copy above a newer one. Then, the lease still
 * surely held, the event stream's messages of p up to the covered sequence
 * are purged, and so are p's older chunks and manifests.
 *
 * A node that takes a partition (cluster_snapshot_load, from
 * cluster_consume_start) loads the latest manifest's copy when it covers
 * more than the node's own state of p, and consumes from after it. A node
 * that gave a partition up forgets its shoppers and ids of it
 * (the drop, on this module's thread).
 *
 * Threads: one snapshot thread (cluster_snapshot_start/stop) takes the
 * snapshots and the drops, and keeps the cluster's model
 * (cluster_model_sync); cluster_snapshot_load runs on the cluster
 * thread. Both take a partition's apply_lock around reading or replacing
 * its state, so nothing of it is applied meanwhile. */
#include "cluster_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

#define SNAP_CHUNK_PREFIX "ltvd.snap.c."
#define SNAP_MANIFEST_PREFIX "ltvd.snap.m."
#define SNAP_MAGIC_CHUNK 0x4b4e4843u    /* "CHNK" */
#define SNAP_MAGIC_MANIFEST 0x544e464du /* "MFNT" */
#define SNAP_FORMAT 1u
#define SNAP_MAX_CHUNKS 65536u /* 16 GiB a partition */

typedef struct ChunkHead {
    uint32_t magic, partition;
    uint64_t covered;
    uint32_t index, count;
} ChunkHead;

typedef struct ManifestHead {
    uint32_t magic, format, partition, chunks;
    uint64_t covered, bytes, users;
    int64_t taken_at; /* Unix seconds */
} ManifestHead;         /* then chunks x u64: the chunks' stream sequences */

static void subject_of(char *out, size_t n, const char *prefix, uint32_t p) { snprintf(out, n, "%s%u", prefix, p); }

int cluster_snapshot_ensure_stream(Cluster *c, char *err, size_t errlen)
{
    jsStreamConfig sc;
    jsStreamConfig_Init(&sc);
    const char *subjects[] = {"ltvd.snap.>"};
    sc.Name = CLUSTER_SNAP_STREAM;
    sc.Subjects = subjects;
    sc.SubjectsLen = 1;
    sc.Storage = js_FileStorage;
    sc.Replicas = c->cfg->cluster_replicas;
    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;
    natsStatus s = js_AddStream(&si, c->js, &sc, NULL, &jerr);
    jsStreamInfo_Destroy(si);
    if (s == NATS_OK)
        return 0;
    si = NULL;
    if (js_GetStreamInfo(&si, c->js, CLUSTER_SNAP_STREAM, NULL, NULL) == NATS_OK) {
        jsStreamInfo_Destroy(si);
        return 0;
    }
    snprintf(err, errlen, "cannot create the JetStream stream %s: %s (error %d)", CLUSTER_SNAP_STREAM, natsStatus_GetText(s),
             (int)jerr);
    return -EIO;
}

/* ---- taking one ---------------------------------------------------------- */

int cluster_publish_chunks(Cluster *c, const char *subject, uint32_t p, uint64_t covered, const ByteBuf *copy,
                           uint64_t *seqs, uint32_t count)
{
    unsigned char *msg = malloc(sizeof(ChunkHead) + CLUSTER_CHUNK_BYTES);
    if (!msg)
        return -ENOMEM;
    int rc = 0;
    for (uint32_t i = 0; i < count && !rc; i++) {
        size_t off = (size_t)i * CLUSTER_CHUNK_BYTES;
        size_t n = copy->len - off < CLUSTER_CHUNK_BYTES ? copy->len - off : CLUSTER_CHUNK_BYTES;
        ChunkHead h = {SNAP_MAGIC_CHUNK, p, covered, i, count};
        memcpy(msg, &h, sizeof h);
        memcpy(msg + sizeof h, copy->p + off, n);
        jsPubAck *ack = NULL;
        if (js_Publish(&ack, c->js, subject, msg, (int)(sizeof h + n), NULL, NULL) == NATS_OK && ack)
            seqs[i] = ack->Sequence;
        else
            rc = -EIO;
        jsPubAck_Destroy(ack);
    }
    free(msg);
    return rc;
}

/* Publishes the manifest if p's last one is still part->manifest_seq (0:
 * none). 0 (part->manifest_seq updated), -ESTALE (another was published),
 * -EIO. */
static int publish_manifest(Cluster *c, Partition *part, const ManifestHead *h, const uint64_t *seqs)
{
    size_t len = sizeof *h + h->chunks * sizeof(uint64_t);
    unsigned char *body = malloc(len);
    if (!body)
        return -ENOMEM;
    memcpy(body, h, sizeof *h);
    memcpy(body + sizeof *h, seqs, h->chunks * sizeof(uint64_t));
    char subject[64];
    subject_of(subject, sizeof subject, SNAP_MANIFEST_PREFIX, part->index);
    jsPubOptions po;
    jsPubOptions_Init(&po);
    uint64_t last = atomic_load(&part->manifest_seq);
    if (last)
        po.ExpectLastSubjectSeq = last;
    else
        po.ExpectNoMessage = true;
    jsPubAck *ack = NULL;
    jsErrCode jerr = 0;
    natsStatus s = js_Publish(&ack, c->js, subject, body, (int)len, &po, &jerr);
    free(body);
    int rc = s == NATS_OK && ack ? 0 : jerr == JSStreamWrongLastSequenceErr ? -ESTALE : -EIO;
    if (!rc)
        atomic_store(&part->manifest_seq, ack->Sequence);
    jsPubAck_Destroy(ack);
    return rc;
}

natsStatus cluster_purge(Cluster *c, const char *stream, const char *subject, uint64_t below, uint64_t keep,
                        int64_t wait_ms)
{
    /* JetStream reads a purge "up to sequence" of 0 or 1 as no limit at
     * all: the subject's every message would go. Below 1 there is nothing. */
    if (!keep && below <= 1)
        return NATS_OK;
    jsOptions o;
    jsOptions_Init(&o);
    o.Wait = wait_ms;
    o.Stream.Purge.Subject = subject;
    if (keep)
        o.Stream.Purge.Keep = keep;
    else
        o.Stream.Purge.Sequence = below;
    return js_PurgeStream(c->js, stream, &o, NULL);
}

/* Does the lease of p surely hold for another third of lease_ms? */
static bool lease_margin(const Cluster *c, const Partition *part)
{
    return cluster_now_ms() - atomic_load(&part->renewed_ms) < c->cfg->cluster_lease_ms / 3;
}

static bool owned_with_margin(const Cluster *c, Partition *part)
{
    pthread_mutex_lock(&part->apply_lock);
    bool ok = part->owned && lease_margin(c, part);
    pthread_mutex_unlock(&part->apply_lock);
    return ok;
}

/* The event stream's messages of p up to covered, now in a snapshot, and
 * p's older chunks and manifests. The event purge only while this node
 * applies p and surely holds its lease (a new owner replays from the
 * manifest it loaded: what it still needs must not go). */
static void purge_behind(Cluster *c, Partition *part, uint64_t covered, uint64_t first_chunk)
{
    char subject[64];
    int64_t wait = c->cfg->cluster_lease_ms / 3;
    pthread_mutex_lock(&part->apply_lock);
    bool ok = part->owned && lease_margin(c, part);
    natsStatus s = NATS_ILLEGAL_STATE;
    if (ok) {
        subject_of(subject, sizeof subject, CLUSTER_SUBJECT_PREFIX, part->index);
        s = cluster_purge(c, CLUSTER_STREAM, subject, covered + 1, 0, wait);
    }
    pthread_mutex_unlock(&part->apply_lock);
    if (s != NATS_OK) {
        log_msg(LOG_WARN, "cluster: the stream was not purged behind a snapshot; the next one tries again",
                "partition=%u covered_seq=%llu error=\"%s\"", part->index, (unsigned long long)covered,
                ok ? natsStatus_GetText(s) : "lease_not_surely_held");
        return;
    }
    atomic_store(&part->purged_seq, covered);
    subject_of(subject, sizeof subject, SNAP_CHUNK_PREFIX, part->index);
    (void)cluster_purge(c, CLUSTER_SNAP_STREAM, subject, first_chunk, 0, wait);
    subject_of(subject, sizeof subject, SNAP_MANIFEST_PREFIX, part->index);
    (void)cluster_purge(c, CLUSTER_SNAP_STREAM, subject, 0, 1, wait);
}

/* One snapshot of p, if it owns p and applied something since the last. */
static void take_snapshot(Cluster *c, Partition *part)
{
    ByteBuf copy = {0};
    uint64_t users = 0;
    pthread_mutex_lock(&part->apply_lock);
    uint64_t covered = atomic_load(&part->applied_seq);
    int64_t erased_at = atomic_load(&part->erased_ms);
    bool go = part->owned && !part->stalled && covered > atomic_load(&part->snap_seq);
    int rc = go ? service_shard_export(c->svc, part->index, &copy, &users) : 0;
    pthread_mutex_unlock(&part->apply_lock);
    if (!go)
        return;
    int64_t t0 = cluster_now_ms();
    uint32_t count = (uint32_t)((copy.len + CLUSTER_CHUNK_BYTES - 1) / CLUSTER_CHUNK_BYTES);
    uint64_t *seqs = NULL;
    if (!rc && count > SNAP_MAX_CHUNKS)
        rc = -EFBIG;
    if (!rc && !(seqs = malloc(count * sizeof *seqs)))
        rc = -ENOMEM;
    char subject[64];
    subject_of(subject, sizeof subject, SNAP_CHUNK_PREFIX, part->index);
    if (!rc)
        rc = cluster_publish_chunks(c, subject, part->index, covered, &copy, seqs, count);
    if (!rc && !owned_with_margin(c, part))
        rc = -ESTALE;
    if (!rc) {
        ManifestHead h = {SNAP_MAGIC_MANIFEST, SNAP_FORMAT, part->index, count, covered, copy.len, users,
                          (int64_t)time(NULL)};
        rc = publish_manifest(c, part, &h, seqs);
    }
    if (rc) {
        atomic_fetch_add(&c->snapshot_errors, 1);
        log_msg(LOG_WARN, "cluster: partition snapshot not published; the next one tries again",
                "partition=%u covered_seq=%llu error=\"%s\"", part->index, (unsigned long long)covered,
                rc == -ESTALE ? "lease_lost_or_newer_snapshot" : strerror(-rc));
    } else {
        atomic_store(&part->snap_seq, covered);
        atomic_store(&part->snap_ms, cluster_now_ms());
        atomic_compare_exchange_strong(&part->erased_ms, &erased_at, 0);
        atomic_fetch_add(&c->snapshots, 1);
        atomic_store(&c->snapshot_bytes, copy.len);
        purge_behind(c, part, covered, seqs[0]);
        log_msg(LOG_DEBUG, "cluster: partition snapshot published", "partition=%u covered_seq=%llu users=%llu "
                "bytes=%zu chunks=%u ms=%lld", part->index, (unsigned long long)covered, (unsigned long long)users,
                copy.len, count, (long long)(cluster_now_ms() - t0));
    }
    free(seqs);
    bytebuf_free(&copy);
}

/* ---- loading one ---------------------------------------------------------- */

int cluster_fetch_chunks(Cluster *c, uint32_t p, uint64_t covered, uint32_t count, uint64_t bytes,
                         const uint64_t *seqs, ByteBuf *copy)
{
    int rc = bytebuf_reserve(copy, bytes);
    for (uint32_t i = 0; i < count && !rc; i++) {
        natsMsg *m = NULL;
        jsErrCode jerr = 0;
        natsStatus s = js_GetMsg(&m, c->js, CLUSTER_SNAP_STREAM, seqs[i], NULL, &jerr);
        if (s != NATS_OK) {
            log_msg(LOG_WARN, "cluster: a snapshot chunk cannot be read", "seq=%llu error=\"%s\" code=%d",
                    (unsigned long long)seqs[i], natsStatus_GetText(s), (int)jerr);
            rc = -EIO;
            break;
        }
        const unsigned char *d = (const unsigned char *)natsMsg_GetData(m);
        size_t n = (size_t)natsMsg_GetDataLength(m);
        ChunkHead ch;
        if (n < sizeof ch || (memcpy(&ch, d, sizeof ch), ch.magic != SNAP_MAGIC_CHUNK) ||
            ch.partition != p || ch.covered != covered || ch.index != i || ch.count != count)
            rc = -EBADMSG;
        else
            rc = bytebuf_put(copy, d + sizeof ch, n - sizeof ch);
        natsMsg_Destroy(m);
    }
    return !rc && copy->len != bytes ? -EBADMSG : rc;
}

int cluster_snapshot_load(Cluster *c, Partition *part)
{
    char subject[64];
    subject_of(subject, sizeof subject, SNAP_MANIFEST_PREFIX, part->index);
    natsMsg *m = NULL;
    jsErrCode jerr = 0;
    natsStatus s = js_GetLastMsg(&m, c->js, CLUSTER_SNAP_STREAM, subject, NULL, &jerr);
    if (s == NATS_NOT_FOUND || jerr == JSNoMessageFoundErr) {
        atomic_store(&part->manifest_seq, 0);
        return 0; /* never snapshotted: the stream holds all of it */
    }
    if (s != NATS_OK)
        return -EIO;
    const unsigned char *d = (const unsigned char *)natsMsg_GetData(m);
    size_t n = (size_t)natsMsg_GetDataLength(m);
    ManifestHead h;
    int rc = 0;
    if (n < sizeof h || (memcpy(&h, d, sizeof h), h.magic != SNAP_MAGIC_MANIFEST) || h.format != SNAP_FORMAT ||
        h.partition != part->index || h.chunks == 0 || h.chunks > SNAP_MAX_CHUNKS ||
        n != sizeof h + h.chunks * sizeof(uint64_t) || h.bytes > (uint64_t)h.chunks * CLUSTER_CHUNK_BYTES ||
        h.bytes <= (uint64_t)(h.chunks - 1) * CLUSTER_CHUNK_BYTES)
        rc = -EBADMSG;
    atomic_store(&part->manifest_seq, natsMsg_GetSequence(m));
    uint64_t applied = atomic_load(&part->applied_seq);
    ByteBuf copy = {0};
    uint64_t users = 0;
    char err[256] = "";
    if (!rc && h.covered > applied) {
        uint64_t *seqs = malloc(h.chunks * sizeof *seqs);
        rc = seqs ? 0 : -ENOMEM;
        if (seqs)
            memcpy(seqs, d + sizeof h, h.chunks * sizeof *seqs);
        if (!rc)
            rc = cluster_fetch_chunks(c, h.partition, h.covered, h.chunks, h.bytes, seqs, &copy);
        free(seqs);
        if (!rc) {
            /* this node's own older state of p (if any) goes first */
            bool *drop = calloc(c->nparts, sizeof *drop);
            rc = drop ? 0 : -ENOMEM;
            pthread_mutex_lock(&part->apply_lock);
            if (drop) {
                drop[part->index] = true;
                service_shard_drop(c->svc, drop);
                rc = service_shard_import(c->svc, part->index, copy.p, copy.len, &users, err, sizeof err);
                atomic_store(&part->applied_seq, rc ? 0 : h.covered);
                atomic_store(&part->snap_seq, rc ? 0 : h.covered);
                atomic_store(&part->snap_ms, cluster_now_ms());
            }
            pthread_mutex_unlock(&part->apply_lock);
            free(drop);
        }
    }
    natsMsg_Destroy(m);
    bytebuf_free(&copy);
    if (rc) {
        atomic_fetch_add(&c->snapshot_errors, 1);
        log_msg(LOG_ERROR, "cluster: cannot load a partition snapshot; trying again at the next tick",
                "partition=%u manifest_seq=%llu error=\"%s\"", part->index,
                (unsigned long long)atomic_load(&part->manifest_seq),
                err[0] ? err : strerror(-rc));
        return -EIO;
    }
    if (h.covered > applied)
        log_msg(LOG_INFO, "cluster: partition snapshot loaded", "partition=%u covered_seq=%llu users=%llu",
                part->index, (unsigned long long)h.covered, (unsigned long long)users);
    return 0;
}

/* ---- the thread ---------------------------------------------------------- */

/* Forgets the state of every partition given up since (drop_pending) that
 * this node has not taken back, in one walk. */
static void drop_given_up(Cluster *c)
{
    bool *drop = calloc(c->nparts, sizeof *drop);
    if (!drop)
        return;
    size_t n = 0;
    for (uint32_t p = 0; p < c->nparts; p++) { /* apply_locks in index order; held through the walk */
        Partition *part = &c->parts[p];
        if (!atomic_load(&part->drop_pending))
            continue;
        pthread_mutex_lock(&part->apply_lock);
        atomic_store(&part->drop_pending, false);
        if (part->owned) {
            pthread_mutex_unlock(&part->apply_lock);
            continue;
        }
        drop[p] = true;
        n++;
    }
    if (n) {
        size_t users = service_shard_drop(c->svc, drop);
        log_msg(LOG_INFO, "cluster: forgot the shoppers of partitions given up", "partitions=%zu users=%zu", n, users);
    }
    for (uint32_t p = 0; p < c->nparts; p++) {
        if (!drop[p])
            continue;
        Partition *part = &c->parts[p];
        atomic_store(&part->applied_seq, 0);
        atomic_store(&part->snap_seq, 0);
        atomic_store(&part->manifest_seq, 0);
        atomic_store(&part->erased_ms, 0);
        pthread_mutex_unlock(&part->apply_lock);
    }
    free(drop);
}

/* Is a snapshot of p due: cluster.snapshot_interval_s since the last, or
 * half of storage.erasure_snapshot_s since an erasure it applied (the other
 * half is for taking it)? */
static bool snapshot_due(const Cluster *c, const Partition *part, int64_t now)
{
    if (atomic_load(&part->applied_seq) <= atomic_load(&part->snap_seq))
        return false;
    int64_t erased = atomic_load(&part->erased_ms);
    if (erased && now - erased >= c->cfg->storage_erasure_snapshot_s * 1000 / 2)
        return true;
    return now - atomic_load(&part->snap_ms) >= c->cfg->cluster_snapshot_interval_s * 1000;
}

static void *snapshot_thread(void *arg)
{
    Cluster *c = arg;
    for (unsigned round = 0;; round++) {
        drop_given_up(c);
        if (round % 4 == 0) /* about once a second */
            cluster_model_sync(c);
        int64_t now = cluster_now_ms();
        for (uint32_t p = 0; p < c->nparts; p++) {
            Partition *part = &c->parts[p];
            int64_t never = 0; /* the first interval counts from the thread's start */
            atomic_compare_exchange_strong(&part->snap_ms, &never, now);
            if (snapshot_due(c, part, now))
                take_snapshot(c, part);
            if (cluster_stopping(c))
                return NULL;
        }
        if (cluster_wait_stop(c, 250))
            return NULL;
    }
}

int cluster_snapshot_start(Cluster *c)
{
    if (pthread_create(&c->snap_thread, NULL, snapshot_thread, c) != 0)
        return -EAGAIN;
    c->snap_started = true;
    return 0;
}

void cluster_snapshot_stop(Cluster *c)
{
    if (c->snap_started)
        pthread_join(c->snap_thread, NULL);
    c->snap_started = false;
}
