/* history: the training history on disk (include/history.h has the format
 * and the rules). Archiving reads the superseded log segments (wal_scan)
 * and appends chunks to the parts their shoppers hash to; loading picks
 * the sampled shoppers' records from every part for training; opening
 * checks the parts (and moves a single-file history of before into
 * them). Compaction and the readers' rules are history_compact.c's.
 *
 * Threads: archive, compact and reset from one thread at a time (the
 * snapshot worker); load from any thread, beside them: it takes a part's
 * fd_lock only to dup its fd and read its good end, and scans its own copy
 * (a compaction or reset swaps the fd under fd_lock; the old file stays
 * readable through the dup until it is closed). The figures (st_lock)
 * from any. */
#include "history.h"
#include "history_internal.h"

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
#include "pace.h"
#include "store.h"
#include "util.h"
#include "wal.h"
#include "wal_record.h"

unsigned history_part_of(uint64_t key, unsigned nparts)
{
    /* the high bits: compaction's passes split a part by the low ones */
    return nparts > 1 ? (unsigned)((key >> 32) % nparts) : 0;
}

void history_part_path(char *out, size_t n, const char *dir, unsigned part)
{
    snprintf(out, n, "%s/history/events-%02u.hist", dir, part);
}

/* ---- appending to every part (archive, and the single file's move) ------- */

/* One chunk writer per part, each appending at its part's good end; NULL
 * without memory. */
static ChunkWriter *writers_open(History *h)
{
    ChunkWriter *w = calloc(h->nparts, sizeof *w);
    for (unsigned i = 0; w && i < h->nparts; i++) {
        if (hist_writer_init(&w[i], h->parts[i].fd, h->parts[i].good_end)) {
            for (unsigned j = 0; j < i; j++)
                free(w[j].buf);
            free(w);
            w = NULL;
        }
    }
    return w;
}

/* A part's seq_hi for a chunk that ends where the log record seq does:
 * never below what the part had. */
static uint64_t part_seq(const HistPart *p, uint64_t seq)
{
    return seq > p->archived_seq ? seq : p->archived_seq;
}

/* Ends an append to every part, rc saying how it went so far: each part's
 * pending records, or its new seq alone, go as a last chunk saying every
 * log record up to seq is in the part (an empty chunk keeps the parts'
 * seqs together: the next archive starts after the lowest); the parts are
 * fsynced; then their new ends and figures are taken, or, on failure,
 * each is cut back to its last good chunk (a run of valid chunks for the
 * next append to extend). Frees w. rc, or the first error here. */
static int writers_close(History *h, ChunkWriter *w, uint64_t seq, int rc)
{
    for (unsigned i = 0; i < h->nparts && !rc; i++)
        if (w[i].n || seq > h->parts[i].archived_seq)
            rc = hist_writer_flush(&w[i], part_seq(&h->parts[i], seq));
    for (unsigned i = 0; i < h->nparts && !rc; i++)
        if (fsync(h->parts[i].fd) != 0)
            rc = -errno;
    for (unsigned i = 0; i < h->nparts; i++) {
        HistPart *p = &h->parts[i];
        if (rc) {
            if (ftruncate(p->fd, (off_t)p->good_end) != 0 || fsync(p->fd) != 0)
                log_msg(LOG_WARN, "cannot cut the training history back", "file=\"%s\"", p->path);
        } else {
            pthread_mutex_lock(&p->fd_lock);
            p->good_end = w[i].offset;
            pthread_mutex_unlock(&p->fd_lock);
            pthread_mutex_lock(&h->st_lock);
            p->archived_seq = part_seq(p, seq);
            p->records += w[i].records;
            p->tombstones += w[i].tombstones;
            p->bytes = p->good_end;
            pthread_mutex_unlock(&h->st_lock);
        }
        free(w[i].buf);
    }
    free(w);
    return rc;
}

/* ---- open ----------------------------------------------------------------- */

static int count_chunk(void *arg, const HistRec *r, size_t n, uint64_t seq_hi)
{
    (void)seq_hi;
    uint64_t *c = arg; /* records, tombstones */
    c[0] += n;
    for (size_t i = 0; i < n; i++)
        c[1] += (r[i].flags & HF_TOMBSTONE) != 0;
    return 0;
}

