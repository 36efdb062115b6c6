/* cluster: cluster mode (docs/CLUSTER.md). Shoppers are sharded over the
 * nodes by partition = hash_keyed(cluster.hash_key, user_id) mod
 * cluster.partitions; a NATS JetStream stream is the write-ahead log of
 * every partition, and each partition is applied by the one node that
 * holds its lease in a JetStream key-value bucket.
 *
 * Files: cluster.c (connection, membership, leases,
 * the partition map, the cluster thread), cluster_streams.c (the
 * streams and buckets made or found at start), cluster_agree.c (a node whose
 * partitions, hash key, replicas or lease differ from the cluster's
 * record does not join), cluster_ingest.c (POST
 * /v1/events: one JetStream message per partition, answered once every
 * one is acknowledged), cluster_consume.c (the owner applies its
 * partitions' messages in order), cluster_snapshot.c (partition
 * snapshots in JetStream and the purge of the stream behind them; loading
 * one when a partition is taken; forgetting partitions given up),
 * cluster_report.c (the map and the metrics), cluster_forward.c (a read on a node
 * that does not own the shopper goes to the owner over HTTP, from a
 * forwarder thread: src/http_defer.h),
 * cluster_off.c (the same functions in a build without libnats: cluster
 * mode is refused).
 *
 * Threads: cluster_start and cluster_stop on main; the cluster thread
 * (cluster.c) renews leases and reads the map; the snapshot thread
 * (cluster_snapshot.c) takes partition snapshots; libnats' delivery threads
 * apply messages (cluster_consume.c) and take acks; everything else may be
 * called from any thread (the HTTP threads call it). The Cluster borrows
 * cfg, svc and metrics, which must outlive it. */
#ifndef LTVD_CLUSTER_H
#define LTVD_CLUSTER_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "metrics.h"
#include "service.h"
#include "shopper.h"
#include "util.h"

typedef struct Cluster Cluster;

#define CLUSTER_NODE_MAX 64   /* cluster.node_id bytes, NUL included */
#define CLUSTER_URL_MAX 128   /* cluster.advertise_url bytes, NUL included */
#define CLUSTER_MEMBERS_MAX 64 /* nodes one node keeps track of */

/* Is cluster mode asked for (any cluster key but the numbers set)? */
static inline bool cluster_configured(const LtvdConfig *cfg)
{
    return cfg->cluster_node_id[0] || cfg->cluster_nats_urls[0] || cfg->cluster_hash_key[0] ||
           cfg->cluster_advertise_url[0];
}
/* 0 if cluster mode is off, or on and complete and well formed; else
 * -EINVAL (-ENOTSUP in a build without libnats) and why in err. */
int cluster_config_check(const LtvdConfig *cfg, char *err, size_t errlen);

/* Main: connects to cluster.nats_urls, creates (or binds) the stream and
 * the buckets, checks that this node's settings are the cluster's (else
 * -EINVAL naming each key that differs and both values), joins the membership and starts the cluster thread, which
 * takes this node's share of the partitions. http_port: the port to
 * advertise when cluster.advertise_url is empty. 0, or -errno with why in
 * err (nothing left running). */
int cluster_start(Cluster **out, const LtvdConfig *cfg, Service *svc, Metrics *metrics, uint16_t http_port,
                  char *err, size_t errlen);
/* Main: stops the thread, stops applying, gives the leases back (so the
 * other nodes take the partitions at once rather than after the expiry),
 * leaves the membership, closes the connection. NULL-safe. */
void cluster_stop(Cluster *c);

const char *cluster_node_id(const Cluster *c);
uint32_t cluster_partition_of(const Cluster *c, const char *id, size_t len);

/* Who owns partition p, from this node's last look at the leases (at most
 * a tick old). *self when it is this node (and it applies p); else node
 * and url (CLUSTER_NODE_MAX, CLUSTER_URL_MAX) name the owner. -EAGAIN: no
 * live owner right now (a partition moving, or the map not read yet). */
int cluster_owner(Cluster *c, uint32_t p, bool *self, char *node, char *url);

/* GET /v1/cluster: this node, the members, every partition's owner and,
 * for this node's partitions, the stream sequence applied. */
void cluster_render_map(Cluster *c, TextBuf *b);

/* GET /metrics in cluster mode: appends this node's cluster series
 * (Prometheus text): partitions it applies, live members, messages
 * applied, messages it could not apply. */
void cluster_render_metrics(Cluster *c, TextBuf *b);

/* ---- ingest (cluster_ingest.c) ----------------------------------------- */

/* Publishes validated events (n,) to the stream, one message per
 * partition, the events of each in their order, and waits for JetStream's
 * acknowledgement of every one (cluster.publish_timeout_ms). 0: all
 * stored (replicated); -ETIMEDOUT or -EIO: not all were (some may have
 * been: a retry of the same request is deduplicated by event_id where
 * applied); -ENOMEM. err: why. */
int cluster_publish_events(Cluster *c, const Event *ev, size_t n, char *err, size_t errlen);
/* Publishes an erasure of the shopper to its partition; 0 once
 * acknowledged, as above. The owner erases it when it applies it. */
int cluster_publish_erase(Cluster *c, const char *id, size_t len, char *err, size_t errlen);

/* ---- forwarding (cluster_forward.c) ------------------------------------ */

#define CLUSTER_FORWARD_MAX_BYTES (64u << 20) /* an answer larger than this is refused (-EMSGSIZE) */

typedef struct ClusterReply {
    int status;
    ByteBuf body; /* the caller frees it (bytebuf_free) */
} ClusterReply;

/* Any thread: "http://IPV4[:PORT][/...]" ("localhost" is 127.0.0.1; port
 * 80 when absent) -> the address cluster_forward connects to. 0 or
 * -EINVAL. cluster_config_check checks the advertised URL with it. */
int cluster_parse_base(const char *url, struct sockaddr_in *sa);
/* One blocking HTTP/1.1 request to base_url (http://IPV4:PORT) + path
 * (with its query), with the header X-Ltvd-Forwarded: 1 (the owner answers
 * it itself, never forwards again) and, when auth is not NULL, that
 * Authorization header, on a kept-alive connection to that owner when one
 * is idle (a few per owner; one idle idle_ms or longer is closed, not
 * used: keep it below the owners' server.connection_timeout_s, see
 * cluster_forward_idle_ms). 0 with out filled, or -errno (-ETIMEDOUT,
 * -ECONNREFUSED, -EPROTO, -EMSGSIZE) within timeout_ms. Blocks: never
 * call it on an HTTP worker (http_defer). */
int cluster_forward(const char *base_url, const char *method, const char *path, const char *auth,
                    const char *body, size_t len, int timeout_ms, int idle_ms, ClusterReply *out);
/* How long a kept-alive forward connection may stay idle: 5 s, or half the
 * server.connection_timeout_s of cfg (every node has the same) if less. */
static inline int cluster_forward_idle_ms(const LtvdConfig *cfg)
{
    int64_t half = cfg->server_connection_timeout_s * 1000 / 2;
    return half < 5000 ? (int)half : 5000;
}
/* Main at stop (no forward running): closes the idle kept-alive
 * connections. */
void cluster_forward_close_all(void);

#endif
