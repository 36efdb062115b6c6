/* config: one declarative table of keys (name, type, field, default, bounds).
 * Parsing the file and --set both go through config_set_value(). Main
 * thread at start and on SIGHUP; the caller owns the LtvdConfig, read-only
 * afterwards. The live copies (config_publish) are this file's: written by
 * the main thread, read by any through one atomic pointer. */
#include "config.h"

#include <arpa/inet.h>
#include <cJSON.h>
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wal.h"

typedef enum { CT_INT, CT_DOUBLE, CT_BOOL, CT_STRING, CT_ENUM } ConfigType;

typedef struct ConfigKey {
    const char *name;
    ConfigType type;
    size_t offset;
    const char *def;        /* default, as it would be written after --set key= */
    double min, max;        /* bounds for numbers; max length for strings */
    const char *choices[4]; /* for CT_ENUM: index = stored value */
    bool secret;
} ConfigKey;

#define F(field) offsetof(LtvdConfig, field)

static const ConfigKey keys[] = {
    {"server.bind", CT_STRING, F(server_bind), "127.0.0.1", 1, 63, {0}, false},
    {"server.port", CT_INT, F(server_port), "8080", 0, 65535, {0}, false},
    {"server.threads", CT_INT, F(server_threads), "1", 1, 64, {0}, false},
    {"server.access_log", CT_BOOL, F(server_access_log), "false", 0, 0, {0}, false},
    {"server.max_connections", CT_INT, F(server_max_connections), "1024", 16, 65536, {0}, false},
    {"server.max_connections_per_ip", CT_INT, F(server_max_connections_per_ip), "256", 0, 65536, {0}, false},
    {"server.connection_timeout_s", CT_INT, F(server_connection_timeout_s), "15", 1, 3600, {0}, false},
    {"storage.dir", CT_STRING, F(storage_dir), "./ltvd-data", 1, CONFIG_STR_MAX - 1, {0}, false},
    {"storage.fsync", CT_ENUM, F(storage_fsync), "always", 0, 0, {"always", "interval", "none"}, false},
    {"storage.fsync_interval_ms", CT_INT, F(storage_fsync_interval_ms), "10", 1, 10000, {0}, false},
    {"storage.sync_lanes", CT_INT, F(storage_sync_lanes), "1", 1, WAL_SYNC_LANES_MAX, {0}, false},
    {"storage.wal_segment_bytes", CT_INT, F(storage_wal_segment_bytes), "67108864", 65536, 17179869184.0, {0}, false},
    {"storage.wal_buffer_bytes", CT_INT, F(storage_wal_buffer_bytes), "67108864", 65536, 4294967296.0, {0}, false},
    {"storage.snapshot_interval_s", CT_INT, F(storage_snapshot_interval_s), "300", 1, 604800, {0}, false},
    {"storage.snapshot_wal_bytes", CT_INT, F(storage_snapshot_wal_bytes), "134217728", 65536, 1099511627776.0, {0}, false},
    {"storage.erasure_snapshot_s", CT_INT, F(storage_erasure_snapshot_s), "5", 0, 86400, {0}, false},
    {"clock", CT_ENUM, F(clock), "wall", 0, 0, {"wall", "event"}, false},
    {"model.horizon_days", CT_INT, F(model_horizon_days), "182", 1, 3650, {0}, false},
    {"model.hidden_size", CT_INT, F(model_hidden_size), "32", 4, 256, {0}, false},
    {"model.recent_events", CT_INT, F(model_recent_events), "32", 1, 1024, {0}, false},
    {"model.keep", CT_INT, F(model_keep), "5", 1, 100, {0}, false},
    {"train.interval_s", CT_INT, F(train_interval_s), "3600", 0, 31536000, {0}, false},
    {"train.seed", CT_INT, F(train_seed), "1", 0, 2147483647, {0}, false},
    {"train.network", CT_BOOL, F(train_network), "true", 0, 0, {0}, false},
    {"train.max_epochs", CT_INT, F(train_max_epochs), "40", 1, 1000, {0}, false},
    {"train.learning_rate", CT_DOUBLE, F(train_learning_rate), "0.005", 1e-6, 1, {0}, false},
    {"train.mean_loss_weight", CT_DOUBLE, F(train_mean_loss_weight), "8", 0, 1000, {0}, false},
    {"train.mean_shrink", CT_BOOL, F(train_mean_shrink), "true", 0, 0, {0}, false},
    {"train.batch", CT_INT, F(train_batch), "32", 1, 4096, {0}, false},
    {"train.cuts_per_shopper", CT_INT, F(train_cuts_per_shopper), "12", 1, 256, {0}, false},
    {"train.grid_days", CT_INT, F(train_grid_days), "30", 1, 3650, {0}, false},
    {"train.max_examples", CT_INT, F(train_max_examples), "400000", 100, 100000000, {0}, false},
    {"train.max_shoppers", CT_INT, F(train_max_shoppers), "200000", 100, 100000000, {0}, false},
    {"train.max_events", CT_INT, F(train_max_events), "6400000", 1000, 1000000000, {0}, false},
    {"train.bptt_steps", CT_INT, F(train_bptt_steps), "32", 1, 1024, {0}, false},
    {"train.val_percent", CT_INT, F(train_val_percent), "20", 5, 50, {0}, false},
    {"train.history_events", CT_INT, F(train_history_events), "1024", 0, 1024, {0}, false},
    {"train.history_days", CT_INT, F(train_history_days), "1095", 1, 36500, {0}, false},
    {"train.history_max_mb", CT_INT, F(train_history_max_mb), "1024", 1, 1048576, {0}, false},
    {"train.head", CT_ENUM, F(train_head), "hybrid", 0, 0, {"auto", "hybrid", "lstm_only"}, false},
    {"train.level", CT_ENUM, F(train_level), "auto", 0, 0, {"auto", "fallback", "network"}, false},
    {"fallback.refit_s", CT_INT, F(fallback_refit_s), "60", 1, 86400, {0}, false},
    {"fallback.refit_growth", CT_DOUBLE, F(fallback_refit_growth), "0.1", 0, 100, {0}, false},
    {"jobs.busy_cpu_share", CT_DOUBLE, F(jobs_busy_cpu_share), "0.25", 0.05, 1, {0}, false},
    {"fallback.cold_start", CT_ENUM, F(fallback_cold_start), "behaviour", 0, 0, {"behaviour", "prior"}, false},
    {"adjuster.enabled", CT_BOOL, F(adjuster_enabled), "true", 0, 0, {0}, false},
    {"adjuster.interval_s", CT_INT, F(adjuster_interval_s), "3600", 0, 31536000, {0}, false},
    {"adjuster.log_size", CT_INT, F(adjuster_log_size), "100000", 0, 10000000, {0}, false},
    {"dashboard.chartjs_path", CT_STRING, F(dashboard_chartjs_path), "/usr/share/javascript/chart.js/chart.min.js", 1,
     CONFIG_STR_MAX - 1, {0}, false},
    {"segments.refresh_s", CT_INT, F(segments_refresh_s), "300", 1, 86400, {0}, false},
    {"segments.list_max", CT_INT, F(segments_list_max), "10000", 10, 1000000, {0}, false},
    {"auth.ingest_token", CT_STRING, F(auth_ingest_token), "", 0, CONFIG_STR_MAX - 1, {0}, true},
    {"auth.admin_token", CT_STRING, F(auth_admin_token), "", 0, CONFIG_STR_MAX - 1, {0}, true},
    {"auth.read_token", CT_STRING, F(auth_read_token), "", 0, CONFIG_STR_MAX - 1, {0}, true},
    {"auth.allow_open", CT_BOOL, F(auth_allow_open), "false", 0, 0, {0}, false},
    {"limits.max_users", CT_INT, F(limits_max_users), "2000000", 1, 100000000, {0}, false},
    {"limits.max_batch_ids", CT_INT, F(limits_max_batch_ids), "10000", 1, 1000000, {0}, false},
    {"limits.max_batch_events", CT_INT, F(limits_max_batch_events), "10000", 1, 1000000, {0}, false},
    {"limits.max_body_bytes", CT_INT, F(limits_max_body_bytes), "8388608", 1024, 1073741824, {0}, false},
    {"limits.max_inflight_body_bytes", CT_INT, F(limits_max_inflight_body_bytes), "67108864", 1024, 17179869184.0, {0},
     false},
    {"limits.max_future_s", CT_INT, F(limits_max_future_s), "86400", 0, 31536000, {0}, false},
    {"limits.dedupe_window_s", CT_INT, F(limits_dedupe_window_s), "600", 0, 31536000, {0}, false},
    {"limits.dedupe_max_ids", CT_INT, F(limits_dedupe_max_ids), "4000000", 1, 100000000, {0}, false},
    /* deprecated alias (def NULL: no default of its own, not printed) */
    {"limits.dedupe_window", CT_INT, F(limits_dedupe_max_ids), NULL, 1, 100000000, {0}, false},
    {"cluster.node_id", CT_STRING, F(cluster_node_id), "", 0, 63, {0}, false},
    {"cluster.nats_urls", CT_STRING, F(cluster_nats_urls), "", 0, CONFIG_STR_MAX - 1, {0}, false},
    {"cluster.advertise_url", CT_STRING, F(cluster_advertise_url), "", 0, 127, {0}, false},
    {"cluster.hash_key", CT_STRING, F(cluster_hash_key), "", 0, 32, {0}, true},
    {"cluster.partitions", CT_INT, F(cluster_partitions), "64", 1, 1024, {0}, false},
    {"cluster.replicas", CT_INT, F(cluster_replicas), "3", 1, 5, {0}, false},
    {"cluster.lease_ms", CT_INT, F(cluster_lease_ms), "6000", 1000, 600000, {0}, false},
    {"cluster.publish_timeout_ms", CT_INT, F(cluster_publish_timeout_ms), "5000", 100, 60000, {0}, false},
    {"cluster.snapshot_interval_s", CT_INT, F(cluster_snapshot_interval_s), "300", 1, 86400, {0}, false},
    {"cluster.purge_busy", CT_BOOL, F(cluster_purge_busy), "false", 0, 0, {0}, false},
    {"cluster.forward_threads", CT_INT, F(cluster_forward_threads), "8", 1, 256, {0}, false},
    {"log.level", CT_ENUM, F(log_level), "info", 0, 0, {"debug", "info", "warn", "error"}, false},
    {"log.format", CT_ENUM, F(log_format), "logfmt", 0, 0, {"logfmt", "json"}, false},
};
#define NKEYS (sizeof keys / sizeof keys[0])

