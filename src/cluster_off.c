/* cluster_off: cluster.h in a build without libnats (meson found no
 * libnats): cluster mode is refused with a clear error at start and by
 * --check-config; single-node mode is unaffected. No Cluster is ever
 * made, so the functions that take one are never called. */
#include "cluster.h"

#include <errno.h>
#include <stdio.h>

int cluster_config_check(const LtvdConfig *cfg, char *err, size_t errlen)
{
    if (!cluster_configured(cfg))
        return 0;
    snprintf(err, errlen, "the config has a cluster section, but this ltvd was built without libnats (cluster "
                          "mode): install libnats-dev and build again, or remove the cluster keys");
    return -ENOTSUP;
}

int cluster_start(Cluster **out, const LtvdConfig *cfg, Service *svc, Metrics *metrics, uint16_t http_port,
                  char *err, size_t errlen)
{
    *out = NULL;
    int rc = cluster_config_check(cfg, err, errlen);
    return rc ? rc : -ENOTSUP;
}

void cluster_stop(Cluster *c) { (void)c; }

const char *cluster_node_id(const Cluster *c) { return ""; }

uint32_t cluster_partition_of(const Cluster *c, const char *id, size_t len) { return 0; }

int cluster_owner(Cluster *c, uint32_t p, bool *self, char *node, char *url)
{
    *self = true;
    node[0] = url[0] = '\0';
    return 0;
}

void cluster_render_map(Cluster *c, TextBuf *b) { TEXT_LIT(b, "{}"); }

void cluster_render_metrics(Cluster *c, TextBuf *b) { (void)c, (void)b; }

int cluster_publish_events(Cluster *c, const Event *ev, size_t n, char *err, size_t errlen)
{
    snprintf(err, errlen, "built without cluster mode");
    return -ENOTSUP;
}

int cluster_publish_erase(Cluster *c, const char *id, size_t len, char *err, size_t errlen)
{
    snprintf(err, errlen, "built without cluster mode");
    return -ENOTSUP;
}
