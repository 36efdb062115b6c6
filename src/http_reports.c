/* http_reports: the handlers of the population's reports and the
 * dashboard that shows them: calibration by decile, the segments, the two
 * lists (top value, churn risk) with their cursors, and the dashboard's
 * files. The reports are computed elsewhere (segments.c on the worker, the
 * backtest's calibration): these handlers read the published result and
 * page through it. As in http_handlers.c: parse, call the service, choose
 * the status, pass a rendered body to http_send*.
 *
 * Threads: the libmicrohttpd thread of the call. Owns nothing past the
 * call: a retained Segments is released, scratch arrays freed. */
#include "http_handlers.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster.h"
#include "dashboard.h"
#include "log.h"
#include "segments.h"
#include "timeutil.h"
#include "util.h"

/* ---- the dashboard: its data, its files ------------------------------------ */

int handle_calibration(HttpCall *c)
{
    CalibrationView v;
    if (service_calibration(c->svc, &v))
        return http_send_error(c, 500, "internal", "out of memory", NULL, 0);
    TextBuf r = {0};
    render_calibration(&r, &v);
    return http_send_json(c, 200, &r);
}

static int send_asset(HttpCall *c, const DashboardAsset *a)
{
    TextBuf r = {0};
    textbuf_append(&r, (const char *)a->data, a->len);
    return http_send_page(c, 200, &r, a->content_type);
}

int handle_dashboard(HttpCall *c) { return send_asset(c, dashboard_asset("index.html", 10)); }

int handle_dashboard_asset(HttpCall *c)
{
    if (c->param_len == strlen(DASHBOARD_CHARTJS) && memcmp(c->param, DASHBOARD_CHARTJS, c->param_len) == 0) {
        TextBuf r = {0};
        int rc = dashboard_read_file(c->cfg->dashboard_chartjs_path, &r);
        if (rc) {
            log_msg(LOG_WARN, "chart.js unreadable", "path=\"%s\" error=\"%s\"", c->cfg->dashboard_chartjs_path,
                    strerror(-rc));
            return http_send_error(c, 404, "not_found",
                                   "Chart.js cannot be read from dashboard.chartjs_path: install Debian's "
                                   "libjs-chart.js or point the key at chart.min.js (the log says why)",
                                   NULL, 0);
        }
        return http_send_page(c, 200, &r, "text/javascript; charset=utf-8");
    }
    const DashboardAsset *a = dashboard_asset(c->param, c->param_len);
    if (!a || strcmp(a->name, "index.html") == 0) /* the page itself is /dashboard */
        return http_send_error(c, 404, "not_found", "no such dashboard file", NULL, 0);
    return send_asset(c, a);
}

/* ---- segments and lists (segments.c computes them on the worker) --------- */

#define LIST_LIMIT_DEFAULT 100
#define LIST_LIMIT_MAX 1000

/* 503 until the worker has published the first result: it is computed as
 * soon after start as the worker is free. */
static int send_segments_not_ready(HttpCall *c)
{
    TextBuf b = {0};
    render_error(&b, "not_ready", "the first population summary is being computed; retry shortly", NULL, 0);
    return http_send(c, 503, &b, "application/json", "Retry-After", "5");
}

static double segments_age(const Segments *g) { return (double)(time_mono_ns() - g->computed_mono_ns) / 1e9; }

int handle_segments(HttpCall *c)
{
    Segments *g = service_segments_acquire(c->svc);
    if (!g)
        return send_segments_not_ready(c);
    TextBuf r = {0};
    render_segments(&r, g, segments_age(g));
    segments_release(g);
    return http_send_json(c, 200, &r);
}

/* A query number in [lo, hi]: 0, -ENOENT if absent, -EINVAL. */
static int query_number(HttpCall *c, const char *name, double lo, double hi, double *out)
{
    char text[64], *end;
    int rc = http_query(c, name, text, sizeof text);
    if (rc)
        return rc;
    double v = strtod(text, &end);
    if (end == text || *end || !isfinite(v) || v < lo || v > hi)
        return -EINVAL;
    *out = v;
    return 0;
}

typedef struct ListQuery {
    size_t limit, from;
    double min_value, max_p_active;
} ListQuery;

/* What a cursor is good for besides its summary: the churn list's
 * thresholds, folded into 64 bits (a cursor given under one pair of
 * thresholds points into that filtered list, not another). */
static uint64_t filter_tag(const ListQuery *q)
{
    double mv = q->min_value + 0.0, mp = q->max_p_active + 0.0; /* -0 tags as 0: the same filter */
    uint64_t a, b;
    memcpy(&a, &mv, sizeof a);
    memcpy(&b, &mp, sizeof b);
    uint64_t st = a;
    uint64_t h = splitmix64(&st);
    st = h ^ b;
    return splitmix64(&st);
}

/* Parses limit, cursor and (churn) the thresholds, or answers 400 (409 for a
 * cursor of an earlier summary) and returns -1 with *ret set. A cursor is
 * "t<generation hex>.<position>" for the top list and
 * "c<generation hex>.<position>.<filter_tag hex>" for churn risk: opaque to
 * clients, and refused by the other list or under other thresholds. */
