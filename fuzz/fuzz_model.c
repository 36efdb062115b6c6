/* fuzz_model: a model file (model.c model_load) as ltvd reads
 * storage.dir/model.bin at start. Each input is tried as given and with its
 * trailing CRC-32 recomputed (see fuzz_snapshot.c). A loaded model must
 * predict finite figures for a cold and a known shopper, and save to a
 * file that loads again. */
#include <math.h>

#include "fuzz_common.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static FuzzFile file;
static char saved_path[160];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    log_set_level(LOG_ERROR);
    fuzz_file_init(&file, "ltvd-fuzz-model");
    snprintf(saved_path, sizeof saved_path, "%s/model.bin", fuzz_scratch_dir("model"));
    return 0;
}

static void try_load(void)
{
    char err[512] = "";
    Model *m = NULL;
    int rc = model_load(&m, file.path, FUZZ_HIDDEN, err, sizeof err);
    if (rc) {
        FUZZ_CHECK(m == NULL && err[0]);
        return;
    }
    FUZZ_CHECK(m != NULL);
    Prediction p;
    model_predict(m, NULL, NULL, NULL, 1700000000, &p); /* an unknown shopper */
    ShopperAgg agg;
    shopper_agg_init(&agg);
    Event ev = {.user_id = "u", .user_len = 1, .type = EV_PURCHASE, .ts = 1690000000, .value = 20, .quantity = 1};
    shopper_agg_apply(&agg, &ev);
    ev.ts = 1695000000;
    shopper_agg_apply(&agg, &ev);
    float h[FUZZ_HIDDEN] = {0.1f, -0.2f, 0.3f, 0, 0, 0.5f, -0.5f, 0.9f};
    model_predict(m, h, &agg, NULL, 1700000000, &p);
    FUZZ_CHECK(model_save(m, saved_path) == 0);
    Model *again = NULL;
    rc = model_load(&again, saved_path, FUZZ_HIDDEN, err, sizeof err);
    if (rc)
        fprintf(stderr, "reload failed: %s\n", err);
    FUZZ_CHECK(rc == 0);
    model_release(again);
    model_release(m);
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
