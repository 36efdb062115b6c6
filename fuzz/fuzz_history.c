/* fuzz_history: a training history file (history.c) as ltvd finds it at
 * start: one part, storage.dir/history/events-00.hist (the history opened
 * with one part; the parts are alike). Each input is tried as given
 * and with every chunk's CRC recomputed (fuzz_common.h). Then:
 * history_open succeeds or fails with a message; its figures fit the
 * file; history_load of a few keys (the input's, and one it lacks) returns
 * events a reader may see (values finite in [0, 1e12], a known type, a
 * quantity, times in the days kept, at most
 * max_events per shopper, oldest first, none for the absent key);
 * history_compact succeeds, the compacted file opens again with nothing
 * cut, and readers see the same events as before it; history_archive from
 * an empty log directory changes nothing; a compaction under a byte cap
 * of 512 bytes leaves a file within it, whose readers see the newest of the
 * events they saw before.
 *
 * With LTVD_FUZZ_HISTORY_SEEDS=DIR in the environment it writes the seed
 * files (fuzz/corpus/history) into DIR instead, with history.c itself. */
#include <inttypes.h>
#include <math.h>
#include <sys/stat.h>

#include "fuzz_common.h"
#include "history.h"
#include "store.h"
#include "wal.h"
#include "wal_record.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define NOW 1700000000LL /* the clock every run uses */
#define MAX_EVENTS 8
#define MAX_DAYS 365
#define KEYS_MAX 8 /* keys taken from the input */
#define CAP_BYTES 512 /* the byte cap of the last compaction */

static char root[160], hist_path[200], wal_empty[200];

static HistoryConfig config(const char *dir)
{
    return (HistoryConfig){dir, MAX_EVENTS, MAX_DAYS, (uint64_t)1 << 20, 0, 1};
}

/* ---- seeds ---------------------------------------------------------------- */

static void gen_log(Wal *w, const char *user, int n, int64_t ts0, int64_t step, EventType type)
{
    ByteBuf b = {0};
    for (int k = 0; k < n; k++) {
        Event e = {user, strlen(user), NULL, 0, ts0 + k * step, k * 1.25 + 0.5, (uint32_t)(k % 3 + 1), type};
        uint64_t seq;
        if (wal_record_encode_events(&b, &e, 1) || wal_append(w, WAL_REC_EVENTS, b.p, b.len, &seq))
            abort();
    }
    bytebuf_free(&b);
}

static void gen_erase(Wal *w, const char *user)
{
    unsigned char p[WAL_RECORD_DELETE_MAX];
    size_t len = wal_record_encode_delete(p, user, strlen(user));
    uint64_t seq;
    if (wal_append(w, WAL_REC_DELETE, p, len, &seq))
        abort();
}

/* Rotates the log, archives what it held; rc of history_archive. */
static int gen_archive(Wal *w, History *h, const char *dir)
{
    uint64_t seq;
    if (wal_rotate(w, &seq))
        abort();
    return history_archive(h, dir, seq, NOW);
}

/* Copies the history file of dir to out/name, its first len bytes (0: all). */
static void gen_copy(const char *dir, const char *out, const char *name, size_t cut)
{
    char src[300], dst[300];
    history_part_path(src, sizeof src, dir, 0);
    snprintf(dst, sizeof dst, "%s/%s", out, name);
    FILE *f = fopen(src, "rb");
    static unsigned char buf[1 << 16];
    size_t n = f ? fread(buf, 1, sizeof buf, f) : 0;
    if (!f || n == sizeof buf)
        abort();
    fclose(f);
    fuzz_write_path(dst, buf, cut && cut < n ? cut : n);
    printf("%s: %zu bytes\n", dst, cut && cut < n ? cut : n);
}

