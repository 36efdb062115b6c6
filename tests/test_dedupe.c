/* The keyed hash and the idempotency window: SipHash against published
 * values, ids crafted to collide under the old public hash spreading out
 * under a secret key, the window's expiry by time (an injected clock), its
 * cap and the early evictions it counts, and snapshots: the key and every
 * id's arrival time survive a round trip, and a format-2 file (unkeyed
 * hashes, no times) still loads with its ids recognised. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "dedupe.h"
#include "hash.h"
#include "predlog.h"
#include "snapshot.h"
#include "store.h"
#include "test_util.h"

/* The seeds the unkeyed hash64 used before keys (snapshot format <= 2). */
#define OLD_STORE_SEED 0x6c7476645f757372ull
#define OLD_DEDUPE_SEED 0x65766e745f696400ull

static uint64_t from_hex(const char *hex, unsigned char *out)
{
    size_t n = strlen(hex) / 2;
    for (size_t i = 0; i < n; i++)
        sscanf(hex + 2 * i, "%2hhx", &out[i]);
    return n;
}

static void test_siphash_values(void)
{
    /* the paper's vector (appendix A): key 00..0f, message 00..0e, SipHash-2-4 */
    HashKey k = {0x0706050403020100ull, 0x0f0e0d0c0b0a0908ull};
    unsigned char m[64];
    for (int i = 0; i < 15; i++)
        m[i] = (unsigned char)i;
    ASSERT(hash_siphash(&k, m, 15, 2, 4) == 0xa129ca6149be45e5ull);
    /* SipHash-1-3 under the zero key: what CPython 3.11's hash() of bytes
     * gives with PYTHONHASHSEED=0 (an independent implementation) */
    const HashKey zero = {0, 0};
    static const struct {
        const char *hex;
        uint64_t want;
    } v[] = {
        {"61", 4644417185603328019ull},
        {"68656c6c6f20776f726c6421", 839851713330019024ull},
        {"000102030405060708090a0b0c0d0e", 17514137373579004394ull},
        {"000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
         "202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f",
         8493894268803903686ull},
    };
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        size_t n = from_hex(v[i].hex, m);
        ASSERT(hash_keyed(&zero, m, n) == v[i].want);
    }
    /* two draws of the instance key differ (2^-128 to fail by chance) */
    HashKey a, b;
    ASSERT(hash_key_random(&a) == 0 && hash_key_random(&b) == 0);
    ASSERT(a.k0 != b.k0 || a.k1 != b.k1);
    ASSERT(hash_keyed(&a, "user-1", 6) != hash_keyed(&b, "user-1", 6));
}

/* Ids that all share one home position in a 1024-position index under the
 * old constant-seed hash: a client could build a probe chain of any length.
 * Under the secret key they spread like random ids. */
