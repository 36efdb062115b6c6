/* fuzz_common: what the libFuzzer harnesses share (fuzz/, docs/FUZZING.md):
 * a scratch file that readers taking a path can open, the shapes the seed
 * files were made with, a trained-looking model, and CRC fix-ups so the
 * fuzzer gets past checksums to the fields behind them.
 *
 * Threads: libFuzzer runs one input at a time on one thread; everything
 * here is for that thread. Static functions in a header: each harness is
 * one translation unit. */
#ifndef LTVD_FUZZ_COMMON_H
#define LTVD_FUZZ_COMMON_H

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "config.h"
#include "hash.h"
#include "log.h"
#include "model.h"

/* The shape of the committed seed files (fuzz/corpus/{snapshot,model}):
 * written by an ltvd run with --set model.hidden_size=8
 * --set model.recent_events=4. */
#define FUZZ_HIDDEN 8
#define FUZZ_RING 4

/* Aborts the run: libFuzzer reports it as a crash with the input. */
#define FUZZ_CHECK(cond)                                                                          \
    do {                                                                                          \
        if (!(cond)) {                                                                            \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);              \
            abort();                                                                              \
        }                                                                                         \
    } while (0)

/* A memory-backed file for readers that open a path: created once, its
 * contents replaced on every run. */
typedef struct FuzzFile {
    int fd;
    char path[64]; /* /proc/self/fd/N: open(2) gives a fresh offset */
} FuzzFile;

static inline void fuzz_file_init(FuzzFile *f, const char *name)
{
    f->fd = memfd_create(name, MFD_CLOEXEC);
    if (f->fd < 0) {
        perror("memfd_create");
        abort();
    }
    snprintf(f->path, sizeof f->path, "/proc/self/fd/%d", f->fd);
}

static inline void fuzz_file_set(FuzzFile *f, const void *p, size_t n)
{
    if (ftruncate(f->fd, 0) != 0 || pwrite(f->fd, p, n, 0) != (ssize_t)n) {
        perror("fuzz_file_set");
        abort();
    }
}

/* Writes p (n,) to path (created or truncated). */
static inline void fuzz_write_path(const char *path, const void *p, size_t n)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0 || (n && write(fd, p, n) != (ssize_t)n)) {
        perror(path);
        abort();
    }
    close(fd);
}

/* A private scratch directory under /dev/shm (or /tmp), made once. */
static inline const char *fuzz_scratch_dir(const char *tag)
{
    static char dir[128];
    const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    snprintf(dir, sizeof dir, "%s/ltvd-fuzz-%s-XXXXXX", base, tag);
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        abort();
    }
    return dir;
}

/* Replaces the trailing u32 of buf (n,) with the CRC-32 of what precedes
 * it, as snapshot and model files end. */
static inline void fuzz_fix_trailing_crc(unsigned char *buf, size_t n)
{
    if (n < 4)
        return;
    uint32_t crc = crc32_update(0, buf, n - 4);
    memcpy(buf + n - 4, &crc, 4);
}

/* Replaces the CRC of every whole chunk of a training history file (buf,
 * n; include/history.h has the layout) with the one its header and
 * records make, as far as the chunks' record counts fit in n. */
static inline void fuzz_fix_history_crcs(unsigned char *buf, size_t n)
{
    size_t off = 16; /* the file header */
    while (off + 24 <= n) {
        uint32_t nrec;
        memcpy(&nrec, buf + off + 4, 4);
        size_t len = (size_t)nrec * 20;
        if (len > n - off - 24)
            return;
        uint32_t crc = crc32_update(crc32_update(0, buf + off + 4, 12), buf + off + 24, len);
        memcpy(buf + off + 16, &crc, 4);
        off += 24 + len;
    }
}

/* Makes *buf (*cap bytes, kept from run to run) hold at least n bytes;
 * its contents are not kept. */
static inline void fuzz_reserve(unsigned char **buf, size_t *cap, size_t n)
{
    if (n <= *cap)
        return;
    free(*buf);
    *cap = n;
    *buf = malloc(n);
    if (!*buf)
        abort();
}

/* Runs run on the input as given, then on a copy with its checksums made
 * right by fix if that changes it: the first try meets the checks a
 * checksum guards, the second reaches the fields behind them (a file ltvd
 * wrote, then damaged where the CRC cannot tell, or written by a buggy
 * build). The copy's buffer is kept from run to run. */
static inline void fuzz_run_fixed(const uint8_t *data, size_t size, void (*fix)(unsigned char *, size_t),
                                  void (*run)(const unsigned char *, size_t))
{
    static unsigned char *scratch;
    static size_t scratch_cap;
    run(data, size);
    if (size == 0)
        return;
    fuzz_reserve(&scratch, &scratch_cap, size);
    memcpy(scratch, data, size);
    fix(scratch, size);
    if (memcmp(scratch, data, size) == 0)
        return; /* its checksums were right: tried already */
    run(scratch, size);
}

/* The config the service-level harnesses run with: small tables, the seed
 * files' shape, quiet logs. */
static inline void fuzz_config(LtvdConfig *cfg)
{
    config_defaults(cfg);
    cfg->model_hidden_size = FUZZ_HIDDEN;
    cfg->model_recent_events = FUZZ_RING;
    cfg->limits_max_users = 64;
    cfg->limits_dedupe_max_ids = 256;
    cfg->limits_max_batch_events = 64;
    cfg->limits_max_batch_ids = 64;
    cfg->adjuster_enabled = true;
    cfg->adjuster_log_size = 64;
    log_set_level(LOG_ERROR);
}

/* A TRAINED model of the seeds' width whose head reads the state, so
 * predictions run the network (as tests/test_service.c builds one). */
static inline Model *fuzz_model(void)
{
    LstmWeights *net;
    if (lstm_weights_create(&net, FUZZ_HIDDEN, 7, 1) != 0)
        abort();
    net->hybrid = true;
    FallbackFit fit = {BGNBD_CDNOW_PRIOR, GG_CDNOW_PRIOR, 0, 0, 0, 0};
    Model *m;
    if (model_create(&m, net, &fit, 182, MODEL_TRAINED, 1) != 0)
        abort();
    lstm_weights_release(net);
    return m;
}

#endif
