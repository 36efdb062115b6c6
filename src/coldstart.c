/* coldstart: features, cuts, fit and prediction of the cold start from
 * behaviour (include/coldstart.h). Pure; the fit runs on the worker. */
#include "coldstart.h"

#include <math.h>
#include <string.h>

#include "pace.h"
#include "util.h"

#define DAY 86400.0
#define NF COLD_FEATURES

void coldstart_features(double *f, const ShopperAgg *agg, const RecentSummary *rs, int64_t as_of)
{
    double events = 0, since_last = 0, tenure = 0, carts = 0, since_cart = 0;
    if (agg && agg->events > 0) {
        events = agg->events;
        since_last = fmax(0.0, (double)(as_of - agg->last_ts) / DAY);
        tenure = fmax(0.0, (double)(as_of - agg->first_ts) / DAY);
    }
    since_cart = tenure;
    if (rs) {
        carts = rs->carts;
        if (rs->last_cart_ts > 0)
            since_cart = fmin(tenure, fmax(0.0, (double)(as_of - rs->last_cart_ts) / DAY));
    }
    f[0] = 1.0;
    f[1] = log1p(events);
    f[2] = log1p(carts);
    f[3] = log1p(since_last);
    f[4] = log1p(tenure);
    f[5] = log1p(since_cart);
    f[6] = since_last / 365.0; /* and in years: conversion keeps falling over a long silence */
    f[7] = tenure / 365.0;
}

/* Net spend of ev in (from, to]. */
static double window_spend(const Event *ev, size_t n, int64_t from, int64_t to)
{
    double y = 0;
    for (size_t i = 0; i < n; i++)
        if (ev[i].ts > from && ev[i].ts <= to)
            y += ev[i].type == EV_PURCHASE ? ev[i].value : ev[i].type == EV_REFUND ? -ev[i].value : 0.0;
    return y > 0 ? y : 0;
}

void coldstart_cuts(ColdExample *ex, size_t *n, size_t cap, const Event *ev, size_t n_ev, uint32_t events_before,
                    int64_t first_ts, int64_t now, int horizon_days)
{
    const int64_t Hs = (int64_t)horizon_days * 86400, newest = now - Hs;
    /* the candidates: a grid every COLD_GRID_DAYS from the first event
     * until the first purchase (or the newest matured cut), as a serving
     * cut meets shoppers: mostly in silence, now and then mid-visit */
    int64_t cand[256];
    size_t nc = 0, nc_more = 0;
    const int64_t step = (int64_t)COLD_GRID_DAYS * 86400;
    int64_t stop = newest;
    for (size_t i = 0; i < n_ev; i++)
        if (ev[i].type == EV_PURCHASE) {
            stop = ev[i].ts - 1 < stop ? ev[i].ts - 1 : stop;
            break;
        }
    if (n_ev == 0 || first_ts > ev[0].ts)
        return;
    for (int64_t t = first_ts + (ev[0].ts - first_ts + step - 1) / step * step; t <= stop; t += step)
        if (nc < sizeof cand / sizeof cand[0])
            cand[nc++] = t;
        else
            nc_more++;
    size_t keep = nc < COLD_CUTS_PER_SHOPPER ? nc : COLD_CUTS_PER_SHOPPER;
    for (size_t k = 0; k < keep && *n < cap; k++) {
        int64_t c = cand[keep > 1 ? k * (nc - 1) / (keep - 1) : nc - 1];
        ShopperAgg agg;
        shopper_agg_init(&agg);
        agg.events = events_before;
        agg.first_ts = first_ts;
        agg.last_ts = first_ts;
        RecentSummary rs;
        recent_summary_init(&rs);
        for (size_t i = 0; i < n_ev && ev[i].ts <= c; i++) {
            agg.events++;
            if (ev[i].ts > agg.last_ts)
                agg.last_ts = ev[i].ts;
            recent_summary_apply(&rs, &ev[i]);
        }
        ColdExample *e = &ex[(*n)++];
        coldstart_features(e->f, &agg, &rs, c);
        e->w = (double)(nc + nc_more) / (double)keep; /* each kept cut stands for this many */
        e->y = window_spend(ev, n_ev, c, c + Hs);
    }
}

/* Solves A x = b for x (NF), A (NF, NF) symmetric positive definite,
 * by Gaussian elimination with partial pivoting. A and b are destroyed.
 * -1 when singular. */
