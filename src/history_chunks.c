/* history_chunks: the training history's chunks on disk: packing records,
 * writing chunks, scanning a file's valid chunks (history_internal.h).
 *
 * Threads: none of its own; each call uses only what it is given. */
#include "history_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "hash.h"
#include "util.h"

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
HistRec *hist_push_record(HistRec **recs, size_t *n, size_t *cap, const HistRec *r)
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

int hist_writer_init(ChunkWriter *w, int fd, uint64_t offset)
{
    memset(w, 0, sizeof *w);
    w->fd = fd;
    w->offset = offset;
    w->cap = CHUNK_RECORDS * 2;
    w->buf = malloc(CHUNK_HEADER + w->cap * HISTORY_RECORD_BYTES);
    return w->buf ? 0 : -ENOMEM;
}

int hist_writer_add(ChunkWriter *w, const HistRec *r)
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
int hist_writer_flush(ChunkWriter *w, uint64_t seq_hi)
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

/* Reads n bytes at off: n, fewer at the end of the file, or -errno. */
static ssize_t pread_full(int fd, void *p, size_t n, uint64_t off)
{
    size_t got = 0;
    while (got < n) {
        ssize_t r = pread(fd, (char *)p + got, n - got, (off_t)(off + got));
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return -errno;
        if (r == 0)
            break;
        got += (size_t)r;
    }
    return (ssize_t)got;
}

int hist_scan_chunks(int fd, uint64_t limit, ChunkFn fn, void *arg, uint64_t *end, uint64_t *seq_hi)
{
    *end = FILE_HEADER;
    *seq_hi = 0;
    bool strict = limit != 0;
    if (!strict) {
        struct stat st;
        if (fstat(fd, &st) != 0)
            return -errno;
        limit = (uint64_t)st.st_size;
    }
    uint64_t off = FILE_HEADER;
    size_t cap = 0;
    unsigned char *buf = NULL;
    HistRec *recs = NULL;
    int rc = 0;
    while (off + CHUNK_HEADER <= limit) {
        unsigned char hdr[CHUNK_HEADER];
        ssize_t got = pread_full(fd, hdr, CHUNK_HEADER, off);
        if (got < 0)
            rc = (int)got;
        if (got != (ssize_t)CHUNK_HEADER)
            break;
        uint32_t magic, n, crc;
        uint64_t hi;
        memcpy(&magic, hdr, 4);
        memcpy(&n, hdr + 4, 4);
        memcpy(&hi, hdr + 8, 8);
        memcpy(&crc, hdr + 16, 4);
        size_t len = (size_t)n * HISTORY_RECORD_BYTES;
        if (magic != CHUNK_MAGIC || n > CHUNK_MAX || off + CHUNK_HEADER + len > limit)
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
        got = len ? pread_full(fd, buf, len, off + CHUNK_HEADER) : 0;
        if (got < 0)
            rc = (int)got;
        if (got != (ssize_t)len)
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
    if (!rc && strict && off != limit)
        rc = -EIO; /* short of what is known good: never taken as the end of the file */
    free(buf);
    free(recs);
    return rc;
}

int hist_write_header(int fd)
{
    unsigned char h[FILE_HEADER];
    uint32_t v = FILE_VERSION, rs = HISTORY_RECORD_BYTES;
    memcpy(h, FILE_MAGIC, 8);
    memcpy(h + 8, &v, 4);
    memcpy(h + 12, &rs, 4);
    return pwrite(fd, h, FILE_HEADER, 0) == (ssize_t)FILE_HEADER ? 0 : -EIO;
}

bool hist_header_ok(int fd)
{
    unsigned char h[FILE_HEADER];
    uint32_t v, rs;
    if (pread(fd, h, FILE_HEADER, 0) != (ssize_t)FILE_HEADER || memcmp(h, FILE_MAGIC, 8) != 0)
        return false;
    memcpy(&v, h + 8, 4);
    memcpy(&rs, h + 12, 4);
    return v == FILE_VERSION && rs == HISTORY_RECORD_BYTES;
}
