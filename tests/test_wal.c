/* The write-ahead log through its API: records come back from many rotated
 * segments exactly and in order; a torn tail is cut and its bytes kept; a
 * log that failed (a write past RLIMIT_FSIZE, as a full disk) recovers by
 * itself once there is room, losing and repeating nothing; the durable seq that answers wait on never
 * goes backwards while wal_sync (snapshots, shutdown) races the flusher; the
 * buffer cap bounds what is appended but not yet written (to twice the cap:
 * one buffer being written while the next fills); with fsync=always,
 * records appended while several fdatasyncs are in flight (pipelined group
 * commit) are all written once, in order, and published durable in order. */
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "metrics.h"
#include "test_util.h"
#include "wal.h"
#include "wal_record.h"

static char dir[] = "/tmp/ltvd-test-wal-XXXXXX";

static void clear_dir(void)
{
    DIR *d = opendir(dir);
    ASSERT(d);
    struct dirent *e;
    char path[512];
    while ((e = readdir(d)))
        if (e->d_name[0] != '.') {
            snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
            ASSERT(unlink(path) == 0);
        }
    closedir(d);
}

static size_t count_segments(size_t *bytes)
{
    DIR *d = opendir(dir);
    ASSERT(d);
    struct dirent *e;
    size_t n = 0;
    *bytes = 0;
    char path[512];
    while ((e = readdir(d)))
        if (strncmp(e->d_name, "wal-", 4) == 0) {
            struct stat st;
            snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
            ASSERT(stat(path, &st) == 0);
            *bytes += (size_t)st.st_size;
            n++;
        }
    closedir(d);
    return n;
}

/* Record k's payload: k repeated, (k % 200) + 1 bytes long. */
static size_t payload_of(uint64_t k, unsigned char *p)
{
    size_t n = (size_t)(k % 200) + 1;
    for (size_t i = 0; i < n; i++)
        p[i] = (unsigned char)(k * 31 + i);
    return n;
}

typedef struct {
    uint64_t next; /* the seq the next callback must carry */
} ReplayCheck;

static int check_record(void *arg, uint8_t kind, uint64_t seq, const unsigned char *payload, size_t len)
{
    ReplayCheck *rc = arg;
    unsigned char want[256];
    ASSERT(seq == rc->next);
    ASSERT(kind == (seq % 2 ? WAL_REC_EVENTS : WAL_REC_DELETE));
    ASSERT(len == payload_of(seq, want) && memcmp(payload, want, len) == 0);
    rc->next++;
    return 0;
}

/* As check_record, for records appended as seq k with payload_of(k) and
 * kind EVENTS for odd k - 1 ... (test_recovers_after_failure). */
static int check_record_shifted(void *arg, uint8_t kind, uint64_t seq, const unsigned char *payload, size_t len)
{
    ReplayCheck *rc = arg;
    unsigned char want[256];
    ASSERT(seq == rc->next);
    ASSERT(kind == ((seq - 1) % 2 ? WAL_REC_DELETE : WAL_REC_EVENTS));
    ASSERT(len == payload_of(seq, want) && memcmp(payload, want, len) == 0);
    rc->next++;
    return 0;
}

static void test_replay_across_segments(void)
{
    WalConfig cfg = {dir, WAL_FSYNC_NONE, 10, 4096, 1 << 20, NULL, 1};
    Wal *w;
    ASSERT(wal_open(&w, &cfg, 1, NULL, NULL) == 0);
    unsigned char p[256];
    for (uint64_t k = 1; k <= 2000; k++) {
        uint64_t seq;
        ASSERT(wal_append(w, k % 2 ? WAL_REC_EVENTS : WAL_REC_DELETE, p, payload_of(k, p), &seq) == 0);
        ASSERT(seq == k);
        if (k % 50 == 0)
            ASSERT(wal_sync(w) == 0); /* rotation happens on a write that passes segment_bytes */
    }
    wal_close(w);
    size_t bytes;
    size_t segs = count_segments(&bytes);
    ASSERT(segs >= 20);

    char err[512];
    WalReplayStats st;
    ReplayCheck rc = {1};
    ASSERT(wal_replay(dir, 1, check_record, &rc, &st, err, sizeof err) == 0);
    ASSERT(rc.next == 2001 && st.records == 2000 && st.last_seq == 2000 && !st.truncated);
    ASSERT(st.segments == segs);

    /* from a snapshot's seq: only the records from there on, still in order */
    rc.next = 1234;
    ASSERT(wal_replay(dir, 1234, check_record, &rc, &st, err, sizeof err) == 0);
    ASSERT(rc.next == 2001 && st.records == 2000 - 1233 && st.last_seq == 2000);
    clear_dir();
}

