/* The model history without HTTP (model_history.c): saved serving models
 * become model-<version>.bin and model.bin; a rollback serves an older file
 * and becomes model.bin; a job that built its model from the model serving
 * before a rollback cannot publish over it; an import is checked like a
 * start's model_load and joins the history without serving; model.keep
 * bounds the files, the serving one always kept; an adjuster run's model
 * replaces its parent's file, unless a rollback made the parent serve. */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "service.h"
#include "service_testing.h"
#include "test_util.h"

static Model *trained_model(int hidden, uint64_t seed, uint64_t version)
{
    LstmWeights *net;
    ASSERT(lstm_weights_create(&net, hidden, seed, (uint32_t)version) == 0);
    FallbackFit fit = {BGNBD_CDNOW_PRIOR, GG_CDNOW_PRIOR, 0, 0, 0, 0, {0}};
    Model *m;
    ASSERT(model_create(&m, net, &fit, 182, MODEL_TRAINED, version) == 0);
    lstm_weights_release(net);
    m->trained_at = 1700000000 + (int64_t)version;
    return m;
}

static uint64_t serving(Service *s)
{
    Model *m = service_model_acquire(s);
    uint64_t v = m->version;
    model_release(m);
    return v;
}

/* The versions of model-*.bin in dir, ascending, as one string "2,3". */
static void files(const char *dir, char *out, size_t cap)
{
    int have[64] = {0};
    DIR *d = opendir(dir);
    ASSERT(d);
    struct dirent *e;
    unsigned v;
    char tail[8];
    while ((e = readdir(d)) != NULL)
        if (sscanf(e->d_name, "model-%u.%7s", &v, tail) == 2 && strcmp(tail, "bin") == 0 && v < 64)
            have[v] = 1;
    closedir(d);
    size_t n = 0;
    out[0] = '\0';
    for (unsigned i = 0; i < 64; i++)
        if (have[i])
            n += (size_t)snprintf(out + n, cap - n, "%s%u", n ? "," : "", i);
}

static uint64_t model_bin_version(const char *dir, int hidden)
{
    char path[512], err[256];
    snprintf(path, sizeof path, "%s/model.bin", dir);
    Model *m;
    ASSERT(model_load(&m, path, hidden, err, sizeof err) == 0);
    uint64_t v = m->version;
    model_release(m);
    return v;
}

static void read_all(Service *s, uint64_t version, ByteBuf *b)
{
    *b = (ByteBuf){0};
    ASSERT(service_model_export(s, version, b) == 0 && b->len > 8 && memcmp(b->p, "LTVDMODL", 8) == 0);
}

