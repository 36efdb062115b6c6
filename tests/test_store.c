/* The shopper table: lookups after many inserts and deletes, the cap, the
 * recent-event ring. (The dedupe window: test_dedupe.c.) */
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "store.h"
#include "test_util.h"
#include "util.h"

static void id_of(int k, char *buf, size_t n) { snprintf(buf, n, "user-%d", k); }

static void test_table(void)
{
    Store *s;
    StoreConfig cfg = {5000, 32, 4};
    ASSERT(store_create(&s, &cfg) == 0);
    static unsigned char present[5000];
    char id[32];
    uint64_t rng = 99;
    /* random inserts and deletes, checked against a plain array */
    for (int op = 0; op < 60000; op++) {
        rng = rng * 6364136223846793005ull + 1442695040888963407ull;
        int k = (int)((rng >> 33) % 5000);
        id_of(k, id, sizeof id);
        UserState *u;
        if (present[k]) {
            ASSERT(store_remove(s, id, strlen(id)) == 0);
            present[k] = 0;
        } else {
            ASSERT(store_insert(s, id, strlen(id), &u) == 0);
            ASSERT(u->id_len == strlen(id));
            u->agg.events = (uint32_t)k;
            present[k] = 1;
        }
        if (op % 5000 == 0) {
            size_t n = 0;
            for (int j = 0; j < 5000; j++) {
                id_of(j, id, sizeof id);
                UserState *f = store_find(s, id, strlen(id));
                ASSERT((f != NULL) == present[j]);
                if (f) {
                    ASSERT(f->agg.events == (uint32_t)j);
                    n++;
                }
            }
            ASSERT(store_count(s) == n);
        }
    }
    store_destroy(s);
}

static void test_cap(void)
{
    Store *s;
    StoreConfig cfg = {3, 8, 2};
    ASSERT(store_create(&s, &cfg) == 0);
    UserState *u;
    ASSERT(store_insert(s, "a", 1, &u) == 0);
    ASSERT(store_insert(s, "b", 1, &u) == 0);
    ASSERT(store_insert(s, "c", 1, &u) == 0);
    ASSERT(store_insert(s, "d", 1, &u) == -ENOSPC);
    ASSERT(store_insert(s, "a", 1, &u) == -EEXIST);
    ASSERT(store_remove(s, "b", 1) == 0);
    ASSERT(store_remove(s, "b", 1) == -ENOENT);
    ASSERT(store_insert(s, "d", 1, &u) == 0); /* the freed slot is reused */
    ASSERT(store_count(s) == 3);
    ASSERT(store_slot_bytes(s) <= 1024);
    store_destroy(s);
}

static void test_ring(void)
{
    Store *s;
    StoreConfig cfg = {10, 32, 32};
    ASSERT(store_create(&s, &cfg) == 0);
    /* hidden 32, 32 recent events: the brief's budget is 1 KiB per shopper */
    ASSERT(store_slot_bytes(s) <= 1024);
    store_destroy(s);
    StoreConfig small = {10, 4, 3};
    ASSERT(store_create(&s, &small) == 0);
    UserState *u;
    ASSERT(store_insert(s, "x", 1, &u) == 0);
    for (int k = 0; k < 5; k++) {
        Event ev = {.ts = 1000 + k, .value = k, .quantity = 1, .type = k == 1 ? EV_PURCHASE : EV_VIEW};
        store_ring_push(s, u, &ev);
    }
    ASSERT(u->ring_len == 3);
    ASSERT(store_ring_at(s, u, 0)->ts == 1002 && store_ring_at(s, u, 2)->ts == 1004);
    /* the two evicted events moved into the ring's starting context */
    ASSERT(u->ring_ctx.events_before == 2 && u->ring_ctx.purchases_before == 1);
    ASSERT(u->ring_ctx.prev_ts == 1001 && u->ring_ctx.first_ts == 1000);
    store_destroy(s);
}

typedef struct Collect {
    unsigned char seen[10000];
    int n, stop_every;
} Collect;

static int collect_visit(void *arg, UserState *u)
{
    Collect *c = arg;
    int k = 0;
    ASSERT(sscanf(u->id, "user-%d", &k) == 1 && k >= 0 && k < 10000);
    c->seen[k]++;
    return ++c->n % c->stop_every == 0;
}

/* A walk stopped by its visitor and resumed where store_visit_from said
 * visits every shopper exactly once, deleted slots skipped. */
static void test_visit_from(void)
{
    Store *s;
    StoreConfig cfg = {10000, 8, 2};
    ASSERT(store_create(&s, &cfg) == 0);
    char id[32];
    UserState *u;
    for (int k = 0; k < 10000; k++) {
        id_of(k, id, sizeof id);
        ASSERT(store_insert(s, id, strlen(id), &u) == 0);
    }
    for (int k = 0; k < 10000; k += 3) {
        id_of(k, id, sizeof id);
        ASSERT(store_remove(s, id, strlen(id)) == 0);
    }
    static Collect c;
    c.stop_every = 77;
    int walks = 0;
    for (size_t at = 0; at != SIZE_MAX; walks++)
        at = store_visit_from(s, at, 50, collect_visit, &c);
    for (int k = 0; k < 10000; k++)
        ASSERT(c.seen[k] == (k % 3 ? 1 : 0));
    ASSERT(walks == c.n / 77 + 1);
    store_destroy(s);
}

