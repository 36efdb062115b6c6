/* The training history on disk (history.c) without HTTP: log segments
 * archived and read back; a crash between archiving and deleting the
 * segments (archived again, reopened, a chunk cut in the middle) neither
 * loses nor duplicates an event; an erasure's tombstone hides the
 * shopper's earlier records and compaction removes its hash's bytes from
 * the file (a compaction that failed is retried at the next archive); the
 * per-shopper, days and byte bounds hold; late events are
 * left out as the LSTM leaves them out; a corrupt chunk is cut with a
 * warning, never a crash. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

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

static void fresh_dir(void)
{
    char cmd[200];
    if (dir[0]) {
        snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
        ASSERT(system(cmd) == 0);
    }
    snprintf(dir, sizeof dir, "/tmp/ltvd-thist-XXXXXX");
    ASSERT(mkdtemp(dir) != NULL);
    snprintf(hpath, sizeof hpath, "%s/history/%s", dir, HISTORY_FILE);
    WalConfig cfg = {dir, WAL_FSYNC_NONE, 10, 1 << 24, 1 << 20, NULL};
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

static History *open_history(int max_events, int max_days, uint64_t max_bytes)
{
    HistoryConfig hc = {dir, max_events, max_days, max_bytes};
    History *h;
    char err[256];
    ASSERT(history_open(&h, &hc, err, sizeof err) == 0);
    return h;
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
    ASSERT(!file_holds_hash("dora"));
    ASSERT(file_holds_hash("erin"));
    history_close(h);
    /* and after a restart */
    h = open_history(1024, 3650, 1 << 30);
    ASSERT(load_user(h, "dora", T0 + 100 * DAY, ev, 64) == 0);
    history_stats(h, &st);
    ASSERT(st.records == 3 && st.archived_seq == s2 - 1);
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
    int fd = open(hpath, O_RDWR);
    ASSERT(fd >= 0);
    unsigned char b;
    ASSERT(pread(fd, &b, 1, 16 + 24 + 5) == 1);
    b ^= 0x40;
    ASSERT(pwrite(fd, &b, 1, 16 + 24 + 5) == 1);
    close(fd);
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
    fd = open(hpath, O_WRONLY | O_TRUNC);
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

int main(void)
{
    test_round_trip();
    test_crash_between_archive_and_delete();
    test_erasure();
    test_compaction_owed_is_retried();
    test_bounds();
    test_late_events();
    test_corrupt_chunk();
    char cmd[200];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    ASSERT(system(cmd) == 0);
    TEST_DONE("training_history");
}
