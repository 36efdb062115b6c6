/* http_routes: the one route table of ltvd's HTTP API, and everything that
 * reads it: the router (404, 405 and its Allow header), auth (the row's
 * token class), `ltvd --routes`, and the metrics labels. Adding a route is
 * adding a row (and its handler, and its path in openapi/ltvd.yaml).
 *
 * Threads: the table is constant; http_dispatch runs on a libmicrohttpd
 * thread; http_routes_print on the main thread. */
#include "http_routes.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "http_handlers.h"
#include "util.h"

typedef struct RouteRow {
    const char *method;
    const char *pattern; /* OpenAPI form; "{user_id}", "{version}", "{asset}" match one non-empty path segment */
    RouteId id;
    TokenClass token;
    bool body; /* takes a request body (others refuse one over NO_BODY_MAX, 413) */
    HttpHandler *handler;
} RouteRow;

/* In the order `ltvd --routes` lists them; the rows of one path together. */
static const RouteRow routes[] = {
    {"POST", "/v1/events", ROUTE_EVENTS, TOKEN_INGEST, true, handle_events},
    {"GET", "/v1/users/{user_id}/ltv", ROUTE_USER_LTV, TOKEN_READ, false, handle_user_ltv},
    {"GET", "/v1/users/{user_id}", ROUTE_USER, TOKEN_READ, false, handle_user_get},
    {"DELETE", "/v1/users/{user_id}", ROUTE_USER, TOKEN_ADMIN, false, handle_user_delete},
    {"POST", "/v1/ltv/batch", ROUTE_LTV_BATCH, TOKEN_READ, true, handle_ltv_batch},
    {"GET", "/v1/model", ROUTE_MODEL, TOKEN_READ, false, handle_model},
    {"POST", "/v1/model/retrain", ROUTE_RETRAIN, TOKEN_ADMIN, false, handle_retrain},
    {"POST", "/v1/model/rollback", ROUTE_ROLLBACK, TOKEN_ADMIN, true, handle_model_rollback},
    {"GET", "/v1/models", ROUTE_MODELS, TOKEN_READ, false, handle_models_list},
    {"POST", "/v1/models", ROUTE_MODELS, TOKEN_ADMIN, true, handle_model_import},
    {"GET", "/v1/models/{version}", ROUTE_MODEL_FILE, TOKEN_ADMIN, false, handle_model_export},
    {"POST", "/v1/admin/snapshot", ROUTE_ADMIN_SNAPSHOT, TOKEN_ADMIN, false, handle_admin_snapshot},
    {"GET", "/v1/calibration", ROUTE_CALIBRATION, TOKEN_READ, false, handle_calibration},
    {"GET", "/v1/segments", ROUTE_SEGMENTS, TOKEN_READ, false, handle_segments},
    {"GET", "/v1/lists/top", ROUTE_LIST_TOP, TOKEN_READ, false, handle_list_top},
    {"GET", "/v1/lists/churn-risk", ROUTE_LIST_CHURN, TOKEN_READ, false, handle_list_churn},
    /* The page and its files hold no data: open, so a browser can load them
     * without a header; the page fetches the data with the read token. */
    {"GET", "/dashboard", ROUTE_DASHBOARD, TOKEN_OPEN, false, handle_dashboard},
    {"GET", "/dashboard/{asset}", ROUTE_DASHBOARD_ASSET, TOKEN_OPEN, false, handle_dashboard_asset},
    {"GET", "/v1/cluster", ROUTE_CLUSTER, TOKEN_READ, false, handle_cluster},
    {"GET", "/healthz", ROUTE_HEALTHZ, TOKEN_OPEN, false, handle_healthz},
    {"GET", "/readyz", ROUTE_READYZ, TOKEN_OPEN, false, handle_readyz},
    {"GET", "/metrics", ROUTE_METRICS, TOKEN_OPEN, false, handle_metrics},
};
#define NROUTES (sizeof routes / sizeof routes[0])

/* What a route that takes no body still accepts, and ignores: `{}` sent to
 * retrain by a generic client. More, or a chunked body, is refused. */
#define NO_BODY_MAX 1024

_Static_assert(ROUTE_COUNT <= METRICS_MAX_ROUTES, "metrics count requests by route id");

void http_routes_print(FILE *f)
{
    for (size_t i = 0; i < NROUTES; i++)
        fprintf(f, "%s %s\n", routes[i].method, routes[i].pattern);
}

/* The statuses each route id can answer (its methods' OpenAPI responses,
 * 405 from the router, 500): /metrics counts them from zero, before any
 * request. A route id missing here shows "200" until others are seen. */
