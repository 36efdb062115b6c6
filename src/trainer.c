/* trainer: fitting the LSTM and the ZILN head on a Dataset: Adam with
 * global-norm clipping, early stopping on the validation loss, the choice
 * between the hybrid and the LSTM-only head (one-SE rule). The loss and its
 * gradient by BPTT in double precision are trainer_batch.c's; the level, the validation
 * Gini and the adjuster's backtest are trainer_eval.c's. The examples are
 * dataset.c's, the head's forward pass head.c's. Worker thread; it owns
 * every buffer it allocates, and the network it returns is the caller's. */
#include "trainer.h"

#include <cblas.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "head.h"
#include "log.h"
#include "ranking.h"
#include "timeutil.h"
#include "trainer_internal.h"
#include "util.h"

#define NIN FEATURE_DIM
#define NE HEAD_EXTRA

/* Not configurable: early stopping after this many epochs without a gain
 * on validation larger than one standard error (paired_diff), and the
 * global gradient-norm clip. */
#define PATIENCE 4
#define CLIP_NORM 5.0
#define SEASON_YEAR_DAYS 365  /* matured cuts this many days back (trainer_run: the season gates) ... */
#define SEASON_MIN_SHARE 0.01 /* ... this share of them: the network learns a time of year */
#define SEASON_MIN_SHOPPERS 20 /* ... from at least this many shoppers (not a handful's tenure) */

size_t trainer_param_count(int H)
{
    size_t K = (size_t)(NIN + H);
    return 4u * (size_t)H * K + 4u * (size_t)H + 3u * (size_t)(H + NE) + 3u;
}

/* Inference-only LSTM step in double (training's forward keeps the gates):
 *   W (4H, I+H), b (4H,), x (I,), h (H,), c (H,), scratch z (4H,), xh (I+H,) */
void trainer_step_forward(const double *W, const double *b, int H, const double *x, double *h, double *c, double *z,
                          double *xh)
{
    const int K = NIN + H, G = 4 * H;
    memcpy(xh, x, NIN * sizeof(double));
    memcpy(xh + NIN, h, (size_t)H * sizeof(double));
    memcpy(z, b, (size_t)G * sizeof(double));
    /* W (4H, K) @ xh (K,) + b -> z (4H,) */
    cblas_dgemv(CblasRowMajor, CblasNoTrans, G, K, 1.0, W, K, xh, 1, 1.0, z, 1);
    for (int j = 0; j < H; j++) {
        c[j] = sigmoid(z[H + j]) * c[j] + sigmoid(z[j]) * tanh_exp(z[2 * H + j]);
        h[j] = sigmoid(z[3 * H + j]) * tanh_exp(c[j]);
    }
}

/* The mean spend the head predicts from pre-activations z (3,). */
double trainer_head_mean(const double *z, const HeadCalib *c)
{
    ZilnParams zp = head_ziln(z, c);
    return ziln_mean(&zp);
}

/* NLL of y under explicit ZILN parameters (the fallback's). */
static double ziln_nll(double p, double mu, double s, double y)
{
    p = fmin(fmax(p, 1e-6), 1.0 - 1e-6);
    if (y <= 0)
        return -log1p(-p);
    double ly = log(y), r = ly - mu;
    return -log(p) + ly + log(s) + 0.5 * log(2.0 * M_PI) + r * r / (2.0 * s * s);
}

/* ---- training ------------------------------------------------------------- */

/* *mean gets the mean validation loss of theta under the head variant;
 * per_seq (if not NULL) each validation sequence's summed loss, in order.
 * 0 or -ENOMEM. */
static int val_loss_each(const double *theta, int H, const Dataset *d, bool hybrid, int bptt, double *per_seq,
                         double *mean, TrainScratch *sc)
{
    const TrainSeq **val = malloc((d->nseq ? d->nseq : 1) * sizeof *val);
    if (!val)
        return -ENOMEM;
    size_t nv = 0, k = 0;
    for (size_t i = 0; i < d->nseq; i++)
        if (d->seqs[i].val) {
            val[nv++] = &d->seqs[i];
            k += (size_t)d->seqs[i].ncuts;
        }
    double sum = 0.0;
    int rc = nv > INT_MAX ? -ENOMEM
                          : trainer_batch_loss(theta, H, val, (int)nv, hybrid, bptt, NULL, NULL, per_seq, &sum, sc);
    free(val);
    *mean = k ? sum / (double)k : INFINITY;
    return rc;
}

