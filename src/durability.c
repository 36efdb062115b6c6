/* durability: the service's side of docs/DURABILITY.md: attaching the
 * write-ahead log; recovery at start (the newest valid snapshot, then the
 * log replayed after it); writing a snapshot while serving (from a forked
 * child) and removing what it supersedes; and deciding when one is due.
 * The formats are snapshot.c's and wal_record.c's, the log wal.c's.
 *
 * Threads: service_recover and service_attach_wal on the main thread
 * before serving; service_snapshot_due on the main (libuv) thread;
 * service_snapshot on the worker thread (or main at shutdown);
 * service_durable and service_log_failed on any thread. */
#include "service_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "log.h"
#include "snapshot.h"
#include "timeutil.h"
#include "wal_record.h"

#define SNAPSHOTS_LISTED 64

void service_attach_wal(Service *s, Wal *wal)
{
    store_lock(s->store);
    s->wal = wal;
    store_unlock(s->store);
}

bool service_durable(Service *s, uint64_t seq) { return !s->wal || wal_durable_seq(s->wal) >= seq; }
bool service_log_failed(Service *s) { return s->wal && wal_failed(s->wal); }

static SnapshotTables tables_of(Service *s)
{
    return (SnapshotTables){.store = s->store, .dedupe = s->dedupe, .predlog = s->predlog, .load_time = time_now()};
}

static int64_t mono_s(void) { return (int64_t)(time_mono_ns() / 1000000000ull); }

/* ---- recovery ------------------------------------------------------------ */

typedef struct ReplayCtx {
    Service *s;
    const LstmWeights *net; /* the serving network at start: states are computed under it */
} ReplayCtx;

static int replay_record(void *arg, uint8_t kind, uint64_t seq, const unsigned char *p, size_t len)
{
    ReplayCtx *ctx = arg;
    if (kind == WAL_REC_DELETE) {
        const char *id;
        size_t idlen;
        int rc = wal_record_decode_delete(p, len, &id, &idlen);
        if (!rc)
            service_replay_erase(ctx->s, id, idlen);
        return rc;
    }
    if (kind != WAL_REC_EVENTS)
        return -EBADMSG;
    Event *ev;
    size_t n;
    int rc = wal_record_decode_events(p, len, &ev, &n);
    if (rc)
        return rc;
    rc = service_replay_events(ctx->s, ev, n, ctx->net);
    free(ev);
    return rc;
}

/* The training history, when on (train.history_events > 0); off, a file
 * left from when it was on goes (an erasure could not reach it). A history
 * that cannot be opened is logged and deleted, and training reads the
 * rings. */
static void open_history(Service *s)
{
    if (s->cfg.train_history_events <= 0) {
        history_remove(s->cfg.storage_dir);
        return;
    }
    HistoryConfig hc = {
        .dir = s->cfg.storage_dir,
        .max_events = (int)s->cfg.train_history_events,
        .max_days = (int)s->cfg.train_history_days,
        .max_bytes = (uint64_t)s->cfg.train_history_max_mb << 20,
    };
    char err[700];
    if (history_open(&s->history, &hc, err, sizeof err)) {
        /* the file goes: no erasure would reach it while it is unusable */
        log_msg(LOG_ERROR, "training history unusable: deleted, training reads the recent-event rings",
                "error=\"%s\"", err);
        history_remove(s->cfg.storage_dir);
    }
}

/* A trained network's id is its model version (NET_ID_UNTRAINED), and
 * versions restart from the model files; states and logged predictions
 * name the network they were made under, and a snapshot keeps them.
 * Versions start above every trained network's id the snapshot restored,
 * so a network trained after model.bin and the history were deleted never
 * takes an old one's id: its shoppers' states would pass for its own, and
 * the old network's predictions for its evidence. (Untrained networks'
 * ids, with the top bit, are not versions and are left out.) */
static void versions_above_restored_ids(Service *s)
{
    store_lock(s->store); /* the prediction log's lock too */
    uint32_t max = s->predlog ? predlog_max_net(s->predlog, NET_ID_UNTRAINED) : 0;
    size_t high = store_slot_high(s->store);
    for (size_t i = 0; i < high; i++) {
        const UserState *u = store_slot_at(s->store, i);
        if (u && u->net_id < NET_ID_UNTRAINED && u->net_id > max)
            max = u->net_id;
    }
    store_unlock(s->store);
    uint64_t cur = atomic_load(&s->next_version);
    while (cur < (uint64_t)max + 1 && !atomic_compare_exchange_weak(&s->next_version, &cur, (uint64_t)max + 1))
        ;
}

