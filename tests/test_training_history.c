/* The training history on disk (history.c) without HTTP: log segments
 * archived and read back; a crash between archiving and deleting the
 * segments (archived again, reopened, a chunk cut in the middle) neither
 * loses nor duplicates an event; an erasure's tombstone hides the
 * shopper's earlier records and compaction removes its hash's bytes from
 * the file (a compaction that failed is retried at the next archive); the
 * per-shopper, days and byte bounds hold; late events are
 * left out as the LSTM leaves them out; a corrupt chunk is cut with a
 * warning, never a crash. A load beside compactions (another thread) reads
 * the whole history every time; damage after open fails loads and
 * compaction instead of cutting the history short; a log segment with a
 * bad record fails the archive (its erasure is never skipped), and a reset
 * leaves nothing of the old file; a compaction pass that drops records as
 * its buffer fills keeps what one that holds them all keeps.
 * A record no event could make is left out. These run on one part (the
 * file's bytes are checked); test_parts runs on several: each shopper's
 * records in its own part, an erasure compacting that part alone, a crash
 * that leaves the parts at different archived seqs archived again once;
 * test_single_file_moves_into_parts: the single file of before the parts
 * moved into them at open, after a rollback too. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "hash.h"
#include "history.h"
#include "store.h"
#include "test_util.h"
#include "wal.h"
#include "wal_record.h"

#define T0 1600000000LL
#define DAY 86400LL

static char dir[64];
static char hpath[128];
static Wal *wal;
static unsigned nparts = 1; /* the history's parts in the tests that open it */

static void fresh_dir(void)
{
    char cmd[200];
    if (dir[0]) {
        snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
        ASSERT(system(cmd) == 0);
    }
    snprintf(dir, sizeof dir, "/tmp/ltvd-thist-XXXXXX");
    ASSERT(mkdtemp(dir) != NULL);
    history_part_path(hpath, sizeof hpath, dir, 0);
    WalConfig cfg = {dir, WAL_FSYNC_NONE, 10, 1 << 24, 1 << 20, NULL, 1};
    ASSERT(wal_open(&wal, &cfg, 1, NULL, NULL) == 0);
}

/* Logs n events of user (ts from ts0, step apart), value k + 0.5. */
static void log_events(const char *user, int n, int64_t ts0, int64_t step, EventType type)
{
    ByteBuf b = {0};
    for (int k = 0; k < n; k++) {
        Event e = {user, strlen(user), NULL, 0, ts0 + k * step, k + 0.5, (uint32_t)(k % 3 + 1), type};
        ASSERT(wal_record_encode_events(&b, &e, 1) == 0);
        uint64_t seq;
        ASSERT(wal_append(wal, WAL_REC_EVENTS, b.p, b.len, &seq) == 0);
    }
    bytebuf_free(&b);
}

static void log_erasure(const char *user)
{
    unsigned char p[WAL_RECORD_DELETE_MAX];
    size_t len = wal_record_encode_delete(p, user, strlen(user));
    uint64_t seq;
    ASSERT(wal_append(wal, WAL_REC_DELETE, p, len, &seq) == 0);
}

/* Rotates the log (as a snapshot does); the seq the snapshot would cover. */
static uint64_t rotate(void)
{
    uint64_t seq;
    ASSERT(wal_rotate(wal, &seq) == 0);
    return seq;
}

static History *open_history_pass(int max_events, int max_days, uint64_t max_bytes, size_t pass_records)
{
    HistoryConfig hc = {dir, max_events, max_days, max_bytes, pass_records, nparts};
    History *h;
    char err[256];
    ASSERT(history_open(&h, &hc, err, sizeof err) == 0);
    return h;
}

static History *open_history(int max_events, int max_days, uint64_t max_bytes)
{
    return open_history_pass(max_events, max_days, max_bytes, 0);
}

/* The events history_load returns for user. */
static size_t load_user(History *h, const char *user, int64_t now, HistoryEvent *out, size_t cap)
{
    uint64_t key = store_stable_hash_id(user, strlen(user));
    HistoryEvents he;
    ASSERT(history_load(h, &key, 1, now, &he) == 0);
    size_t n = he.start[1] - he.start[0];
    ASSERT(n <= cap);
    memcpy(out, he.events + he.start[0], n * sizeof *out);
    history_events_free(&he);
    return n;
}

/* Does the file hold the 8 bytes of user's hash anywhere? */
static bool file_holds_hash(const char *user)
{
    uint64_t key = store_stable_hash_id(user, strlen(user));
    FILE *f = fopen(hpath, "rb");
    ASSERT(f);
    static unsigned char buf[1 << 22];
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    for (size_t i = 0; i + 8 <= n; i++)
        if (memcmp(buf + i, &key, 8) == 0)
            return true;
    return false;
}

static off_t file_size(void)
{
    struct stat st;
    ASSERT(stat(hpath, &st) == 0);
    return st.st_size;
}