static int list_query(HttpCall *c, const Segments *g, size_t total, bool churn, ListQuery *q, int *ret)
{
    *q = (ListQuery){.limit = LIST_LIMIT_DEFAULT, .max_p_active = 1.0};
    double limit = LIST_LIMIT_DEFAULT;
    int rc = query_number(c, "limit", 1, LIST_LIMIT_MAX, &limit);
    if (rc == -EINVAL || limit != (double)(size_t)limit) {
        *ret = http_send_error(c, 400, "invalid_request", "limit must be a whole number from 1 to 1000", NULL, 0);
        return -1;
    }
    q->limit = (size_t)limit;
    if (churn) {
        if (query_number(c, "min_value", 0, 1e15, &q->min_value) == -EINVAL) {
            *ret = http_send_error(c, 400, "invalid_request", "min_value must be a number >= 0", NULL, 0);
            return -1;
        }
        if (query_number(c, "max_p_active", 0, 1, &q->max_p_active) == -EINVAL) {
            *ret = http_send_error(c, 400, "invalid_request", "max_p_active must be a number from 0 to 1", NULL, 0);
            return -1;
        }
    }
    char text[64];
    rc = http_query(c, "cursor", text, sizeof text);
    if (rc == -ENOENT)
        return 0;
    unsigned long long gen, pos, tag = 0;
    int used = 0;
    char kind = rc ? 0 : text[0];
    /* only what next_cursor writes: sscanf alone would skip white space and take signs */
    bool ok = !rc && (kind == 't' || kind == 'c') && text[1 + strspn(text + 1, "0123456789abcdef.")] == '\0';
    if (ok)
        ok = kind == 'c' ? sscanf(text + 1, "%16llx.%llu.%16llx%n", &gen, &pos, &tag, &used) == 3
                         : sscanf(text + 1, "%16llx.%llu%n", &gen, &pos, &used) == 2;
    if (!ok || text[1 + used]) {
        *ret = http_send_error(c, 400, "invalid_request", "cursor must be a next_cursor this list returned", NULL, 0);
        return -1;
    }
    if (gen != g->generation) { /* expired first: whichever list it came from, start again */
        *ret = http_send_error(c, 409, "cursor_expired",
                               "the list was recomputed since this cursor was given; start again without a cursor",
                               NULL, 0);
        return -1;
    }
    if (kind != (churn ? 'c' : 't')) {
        *ret = http_send_error(c, 400, "invalid_request", "cursor is another list's: page a list with its own cursors",
                               NULL, 0);
        return -1;
    }
    if (churn && tag != filter_tag(q)) {
        *ret = http_send_error(c, 400, "invalid_request",
                               "cursor was given for other min_value/max_p_active: page with the same thresholds",
                               NULL, 0);
        return -1;
    }
    if (pos > total) {
        *ret = http_send_error(c, 400, "invalid_request", "cursor must be a next_cursor this list returned", NULL, 0);
        return -1;
    }
    q->from = (size_t)pos;
    return 0;
}

/* Cluster mode: does this node own the shopper's partition now (the map,
 * at most a tick old)? A node keeps the shoppers of a partition it gave
 * up, stale (even erased since by the new owner): its lists skip them. */
static bool owned_here(HttpCall *c, const char *id)
{
    size_t len = strlen(id);
    bool self;
    char node[CLUSTER_NODE_MAX], url[CLUSTER_URL_MAX];
    return cluster_owner(c->cluster, cluster_partition_of(c->cluster, id, len), &self, node, url) == 0 && self;
}

/* Answers one page of list (n,) from g: rows that pass the thresholds and
 * whose shopper still exists (in cluster mode: in a partition this node
 * owns), from the cursor's position on. */
static int send_list(HttpCall *c, Segments *g, const SegmentRow *list, size_t total, bool churn)
{
    ListQuery q;
    int ret;
    if (list_query(c, g, total, churn, &q, &ret))
        return ret;
    const SegmentRow **page = malloc(q.limit * sizeof *page), **cand = malloc(q.limit * sizeof *cand);
    bool *live = malloc(q.limit * sizeof *live);
    if (!page || !cand || !live) {
        free(page), free(cand), free(live);
        return http_send_error(c, 500, "internal", "out of memory", NULL, 0);
    }
    size_t n = 0, pos = q.from;
    while (n < q.limit && pos < total) {
        size_t k = 0;
        for (; pos < total && k < q.limit - n; pos++) {
            const SegmentRow *r = &list[pos];
            double value = r->ltv > r->spend ? r->ltv : r->spend;
            if (!churn || (value >= q.min_value && r->p_active <= q.max_p_active))
                cand[k++] = r;
        }
        service_segments_live(c->svc, cand, k, live);
        for (size_t i = 0; i < k; i++)
            if (live[i] && (!c->cluster || owned_here(c, cand[i]->user_id)))
                page[n++] = cand[i];
    }
    char cursor[64];
    if (pos < total && churn)
        snprintf(cursor, sizeof cursor, "c%llx.%zu.%llx", (unsigned long long)g->generation, pos,
                 (unsigned long long)filter_tag(&q));
    else if (pos < total)
        snprintf(cursor, sizeof cursor, "t%llx.%zu", (unsigned long long)g->generation, pos);
    TextBuf r = {0};
    render_segment_list(&r, g, segments_age(g), page, n, total, pos < total ? cursor : NULL);
    free(page), free(cand), free(live);
    return http_send_json(c, 200, &r);
}

/* One page of the published top (churn false) or churn-risk list. */
static int handle_list(HttpCall *c, bool churn)
{
    Segments *g = service_segments_acquire(c->svc);
    if (!g)
        return send_segments_not_ready(c);
    int ret = churn ? send_list(c, g, g->churn, g->nchurn, true) : send_list(c, g, g->top, g->ntop, false);
    segments_release(g);
    return ret;
}

int handle_list_top(HttpCall *c) { return handle_list(c, false); }

int handle_list_churn(HttpCall *c) { return handle_list(c, true); }
