/* Snapshot files: a round trip, and every way snapshot_load can fail says
 * which file and why (issue 12, item 10): missing, not a snapshot, cut
 * short in each section, more shoppers than limits.max_users, tables that
 * are not empty (the file's hash key cannot be set under their layout). */
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

    unlink(tmp);
    unlink(cut);
    unlink(path);
    rmdir(dir);
    TEST_DONE("test_snapshot");
}