static int val_loss(const double *theta, int H, const Dataset *d, bool hybrid, int bptt, double *mean,
                    TrainScratch *sc)
{
    return val_loss_each(theta, H, d, hybrid, bptt, NULL, mean, sc);
}

/* Mean and standard error, per validation cut, of the difference b - a
 * between two networks' validation losses, shoppers as units: a[k] and b[k]
 * are validation sequence k's summed losses (val_loss_each's order). */
static void paired_diff(const Dataset *d, const double *a, const double *b, double *mean, double *se)
{
    double sd = 0, sn = 0, var = 0;
    size_t k = 0;
    for (size_t i = 0; i < d->nseq; i++)
        if (d->seqs[i].val) {
            sd += b[k] - a[k];
            sn += d->seqs[i].ncuts;
            k++;
        }
    *mean = sn > 0 ? sd / sn : 0;
    k = 0;
    for (size_t i = 0; i < d->nseq; i++)
        if (d->seqs[i].val) {
            double r = (b[k] - a[k]) - *mean * d->seqs[i].ncuts;
            var += r * r;
            k++;
        }
    *se = sn > 0 ? sqrt(var) / sn : 0;
}

void trainer_theta_from_net(double *theta, const LstmWeights *w)
{
    int H = w->cfg.hidden;
    size_t K = (size_t)(NIN + H), G = 4u * (size_t)H, U = (size_t)(H + NE);
    size_t o = 0;
    for (size_t i = 0; i < G * K; i++)
        theta[o++] = w->w[i];
    for (size_t i = 0; i < G; i++)
        theta[o++] = w->b[i];
    for (size_t i = 0; i < 3 * U; i++)
        theta[o++] = w->head_w[i];
    for (size_t i = 0; i < 3; i++)
        theta[o++] = w->head_b[i];
}

/* The network of theta, in float; the head's weights too are rounded to
 * float (model.h: the model file stores them so). */
static void net_from_theta(LstmWeights *w, const double *theta)
{
    int H = w->cfg.hidden;
    size_t K = (size_t)(NIN + H), G = 4u * (size_t)H, U = (size_t)(H + NE);
    size_t o = 0;
    for (size_t i = 0; i < G * K; i++)
        w->w[i] = (float)theta[o++];
    for (size_t i = 0; i < G; i++)
        w->b[i] = (float)theta[o++];
    for (size_t i = 0; i < 3 * U; i++)
        w->head_w[i] = (float)theta[o++];
    for (size_t i = 0; i < 3; i++)
        w->head_b[i] = (float)theta[o++];
}

typedef struct VariantResult {
    double *theta;
    double val;
    int epochs;
} VariantResult;

/* Zeroes the weights (or their gradients) on a time of year that its gate
 * keeps closed (trainer_run: the season gates): !head, the head's on the
 * time of year at as_of, alone and times the fallback's p; !events, the
 * LSTM's on each event's (inputs 11 and 12). */
static void zero_season(double *theta, int H, bool head, bool events)
{
    const size_t K = (size_t)(NIN + H), G = 4u * (size_t)H, U = (size_t)(H + NE);
    for (size_t g = 0; g < G && !events; g++)
        theta[g * K + FEATURE_SEASON] = theta[g * K + FEATURE_SEASON + 1] = 0.0;
    double *hw = theta + G * K + G;
    for (size_t r = 0; r < 3 && !head; r++)
        for (int j = 0; j < 2; j++)
            hw[r * U + (size_t)H + HEAD_EXTRA_SEASON + j] = hw[r * U + (size_t)H + HEAD_EXTRA_SEASON_BY_P + j] = 0.0;
}

