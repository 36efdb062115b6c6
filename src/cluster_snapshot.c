/* cluster_snapshot: partition snapshots in JetStream, and the purge of the
 * event streams behind them (docs/CLUSTER.md, "Snapshots and purge").
 *
 * The owner of a partition writes its shoppers and event_id window
 * (service_shard_export) to the stream LTVD_SNAPSHOTS as chunks on
 * ltvd.snap.c.<p>, then a manifest on ltvd.snap.m.<p> naming the chunks'
 * stream sequences, the sequence of p's event stream the copy covers and
 * the cluster's id (cluster_agree.c). The manifest is published under p's
 * apply_lock, only while this node applies p under the same generation as
 * when the copy was made, with a third of its lease left, and only if p's
 * last manifest is still the one this node knows (expected last subject
 * sequence). Then the previous copy's messages are deleted (by sequence),
 * and p's event stream is purged up to the covered sequence, again only
 * while the lease surely holds.
 *
 * Nothing here purges by subject: nats-server before 2.9.18 replays a
 * subject-filtered purge as a whole-stream compact when a replica
 * recovers (nats-server#4196), which would take other partitions'
 * messages. Each partition has its own event stream (LTVD_EV_<p>), purged
 * whole up to a sequence, and snapshot messages are deleted one by one.
 *
 * A node that takes a partition (cluster_snapshot_load, from
 * cluster_consume_start) loads the latest manifest's copy when it covers
 * more than the node's own state of p, and consumes from after it. A node
 * that gave a partition up forgets its shoppers and ids of it (the drop,
 * on this module's thread).
 *
 * Threads: one snapshot thread (cluster_snapshot_start/stop) takes the
 * snapshots, the purges and the drops, and keeps the cluster's model
 * (cluster_model_sync); cluster_snapshot_load runs on the cluster thread.
 * Both take a partition's apply_lock around reading or replacing its
 * state, so nothing of it is applied meanwhile. */
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
#define SNAP_FORMAT 2u
#define SNAP_MAX_CHUNKS 65536u /* 16 GiB a partition */

typedef struct ChunkHead {
    uint32_t magic, partition;
    uint64_t covered;
    uint32_t index, count;
} ChunkHead;

typedef struct ManifestHead {
    uint32_t magic, format, partition, chunks;
    uint64_t covered, bytes, users;
    int64_t taken_at;       /* Unix seconds */
    uint64_t cluster_id;    /* the cluster's (cluster_agree.c): a copy left by another cluster is not p's */
} ManifestHead;             /* then chunks x u64: the chunks' stream sequences */

static void subject_of(char *out, size_t n, const char *prefix, uint32_t p) { snprintf(out, n, "%s%u", prefix, p); }

/* ---- chunked copies (also the model's: cluster_model.c) -------------------- */

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

int cluster_fetch_chunks(Cluster *c, uint32_t p, uint64_t covered, uint32_t count, uint64_t bytes,
                         const uint64_t *seqs, ByteBuf *copy)
{
    int rc = 0;
    for (uint32_t i = 0; i < count && !rc; i++) {
        natsMsg *m = NULL;
        jsErrCode jerr = 0;
        natsStatus s = js_GetMsg(&m, c->js_tick, CLUSTER_SNAP_STREAM, seqs[i], NULL, &jerr);
        if (s != NATS_OK) {
            log_msg(LOG_WARN, "cluster: a snapshot chunk cannot be read", "seq=%llu error=\"%s\" code=%d",
                    (unsigned long long)seqs[i], natsStatus_GetText(s), (int)jerr);
            rc = -EIO;
            break;
        }
        const unsigned char *d = (const unsigned char *)natsMsg_GetData(m);
        size_t n = (size_t)natsMsg_GetDataLength(m);
        ChunkHead ch;
        /* every chunk full but the last, and never past the manifest's size:
         * what is allocated is bounded by what the manifest says */
        size_t want = i + 1 < count ? CLUSTER_CHUNK_BYTES : (size_t)(bytes - copy->len);
        if (n < sizeof ch || (memcpy(&ch, d, sizeof ch), ch.magic != SNAP_MAGIC_CHUNK) || ch.partition != p ||
            ch.covered != covered || ch.index != i || ch.count != count || n - sizeof ch != want ||
            copy->len + want > bytes)
            rc = -EBADMSG;
        else
            rc = bytebuf_put(copy, d + sizeof ch, n - sizeof ch);
        natsMsg_Destroy(m);
    }
    return !rc && copy->len != bytes ? -EBADMSG : rc;
}

