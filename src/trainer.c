/* trainer: fitting the LSTM and the ZILN head on a Dataset: the loss and
 * its gradient by BPTT in double precision, Adam with global-norm
 * clipping, early stopping on the validation loss, the choice between the
 * hybrid and the LSTM-only head (one-SE rule); the level, the validation
 * Gini and the adjuster's backtest are trainer_eval.c's. The examples are
 * dataset.c's, the head's forward pass head.c's. Worker thread; it owns
 * every buffer it allocates, and the network it returns is the caller's. */
#include "trainer.h"

#include <cblas.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "head.h"
#include "ranking.h"
#include "timeutil.h"
#include "trainer_internal.h"
#include "util.h"

#define NIN FEATURE_DIM
#define NE HEAD_EXTRA

/* Not configurable: early stopping after this many epochs without a better
 * validation loss, and the global gradient-norm clip. */
#define PATIENCE 4
#define CLIP_NORM 5.0

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
        c[j] = sigmoid(z[H + j]) * c[j] + sigmoid(z[j]) * tanh(z[2 * H + j]);
        h[j] = sigmoid(z[3 * H + j]) * tanh(c[j]);
    }
}

/* The mean spend the head predicts from pre-activations z (3,). */
double trainer_head_mean(const double *z, double level_shift)
{
    ZilnParams zp = head_ziln(z, level_shift);
    return ziln_mean(&zp);
}