static void gen_seeds(const char *out)
{
    const char *dir = fuzz_scratch_dir("history-seeds");
    WalConfig wc = {dir, WAL_FSYNC_NONE, 10, 1 << 24, 1 << 20, NULL, 1};
    Wal *w;
    History *h;
    char err[256];
    HistoryConfig hc = config(dir);
    hc.max_events = 1024;
    if (wal_open(&w, &wc, 1, NULL, NULL) || history_open(&h, &hc, err, sizeof err))
        abort();
    gen_copy(dir, out, "empty", 0);
    /* three archives: three chunks; more events than max_events, some
     * older than max_days, some late (out of order) */
    gen_log(w, "ann", 12, NOW - 30 * 86400, 86400, EV_PURCHASE);
    gen_log(w, "bob", 4, NOW - 400 * 86400, 100 * 86400, EV_VIEW);
    if (gen_archive(w, h, dir))
        abort();
    gen_log(w, "cat", 3, NOW - 5 * 86400, 3600, EV_ADD_TO_CART);
    gen_log(w, "ann", 2, NOW - 40 * 86400, 86400, EV_REFUND); /* late */
    if (gen_archive(w, h, dir))
        abort();
    gen_log(w, "bob", 3, NOW - 86400, 600, EV_CLICK);
    if (gen_archive(w, h, dir))
        abort();
    gen_copy(dir, out, "chunks", 0);
    /* the last chunk torn in the middle of a record */
    HistoryStats st;
    history_stats(h, &st);
    gen_copy(dir, out, "torn", (size_t)st.bytes - 30);
    /* an erasure whose compaction could not run (its temporary path is a
     * directory): the tombstone stays in the file, events follow it */
    char tmp[300];
    history_part_path(tmp, sizeof tmp - 4, dir, 0);
    strcat(tmp, ".tmp");
    if (mkdir(tmp, 0700))
        abort();
    gen_erase(w, "ann");
    gen_log(w, "ann", 2, NOW - 3600, 60, EV_PURCHASE);
    if (gen_archive(w, h, dir) == 0)
        abort();
    gen_log(w, "cat", 2, NOW - 1800, 60, EV_VIEW);
    if (gen_archive(w, h, dir) == 0)
        abort();
    gen_copy(dir, out, "tombstone", 0);
    rmdir(tmp);
    history_close(h);
    wal_close(w);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0)
        abort();
}

/* ---- the checks ------------------------------------------------------------ */

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    log_set_level(LOG_ERROR);
    const char *seeds = getenv("LTVD_FUZZ_HISTORY_SEEDS");
    if (seeds) {
        gen_seeds(seeds);
        exit(0);
    }
    snprintf(root, sizeof root, "%s", fuzz_scratch_dir("history"));
    snprintf(hist_path, sizeof hist_path, "%s/history", root);
    if (mkdir(hist_path, 0700))
        abort();
    history_part_path(hist_path, sizeof hist_path, root, 0);
    snprintf(wal_empty, sizeof wal_empty, "%s/wal-empty", root);
    if (mkdir(wal_empty, 0700))
        abort();
    return 0;
}

/* Does any record of the input (the chunks as their headers lay them out,
 * CRCs unchecked, a short last one as far as it goes) have key k? With
 * keys set, the first KEYS_MAX distinct record keys go there (*nk). */
static bool input_has(const unsigned char *p, size_t n, uint64_t k, uint64_t *keys, size_t *nk)
{
    bool found = false;
    size_t off = 16;
    while (off + 24 <= n) {
        uint32_t nrec;
        memcpy(&nrec, p + off + 4, 4);
        size_t len = (size_t)nrec * 20, room = (n - off - 24) / 20 * 20;
        for (size_t r = 0; r < (len < room ? len : room) / 20; r++) {
            uint64_t key;
            memcpy(&key, p + off + 24 + r * 20, 8);
            found |= key == k;
            if (!keys)
                continue;
            bool seen = false;
            for (size_t i = 0; i < *nk; i++)
                seen |= keys[i] == key;
            if (!seen && *nk < KEYS_MAX)
                keys[(*nk)++] = key;
        }
        if (len > room)
            break;
        off += 24 + len;
    }
    return found;
}

/* Up to KEYS_MAX keys of the input's records and one no record has
 * (*absent), sorted ascending. Returns how many. */
static size_t input_keys(const unsigned char *p, size_t n, uint64_t *keys, uint64_t *absent)
{
    size_t nk = 0;
    *absent = 0x5eed5eed5eed5eedull;
    bool taken = input_has(p, n, *absent, keys, &nk);
    for (int tries = 0; taken && tries < 64; tries++)
        taken = input_has(p, n, ++*absent, NULL, NULL);
    if (!taken)
        keys[nk++] = *absent;
    else
        *absent = 0; /* a record has every candidate: all are the input's keys then */
    for (size_t i = 1; i < nk; i++) /* insertion sort: a handful */
        for (size_t j = i; j > 0 && keys[j - 1] > keys[j]; j--) {
            uint64_t t = keys[j];
            keys[j] = keys[j - 1];
            keys[j - 1] = t;
        }
    return nk;
}

static void check_stats(History *h)
{
    HistoryStats st;
    history_stats(h, &st);
    struct stat fs;
    FUZZ_CHECK(stat(hist_path, &fs) == 0);
    FUZZ_CHECK(st.bytes == (uint64_t)fs.st_size);
    FUZZ_CHECK(st.records * HISTORY_RECORD_BYTES + 16 <= st.bytes);
    FUZZ_CHECK(st.tombstones <= st.records);
}