int cluster_publish_after(Cluster *c, const char *subject, const void *body, size_t len, uint64_t last,
                          int64_t wait_ms, uint64_t *seq)
{
    jsPubOptions po;
    jsPubOptions_Init(&po);
    po.MaxWait = wait_ms;
    if (last)
        po.ExpectLastSubjectSeq = last;
    else
        po.ExpectNoMessage = true;
    jsPubAck *ack = NULL;
    jsErrCode jerr = 0;
    natsStatus s = js_Publish(&ack, c->js, subject, body, (int)len, &po, &jerr);
    int rc = s == NATS_OK && ack ? 0 : jerr == JSStreamWrongLastSequenceErr ? -ESTALE : -EIO;
    if (!rc)
        *seq = ack->Sequence;
    jsPubAck_Destroy(ack);
    return rc;
}

void cluster_copy_delete(Cluster *c, uint64_t manifest, const uint64_t *chunks, uint32_t count)
{
    int64_t wait = c->cfg->cluster_lease_ms / 3;
    jsOptions o;
    jsOptions_Init(&o);
    o.Wait = wait;
    if (manifest)
        (void)js_DeleteMsg(c->js, CLUSTER_SNAP_STREAM, manifest, &o, NULL);
    for (uint32_t i = 0; i < count; i++)
        if (chunks[i])
            (void)js_DeleteMsg(c->js, CLUSTER_SNAP_STREAM, chunks[i], &o, NULL);
}

/* Reads the last manifest on subject: 0 with *m (the caller destroys it),
 * -ENOENT (none), -EIO (NATS did not answer). */
int cluster_last_manifest(Cluster *c, const char *subject, natsMsg **m)
{
    jsErrCode jerr = 0;
    *m = NULL;
    natsStatus s = js_GetLastMsg(m, c->js_tick, CLUSTER_SNAP_STREAM, subject, NULL, &jerr);
    if (s == NATS_OK)
        return 0;
    return jerr == JSNoMessageFoundErr ? -ENOENT : -EIO;
}

/* ---- taking one ---------------------------------------------------------- */

/* The first and last messages still in p's event stream (0, 0 when it
 * never had one; last + 1, last after a purge of everything). */
static int stream_seqs(Cluster *c, const Partition *part, uint64_t *first, uint64_t *last)
{
    char stream[32];
    cluster_stream_name(stream, sizeof stream, part->index);
    jsOptions o;
    jsOptions_Init(&o);
    o.Wait = c->cfg->cluster_lease_ms / 4; /* asked under a partition's apply_lock, and on the cluster thread: a tick */
    jsStreamInfo *si = NULL;
    if (js_GetStreamInfo(&si, c->js, stream, &o, NULL) != NATS_OK)
        return -EIO;
    *first = si->State.FirstSeq;
    *last = si->State.LastSeq;
    jsStreamInfo_Destroy(si);
    return 0;
}

/* Does the lease of p surely hold for another third of lease_ms? */
static bool lease_margin(const Cluster *c, const Partition *part)
{
    return cluster_now_ms() - atomic_load(&part->renewed_ms) < c->cfg->cluster_lease_ms / 3;
}

/* Under apply_lock: may this node still speak for p as of generation gen? */
static bool still_ours(const Cluster *c, const Partition *part, uint64_t gen)
{
    return part->owned && part->loaded && part->gen == gen && lease_margin(c, part);
}

/* Checks a manifest read from p's subject; fills *h and *seqs (malloc'd). */
static int parse_manifest(const Partition *part, natsMsg *m, ManifestHead *h, uint64_t **seqs)
{
    const unsigned char *d = (const unsigned char *)natsMsg_GetData(m);
    size_t n = (size_t)natsMsg_GetDataLength(m);
    if (n < sizeof *h || (memcpy(h, d, sizeof *h), h->magic != SNAP_MAGIC_MANIFEST) || h->format != SNAP_FORMAT ||
        h->partition != part->index || h->chunks == 0 || h->chunks > SNAP_MAX_CHUNKS ||
        n != sizeof *h + h->chunks * sizeof(uint64_t) || h->bytes > (uint64_t)h->chunks * CLUSTER_CHUNK_BYTES ||
        h->bytes <= (uint64_t)(h->chunks - 1) * CLUSTER_CHUNK_BYTES)
        return -EBADMSG;
    if (h->cluster_id != part->cluster->cluster_id)
        return -ESRCH; /* another cluster's, left in the stream */
    if (!(*seqs = malloc(h->chunks * sizeof **seqs)))
        return -ENOMEM;
    memcpy(*seqs, d + sizeof *h, h->chunks * sizeof **seqs);
    return 0;
}

