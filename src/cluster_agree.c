/* cluster_agree: a node refuses to join a cluster whose settings differ
 * from its own. The settings every node must share (cluster.partitions,
 * cluster.hash_key, cluster.replicas, cluster.lease_ms, and the shape of a
 * shopper's slot that partition snapshots carry: model.hidden_size and
 * model.recent_events) are kept in
 * JetStream: the key "settings" of the bucket ltvd_config (history 1, no
 * TTL), written create-only by the first node to start, so that two first
 * nodes starting together agree on one record (the other one's create
 * fails and it compares with the winner's). The hash key is kept as a
 * fingerprint only, the keyed hash of a fixed string: it tells whether
 * two keys differ and reveals nothing of either. The existing stream's
 * replicas and storage and the lease bucket's TTL (what the first node
 * created them with; partition 0's event stream stands for all of them)
 * are compared too, which also covers a cluster
 * started before the record existed. A node that differs creates
 * nothing: the bucket is made (with the stream's replicas) only by a node
 * whose settings match what exists.
 *
 * Threads: main (cluster_start), before the cluster thread exists. */
#include "cluster_internal.h"

#include <cJSON.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#define AGREE_BUCKET "ltvd_config"
#define AGREE_KEY "settings"
#define FINGERPRINT_INPUT "ltvd cluster.hash_key fingerprint v1"

typedef struct Settings {
    long long partitions, replicas, lease_ms;
    long long hidden, recent; /* model.hidden_size, model.recent_events: a partition's snapshot holds slots of
                                 their shape; -1 in a record written before they were kept */
    char fingerprint[17]; /* 16 hex digits */
    char cluster_id[17];  /* 16 hex digits, drawn by the first node ("" in a record from before it was kept) */
} Settings;

static void own_settings(const Cluster *c, Settings *s)
{
    s->partitions = (long long)c->nparts;
    s->replicas = (long long)c->cfg->cluster_replicas;
    s->lease_ms = (long long)c->cfg->cluster_lease_ms;
    s->hidden = (long long)c->cfg->model_hidden_size;
    s->recent = (long long)c->cfg->model_recent_events;
    uint64_t h = hash_keyed(&c->key, FINGERPRINT_INPUT, sizeof FINGERPRINT_INPUT - 1);
    snprintf(s->fingerprint, sizeof s->fingerprint, "%016" PRIx64, h);
    uint64_t id;
    if (getrandom(&id, sizeof id, 0) != sizeof id)
        id = (uint64_t)cluster_now_ms() ^ c->nonce;
    snprintf(s->cluster_id, sizeof s->cluster_id, "%016" PRIx64, id);
}

static char *settings_json(const Settings *s)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "partitions", (double)s->partitions);
    cJSON_AddNumberToObject(o, "replicas", (double)s->replicas);
    cJSON_AddNumberToObject(o, "lease_ms", (double)s->lease_ms);
    cJSON_AddNumberToObject(o, "model_hidden_size", (double)s->hidden);
    cJSON_AddNumberToObject(o, "model_recent_events", (double)s->recent);
    cJSON_AddStringToObject(o, "hash_key_fingerprint", s->fingerprint);
    cJSON_AddStringToObject(o, "cluster_id", s->cluster_id);
    char *text = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return text;
}

static int settings_parse(const char *text, int len, Settings *s)
{
    cJSON *o = cJSON_ParseWithLength(text, (size_t)len);
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(o, "partitions");
    const cJSON *r = cJSON_GetObjectItemCaseSensitive(o, "replicas");
    const cJSON *l = cJSON_GetObjectItemCaseSensitive(o, "lease_ms");
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(o, "hash_key_fingerprint");
    int rc = -EPROTO;
    if (cJSON_IsNumber(p) && cJSON_IsNumber(r) && cJSON_IsNumber(l) && cJSON_IsString(f) &&
        strlen(f->valuestring) < sizeof s->fingerprint) {
        s->partitions = (long long)p->valuedouble;
        s->replicas = (long long)r->valuedouble;
        s->lease_ms = (long long)l->valuedouble;
        const cJSON *hs = cJSON_GetObjectItemCaseSensitive(o, "model_hidden_size");
        const cJSON *re = cJSON_GetObjectItemCaseSensitive(o, "model_recent_events");
        s->hidden = cJSON_IsNumber(hs) ? (long long)hs->valuedouble : -1;
        s->recent = cJSON_IsNumber(re) ? (long long)re->valuedouble : -1;
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(o, "cluster_id");
        snprintf(s->cluster_id, sizeof s->cluster_id, "%s",
                 cJSON_IsString(id) && strlen(id->valuestring) < sizeof s->cluster_id ? id->valuestring : "");
        snprintf(s->fingerprint, sizeof s->fingerprint, "%s", f->valuestring);
        rc = 0;
    }
    cJSON_Delete(o);
    return rc;
}

