/* model_history: the model files in storage.dir. Every serving model the
 * worker saves is model-<version>.bin; model.bin is a copy of the serving
 * one's, so what serves after a restart is what served before it, a
 * rollback included. Listing, rollback, export
 * and import of those files, and the conditional publish that keeps a job
 * from undoing a rollback it did not see.
 *
 * Threads: service_history_init on main before serving; service_model_save
 * on the worker; the rest on the HTTP threads. history_lock serialises
 * every write to the files and every publish made here; it is taken with
 * no other lock held, and model_lock (service_publish, _acquire) under it.
 *
 * Ownership: the files are the Service's; a Model loaded here is published
 * (the service takes it) or released before returning. */
#include "service_internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "service_testing.h"

static pthread_mutex_t history_lock = PTHREAD_MUTEX_INITIALIZER;

/* Files scanned per listing: the history holds model.keep (<= 100) files,
 * plus whatever an operator copied in. */
#define HISTORY_SCAN_MAX 1024

#define PATH_CAP (CONFIG_STR_MAX + 48)

static void version_path(const Service *s, uint64_t version, char *path, size_t cap)
{
    snprintf(path, cap, "%s/model-%" PRIu64 ".bin", s->cfg.storage_dir, version);
}

/* "model-<digits>.bin" -> its version; false for any other name. */
static bool parse_name(const char *name, uint64_t *version)
{
    if (strncmp(name, "model-", 6) != 0)
        return false;
    const char *p = name + 6;
    uint64_t v = 0;
    int digits = 0;
    for (; *p >= '0' && *p <= '9' && digits < 19; p++, digits++)
        v = v * 10 + (uint64_t)(*p - '0');
    if (!digits || strcmp(p, ".bin") != 0)
        return false;
    *version = v;
    return true;
}

static int cmp_desc(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? 1 : x > y ? -1 : 0;
}

/* The versions of the history files, newest first, into out (cap,). */
static size_t list_versions(const Service *s, uint64_t *out, size_t cap)
{
    DIR *d = opendir(s->cfg.storage_dir);
    if (!d)
        return 0;
    size_t n = 0;
    struct dirent *e;
    while (n < cap && (e = readdir(d)) != NULL)
        if (parse_name(e->d_name, &out[n]))
            n++;
    closedir(d);
    qsort(out, n, sizeof *out, cmp_desc);
    return n;
}