static void test_round_trip(void)
{
    fresh_dir();
    log_events("alice", 50, T0, 3600, EV_VIEW);
    log_events("bob", 10, T0 + 100, DAY, EV_PURCHASE);
    uint64_t s1 = rotate();
    History *h = open_history(1024, 3650, 1 << 30);
    ASSERT(history_archive(h, dir, s1, T0 + 100 * DAY) == 0);
    HistoryStats st;
    history_stats(h, &st);
    ASSERT(st.records == 60 && st.archived_seq == s1 - 1 && st.archives == 1);
    ASSERT(st.bytes == (uint64_t)file_size());
    HistoryEvent ev[64];
    ASSERT(load_user(h, "alice", T0 + 100 * DAY, ev, 64) == 50);
    for (int k = 0; k < 50; k++)
        ASSERT(ev[k].ts == T0 + k * 3600 && ev[k].type == EV_VIEW && ev[k].value == k + 0.5 &&
               ev[k].quantity == (uint32_t)(k % 3 + 1));
    ASSERT(load_user(h, "bob", T0 + 100 * DAY, ev, 64) == 10);
    ASSERT(ev[9].ts == T0 + 100 + 9 * DAY && ev[9].type == EV_PURCHASE);
    ASSERT(load_user(h, "carol", T0 + 100 * DAY, ev, 64) == 0);
    /* the records are read back after a restart too */
    history_close(h);
    h = open_history(1024, 3650, 1 << 30);
    ASSERT(load_user(h, "alice", T0 + 100 * DAY, ev, 64) == 50);
    history_close(h);
    wal_close(wal);
}

/* A crash after archiving, before the segments are deleted: the next
 * snapshot's archive (after a restart or not) adds nothing twice; a chunk
 * torn in the middle of its write is cut at open and archived again. */
static void test_crash_between_archive_and_delete(void)
{
    fresh_dir();
    log_events("alice", 30, T0, 3600, EV_CLICK);
    uint64_t s1 = rotate();
    History *h = open_history(1024, 3650, 1 << 30);
    ASSERT(history_archive(h, dir, s1, T0 + 100 * DAY) == 0);
    off_t after_first = file_size();
    /* crash: segments not deleted; the archive runs again, in this process and after a restart */
    ASSERT(history_archive(h, dir, s1, T0 + 100 * DAY) == 0);
    history_close(h);
    h = open_history(1024, 3650, 1 << 30);
    ASSERT(history_archive(h, dir, s1, T0 + 100 * DAY) == 0);
    HistoryStats st;
    history_stats(h, &st);
    ASSERT(st.records == 30 && st.archived_seq == s1 - 1);
    ASSERT(file_size() == after_first);
    HistoryEvent ev[128];
    ASSERT(load_user(h, "alice", T0 + 100 * DAY, ev, 128) == 30);

    /* a second archive (the next snapshot) adds only the new records */
    log_events("alice", 20, T0 + 40 * 3600, 3600, EV_CLICK);
    uint64_t s2 = rotate();
    ASSERT(history_archive(h, dir, s2, T0 + 100 * DAY) == 0);
    ASSERT(load_user(h, "alice", T0 + 100 * DAY, ev, 128) == 50);
    history_close(h);

    /* a crash in the middle of that second chunk's write: cut, archived again, once */
    ASSERT(truncate(hpath, after_first + 30) == 0);
    h = open_history(1024, 3650, 1 << 30);
    history_stats(h, &st);
    ASSERT(st.records == 30 && st.archived_seq == s1 - 1 && st.cut_bytes == 30);
    ASSERT(file_size() == after_first);
    ASSERT(history_archive(h, dir, s2, T0 + 100 * DAY) == 0);
    size_t n = load_user(h, "alice", T0 + 100 * DAY, ev, 128);
    ASSERT(n == 50);
    for (size_t k = 0; k < n; k++)
        ASSERT(ev[k].ts == (k < 30 ? T0 + (int64_t)k * 3600 : T0 + 40 * 3600 + (int64_t)(k - 30) * 3600));
    /* deleted segments are not needed for what is archived */
    wal_remove_before(wal, s2);
    history_close(h);
    h = open_history(1024, 3650, 1 << 30);
    ASSERT(load_user(h, "alice", T0 + 100 * DAY, ev, 128) == 50);
    history_close(h);
    wal_close(wal);
}

