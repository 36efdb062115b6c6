/* wal: the append-only write-ahead log.
 *
 * Files: storage.dir/wal-<first seq, 16 hex digits>.log, each capped at
 * segment_bytes. Record: u32 len (of what follows the crc), u32 crc32,
 * u64 seq, u8 kind, payload. Sequence numbers increase by one per record.
 *
 * Appending copies the record into a bounded in-memory buffer (the caller
 * serialises appends, so log order is apply order). A flusher thread writes
 * the buffer out and, by policy, fdatasyncs it: one fdatasync covers every
 * record appended meanwhile (group commit). With WAL_FSYNC_ALWAYS
 * WalConfig.sync_lanes flusher threads (1 by default) overlap their fdatasyncs (writes stay in order; records
 * are published durable in order). When records become durable the
 * durable callback gets the highest durable seq, on the flusher thread or on
 * the thread in wal_sync/wal_rotate, with the log's io lock held: seqs come
 * in increasing order and the callback must not call into the log.
 *
 * Thread use: wal_append/wal_rotate from one thread at a time (the service
 * holds its store lock); wal_durable_seq from any thread; the callback runs
 * on a flusher thread, one call at a time. */
#ifndef LTVD_WAL_H
#define LTVD_WAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum { WAL_FSYNC_ALWAYS = 0, WAL_FSYNC_INTERVAL = 1, WAL_FSYNC_NONE = 2 } WalFsync;

enum { WAL_REC_EVENTS = 1, WAL_REC_DELETE = 2 };

typedef struct WalConfig {
    const char *dir;
    WalFsync fsync;
    int interval_ms;        /* WAL_FSYNC_INTERVAL: fsync at least this often */
    size_t segment_bytes;   /* rotate past this size */
    size_t buffer_bytes;    /* in-memory cap; appends wait for the flusher beyond it */
    struct MetricsFsync *fsync_latency; /* optional, not owned: each group-commit fdatasync observed */
    int sync_lanes;         /* WAL_FSYNC_ALWAYS: fdatasyncs in flight at once, 1..WAL_SYNC_LANES_MAX; 0: 1 */
} WalConfig;

/* The most flusher threads (and overlapping fdatasyncs) fsync=always runs. */
#define WAL_SYNC_LANES_MAX 4

typedef struct WalStats {
    uint64_t records, bytes, fsyncs, segments_removed;
    uint64_t recoveries;    /* failures recovered from (recover_locked) */
    uint64_t durable_seq, next_seq;
    uint64_t fsync_ns_total;
} WalStats;

typedef struct Wal Wal;

/* Opens a new segment whose first record will be next_seq, and starts the
 * flusher. */
int wal_open(Wal **out, const WalConfig *cfg, uint64_t next_seq, void (*durable_cb)(void *, uint64_t), void *arg);
/* Any thread: no durable callback runs after this returns (the callback is
 * only ever called with the io lock held, which this takes). For shutdown,
 * before the callback's argument is freed. NULL-safe. */
void wal_detach_callback(Wal *w);
/* Writes out and syncs everything appended, stops the flusher, closes. NULL-safe. */
void wal_close(Wal *w);

/* Appends one record; *seq gets its sequence number. -EIO while the log has
 * failed (a write or fsync error): nothing more is accepted until the
 * flusher has made the records it could not write durable in a new segment
 * (it retries every second: a full disk that gets room again); then appends
 * go on, without a restart. Records appended before the failure and not
 * durable then (answered 503) become durable at that point. */
int wal_append(Wal *w, uint8_t kind, const void *payload, size_t len, uint64_t *seq);
/* Writes out and syncs everything appended so far, on the calling thread. */
int wal_sync(Wal *w);
/* Syncs, then starts a new segment; returns the first seq it will hold. */
int wal_rotate(Wal *w, uint64_t *first_seq);
/* Deletes segment files whose records all have seq < seq. */
void wal_remove_before(Wal *w, uint64_t seq);
/* Deletes the torn tails kept by wal_replay (<segment>.torn-*): they may
 * hold an erased shopper's id, so a snapshot covering an erasure calls it. */
void wal_remove_torn(Wal *w);

uint64_t wal_durable_seq(Wal *w);
bool wal_failed(Wal *w);
void wal_stats(Wal *w, WalStats *out);

/* ---- recovery ---------------------------------------------------------- */

/* A torn tail's first bytes are kept as evidence, up to this much, in at
 * most this many files (then a torn tail is cut without a copy, with a
 * warning). */
#define WAL_TORN_KEEP_MAX ((size_t)16 << 20)
#define WAL_TORN_KEEP_FILES 8

typedef struct WalReplayStats {
    uint64_t records, segments, last_seq;
    uint64_t truncated_bytes;  /* a torn or corrupt tail cut off */
    uint64_t torn_kept_bytes;  /* of which kept in <segment>.torn-<offset> */
    bool truncated;
} WalReplayStats;

typedef int (*WalReplayFn)(void *arg, uint8_t kind, uint64_t seq, const unsigned char *payload, size_t len);

/* Calls fn for every record with seq >= from_seq, in order. A bad record
 * (short, bad CRC, bad seq) with nothing valid after it is a torn tail: its
 * bytes (up to WAL_TORN_KEEP_MAX) are copied to <segment>.torn-<offset>,
 * then the file is truncated there, synced with its directory, and it is
 * reported in *st. A bad record followed by
 * valid data is corruption in the middle: -EBADMSG with a message. */
int wal_replay(const char *dir, uint64_t from_seq, WalReplayFn fn, void *arg, WalReplayStats *st, char *err,
               size_t errlen);

/* Read-only, while the log is live: calls fn for every record with
 * from_seq <= seq < below_seq in the segments whose records are all below
 * below_seq (those a snapshot at below_seq supersedes), in seq order. A
 * segment that cannot be read, holds a bad record or ends before the next
 * one's first record stops the scan with a warning and -errno/-EBADMSG
 * (nothing after it is passed on: a hole is never skipped). *last gets the
 * highest seq passed to fn (from_seq - 1: none). 0, fn's nonzero return
 * (the scan stops there), or -errno. */
int wal_scan(const char *dir, uint64_t from_seq, uint64_t below_seq, WalReplayFn fn, void *arg, uint64_t *last);

#endif
