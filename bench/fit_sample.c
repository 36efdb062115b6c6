/* fit_sample: what fitting the fallback on a sample of customers does to
 * the fit (docs/PERFORMANCE.md, "Tail latency"). Draws N customers from
 * BG/NBD and Gamma-Gamma with the CDNOW parameters (78 weeks observed at
 * most), fits both models on all of them and on the sample a refit uses
 * past 50,000 customers (id hash below a share: here a hash of the index),
 * and prints the parameters, the fit times, and the mean expected purchase
 * days and spend over 26 weeks under each fit.
 *
 *   build/bench/fit_sample [N] [SAMPLE] [SEED]     # defaults 200000 50000 1
 *
 * One thread; stops by itself. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "bgnbd.h"

static uint64_t rng_state;

static uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static double unif(void) { return ((mix64(rng_state += 0x9e3779b97f4a7c15ull) >> 11) + 0.5) * 0x1p-53; }

static double normal(void) { return sqrt(-2.0 * log(unif())) * cos(6.283185307179586 * unif()); }

/* Gamma(shape k, scale 1), Marsaglia and Tsang. */
static double gamma1(double k)
{
    if (k < 1.0)
        return gamma1(k + 1.0) * pow(unif(), 1.0 / k);
    double d = k - 1.0 / 3.0, c = 1.0 / sqrt(9.0 * d);
    for (;;) {
        double x = normal(), v = 1.0 + c * x;
        if (v <= 0)
            continue;
        v = v * v * v;
        if (log(unif()) < 0.5 * x * x + d - d * v + d * log(v))
            return d * v;
    }
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* One customer: first purchase at 0, observed for T weeks. */
static void draw(CustomerSummary *c)
{
    const BgnbdParams *bg = &BGNBD_CDNOW_PRIOR;
    const GammaGammaParams *gg = &GG_CDNOW_PRIOR;
    double lambda = gamma1(bg->r) / bg->alpha;
    double ga = gamma1(bg->a), gb = gamma1(bg->b), p = ga / (ga + gb);
    double nu = gamma1(gg->q) / gg->v;
    c->T = 1.0 + 77.0 * unif();
    c->x = 0;
    c->t_x = 0;
    double t = 0, spend = 0;
    for (int k = 0; k < 10000; k++) {
        if (unif() < p)
            break; /* dropped out after the last purchase */
        t += -log(unif()) / lambda;
        if (t > c->T)
            break;
        c->x += 1;
        c->t_x = t;
        spend += gamma1(gg->p) / nu;
    }
    c->m = c->x > 0 ? spend / c->x : 0;
}

static void report(const char *label, const CustomerSummary *all, size_t n, const BgnbdParams *bg,
                   const GammaGammaParams *gg, double secs, size_t fitted)
{
    double purchases = 0, spend = 0;
    for (size_t i = 0; i < n; i++) {
        double e = bgnbd_expected(bg, 26.0, all[i].x, all[i].t_x, all[i].T);
        purchases += e;
        spend += e * gg_expected_value(gg, all[i].x, all[i].m);
    }
    printf("%-8s customers %7zu  %6.1f s  r %.4f alpha %.3f a %.4f b %.4f  p %.3f q %.3f v %.3f  "
           "mean E[purchase days, 26 wk] %.5f  mean E[spend] %.4f\n", label, fitted, secs, bg->r, bg->alpha, bg->a,
           bg->b, gg->p, gg->q, gg->v, purchases / (double)n, spend / (double)n);
}

int main(int argc, char **argv)
{
    size_t n = argc > 1 ? strtoul(argv[1], NULL, 10) : 200000;
    size_t cap = argc > 2 ? strtoul(argv[2], NULL, 10) : 50000;
    rng_state = argc > 3 ? strtoull(argv[3], NULL, 10) : 1;
    if (n < 100 || n > 10000000 || cap < 10 || cap > n) {
        fprintf(stderr, "usage: fit_sample [N 100..1e7] [SAMPLE 10..N] [SEED]\n");
        return 2;
    }
    CustomerSummary *all = malloc(n * sizeof *all), *sample = malloc(n * sizeof *sample);
    if (!all || !sample)
        return 1;
    for (size_t i = 0; i < n; i++)
        draw(&all[i]);
    uint64_t keep_below = (uint64_t)((double)UINT64_MAX * ((double)cap / (double)n)); /* as collect_summaries */
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (mix64(i + 0x6c7476645f757372ull) <= keep_below)
            sample[k++] = all[i];
    BgnbdParams bg_all = BGNBD_CDNOW_PRIOR, bg_s = BGNBD_CDNOW_PRIOR;
    GammaGammaParams gg_all = GG_CDNOW_PRIOR, gg_s = GG_CDNOW_PRIOR;
    size_t rep;
    double t0 = now_s();
    if (bgnbd_fit(sample, k, &bg_s) || gg_fit(sample, k, &gg_s, &rep)) {
        fprintf(stderr, "the fit on the sample failed\n");
        return 1;
    }
    double t1 = now_s();
    if (bgnbd_fit(all, n, &bg_all) || gg_fit(all, n, &gg_all, &rep)) {
        fprintf(stderr, "the fit on every customer failed\n");
        return 1;
    }
    double t2 = now_s();
    report("sample", all, n, &bg_s, &gg_s, t1 - t0, k);
    report("all", all, n, &bg_all, &gg_all, t2 - t1, n);
    free(all);
    free(sample);
    return 0;
}
