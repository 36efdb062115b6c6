/* history: the training history: every shopper's events, kept on disk for
 * training only (docs/MODEL.md, "Training history"; the serving slot keeps
 * its ring of model.recent_events for state rebuilds).
 *
 * The history is the write-ahead log, compacted. Before a snapshot deletes
 * the log segments it supersedes, their records are archived here
 * (history_archive): each event as a 20-byte record (the shopper's stable
 * id hash, store_stable_hash_id: no user id on disk), each erasure as a
 * tombstone of that hash. File storage.dir/history/events.hist:
 *
 *   header: "LTVDHIS1", u32 version (1), u32 record size (20)
 *   chunks: u32 magic "HCHK", u32 nrec, u64 seq_hi, u32 crc32 (of nrec,
 *           seq_hi and the records), u32 0, then nrec records:
 *           u64 key, u32 ts, f32 value, u16 quantity, u8 type, u8 flags
 *
 * A chunk ends at a log record, and seq_hi says that every log record up to
 * it is in the file: a crash between archiving and deleting segments
 * re-archives nothing (the scan starts after the last valid chunk's
 * seq_hi), a torn chunk is cut at open and its records archived again.
 * The file is fsynced before the segments go.
 *
 * Readers (history_load, compaction) take a shopper's records in file
 * order and drop: everything up to its last tombstone, events older than
 * the newest before them (late events: the LSTM never sees them either),
 * events older than max_days before now, and all but the newest
 * max_events. Compaction rewrites the file so (in hash-partitioned passes
 * of bounded memory), then drops the oldest days until it fits max_bytes;
 * it runs after every archive that brought a tombstone (erasure leaves the
 * history with the snapshot that deletes the erasure's log segment), when
 * the file is over max_bytes, or grew to twice its size after the last
 * compaction.
 *
 * Threads: one History is used from one thread at a time for
 * archive/compact/load (the service's worker); history_stats from any. */
#ifndef LTVD_HISTORY_H
#define LTVD_HISTORY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "shopper.h"

#define HISTORY_RECORD_BYTES 20
#define HISTORY_FILE "events.hist"

typedef struct HistoryConfig {
    const char *dir;        /* storage.dir: the file is <dir>/history/events.hist */
    int max_events;         /* train.history_events: newest kept per shopper (>= 1) */
    int max_days;           /* train.history_days */
    uint64_t max_bytes;     /* train.history_max_mb in bytes */
} HistoryConfig;

typedef struct HistoryStats {
    uint64_t bytes, records, tombstones;   /* the file now */
    uint64_t shoppers;                     /* distinct hashes at the last compaction */
    uint64_t archived_seq;                 /* every log record up to it is archived */
    uint64_t archives, compactions, cut_bytes;
    int64_t last_archive_unix, last_compaction_unix; /* 0: never */
} HistoryStats;

/* One shopper's retained events as training reads them. */
typedef struct HistoryEvent {
    int64_t ts;
    double value;
    uint32_t quantity;
    uint8_t type;           /* EventType */
} HistoryEvent;

/* What history_load returns: for keys[i], events[start[i] .. start[i+1]),
 * oldest first. Free with history_events_free. */
typedef struct HistoryEvents {
    HistoryEvent *events;
    size_t *start;          /* (nkeys + 1,) */
    size_t nevents;
} HistoryEvents;

typedef struct History History;

/* Opens (creating <dir>/history and the file if needed) and checks the
 * file: a bad header starts it afresh, and everything from the first bad
 * chunk on is cut, with a warning either way. 0 or -errno (err says why). */
int history_open(History **out, const HistoryConfig *cfg, char *err, size_t errlen);
void history_close(History *h);
/* Deletes <dir>/history/events.hist if there is one (the history turned
 * off: nothing stays on disk that an erasure could not reach). */
void history_remove(const char *dir);

/* Archives the records of the log segments in wal_dir whose records are
 * all below below_seq and not archived yet, fsyncs, then compacts if due
 * (above). now: the service clock (max_days). 0 or -errno. */
int history_archive(History *h, const char *wal_dir, uint64_t below_seq, int64_t now);
/* Rewrites the file keeping what readers keep (above). 0 or -errno. */
int history_compact(History *h, int64_t now);
/* The retained events of the shoppers whose hashes are keys (sorted
 * ascending, nkeys). 0 or -ENOMEM/-errno (out is then empty). */
int history_load(History *h, const uint64_t *keys, size_t nkeys, int64_t now, HistoryEvents *out);
void history_events_free(HistoryEvents *e);
void history_stats(History *h, HistoryStats *out);

#endif