static const char *const route_codes[ROUTE_COUNT] = {
    [ROUTE_EVENTS] = "200 400 401 405 413 500 503",
    [ROUTE_USER_LTV] = "200 400 401 405 413 500 503",
    [ROUTE_USER] = "200 204 400 401 404 405 413 500 503",
    [ROUTE_LTV_BATCH] = "200 400 401 405 413 500 503",
    [ROUTE_MODEL] = "200 401 405 413 500 503",
    [ROUTE_RETRAIN] = "202 401 405 409 413 500 503",
    [ROUTE_CALIBRATION] = "200 401 405 413 500 503",
    [ROUTE_DASHBOARD] = "200 405 413 500",
    [ROUTE_DASHBOARD_ASSET] = "200 404 405 413 500",
    [ROUTE_SEGMENTS] = "200 401 405 413 500 503",
    [ROUTE_LIST_TOP] = "200 400 401 405 409 413 500 503",
    [ROUTE_LIST_CHURN] = "200 400 401 405 409 413 500 503",
    [ROUTE_CLUSTER] = "200 401 405 413 500 503",
    [ROUTE_HEALTHZ] = "200 405 413 500",
    [ROUTE_READYZ] = "200 405 413 500 503",
    [ROUTE_METRICS] = "200 405 413 500",
    [ROUTE_UNKNOWN] = "404",
};

void http_route_metrics(MetricsRoute out[ROUTE_COUNT])
{
    for (int r = 0; r < ROUTE_COUNT; r++)
        out[r] = (MetricsRoute){"unknown", route_codes[r]};
    for (size_t i = NROUTES; i-- > 0;)
        out[routes[i].id].label = routes[i].pattern;
}

const char *http_route_path(int route)
{
    for (size_t i = 0; i < NROUTES; i++)
        if ((int)routes[i].id == route)
            return routes[i].pattern;
    return NULL;
}

bool http_route_has_user(int route)
{
    const char *path = http_route_path(route);
    return path && strstr(path, "{user_id}");
}

/* ---- matching ---------------------------------------------------------- */

/* Does url match pattern as a whole? *param, *param_len: the raw (still
 * percent-encoded) segment that "{user_id}" matched, if any. */
static bool pattern_match(const char *pattern, const char *url, const char **param, size_t *param_len)
{
    const char *p = pattern, *u = url;
    while (*p) {
        if (*p == '{') {
            const char *end = u;
            while (*end && *end != '/')
                end++;
            if (end == u)
                return false;
            *param = u;
            *param_len = (size_t)(end - u);
            u = end;
            p = strchr(p, '}') + 1;
        } else if (*p++ != *u++) {
            return false;
        }
    }
    return *u == '\0';
}

/* The methods the rows of route id accept, as an Allow header: "GET, DELETE". */
static void allowed_methods(RouteId id, char *buf, size_t cap)
{
    size_t n = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < NROUTES; i++)
        if (routes[i].id == id && n < cap)
            n += (size_t)snprintf(buf + n, cap - n, "%s%s", n ? ", " : "", routes[i].method);
}

/* ---- auth -------------------------------------------------------------- */

static bool token_matches(const char *given, const char *expected)
{
    /* Constant time in the expected token's length: every byte is compared
     * and lengths differ only through the accumulated flag. */
    size_t gl = strlen(given), el = strlen(expected);
    unsigned char diff = (unsigned char)(gl != el);
    for (size_t i = 0; i < el; i++)
        diff |= (unsigned char)(expected[i] ^ (i < gl ? given[i] : 0));
    return diff == 0;
}

static const char *token_of(const LtvdConfig *cfg, TokenClass t)
{
    switch (t) {
    case TOKEN_READ:
        return cfg->auth_read_token;
    case TOKEN_INGEST:
        return cfg->auth_ingest_token;
    case TOKEN_ADMIN:
        return cfg->auth_admin_token;
    default:
        return "";
    }
}

/* Does the request carry the bearer token the row asks for (if any)? */
static bool authorized(const HttpCall *c, TokenClass t)
{
    const char *token = token_of(c->cfg, t);
    if (!token[0])
        return true;
    const char *h = http_header(c, "Authorization");
    if (!h || strncasecmp(h, "Bearer ", 7) != 0) /* the scheme is case-insensitive (RFC 7235) */
        return false;
    return token_matches(h + 7, token);
}

/* ---- percent-decoding (no libmicrohttpd: the fuzz build links it) ---- */

int http_percent_decode(const char *in, size_t n, char *out, size_t cap, size_t *out_len)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        char ch = in[i];
        if (ch == '%') {
            int hi, lo;
            if (i + 2 >= n)
                return -EINVAL;
            if ((hi = hex_digit(in[i + 1])) < 0 || (lo = hex_digit(in[i + 2])) < 0)
                return -EINVAL;
            ch = (char)(hi * 16 + lo);
            i += 2;
        }
        if (o >= cap)
            return -EINVAL;
        out[o++] = ch;
    }
    *out_len = o;
    return 0;
}

