/* prealloc_sync: what the write-ahead log's preallocated segments save per
 * fdatasync on this disk (docs/PERFORMANCE.md, "Preallocated log
 * segments"). One thread writes BYTES (a group commit's records: about 10
 * of 250 bytes under wrk's 32 connections) and fdatasyncs them, as a log
 * flusher does, into two files in turn: one appended to (its
 * size grows with every write) and one sized in advance with fallocate (as
 * src/wal.c does). The files alternate in short slices so that a disk
 * whose speed drifts by 2x between minutes moves both alike; each slice's
 * median is paired with the other file's next one.
 * Usage: prealloc_sync DIR [ROUNDS] [SLICE_MS] [BYTES]. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MAX_SYNCS 20000
#define FILE_BYTES ((off_t)64 << 20)

static double now_us(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e6 + (double)t.tv_nsec / 1e3;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Writes and syncs records at *off for slice_ms; the median sync in us. */
static size_t rec_bytes = 2500;

static double slice(int fd, off_t *off, double slice_ms, double *lat)
{
    static char rec[1 << 16];
    memset(rec, 'r', rec_bytes);
    double end = now_us() + slice_ms * 1e3;
    int n = 0;
    while (n < MAX_SYNCS && now_us() < end) {
        if (pwrite(fd, rec, rec_bytes, *off) != (ssize_t)rec_bytes)
            return -1;
        *off += (off_t)rec_bytes;
        double t0 = now_us();
        if (fdatasync(fd) != 0)
            return -1;
        lat[n++] = now_us() - t0;
    }
    qsort(lat, (size_t)n, sizeof *lat, cmp_double);
    return n ? lat[n / 2] : -1;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: prealloc_sync DIR [ROUNDS] [SLICE_MS] [BYTES]\n");
        return 2;
    }
    int rounds = argc > 2 ? atoi(argv[2]) : 20;
    double slice_ms = argc > 3 ? atof(argv[3]) : 500;
    if (argc > 4)
        rec_bytes = (size_t)atol(argv[4]);
    if (rounds < 1 || slice_ms <= 0 || rec_bytes < 1 || rec_bytes > 1 << 16) {
        fprintf(stderr, "prealloc_sync: ROUNDS >= 1, SLICE_MS > 0, BYTES 1..65536\n");
        return 2;
    }
    char pa[4096], pp[4096];
    snprintf(pa, sizeof pa, "%s/prealloc_sync.append", argv[1]);
    snprintf(pp, sizeof pp, "%s/prealloc_sync.fallocate", argv[1]);
    double *lat = malloc(MAX_SYNCS * sizeof *lat), *ratio = malloc((size_t)rounds * sizeof *ratio);
    double *ma = malloc((size_t)rounds * sizeof *ma), *mp = malloc((size_t)rounds * sizeof *mp);
    if (!lat || !ratio || !ma || !mp)
        return 1;
    int fa = -1, fp = -1;
    off_t oa = 0, op = 0;
    for (int r = 0; r < rounds; r++) {
        /* fresh files, as a new segment, before a slice could pass the end
         * (at most one sync per 20 us) */
        if (r == 0 || op + (off_t)(slice_ms * 50 * (double)rec_bytes) > FILE_BYTES) {
            if (fa >= 0)
                close(fa), close(fp);
            fa = open(pa, O_WRONLY | O_CREAT | O_TRUNC, 0600);
            fp = open(pp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
            if (fa < 0 || fp < 0 || fallocate(fp, 0, 0, FILE_BYTES) != 0 || fsync(fa) || fsync(fp)) {
                perror("prealloc_sync");
                return 1;
            }
            oa = op = 0;
        }
        /* alternate which goes first, so neither always follows the other */
        if (r % 2) {
            mp[r] = slice(fp, &op, slice_ms, lat);
            ma[r] = slice(fa, &oa, slice_ms, lat);
        } else {
            ma[r] = slice(fa, &oa, slice_ms, lat);
            mp[r] = slice(fp, &op, slice_ms, lat);
        }
        if (ma[r] <= 0 || mp[r] <= 0) {
            perror("prealloc_sync: write or sync");
            return 1;
        }
        ratio[r] = mp[r] / ma[r];
        printf("round %2d: appended %6.0f us, preallocated %6.0f us, ratio %.2f\n", r + 1, ma[r], mp[r], ratio[r]);
    }
    close(fa), close(fp);
    unlink(pa), unlink(pp);
    qsort(ratio, (size_t)rounds, sizeof *ratio, cmp_double);
    qsort(ma, (size_t)rounds, sizeof *ma, cmp_double);
    qsort(mp, (size_t)rounds, sizeof *mp, cmp_double);
    printf("median of %d rounds: appended %.0f us, preallocated %.0f us; ratio median %.2f (quartiles %.2f-%.2f)\n",
           rounds, ma[rounds / 2], mp[rounds / 2], ratio[rounds / 2], ratio[rounds / 4], ratio[3 * rounds / 4]);
    free(lat), free(ratio), free(ma), free(mp);
    return 0;
}
