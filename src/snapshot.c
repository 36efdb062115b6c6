/* snapshot: writing, checking and loading snapshot files, and finding them
 * in storage.dir (include/snapshot.h has the layout and the thread rules:
 * the writer may run in a forked child). */
#include "snapshot.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "hash.h"
#include "util.h"

typedef struct SnapHeader {
    char magic[8];
    uint32_t format, hidden, ring_cap, slot_bytes;
    uint64_t seq;
    int64_t event_clock;
    uint64_t purchases_total, users, dedupe_keys;
    uint32_t reserved[2];
} SnapHeader;

/* Format 3 and later: after the header. */
typedef struct SnapKeys {
    uint64_t hash_key[2]; /* the instance's HashKey: k0, k1 */
    uint64_t dedupe_legacy; /* the oldest dedupe keys that are of the unkeyed hash64 */
} SnapKeys;

/* One dedupe window entry, format 3 and later (format <= 2: the key alone). */
typedef struct SnapDedupe {
    uint64_t key;
    int64_t arrival;
} SnapDedupe;

static size_t dedupe_entry_bytes(uint32_t format) { return format >= 3 ? sizeof(SnapDedupe) : sizeof(uint64_t); }

/* One of the adjuster's pairs: AdjPair from format 5; format 4 had no
 * network (AdjPair up to t, read with net = 0), formats 2 and 3 no serving
 * time either (its leading four fields, t = 0). One pending prediction:
 * PredLogEntry from format 5, before it without the network. The file
 * holds the structs as they are: a field added to either changes the
 * format, so their layouts are pinned here. */
static size_t pair_bytes(uint32_t format)
{
    return format >= 5 ? sizeof(AdjPair) : format == 4 ? offsetof(AdjPair, net) : offsetof(AdjPair, t);
}
static size_t entry_bytes(uint32_t format) { return format >= 5 ? sizeof(PredLogEntry) : offsetof(PredLogEntry, net_id); }
_Static_assert(sizeof(AdjPair) == 48 && offsetof(AdjPair, net) == 40 && offsetof(AdjPair, t) == 32,
               "AdjPair is snapshot format 5's pair");
_Static_assert(sizeof(PredLogEntry) == 56 && offsetof(PredLogEntry, net_id) == 48,
               "PredLogEntry is snapshot format 5's prediction log entry");

/* Sections larger than this are not believed (a corrupt count). */
#define SNAP_MAX_COUNT ((uint64_t)1 << 40)

/* ---- writing ------------------------------------------------------------ */

/* Buffered writes with a running CRC; err is sticky. */
typedef struct SnapWriter {
    int fd;
    uint32_t crc;
    size_t len, total;
    int err;
    unsigned char buf[1 << 16];
} SnapWriter;

static void sw_put(SnapWriter *w, const void *p, size_t n)
{
    const unsigned char *c = p;
    w->crc = crc32_update(w->crc, c, n);
    w->total += n;
    while (n && !w->err) {
        size_t k = sizeof w->buf - w->len < n ? sizeof w->buf - w->len : n;
        memcpy(w->buf + w->len, c, k);
        w->len += k;
        c += k;
        n -= k;
        if (w->len == sizeof w->buf) {
            w->err = write_all(w->fd, w->buf, w->len);
            w->len = 0;
        }
    }
}

static void sw_dedupe_key(void *arg, uint64_t key, int64_t arrival)
{
    SnapDedupe e = {key, arrival};
    sw_put(arg, &e, sizeof e);
}
static void sw_predlog_entry(void *arg, const PredLogEntry *e) { sw_put(arg, e, sizeof *e); }

struct SnapshotScratch {
    SnapWriter w;
    AdjPair *pairs; /* (npairs,): the prediction log's matured pairs */
    size_t npairs;
};

SnapshotScratch *snapshot_scratch_new(const SnapshotTables *t)
{
    SnapshotScratch *sc = calloc(1, sizeof *sc);
    if (!sc)
        return NULL;
    PredLogStats st = {0};
    if (t->predlog)
        predlog_stats(t->predlog, &st);
    if (st.pairs && !(sc->pairs = malloc(st.pairs * sizeof *sc->pairs))) {
        free(sc);
        return NULL;
    }
    sc->npairs = st.pairs;
    return sc;
}

void snapshot_scratch_free(SnapshotScratch *sc)
{
    if (!sc)
        return;
    free(sc->pairs);
    free(sc);
}