/* ---- a torn tail is cut, and kept as evidence ------------------------------ */

static int count_record(void *arg, uint8_t kind, uint64_t seq, const unsigned char *payload, size_t len)
{
    (void)kind, (void)seq, (void)payload, (void)len;
    (*(uint64_t *)arg)++;
    return 0;
}

static void test_torn_tail_kept(void)
{
    WalConfig cfg = {.dir = dir, .fsync = WAL_FSYNC_ALWAYS, .interval_ms = 10, .segment_bytes = 1 << 20,
                     .buffer_bytes = 1 << 20};
    Wal *w;
    ASSERT(wal_open(&w, &cfg, 1, NULL, NULL) == 0);
    unsigned char p[256];
    for (uint64_t k = 1; k <= 10; k++) {
        uint64_t seq;
        ASSERT(wal_append(w, WAL_REC_EVENTS, p, payload_of(k, p), &seq) == 0);
    }
    wal_close(w);
    char seg[512], kept[600];
    snprintf(seg, sizeof seg, "%s/wal-0000000000000001.log", dir);
    struct stat st;
    ASSERT(stat(seg, &st) == 0);
    size_t good = (size_t)st.st_size;
    /* a torn append: a record header promising 200 bytes, 37 bytes there */
    unsigned char torn[37];
    for (size_t i = 0; i < sizeof torn; i++)
        torn[i] = (unsigned char)(i * 7 + 1);
    uint32_t len = 200;
    memcpy(torn, &len, 4);
    FILE *f = fopen(seg, "ab");
    ASSERT(f && fwrite(torn, 1, sizeof torn, f) == sizeof torn);
    fclose(f);

    char err[512];
    WalReplayStats rs;
    uint64_t n = 0;
    ASSERT(wal_replay(dir, 1, count_record, &n, &rs, err, sizeof err) == 0);
    ASSERT(n == 10 && rs.truncated && rs.truncated_bytes == sizeof torn && rs.torn_kept_bytes == sizeof torn);
    ASSERT(stat(seg, &st) == 0 && (size_t)st.st_size == good);
    /* the cut bytes are in <segment>.torn-<offset>, exactly */
    snprintf(kept, sizeof kept, "%s.torn-%zu", seg, good);
    unsigned char back[64];
    f = fopen(kept, "rb");
    ASSERT(f);
    ASSERT(fread(back, 1, sizeof back, f) == sizeof torn && memcmp(back, torn, sizeof torn) == 0);
    fclose(f);
    ASSERT(stat(kept, &st) == 0 && (st.st_mode & 0137) == 0);

    /* the evidence is no segment: a second replay reads the 10 records only */
    n = 0;
    ASSERT(wal_replay(dir, 1, count_record, &n, &rs, err, sizeof err) == 0);
    ASSERT(n == 10 && !rs.truncated);

    /* torn again at the same offset: a second file, the first untouched */
    f = fopen(seg, "ab");
    ASSERT(f && fwrite(torn, 1, 20, f) == 20);
    fclose(f);
    ASSERT(wal_replay(dir, 1, count_record, &n, &rs, err, sizeof err) == 0);
    ASSERT(rs.truncated && rs.torn_kept_bytes == 20);
    snprintf(kept, sizeof kept, "%s.torn-%zu.1", seg, good);
    ASSERT(stat(kept, &st) == 0 && st.st_size == 20);
    snprintf(kept, sizeof kept, "%s.torn-%zu", seg, good);
    ASSERT(stat(kept, &st) == 0 && st.st_size == (off_t)sizeof torn);

    /* a crash loop keeps WAL_TORN_KEEP_FILES of them, then cuts without a copy */
    for (int t = 2; t <= WAL_TORN_KEEP_FILES; t++) {
        f = fopen(seg, "ab");
        ASSERT(f && fwrite(torn, 1, 20, f) == 20);
        fclose(f);
        ASSERT(wal_replay(dir, 1, count_record, &n, &rs, err, sizeof err) == 0);
        ASSERT(rs.truncated && rs.torn_kept_bytes == (t < WAL_TORN_KEEP_FILES ? 20 : 0));
        ASSERT(stat(seg, &st) == 0 && (size_t)st.st_size == good);
    }
    snprintf(kept, sizeof kept, "%s.torn-%zu.%d", seg, good, WAL_TORN_KEEP_FILES - 1);
    ASSERT(stat(kept, &st) == 0);
    snprintf(kept, sizeof kept, "%s.torn-%zu.%d", seg, good, WAL_TORN_KEEP_FILES);
    ASSERT(stat(kept, &st) != 0);
    snprintf(kept, sizeof kept, "%s.torn-%zu", seg, good);

    /* a snapshot covering an erasure removes them (they may hold the id) */
    Wal *w2;
    ASSERT(wal_open(&w2, &cfg, 11, NULL, NULL) == 0);
    wal_remove_torn(w2);
    ASSERT(stat(kept, &st) != 0 && stat(seg, &st) == 0);
    wal_close(w2);
    clear_dir();
}

