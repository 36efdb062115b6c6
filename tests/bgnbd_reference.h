/* Reference values for a newly acquired shopper under BG/NBD, computed
 * without the library's 2F1 series, so tests of the fallback (and of the
 * cold-start prediction built on it) compare against an independent
 * derivation. */
#ifndef LTVD_TEST_BGNBD_REFERENCE_H
#define LTVD_TEST_BGNBD_REFERENCE_H

#include <math.h>

#include "bgnbd.h"

/* E[X(t)], repeat purchases in t weeks, by numerical integration: for a new
 * shopper E[X(t)] = E over (lambda, p) of (1 - exp(-lambda p t)) / p,
 * integrated over the Beta(a, b) prior of p with the Gamma mixing done in
 * closed form: E_lambda[1 - exp(-lambda p t)] = 1 - (alpha/(alpha + p t))^r.
 * Relative accuracy about 1e-5. */
static inline double ref_expected_new(const BgnbdParams *bp, double t)
{
    const int N = 200000;
    double sum = 0.0, lbeta = lgamma(bp->a) + lgamma(bp->b) - lgamma(bp->a + bp->b);
    for (int i = 0; i < N; i++) {
        /* substitute p = u^(1/a) to tame the p^(a-1) singularity at 0 */
        double u = (i + 0.5) / N;
        double p = pow(u, 1.0 / bp->a);
        double dens_over_jac = pow(1 - p, bp->b - 1) / bp->a; /* Beta density * dp/du, without 1/B */
        double g = (1.0 - pow(bp->alpha / (bp->alpha + p * t), bp->r)) / p;
        sum += g * dens_over_jac / N;
    }
    return sum / exp(lbeta);
}

/* P(at least one purchase in t weeks) for a new shopper: a shopper drops out
 * only just after a purchase, so "none" is a Poisson zero mixed over the
 * Gamma(r, alpha) rate: P(X(t) = 0) = (alpha / (alpha + t))^r. */
static inline double ref_p_active_new(const BgnbdParams *bp, double t)
{
    return 1.0 - pow(bp->alpha / (bp->alpha + t), bp->r);
}

/* Gamma-Gamma population mean spend per purchase: p v / (q - 1). */
static inline double ref_gg_population_mean(const GammaGammaParams *g) { return g->p * g->v / (g->q - 1.0); }

#endif
