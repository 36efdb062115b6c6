/* cluster: the cluster's shape as one node sees it. The connection to
 * NATS, the streams (LTVD_EV_<p>, subject ltvd.ev.<p>, one per partition;
 * LTVD_SNAPSHOTS, cluster_snapshot.c's) and the two
 * key-value buckets: ltvd_nodes (one key per live node, its HTTP URL,
 * refreshed every tick and gone lease_ms after the last) and ltvd_leases
 * (key p-<partition>: the owner's node id, created only if absent,
 * renewed by update-with-revision, gone lease_ms after the last renewal:
 * the buckets' TTL). The cluster thread runs one tick every lease_ms/4:
 * heartbeat, members, then every partition's lease: renew ours, give up
 * one whose preferred node (rendezvous hashing over the live members) is
 * another live node, take a free one that prefers us. Applying is
 * cluster_consume.c's, ingest cluster_ingest.c's.
 *
 * Threads: see cluster.h; the tick is the cluster thread's only. */
#include "cluster_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "log.h"
#include "util.h"

int64_t cluster_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

bool cluster_stopping(Cluster *c)
{
    pthread_mutex_lock(&c->stop_lock);
    bool stop = c->stopping;
    pthread_mutex_unlock(&c->stop_lock);
    return stop;
}

bool cluster_wait_stop(Cluster *c, int64_t ms)
{
    pthread_mutex_lock(&c->stop_lock);
    struct timespec until; /* stop_cond waits on CLOCK_MONOTONIC (cluster_start) */
    clock_gettime(CLOCK_MONOTONIC, &until);
    int64_t ns = until.tv_nsec + (ms % 1000) * 1000000;
    until.tv_sec += ms / 1000 + ns / 1000000000;
    until.tv_nsec = ns % 1000000000;
    while (!c->stopping && pthread_cond_timedwait(&c->stop_cond, &c->stop_lock, &until) != ETIMEDOUT)
        ;
    bool stop = c->stopping;
    pthread_mutex_unlock(&c->stop_lock);
    return stop;
}

bool cluster_lease_fresh(const Cluster *c, const Partition *p)
{
    return cluster_now_ms() - atomic_load(&p->renewed_ms) < c->cfg->cluster_lease_ms * 2 / 3;
}

/* ---- config ------------------------------------------------------------- */

#define CLUSTER_MIN_THREADS 4 /* server.threads in cluster mode */

/* 32 hex digits -> the 128-bit key (k0: the first 16). */
static int parse_hash_key(const char *s, HashKey *out)
{
    if (strlen(s) != 32)
        return -EINVAL;
    uint64_t k[2] = {0, 0};
    for (int i = 0; i < 32; i++) {
        int v = hex_digit(s[i]);
        if (v < 0)
            return -EINVAL;
        k[i / 16] = (k[i / 16] << 4) | (uint64_t)v;
    }
    out->k0 = k[0];
    out->k1 = k[1];
    return 0;
}

/* A node id is a key in the buckets: letters, digits, '-' and '_'. */
static bool node_id_valid(const char *s)
{
    if (!s[0])
        return false;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') || *s == '-' ||
              *s == '_'))
            return false;
    return true;
}