int service_recover(Service *s, uint64_t *next_seq, char *err, size_t errlen)
{
    uint64_t t0 = time_mono_ns();
    open_history(s);
    uint64_t seqs[SNAPSHOTS_LISTED];
    size_t n = snapshot_list(s->cfg.storage_dir, seqs, SNAPSHOTS_LISTED);
    SnapshotTables tables = tables_of(s);
    uint64_t from = 1;
    for (size_t i = 0; i < n; i++) {
        char path[CONFIG_STR_MAX + 64];
        SnapshotInfo info;
        snapshot_path(path, sizeof path, s->cfg.storage_dir, seqs[i], false);
        int rc = snapshot_check(path, s->store, &info, err, errlen);
        if (rc == -EINVAL)
            return rc; /* made for another shape: an operator must decide */
        if (rc) {
            log_msg(LOG_WARN, "snapshot unusable, trying an older one", "error=\"%s\"", err);
            continue;
        }
        if ((rc = snapshot_load(path, &tables, &info, err, errlen)) != 0)
            return rc;
        atomic_store(&s->event_clock, info.event_clock);
        atomic_store(&s->purchases_total, info.purchases_total);
        from = info.seq;
        versions_above_restored_ids(s);
        log_msg(LOG_INFO, "snapshot loaded", "path=\"%s\" seq=%" PRIu64 " users=%" PRIu64 " ms=%.0f", path, info.seq,
                info.users, (time_mono_ns() - t0) / 1e6);
        break;
    }
    Model *m = service_model_acquire(s);
    ReplayCtx ctx = {.s = s, .net = m->net};
    WalReplayStats st;
    int rc = wal_replay(s->cfg.storage_dir, from, replay_record, &ctx, &st, err, errlen);
    model_release(m);
    if (rc)
        return rc;
    if (st.truncated) {
        atomic_fetch_add(&s->metrics->wal_truncations, 1);
        atomic_fetch_add(&s->metrics->wal_truncated_bytes, st.truncated_bytes);
    }
    *next_seq = st.last_seq + 1;
    service_live_calibration_refresh(s); /* the pairs a snapshot restored, grouped once */
    if (st.records > 0)
        atomic_store(&s->last_snapshot_mono_s, INT64_MIN / 2); /* snapshot soon: the next start replays less */
    uint64_t ns = time_mono_ns() - t0, ms = ns / 1000000;
    atomic_store(&s->metrics->recovery_ns, ns);
    atomic_store(&s->metrics->recovery_records, st.records);
    log_msg(LOG_INFO, "recovery done", "snapshot_seq=%" PRIu64 " replayed=%" PRIu64 " segments=%" PRIu64
            " truncated_bytes=%" PRIu64 " users=%zu ms=%" PRIu64, from, st.records, st.segments, st.truncated_bytes,
            store_count(s->store), ms);
    return 0;
}

/* ---- snapshots while serving --------------------------------------------- */

bool service_snapshot_due(Service *s)
{
    if (!s->wal)
        return false;
    int64_t now = mono_s();
    int64_t erasure = atomic_load(&s->erasure_pending_since);
    if (erasure && now - erasure + 1 >= s->cfg.storage_erasure_snapshot_s)
        return true;
    WalStats ws;
    wal_stats(s->wal, &ws);
    if (ws.bytes - atomic_load(&s->wal_bytes_at_snapshot) >= (uint64_t)s->cfg.storage_snapshot_wal_bytes)
        return true;
    /* periodic, but only when something was logged since the last one (or
     * recovery replayed records: last_snapshot_mono_s was set far back) */
    int64_t last = atomic_load(&s->last_snapshot_mono_s);
    return now - last >= s->cfg.storage_snapshot_interval_s &&
           (ws.bytes != atomic_load(&s->wal_bytes_at_snapshot) || last < 0);
}

/* Forked snapshot child, first thing: it dies with ltvd (a kill -9 of the
 * parent must not leave a child writing for a minute), and keeps no
 * descriptor but stderr (not the listening socket, whose port a restart
 * needs at once, nor client connections or log segments). The death signal
 * follows the forking thread, a libuv pool thread that lives as long as the
 * process. getppid() after prctl closes the race with a parent that died
 * before it. */
static void child_detach(pid_t parent)
{
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent)
        _exit(1);
#ifdef SYS_close_range
    if (syscall(SYS_close_range, 0u, 1u, 0u) == 0 && syscall(SYS_close_range, 3u, ~0u, 0u) == 0)
        return;
#endif
    struct rlimit rl;
    int top = getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < (1u << 20) ? (int)rl.rlim_cur : 1 << 20;
    for (int fd = 0; fd < top; fd++)
        if (fd != 2)
            close(fd);
}

