/* Snapshot files: a round trip, and every way snapshot_load can fail says
 * which file and why (issue 12, item 10): missing, not a snapshot, cut
 * short in each section, more shoppers than limits.max_users, tables that
 * are not empty (the file's hash key cannot be set under their layout).
 * The adjuster's pairs keep the time their prediction was served; a
 * format-3 file's pairs (without it) load with that time unknown. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dedupe.h"
#include "snapshot.h"
#include "store.h"
#include "test_util.h"
#include "util.h"

#define SHOPPERS 50
#define KEYS 20

static char dir[] = "/tmp/ltvd-test-snapshot-XXXXXX";
static char path[256], cut[256];

/* Tables to load into: empty unless `with` names a shopper already there. */
static void fresh(Store **s, Dedupe **d, size_t max_users, const char *with)
{
    StoreConfig cfg = {max_users, 8, 4};
    ASSERT(store_create(s, &cfg) == 0);
    ASSERT(dedupe_create(d, 100, 600) == 0);
    UserState *u;
    if (with)
        ASSERT(store_insert(*s, with, strlen(with), &u) == 0);
}

/* Loads file into fresh tables; returns the code, err gets the text. */
static int load(const char *file, size_t max_users, const char *with, char *err, size_t errlen)
{
    Store *s;
    Dedupe *d;
    fresh(&s, &d, max_users, with);
    SnapshotTables t = {.store = s, .dedupe = d, .predlog = NULL};
    SnapshotInfo info;
    err[0] = '\0';
    int rc = snapshot_load(file, &t, &info, err, errlen);
    if (!rc) {
        ASSERT(info.users == SHOPPERS && info.seq == 42);
        ASSERT(store_count(s) == SHOPPERS + (with ? 1 : 0) && dedupe_count(d) == KEYS);
    }
    store_destroy(s);
    dedupe_destroy(d);
    return rc;
}

/* A copy of path cut to `len` bytes. */
static void write_cut(size_t len)
{
    FILE *in = fopen(path, "rb"), *out = fopen(cut, "wb");
    ASSERT(in && out);
    char *buf = malloc(len ? len : 1);
    ASSERT(buf && fread(buf, 1, len, in) == len && fwrite(buf, 1, len, out) == len);
    free(buf);
    fclose(in);
    fclose(out);
}

static void expect_text(const char *err, const char *a, const char *b)
{
    if (!strstr(err, a) || (b && !strstr(err, b))) {
        fprintf(stderr, "error text '%s' lacks '%s'%s%s\n", err, a, b ? " or " : "", b ? b : "");
        exit(1);
    }
    test_checks++;
}

static double spent_twice(void *arg, const PredLogEntry *e)
{
    (void)arg;
    return 2.0 * e->pred;
}

#define PAIRS 3

/* Rewrites the snapshot at path (bytes long, format `from`, one pending
 * prediction and PAIRS pairs last, before the crc) as format from - 1: each
 * entry and pair cut to that format's size. Returns the new length. */
static size_t downgrade(size_t bytes, uint32_t from, size_t entry, size_t pair, size_t entry_old, size_t pair_old)
{
    FILE *f = fopen(path, "rb");
    unsigned char *buf = malloc(bytes), *old = malloc(bytes);
    ASSERT(f && buf && old && fread(buf, 1, bytes, f) == bytes);
    fclose(f);
    size_t log_at = bytes - 4 - PAIRS * pair - entry, n = log_at;
    memcpy(old, buf, log_at);
    uint32_t format = from - 1;
    memcpy(old + 8, &format, 4);
    memcpy(old + n, buf + log_at, entry_old);
    n += entry_old;
    for (int k = 0; k < PAIRS; k++, n += pair_old)
        memcpy(old + n, buf + log_at + entry + k * pair, pair_old);
    uint32_t crc = crc32_update(0, old, n);
    memcpy(old + n, &crc, 4);
    f = fopen(path, "wb");
    ASSERT(f && fwrite(old, 1, n + 4, f) == n + 4);
    fclose(f);
    free(buf);
    free(old);
    return n + 4;
}

