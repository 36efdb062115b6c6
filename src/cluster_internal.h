/* cluster_internal (private to the cluster*.c files): the Cluster struct
 * they share, and the calls between them.
 *
 * Threads and locks: each partition's apply_lock is taken by libnats'
 * delivery thread around one message's apply, by the cluster thread
 * around starting or stopping the partition and around loading its
 * snapshot, and by the snapshot thread around exporting a snapshot (a
 * store walk), publishing its manifest and purging; the service's store
 * lock is taken under it (by service_apply and the shard calls), never the
 * other way. Only the snapshot thread holds several apply_locks at once
 * (the drop of given-up partitions), taken in partition order; nobody
 * holding one waits for another. map_lock guards the owner map, the
 * members and the trainer's name (cluster thread writes, HTTP threads
 * read); it is a leaf. */
#ifndef LTVD_CLUSTER_INTERNAL_H
#define LTVD_CLUSTER_INTERNAL_H

#include <nats/nats.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>

#include "cluster.h"
#include "hash.h"

#define CLUSTER_STREAM_PREFIX "LTVD_EV_" /* partition p's event stream: LTVD_EV_<p> */
#define CLUSTER_SUBJECT_PREFIX "ltvd.ev."
#define CLUSTER_LEASE_BUCKET "ltvd_leases"
#define CLUSTER_NODE_BUCKET "ltvd_nodes"

/* The first byte of a stream message; the rest is wal_record.h's payload. */
enum { CLUSTER_MSG_EVENTS = 1, CLUSTER_MSG_ERASE = 2 };

typedef struct Cluster Cluster;

typedef struct Partition {
    Cluster *cluster;
    uint32_t index;
    pthread_mutex_t apply_lock;
    bool owned;                     /* under apply_lock: this node applies it */
    uint64_t gen;                   /* under apply_lock: bumped at every start and stop; a message of an older consumer is dropped */
    natsSubscription *sub;          /* the cluster thread's: the live consumer */
    _Atomic uint64_t applied_seq;   /* the stream sequence of the last message applied (0: none) */
    bool stalled;                   /* under apply_lock: a message could not be applied now (limits.max_users,
                                       out of memory, the lease about to lapse): the consumer applies nothing
                                       more, the cluster thread restarts it from applied_seq + 1 */
    bool stall_logged;              /* under apply_lock: this episode was logged and counted (cleared by the
                                       next message applied) */
    bool taking;                    /* under apply_lock: being taken (its snapshot loading): not to be dropped */
    bool loaded;                    /* under apply_lock: its state here is its stream's up to applied_seq (the
                                       snapshot, if any, loaded): only then is it snapshotted or purged */
    bool stream_ready;              /* main, at start: its event stream was made or found */
    /* snapshots (cluster_snapshot.c) */
    _Atomic uint64_t snap_seq;      /* the stream sequence the last snapshot taken or loaded here covers (0: none) */
    _Atomic uint64_t purged_seq;    /* the event stream's messages of p up to this were purged by this node */
    _Atomic uint64_t manifest_seq;  /* the snapshot stream's sequence of p's last manifest known here (0: none) */
    _Atomic int64_t snap_ms;        /* monotonic time of the last snapshot taken or loaded here */
    _Atomic int64_t erased_ms;      /* monotonic time an erasure was applied that no purge covers yet (0: none);
                                       written under apply_lock */
    uint64_t erase_seq;             /* under apply_lock: the stream sequence of the last erasure applied */
    uint64_t purge_warned;          /* under apply_lock: the snapshot whose failed purge was last logged */
    int64_t purge_try_ms;           /* under apply_lock: when a purge was last tried */
    uint64_t *copy_chunks;          /* under apply_lock: the chunks of its latest copy known here, (copy_count,) */
    uint32_t copy_count;
    uint64_t copy_manifest;         /* under apply_lock: that copy's manifest (what a newer one replaces) */
    _Atomic bool drop_pending;      /* given up: its shoppers and ids are to be forgotten (the snapshot thread) */
    /* the cluster thread's own */
    uint64_t lease_rev;             /* the revision of our lease entry */
    _Atomic int64_t renewed_ms;     /* monotonic time the last renewal was sent (the delivery threads read it) */
    uint64_t seen_seq;              /* applied_seq at the last tick */
    int idle_ticks;                 /* ticks since applied_seq last moved */
} Partition;

