/* history: the training history on disk (include/history.h has the format
 * and the rules). Archiving reads the superseded log segments (wal_scan)
 * and appends chunks; compaction rewrites the file in hash-partitioned
 * passes; loading picks the sampled shoppers' records for training.
 *
 * Threads: archive, compact and reset from one thread at a time (the
 * snapshot worker); load from any thread, beside them: it takes fd_lock
 * only to dup the fd and read the good end, and scans its own copy (a
 * compaction or reset swaps the fd under fd_lock; the old file stays
 * readable through the dup until it is closed). The figures (st_lock)
 * from any. */
#include "history.h"
#include "history_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "hash.h"
#include "log.h"
#include "store.h"
#include "util.h"
#include "wal.h"
#include "wal_record.h"

/* records a compaction pass holds (24 B each: 48 MiB); past it the pass
 * drops what it will not keep, and holds at most twice what it keeps */
#define PASS_RECORDS ((size_t)2 << 20)

struct History {
    HistoryConfig cfg;
    char path[600], tmp[620], hdir[560];
    int fd;                  /* O_RDWR (-1: a reset failed); appends go to good_end */
    uint64_t good_end;       /* the file up to its last valid chunk */
    pthread_mutex_t fd_lock; /* fd and good_end change under it (their one writer reads them without) */
    uint64_t bytes_at_compaction;
    pthread_mutex_t st_lock;
    HistoryStats st;
};

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

/* Opens h->path, checks it and cuts what follows its last valid chunk;
 * sets the figures. */
static int load_file(History *h, char *err, size_t errlen)
{
    h->fd = open(h->path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0640);
    if (h->fd < 0) {
        snprintf(err, errlen, "cannot open %s: %s", h->path, strerror(errno));
        return -errno;
    }
    struct stat st;
    if (fstat(h->fd, &st) != 0)
        return -errno;
    if (st.st_size > 0 && !hist_header_ok(h->fd)) {
        log_msg(LOG_WARN, "training history file has a bad header: started afresh", "file=\"%s\" bytes=%lld",
                h->path, (long long)st.st_size);
        st.st_size = 0;
    }
    if (st.st_size == 0 && (ftruncate(h->fd, 0) != 0 || hist_write_header(h->fd) != 0 || fsync(h->fd) != 0)) {
        snprintf(err, errlen, "cannot write %s: %s", h->path, strerror(errno));
        return -EIO;
    }
    uint64_t counts[2] = {0, 0}, end, seq_hi;
    int rc = hist_scan_chunks(h->fd, 0, count_chunk, counts, &end, &seq_hi);
    if (rc) {
        snprintf(err, errlen, "cannot read %s: %s", h->path, strerror(-rc));
        return rc;
    }
    if (fstat(h->fd, &st) != 0)
        return -errno;
    if ((uint64_t)st.st_size > end) {
        log_msg(LOG_WARN, "training history file has a torn or corrupt chunk: cut there", "file=\"%s\" offset=%"
                PRIu64 " bytes_dropped=%" PRIu64 " archived_seq=%" PRIu64, h->path, end,
                (uint64_t)st.st_size - end, seq_hi);
        if (ftruncate(h->fd, (off_t)end) != 0 || fsync(h->fd) != 0) {
            snprintf(err, errlen, "cannot cut %s: %s", h->path, strerror(errno));
            return -EIO;
        }
        h->st.cut_bytes += (uint64_t)st.st_size - end;
    }
    h->good_end = end;
    h->st.bytes = end;
    h->st.records = counts[0];
    h->st.tombstones = counts[1];
    h->st.archived_seq = seq_hi;
    h->bytes_at_compaction = end;
    return 0;
}

int history_open(History **out, const HistoryConfig *cfg, char *err, size_t errlen)
{
    *out = NULL;
    History *h = calloc(1, sizeof *h);
    if (!h)
        return -ENOMEM;
    h->cfg = *cfg;
    if (!h->cfg.pass_records)
        h->cfg.pass_records = PASS_RECORDS;
    h->fd = -1;
    pthread_mutex_init(&h->st_lock, NULL);
    pthread_mutex_init(&h->fd_lock, NULL);
    snprintf(h->hdir, sizeof h->hdir, "%s/history", cfg->dir);
    snprintf(h->path, sizeof h->path, "%s/%s", h->hdir, HISTORY_FILE);
    snprintf(h->tmp, sizeof h->tmp, "%s.tmp", h->path);
    int rc = 0;
    if (mkdir(h->hdir, 0750) != 0 && errno != EEXIST) {
        rc = -errno;
        snprintf(err, errlen, "cannot create %s: %s", h->hdir, strerror(errno));
    }
    unlink(h->tmp); /* a compaction cut short */
    if (!rc)
        rc = load_file(h, err, errlen);
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
    if (h->fd >= 0)
        close(h->fd);
    pthread_mutex_destroy(&h->st_lock);
    pthread_mutex_destroy(&h->fd_lock);
    free(h);
}