int cluster_config_check(const LtvdConfig *cfg, char *err, size_t errlen)
{
    if (!cluster_configured(cfg))
        return 0;
    HashKey k;
    if (!node_id_valid(cfg->cluster_node_id)) {
        snprintf(err, errlen, "cluster.node_id must be set to 1 to 63 letters, digits, '-' or '_' in cluster mode");
        return -EINVAL;
    }
    if (!cfg->cluster_nats_urls[0]) {
        snprintf(err, errlen, "cluster.nats_urls must list the NATS servers (nats://host:port,...) in cluster mode");
        return -EINVAL;
    }
    if (parse_hash_key(cfg->cluster_hash_key, &k)) {
        snprintf(err, errlen, "cluster.hash_key must be 32 hex digits, the same on every node (or set "
                              "LTVD_CLUSTER_HASH_KEY)");
        return -EINVAL;
    }
    /* An ingest holds its HTTP thread until JetStream acknowledges it (up
     * to cluster.publish_timeout_ms); with too few threads a slow stream
     * stalls every read of the node. (Forwarded reads run on the forwarder
     * threads, never on an HTTP thread: http_defer.h.) */
    if (cfg->server_threads < CLUSTER_MIN_THREADS) {
        snprintf(err, errlen, "server.threads must be %d or more in cluster mode (it is %lld): an ingest holds an "
                 "HTTP thread until JetStream acknowledges it", CLUSTER_MIN_THREADS,
                 (long long)cfg->server_threads);
        return -EINVAL;
    }
    /* What the other nodes forward to, parsed as the forwarder does: the
     * advertised URL, else http://server.bind:port. */
    struct sockaddr_in sa;
    const char *u = cfg->cluster_advertise_url;
    if (u[0]) {
        if (strlen(u) >= CLUSTER_URL_MAX || cluster_parse_base(u, &sa) || sa.sin_addr.s_addr == htonl(INADDR_ANY)) {
            snprintf(err, errlen, "cluster.advertise_url must be http://IPV4:PORT, an address the other nodes can "
                                  "reach (what they forward reads to), not \"%.64s\"", u);
            return -EINVAL;
        }
    } else {
        char base[CONFIG_STR_MAX + 16];
        snprintf(base, sizeof base, "http://%.64s:1", cfg->server_bind);
        if (cluster_parse_base(base, &sa) || sa.sin_addr.s_addr == htonl(INADDR_ANY)) {
            snprintf(err, errlen, "cluster.advertise_url must be set (http://IPV4:PORT, what the other nodes forward "
                                  "reads to) when server.bind (\"%.64s\") is not one IPv4 address", cfg->server_bind);
            return -EINVAL;
        }
    }
    return 0;
}

/* ---- the map ------------------------------------------------------------ */

const char *cluster_node_id(const Cluster *c) { return c->node; }

uint32_t cluster_partition_of(const Cluster *c, const char *id, size_t len)
{
    return (uint32_t)(hash_keyed(&c->key, id, len) % c->nparts);
}

int cluster_owner(Cluster *c, uint32_t p, bool *self, char *node, char *url)
{
    *self = false;
    node[0] = url[0] = '\0';
    pthread_mutex_lock(&c->map_lock);
    snprintf(node, CLUSTER_NODE_MAX, "%s", c->owner[p]);
    for (size_t i = 0; i < c->nmembers; i++)
        if (strcmp(c->members[i].node, node) == 0)
            snprintf(url, CLUSTER_URL_MAX, "%s", c->members[i].url);
    pthread_mutex_unlock(&c->map_lock);
    /* The last lease holder we saw. While NATS cannot be reached that stays
     * us even once we stopped applying: nobody else can take the lease
     * without NATS either, so our state is the newest there is and reads go
     * on from it. */
    if (strcmp(node, c->node) == 0) {
        *self = true;
        return 0;
    }
    return node[0] && url[0] ? 0 : -EAGAIN;
}

/* ---- leases ------------------------------------------------------------- */

static void lease_key(uint32_t p, char *out, size_t cap) { snprintf(out, cap, "p-%u", p); }

/* key's lease (p-<partition>, or "trainer"): its holder (CLUSTER_NODE_MAX
 * bytes) and revision, read from the leases bucket's leader
 * (cluster_kv_get). */
natsStatus cluster_lease_read(Cluster *c, const char *key, char *holder, uint64_t *rev)
{
    return cluster_kv_get(c->js_tick, CLUSTER_LEASE_BUCKET, key, holder, CLUSTER_NODE_MAX, rev);
}