static int solve(double A[NF][NF], double *b, double *x)
{
    for (int c = 0; c < NF; c++) {
        int piv = c;
        for (int r = c + 1; r < NF; r++)
            if (fabs(A[r][c]) > fabs(A[piv][c]))
                piv = r;
        if (fabs(A[piv][c]) < 1e-12)
            return -1;
        if (piv != c) {
            for (int k = 0; k < NF; k++) {
                double t = A[c][k];
                A[c][k] = A[piv][k];
                A[piv][k] = t;
            }
            double t = b[c];
            b[c] = b[piv];
            b[piv] = t;
        }
        for (int r = c + 1; r < NF; r++) {
            double m = A[r][c] / A[c][c];
            for (int k = c; k < NF; k++)
                A[r][k] -= m * A[c][k];
            b[r] -= m * b[c];
        }
    }
    for (int r = NF - 1; r >= 0; r--) {
        double s = b[r];
        for (int k = r + 1; k < NF; k++)
            s -= A[r][k] * x[k];
        x[r] = s / A[r][r];
    }
    return 0;
}

static double dot(const double *a, const double *b)
{
    double s = 0;
    for (int k = 0; k < NF; k++)
        s += a[k] * b[k];
    return s;
}

/* Ridge on every coefficient but the intercept. */
#define COLD_RIDGE 1.0
#define COLD_NEWTON_STEPS 25

int coldstart_fit(const ColdExample *ex, size_t n, ColdStartFit *out)
{
    memset(out, 0, sizeof *out);
    out->state = COLD_CAPPED;
    size_t pos = 0;
    double wsum = 0, wpos = 0;
    for (size_t i = 0; i < n; i++) {
        pos += ex[i].y > 0;
        wsum += ex[i].w;
        wpos += ex[i].y > 0 ? ex[i].w : 0;
    }
    out->examples = n;
    out->converted = pos;
    if (n < COLD_MIN_EXAMPLES || pos < COLD_MIN_CONVERTED || wpos <= 0 || wpos >= wsum)
        return 0;
    /* P(any spend): Newton's method on the ridge-penalised log-likelihood,
     * from the base rate */
    double beta[NF] = {0};
    double rate = wpos / wsum;
    beta[0] = log(rate / (1.0 - rate));
    for (int it = 0; it < COLD_NEWTON_STEPS; it++) {
        double A[NF][NF] = {{0}}, g[NF] = {0}, step[NF];
        for (size_t i = 0; i < n; i++) {
            if (i % 4096 == 0)
                pace_point();
            double p = sigmoid(dot(beta, ex[i].f)), r = ex[i].w * ((ex[i].y > 0) - p), wgt = ex[i].w * p * (1.0 - p);
            for (int a = 0; a < NF; a++) {
                g[a] += r * ex[i].f[a];
                for (int b = 0; b < NF; b++)
                    A[a][b] += wgt * ex[i].f[a] * ex[i].f[b];
            }
        }
        for (int a = 1; a < NF; a++) {
            g[a] -= COLD_RIDGE * beta[a];
            A[a][a] += COLD_RIDGE;
        }
        A[0][0] += 1e-9;
        if (solve(A, g, step))
            return 0;
        double moved = 0;
        for (int a = 0; a < NF; a++) {
            beta[a] += step[a];
            moved = fmax(moved, fabs(step[a]));
        }
        if (moved < 1e-8)
            break;
    }
    /* log spend given any: ridge least squares */
    double A[NF][NF] = {{0}}, g[NF] = {0}, bm[NF];
    for (size_t i = 0; i < n; i++) {
        if (ex[i].y <= 0)
            continue;
        double ly = log(ex[i].y), wi = ex[i].w;
        for (int a = 0; a < NF; a++) {
            g[a] += wi * ly * ex[i].f[a];
            for (int b = 0; b < NF; b++)
                A[a][b] += wi * ex[i].f[a] * ex[i].f[b];
        }
    }
    for (int a = 1; a < NF; a++)
        A[a][a] += COLD_RIDGE;
    if (solve(A, g, bm))
        return 0;
    double ss = 0;
    for (size_t i = 0; i < n; i++)
        if (ex[i].y > 0) {
            double r = log(ex[i].y) - dot(bm, ex[i].f);
            ss += ex[i].w * r * r;
        }
    double sigma = sqrt(ss / wpos);
    for (int a = 0; a < NF; a++)
        if (!isfinite(beta[a]) || !isfinite(bm[a]))
            return 0;
    memcpy(out->beta_p, beta, sizeof beta);
    memcpy(out->beta_mu, bm, sizeof bm);
    out->sigma = fmin(fmax(sigma, 0.05), 5.0);
    out->state = COLD_FITTED;
    return 0;
}

ZilnParams coldstart_predict(const ColdStartFit *fit, const double *f)
{
    return (ZilnParams){.p = sigmoid(dot(fit->beta_p, f)), .mu = dot(fit->beta_mu, f), .sigma = fit->sigma};
}
