/* fsync_overlap: how many fdatasyncs per second a file on this disk takes
 * when 1, 2 or 4 threads sync at once (docs/PERFORMANCE.md, "Durable
 * single-event POST"). Each thread appends 100 bytes under a mutex, as the
 * log's flushers write, then calls fdatasync outside it, for 3 s.
 * Usage: fsync_overlap THREADS FILE (FILE is created and removed). */
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MAX_THREADS 16

static int fd;
static pthread_mutex_t write_lock = PTHREAD_MUTEX_INITIALIZER;
static atomic_bool stop;
static long syncs[MAX_THREADS];
static double latency_s[MAX_THREADS];

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void *syncer(void *arg)
{
    long i = (long)arg;
    char rec[100];
    memset(rec, 'x', sizeof rec);
    while (!atomic_load(&stop)) {
        pthread_mutex_lock(&write_lock);
        ssize_t w = write(fd, rec, sizeof rec);
        pthread_mutex_unlock(&write_lock);
        if (w != (ssize_t)sizeof rec)
            return NULL;
        double t0 = now_s();
        if (fdatasync(fd) != 0)
            return NULL;
        latency_s[i] += now_s() - t0;
        syncs[i]++;
    }
    return NULL;
}

int main(int argc, char **argv)
{
    int n = argc == 3 ? atoi(argv[1]) : 0;
    if (n < 1 || n > MAX_THREADS) {
        fprintf(stderr, "usage: fsync_overlap THREADS(1-%d) FILE\n", MAX_THREADS);
        return 2;
    }
    fd = open(argv[2], O_WRONLY | O_CREAT | O_TRUNC | O_APPEND, 0600);
    if (fd < 0) {
        perror(argv[2]);
        return 1;
    }
    pthread_t t[MAX_THREADS];
    for (long i = 0; i < n; i++)
        pthread_create(&t[i], NULL, syncer, (void *)i);
    sleep(3);
    atomic_store(&stop, true);
    long total = 0;
    double lat = 0;
    for (int i = 0; i < n; i++) {
        pthread_join(t[i], NULL);
        total += syncs[i];
        lat += latency_s[i];
    }
    close(fd);
    unlink(argv[2]);
    printf("threads %d: %.0f fdatasyncs/s, mean latency %.0f us\n", n, (double)total / 3.0,
           total ? 1e6 * lat / (double)total : 0.0);
    return 0;
}
