/* history: the training history on disk (include/history.h has the format
 * and the rules). Archiving reads the superseded log segments (wal_scan)
 * and appends chunks; compaction rewrites the file in hash-partitioned
 * passes; loading picks the sampled shoppers' records for training.
 *
 * Threads: archive, compact and load from one thread at a time (the
 * service's worker); the figures (st_lock) from any. */
#include "history.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
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

#define FILE_MAGIC "LTVDHIS1"
#define FILE_VERSION 1u
#define FILE_HEADER 16u
#define CHUNK_MAGIC 0x4b484348u          /* "HCHK" */
#define CHUNK_HEADER 24u
#define CHUNK_RECORDS 4096u              /* a chunk is flushed at the first log record boundary past this */
#define CHUNK_MAX ((size_t)1 << 20)      /* more records than this in a header: corrupt */
#define PASS_RECORDS ((uint64_t)2 << 20) /* records a compaction pass holds (24 B each: 48 MiB) */
#define HF_TOMBSTONE 1u

/* One record in memory; ord keeps file order through a sort. */
typedef struct HistRec {
    uint64_t key;
    uint32_t ts;
    float value;
    uint32_t ord;
    uint16_t quantity;
    uint8_t type, flags;
} HistRec;

struct History {
    HistoryConfig cfg;
    char path[600], tmp[620], hdir[560];
    int fd;                  /* O_RDWR; appends go to good_end */
    uint64_t good_end;       /* the file up to its last valid chunk */
    uint64_t bytes_at_compaction;
    pthread_mutex_t st_lock;
    HistoryStats st;
};

static void pack(unsigned char *p, const HistRec *r)
{
    memcpy(p, &r->key, 8);
    memcpy(p + 8, &r->ts, 4);
    memcpy(p + 12, &r->value, 4);
    memcpy(p + 16, &r->quantity, 2);
    p[18] = r->type;
    p[19] = r->flags;
}

static void unpack(HistRec *r, const unsigned char *p)
{
    memcpy(&r->key, p, 8);
    memcpy(&r->ts, p + 8, 4);
    memcpy(&r->value, p + 12, 4);
    memcpy(&r->quantity, p + 16, 2);
    r->type = p[18];
    r->flags = p[19];
    r->ord = 0;
}

/* A growing array of records (4096, then doubling). */
static HistRec *push_record(HistRec **recs, size_t *n, size_t *cap, const HistRec *r)
{
    if (*n == *cap) {
        size_t nc = *cap ? *cap * 2 : 4096;
        HistRec *nr = realloc(*recs, nc * sizeof *nr);
        if (!nr)
            return NULL;
        *recs = nr;
        *cap = nc;
    }
    (*recs)[*n] = *r;
    return &(*recs)[(*n)++];
}

/* ---- chunks --------------------------------------------------------------- */

/* Records waiting to be written as one chunk. */
typedef struct ChunkWriter {
    int fd;
    uint64_t offset;         /* where the next chunk goes */
    unsigned char *buf;      /* CHUNK_HEADER + cap records */
    size_t n, cap;
    uint64_t records, tombstones;
} ChunkWriter;

static int writer_init(ChunkWriter *w, int fd, uint64_t offset)
{
    memset(w, 0, sizeof *w);
    w->fd = fd;
    w->offset = offset;
    w->cap = CHUNK_RECORDS * 2;
    w->buf = malloc(CHUNK_HEADER + w->cap * HISTORY_RECORD_BYTES);
    return w->buf ? 0 : -ENOMEM;
}

static int writer_add(ChunkWriter *w, const HistRec *r)
{
    if (w->n == w->cap) {
        unsigned char *nb = realloc(w->buf, CHUNK_HEADER + w->cap * 2 * HISTORY_RECORD_BYTES);
        if (!nb)
            return -ENOMEM;
        w->buf = nb;
        w->cap *= 2;
    }
    pack(w->buf + CHUNK_HEADER + w->n++ * HISTORY_RECORD_BYTES, r);
    w->records++;
    w->tombstones += (r->flags & HF_TOMBSTONE) != 0;
    return 0;
}

/* Writes the pending records (maybe none: seq_hi alone is news) as a chunk
 * saying every log record up to seq_hi is in the file. */
static int writer_flush(ChunkWriter *w, uint64_t seq_hi)
{
    uint32_t magic = CHUNK_MAGIC, n = (uint32_t)w->n, zero = 0;
    memcpy(w->buf, &magic, 4);
    memcpy(w->buf + 4, &n, 4);
    memcpy(w->buf + 8, &seq_hi, 8);
    uint32_t crc = crc32_update(crc32_update(0, w->buf + 4, 12), w->buf + CHUNK_HEADER, w->n * HISTORY_RECORD_BYTES);
    memcpy(w->buf + 16, &crc, 4);
    memcpy(w->buf + 20, &zero, 4);
    size_t len = CHUNK_HEADER + w->n * HISTORY_RECORD_BYTES;
    if (lseek(w->fd, (off_t)w->offset, SEEK_SET) < 0)
        return -errno;
    int rc = write_all(w->fd, w->buf, len);
    if (rc)
        return rc;
    w->offset += len;
    w->n = 0;
    return 0;
}

