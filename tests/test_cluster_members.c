/* The member list a tick reads (src/cluster_members.c) against a real
 * nats-server with JetStream: no live node is missed while the others
 * re-put their keys (the bucket's listing alone missed one in about 8% of
 * listings here), a node whose key expired is gone, a new one is seen, and
 * the list stays within its bound. And the gets from a bucket's leader
 * that the members' and the leases' reads make (src/cluster_kv.c). Skips
 * (77) without nats-server. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../src/cluster_internal.h"
#include "test_util.h"

static pid_t server = -1;
static char store_dir[] = "/tmp/ltvd-test-members-XXXXXX";

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof sa;
    ASSERT(fd >= 0 && bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0);
    ASSERT(getsockname(fd, (struct sockaddr *)&sa, &len) == 0);
    close(fd);
    return ntohs(sa.sin_port);
}

static void stop_server(void)
{
    if (server > 0) {
        kill(server, SIGTERM);
        waitpid(server, NULL, 0);
        server = -1;
        char cmd[128];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", store_dir);
        if (system(cmd) != 0)
            fprintf(stderr, "could not remove %s\n", store_dir);
    }
}

/* nats-server with JetStream on a free loopback port; a connection to it. */
static natsConnection *start_server(void)
{
    if (system("command -v nats-server >/dev/null 2>&1") != 0)
        TEST_SKIP("nats-server is not installed (Debian package nats-server; tools/install-deps.sh installs it)");
    ASSERT(mkdtemp(store_dir));
    int port = free_port();
    char port_s[16], url[64];
    snprintf(port_s, sizeof port_s, "%d", port);
    snprintf(url, sizeof url, "nats://127.0.0.1:%d", port);
    server = fork();
    ASSERT(server >= 0);
    if (server == 0) {
        if (!freopen("/dev/null", "w", stdout) || !freopen("/dev/null", "w", stderr))
            _exit(126);
        execlp("nats-server", "nats-server", "-js", "-a", "127.0.0.1", "-p", port_s, "-sd", store_dir, (char *)NULL);
        _exit(127);
    }
    atexit(stop_server);
    natsConnection *nc = NULL;
    for (int i = 0; i < 200 && natsConnection_ConnectTo(&nc, url) != NATS_OK; i++)
        usleep(50000);
    ASSERT(nc);
    return nc;
}

static jsCtx *js; /* the reads' context, as the cluster thread's */

static kvStore *make_bucket(natsConnection *nc, const char *name, int64_t ttl_ms)
{
    if (!js)
        ASSERT(natsConnection_JetStream(&js, nc, NULL) == NATS_OK);
    kvConfig kc;
    kvConfig_Init(&kc);
    kc.Bucket = name;
    kc.History = 1;
    kc.TTL = ttl_ms * 1000000;
    kc.StorageType = js_FileStorage;
    kvStore *kv = NULL;
    natsStatus s = NATS_ERR;
    for (int i = 0; i < 100 && (s = js_CreateKeyValue(&kv, js, &kc)) != NATS_OK; i++)
        usleep(100000); /* JetStream may still be starting */
    ASSERT(s == NATS_OK);
    return kv;
}

static const char *url_of(const Member *m, size_t n, const char *node)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(m[i].node, node) == 0)
            return m[i].url;
    return NULL;
}

typedef struct Putter {
    kvStore *kv;
    const char *node, *url;
    atomic_bool *stop;
} Putter;

/* Another node's heartbeat, as fast as NATS takes it. */
static void *heartbeat(void *arg)
{
    Putter *p = arg;
    while (!atomic_load(p->stop))
        kvStore_PutString(NULL, p->kv, p->node, p->url);
    return NULL;
}

/* n1 reads while n2 and n3 re-put their keys: every read lists each of the
 * three once, with its URL. */