/* The keys SIGHUP may change while ltvd runs: read per request from the live
 * copy (config_live: the router, the handlers, and http_server.c for
 * server.access_log and limits.max_body_bytes) or applied by main on reload
 * (log.level, log.format). Every other key sizes a table, opens a file or a
 * socket, or is copied into the service at start: changing one needs a
 * restart, and a reload that does is refused. */
static const char *const reloadable_keys[] = {
    "auth.ingest_token",     "auth.admin_token",        "auth.read_token",     "auth.allow_open",
    "limits.max_batch_ids",  "limits.max_batch_events", "limits.max_future_s", "limits.max_body_bytes",
    "server.access_log",     "log.level",               "log.format",          "dashboard.chartjs_path",
};

static bool reloadable(const ConfigKey *k)
{
    for (size_t i = 0; i < sizeof reloadable_keys / sizeof reloadable_keys[0]; i++)
        if (strcmp(reloadable_keys[i], k->name) == 0)
            return true;
    return false;
}

static const ConfigKey *find_key(const char *name)
{
    for (size_t i = 0; i < NKEYS; i++)
        if (strcmp(keys[i].name, name) == 0)
            return &keys[i];
    return NULL;
}

/* Sets one key from its textual value. */
static int set_value(LtvdConfig *cfg, const ConfigKey *k, const char *v, char *err, size_t errlen)
{
    char *field = (char *)cfg + k->offset;
    char *end;
    switch (k->type) {
    case CT_INT: {
        errno = 0;
        long long x = strtoll(v, &end, 10);
        if (errno || end == v || *end) {
            snprintf(err, errlen, "config key %s: '%s' is not an integer", k->name, v);
            return -EINVAL;
        }
        if (x < k->min || x > k->max) {
            snprintf(err, errlen, "config key %s: %lld is out of range [%.0f, %.0f]", k->name, x, k->min, k->max);
            return -EINVAL;
        }
        *(int64_t *)field = x;
        return 0;
    }
    case CT_DOUBLE: {
        double x = strtod(v, &end);
        if (end == v || *end || !isfinite(x)) {
            snprintf(err, errlen, "config key %s: '%s' is not a number", k->name, v);
            return -EINVAL;
        }
        if (x < k->min || x > k->max) {
            snprintf(err, errlen, "config key %s: %g is out of range [%g, %g]", k->name, x, k->min, k->max);
            return -EINVAL;
        }
        *(double *)field = x;
        return 0;
    }
    case CT_BOOL:
        if (strcmp(v, "true") == 0 || strcmp(v, "1") == 0) {
            *(bool *)field = true;
        } else if (strcmp(v, "false") == 0 || strcmp(v, "0") == 0) {
            *(bool *)field = false;
        } else {
            snprintf(err, errlen, "config key %s: '%s' is not true or false", k->name, v);
            return -EINVAL;
        }
        return 0;
    case CT_STRING: {
        size_t n = strlen(v);
        if (n < (size_t)k->min || n > (size_t)k->max) {
            snprintf(err, errlen, "config key %s: length %zu is out of range [%.0f, %.0f]", k->name, n, k->min,
                     k->max);
            return -EINVAL;
        }
        memcpy(field, v, n + 1);
        return 0;
    }
    case CT_ENUM:
        for (int i = 0; i < 4 && k->choices[i]; i++) {
            if (strcmp(v, k->choices[i]) == 0) {
                *(int64_t *)field = i;
                return 0;
            }
        }
        snprintf(err, errlen, "config key %s: '%s' is not one of the allowed values", k->name, v);
        return -EINVAL;
    }
    return -EINVAL;
}