void history_remove(const char *dir)
{
    char path[600];
    snprintf(path, sizeof path, "%s/history/%s", dir, HISTORY_FILE);
    if (unlink(path) == 0) {
        log_msg(LOG_INFO, "training history removed", "file=\"%s\"", path);
        snprintf(path, sizeof path, "%s/history", dir);
        fsync_path(path, O_DIRECTORY);
    }
}

void history_stats(History *h, HistoryStats *out)
{
    pthread_mutex_lock(&h->st_lock);
    *out = h->st;
    pthread_mutex_unlock(&h->st_lock);
}

/* ---- the rules readers and compaction apply ------------------------------- */

/* Could archive have written r as an event (events_parse's bounds)? If not
 * (damage the CRC missed), readers and compaction leave it out. */
static bool event_valid(const HistRec *r)
{
    return r->flags == 0 && r->type < EV_NTYPES && r->quantity >= 1 && isfinite(r->value) && r->value >= 0 &&
           (double)r->value <= 1e12;
}

/* One shopper's records r (n, file order) in place: what is kept (the
 * header's rules). Returns how many. */
static size_t select_records(HistRec *r, size_t n, int64_t min_ts, int max_events)
{
    size_t start = 0;
    for (size_t i = 0; i < n; i++)
        if (r[i].flags & HF_TOMBSTONE)
            start = i + 1;
    size_t k = 0;
    uint32_t newest = 0;
    for (size_t i = start; i < n; i++) {
        if (!event_valid(&r[i]) || r[i].ts < newest)
            continue; /* not an event, or late: not in order */
        newest = r[i].ts;
        if ((int64_t)r[i].ts >= min_ts)
            r[k++] = r[i];
    }
    if (max_events > 0 && k > (size_t)max_events) {
        memmove(r, r + (k - (size_t)max_events), (size_t)max_events * sizeof *r);
        k = (size_t)max_events;
    }
    return k;
}

static int64_t min_ts_of(const History *h, int64_t now)
{
    int64_t m = now - (int64_t)h->cfg.max_days * 86400;
    return m > 0 ? m : 0;
}

