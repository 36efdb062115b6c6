/* fuzz_http: raw request bytes through ltvd's HTTP path without a socket:
 * a small parser here (request line, headers, body) fills an HttpCall as
 * http_server.c would, then http_dispatch routes it (auth, 404/405/413,
 * {user_id} decoding) to the handlers and the service. http_shim.c stands
 * in for libmicrohttpd. Checks: every request gets exactly one answer; its
 * status is one the API documents; no 500 (nothing here runs out of
 * memory); every application/json body is one JSON value, and every
 * error an {"error": {"code", "message"}} object; a 401 asks for Bearer.
 *
 * The Service is made once: 64 shoppers at most, no log (writes are
 * acknowledged at once), adjuster on, tokens set (ingest "ti", admin "ta",
 * read "tr"). Two test-only headers: "X-Fuzz-Draining" answers as while
 * shutting down, "X-Fuzz-Not-Ready" as while recovering. */
#include <cJSON.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>

#include "fuzz_common.h"
#include "http_routes.h"
#include "http_shim.h"
#include "service.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static LtvdConfig cfg;
static Metrics metrics;
static Service *svc;
static char *buf;
static size_t buf_cap;

static void on_retrain(void *arg) { (void)arg; /* no worker: the job stays "running" (409 after) */ }

static int remove_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(path) ? -1 : 0;
}

/* At the end of a run (libFuzzer exits normally after -runs or
 * -max_total_time): the storage directory goes, with anything an import
 * left in it. After a crash it stays, beside the artifact. */
static void remove_storage_dir(void) { nftw(cfg.storage_dir, remove_one, 8, FTW_DEPTH | FTW_PHYS); }

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    fuzz_config(&cfg);
    cfg.limits_max_body_bytes = 2048;
    snprintf(cfg.auth_ingest_token, sizeof cfg.auth_ingest_token, "ti");
    snprintf(cfg.auth_admin_token, sizeof cfg.auth_admin_token, "ta");
    snprintf(cfg.auth_read_token, sizeof cfg.auth_read_token, "tr");
    /* a model import (POST /v1/models) writes into storage.dir: a fresh one,
     * so its answer is the file's verdict (400), not a missing directory's
     * 500 (the default ./ltvd-data is not there in a fresh clone) */
    static char dir[] = "/tmp/ltvd-fuzz-http-XXXXXX";
    if (!mkdtemp(dir))
        abort();
    snprintf(cfg.storage_dir, sizeof cfg.storage_dir, "%s", dir);
    atexit(remove_storage_dir);
    metrics_init(&metrics);
    if (service_create(&svc, &cfg, &metrics, fuzz_model()))
        abort();
    service_set_retrain_notify(svc, on_retrain, NULL);
    service_set_ready(svc, true);
    return 0;
}

/* Next line of [*p, end): NUL-terminates it in place (CR LF or LF). */
static char *next_line(char **p, char *end)
{
    if (*p >= end)
        return NULL;
    char *line = *p, *nl = memchr(line, '\n', (size_t)(end - line));
    if (!nl) {
        *p = end;
        return NULL; /* no complete line */
    }
    *nl = '\0';
    if (nl > line && nl[-1] == '\r')
        nl[-1] = '\0';
    *p = nl + 1;
    return line;
}

static void parse_query(struct HttpRequest *r, char *q)
{
    for (char *amp; q && *q && r->nargs < SHIM_MAX_FIELDS; q = amp) {
        amp = strchr(q, '&');
        if (amp)
            *amp++ = '\0';
        char *eq = strchr(q, '=');
        if (eq)
            *eq++ = '\0';
        r->args[r->nargs++] = (ShimField){q, eq ? eq : ""};
    }
}

static bool is_status_documented(int s)
{
    static const int ok[] = {200, 202, 204, 400, 401, 404, 405, 409, 413, 503};
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++)
        if (s == ok[i])
            return true;
    return false;
}