/* Makes (manifest, chunks) p's latest copy; what it replaces is deleted
 * (once no lock is held). Under apply_lock; takes chunks. */
static void set_latest(Partition *part, uint64_t manifest, uint64_t *chunks, uint32_t count, uint64_t covered,
                       uint64_t **old, uint32_t *old_count, uint64_t *old_manifest)
{
    *old = part->copy_chunks;
    *old_count = part->copy_count;
    *old_manifest = part->copy_manifest;
    part->copy_chunks = chunks;
    part->copy_count = count;
    part->copy_manifest = manifest;
    atomic_store(&part->manifest_seq, manifest);
    atomic_store(&part->snap_seq, covered);
    atomic_store(&part->snap_ms, cluster_now_ms());
}

/* After a manifest publish that failed: learns p's last manifest, so that
 * the next try's condition holds. If it is this very copy (stored, its
 * acknowledgement lost), it is adopted (true): p takes seqs, and the copy
 * it replaces comes back in old* as from set_latest. Under apply_lock. */
static bool after_failed_manifest(Cluster *c, Partition *part, uint64_t covered, uint64_t *seqs, uint32_t count,
                                  uint64_t **old, uint32_t *old_count, uint64_t *old_manifest)
{
    char subject[64];
    subject_of(subject, sizeof subject, SNAP_MANIFEST_PREFIX, part->index);
    natsMsg *m = NULL;
    if (cluster_last_manifest(c, subject, &m) != 0)
        return false;
    ManifestHead h;
    uint64_t *theirs = NULL;
    int rc = parse_manifest(part, m, &h, &theirs);
    bool adopted = false;
    if (!rc && h.covered == covered && h.chunks == count && memcmp(theirs, seqs, count * sizeof *seqs) == 0) {
        set_latest(part, natsMsg_GetSequence(m), seqs, count, covered, old, old_count, old_manifest);
        adopted = true;
    } else if (rc != -EBADMSG) {
        atomic_store(&part->manifest_seq, natsMsg_GetSequence(m));
    }
    free(theirs);
    natsMsg_Destroy(m);
    return adopted;
}

/* One snapshot of p, if it applies p and applied something since the
 * last. A partition stalled on a message it cannot apply yet is still
 * consistent up to applied_seq, and is snapshotted like any other. */