/* Appends "; " (unless first) and one difference to err, at *at. */
__attribute__((format(printf, 4, 5))) static void add_diff(char *err, size_t errlen, size_t *at, const char *fmt,
                                                           ...)
{
    if (*at + 3 >= errlen)
        return;
    if (*at) {
        memcpy(err + *at, "; ", 3);
        *at += 2;
    }
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(err + *at, errlen - *at, fmt, ap);
    va_end(ap);
    if (n > 0)
        *at = *at + (size_t)n < errlen ? *at + (size_t)n : errlen - 1;
}

#define DIFFERS_TAIL " (every node must have the cluster's; to change them, start a new cluster: docs/OPERATIONS.md)"

/* What the first node created: the stream's replicas (into
 * *stream_replicas) and storage, the lease bucket's TTL (when it exists).
 * Each difference appended to err (*at past them); -EIO: JetStream did
 * not answer (retried by the caller). */
static int compare_created(Cluster *c, char *err, size_t errlen, size_t *at, int *stream_replicas)
{
    jsStreamInfo *si = NULL;
    char stream[32];
    cluster_stream_name(stream, sizeof stream, 0); /* every partition's is made alike */
    natsStatus s = js_GetStreamInfo(&si, c->js, stream, NULL, NULL);
    if (s != NATS_OK) {
        snprintf(err, errlen, "cannot read the stream %s: %s", stream, natsStatus_GetText(s));
        return -EIO;
    }
    *stream_replicas = (int)si->Config->Replicas;
    if (si->Config->Replicas != c->cfg->cluster_replicas)
        add_diff(err, errlen, at, "cluster.replicas is %lld here but %lld in %s", (long long)c->cfg->cluster_replicas,
                 (long long)si->Config->Replicas, "the event streams");
    bool file = si->Config->Storage == js_FileStorage;
    jsStreamInfo_Destroy(si);
    if (!file)
        add_diff(err, errlen, at, "the stream %s does not use file storage (not made by ltvd)", stream);
    kvStore *kv = NULL;
    s = js_KeyValue(&kv, c->js, CLUSTER_LEASE_BUCKET);
    if (s == NATS_NOT_FOUND)
        return 0; /* not created yet: this node creates it with its own settings */
    if (s != NATS_OK) {
        snprintf(err, errlen, "cannot read the bucket %s: %s", CLUSTER_LEASE_BUCKET, natsStatus_GetText(s));
        return -EIO;
    }
    kvStatus *st = NULL;
    s = kvStore_Status(&st, kv);
    if (s == NATS_OK && kvStatus_TTL(st) != c->cfg->cluster_lease_ms * 1000000)
        add_diff(err, errlen, at, "cluster.lease_ms is %lld here but %lld in %s", (long long)c->cfg->cluster_lease_ms,
                 (long long)(kvStatus_TTL(st) / 1000000), "the bucket's TTL (" CLUSTER_LEASE_BUCKET ")");
    kvStatus_Destroy(st);
    kvStore_Destroy(kv);
    if (s != NATS_OK) {
        snprintf(err, errlen, "cannot read the bucket %s: %s", CLUSTER_LEASE_BUCKET, natsStatus_GetText(s));
        return -EIO;
    }
    return 0;
}

/* The settings record into *theirs: 0, -ENOENT (none yet), -EINVAL (not
 * ltvd's), -EIO (JetStream did not answer). */
static int read_record(kvStore *kv, Settings *theirs, char *err, size_t errlen)
{
    kvEntry *e = NULL;
    natsStatus s = kvStore_Get(&e, kv, AGREE_KEY);
    if (s == NATS_NOT_FOUND)
        return -ENOENT;
    if (s != NATS_OK) {
        snprintf(err, errlen, "cannot read the cluster's settings (%s/%s): %s", AGREE_BUCKET, AGREE_KEY,
                 natsStatus_GetText(s));
        return -EIO;
    }
    int rc = settings_parse(kvEntry_ValueString(e), kvEntry_ValueLen(e), theirs);
    kvEntry_Destroy(e);
    if (rc)
        snprintf(err, errlen, "the cluster's settings record (%s/%s) is not ltvd's: not joining", AGREE_BUCKET,
                 AGREE_KEY);
    return rc ? -EINVAL : 0;
}