/* Writes a snapshot holding PAIRS matured pairs and one pending
 * prediction, loads it back (pairs, their times and networks intact), then
 * rewrites it as format 4 (no network: each entry and pair without its
 * last 8 bytes) and loads that (network 0), then as format 3 (each pair
 * without its time as well: time 0). */
static void check_pairs(void)
{
    Store *s;
    Dedupe *d;
    PredLog *l, *back;
    fresh(&s, &d, 1000, NULL);
    ASSERT(predlog_create(&l, 10) == 0);
    for (int k = 0; k < PAIRS; k++) {
        PredLogEntry e = {.key = 100 + (uint64_t)k, .t = 1700000000 + k, .pred = 1.5 + k, .recency_days = 3.0f + (float)k,
                          .tenure_days = 40.0f, .model_version = 1, .net_id = 9};
        predlog_record(l, &e);
    }
    size_t cursor = 0;
    while (predlog_mature(l, 1700000000 + PAIRS, &cursor, 64, spent_twice, NULL))
        ;
    AdjPair want[PAIRS], got[PAIRS + 1];
    ASSERT(predlog_pairs(l, want, PAIRS) == PAIRS);
    PredLogEntry pending = {.key = 200, .t = 1700000000 + 99, .pred = 2.0, .model_version = 1, .net_id = 9};
    predlog_record(l, &pending); /* one still waiting for its outcome */
    SnapshotTables t = {.store = s, .dedupe = d, .predlog = l};
    SnapshotInfo info = {.seq = 42};
    size_t bytes = 0;
    ASSERT(snapshot_write(path, &t, &info, &bytes) == 0);
    ASSERT(snapshot_size_estimate(&t) == bytes); /* the disk-space check counts the log too */
    store_destroy(s);
    dedupe_destroy(d);
    char err[512];
    for (uint32_t fmt = 5; fmt >= 3; fmt--) {
        fresh(&s, &d, 1000, NULL);
        ASSERT(predlog_create(&back, 10) == 0);
        t = (SnapshotTables){.store = s, .dedupe = d, .predlog = back};
        ASSERT(snapshot_check(path, s, &info, err, sizeof err) == 0); /* what recovery runs first */
        ASSERT(snapshot_load(path, &t, &info, err, sizeof err) == 0);
        ASSERT(predlog_pairs(back, got, PAIRS) == PAIRS);
        for (int k = 0; k < PAIRS; k++) {
            ASSERT(got[k].pred == want[k].pred && got[k].actual == want[k].actual && got[k].actual > 0);
            ASSERT(got[k].recency_days == want[k].recency_days && got[k].tenure_days == want[k].tenure_days);
            ASSERT(got[k].t == (fmt >= 4 ? want[k].t : 0) && want[k].t >= 1700000000);
            ASSERT(got[k].net == (fmt >= 5 ? 9u : 0u) && want[k].net == 9);
        }
        /* the pending prediction comes back, its network with it (format 5) */
        cursor = 0;
        while (predlog_mature(back, 1700000000 + 99, &cursor, 64, spent_twice, NULL))
            ;
        ASSERT(predlog_pairs(back, got, PAIRS + 1) == PAIRS + 1 && got[PAIRS].pred == 2.0);
        ASSERT(got[PAIRS].net == (fmt >= 5 ? 9u : 0u) && got[PAIRS].t == 1700000000 + 99);
        predlog_destroy(back);
        store_destroy(s);
        dedupe_destroy(d);
        if (fmt == 5)
            bytes = downgrade(bytes, 5, sizeof(PredLogEntry), sizeof(AdjPair), offsetof(PredLogEntry, net_id),
                              offsetof(AdjPair, net));
        else if (fmt == 4)
            bytes = downgrade(bytes, 4, offsetof(PredLogEntry, net_id), offsetof(AdjPair, net),
                              offsetof(PredLogEntry, net_id), offsetof(AdjPair, t));
    }
    predlog_destroy(l);
    unlink(path);
}