/* ---- durable seq under a racing wal_sync ---------------------------------- */

/* ASSERT counts in a plain int: a data race on several threads. The
 * appender and syncer threads use CHECK, which stops the process at once. */
#define CHECK(cond)                                                                  \
    do {                                                                             \
        if (!(cond)) {                                                               \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
            fflush(stderr);                                                          \
            _exit(1);                                                                \
        }                                                                            \
    } while (0)

typedef struct {
    Wal *w;
    atomic_bool stop;
    atomic_uint_fast64_t appended;
} Race;

static void *appender(void *arg)
{
    Race *r = arg;
    unsigned char p[64] = {0};
    while (!atomic_load(&r->stop)) {
        uint64_t seq;
        CHECK(wal_append(r->w, WAL_REC_EVENTS, p, sizeof p, &seq) == 0);
        atomic_store(&r->appended, seq);
    }
    return NULL;
}

static void *syncer(void *arg)
{
    Race *r = arg;
    while (!atomic_load(&r->stop)) {
        CHECK(wal_sync(r->w) == 0);
    }
    return NULL;
}

static void test_durable_seq_monotonic(void)
{
    WalConfig cfg = {dir, WAL_FSYNC_ALWAYS, 10, 1 << 30, 1 << 20, NULL, WAL_SYNC_LANES_MAX};
    for (int round = 0; round < 5; round++) {
        Race r = {0};
        atomic_init(&r.stop, false);
        atomic_init(&r.appended, 0);
        ASSERT(wal_open(&r.w, &cfg, 1, NULL, NULL) == 0);
        pthread_t a, s[2];
        ASSERT(pthread_create(&a, NULL, appender, &r) == 0);
        for (int k = 0; k < 2; k++)
            ASSERT(pthread_create(&s[k], NULL, syncer, &r) == 0);
        /* a bounded number of samples, not a duration: each one is a read */
        uint64_t last = 0, backwards = 0;
        for (long i = 0; i < 20000000 && atomic_load(&r.appended) < 50000; i++) {
            uint64_t d = wal_durable_seq(r.w);
            backwards += d < last;
            last = d > last ? d : last;
        }
        atomic_store(&r.stop, true);
        pthread_join(a, NULL);
        for (int k = 0; k < 2; k++)
            pthread_join(s[k], NULL);
        ASSERT(backwards == 0);
        uint64_t appended = atomic_load(&r.appended);
        ASSERT(wal_sync(r.w) == 0);
        ASSERT(wal_durable_seq(r.w) == appended); /* a returned sync has published what it wrote */
        wal_close(r.w);
        clear_dir();
    }
}

/* ---- pipelined group commit ------------------------------------------------- */

typedef struct {
    atomic_uint_fast64_t last; /* highest seq the callback announced */
    atomic_uint_fast64_t backwards;
} DurableSeen;

static void on_durable_seen(void *arg, uint64_t seq)
{
    DurableSeen *d = arg;
    if (seq < atomic_load(&d->last))
        atomic_fetch_add(&d->backwards, 1);
    else
        atomic_store(&d->last, seq);
}

/* Appends at an uneven pace, so that the flusher threads' writes and
 * fdatasyncs overlap and finish out of order: every record must come back
 * once and in order, and durable seqs must be announced in order. */