typedef int (*ChunkFn)(void *arg, const HistRec *r, size_t n, uint64_t seq_hi);

/* Calls fn for each valid chunk of the file open at fd, from the header
 * on; stops at the first bad one. *end gets the end of the last valid
 * chunk, *seq_hi its seq_hi (0: none). 0, fn's nonzero return, or -errno. */
static int scan_chunks(int fd, ChunkFn fn, void *arg, uint64_t *end, uint64_t *seq_hi)
{
    *end = FILE_HEADER;
    *seq_hi = 0;
    struct stat st;
    if (fstat(fd, &st) != 0)
        return -errno;
    uint64_t size = (uint64_t)st.st_size, off = FILE_HEADER;
    size_t cap = 0;
    unsigned char *buf = NULL;
    HistRec *recs = NULL;
    int rc = 0;
    while (off + CHUNK_HEADER <= size) {
        unsigned char hdr[CHUNK_HEADER];
        if (pread(fd, hdr, CHUNK_HEADER, (off_t)off) != (ssize_t)CHUNK_HEADER)
            break;
        uint32_t magic, n, crc;
        uint64_t hi;
        memcpy(&magic, hdr, 4);
        memcpy(&n, hdr + 4, 4);
        memcpy(&hi, hdr + 8, 8);
        memcpy(&crc, hdr + 16, 4);
        size_t len = (size_t)n * HISTORY_RECORD_BYTES;
        if (magic != CHUNK_MAGIC || n > CHUNK_MAX || off + CHUNK_HEADER + len > size)
            break;
        if (n > cap) {
            free(buf);
            free(recs);
            cap = n;
            buf = malloc(len);
            recs = malloc(n * sizeof *recs);
            if (!buf || !recs) {
                rc = -ENOMEM;
                break;
            }
        }
        if (len && pread(fd, buf, len, (off_t)(off + CHUNK_HEADER)) != (ssize_t)len)
            break;
        uint32_t c = crc32_update(crc32_update(0, hdr + 4, 12), buf, len);
        if (c != crc)
            break;
        for (uint32_t i = 0; i < n; i++)
            unpack(&recs[i], buf + (size_t)i * HISTORY_RECORD_BYTES);
        if (fn && (rc = fn(arg, recs, n, hi)) != 0)
            break;
        off += CHUNK_HEADER + len;
        *end = off;
        *seq_hi = hi;
    }
    free(buf);
    free(recs);
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

static int write_header(int fd)
{
    unsigned char h[FILE_HEADER];
    uint32_t v = FILE_VERSION, rs = HISTORY_RECORD_BYTES;
    memcpy(h, FILE_MAGIC, 8);
    memcpy(h + 8, &v, 4);
    memcpy(h + 12, &rs, 4);
    return pwrite(fd, h, FILE_HEADER, 0) == (ssize_t)FILE_HEADER ? 0 : -EIO;
}

static bool header_ok(int fd)
{
    unsigned char h[FILE_HEADER];
    uint32_t v, rs;
    if (pread(fd, h, FILE_HEADER, 0) != (ssize_t)FILE_HEADER || memcmp(h, FILE_MAGIC, 8) != 0)
        return false;
    memcpy(&v, h + 8, 4);
    memcpy(&rs, h + 12, 4);
    return v == FILE_VERSION && rs == HISTORY_RECORD_BYTES;
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
    if (st.st_size > 0 && !header_ok(h->fd)) {
        log_msg(LOG_WARN, "training history file has a bad header: started afresh", "file=\"%s\" bytes=%lld",
                h->path, (long long)st.st_size);
        st.st_size = 0;
    }
    if (st.st_size == 0 && (ftruncate(h->fd, 0) != 0 || write_header(h->fd) != 0 || fsync(h->fd) != 0)) {
        snprintf(err, errlen, "cannot write %s: %s", h->path, strerror(errno));
        return -EIO;
    }
    uint64_t counts[2] = {0, 0}, end, seq_hi;
    int rc = scan_chunks(h->fd, count_chunk, counts, &end, &seq_hi);
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
    h->fd = -1;
    pthread_mutex_init(&h->st_lock, NULL);
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
    free(h);
}

void history_remove(const char *dir)
{
    char path[600];
    snprintf(path, sizeof path, "%s/history/%s", dir, HISTORY_FILE);
    if (unlink(path) == 0) {
        log_msg(LOG_INFO, "training history removed: train.history_events is 0", "file=\"%s\"", path);
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
        if (r[i].ts < newest)
            continue; /* late: not in order */
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
        HistRec *d = push_record(&w->recs, &w->n, &w->cap, &r[i]);
        if (!d)
            return -ENOMEM;
        d->key = (uint64_t)(k - w->keys);
        d->ord = w->ord++;
    }
    return 0;
}

int history_load(History *h, const uint64_t *keys, size_t nkeys, int64_t now, HistoryEvents *out)
{
    memset(out, 0, sizeof *out);
    LoadWalk w = {.keys = keys, .nkeys = nkeys};
    uint64_t end, seq_hi;
    int rc = scan_chunks(h->fd, load_chunk, &w, &end, &seq_hi);
    out->start = calloc(nkeys + 1, sizeof *out->start);
    out->events = malloc((w.n ? w.n : 1) * sizeof *out->events);
    if (rc || !out->start || !out->events) {
        free(w.recs);
        history_events_free(out);
        return rc ? rc : -ENOMEM;
    }
    if (w.n)
        qsort(w.recs, w.n, sizeof *w.recs, cmp_key_ord);
    int64_t min_ts = min_ts_of(h, now);
    size_t i = 0;
    for (size_t k = 0; k < nkeys; k++) {
        out->start[k] = out->nevents;
        size_t j = i;
        while (j < w.n && w.recs[j].key == k)
            j++;
        size_t kept = j > i ? select_records(w.recs + i, j - i, min_ts, h->cfg.max_events) : 0;
        for (size_t e = 0; e < kept; e++) {
            const HistRec *r = &w.recs[i + e];
            out->events[out->nevents++] = (HistoryEvent){(int64_t)r->ts, r->value, r->quantity, r->type};
        }
        i = j;
    }
    out->start[nkeys] = out->nevents;
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
    HistRec *recs;
    size_t n, cap;
} PassWalk;

static int pass_chunk(void *arg, const HistRec *r, size_t n, uint64_t seq_hi)
{
    (void)seq_hi;
    PassWalk *w = arg;
    for (size_t i = 0; i < n; i++) {
        if (r[i].key % w->parts != w->part)
            continue;
        HistRec *d = push_record(&w->recs, &w->n, &w->cap, &r[i]);
        if (!d)
            return -ENOMEM;
        d->ord = (uint32_t)(w->n - 1);
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
    int rc = writer_init(out, fd, FILE_HEADER); /* out owns fd from here, even on failure */
    if (!rc)
        rc = write_header(fd);
    if (rc)
        return rc;
    uint64_t parts = 1 + h->st.records / PASS_RECORDS, first_day = (uint64_t)min_ts / 86400;
    *shoppers = 0;
    for (uint64_t p = 0; p < parts && !rc; p++) {
        PassWalk w = {.parts = parts, .part = p};
        uint64_t end, seq_hi;
        rc = scan_chunks(h->fd, pass_chunk, &w, &end, &seq_hi);
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
                rc = writer_add(out, &w.recs[i + e]);
                if (!rc && out->n >= CHUNK_RECORDS)
                    rc = writer_flush(out, h->st.archived_seq);
            }
            i = j;
        }
        free(w.recs);
    }
    if (!rc)
        rc = writer_flush(out, h->st.archived_seq); /* maybe empty: archived_seq must survive */
    if (!rc && fsync(fd) != 0)
        rc = -errno;
    return rc;
}

