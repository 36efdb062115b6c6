/* wal_internal: what wal.c (the live log) and wal_replay.c (reading the
 * segment files: replay at start, the read-only scan for the training
 * history) share: the record framing and the segment files' names.
 * Not for other modules. Any thread: pure, or file-system calls only. */
#ifndef LTVD_WAL_INTERNAL_H
#define LTVD_WAL_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define REC_HEADER 8u           /* u32 len, u32 crc */
#define REC_FIXED 9u            /* u64 seq, u8 kind: counted in len */

/* dir/wal-<first, 16 hex digits>.log into out (n bytes). */
void wal_seg_path(char *out, size_t n, const char *dir, uint64_t first);
/* fsyncs a file (not following a symlink) or a directory. 0 or -errno. */
int wal_sync_path(const char *path);
int wal_fsync_dir(const char *dir);
/* Sorted list of the first seqs of the segment files in dir (*out malloc'd,
 * caller frees; NULL and 0 when there is none). 0 or -errno. */
int wal_list_segments(const char *dir, uint64_t **out, size_t *n);
/* Is name a torn tail kept as evidence (<segment>.torn-<offset>)? */
bool wal_is_torn_name(const char *name);
/* The torn-tail evidence files in dir. */
unsigned wal_count_torn(const char *dir);

#endif
