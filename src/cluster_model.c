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
#define MODEL_FORMAT 1u
#define MODEL_MAX_CHUNKS 1024u  /* 256 MiB */

typedef struct ModelManifest {
    uint32_t magic, format, chunks, reserved;
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

void cluster_model_tick(Cluster *c)
{
    kvEntry *e = NULL;
    char holder[CLUSTER_NODE_MAX] = "";
    uint64_t rev = 0;
    natsStatus s = kvStore_Get(&e, c->leases, CLUSTER_TRAINER_KEY);
    if (s == NATS_OK) {
        snprintf(holder, sizeof holder, "%s", kvEntry_ValueString(e) ? kvEntry_ValueString(e) : "");
        rev = kvEntry_Revision(e);
        kvEntry_Destroy(e);
    }
    bool was = cluster_is_trainer(c);
    int64_t now = cluster_now_ms();
    if (s == NATS_OK || s == NATS_NOT_FOUND) {
        pthread_mutex_lock(&c->map_lock);
        snprintf(c->trainer, sizeof c->trainer, "%s", holder);
        pthread_mutex_unlock(&c->map_lock);
        uint64_t nrev = 0;
        if (strcmp(holder, c->node) == 0) /* ours, or a former life's */
            s = kvStore_UpdateString(&nrev, c->leases, CLUSTER_TRAINER_KEY, c->node,
                                     atomic_load(&c->trainer_renewed_ms) ? c->trainer_rev : rev);
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

/* ---- publishing and following (snapshot thread) ---------------------------- */

/* Publishes the serving model (version) as the cluster's. */
static void publish_model(Cluster *c, uint64_t version)
{
    ByteBuf file = {0};
    int rc = service_model_export(c->svc, version, &file);
    uint32_t count = (uint32_t)((file.len + CLUSTER_CHUNK_BYTES - 1) / CLUSTER_CHUNK_BYTES);
    if (!rc && (count == 0 || count > MODEL_MAX_CHUNKS))
        rc = -EFBIG;
    size_t len = sizeof(ModelManifest) + count * sizeof(uint64_t);
    unsigned char *body = rc ? NULL : calloc(1, len);
    if (!rc && !body)
        rc = -ENOMEM;
    uint64_t *seqs = body ? (uint64_t *)(body + sizeof(ModelManifest)) : NULL;
    if (!rc)
        rc = cluster_publish_chunks(c, MODEL_CHUNKS, MODEL_SHARD, version, &file, seqs, count);
    jsPubAck *ack = NULL;
    if (!rc && cluster_is_trainer(c)) {
        ModelManifest h = {MODEL_MAGIC, MODEL_FORMAT, count, 0, file.len, version, ""};
        snprintf(h.node, sizeof h.node, "%s", c->node);
        memcpy(body, &h, sizeof h);
        jsPubOptions po;
        jsPubOptions_Init(&po);
        uint64_t last = atomic_load(&c->model_seq);
        if (last)
            po.ExpectLastSubjectSeq = last;
        else
            po.ExpectNoMessage = true;
        if (js_Publish(&ack, c->js, MODEL_MANIFEST, body, (int)len, &po, NULL) != NATS_OK || !ack)
            rc = -EIO;
    } else if (!rc) {
        rc = -ESTALE;
    }
    if (rc) {
        log_msg(LOG_WARN, "cluster: the model was not published; trying again", "version=%llu error=\"%s\"",
                (unsigned long long)version, rc == -ESTALE ? "not_the_trainer" : strerror(-rc));
    } else {
        atomic_store(&c->model_seq, ack->Sequence);
        atomic_store(&c->model_trainer_version, version);
        c->model_version = version;
        int64_t wait = c->cfg->cluster_lease_ms / 3;
        (void)cluster_purge(c, CLUSTER_SNAP_STREAM, MODEL_CHUNKS, seqs[0], 0, wait);
        (void)cluster_purge(c, CLUSTER_SNAP_STREAM, MODEL_MANIFEST, 0, 1, wait);
        log_msg(LOG_INFO, "cluster: model published", "version=%llu bytes=%zu", (unsigned long long)version,
                file.len);
    }
    jsPubAck_Destroy(ack);
    free(body);
    bytebuf_free(&file);
}

/* Serves publication seq (manifest h, chunk sequences seqs): imported into
 * the history, then made the serving model. */
static int follow(Cluster *c, uint64_t seq, const ModelManifest *h, const uint64_t *seqs, char *err, size_t errlen)
{
    ByteBuf file = {0};
    int rc = cluster_fetch_chunks(c, MODEL_SHARD, h->version, h->chunks, h->bytes, seqs, &file);
    if (rc)
        snprintf(err, errlen, "cannot read the model's chunks: %s", strerror(-rc));
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

void cluster_model_sync(Cluster *c)
{
    natsMsg *m = NULL;
    jsErrCode jerr = 0;
    natsStatus s = js_GetLastMsg(&m, c->js, CLUSTER_SNAP_STREAM, MODEL_MANIFEST, NULL, &jerr);
    if (s != NATS_OK && s != NATS_NOT_FOUND && jerr != JSNoMessageFoundErr)
        return; /* NATS unreachable: next time */
    uint64_t serving = service_model_version(c->svc);
    bool trainer = cluster_is_trainer(c);
    if (m) {
        uint64_t seq = natsMsg_GetSequence(m);
        const unsigned char *d = (const unsigned char *)natsMsg_GetData(m);
        size_t n = (size_t)natsMsg_GetDataLength(m);
        ModelManifest h;
        bool valid = n >= sizeof h && (memcpy(&h, d, sizeof h), h.magic == MODEL_MAGIC) && h.format == MODEL_FORMAT &&
                     h.chunks >= 1 && h.chunks <= MODEL_MAX_CHUNKS && n == sizeof h + h.chunks * sizeof(uint64_t) &&
                     h.bytes <= (uint64_t)h.chunks * CLUSTER_CHUNK_BYTES &&
                     h.bytes > (uint64_t)(h.chunks - 1) * CLUSTER_CHUNK_BYTES;
        if (valid)
            h.node[sizeof h.node - 1] = '\0';
        bool mine = valid && strcmp(h.node, c->node) == 0 && h.version == serving;
        if (valid && seq != atomic_load(&c->model_seq) && mine) { /* our own, or a former life's of the same file */
            atomic_store(&c->model_seq, seq);
            atomic_store(&c->model_trainer_version, h.version);
            c->model_version = serving;
        } else if (valid && (seq != atomic_load(&c->model_seq) || (!trainer && serving != c->model_version))) {
            /* a publication not served here yet, or this follower's model changed on its own (a retrain
             * begun while it was the trainer): serve the cluster's */
            uint64_t *seqs = malloc(h.chunks * sizeof *seqs);
            char err[512] = "out of memory";
            int rc = -ENOMEM;
            if (seqs) {
                memcpy(seqs, d + sizeof h, h.chunks * sizeof *seqs);
                rc = follow(c, seq, &h, seqs, err, sizeof err);
            }
            free(seqs);
            if (rc && c->model_failed_seq != seq) {
                c->model_failed_seq = seq;
                log_msg(LOG_ERROR, "cluster: cannot serve the cluster's model; trying again", "trainer=%s "
                        "trainer_version=%llu error=\"%s\"", h.node, (unsigned long long)h.version, err);
            }
        }
        natsMsg_Destroy(m);
    }
    if (trainer && service_model_version(c->svc) != c->model_version)
        publish_model(c, service_model_version(c->svc));
}