/* Loads keys and checks what readers get. */
static void load_checked(History *h, const uint64_t *keys, size_t nk, uint64_t absent, HistoryEvents *he)
{
    FUZZ_CHECK(history_load(h, keys, nk, NOW, he) == 0);
    FUZZ_CHECK(he->start[0] == 0 && he->start[nk] == he->nevents);
    for (size_t k = 0; k < nk; k++) {
        size_t a = he->start[k], b = he->start[k + 1];
        FUZZ_CHECK(a <= b && b - a <= MAX_EVENTS);
        if (absent && keys[k] == absent)
            FUZZ_CHECK(a == b);
        for (size_t e = a; e < b; e++) {
            const HistoryEvent *ev = &he->events[e];
            FUZZ_CHECK(isfinite(ev->value) && ev->value >= 0 && ev->value <= 1e12);
            FUZZ_CHECK(ev->type < EV_NTYPES && ev->quantity >= 1);
            FUZZ_CHECK(ev->ts >= NOW - (int64_t)MAX_DAYS * 86400 && ev->ts <= (int64_t)UINT32_MAX);
            FUZZ_CHECK(e == a || ev->ts >= he->events[e - 1].ts);
        }
    }
}

static bool same_events(const HistoryEvents *x, const HistoryEvents *y, size_t nk)
{
    if (x->nevents != y->nevents || memcmp(x->start, y->start, (nk + 1) * sizeof *x->start) != 0)
        return false;
    for (size_t e = 0; e < x->nevents; e++) {
        const HistoryEvent *a = &x->events[e], *b = &y->events[e];
        if (a->ts != b->ts || a->value != b->value || a->quantity != b->quantity || a->type != b->type)
            return false;
    }
    return true;
}

static void run(const unsigned char *p, size_t n)
{
    fuzz_write_path(hist_path, p, n);
    HistoryConfig hc = config(root);
    History *h = NULL;
    char err[512] = "";
    int rc = history_open(&h, &hc, err, sizeof err);
    if (rc) {
        FUZZ_CHECK(h == NULL && err[0]);
        return;
    }
    check_stats(h);
    uint64_t keys[KEYS_MAX + 1], absent;
    size_t nk = input_keys(p, n, keys, &absent);
    HistoryEvents before, after;
    load_checked(h, keys, nk, absent, &before);

    FUZZ_CHECK(history_compact(h, NOW) == 0);
    HistoryStats st;
    history_stats(h, &st);
    FUZZ_CHECK(st.tombstones == 0);
    check_stats(h);
    load_checked(h, keys, nk, absent, &after);
    FUZZ_CHECK(same_events(&before, &after, nk));
    history_events_free(&after);
    uint64_t archived = st.archived_seq, bytes = st.bytes, records = st.records;
    history_close(h);

    /* the compacted file opens as it is */
    FUZZ_CHECK(history_open(&h, &hc, err, sizeof err) == 0);
    history_stats(h, &st);
    FUZZ_CHECK(st.cut_bytes == 0 && st.bytes == bytes && st.records == records && st.archived_seq == archived);
    load_checked(h, keys, nk, absent, &after);
    FUZZ_CHECK(same_events(&before, &after, nk));
    history_events_free(&after);

    /* an empty log directory archives nothing */
    if (archived < UINT64_MAX - 2) {
        FUZZ_CHECK(history_archive(h, wal_empty, archived + 2, NOW) == 0);
        history_stats(h, &st);
        FUZZ_CHECK(st.bytes == bytes && st.records == records && st.archived_seq == archived);
        check_stats(h);
        load_checked(h, keys, nk, absent, &after);
        FUZZ_CHECK(same_events(&before, &after, nk));
        history_events_free(&after);
    }
    history_close(h);

    /* a byte cap the file is over: the oldest days go until it fits, and
     * readers see the newest of what they saw */
    hc.max_bytes = CAP_BYTES;
    FUZZ_CHECK(history_open(&h, &hc, err, sizeof err) == 0);
    FUZZ_CHECK(history_compact(h, NOW) == 0);
    history_stats(h, &st);
    if (st.bytes > CAP_BYTES)
        fprintf(stderr, "capped at %d bytes: %" PRIu64 " bytes, %" PRIu64 " records\n", CAP_BYTES, st.bytes,
                st.records);
    FUZZ_CHECK(st.bytes <= CAP_BYTES);
    check_stats(h);
    load_checked(h, keys, nk, absent, &after);
    for (size_t k = 0; k < nk; k++) {
        size_t a = after.start[k], m = after.start[k + 1] - a, b = before.start[k], mb = before.start[k + 1] - b;
        FUZZ_CHECK(m <= mb);
        for (size_t e = 0; e < m; e++) {
            const HistoryEvent *x = &after.events[a + e], *y = &before.events[b + mb - m + e];
            FUZZ_CHECK(x->ts == y->ts && x->value == y->value && x->type == y->type);
        }
    }
    history_events_free(&after);
    history_events_free(&before);
    history_close(h);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_run_fixed(data, size, fuzz_fix_history_crcs, run);
    return 0;
}