static void test_pipelined_commit(void)
{
    WalConfig cfg = {dir, WAL_FSYNC_ALWAYS, 10, 1 << 30, 1 << 20, NULL, 1};
    for (int round = 0; round < 4; round++) {
        cfg.sync_lanes = round == 0 ? 1 : round == 1 ? 3 : WAL_SYNC_LANES_MAX; /* the default, a ring of 3, 4 */
        DurableSeen seen;
        atomic_init(&seen.last, 0);
        atomic_init(&seen.backwards, 0);
        Wal *w;
        ASSERT(wal_open(&w, &cfg, 1, on_durable_seen, &seen) == 0);
        unsigned char p[256];
        const uint64_t n = 6000;
        for (uint64_t k = 1; k <= n; k++) {
            uint64_t seq;
            ASSERT(wal_append(w, k % 2 ? WAL_REC_EVENTS : WAL_REC_DELETE, p, payload_of(k, p), &seq) == 0);
            ASSERT(seq == k);
            if (k % 3 == 0)
                usleep((useconds_t)((k * 7 + (uint64_t)round) % 5) * 40);
        }
        for (int i = 0; i < 3000 && wal_durable_seq(w) < n; i++) /* bounded: 30 s at most */
            usleep(10000);
        ASSERT(wal_durable_seq(w) == n); /* without a wal_sync: the flusher threads alone */
        ASSERT(atomic_load(&seen.last) == n && atomic_load(&seen.backwards) == 0);
        WalStats ws;
        wal_stats(w, &ws);
        ASSERT(ws.fsyncs >= 2);
        wal_close(w);
        char err[512];
        WalReplayStats st;
        ReplayCheck rc = {1};
        ASSERT(wal_replay(dir, 1, check_record, &rc, &st, err, sizeof err) == 0);
        ASSERT(rc.next == n + 1 && st.records == n && !st.truncated);
        clear_dir();
    }
}

/* ---- the buffer cap --------------------------------------------------------- */

static void test_buffer_cap(void)
{
    /* interval at its longest: only the cap makes the flusher write early */
    const size_t cap = 65536;
    WalConfig cfg = {dir, WAL_FSYNC_INTERVAL, 10000, 1 << 30, cap, NULL, 1};
    Wal *w;
    ASSERT(wal_open(&w, &cfg, 1, NULL, NULL) == 0);
    unsigned char p[1000];
    memset(p, 7, sizeof p);
    size_t appended = 0;
    for (int k = 0; k < 1000; k++) {
        uint64_t seq;
        ASSERT(wal_append(w, WAL_REC_EVENTS, p, sizeof p, &seq) == 0);
        appended += 8 + 9 + sizeof p;
        size_t on_disk;
        count_segments(&on_disk);
        /* one buffer being written, one filling: twice the cap at most */
        ASSERT(appended - on_disk <= 2 * cap);
    }
    ASSERT(appended > 10 * cap);
    wal_close(w);
    size_t on_disk;
    count_segments(&on_disk);
    ASSERT(on_disk == appended);
    clear_dir();
}

/* ---- the fsync latency histogram ------------------------------------------ */

/* Every group-commit fdatasync lands in exactly one bucket of the histogram
 * /metrics shows as ltvd_wal_fsync_duration_seconds, with its time. */
static void test_fsync_histogram(void)
{
    MetricsFsync h;
    memset(&h, 0, sizeof h);
    WalConfig cfg = {dir, WAL_FSYNC_ALWAYS, 10, 1 << 30, 1 << 20, &h, WAL_SYNC_LANES_MAX};
    Wal *w;
    ASSERT(wal_open(&w, &cfg, 1, NULL, NULL) == 0);
    unsigned char p[64];
    memset(p, 3, sizeof p);
    for (int k = 0; k < 50; k++) {
        uint64_t seq;
        ASSERT(wal_append(w, WAL_REC_EVENTS, p, sizeof p, &seq) == 0);
        ASSERT(wal_sync(w) == 0);
    }
    WalStats st;
    wal_stats(w, &st);
    uint64_t counted = 0;
    for (int b = 0; b < METRICS_FSYNC_NBUCKETS; b++)
        counted += atomic_load(&h.bucket[b]);
    ASSERT(st.fsyncs >= 1);
    ASSERT(counted == st.fsyncs);
    ASSERT(atomic_load(&h.sum_ns) == st.fsync_ns_total);
    wal_close(w);
    clear_dir();
}

/* ---- a failed write, then room again: the log recovers by itself -------- */

