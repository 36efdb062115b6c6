/* bgnbd: the fallback's statistics: BG/NBD and Gamma-Gamma likelihoods,
 * conditional expectations and Nelder-Mead fits. Pure: predictions on any
 * thread, fits on the worker; the caller owns every array. */
#include "bgnbd.h"

#include <errno.h>
#include <math.h>
#include <string.h>

#include "pace.h"

const BgnbdParams BGNBD_CDNOW_PRIOR = {0.2426, 4.4136, 0.7929, 2.4259};
const GammaGammaParams GG_CDNOW_PRIOR = {6.25, 3.74, 15.44};

double hyp2f1(double a, double b, double c, double z)
{
    double term = 1.0, sum = 1.0;
    for (int n = 0; n < 200000; n++) {
        term *= (a + n) * (b + n) / ((c + n) * (n + 1.0)) * z;
        sum += term;
        if (fabs(term) < 1e-16 * fabs(sum) && n > 2)
            break;
    }
    return sum;
}

static double logaddexp(double u, double v)
{
    double m = fmax(u, v);
    return m + log(exp(u - m) + exp(v - m));
}

/* bgnbd_loglik's terms that depend on the customer only through x: l1 + l2,
 * and log(a) - log(b + x - 1) of l4 (0 for x = 0). The fit caches them per
 * count (bgnbd_objective). */
static void bgnbd_count_terms(const BgnbdParams *p, double x, double *l12, double *c4)
{
    double r = p->r, al = p->alpha, a = p->a, b = p->b;
    double l1 = lgamma(r + x) - lgamma(r) + r * log(al);
    double l2 = lgamma(a + b) + lgamma(b + x) - lgamma(b) - lgamma(a + b + x);
    *l12 = l1 + l2;
    *c4 = x > 0 ? log(a) - log(b + x - 1) : 0.0;
}

/* The log-likelihood from bgnbd_count_terms' two. */
static double bgnbd_loglik_from(const BgnbdParams *p, double x, double t_x, double T, double l12, double c4)
{
    double l3 = -(p->r + x) * log(p->alpha + T);
    if (x <= 0)
        return l12 + l3;
    double l4 = c4 - (p->r + x) * log(p->alpha + t_x);
    return l12 + logaddexp(l3, l4);
}

double bgnbd_loglik(const BgnbdParams *p, double x, double t_x, double T)
{
    double l12, c4;
    bgnbd_count_terms(p, x, &l12, &c4);
    return bgnbd_loglik_from(p, x, t_x, T, l12, c4);
}

/* The dropout odds term: a/(b+x-1) * ((alpha+T)/(alpha+t_x))^(r+x), 0 for x = 0. */
static double dropout_odds(const BgnbdParams *p, double x, double t_x, double T)
{
    if (x <= 0)
        return 0.0;
    return p->a / (p->b + x - 1) * pow((p->alpha + T) / (p->alpha + t_x), p->r + x);
}

double bgnbd_p_alive(const BgnbdParams *p, double x, double t_x, double T)
{
    return 1.0 / (1.0 + dropout_odds(p, x, t_x, T));
}

double bgnbd_expected(const BgnbdParams *p, double t, double x, double t_x, double T)
{
    double r = p->r, al = p->alpha, a = p->a, b = p->b;
    double z = t / (al + T + t);
    double lead = (a + b + x - 1) / (a - 1);
    double bracket = 1.0 - pow((al + T) / (al + T + t), r + x) * hyp2f1(r + x, b + x, a + b + x - 1, z);
    double e = lead * bracket / (1.0 + dropout_odds(p, x, t_x, T));
    return e > 0 && isfinite(e) ? e : 0.0;
}

double bgnbd_p_none(const BgnbdParams *p, double t, double x, double t_x, double T)
{
    /* Alive at T: purchase rate ~ Gamma(r+x, alpha+T), so no purchase in t has
     * probability E[exp(-lambda t)]; a dead shopper never buys. */
    double pa = bgnbd_p_alive(p, x, t_x, T);
    return 1.0 - pa + pa * pow((p->alpha + T) / (p->alpha + T + t), p->r + x);
}