/* Gives our lease up (key: p-<partition>, or "trainer"): a delete marker for its key, stored only if the
 * key's last revision is still rev (ours). kvStore_Delete cannot make that
 * condition, so this publishes what it would (KV-Operation: DEL on the
 * key's subject) with the expected last subject sequence: a lease another
 * node took in between is left alone. Best effort: the lease expires
 * anyway. The cluster thread, or main at stop. */
void cluster_lease_delete(Cluster *c, const char *key, uint64_t rev)
{
    if (!rev)
        return;
    char subject[64];
    snprintf(subject, sizeof subject, "$KV." CLUSTER_LEASE_BUCKET ".%s", key);
    natsMsg *m = NULL;
    if (natsMsg_Create(&m, subject, NULL, NULL, 0) != NATS_OK)
        return;
    jsPubOptions po;
    jsPubOptions_Init(&po);
    po.ExpectLastSubjectSeq = rev;
    jsPubAck *ack = NULL;
    jsErrCode jerr = 0;
    natsStatus s = natsMsgHeader_Set(m, "KV-Operation", "DEL");
    if (s == NATS_OK)
        s = js_PublishMsg(&ack, c->js, m, &po, &jerr);
    jsPubAck_Destroy(ack);
    natsMsg_Destroy(m);
    /* refused at rev: a renewal stored whose answer was lost leaves the
     * lease ours at a newer revision, deleted at that one */
    char holder[CLUSTER_NODE_MAX];
    uint64_t now_rev = 0;
    if (s != NATS_OK && jerr == JSStreamWrongLastSequenceErr &&
        cluster_lease_read(c, key, holder, &now_rev) == NATS_OK && now_rev > rev && strcmp(holder, c->node) == 0)
        cluster_lease_delete(c, key, now_rev);
}

/* Rendezvous hashing: the live member with the highest hash of (node, p)
 * prefers p, so a node joining or leaving moves only its share. NULL when
 * there are no members. Under map_lock. */
const char *cluster_preferred_node(Cluster *c, uint32_t p)
{
    const char *best = NULL;
    uint64_t best_score = 0;
    for (size_t i = 0; i < c->nmembers; i++) {
        char buf[CLUSTER_NODE_MAX + 16];
        int n = snprintf(buf, sizeof buf, "%s#%u", c->members[i].node, p);
        uint64_t score = hash_keyed(&c->key, buf, (size_t)n);
        if (!best || score > best_score) {
            best = c->members[i].node;
            best_score = score;
        }
    }
    return best;
}

static void stop_partition(Cluster *c, Partition *part, const char *why)
{
    cluster_consume_stop(c, part);
    log_msg(LOG_INFO, "cluster: partition released", "partition=%u reason=%s applied_seq=%llu", part->index, why,
            (unsigned long long)atomic_load(&part->applied_seq));
}

static void take_partition(Cluster *c, Partition *part, uint64_t rev, int64_t sent_ms)
{
    part->lease_rev = rev;
    part->renewed_ms = sent_ms;
    int rc = cluster_consume_start(c, part);
    if (rc) { /* the lease is kept and renewed; the next tick tries again */
        log_msg(LOG_WARN, "cluster: partition taken, its consumer not started yet", "partition=%u", part->index);
        return;
    }
    log_msg(LOG_INFO, "cluster: partition taken", "partition=%u from_seq=%llu", part->index,
            (unsigned long long)atomic_load(&part->applied_seq) + 1);
}

/* The cluster thread (and main at stop, once it has ended): `owned` is
 * written only by the cluster thread (cluster_consume_start/stop), under
 * apply_lock for the other threads' sake, so its own read needs no lock,
 * and the tick never waits for the snapshot thread holding one. */
static bool owned(Partition *part) { return part->owned; }

/* After a failed renewal: was it refused (the lease is someone else's now,
 * or gone), rather than not delivered (NATS unreachable, a leader
 * election)? A renewal whose answer was lost may have been stored: the
 * lease is then still ours, at a newer revision, which part takes. */