/* The prediction log: pending entries, then matured pairs (none without a
 * log), the pairs copied into the scratch's array. */
static void sw_predlog(SnapWriter *w, PredLog *l, AdjPair *pairs, size_t cap)
{
    PredLogStats st = {0};
    if (l)
        predlog_stats(l, &st);
    size_t n = st.pairs < cap ? st.pairs : cap; /* the same, under the lock hold that made the scratch */
    uint64_t counts[2] = {st.pending, n};
    sw_put(w, counts, sizeof counts);
    if (l)
        predlog_foreach_entry(l, sw_predlog_entry, w);
    if (n) {
        predlog_pairs(l, pairs, n);
        sw_put(w, pairs, n * sizeof *pairs);
    }
}

int snapshot_write(const char *path, const SnapshotTables *t, const SnapshotInfo *info, size_t *bytes)
{
    SnapshotScratch *sc = snapshot_scratch_new(t);
    if (!sc)
        return -ENOMEM;
    int rc = snapshot_write_with(path, t, info, sc, bytes);
    snapshot_scratch_free(sc);
    return rc;
}

int snapshot_write_with(const char *path, const SnapshotTables *t, const SnapshotInfo *info, SnapshotScratch *sc,
                        size_t *bytes)
{
    SnapWriter *w = &sc->w;
    /* A temp name is predictable: whatever is there (a stale file, a link
     * planted to redirect the write) goes, and the file is made afresh. */
    if (unlink(path) != 0 && errno != ENOENT)
        return -errno;
    w->fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0640);
    if (w->fd < 0)
        return -errno;
    w->crc = 0;
    w->len = w->total = 0;
    w->err = 0;
    const StoreConfig *cfg = store_config(t->store);
    SnapHeader h = {
        .magic = "LTVDSNAP",
        .format = SNAPSHOT_FORMAT,
        .hidden = (uint32_t)cfg->hidden,
        .ring_cap = (uint32_t)cfg->ring_cap,
        .slot_bytes = (uint32_t)store_slot_bytes(t->store),
        .seq = info->seq,
        .event_clock = info->event_clock,
        .purchases_total = info->purchases_total,
        .users = store_count(t->store),
        .dedupe_keys = dedupe_count(t->dedupe),
    };
    sw_put(w, &h, sizeof h);
    const HashKey *key = store_key(t->store);
    SnapKeys keys = {{key->k0, key->k1}, dedupe_legacy_count(t->dedupe)};
    sw_put(w, &keys, sizeof keys);
    size_t high = store_slot_high(t->store);
    for (size_t i = 0; i < high; i++) {
        UserState *u = store_slot_at(t->store, i);
        if (u)
            sw_put(w, u, h.slot_bytes);
    }
    dedupe_foreach(t->dedupe, sw_dedupe_key, w);
    sw_predlog(w, t->predlog, sc->pairs, sc->npairs);
    uint32_t crc = w->crc;
    sw_put(w, &crc, 4);
    if (!w->err) /* the last, partial buffer */
        w->err = write_all(w->fd, w->buf, w->len);
    if (!w->err && fsync(w->fd) != 0)
        w->err = -errno;
    close(w->fd);
    *bytes = w->total;
    return w->err;
}

size_t snapshot_size_estimate(const SnapshotTables *t)
{
    PredLogStats st = {0};
    if (t->predlog)
        predlog_stats(t->predlog, &st);
    return sizeof(SnapHeader) + sizeof(SnapKeys) + store_count(t->store) * store_slot_bytes(t->store) +
           dedupe_count(t->dedupe) * dedupe_entry_bytes(SNAPSHOT_FORMAT) + 2 * sizeof(uint64_t) +
           st.pending * entry_bytes(SNAPSHOT_FORMAT) + st.pairs * pair_bytes(SNAPSHOT_FORMAT) + 4;
}

/* ---- reading ------------------------------------------------------------ */