/* Fits one head variant from its seeded start with Adam and early stopping.
 * The batches' loss is trainer_head_loss (the ZILN likelihood and, at
 * train.mean_loss_weight, the Poisson term on the mean); the validation
 * loss is the likelihood alone, the unit the head variants, the fallback
 * and the serving model are compared in. Training stops after PATIENCE
 * epochs that did not lower the validation loss by more than one standard
 * error of the paired difference from the last epoch that did (so the
 * validation sample's noise is not taken for progress), and the weights of
 * the lowest validation loss seen are kept.
 * seasonal, seasonal_events false: the weights on the time of year at as_of,
 * on each event's, stay 0. */
static int train_variant(const Dataset *d, const TrainConfig *cfg, bool hybrid, bool seasonal, bool seasonal_events,
                         VariantResult *res)
{
    const int H = cfg->hidden;
    const size_t P = trainer_param_count(H);
    const size_t nseq = d->nseq;
    const int B = cfg->batch > 0 ? cfg->batch : 1;
    double *theta = calloc(P, sizeof(double)), *best = calloc(P, sizeof(double));
    double *grad = calloc(P, sizeof(double)), *m = calloc(P, sizeof(double)), *v = calloc(P, sizeof(double));
    size_t *order = malloc((nseq ? nseq : 1) * sizeof(size_t));
    const TrainSeq **batch = malloc((size_t)B * sizeof *batch);
    size_t nv = 0;
    for (size_t i = 0; i < nseq; i++)
        nv += d->seqs[i].val;
    /* per validation sequence: the reference epoch's losses, and this one's */
    double *ref = malloc((nv ? nv : 1) * sizeof(double)), *cur = malloc((nv ? nv : 1) * sizeof(double));
    TrainScratch sc = {0};
    LstmWeights *init = NULL;
    int rc = -ENOMEM;
    if (!theta || !best || !grad || !m || !v || !order || !batch || !ref || !cur ||
        lstm_weights_create(&init, H, cfg->seed, 0))
        goto out;
    /* init: the seeded random network; head near "predict the anchor"
     * (hybrid) or the training set's base rates (LSTM-only) */
    trainer_theta_from_net(theta, init);
    lstm_weights_release(init);
    const size_t K = (size_t)(NIN + H), G = 4u * (size_t)H, U = (size_t)(H + NE);
    double *hw = theta + G * K + G, *hb = hw + 3 * U;
    for (size_t i = 0; i < 3 * U; i++)
        hw[i] *= 0.1;
    zero_season(theta, H, seasonal, seasonal_events);
    double pos = 0, cnt = 0, ly = 0, ly2 = 0, sy = 0, ny = 0;
    for (size_t i = 0; i < nseq; i++)
        for (int c = 0; c < d->seqs[i].ncuts; c++) {
            double y = d->seqs[i].cuts[c].y;
            cnt++;
            if (!d->seqs[i].val) {
                sy += y;
                ny++;
            }
            if (y > 0) {
                pos++;
                ly += log(y);
                ly2 += log(y) * log(y);
            }
        }
    /* the mean's term in units of the training labels' mean; past a mean
     * given a purchase of 10^4 times it, the term leaves mu and sigma to
     * the likelihood (trainer_head_loss) */
    const double ybar = sy > 0 ? sy / ny : 1.0;
    const TrainLoss tl = {.mean_weight = cfg->mean_loss_weight, .mean_scale = ybar, .log_cond_mean_cap = log(ybar * 1e4)};
    double sd = pos > 1 ? sqrt(fmax(ly2 / pos - (ly / pos) * (ly / pos), 0.01)) : 1.0;
    hb[2] = log(expm1(fmax(sd - 0.05, 0.05)));
    if (hybrid) {
        hb[0] = hb[1] = 0.0;
    } else {
        double pr = fmin(fmax(pos / fmax(cnt, 1), 1e-3), 1 - 1e-3);
        hb[0] = log(pr / (1 - pr));
        hb[1] = pos > 0 ? ly / pos : 0.0;
    }
    for (size_t i = 0; i < nseq; i++)
        order[i] = i;
    uint64_t rng = cfg->seed * 0x632be59bd9b4e019ull + (hybrid ? 1 : 2);
    double best_val;
    if (val_loss_each(theta, H, d, hybrid, cfg->bptt, ref, &best_val, &sc))
        goto out;
    memcpy(best, theta, P * sizeof(double));
    int since_best = 0, epochs = 0;
    const double b1 = 0.9, b2 = 0.999, eps = 1e-8;
    uint64_t step = 0;
    for (int ep = 0; ep < cfg->max_epochs && since_best < PATIENCE; ep++) {
        epochs++;
        for (size_t i = nseq; i > 1; i--) { /* shuffle */
            size_t j = (size_t)(splitmix64(&rng) % i);
            size_t t = order[i - 1];
            order[i - 1] = order[j];
            order[j] = t;
        }
        size_t i = 0;
        while (i < nseq) {
            if (cfg->cancel && atomic_load_explicit(cfg->cancel, memory_order_relaxed)) {
                rc = -ECANCELED;
                goto out;
            }
            memset(grad, 0, P * sizeof(double));
            size_t ncut = 0;
            int taken = 0;
            for (; i < nseq && taken < B; i++) {
                const TrainSeq *s = &d->seqs[order[i]];
                if (s->val)
                    continue;
                batch[taken++] = s;
                ncut += (size_t)s->ncuts;
            }
            if (!ncut)
                continue;
            double loss;
            if (trainer_batch_loss(theta, H, batch, taken, hybrid, cfg->bptt, &tl, grad, NULL, &loss, &sc))
                goto out;
            zero_season(grad, H, seasonal, seasonal_events); /* Adam then leaves those weights at 0 */
            double norm = 0;
            for (size_t p = 0; p < P; p++) {
                grad[p] /= (double)ncut;
                norm += grad[p] * grad[p];
            }
            norm = sqrt(norm);
            double scale = norm > CLIP_NORM ? CLIP_NORM / norm : 1.0;
            step++;
            double c1 = 1 - pow(b1, (double)step), c2 = 1 - pow(b2, (double)step);
            for (size_t p = 0; p < P; p++) {
                double g = grad[p] * scale;
                m[p] = b1 * m[p] + (1 - b1) * g;
                v[p] = b2 * v[p] + (1 - b2) * g * g;
                theta[p] -= cfg->lr * (m[p] / c1) / (sqrt(v[p] / c2) + eps);
            }
        }
        double vl, gain, se;
        if (val_loss_each(theta, H, d, hybrid, cfg->bptt, cur, &vl, &sc))
            goto out;
        paired_diff(d, cur, ref, &gain, &se); /* ref - cur: > 0 when this epoch is better */
        log_msg(LOG_DEBUG, "training epoch", "head=%s epoch=%d val_loss=%.6f best=%.6f gain=%.6f se=%.6f",
                hybrid ? "hybrid" : "lstm_only", epochs, vl, best_val, gain, se);
        if (vl < best_val) {
            best_val = vl;
            memcpy(best, theta, P * sizeof(double));
        }
        if (gain > se) { /* a gain the validation sample can tell: this epoch is the new reference */
            double *t = ref;
            ref = cur;
            cur = t;
            since_best = 0;
        } else {
            since_best++;
        }
    }
    res->theta = best;
    res->val = best_val;
    res->epochs = epochs;
    best = NULL;
    rc = 0;
out:
    trainer_scratch_free(&sc);
    free(theta), free(best), free(grad), free(m), free(v), free(order), free(batch), free(ref), free(cur);
    return rc;
}