static bool renewal_refused(Cluster *c, Partition *part, const char *key)
{
    char holder[CLUSTER_NODE_MAX];
    uint64_t rev = 0;
    natsStatus s = cluster_lease_read(c, key, holder, &rev);
    if (s == NATS_NOT_FOUND)
        return true;
    if (s != NATS_OK)
        return false;
    bool refused = strcmp(holder, c->node) != 0;
    if (!refused && rev > part->lease_rev) /* only raised */
        part->lease_rev = rev;
    return refused;
}

/* One partition's lease, once per tick. members_known: the member list is
 * this tick's (else nothing is taken or given up, only renewed). reach:
 * NATS answered this tick so far (else no request is made: a tick must not
 * spend a timeout on every partition while the leases run out). Returns
 * false if NATS did not answer. */
static bool tick_partition(Cluster *c, Partition *part, bool members_known, bool reach)
{
    char key[32], holder[CLUSTER_NODE_MAX] = "";
    lease_key(part->index, key, sizeof key);
    uint64_t rev = 0;
    natsStatus s = reach ? cluster_lease_read(c, key, holder, &rev) : NATS_TIMEOUT;
    bool mine = owned(part);
    int64_t now = cluster_now_ms();
    if (s != NATS_OK && s != NATS_NOT_FOUND) {
        /* NATS unreachable: keep applying only while the lease surely holds */
        if (mine && now - part->renewed_ms > c->cfg->cluster_lease_ms * 2 / 3)
            stop_partition(c, part, "lease_unrenewed");
        return false;
    }
    pthread_mutex_lock(&c->map_lock);
    const char *pref = members_known ? cluster_preferred_node(c, part->index) : NULL;
    bool prefer_me = pref && strcmp(pref, c->node) == 0;
    bool prefer_other = pref && !prefer_me;
    /* The map keeps the last holder seen while a lease is gone and nobody
     * took it: that node has the newest state (without a NATS quorum a
     * replica may expire a lease no one can take, and reads go on). */
    if (holder[0])
        snprintf(c->owner[part->index], CLUSTER_NODE_MAX, "%s", holder);
    pthread_mutex_unlock(&c->map_lock);

    bool held_by_me = strcmp(holder, c->node) == 0;
    /* Another node holds it: what this node still has of it is stale, and
     * is forgotten (cluster_snapshot.c). Not while nobody holds it: without
     * a NATS quorum nobody can take it, and this node's state is the newest
     * there is, which reads keep being answered from. */
    if (holder[0] && !held_by_me && atomic_load(&part->applied_seq))
        atomic_store(&part->drop_pending, true);
    if (mine && !held_by_me) {
        stop_partition(c, part, holder[0] ? "lease_taken" : "lease_expired");
        mine = false;
    }
    if (mine && prefer_other) {
        stop_partition(c, part, "rebalance");
        cluster_lease_delete(c, key, rev);
        pthread_mutex_lock(&c->map_lock);
        c->owner[part->index][0] = '\0';
        pthread_mutex_unlock(&c->map_lock);
        return true;
    }
    if (mine || (held_by_me && !prefer_other)) {
        /* renew ours, or adopt the lease a former life of this node left */
        uint64_t nrev = 0;
        s = kvStore_UpdateString(&nrev, c->leases, key, c->node, mine ? part->lease_rev : rev);
        if (s != NATS_OK) {
            if (mine && renewal_refused(c, part, key))
                stop_partition(c, part, "renewal_refused");
            else if (mine && now - part->renewed_ms > c->cfg->cluster_lease_ms * 2 / 3)
                stop_partition(c, part, "lease_unrenewed");
            return s != NATS_TIMEOUT;
        }
        if (mine) {
            part->lease_rev = nrev;
            part->renewed_ms = now;
            if (!part->sub && cluster_consume_start(c, part) == 0) /* its start failed before */
                log_msg(LOG_INFO, "cluster: consumer started", "partition=%u from_seq=%llu", part->index,
                        (unsigned long long)atomic_load(&part->applied_seq) + 1);
        } else {
            take_partition(c, part, nrev, now);
        }
        return true;
    }
    if (!holder[0] && prefer_me) {
        uint64_t nrev = 0;
        s = kvStore_CreateString(&nrev, c->leases, key, c->node);
        if (s == NATS_OK) {
            take_partition(c, part, nrev, now);
            pthread_mutex_lock(&c->map_lock);
            snprintf(c->owner[part->index], CLUSTER_NODE_MAX, "%s", c->node);
            pthread_mutex_unlock(&c->map_lock);
        }
        return s != NATS_TIMEOUT;
    }
    return true;
}