/* Writes the snapshot of the records below seq to tmp, under the store
 * lock: from a forked child (fork_child), so the HTTP thread waits only for
 * the fork, or on this thread. *pid gets the child's (-1: none). */
static int write_locked(Service *s, const char *tmp, uint64_t seq, bool fork_child, pid_t *pid, size_t *bytes)
{
    SnapshotTables tables = tables_of(s);
    SnapshotInfo info = {
        .seq = seq,
        .event_clock = atomic_load(&s->event_clock),
        .purchases_total = atomic_load(&s->purchases_total),
    };
    *pid = -1;
    if (!fork_child)
        return snapshot_write(tmp, &tables, &info, bytes);
    SnapshotScratch *sc = snapshot_scratch_new(&tables); /* the child allocates nothing */
    if (!sc)
        return -ENOMEM;
    pid_t parent = getpid();
    *pid = fork();
    if (*pid == 0) {
        /* child: a frozen copy of memory; write it and leave (the fork
         * rules: no locks, no stdio, _exit) */
        child_detach(parent);
        /* nice 19, as the compute threads, and not SCHED_IDLE: an
         * erasure's snapshot has a deadline, and an idle-class child on a
         * node kept busy by normal-priority work got almost no CPU (a CI
         * run: no snapshot 60 s after an erasure under ASan) */
        setpriority(PRIO_PROCESS, 0, 19);
        int rc = snapshot_write_with(tmp, &tables, &info, sc, bytes);
        _exit(rc ? 1 : 0);
    }
    int rc = *pid < 0 ? -errno : 0;
    snapshot_scratch_free(sc); /* the parent's copy: the child has its own */
    return rc;
}

/* Nice 19, after a forked snapshot: the tables' huge pages that writes
 * split while the child lived, merged back (store_collapse), so that the
 * next fork under the store lock stays short under ingest. */
static int collapse_tables(void *arg)
{
    Service *s = arg;
    store_collapse(s->store);
    dedupe_collapse(s->dedupe);
    return 0;
}

/* Removes every snapshot and log segment older than the snapshot of seq:
 * an erased shopper's events leave the disk here, and, when the snapshot
 * covers an erasure, the torn log tails kept as evidence (which may hold
 * the id) with them. */
static void remove_superseded(Service *s, uint64_t seq, bool erasure)
{
    uint64_t seqs[SNAPSHOTS_LISTED];
    size_t n = snapshot_list(s->cfg.storage_dir, seqs, SNAPSHOTS_LISTED);
    for (size_t i = 0; i < n; i++) {
        if (seqs[i] < seq) {
            char old[CONFIG_STR_MAX + 64];
            snapshot_path(old, sizeof old, s->cfg.storage_dir, seqs[i], false);
            unlink(old);
        }
    }
    /* the training history takes the segments' events first (fsynced). If
     * it cannot (disk full, a bad segment) or cannot compact, it is deleted
     * and started afresh before the segments go: it may lack an erasure's
     * tombstone, and the history is a training aid, not worth keeping an
     * erased shopper's records (docs/SECURITY.md). An erasure waits for
     * nothing. */
    if (s->history) {
        int rc = history_archive(s->history, s->cfg.storage_dir, seq, service_now(s));
        if (rc) {
            log_msg(LOG_ERROR, "training history could not take the superseded log: deleted and started afresh",
                    "error=\"%s\" below_seq=%" PRIu64, strerror(-rc), seq);
            history_reset(s->history);
        }
    }
    wal_remove_before(s->wal, seq);
    if (erasure)
        wal_remove_torn(s->wal);
}

/* A snapshot that took the erasure flag (armed at `since`) failed: the
 * erasure is still on disk, so the flag goes back, keeping the earlier of
 * its deadline and one armed meanwhile. */
static void rearm_erasure(Service *s, int64_t since)
{
    if (!since)
        return;
    int64_t cur = atomic_load(&s->erasure_pending_since);
    while ((cur == 0 || cur > since) && !atomic_compare_exchange_weak(&s->erasure_pending_since, &cur, since))
        ;
}

/* A snapshot must not take the space the log needs: -ENOSPC (err says why)
 * unless storage.dir has room for one of about `need` bytes, an eighth
 * more, and storage.wal_buffer_bytes kept for the log. A failed statvfs
 * does not stop the snapshot (its own writes will tell). */
