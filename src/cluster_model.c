/* cluster_model: one model for the cluster (docs/CLUSTER.md, "One model
 * for the cluster"). One node at a time holds the trainer lease (key
 * "trainer" in ltvd_leases, taken with create, renewed with
 * update-at-revision, like a partition's); it alone retrains, refits the
 * fallback and runs the adjuster, on the shoppers it owns (its partitions:
 * a fair sample). Whenever its serving model changes it publishes the
 * model file to LTVD_SNAPSHOTS (chunks on ltvd.snap.model.c, then a
 * manifest on ltvd.snap.model.m); every other node follows: it imports each
 * new publication into its model history and serves it. A follower's own
 * retrains, refits, rollbacks and imports are refused
 * (service_set_model_follower).
 *
 * Threads: cluster_model_tick on the cluster thread; cluster_model_sync on
 * the snapshot thread; the rest reads atomics. */
#include "cluster_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

#define MODEL_CHUNKS "ltvd.snap.model.c"
#define MODEL_MANIFEST "ltvd.snap.model.m"
#define MODEL_SHARD UINT32_MAX /* the chunks' "partition" */
#define MODEL_MAGIC 0x4c444f4du /* "MODL" */
#define MODEL_FORMAT 2u
#define MODEL_MAX_CHUNKS 1024u  /* 256 MiB */

typedef struct ModelManifest {
    uint32_t magic, format, chunks, crc; /* crc: CRC-32 of the model file */
    uint64_t bytes, version;     /* the file's size; its version on the trainer */
    char node[CLUSTER_NODE_MAX]; /* the trainer */
} ModelManifest;                 /* then chunks x u64: the chunks' stream sequences */

bool cluster_is_trainer(const Cluster *c)
{
    int64_t at = atomic_load(&c->trainer_renewed_ms);
    return at && cluster_now_ms() - at < c->cfg->cluster_lease_ms * 2 / 3;
}

uint64_t cluster_trainer_rev(const Cluster *c) { return atomic_load(&c->trainer_renewed_ms) ? c->trainer_rev : 0; }

/* ---- the lease (cluster thread) ------------------------------------------- */

void cluster_model_tick(Cluster *c, bool reach)
{
    char holder[CLUSTER_NODE_MAX];
    uint64_t rev = 0;
    natsStatus s = reach ? cluster_lease_read(c, CLUSTER_TRAINER_KEY, holder, &rev) : NATS_TIMEOUT;
    bool was = cluster_is_trainer(c);
    int64_t now = cluster_now_ms();
    if (s == NATS_OK || s == NATS_NOT_FOUND) {
        pthread_mutex_lock(&c->map_lock);
        snprintf(c->trainer, sizeof c->trainer, "%s", holder);
        pthread_mutex_unlock(&c->map_lock);
        uint64_t nrev = 0;
        /* ours, or a former life's: renewed at the newer of the revision
         * just read (a renewal stored whose answer was lost leaves
         * trainer_rev behind, and would make every later one refused) and
         * trainer_rev (revisions only grow) */
        if (strcmp(holder, c->node) == 0)
            s = kvStore_UpdateString(&nrev, c->leases, CLUSTER_TRAINER_KEY, c->node,
                                     atomic_load(&c->trainer_renewed_ms) && c->trainer_rev > rev ? c->trainer_rev
                                                                                                 : rev);
        else if (!holder[0])
            s = kvStore_CreateString(&nrev, c->leases, CLUSTER_TRAINER_KEY, c->node);
        else
            s = NATS_ERR; /* another node's */
        if (s == NATS_OK) {
            c->trainer_rev = nrev;
            atomic_store(&c->trainer_renewed_ms, now);
        } else if (holder[0] && strcmp(holder, c->node) != 0) {
            atomic_store(&c->trainer_renewed_ms, 0);
        }
    }
    bool is = cluster_is_trainer(c);
    if (!is)
        atomic_store(&c->trainer_renewed_ms, 0);
    service_set_model_follower(c->svc, !is);
    if (is != was)
        log_msg(LOG_INFO, is ? "cluster: this node is the cluster's trainer" : "cluster: no longer the trainer",
                "node=%s", c->node);
}

