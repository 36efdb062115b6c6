/* wal_replay: reading the write-ahead log's segment files: the replay at
 * start (torn tails kept and cut, corruption in the middle refused) and a
 * read-only scan of the segments a snapshot supersedes (the training
 * history archives them before they are deleted, src/history.c). The live
 * log (appends, the flusher, rotation, removal) is wal.c's.
 *
 * Threads: wal_replay on main at start, before the log is opened;
 * wal_scan on the worker while the log is live (it reads only segments no
 * longer written to, and never changes a file). */
#include "wal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "hash.h"
#include "log.h"
#include "util.h"
#include "wal_internal.h"

void wal_seg_path(char *out, size_t n, const char *dir, uint64_t first)
{
    snprintf(out, n, "%s/wal-%016" PRIx64 ".log", dir, first);
}

int wal_sync_path(const char *path) { return fsync_path(path, O_NOFOLLOW); }

int wal_fsync_dir(const char *dir) { return fsync_path(dir, O_DIRECTORY); }

/* Sorted list of the first seqs of the segment files in dir. */
int wal_list_segments(const char *dir, uint64_t **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    DIR *d = opendir(dir);
    if (!d)
        return errno == ENOENT ? 0 : -errno;
    size_t cap = 16, k = 0;
    uint64_t *v = malloc(cap * sizeof *v);
    struct dirent *e;
    while (v && (e = readdir(d))) {
        uint64_t first;
        char tail[8];
        if (sscanf(e->d_name, "wal-%16" SCNx64 "%7s", &first, tail) == 2 && strcmp(tail, ".log") == 0 &&
            strlen(e->d_name) == 24) {
            if (k == cap) {
                uint64_t *nv = realloc(v, (cap *= 2) * sizeof *v);
                if (!nv)
                    break;
                v = nv;
            }
            v[k++] = first;
        }
    }
    closedir(d);
    if (!v)
        return -ENOMEM;
    for (size_t i = 1; i < k; i++) /* insertion sort: few files */
        for (size_t j = i; j > 0 && v[j] < v[j - 1]; j--) {
            uint64_t t = v[j];
            v[j] = v[j - 1];
            v[j - 1] = t;
        }
    *out = v;
    *n = k;
    return 0;
}

bool wal_is_torn_name(const char *name) { return strncmp(name, "wal-", 4) == 0 && strstr(name, ".log.torn-"); }

/* The torn-tail evidence files in dir. */
unsigned wal_count_torn(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return 0;
    unsigned n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        n += wal_is_torn_name(e->d_name);
    closedir(d);
    return n;
}
/* ---- replay -------------------------------------------------------------- */

/* Length of the valid record at p (n bytes available) with the given seq,
 * or 0 if there is none. */
static size_t valid_record(const unsigned char *p, size_t n, uint64_t want_seq, bool any_seq)
{
    if (n < REC_HEADER + REC_FIXED)
        return 0;
    uint32_t len, crc;
    memcpy(&len, p, 4);
    memcpy(&crc, p + 4, 4);
    if (len < REC_FIXED || len > n - REC_HEADER)
        return 0;
    if (crc32_update(0, p + REC_HEADER, len) != crc)
        return 0;
    uint64_t seq;
    memcpy(&seq, p + REC_HEADER, 8);
    if (!any_seq && seq != want_seq)
        return 0;
    return REC_HEADER + len;
}

/* Is there a valid record (any seq) anywhere in p[from, n)? Only called on
 * the error path: it tries every offset. */
static bool any_valid_after(const unsigned char *p, size_t from, size_t n)
{
    for (size_t o = from; o + REC_HEADER + REC_FIXED <= n; o++)
        if (p[o] | p[o + 1] | p[o + 2] | p[o + 3]) /* a zero length is no record */
            if (valid_record(p + o, n - o, 0, true))
                return true;
    return false;
}

static int read_file(const char *path, unsigned char **out, size_t *n)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    struct stat st;
    if (fstat(fd, &st) != 0) {
        close(fd);
        return -errno;
    }
    size_t size = (size_t)st.st_size, off = 0;
    unsigned char *buf = malloc(size ? size : 1);
    if (!buf) {
        close(fd);
        return -ENOMEM;
    }
    while (off < size) {
        ssize_t k = read(fd, buf + off, size - off);
        if (k <= 0) {
            if (k < 0 && errno == EINTR)
                continue;
            break;
        }
        off += (size_t)k;
    }
    close(fd);
    *out = buf;
    *n = off;
    return 0;
}