static int read_exact(int fd, void *p, size_t n)
{
    unsigned char *c = p;
    while (n) {
        ssize_t r = read(fd, c, n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -EBADMSG;
        c += r;
        n -= (size_t)r;
    }
    return 0;
}

/* Buffered sequential reads of a snapshot being loaded: one read(2) per
 * READ_BUF bytes rather than one per shopper (a 10M-shopper file holds 10M
 * slots: docs/PERFORMANCE.md, "Ten million shoppers"). */
#define READ_BUF ((size_t)1 << 20)

/* The read buffer for fd: READ_BUF, or the file's size if smaller (at
 * least 4 KiB), so a small file does not cost a 1 MiB allocation. */
static size_t read_buf_size(int fd)
{
    struct stat st;
    if (fstat(fd, &st) != 0 || st.st_size <= 0 || (uint64_t)st.st_size >= READ_BUF)
        return READ_BUF;
    return st.st_size < 4096 ? 4096 : (size_t)st.st_size;
}

typedef struct SnapReader {
    int fd;
    unsigned char *buf; /* (cap,) */
    size_t cap, len, pos;
} SnapReader;

/* As read_exact, through the reader's buffer. 0 or -EBADMSG. */
static int sr_read(SnapReader *r, void *p, size_t n)
{
    unsigned char *c = p;
    while (n) {
        if (r->pos == r->len) {
            ssize_t k = read(r->fd, r->buf, r->cap);
            if (k < 0 && errno == EINTR)
                continue;
            if (k <= 0)
                return -EBADMSG;
            r->len = (size_t)k;
            r->pos = 0;
        }
        size_t take = r->len - r->pos < n ? r->len - r->pos : n;
        memcpy(c, r->buf + r->pos, take);
        r->pos += take;
        c += take;
        n -= take;
    }
    return 0;
}

/* Reads n bytes of fd into the running crc, through buf (cap,). */
static int crc_section(int fd, uint64_t n, uint32_t *crc, unsigned char *buf, size_t cap)
{
    while (n) {
        size_t k = n < cap ? (size_t)n : cap;
        int rc = read_exact(fd, buf, k);
        if (rc)
            return rc;
        *crc = crc32_update(*crc, buf, k);
        n -= k;
    }
    return 0;
}

static void info_from(SnapshotInfo *info, const SnapHeader *h)
{
    *info = (SnapshotInfo){
        .seq = h->seq,
        .event_clock = h->event_clock,
        .purchases_total = h->purchases_total,
        .users = h->users,
    };
}

/* Opens path and reads its header: the open fd, or -errno / -EBADMSG with
 * err set. */
static int open_snapshot(const char *path, SnapHeader *h, char *err, size_t errlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        snprintf(err, errlen, "%s: %s", path, strerror(e));
        return -e;
    }
    if (read_exact(fd, h, sizeof *h) || memcmp(h->magic, "LTVDSNAP", 8) != 0 || h->format < 1 ||
        h->format > SNAPSHOT_FORMAT) {
        snprintf(err, errlen, "%s: not an ltvd snapshot of format 1 to %u", path, SNAPSHOT_FORMAT);
        close(fd);
        return -EBADMSG;
    }
    return fd;
}

int snapshot_check(const char *path, const Store *shape, SnapshotInfo *info, char *err, size_t errlen)
{
    SnapHeader h;
    int fd = open_snapshot(path, &h, err, errlen);
    if (fd < 0)
        return fd;
    int rc;
    const StoreConfig *sc = store_config(shape);
    if (h.hidden != (uint32_t)sc->hidden || h.ring_cap != (uint32_t)sc->ring_cap ||
        h.slot_bytes != store_slot_bytes(shape)) {
        snprintf(err, errlen, "%s was written with model.hidden_size=%u model.recent_events=%u; this config has %d "
                 "and %d", path, h.hidden, h.ring_cap, sc->hidden, sc->ring_cap);
        close(fd);
        return -EINVAL;
    }
    size_t cap = read_buf_size(fd);
    unsigned char *buf = malloc(cap);
    posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
    if (!buf) {
        close(fd);
        snprintf(err, errlen, "%s: out of memory", path);
        return -ENOMEM;
    }
    uint32_t crc = crc32_update(0, &h, sizeof h);
    uint64_t head = h.format >= 3 ? sizeof(SnapKeys) : 0;
    rc = h.users > SNAP_MAX_COUNT || h.dedupe_keys > SNAP_MAX_COUNT
             ? -EBADMSG
             : crc_section(fd, head + h.users * h.slot_bytes + h.dedupe_keys * dedupe_entry_bytes(h.format), &crc,
                           buf, cap);
    uint64_t counts[2] = {0, 0};
    if (!rc && h.format >= 2 && (rc = read_exact(fd, counts, sizeof counts)) == 0) {
        crc = crc32_update(crc, counts, sizeof counts);
        if (counts[0] > SNAP_MAX_COUNT || counts[1] > SNAP_MAX_COUNT)
            rc = -EBADMSG;
        else
            rc = crc_section(fd, counts[0] * entry_bytes(h.format) + counts[1] * pair_bytes(h.format), &crc, buf,
                             cap);
    }
    uint32_t stored = 0;
    if (!rc)
        rc = read_exact(fd, &stored, 4);
    free(buf);
    close(fd);
    if (rc || stored != crc) {
        snprintf(err, errlen, "%s: %s", path, rc ? "truncated" : "checksum mismatch");
        return -EBADMSG;
    }
    info_from(info, &h);
    return 0;
}

