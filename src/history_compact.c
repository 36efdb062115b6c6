/* history_compact: the rules the training history's readers apply to a
 * shopper's records, and compaction, which rewrites one part keeping only
 * what readers keep (include/history.h has the rules and when a part is
 * compacted; history.c the rest of the history).
 *
 * Threads: compaction on the history's one writer thread (the snapshot
 * worker), beside loads on other threads: a part's new file is swapped in
 * under its fd_lock (hist_swap_fd); the rules are pure. */
#include "history_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "events.h"
#include "log.h"
#include "util.h"

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
size_t hist_select_records(HistRec *r, size_t n, int64_t min_ts, int max_events)
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

int64_t hist_min_ts(const History *h, int64_t now)
{
    int64_t m = now - (int64_t)h->cfg.max_days * 86400;
    return m > 0 ? m : 0;
}

int hist_cmp_key_ord(const void *a, const void *b)
{
    const HistRec *x = a, *y = b;
    if (x->key != y->key)
        return x->key < y->key ? -1 : 1;
    return (x->ord > y->ord) - (x->ord < y->ord);
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
    qsort(w->recs, w->n, sizeof *w->recs, hist_cmp_key_ord);
    size_t out = 0;
    for (size_t i = 0; i < w->n;) {
        size_t j = i;
        while (j < w->n && w->recs[j].key == w->recs[i].key)
            j++;
        size_t kept = hist_select_records(w->recs + i, j - i, w->min_ts, w->max_events);
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

/* Rewrites the part into its tmp file keeping what readers keep with
 * events from min_ts on; kept records per day from min_ts's day into days
 * (ndays, the last one takes later days too). *shoppers gets the hashes
 * kept. */
static int compact_into_tmp(History *h, HistPart *p, int64_t min_ts, uint64_t *days, size_t ndays,
                            ChunkWriter *out, uint64_t *shoppers)
{
    int fd = open(p->tmp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0640);
    if (fd < 0)
        return -errno;
    int rc = hist_writer_init(out, fd, FILE_HEADER); /* out owns fd from here, even on failure */
    if (!rc)
        rc = hist_write_header(fd);
    if (rc)
        return rc;
    uint64_t passes = 1 + p->records / PASS_RECORDS, first_day = (uint64_t)min_ts / 86400;
    *shoppers = 0;
    for (uint64_t k = 0; k < passes && !rc; k++) {
        PassWalk w = {.parts = passes, .part = k, .min_ts = min_ts, .max_events = h->cfg.max_events,
                      .prune_at = h->cfg.pass_records};
        uint64_t end, seq_hi;
        rc = hist_scan_chunks(p->fd, p->good_end, pass_chunk, &w, &end, &seq_hi); /* short of it: -EIO */
        if (!rc && w.n)
            qsort(w.recs, w.n, sizeof *w.recs, hist_cmp_key_ord);
        for (size_t i = 0; !rc && i < w.n;) {
            size_t j = i;
            while (j < w.n && w.recs[j].key == w.recs[i].key)
                j++;
            size_t kept = hist_select_records(w.recs + i, j - i, min_ts, h->cfg.max_events);
            *shoppers += kept > 0;
            for (size_t e = 0; e < kept && !rc; e++) {
                uint64_t d = w.recs[i + e].ts / 86400u;
                days[d < first_day ? 0 : d - first_day < ndays ? d - first_day : ndays - 1]++;
                rc = hist_writer_add(out, &w.recs[i + e]);
                if (!rc && out->n >= CHUNK_RECORDS)
                    rc = hist_writer_flush(out, p->archived_seq);
            }
            i = j;
        }
        free(w.recs);
    }
    if (!rc)
        rc = hist_writer_flush(out, p->archived_seq); /* maybe empty: archived_seq must survive */
    if (!rc && fsync(fd) != 0)
        rc = -errno;
    return rc;
}

/* Replaces the part's file by its tmp (written by out). A directory fsync
 * that failed is an error (the old file could come back after a power
 * cut), but the new file is in use. */
static int install_tmp(History *h, HistPart *p, ChunkWriter *out)
{
    if (rename(p->tmp, p->path) != 0)
        return -errno;
    int rc = fsync_path(h->hdir, O_DIRECTORY);
    hist_swap_fd(p, out->fd, out->offset);
    out->fd = -1;
    return rc;
}

static int compact_once(History *h, HistPart *p, int64_t min_ts, uint64_t *days, size_t ndays)
{
    ChunkWriter out = {.fd = -1};
    uint64_t shoppers = 0;
    int rc = compact_into_tmp(h, p, min_ts, days, ndays, &out, &shoppers);
    if (!rc)
        rc = install_tmp(h, p, &out);
    if (rc) {
        if (out.fd >= 0)
            close(out.fd);
        unlink(p->tmp);
    }
    free(out.buf);
    if (!rc) {
        atomic_store(&p->damaged, false); /* read whole: a load's error was not the file's */
        hist_set_stats(h, p, out.records, 0, p->good_end);
        pthread_mutex_lock(&h->st_lock);
        p->shoppers = shoppers;
        p->compacted = true;
        pthread_mutex_unlock(&h->st_lock);
    }
    return rc;
}

/* Compacts one part; its byte cap is max_bytes / parts (the hash spreads
 * the shoppers evenly). */
static int compact_part(History *h, HistPart *p, int64_t now)
{
    int64_t min_ts = hist_min_ts(h, now);
    size_t ndays = (size_t)h->cfg.max_days + 2;
    uint64_t *days = calloc(ndays, sizeof *days);
    if (!days)
        return -ENOMEM;
    uint64_t before = p->bytes, cap = h->cfg.max_bytes / h->nparts;
    int rc = compact_once(h, p, min_ts, days, ndays);
    if (!rc && p->bytes > cap) {
        /* over the byte cap: the oldest days go until it fits (headers, 16 B
         * and 24 per 4096 records, fit in the twentieth left over) */
        uint64_t room = (cap > 64 ? cap - 64 : 0) / (HISTORY_RECORD_BYTES + 1), sum = 0;
        size_t d = ndays;
        while (d > 0 && sum + days[d - 1] <= room)
            sum += days[--d];
        int64_t cut = d == ndays ? (int64_t)UINT32_MAX + 1 /* the last day, with later ones, too big: all go */
                                 : (int64_t)((uint64_t)min_ts / 86400 + d) * 86400;
        memset(days, 0, ndays * sizeof *days);
        rc = compact_once(h, p, cut > min_ts ? cut : min_ts, days, ndays);
    }
    free(days);
    if (rc) {
        log_msg(LOG_WARN, "training history compaction failed", "file=\"%s\" error=\"%s\"", p->path, strerror(-rc));
        return rc;
    }
    p->bytes_at_compaction = p->bytes;
    pthread_mutex_lock(&h->st_lock);
    h->st.compactions++;
    h->st.last_compaction_unix = time(NULL);
    pthread_mutex_unlock(&h->st_lock);
    log_msg(LOG_INFO, "training history compacted", "file=\"%s\" bytes_before=%" PRIu64 " bytes=%" PRIu64
            " records=%" PRIu64 " shoppers=%" PRIu64, p->path, before, p->bytes, p->records, p->shoppers);
    return 0;
}

/* Is the part's compaction due (include/history.h)? */
static bool compaction_due(const History *h, const HistPart *p)
{
    uint64_t floor = p->bytes_at_compaction > ((uint64_t)1 << 20) ? p->bytes_at_compaction : (uint64_t)1 << 20;
    return p->tombstones > 0 || p->bytes > h->cfg.max_bytes / h->nparts || p->bytes > 2 * floor ||
           atomic_load(&p->damaged);
}

int history_compact(History *h, int64_t now)
{
    for (unsigned i = 0; i < h->nparts; i++) {
        int rc = compact_part(h, &h->parts[i], now);
        if (rc)
            return rc;
    }
    return 0;
}

/* Compacts the parts whose compaction is due. */
int hist_compact_due(History *h, int64_t now)
{
    for (unsigned i = 0; i < h->nparts; i++) {
        if (compaction_due(h, &h->parts[i])) {
            int rc = compact_part(h, &h->parts[i], now);
            if (rc)
                return rc;
        }
    }
    return 0;
}