static void take_snapshot(Cluster *c, Partition *part)
{
    ByteBuf copy = {0};
    uint64_t users = 0;
    pthread_mutex_lock(&part->apply_lock);
    uint64_t covered = atomic_load(&part->applied_seq), gen = part->gen;
    bool go = part->owned && part->loaded && covered > atomic_load(&part->snap_seq);
    int rc = go ? service_shard_export(c->svc, part->index, &copy, &users) : 0;
    pthread_mutex_unlock(&part->apply_lock);
    if (!go)
        return;
    int64_t t0 = cluster_now_ms();
    uint32_t count = (uint32_t)((copy.len + CLUSTER_CHUNK_BYTES - 1) / CLUSTER_CHUNK_BYTES);
    uint64_t *seqs = NULL;
    if (!rc && count > SNAP_MAX_CHUNKS)
        rc = -EFBIG;
    if (!rc && !(seqs = calloc(count, sizeof *seqs))) /* 0: not published (cluster_copy_delete skips it) */
        rc = -ENOMEM;
    char subject[64];
    subject_of(subject, sizeof subject, SNAP_CHUNK_PREFIX, part->index);
    if (!rc)
        rc = cluster_publish_chunks(c, subject, part->index, covered, &copy, seqs, count);
    size_t len = sizeof(ManifestHead) + count * sizeof(uint64_t);
    unsigned char *body = rc ? NULL : malloc(len);
    if (!rc && !body)
        rc = -ENOMEM;
    uint64_t *old = NULL, old_manifest = 0;
    uint32_t old_count = 0;
    bool published = false;
    pthread_mutex_lock(&part->apply_lock);
    if (!rc && !still_ours(c, part, gen))
        rc = -ESTALE;
    /* a stream purged past this copy (by another node that believed it
     * owned p: nats-server before 2.9.21 can let two take one lease) makes
     * it useless: it must not become the latest */
    uint64_t first = 0, last = 0;
    if (!rc && (stream_seqs(c, part, &first, &last) != 0 || first > covered + 1))
        rc = -ESTALE;
    if (!rc) {
        ManifestHead h = {SNAP_MAGIC_MANIFEST, SNAP_FORMAT, part->index, count, covered, copy.len, users,
                          (int64_t)time(NULL), c->cluster_id};
        memcpy(body, &h, sizeof h);
        memcpy(body + sizeof h, seqs, count * sizeof *seqs);
        subject_of(subject, sizeof subject, SNAP_MANIFEST_PREFIX, part->index);
        uint64_t seq = 0;
        rc = cluster_publish_after(c, subject, body, len, atomic_load(&part->manifest_seq),
                                   c->cfg->cluster_lease_ms / 3, &seq);
        if (!rc) {
            set_latest(part, seq, seqs, count, covered, &old, &old_count, &old_manifest);
            seqs = NULL; /* p's now */
            published = true;
        } else if (after_failed_manifest(c, part, covered, seqs, count, &old, &old_count, &old_manifest)) {
            seqs = NULL; /* p's now */
            published = true;
            rc = 0;
        }
    }
    if (!published)
        atomic_store(&part->snap_ms, cluster_now_ms()); /* the next try waits an interval (or an erasure) */
    pthread_mutex_unlock(&part->apply_lock);
    if (published) {
        cluster_copy_delete(c, old_manifest, old, old_count);
        atomic_fetch_add(&c->snapshots, 1);
        atomic_store(&c->snapshot_bytes, copy.len);
        log_msg(LOG_DEBUG, "cluster: partition snapshot published", "partition=%u covered_seq=%llu users=%llu "
                "bytes=%zu chunks=%u ms=%lld", part->index, (unsigned long long)covered, (unsigned long long)users,
                copy.len, count, (long long)(cluster_now_ms() - t0));
    } else {
        if (seqs) /* chunks nobody will read */
            cluster_copy_delete(c, 0, seqs, count);
        atomic_fetch_add(&c->snapshot_errors, 1);
        log_msg(LOG_WARN, "cluster: partition snapshot not published; the next one tries again",
                "partition=%u covered_seq=%llu error=\"%s\"", part->index, (unsigned long long)covered,
                rc == -ESTALE ? "lease_lost_or_newer_snapshot" : strerror(-rc));
    }
    free(old);
    free(seqs);
    free(body);
    bytebuf_free(&copy);
}

#define DELETES_PER_TRY 20000 /* messages deleted one by one per partition and try */

/* Deletes p's event-stream messages first..last one by one (JetStream's
 * message-delete requests, sent without waiting for their answers: the
 * next try reads the stream's first sequence to see what is done). 0, or
 * a NATS status. */
static natsStatus delete_range(Cluster *c, const Partition *part, uint64_t first, uint64_t last)
{
    char subject[64], body[64];
    snprintf(subject, sizeof subject, "$JS.API.STREAM.MSG.DELETE." CLUSTER_STREAM_PREFIX "%u", part->index);
    natsStatus s = NATS_OK;
    for (uint64_t seq = first; seq <= last && s == NATS_OK; seq++) {
        snprintf(body, sizeof body, "{\"seq\":%llu,\"no_erase\":true}", (unsigned long long)seq);
        s = natsConnection_PublishRequestString(c->nc, subject, "_INBOX.ltvd.unanswered", body);
    }
    return s == NATS_OK ? natsConnection_FlushTimeout(c->nc, c->cfg->cluster_lease_ms / 3) : s;
}

/* Takes p's event stream up to its latest snapshot off JetStream if that
 * was not done yet (tried at most once a second): only while this node
 * applies p and surely holds its lease (a new owner replays from the
 * manifest it loaded: what it still needs must not go), and only behind
 * this node's manifest if it is still the latest.
 *
 * How: message by message (DELETES_PER_TRY a try), unless
 * cluster.purge_busy says every NATS server is 2.9.18 or later, when one
 * purge up to the sequence does it. nats-server before 2.9.18 replays a
 * purge, when a replica recovers from its log, as a compact up to the
 * stream's last message at the time of the purge, whatever sequence it
 * asked for (nats-server#4196): messages that came after the snapshot
 * would be lost on that replica. A deletion replays exactly. */
