/* ziln: the zero-inflated log-normal (ZILN) distribution of future spend.
 *   spend = 0 with probability 1-p, else LogNormal(mu, sigma)
 *   mean  = p * exp(mu + sigma^2/2)
 *   quantile(q) = 0 if q <= 1-p, else exp(mu + sigma * Φ^-1((q - (1-p)) / p))
 * Pure functions, any thread. */
#ifndef LTVD_ZILN_H
#define LTVD_ZILN_H

typedef struct ZilnParams {
    double p;     /* probability of any spend, in [0, 1] */
    double mu;    /* log-scale location of positive spend */
    double sigma; /* log-scale spread, > 0 */
} ZilnParams;

typedef struct ZilnSummary {
    double mean, p_active, p10, p50, p90;
} ZilnSummary;

double normal_cdf(double x);
/* Inverse standard normal CDF for q in (0, 1). */
double normal_quantile(double q);
double ziln_mean(const ZilnParams *z);
double ziln_quantile(const ZilnParams *z, double q);
void ziln_summarize(const ZilnParams *z, ZilnSummary *out);
/* ZILN parameters whose mean is `mean`, with P(spend > 0) = p and spread sigma. */
ZilnParams ziln_from_mean(double mean, double p, double sigma);

#endif