static void test_erasure(void)
{
    fresh_dir();
    log_events("dora", 40, T0, 3600, EV_PURCHASE);
    log_events("erin", 5, T0, DAY, EV_VIEW);
    uint64_t s1 = rotate();
    History *h = open_history(1024, 3650, 1 << 30);
    ASSERT(history_archive(h, dir, s1, T0 + 100 * DAY) == 0);
    ASSERT(file_holds_hash("dora") && file_holds_hash("erin"));
    /* dora erased; erin erased and back with new events */
    log_erasure("dora");
    log_erasure("erin");
    log_events("erin", 3, T0 + 50 * DAY, DAY, EV_CLICK);
    uint64_t s2 = rotate();
    ASSERT(history_archive(h, dir, s2, T0 + 100 * DAY) == 0);
    HistoryEvent ev[64];
    ASSERT(load_user(h, "dora", T0 + 100 * DAY, ev, 64) == 0);
    ASSERT(load_user(h, "erin", T0 + 100 * DAY, ev, 64) == 3);
    ASSERT(ev[0].ts == T0 + 50 * DAY && ev[0].type == EV_CLICK);
    /* the archive that brought the tombstones compacted: dora's bytes are gone */
    HistoryStats st;
    history_stats(h, &st);
    ASSERT(st.compactions == 1 && st.tombstones == 0 && st.records == 3 && st.shoppers == 1);
    ASSERT(st.parts == 1 && st.parts_compacted == 1 && st.part_compacted[0]);
    ASSERT(!file_holds_hash("dora"));
    ASSERT(file_holds_hash("erin"));
    history_close(h);
    /* and after a restart */
    h = open_history(1024, 3650, 1 << 30);
    ASSERT(load_user(h, "dora", T0 + 100 * DAY, ev, 64) == 0);
    history_stats(h, &st);
    ASSERT(st.records == 3 && st.archived_seq == s2 - 1);
    /* the shoppers are counted by compactions only, since the open */
    ASSERT(st.shoppers == 0 && st.parts_compacted == 0 && !st.part_compacted[0]);
    history_close(h);
    wal_close(wal);
}

/* A compaction that fails (here: its temporary file cannot be made) leaves
 * the tombstone in the file, readers still skip the erased records, and the
 * next snapshot's archive compacts even with nothing new to archive. */
static void test_compaction_owed_is_retried(void)
{
    fresh_dir();
    log_events("jon", 10, T0, 3600, EV_PURCHASE);
    log_events("kim", 5, T0, DAY, EV_VIEW);
    uint64_t s1 = rotate();
    History *h = open_history(1024, 3650, 1 << 30);
    ASSERT(history_archive(h, dir, s1, T0 + 100 * DAY) == 0);
    log_erasure("jon");
    uint64_t s2 = rotate();
    char tmp[160];
    snprintf(tmp, sizeof tmp, "%s.tmp", hpath);
    ASSERT(mkdir(tmp, 0700) == 0);
    ASSERT(history_archive(h, dir, s2, T0 + 100 * DAY) != 0);
    HistoryStats st;
    history_stats(h, &st);
    ASSERT(st.tombstones == 1 && st.compactions == 0 && st.archived_seq == s2 - 1);
    HistoryEvent ev[16];
    ASSERT(load_user(h, "jon", T0 + 100 * DAY, ev, 16) == 0);
    ASSERT(file_holds_hash("jon"));
    ASSERT(rmdir(tmp) == 0);
    ASSERT(history_archive(h, dir, s2, T0 + 100 * DAY) == 0); /* nothing new: the owed compaction */
    history_stats(h, &st);
    ASSERT(st.tombstones == 0 && st.compactions == 1 && st.records == 5);
    ASSERT(!file_holds_hash("jon"));
    ASSERT(load_user(h, "kim", T0 + 100 * DAY, ev, 16) == 5);
    history_close(h);
    wal_close(wal);
}

static void test_bounds(void)
{
    fresh_dir();
    log_events("fay", 40, T0, DAY, EV_VIEW);       /* days 0..39 */
    log_events("gus", 10, T0 + 35 * DAY, 3600, EV_VIEW);
    uint64_t s1 = rotate();
    History *h = open_history(16, 30, 1 << 30);
    int64_t now = T0 + 45 * DAY; /* 30 days: from day 15 on */
    ASSERT(history_archive(h, dir, s1, now) == 0);
    HistoryEvent ev[64];
    /* read: the newest 16 within the days (fay: days 15..39 -> 24 -> the last 16) */
    ASSERT(load_user(h, "fay", now, ev, 64) == 16);
    ASSERT(ev[0].ts == T0 + 24 * DAY && ev[15].ts == T0 + 39 * DAY);
    ASSERT(load_user(h, "gus", now, ev, 64) == 10);
    /* compaction writes the same to the file */
    ASSERT(history_compact(h, now) == 0);
    HistoryStats st;
    history_stats(h, &st);
    ASSERT(st.records == 26 && st.shoppers == 2);
    ASSERT(st.bytes == (uint64_t)file_size());
    ASSERT(load_user(h, "fay", now, ev, 64) == 16 && ev[0].ts == T0 + 24 * DAY);
    history_close(h);

    /* the byte cap: the oldest days go until the file fits */
    h = open_history(1024, 3650, 400);
    ASSERT(history_compact(h, now) == 0);
    history_stats(h, &st);
    ASSERT(st.bytes <= 400 && st.records > 0 && st.records < 26);
    ASSERT(load_user(h, "gus", now, ev, 64) == 10); /* the newest events are the ones kept */
    history_close(h);
    wal_close(wal);

    /* events dated after now (the last day counts them) past the cap on
     * their own: they go too, the file fits (fuzz/fuzz_history.c's cap check
     * on the hand-made seed regress-future-over-cap) */
    fresh_dir();
    char user[16];
    for (int k = 0; k < 30; k++) {
        snprintf(user, sizeof user, "fut%d", k);
        log_events(user, 1, now + 30 * DAY, 0, EV_PURCHASE);
    }
    s1 = rotate();
    h = open_history(1024, 3650, 400);
    ASSERT(history_archive(h, dir, s1, now) == 0);
    history_stats(h, &st);
    ASSERT(st.bytes <= 400 && file_size() <= 400 && st.records == 0);
    history_close(h);
    wal_close(wal);
}