static void check_answer(const HttpCall *c, const struct HttpRequest *r)
{
    FUZZ_CHECK(r->sends == 1);
    FUZZ_CHECK(c->status == r->status);
    if (!is_status_documented(r->status))
        fprintf(stderr, "status %d\n", r->status);
    FUZZ_CHECK(is_status_documented(r->status));
    if (r->status == 204) {
        FUZZ_CHECK(r->body_len == 0);
        return;
    }
    if (r->status == 401)
        FUZZ_CHECK(strcmp(r->header, "WWW-Authenticate") == 0 && strcmp(r->value, "Bearer") == 0);
    if (r->status == 405)
        FUZZ_CHECK(strcmp(r->header, "Allow") == 0 && r->value[0]);
    if (strcmp(r->content_type, "application/json") != 0)
        return;
    const char *end = NULL;
    cJSON *j = cJSON_ParseWithLengthOpts((const char *)r->body, r->body_len, &end, false);
    if (!j)
        fprintf(stderr, "answer %d is not JSON: %.*s\n", r->status, (int)r->body_len, (const char *)r->body);
    FUZZ_CHECK(j != NULL);
    FUZZ_CHECK(end == (const char *)r->body + r->body_len);
    if (r->status >= 400) {
        const cJSON *e = cJSON_GetObjectItemCaseSensitive(j, "error");
        FUZZ_CHECK(cJSON_IsString(cJSON_GetObjectItemCaseSensitive(e, "code")));
        FUZZ_CHECK(cJSON_IsString(cJSON_GetObjectItemCaseSensitive(e, "message")));
    }
    cJSON_Delete(j);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size + 1 > buf_cap) {
        free(buf);
        buf_cap = size + 1;
        buf = malloc(buf_cap);
        if (!buf)
            abort();
    }
    memcpy(buf, data, size);
    buf[size] = '\0';
    char *p = buf, *end = buf + size;

    /* request line: METHOD SP target [SP version] */
    char *line = next_line(&p, end);
    if (!line)
        return 0;
    char *sp = strchr(line, ' ');
    if (!sp || sp == line)
        return 0;
    *sp = '\0';
    char *method = line, *url = sp + 1;
    char *ver = strchr(url, ' ');
    if (ver)
        *ver = '\0';
    if (!*url)
        return 0;
    struct HttpRequest r;
    memset(&r, 0, sizeof r);
    char *q = strchr(url, '?');
    if (q) {
        *q++ = '\0';
        parse_query(&r, q);
    }
    /* headers up to the blank line */
    bool headers_done = false;
    while ((line = next_line(&p, end)) != NULL) {
        if (!*line) {
            headers_done = true;
            break;
        }
        char *colon = strchr(line, ':');
        if (!colon || r.nheaders == SHIM_MAX_FIELDS)
            continue;
        *colon = '\0';
        char *v = colon + 1;
        while (*v == ' ' || *v == '\t')
            v++;
        r.headers[r.nheaders++] = (ShimField){line, v};
    }
    size_t body_len = headers_done ? (size_t)(end - p) : 0;
    /* its own buffer, NUL-terminated as http_server.c keeps it, so ASan sees
     * a read past the end */
    char *body = malloc(body_len + 1);
    if (!body)
        abort();
    memcpy(body, headers_done ? p : "", body_len);
    body[body_len] = '\0';

    HttpCall call = {
        .server = NULL,
        .svc = svc,
        .cfg = &cfg,
        .metrics = &metrics,
        .conn = NULL,
        .req = &r,
        .method = method,
        .url = url,
        .body = body_len <= (size_t)cfg.limits_max_body_bytes ? body : "",
        .body_len = body_len <= (size_t)cfg.limits_max_body_bytes ? body_len : 0,
        .body_too_large = body_len > (size_t)cfg.limits_max_body_bytes,
    };
    call.draining = http_header(&call, "X-Fuzz-Draining") != NULL;
    bool not_ready = http_header(&call, "X-Fuzz-Not-Ready") != NULL;
    if (not_ready)
        service_set_ready(svc, false);
    int rc = http_dispatch(&call);
    if (not_ready)
        service_set_ready(svc, true);
    FUZZ_CHECK(rc == 0);
    check_answer(&call, &r);
    metrics_observe(&metrics, call.route, call.status, 1000);
    free(r.body);
    free(body);
    return 0;
}
