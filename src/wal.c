/* wal: the write-ahead log's files: buffered append, a flusher thread
 * doing group commit, segment rotation and removal, and replay with
 * torn-tail truncation (wal_replay.c). What a record holds is wal_record.c's. Appends
 * come from the thread holding the store lock, replay from main at start;
 * the flusher thread is the log's own (include/wal.h).
 *
 * Locks: io_lock (the open segment: write, fsync, rotate) is taken before
 * buf_lock (the in-memory buffer) whenever both are held, so records reach
 * the file in the order they were appended.
 *
 * With fsync=always there are storage.sync_lanes flusher threads (pipelined group
 * commit): each writes the buffered records under io_lock, in order, then
 * fdatasyncs outside it, so a record appended while one fdatasync runs need
 * not wait for it to end before its own starts (on this project's disk two
 * to four overlapping fdatasyncs complete 1.3-4x as many syncs per second as
 * one at a time: docs/PERFORMANCE.md). Each write is a ticket in a ring
 * (io_lock); tickets retire in write order, so records are published durable
 * in order, and a failed fdatasync fails its records and every later one
 * even if a later fdatasync succeeded. Each ring slot fdatasyncs its own
 * open file description of the segment (sync_fds): Linux reports a
 * writeback error once per description, so on a shared one an earlier
 * ticket whose pages failed could get 0 while a later one got the error.
 * Whatever replaces or closes the segment, rotates, drains for
 * wal_sync or recovers from a failure first waits until no ticket is in
 * flight (quiesce_locked). */
#include "wal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "hash.h"
#include "log.h"
#include "metrics.h"
#include "timeutil.h"
#include "util.h"
#include "wal_internal.h"

#define BUF_INITIAL (1u << 20)

/* One write of the buffered records awaiting its fdatasync (io_lock). */
typedef struct SyncTicket {
    ByteBuf data;     /* the records written; kept until retired (a failure keeps them), then reused */
    uint64_t last;    /* last seq in data */
    size_t start;     /* the segment's length before the write */
    int fd;           /* its slot's own descriptor of the segment (sync_fds): not closed while in flight */
    int rc;           /* 0 durable, else -errno of the write or the fdatasync */
    bool done;
} SyncTicket;

struct Wal {
    WalConfig cfg;
    char dir[512];

    pthread_mutex_t buf_lock;
    pthread_cond_t data_cond;   /* flusher waits for records */
    pthread_cond_t space_cond;  /* appenders wait for room */
    ByteBuf buf;                /* records not yet handed to the flusher */
    ByteBuf spare;              /* the flusher's previous buffer, kept for reuse */
    uint64_t next_seq;          /* seq of the next append */
    uint64_t buf_last_seq;      /* last seq in buf */
    bool stop;
    unsigned space_waiters;     /* appenders blocked at the cap: the flusher must not sleep */

    pthread_mutex_t io_lock;
    int fd;
    /* fsync=always: for each ring slot, its own open file description of
     * the segment, opened before anything is written to it, fdatasynced by
     * that slot's tickets. Linux reports a writeback error once per open
     * file description: overlapping fdatasyncs on one shared description
     * could hand the error to the later ticket while the earlier one, whose
     * pages failed, returned 0 and was published durable. -1: use fd. */
    int sync_fds[WAL_SYNC_LANES_MAX];
    uint64_t seg_first;
    size_t seg_bytes;           /* the segment up to its last good record */
    /* After a failure (io_lock): the records not yet durable, in seq order
     * from durable_seq + 1 to pending_last, kept to be rewritten into a new
     * segment once the disk takes them (recover_locked). */
    ByteBuf pending;
    uint64_t pending_last;
    bool unrecoverable;         /* pending lost some (out of memory): a restart must replay */
    SyncTicket lanes[WAL_SYNC_LANES_MAX]; /* ring of nlanes tickets in write order, from lane_head */
    unsigned nlanes;              /* fsync=always: flusher threads, fdatasyncs in flight at most */
    unsigned lane_head, lane_count;
    bool write_broken;          /* a ticket's write failed: no more writes until it has retired */
    pthread_cond_t lanes_cond;  /* a ticket retired (with io_lock) */
    unsigned quiesce_waiters;   /* threads in quiesce_locked: no new tickets until they are through */
    bool pipelined;             /* every sync descriptor of the segment opened: tickets may overlap */