static void test_crafted_collisions(void)
{
    enum { WANT = 64, MASK = 1023 };
    static char ids[WANT][24];
    int found = 0;
    uint64_t target = hash64("victim", 6, OLD_STORE_SEED) & MASK;
    for (long k = 0; found < WANT && k < 10000000; k++) {
        char id[24];
        int n = snprintf(id, sizeof id, "flood-%ld", k);
        if ((hash64(id, (size_t)n, OLD_STORE_SEED) & MASK) == target)
            memcpy(ids[found++], id, (size_t)n + 1);
    }
    ASSERT(found == WANT);

    /* a store of 512 shoppers has exactly a 1024-position index */
    StoreConfig cfg = {512, 8, 2};
    Store *s;
    ASSERT(store_create(&s, &cfg) == 0);
    HashKey key;
    ASSERT(hash_key_random(&key) == 0);
    ASSERT(store_set_key(s, &key) == 0);
    unsigned char used[MASK + 1] = {0};
    int distinct = 0;
    for (int i = 0; i < WANT; i++) {
        UserState *u;
        ASSERT(store_insert(s, ids[i], strlen(ids[i]), &u) == 0);
        ASSERT(u->hash == store_hash(s, ids[i], strlen(ids[i])));
        size_t home = (size_t)(u->hash & MASK);
        distinct += !used[home];
        used[home] = 1;
    }
    /* 64 random homes among 1024 are ~62 distinct; under the old hash, 1 */
    ASSERT(distinct >= 48);
    for (int i = 0; i < WANT; i++)
        ASSERT(store_find(s, ids[i], strlen(ids[i])) != NULL);
    ASSERT(store_set_key(s, &key) == -EBUSY); /* the layout depends on it */
    store_destroy(s);

    /* the dedupe window too */
    Dedupe *d;
    ASSERT(dedupe_create(&d, 512, 600) == 0);
    ASSERT(dedupe_set_key(d, &key) == 0);
    memset(used, 0, sizeof used);
    distinct = 0;
    for (int i = 0; i < WANT; i++) {
        uint64_t k;
        ASSERT(!dedupe_seen(d, ids[i], strlen(ids[i]), &k));
        dedupe_insert(d, k, 1000);
        distinct += !used[k & MASK];
        used[k & MASK] = 1;
    }
    ASSERT(distinct >= 48);
    ASSERT(dedupe_set_key(d, &key) == -EBUSY);
    dedupe_destroy(d);
}

static bool seen(const Dedupe *d, const char *id)
{
    uint64_t k;
    return dedupe_seen(d, id, strlen(id), &k);
}

static void accept(Dedupe *d, const char *id, int64_t now)
{
    uint64_t k;
    ASSERT(!dedupe_seen(d, id, strlen(id), &k));
    dedupe_insert(d, k, now);
}

static void test_window_by_time(void)
{
    Dedupe *d;
    ASSERT(dedupe_create(&d, 1000, 600) == 0);
    HashKey key = {1, 2};
    dedupe_set_key(d, &key);
    char id[32];
    /* one id per second from t = 10,000 */
    for (int k = 0; k < 100; k++) {
        snprintf(id, sizeof id, "evt-%d", k);
        dedupe_expire(d, 10000 + k);
        accept(d, id, 10000 + k);
    }
    ASSERT(dedupe_count(d) == 100);
    /* 600 s after the first: all still there (the window is inclusive) */
    dedupe_expire(d, 10600);
    ASSERT(seen(d, "evt-0") && dedupe_count(d) == 100);
    /* 650 s: the first 50 (arrived 10,000..10,049) have expired */
    dedupe_expire(d, 10650);
    ASSERT(dedupe_count(d) == 50);
    for (int k = 0; k < 100; k++) {
        snprintf(id, sizeof id, "evt-%d", k);
        ASSERT(seen(d, id) == (k >= 50));
    }
    ASSERT(dedupe_evicted_early(d) == 0); /* expiry is not early eviction */
    /* an expired id is accepted again, with a new arrival */
    accept(d, "evt-3", 10650);
    dedupe_expire(d, 11200);
    ASSERT(seen(d, "evt-3") && !seen(d, "evt-99") && dedupe_count(d) == 1);
    /* a clock that steps back does not shorten anything: arrival stays ordered */
    accept(d, "back", 9000);
    dedupe_expire(d, 11250);
    ASSERT(seen(d, "back"));
    dedupe_destroy(d);

    /* window_s = 0: off */
    ASSERT(dedupe_create(&d, 1000, 0) == 0);
    accept(d, "x", 5);
    ASSERT(!seen(d, "x") && dedupe_count(d) == 0);
    dedupe_destroy(d);
}

static void test_cap(void)
{
    Dedupe *d;
    ASSERT(dedupe_create(&d, 100, 600) == 0);
    char id[32];
    for (int k = 0; k < 250; k++) {
        snprintf(id, sizeof id, "evt-%d", k);
        accept(d, id, 1000); /* all within the window */
        ASSERT(dedupe_count(d) <= 100);
    }
    ASSERT(dedupe_count(d) == 100);
    ASSERT(dedupe_evicted_early(d) == 150); /* pushed out before their 600 s */
    for (int k = 0; k < 250; k++) {
        snprintf(id, sizeof id, "evt-%d", k);
        ASSERT(seen(d, id) == (k >= 150)); /* the newest 100 */
    }
    dedupe_destroy(d);
}