/* A format <= 2 file's shopper hash (the unkeyed one) and the same
 * shopper's hash under this instance's key: its pending predictions are
 * keyed by the first and must be by the second. */
typedef struct HashPair {
    uint64_t old, now;
} HashPair;

static int cmp_pair(const void *a, const void *b)
{
    uint64_t x = ((const HashPair *)a)->old, y = ((const HashPair *)b)->old;
    return x < y ? -1 : x > y;
}

/* Shoppers are read and inserted a group at a time: the group's index
 * entries are prefetched first, so their cache misses overlap (at 10M
 * shoppers the index is 128 MB and each insert's probe a miss:
 * docs/PERFORMANCE.md, "Ten million shoppers"). */
#define LOAD_GROUP 16

/* Reads the shoppers into the store; for an old format (remap not NULL,
 * (h->users,)) also the pairs of hashes, sorted. A short read sets *where;
 * any other failure writes err. */
static int load_users(SnapReader *r, const SnapHeader *h, const SnapshotTables *t, HashPair *remap, const char *path,
                      const char **where, char *err, size_t errlen)
{
    unsigned char *group = malloc((size_t)LOAD_GROUP * h->slot_bytes);
    if (!group) {
        snprintf(err, errlen, "%s: out of memory for %d %u-byte slots", path, LOAD_GROUP, h->slot_bytes);
        return -ENOMEM;
    }
    int rc = 0;
    size_t n = 0;
    for (uint64_t i = 0; i < h->users && !rc;) {
        unsigned k = h->users - i < LOAD_GROUP ? (unsigned)(h->users - i) : LOAD_GROUP;
        if ((rc = sr_read(r, group, (size_t)k * h->slot_bytes)) != 0) {
            *where = "the shoppers";
            break;
        }
        for (unsigned j = 0; j < k; j++)
            store_prefetch(t->store, (const UserState *)(group + (size_t)j * h->slot_bytes));
        for (unsigned j = 0; j < k && !rc; j++, i++) {
            const UserState *slot = (const UserState *)(group + (size_t)j * h->slot_bytes);
            rc = store_restore(t->store, slot);
            if (rc == -ENOSPC)
                snprintf(err, errlen, "%s holds %" PRIu64 " shoppers, more than limits.max_users=%zu", path,
                         h->users, store_config(t->store)->max_users);
            else if (rc == -EEXIST)
                snprintf(err, errlen, "%s: shopper %" PRIu64 " of %" PRIu64 " is already loaded (the file or the "
                         "store is not what it should be)", path, i + 1, h->users);
            else if (rc)
                snprintf(err, errlen, "%s: shopper %" PRIu64 " of %" PRIu64 " cannot be restored: %s", path, i + 1,
                         h->users, rc == -EINVAL ? "its id is empty or too long" : strerror(-rc));
            if (!rc && remap)
                remap[n++] = (HashPair){slot->hash, store_hash(t->store, slot->id, slot->id_len)};
        }
    }
    if (remap)
        qsort(remap, n, sizeof *remap, cmp_pair);
    free(group);
    return rc;
}

static int load_dedupe(SnapReader *r, const SnapHeader *h, const SnapKeys *keys, const SnapshotTables *t)
{
    int rc = 0;
    for (uint64_t i = 0; i < h->dedupe_keys && !rc; i++) {
        SnapDedupe e = {0, t->load_time}; /* format <= 2: no arrival times; now it is */
        if ((rc = sr_read(r, &e, dedupe_entry_bytes(h->format))) == 0)
            dedupe_restore(t->dedupe, e.key, e.arrival, i < keys->dedupe_legacy);
    }
    return rc;
}

