/* history: the training history: every shopper's events, kept on disk for
 * training only (docs/MODEL.md, "Training history"; the serving slot keeps
 * its ring of model.recent_events for state rebuilds).
 *
 * The history is the write-ahead log, compacted. Before a snapshot deletes
 * the log segments it supersedes, their records are archived here
 * (history_archive): each event as a 20-byte record (the shopper's stable
 * id hash, store_stable_hash_id: no user id on disk), each erasure as a
 * tombstone of that hash. The shoppers are split by hash into parts
 * (HISTORY_PARTS files, history_part_of), so that an erasure's compaction
 * rewrites the one part its shopper is in, not the whole history. Each
 * part is a file storage.dir/history/events-NN.hist (history_part_path):
 *
 *   header: "LTVDHIS1", u32 version (1), u32 record size (20)
 *   chunks: u32 magic "HCHK", u32 nrec, u64 seq_hi, u32 crc32 (of nrec,
 *           seq_hi and the records), u32 0, then nrec records:
 *           u64 key, u32 ts, f32 value, u16 quantity, u8 type, u8 flags
 *
 * A chunk ends at a log record, and seq_hi says that every log record up to
 * it is in the part (its shoppers' events of them): a crash between
 * archiving and deleting segments re-archives nothing (the scan starts
 * after the lowest part's last valid seq_hi, and a part skips the log
 * records it has), a torn chunk is cut at open and its records archived
 * again. Every part gets a chunk at each archive, empty if none of its
 * shoppers had events, so that their seq_hi move together. The parts are
 * fsynced before the segments go.
 *
 * Readers (history_load, compaction) take a shopper's records in file
 * order and drop: everything up to its last tombstone, records no event
 * could have made (unknown type or flags, a value outside events_parse's
 * [0, 1e12], quantity 0: damage the CRC missed), events older than
 * the newest before them (late events: the LSTM never sees them either),
 * events older than max_days before now, and all but the newest
 * max_events. Compaction rewrites a part so (in hash-partitioned passes
 * of bounded memory), then drops its oldest days until it fits its share
 * of max_bytes (max_bytes / parts; all of it if today's events with any
 * dated later do not fit alone); it runs on a part after every archive
 * that brought it a tombstone (erasure leaves the history with the
 * snapshot that deletes the erasure's log segment), when the part is over
 * its share, grew to twice its size after its last compaction (at
 * least 1 MiB), or a load found it damaged (the compaction then fails on
 * the damage, and the service starts the history afresh). A history of the
 * single-file format of before (one events.hist) is appended to the parts
 * at open and deleted.
 *
 * Threads: archive, compact and reset from one thread at a time (the
 * service's snapshot worker); history_load and history_stats from any
 * thread at the same time as those (a retrain reads the history while a
 * snapshot archives and compacts it: the load reads its own dup of the
 * file up to its known good end). */
#ifndef LTVD_HISTORY_H
#define LTVD_HISTORY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "shopper.h"

#define HISTORY_RECORD_BYTES 20
/* The default number of parts. The count is not written on disk: a build
 * with another count would route an erasure to another part than the
 * shopper's records. Before changing it, record the count beside the parts
 * and start the history afresh (or move it) when it differs. */
#define HISTORY_PARTS 16
#define HISTORY_PARTS_MAX 256

typedef struct HistoryConfig {
    const char *dir;        /* storage.dir: the parts are <dir>/history/events-NN.hist */
    int max_events;         /* train.history_events: newest kept per shopper (>= 1) */
    int max_days;           /* train.history_days */
    uint64_t max_bytes;     /* train.history_max_mb in bytes */
    size_t pass_records;    /* records a compaction pass holds before it drops what it
                             * will not keep; 0: 2Mi (48 MiB); tests set it low */
    unsigned parts;         /* 0: HISTORY_PARTS; at most HISTORY_PARTS_MAX; the same at every open
                             * of a directory (another count misplaces shoppers: re-open with it
                             * only after history_remove) */
} HistoryConfig;

typedef struct HistoryStats {
    uint64_t bytes, records, tombstones;   /* the parts now, summed */
    /* Shoppers with records kept, as of each part's last compaction since
     * the history was opened or reset, summed: shoppers archived since are
     * not in it, and a part not compacted since counts 0 (part_compacted
     * says which). Exact counting would hold every part's distinct hashes
     * in memory (a shopper's records are spread over its part's chunks):
     * only a compaction, which sorts them by shopper, counts. */
    uint64_t shoppers;
    unsigned parts, parts_compacted;        /* all the parts; those shoppers counts */
    bool part_compacted[HISTORY_PARTS_MAX]; /* (parts,): compacted since the open or reset */
    uint64_t archived_seq;                 /* every log record up to it is archived (the lowest part's) */
    uint64_t archives, compactions, cut_bytes; /* compactions: of a part */
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

/* The part a shopper's hash is in, of nparts. */
unsigned history_part_of(uint64_t key, unsigned nparts);
/* <dir>/history/events-NN.hist, NN the part (two digits at least). */
void history_part_path(char *out, size_t n, const char *dir, unsigned part);

/* Opens (creating <dir>/history and the parts if needed) and checks the
 * parts: a bad header starts one afresh, and everything from its first bad
 * chunk on is cut, with a warning either way. 0 or -errno (err says why). */
int history_open(History **out, const HistoryConfig *cfg, char *err, size_t errlen);
void history_close(History *h);
/* Deletes the history's files in <dir>/history, the parts and their
 * compaction copies, and a single-file history of before (the history
 * turned off, or a file that cannot be opened: nothing stays on disk that
 * an erasure could not reach). */
void history_remove(const char *dir);

/* Archives the records of the log segments in wal_dir whose records are
 * all below below_seq and not archived yet, fsyncs, then compacts if due
 * (above). now: the service clock (max_days). 0 or -errno. */
int history_archive(History *h, const char *wal_dir, uint64_t below_seq, int64_t now);
/* Rewrites every part keeping what readers keep (above). A chunk that
 * cannot be read whole (I/O error, damage after open) fails it and leaves
 * that part as it was (the parts before it are compacted). 0 or -errno. */
int history_compact(History *h, int64_t now);
/* Deletes the parts and starts empty ones (an archive or compaction
 * failed: the file may lack a tombstone of log segments about to go, or
 * keep records an erasure removes; the history is a training aid, keeping
 * erased data is not an option). The figures start at 0. If no new file
 * can be made, loads fail (-EIO) and the next archive tries again. 0 or
 * -errno. Same thread as history_archive. */
int history_reset(History *h);
/* The retained events of the shoppers whose hashes are keys (sorted
 * ascending, nkeys). Any thread, beside an archive or compaction. A chunk
 * short of the file's known good end (I/O error, damage) is -EIO, never
 * taken as the end. 0 or -ENOMEM/-errno (out is then empty). */
int history_load(History *h, const uint64_t *keys, size_t nkeys, int64_t now, HistoryEvents *out);
void history_events_free(HistoryEvents *e);
/* How many records (events and tombstones, before the readers' rules
 * drop any) the history holds for each of keys (sorted ascending) into
 * counts (nkeys): an upper bound of what history_load keeps, and what it
 * holds while it reads. Any thread, as history_load. 0 or -errno. */
int history_count(History *h, const uint64_t *keys, size_t nkeys, uint32_t *counts);
void history_stats(History *h, HistoryStats *out);

#endif
