/* trainer_eval: what a trained network predicts at the dataset's cuts, and
 * the figures made from it: the validation Gini, the level (chosen and
 * checked on matured held-out cuts) and the adjuster's backtest pairs.
 * Split from trainer.c, which fits the network; both run on the worker's
 * compute thread. */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "head.h"
#include "log.h"
#include "pace.h"
#include "platt.h"
#include "ranking.h"
#include "trainer.h"
#include "trainer_internal.h"
#include "util.h"

#define NIN FEATURE_DIM
#define NE HEAD_EXTRA

/* The fallback's mean at a cut. */
static double fallback_mean(const TrainCut *ct)
{
    ZilnParams z = {.p = ct->bg_p, .mu = ct->bg_mu, .sigma = ct->bg_sigma};
    return ziln_mean(&z);
}

/* pred: the mean predicted at cut ct; z (3,): the network's pre-activations
 * there (NULL for the fallback). */
typedef void (*ValCutFn)(void *arg, const TrainCut *ct, double pred, const double *z);

/* The network's mean at every cut of the sequences predict_cuts picked. */
typedef struct CutPreds {
    const TrainSeq **seqs;
    size_t *first;   /* (nseqs,): the first cut's place in pred */
    double *pred, *z; /* (cuts,), (cuts, 3) */
    const double *hw, *hb;
    int H;
    bool hybrid;
    HeadCalib cal;
} CutPreds;

static void cut_pred(void *arg, int i, int k, const double *h)
{
    CutPreds *cp = arg;
    const TrainCut *ct = &cp->seqs[i]->cuts[k];
    double zo[HEAD_OUT];
    head_forward(zo, NULL, cp->hw, cp->hb, cp->H, h, ct->e, ct->a0, ct->a1, cp->hybrid);
    const size_t at = cp->first[i] + (size_t)k;
    cp->pred[at] = trainer_head_mean(zo, &cp->cal);
    memcpy(cp->z + HEAD_OUT * at, zo, sizeof zo);
}

/* Calls fn for every validation cut (every cut, if all), in order, with the mean spend the
 * network theta (head variant hybrid, under calibration cal) predicts
 * there: the prediction serving makes for that shopper at that time
 * (model_predict). theta NULL: the fallback's prediction. The states come
 * from trainer_batch_states. -ENOMEM. */
static int predict_cuts(const double *theta, int H, bool hybrid, const HeadCalib *cal, const Dataset *d, bool all,
                        ValCutFn fn, void *arg)
{
    const size_t K = (size_t)(NIN + H), G = 4u * (size_t)H, U = (size_t)(H + NE);
    CutPreds cp = {.H = H, .hybrid = hybrid, .cal = *cal};
    size_t ns = 0, nc = 0;
    if (theta) {
        cp.hw = theta + G * K + G;
        cp.hb = cp.hw + 3 * U;
        cp.seqs = malloc((d->nseq ? d->nseq : 1) * sizeof *cp.seqs);
        cp.first = malloc((d->nseq ? d->nseq : 1) * sizeof *cp.first);
        cp.pred = malloc((d->examples ? d->examples : 1) * sizeof *cp.pred);
        cp.z = malloc((d->examples ? d->examples : 1) * HEAD_OUT * sizeof *cp.z);
        int rc = -ENOMEM;
        if (cp.seqs && cp.first && cp.pred && cp.z) {
            for (size_t i = 0; i < d->nseq; i++)
                if (d->seqs[i].val || all) {
                    cp.seqs[ns] = &d->seqs[i];
                    cp.first[ns++] = nc;
                    nc += (size_t)d->seqs[i].ncuts;
                }
            TrainScratch sc = {0};
            rc = ns > INT_MAX ? -ENOMEM : trainer_batch_states(theta, H, cp.seqs, (int)ns, cut_pred, &cp, &sc);
            trainer_scratch_free(&sc);
        }
        if (rc) {
            free(cp.seqs), free(cp.first), free(cp.pred), free(cp.z);
            return rc;
        }
    }
    size_t k = 0;
    for (size_t i = 0; i < d->nseq; i++) {
        const TrainSeq *s = &d->seqs[i];
        if (!s->val && !all)
            continue;
        for (int ci = 0; ci < s->ncuts; ci++, k++)
            fn(arg, &s->cuts[ci], theta ? cp.pred[k] : fallback_mean(&s->cuts[ci]),
               theta ? cp.z + HEAD_OUT * k : NULL);
    }
    free(cp.seqs), free(cp.first), free(cp.pred), free(cp.z);
    return 0;
}

