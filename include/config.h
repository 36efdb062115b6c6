/* config: the whole configuration, declared in one table (config.c).
 *
 * Sources, in order: built-in defaults, the JSON file (--config), then each
 * --set section.key=value. Every key is checked for type and bounds; unknown
 * keys are refused. Loaded on the main thread before anything starts;
 * read-only afterwards, so any thread may read it.
 *
 * Reload (SIGHUP): main re-reads the same sources into a new LtvdConfig;
 * if only reloadable keys changed it publishes a copy (config_publish) that
 * the HTTP threads pick up per request (config_live). A published copy is
 * never modified nor freed while ltvd serves (at most CONFIG_VERSIONS_MAX
 * of them per process), so a reader needs no lock and no reference. */
#ifndef LTVD_CONFIG_H
#define LTVD_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define CONFIG_STR_MAX 256

typedef enum { CLOCK_WALL = 0, CLOCK_EVENT = 1 } ClockMode;

typedef struct LtvdConfig {
    char server_bind[CONFIG_STR_MAX];
    int64_t server_port;
    int64_t server_threads;        /* libmicrohttpd threads (1 = one internal poll(2) thread) */
    bool server_access_log;
    int64_t server_max_connections;        /* open connections, all clients together */
    int64_t server_max_connections_per_ip; /* open connections from one address; 0: no cap */
    int64_t server_connection_timeout_s;   /* a connection idle this long is closed */

    char storage_dir[CONFIG_STR_MAX];
    int64_t storage_fsync;              /* WalFsync: always, interval, none */
    int64_t storage_fsync_interval_ms;
    int64_t storage_sync_lanes;         /* fsync=always: flusher threads, overlapping fdatasyncs (1-4) */
    int64_t storage_wal_segment_bytes;
    int64_t storage_wal_buffer_bytes;
    int64_t storage_snapshot_interval_s;
    int64_t storage_snapshot_wal_bytes; /* snapshot early once the log grew this much */
    int64_t storage_erasure_snapshot_s; /* after a DELETE, snapshot within this delay */

    int64_t clock;                 /* ClockMode */

    int64_t model_horizon_days;
    int64_t model_hidden_size;
    int64_t model_recent_events;   /* ring of recent events kept per shopper */
    int64_t model_keep;            /* model files kept in storage.dir (model-<version>.bin) */

    int64_t train_interval_s;
    int64_t train_seed;
    bool train_network;
    int64_t train_max_epochs;
    double train_learning_rate;
    double train_mean_loss_weight;
    bool train_mean_shrink;
    int64_t train_batch;
    int64_t train_cuts_per_shopper;
    int64_t train_grid_days;
    int64_t train_max_examples;
    int64_t train_max_shoppers;
    int64_t train_max_events; /* events a training set holds at most (the sample shrinks by id hash) */
    int64_t train_bptt_steps;
    int64_t train_val_percent;
    int64_t train_history_events;       /* training history on disk, per shopper (history.h); 0: off, the ring */
    int64_t train_history_days;         /* events older than this leave the history */
    int64_t train_history_max_mb;       /* the history file's cap; compaction drops the oldest days past it */
    int64_t train_level;                /* 0 auto (network when seasonal and from the history; default), 1 fallback, 2 network */
    int64_t train_head;                 /* 0 auto (validation loss, one-SE rule), 1 hybrid (default), 2 lstm_only */

    int64_t fallback_refit_s;      /* timer that checks whether the fallback needs a refit */
    double fallback_refit_growth;  /* refit when logged purchases grew by this fraction */
    double jobs_busy_cpu_share;    /* a job's compute thread's share of a core while the server is busy (pace.h) */
    int64_t fallback_cold_start;   /* 0 behaviour (coldstart.h), 1 prior (the textbook population prior) */

    bool adjuster_enabled;
    int64_t adjuster_interval_s;   /* timer for adjuster runs besides the one after each retrain; 0: none */
    int64_t adjuster_log_size;     /* served predictions awaiting their outcome (and matured pairs kept); 0: no log */

    char dashboard_chartjs_path[CONFIG_STR_MAX]; /* Chart.js served at /dashboard/chart.js (libjs-chart.js) */
    int64_t segments_refresh_s;    /* population summary (GET /v1/segments, /v1/lists/...) refreshed this often */
    int64_t segments_list_max;     /* rows each list keeps */

    char auth_ingest_token[CONFIG_STR_MAX];
    char auth_admin_token[CONFIG_STR_MAX];
    char auth_read_token[CONFIG_STR_MAX];
    bool auth_allow_open;          /* serve a non-loopback bind with a write token empty */

    int64_t limits_max_users;
    int64_t limits_max_batch_ids;
    int64_t limits_max_batch_events;
    int64_t limits_max_body_bytes;
    int64_t limits_max_inflight_body_bytes; /* declared body bytes of all uploads in flight */
    int64_t limits_max_future_s;
    int64_t limits_dedupe_window_s;  /* event_ids remembered this long after acceptance; 0: no dedupe */
    int64_t limits_dedupe_max_ids;   /* at most this many (the oldest evicted early, counted); alias: limits.dedupe_window */

    /* Cluster mode (docs/CLUSTER.md): on when cluster.node_id is set. */
    char cluster_node_id[CONFIG_STR_MAX];     /* this node's name, unique in the cluster */
    char cluster_nats_urls[CONFIG_STR_MAX];   /* comma-separated nats://host:port */
    char cluster_advertise_url[CONFIG_STR_MAX]; /* http://host:port other nodes forward to; "": server.bind:port */
    char cluster_hash_key[CONFIG_STR_MAX];    /* 32 hex digits, the same on every node: partition = hash mod P */
    int64_t cluster_partitions;    /* P, the same on every node */
    int64_t cluster_replicas;      /* JetStream replicas of the stream and the buckets */
    int64_t cluster_lease_ms;      /* a partition lease expires this long after its last renewal */
    int64_t cluster_publish_timeout_ms; /* an ingest waits this long for JetStream's acks, else 503 */
    int64_t cluster_snapshot_interval_s; /* an owner snapshots each partition it applied something to this often */
    bool cluster_purge_busy;       /* every NATS server is 2.9.18 or later: one purge behind a snapshot, not message by message */
    int64_t cluster_forward_threads; /* threads that forward reads to their owners, off the HTTP threads */

    int64_t log_level;             /* LogLevel */
    int64_t log_format;            /* LogFormat: logfmt or json */
} LtvdConfig;