/* Heartbeat, then the live members (cluster_members.c). False if either
 * failed: the member list is then last tick's. Only this thread writes
 * the list, so it reads it without map_lock. */
static bool tick_members(Cluster *c, int64_t tick_ms)
{
    if (kvStore_PutString(NULL, c->nodes, c->node, c->url) != NATS_OK)
        return false;
    Member found[CLUSTER_MEMBERS_MAX];
    size_t n = 0;
    int rc = cluster_members_read(c->nodes, c->js_tick, tick_ms, c->node, c->members, c->nmembers, found,
                                  CLUSTER_MEMBERS_MAX, &n);
    if (rc || !n)
        return false;
    pthread_mutex_lock(&c->map_lock);
    memcpy(c->members, found, n * sizeof found[0]);
    c->nmembers = n;
    pthread_mutex_unlock(&c->map_lock);
    return true;
}

/* Called between a tick's steps. A step can be slow: starting a consumer
 * or loading a snapshot spends a JetStream timeout while a stream elects
 * its leader, one partition after another (seen: ticks of 3 to 9 s
 * against a 6 s lease while one NATS server of three was down; the
 * heartbeat and the leases lapsed, the node dropped out of the others'
 * members and partitions moved for no failure). So once `after` ms have
 * passed since the leases were last renewed (beat_ms), every lease this
 * node holds, the trainer's among them, and then the heartbeat are renewed
 * here. The leases come first and only a timeout on them stops the rest
 * (*reach false): the heartbeat lives in another stream, whose trouble
 * must not cost the partitions. A renewal refused is looked up as the
 * tick's own is: still ours at a newer revision, or given up. */
static void keep_alive(Cluster *c, int64_t after, bool *reach)
{
    int64_t now = cluster_now_ms();
    if (!*reach || now - c->beat_ms < after)
        return;
    c->beat_ms = now;
    for (uint32_t p = 0; p < c->nparts; p++) {
        Partition *part = &c->parts[p];
        if (!owned(part))
            continue;
        char key[32];
        lease_key(p, key, sizeof key);
        uint64_t nrev = 0;
        int64_t sent = cluster_now_ms();
        natsStatus s = kvStore_UpdateString(&nrev, c->leases, key, c->node, part->lease_rev);
        if (s == NATS_OK) {
            part->lease_rev = nrev;
            part->renewed_ms = sent;
        } else if (s == NATS_TIMEOUT) {
            *reach = false;
            return;
        } else if (renewal_refused(c, part, key)) {
            stop_partition(c, part, "renewal_refused");
        }
    }
    if (!cluster_model_keep(c)) {
        *reach = false;
        return;
    }
    kvStore_PutString(NULL, c->nodes, c->node, c->url); /* its failure: the next tick's */
}

/* A consumer whose NATS server died is normally recreated by libnats after
 * two missed heartbeats, but not always soon (seen: 30 s after one server
 * of three was killed). So each tick looks at up to CHECKS_PER_TICK owned
 * partitions that applied nothing for two ticks, and restarts a consumer
 * JetStream no longer has. Only while connected: each look is a request. */
#define CHECKS_PER_TICK 4