/* gg_loglik's terms that depend on the customer only through x (cached per
 * count by gg_objective), and the log-likelihood from them. */
static double gg_count_terms(const GammaGammaParams *p, double x)
{
    double px = p->p * x;
    return lgamma(px + p->q) - lgamma(px) - lgamma(p->q) + p->q * log(p->v) + px * log(x);
}

static double gg_loglik_from(const GammaGammaParams *p, double x, double m, double head)
{
    double px = p->p * x;
    return head + (px - 1) * log(m) - (px + p->q) * log(p->v + x * m);
}

double gg_loglik(const GammaGammaParams *p, double x, double m)
{
    return gg_loglik_from(p, x, m, gg_count_terms(p, x));
}

double gg_expected_value(const GammaGammaParams *p, double x, double m)
{
    if (x <= 0 || m <= 0)
        return p->p * p->v / (p->q - 1);
    return p->p * (p->v + x * m) / (p->p * x + p->q - 1);
}

/* Nelder-Mead minimiser of f over k <= 4 dimensions. */
typedef double (*ObjectiveFn)(const double *theta, const void *ctx);

/* The fits search log-parameters. Where the data show no dropout at all
 * (every shopper keeps buying), the likelihood keeps improving, ever more
 * slowly, as BG/NBD's a and b (or Gamma-Gamma's q and v) grow without
 * bound, and the search used to run to its iteration cap: tens of seconds
 * for a few hundred shoppers, on the worker, delaying every other job and
 * shutdown. A parameter of 1e7 already means "this limit" for every
 * prediction, so the search stays inside |log θ| <= log 1e7, and stops once
 * the best value has moved by less than NM_MIN_PROGRESS in NM_WINDOW
 * iterations. */
#define LOG_PARAM_MAX 16.11809565095832 /* log(1e7) */
#define NM_WINDOW 500
#define NM_MIN_PROGRESS 1e-10

static bool in_bounds(const double *theta, int k)
{
    for (int d = 0; d < k; d++)
        if (!(fabs(theta[d]) <= LOG_PARAM_MAX))
            return false;
    return true;
}