/* Late events (older than the newest before them) are left out, as the
 * LSTM and the ring leave them out. */
static void test_late_events(void)
{
    fresh_dir();
    log_events("hal", 1, T0 + 10, 0, EV_VIEW);
    log_events("hal", 1, T0 + 20, 0, EV_VIEW);
    log_events("hal", 1, T0 + 15, 0, EV_PURCHASE);
    log_events("hal", 1, T0 + 30, 0, EV_VIEW);
    uint64_t s1 = rotate();
    History *h = open_history(1024, 3650, 1 << 30);
    ASSERT(history_archive(h, dir, s1, T0 + DAY) == 0);
    HistoryEvent ev[8];
    ASSERT(load_user(h, "hal", T0 + DAY, ev, 8) == 3);
    ASSERT(ev[0].ts == T0 + 10 && ev[1].ts == T0 + 20 && ev[2].ts == T0 + 30);
    history_close(h);
    wal_close(wal);
}

static void flip_byte(const char *path, off_t at)
{
    int fd = open(path, O_RDWR);
    ASSERT(fd >= 0);
    unsigned char b;
    ASSERT(pread(fd, &b, 1, at) == 1);
    b ^= 0x40;
    ASSERT(pwrite(fd, &b, 1, at) == 1);
    close(fd);
}

static void test_corrupt_chunk(void)
{
    fresh_dir();
    log_events("ivy", 10, T0, 3600, EV_VIEW);
    uint64_t s1 = rotate();
    History *h = open_history(1024, 3650, 1 << 30);
    ASSERT(history_archive(h, dir, s1, T0 + DAY) == 0);
    log_events("ivy", 10, T0 + 20 * 3600, 3600, EV_VIEW);
    uint64_t s2 = rotate();
    ASSERT(history_archive(h, dir, s2, T0 + DAY) == 0);
    history_close(h);
    off_t size = file_size();
    /* a flipped byte in the first chunk's records: everything from there on is cut */
    flip_byte(hpath, 16 + 24 + 5);
    h = open_history(1024, 3650, 1 << 30);
    HistoryStats st;
    history_stats(h, &st);
    ASSERT(st.records == 0 && st.archived_seq == 0 && st.cut_bytes == (uint64_t)size - 16);
    HistoryEvent ev[32];
    ASSERT(load_user(h, "ivy", T0 + DAY, ev, 32) == 0);
    /* the segments still there are archived again (as after a crash); those deleted are lost to training */
    ASSERT(history_archive(h, dir, s2, T0 + DAY) == 0);
    ASSERT(load_user(h, "ivy", T0 + DAY, ev, 32) == 20);
    history_close(h);
    /* garbage for a header: started afresh */
    int fd = open(hpath, O_WRONLY | O_TRUNC);
    ASSERT(fd >= 0 && write(fd, "not a history file at all", 25) == 25);
    close(fd);
    h = open_history(1024, 3650, 1 << 30);
    history_stats(h, &st);
    ASSERT(st.records == 0 && file_size() == 16);
    history_close(h);
    /* off: the file goes */
    history_remove(dir);
    ASSERT(access(hpath, F_OK) != 0 && errno == ENOENT);
    wal_close(wal);
}

/* A retrain loads while a snapshot compacts (two workers): every load
 * sees the whole history, though each compaction swaps the file. */
typedef struct LoadLoop {
    History *h;
    uint64_t keys[40];
    atomic_bool stop;
    int loads, bad;
} LoadLoop;