/* Cluster mode: a partition's ids can be listed and forgotten apart from the
 * others' (a partition handed to another node takes its ids with it). */
typedef struct ShardSeen {
    uint64_t keys[64];
    int64_t at[64];
    size_t n;
} ShardSeen;

static void collect_shard(void *arg, uint64_t key, int64_t at)
{
    ShardSeen *s = arg;
    ASSERT(s->n < 64);
    s->keys[s->n] = key;
    s->at[s->n++] = at;
}

static void test_shards(void)
{
    Dedupe *d;
    ASSERT(dedupe_create(&d, 8, 600) == 0);
    ASSERT(dedupe_use_shards(d) == 0);
    char id[32];
    uint64_t keys[10];
    for (int k = 0; k < 10; k++) { /* shards 0,1,2,0,1,2,...; the cap of 8 evicts evt-0 and evt-1 */
        snprintf(id, sizeof id, "evt-%d", k);
        ASSERT(!dedupe_seen(d, id, strlen(id), &keys[k]));
        dedupe_insert_shard(d, keys[k], 1000 + k, (uint32_t)(k % 3));
    }
    ASSERT(dedupe_use_shards(d) == -EBUSY);
    ShardSeen s1 = {0};
    dedupe_foreach_shard(d, 1, collect_shard, &s1);
    ASSERT(s1.n == 2 && s1.keys[0] == keys[4] && s1.keys[1] == keys[7] && s1.at[0] == 1004 && s1.at[1] == 1007);

    /* forget shard 1: its ids are new again, the others are still seen, in order */
    bool drop[3] = {false, true, false};
    dedupe_drop_shards(d, drop, 3);
    ASSERT(dedupe_count(d) == 6);
    for (int k = 2; k < 10; k++) {
        snprintf(id, sizeof id, "evt-%d", k);
        ASSERT(seen(d, id) == (k % 3 != 1));
    }
    ShardSeen s0 = {0};
    dedupe_foreach_shard(d, 0, collect_shard, &s0);
    ASSERT(s0.n == 3 && s0.keys[0] == keys[3] && s0.keys[2] == keys[9]);
    /* expiry still goes oldest first after the compaction */
    dedupe_expire(d, 1000 + 5 + 601);
    ASSERT(dedupe_count(d) == 3 && !seen(d, "evt-5") && seen(d, "evt-6"));
    /* the freed room is used: no early eviction until 8 are held again */
    uint64_t before = dedupe_evicted_early(d);
    for (int k = 0; k < 5; k++) {
        snprintf(id, sizeof id, "new-%d", k);
        accept(d, id, 1700);
    }
    ASSERT(dedupe_count(d) == 8 && dedupe_evicted_early(d) == before);
    dedupe_destroy(d);
}

/* ---- snapshots ----------------------------------------------------------- */

static const StoreConfig SHAPE = {100, 8, 4};

typedef struct Tables {
    Store *store;
    Dedupe *dedupe;
    PredLog *predlog;
} Tables;

static void tables_create(Tables *t)
{
    ASSERT(store_create(&t->store, &SHAPE) == 0);
    ASSERT(dedupe_create(&t->dedupe, 1000, 600) == 0);
    ASSERT(predlog_create(&t->predlog, 16) == 0);
    HashKey k;
    ASSERT(hash_key_random(&k) == 0);
    store_set_key(t->store, &k);
    dedupe_set_key(t->dedupe, &k);
}

static void tables_destroy(Tables *t)
{
    store_destroy(t->store);
    dedupe_destroy(t->dedupe);
    predlog_destroy(t->predlog);
}

