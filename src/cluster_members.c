/* cluster_members: the live members, as one tick reads them from the nodes
 * bucket (one key per node, its HTTP URL, gone lease_ms after its last
 * heartbeat).
 *
 * The bucket's key listing is a watch over its last message per key, and
 * it is not a snapshot: a key put again while the listing runs can come
 * out twice, or not at all (libnats 3.4.1, nats-server 2.9.10, two keys
 * re-put in a loop: 185 of 1,000 listings left one out;
 * tests/test_cluster_members.c). Every node re-puts its key each tick, so
 * a live node could drop out of another's members for a tick, and reads
 * of its shoppers there answered 503 partition_unavailable (the likely
 * cause of a CI run's failure, 2026-12-01). So the listing only proposes
 * names: each name listed, each member known from the last tick and this
 * node itself is read back with a get of its key from the bucket's leader
 * (cluster_kv.c), which is exact, and is a member if the key is there. */
#include "cluster_internal.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#define NAMES_MAX (CLUSTER_MEMBERS_MAX * 2 + 1)

/* Appends node to names unless it is there already or names is full. */
static void add_name(char (*names)[CLUSTER_NODE_MAX], size_t *n, const char *node)
{
    for (size_t i = 0; i < *n; i++)
        if (strncmp(names[i], node, CLUSTER_NODE_MAX - 1) == 0)
            return;
    if (*n < NAMES_MAX)
        snprintf(names[(*n)++], CLUSTER_NODE_MAX, "%s", node);
}

/* Reads node's key: a member appended to out (0), gone (0, nothing
 * appended), or -EIO. */
static int confirm(jsCtx *js, const char *bucket, const char *node, Member *out, size_t *n)
{
    uint64_t rev;
    natsStatus s = cluster_kv_get(js, bucket, node, out[*n].url, CLUSTER_URL_MAX, &rev);
    if (s == NATS_NOT_FOUND)
        return 0;
    if (s != NATS_OK)
        return -EIO;
    snprintf(out[*n].node, CLUSTER_NODE_MAX, "%s", node);
    (*n)++;
    return 0;
}

int cluster_members_read(kvStore *nodes, jsCtx *js, int64_t wait_ms, const char *self, const Member *known,
                         size_t nknown, Member *out, size_t cap, size_t *n)
{
    *n = 0;
    kvKeysList keys = {0};
    kvWatchOptions wo;
    kvWatchOptions_Init(&wo);
    wo.Timeout = wait_ms; /* without it the listing waits for its watch for ever */
    if (kvStore_Keys(&keys, nodes, &wo) != NATS_OK)
        return -EIO;
    /* the names to read back: self, the last tick's, then the listing's */
    char names[NAMES_MAX][CLUSTER_NODE_MAX];
    size_t nnames = 0;
    add_name(names, &nnames, self);
    for (size_t i = 0; i < nknown; i++)
        add_name(names, &nnames, known[i].node);
    for (int i = 0; i < keys.Count; i++)
        add_name(names, &nnames, keys.Keys[i]);
    kvKeysList_Destroy(&keys);
    for (size_t i = 0; i < nnames && *n < cap; i++)
        /* a member missing by accident would move its partitions */
        if (confirm(js, kvStore_Bucket(nodes), names[i], out, n))
            return -EIO;
    return 0;
}
