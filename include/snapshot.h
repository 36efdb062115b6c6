/* snapshot: the snapshot file format. A snapshot holds the shoppers, the
 * event_id dedupe window and the prediction log as they were after every
 * write-ahead log record below a sequence number (docs/DURABILITY.md says
 * when snapshots are taken and how recovery uses them: durability.c).
 *
 * File storage.dir/snapshot-<seq, 16 hex digits>.snap:
 *   char magic[8] "LTVDSNAP"; u32 format; u32 hidden; u32 ring_cap;
 *   u32 slot_bytes; u64 seq; i64 event_clock; u64 purchases_total;
 *   u64 users; u64 dedupe_keys; u32 reserved[2] (format 2 wrote the
 *   serving network's id in the first; nothing reads it);
 *   (format 3:) u64 hash_key[2] (the instance's secret HashKey, k0 k1);
 *   u64 dedupe_legacy;
 *   users x raw slot (slot_bytes each);
 *   dedupe_keys x {u64 key; i64 arrival (Unix seconds)}, oldest first, the
 *   first dedupe_legacy of them keys of the unkeyed hash64 (format <= 2:
 *   dedupe_keys x u64 key, all of the unkeyed hash, no arrival times);
 *   (format >= 2:) u64 predlog_entries; u64 predlog_pairs; predlog_entries
 *   x raw PredLogEntry; predlog_pairs x raw AdjPair (oldest first);
 *   u32 crc32 of everything before it.
 * Numbers in this build's byte order. Formats 1 (no prediction log) and 2
 * (no hash key, no arrival times) are still read: the tables are built
 * under the instance's own key, the old dedupe keys are kept as legacy
 * keys arrived at load_time, and pending predictions are re-keyed
 * (docs/DURABILITY.md, "Upgrading a snapshot").
 *
 * Threads: snapshot_write runs with the store lock held; in a forked
 * child that owns a frozen copy of memory (docs/ARCHITECTURE.md, "Fork
 * rules") snapshot_write_with does, with a scratch the parent made: it
 * takes no lock, uses no stdio and allocates nothing, only open, write,
 * fsync and close. The readers run on the main thread during recovery,
 * before anything else touches the tables. The caller owns the tables. */
#ifndef LTVD_SNAPSHOT_H
#define LTVD_SNAPSHOT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dedupe.h"
#include "predlog.h"
#include "store.h"

#define SNAPSHOT_FORMAT 5u /* 5: the prediction log's entries and pairs carry the network that served them */

/* The tables a snapshot saves and restores. predlog may be NULL (adjuster
 * off): then an empty log is written, and a file's log is skipped. */
typedef struct SnapshotTables {
    Store *store;
    Dedupe *dedupe;
    PredLog *predlog;
    int64_t load_time; /* snapshot_load: arrival given to a format <= 2 file's dedupe keys */
} SnapshotTables;

/* The figures a snapshot carries besides the tables. */
typedef struct SnapshotInfo {
    uint64_t seq;              /* the state after every log record below seq */
    int64_t event_clock;       /* newest applied event time */
    uint64_t purchases_total;  /* purchase events applied */
    uint64_t users;            /* shoppers in the file (filled by the readers) */
} SnapshotInfo;

/* Writes the tables and info to path (a new file, mode 0640: anything
 * already there is unlinked first, a symlink is never followed) and fsyncs it;
 * *bytes gets the file's size. 0 or -errno. */
int snapshot_write(const char *path, const SnapshotTables *t, const SnapshotInfo *info, size_t *bytes);
/* What a write needs besides the tables (its buffer, room for the
 * prediction log's pairs), allocated beforehand, with the store lock
 * held, for a forked child: a child of a threaded process must not
 * allocate. glibc's malloc is made safe across fork(), but a sanitizer's
 * allocator can be left locked by a thread that was inside it at the
 * fork, and the child then waits forever (docs/ARCHITECTURE.md, "Fork
 * rules"). NULL when out of memory. */
typedef struct SnapshotScratch SnapshotScratch;
SnapshotScratch *snapshot_scratch_new(const SnapshotTables *t);
void snapshot_scratch_free(SnapshotScratch *sc); /* NULL-safe */
/* snapshot_write with sc from snapshot_scratch_new under the same hold of
 * the store lock (or in the child forked under it). */
int snapshot_write_with(const char *path, const SnapshotTables *t, const SnapshotInfo *info, SnapshotScratch *sc,
                        size_t *bytes);
/* About the bytes snapshot_write would write now: the shoppers, the
 * event_id window and the prediction log (about 9 MB full at the default
 * adjuster.log_size). With the store lock held. */
size_t snapshot_size_estimate(const SnapshotTables *t);

/* Checks a file's header against the store's shape and its CRC, without
 * loading it; fills *info. -EINVAL: made for another model.hidden_size or
 * model.recent_events (an operator must decide); -EBADMSG: not a snapshot,
 * truncated or corrupt; -errno: cannot open. err says which, naming path. */
int snapshot_check(const char *path, const Store *shape, SnapshotInfo *info, char *err, size_t errlen);

/* Loads a checked file into empty tables (format 3: their hash key is set
 * to the file's; -EBUSY if they were not empty); fills *info. On error the tables
 * hold part of the file (the caller gives up). -ENOSPC (err says so): more
 * shoppers than the store's max_users. */
int snapshot_load(const char *path, const SnapshotTables *t, SnapshotInfo *info, char *err, size_t errlen);

/* Sequence numbers of the snapshots in dir, newest first (at most cap).
 * Removes the temporary files of snapshots that never finished. */
size_t snapshot_list(const char *dir, uint64_t *seqs, size_t cap);
/* dir/snapshot-<seq>.snap, or its temporary name (tmp). */
void snapshot_path(char *out, size_t n, const char *dir, uint64_t seq, bool tmp);

#endif