/* No record yet: what the first node created must match ours, then ours
 * is written, create-only. 0 when ours is the record (*theirs = *mine),
 * 1 when another node's create won the race (*theirs is its record),
 * -EINVAL (differences in err, *at past them), -EIO. */
static int create_record(Cluster *c, kvStore *kv, const Settings *mine, Settings *theirs, char *err, size_t errlen,
                         size_t *at)
{
    int replicas;
    int rc = compare_created(c, err, errlen, at, &replicas);
    if (rc || *at)
        return rc ? rc : -EINVAL;
    char *text = settings_json(mine);
    if (!text) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    uint64_t rev = 0;
    natsStatus s = kvStore_CreateString(&rev, kv, AGREE_KEY, text);
    free(text);
    if (s == NATS_OK) {
        *theirs = *mine;
        return 0;
    }
    rc = read_record(kv, theirs, err, errlen); /* another node's create came first */
    if (rc == -ENOENT) {
        snprintf(err, errlen, "cannot write the cluster's settings (%s/%s): %s", AGREE_BUCKET, AGREE_KEY,
                 natsStatus_GetText(s));
        rc = -EIO;
    }
    return rc ? rc : 1;
}

/* The bucket AGREE_BUCKET into *kv: bound if it exists; else, only if
 * what the first node created matches this node's settings, created with
 * the stream's replicas (a refused node creates nothing). 0, -EINVAL
 * (differences in err, *at past them), -EIO. */
static int agree_bucket(Cluster *c, kvStore **kv, char *err, size_t errlen, size_t *at)
{
    natsStatus s = js_KeyValue(kv, c->js, AGREE_BUCKET);
    if (s == NATS_OK)
        return 0;
    if (s != NATS_NOT_FOUND) {
        snprintf(err, errlen, "cannot read the bucket %s: %s", AGREE_BUCKET, natsStatus_GetText(s));
        return -EIO;
    }
    int replicas;
    int rc = compare_created(c, err, errlen, at, &replicas);
    if (rc || *at)
        return rc ? rc : -EINVAL;
    return cluster_ensure_bucket(c, AGREE_BUCKET, 0, replicas, kv, err, errlen);
}

int cluster_agree(Cluster *c, char *err, size_t errlen)
{
    Settings mine, theirs;
    own_settings(c, &mine);
    size_t at = 0;
    err[0] = '\0';
    kvStore *kv = NULL;
    int rc = agree_bucket(c, &kv, err, errlen, &at);
    if (rc == -EINVAL && at) {
        snprintf(err + at, errlen - at, DIFFERS_TAIL);
        return rc;
    }
    if (rc)
        return rc;
    rc = read_record(kv, &theirs, err, errlen);
    if (rc == -ENOENT)
        rc = create_record(c, kv, &mine, &theirs, err, errlen, &at);
    kvStore_Destroy(kv);
    if (rc == -EINVAL && at) {
        snprintf(err + at, errlen - at, DIFFERS_TAIL);
        return rc;
    }
    if (rc < 0)
        return rc;
    const char *rec = "the cluster (" AGREE_BUCKET "/" AGREE_KEY ")";
    if (mine.partitions != theirs.partitions)
        add_diff(err, errlen, &at, "cluster.partitions is %lld here but %lld in %s", mine.partitions,
                 theirs.partitions, rec);
    if (strcmp(mine.fingerprint, theirs.fingerprint) != 0)
        add_diff(err, errlen, &at, "cluster.hash_key differs: its fingerprint is %s here but %s in %s",
                 mine.fingerprint, theirs.fingerprint, rec);
    if (mine.replicas != theirs.replicas)
        add_diff(err, errlen, &at, "cluster.replicas is %lld here but %lld in %s", mine.replicas, theirs.replicas,
                 rec);
    if (mine.lease_ms != theirs.lease_ms)
        add_diff(err, errlen, &at, "cluster.lease_ms is %lld here but %lld in %s", mine.lease_ms, theirs.lease_ms,
                 rec);
    if (theirs.hidden >= 0 && mine.hidden != theirs.hidden)
        add_diff(err, errlen, &at, "model.hidden_size is %lld here but %lld in %s", mine.hidden, theirs.hidden, rec);
    if (theirs.recent >= 0 && mine.recent != theirs.recent)
        add_diff(err, errlen, &at, "model.recent_events is %lld here but %lld in %s", mine.recent, theirs.recent,
                 rec);
    if (at == 0) {
        c->cluster_id = strtoull(theirs.cluster_id, NULL, 16); /* 0 for a record without one */
        return 0;
    }
    snprintf(err + at, errlen - at, DIFFERS_TAIL);
    return -EINVAL;
}
