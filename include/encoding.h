/* encoding: how an event becomes the LSTM's input vector, and how a shopper
 * becomes the head's extra inputs at prediction time. docs/MODEL.md lists
 * every component. Pure functions, any thread. */
#ifndef LTVD_ENCODING_H
#define LTVD_ENCODING_H

#include <stdint.h>

#include "shopper.h"

#define FEATURE_DIM 16   /* I: LSTM input width */
#define FEATURE_SEASON 11 /* x[11], x[12]: the event's time of year */
#define HEAD_EXTRA 15    /* E: head inputs besides h */
#define HEAD_EXTRA_SHOPPER 11 /* e[0..10] describe the shopper and as_of; e[11..14] carry the fallback's */
#define HEAD_EXTRA_SEASON 9   /* e[9], e[10]: the time of year at as_of */
#define HEAD_EXTRA_SILENCE 7  /* e[7], e[8]: the silence's log beyond 30 and 180 days */
#define HEAD_EXTRA_SEASON_BY_P 13 /* e[13], e[14]: the time of year times the fallback's p */

/* What the encoder knows of a shopper's in-order history before an event.
 * It is kept per shopper and for the oldest event of the recent-event ring,
 * so a state can be rebuilt from the ring exactly as it was first computed. */
typedef struct EncodeContext {
    uint32_t events_before;    /* in-order events already applied */
    uint32_t purchases_before;
    int64_t prev_ts;           /* previous in-order event; ignored when events_before == 0 */
    int64_t first_ts;          /* first in-order event; ignored when events_before == 0 */
} EncodeContext;

/* What a shopper's retained events (the recent-event ring, or the events
 * of a training sequence up to a cut) say of its browsing: the newest
 * browse (view or click), add-to-cart and purchase, and how many browses
 * and carts there were. A time of 0 means none among the retained events.
 * Built by folding events in order (recent_summary_apply). */
typedef struct RecentSummary {
    int64_t last_browse_ts, last_cart_ts, last_purchase_ts;
    uint32_t browses, carts;
} RecentSummary;

void recent_summary_init(RecentSummary *r);
void recent_summary_apply(RecentSummary *r, const Event *ev);
/* The summary of those of the last ring of ev[0, n) (all of them when ring
 * is 0) dated at or before as_of: what serving reads at as_of from a ring of
 * that size holding ev[0, n) (service_recent_summary). */
void recent_summary_of(RecentSummary *r, const Event *ev, size_t n, size_t ring, int64_t as_of);

/* x (FEATURE_DIM,) for event ev. */
void encode_event(float *x, const Event *ev, const EncodeContext *ctx);
/* Advances ctx past ev. */
void encode_context_advance(EncodeContext *ctx, const Event *ev);

/* e (HEAD_EXTRA,) for a shopper at as_of (docs/MODEL.md, "Head"): recency,
 * tenure, purchases, spend, the days since the last browse, cart and
 * purchase (log-scaled; as long as the tenure when there was none), the
 * log-scaled recency again beyond 30 and beyond 180 days (hinges: the head
 * is linear in its inputs, and a purchase's odds do not fall linearly in
 * log silence), the time of year at as_of (sin, cos: the season of the
 * horizon ahead), then
 * bg_log_ltv, log1p of the fallback's expected spend, and bg_p_alive, its
 * P(alive), and last the time of year times bg_p_active, the fallback's
 * probability of a purchase in the horizon (so the season can move an
 * active shopper's spend and a rare buyer's odds by different amounts; a
 * linear head otherwise gives every shopper the same season term). agg
 * may be NULL for an unknown shopper, rs NULL when no event is retained. */
void encode_head_extra(float *e, const ShopperAgg *agg, const RecentSummary *rs, int64_t as_of, double bg_log_ltv,
                       double bg_p_alive, double bg_p_active);

#endif
