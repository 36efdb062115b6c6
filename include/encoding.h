/* encoding: how an event becomes the LSTM's input vector, and how a shopper
 * becomes the head's extra inputs at prediction time. docs/MODEL.md lists
 * every component. Pure functions, any thread. */
#ifndef LTVD_ENCODING_H
#define LTVD_ENCODING_H

#include <stdint.h>

#include "shopper.h"

#define FEATURE_DIM 16   /* I: LSTM input width */
#define HEAD_EXTRA 6     /* E: head inputs besides h */
#define HEAD_EXTRA_SHOPPER 4 /* e[0..3] describe the shopper; e[4], e[5] are the fallback's */

/* What the encoder knows of a shopper's in-order history before an event.
 * It is kept per shopper and for the oldest event of the recent-event ring,
 * so a state can be rebuilt from the ring exactly as it was first computed. */
typedef struct EncodeContext {
    uint32_t events_before;    /* in-order events already applied */
    uint32_t purchases_before;
    int64_t prev_ts;           /* previous in-order event; ignored when events_before == 0 */
    int64_t first_ts;          /* first in-order event; ignored when events_before == 0 */
} EncodeContext;

/* x (FEATURE_DIM,) for event ev. */
void encode_event(float *x, const Event *ev, const EncodeContext *ctx);
/* Advances ctx past ev. */
void encode_context_advance(EncodeContext *ctx, const Event *ev);

/* e (HEAD_EXTRA,) for a shopper at as_of; bg_log_ltv is log1p of the
 * fallback's expected spend and bg_p_alive its P(alive). agg may be NULL for
 * an unknown shopper. */
void encode_head_extra(float *e, const ShopperAgg *agg, int64_t as_of, double bg_log_ltv, double bg_p_alive);

#endif