static void no_live_node_missed(kvStore *kv)
{
    ASSERT(kvStore_PutString(NULL, kv, "n1", "http://127.0.0.1:1") == NATS_OK);
    ASSERT(kvStore_PutString(NULL, kv, "n2", "http://127.0.0.1:2") == NATS_OK);
    ASSERT(kvStore_PutString(NULL, kv, "n3", "http://127.0.0.1:3") == NATS_OK);
    Member known[CLUSTER_MEMBERS_MAX], found[CLUSTER_MEMBERS_MAX];
    size_t nknown = 0, n = 0;
    ASSERT(cluster_members_read(kv, js, 2000, "n1", NULL, 0, known, CLUSTER_MEMBERS_MAX, &nknown) == 0);
    ASSERT(nknown == 3);

    atomic_bool stop = false;
    Putter p2 = {kv, "n2", "http://127.0.0.1:2", &stop}, p3 = {kv, "n3", "http://127.0.0.1:3", &stop};
    pthread_t t2, t3;
    ASSERT(pthread_create(&t2, NULL, heartbeat, &p2) == 0 && pthread_create(&t3, NULL, heartbeat, &p3) == 0);
    int short_lists = 0, reads = 1000;
    for (int i = 0; i < reads; i++) {
        ASSERT(kvStore_PutString(NULL, kv, "n1", "http://127.0.0.1:1") == NATS_OK); /* as a tick does */
        ASSERT(cluster_members_read(kv, js, 2000, "n1", known, nknown, found, CLUSTER_MEMBERS_MAX, &n) == 0);
        if (n != 3 || !url_of(found, n, "n1") || !url_of(found, n, "n2") || !url_of(found, n, "n3"))
            short_lists++;
        else
            ASSERT(strcmp(url_of(found, n, "n2"), "http://127.0.0.1:2") == 0);
        memcpy(known, found, n * sizeof found[0]);
        nknown = n;
    }
    atomic_store(&stop, true);
    pthread_join(t2, NULL);
    pthread_join(t3, NULL);
    if (short_lists)
        fprintf(stderr, "%d of %d reads did not list n1, n2 and n3 once each\n", short_lists, reads);
    ASSERT(short_lists == 0);
}

/* A known node whose key expired (it stopped its heartbeat) is gone; a new
 * node is there at the next read. */
static void gone_and_new(kvStore *kv, int64_t ttl_ms)
{
    Member known[CLUSTER_MEMBERS_MAX], found[CLUSTER_MEMBERS_MAX];
    size_t nknown = 0, n = 0;
    ASSERT(cluster_members_read(kv, js, 2000, "n1", NULL, 0, known, CLUSTER_MEMBERS_MAX, &nknown) == 0);
    ASSERT(url_of(known, nknown, "n3"));
    /* n1 and n2 keep beating; n3 stops */
    struct timespec t0, now;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    do {
        ASSERT(kvStore_PutString(NULL, kv, "n1", "http://127.0.0.1:1") == NATS_OK);
        ASSERT(kvStore_PutString(NULL, kv, "n2", "http://127.0.0.1:2") == NATS_OK);
        usleep(100000);
        clock_gettime(CLOCK_MONOTONIC, &now);
    } while ((now.tv_sec - t0.tv_sec) * 1000 + (now.tv_nsec - t0.tv_nsec) / 1000000 < ttl_ms + 1500);
    ASSERT(cluster_members_read(kv, js, 2000, "n1", known, nknown, found, CLUSTER_MEMBERS_MAX, &n) == 0);
    ASSERT(n == 2 && url_of(found, n, "n1") && url_of(found, n, "n2") && !url_of(found, n, "n3"));

    ASSERT(kvStore_PutString(NULL, kv, "n4", "http://127.0.0.1:4") == NATS_OK);
    memcpy(known, found, n * sizeof found[0]);
    nknown = n;
    ASSERT(cluster_members_read(kv, js, 2000, "n1", known, nknown, found, CLUSTER_MEMBERS_MAX, &n) == 0);
    ASSERT(n == 3 && url_of(found, n, "n4") && strcmp(url_of(found, n, "n4"), "http://127.0.0.1:4") == 0);
}