static void check_consumers(Cluster *c, int64_t tick_ms, bool *reach)
{
    int checks = 0;
    bool connected = natsConnection_Status(c->nc) == NATS_CONN_STATUS_CONNECTED;
    for (uint32_t p = 0; p < c->nparts; p++) {
        Partition *part = &c->parts[p];
        uint64_t seq = atomic_load(&part->applied_seq);
        if (!owned(part) || seq != part->seen_seq) {
            part->seen_seq = seq;
            part->idle_ticks = 0;
            continue;
        }
        if (++part->idle_ticks < 2 || !connected || checks == CHECKS_PER_TICK)
            continue;
        checks++;
        part->idle_ticks = 0;
        keep_alive(c, tick_ms, reach);
        cluster_consume_check(c, part);
    }
}

static void *cluster_thread(void *arg)
{
    Cluster *c = arg;
    int64_t tick_ms = c->cfg->cluster_lease_ms / 4;
    c->beat_ms = cluster_now_ms(); /* nothing held yet */
    for (;;) {
        int64_t t0 = cluster_now_ms();
        bool reach = true;
        /* the last tick ended slowly: the leases before the heartbeat and
         * the member listing (a fast tick's next starts a tick after its
         * partition loop did, under this bar) */
        keep_alive(c, tick_ms * 3 / 2, &reach);
        bool members_known = reach && tick_members(c, tick_ms);
        c->beat_ms = cluster_now_ms(); /* the loop renews every lease held, from now */
        for (uint32_t p = 0; p < c->nparts; p++) {
            keep_alive(c, tick_ms, &reach);
            reach = tick_partition(c, &c->parts[p], members_known, reach) && reach;
        }
        cluster_model_tick(c, reach);
        check_consumers(c, tick_ms, &reach);
        for (uint32_t p = 0; p < c->nparts; p++) {
            keep_alive(c, tick_ms, &reach);
            cluster_consume_retry(c, &c->parts[p]);
        }
        int64_t took = cluster_now_ms() - t0;
        /* NATS answered, but slowly: JetStream timeouts in the tick's steps
         * (keep_alive holds the leases meanwhile; a tick without NATS
         * spends its timeouts: not news) */
        if (reach && took > c->cfg->cluster_lease_ms / 2)
            log_msg(LOG_WARN, "cluster: slow tick", "took_ms=%lld lease_ms=%lld", (long long)took,
                    (long long)c->cfg->cluster_lease_ms);
        /* the next tick starts a tick after this one's renewals began, and
         * after a slow tick soon (the sleep would come on top of it) */
        int64_t sleep_ms = c->beat_ms + tick_ms - cluster_now_ms();
        if (sleep_ms > tick_ms)
            sleep_ms = tick_ms;
        if (sleep_ms < tick_ms / 10)
            sleep_ms = tick_ms / 10;
        if (cluster_wait_stop(c, sleep_ms))
            return NULL;
    }
}

/* ---- start and stop ----------------------------------------------------- */

static int connect_nats(Cluster *c, char *err, size_t errlen)
{
    char urls[CONFIG_STR_MAX];
    const char *servers[16];
    int n = 0;
    snprintf(urls, sizeof urls, "%s", c->cfg->cluster_nats_urls);
    for (char *save = NULL, *tok = strtok_r(urls, ",", &save); tok && n < 16; tok = strtok_r(NULL, ",", &save))
        servers[n++] = tok;
    natsOptions *opts = NULL;
    natsStatus s = natsOptions_Create(&opts);
    if (s == NATS_OK)
        s = natsOptions_SetServers(opts, servers, n);
    if (s == NATS_OK)
        s = natsOptions_SetName(opts, c->node);
    if (s == NATS_OK)
        s = natsOptions_SetMaxReconnect(opts, -1); /* forever: a node waits for NATS to come back */
    if (s == NATS_OK)
        s = natsOptions_SetReconnectWait(opts, 250);
    if (s == NATS_OK)
        s = natsOptions_SetTimeout(opts, 2000);
    if (s == NATS_OK) /* a few delivery threads for every consumer, not one thread each */
        s = natsOptions_UseGlobalMessageDelivery(opts, true);
    if (s == NATS_OK)
        s = natsConnection_Connect(&c->nc, opts);
    natsOptions_Destroy(opts);
    if (s == NATS_OK) {
        jsOptions jo;
        jsOptions_Init(&jo);
        jo.Wait = c->cfg->cluster_publish_timeout_ms;
        s = natsConnection_JetStream(&c->js, c->nc, &jo);
    }
    if (s == NATS_OK) {
        /* The cluster thread's requests (leases, heartbeat, consumers,
         * snapshot reads) wait at most a tick: keep_alive runs between
         * its steps, so a step that waits out its timeout still leaves the
         * leases renewed in time (docs/CLUSTER.md, "Ownership"). */
        jsOptions jo;
        jsOptions_Init(&jo);
        int64_t tick_ms = c->cfg->cluster_lease_ms / 4;
        jo.Wait = c->cfg->cluster_publish_timeout_ms < tick_ms ? c->cfg->cluster_publish_timeout_ms : tick_ms;
        s = natsConnection_JetStream(&c->js_tick, c->nc, &jo);
    }
    if (s != NATS_OK) {
        snprintf(err, errlen, "cannot connect to NATS at %s: %s", c->cfg->cluster_nats_urls, natsStatus_GetText(s));
        return -ECONNREFUSED;
    }
    return 0;
}