bool cluster_model_keep(Cluster *c)
{
    if (!atomic_load(&c->trainer_renewed_ms))
        return true;
    int64_t now = cluster_now_ms();
    uint64_t nrev = 0;
    natsStatus s = kvStore_UpdateString(&nrev, c->leases, CLUSTER_TRAINER_KEY, c->node, c->trainer_rev);
    if (s == NATS_OK) {
        c->trainer_rev = nrev;
        atomic_store(&c->trainer_renewed_ms, now);
    }
    return s != NATS_TIMEOUT; /* refused: the tick's read finds out why */
}

/* ---- publishing and following (snapshot thread) ---------------------------- */

/* The publication now latest (manifest seq, its chunks): the one a newer
 * publication replaces, whose messages the trainer then deletes. */
static void remember_latest(Cluster *c, uint64_t seq, const uint64_t *chunks, uint32_t count)
{
    uint64_t *copy = malloc(count * sizeof *copy);
    if (!copy)
        return;
    memcpy(copy, chunks, count * sizeof *copy);
    free(c->model_copy_chunks);
    c->model_copy_chunks = copy;
    c->model_copy_count = count;
    c->model_copy_manifest = seq;
}

/* Publishes the serving model (version) as the cluster's, above the last
 * publication this node saw. */
static void publish_model(Cluster *c, uint64_t version)
{
    ByteBuf file = {0};
    int rc = service_model_export(c->svc, version, &file);
    uint32_t count = (uint32_t)((file.len + CLUSTER_CHUNK_BYTES - 1) / CLUSTER_CHUNK_BYTES);
    if (!rc && (count == 0 || count > MODEL_MAX_CHUNKS))
        rc = -EFBIG;
    size_t len = sizeof(ModelManifest) + count * sizeof(uint64_t);
    unsigned char *body = rc ? NULL : calloc(1, len); /* chunk sequences 0 until published */
    if (!rc && !body)
        rc = -ENOMEM;
    uint64_t *seqs = body ? (uint64_t *)(body + sizeof(ModelManifest)) : NULL;
    if (!rc)
        rc = cluster_publish_chunks(c, MODEL_CHUNKS, MODEL_SHARD, version, &file, seqs, count);
    uint64_t seq = 0;
    if (!rc && cluster_is_trainer(c)) {
        ModelManifest h = {MODEL_MAGIC, MODEL_FORMAT, count, crc32_update(0, file.p, file.len), file.len, version,
                           ""};
        snprintf(h.node, sizeof h.node, "%s", c->node);
        memcpy(body, &h, sizeof h);
        rc = cluster_publish_after(c, MODEL_MANIFEST, body, len, c->model_last_seen, c->cfg->cluster_lease_ms / 3,
                                   &seq);
    } else if (!rc) {
        rc = -ESTALE;
    }
    if (rc) {
        if (seqs) /* chunks nobody will read (a publication whose acknowledgement was lost is adopted later) */
            cluster_copy_delete(c, 0, seqs, count);
        log_msg(LOG_WARN, "cluster: the model was not published; trying again", "version=%llu error=\"%s\"",
                (unsigned long long)version, rc == -ESTALE ? "not_the_trainer_or_newer_model" : strerror(-rc));
    } else {
        cluster_copy_delete(c, c->model_copy_manifest, c->model_copy_chunks, c->model_copy_count);
        remember_latest(c, seq, seqs, count);
        c->model_last_seen = seq;
        atomic_store(&c->model_seq, seq);
        atomic_store(&c->model_trainer_version, version);
        c->model_version = version;
        log_msg(LOG_INFO, "cluster: model published", "version=%llu bytes=%zu", (unsigned long long)version,
                file.len);
    }
    free(body);
    bytebuf_free(&file);
}

/* Is publication h this node's serving model, byte for byte? */
static bool serving_is(Cluster *c, const ModelManifest *h, uint64_t serving)
{
    ByteBuf file = {0};
    bool same = strcmp(h->node, c->node) == 0 && h->version == serving &&
                service_model_export(c->svc, serving, &file) == 0 && file.len == h->bytes &&
                crc32_update(0, file.p, file.len) == h->crc;
    bytebuf_free(&file);
    return same;
}

/* Serves publication seq (manifest h, chunk sequences seqs): imported into
 * the history, then made the serving model. */