    atomic_uint_fast64_t durable_seq;
    atomic_bool failed;
    pthread_t threads[WAL_SYNC_LANES_MAX];
    unsigned nthreads;
    void (*durable_cb)(void *, uint64_t);
    void *cb_arg;

    atomic_uint_fast64_t st_records, st_bytes, st_fsyncs, st_removed, st_fsync_ns, st_recoveries;
};

/* A failed log retries this often: a full disk may get room again. */
#define RECOVER_EVERY_MS 1000

/* Closes the segment and its sync descriptors (io_lock held or the log
 * stopped; nothing in flight). */
static void close_segment(Wal *w)
{
    if (w->fd >= 0)
        close(w->fd);
    w->fd = -1;
    for (unsigned i = 0; i < WAL_SYNC_LANES_MAX; i++) {
        if (w->sync_fds[i] >= 0)
            close(w->sync_fds[i]);
        w->sync_fds[i] = -1;
    }
}

/* io_lock held, nothing in flight: makes fd (the segment at path, first
 * record `first`, `bytes` long) the one appended to, closing the previous
 * one, and opens the slots' sync descriptors of it. */
static void install_segment(Wal *w, int fd, const char *path, uint64_t first, size_t bytes)
{
    close_segment(w);
    w->pipelined = w->cfg.fsync == WAL_FSYNC_ALWAYS;
    for (unsigned i = 0; i < w->nlanes; i++) {
        if (w->cfg.fsync == WAL_FSYNC_ALWAYS) {
            w->sync_fds[i] = open(path, O_WRONLY | O_NOFOLLOW | O_CLOEXEC);
            if (w->sync_fds[i] < 0 && w->pipelined) {
                w->pipelined = false; /* a shared descriptor would bring back the errseq race above */
                log_msg(LOG_WARN, "cannot open a sync descriptor of the log segment; syncs run one at a time",
                        "segment=\"%s\" error=\"%s\"", path, strerror(errno));
            }
        }
    }
    w->fd = fd;
    w->seg_first = first;
    w->seg_bytes = bytes;
}

/* io_lock held */
static int open_segment(Wal *w, uint64_t first)
{
    char path[600];
    wal_seg_path(path, sizeof path, w->dir, first);
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_NOFOLLOW | O_CLOEXEC, 0640);
    if (fd < 0)
        return -errno;
    struct stat st;
    fstat(fd, &st);
    install_segment(w, fd, path, first, (size_t)st.st_size);
    return wal_fsync_dir(w->dir);
}

static void fail(Wal *w, const char *what, int rc)
{
    if (atomic_exchange(&w->failed, true))
        return;
    /* the flusher may sleep waiting for data (fsync=always) while a caller's
     * wal_sync found the failure: wake it, under buf_lock so that the wake-up
     * cannot fall between its check of `failed` and its wait, to start the
     * retries (io_lock is held: io before buf is the lock order) */
    pthread_mutex_lock(&w->buf_lock);
    pthread_cond_broadcast(&w->data_cond);
    pthread_mutex_unlock(&w->buf_lock);
    log_msg(LOG_ERROR, "write-ahead log failed: no more writes are accepted", "op=%s error=\"%s\"", what,
            strerror(-rc));
    if (w->durable_cb)
        w->durable_cb(w->cb_arg, UINT64_MAX); /* waiters learn of the failure */
}

/* Takes the buffered records and writes them out (and syncs, unless
 * `sync` is false). io_lock held. Returns the last seq written, 0 if none. */