double trainer_ziln_loss(const double *o, double a0, double a1, double y, double *dldo)
{
    const double z[HEAD_OUT] = {o[0] + a0, o[1] + a1, o[2]};
    const ZilnParams zp = head_ziln(z, 0.0);
    double z0 = z[0], p = zp.p;
    double s = zp.sigma, ds = sigmoid(o[2]);
    double mu = zp.mu;
    if (y <= 0) {
        if (dldo) {
            dldo[0] = p;
            dldo[1] = dldo[2] = 0.0;
        }
        return softplus(z0);
    }
    double ly = log(y), r = ly - mu;
    if (dldo) {
        dldo[0] = p - 1.0;
        dldo[1] = -r / (s * s);
        dldo[2] = (1.0 / s - r * r / (s * s * s)) * ds;
    }
    return softplus(-z0) + ly + log(s) + 0.5 * log(2.0 * M_PI) + r * r / (2.0 * s * s);
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

double trainer_sequence_loss(const double *theta, int H, const double *x, int n, const TrainCut *cuts, int ncuts,
                             bool hybrid, int bptt, double *grad)
{
    const int K = NIN + H, G = 4 * H, U = H + NE;
    const double *W = theta, *b = theta + (size_t)G * K;             /* W (4H, K), b (4H,) */
    const double *hw = b + G, *hb = hw + 3 * U;                      /* hw (3, H+E), hb (3,) */
    /* per step: xh (K), act (4H: i f g o), c (H), tc (H), h (H) */
    size_t step = (size_t)K + (size_t)G + 3u * (size_t)H;
    double *ws = calloc((size_t)n * step + 4u * (size_t)H + (size_t)G + (size_t)K + (size_t)n * H + U, sizeof(double));
    if (!ws)
        return NAN;
    double *dh_cut = ws + (size_t)n * step;  /* (n, H) */
    double *dh_next = dh_cut + (size_t)n * H, *dc_next = dh_next + H;
    double *dz = dc_next + H, *dxh = dz + G, *u = dxh + K;
#define XH(t) (ws + (size_t)(t) * step)
#define ACT(t) (XH(t) + K)
#define CC(t) (ACT(t) + G)
#define TC(t) (CC(t) + H)
#define HH(t) (TC(t) + H)
    for (int t = 0; t < n; t++) {
        double *xh = XH(t), *a = ACT(t);
        memcpy(xh, x + (size_t)t * NIN, NIN * sizeof(double));
        if (t > 0)
            memcpy(xh + NIN, HH(t - 1), (size_t)H * sizeof(double));
        memcpy(a, b, (size_t)G * sizeof(double));
        /* W (4H, K) @ xh (K,) + b -> a (4H,) */
        cblas_dgemv(CblasRowMajor, CblasNoTrans, G, K, 1.0, W, K, xh, 1, 1.0, a, 1);
        for (int j = 0; j < H; j++) {
            double ig = sigmoid(a[j]), fg = sigmoid(a[H + j]), gg = tanh(a[2 * H + j]), og = sigmoid(a[3 * H + j]);
            a[j] = ig;
            a[H + j] = fg;
            a[2 * H + j] = gg;
            a[3 * H + j] = og;
            double cp = t > 0 ? CC(t - 1)[j] : 0.0;
            CC(t)[j] = fg * cp + ig * gg;
            TC(t)[j] = tanh(CC(t)[j]);
            HH(t)[j] = og * TC(t)[j];
        }
    }
    double loss = 0.0;
    double *ghw = grad ? grad + (size_t)G * K + G : NULL, *ghb = ghw ? ghw + 3 * U : NULL;
    for (int k = 0; k < ncuts; k++) {
        const TrainCut *ct = &cuts[k];
        double z[HEAD_OUT], d[HEAD_OUT];
        head_forward(z, u, hw, hb, H, HH(ct->t), ct->e, ct->a0, ct->a1, hybrid); /* u (U,) = [h; e'] */
        loss += trainer_ziln_loss(z, 0.0, 0.0, ct->y, grad ? d : NULL);
        if (!grad)
            continue;
        for (int r = 0; r < 3; r++) {
            ghb[r] += d[r];
            for (int j = 0; j < U; j++)
                ghw[r * U + j] += d[r] * u[j];
        }
        double *dht = dh_cut + (size_t)ct->t * H;
        for (int j = 0; j < H; j++)
            dht[j] += d[0] * hw[j] + d[1] * hw[U + j] + d[2] * hw[2 * U + j];
    }
    if (grad) {
        double *gW = grad, *gb = grad + (size_t)G * K;
        for (int t = n - 1; t >= 0; t--) {
            if (bptt > 0 && t < n - 1 && (n - 1 - t) % bptt == 0) {
                memset(dh_next, 0, (size_t)H * sizeof(double)); /* truncated BPTT: chunk boundary */
                memset(dc_next, 0, (size_t)H * sizeof(double));
            }
            const double *a = ACT(t);
            for (int j = 0; j < H; j++) {
                double ig = a[j], fg = a[H + j], gg = a[2 * H + j], og = a[3 * H + j], tc = TC(t)[j];
                double dhj = dh_cut[(size_t)t * H + j] + dh_next[j];
                double dcj = dc_next[j] + dhj * og * (1.0 - tc * tc);
                double cp = t > 0 ? CC(t - 1)[j] : 0.0;
                dz[j] = dcj * gg * ig * (1.0 - ig);
                dz[H + j] = dcj * cp * fg * (1.0 - fg);
                dz[2 * H + j] = dcj * ig * (1.0 - gg * gg);
                dz[3 * H + j] = dhj * tc * og * (1.0 - og);
                dc_next[j] = dcj * fg;
            }
            /* gW (4H, K) += dz (4H,) ⊗ xh (K,) ; gb += dz */
            cblas_dger(CblasRowMajor, G, K, 1.0, dz, 1, XH(t), 1, gW, K);
            for (int j = 0; j < G; j++)
                gb[j] += dz[j];
            /* dxh (K,) = W^T (K, 4H) @ dz (4H,) */
            cblas_dgemv(CblasRowMajor, CblasTrans, G, K, 1.0, W, K, dz, 1, 0.0, dxh, 1);
            memcpy(dh_next, dxh + NIN, (size_t)H * sizeof(double));
        }
    }
#undef XH
#undef ACT
#undef CC
#undef TC
#undef HH
    free(ws);
    return loss;
}

/* ---- training ------------------------------------------------------------- */

/* Mean validation loss of theta under the head variant; per_seq (if not
 * NULL) gets each validation sequence's summed loss, in order. */
static double val_loss_each(const double *theta, int H, const Dataset *d, bool hybrid, int bptt, double *per_seq)
{
    double sum = 0;
    size_t k = 0;
    for (size_t i = 0; i < d->nseq; i++) {
        const TrainSeq *sq = &d->seqs[i];
        if (!sq->val)
            continue;
        double l = trainer_sequence_loss(theta, H, sq->x, sq->n, sq->cuts, sq->ncuts, hybrid, bptt, NULL);
        if (per_seq)
            *per_seq++ = l;
        sum += l;
        k += (size_t)sq->ncuts;
    }
    return k ? sum / (double)k : INFINITY;
}

static double val_loss(const double *theta, int H, const Dataset *d, bool hybrid, int bptt)
{
    return val_loss_each(theta, H, d, hybrid, bptt, NULL);
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

static int train_variant(const Dataset *d, const TrainConfig *cfg, bool hybrid, VariantResult *res)
{
    const int H = cfg->hidden;
    const size_t P = trainer_param_count(H);
    double *theta = calloc(P, sizeof(double)), *best = calloc(P, sizeof(double));
    double *grad = calloc(P, sizeof(double)), *m = calloc(P, sizeof(double)), *v = calloc(P, sizeof(double));
    const size_t nseq = d->nseq;
    size_t *order = malloc((nseq ? nseq : 1) * sizeof(size_t));
    if (!theta || !best || !grad || !m || !v || !order) {
        free(theta), free(best), free(grad), free(m), free(v), free(order);
        return -ENOMEM;
    }
    /* init: the seeded random network; head near "predict the anchor"
     * (hybrid) or the training set's base rates (LSTM-only) */
    LstmWeights *init;
    if (lstm_weights_create(&init, H, cfg->seed, 0)) {
        free(theta), free(best), free(grad), free(m), free(v), free(order);
        return -ENOMEM;
    }
    trainer_theta_from_net(theta, init);
    lstm_weights_release(init);
    const size_t K = (size_t)(NIN + H), G = 4u * (size_t)H, U = (size_t)(H + NE);
    double *hw = theta + G * K + G, *hb = hw + 3 * U;
    for (size_t i = 0; i < 3 * U; i++)
        hw[i] *= 0.1;
    double pos = 0, cnt = 0, ly = 0, ly2 = 0;
    for (size_t i = 0; i < nseq; i++)
        for (int c = 0; c < d->seqs[i].ncuts; c++) {
            double y = d->seqs[i].cuts[c].y;
            cnt++;
            if (y > 0) {
                pos++;
                ly += log(y);
                ly2 += log(y) * log(y);
            }
        }
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
    double best_val = val_loss(theta, H, d, hybrid, cfg->bptt);
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
                free(theta), free(best), free(grad), free(m), free(v), free(order);
                return -ECANCELED;
            }
            memset(grad, 0, P * sizeof(double));
            size_t ncut = 0;
            int taken = 0;
            for (; i < nseq && taken < cfg->batch; i++) {
                const TrainSeq *s = &d->seqs[order[i]];
                if (s->val)
                    continue;
                trainer_sequence_loss(theta, H, s->x, s->n, s->cuts, s->ncuts, hybrid, cfg->bptt, grad);
                ncut += (size_t)s->ncuts;
                taken++;
            }
            if (!ncut)
                continue;
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
        double vl = val_loss(theta, H, d, hybrid, cfg->bptt);
        if (vl < best_val - 1e-5) {
            best_val = vl;
            memcpy(best, theta, P * sizeof(double));
            since_best = 0;
        } else {
            since_best++;
        }
    }
    free(theta), free(grad), free(m), free(v), free(order);
    res->theta = best;
    res->val = best_val;
    res->epochs = epochs;
    return 0;
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
    val_loss_each(hy->theta, cfg->hidden, d, true, cfg->bptt, a);
    val_loss_each(lo->theta, cfg->hidden, d, false, cfg->bptt, b);
    double sd = 0, sn = 0;
    size_t k = 0;
    for (size_t i = 0; i < nseq; i++)
        if (seqs[i].val) {
            sd += b[k] - a[k];
            sn += seqs[i].ncuts;
            k++;
        }
    double mean = sn > 0 ? sd / sn : 0, var = 0;
    k = 0;
    for (size_t i = 0; i < nseq; i++)
        if (seqs[i].val) {
            double r = (b[k] - a[k]) - mean * seqs[i].ncuts;
            var += r * r;
            k++;
        }
    free(a), free(b);
    double se = sn > 0 ? sqrt(var) / sn : 0;
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
    VariantResult hy = {.val = INFINITY}, lo = {.val = INFINITY};
    rc = cfg->head == 2 ? 0 : train_variant(&d, cfg, true, &hy);
    if (!rc && cfg->head != 1)
        rc = train_variant(&d, cfg, false, &lo);
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
            out->val_loss_serving = val_loss(st, serving->cfg.hidden, &d, serving->hybrid, cfg->bptt);
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
    net->level_shift = trainer_choose_level(set, cfg, fit, win->theta, hybrid, &d, &out->level_rule,
                                    &out->val_total_error_fallback, &out->val_total_error_held_out);
    out->level_shift = net->level_shift;
    out->net = net;
    out->hybrid = hybrid;
    out->val_loss = win->val;
    out->val_loss_other = hybrid ? lo.val : hy.val;
    out->val_gini = trainer_val_gini(win->theta, cfg->hidden, &d, hybrid, &out->val_gini_fallback);
    out->examples = ntrain + nval;
    out->val_examples = nval;
    out->users = d.nseq;
    out->epochs = win->epochs;
    out->seconds = (double)(time_mono_ns() - t0) * 1e-9;
    free(hy.theta);
    free(lo.theta);
    dataset_free(&d);
    return 0;
}