static int nelder_mead(ObjectiveFn f, const void *ctx, double *theta, int k, const atomic_bool *cancel)
{
    double pts[5][4], val[5];
    for (int restart = 0; restart < 3; restart++) {
        for (int i = 0; i <= k; i++) {
            memcpy(pts[i], theta, sizeof(double) * (size_t)k);
            if (i > 0)
                pts[i][i - 1] += 0.3;
            val[i] = f(pts[i], ctx);
        }
        double window_best = INFINITY;
        for (int iter = 0; iter < 20000; iter++) {
            /* order: best first */
            for (int i = 1; i <= k; i++)
                for (int j = i; j > 0 && val[j] < val[j - 1]; j--) {
                    double tv = val[j];
                    val[j] = val[j - 1];
                    val[j - 1] = tv;
                    double tp[4];
                    memcpy(tp, pts[j], sizeof tp);
                    memcpy(pts[j], pts[j - 1], sizeof tp);
                    memcpy(pts[j - 1], tp, sizeof tp);
                }
            double spread = 0.0;
            for (int i = 1; i <= k; i++)
                for (int d = 0; d < k; d++)
                    spread = fmax(spread, fabs(pts[i][d] - pts[0][d]));
            if (fabs(val[k] - val[0]) < 1e-13 && spread < 1e-9)
                break;
            if (iter % NM_WINDOW == 0) {
                if (window_best - val[0] < NM_MIN_PROGRESS)
                    break;
                window_best = val[0];
            }
            if (cancel && iter % 50 == 0 && atomic_load_explicit(cancel, memory_order_relaxed))
                return -ECANCELED;
            pace_point(); /* a job's iteration: a few ms at the refit's sample */
            double cen[4] = {0};
            for (int i = 0; i < k; i++)
                for (int d = 0; d < k; d++)
                    cen[d] += pts[i][d] / k;
            double xr[4], xe[4], xc[4];
            for (int d = 0; d < k; d++)
                xr[d] = cen[d] + (cen[d] - pts[k][d]);
            double fr = f(xr, ctx);
            if (fr < val[0]) {
                for (int d = 0; d < k; d++)
                    xe[d] = cen[d] + 2.0 * (cen[d] - pts[k][d]);
                double fe = f(xe, ctx);
                if (fe < fr) {
                    memcpy(pts[k], xe, sizeof xe);
                    val[k] = fe;
                } else {
                    memcpy(pts[k], xr, sizeof xr);
                    val[k] = fr;
                }
                continue;
            }
            if (fr < val[k - 1]) {
                memcpy(pts[k], xr, sizeof xr);
                val[k] = fr;
                continue;
            }
            int outside = fr < val[k];
            for (int d = 0; d < k; d++)
                xc[d] = outside ? cen[d] + 0.5 * (xr[d] - cen[d]) : cen[d] + 0.5 * (pts[k][d] - cen[d]);
            double fc = f(xc, ctx);
            if (fc < (outside ? fr : val[k])) {
                memcpy(pts[k], xc, sizeof xc);
                val[k] = fc;
                continue;
            }
            for (int i = 1; i <= k; i++) {
                for (int d = 0; d < k; d++)
                    pts[i][d] = pts[0][d] + 0.5 * (pts[i][d] - pts[0][d]);
                val[i] = f(pts[i], ctx);
            }
        }
        memcpy(theta, pts[0], sizeof(double) * (size_t)k);
    }
    return 0;
}

typedef struct FitData {
    const CustomerSummary *s;
    size_t n;
} FitData;

/* The fits' objectives evaluate each customer's log-likelihood at every
 * Nelder-Mead step. Its lgamma terms depend on the customer only through
 * x, a count of repeat purchase days, so they are computed once per step
 * for each count under X_CACHE that occurs (about a hundred distinct
 * counts against tens of thousands of customers) instead of once per
 * customer. bgnbd_loglik and gg_loglik are made of the same two parts
 * (*_count_terms, *_loglik_from), so the objective is the same to the bit
 * (a refit of 25,000 customers took 4.0 s, mostly lgamma; now 0.8 s). */
#define X_CACHE 512

/* x as a cache index, or -1 when it is not a small whole count. */
static int x_slot(double x)
{
    return x >= 0 && x < X_CACHE && x == (double)(int)x ? (int)x : -1;
}

static double bgnbd_objective(const double *th, const void *ctx)
{
    const FitData *d = ctx;
    if (!in_bounds(th, 4))
        return 1e300;
    BgnbdParams p = {exp(th[0]), exp(th[1]), exp(th[2]), exp(th[3])};
    double l12[X_CACHE], c4[X_CACHE];
    bool have[X_CACHE] = {false};
    double ll = 0.0;
    for (size_t i = 0; i < d->n; i++) {
        const double x = d->s[i].x, t_x = d->s[i].t_x, T = d->s[i].T;
        int k = x_slot(x);
        if (k < 0) {
            ll += bgnbd_loglik(&p, x, t_x, T);
            continue;
        }
        if (!have[k]) {
            bgnbd_count_terms(&p, x, &l12[k], &c4[k]);
            have[k] = true;
        }
        ll += bgnbd_loglik_from(&p, x, t_x, T, l12[k], c4[k]);
    }
    return isfinite(ll) ? -ll / (double)d->n : 1e300;
}

