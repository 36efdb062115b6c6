/* dashboard: the embedded files of the dashboard page and the reading of
 * Chart.js from its installed path (src/dashboard.h). */
#include "dashboard.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

const DashboardAsset *dashboard_asset(const char *name, size_t len)
{
    for (const DashboardAsset *a = dashboard_assets; a->name; a++)
        if (strlen(a->name) == len && memcmp(a->name, name, len) == 0)
            return a;
    return NULL;
}

int dashboard_read_file(const char *path, TextBuf *out)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    struct stat st;
    int rc = 0;
    if (fstat(fd, &st) != 0) {
        rc = -errno;
    } else if (!S_ISREG(st.st_mode)) {
        rc = -EISDIR;
    } else if ((uint64_t)st.st_size > DASHBOARD_CHARTJS_MAX) {
        rc = -EFBIG;
    } else if ((rc = bytebuf_reserve(&out->b, (size_t)st.st_size + 1)) == 0) {
        size_t want = (size_t)st.st_size;
        while (out->b.len < want) { /* bounded: at most want bytes, and a short file ends it */
            ssize_t r = read(fd, out->b.p + out->b.len, want - out->b.len);
            if (r < 0 && errno == EINTR)
                continue;
            if (r <= 0) {
                rc = r < 0 ? -errno : -EIO; /* truncated while read */
                break;
            }
            out->b.len += (size_t)r;
        }
    }
    close(fd);
    if (rc)
        textbuf_free(out);
    return rc;
}