typedef struct PubCtx PubCtx; /* cluster_ingest.c's */

typedef struct Member {
    char node[CLUSTER_NODE_MAX];
    char url[CLUSTER_URL_MAX];
} Member;

struct Cluster {
    const LtvdConfig *cfg;
    Service *svc;
    Metrics *metrics;
    HashKey key;
    uint32_t nparts;
    char node[CLUSTER_NODE_MAX];
    char url[CLUSTER_URL_MAX];
    uint64_t nonce;                 /* random per process: message ids of two lives never meet */
    uint64_t cluster_id;            /* drawn by the cluster's first node (cluster_agree.c): a snapshot
                                       stamped with another is not this cluster's */
    _Atomic uint64_t next_msg;      /* message id counter */
    natsConnection *nc;
    jsCtx *js;                      /* requests wait cluster.publish_timeout_ms (the snapshot thread's) */
    jsCtx *js_tick;                 /* requests wait at most a tick, lease_ms/4 (the cluster thread's:
                                       the lease and node buckets, consumers, snapshot reads; also
                                       the snapshot thread's model copies and purges) */
    kvStore *leases, *nodes;        /* bound to js_tick */
    Partition *parts;               /* (nparts,) */

    pthread_mutex_t map_lock;
    char (*owner)[CLUSTER_NODE_MAX]; /* (nparts,) under map_lock: "" when none */
    Member members[CLUSTER_MEMBERS_MAX]; /* under map_lock */
    size_t nmembers;

    int64_t beat_ms;                /* the cluster thread's: when it last began renewing every lease it
                                       holds (a tick's partition loop, or keep_alive) */

    pthread_t thread;
    bool thread_started;
    pthread_mutex_t stop_lock;
    pthread_cond_t stop_cond;
    bool stopping;                  /* under stop_lock */
    _Atomic uint64_t consume_errors;  /* messages not applied (malformed, limits.max_users) */
    _Atomic uint64_t applied_msgs;    /* messages applied */
    pthread_t snap_thread;            /* cluster_snapshot.c's */
    bool snap_started;
    _Atomic uint64_t snapshots, snapshot_errors; /* partition snapshots published; not published or not loaded */
    _Atomic uint64_t snapshot_bytes;  /* the last one's size */
    /* one model for the cluster (cluster_model.c) */
    uint64_t trainer_rev;             /* the cluster thread's: our trainer lease's revision */
    _Atomic int64_t trainer_renewed_ms; /* when our trainer lease was last renewed (0: not ours) */
    char trainer[CLUSTER_NODE_MAX];   /* under map_lock: who held the trainer lease at the last tick ("": none) */
    _Atomic uint64_t model_seq;       /* the model publication (its manifest's stream sequence) this node serves, 0: none */
    _Atomic uint64_t model_trainer_version; /* its version on the trainer */
    /* the snapshot thread's: */
    uint64_t model_version;           /* the local version serving it */
    uint64_t model_last_seen;         /* the last publication's manifest sequence seen (a new one goes above it) */
    uint64_t *model_copy_chunks;      /* that publication's chunks (deleted once the trainer publishes a newer) */
    uint32_t model_copy_count;
    uint64_t model_copy_manifest;
    uint64_t model_failed_seq;        /* a publication that could not be served (logged once) */
    unsigned model_failed_tries;
    pthread_mutex_t pub_lock;         /* a leaf: guards the two below */
    PubCtx *pub_free;                 /* JetStream contexts for ingest, not in use (cluster_ingest.c) */
    size_t pub_idle;                  /* how many */
};

int64_t cluster_now_ms(void);
/* LTVD_EV_<p> into out. */
static inline void cluster_stream_name(char *out, size_t n, uint32_t p)
{
    snprintf(out, n, CLUSTER_STREAM_PREFIX "%u", p);
}
/* The live member that prefers partition p (rendezvous hashing), NULL when
 * there are none. Under map_lock. */