static uint64_t drain_locked(Wal *w, bool sync)
{
    pthread_mutex_lock(&w->buf_lock);
    ByteBuf data = w->buf;
    size_t len = data.len;
    uint64_t last = w->buf_last_seq;
    if (len) {
        w->buf = w->spare;
        w->spare = (ByteBuf){0};
        if (!w->buf.p)
            bytebuf_reserve(&w->buf, BUF_INITIAL); /* on failure, wal_append grows it */
        pthread_cond_broadcast(&w->space_cond);
    }
    pthread_mutex_unlock(&w->buf_lock);
    if (!len)
        return 0;
    int rc = atomic_load(&w->failed) ? -EIO : write_all(w->fd, data.p, len);
    if (rc)
        fail(w, "write", rc);
    if (!rc && sync) {
        uint64_t t0 = time_mono_ns();
        if (fdatasync(w->fd) != 0) {
            rc = -errno;
            fail(w, "fdatasync", rc);
        }
        uint64_t ns = time_mono_ns() - t0;
        atomic_fetch_add(&w->st_fsyncs, 1);
        atomic_fetch_add(&w->st_fsync_ns, ns);
        if (w->cfg.fsync_latency)
            metrics_fsync_observe(w->cfg.fsync_latency, ns);
    }
    atomic_fetch_add(&w->st_bytes, len);
    if (!rc) {
        w->seg_bytes += len;
    } else if (bytebuf_put(&w->pending, data.p, len) == 0) {
        w->pending_last = last; /* not durable: kept for recover_locked */
    } else {
        w->unrecoverable = true;
        log_msg(LOG_ERROR, "write-ahead log: no memory to keep the records it could not write; only a restart "
                "recovers", "records_from=%" PRIu64, last);
    }
    pthread_mutex_lock(&w->buf_lock);
    if (!w->spare.p) {
        data.len = 0;
        w->spare = data;
    } else {
        bytebuf_free(&data);
    }
    pthread_mutex_unlock(&w->buf_lock);
    if (!rc && w->seg_bytes >= w->cfg.segment_bytes) {
        if (sync || fdatasync(w->fd) == 0) {
            int orc = open_segment(w, last + 1);
            if (orc)
                fail(w, "rotate", orc);
        }
    }
    return rc ? 0 : last;
}

/* io_lock held, by the thread that drained up to `last`: publishing under
 * the lock keeps the durable seq in drain order (wal_sync racing the flusher
 * could otherwise move it back, and an answer held after that would wait for
 * ever), and a returned wal_sync has published what it covers. */
static void publish(Wal *w, uint64_t last)
{
    if (!last)
        return;
    atomic_store(&w->durable_seq, last);
    if (w->durable_cb)
        w->durable_cb(w->cb_arg, last);
}

/* After a failure (a full disk, an I/O error), with io_lock held: makes the
 * records that were not durable durable after all, and lets the log go on.
 * A failed fsync cannot be retried on Linux (the kernel may have dropped
 * the dirty pages and reports the error once), so nothing is rewritten in
 * place: the current segment is cut back to its last good record (whatever
 * a failed write left after it goes) and synced, the kept records
 * (`pending`) are written to a new file, synced, and renamed to the segment
 * that starts at durable_seq + 1 (replacing an empty or unsynced one of
 * that name), and the directory is synced. Only then are they published and
 * appends accepted again. On any error the new file goes and the next try
 * starts over. 0 or -errno. */
static int recover_locked(Wal *w)
{
    if (w->unrecoverable)
        return -ENOMEM;
    uint64_t first = atomic_load(&w->durable_seq) + 1;
    if (w->fd >= 0 && w->seg_first < first &&
        (ftruncate(w->fd, (off_t)w->seg_bytes) != 0 || fsync(w->fd) != 0))
        return -errno;
    char path[600], tmp[620];
    wal_seg_path(path, sizeof path, w->dir, first);
    snprintf(tmp, sizeof tmp, "%s.new", path);
    if (unlink(tmp) != 0 && errno != ENOENT)
        return -errno;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_APPEND | O_NOFOLLOW | O_CLOEXEC, 0640);
    if (fd < 0)
        return -errno;
    int rc = write_all(fd, w->pending.p, w->pending.len);
    if (!rc && fdatasync(fd) != 0)
        rc = -errno;
    if (!rc && rename(tmp, path) != 0)
        rc = -errno;
    if (!rc)
        rc = wal_fsync_dir(w->dir);
    if (rc) {
        close(fd);
        unlink(tmp);
        return rc;
    }
    install_segment(w, fd, path, first, w->pending.len);
    uint64_t last = w->pending.len ? w->pending_last : first - 1;
    size_t records = w->pending.len ? (size_t)(last - first + 1) : 0;
    w->pending.len = 0;
    /* durable first, then healthy: whoever sees the log healthy again sees
     * the rewritten records durable (test_wal saw the other order) */
    publish(w, last);
    atomic_fetch_add(&w->st_recoveries, 1);
    atomic_store(&w->failed, false);
    log_msg(LOG_WARN, "write-ahead log recovered: writes are accepted again", "segment=\"%s\" records_rewritten=%zu",
            path, records);
    return 0;
}