/* Opens the part's file, checks it and cuts what follows its last valid
 * chunk; sets its figures. */
static int load_file(History *h, HistPart *p, char *err, size_t errlen)
{
    p->fd = open(p->path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0640);
    if (p->fd < 0) {
        snprintf(err, errlen, "cannot open %s: %s", p->path, strerror(errno));
        return -errno;
    }
    struct stat st;
    if (fstat(p->fd, &st) != 0)
        return -errno;
    if (st.st_size > 0 && !hist_header_ok(p->fd)) {
        log_msg(LOG_WARN, "training history file has a bad header: started afresh", "file=\"%s\" bytes=%lld",
                p->path, (long long)st.st_size);
        st.st_size = 0;
    }
    if (st.st_size == 0 && (ftruncate(p->fd, 0) != 0 || hist_write_header(p->fd) != 0 || fsync(p->fd) != 0)) {
        snprintf(err, errlen, "cannot write %s: %s", p->path, strerror(errno));
        return -EIO;
    }
    uint64_t counts[2] = {0, 0}, end, seq_hi;
    int rc = hist_scan_chunks(p->fd, 0, count_chunk, counts, &end, &seq_hi);
    if (rc) {
        snprintf(err, errlen, "cannot read %s: %s", p->path, strerror(-rc));
        return rc;
    }
    if (fstat(p->fd, &st) != 0)
        return -errno;
    if ((uint64_t)st.st_size > end) {
        log_msg(LOG_WARN, "training history file has a torn or corrupt chunk: cut there", "file=\"%s\" offset=%"
                PRIu64 " bytes_dropped=%" PRIu64 " archived_seq=%" PRIu64, p->path, end,
                (uint64_t)st.st_size - end, seq_hi);
        if (ftruncate(p->fd, (off_t)end) != 0 || fsync(p->fd) != 0) {
            snprintf(err, errlen, "cannot cut %s: %s", p->path, strerror(errno));
            return -EIO;
        }
        h->st.cut_bytes += (uint64_t)st.st_size - end;
    }
    p->good_end = end;
    p->bytes = end;
    p->records = counts[0];
    p->tombstones = counts[1];
    p->archived_seq = seq_hi;
    p->bytes_at_compaction = end;
    return 0;
}

/* ---- the single file of before the parts (2026-11-30) --------------------- */

typedef struct MigrateWalk {
    History *h;
    ChunkWriter *w;          /* one per part */
    uint64_t seq_hi;         /* of the last chunk read */
} MigrateWalk;

/* One chunk of the old file: its records to their parts, in file order;
 * a part's chunk is flushed at an old chunk's end (a log record's end). */
static int migrate_chunk(void *arg, const HistRec *r, size_t n, uint64_t seq_hi)
{
    MigrateWalk *m = arg;
    int rc = 0;
    for (size_t i = 0; i < n && !rc; i++)
        rc = hist_writer_add(&m->w[history_part_of(r[i].key, m->h->nparts)], &r[i]);
    for (unsigned i = 0; i < m->h->nparts && !rc; i++)
        if (m->w[i].n >= CHUNK_RECORDS)
            rc = hist_writer_flush(&m->w[i], part_seq(&m->h->parts[i], seq_hi));
    m->seq_hi = seq_hi;
    return rc;
}

/* Appends the valid chunks of fd (an events.hist) to the parts and fsyncs
 * them. On failure every part is cut back to where it was. */
static int migrate_into_parts(History *h, int fd)
{
    ChunkWriter *w = writers_open(h);
    if (!w)
        return -ENOMEM;
    MigrateWalk m = {.h = h, .w = w};
    uint64_t end, seq_hi;
    int rc = hist_header_ok(fd) ? hist_scan_chunks(fd, 0, migrate_chunk, &m, &end, &seq_hi) : -EINVAL;
    return writers_close(h, w, m.seq_hi, rc);
}

