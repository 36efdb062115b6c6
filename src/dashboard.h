/* dashboard (private to the http_* files): the files of GET /dashboard.
 * The page, its script and its style sheet are built into ltvd
 * (tools/embed_assets.py, from src/dashboard/); Chart.js is read at run
 * time from dashboard.chartjs_path (Debian's libjs-chart.js), never copied
 * into the repository nor fetched from the network.
 *
 * Threads: any; the embedded table is constant. */
#ifndef LTVD_DASHBOARD_H
#define LTVD_DASHBOARD_H

#include <stddef.h>

#include "util.h"

typedef struct DashboardAsset {
    const char *name;          /* "index.html", "dashboard.js", "dashboard.css" */
    const char *content_type;
    const unsigned char *data; /* (len,), NUL after */
    size_t len;
} DashboardAsset;

/* The embedded files, ended by a row whose name is NULL (generated). */
extern const DashboardAsset dashboard_assets[];

/* The name of the route /dashboard/{asset} that serves Chart.js. */
#define DASHBOARD_CHARTJS "chart.js"
/* Chart.js 3 is about 200 KB minified; a file much larger is not it. */
#define DASHBOARD_CHARTJS_MAX (4u << 20)

/* The embedded file called name (len bytes, not NUL-terminated), or NULL. */
const DashboardAsset *dashboard_asset(const char *name, size_t len);

/* Appends the file at path to out (empty on entry; the caller frees it).
 * -ENOENT (or another -errno of open/read), -EFBIG over DASHBOARD_CHARTJS_MAX. */
int dashboard_read_file(const char *path, TextBuf *out);

#endif