/* A snapshot's raw slot is checked before it becomes a shopper: a ring
 * longer than the table's (training copies ring_len events into a set sized
 * by ring_cap), a ring start outside it, an event type ltvd does not have,
 * purchase days or times out of range, or an id that is not one all refuse the slot and leave the table as it
 * was. (Found by fuzz/fuzz_snapshot.c on files whose CRC was made right.) */
static void test_restore_checks(void)
{
    Store *a, *b;
    StoreConfig cfg = {10, 4, 3};
    ASSERT(store_create(&a, &cfg) == 0 && store_create(&b, &cfg) == 0);
    UserState *u;
    ASSERT(store_insert(a, "shopper", 7, &u) == 0);
    for (int k = 0; k < 2; k++) {
        Event ev = {.ts = 1000 + k, .value = 2, .quantity = 1, .type = EV_PURCHASE};
        store_ring_push(a, u, &ev);
    }
    size_t n = store_slot_bytes(a);
    UserState *raw = malloc(n);
    ASSERT(raw);
    for (int bad = 0; bad < 8; bad++) {
        memcpy(raw, u, n);
        switch (bad) {
        case 0: raw->ring_len = 4; break;                      /* > ring_cap 3 */
        case 1: raw->ring_len = 65535; break;
        case 2: raw->ring_head = 3; break;                     /* not < ring_cap */
        case 3: ((RecentEvent *)(raw->data + 2 * 4))[1].type = EV_NTYPES; break;
        case 4: raw->id[2] = '\xff'; break;                    /* not UTF-8 */
        case 5: raw->id_len = 0; break;
        case 6: raw->agg.last_purchase_day = INT32_MIN + 4; break; /* t_x overflowed in shopper_summary */
        case 7: raw->agg.first_ts = -1; break;
        }
        int rc = store_restore(b, raw);
        ASSERT(rc == -EBADMSG || (bad == 5 && rc == -EINVAL));
        ASSERT(store_count(b) == 0 && store_find(b, "shopper", 7) == NULL);
    }
    /* the slot as written restores, its ring and id intact */
    memcpy(raw, u, n);
    memset(raw->id + raw->id_len, 'z', sizeof raw->id - raw->id_len); /* bytes past the id are not kept */
    ASSERT(store_restore(b, raw) == 0);
    UserState *r = store_find(b, "shopper", 7);
    ASSERT(r && r->ring_len == 2 && store_ring_at(b, r, 1)->ts == 1001 && r->id[7] == '\0');
    free(raw);
    store_destroy(a);
    store_destroy(b);
}

/* Is p inside a mapping marked for transparent huge pages (VmFlags "hg"
 * in /proc/self/smaps)? */
static bool advised_huge(const void *p)
{
    FILE *f = fopen("/proc/self/smaps", "r");
    ASSERT(f != NULL);
    char line[512];
    bool inside = false, hg = false;
    while (fgets(line, sizeof line, f)) {
        uintptr_t lo, hi;
        if (sscanf(line, "%" SCNxPTR "-%" SCNxPTR " ", &lo, &hi) == 2 && strchr(line, '-') < strchr(line, ' '))
            inside = lo <= (uintptr_t)p && (uintptr_t)p < hi;
        else if (inside && strncmp(line, "VmFlags:", 8) == 0)
            hg = strstr(line, " hg") != NULL;
    }
    fclose(f);
    return hg;
}

/* Does this kernel take MADV_HUGEPAGE (a test mapping of its own)? */
static bool kernel_takes_huge_advice(void)
{
#ifdef MADV_HUGEPAGE
    size_t len = 4u << 20;
    void *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    ASSERT(m != MAP_FAILED);
    bool ok = madvise(m, len, MADV_HUGEPAGE) == 0;
    munmap(m, len);
    return ok;
#else
    return false;
#endif
}

/* The big tables live in mappings of their own, 2 MiB-aligned and marked
 * for huge pages: a snapshot's fork (under the store lock) then copies one
 * page-table entry per 2 MiB of shoppers, not 512. */
static void test_huge_tables(void)
{
    bool huge = util_table_huge() && kernel_takes_huge_advice();
    size_t big = (5u << 20) + 100;
    unsigned char *p = util_table_alloc(big);
    ASSERT(p != NULL);
    if (util_table_huge())
        ASSERT(((uintptr_t)p & ((2u << 20) - 1)) == 0);
    size_t nonzero = 0;
    for (size_t i = 0; i < big; i++)
        nonzero += p[i] != 0;
    ASSERT(nonzero == 0);
    memset(p, 0xab, big); /* all of it writable */
    if (huge)
        ASSERT(advised_huge(p + big - 1));
    util_table_free(p, big);
    unsigned char *small = util_table_alloc(100);
    ASSERT(small != NULL && small[99] == 0);
    util_table_free(small, 100);

    Store *s;
    StoreConfig cfg = {100000, 32, 32};
    ASSERT(store_create(&s, &cfg) == 0);
    UserState *u;
    ASSERT(store_insert(s, "a", 1, &u) == 0);
    if (huge)
        ASSERT(advised_huge(u));
    else
        printf("no huge-page advice here (AddressSanitizer build, or a kernel that refuses it): only the "
               "allocation was checked\n");
    store_destroy(s);
}

int main(void)
{
    test_table();
    test_cap();
    test_ring();
    test_restore_checks();
    test_visit_from();
    test_huge_tables();
    TEST_DONE("test_store");
}
