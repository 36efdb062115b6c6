/* coldstart: the fallback's prediction for a shopper with events but no
 * purchase, from what it did (docs/MODEL.md, "Cold start from behaviour").
 *
 * Features at as_of (COLD_FEATURES, 8): 1, log(1 + events), log(1 + carts
 * among the retained events), log(1 + days since the last event),
 * log(1 + days since the first event), log(1 + days since the last cart,
 * or since the first event when no cart is retained), and the days since
 * the last and the first event in years (a long silence keeps lowering the
 * odds, more steeply than the logarithms allow). Model: P(any spend
 * in the horizon) = σ(β_p · f); spend given any is log-normal with
 * μ = β_μ · f and one σ. Fitted at every fallback refit on the shoppers'
 * earlier matured cuts at which they had no purchase yet (coldstart_fit).
 *
 * Without a fit (too few such cuts) a browser gets the population prior,
 * but never more than a one-time buyer known as long (COLD_CAPPED): no
 * evidence, no premium over a lapsed buyer. `fallback.cold_start=prior`
 * restores the textbook population prior (COLD_PRIOR).
 * Pure functions, any thread; fits on the worker. Arrays are the caller's. */
#ifndef LTVD_COLDSTART_H
#define LTVD_COLDSTART_H

#include <stddef.h>
#include <stdint.h>

#include "encoding.h"
#include "shopper.h"
#include "ziln.h"

#define COLD_FEATURES 8
/* A fit needs this many cuts, and this many with spend. */
#define COLD_MIN_EXAMPLES 200
#define COLD_MIN_CONVERTED 20

typedef enum { COLD_PRIOR = 0, COLD_CAPPED = 1, COLD_FITTED = 2 } ColdState;

typedef struct ColdStartFit {
    uint32_t state;                 /* ColdState */
    double beta_p[COLD_FEATURES];   /* logit P(any spend) */
    double beta_mu[COLD_FEATURES];  /* mean of log spend given any */
    double sigma;                   /* sd of log spend given any */
    uint64_t examples, converted;   /* what the fit saw */
} ColdStartFit;

/* One example: features at a cut c, the net spend in (c, c + H], and its
 * weight: how many of its shopper's candidate cuts it stands for. */
typedef struct ColdExample {
    double f[COLD_FEATURES];
    double y, w;
} ColdExample;

/* f (COLD_FEATURES,) for a shopper with aggregates agg and retained-event
 * summary rs (NULL: none retained) at as_of. */
void coldstart_features(double *f, const ShopperAgg *agg, const RecentSummary *rs, int64_t as_of);

/* Appends to ex (room for cap - *n more) the cuts of one shopper's
 * retained events ev (n_ev, by time; events_before of them dropped before,
 * none of them purchases, first_ts the first event's time) at which it had
 * no purchase yet and whose horizon_days window ended by now: a grid every
 * COLD_GRID_DAYS from the first event, so that cuts meet shoppers the way a
 * serving cut does (mostly in silence); at most COLD_CUTS_PER_SHOPPER,
 * evenly spread. */
#define COLD_CUTS_PER_SHOPPER 8
#define COLD_GRID_DAYS 15
void coldstart_cuts(ColdExample *ex, size_t *n, size_t cap, const Event *ev, size_t n_ev, uint32_t events_before,
                    int64_t first_ts, int64_t now, int horizon_days);

/* Fits *out from n examples: logistic regression by Newton's method and a
 * least-squares log-spend regression, both weighted and ridge-regularised. Fewer than
 * COLD_MIN_EXAMPLES or COLD_MIN_CONVERTED: state COLD_CAPPED. 0. */
int coldstart_fit(const ColdExample *ex, size_t n, ColdStartFit *out);

/* The fitted ZILN for features f (fit->state == COLD_FITTED). */
ZilnParams coldstart_predict(const ColdStartFit *fit, const double *f);
#endif