/* Replaces the file by h->tmp (written by out). */
static int install_tmp(History *h, ChunkWriter *out)
{
    if (rename(h->tmp, h->path) != 0)
        return -errno;
    fsync_path(h->hdir, O_DIRECTORY);
    close(h->fd);
    h->fd = out->fd;
    out->fd = -1;
    h->good_end = out->offset;
    return 0;
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
        int64_t cut = (int64_t)((uint64_t)min_ts / 86400 + d) * 86400;
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
            rc = writer_add(w, &r);
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
                rc = writer_add(w, &r);
            }
            free(ev);
        }
    }
    if (!rc && w->n >= CHUNK_RECORDS)
        rc = writer_flush(w, seq);
    return rc;
}

int history_archive(History *h, const char *wal_dir, uint64_t below_seq, int64_t now)
{
    if (below_seq == 0 || below_seq - 1 <= h->st.archived_seq) /* nothing new; a compaction owed is retried */
        return h->st.tombstones > 0 ? history_compact(h, now) : 0;
    ChunkWriter w;
    int rc = writer_init(&w, h->fd, h->good_end);
    if (rc)
        return rc;
    ArchiveWalk a = {.w = &w};
    uint64_t last = 0;
    rc = wal_scan(wal_dir, h->st.archived_seq + 1, below_seq, archive_record, &a, &last);
    if (!rc && last > h->st.archived_seq)
        rc = writer_flush(&w, last);
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
    h->good_end = w.offset;
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
