/* segments: the population summary the worker computes on a timer
 * (segments.refresh_s): every shopper's prediction sorted into value tiers
 * by predicted value and activity states by p_active, with counts,
 * predicted value and realised spend per cell, the LTV and p_active
 * distributions, and two bounded lists (segments.list_max rows each): the
 * top shoppers by predicted value and the churn risks (valuable shoppers
 * whose p_active fell most from their peak). docs/SEMANTICS.md, "Segments
 * and lists", says what each figure means.
 *
 * Threads: service_segments_refresh on the worker (one job at a time;
 * its compute on a nice-19 thread, never under the store lock);
 * service_segments_due on the main thread; the rest on any thread.
 *
 * Ownership: a Segments is immutable once published and
 * reference-counted (atomic): service_segments_acquire gives the caller a
 * reference it drops with segments_release. The Service holds one
 * reference to the published result and, worker-only, the per-shopper
 * p_active peaks (20 bytes a shopper: id hash, first event time, peak) that churn risk is measured from. */
#ifndef LTVD_SEGMENTS_H
#define LTVD_SEGMENTS_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "shopper.h"

typedef struct Service Service;

/* Value tiers, by predicted value, best first: the cut points are the
 * 95th, 80th and 50th percentiles of the population's predicted LTV (top
 * 5%, next 15%, next 30%, the rest; ties go to the higher tier). */
typedef enum { SEG_TOP, SEG_HIGH, SEG_MID, SEG_LOW, SEG_TIERS } SegTier;
/* Activity states by p_active: active >= 0.7 > at_risk >= 0.3 > lapsed. */
typedef enum { SEG_ACTIVE, SEG_AT_RISK, SEG_LAPSED, SEG_ACTIVITIES } SegActivity;

#define SEG_ACTIVE_MIN 0.7
#define SEG_AT_RISK_MIN 0.3
#define SEG_LTV_BINS 16 /* edges 0, 1, 2, 5, 10, ... 50000: the last bin is open */
#define SEG_P_BINS 10   /* edges 0, 0.1, ... 0.9 */

const char *segments_tier_name(int tier);
const char *segments_activity_name(int activity);

typedef struct SegmentCell {
    uint64_t count;
    double predicted_value; /* sum of the shoppers' predicted LTV over the horizon */
    double realised_spend;  /* sum of their net spend so far (purchases minus refunds) */
} SegmentCell;

/* One row of a list: a shopper as the refresh saw it. */
typedef struct SegmentRow {
    uint64_t hash;         /* the store's id hash: rows of erased shoppers are skipped at read */
    int64_t first_ts;      /* the shopper's first event: one erased and created again is not this row */
    float ltv, p_active;
    float p_active_peak;   /* the highest p_active any refresh since start saw */
    float spend;           /* realised net spend */
    char user_id[USER_ID_MAX + 1];
} SegmentRow;

typedef struct Segments {
    atomic_int refs;
    uint64_t generation;      /* names this result in list cursors */
    int64_t computed_at;      /* wall clock, Unix seconds, when published */
    uint64_t computed_mono_ns;
    int64_t as_of;            /* the service's now (wall or event clock) the predictions are for */
    uint64_t model_version;
    int horizon_days;
    uint64_t shoppers;
    double tier_min[SEG_TIERS]; /* min_ltv of each tier; tier_min[SEG_LOW] = 0 */
    SegmentCell cells[SEG_TIERS][SEG_ACTIVITIES];
    double ltv_edges[SEG_LTV_BINS];
    uint64_t ltv_counts[SEG_LTV_BINS];
    double p_edges[SEG_P_BINS];
    uint64_t p_counts[SEG_P_BINS];
    SegmentRow *top;          /* (ntop,), by predicted LTV, highest first */
    size_t ntop;
    SegmentRow *churn;        /* (nchurn,), by the fall of p_active from its peak, largest first */
    size_t nchurn;
    double churn_min_value;   /* a churn row's value (max of LTV and spend) is at least this: the high tier's cut */
    double refresh_ms;        /* how long the refresh took */
    uint64_t work_bytes;      /* the refresh's peak working memory, lists and peaks included */
} Segments;

void segments_retain(Segments *g);
void segments_release(Segments *g); /* NULL-safe; the last release frees */

/* Any thread: the published result, retained, or NULL before the first
 * refresh. */
Segments *service_segments_acquire(Service *s);

/* Main: is a refresh due (none yet, or the last is segments.refresh_s old)? */
bool service_segments_due(Service *s);

/* Worker: predicts every shopper under the serving model, aggregates and
 * publishes a new result. Copies slots out in short holds of the store
 * lock; predicts and aggregates on a nice-19 thread. 0 or -ENOMEM (the
 * previous result stays). */
int service_segments_refresh(Service *s);

/* Any thread: live[i] = the shopper of rows[i] still exists (erased ones
 * are left out of lists). Under the store lock, letting a waiting thread in
 * every 32 rows (store_let_waiters). */
void service_segments_live(Service *s, const SegmentRow *const *rows, size_t n, bool *live);

/* Service lifetime (service.c): the holder's lock, and the result and
 * peaks freed. */
void service_segments_init(Service *s);
void service_segments_destroy(Service *s);

#endif