static int follow(Cluster *c, uint64_t seq, const ModelManifest *h, const uint64_t *seqs, char *err, size_t errlen)
{
    ByteBuf file = {0};
    int rc = cluster_fetch_chunks(c, MODEL_SHARD, h->version, h->chunks, h->bytes, seqs, &file);
    if (rc)
        snprintf(err, errlen, "cannot read the model's chunks: %s", strerror(-rc));
    if (!rc && crc32_update(0, file.p, file.len) != h->crc) {
        rc = -EBADMSG;
        snprintf(err, errlen, "the model's chunks do not match its manifest's CRC");
    }
    ModelFileInfo info;
    if (!rc)
        rc = service_model_import(c->svc, file.p, file.len, &info, err, errlen);
    if (!rc)
        rc = service_model_rollback(c->svc, info.version, &info, err, errlen);
    bytebuf_free(&file);
    if (rc)
        return rc;
    atomic_store(&c->model_seq, seq);
    atomic_store(&c->model_trainer_version, h->version);
    c->model_version = info.version;
    log_msg(LOG_INFO, "cluster: serving the cluster's model", "trainer=%s trainer_version=%llu version=%llu",
            h->node, (unsigned long long)h->version, (unsigned long long)info.version);
    return 0;
}

/* The last publication: 0 with *h and *seqs (malloc'd) and *seq; -ENOENT
 * (none, or not one of ours); -EIO (NATS did not answer). */
static int last_publication(Cluster *c, ModelManifest *h, uint64_t **seqs, uint64_t *seq)
{
    natsMsg *m = NULL;
    int rc = cluster_last_manifest(c, MODEL_MANIFEST, &m);
    if (rc)
        return rc;
    *seq = natsMsg_GetSequence(m);
    c->model_last_seen = *seq;
    const unsigned char *d = (const unsigned char *)natsMsg_GetData(m);
    size_t n = (size_t)natsMsg_GetDataLength(m);
    bool valid = n >= sizeof *h && (memcpy(h, d, sizeof *h), h->magic == MODEL_MAGIC) && h->format == MODEL_FORMAT &&
                 h->chunks >= 1 && h->chunks <= MODEL_MAX_CHUNKS && n == sizeof *h + h->chunks * sizeof(uint64_t) &&
                 h->bytes <= (uint64_t)h->chunks * CLUSTER_CHUNK_BYTES &&
                 h->bytes > (uint64_t)(h->chunks - 1) * CLUSTER_CHUNK_BYTES;
    rc = valid ? 0 : -ENOENT;
    if (valid) {
        h->node[sizeof h->node - 1] = '\0';
        if ((*seqs = malloc(h->chunks * sizeof **seqs)) != NULL)
            memcpy(*seqs, d + sizeof *h, h->chunks * sizeof **seqs);
        else
            rc = -EIO;
    }
    natsMsg_Destroy(m);
    return rc;
}

void cluster_model_sync(Cluster *c)
{
    ModelManifest h;
    uint64_t *seqs = NULL, seq = 0;
    int rc = last_publication(c, &h, &seqs, &seq);
    if (rc == -EIO)
        return; /* NATS unreachable: next time */
    uint64_t serving = service_model_version(c->svc);
    bool trainer = cluster_is_trainer(c);
    if (!rc) {
        remember_latest(c, seq, seqs, h.chunks);
        bool known = seq == atomic_load(&c->model_seq);
        if (!known && serving_is(c, &h, serving)) { /* ours (its acknowledgement lost), or a former life's */
            atomic_store(&c->model_seq, seq);
            atomic_store(&c->model_trainer_version, h.version);
            c->model_version = serving;
        } else if (!known || (!trainer && serving != c->model_version)) {
            /* a publication not served here yet, or this follower's model changed on its own (a retrain
             * begun while it was the trainer): serve the cluster's. A failed one is tried every 10 s. */
            char err[512] = "";
            if (c->model_failed_seq != seq || c->model_failed_tries++ % 10 == 0) {
                if (follow(c, seq, &h, seqs, err, sizeof err) != 0 && c->model_failed_seq != seq) {
                    c->model_failed_seq = seq;
                    c->model_failed_tries = 1;
                    log_msg(LOG_ERROR, "cluster: cannot serve the cluster's model; trying again", "trainer=%s "
                            "trainer_version=%llu error=\"%s\"", h.node, (unsigned long long)h.version, err);
                }
            }
        }
        free(seqs);
    }
    serving = service_model_version(c->svc);
    if (trainer && cluster_is_trainer(c) && serving != c->model_version)
        publish_model(c, serving);
}