/* Waits until no ticket is in flight (io_lock held; released while it
 * waits). Afterwards the segment may be replaced and drain_locked used. */
static void quiesce_locked(Wal *w)
{
    w->quiesce_waiters++; /* the flushers issue no new ticket meanwhile: a busy log still quiesces */
    while (w->lane_count)
        pthread_cond_wait(&w->lanes_cond, &w->io_lock);
    w->quiesce_waiters--;
}

/* Retires the done tickets at the head of the ring, in write order: the
 * records of each are published durable, or, from the first failure on,
 * kept in `pending` for recover_locked (and the segment's good length cut
 * back to before them). io_lock held. */
static void retire_locked(Wal *w)
{
    while (w->lane_count && w->lanes[w->lane_head].done) {
        SyncTicket *t = &w->lanes[w->lane_head];
        if (t->rc && !atomic_load(&w->failed)) {
            w->seg_bytes = t->start;
            fail(w, w->write_broken ? "write" : "fdatasync", t->rc);
        }
        if (atomic_load(&w->failed)) {
            if (bytebuf_put(&w->pending, t->data.p, t->data.len) == 0) {
                w->pending_last = t->last;
            } else {
                w->unrecoverable = true;
                log_msg(LOG_ERROR, "write-ahead log: no memory to keep the records it could not sync; only a "
                        "restart recovers", "records_to=%" PRIu64, t->last);
            }
        } else {
            publish(w, t->last);
        }
        t->data.len = 0;
        if (t->data.cap > BUF_INITIAL)
            bytebuf_free(&t->data); /* a burst's buffer is not kept: idle, the lanes hold 1 MiB each */
        w->lane_head = (w->lane_head + 1) % w->nlanes;
        w->lane_count--;
    }
    if (!w->lane_count)
        w->write_broken = false; /* its ticket has retired: `failed` now says it */
    pthread_cond_broadcast(&w->lanes_cond);
}

/* fsync=always, the log healthy: takes the buffered records and writes
 * them (io_lock held, so in append order) as a new ticket, to be
 * fdatasynced by the caller outside the lock and then passed to
 * ticket_done. NULL if nothing was buffered or the write failed (then
 * retired as failed). */
static SyncTicket *ticket_issue_locked(Wal *w)
{
    SyncTicket *t = &w->lanes[(w->lane_head + w->lane_count) % w->nlanes]; /* free: lane_count < nlanes */
    pthread_mutex_lock(&w->buf_lock);
    size_t len = w->buf.len;
    if (len) {
        ByteBuf taken = w->buf;
        w->buf = t->data; /* empty; its capacity reused */
        t->data = taken;
        t->last = w->buf_last_seq;
        if (!w->buf.p)
            bytebuf_reserve(&w->buf, BUF_INITIAL); /* on failure, wal_append grows it */
        pthread_cond_broadcast(&w->space_cond);
    }
    pthread_mutex_unlock(&w->buf_lock);
    if (!len)
        return NULL;
    t->start = w->seg_bytes;
    t->fd = w->sync_fds[t - w->lanes]; /* open: pipelined */
    t->done = false;
    t->rc = 0;
    w->lane_count++;
    int rc = write_all(w->fd, t->data.p, len);
    atomic_fetch_add(&w->st_bytes, len);
    if (rc) {
        t->rc = rc;
        t->done = true;
        w->write_broken = true;
        retire_locked(w);
        return NULL;
    }
    w->seg_bytes += len;
    return t;
}