/* A key read from the bucket's leader (cluster_kv_get, as the leases and
 * the members' keys are): the last value put and its revision, cut to the
 * buffer; no entry once deleted or purged (a lease given back) or never
 * put; a bucket that is not there, or a wildcard for a key, is no answer
 * about the key. On a bucket of its own without expiry, so a slow machine
 * does not see its keys expire. */
static void leader_gets(kvStore *kv, const char *bucket)
{
    char v[8];
    uint64_t rev = 1, r1 = 0, r2 = 0;
    ASSERT(cluster_kv_get(js, bucket, "k-absent", v, sizeof v, &rev) == NATS_NOT_FOUND && rev == 0 && !v[0]);
    ASSERT(kvStore_PutString(&r1, kv, "k", "value-one") == NATS_OK);
    ASSERT(cluster_kv_get(js, bucket, "k", v, sizeof v, &rev) == NATS_OK && rev == r1 && strcmp(v, "value-o") == 0);
    ASSERT(kvStore_PutString(&r2, kv, "k", "v2") == NATS_OK && r2 > r1);
    ASSERT(cluster_kv_get(js, bucket, "k", v, sizeof v, &rev) == NATS_OK && rev == r2 && strcmp(v, "v2") == 0);
    ASSERT(kvStore_PutString(&r1, kv, "empty", "") == NATS_OK);
    ASSERT(cluster_kv_get(js, bucket, "empty", v, sizeof v, &rev) == NATS_OK && rev == r1 && !v[0]);
    ASSERT(kvStore_Delete(kv, "k") == NATS_OK);
    ASSERT(cluster_kv_get(js, bucket, "k", v, sizeof v, &rev) == NATS_NOT_FOUND);
    ASSERT(kvStore_PutString(&r1, kv, "k", "v3") == NATS_OK);
    ASSERT(cluster_kv_get(js, bucket, "k", v, sizeof v, &rev) == NATS_OK && rev == r1 && strcmp(v, "v3") == 0);
    ASSERT(kvStore_Purge(kv, "k", NULL) == NATS_OK);
    ASSERT(cluster_kv_get(js, bucket, "k", v, sizeof v, &rev) == NATS_NOT_FOUND);
    natsStatus s = cluster_kv_get(js, "no_such_bucket", "k", v, sizeof v, &rev);
    ASSERT(s != NATS_OK && s != NATS_NOT_FOUND);
    ASSERT(kvStore_PutString(NULL, kv, "k2", "other") == NATS_OK);
    ASSERT(cluster_kv_get(js, bucket, "*", v, sizeof v, &rev) == NATS_INVALID_ARG);
    ASSERT(cluster_kv_get(js, bucket, ">", v, sizeof v, &rev) == NATS_INVALID_ARG);
}

/* More nodes than the list holds: it holds cap of them, self among them. */
static void bounded(kvStore *kv)
{
    for (int i = 0; i < 10; i++) {
        char node[16];
        snprintf(node, sizeof node, "extra%d", i);
        ASSERT(kvStore_PutString(NULL, kv, node, "http://127.0.0.1:9") == NATS_OK);
    }
    Member found[4];
    size_t n = 0;
    ASSERT(cluster_members_read(kv, js, 2000, "n1", NULL, 0, found, 4, &n) == 0);
    ASSERT(n == 4 && url_of(found, n, "n1"));
}

int main(void)
{
    natsConnection *nc = start_server();
    const int64_t ttl_ms = 1000;
    kvStore *kv = make_bucket(nc, CLUSTER_NODE_BUCKET, ttl_ms);
    no_live_node_missed(kv);
    gone_and_new(kv, ttl_ms);
    bounded(kv);
    kvStore_Destroy(kv);
    kv = make_bucket(nc, "ltvd_test_gets", 0);
    leader_gets(kv, "ltvd_test_gets");
    kvStore_Destroy(kv);
    jsCtx_Destroy(js);
    natsConnection_Destroy(nc);
    stop_server();
    TEST_DONE("cluster_members");
}