static void purge_behind(Cluster *c, Partition *part)
{
    int64_t now = cluster_now_ms();
    pthread_mutex_lock(&part->apply_lock);
    uint64_t covered = atomic_load(&part->snap_seq), manifest = atomic_load(&part->manifest_seq), gen = part->gen;
    bool due = part->owned && part->loaded && covered > atomic_load(&part->purged_seq) &&
               now - part->purge_try_ms >= 1000;
    if (due)
        part->purge_try_ms = now;
    bool margin = due && lease_margin(c, part);
    pthread_mutex_unlock(&part->apply_lock);
    if (!due)
        return;
    /* The requests go without the lock (the cluster thread's tick must not
     * wait on them): what is deleted is covered by this node's manifest,
     * still the latest when looked at, which any later owner loads or
     * goes beyond. */
    const char *why = NULL;
    bool done = false;
    char subject[64];
    subject_of(subject, sizeof subject, SNAP_MANIFEST_PREFIX, part->index);
    natsMsg *m = NULL;
    uint64_t first = 0, last = 0;
    if (!margin)
        why = "lease_not_surely_held";
    else if (cluster_last_manifest(c, subject, &m) != 0 || natsMsg_GetSequence(m) != manifest)
        why = "newer_snapshot"; /* another node's came after this node's: its owner purges */
    else if (stream_seqs(c, part, &first, &last) != 0)
        why = "no_stream_info";
    natsMsg_Destroy(m);
    if (!why && first > covered) {
        done = true; /* the deletions of earlier tries have all landed */
    } else if (!why && c->cfg->cluster_purge_busy) {
        char stream[32];
        cluster_stream_name(stream, sizeof stream, part->index);
        jsOptions o;
        jsOptions_Init(&o);
        o.Wait = c->cfg->cluster_lease_ms / 3;
        o.Stream.Purge.Sequence = covered + 1; /* >= 2: 0 and 1 would mean "everything" */
        natsStatus s = js_PurgeStream(c->js, stream, &o, NULL);
        done = s == NATS_OK;
        why = done ? NULL : natsStatus_GetText(s);
    } else if (!why) {
        uint64_t to = covered - first + 1 > DELETES_PER_TRY ? first + DELETES_PER_TRY - 1 : covered;
        natsStatus s = delete_range(c, part, first ? first : 1, to);
        why = s == NATS_OK ? NULL : natsStatus_GetText(s); /* done at a later try, once the first moved */
    }
    pthread_mutex_lock(&part->apply_lock);
    if (done && part->gen == gen && atomic_load(&part->snap_seq) == covered) {
        atomic_store(&part->purged_seq, covered);
        if (part->erase_seq <= covered)
            atomic_store(&part->erased_ms, 0);
    }
    bool warn = why && part->purge_warned != covered; /* once per snapshot */
    if (warn)
        part->purge_warned = covered;
    pthread_mutex_unlock(&part->apply_lock);
    if (warn)
        log_msg(LOG_WARN, "cluster: the stream was not purged behind a snapshot; trying again",
                "partition=%u covered_seq=%llu error=\"%s\"", part->index, (unsigned long long)covered, why);
}

/* ---- loading one ---------------------------------------------------------- */

/* Replaces this node's state of p with the copy (manifest h, chunks seqs,
 * taken over). Under apply_lock. */
static int load_copy(Cluster *c, Partition *part, const ManifestHead *h, uint64_t manifest, uint64_t *seqs,
                     const ByteBuf *copy, uint64_t *users, char *err, size_t errlen)
{
    bool *drop = calloc(c->nparts, sizeof *drop);
    if (!drop)
        return -ENOMEM;
    drop[part->index] = true; /* this node's own older state of p (if any) goes first */
    service_shard_drop(c->svc, drop);
    free(drop);
    int rc = service_shard_import(c->svc, part->index, copy->p, copy->len, users, err, errlen);
    uint64_t *old = NULL, old_manifest = 0;
    uint32_t old_count = 0;
    if (rc) {
        atomic_store(&part->applied_seq, 0);
        atomic_store(&part->snap_seq, 0);
        free(seqs);
        return rc;
    }
    atomic_store(&part->applied_seq, h->covered);
    set_latest(part, manifest, seqs, h->chunks, h->covered, &old, &old_count, &old_manifest);
    free(old); /* another node's copy, or this node's from before: not deleted by a loader */
    return 0;
}