/* (prediction, label) of the network, of the fallback, and (label, label),
 * for the Gini of each. */
typedef struct GiniPairs {
    double *pp, *pf, *pa; /* (n, 2) each */
    size_t n;
} GiniPairs;

static void add_gini_pair(void *arg, const TrainCut *ct, double pred, const double *z)
{
    (void)z;
    GiniPairs *g = arg;
    size_t k = g->n++;
    g->pp[2 * k] = g->pa[2 * k] = pred;
    g->pf[2 * k] = fallback_mean(ct);
    g->pp[2 * k + 1] = g->pa[2 * k + 1] = g->pf[2 * k + 1] = ct->y;
}

/* Normalised Gini of predicted means on the validation cuts; *fallback
 * gets the fallback's on the same cuts. */
double trainer_val_gini(const double *theta, int H, const Dataset *d, bool hybrid, double *fallback)
{
    *fallback = 0;
    size_t n = 0;
    for (size_t i = 0; i < d->nseq; i++)
        if (d->seqs[i].val)
            n += (size_t)d->seqs[i].ncuts;
    GiniPairs gp = {
        .pp = malloc((n ? n : 1) * 2 * sizeof(double)),
        .pf = malloc((n ? n : 1) * 2 * sizeof(double)),
        .pa = malloc((n ? n : 1) * 2 * sizeof(double)),
    };
    double g = 0;
    if (gp.pp && gp.pf && gp.pa &&
        predict_cuts(theta, H, hybrid, &HEAD_CALIB_NONE, d, false, add_gini_pair, &gp) == 0 && gp.n) {
        double gn = ranking_gini(gp.pp, gp.n, true), gf = ranking_gini(gp.pf, gp.n, true);
        double ga = ranking_gini(gp.pa, gp.n, false);
        g = ga > 0 ? gn / ga : 0;
        *fallback = ga > 0 ? gf / ga : 0;
    }
    free(gp.pp), free(gp.pf), free(gp.pa);
    return g;
}

/* Σ network mean (under cal) and Σ fallback mean over every shopper
 * of the set as of set->now, each advanced through its sequence in sh
 * (set->shoppers: the whole training sequence; set->served: what serving
 * rebuilds its state from); zs, when not NULL, (nshoppers, HEAD_OUT)
 * receives each shopper's pre-activations there. 0 or -ENOMEM. */
static int totals_at_now(const TrainSet *set, const TrainConfig *cfg, const FallbackFit *fit, const double *theta,
                         bool hybrid, const HeadCalib *cal, const TrainShopper *sh_all, double *sum_net,
                         double *sum_fb, double *zs)
{
    const int H = cfg->hidden;
    const size_t K = (size_t)(NIN + H), G = 4u * (size_t)H, U = (size_t)(H + NE);
    const double *W = theta, *b = theta + G * K, *hw = b + G, *hb = hw + 3 * U;
    double *h = calloc(2u * (size_t)H + G + K, sizeof(double));
    if (!h)
        return -ENOMEM;
    double *c = h + H, *z = c + H, *xh = z + G;
    *sum_net = *sum_fb = 0;
    float xf[NIN];
    for (size_t si = 0; si < set->nshoppers; si++) {
        if (si % 64 == 0)
            pace_point();
        const TrainShopper *sh = &sh_all[si];
        const Event *ev = set->events + sh->first;
        memset(h, 0, 2u * (size_t)H * sizeof(double));
        EncodeContext ctx = sh->ctx0;
        ShopperAgg agg = sh->agg0;
        RecentSummary rs;
        for (size_t t = 0; t < sh->n; t++) {
            encode_event(xf, &ev[t], &ctx);
            encode_context_advance(&ctx, &ev[t]);
            shopper_agg_apply(&agg, &ev[t]);
            double x[NIN];
            for (int k = 0; k < NIN; k++)
                x[k] = xf[k];
            trainer_step_forward(W, b, H, x, h, c, z, xh);
        }
        recent_summary_of(&rs, ev, sh->n, (size_t)(cfg->ring > 0 ? cfg->ring : 0), set->now); /* as serving reads it */
        FallbackOutput fo;
        model_fallback(fit, cfg->horizon_days, &agg, &rs, set->now, &fo);
        float ef[NE];
        encode_head_extra(ef, &agg, &rs, set->now, log1p(fo.ltv), fo.p_alive, fo.p_active);
        double e[NE], zo[HEAD_OUT];
        for (int j = 0; j < NE; j++)
            e[j] = ef[j];
        double a0 = 0, a1 = 0;
        if (hybrid)
            head_anchors(&fo, &a0, &a1);
        head_forward(zo, NULL, hw, hb, H, h, e, a0, a1, hybrid);
        if (zs)
            memcpy(zs + HEAD_OUT * si, zo, sizeof zo);
        *sum_net += trainer_head_mean(zo, cal);
        *sum_fb += fo.ltv;
    }
    free(h);
    return 0;
}

