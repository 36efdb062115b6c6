/* predlog: the log of served predictions, kept until their horizon has
 * passed, then turned into (prediction, realised spend) pairs for the RL
 * adjuster (docs/MODEL.md, "RL adjuster").
 *
 * Bounded: at most `cap` pending predictions, one per shopper (the oldest is
 * kept; later ones of the same shopper are not logged until it matures), in
 * an open-addressing table keyed by the shopper's id hash. A prediction that
 * finds the table full is counted and not logged. Matured pairs go to a ring
 * of `cap` pairs, the newest overwriting the oldest. Pairs carry no shopper
 * identity. Not thread-safe: the service guards it with the store lock. */
#ifndef LTVD_PREDLOG_H
#define LTVD_PREDLOG_H

#include <stddef.h>
#include <stdint.h>

#include "adjuster.h"

typedef struct PredLogEntry {
    uint64_t key;         /* shopper id hash */
    int64_t t;            /* as_of of the prediction */
    double pred;          /* value served, before the adjuster's correction */
    double spend_at;      /* the shopper's net spend as of t */
    float recency_days;   /* at t */
    float tenure_days;    /* at t */
    uint64_t model_version;
    uint32_t net_id;      /* the serving model's network (LstmWeights.id, never 0): whose prediction it was */
    uint32_t reserved;    /* 0 (snapshots hold the struct: its padding is explicit) */
} PredLogEntry;

typedef struct PredLogStats {
    uint64_t logged, matured, dropped_full, dropped_unknown;
    size_t pending, pairs, cap;
    double pairs_predicted, pairs_realised; /* sums over the kept pairs: served vs what followed */
} PredLogStats;

/* Realised spend of a matured entry, or < 0 if it cannot be known (the
 * shopper is gone, or the retained events no longer cover the window). */
typedef double (*PredLogOutcome)(void *arg, const PredLogEntry *e);

typedef struct PredLog PredLog;

int predlog_create(PredLog **out, size_t cap);  /* cap >= 1 */
void predlog_destroy(PredLog *l);               /* NULL-safe */

/* Logs e unless its shopper already has a pending prediction or the log is full. */
void predlog_record(PredLog *l, const PredLogEntry *e);
/* Drops the shopper's pending prediction, if any (erasure). */
void predlog_forget(PredLog *l, uint64_t key);
/* Visits up to `span` table positions from *cursor (wrapping, advancing
 * it); every entry with t <= matured_at becomes a pair (via outcome) or is
 * dropped. Returns the number of positions left before the table has been
 * covered once from cursor 0 (0: done). */
size_t predlog_mature(PredLog *l, int64_t matured_at, size_t *cursor, size_t span, PredLogOutcome outcome,
                      void *arg);
/* Copies up to max matured pairs, oldest first; returns how many. */
size_t predlog_pairs(const PredLog *l, AdjPair *out, size_t max);
/* O(1): the pair sums are kept as pairs come and go (a /metrics scrape
 * holds the store lock for this). */
void predlog_stats(const PredLog *l, PredLogStats *out);
/* Changes whenever the kept pairs change (a pair matured or restored):
 * what a cached calibration of them is checked against. */
uint64_t predlog_pair_generation(const PredLog *l);
/* The largest network id below `below` among the pending entries and the
 * kept pairs (0 when none): recovery keeps new networks' ids above it. */
uint32_t predlog_max_net(const PredLog *l, uint32_t below);

/* Snapshots: every pending entry (table order), and the kept pairs. */
void predlog_foreach_entry(const PredLog *l, void (*fn)(void *arg, const PredLogEntry *e), void *arg);
/* Restores a snapshot's entry or pair, within this log's capacity (extras
 * are dropped; the counters start afresh). */
void predlog_restore_entry(PredLog *l, const PredLogEntry *e);
void predlog_restore_pair(PredLog *l, const AdjPair *p);

#endif