#define START_TRIES 40
static uint32_t shard_of(void *arg, const char *id, size_t len) { return cluster_partition_of(arg, id, len); }

int cluster_start(Cluster **out, const LtvdConfig *cfg, Service *svc, Metrics *metrics, uint16_t http_port,
                  char *err, size_t errlen)
{
    int rc = cluster_config_check(cfg, err, errlen);
    if (rc)
        return rc;
    Cluster *c = calloc(1, sizeof *c);
    if (!c)
        return -ENOMEM;
    c->cfg = cfg;
    c->svc = svc;
    c->metrics = metrics;
    c->nparts = (uint32_t)cfg->cluster_partitions;
    parse_hash_key(cfg->cluster_hash_key, &c->key);
    snprintf(c->node, sizeof c->node, "%.63s", cfg->cluster_node_id);
    if (cfg->cluster_advertise_url[0])
        snprintf(c->url, sizeof c->url, "%.127s", cfg->cluster_advertise_url);
    else
        snprintf(c->url, sizeof c->url, "http://%.64s:%u", cfg->server_bind, http_port);
    if (getrandom(&c->nonce, sizeof c->nonce, 0) != sizeof c->nonce)
        c->nonce = (uint64_t)cluster_now_ms();
    pthread_mutex_init(&c->map_lock, NULL);
    pthread_mutex_init(&c->stop_lock, NULL);
    pthread_mutex_init(&c->pub_lock, NULL);
    pthread_condattr_t ca; /* a tick is not stretched or cut short by a wall-clock step */
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&c->stop_cond, &ca);
    pthread_condattr_destroy(&ca);
    c->parts = calloc(c->nparts, sizeof *c->parts);
    c->owner = calloc(c->nparts, sizeof *c->owner);
    if (!c->parts || !c->owner) {
        rc = -ENOMEM;
        goto fail;
    }
    for (uint32_t p = 0; p < c->nparts; p++) {
        c->parts[p].cluster = c;
        c->parts[p].index = p;
        pthread_mutex_init(&c->parts[p].apply_lock, NULL);
    }
    if ((rc = connect_nats(c, err, errlen)) != 0)
        goto fail;
    /* A NATS cluster that just started elects its JetStream leaders first:
     * the stream and buckets get up to START_TRIES half-seconds. */
    int64_t ttl = cfg->cluster_lease_ms;
    bool agreed = false;
    for (int i = 0; i < START_TRIES; i++) {
        /* partition 0's event stream first (what the cluster's settings are
         * compared with: a node refused creates no other), then the rest */
        rc = cluster_ensure_event_stream(c, 0, err, errlen);
        if (!rc && !agreed)
            agreed = !(rc = cluster_agree(c, err, errlen));
        if (!rc)
            rc = cluster_ensure_event_streams(c, err, errlen);
        if (!rc)
            rc = cluster_ensure_stream(c, CLUSTER_SNAP_STREAM, "ltvd.snap.>", 0, err, errlen);
        if (!rc && !c->leases)
            rc = cluster_ensure_bucket(c, CLUSTER_LEASE_BUCKET, ttl, 0, &c->leases, err, errlen);
        if (!rc)
            rc = cluster_ensure_bucket(c, CLUSTER_NODE_BUCKET, ttl, 0, &c->nodes, err, errlen);
        if (!rc || rc == -EINVAL) /* -EINVAL: other settings than the cluster's, which no retry mends */
            break;
        nats_Sleep(500);
    }
    if (!rc && (rc = service_use_shards(svc, c->nparts, shard_of, c, &c->key)) != 0)
        snprintf(err, errlen, "cannot shard the state: %s", strerror(-rc));
    service_set_model_follower(svc, true); /* until this node holds the trainer lease (cluster_model.c) */
    if (rc)
        goto fail;
    if (pthread_create(&c->thread, NULL, cluster_thread, c) == 0)
        c->thread_started = true;
    if (!c->thread_started || cluster_snapshot_start(c) != 0) {
        rc = -EAGAIN;
        snprintf(err, errlen, "cannot start the cluster threads");
        goto fail;
    }
    log_msg(LOG_INFO, "cluster: joined", "node=%s url=%s partitions=%u nats=\"%s\"", c->node, c->url, c->nparts,
            cfg->cluster_nats_urls);
    *out = c;
    return 0;
