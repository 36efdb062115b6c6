/* fuzz_snapshot: a snapshot file (snapshot.c) through the path recovery
 * takes: snapshot_check, then snapshot_load into empty tables of the
 * seeds' shape (fuzz_common.h), then a walk over every restored shopper as
 * a prediction or a state rebuild reads it (ring, aggregates, state).
 * Each input is tried twice: as given (the CRC must refuse nearly all of
 * them), and with its trailing CRC-32 recomputed, so the fuzzer reaches
 * the fields a checksum protects (a file ltvd wrote, then damaged where
 * the CRC cannot tell, or written by a buggy build). */
#include "dedupe.h"
#include "fuzz_common.h"
#include "predlog.h"
#include "shopper.h"
#include "snapshot.h"
#include "store.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static FuzzFile file;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    log_set_level(LOG_ERROR);
    fuzz_file_init(&file, "ltvd-fuzz-snapshot");
    return 0;
}

/* Reads a restored shopper as the service would. */
static int visit(void *arg, UserState *u)
{
    Store *s = arg;
    const StoreConfig *sc = store_config(s);
    FUZZ_CHECK(u->id_len >= 1 && u->id_len <= USER_ID_MAX);
    FUZZ_CHECK(u->ring_len <= (unsigned)sc->ring_cap);
    double sum = 0;
    for (unsigned k = 0; k < u->ring_len; k++) {
        Event ev;
        store_ring_event(store_ring_at(s, u, k), &ev);
        sum += ev.value + (double)ev.ts;
    }
    const float *h = store_user_h(s, u), *c = store_user_c(s, u);
    for (int i = 0; i < sc->hidden; i++)
        sum += h[i] + c[i];
    CustomerSummary cs;
    (void)shopper_summary(&u->agg, 4102444800LL, &cs);
    UserState *again = store_find(s, u->id, u->id_len);
    FUZZ_CHECK(again == u);
    return sum != sum ? 0 : 0; /* the sum only keeps the reads */
}

static void try_load(void)
{
    StoreConfig sc = {.max_users = 64, .hidden = FUZZ_HIDDEN, .ring_cap = FUZZ_RING};
    Store *store = NULL;
    Dedupe *dd = NULL;
    PredLog *pl = NULL;
    if (store_create(&store, &sc) || dedupe_create(&dd, 256, 600) || predlog_create(&pl, 64))
        abort();
    char err[512] = "";
    SnapshotInfo info;
    int rc = snapshot_check(file.path, store, &info, err, sizeof err);
    FUZZ_CHECK(rc == 0 || rc == -EINVAL || rc == -EBADMSG || rc == -ENOMEM);
    if (rc == 0) {
        SnapshotTables t = {.store = store, .dedupe = dd, .predlog = pl};
        err[0] = '\0';
        rc = snapshot_load(file.path, &t, &info, err, sizeof err);
        if (rc == 0) {
            FUZZ_CHECK(store_count(store) <= sc.max_users);
            store_visit(store, 16, visit, store);
        }
    }
    predlog_destroy(pl);
    dedupe_destroy(dd);
    store_destroy(store);
}

/* One try: the file's contents are p (n,). */
static void run(const unsigned char *p, size_t n)
{
    fuzz_file_set(&file, p, n);
    try_load();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_run_fixed(data, size, fuzz_fix_trailing_crc, run);
    return 0;
}