static void test_recovers_after_failure(void)
{
    /* RLIMIT_FSIZE stands in for a full disk: a write past it fails (EFBIG,
     * possibly after a partial write), as ENOSPC would */
    signal(SIGXFSZ, SIG_IGN);
    struct rlimit old;
    ASSERT(getrlimit(RLIMIT_FSIZE, &old) == 0);
    struct rlimit none = {0, old.rlim_max}; /* no file may grow: the retries fail too */
    WalConfig cfg = {.dir = dir, .fsync = WAL_FSYNC_ALWAYS, .interval_ms = 10, .segment_bytes = 1 << 20,
                     .buffer_bytes = 1 << 20, .sync_lanes = WAL_SYNC_LANES_MAX};
    Wal *w;
    ASSERT(wal_open(&w, &cfg, 1, NULL, NULL) == 0);
    unsigned char p[256];
    uint64_t k = 0, seq, appended_at_failure = 0;
    while (k < 5000) {
        if (k == 50)
            ASSERT(setrlimit(RLIMIT_FSIZE, &none) == 0);
        int rc = wal_append(w, k % 2 ? WAL_REC_DELETE : WAL_REC_EVENTS, p, payload_of(k + 1, p), &seq);
        if (rc) {
            ASSERT(rc == -EIO && wal_failed(w));
            break;
        }
        ASSERT(seq == ++k);
        if (wal_sync(w) != 0) { /* the record k is not durable */
            appended_at_failure = k;
            break;
        }
    }
    ASSERT(appended_at_failure == 51 && wal_failed(w) && wal_durable_seq(w) == 50);
    ASSERT(wal_append(w, WAL_REC_EVENTS, p, 1, &seq) == -EIO); /* refused while failed */
    /* still failed while there is no room (a retry is due every second) */
    struct timespec ts = {1, 500000000};
    nanosleep(&ts, NULL);
    ASSERT(wal_failed(w));
    ASSERT(setrlimit(RLIMIT_FSIZE, &old) == 0);
    int waited = 0;
    while (wal_failed(w) && waited++ < 200) {
        ts = (struct timespec){0, 50000000};
        nanosleep(&ts, NULL);
    }
    ASSERT(!wal_failed(w)); /* within about a second, at most 10 */
    ASSERT(wal_durable_seq(w) == appended_at_failure);
    WalStats st;
    wal_stats(w, &st);
    ASSERT(st.recoveries == 1);
    for (int j = 0; j < 100; j++) { /* appends go on, numbered on */
        ASSERT(wal_append(w, k % 2 ? WAL_REC_DELETE : WAL_REC_EVENTS, p, payload_of(k + 1, p), &seq) == 0);
        ASSERT(seq == ++k);
    }
    ASSERT(wal_sync(w) == 0 && wal_durable_seq(w) == k);
    wal_close(w);
    /* every record, those kept across the failure included, replays once, in order */
    char err[512];
    WalReplayStats rs;
    ReplayCheck rc = {1};
    ASSERT(wal_replay(dir, 1, check_record_shifted, &rc, &rs, err, sizeof err) == 0);
    ASSERT(rc.next == k + 1 && rs.records == k && !rs.truncated);
    clear_dir();
}

/* A record whose CRC is right but whose events events_parse would never
 * accept (damage the checksum cannot see, or a buggy writer) is refused by
 * the decoder, not replayed: a NaN value reached the LSTM and its float to
 * int conversion (found by fuzz/fuzz_wal.c on CRC-fixed segments). */
static void test_decode_refuses_invalid_events(void)
{
    Event good = {.user_id = "shopper", .user_len = 7, .event_id = "e1", .event_id_len = 2,
                  .ts = 1700000000, .value = 12.5, .quantity = 2, .type = EV_PURCHASE};
    ByteBuf b = {0};
    Event *out = NULL;
    size_t n = 0;
    ASSERT(wal_record_encode_events(&b, &good, 1) == 0);
    ASSERT(wal_record_decode_events(b.p, b.len, &out, &n) == 0 && n == 1);
    ASSERT(out[0].ts == good.ts && out[0].value == good.value && out[0].quantity == 2);
    free(out);
    for (int bad = 0; bad < 8; bad++) {
        Event e = good;
        switch (bad) {
        case 0: e.value = NAN; break;
        case 1: e.value = INFINITY; break;
        case 2: e.value = -1; break;
        case 3: e.value = 1e300; break;      /* past float: UB when the ring stores it */
        case 4: e.ts = -5; break;
        case 5: e.ts = 4133980800LL; break;  /* 2101 */
        case 6: e.quantity = 0; break;
        case 7: e.user_id = "sh\xffpper"; break; /* not UTF-8 */
        }
        ASSERT(wal_record_encode_events(&b, &e, 1) == 0);
        out = NULL;
        ASSERT(wal_record_decode_events(b.p, b.len, &out, &n) == -EBADMSG);
        ASSERT(out == NULL);
    }
    bytebuf_free(&b);
}

int main(void)
{
    test_decode_refuses_invalid_events();
    ASSERT(mkdtemp(dir));
    test_replay_across_segments();
    test_torn_tail_kept();
    test_recovers_after_failure();
    test_durable_seq_monotonic();
    test_pipelined_commit();
    test_buffer_cap();
    test_fsync_histogram();
    ASSERT(rmdir(dir) == 0);
    TEST_DONE("wal");
}