static int room_for_snapshot(Service *s, size_t need, char *err, size_t errlen)
{
    struct statvfs vs;
    if (statvfs(s->cfg.storage_dir, &vs) != 0)
        return 0;
    uint64_t avail = (uint64_t)vs.f_bavail * vs.f_frsize;
    uint64_t want = (uint64_t)need + need / 8 + (uint64_t)s->cfg.storage_wal_buffer_bytes;
    if (avail >= want)
        return 0;
    snprintf(err, errlen, "%s has %" PRIu64 " bytes free; a snapshot needs about %zu, and %" PRId64
             " (storage.wal_buffer_bytes) stay free for the log", s->cfg.storage_dir, avail, need,
             s->cfg.storage_wal_buffer_bytes);
    return -ENOSPC;
}

int service_snapshot(Service *s, bool fork_child, char *err, size_t errlen)
{
    if (!s->wal) {
        snprintf(err, errlen, "no write-ahead log attached");
        return -EINVAL;
    }
    uint64_t t0 = time_mono_ns();
    int64_t erasure_seen = 0;
    WalStats ws;
    char tmp[CONFIG_STR_MAX + 64], path[CONFIG_STR_MAX + 64];
    uint64_t seq = 0;
    size_t bytes = 0;
    pid_t pid = -1;
    /* most of the log's pending writes and its fsync go out before the
     * store lock is taken: wal_rotate under it then syncs only what came
     * in meanwhile */
    wal_sync(s->wal);
    store_lock(s->store);
    uint64_t locked = time_mono_ns();
    SnapshotTables tables = tables_of(s);
    int rc = room_for_snapshot(s, snapshot_size_estimate(&tables), err, errlen);
    if (rc) {
        store_unlock(s->store);
        atomic_fetch_add(&s->metrics->snapshot_failures, 1);
        log_msg(LOG_ERROR, "snapshot skipped", "error=\"%s\"", err);
        return rc;
    }
    rc = wal_rotate(s->wal, &seq); /* the snapshot covers exactly the records below seq */
    wal_stats(s->wal, &ws);
    snapshot_path(tmp, sizeof tmp, s->cfg.storage_dir, seq, true);
    snapshot_path(path, sizeof path, s->cfg.storage_dir, seq, false);
    if (!rc) {
        /* This snapshot covers every erasure logged so far (they are below
         * seq); one logged after the unlock arms the flag afresh
         * (note_erasure, under the store lock too), so its own deadline
         * holds even while this snapshot is being written. */
        erasure_seen = atomic_exchange(&s->erasure_pending_since, 0);
        rc = write_locked(s, tmp, seq, fork_child, &pid, &bytes);
    }
    store_unlock(s->store);
    uint64_t pause_ns = time_mono_ns() - locked, collapse_ns = 0;
    if (!rc && pid > 0) {
        int status = 0;
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
            ;
        rc = WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -EIO;
        uint64_t c0 = time_mono_ns();
        service_run_niced(NULL, collapse_tables, s); /* the child is gone: nothing shares the pages now; not
                                                       * paced: it runs beside a job, which owns the pace */
        collapse_ns = time_mono_ns() - c0;
        struct stat st;
        if (!rc && stat(tmp, &st) == 0)
            bytes = (size_t)st.st_size;
    }
    if (!rc && rename(tmp, path) != 0)
        rc = -errno;
    if (rc) {
        unlink(tmp);
        rearm_erasure(s, erasure_seen);
        snprintf(err, errlen, "snapshot failed: %s", strerror(-rc));
        atomic_fetch_add(&s->metrics->snapshot_failures, 1);
        log_msg(LOG_ERROR, "snapshot failed", "error=\"%s\"", strerror(-rc));
        return rc;
    }
    int dfd = open(s->cfg.storage_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
    remove_superseded(s, seq, erasure_seen != 0);
    atomic_store(&s->last_snapshot_mono_s, mono_s());
    atomic_store(&s->wal_bytes_at_snapshot, ws.bytes);
    uint64_t ns = time_mono_ns() - t0, ms = ns / 1000000;
    atomic_fetch_add(&s->metrics->snapshots, 1);
    atomic_store(&s->metrics->snapshot_last_ns, ns);
    atomic_store(&s->metrics->snapshot_last_pause_ns, pause_ns);
    atomic_store(&s->metrics->snapshot_last_success_unix, metrics_unix_now());
    atomic_store(&s->metrics->snapshot_last_bytes, bytes);
    log_msg(LOG_INFO, "snapshot written",
            "path=\"%s\" seq=%" PRIu64 " users=%zu bytes=%zu ms=%" PRIu64 " pause_us=%" PRIu64 " collapse_ms=%" PRIu64,
            path, seq, store_count(s->store), bytes, ms, pause_ns / 1000, collapse_ns / 1000000);
    return 0;
}