static double gg_objective(const double *th, const void *ctx)
{
    const FitData *d = ctx;
    if (!in_bounds(th, 3))
        return 1e300;
    GammaGammaParams p = {exp(th[0]), exp(th[1]), exp(th[2])};
    double head[X_CACHE];
    bool have[X_CACHE] = {false};
    double ll = 0.0;
    size_t used = 0;
    for (size_t i = 0; i < d->n; i++) {
        const double x = d->s[i].x, m = d->s[i].m;
        if (!(x > 0 && m > 0))
            continue;
        used++;
        int k = x_slot(x);
        if (k < 0) {
            ll += gg_loglik(&p, x, m);
            continue;
        }
        if (!have[k]) {
            head[k] = gg_count_terms(&p, x);
            have[k] = true;
        }
        ll += gg_loglik_from(&p, x, m, head[k]);
    }
    return isfinite(ll) && used ? -ll / (double)used : 1e300;
}

int bgnbd_fit(const CustomerSummary *s, size_t n, BgnbdParams *inout)
{
    return bgnbd_fit_cancel(s, n, inout, NULL);
}

int bgnbd_fit_cancel(const CustomerSummary *s, size_t n, BgnbdParams *inout, const atomic_bool *cancel)
{
    size_t repeaters = 0;
    for (size_t i = 0; i < n; i++)
        repeaters += s[i].x > 0;
    if (n < 10 || repeaters < 3)
        return -EINVAL;
    FitData d = {s, n};
    double th[4] = {log(inout->r), log(inout->alpha), log(inout->a), log(inout->b)};
    if (nelder_mead(bgnbd_objective, &d, th, 4, cancel))
        return -ECANCELED;
    BgnbdParams p = {exp(th[0]), exp(th[1]), exp(th[2]), exp(th[3])};
    if (!isfinite(p.r + p.alpha + p.a + p.b))
        return -EINVAL;
    *inout = p;
    return 0;
}

int gg_fit(const CustomerSummary *s, size_t n, GammaGammaParams *inout, size_t *repeat_buyers)
{
    return gg_fit_cancel(s, n, inout, repeat_buyers, NULL);
}

int gg_fit_cancel(const CustomerSummary *s, size_t n, GammaGammaParams *inout, size_t *repeat_buyers,
                  const atomic_bool *cancel)
{
    size_t used = 0;
    for (size_t i = 0; i < n; i++)
        used += s[i].x > 0 && s[i].m > 0;
    if (repeat_buyers)
        *repeat_buyers = used;
    if (used < 3)
        return -EINVAL;
    FitData d = {s, n};
    double th[3] = {log(inout->p), log(inout->q), log(inout->v)};
    if (nelder_mead(gg_objective, &d, th, 3, cancel))
        return -ECANCELED;
    GammaGammaParams p = {exp(th[0]), exp(th[1]), exp(th[2])};
    if (!isfinite(p.p + p.q + p.v) || p.q <= 1.0)
        return -EINVAL; /* q <= 1: the population mean spend would be infinite */
    *inout = p;
    return 0;
}

void fallback_predict(const BgnbdParams *bg, const GammaGammaParams *gg, const CustomerSummary *s, double t,
                      FallbackOutput *out)
{
    double x = s ? s->x : 0.0, t_x = s ? s->t_x : 0.0, T = s ? s->T : 0.0, m = s ? s->m : 0.0;
    out->expected_purchases = bgnbd_expected(bg, t, x, t_x, T);
    out->p_alive = bgnbd_p_alive(bg, x, t_x, T);
    out->p_active = fmin(1.0, fmax(0.0, 1.0 - bgnbd_p_none(bg, t, x, t_x, T)));
    out->value = gg_expected_value(gg, x, m);
    out->ltv = out->expected_purchases * out->value;
    /* Quantiles: spend given any purchase is taken as log-normal with the same
     * mean, its squared CV summing the count's (Poisson-like, 1/n) and the
     * per-day value's (Gamma shape p: 1/(p n)), n = purchases given any. */
    double n = out->p_active > 0 ? fmax(1.0, out->expected_purchases / out->p_active) : 1.0;
    double sigma = sqrt(log(1.0 + 1.0 / n + 1.0 / (gg->p * n)));
    out->ziln = ziln_from_mean(out->ltv, out->p_active, sigma);
}