/* After t's fdatasync (rc 0 or -errno, taking ns): retires what can be. */
static void ticket_done(Wal *w, SyncTicket *t, int rc, uint64_t ns)
{
    atomic_fetch_add(&w->st_fsyncs, 1);
    atomic_fetch_add(&w->st_fsync_ns, ns);
    if (w->cfg.fsync_latency)
        metrics_fsync_observe(w->cfg.fsync_latency, ns);
    pthread_mutex_lock(&w->io_lock);
    t->rc = rc;
    t->done = true;
    retire_locked(w);
    pthread_mutex_unlock(&w->io_lock);
}

static void *flusher_main(void *arg)
{
    Wal *w = arg;
    pthread_setname_np(pthread_self(), "ltvd-wal"); /* for profiles and top -H */
    for (;;) {
        pthread_mutex_lock(&w->buf_lock);
        if (atomic_load(&w->failed)) {
            /* retry on a timer; appends are refused meanwhile */
            if (!w->stop) {
                struct timespec ts;
                clock_gettime(CLOCK_REALTIME, &ts);
                long ns = ts.tv_nsec + (long)RECOVER_EVERY_MS * 1000000L;
                ts.tv_sec += ns / 1000000000L;
                ts.tv_nsec = ns % 1000000000L;
                pthread_cond_timedwait(&w->data_cond, &w->buf_lock, &ts);
            }
        } else if (w->cfg.fsync != WAL_FSYNC_ALWAYS) {
            /* interval and none: write (and for interval sync) on a timer, so
             * the flusher does not compete with the HTTP thread per record */
            if (!w->stop && !w->space_waiters) {
                struct timespec ts;
                clock_gettime(CLOCK_REALTIME, &ts);
                long ns = ts.tv_nsec + (long)w->cfg.interval_ms * 1000000L;
                ts.tv_sec += ns / 1000000000L;
                ts.tv_nsec = ns % 1000000000L;
                pthread_cond_timedwait(&w->data_cond, &w->buf_lock, &ts);
            }
        } else {
            while (!w->stop && w->buf.len == 0 && !atomic_load(&w->failed))
                pthread_cond_wait(&w->data_cond, &w->buf_lock);
        }
        bool stop = w->stop && (w->buf.len == 0 || atomic_load(&w->failed));
        pthread_mutex_unlock(&w->buf_lock);
        if (stop)
            break;
        SyncTicket *t = NULL;
        pthread_mutex_lock(&w->io_lock);
        /* a thread's ticket that is done stays in the ring until those
         * before it are: the ring can be full while its thread comes back */
        while (w->lane_count == w->nlanes)
            pthread_cond_wait(&w->lanes_cond, &w->io_lock);
        if (w->cfg.fsync == WAL_FSYNC_ALWAYS && w->pipelined && !w->quiesce_waiters && !atomic_load(&w->failed) &&
            !w->write_broken && w->seg_bytes < w->cfg.segment_bytes) {
            t = ticket_issue_locked(w); /* the fast path: fdatasync below, outside the lock */
        } else {
            quiesce_locked(w); /* the segment may be replaced: nothing in flight on it */
            if (atomic_load(&w->failed)) {
                drain_locked(w, false); /* records appended as it failed join the kept ones */
                recover_locked(w);
            } else {
                uint64_t last = drain_locked(w, w->cfg.fsync != WAL_FSYNC_NONE); /* and rotate */
                publish(w, last);
            }
        }
        pthread_mutex_unlock(&w->io_lock);
        if (t) {
            uint64_t t0 = time_mono_ns();
            int rc = fdatasync(t->fd) != 0 ? -errno : 0;
            ticket_done(w, t, rc, time_mono_ns() - t0);
        }
    }
    return NULL;
}

void wal_detach_callback(Wal *w)
{
    if (!w)
        return;
    pthread_mutex_lock(&w->io_lock);
    w->durable_cb = NULL;
    w->cb_arg = NULL;
    pthread_mutex_unlock(&w->io_lock);
}