static int cmp_u64_asc(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

static int cmp_key_ord(const void *a, const void *b)
{
    const HistRec *x = a, *y = b;
    if (x->key != y->key)
        return x->key < y->key ? -1 : 1;
    return (x->ord > y->ord) - (x->ord < y->ord);
}

static void set_stats(History *h, uint64_t records, uint64_t tombstones, uint64_t bytes)
{
    pthread_mutex_lock(&h->st_lock);
    h->st.records = records;
    h->st.tombstones = tombstones;
    h->st.bytes = bytes;
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

/* A copy of the fd (the caller closes it) and the good end it has, taken
 * under fd_lock. 0 or -errno. */
static int dup_fd(History *h, int *fd, uint64_t *good_end)
{
    pthread_mutex_lock(&h->fd_lock);
    *fd = h->fd >= 0 ? fcntl(h->fd, F_DUPFD_CLOEXEC, 0) : -1;
    int rc = *fd >= 0 ? 0 : h->fd >= 0 ? -errno : -EIO;
    *good_end = h->good_end;
    pthread_mutex_unlock(&h->fd_lock);
    return rc;
}

int history_load(History *h, const uint64_t *keys, size_t nkeys, int64_t now, HistoryEvents *out)
{
    memset(out, 0, sizeof *out);
    LoadWalk w = {.keys = keys, .nkeys = nkeys};
    uint64_t good_end, end, seq_hi;
    int fd;
    int rc = dup_fd(h, &fd, &good_end);
    if (!rc) {
        rc = hist_scan_chunks(fd, good_end, load_chunk, &w, &end, &seq_hi);
        close(fd);
    }
    out->start = calloc(nkeys + 1, sizeof *out->start);
    if (rc || !out->start) {
        free(w.recs);
        history_events_free(out);
        return rc ? rc : -ENOMEM;
    }
    if (w.n)
        qsort(w.recs, w.n, sizeof *w.recs, cmp_key_ord);
    /* each shopper's kept records move down to the front: the events
     * array holds the kept ones only */
    int64_t min_ts = min_ts_of(h, now);
    size_t i = 0, total = 0;
    for (size_t k = 0; k < nkeys; k++) {
        out->start[k] = total;
        size_t j = i;
        while (j < w.n && w.recs[j].key == k)
            j++;
        size_t kept = j > i ? select_records(w.recs + i, j - i, min_ts, h->cfg.max_events) : 0;
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

/* ---- compaction ------------------------------------------------------------ */

typedef struct PassWalk {
    uint64_t parts, part;
    int64_t min_ts;
    int max_events;
    HistRec *recs;
    size_t n, cap, prune_at;
    uint32_t ord;
} PassWalk;

/* Sorts the pass's records by shopper (file order within one) and keeps
 * what each shopper's would keep: the same as keeping from all of its
 * records at the end (a later tombstone still drops what is kept; the
 * newest kept stays kept, so a later event older than it stays late). */
static void pass_prune(PassWalk *w)
{
    qsort(w->recs, w->n, sizeof *w->recs, cmp_key_ord);
    size_t out = 0;
    for (size_t i = 0; i < w->n;) {
        size_t j = i;
        while (j < w->n && w->recs[j].key == w->recs[i].key)
            j++;
        size_t kept = select_records(w->recs + i, j - i, w->min_ts, w->max_events);
        memmove(w->recs + out, w->recs + i, kept * sizeof *w->recs);
        out += kept;
        i = j;
    }
    w->n = out;
}

static int pass_chunk(void *arg, const HistRec *r, size_t n, uint64_t seq_hi)
{
    (void)seq_hi;
    PassWalk *w = arg;
    for (size_t i = 0; i < n; i++) {
        if (r[i].key % w->parts != w->part)
            continue;
        if (w->n >= w->prune_at) {
            /* the pass's buffer at its bound (one shopper with many
             * records): what is dropped goes now, not at the end */
            pass_prune(w);
            w->prune_at = w->n * 2 > w->prune_at ? w->n * 2 : w->prune_at;
        }
        HistRec *d = hist_push_record(&w->recs, &w->n, &w->cap, &r[i]);
        if (!d)
            return -ENOMEM;
        d->ord = w->ord++;
    }
    return 0;
}

/* Rewrites the file into h->tmp keeping what readers keep with events from
 * min_ts on; kept records per day from min_ts's day into days (ndays, the
 * last one takes later days too). *shoppers gets the hashes kept. */
static int compact_into_tmp(History *h, int64_t min_ts, uint64_t *days, size_t ndays, ChunkWriter *out,
                            uint64_t *shoppers)
{
    int fd = open(h->tmp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0640);
    if (fd < 0)
        return -errno;
    int rc = hist_writer_init(out, fd, FILE_HEADER); /* out owns fd from here, even on failure */
    if (!rc)
        rc = hist_write_header(fd);
    if (rc)
        return rc;
    uint64_t parts = 1 + h->st.records / PASS_RECORDS, first_day = (uint64_t)min_ts / 86400;
    *shoppers = 0;
    for (uint64_t p = 0; p < parts && !rc; p++) {
        PassWalk w = {.parts = parts, .part = p, .min_ts = min_ts, .max_events = h->cfg.max_events,
                      .prune_at = h->cfg.pass_records};
        uint64_t end, seq_hi;
        rc = hist_scan_chunks(h->fd, h->good_end, pass_chunk, &w, &end, &seq_hi); /* short of it: -EIO */
        if (!rc && w.n)
            qsort(w.recs, w.n, sizeof *w.recs, cmp_key_ord);
        for (size_t i = 0; !rc && i < w.n;) {
            size_t j = i;
            while (j < w.n && w.recs[j].key == w.recs[i].key)
                j++;
            size_t kept = select_records(w.recs + i, j - i, min_ts, h->cfg.max_events);
            *shoppers += kept > 0;
            for (size_t e = 0; e < kept && !rc; e++) {
                uint64_t d = w.recs[i + e].ts / 86400u;
                days[d < first_day ? 0 : d - first_day < ndays ? d - first_day : ndays - 1]++;
                rc = hist_writer_add(out, &w.recs[i + e]);
                if (!rc && out->n >= CHUNK_RECORDS)
                    rc = hist_writer_flush(out, h->st.archived_seq);
            }
            i = j;
        }
        free(w.recs);
    }
    if (!rc)
        rc = hist_writer_flush(out, h->st.archived_seq); /* maybe empty: archived_seq must survive */
    if (!rc && fsync(fd) != 0)
        rc = -errno;
    return rc;
}

/* Makes fd (written to good_end) the history's, closing the old one. */
static void swap_fd(History *h, int fd, uint64_t good_end)
{
    pthread_mutex_lock(&h->fd_lock);
    int old = h->fd;
    h->fd = fd;
    h->good_end = good_end;
    pthread_mutex_unlock(&h->fd_lock);
    if (old >= 0)
        close(old);
}

/* Replaces the file by h->tmp (written by out). A directory fsync that
 * failed is an error (the old file could come back after a power cut),
 * but the new file is in use. */
static int install_tmp(History *h, ChunkWriter *out)
{
    if (rename(h->tmp, h->path) != 0)
        return -errno;
    int rc = fsync_path(h->hdir, O_DIRECTORY);
    swap_fd(h, out->fd, out->offset);
    out->fd = -1;
    return rc;
}

static int compact_once(History *h, int64_t min_ts, uint64_t *days, size_t ndays)
{
    ChunkWriter out = {.fd = -1};
    uint64_t shoppers = 0;
    int rc = compact_into_tmp(h, min_ts, days, ndays, &out, &shoppers);
    if (!rc)
        rc = install_tmp(h, &out);
    if (rc) {
        if (out.fd >= 0)
            close(out.fd);
        unlink(h->tmp);
    }
    free(out.buf);
    if (!rc) {
        set_stats(h, out.records, 0, h->good_end);
        pthread_mutex_lock(&h->st_lock);
        h->st.shoppers = shoppers;
        pthread_mutex_unlock(&h->st_lock);
    }
    return rc;
}

int history_compact(History *h, int64_t now)
{
    int64_t min_ts = min_ts_of(h, now);
    size_t ndays = (size_t)h->cfg.max_days + 2;
    uint64_t *days = calloc(ndays, sizeof *days);
    if (!days)
        return -ENOMEM;
    uint64_t before = h->st.bytes;
    int rc = compact_once(h, min_ts, days, ndays);
    if (!rc && h->st.bytes > h->cfg.max_bytes) {
        /* over the byte cap: the oldest days go until it fits (headers, 16 B
         * and 24 per 4096 records, fit in the twentieth left over) */
        uint64_t room = (h->cfg.max_bytes > 64 ? h->cfg.max_bytes - 64 : 0) / (HISTORY_RECORD_BYTES + 1), sum = 0;
        size_t d = ndays;
        while (d > 0 && sum + days[d - 1] <= room)
            sum += days[--d];
        int64_t cut = d == ndays ? (int64_t)UINT32_MAX + 1 /* the last day, with later ones, too big: all go */
                                 : (int64_t)((uint64_t)min_ts / 86400 + d) * 86400;
        memset(days, 0, ndays * sizeof *days);
        rc = compact_once(h, cut > min_ts ? cut : min_ts, days, ndays);
    }
    free(days);
    if (rc) {
        log_msg(LOG_WARN, "training history compaction failed", "file=\"%s\" error=\"%s\"", h->path, strerror(-rc));
        return rc;
    }
    h->bytes_at_compaction = h->st.bytes;
    pthread_mutex_lock(&h->st_lock);
    h->st.compactions++;
    h->st.last_compaction_unix = time(NULL);
    pthread_mutex_unlock(&h->st_lock);
    log_msg(LOG_INFO, "training history compacted", "bytes_before=%" PRIu64 " bytes=%" PRIu64 " records=%" PRIu64
            " shoppers=%" PRIu64, before, h->st.bytes, h->st.records, h->st.shoppers);
    return 0;
}

int history_reset(History *h)
{
    /* the old file's name goes first: whatever happens next, nothing on
     * disk keeps its records (a load's dup reads it until it closes) */
    int rc = unlink(h->path) == 0 || errno == ENOENT ? 0 : -errno;
    int fd = rc ? -1 : open(h->path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0640);
    if (!rc && fd < 0)
        rc = -errno;
    if (!rc && (rc = hist_write_header(fd)) == 0 && fsync(fd) != 0)
        rc = -errno;
    if (!rc)
        rc = fsync_path(h->hdir, O_DIRECTORY);
    if (rc && fd >= 0) {
        close(fd);
        fd = -1;
        unlink(h->path);
    }
    swap_fd(h, fd, FILE_HEADER);
    set_stats(h, 0, 0, FILE_HEADER);
    pthread_mutex_lock(&h->st_lock);
    h->st.shoppers = 0;
    pthread_mutex_unlock(&h->st_lock);
    h->bytes_at_compaction = FILE_HEADER;
    if (rc)
        log_msg(LOG_ERROR, "training history deleted but cannot be started afresh: retried at the next snapshot",
                "file=\"%s\" error=\"%s\"", h->path, strerror(-rc));
    else
        log_msg(LOG_WARN, "training history deleted and started afresh", "file=\"%s\"", h->path);
    return rc;
}

/* ---- archive ------------------------------------------------------------- */

typedef struct ArchiveWalk {
    ChunkWriter *w;
} ArchiveWalk;

static int archive_record(void *arg, uint8_t kind, uint64_t seq, const unsigned char *p, size_t len)
{
    ChunkWriter *w = ((ArchiveWalk *)arg)->w;
    int rc = 0;
    if (kind == WAL_REC_DELETE) {
        const char *id;
        size_t idlen;
        if (wal_record_decode_delete(p, len, &id, &idlen) == 0) {
            HistRec r = {.key = store_stable_hash_id(id, idlen), .flags = HF_TOMBSTONE};
            rc = hist_writer_add(w, &r);
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
                rc = hist_writer_add(w, &r);
            }
            free(ev);
        }
    }
    if (!rc && w->n >= CHUNK_RECORDS)
        rc = hist_writer_flush(w, seq);
    return rc;
}

int history_archive(History *h, const char *wal_dir, uint64_t below_seq, int64_t now)
{
    if (h->fd < 0 && history_reset(h) != 0)
        return -EIO; /* no file since a reset failed, and still none */
    if (below_seq == 0 || below_seq - 1 <= h->st.archived_seq) /* nothing new; a compaction owed is retried */
        return h->st.tombstones > 0 ? history_compact(h, now) : 0;
    ChunkWriter w;
    int rc = hist_writer_init(&w, h->fd, h->good_end);
    if (rc)
        return rc;
    ArchiveWalk a = {.w = &w};
    uint64_t last = 0;
    rc = wal_scan(wal_dir, h->st.archived_seq + 1, below_seq, archive_record, &a, &last);
    if (!rc && last > h->st.archived_seq)
        rc = hist_writer_flush(&w, last);
    if (!rc && fsync(h->fd) != 0)
        rc = -errno;
    uint64_t added = w.records, tomb = w.tombstones;
    if (rc) {
        /* what was written past the last good chunk goes: the file stays
         * a run of valid chunks for the next archive to extend */
        if (ftruncate(h->fd, (off_t)h->good_end) != 0 || fsync(h->fd) != 0)
            log_msg(LOG_WARN, "cannot cut the training history back", "file=\"%s\"", h->path);
        free(w.buf);
        log_msg(LOG_WARN, "training history archive failed", "file=\"%s\" error=\"%s\"", h->path, strerror(-rc));
        return rc;
    }
    free(w.buf);
    pthread_mutex_lock(&h->fd_lock);
    h->good_end = w.offset;
    pthread_mutex_unlock(&h->fd_lock);
    pthread_mutex_lock(&h->st_lock);
    if (last > h->st.archived_seq)
        h->st.archived_seq = last;
    h->st.records += added;
    h->st.tombstones += tomb;
    h->st.bytes = h->good_end;
    h->st.archives++;
    h->st.last_archive_unix = time(NULL);
    pthread_mutex_unlock(&h->st_lock);
    uint64_t floor = h->bytes_at_compaction > ((uint64_t)1 << 20) ? h->bytes_at_compaction : (uint64_t)1 << 20;
    if (h->st.tombstones > 0 || h->st.bytes > h->cfg.max_bytes || h->st.bytes > 2 * floor)
        return history_compact(h, now);
    return 0;
}