int main(void)
{
    ASSERT(mkdtemp(dir) != NULL);
    snprintf(path, sizeof path, "%s/snapshot-000000000000002a.snap", dir);
    snprintf(cut, sizeof cut, "%s/cut.snap", dir);
    Store *s;
    Dedupe *d;
    fresh(&s, &d, 1000, NULL);
    char id[32];
    for (int k = 0; k < SHOPPERS; k++) {
        UserState *u;
        snprintf(id, sizeof id, "shopper-%d", k);
        ASSERT(store_insert(s, id, strlen(id), &u) == 0);
    }
    for (int k = 0; k < KEYS; k++) {
        snprintf(id, sizeof id, "evt-%d", k);
        uint64_t key;
        ASSERT(!dedupe_seen(d, id, strlen(id), &key));
        dedupe_insert(d, key, 1000);
    }
    SnapshotTables t = {.store = s, .dedupe = d, .predlog = NULL};
    SnapshotInfo info = {.seq = 42, .event_clock = 7, .purchases_total = 3};
    size_t bytes = 0;
    ASSERT(snapshot_write(path, &t, &info, &bytes) == 0);
    struct stat st;
    ASSERT(stat(path, &st) == 0 && (size_t)st.st_size == bytes && (st.st_mode & 0137) == 0); /* at most 0640 */
    size_t slot = store_slot_bytes(s);
    store_destroy(s);
    dedupe_destroy(d);

    char err[512];
    ASSERT(load(path, 1000, NULL, err, sizeof err) == 0);

    /* missing: the path and the reason */
    ASSERT(load("/nonexistent/snapshot.snap", 1000, NULL, err, sizeof err) == -ENOENT);
    expect_text(err, "/nonexistent/snapshot.snap", "No such file");

    /* not a snapshot */
    FILE *f = fopen(cut, "wb");
    ASSERT(f && fputs("certainly not a snapshot, but long enough to hold a header....", f) >= 0);
    fclose(f);
    ASSERT(load(cut, 1000, NULL, err, sizeof err) == -EBADMSG);
    expect_text(err, cut, "not an ltvd snapshot");

    /* cut short in each section: the hash key (after the 72-byte header),
     * shoppers, the event_id window (16 bytes an id: key and arrival), the
     * prediction log's counts (two zero counts and a crc end the file) */
    size_t header = bytes - SHOPPERS * slot - 16 * KEYS - 16 - 4, shoppers_end = header + SHOPPERS * slot;
    size_t cuts[] = {80, header + slot / 2, shoppers_end + 16 * KEYS / 2, shoppers_end + 16 * KEYS + 4};
    const char *sections[] = {"the hash key", "the shoppers", "the event_id window", "the prediction log's counts"};
    for (int k = 0; k < 4; k++) {
        write_cut(cuts[k]);
        ASSERT(load(cut, 1000, NULL, err, sizeof err) == -EBADMSG);
        expect_text(err, cut, "truncated");
        expect_text(err, sections[k], NULL);
    }

    /* more shoppers than limits.max_users */
    ASSERT(load(path, 10, NULL, err, sizeof err) == -ENOSPC);
    expect_text(err, path, "limits.max_users=10");

    /* a shopper already in the store: the file's hash key cannot be set */
    ASSERT(load(path, 1000, "shopper-3", err, sizeof err) == -EBUSY);
    expect_text(err, path, "not empty");

    /* the writer replaces a stale temp file, and never follows a link there */
    char tmp[300], target[300];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    snprintf(target, sizeof target, "%s/target", dir);
    ASSERT(symlink(target, tmp) == 0);
    fresh(&s, &d, 1000, "x");
    t = (SnapshotTables){.store = s, .dedupe = d, .predlog = NULL};
    ASSERT(snapshot_write(tmp, &t, &info, &bytes) == 0);
    ASSERT(lstat(tmp, &st) == 0 && S_ISREG(st.st_mode) && access(target, F_OK) != 0);
    store_destroy(s);
    dedupe_destroy(d);

    check_pairs();
    unlink(tmp);
    unlink(cut);
    unlink(path);
    rmdir(dir);
    TEST_DONE("test_snapshot");
}