/* Fills cfg with the defaults. */
void config_defaults(LtvdConfig *cfg);

/* Applies a JSON document (the config file's contents). On error returns
 * -EINVAL and writes a message naming the key into err. cfg may be partly
 * updated on error; callers exit. */
int config_apply_json(LtvdConfig *cfg, const char *json, char *err, size_t errlen);

/* Applies one "section.key=value" override. */
int config_apply_set(LtvdConfig *cfg, const char *assignment, char *err, size_t errlen);

/* Reads and applies a file. */
int config_load_file(LtvdConfig *cfg, const char *path, char *err, size_t errlen);

/* Applies the secret keys (the tokens) from the environment: key auth.x_token
 * is read from LTVD_AUTH_X_TOKEN; an unset or empty variable changes nothing.
 * Keeps tokens out of files and off the command line (containers, systemd's
 * EnvironmentFile). Main thread, before any other thread starts. */
int config_apply_env(LtvdConfig *cfg, char *err, size_t errlen);

/* Whether server.bind is an IPv4 loopback address (127.0.0.0/8). */
bool config_bind_is_loopback(const LtvdConfig *cfg);

/* Refuses (-EPERM, the reason in err) a config that serves writes to
 * everyone on a network: server.bind not loopback while auth.ingest_token or
 * auth.admin_token is empty, unless auth.allow_open is true. */
int config_check_exposure(const LtvdConfig *cfg, char *err, size_t errlen);

/* Writes the effective config as logfmt pairs (tokens redacted). */
void config_format(const LtvdConfig *cfg, char *buf, size_t len);

/* ---- reload (SIGHUP) ------------------------------------------------------ */

/* Published configs per process: the one at start and every reload that
 * changed something; a reload past it is refused (restart to go on). */
#define CONFIG_VERSIONS_MAX 256

/* Writes the effective config to f, one "key = value" line per key, tokens
 * redacted, each marked "reloadable" or "restart" (ltvd --check-config). */
void config_print(const LtvdConfig *cfg, FILE *f);

/* Whether key `name` may change on SIGHUP; false for an unknown key. */
bool config_key_reloadable(const char *name);

/* Compares the running config cur with next. -EINVAL (err names the key)
 * if a key that needs a restart differs; else 0, and changed gets the
 * names of the keys that differ, comma-separated ("" if none). */
int config_diff(const LtvdConfig *cur, const LtvdConfig *next, char *changed, size_t changed_len, char *err,
                size_t errlen);

/* Main thread: publishes a copy of cfg as the live config. -ENOSPC once
 * CONFIG_VERSIONS_MAX copies were published, -ENOMEM; err says why. */
int config_publish(const LtvdConfig *cfg, char *err, size_t errlen);

/* Any thread: the config published last, NULL before the first. Valid until
 * config_live_free. */
const LtvdConfig *config_live(void);

/* Main thread at exit, once no other thread runs: frees every copy. */
void config_live_free(void);

#endif