const char *cluster_preferred_node(Cluster *c, uint32_t p);
/* Has cluster_stop begun? Any thread. */
bool cluster_stopping(Cluster *c);
/* Waits up to ms for cluster_stop; true if it has begun. */
bool cluster_wait_stop(Cluster *c, int64_t ms);
/* Main: binds the key-value bucket name, or creates it (history 1, file
 * storage, replicas copies, 0: cluster.replicas; entries gone ttl_ms after
 * their last put, 0: kept). 0 or -EIO with why in err. */
int cluster_ensure_bucket(Cluster *c, const char *name, int64_t ttl_ms, int replicas, kvStore **out, char *err,
                          size_t errlen);
/* cluster_agree.c, main, at start: 0 if this node's cluster.partitions,
 * hash_key, replicas and lease_ms are the cluster's (the first node to
 * start records its own); -EINVAL naming every key that differs, with
 * both values, in err (the node must not join); -EIO (JetStream did not
 * answer: try again). */
int cluster_agree(Cluster *c, char *err, size_t errlen);
/* cluster_ingest.c, main at stop (no ingest running any more): destroys
 * the pooled JetStream contexts. */
void cluster_ingest_close(Cluster *c);
/* Does the lease of p surely still hold (less than 2/3 of cluster.lease_ms
 * since its last renewal was sent)? Any thread. */
bool cluster_lease_fresh(const Cluster *c, const Partition *p);

/* cluster_consume.c, the cluster thread: starts applying partition p from
 * the message after its applied_seq (its lease just taken; p is owned
 * from then on, and on failure, -EIO, it stays owned with no consumer:
 * the caller tries again); stops it (the lease given up or lost): nothing
 * of p is applied once it returns. */
int cluster_consume_start(Cluster *c, Partition *p);
void cluster_consume_stop(Cluster *c, Partition *p);
/* The cluster thread: is p's consumer gone from JetStream (its server
 * died and the library did not recreate it)? Then it is restarted from
 * the message after applied_seq. One JetStream request. */
void cluster_consume_check(Cluster *c, Partition *p);
/* The cluster thread: p owned and stalled (a message it could not apply
 * yet)? Then its consumer is restarted from the message after applied_seq:
 * that message is tried again, nothing after it was applied. */
void cluster_consume_retry(Cluster *c, Partition *p);

#define CLUSTER_SNAP_STREAM "LTVD_SNAPSHOTS" /* partition snapshots and the cluster's model */
/* A chunk's data: JetStream's message get answers in base64 inside JSON,
 * and the whole answer must stay below the server's max_payload (1 MiB). */
#define CLUSTER_CHUNK_BYTES (256u << 10)

/* cluster_snapshot.c, for itself and cluster_model.c: publishes copy to
 * subject as count chunks of CLUSTER_CHUNK_BYTES, each headed by (p,
 * covered, its index, count); seqs (count,) get their stream sequences.
 * 0, -EIO, -ENOMEM. */
int cluster_publish_chunks(Cluster *c, const char *subject, uint32_t p, uint64_t covered, const ByteBuf *copy,
                           uint64_t *seqs, uint32_t count);
/* Reads such chunks back in order into copy, checking each header and the
 * total. 0, -EIO (one is missing), -EBADMSG, -ENOMEM. */
int cluster_fetch_chunks(Cluster *c, uint32_t p, uint64_t covered, uint32_t count, uint64_t bytes,
                         const uint64_t *seqs, ByteBuf *copy);

#define CLUSTER_TRAINER_KEY "trainer" /* the trainer lease's key in ltvd_leases */

/* cluster.c: reads a lease (key: p-<partition>, or "trainer") from the
 * leases bucket's leader (cluster_kv_get): holder (CLUSTER_NODE_MAX) gets
 * its node ("" when absent), *rev its revision. NATS_OK, NATS_NOT_FOUND,
 * or NATS did not answer. */
natsStatus cluster_lease_read(Cluster *c, const char *key, char *holder, uint64_t *rev);
/* cluster_streams.c, main at start: partition p's event stream made or
 * found; then every partition's not made yet, STREAM_THREADS at a time (0,
 * or the first failure, the others tried again at the next call). */