fail:
    cluster_stop(c);
    return rc;
}

void cluster_stop(Cluster *c)
{
    if (!c)
        return;
    if (c->thread_started) {
        pthread_mutex_lock(&c->stop_lock);
        c->stopping = true;
        pthread_cond_broadcast(&c->stop_cond);
        pthread_mutex_unlock(&c->stop_lock);
        pthread_join(c->thread, NULL);
    }
    cluster_snapshot_stop(c);
    /* without a connection no delete can go (each would wait out its
     * timeout): the leases and the heartbeat expire by themselves */
    const bool connected = natsConnection_Status(c->nc) == NATS_CONN_STATUS_CONNECTED;
    for (uint32_t p = 0; c->parts && p < c->nparts; p++) {
        Partition *part = &c->parts[p];
        if (!owned(part))
            continue;
        cluster_consume_stop(c, part);
        if (connected) {
            char key[32];
            lease_key(p, key, sizeof key);
            cluster_lease_delete(c, key, part->lease_rev);
        }
    }
    if (connected)
        cluster_lease_delete(c, CLUSTER_TRAINER_KEY, cluster_trainer_rev(c));
    if (c->nodes && c->thread_started && connected) /* a node refused at start leaves a live namesake's key alone */
        (void)kvStore_Delete(c->nodes, c->node);
    cluster_ingest_close(c);
    cluster_forward_close_all();
    kvStore_Destroy(c->leases);
    kvStore_Destroy(c->nodes);
    jsCtx_Destroy(c->js);
    jsCtx_Destroy(c->js_tick);
    natsConnection_Destroy(c->nc);
    /* libnats' delivery threads may still hold a message of a consumer just
     * closed, whose handler reads c->parts: wait for them all to end before
     * freeing anything (cluster_stop runs once, at exit). */
    nats_CloseAndWait(5000);
    for (uint32_t p = 0; c->parts && p < c->nparts; p++) {
        pthread_mutex_destroy(&c->parts[p].apply_lock);
        free(c->parts[p].copy_chunks);
    }
    pthread_mutex_destroy(&c->map_lock);
    pthread_mutex_destroy(&c->stop_lock);
    pthread_mutex_destroy(&c->pub_lock);
    pthread_cond_destroy(&c->stop_cond);
    free(c->model_copy_chunks);
    free(c->parts);
    free(c->owner);
    free(c);
}