/* The head to serve (true: hybrid). The hybrid is the constrained variant
 * (zero residual reproduces the fallback), so by the one-standard-error
 * rule the LSTM-only head must beat it on validation by more than one
 * standard error of the paired difference, with shoppers as the units. */
static bool choose_hybrid(const VariantResult *hy, const VariantResult *lo, const TrainConfig *cfg, const Dataset *d)
{
    const TrainSeq *seqs = d->seqs;
    const size_t nseq = d->nseq;
    if (!lo->theta)
        return true;
    if (!hy->theta)
        return false;
    size_t nv = 0;
    for (size_t i = 0; i < nseq; i++)
        nv += seqs[i].val;
    double *a = malloc((nv ? nv : 1) * sizeof(double)), *b = malloc((nv ? nv : 1) * sizeof(double));
    if (!a || !b) {
        free(a), free(b);
        return hy->val <= lo->val;
    }
    TrainScratch sc = {0};
    double la, lb;
    int rc = val_loss_each(hy->theta, cfg->hidden, d, true, cfg->bptt, a, &la, &sc);
    if (!rc)
        rc = val_loss_each(lo->theta, cfg->hidden, d, false, cfg->bptt, b, &lb, &sc);
    trainer_scratch_free(&sc);
    if (rc) {
        free(a), free(b);
        return hy->val <= lo->val;
    }
    double mean, se;
    paired_diff(d, a, b, &mean, &se);
    free(a), free(b);
    return !(mean < -se); /* LSTM-only only if lower by more than one SE */
}

