/* history_internal: the training history's file format and state, shared
 * by history.c (open, archive, load), history_compact.c (the readers'
 * rules, compaction) and history_chunks.c (the chunk reader and writer).
 * include/history.h has the format. Not a public interface.
 *
 * Threads: none of its own; each function uses only what it is given
 * (History's locks: history.c's header comment). */
#ifndef LTVD_HISTORY_INTERNAL_H
#define LTVD_HISTORY_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "history.h"

#define FILE_MAGIC "LTVDHIS1"
#define FILE_VERSION 1u
#define FILE_HEADER 16u
#define CHUNK_MAGIC 0x4b484348u          /* "HCHK" */
#define CHUNK_HEADER 24u
#define CHUNK_RECORDS 4096u              /* a chunk is flushed at the first log record boundary past this */
#define CHUNK_MAX ((size_t)1 << 20)      /* more records than this in a header: corrupt */
#define HF_TOMBSTONE 1u

/* One record in memory; ord keeps file order through a sort. */
typedef struct HistRec {
    uint64_t key;
    uint32_t ts;
    float value;
    uint32_t ord;
    uint16_t quantity;
    uint8_t type, flags;
} HistRec;

/* Appends r to the growing array recs (4096, then doubling); the new
 * element, or NULL without memory. */
HistRec *hist_push_record(HistRec **recs, size_t *n, size_t *cap, const HistRec *r);

/* Records waiting to be written as one chunk. */
typedef struct ChunkWriter {
    int fd;
    uint64_t offset;         /* where the next chunk goes */
    unsigned char *buf;      /* CHUNK_HEADER + cap records */
    size_t n, cap;
    uint64_t records, tombstones;
} ChunkWriter;

/* The writer appends at offset of fd (not owned: the caller closes it);
 * free w->buf when done. 0 or -ENOMEM. */
int hist_writer_init(ChunkWriter *w, int fd, uint64_t offset);
int hist_writer_add(ChunkWriter *w, const HistRec *r);
/* Writes the pending records (maybe none: seq_hi alone is news) as a chunk
 * saying every log record up to seq_hi is in the file. 0 or -errno. */
int hist_writer_flush(ChunkWriter *w, uint64_t seq_hi);

typedef int (*ChunkFn)(void *arg, const HistRec *r, size_t n, uint64_t seq_hi);

/* Calls fn for each valid chunk of the file open at fd (read with pread:
 * a dup of another thread's fd does), from the header on. *end gets the
 * end of the last valid chunk read, *seq_hi its seq_hi (0: none).
 * limit 0 (opening the file): to its size, stopping at the first bad
 * chunk, which is no error. limit > 0: exactly to limit, the end of the
 * known good chunks: a bad chunk, a short read or a read error before it
 * is -EIO (or -errno), never the end. 0, fn's nonzero return, or -errno. */
int hist_scan_chunks(int fd, uint64_t limit, ChunkFn fn, void *arg, uint64_t *end, uint64_t *seq_hi);

/* The file header: written at offset 0 (0 or -EIO), checked. */
int hist_write_header(int fd);
bool hist_header_ok(int fd);

/* ---- the history's state (history.c, history_compact.c) ------------------ */

/* records a compaction pass holds (24 B each: 48 MiB); past it the pass
 * drops what it will not keep, and holds at most twice what it keeps */
#define PASS_RECORDS ((size_t)2 << 20)

/* One part: one file, the shoppers whose hashes history_part_of gives it. */
typedef struct HistPart {
    char path[600], tmp[620];
    int fd;                  /* O_RDWR (-1: a reset failed); appends go to good_end */
    uint64_t good_end;       /* the file up to its last valid chunk */
    pthread_mutex_t fd_lock; /* fd and good_end change under it (their one writer reads them without) */
    uint64_t bytes_at_compaction;
    atomic_bool damaged;     /* a load found a bad chunk: the next archive compacts it (and fails) */
    /* the part's figures (the history's st_lock); shoppers only once compacted */
    uint64_t bytes, records, tombstones, shoppers, archived_seq;
    bool compacted;          /* since the open or the last reset */
} HistPart;

struct History {
    HistoryConfig cfg;
    char hdir[560];
    pthread_mutex_t st_lock;
    HistoryStats st;         /* archives, compactions, cut_bytes and times; the rest is the parts' */
    unsigned nparts;
    HistPart parts[];
};

/* history.c: a part's figures (under st_lock); a part's new file, written
 * to good_end, swapped in under its fd_lock (the old one closed). */
void hist_set_stats(History *h, HistPart *p, uint64_t records, uint64_t tombstones, uint64_t bytes);
void hist_swap_fd(HistPart *p, int fd, uint64_t good_end);

/* history_compact.c: one shopper's records r (n, file order) in place:
 * what readers keep (include/history.h's rules); how many. */
size_t hist_select_records(HistRec *r, size_t n, int64_t min_ts, int max_events);
/* The oldest time kept: now - train.history_days. */
int64_t hist_min_ts(const History *h, int64_t now);
/* qsort order of HistRec: by key, then file order (ord). */
int hist_cmp_key_ord(const void *a, const void *b);
/* Compacts the parts whose compaction is due. 0 or -errno. */
int hist_compact_due(History *h, int64_t now);

#endif