static void *load_loop(void *arg)
{
    LoadLoop *l = arg;
    for (int i = 0; i < 100000 && (!atomic_load(&l->stop) || l->loads == 0); i++) {
        HistoryEvents he;
        if (history_load(l->h, l->keys, 40, T0 + 100 * DAY, &he) != 0 || he.nevents != 40 * 60)
            l->bad++;
        history_events_free(&he);
        l->loads++;
    }
    return NULL;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

static void test_load_beside_compaction(void)
{
    fresh_dir();
    LoadLoop l = {0};
    for (int u = 0; u < 40; u++) {
        char name[16];
        snprintf(name, sizeof name, "user%d", u);
        log_events(name, 60, T0, 3600, EV_VIEW);
        l.keys[u] = store_stable_hash_id(name, strlen(name));
    }
    qsort(l.keys, 40, sizeof *l.keys, cmp_u64);
    uint64_t s1 = rotate();
    l.h = open_history(1024, 3650, 1 << 30);
    ASSERT(history_archive(l.h, dir, s1, T0 + 100 * DAY) == 0);
    pthread_t t;
    ASSERT(pthread_create(&t, NULL, load_loop, &l) == 0);
    for (int i = 0; i < 200; i++)
        ASSERT(history_compact(l.h, T0 + 100 * DAY) == 0);
    atomic_store(&l.stop, true);
    ASSERT(pthread_join(t, NULL) == 0);
    ASSERT(l.loads > 0 && l.bad == 0);
    HistoryStats st;
    history_stats(l.h, &st);
    ASSERT(st.compactions == 200 && st.records == 40 * 60);
    history_close(l.h);
    wal_close(wal);
}

/* Damage after open (a bad disk): loads and compaction fail rather than
 * take the damaged chunk for the end of the file; compaction leaves the
 * file as it was. history_reset leaves nothing of it. */
static void test_damage_after_open(void)
{
    fresh_dir();
    log_events("lea", 10, T0, 3600, EV_VIEW);
    uint64_t s1 = rotate();
    History *h = open_history(1024, 3650, 1 << 30);
    ASSERT(history_archive(h, dir, s1, T0 + DAY) == 0);
    off_t first = file_size();
    log_events("max", 10, T0, 3600, EV_VIEW);
    uint64_t s2 = rotate();
    ASSERT(history_archive(h, dir, s2, T0 + DAY) == 0);
    off_t size = file_size();
    flip_byte(hpath, first + 24 + 3); /* the second chunk's first record */
    uint64_t key = store_stable_hash_id("lea", 3);
    HistoryEvents he;
    ASSERT(history_load(h, &key, 1, T0 + DAY, &he) == -EIO && he.events == NULL);
    ASSERT(history_compact(h, T0 + DAY) == -EIO);
    ASSERT(file_size() == size && file_holds_hash("max"));
    HistoryStats st;
    history_stats(h, &st);
    ASSERT(st.compactions == 0 && st.records == 20);
    /* what the service does then: a fresh file, the old one's records gone */
    ASSERT(history_reset(h) == 0);
    ASSERT(file_size() == 16 && !file_holds_hash("lea") && !file_holds_hash("max"));
    history_stats(h, &st);
    ASSERT(st.records == 0 && st.bytes == 16);
    HistoryEvent ev[16];
    ASSERT(load_user(h, "lea", T0 + DAY, ev, 16) == 0);
    /* and it takes new segments */
    log_events("lea", 3, T0 + 20 * 3600, 3600, EV_VIEW);
    uint64_t s3 = rotate();
    ASSERT(history_archive(h, dir, s3, T0 + DAY) == 0);
    ASSERT(load_user(h, "lea", T0 + DAY, ev, 16) == 3);
    history_close(h);
    wal_close(wal);
}

/* A log segment with a bad record in the middle: the archive fails and
 * archives nothing of it or after it (the old wal_scan skipped the rest of
 * the segment, here an erasure, and went on with the next). */
static void test_bad_segment_fails_archive(void)
{
    fresh_dir();
    log_events("ned", 10, T0, 3600, EV_VIEW);
    uint64_t s1 = rotate();
    log_events("oz", 1, T0, 3600, EV_VIEW);
    log_erasure("ned");
    log_events("oz", 1, T0 + 3600, 3600, EV_VIEW);
    rotate();
    log_events("oz", 1, T0 + 7200, 3600, EV_VIEW);
    uint64_t s3 = rotate();
    char seg[160];
    snprintf(seg, sizeof seg, "%s/wal-%016" PRIx64 ".log", dir, s1);
    flip_byte(seg, 20); /* the segment's first record: the erasure after it cannot be reached */
    History *h = open_history(1024, 3650, 1 << 30);
    ASSERT(history_archive(h, dir, s3, T0 + DAY) != 0);
    HistoryStats st;
    history_stats(h, &st);
    ASSERT(st.archived_seq == 0 && st.records == 0 && file_size() == 16);
    HistoryEvent ev[16];
    ASSERT(load_user(h, "ned", T0 + DAY, ev, 16) == 0);
    /* a segment cut short (it ends before the next one's first record) fails it too */
    ASSERT(truncate(seg, 0) == 0);
    ASSERT(history_archive(h, dir, s3, T0 + DAY) != 0);
    ASSERT(load_user(h, "ned", T0 + DAY, ev, 16) == 0 && file_size() == 16);
    history_close(h);
    wal_close(wal);
}

/* A compaction pass whose buffer fills (pass_records 16 here, 2Mi in
 * service) drops what it will not keep as it goes: the tombstone still
 * hides what came before it, late events stay out, the newest max_events
 * stay. */
static void test_pass_drops_as_it_fills(void)
{
    fresh_dir();
    log_events("pia", 100, T0, 3600, EV_VIEW);
    log_events("quin", 30, T0, 3600, EV_PURCHASE);
    log_erasure("pia");
    log_events("pia", 120, T0 + 200 * 3600, 3600, EV_VIEW);
    log_events("pia", 1, T0 + 250 * 3600 + 1, 0, EV_PURCHASE); /* late */
    uint64_t s1 = rotate();
    History *h = open_history_pass(50, 3650, 1 << 30, 16);
    ASSERT(history_archive(h, dir, s1, T0 + 100 * DAY) == 0); /* the tombstone: compacted */
    HistoryStats st;
    history_stats(h, &st);
    ASSERT(st.compactions == 1 && st.tombstones == 0 && st.records == 80 && st.shoppers == 2);
    HistoryEvent ev[64];
    ASSERT(load_user(h, "pia", T0 + 100 * DAY, ev, 64) == 50);
    for (int k = 0; k < 50; k++)
        ASSERT(ev[k].ts == T0 + (270 + k) * 3600 && ev[k].type == EV_VIEW);
    ASSERT(load_user(h, "quin", T0 + 100 * DAY, ev, 64) == 30 && ev[29].ts == T0 + 29 * 3600);
    history_close(h);
    wal_close(wal);
}

/* Record k of the file's first chunk: field at off (20-byte record) set
 * to the n bytes of p, the chunk's CRC made right (damage a CRC missed). */
static void poke_record(size_t k, size_t off, const void *p, size_t n)
{
    int fd = open(hpath, O_RDWR);
    ASSERT(fd >= 0);
    unsigned char chunk[24 + 16 * HISTORY_RECORD_BYTES];
    ASSERT(pread(fd, chunk, 24, 16) == 24);
    uint32_t nrec;
    memcpy(&nrec, chunk + 4, 4);
    ASSERT(nrec <= 16 && k < nrec);
    size_t len = 24 + nrec * HISTORY_RECORD_BYTES;
    ASSERT(pread(fd, chunk, len, 16) == (ssize_t)len);
    memcpy(chunk + 24 + k * HISTORY_RECORD_BYTES + off, p, n);
    uint32_t crc = crc32_update(crc32_update(0, chunk + 4, 12), chunk + 24, nrec * HISTORY_RECORD_BYTES);
    memcpy(chunk + 16, &crc, 4);
    ASSERT(pwrite(fd, chunk, len, 16) == (ssize_t)len);
    close(fd);
}

/* A record no event could make (found by fuzz/fuzz_history.c: a NaN value
 * reached training) is no event to readers, and compaction drops it. */
static void test_invalid_records(void)
{
    fresh_dir();
    log_events("liv", 6, T0, 3600, EV_PURCHASE);
    uint64_t s1 = rotate();
    History *h = open_history(1024, 3650, 1 << 30);
    ASSERT(history_archive(h, dir, s1, T0 + DAY) == 0);
    history_close(h);
    float nan = NAN, neg = -1.0f;
    uint16_t zero = 0;
    uint8_t type = EV_NTYPES, flags = 2;
    poke_record(1, 12, &nan, 4);
    poke_record(2, 12, &neg, 4);
    poke_record(3, 16, &zero, 2);
    poke_record(4, 18, &type, 1);
    poke_record(5, 19, &flags, 1);
    h = open_history(1024, 3650, 1 << 30);
    HistoryStats st;
    history_stats(h, &st);
    ASSERT(st.records == 6 && st.cut_bytes == 0);
    HistoryEvent ev[8];
    ASSERT(load_user(h, "liv", T0 + DAY, ev, 8) == 1);
    ASSERT(ev[0].ts == T0 && ev[0].value == 0.5 && ev[0].type == EV_PURCHASE);
    ASSERT(history_compact(h, T0 + DAY) == 0);
    history_stats(h, &st);
    ASSERT(st.records == 1);
    ASSERT(load_user(h, "liv", T0 + DAY, ev, 8) == 1 && ev[0].ts == T0);
    history_close(h);
    wal_close(wal);
}

/* Does part i's file hold the 8 bytes of user's hash? */
static bool part_holds_hash(unsigned i, const char *user)
{
    char saved[128];
    memcpy(saved, hpath, sizeof saved);
    history_part_path(hpath, sizeof hpath, dir, i);
    bool yes = file_holds_hash(user);
    memcpy(hpath, saved, sizeof saved);
    return yes;
}

static ino_t part_inode(unsigned i)
{
    char path[128];
    history_part_path(path, sizeof path, dir, i);
    struct stat st;
    ASSERT(stat(path, &st) == 0);
    return st.st_ino;
}

static void test_parts(void)
{
    enum { USERS = 40, PARTS = 4 };
    nparts = PARTS;
    fresh_dir();
    char users[USERS][16];
    unsigned part[USERS], used[PARTS] = {0};
    for (int u = 0; u < USERS; u++) {
        snprintf(users[u], sizeof users[u], "u%02d", u);
        part[u] = history_part_of(store_stable_hash_id(users[u], strlen(users[u])), PARTS);
        used[part[u]]++;
        log_events(users[u], 5 + u % 4, T0 + u * 60, 3600, EV_PURCHASE);
    }
    for (unsigned i = 0; i < PARTS; i++)
        ASSERT(used[i] > 0); /* 40 shoppers reach every one of 4 parts */
    uint64_t s1 = rotate();
    History *h = open_history(1024, 3650, 1 << 30);
    ASSERT(history_archive(h, dir, s1, T0 + 100 * DAY) == 0);
    HistoryStats st;
    history_stats(h, &st);
    uint64_t total = 0;
    for (int u = 0; u < USERS; u++)
        total += 5 + u % 4;
    ASSERT(st.records == total && st.archived_seq == s1 - 1 && st.archives == 1 && st.compactions == 0);
    ASSERT(st.parts == PARTS && st.parts_compacted == 0 && st.shoppers == 0); /* none counted yet */
    HistoryEvent ev[16];
    for (int u = 0; u < USERS; u++) {
        ASSERT(load_user(h, users[u], T0 + 100 * DAY, ev, 16) == (size_t)(5 + u % 4));
        for (unsigned i = 0; i < PARTS; i++)
            ASSERT(part_holds_hash(i, users[u]) == (i == part[u]));
    }
    /* one shopper erased: its part alone is rewritten */
    ino_t ino[PARTS];
    for (unsigned i = 0; i < PARTS; i++)
        ino[i] = part_inode(i);
    log_erasure(users[7]);
    uint64_t s2 = rotate();
    ASSERT(history_archive(h, dir, s2, T0 + 100 * DAY) == 0);
    history_stats(h, &st);
    ASSERT(st.compactions == 1 && st.tombstones == 0 && st.records == total - (5 + 7 % 4));
    /* the figure counts the rewritten part's shoppers alone, and says so */
    ASSERT(st.shoppers == used[part[7]] - 1 && st.parts_compacted == 1);
    for (unsigned i = 0; i < PARTS; i++) {
        ASSERT((part_inode(i) != ino[i]) == (i == part[7]));
        ASSERT(st.part_compacted[i] == (i == part[7]));
    }
    ASSERT(!part_holds_hash(part[7], users[7]));
    ASSERT(load_user(h, users[7], T0 + 100 * DAY, ev, 16) == 0);
    ASSERT(load_user(h, users[8], T0 + 100 * DAY, ev, 16) == (size_t)(5 + 8 % 4));
    history_close(h);

    /* a crash as the next archive ended: one part lost its new chunk (not
     * yet on disk), the others have it; the next archive adds it to that
     * part alone, and nothing twice */
    unsigned lost = part[3];
    char lost_path[128];
    history_part_path(lost_path, sizeof lost_path, dir, lost);
    struct stat before;
    ASSERT(stat(lost_path, &before) == 0);
    for (int u = 0; u < USERS; u++)
        log_events(users[u], 2, T0 + 50 * DAY + u * 60, 3600, EV_VIEW);
    uint64_t s3 = rotate();
    h = open_history(1024, 3650, 1 << 30);
    ASSERT(history_archive(h, dir, s3, T0 + 100 * DAY) == 0);
    history_close(h);
    ASSERT(truncate(lost_path, before.st_size) == 0);
    h = open_history(1024, 3650, 1 << 30);
    history_stats(h, &st);
    ASSERT(st.archived_seq == s2 - 1); /* the lowest part's */
    ASSERT(history_archive(h, dir, s3, T0 + 100 * DAY) == 0);
    history_stats(h, &st);
    ASSERT(st.archived_seq == s3 - 1 && st.records == total - (5 + 7 % 4) + 2 * USERS);
    for (int u = 0; u < USERS; u++)
        ASSERT(load_user(h, users[u], T0 + 100 * DAY, ev, 16) == (u == 7 ? 2 : (size_t)(5 + u % 4 + 2)));
    history_close(h);
    /* off: every part goes */
    history_remove(dir);
    for (unsigned i = 0; i < PARTS; i++) {
        char path[128];
        history_part_path(path, sizeof path, dir, i);
        ASSERT(access(path, F_OK) != 0 && errno == ENOENT);
    }
    wal_close(wal);
    nparts = 1;
}

/* An upgrade: the single file of before the parts (events.hist, the same
 * format as a part) is moved into the parts, each shopper's records to its
 * own, and deleted. Then a rollback and a return: the parts kept records
 * the old version's new file knows nothing of, and that file brings an
 * erasure of one of those shoppers (its tombstone still in it: the old
 * version's compaction had failed): appended, the tombstone hides them,
 * and the next archive's compaction removes them from disk. */
static void test_single_file_moves_into_parts(void)
{
    enum { USERS = 30, PARTS = 4 };
    nparts = 1;
    fresh_dir();
    char users[USERS][16];
    for (int u = 0; u < USERS; u++) {
        snprintf(users[u], sizeof users[u], "m%02d", u);
        log_events(users[u], 3 + u % 5, T0 + u * 60, 3600, EV_CLICK);
    }
    uint64_t s1 = rotate();
    History *h = open_history(1024, 3650, 1 << 30);
    ASSERT(history_archive(h, dir, s1, T0 + 100 * DAY) == 0);
    HistoryStats st;
    history_stats(h, &st);
    uint64_t records = st.records;
    history_close(h);
    char single[160], tmp[170];
    snprintf(single, sizeof single, "%s/history/events.hist", dir);
    snprintf(tmp, sizeof tmp, "%s.tmp", single);
    ASSERT(rename(hpath, single) == 0);
    FILE *f = fopen(tmp, "wb"); /* an old compaction's copy, cut short */
    ASSERT(f && fputs("LTVDHIS1", f) >= 0 && fclose(f) == 0);

    nparts = PARTS;
    h = open_history(1024, 3650, 1 << 30);
    ASSERT(access(single, F_OK) != 0 && errno == ENOENT);
    ASSERT(access(tmp, F_OK) != 0 && errno == ENOENT);
    history_stats(h, &st);
    ASSERT(st.records == records && st.archived_seq == s1 - 1);
    HistoryEvent ev[16];
    for (int u = 0; u < USERS; u++) {
        ASSERT(load_user(h, users[u], T0 + 100 * DAY, ev, 16) == (size_t)(3 + u % 5));
        ASSERT(ev[0].ts == T0 + u * 60 && ev[0].type == EV_CLICK);
        unsigned part = history_part_of(store_stable_hash_id(users[u], strlen(users[u])), PARTS);
        for (unsigned i = 0; i < PARTS; i++)
            ASSERT(part_holds_hash(i, users[u]) == (i == part));
    }
    history_close(h);

    /* the rollback: the old version archives the log since s1 into a new
     * events.hist; m05 erased there, and that file's compaction failed */
    wal_remove_before(wal, s1);
    log_erasure(users[5]);
    log_events(users[6], 2, T0 + 50 * DAY, 3600, EV_PURCHASE);
    uint64_t s2 = rotate();
    char old_dir[96];
    snprintf(old_dir, sizeof old_dir, "%s/old", dir);
    ASSERT(mkdir(old_dir, 0700) == 0);
    HistoryConfig oc = {old_dir, 1024, 3650, 1 << 30, 0, 1};
    char err[256], old_part[160], old_tmp[170];
    ASSERT(history_open(&h, &oc, err, sizeof err) == 0);
    history_part_path(old_part, sizeof old_part, old_dir, 0);
    snprintf(old_tmp, sizeof old_tmp, "%s.tmp", old_part);
    ASSERT(mkdir(old_tmp, 0700) == 0);
    ASSERT(history_archive(h, dir, s2, T0 + 100 * DAY) != 0); /* archived, not compacted */
    history_stats(h, &st);
    ASSERT(st.tombstones == 1);
    history_close(h);
    ASSERT(rename(old_part, single) == 0);

    h = open_history(1024, 3650, 1 << 30);
    history_stats(h, &st);
    ASSERT(st.tombstones == 1 && st.archived_seq == s2 - 1);
    ASSERT(load_user(h, users[5], T0 + 100 * DAY, ev, 16) == 0);
    ASSERT(load_user(h, users[6], T0 + 100 * DAY, ev, 16) == (size_t)(3 + 6 % 5 + 2));
    ASSERT(load_user(h, users[7], T0 + 100 * DAY, ev, 16) == (size_t)(3 + 7 % 5));
    unsigned part5 = history_part_of(store_stable_hash_id(users[5], 3), PARTS);
    ASSERT(part_holds_hash(part5, users[5]));
    /* the next snapshot's archive: nothing new, the owed compaction */
    ASSERT(history_archive(h, dir, s2, T0 + 100 * DAY) == 0);
    history_stats(h, &st);
    ASSERT(st.tombstones == 0 && st.compactions == 1);
    ASSERT(!part_holds_hash(part5, users[5]));
    history_close(h);
    wal_close(wal);
    nparts = 1;
}

int main(void)
{
    test_round_trip();
    test_crash_between_archive_and_delete();
    test_erasure();
    test_compaction_owed_is_retried();
    test_bounds();
    test_late_events();
    test_corrupt_chunk();
    test_load_beside_compaction();
    test_damage_after_open();
    test_bad_segment_fails_archive();
    test_pass_drops_as_it_fills();
    test_invalid_records();
    test_parts();
    test_single_file_moves_into_parts();
    char cmd[200];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    ASSERT(system(cmd) == 0);
    TEST_DONE("training_history");
}
