/* history_bench: what an erasure costs the training history, split into
 * parts or not. Logs SHOPPERS shoppers x EVENTS events into a write-ahead
 * log in a scratch directory, archives it into a history of P parts, then
 * logs one erasure and times the archive that takes it (it compacts the
 * part the shopper is in: docs/MODEL.md, "Training history"), and reports
 * the bytes that compaction rewrote (the size of the erased shopper's part
 * before it: the whole history with one part). Each part count in its own directory,
 * the same events.
 *
 *   build/bench/history_bench [SHOPPERS [EVENTS [PARTS...]]]   # defaults 20000 100 1 16
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "history.h"
#include "log.h"
#include "store.h"
#include "timeutil.h"
#include "util.h"
#include "wal.h"
#include "wal_record.h"

#define T0 1600000000LL

static void log_all(Wal *w, int shoppers, int events)
{
    ByteBuf b = {0};
    char id[32];
    for (int k = 0; k < events; k++) {
        for (int u = 0; u < shoppers; u++) {
            snprintf(id, sizeof id, "shopper-%d", u);
            Event e = {id, strlen(id), NULL, 0, T0 + (int64_t)k * 3600, 1.5 + u % 7, 1, (EventType)(k % 4)};
            uint64_t seq;
            b.len = 0;
            if (wal_record_encode_events(&b, &e, 1) || wal_append(w, WAL_REC_EVENTS, b.p, b.len, &seq))
                abort();
        }
    }
    bytebuf_free(&b);
}

static void run(int shoppers, int events, unsigned parts)
{
    char dir[64] = "/tmp/ltvd-histbench-XXXXXX";
    if (!mkdtemp(dir))
        abort();
    WalConfig wc = {dir, WAL_FSYNC_NONE, 10, (size_t)1 << 28, (size_t)1 << 26, NULL, 1};
    Wal *w;
    if (wal_open(&w, &wc, 1, NULL, NULL))
        abort();
    log_all(w, shoppers, events);
    uint64_t seq;
    if (wal_rotate(w, &seq))
        abort();
    HistoryConfig hc = {dir, 1024, 36500, (uint64_t)1 << 40, 0, parts};
    History *h;
    char err[256];
    if (history_open(&h, &hc, err, sizeof err))
        abort();
    uint64_t t0 = time_mono_ns();
    if (history_archive(h, dir, seq, T0 + 400 * 86400LL))
        abort();
    double archive_s = (double)(time_mono_ns() - t0) * 1e-9;
    HistoryStats st;
    history_stats(h, &st);
    uint64_t bytes = st.bytes;
    /* the part the erased shopper is in: what its compaction reads and rewrites */
    char part_path[160];
    history_part_path(part_path, sizeof part_path, dir,
                      history_part_of(store_stable_hash_id("shopper-7", strlen("shopper-7")), parts));
    struct stat ps;
    if (stat(part_path, &ps) != 0)
        abort();
    unsigned char p[WAL_RECORD_DELETE_MAX];
    size_t len = wal_record_encode_delete(p, "shopper-7", strlen("shopper-7"));
    if (wal_append(w, WAL_REC_DELETE, p, len, &seq) || wal_rotate(w, &seq))
        abort();
    t0 = time_mono_ns();
    if (history_archive(h, dir, seq, T0 + 400 * 86400LL))
        abort();
    double erase_s = (double)(time_mono_ns() - t0) * 1e-9;
    HistoryStats st2;
    history_stats(h, &st2);
    printf("{\"parts\": %u, \"shoppers\": %d, \"events\": %" PRIu64 ", \"history_bytes\": %" PRIu64
           ", \"archive_s\": %.3f, \"erasure_archive_s\": %.4f, \"erasure_compactions\": %" PRIu64
           ", \"bytes_rewritten\": %.0f}\n",
           parts, shoppers, st.records, bytes, archive_s, erase_s, st2.compactions - st.compactions,
           (double)ps.st_size);
    history_close(h);
    wal_close(w);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0)
        abort();
}

int main(int argc, char **argv)
{
    int shoppers = argc > 1 ? atoi(argv[1]) : 20000;
    int events = argc > 2 ? atoi(argv[2]) : 100;
    log_set_level(LOG_WARN);
    if (shoppers < 8 || events < 1) {
        fprintf(stderr, "usage: history_bench [SHOPPERS>=8 [EVENTS [PARTS...]]]\n");
        return 2;
    }
    if (argc > 3) {
        for (int i = 3; i < argc; i++)
            run(shoppers, events, (unsigned)atoi(argv[i]));
    } else {
        run(shoppers, events, 1);
        run(shoppers, events, HISTORY_PARTS);
    }
    return 0;
}