static void load(Tables *t, const char *path, int64_t load_time)
{
    SnapshotTables st = {t->store, t->dedupe, t->predlog, load_time};
    SnapshotInfo info;
    char err[256] = "";
    ASSERT(snapshot_check(path, t->store, &info, err, sizeof err) == 0);
    int rc = snapshot_load(path, &st, &info, err, sizeof err);
    if (rc)
        fprintf(stderr, "load: %s\n", err);
    ASSERT(rc == 0);
}

typedef struct Arrivals {
    int n;
    uint64_t key[16];
    int64_t at[16];
} Arrivals;

static void collect(void *arg, uint64_t key, int64_t at)
{
    Arrivals *a = arg;
    if (a->n < 16) {
        a->key[a->n] = key;
        a->at[a->n] = at;
    }
    a->n++;
}

static void collect_entry(void *arg, const PredLogEntry *e) { *(uint64_t *)arg = e->key; }

/* The file ltvd wrote before keyed hashing: format 2, one shopper "old-user"
 * (its slot's hash of the unkeyed function), three event_ids (unkeyed keys,
 * no times) and one pending prediction keyed by the old shopper hash. */
static void write_format2(const char *path)
{
    struct {
        char magic[8];
        uint32_t format, hidden, ring_cap, slot_bytes;
        uint64_t seq;
        int64_t event_clock;
        uint64_t purchases_total, users, dedupe_keys;
        uint32_t reserved[2];
    } h = {"LTVDSNAP", 2, 8, 4, 0, 7, 1700000000, 0, 1, 3, {0, 0}};
    Store *scratch;
    ASSERT(store_create(&scratch, &SHAPE) == 0);
    UserState *u;
    ASSERT(store_insert(scratch, "old-user", 8, &u) == 0);
    u->agg.events = 5;
    u->hash = hash64("old-user", 8, OLD_STORE_SEED);
    h.slot_bytes = (uint32_t)store_slot_bytes(scratch);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    ASSERT(fd >= 0);
    uint32_t crc = 0;
#define PUT(p, n)                                   \
    do {                                            \
        ASSERT(write(fd, p, n) == (ssize_t)(n));    \
        crc = crc32_update(crc, p, n);              \
    } while (0)
    PUT(&h, sizeof h);
    PUT(u, h.slot_bytes);
    const char *eids[3] = {"old-evt-a", "old-evt-b", "old-evt-c"};
    for (int i = 0; i < 3; i++) {
        uint64_t k = hash64(eids[i], strlen(eids[i]), OLD_DEDUPE_SEED);
        PUT(&k, 8);
    }
    uint64_t counts[2] = {1, 0};
    PUT(counts, sizeof counts);
    PredLogEntry e = {.key = u->hash, .t = 1700000000, .pred = 12.5};
    PUT(&e, offsetof(PredLogEntry, net_id)); /* a format-2 entry: no network yet (format 5) */
#undef PUT
    ASSERT(write(fd, &crc, 4) == 4);
    close(fd);
    store_destroy(scratch);
}