static void sync_dir(const Service *s)
{
    int dfd = open(s->cfg.storage_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
}

/* model_load, plus the check main makes at start: the config's horizon. */
static int load_checked(Service *s, const char *path, Model **out, char *err, size_t errlen)
{
    int rc = model_load(out, path, (int)s->cfg.model_hidden_size, err, errlen);
    if (rc)
        return rc == -ENOENT ? rc : -EINVAL;
    if ((*out)->horizon_days != (int)s->cfg.model_horizon_days) {
        snprintf(err, errlen, "%.200s was made for model.horizon_days=%d, this config has %lld", path,
                 (*out)->horizon_days, (long long)s->cfg.model_horizon_days);
        model_release(*out);
        *out = NULL;
        return -EINVAL;
    }
    return 0;
}

static void info_of(const Model *m, ModelFileInfo *info)
{
    info->valid = true;
    info->error[0] = '\0';
    info->status = m->status;
    info->hybrid = m->net->hybrid;
    info->trained_at = m->trained_at;
    info->fitted_at = m->fallback.fitted_at;
    info->train = m->train;
}

static uint64_t serving_version(Service *s)
{
    Model *m = service_model_acquire(s);
    uint64_t v = m->version;
    model_release(m);
    return v;
}

/* model.bin := m, written whole (temp file, fsync, rename): a copy rather
 * than a hard link, so that nothing written over model.bin in place can
 * change a history file. Under history_lock. */
static void make_serving(Service *s, const Model *m)
{
    char path[PATH_CAP];
    snprintf(path, sizeof path, "%s/%s", s->cfg.storage_dir, MODEL_FILE_NAME);
    int rc = model_save(m, path);
    if (rc)
        log_msg(LOG_WARN, "model save failed", "path=\"%s\" error=\"%s\"", path, strerror(-rc));
    sync_dir(s);
}

/* Keeps the model.keep newest history files and the serving one's (which
 * is older after a rollback); removes the rest. Under history_lock. */
static void prune(Service *s, uint64_t serving)
{
    uint64_t v[HISTORY_SCAN_MAX];
    size_t n = list_versions(s, v, HISTORY_SCAN_MAX);
    for (size_t i = (size_t)s->cfg.model_keep; i < n; i++) {
        if (v[i] == serving)
            continue;
        char path[PATH_CAP];
        version_path(s, v[i], path, sizeof path);
        if (unlink(path) == 0)
            log_msg(LOG_INFO, "model file removed from the history", "version=%" PRIu64 " keep=%lld", v[i],
                    (long long)s->cfg.model_keep);
    }
}

int service_publish_if(Service *s, Model *m, uint64_t expect)
{
    service_adopt_model(s, m);
    pthread_mutex_lock(&s->model_lock);
    Model *old = s->model;
    if (old->version != expect) {
        pthread_mutex_unlock(&s->model_lock);
        model_release(m);
        return -ESTALE;
    }
    s->model = m;
    pthread_mutex_unlock(&s->model_lock);
    model_release(old);
    return 0;
}

/* include/service_testing.h: the publication a worker job makes, for tests. */
int service_model_swap_if(Service *s, Model *m, uint64_t expect) { return service_publish_if(s, m, expect); }

void service_history_init(Service *s)
{
    pthread_mutex_lock(&history_lock);
    uint64_t v[HISTORY_SCAN_MAX];
    size_t n = list_versions(s, v, HISTORY_SCAN_MAX);
    if (n && v[0] + 1 > atomic_load(&s->next_version))
        atomic_store(&s->next_version, v[0] + 1);
    char own[PATH_CAP], served[PATH_CAP];
    snprintf(served, sizeof served, "%s/%s", s->cfg.storage_dir, MODEL_FILE_NAME);
    Model *m = service_model_acquire(s);
    version_path(s, m->version, own, sizeof own);
    struct stat st;
    /* a data directory from before the history: model.bin is its first
     * entry (the prior, with no model.bin, is never saved: version 1) */
    if (stat(served, &st) == 0 && stat(own, &st) != 0) {
        int rc = model_save(m, own);
        if (rc)
            log_msg(LOG_WARN, "model save failed", "path=\"%s\" error=\"%s\"", own, strerror(-rc));
        sync_dir(s);
    }
    model_release(m);
    pthread_mutex_unlock(&history_lock);
}

void service_model_save(Service *s, uint64_t replaces, uint64_t by)
{
    pthread_mutex_lock(&history_lock);
    Model *m = service_model_acquire(s);
    char path[PATH_CAP];
    version_path(s, m->version, path, sizeof path);
    struct stat st;
    /* a version names one model: an existing file already holds it */
    int rc = stat(path, &st) == 0 ? 0 : model_save(m, path);
    if (rc)
        log_msg(LOG_WARN, "model save failed", "path=\"%s\" error=\"%s\"", path, strerror(-rc));
    make_serving(s, m);
    /* only once the file of the model that supersedes it is there: a
     * rollback after the publication (to the parent or to any other
     * version) leaves the parent's file alone */
    version_path(s, replaces, path, sizeof path);
    if (!rc && replaces && m->version == by && replaces != by && unlink(path) == 0)
        log_msg(LOG_INFO, "model file replaced in the history", "version=%" PRIu64 " by=%" PRIu64, replaces,
                m->version);
    prune(s, m->version);
    model_release(m);
    pthread_mutex_unlock(&history_lock);
}

/* One history file's entry: loaded whole, as a rollback would load it. */
static void describe(Service *s, uint64_t version, uint64_t serving, ModelFileInfo *info)
{
    char path[PATH_CAP];
    version_path(s, version, path, sizeof path);
    memset(info, 0, sizeof *info);
    info->version = version;
    info->serving = version == serving;
    struct stat st;
    if (stat(path, &st) == 0)
        info->bytes = (uint64_t)st.st_size;
    Model *m;
    if (load_checked(s, path, &m, info->error, sizeof info->error) == 0) {
        info_of(m, info);
        model_release(m);
    }
}

size_t service_models_list(Service *s, ModelFileInfo *out, size_t cap)
{
    uint64_t v[HISTORY_SCAN_MAX];
    pthread_mutex_lock(&history_lock);
    size_t n = list_versions(s, v, HISTORY_SCAN_MAX);
    if (n > cap)
        n = cap;
    uint64_t serving = serving_version(s);
    for (size_t i = 0; i < n; i++)
        describe(s, v[i], serving, &out[i]);
    pthread_mutex_unlock(&history_lock);
    return n;
}

int service_model_rollback(Service *s, uint64_t version, ModelFileInfo *info, char *err, size_t errlen)
{
    char path[PATH_CAP];
    version_path(s, version, path, sizeof path);
    pthread_mutex_lock(&history_lock);
    Model *m;
    int rc = load_checked(s, path, &m, err, errlen);
    if (rc == -ENOENT)
        snprintf(err, errlen, "no model of version %" PRIu64 " in the history", version);
    if (rc) {
        pthread_mutex_unlock(&history_lock);
        return rc;
    }
    memset(info, 0, sizeof *info);
    info->version = version;
    info->serving = true;
    info_of(m, info);
    struct stat st;
    if (stat(path, &st) == 0)
        info->bytes = (uint64_t)st.st_size;
    uint64_t from = serving_version(s);
    model_retain(m);
    service_publish(s, m); /* states catch up per request (service_ensure_state) */
    make_serving(s, m);
    model_release(m);
    pthread_mutex_unlock(&history_lock);
    log_msg(LOG_INFO, "model rolled back", "version=%" PRIu64 " from=%" PRIu64, version, from);
    return 0;
}

/* Reads the whole file at path into out. */
static int read_file(const char *path, ByteBuf *out)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    int rc = fd < 0 ? -errno : 0;
    struct stat st;
    if (!rc && fstat(fd, &st) != 0)
        rc = -errno;
    if (!rc)
        rc = bytebuf_reserve(out, (size_t)st.st_size + 1);
    while (!rc && out->len < (size_t)st.st_size) {
        ssize_t r = read(fd, out->p + out->len, (size_t)st.st_size - out->len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            rc = -EIO;
        else
            out->len += (size_t)r;
    }
    if (fd >= 0)
        close(fd);
    return rc;
}

int service_model_export(Service *s, uint64_t version, ByteBuf *out)
{
    char path[PATH_CAP];
    version_path(s, version, path, sizeof path);
    pthread_mutex_lock(&history_lock);
    int rc = read_file(path, out);
    Model *m = service_model_acquire(s);
    if (rc == -ENOENT && m->version == version) {
        /* the serving model has no file (the prior): written out for this */
        snprintf(path, sizeof path, "%s/model-export.tmp", s->cfg.storage_dir);
        rc = model_save(m, path);
        if (!rc)
            rc = read_file(path, out);
        unlink(path);
    }
    model_release(m);
    pthread_mutex_unlock(&history_lock);
    if (rc)
        bytebuf_free(out);
    return rc;
}

/* The next version, above every history file's and the serving model's
 * (which a job's version always is; an import makes sure). Under
 * history_lock; a worker may take versions at the same time. */
static uint64_t reserve_version(Service *s)
{
    uint64_t v[HISTORY_SCAN_MAX];
    size_t n = list_versions(s, v, HISTORY_SCAN_MAX);
    uint64_t floor = serving_version(s) + 1;
    if (n && v[0] + 1 > floor)
        floor = v[0] + 1;
    uint64_t cur = atomic_load(&s->next_version), want;
    do
        want = cur > floor ? cur : floor;
    while (!atomic_compare_exchange_weak(&s->next_version, &cur, want + 1));
    return want;
}

/* err's text without the temp file's path, which means nothing to a client. */
static void strip_path(char *err, size_t errlen, const char *path)
{
    size_t n = strlen(path);
    if (strncmp(err, path, n) == 0) {
        char rest[512];
        snprintf(rest, sizeof rest, "%s", err + n);
        snprintf(err, errlen, "the uploaded model%s", rest);
    }
}

int service_model_import(Service *s, const void *data, size_t len, ModelFileInfo *info, char *err, size_t errlen)
{
    char tmp[PATH_CAP], path[PATH_CAP];
    snprintf(tmp, sizeof tmp, "%s/model-import.tmp", s->cfg.storage_dir);
    pthread_mutex_lock(&history_lock);
    int rc = 0;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0640);
    if (fd < 0 || write_all(fd, data, len) != 0) {
        rc = -EIO;
        snprintf(err, errlen, "cannot write %s: %s", tmp, strerror(errno));
    }
    if (fd >= 0)
        close(fd);
    Model *m = NULL;
    if (!rc && (rc = load_checked(s, tmp, &m, err, errlen)) != 0) {
        strip_path(err, errlen, tmp);
        rc = -EINVAL;
    }
    unlink(tmp);
    if (rc) {
        pthread_mutex_unlock(&history_lock);
        return rc;
    }
    /* Still private: a version (and, for a trained network, the id states
     * are tagged with) of this instance, so it never passes for another;
     * but the serving model's network, byte for byte (a cluster follower
     * imports each of the trainer's refits and adjuster runs), keeps the
     * serving id: its shoppers' states stay valid, and the predictions it
     * logged stay that network's own for the adjuster. */
    uint64_t version = reserve_version(s);
    uint64_t was = m->version;
    m->version = version;
    if (m->status == MODEL_TRAINED) {
        Model *cur = service_model_acquire(s);
        bool same = cur->status == MODEL_TRAINED && lstm_weights_same(cur->net, m->net);
        m->net->id = same ? cur->net->id : (uint32_t)version;
        model_release(cur);
    }
    version_path(s, version, path, sizeof path);
    if ((rc = model_save(m, path)) != 0) {
        snprintf(err, errlen, "cannot write %s: %s", path, strerror(-rc));
        rc = -EIO;
    } else {
        sync_dir(s);
        memset(info, 0, sizeof *info);
        info->version = version;
        info_of(m, info);
        struct stat st;
        if (stat(path, &st) == 0)
            info->bytes = (uint64_t)st.st_size;
        prune(s, serving_version(s));
    }
    model_release(m);
    pthread_mutex_unlock(&history_lock);
    if (!rc)
        log_msg(LOG_INFO, "model imported", "version=%" PRIu64 " file_version=%" PRIu64, version, was);
    return rc;
}