void config_defaults(LtvdConfig *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    char err[256];
    for (size_t i = 0; i < NKEYS; i++)
        if (keys[i].def)
            (void)set_value(cfg, &keys[i], keys[i].def, err, sizeof err);
}

int config_apply_set(LtvdConfig *cfg, const char *assignment, char *err, size_t errlen)
{
    const char *eq = strchr(assignment, '=');
    if (!eq || eq == assignment) {
        snprintf(err, errlen, "--set expects section.key=value, got '%s'", assignment);
        return -EINVAL;
    }
    char name[128];
    size_t n = (size_t)(eq - assignment);
    if (n >= sizeof name) {
        snprintf(err, errlen, "--set: key name too long");
        return -EINVAL;
    }
    memcpy(name, assignment, n);
    name[n] = '\0';
    const ConfigKey *k = find_key(name);
    if (!k) {
        snprintf(err, errlen, "unknown config key '%s'", name);
        return -EINVAL;
    }
    return set_value(cfg, k, eq + 1, err, errlen);
}

/* Walks one JSON object; prefix is "" at the top and "section." below. */
static int apply_object(LtvdConfig *cfg, const cJSON *obj, const char *prefix, char *err, size_t errlen)
{
    for (const cJSON *it = obj->child; it; it = it->next) {
        char name[128];
        snprintf(name, sizeof name, "%s%s", prefix, it->string ? it->string : "");
        if (cJSON_IsObject(it) && prefix[0] == '\0' && !find_key(name)) {
            char sub[sizeof name + 2];
            snprintf(sub, sizeof sub, "%s.", name);
            int rc = apply_object(cfg, it, sub, err, errlen);
            if (rc)
                return rc;
            continue;
        }
        const ConfigKey *k = find_key(name);
        if (!k) {
            snprintf(err, errlen, "unknown config key '%s'", name);
            return -EINVAL;
        }
        char text[CONFIG_STR_MAX + 32];
        if (cJSON_IsString(it)) {
            if (k->type != CT_STRING && k->type != CT_ENUM) {
                snprintf(err, errlen, "config key %s: expected a %s, got a string", k->name,
                         k->type == CT_BOOL ? "boolean" : "number");
                return -EINVAL;
            }
            snprintf(text, sizeof text, "%s", it->valuestring);
            if (strlen(it->valuestring) >= sizeof text) {
                snprintf(err, errlen, "config key %s: value too long", k->name);
                return -EINVAL;
            }
        } else if (cJSON_IsBool(it)) {
            if (k->type != CT_BOOL) {
                snprintf(err, errlen, "config key %s: unexpected boolean", k->name);
                return -EINVAL;
            }
            snprintf(text, sizeof text, "%s", cJSON_IsTrue(it) ? "true" : "false");
        } else if (cJSON_IsNumber(it)) {
            if (k->type == CT_INT) {
                double d = it->valuedouble;
                if (d != floor(d) || fabs(d) > 9e15) {
                    snprintf(err, errlen, "config key %s: %g is not an integer", k->name, d);
                    return -EINVAL;
                }
                snprintf(text, sizeof text, "%.0f", d);
            } else if (k->type == CT_DOUBLE) {
                snprintf(text, sizeof text, "%.17g", it->valuedouble);
            } else {
                snprintf(err, errlen, "config key %s: unexpected number", k->name);
                return -EINVAL;
            }
        } else {
            snprintf(err, errlen, "config key %s: unsupported value type", k->name);
            return -EINVAL;
        }
        int rc = set_value(cfg, k, text, err, errlen);
        if (rc)
            return rc;
    }
    return 0;
}