static int snapshot_load(Cluster *c, Partition *part);

/* Would consuming p from the message after applied_seq skip any? Its
 * stream's first message must be at most that one (a stream purged further
 * than this node's state, and no snapshot to cover the gap, must not be
 * consumed: it would lose what was purged). 0, -ERANGE (a gap), -EIO. */
static int check_no_gap(Cluster *c, Partition *part)
{
    uint64_t first, last, applied = atomic_load(&part->applied_seq);
    if (stream_seqs(c, part, &first, &last) != 0)
        return -EIO;
    if (first <= applied + 1)
        return 0;
    atomic_fetch_add(&c->snapshot_errors, 1);
    log_msg(LOG_ERROR, "cluster: a partition's stream was purged past this node's state and no snapshot covers "
            "the gap; not applying it", "partition=%u applied_seq=%llu first_seq=%llu", part->index,
            (unsigned long long)applied, (unsigned long long)first);
    return -ERANGE;
}

int cluster_snapshot_load(Cluster *c, Partition *part)
{
    int rc = snapshot_load(c, part);
    return rc ? rc : check_no_gap(c, part) ? -EIO : 0;
}

/* cluster_snapshot_load without the gap check. */
static int snapshot_load(Cluster *c, Partition *part)
{
    char subject[64];
    subject_of(subject, sizeof subject, SNAP_MANIFEST_PREFIX, part->index);
    natsMsg *m = NULL;
    int rc = cluster_last_manifest(c, subject, &m);
    if (rc == -ENOENT) {
        atomic_store(&part->manifest_seq, 0);
        return 0; /* never snapshotted: the stream holds all of it */
    }
    if (rc)
        return -EIO;
    ManifestHead h;
    uint64_t *seqs = NULL;
    rc = parse_manifest(part, m, &h, &seqs);
    uint64_t manifest = natsMsg_GetSequence(m);
    natsMsg_Destroy(m);
    atomic_store(&part->manifest_seq, manifest);
    if (rc == -ESRCH) { /* not of this stream: as if there were none (the next snapshot goes above it) */
        log_msg(LOG_WARN, "cluster: a partition snapshot of another cluster is ignored",
                "partition=%u manifest_seq=%llu", part->index, (unsigned long long)manifest);
        return 0;
    }
    uint64_t applied = atomic_load(&part->applied_seq);
    ByteBuf copy = {0};
    uint64_t users = 0;
    char err[256] = "";
    if (!rc && h.covered > applied) {
        rc = cluster_fetch_chunks(c, h.partition, h.covered, h.chunks, h.bytes, seqs, &copy);
        if (!rc) {
            pthread_mutex_lock(&part->apply_lock);
            rc = load_copy(c, part, &h, manifest, seqs, &copy, &users, err, sizeof err);
            pthread_mutex_unlock(&part->apply_lock);
            seqs = NULL;
        }
    }
    free(seqs);
    bytebuf_free(&copy);
    if (rc) {
        atomic_fetch_add(&c->snapshot_errors, 1);
        log_msg(LOG_ERROR, "cluster: cannot load a partition snapshot; trying again at the next tick",
                "partition=%u manifest_seq=%llu error=\"%s\"", part->index, (unsigned long long)manifest,
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
 * this node has not taken back (nor is taking), in one walk. */
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
        if (!atomic_exchange(&part->drop_pending, false) || part->owned || part->taking) {
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
        atomic_store(&part->purged_seq, 0);
        atomic_store(&part->manifest_seq, 0);
        atomic_store(&part->erased_ms, 0);
        part->erase_seq = 0;
        free(part->copy_chunks);
        part->copy_chunks = NULL;
        part->copy_count = 0;
        part->copy_manifest = 0;
        pthread_mutex_unlock(&part->apply_lock);
    }
    free(drop);
}

/* Is a snapshot of p due: cluster.snapshot_interval_s since the last, or
 * half of storage.erasure_snapshot_s since an erasure it applied that no
 * purge covers yet (the other half is for taking it)? */
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
            purge_behind(c, part);
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
