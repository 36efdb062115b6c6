/* cluster_streams: what a node makes or finds in JetStream at start: the
 * partitions' event streams (LTVD_EV_<p>, made STREAM_THREADS at a time),
 * the snapshot stream, the key-value buckets. Main, at start, before the
 * cluster thread exists (the stream workers are its own short-lived
 * threads). */
#include "cluster_internal.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

int cluster_ensure_stream(Cluster *c, const char *name, const char *subject, int64_t dup_window_ms, char *err,
                          size_t errlen)
{
    jsStreamConfig sc;
    jsStreamConfig_Init(&sc);
    const char *subjects[] = {subject};
    sc.Name = name;
    sc.Subjects = subjects;
    sc.SubjectsLen = 1;
    sc.Storage = js_FileStorage;
    sc.Replicas = c->cfg->cluster_replicas;
    sc.Duplicates = dup_window_ms * 1000000;
    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;
    natsStatus s = js_AddStream(&si, c->js, &sc, NULL, &jerr);
    jsStreamInfo_Destroy(si);
    if (s == NATS_OK)
        return 0;
    si = NULL;
    if (js_GetStreamInfo(&si, c->js, name, NULL, NULL) == NATS_OK) {
        jsStreamInfo_Destroy(si);
        return 0;
    }
    snprintf(err, errlen, "cannot create the JetStream stream %s: %s (error %d)", name, natsStatus_GetText(s),
             (int)jerr);
    return -EIO;
}

int cluster_ensure_bucket(Cluster *c, const char *name, int64_t ttl_ms, int replicas, kvStore **out, char *err,
                          size_t errlen)
{
    if (js_KeyValue(out, c->js_tick, name) == NATS_OK)
        return 0;
    kvConfig kc;
    kvConfig_Init(&kc);
    kc.Bucket = name;
    kc.History = 1;
    kc.TTL = ttl_ms * 1000000; /* nanoseconds; 0: none */
    kc.Replicas = replicas ? replicas : (int)c->cfg->cluster_replicas;
    kc.StorageType = js_FileStorage;
    natsStatus s = js_CreateKeyValue(out, c->js, &kc);
    if (s == NATS_OK) { /* bound again to the cluster thread's context */
        kvStore_Destroy(*out);
        *out = NULL; /* js_KeyValue sets it only when it succeeds */
    }
    natsStatus b = js_KeyValue(out, c->js_tick, name);
    if (b == NATS_OK)
        return 0;
    if (s == NATS_OK) /* made, but not found again within the tick's wait */
        snprintf(err, errlen, "cannot open the key-value bucket %s just made: %s", name, natsStatus_GetText(b));
    else
        snprintf(err, errlen, "cannot create the key-value bucket %s: %s", name, natsStatus_GetText(s));
    return -EIO;
}

#define STREAM_THREADS 16 /* creating a replicated stream waits for its group's election: in parallel */

/* Partition p's event stream (a two-minute message-id window for retried
 * publishes), made or found. */
int cluster_ensure_event_stream(Cluster *c, uint32_t p, char *err, size_t errlen)
{
    Partition *part = &c->parts[p];
    if (part->stream_ready)
        return 0;
    char name[32], subject[32];
    cluster_stream_name(name, sizeof name, p);
    snprintf(subject, sizeof subject, CLUSTER_SUBJECT_PREFIX "%u", p);
    int rc = cluster_ensure_stream(c, name, subject, 120000, err, errlen);
    part->stream_ready = rc == 0;
    return rc;
}

typedef struct StreamJob {
    Cluster *c;
    _Atomic uint32_t next;
    _Atomic int rc;
    pthread_mutex_t lock;
    char err[256]; /* under lock: the first failure's */
} StreamJob;

static void *stream_worker(void *arg)
{
    StreamJob *j = arg;
    char err[256];
    for (uint32_t p; (p = atomic_fetch_add(&j->next, 1)) < j->c->nparts;) {
        int rc = cluster_ensure_event_stream(j->c, p, err, sizeof err);
        int none = 0;
        if (rc && atomic_compare_exchange_strong(&j->rc, &none, rc)) {
            pthread_mutex_lock(&j->lock);
            snprintf(j->err, sizeof j->err, "%s", err);
            pthread_mutex_unlock(&j->lock);
        }
    }
    return NULL;
}

/* Every partition's event stream not made or found yet, STREAM_THREADS at
 * a time. 0, or the first failure (the others are tried again). */
int cluster_ensure_event_streams(Cluster *c, char *err, size_t errlen)
{
    StreamJob j = {.c = c};
    pthread_mutex_init(&j.lock, NULL);
    pthread_t t[STREAM_THREADS];
    int n = 0;
    while (n < STREAM_THREADS && (uint32_t)n < c->nparts && pthread_create(&t[n], NULL, stream_worker, &j) == 0)
        n++;
    if (n == 0)
        stream_worker(&j);
    for (int i = 0; i < n; i++)
        pthread_join(t[i], NULL);
    pthread_mutex_destroy(&j.lock);
    int rc = atomic_load(&j.rc);
    if (rc)
        snprintf(err, errlen, "%s", j.err);
    return rc;
}