int cluster_ensure_event_stream(Cluster *c, uint32_t p, char *err, size_t errlen);
int cluster_ensure_event_streams(Cluster *c, char *err, size_t errlen);
/* Creates or binds a stream of subject (file storage, cluster.replicas, a
 * message-id window of dup_window_ms, 0: JetStream's default). 0 or -EIO
 * with why in err. */
int cluster_ensure_stream(Cluster *c, const char *name, const char *subject, int64_t dup_window_ms, char *err,
                          size_t errlen);
/* cluster_snapshot.c: publishes body on subject only if the subject's last
 * message is still `last` (0: none), waiting at most wait_ms; *seq gets
 * its stream sequence. 0, -ESTALE (another came first), -EIO. */
int cluster_publish_after(Cluster *c, const char *subject, const void *body, size_t len, uint64_t last,
                          int64_t wait_ms, uint64_t *seq);
/* Reads the snapshot stream's last message on subject: 0 with *m (the
 * caller destroys it), -ENOENT (none), -EIO (NATS did not answer). */
int cluster_last_manifest(Cluster *c, const char *subject, natsMsg **m);
/* Deletes a copy's messages from the snapshot stream by sequence (0s are
 * skipped), best effort. */
void cluster_copy_delete(Cluster *c, uint64_t manifest, const uint64_t *chunks, uint32_t count);
/* cluster_members.c, the cluster thread each tick: the live members (at
 * most cap into out, *n of them): every node whose key is in the nodes
 * bucket among the bucket's listing, the last tick's members (known) and
 * self, each read back with a get of the bucket's leader on js
 * (cluster_kv_get); the listing waits at most wait_ms. 0,
 * or -EIO (NATS did not answer: the list is incomplete and must not be
 * used). */
int cluster_members_read(kvStore *nodes, jsCtx *js, int64_t wait_ms, const char *self, const Member *known,
                         size_t nknown, Member *out, size_t cap, size_t *n);
/* cluster_kv.c, any thread: key's entry in bucket, asked of the bucket's
 * stream leader on js (its wait): NATS_OK with its value in val (cap
 * bytes, cut there) and its revision in *rev; NATS_NOT_FOUND when the key
 * has no entry (never put, expired, deleted or purged); another status
 * when NATS did not answer, the bucket is gone or key is not a key. */
natsStatus cluster_kv_get(jsCtx *js, const char *bucket, const char *key, char *val, size_t cap, uint64_t *rev);
/* cluster.c: gives our lease of key up if its last revision is still rev. */
void cluster_lease_delete(Cluster *c, const char *key, uint64_t rev);

/* cluster_model.c. The cluster thread, every tick: takes, renews or loses
 * the trainer lease (reach: NATS answered this tick so far; else only the
 * lease's time is looked at), and makes the service follow the cluster's
 * model unless this node surely holds it. */
void cluster_model_tick(Cluster *c, bool reach);
/* The cluster thread, between a tick's slow steps: renews the trainer
 * lease if this node holds it (cluster.c, keep_alive). False if NATS did
 * not answer. */
bool cluster_model_keep(Cluster *c);
/* Does this node hold the trainer lease (renewed within 2/3 of lease_ms)? */
bool cluster_is_trainer(const Cluster *c);
/* The trainer lease's revision when this node holds it, else 0. */
uint64_t cluster_trainer_rev(const Cluster *c);
/* The snapshot thread, about once a second: serves the cluster's latest
 * model publication if it does not yet; on the trainer, publishes its
 * serving model when it changed. */
void cluster_model_sync(Cluster *c);

/* cluster_snapshot.c. Main: starts and stops the snapshot thread (after
 * the cluster thread has stopped). */
int cluster_snapshot_start(Cluster *c);
void cluster_snapshot_stop(Cluster *c);
/* The cluster thread, p just taken and not yet owned: loads p's latest
 * snapshot if it covers more than this node's state of p (this node's own
 * state of p is forgotten first). 0 (nothing to load, or loaded: applied_seq
 * is the snapshot's), -EIO (try again). */
int cluster_snapshot_load(Cluster *c, Partition *part);

#endif