/* A single-file history of an earlier version (storage.dir/history/
 * events.hist): its records are appended to the parts, then it is
 * deleted (if it cannot be read, the parts are started afresh with it).
 * Appending is right whatever the parts hold: they can hold records
 * only from a run of this version before a rollback to the old one
 * (which wrote the file afresh), older than the file's, and a tombstone
 * the file brings then hides them as it hides any earlier record of its
 * shopper. A crash before the delete appends the file again at the next
 * open: the copies are events older than their shopper's newest
 * (dropped, as late events are, but for one at its shopper's newest
 * second) and tombstones (the last one counts). Its compaction copy
 * goes. */
static void migrate_single_file(History *h)
{
    char path[620], tmp[630];
    snprintf(path, sizeof path, "%s/events.hist", h->hdir);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    unlink(tmp);
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return;
    int rc = migrate_into_parts(h, fd);
    close(fd);
    if (rc) {
        /* the parts may hold what a tombstone of the file would have hidden */
        log_msg(LOG_WARN, "training history: a single-file history of an earlier version could not be read; "
                "deleted", "file=\"%s\" error=\"%s\"", path, strerror(-rc));
        history_reset(h);
    } else
        log_msg(LOG_INFO, "training history: a single-file history of an earlier version moved into parts",
                "file=\"%s\" parts=%u", path, h->nparts);
    unlink(path);
    fsync_path(h->hdir, O_DIRECTORY);
}

int history_open(History **out, const HistoryConfig *cfg, char *err, size_t errlen)
{
    *out = NULL;
    unsigned nparts = cfg->parts ? cfg->parts : HISTORY_PARTS;
    if (nparts > HISTORY_PARTS_MAX) {
        snprintf(err, errlen, "%u parts: at most %u", nparts, (unsigned)HISTORY_PARTS_MAX);
        return -EINVAL;
    }
    History *h = calloc(1, sizeof *h + nparts * sizeof h->parts[0]);
    if (!h)
        return -ENOMEM;
    h->cfg = *cfg;
    h->nparts = nparts;
    if (!h->cfg.pass_records)
        h->cfg.pass_records = PASS_RECORDS;
    pthread_mutex_init(&h->st_lock, NULL);
    snprintf(h->hdir, sizeof h->hdir, "%s/history", cfg->dir);
    for (unsigned i = 0; i < nparts; i++) {
        HistPart *p = &h->parts[i];
        p->fd = -1;
        pthread_mutex_init(&p->fd_lock, NULL);
        history_part_path(p->path, sizeof p->path, cfg->dir, i);
        snprintf(p->tmp, sizeof p->tmp, "%s.tmp", p->path);
    }
    int rc = 0;
    if (mkdir(h->hdir, 0750) != 0 && errno != EEXIST) {
        rc = -errno;
        snprintf(err, errlen, "cannot create %s: %s", h->hdir, strerror(errno));
    }
    for (unsigned i = 0; i < nparts && !rc; i++) {
        unlink(h->parts[i].tmp); /* a compaction cut short */
        rc = load_file(h, &h->parts[i], err, errlen);
    }
    if (!rc)
        migrate_single_file(h);
    if (rc) {
        history_close(h);
        return rc;
    }
    *out = h;
    return 0;
}

void history_close(History *h)
{
    if (!h)
        return;
    for (unsigned i = 0; i < h->nparts; i++) {
        if (h->parts[i].fd >= 0)
            close(h->parts[i].fd);
        pthread_mutex_destroy(&h->parts[i].fd_lock);
    }
    pthread_mutex_destroy(&h->st_lock);
    free(h);
}

/* Is name one of the history's files (a part, its compaction's copy, or
 * the single file of before)? */
static bool is_history_file(const char *name)
{
    size_t n = strlen(name);
    if (strncmp(name, "events", 6) != 0)
        return false;
    return (n >= 11 && strcmp(name + n - 5, ".hist") == 0) || (n >= 15 && strcmp(name + n - 9, ".hist.tmp") == 0);
}

void history_remove(const char *dir)
{
    char hdir[560], path[900];
    snprintf(hdir, sizeof hdir, "%s/history", dir);
    DIR *d = opendir(hdir);
    if (!d)
        return;
    unsigned removed = 0;
    for (struct dirent *e; (e = readdir(d));) {
        if (!is_history_file(e->d_name))
            continue;
        snprintf(path, sizeof path, "%s/%s", hdir, e->d_name);
        removed += unlink(path) == 0;
    }
    closedir(d);
    if (removed) {
        log_msg(LOG_INFO, "training history removed", "dir=\"%s\" files=%u", hdir, removed);
        fsync_path(hdir, O_DIRECTORY);
    }
}