/* The cutting rules among the train.* keys. */
DatasetConfig trainer_dataset_config(const TrainConfig *cfg)
{
    return (DatasetConfig){
        .horizon_days = cfg->horizon_days,
        .grid_days = cfg->grid_days,
        .cuts_per_shopper = cfg->cuts_per_shopper,
        .val_percent = cfg->val_percent,
        .max_examples = cfg->max_examples,
        .seed = cfg->seed,
        .ring = cfg->ring,
    };
}

int trainer_run(const TrainSet *set, const TrainConfig *cfg, const FallbackFit *fit, const LstmWeights *serving,
                uint32_t new_id, TrainResult *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    uint64_t t0 = time_mono_ns();
    const DatasetConfig dc = trainer_dataset_config(cfg);
    Dataset d;
    int rc = dataset_build(&d, set, &dc, fit);
    if (rc) {
        snprintf(err, errlen, "out of memory cutting examples");
        return rc;
    }
    size_t ntrain = 0, nval = 0;
    for (size_t i = 0; i < d.nseq; i++) {
        if (d.seqs[i].val)
            nval += (size_t)d.seqs[i].ncuts;
        else
            ntrain += (size_t)d.seqs[i].ncuts;
    }
    if (ntrain < 50 || nval < 20) {
        snprintf(err, errlen, "too few matured examples to train on (%zu train, %zu validation; labels mature %d "
                 "days after their cut time)", ntrain, nval, cfg->horizon_days);
        dataset_free(&d);
        return -ENODATA;
    }
    /* The season gates. Each time of year is learned only where the
     * matured cuts of the training split have shown it, SEASON_MIN_SHARE
     * of all matured cuts from at least SEASON_MIN_SHOPPERS shoppers of
     * the training split (a few old or backfilled shoppers do not
     * make it, nor do a small store's oldest handful, whose season would
     * be their tenure):
     * - the head's at as_of (seasonal): cuts at or before now - 365 days
     *   (now - 365 k for a horizon over k - 1 years), where a label has
     *   shown the time of year serving asks about. CDNOW's matured cuts
     *   cover half a year: not seasonal.
     * - the LSTM's of each event (seasonal_events): cuts a year older than
     *   the latest, now - H - 365 days, so the training sequences hold
     *   events of every time of year that serving's states hold. Short of
     *   that, the events of some months all came from the cohort's first
     *   weeks and the LSTM read the month as the shopper's age (20,000
     *   simulated shoppers served in April after 15 months: Gini / AUC
     *   0.779 / 0.846 with those weights, 0.805 / 0.874 without;
     *   docs/ACCURACY.md, "The events' time of year"). */
    int64_t c_hi = INT64_MIN;
    size_t ncuts = 0, label_old = 0, events_old = 0, label_shoppers = 0, events_shoppers = 0;
    for (size_t i = 0; i < d.nseq; i++)
        for (int c = 0; c < d.seqs[i].ncuts; c++)
            c_hi = d.seqs[i].cuts[c].c > c_hi ? d.seqs[i].cuts[c].c : c_hi;
    const int64_t years = (cfg->horizon_days + SEASON_YEAR_DAYS - 1) / SEASON_YEAR_DAYS;
    const int64_t label_at = set->now - years * SEASON_YEAR_DAYS * 86400, events_at = c_hi - SEASON_YEAR_DAYS * 86400;
    for (size_t i = 0; i < d.nseq; i++) {
        size_t label_before = label_old, events_before = events_old;
        ncuts += (size_t)d.seqs[i].ncuts;
        if (d.seqs[i].val) /* what shows a season is what training learns from */
            continue;
        for (int c = 0; c < d.seqs[i].ncuts; c++) {
            label_old += d.seqs[i].cuts[c].c <= label_at;
            events_old += d.seqs[i].cuts[c].c <= events_at;
        }
        label_shoppers += label_old > label_before;
        events_shoppers += events_old > events_before;
    }
    const bool seasonal = label_shoppers >= SEASON_MIN_SHOPPERS && (double)label_old >= SEASON_MIN_SHARE * (double)ncuts;
    const bool seasonal_events =
        events_shoppers >= SEASON_MIN_SHOPPERS && (double)events_old >= SEASON_MIN_SHARE * (double)ncuts;
    VariantResult hy = {.val = INFINITY}, lo = {.val = INFINITY};
    rc = cfg->head == 2 ? 0 : train_variant(&d, cfg, true, seasonal, seasonal_events, &hy);
    if (!rc && cfg->head != 1)
        rc = train_variant(&d, cfg, false, seasonal, seasonal_events, &lo);
    if (rc) {
        snprintf(err, errlen, rc == -ECANCELED ? "training stopped: ltvd is shutting down" : "out of memory while training");
        free(hy.theta);
        free(lo.theta);
        dataset_free(&d);
        return rc;
    }
    bool hybrid = choose_hybrid(&hy, &lo, cfg, &d);
    VariantResult *win = hybrid ? &hy : &lo;
    /* the fallback's loss on the same validation cuts */
    double fb = 0;
    size_t k = 0;
    for (size_t i = 0; i < d.nseq; i++)
        if (d.seqs[i].val)
            for (int c = 0; c < d.seqs[i].ncuts; c++, k++) {
                const TrainCut *ct = &d.seqs[i].cuts[c];
                fb += ziln_nll(ct->bg_p, ct->bg_mu, ct->bg_sigma, ct->y);
            }
    out->val_loss_fallback = k ? fb / (double)k : INFINITY;
    out->val_loss_serving = out->val_loss_fallback;
    if (serving) {
        double *st = malloc(trainer_param_count(serving->cfg.hidden) * sizeof(double));
        if (st) {
            trainer_theta_from_net(st, serving);
            TrainScratch sc = {0};
            double vs;
            if (val_loss(st, serving->cfg.hidden, &d, serving->hybrid, cfg->bptt, &vs, &sc) == 0)
                out->val_loss_serving = vs;
            trainer_scratch_free(&sc);
            free(st);
        }
    }
    LstmWeights *net;
    if ((rc = lstm_weights_create(&net, cfg->hidden, cfg->seed, new_id)) != 0) {
        free(hy.theta);
        free(lo.theta);
        dataset_free(&d);
        return rc;
    }
    net_from_theta(net, win->theta);
    net->hybrid = hybrid;
    out->seasonal = seasonal;
    out->seasonal_events = seasonal_events;
    net->calib = trainer_choose_level(set, cfg, fit, win->theta, hybrid, &d, out);
    out->net = net;
    out->hybrid = hybrid;
    out->val_loss = win->val;
    out->val_loss_other = hybrid ? lo.val : hy.val;
    out->val_gini = trainer_val_gini(win->theta, cfg->hidden, &d, hybrid, &out->val_gini_fallback);
    out->examples = ntrain + nval;
    out->val_examples = nval;
    out->users = d.nseq;
    out->epochs = win->epochs;
    out->epochs_other = hybrid ? lo.epochs : hy.epochs;
    out->seconds = (double)(time_mono_ns() - t0) * 1e-9;
    free(hy.theta);
    free(lo.theta);
    dataset_free(&d);
    return 0;
}