int wal_open(Wal **out, const WalConfig *cfg, uint64_t next_seq, void (*durable_cb)(void *, uint64_t), void *arg)
{
    Wal *w = calloc(1, sizeof *w);
    if (!w)
        return -ENOMEM;
    w->cfg = *cfg;
    snprintf(w->dir, sizeof w->dir, "%s", cfg->dir);
    w->cfg.dir = w->dir;
    w->fd = -1;
    w->nlanes = cfg->sync_lanes >= 1 && cfg->sync_lanes <= WAL_SYNC_LANES_MAX ? (unsigned)cfg->sync_lanes : 1;
    for (unsigned i = 0; i < WAL_SYNC_LANES_MAX; i++)
        w->sync_fds[i] = -1;
    w->next_seq = next_seq;
    w->buf_last_seq = next_seq - 1;
    atomic_init(&w->durable_seq, next_seq - 1);
    w->durable_cb = durable_cb;
    w->cb_arg = arg;
    pthread_mutex_init(&w->buf_lock, NULL);
    pthread_mutex_init(&w->io_lock, NULL);
    pthread_cond_init(&w->data_cond, NULL);
    pthread_cond_init(&w->space_cond, NULL);
    pthread_cond_init(&w->lanes_cond, NULL);
    int rc = bytebuf_reserve(&w->buf, BUF_INITIAL);
    if (!rc)
        rc = open_segment(w, next_seq);
    unsigned want = cfg->fsync == WAL_FSYNC_ALWAYS ? w->nlanes : 1;
    while (!rc && w->nthreads < want) {
        if (pthread_create(&w->threads[w->nthreads], NULL, flusher_main, w) != 0)
            rc = -EAGAIN;
        else
            w->nthreads++;
    }
    if (rc) {
        pthread_mutex_lock(&w->buf_lock);
        w->stop = true;
        pthread_cond_broadcast(&w->data_cond);
        pthread_mutex_unlock(&w->buf_lock);
        for (unsigned i = 0; i < w->nthreads; i++)
            pthread_join(w->threads[i], NULL);
        close_segment(w);
        bytebuf_free(&w->buf);
        free(w);
        return rc;
    }
    *out = w;
    return 0;
}

void wal_close(Wal *w)
{
    if (!w)
        return;
    pthread_mutex_lock(&w->buf_lock);
    w->stop = true;
    pthread_cond_broadcast(&w->data_cond);
    pthread_mutex_unlock(&w->buf_lock);
    for (unsigned i = 0; i < w->nthreads; i++)
        pthread_join(w->threads[i], NULL);
    wal_sync(w);
    if (w->fd >= 0)
        fdatasync(w->fd);
    close_segment(w);
    bytebuf_free(&w->buf);
    bytebuf_free(&w->spare);
    bytebuf_free(&w->pending);
    for (unsigned i = 0; i < WAL_SYNC_LANES_MAX; i++)
        bytebuf_free(&w->lanes[i].data);
    pthread_mutex_destroy(&w->buf_lock);
    pthread_mutex_destroy(&w->io_lock);
    pthread_cond_destroy(&w->data_cond);
    pthread_cond_destroy(&w->space_cond);
    pthread_cond_destroy(&w->lanes_cond);
    free(w);
}

int wal_append(Wal *w, uint8_t kind, const void *payload, size_t len, uint64_t *seq)
{
    if (atomic_load(&w->failed))
        return -EIO;
    size_t rec = REC_HEADER + REC_FIXED + len;
    pthread_mutex_lock(&w->buf_lock);
    /* back-pressure: the buffer is capped; wait for the flusher to take it.
     * Wake it, and keep it awake while anyone waits: with interval/none it
     * would otherwise sleep out its period (up to 10 s) while the caller
     * holds the store lock. */
    while (w->buf.len > 0 && w->buf.len + rec > w->cfg.buffer_bytes && !atomic_load(&w->failed)) {
        w->space_waiters++;
        pthread_cond_signal(&w->data_cond);
        pthread_cond_wait(&w->space_cond, &w->buf_lock);
        w->space_waiters--;
    }
    if (bytebuf_reserve(&w->buf, rec)) {
        pthread_mutex_unlock(&w->buf_lock);
        return -ENOMEM;
    }
    uint64_t s = w->next_seq++;
    unsigned char *p = w->buf.p + w->buf.len;
    uint32_t l32 = (uint32_t)(REC_FIXED + len);
    memcpy(p + 8, &s, 8);
    p[16] = kind;
    memcpy(p + 17, payload, len);
    uint32_t crc = crc32_update(0, p + 8, REC_FIXED + len);
    memcpy(p, &l32, 4);
    memcpy(p + 4, &crc, 4);
    w->buf.len += rec;
    w->buf_last_seq = s;
    if (w->cfg.fsync == WAL_FSYNC_ALWAYS)
        pthread_cond_signal(&w->data_cond);
    pthread_mutex_unlock(&w->buf_lock);
    atomic_fetch_add_explicit(&w->st_records, 1, memory_order_relaxed);
    *seq = s;
    return 0;
}