void history_stats(History *h, HistoryStats *out)
{
    pthread_mutex_lock(&h->st_lock);
    *out = h->st;
    out->bytes = out->records = out->tombstones = out->shoppers = 0;
    out->archived_seq = UINT64_MAX;
    out->parts = h->nparts;
    out->parts_compacted = 0;
    memset(out->part_compacted, 0, sizeof out->part_compacted);
    for (unsigned i = 0; i < h->nparts; i++) {
        const HistPart *p = &h->parts[i];
        out->bytes += p->bytes;
        out->records += p->records;
        out->tombstones += p->tombstones;
        out->shoppers += p->shoppers;
        out->part_compacted[i] = p->compacted;
        out->parts_compacted += p->compacted;
        if (p->archived_seq < out->archived_seq)
            out->archived_seq = p->archived_seq;
    }
    pthread_mutex_unlock(&h->st_lock);
}

static int cmp_u64_asc(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

void hist_set_stats(History *h, HistPart *p, uint64_t records, uint64_t tombstones, uint64_t bytes)
{
    pthread_mutex_lock(&h->st_lock);
    p->records = records;
    p->tombstones = tombstones;
    p->bytes = bytes;
    pthread_mutex_unlock(&h->st_lock);
}

/* ---- load ----------------------------------------------------------------- */

typedef struct LoadWalk {
    const uint64_t *keys;
    size_t nkeys;
    HistRec *recs;           /* of sampled shoppers; key holds the index into keys */
    size_t n, cap;
    uint32_t ord;
} LoadWalk;

static int load_chunk(void *arg, const HistRec *r, size_t n, uint64_t seq_hi)
{
    (void)seq_hi;
    LoadWalk *w = arg;
    pace_point(); /* a chunk: one archive's records of a part (a training's read of the history) */
    for (size_t i = 0; i < n; i++) {
        const uint64_t *k = bsearch(&r[i].key, w->keys, w->nkeys, sizeof *w->keys, cmp_u64_asc);
        if (!k)
            continue;
        HistRec *d = hist_push_record(&w->recs, &w->n, &w->cap, &r[i]);
        if (!d)
            return -ENOMEM;
        d->key = (uint64_t)(k - w->keys);
        d->ord = w->ord++;
    }
    return 0;
}

/* A copy of the part's fd (the caller closes it) and the good end it has,
 * taken under fd_lock. 0 or -errno. */
static int dup_fd(HistPart *p, int *fd, uint64_t *good_end)
{
    pthread_mutex_lock(&p->fd_lock);
    *fd = p->fd >= 0 ? fcntl(p->fd, F_DUPFD_CLOEXEC, 0) : -1;
    int rc = *fd >= 0 ? 0 : p->fd >= 0 ? -errno : -EIO;
    *good_end = p->good_end;
    pthread_mutex_unlock(&p->fd_lock);
    return rc;
}

typedef struct CountWalk {
    const uint64_t *keys;
    size_t nkeys;
    uint32_t *counts;
} CountWalk;

static int count_keys_chunk(void *arg, const HistRec *r, size_t n, uint64_t seq_hi)
{
    (void)seq_hi;
    CountWalk *w = arg;
    pace_point();
    for (size_t i = 0; i < n; i++) {
        const uint64_t *k = bsearch(&r[i].key, w->keys, w->nkeys, sizeof *w->keys, cmp_u64_asc);
        if (k && w->counts[k - w->keys] < UINT32_MAX)
            w->counts[k - w->keys]++;
    }
    return 0;
}

/* Scans every part with fn (a LoadWalk or CountWalk), each from its own
 * dup; a part that cannot be read whole is marked damaged. */
static int scan_parts(History *h, ChunkFn fn, void *walk)
{
    int rc = 0;
    /* a shopper's records are all in one part: file order within it is
     * the order they are read in */
    for (unsigned i = 0; i < h->nparts && !rc; i++) {
        uint64_t good_end, end, seq_hi;
        int fd;
        rc = dup_fd(&h->parts[i], &fd, &good_end);
        if (!rc) {
            rc = hist_scan_chunks(fd, good_end, fn, walk, &end, &seq_hi);
            close(fd);
            if (rc && rc != -ENOMEM)
                atomic_store(&h->parts[i].damaged, true);
        }
    }
    return rc;
}

int history_count(History *h, const uint64_t *keys, size_t nkeys, uint32_t *counts)
{
    memset(counts, 0, nkeys * sizeof *counts);
    CountWalk w = {.keys = keys, .nkeys = nkeys, .counts = counts};
    return scan_parts(h, count_keys_chunk, &w);
}

int history_load(History *h, const uint64_t *keys, size_t nkeys, int64_t now, HistoryEvents *out)
{
    memset(out, 0, sizeof *out);
    LoadWalk w = {.keys = keys, .nkeys = nkeys};
    int rc = scan_parts(h, load_chunk, &w);
    out->start = calloc(nkeys + 1, sizeof *out->start);
    if (rc || !out->start) {
        free(w.recs);
        history_events_free(out);
        return rc ? rc : -ENOMEM;
    }
    if (w.n)
        qsort(w.recs, w.n, sizeof *w.recs, hist_cmp_key_ord);
    /* each shopper's kept records move down to the front: the events
     * array holds the kept ones only */
    int64_t min_ts = hist_min_ts(h, now);
    size_t i = 0, total = 0;
    for (size_t k = 0; k < nkeys; k++) {
        out->start[k] = total;
        size_t j = i;
        while (j < w.n && w.recs[j].key == k)
            j++;
        size_t kept = j > i ? hist_select_records(w.recs + i, j - i, min_ts, h->cfg.max_events) : 0;
        if (kept)
            memmove(w.recs + total, w.recs + i, kept * sizeof *w.recs);
        total += kept;
        i = j;
    }
    out->start[nkeys] = total;
    out->events = malloc((total ? total : 1) * sizeof *out->events);
    if (!out->events) {
        free(w.recs);
        history_events_free(out);
        return -ENOMEM;
    }
    for (size_t e = 0; e < total; e++) {
        const HistRec *r = &w.recs[e];
        out->events[e] = (HistoryEvent){(int64_t)r->ts, r->value, r->quantity, r->type};
    }
    out->nevents = total;
    free(w.recs);
    return 0;
}

void history_events_free(HistoryEvents *e)
{
    free(e->events);
    free(e->start);
    memset(e, 0, sizeof *e);
}

/* Makes fd (written to good_end) the part's, closing the old one. */
void hist_swap_fd(HistPart *p, int fd, uint64_t good_end)
{
    pthread_mutex_lock(&p->fd_lock);
    int old = p->fd;
    p->fd = fd;
    p->good_end = good_end;
    pthread_mutex_unlock(&p->fd_lock);
    if (old >= 0)
        close(old);
}

/* Deletes the part's file and starts an empty one (history_reset). */
static int reset_part(History *h, HistPart *p)
{
    /* the old file's name goes first: whatever happens next, nothing on
     * disk keeps its records (a load's dup reads it until it closes) */
    int rc = unlink(p->path) == 0 || errno == ENOENT ? 0 : -errno;
    int fd = rc ? -1 : open(p->path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0640);
    if (!rc && fd < 0)
        rc = -errno;
    if (!rc && (rc = hist_write_header(fd)) == 0 && fsync(fd) != 0)
        rc = -errno;
    if (rc && fd >= 0) {
        close(fd);
        fd = -1;
        unlink(p->path);
    }
    hist_swap_fd(p, fd, FILE_HEADER);
    atomic_store(&p->damaged, false);
    hist_set_stats(h, p, 0, 0, FILE_HEADER);
    pthread_mutex_lock(&h->st_lock);
    p->shoppers = 0; /* archived_seq stays: what was archived is not archived again */
    p->compacted = false; /* its shoppers archived from now on are not counted */
    pthread_mutex_unlock(&h->st_lock);
    p->bytes_at_compaction = FILE_HEADER;
    return rc;
}

int history_reset(History *h)
{
    int rc = 0;
    for (unsigned i = 0; i < h->nparts; i++) {
        int prc = reset_part(h, &h->parts[i]);
        if (prc && !rc)
            rc = prc;
    }
    int drc = fsync_path(h->hdir, O_DIRECTORY);
    if (!rc)
        rc = drc;
    if (rc)
        log_msg(LOG_ERROR, "training history deleted but cannot be started afresh: retried at the next snapshot",
                "dir=\"%s\" error=\"%s\"", h->hdir, strerror(-rc));
    else
        log_msg(LOG_WARN, "training history deleted and started afresh", "dir=\"%s\"", h->hdir);
    return rc;
}

/* ---- archive ------------------------------------------------------------- */

typedef struct ArchiveWalk {
    History *h;
    ChunkWriter *w;          /* one per part */
} ArchiveWalk;

/* r into its part's writer, unless that part has the log record already
 * (an archive cut short after some parts took it). */
static int archive_add(ArchiveWalk *a, uint64_t seq, const HistRec *r)
{
    unsigned i = history_part_of(r->key, a->h->nparts);
    if (seq <= a->h->parts[i].archived_seq)
        return 0;
    return hist_writer_add(&a->w[i], r);
}

static int archive_record(void *arg, uint8_t kind, uint64_t seq, const unsigned char *p, size_t len)
{
    ArchiveWalk *a = arg;
    int rc = 0;
    if (kind == WAL_REC_DELETE) {
        const char *id;
        size_t idlen;
        if (wal_record_decode_delete(p, len, &id, &idlen) == 0) {
            HistRec r = {.key = store_stable_hash_id(id, idlen), .flags = HF_TOMBSTONE};
            rc = archive_add(a, seq, &r);
        }
    } else if (kind == WAL_REC_EVENTS) {
        Event *ev;
        size_t n;
        if (wal_record_decode_events(p, len, &ev, &n) == 0) {
            for (size_t i = 0; i < n && !rc; i++) {
                HistRec r = {
                    .key = store_stable_hash_id(ev[i].user_id, ev[i].user_len),
                    .ts = (uint32_t)(ev[i].ts < 0 ? 0 : ev[i].ts > UINT32_MAX ? UINT32_MAX : ev[i].ts),
                    .value = (float)ev[i].value,
                    .quantity = (uint16_t)(ev[i].quantity > UINT16_MAX ? UINT16_MAX : ev[i].quantity),
                    .type = (uint8_t)ev[i].type,
                };
                rc = archive_add(a, seq, &r);
            }
            free(ev);
        }
    }
    /* at a log record's end: a chunk's seq_hi says its part has every log
     * record up to it */
    for (unsigned i = 0; i < a->h->nparts && !rc; i++)
        if (a->w[i].n >= CHUNK_RECORDS)
            rc = hist_writer_flush(&a->w[i], seq);
    return rc;
}

int history_archive(History *h, const char *wal_dir, uint64_t below_seq, int64_t now)
{
    uint64_t from = UINT64_MAX;
    for (unsigned i = 0; i < h->nparts; i++) {
        if (h->parts[i].fd < 0 && history_reset(h) != 0)
            return -EIO; /* no file since a reset failed, and still none */
        if (h->parts[i].archived_seq < from)
            from = h->parts[i].archived_seq;
    }
    if (below_seq == 0 || below_seq - 1 <= from) /* nothing new; a compaction owed is retried */
        return hist_compact_due(h, now);
    ChunkWriter *w = writers_open(h);
    if (!w)
        return -ENOMEM;
    ArchiveWalk a = {.h = h, .w = w};
    uint64_t last = 0;
    int rc = wal_scan(wal_dir, from + 1, below_seq, archive_record, &a, &last);
    rc = writers_close(h, w, last, rc);
    if (rc) {
        log_msg(LOG_WARN, "training history archive failed", "dir=\"%s\" error=\"%s\"", h->hdir, strerror(-rc));
        return rc;
    }
    pthread_mutex_lock(&h->st_lock);
    h->st.archives++;
    h->st.last_archive_unix = time(NULL);
    pthread_mutex_unlock(&h->st_lock);
    return hist_compact_due(h, now);
}