/* ---- dispatch ---------------------------------------------------------- */

/* The row of c's method and path, or NULL (c->route then tells 404 from
 * 405). *param, *param_len: the raw {user_id} segment, if any. */
static const RouteRow *route_find(HttpCall *c, const char **param, size_t *param_len)
{
    const RouteRow *row = NULL;
    c->route = ROUTE_UNKNOWN;
    /* The config of a reload (SIGHUP), if any, for the whole call: tokens
     * and limits change between requests, never within one. */
    const LtvdConfig *live = config_live();
    if (live)
        c->cfg = live;
    for (size_t i = 0; i < NROUTES && !row; i++) {
        const char *pm = NULL;
        size_t pl = 0;
        if (!pattern_match(routes[i].pattern, c->url, &pm, &pl))
            continue;
        c->route = routes[i].id; /* the rows of one path share it */
        c->param = pm;
        c->param_len = pl;
        if (strcmp(c->method, routes[i].method) == 0) {
            row = &routes[i];
            *param = pm;
            *param_len = pl;
        }
    }
    return row;
}

static int send_not_routed(HttpCall *c)
{
    if (c->route == ROUTE_UNKNOWN)
        return http_send_error(c, 404, "not_found", "no such route", NULL, 0);
    char allow[64], msg[80];
    allowed_methods(c->route, allow, sizeof allow);
    snprintf(msg, sizeof msg, "use %s", allow);
    TextBuf b = {0};
    render_error(&b, "method_not_allowed", msg, NULL, 0);
    return http_send(c, 405, &b, "application/json", "Allow", allow);
}

static int send_too_large(HttpCall *c)
{
    char msg[96];
    snprintf(msg, sizeof msg, "request body is larger than %lld bytes (limits.max_body_bytes)",
             (long long)c->cfg->limits_max_body_bytes);
    return http_send_error(c, 413, "payload_too_large", msg, NULL, 0);
}

int http_screen(HttpCall *c, int64_t declared, int *reason)
{
    const char *param = NULL;
    size_t param_len = 0;
    const RouteRow *row = route_find(c, &param, &param_len);
    *reason = -1;
    if (!row) {
        *reason = c->route == ROUTE_UNKNOWN ? REJECT_NOT_FOUND : REJECT_METHOD;
        return send_not_routed(c);
    }
    if (!row->body && (declared < 0 || declared > NO_BODY_MAX)) {
        *reason = REJECT_BODY_NOT_ALLOWED;
        return http_send_error(c, 413, "payload_too_large",
                               "this route takes no request body (at most 1024 bytes, ignored)", NULL, 0);
    }
    if (declared > c->cfg->limits_max_body_bytes) {
        *reason = REJECT_TOO_LARGE;
        return send_too_large(c);
    }
    if (row->token == TOKEN_OPEN)
        return 0;
    if (c->draining) {
        *reason = REJECT_DRAINING;
        return http_send_error(c, 503, "not_ready", "shutting down", NULL, 0);
    }
    if (!authorized(c, row->token)) {
        *reason = REJECT_UNAUTHORIZED;
        return http_send_error(c, 401, "unauthorized", "missing or wrong bearer token", NULL, 0);
    }
    return 0;
}

int http_dispatch(HttpCall *c)
{
    const char *param = NULL;
    size_t param_len = 0;
    const RouteRow *row = route_find(c, &param, &param_len);
    if (!row)
        return send_not_routed(c);
    if (c->body_too_large)
        return send_too_large(c);
    if (row->token == TOKEN_OPEN)
        return row->handler(c);
    if (c->draining)
        return http_send_error(c, 503, "not_ready", "shutting down", NULL, 0);
    if (!authorized(c, row->token))
        return http_send_error(c, 401, "unauthorized", "missing or wrong bearer token", NULL, 0);
    if (!service_ready(c->svc))
        return http_send_error(c, 503, "not_ready", "recovering state and loading the model", NULL, 0);
    if (param) {
        if (http_percent_decode(param, param_len, c->id, USER_ID_MAX, &c->id_len) ||
            !shopper_id_valid(c->id, c->id_len))
            return http_send_error(c, 400, "invalid_request",
                                   strstr(row->pattern, "{user_id}")
                                       ? "user_id must be 1 to 128 bytes of UTF-8 after percent-decoding"
                                       : "the path parameter must be 1 to 128 bytes of UTF-8 after percent-decoding",
                                   NULL, 0);
        c->id[c->id_len] = '\0';
    }
    return row->handler(c);
}