/* log(a / b), or 0 unless both are finite and positive. */
static double log_ratio(double a, double b)
{
    return a > 0 && b > 0 && isfinite(a) && isfinite(b) ? log(a / b) : 0.0;
}

/* The fallback rule's shift: log(Σ fallback mean / Σ network mean) over
 * every shopper as of now, each as served (set->served if set). */
static double fallback_shift(const TrainSet *set, const TrainConfig *cfg, const FallbackFit *fit, const double *theta,
                             bool hybrid)
{
    double net, fb;
    if (totals_at_now(set, cfg, fit, theta, hybrid, &HEAD_CALIB_NONE, set->served ? set->served : set->shoppers, &net,
                      &fb, NULL))
        return 0.0;
    return log_ratio(fb, net);
}

/* A held-out shopper at now - H: the network's pre-activations there and the label. */
typedef struct HeldOut {
    double z[HEAD_OUT], y;
} HeldOut;

/* Sums for the level check: labels, the network's means (no level shift)
 * and the fallback's, in two windows of cut times: [1] the latest matured
 * cut, newest, of every held-out shopper (each once, at one time, as
 * serving takes every shopper at now; dataset_build keeps that cut), [0]
 * the training shoppers' cuts at the grid times in the 2 x grid_days one
 * horizon earlier (those the draw kept; not their purchase times, which
 * are not serving's mix). */
typedef struct LevelSums {
    int64_t lo[2], hi[2], newest, grid;
    double y[2], net[2], fb[2];
    size_t pos[2], n1, cap1;
    double yy1, nn1, yn1; /* [1]'s Σ y², Σ network², Σ y × network: the calibration's standard error */
    HeldOut *held; /* (cap1,): [1]'s cuts, for the calibration of p */
} LevelSums;

static void add_level_sums(void *arg, const TrainCut *ct, double pred, const double *z)
{
    LevelSums *l = arg;
    for (int w = 0; w < 2; w++)
        if (ct->c >= l->lo[w] && ct->c <= l->hi[w] && ct->val == (w == 1) &&
            (w == 1 || (l->grid > 0 && (l->newest - ct->c) % l->grid == 0))) {
            l->y[w] += ct->y;
            l->net[w] += pred;
            l->fb[w] += fallback_mean(ct);
            l->pos[w] += ct->y > 0;
            if (w == 1 && l->n1 < l->cap1 && z) {
                l->held[l->n1] = (HeldOut){.z = {z[0], z[1], z[2]}, .y = ct->y};
                l->n1++, l->yy1 += ct->y * ct->y, l->nn1 += pred * pred, l->yn1 += ct->y * pred;
            }
        }
}