int main(void)
{
    char dir[] = "/tmp/ltvd-history-XXXXXX";
    ASSERT(mkdtemp(dir));
    LtvdConfig cfg;
    config_defaults(&cfg);
    cfg.limits_max_users = 100;
    cfg.limits_dedupe_max_ids = 100;
    cfg.model_hidden_size = 8;
    cfg.model_keep = 2;
    snprintf(cfg.storage_dir, sizeof cfg.storage_dir, "%s", dir);
    Metrics metrics;
    metrics_init(&metrics);
    Service *s;
    ASSERT(service_create(&s, &cfg, &metrics, trained_model(8, 1, 1)) == 0);
    service_history_init(s);
    char list[128], err[512];
    files(dir, list, sizeof list);
    ASSERT(strcmp(list, "") == 0); /* the prior of a new service has no file */

    /* two saved models: files and model.bin follow the serving one */
    service_model_swap(s, trained_model(8, 2, 2));
    service_model_save(s, 0, 0);
    service_model_swap(s, trained_model(8, 3, 3));
    service_model_save(s, 0, 0);
    files(dir, list, sizeof list);
    ASSERT(strcmp(list, "2,3") == 0 && model_bin_version(dir, 8) == 3);
    ModelFileInfo info[8];
    ASSERT(service_models_list(s, info, 8) == 2);
    ASSERT(info[0].version == 3 && info[0].serving && info[0].valid && info[0].status == MODEL_TRAINED);
    ASSERT(info[1].version == 2 && !info[1].serving && info[1].trained_at == 1700000002);

    /* rollback: version 2 serves and is model.bin */
    ModelFileInfo got;
    ASSERT(service_model_rollback(s, 2, &got, err, sizeof err) == 0 && got.version == 2 && got.serving);
    ASSERT(serving(s) == 2 && model_bin_version(dir, 8) == 2);
    ASSERT(service_model_rollback(s, 9, &got, err, sizeof err) == -ENOENT && strstr(err, "no model of version 9"));
    ASSERT(serving(s) == 2);

    /* a job that started from version 3 cannot publish over the rollback */
    ASSERT(service_model_swap_if(s, trained_model(8, 4, 4), 3) == -ESTALE);
    ASSERT(serving(s) == 2);

    /* export -> import: a new version, not serving; a bad file changes nothing */
    ByteBuf b;
    read_all(s, 3, &b);
    b.p[40] ^= 1;
    ASSERT(service_model_import(s, b.p, b.len, &got, err, sizeof err) == -EINVAL && strstr(err, "checksum"));
    ASSERT(strstr(err, "the uploaded model") && !strstr(err, dir));
    ASSERT(service_model_import(s, b.p, 10, &got, err, sizeof err) == -EINVAL);
    b.p[40] ^= 1;
    files(dir, list, sizeof list);
    ASSERT(strcmp(list, "2,3") == 0 && serving(s) == 2);
    ASSERT(service_model_import(s, b.p, b.len, &got, err, sizeof err) == 0);
    bytebuf_free(&b);
    uint64_t imported = got.version;
    ASSERT(imported == 4 && !got.serving && got.valid); /* above every file's version */
    ASSERT(serving(s) == 2);
    /* model.keep = 2: the two newest (4, 3) and the serving one (2) */
    files(dir, list, sizeof list);
    ASSERT(strcmp(list, "2,3,4") == 0);
    ASSERT(service_model_rollback(s, imported, &got, err, sizeof err) == 0 && serving(s) == imported);
    Model *m = service_model_acquire(s);
    ASSERT(m->net->id == (uint32_t)imported); /* its states are its own, not version 3's */
    model_release(m);
    service_model_save(s, 0, 0);
    files(dir, list, sizeof list);
    ASSERT(strcmp(list, "3,4") == 0);

    /* an adjuster run (4 with a new table, as version 5) replaces 4's file:
     * version 3, the model before, stays within model.keep = 2 */
    ASSERT(service_model_swap_if(s, trained_model(8, 4, 5), imported) == 0);
    service_model_save(s, imported, 5);
    files(dir, list, sizeof list);
    ASSERT(strcmp(list, "3,5") == 0 && model_bin_version(dir, 8) == 5);
    /* a rollback to the parent before the save: the parent serves, and stays */
    ASSERT(service_model_rollback(s, 3, &got, err, sizeof err) == 0);
    service_model_save(s, 3, 5);
    files(dir, list, sizeof list);
    ASSERT(strcmp(list, "3,5") == 0 && serving(s) == 3 && model_bin_version(dir, 8) == 3);
    /* a rollback to a third version before the save: the parent (3) stays,
     * and the child (6), no longer serving, gets no file */
    ASSERT(service_model_swap_if(s, trained_model(8, 3, 6), 3) == 0);
    ASSERT(service_model_rollback(s, 5, &got, err, sizeof err) == 0);
    service_model_save(s, 3, 6);
    files(dir, list, sizeof list);
    ASSERT(strcmp(list, "3,5") == 0 && serving(s) == 5 && model_bin_version(dir, 8) == 5);

    /* another network's file: a new version, its version as id; importing
     * the serving network again (a cluster follower takes each of the
     * trainer's refits and adjuster runs): a new version, the serving
     * network's id (its states and logged predictions stay its own) */
    read_all(s, 3, &b);
    ASSERT(service_model_import(s, b.p, b.len, &got, err, sizeof err) == 0);
    bytebuf_free(&b);
    ASSERT(service_model_rollback(s, got.version, &got, err, sizeof err) == 0);
    Model *now = service_model_acquire(s);
    const uint32_t other_id = now->net->id;
    const uint64_t other_version = now->version;
    ASSERT(other_id == (uint32_t)other_version);
    model_release(now);
    read_all(s, other_version, &b);
    ASSERT(service_model_import(s, b.p, b.len, &got, err, sizeof err) == 0 && got.version > other_version);
    bytebuf_free(&b);
    ASSERT(service_model_rollback(s, got.version, &got, err, sizeof err) == 0);
    now = service_model_acquire(s);
    ASSERT(now->version == got.version && now->net->id == other_id);
    model_release(now);

    /* a file of another width is refused, saying so */
    Service *wide;
    LtvdConfig cfg16 = cfg;
    cfg16.model_hidden_size = 16;
    char dir16[] = "/tmp/ltvd-history16-XXXXXX";
    ASSERT(mkdtemp(dir16));
    snprintf(cfg16.storage_dir, sizeof cfg16.storage_dir, "%s", dir16);
    ASSERT(service_create(&wide, &cfg16, &metrics, trained_model(16, 1, 1)) == 0);
    read_all(wide, 1, &b); /* the serving model exports without a file */
    ASSERT(service_model_import(s, b.p, b.len, &got, err, sizeof err) == -EINVAL && strstr(err, "hidden=16"));
    bytebuf_free(&b);
    service_destroy(wide);
    rmdir(dir16);

    service_destroy(s);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    ASSERT(system(cmd) == 0);
    TEST_DONE("test_history");
}
