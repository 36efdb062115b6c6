/* trainer: example cutting, a double-precision LSTM + ZILN head with BPTT,
 * Adam with global-norm clipping, early stopping, and the choice between
 * the hybrid and the LSTM-only head by validation loss (one-SE rule). */
#include "trainer.h"

#include <cblas.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "timeutil.h"
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
static void step_forward(const double *W, const double *b, int H, const double *x, double *h, double *c, double *z,
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

/* Head outputs o (3,) = hw (3, H+E) @ [h; e] + hb; the LSTM-only head does
 * not see e's two fallback inputs. */
static void head_forward(const double *hw, const double *hb, int H, const double *h, const double *e, bool hybrid,
                         double *o)
{
    const int U = H + NE;
    for (int r = 0; r < 3; r++) {
        double acc = hb[r];
        for (int j = 0; j < H; j++)
            acc += hw[r * U + j] * h[j];
        for (int j = 0; j < NE; j++)
            acc += hw[r * U + H + j] * (hybrid || j < 4 ? e[j] : 0.0);
        o[r] = acc;
    }
}

/* Mean of the ZILN the head outputs o describe, with anchors a0, a1. */
static double head_mean(const double *o, double a0, double a1)
{
    double sg = softplus(o[2]) + 0.05;
    return sigmoid(o[0] + a0) * exp(o[1] + a1 + 0.5 * sg * sg);
}

double trainer_ziln_loss(const double *o, double a0, double a1, double y, double *dldo)
{
    double z0 = o[0] + a0, p = sigmoid(z0);
    double s = softplus(o[2]) + 0.05, ds = sigmoid(o[2]);
    double mu = o[1] + a1;
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
                             int bptt, double *grad)
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
        memcpy(u, HH(ct->t), (size_t)H * sizeof(double));
        memcpy(u + H, ct->e, NE * sizeof(double));
        double o[3], d[3];
        for (int r = 0; r < 3; r++) { /* hw (3, U) @ u (U,) + hb -> o (3,) */
            double acc = hb[r];
            for (int j = 0; j < U; j++)
                acc += hw[r * U + j] * u[j];
            o[r] = acc;
        }
        loss += trainer_ziln_loss(o, ct->a0, ct->a1, ct->y, grad ? d : NULL);
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

/* ---- dataset -------------------------------------------------------------- */

typedef struct Seq {
    double *x;       /* (n, NIN) */
    int n;
    TrainCut *cuts;  /* (ncuts,) */
    int ncuts;
    bool val;
} Seq;

static double net_spend(const Event *ev, int n, int64_t from_excl, int64_t to_incl)
{
    double y = 0;
    for (int i = 0; i < n; i++) {
        if (ev[i].ts <= from_excl || ev[i].ts > to_incl)
            continue;
        if (ev[i].type == EV_PURCHASE)
            y += ev[i].value;
        else if (ev[i].type == EV_REFUND)
            y -= ev[i].value;
    }
    return y > 0 ? y : 0;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

/* Builds the sequences and their cuts. Returns the number of sequences. */
static size_t build_dataset(const TrainSet *set, const TrainConfig *cfg, const FallbackFit *fit, Seq **out,
                            size_t *nexamples)
{
    Seq *seqs = calloc(set->nshoppers ? set->nshoppers : 1, sizeof *seqs);
    if (!seqs)
        return 0;
    uint64_t rng = cfg->seed * 0x9e3779b97f4a7c15ull + 7;
    const int64_t Hs = (int64_t)cfg->horizon_days * 86400;
    const int64_t grid = (int64_t)cfg->grid_days * 86400;
    size_t nseq = 0, total = 0;
    int64_t cand[1024 + 256];
    for (size_t si = 0; si < set->nshoppers && total < cfg->max_examples; si++) {
        const TrainShopper *sh = &set->shoppers[si];
        const Event *ev = set->events + sh->first;
        int n = (int)sh->n;
        if (n == 0 || n > 1024)
            continue;
        /* candidate cut times: every event time, and a grid through quiet
         * periods. Validation shoppers are judged the way predictions are
         * served, as late as possible: only cut times in the last
         * 2 x grid_days before labels stop maturing, plus that last time. */
        bool val = (int)(sh->key % 100) < cfg->val_percent;
        const int64_t newest = set->now - Hs, oldest = val ? newest - 2 * grid : INT64_MIN;
        int nc = 0;
        for (int i = 0; i < n; i++)
            if (ev[i].ts <= newest && ev[i].ts >= oldest && (i + 1 == n || ev[i + 1].ts != ev[i].ts))
                cand[nc++] = ev[i].ts;
        for (int64_t c = ev[0].ts + grid; c <= newest && nc < (int)(sizeof cand / sizeof cand[0]) - 1; c += grid)
            if (c >= oldest)
                cand[nc++] = c;
        if (val && ev[0].ts <= newest && (nc == 0 || cand[nc - 1] != newest))
            cand[nc++] = newest;
        if (nc == 0)
            continue;
        qsort(cand, (size_t)nc, sizeof cand[0], cmp_i64);
        /* keep at most cuts_per_shopper, drawn without replacement */
        int keep = nc < cfg->cuts_per_shopper ? nc : cfg->cuts_per_shopper;
        for (int i = 0; i < keep; i++) {
            int j = i + (int)(splitmix64(&rng) % (uint64_t)(nc - i));
            int64_t t = cand[i];
            cand[i] = cand[j];
            cand[j] = t;
        }
        qsort(cand, (size_t)keep, sizeof cand[0], cmp_i64);
        Seq *s = &seqs[nseq];
        s->x = malloc((size_t)n * NIN * sizeof(double));
        s->cuts = malloc((size_t)keep * sizeof(TrainCut));
        if (!s->x || !s->cuts) {
            free(s->x);
            free(s->cuts);
            break;
        }
        s->n = n;
        s->val = val;
        EncodeContext ctx = sh->ctx0;
        float xf[NIN];
        for (int i = 0; i < n; i++) {
            encode_event(xf, &ev[i], &ctx);
            encode_context_advance(&ctx, &ev[i]);
            for (int k = 0; k < NIN; k++)
                s->x[(size_t)i * NIN + k] = xf[k];
        }
        ShopperAgg agg = sh->agg0;
        int applied = 0;
        for (int k = 0; k < keep; k++) {
            int64_t c = cand[k];
            while (applied < n && ev[applied].ts <= c)
                shopper_agg_apply(&agg, &ev[applied++]);
            TrainCut *ct = &s->cuts[s->ncuts];
            ct->t = applied - 1;
            if (ct->t < 0)
                continue;
            CustomerSummary cs;
            bool has = shopper_summary(&agg, c, &cs);
            FallbackOutput fo;
            fallback_predict(&fit->bg, &fit->gg, has ? &cs : NULL, cfg->horizon_days / 7.0, &fo);
            float e[NE];
            encode_head_extra(e, &agg, c, log1p(fo.ltv), fo.p_alive);
            for (int j = 0; j < NE; j++)
                ct->e[j] = e[j];
            model_hybrid_anchors(&fo, &ct->a0, &ct->a1);
            ct->bg_p = fo.ziln.p;
            ct->bg_mu = fo.ziln.mu;
            ct->bg_sigma = fo.ziln.sigma;
            ct->y = net_spend(ev, n, c, c + Hs);
            s->ncuts++;
        }
        if (s->ncuts == 0) {
            free(s->x);
            free(s->cuts);
            memset(s, 0, sizeof *s);
            continue;
        }
        total += (size_t)s->ncuts;
        nseq++;
    }
    *out = seqs;
    *nexamples = total;
    return nseq;
}

static void free_dataset(Seq *seqs, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(seqs[i].x);
        free(seqs[i].cuts);
    }
    free(seqs);
}

/* ---- training ------------------------------------------------------------- */

/* Mean validation loss of theta; hybrid selects the anchors. per_seq (if
 * not NULL) gets each validation sequence's summed loss, in order. */
static double val_loss_each(const double *theta, int H, Seq *seqs, size_t n, bool hybrid, int bptt, double *per_seq)
{
    double sum = 0;
    size_t k = 0;
    TrainCut tmp[1024 + 256];
    for (size_t i = 0; i < n; i++) {
        if (!seqs[i].val)
            continue;
        const TrainCut *cuts = seqs[i].cuts;
        if (!hybrid) {
            memcpy(tmp, cuts, (size_t)seqs[i].ncuts * sizeof *tmp);
            for (int c = 0; c < seqs[i].ncuts; c++) {
                tmp[c].a0 = tmp[c].a1 = 0;
                tmp[c].e[4] = tmp[c].e[5] = 0;
            }
            cuts = tmp;
        }
        double l = trainer_sequence_loss(theta, H, seqs[i].x, seqs[i].n, cuts, seqs[i].ncuts, bptt, NULL);
        if (per_seq)
            *per_seq++ = l;
        sum += l;
        k += (size_t)seqs[i].ncuts;
    }
    return k ? sum / (double)k : INFINITY;
}

static double val_loss(const double *theta, int H, Seq *seqs, size_t n, bool hybrid, int bptt)
{
    return val_loss_each(theta, H, seqs, n, hybrid, bptt, NULL);
}

static void theta_from_net(double *theta, const LstmWeights *w)
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

static int train_variant(Seq *seqs, size_t nseq, const TrainConfig *cfg, bool hybrid, VariantResult *res)
{
    const int H = cfg->hidden;
    const size_t P = trainer_param_count(H);
    double *theta = calloc(P, sizeof(double)), *best = calloc(P, sizeof(double));
    double *grad = calloc(P, sizeof(double)), *m = calloc(P, sizeof(double)), *v = calloc(P, sizeof(double));
    size_t *order = malloc((nseq ? nseq : 1) * sizeof(size_t));
    TrainCut *tmp = malloc((1024 + 256) * sizeof(TrainCut));
    if (!theta || !best || !grad || !m || !v || !order || !tmp) {
        free(theta), free(best), free(grad), free(m), free(v), free(order), free(tmp);
        return -ENOMEM;
    }
    /* init: the seeded random network; head near "predict the anchor"
     * (hybrid) or the training set's base rates (LSTM-only) */
    LstmWeights *init;
    if (lstm_weights_create(&init, H, cfg->seed, 0)) {
        free(theta), free(best), free(grad), free(m), free(v), free(order), free(tmp);
        return -ENOMEM;
    }
    theta_from_net(theta, init);
    lstm_weights_release(init);
    const size_t K = (size_t)(NIN + H), G = 4u * (size_t)H, U = (size_t)(H + NE);
    double *hw = theta + G * K + G, *hb = hw + 3 * U;
    for (size_t i = 0; i < 3 * U; i++)
        hw[i] *= 0.1;
    double pos = 0, cnt = 0, ly = 0, ly2 = 0;
    for (size_t i = 0; i < nseq; i++)
        for (int c = 0; c < seqs[i].ncuts; c++) {
            double y = seqs[i].cuts[c].y;
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
    double best_val = val_loss(theta, H, seqs, nseq, hybrid, cfg->bptt);
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
            memset(grad, 0, P * sizeof(double));
            size_t ncut = 0;
            int taken = 0;
            for (; i < nseq && taken < cfg->batch; i++) {
                Seq *s = &seqs[order[i]];
                if (s->val)
                    continue;
                const TrainCut *cuts = s->cuts;
                if (!hybrid) {
                    memcpy(tmp, s->cuts, (size_t)s->ncuts * sizeof *tmp);
                    for (int c = 0; c < s->ncuts; c++) {
                        tmp[c].a0 = tmp[c].a1 = 0;
                        tmp[c].e[4] = tmp[c].e[5] = 0;
                    }
                    cuts = tmp;
                }
                trainer_sequence_loss(theta, H, s->x, s->n, cuts, s->ncuts, cfg->bptt, grad);
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
        double vl = val_loss(theta, H, seqs, nseq, hybrid, cfg->bptt);
        if (vl < best_val - 1e-5) {
            best_val = vl;
            memcpy(best, theta, P * sizeof(double));
            since_best = 0;
        } else {
            since_best++;
        }
    }
    free(theta), free(grad), free(m), free(v), free(order), free(tmp);
    res->theta = best;
    res->val = best_val;
    res->epochs = epochs;
    return 0;
}

static int cmp_pair_desc(const void *a, const void *b)
{
    const double *x = a, *y = b;
    return x[0] > y[0] ? -1 : x[0] < y[0];
}

static double gini_of(double *pairs, size_t n, bool by_pred)
{
    /* pairs: (score, actual); sort by score desc */
    if (!by_pred)
        for (size_t i = 0; i < n; i++)
            pairs[2 * i] = pairs[2 * i + 1];
    qsort(pairs, n, 2 * sizeof(double), cmp_pair_desc);
    double total = 0, cum = 0, area = 0;
    for (size_t i = 0; i < n; i++)
        total += pairs[2 * i + 1];
    if (total <= 0)
        return 0;
    for (size_t i = 0; i < n; i++) {
        cum += pairs[2 * i + 1];
        area += cum / total;
    }
    return area / (double)n - (double)(n + 1) / (2.0 * (double)n);
}

/* Normalised Gini of predicted means on the validation cuts; *fallback
 * gets the fallback's on the same cuts. */
static double val_gini(const double *theta, int H, Seq *seqs, size_t nseq, bool hybrid, double *fallback)
{
    *fallback = 0;
    size_t n = 0;
    for (size_t i = 0; i < nseq; i++)
        if (seqs[i].val)
            n += (size_t)seqs[i].ncuts;
    double *pp = malloc((n ? n : 1) * 2 * sizeof(double)), *pa = malloc((n ? n : 1) * 2 * sizeof(double));
    double *pf = malloc((n ? n : 1) * 2 * sizeof(double));
    if (!pp || !pa || !pf) {
        free(pp), free(pa), free(pf);
        return 0;
    }
    size_t k = 0;
    const size_t K = (size_t)(NIN + H), G = 4u * (size_t)H, U = (size_t)(H + NE);
    const double *W = theta, *b = theta + G * K, *hw = b + G, *hb = hw + 3 * U;
    double *h = calloc((size_t)H * 2 + G + K, sizeof(double));
    for (size_t i = 0; i < nseq && h; i++) {
        if (!seqs[i].val)
            continue;
        Seq *s = &seqs[i];
        double *c = h + H, *z = c + H, *xh = z + G;
        memset(h, 0, 2u * (size_t)H * sizeof(double));
        int ci = 0;
        for (int t = 0; t < s->n; t++) {
            step_forward(W, b, H, s->x + (size_t)t * NIN, h, c, z, xh);
            for (; ci < s->ncuts && s->cuts[ci].t == t; ci++) {
                const TrainCut *ct = &s->cuts[ci];
                double o[3];
                head_forward(hw, hb, H, h, ct->e, hybrid, o);
                double mean = head_mean(o, hybrid ? ct->a0 : 0, hybrid ? ct->a1 : 0);
                pp[2 * k] = pa[2 * k] = mean;
                pf[2 * k] = ct->bg_p * exp(ct->bg_mu + 0.5 * ct->bg_sigma * ct->bg_sigma);
                pp[2 * k + 1] = pa[2 * k + 1] = pf[2 * k + 1] = ct->y;
                k++;
            }
        }
    }
    free(h);
    double g = 0;
    if (k) {
        double gp = gini_of(pp, k, true), gf = gini_of(pf, k, true), ga = gini_of(pa, k, false);
        g = ga > 0 ? gp / ga : 0;
        *fallback = ga > 0 ? gf / ga : 0;
    }
    free(pp), free(pa), free(pf);
    return g;
}

/* log(Σ fallback mean / Σ network mean) over every shopper of the set, as
 * of set->now, with each shopper's whole retained sequence. */
static double level_shift(const TrainSet *set, const TrainConfig *cfg, const FallbackFit *fit, const double *theta,
                          bool hybrid)
{
    const int H = cfg->hidden;
    const size_t K = (size_t)(NIN + H), G = 4u * (size_t)H, U = (size_t)(H + NE);
    const double *W = theta, *b = theta + G * K, *hw = b + G, *hb = hw + 3 * U;
    double *h = calloc(2u * (size_t)H + G + K, sizeof(double));
    if (!h)
        return 0.0;
    double *c = h + H, *z = c + H, *xh = z + G;
    double sum_fb = 0, sum_net = 0;
    float xf[NIN];
    for (size_t si = 0; si < set->nshoppers; si++) {
        const TrainShopper *sh = &set->shoppers[si];
        const Event *ev = set->events + sh->first;
        memset(h, 0, 2u * (size_t)H * sizeof(double));
        EncodeContext ctx = sh->ctx0;
        ShopperAgg agg = sh->agg0;
        for (size_t t = 0; t < sh->n; t++) {
            encode_event(xf, &ev[t], &ctx);
            encode_context_advance(&ctx, &ev[t]);
            shopper_agg_apply(&agg, &ev[t]);
            double x[NIN];
            for (int k = 0; k < NIN; k++)
                x[k] = xf[k];
            step_forward(W, b, H, x, h, c, z, xh);
        }
        CustomerSummary cs;
        bool has = shopper_summary(&agg, set->now, &cs);
        FallbackOutput fo;
        fallback_predict(&fit->bg, &fit->gg, has ? &cs : NULL, cfg->horizon_days / 7.0, &fo);
        float ef[NE];
        encode_head_extra(ef, &agg, set->now, log1p(fo.ltv), fo.p_alive);
        double e[NE], o[3];
        for (int j = 0; j < NE; j++)
            e[j] = ef[j];
        head_forward(hw, hb, H, h, e, hybrid, o);
        double a0 = 0, a1 = 0;
        if (hybrid)
            model_hybrid_anchors(&fo, &a0, &a1);
        sum_net += head_mean(o, a0, a1);
        sum_fb += fo.ltv;
    }
    free(h);
    if (sum_net <= 0 || sum_fb <= 0)
        return 0.0;
    return log(sum_fb / sum_net);
}

/* The head to serve (true: hybrid). The hybrid is the constrained variant
 * (zero residual reproduces the fallback), so by the one-standard-error
 * rule the LSTM-only head must beat it on validation by more than one
 * standard error of the paired difference, with shoppers as the units. */
static bool choose_hybrid(const VariantResult *hy, const VariantResult *lo, const TrainConfig *cfg, Seq *seqs,
                          size_t nseq)
{
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
    val_loss_each(hy->theta, cfg->hidden, seqs, nseq, true, cfg->bptt, a);
    val_loss_each(lo->theta, cfg->hidden, seqs, nseq, false, cfg->bptt, b);
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

int trainer_run(const TrainSet *set, const TrainConfig *cfg, const FallbackFit *fit, const LstmWeights *serving,
                uint32_t new_id, TrainResult *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    uint64_t t0 = time_mono_ns();
    Seq *seqs = NULL;
    size_t nex = 0;
    size_t nseq = build_dataset(set, cfg, fit, &seqs, &nex);
    size_t ntrain = 0, nval = 0;
    for (size_t i = 0; i < nseq; i++) {
        if (seqs[i].val)
            nval += (size_t)seqs[i].ncuts;
        else
            ntrain += (size_t)seqs[i].ncuts;
    }
    if (ntrain < 50 || nval < 20) {
        snprintf(err, errlen, "too few matured examples to train on (%zu train, %zu validation; labels mature %d "
                 "days after their cut time)", ntrain, nval, cfg->horizon_days);
        free_dataset(seqs, nseq);
        return -ENODATA;
    }
    VariantResult hy = {NULL, INFINITY, 0}, lo = {NULL, INFINITY, 0};
    int rc = cfg->head == 2 ? 0 : train_variant(seqs, nseq, cfg, true, &hy);
    if (!rc && cfg->head != 1)
        rc = train_variant(seqs, nseq, cfg, false, &lo);
    if (rc) {
        snprintf(err, errlen, "out of memory while training");
        free(hy.theta);
        free(lo.theta);
        free_dataset(seqs, nseq);
        return rc;
    }
    bool hybrid = choose_hybrid(&hy, &lo, cfg, seqs, nseq);
    VariantResult *win = hybrid ? &hy : &lo;
    /* the fallback's loss on the same validation cuts */
    double fb = 0;
    size_t k = 0;
    for (size_t i = 0; i < nseq; i++)
        if (seqs[i].val)
            for (int c = 0; c < seqs[i].ncuts; c++, k++)
                fb += ziln_nll(seqs[i].cuts[c].bg_p, seqs[i].cuts[c].bg_mu, seqs[i].cuts[c].bg_sigma,
                               seqs[i].cuts[c].y);
    out->val_loss_fallback = k ? fb / (double)k : INFINITY;
    out->val_loss_serving = out->val_loss_fallback;
    if (serving) {
        double *st = malloc(trainer_param_count(serving->cfg.hidden) * sizeof(double));
        if (st) {
            theta_from_net(st, serving);
            out->val_loss_serving = val_loss(st, serving->cfg.hidden, seqs, nseq, serving->hybrid, cfg->bptt);
            free(st);
        }
    }
    LstmWeights *net;
    if ((rc = lstm_weights_create(&net, cfg->hidden, cfg->seed, new_id)) != 0) {
        free(hy.theta);
        free(lo.theta);
        free_dataset(seqs, nseq);
        return rc;
    }
    net_from_theta(net, win->theta);
    net->hybrid = hybrid;
    net->level_shift = level_shift(set, cfg, fit, win->theta, hybrid);
    out->level_shift = net->level_shift;
    out->net = net;
    out->hybrid = hybrid;
    out->val_loss = win->val;
    out->val_loss_other = hybrid ? lo.val : hy.val;
    out->val_gini = val_gini(win->theta, cfg->hidden, seqs, nseq, hybrid, &out->val_gini_fallback);
    out->examples = ntrain + nval;
    out->val_examples = nval;
    out->users = nseq;
    out->epochs = win->epochs;
    out->seconds = (double)(time_mono_ns() - t0) * 1e-9;
    free(hy.theta);
    free(lo.theta);
    free_dataset(seqs, nseq);
    return 0;
}

int trainer_backtest(const TrainSet *set, const TrainConfig *cfg, const FallbackFit *fit, const LstmWeights *net,
                     AdjPair **out, size_t *n_out)
{
    Seq *seqs = NULL;
    size_t nex = 0, k = 0;
    size_t nseq = build_dataset(set, cfg, fit, &seqs, &nex);
    AdjPair *pairs = malloc((nex ? nex : 1) * sizeof *pairs);
    const int H = net ? net->cfg.hidden : cfg->hidden;
    double *theta = net ? malloc(trainer_param_count(H) * sizeof(double)) : NULL;
    double *h = calloc(2u * (size_t)H + 4u * (size_t)H + (size_t)(NIN + H), sizeof(double));
    if (!pairs || (net && !theta) || !h) {
        free(pairs), free(theta), free(h);
        free_dataset(seqs, nseq);
        return -ENOMEM;
    }
    if (net)
        theta_from_net(theta, net);
    const size_t K = (size_t)(NIN + H), G = 4u * (size_t)H, U = (size_t)(H + NE);
    for (size_t i = 0; i < nseq; i++) {
        Seq *s = &seqs[i];
        if (!s->val)
            continue;
        double *c = h + H, *z = c + H, *xh = z + G;
        memset(h, 0, 2u * (size_t)H * sizeof(double));
        int ci = 0;
        for (int t = 0; t < s->n && ci < s->ncuts; t++) {
            if (net)
                step_forward(theta, theta + G * K, H, s->x + (size_t)t * NIN, h, c, z, xh);
            for (; ci < s->ncuts && s->cuts[ci].t == t; ci++) {
                const TrainCut *ct = &s->cuts[ci];
                double pred;
                if (net) {
                    double o[3];
                    const double *hw = theta + G * K + G;
                    head_forward(hw, hw + 3 * U, H, h, ct->e, net->hybrid, o);
                    pred = head_mean(o, net->hybrid ? ct->a0 : 0, (net->hybrid ? ct->a1 : 0) + net->level_shift);
                } else {
                    pred = ct->bg_p * exp(ct->bg_mu + 0.5 * ct->bg_sigma * ct->bg_sigma);
                }
                pairs[k].pred = pred;
                pairs[k].actual = ct->y;
                pairs[k].recency_days = expm1(ct->e[0]);
                pairs[k].tenure_days = expm1(ct->e[1]);
                k++;
            }
        }
    }
    free(theta);
    free(h);
    free_dataset(seqs, nseq);
    if (!k) {
        free(pairs);
        return -ENODATA;
    }
    *out = pairs;
    *n_out = k;
    return 0;
}