/* Keeps the torn tail data[0, n) of the segment at path as evidence, in
 * <path>.torn-<offset> (the first WAL_TORN_KEEP_MAX bytes; a new name if one
 * is there already), synced, unless WAL_TORN_KEEP_FILES are kept already
 * (-EDQUOT). The kept size, or -errno; *kept_path gets the file's name. */
static ssize_t keep_torn_tail(const char *dir, const char *path, size_t offset, const unsigned char *data, size_t n,
                              char *kept_path, size_t kp_len)
{
    snprintf(kept_path, kp_len, "%s.torn-%zu", path, offset);
    if (wal_count_torn(dir) >= WAL_TORN_KEEP_FILES)
        return -EDQUOT; /* a crash loop must not fill the disk with evidence */
    size_t keep = n < WAL_TORN_KEEP_MAX ? n : WAL_TORN_KEEP_MAX;
    int fd = -1;
    for (int k = 0; k < 10 && fd < 0; k++) {
        if (k == 0)
            snprintf(kept_path, kp_len, "%s.torn-%zu", path, offset);
        else
            snprintf(kept_path, kp_len, "%s.torn-%zu.%d", path, offset, k);
        fd = open(kept_path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0640);
        if (fd < 0 && errno != EEXIST)
            return -errno;
    }
    if (fd < 0)
        return -EEXIST;
    int rc = write_all(fd, data, keep);
    if (!rc && fsync(fd) != 0)
        rc = -errno;
    close(fd);
    if (rc) {
        unlink(kept_path);
        return rc;
    }
    return (ssize_t)keep;
}

/* Cuts the segment at path to `offset` bytes, durably: the file and its
 * directory are synced (a crash right after must not bring the tail back
 * behind records appended later). */