int config_apply_json(LtvdConfig *cfg, const char *json, char *err, size_t errlen)
{
    cJSON *root = cJSON_Parse(json);
    if (!root || !cJSON_IsObject(root)) {
        snprintf(err, errlen, "config is not a JSON object");
        cJSON_Delete(root);
        return -EINVAL;
    }
    int rc = apply_object(cfg, root, "", err, errlen);
    cJSON_Delete(root);
    return rc;
}

int config_load_file(LtvdConfig *cfg, const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "cannot open config %s: %s", path, strerror(errno));
        return -errno;
    }
    char *buf = malloc(1 << 20);
    size_t n = buf ? fread(buf, 1, (1 << 20) - 1, f) : 0;
    int too_big = !feof(f);
    fclose(f);
    if (!buf)
        return -ENOMEM;
    if (too_big) {
        free(buf);
        snprintf(err, errlen, "config %s is larger than 1 MiB", path);
        return -EINVAL;
    }
    buf[n] = '\0';
    int rc = config_apply_json(cfg, buf, err, errlen);
    free(buf);
    return rc;
}

int config_apply_env(LtvdConfig *cfg, char *err, size_t errlen)
{
    for (size_t i = 0; i < NKEYS; i++) {
        if (!keys[i].secret)
            continue;
        char var[128] = "LTVD_";
        size_t n = strlen(var);
        for (const char *c = keys[i].name; *c && n < sizeof var - 1; c++)
            var[n++] = *c == '.' ? '_' : (char)toupper((unsigned char)*c);
        var[n] = '\0';
        const char *v = getenv(var);
        if (!v || !v[0])
            continue;
        int rc = set_value(cfg, &keys[i], v, err, errlen);
        if (rc) {
            size_t used = strlen(err);
            snprintf(err + used, errlen - used, " (from the environment variable %s)", var);
            return rc;
        }
    }
    return 0;
}