int snapshot_load(const char *path, const SnapshotTables *t, SnapshotInfo *info, char *err, size_t errlen)
{
    SnapHeader h;
    int fd = open_snapshot(path, &h, err, errlen);
    if (fd < 0)
        return fd;
    SnapReader rd = {.fd = fd, .cap = read_buf_size(fd)};
    rd.buf = malloc(rd.cap);
    if (!rd.buf) {
        close(fd);
        snprintf(err, errlen, "%s: out of memory", path);
        return -ENOMEM;
    }
    posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
    int rc = 0;
    const char *where = NULL; /* the section a short read happened in */
    /* format <= 2: every dedupe key is of the old hash; this instance's
     * key (drawn at start) stays, and the index is built under it */
    SnapKeys keys = {{0, 0}, h.dedupe_keys};
    HashPair *remap = NULL;
    if (h.format >= 3) {
        HashKey k;
        if ((rc = sr_read(&rd, &keys, sizeof keys)) != 0) {
            where = "the hash key";
        } else {
            k = (HashKey){keys.hash_key[0], keys.hash_key[1]};
            if (store_set_key(t->store, &k) || dedupe_set_key(t->dedupe, &k)) {
                rc = -EBUSY;
                snprintf(err, errlen, "%s: loaded into tables that are not empty", path);
            }
        }
    } else if (t->predlog && h.users > 0 && !(remap = malloc(h.users * sizeof *remap))) {
        rc = -ENOMEM;
        snprintf(err, errlen, "%s: out of memory for re-keying %" PRIu64 " shoppers", path, h.users);
    }
    if (!rc)
        rc = load_users(&rd, &h, t, remap, path, &where, err, errlen);
    if (!rc && (rc = load_dedupe(&rd, &h, &keys, t)) != 0)
        where = "the event_id window";
    uint64_t counts[2] = {0, 0};
    if (!rc && h.format >= 2 && (rc = sr_read(&rd, counts, sizeof counts)) != 0)
        where = "the prediction log's counts";
    for (uint64_t i = 0; i < counts[0] && !rc; i++) { /* kept only while the adjuster is on */
        PredLogEntry e = {0};
        if ((rc = sr_read(&rd, &e, entry_bytes(h.format))) != 0)
            where = "the prediction log";
        if (rc || !t->predlog)
            continue;
        if (remap) {
            HashPair want = {e.key, 0};
            const HashPair *p = bsearch(&want, remap, h.users, sizeof *remap, cmp_pair);
            if (!p)
                continue; /* its shopper is not in the file */
            e.key = p->now;
        }
        predlog_restore_entry(t->predlog, &e);
    }
    for (uint64_t i = 0; i < counts[1] && !rc; i++) {
        AdjPair p = {0};
        if ((rc = sr_read(&rd, &p, pair_bytes(h.format))) == 0 && t->predlog)
            predlog_restore_pair(t->predlog, &p);
        else if (rc)
            where = "the adjuster's pairs";
    }
    free(remap);
    free(rd.buf);
    close(fd);
    if (where) /* read_exact: end of file or a read error */
        snprintf(err, errlen, "%s: truncated or unreadable in %s (header: %" PRIu64 " shoppers, %" PRIu64
                 " event_ids)", path, where, h.users, h.dedupe_keys);
    if (!rc)
        info_from(info, &h);
    return rc;
}

/* ---- finding them ------------------------------------------------------- */

size_t snapshot_list(const char *dir, uint64_t *seqs, size_t cap)
{
    DIR *d = opendir(dir);
    if (!d)
        return 0;
    size_t n = 0;
    struct dirent *e;
    while ((e = readdir(d)) && n < cap) {
        uint64_t seq;
        char tail[8];
        if (strlen(e->d_name) == 30 && sscanf(e->d_name, "snapshot-%16" SCNx64 "%7s", &seq, tail) == 2 &&
            strcmp(tail, ".snap") == 0) {
            seqs[n++] = seq;
        } else if (strstr(e->d_name, ".snap.tmp")) {
            char p[PATH_MAX];
            snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
            unlink(p); /* left by a snapshot that did not finish */
        }
    }
    closedir(d);
    for (size_t i = 1; i < n; i++)
        for (size_t j = i; j > 0 && seqs[j] > seqs[j - 1]; j--) {
            uint64_t t = seqs[j];
            seqs[j] = seqs[j - 1];
            seqs[j - 1] = t;
        }
    return n;
}

void snapshot_path(char *out, size_t n, const char *dir, uint64_t seq, bool tmp)
{
    snprintf(out, n, "%s/snapshot-%016" PRIx64 ".snap%s", dir, seq, tmp ? ".tmp" : "");
}