static int cut_segment(const char *dir, const char *path, size_t offset)
{
    int fd = open(path, O_WRONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    int rc = ftruncate(fd, (off_t)offset) != 0 || fsync(fd) != 0 ? -errno : 0;
    close(fd);
    return rc ? rc : wal_fsync_dir(dir);
}

int wal_replay(const char *dir, uint64_t from_seq, WalReplayFn fn, void *arg, WalReplayStats *st, char *err,
               size_t errlen)
{
    memset(st, 0, sizeof *st);
    st->last_seq = from_seq - 1;
    uint64_t *segs = NULL;
    size_t nseg = 0;
    int rc = wal_list_segments(dir, &segs, &nseg);
    if (rc) {
        snprintf(err, errlen, "cannot list %s: %s", dir, strerror(-rc));
        return rc;
    }
    /* start with the last segment whose first seq <= from_seq */
    size_t start = 0;
    for (size_t i = 0; i < nseg; i++)
        if (segs[i] <= from_seq)
            start = i;
    uint64_t expect = nseg ? segs[start] : from_seq;
    if (nseg && segs[start] > from_seq) {
        snprintf(err, errlen, "write-ahead log starts at record %" PRIu64 " but the snapshot needs %" PRIu64
                 " onwards: records are missing", segs[start], from_seq);
        free(segs);
        return -EBADMSG;
    }
    for (size_t i = start; i < nseg && !rc; i++) {
        char path[600];
        wal_seg_path(path, sizeof path, dir, segs[i]);
        if (i != start && segs[i] != expect) {
            snprintf(err, errlen, "%s starts at record %" PRIu64 ", expected %" PRIu64 ": a segment is missing",
                     path, segs[i], expect);
            rc = -EBADMSG;
            break;
        }
        expect = segs[i];
        unsigned char *data = NULL;
        size_t n = 0;
        if ((rc = read_file(path, &data, &n)) != 0) {
            snprintf(err, errlen, "cannot read %s: %s", path, strerror(-rc));
            break;
        }
        st->segments++;
        size_t off = 0;
        while (off < n) {
            size_t rl = valid_record(data + off, n - off, expect, false);
            if (!rl) {
                /* Torn tail, or corruption in the middle? Anything valid after
                 * this point (here or in a later segment) means the middle. */
                bool later = i + 1 < nseg;
                bool valid_after = later || any_valid_after(data, off + 1, n);
                if (valid_after) {
                    snprintf(err, errlen, "%s: corrupt record %" PRIu64 " at byte %zu with valid data after it; "
                             "refusing to skip it (restore the file or move it away to accept the loss)",
                             path, expect, off);
                    rc = -EBADMSG;
                } else {
                    st->truncated = true;
                    st->truncated_bytes = n - off;
                    char kept[700];
                    ssize_t k = keep_torn_tail(dir, path, off, data + off, n - off, kept, sizeof kept);
                    if (k < 0) /* evidence is worth a warning, not a refused start */
                        log_msg(LOG_WARN, "cannot keep the torn tail of the write-ahead log", "file=\"%s\" "
                                "error=\"%s\"", kept, strerror((int)-k));
                    else
                        st->torn_kept_bytes = (uint64_t)k;
                    if ((rc = cut_segment(dir, path, off)) != 0) {
                        snprintf(err, errlen, "cannot truncate %s: %s", path, strerror(-rc));
                    } else {
                        log_msg(LOG_WARN, "write-ahead log tail was torn or corrupt: truncated",
                                "file=\"%s\" offset=%zu bytes_dropped=%zu kept=\"%s\" kept_bytes=%zd", path, off,
                                n - off, k < 0 ? "" : kept, k < 0 ? (ssize_t)0 : k);
                    }
                }
                break;
            }
            uint32_t len;
            memcpy(&len, data + off, 4);
            if (expect >= from_seq) {
                rc = fn(arg, data[off + 16], expect, data + off + 17, len - REC_FIXED);
                if (rc) {
                    snprintf(err, errlen, "record %" PRIu64 " of %s could not be applied (%s)", expect, path,
                             strerror(-rc));
                    break;
                }
                st->records++;
            }
            st->last_seq = expect;
            expect++;
            off += rl;
        }
        free(data);
        /* records a killed process wrote but had not synced are replayed
         * from the page cache: sync them before new records are logged
         * behind them, or a power cut could leave a hole in the log */
        if (!rc && (rc = wal_sync_path(path)) != 0)
            snprintf(err, errlen, "cannot sync %s: %s", path, strerror(-rc));
    }
    /* A snapshot at from_seq is written after the log rotated to a segment
     * starting there (wal_rotate), and that segment is never removed while
     * the snapshot is the newest: if it is gone and no older segment ran
     * past from_seq, the records logged after the snapshot are lost. */
    if (!rc && from_seq > 1 && st->records == 0 && !(nseg && segs[start] == from_seq)) {
        char path[600];
        wal_seg_path(path, sizeof path, dir, from_seq);
        snprintf(err, errlen, "%s is missing: the snapshot covers the records below %" PRIu64 " and the log from "
                 "there on is gone (restore the file, or create it empty to accept the loss)", path, from_seq);
        rc = -EBADMSG;
    }
    if (!rc && st->last_seq + 1 < from_seq)
        st->last_seq = from_seq - 1;
    free(segs);
    return rc;
}

int wal_scan(const char *dir, uint64_t from_seq, uint64_t below_seq, WalReplayFn fn, void *arg, uint64_t *last)
{
    *last = from_seq - 1;
    uint64_t *segs = NULL;
    size_t nseg = 0;
    int rc = wal_list_segments(dir, &segs, &nseg);
    for (size_t i = 0; !rc && i + 1 < nseg; i++) {
        /* segment i holds [segs[i], segs[i+1]): whole below below_seq, and not all read already */
        if (segs[i + 1] > below_seq || segs[i + 1] <= from_seq)
            continue;
        char path[600];
        wal_seg_path(path, sizeof path, dir, segs[i]);
        unsigned char *data = NULL;
        size_t n = 0, off = 0;
        if ((rc = read_file(path, &data, &n)) != 0) {
            log_msg(LOG_WARN, "write-ahead log segment unreadable for the training history", "file=\"%s\" error=\"%s\"",
                    path, strerror(-rc));
            break;
        }
        /* every record up to the next segment's first: a bad one, or a
         * segment ending early, would leave a hole (maybe an erasure) */
        uint64_t expect = segs[i];
        while (off < n && !rc) {
            size_t rl = valid_record(data + off, n - off, expect, false);
            if (!rl)
                break;
            uint32_t len;
            memcpy(&len, data + off, 4);
            if (expect >= from_seq) {
                rc = fn(arg, data[off + 16], expect, data + off + 17, len - REC_FIXED);
                if (!rc)
                    *last = expect;
            }
            expect++;
            off += rl;
        }
        if (!rc && (off < n || expect != segs[i + 1])) {
            log_msg(LOG_WARN, "write-ahead log segment has a bad record or ends early: the training history cannot "
                    "take it", "file=\"%s\" offset=%zu record=%" PRIu64 " next_segment=%" PRIu64, path, off, expect,
                    segs[i + 1]);
            rc = -EBADMSG;
        }
        free(data);
    }
    free(segs);
    return rc;
}