bool config_bind_is_loopback(const LtvdConfig *cfg)
{
    struct in_addr a;
    return inet_pton(AF_INET, cfg->server_bind, &a) == 1 && (ntohl(a.s_addr) >> 24) == 127;
}

int config_check_exposure(const LtvdConfig *cfg, char *err, size_t errlen)
{
    bool ingest = cfg->auth_ingest_token[0], admin = cfg->auth_admin_token[0];
    if (cfg->auth_allow_open || config_bind_is_loopback(cfg) || (ingest && admin))
        return 0;
    snprintf(err, errlen,
             "refusing to serve on %s (not a loopback address) while %s empty: anyone who can reach the port "
             "could %s. Set the tokens (in the config, with --set, or in the environment: LTVD_AUTH_INGEST_TOKEN, "
             "LTVD_AUTH_ADMIN_TOKEN, LTVD_AUTH_READ_TOKEN), or set auth.allow_open=true to serve without them on "
             "purpose",
             cfg->server_bind,
             !ingest && !admin ? "auth.ingest_token and auth.admin_token are"
             : !ingest         ? "auth.ingest_token is"
                               : "auth.admin_token is",
             !ingest && !admin ? "post events, erase shoppers or retrain the model"
             : !ingest         ? "post events"
                               : "erase shoppers or retrain the model");
    return -EPERM;
}

