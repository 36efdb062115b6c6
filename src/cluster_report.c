/* cluster_report: what a node tells about the cluster: GET /v1/cluster's
 * map and the cluster's series on /metrics (cluster.h). Any thread: it
 * reads the map under map_lock and the partitions' figures (atomics, and
 * `owned` under each apply_lock). */
#include "cluster_internal.h"

#include <cJSON.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>


void cluster_render_map(Cluster *c, TextBuf *b)
{
    cJSON *root = cJSON_CreateObject();
    cJSON *members = cJSON_AddArrayToObject(root, "members");
    cJSON *map = cJSON_AddArrayToObject(root, "partitions");
    cJSON_AddStringToObject(root, "mode", "cluster");
    cJSON_AddStringToObject(root, "node", c->node);
    cJSON_AddNumberToObject(root, "partition_count", c->nparts);
    cJSON *model = cJSON_AddObjectToObject(root, "model");
    cJSON_AddNumberToObject(model, "publication", (double)atomic_load(&c->model_seq));
    cJSON_AddNumberToObject(model, "trainer_version", (double)atomic_load(&c->model_trainer_version));
    cJSON_AddNumberToObject(model, "version", (double)service_model_version(c->svc));
    pthread_mutex_lock(&c->map_lock);
    if (c->trainer[0])
        cJSON_AddStringToObject(root, "trainer", c->trainer);
    else
        cJSON_AddNullToObject(root, "trainer");
    for (size_t i = 0; i < c->nmembers; i++) {
        cJSON *m = cJSON_CreateObject();
        cJSON_AddStringToObject(m, "node", c->members[i].node);
        cJSON_AddStringToObject(m, "url", c->members[i].url);
        cJSON_AddItemToArray(members, m);
    }
    for (uint32_t p = 0; p < c->nparts; p++) {
        cJSON *e = cJSON_CreateObject();
        cJSON_AddNumberToObject(e, "partition", p);
        if (c->owner[p][0])
            cJSON_AddStringToObject(e, "owner", c->owner[p]);
        else
            cJSON_AddNullToObject(e, "owner");
        const char *pref = cluster_preferred_node(c, p); /* where it goes: differs from owner while it moves */
        if (pref)
            cJSON_AddStringToObject(e, "preferred", pref);
        else
            cJSON_AddNullToObject(e, "preferred");
        if (strcmp(c->owner[p], c->node) == 0) {
            cJSON_AddNumberToObject(e, "applied_seq", (double)atomic_load(&c->parts[p].applied_seq));
            cJSON_AddNumberToObject(e, "snapshot_seq", (double)atomic_load(&c->parts[p].snap_seq));
            cJSON_AddNumberToObject(e, "purged_seq", (double)atomic_load(&c->parts[p].purged_seq));
        }
        cJSON_AddItemToArray(map, e);
    }
    pthread_mutex_unlock(&c->map_lock);
    char *text = cJSON_PrintUnformatted(root);
    if (text)
        textbuf_append(b, text, strlen(text));
    else
        b->err = -ENOMEM;
    free(text);
    cJSON_Delete(root);
}

void cluster_render_metrics(Cluster *c, TextBuf *b)
{
    unsigned owned_n = 0;
    for (uint32_t p = 0; p < c->nparts; p++) {
        Partition *part = &c->parts[p];
        pthread_mutex_lock(&part->apply_lock);
        owned_n += part->owned;
        pthread_mutex_unlock(&part->apply_lock);
    }
    pthread_mutex_lock(&c->map_lock);
    size_t members = c->nmembers;
    pthread_mutex_unlock(&c->map_lock);
    textbuf_printf(b,
                   "# HELP ltvd_cluster_partitions_owned Partitions this node holds the lease of and applies.\n"
                   "# TYPE ltvd_cluster_partitions_owned gauge\nltvd_cluster_partitions_owned %u\n"
                   "# HELP ltvd_cluster_partitions Partitions of the cluster (cluster.partitions).\n"
                   "# TYPE ltvd_cluster_partitions gauge\nltvd_cluster_partitions %u\n"
                   "# HELP ltvd_cluster_members Live nodes this node saw at its last tick.\n"
                   "# TYPE ltvd_cluster_members gauge\nltvd_cluster_members %zu\n"
                   "# HELP ltvd_cluster_messages_applied_total Stream messages this node applied.\n"
                   "# TYPE ltvd_cluster_messages_applied_total counter\nltvd_cluster_messages_applied_total %llu\n"
                   "# HELP ltvd_cluster_apply_errors_total Stream messages this node could not apply "
                   "(malformed, or limits.max_users reached).\n"
                   "# TYPE ltvd_cluster_apply_errors_total counter\nltvd_cluster_apply_errors_total %llu\n"
                   "# HELP ltvd_cluster_snapshots_total Partition snapshots this node published.\n"
                   "# TYPE ltvd_cluster_snapshots_total counter\nltvd_cluster_snapshots_total %llu\n"
                   "# HELP ltvd_cluster_snapshot_errors_total Partition snapshots not published or not loaded.\n"
                   "# TYPE ltvd_cluster_snapshot_errors_total counter\nltvd_cluster_snapshot_errors_total %llu\n"
                   "# HELP ltvd_cluster_snapshot_bytes The last partition snapshot this node published.\n"
                   "# TYPE ltvd_cluster_snapshot_bytes gauge\nltvd_cluster_snapshot_bytes %llu\n",
                   owned_n, c->nparts, members, (unsigned long long)atomic_load(&c->applied_msgs),
                   (unsigned long long)atomic_load(&c->consume_errors), (unsigned long long)atomic_load(&c->snapshots),
                   (unsigned long long)atomic_load(&c->snapshot_errors),
                   (unsigned long long)atomic_load(&c->snapshot_bytes));
}