int wal_sync(Wal *w)
{
    pthread_mutex_lock(&w->io_lock);
    quiesce_locked(w);
    uint64_t last = drain_locked(w, true);
    if (!last && w->fd >= 0 && w->cfg.fsync != WAL_FSYNC_ALWAYS)
        fdatasync(w->fd); /* records written by an interval/none flusher but not synced */
    publish(w, last);
    pthread_mutex_unlock(&w->io_lock);
    return atomic_load(&w->failed) ? -EIO : 0;
}

int wal_rotate(Wal *w, uint64_t *first_seq)
{
    int rc = wal_sync(w);
    if (rc)
        return rc;
    pthread_mutex_lock(&w->io_lock);
    quiesce_locked(w); /* open_segment closes the segment a ticket may be syncing */
    pthread_mutex_lock(&w->buf_lock);
    uint64_t first = w->next_seq;
    pthread_mutex_unlock(&w->buf_lock);
    rc = first == w->seg_first ? 0 : open_segment(w, first);
    pthread_mutex_unlock(&w->io_lock);
    *first_seq = first;
    return rc;
}

void wal_remove_before(Wal *w, uint64_t seq)
{
    uint64_t *segs = NULL;
    size_t n = 0;
    if (wal_list_segments(w->dir, &segs, &n))
        return;
    pthread_mutex_lock(&w->io_lock);
    uint64_t current = w->seg_first;
    pthread_mutex_unlock(&w->io_lock);
    for (size_t i = 0; i + 1 < n; i++) {
        /* segment i holds seqs [segs[i], segs[i+1]) */
        if (segs[i + 1] <= seq && segs[i] != current) {
            char path[600];
            wal_seg_path(path, sizeof path, w->dir, segs[i]);
            if (unlink(path) == 0)
                atomic_fetch_add(&w->st_removed, 1);
        }
    }
    free(segs);
    wal_fsync_dir(w->dir);
}


void wal_remove_torn(Wal *w)
{
    DIR *d = opendir(w->dir);
    if (!d)
        return;
    struct dirent *e;
    unsigned removed = 0;
    while ((e = readdir(d))) {
        if (wal_is_torn_name(e->d_name)) {
            char path[800];
            snprintf(path, sizeof path, "%s/%s", w->dir, e->d_name);
            removed += unlink(path) == 0;
        }
    }
    closedir(d);
    if (removed) {
        wal_fsync_dir(w->dir);
        log_msg(LOG_INFO, "torn write-ahead log tails removed: an erasure must reach every file", "files=%u",
                removed);
    }
}

uint64_t wal_durable_seq(Wal *w) { return atomic_load(&w->durable_seq); }
bool wal_failed(Wal *w) { return atomic_load(&w->failed); }

void wal_stats(Wal *w, WalStats *out)
{
    out->records = atomic_load(&w->st_records);
    out->bytes = atomic_load(&w->st_bytes);
    out->fsyncs = atomic_load(&w->st_fsyncs);
    out->fsync_ns_total = atomic_load(&w->st_fsync_ns);
    out->segments_removed = atomic_load(&w->st_removed);
    out->recoveries = atomic_load(&w->st_recoveries);
    out->durable_seq = atomic_load(&w->durable_seq);
    pthread_mutex_lock(&w->buf_lock);
    out->next_seq = w->next_seq;
    pthread_mutex_unlock(&w->buf_lock);
}