#define LEVEL_MIN_POSITIVE TRAINER_LEVEL_MIN_BUYERS /* held-out shoppers with spend at now - H needed to
                                                     * calibrate on them (and without, for p's calibration) */

/* The weights m_shrink tried (HeadCalib), 0 first: none. */
static const double MEAN_SHRINK_GRID[] = {0.0, 0.001, 0.003, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2, 0.3, 1.0};

void trainer_fit_mean_shrink(const double *z, const double *y, size_t n, HeadCalib *cal)
{
    HeadCalib c = *cal;
    c.level_shift = 0.0;
    c.m_shrink = c.m_center = 0.0;
    cal->m_shrink = cal->m_center = 0.0;
    double sp = 0, spl = 0;
    for (size_t i = 0; i < n; i++) {
        const ZilnParams zp = head_ziln(z + HEAD_OUT * i, &c);
        sp += zp.p;
        spl += zp.p * (zp.mu + 0.5 * zp.sigma * zp.sigma);
    }
    if (!(sp > 0) || !isfinite(spl) || !(fabs(spl / sp) <= HEAD_M_CENTER_MAX)) /* a diverged network: none */
        return;
    c.m_center = spl / sp;
    double best = INFINITY;
    for (size_t g = 0; g < sizeof MEAN_SHRINK_GRID / sizeof MEAN_SHRINK_GRID[0]; g++) {
        c.m_shrink = MEAN_SHRINK_GRID[g];
        double sm = 0, sy = 0, syl = 0;
        for (size_t i = 0; i < n; i++) {
            const ZilnParams zp = head_ziln(z + HEAD_OUT * i, &c);
            const double m = ziln_mean(&zp);
            sm += m;
            if (y[i] > 0) {
                sy += y[i];
                syl += y[i] * log(fmax(m, 1e-300));
            }
        }
        const double j = sy * log(sm) - syl; /* the deviance, the scale fitted, up to a constant */
        if (sy > 0 && isfinite(j) && j < best) {
            best = j;
            cal->m_shrink = c.m_shrink;
            cal->m_center = c.m_shrink > 0 ? c.m_center : 0.0;
        }
    }
}

/* Σ of the means of the n shoppers with pre-activations z under c, paced
 * (a pass over every shopper of a large store is long enough to matter to
 * the HTTP thread's share of a core: include/pace.h). */
static double paced_total(const double *z, size_t n, const HeadCalib *c)
{
    double sum = 0;
    for (size_t i = 0; i < n; i++) {
        if (i % 4096 == 0)
            pace_point();
        sum += trainer_head_mean(z + HEAD_OUT * i, c);
    }
    return sum;
}

int trainer_mean_shrink_centre(const double *z, size_t n, HeadCalib *cal)
{
    if (!(cal->m_shrink > 0))
        return 0;
    HeadCalib c = *cal, none = *cal;
    none.m_shrink = none.m_center = 0.0;
    double lo = -HEAD_M_CENTER_MAX, hi = HEAD_M_CENTER_MAX;
    const double target = paced_total(z, n, &none);
    c.m_center = lo;
    const double at_lo = paced_total(z, n, &c);
    c.m_center = hi;
    const double at_hi = paced_total(z, n, &c);
    /* the pulled total rises with the centre (each mean by the weight 1 - w > 0 on it) */
    if (!(target > 0 && isfinite(target) && at_lo <= target && target <= at_hi)) {
        cal->m_shrink = cal->m_center = 0.0;
        return -EDOM;
    }
    for (int it = 0; it < 200 && hi - lo > 1e-12; it++) {
        c.m_center = 0.5 * (lo + hi);
        if (paced_total(z, n, &c) > target)
            hi = c.m_center;
        else
            lo = c.m_center;
    }
    cal->m_center = 0.5 * (lo + hi);
    return 0;
}

/* The calibration of p on the held-out shoppers at now - H (l's [1], each
 * once): Platt's fit of their purchase or none on the network's p-logit
 * (platt_fit), when LEVEL_MIN_POSITIVE of them had spend and as many none;
 * then the shift that makes their total spend exact with it, log(Σ y / Σ
 * network mean). The shift alone when the fit is refused. With
 * mean_shrink, the mean's pull is fitted on them too
 * (trainer_fit_mean_shrink); the shift is the unpulled mean's, and
 * choose_level then moves the pull's centre so that it changes no total at
 * now (pull_centre_at_now). */
static HeadCalib calibrate_held_out(const LevelSums *l, bool mean_shrink)
{
    HeadCalib cal = HEAD_CALIB_NONE;
    const size_t n = l->n1;
    double *buf = malloc((HEAD_OUT + 2) * (n ? n : 1) * sizeof(double));
    if (buf) {
        double *x = buf, *y = buf + n, *z = y + n;
        for (size_t i = 0; i < n; i++) {
            x[i] = l->held[i].z[0], y[i] = l->held[i].y;
            memcpy(z + HEAD_OUT * i, l->held[i].z, sizeof l->held[i].z);
        }
        if (l->pos[1] <= n && n - l->pos[1] >= LEVEL_MIN_POSITIVE)
            platt_fit(x, y, n, &cal.p_scale, &cal.p_offset); /* leaves 1, 0 when refused */
        if (mean_shrink)
            trainer_fit_mean_shrink(z, y, n, &cal); /* with p calibrated */
        free(buf);
    }
    HeadCalib unpulled = cal;
    unpulled.m_shrink = unpulled.m_center = 0.0;
    double net = 0;
    for (size_t i = 0; i < n; i++)
        net += trainer_head_mean(l->held[i].z, &unpulled);
    if (!(net > 0 && isfinite(net))) {
        cal = HEAD_CALIB_NONE;
        net = l->net[1];
    }
    cal.level_shift = log_ratio(l->y[1], net);
    return cal;
}

/* The mean's pull's centre (trainer_mean_shrink_centre) over every
 * shopper at now, so the pull keeps the network's total there (the level
 * calibrated without it) and only reorders; cal's pull removed when that
 * cannot be had. Over the whole sequences, set->shoppers: the served total
 * is scaled to theirs (choose_level), so keeping theirs keeps it. One more
 * pass over the shoppers, and HEAD_OUT doubles a shopper, when a pull was
 * fitted. */
static void pull_centre_at_now(const TrainSet *set, const TrainConfig *cfg, const FallbackFit *fit,
                               const double *theta, bool hybrid, HeadCalib *cal)
{
    if (!(cal->m_shrink > 0))
        return;
    double *zs = malloc(HEAD_OUT * (set->nshoppers ? set->nshoppers : 1) * sizeof(double)), net, fb;
    const double k = cal->m_shrink;
    const int rc = !zs ? -ENOMEM : totals_at_now(set, cfg, fit, theta, hybrid, cal, set->shoppers, &net, &fb, zs);
    if (rc || trainer_mean_shrink_centre(zs, set->nshoppers, cal)) {
        log_msg(LOG_WARN, "mean pull dropped", "m_shrink=%.3g reason=%s", k,
                rc ? "out of memory" : "no centre within the bound keeps the total at now");
        cal->m_shrink = cal->m_center = 0.0;
    }
    free(zs);
}

/* The level (docs/MODEL.md, "Training", step 6). Two rules: "fallback",
 * the fallback's total at now (fallback_shift()), and "network", the
 * network's own level (what it learned from every matured cut, the time of
 * year at as_of among its inputs) with the bias it shows on the held-out
 * shoppers at the latest matured cut time, now - H, taken out (log Σ spend
 * / Σ network there, each shopper once, as serving takes every shopper
 * once at now; nothing when fewer than LEVEL_MIN_POSITIVE of them have
 * spend), and, when the training sequences are longer than what serving
 * rebuilds states from, the ratio of the network's total at now over the
 * two (so the calibrated total is the one served). auto takes the
 * network's when it can stand on it: the head learned the time of year
 * (out->seasonal), so the season moves with as_of and not with the shift;
 * the set holds events from the training history (set->history_events), so
 * the shoppers at now - H are all the shoppers, not only those whose ring
 * reaches back that far; and the calibration had LEVEL_MIN_POSITIVE
 * shoppers with spend. A shift that is not finite or beyond
 * LEVEL_SHIFT_MAX (a diverged network) gives way to the fallback rule.
 * Reported, on those held-out shoppers at now - H: the fallback's total
 * error, the network's own (before the shift), and the network calibrated
 * on the training shoppers' cuts one horizon earlier and carried to them. */
#define LEVEL_SHIFT_MAX 20.0 /* model_load refuses beyond 50 */

static HeadCalib choose_level(const TrainSet *set, const TrainConfig *cfg, const FallbackFit *fit,
                              const double *theta, bool hybrid, const Dataset *d, LevelSums *l, TrainResult *out)
{
    out->level_rule = LEVEL_RULE_FALLBACK;
    out->val_total_error_fallback = out->val_total_error_held_out = out->val_total_error_network = 0.0;
    bool sums = l->cap1 > 0 &&
                predict_cuts(theta, cfg->hidden, hybrid, &HEAD_CALIB_NONE, d, true, add_level_sums, l) == 0 &&
                l->y[1] > 0 && l->net[1] > 0 && isfinite(l->net[1]);
    if (sums) {
        out->val_total_error_network = l->net[1] / l->y[1] - 1.0;
        if (l->fb[1] > 0)
            out->val_total_error_fallback = l->fb[1] / l->y[1] - 1.0;
        if (l->pos[0] >= LEVEL_MIN_POSITIVE && l->pos[1] >= LEVEL_MIN_POSITIVE && l->y[0] > 0 && l->net[0] > 0)
            out->val_total_error_held_out = l->y[0] / l->net[0] * l->net[1] / l->y[1] - 1.0;
    }
    double se = INFINITY;
    if (sums) { /* the calibration's own noise: log(Σy / Σnet) over the shoppers, by the delta method */
        const double r = l->y[1] / l->net[1], v = l->yy1 - 2 * r * l->yn1 + r * r * l->nn1;
        se = sqrt(v > 0 ? v : 0) / l->y[1];
        log_msg(LOG_DEBUG, "level calibration", "shoppers=%zu with_spend=%zu log_ratio=%.4f se=%.4f", l->n1, l->pos[1],
                log_ratio(l->y[1], l->net[1]), se);
    }
    out->level_shoppers = l->n1;
    out->level_buyers = sums ? l->pos[1] : 0;
    const bool calibrated = sums && l->pos[1] >= LEVEL_MIN_POSITIVE;
    const bool own = cfg->level == 2 || (cfg->level == 0 && sums &&
                                         trainer_level_auto_own(out->seasonal, set->history_events > 0, l->pos[1],
                                                                l->y[1], l->net[1], l->fb[1], se));
    if (own) {
        HeadCalib cal = calibrated ? calibrate_held_out(l, cfg->mean_shrink) : HEAD_CALIB_NONE;
        pull_centre_at_now(set, cfg, fit, theta, hybrid, &cal);
        if (set->served) {
            double full, served, fb;
            HeadCalib p_only = cal;
            p_only.level_shift = 0.0;
            if (totals_at_now(set, cfg, fit, theta, hybrid, &p_only, set->shoppers, &full, &fb, NULL) == 0 &&
                totals_at_now(set, cfg, fit, theta, hybrid, &p_only, set->served, &served, &fb, NULL) == 0)
                cal.level_shift += log_ratio(full, served);
        }
        if (isfinite(cal.level_shift) && fabs(cal.level_shift) <= LEVEL_SHIFT_MAX) {
            out->level_rule = LEVEL_RULE_NETWORK;
            return cal;
        }
    }
    HeadCalib cal = HEAD_CALIB_NONE;
    double shift = fallback_shift(set, cfg, fit, theta, hybrid);
    cal.level_shift = isfinite(shift) && fabs(shift) <= LEVEL_SHIFT_MAX ? shift : 0.0;
    return cal;
}

/* With LEVEL_MIN_POSITIVE buyers among the held-out shoppers at now - H,
 * the network's level calibrated on them. With fewer (a small store, a
 * short horizon, the season's trough), too few to calibrate a shift on,
 * its own level as it is when it missed their total by clearly less than
 * the fallback did (by more than its own standard error, in log ratio,
 * from at least TRAINER_LEVEL_MIN_COMPARE buyers): both read on the same
 * shoppers, a choice between two levels stands on fewer outcomes than a
 * shift would, and where the season moves the total the fallback, which
 * knows no season, is the one that misses (a store that retrains monthly,
 * in the trough after 17 months: +136% with the fallback's level;
 * docs/ACCURACY.md). */
bool trainer_level_auto_own(bool seasonal, bool from_history, size_t buyers, double y, double net, double fb,
                            double se)
{
    if (!seasonal || !from_history || !(y > 0) || !(net > 0) || !isfinite(net))
        return false;
    if (buyers >= LEVEL_MIN_POSITIVE)
        return true;
    /* log ratios: a network at half the spend misses by as much as a
     * fallback at twice it; and the gap must beat the network's own noise */
    return buyers >= TRAINER_LEVEL_MIN_COMPARE && fb > 0 && isfinite(fb) && isfinite(se) &&
           fabs(log(fb / y)) - fabs(log(net / y)) > se;
}

HeadCalib trainer_choose_level(const TrainSet *set, const TrainConfig *cfg, const FallbackFit *fit,
                               const double *theta, bool hybrid, const Dataset *d, TrainResult *out)
{
    const int64_t Hs = (int64_t)cfg->horizon_days * 86400, newest = set->now - Hs;
    const int64_t span = 2 * (int64_t)cfg->grid_days * 86400;
    LevelSums l = {.lo = {newest - span - Hs, newest}, .hi = {newest - Hs, newest}, .newest = newest,
                   .grid = (int64_t)cfg->grid_days * 86400};
    for (size_t i = 0; i < d->nseq; i++) /* each held-out shopper has at most one cut at now - H */
        l.cap1 += d->seqs[i].val;
    l.held = malloc((l.cap1 ? l.cap1 : 1) * sizeof *l.held);
    if (!l.held)
        l.cap1 = 0; /* nothing to calibrate on: auto takes the fallback's level */
    HeadCalib cal = choose_level(set, cfg, fit, theta, hybrid, d, &l, out);
    free(l.held);
    out->level_shift = cal.level_shift;
    out->p_scale = cal.p_scale;
    out->p_offset = cal.p_offset;
    out->m_shrink = cal.m_shrink;
    out->m_center = cal.m_center;
    return cal;
}

/* The backtest's pairs, filled in validation-cut order. */
typedef struct BacktestPairs {
    AdjPair *pairs; /* (cap,) */
    size_t n;
} BacktestPairs;

static void add_backtest_pair(void *arg, const TrainCut *ct, double pred, const double *z)
{
    (void)z;
    BacktestPairs *bp = arg;
    bp->pairs[bp->n++] = (AdjPair){
        .pred = pred,
        .actual = ct->y,
        .recency_days = expm1(ct->e[0]),
        .tenure_days = expm1(ct->e[1]),
    };
}

int trainer_backtest(const TrainSet *set, const TrainConfig *cfg, const FallbackFit *fit, const LstmWeights *net,
                     AdjPair **out, size_t *n_out)
{
    const DatasetConfig dc = trainer_dataset_config(cfg);
    Dataset d;
    int rc = dataset_build(&d, set, &dc, fit);
    if (rc)
        return rc;
    const int H = net ? net->cfg.hidden : cfg->hidden;
    BacktestPairs bp = {.pairs = malloc((d.examples ? d.examples : 1) * sizeof *bp.pairs)};
    double *theta = net ? malloc(trainer_param_count(H) * sizeof(double)) : NULL;
    if (!bp.pairs || (net && !theta)) {
        free(bp.pairs), free(theta);
        dataset_free(&d);
        return -ENOMEM;
    }
    if (net)
        trainer_theta_from_net(theta, net);
    rc = predict_cuts(theta, H, net && net->hybrid, net ? &net->calib : &HEAD_CALIB_NONE, &d, false, add_backtest_pair,
                      &bp);
    free(theta);
    dataset_free(&d);
    if (!rc && !bp.n)
        rc = -ENODATA;
    if (rc) {
        free(bp.pairs);
        return rc;
    }
    *out = bp.pairs;
    *n_out = bp.n;
    return 0;
}