/* One key's value as the config would spell it (tokens redacted). */
static int format_value(const ConfigKey *k, const LtvdConfig *cfg, char *buf, size_t len)
{
    const char *field = (const char *)cfg + k->offset;
    switch (k->type) {
    case CT_INT:
        return snprintf(buf, len, "%lld", (long long)*(const int64_t *)field);
    case CT_DOUBLE:
        return snprintf(buf, len, "%g", *(const double *)field);
    case CT_BOOL:
        return snprintf(buf, len, "%s", *(const bool *)field ? "true" : "false");
    case CT_STRING:
        return snprintf(buf, len, "\"%s\"", k->secret ? (field[0] ? "<set>" : "") : field);
    case CT_ENUM:
        return snprintf(buf, len, "%s", k->choices[*(const int64_t *)field]);
    }
    return -1;
}

void config_format(const LtvdConfig *cfg, char *buf, size_t len)
{
    size_t off = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < NKEYS && off < len; i++) {
        if (!keys[i].def)
            continue; /* an alias */
        char value[CONFIG_STR_MAX + 8];
        if (format_value(&keys[i], cfg, value, sizeof value) < 0)
            break;
        int n = snprintf(buf + off, len - off, "%s%s=%s", off ? " " : "", keys[i].name, value);
        if (n < 0)
            break;
        off += (size_t)n;
    }
}

/* ---- reload --------------------------------------------------------------- */

void config_print(const LtvdConfig *cfg, FILE *f)
{
    for (size_t i = 0; i < NKEYS; i++) {
        char value[CONFIG_STR_MAX + 8];
        if (!keys[i].def)
            continue; /* an alias: its key is printed */
        format_value(&keys[i], cfg, value, sizeof value);
        fprintf(f, "%-30s = %-24s # %s\n", keys[i].name, value, reloadable(&keys[i]) ? "reloadable" : "restart");
    }
}

bool config_key_reloadable(const char *name)
{
    const ConfigKey *k = find_key(name);
    return k && reloadable(k);
}

static bool key_differs(const ConfigKey *k, const LtvdConfig *a, const LtvdConfig *b)
{
    const char *fa = (const char *)a + k->offset, *fb = (const char *)b + k->offset;
    switch (k->type) {
    case CT_INT:
    case CT_ENUM:
        return *(const int64_t *)fa != *(const int64_t *)fb;
    case CT_DOUBLE:
        return memcmp(fa, fb, sizeof(double)) != 0;
    case CT_BOOL:
        return *(const bool *)fa != *(const bool *)fb;
    case CT_STRING:
        return strcmp(fa, fb) != 0;
    }
    return true;
}

int config_diff(const LtvdConfig *cur, const LtvdConfig *next, char *changed, size_t changed_len, char *err,
                size_t errlen)
{
    size_t off = 0;
    changed[0] = '\0';
    for (size_t i = 0; i < NKEYS; i++) {
        const ConfigKey *k = &keys[i];
        if (!k->def || !key_differs(k, cur, next))
            continue; /* (an alias: its key is compared) */
        if (!reloadable(k)) {
            snprintf(err, errlen, "config key %s changed: it takes effect only on a restart", k->name);
            return -EINVAL;
        }
        int n = snprintf(changed + off, changed_len - off, "%s%s", off ? "," : "", k->name);
        if (n > 0 && (size_t)n < changed_len - off)
            off += (size_t)n;
    }
    return 0;
}

/* Every published copy, oldest first; live is the newest. Written by the
 * main thread only; live is read by any thread. */
static LtvdConfig *versions[CONFIG_VERSIONS_MAX];
static size_t nversions;
static _Atomic(const LtvdConfig *) live;

int config_publish(const LtvdConfig *cfg, char *err, size_t errlen)
{
    if (nversions == CONFIG_VERSIONS_MAX) {
        snprintf(err, errlen, "%d configs were applied since ltvd started; restart it to apply more",
                 CONFIG_VERSIONS_MAX);
        return -ENOSPC;
    }
    LtvdConfig *copy = malloc(sizeof *copy);
    if (!copy) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    *copy = *cfg;
    versions[nversions++] = copy;
    atomic_store_explicit(&live, copy, memory_order_release);
    return 0;
}

const LtvdConfig *config_live(void) { return atomic_load_explicit(&live, memory_order_acquire); }

void config_live_free(void)
{
    atomic_store(&live, NULL);
    for (size_t i = 0; i < nversions; i++)
        free(versions[i]);
    nversions = 0;
}
