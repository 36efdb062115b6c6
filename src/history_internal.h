/* history_internal: the training history's file format, shared by
 * history.c (open, archive, compaction, load) and history_chunks.c (the
 * chunk reader and writer). include/history.h has the format. Not a public
 * interface.
 *
 * Threads: none of its own; each function uses only what it is given. */
#ifndef LTVD_HISTORY_INTERNAL_H
#define LTVD_HISTORY_INTERNAL_H

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

#endif
