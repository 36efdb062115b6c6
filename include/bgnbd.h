/* bgnbd: the classical fallback and yardstick. BG/NBD (Fader, Hardie & Lee
 * 2005) for the number of purchase days, Gamma-Gamma for spend per purchase
 * day. Time is in weeks. Pure functions, any thread; the fits are called on
 * the worker thread only (they take milliseconds to seconds). */
#ifndef LTVD_BGNBD_H
#define LTVD_BGNBD_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

#include "shopper.h"
#include "ziln.h"

typedef struct BgnbdParams {
    double r, alpha, a, b;
} BgnbdParams;

typedef struct GammaGammaParams {
    double p, q, v;
} GammaGammaParams;

/* Parameters published for the CDNOW sample (39-week calibration); used as
 * the prior before the first fit and as the fits' starting point. */
extern const BgnbdParams BGNBD_CDNOW_PRIOR;
extern const GammaGammaParams GG_CDNOW_PRIOR;

/* Gauss hypergeometric 2F1(a, b; c; z) for 0 <= z < 1 by its power series. */
double hyp2f1(double a, double b, double c, double z);

/* Log-likelihood of one shopper's (x, t_x, T) under BG/NBD. */
double bgnbd_loglik(const BgnbdParams *p, double x, double t_x, double T);
double bgnbd_p_alive(const BgnbdParams *p, double x, double t_x, double T);
/* Expected purchase days in (T, T + t] given the history; x = t_x = T = 0 gives
 * the expectation for a shopper just acquired. */
double bgnbd_expected(const BgnbdParams *p, double t, double x, double t_x, double T);
/* P(no purchase day in (T, T + t]). */
double bgnbd_p_none(const BgnbdParams *p, double t, double x, double t_x, double T);

/* Gamma-Gamma log-likelihood of a repeat buyer (x > 0, mean spend m > 0). */
double gg_loglik(const GammaGammaParams *p, double x, double m);
/* E[spend per purchase day | x, m]; x = 0 gives the population mean p v/(q-1). */
double gg_expected_value(const GammaGammaParams *p, double x, double m);

/* Maximum-likelihood fits by Nelder-Mead on log-parameters, starting from
 * *inout. Return 0, or -EINVAL when there is too little data (inout kept). */
int bgnbd_fit(const CustomerSummary *s, size_t n, BgnbdParams *inout);
int gg_fit(const CustomerSummary *s, size_t n, GammaGammaParams *inout, size_t *repeat_buyers);
/* The same, stopping with -ECANCELED (inout kept) within 50 iterations of
 * *cancel turning true: a fit on many shoppers can take minutes, and ltvd's
 * shutdown waits for the worker. cancel may be NULL. */
int bgnbd_fit_cancel(const CustomerSummary *s, size_t n, BgnbdParams *inout, const atomic_bool *cancel);
int gg_fit_cancel(const CustomerSummary *s, size_t n, GammaGammaParams *inout, size_t *repeat_buyers,
                  const atomic_bool *cancel);

typedef struct FallbackOutput {
    double expected_purchases; /* E[purchase days in the window] */
    double p_alive;
    double p_active;           /* P(at least one purchase in the window) */
    double value;              /* E[spend per purchase day] */
    double ltv;                /* expected_purchases * value */
    ZilnParams ziln;           /* same mean, for quantiles (docs/MODEL.md) */
} FallbackOutput;

/* Prediction over a window of t weeks; s = NULL for a shopper with no
 * purchase (the population prior). */
void fallback_predict(const BgnbdParams *bg, const GammaGammaParams *gg, const CustomerSummary *s, double t,
                      FallbackOutput *out);

#endif