static void test_snapshots(void)
{
    char dir[] = "/tmp/ltvd-test-dedupe-XXXXXX";
    ASSERT(mkdtemp(dir));
    char old_path[128], path[128];
    snprintf(old_path, sizeof old_path, "%s/old.snap", dir);
    snprintf(path, sizeof path, "%s/new.snap", dir);

    /* 1. a format-2 file: the shopper is found under this instance's key,
     * its pending prediction follows it, the old ids are still duplicates
     * (arrived at load time) until the window passes */
    write_format2(old_path);
    Tables a;
    tables_create(&a);
    HashKey key_a = *store_key(a.store);
    load(&a, old_path, 50000);
    ASSERT(store_key(a.store)->k0 == key_a.k0 && store_key(a.store)->k1 == key_a.k1);
    UserState *u = store_find(a.store, "old-user", 8);
    ASSERT(u && u->agg.events == 5 && u->hash == store_hash(a.store, "old-user", 8));
    uint64_t entry_key = 0;
    predlog_foreach_entry(a.predlog, collect_entry, &entry_key);
    ASSERT(entry_key == u->hash);
    ASSERT(dedupe_count(a.dedupe) == 3 && dedupe_legacy_count(a.dedupe) == 3);
    ASSERT(seen(a.dedupe, "old-evt-a") && seen(a.dedupe, "old-evt-c") && !seen(a.dedupe, "old-evt-d"));
    Arrivals arr = {0};
    dedupe_foreach(a.dedupe, collect, &arr);
    ASSERT(arr.n == 3 && arr.at[0] == 50000 && arr.at[2] == 50000);
    /* new ids join under the key, later */
    accept(a.dedupe, "new-evt-1", 50100);
    accept(a.dedupe, "new-evt-2", 50200);
    UserState *nu;
    ASSERT(store_insert(a.store, "new-user", 8, &nu) == 0);
    nu->agg.events = 2;

    /* 2. format 3 round trip: another instance loading it takes the file's
     * key (the index and the ids stay valid), every arrival time, and which
     * keys are legacy ones */
    SnapshotTables st = {a.store, a.dedupe, a.predlog, 0};
    SnapshotInfo info = {.seq = 9, .event_clock = 1700000001};
    size_t bytes;
    ASSERT(snapshot_write(path, &st, &info, &bytes) == 0 && bytes > 0);
    Tables b;
    tables_create(&b);
    ASSERT(store_key(b.store)->k0 != key_a.k0 || store_key(b.store)->k1 != key_a.k1);
    load(&b, path, 99999);
    ASSERT(store_key(b.store)->k0 == key_a.k0 && store_key(b.store)->k1 == key_a.k1);
    ASSERT(store_find(b.store, "old-user", 8)->agg.events == 5);
    ASSERT(store_find(b.store, "new-user", 8)->agg.events == 2);
    ASSERT(store_find(b.store, "new-user", 8)->hash == nu->hash);
    ASSERT(dedupe_count(b.dedupe) == 5 && dedupe_legacy_count(b.dedupe) == 3);
    Arrivals arr2 = {0};
    dedupe_foreach(b.dedupe, collect, &arr2);
    ASSERT(arr2.n == 5 && arr2.at[0] == 50000 && arr2.at[3] == 50100 && arr2.at[4] == 50200);
    for (int i = 0; i < 3; i++)
        ASSERT(arr2.key[i] == arr.key[i]); /* the legacy keys, as they were */
    ASSERT(seen(b.dedupe, "old-evt-b") && seen(b.dedupe, "new-evt-1") && seen(b.dedupe, "new-evt-2"));
    /* the window goes on from the saved times: at 50,650 the legacy ids
     * (arrived 50,000) have left, new-evt-1 (50,100) not yet */
    dedupe_expire(b.dedupe, 50650);
    ASSERT(!seen(b.dedupe, "old-evt-b") && dedupe_legacy_count(b.dedupe) == 0);
    ASSERT(seen(b.dedupe, "new-evt-1") && seen(b.dedupe, "new-evt-2"));
    dedupe_expire(b.dedupe, 50750);
    ASSERT(!seen(b.dedupe, "new-evt-1") && seen(b.dedupe, "new-evt-2"));

    /* 3. a loaded key cannot replace a used one */
    SnapshotTables busy = {b.store, b.dedupe, b.predlog, 0};
    char err[256];
    ASSERT(snapshot_load(path, &busy, &info, err, sizeof err) != 0);

    tables_destroy(&a);
    tables_destroy(&b);
    unlink(old_path);
    unlink(path);
    rmdir(dir);
}

int main(void)
{
    test_siphash_values();
    test_crafted_collisions();
    test_window_by_time();
    test_cap();
    test_shards();
    test_snapshots();
    TEST_DONE("test_dedupe");
}
