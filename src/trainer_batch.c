/* trainer_batch: the loss of a batch of sequences and its gradient by
 * BPTT, with the batch's steps computed together, and the loss at one cut
 * (trainer_ziln_loss, trainer_head_loss: the likelihood and the mean's
 * Poisson term).
 *
 * The sequences are sorted by length, longest first, and aligned at their
 * first event, so at step t the sequences still running are the first m(t)
 * rows of the step's block. Each step is then three matrix products over
 * those rows (the gates forward, the weights' gradient and the gradient
 * back into the inputs and the previous state) instead of one
 * matrix-vector product per sequence (docs/PERFORMANCE.md, "Training",
 * has what that buys). A batch gives the sum of its sequences' losses and
 * gradients, up to the order of summation; trainer_sequence_loss is a
 * batch of one.
 *
 * Rows are stored step by step: block t holds m(t) rows at offset off(t),
 * so the workspace is the sum of the lengths, no padding. A batch whose
 * lengths sum past BATCH_ROWS is cut into groups that fit, which bounds the
 * workspace at about 12 MiB at hidden 32 (BATCH_ROWS steps of 2.4 KiB,
 * GROUP_SEQS sequences of 2.3 KiB; about 90 MiB at hidden 256) whatever
 * train.batch is. The same
 * groups give the states at the cuts without a gradient
 * (trainer_batch_states), for the figures made after training. Worker thread; the
 * scratch is the caller's. */
#include <cblas.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "head.h"
#include "pace.h"
#include "trainer.h"
#include "util.h"

#define NIN FEATURE_DIM
#define NE HEAD_EXTRA

/* Steps over all sequences of one group (a single sequence longer than
 * this still gets a group of its own: DATASET_MAX_EVENTS is smaller). */
#define BATCH_ROWS 4096
/* Sequences in one group (what is kept per sequence, 2.3 KiB at hidden
 * 32, stays under 2.5 MiB). */
#define GROUP_SEQS 1024

void trainer_scratch_free(TrainScratch *sc)
{
    if (sc->buf)
        util_table_free(sc->buf, sc->cap * sizeof(double));
    free(sc->keys);
    memset(sc, 0, sizeof *sc);
}

/* At least n doubles in sc->buf, in steps of 2 MiB. The buffer is a
 * mapping of its own (util_table_alloc; a heap block under ASan), so that
 * freeing it gives the memory back: from the heap, the scratches of the
 * two heads and of the predictions after them stayed resident side by
 * side (peak RSS of a retrain +30 MiB at 25,000 shoppers). */
static int scratch_reserve(TrainScratch *sc, size_t n)
{
    if (n <= sc->cap)
        return 0;
    const size_t step = (size_t)2 << 20;
    size_t bytes = (n * sizeof(double) + step - 1) / step * step;
    double *b = util_table_alloc(bytes);
    if (!b)
        return -ENOMEM;
    if (sc->buf)
        util_table_free(sc->buf, sc->cap * sizeof(double));
    sc->buf = b;
    sc->cap = bytes / sizeof(double);
    return 0;
}

/* The gates' nonlinearities, over n values at once, written so the
 * compiler vectorises them: with glibc's libmvec (meson finds it and
 * builds this file with -fno-math-errno, LTVD_VEC_EXP) exp runs two
 * values per call on any x86-64, 3.1 times as fast as the scalar exp
 * (10.9 against 3.5 ns a value, measured here). tanh is 2σ(2x) − 1: its
 * error near 0 is about 2e-16 absolute, nothing to the cell sums it
 * enters. */
#ifdef LTVD_VEC_EXP
double exp(double) __attribute__((simd("notinbranch")));
#endif

static void vec_sigmoid(double *restrict v, int n)
{
    for (int j = 0; j < n; j++)
        v[j] = 1.0 / (1.0 + exp(-v[j]));
}

static void vec_tanh(double *out, const double *in, int n)
{
    for (int j = 0; j < n; j++)
        out[j] = 2.0 / (1.0 + exp(-2.0 * in[j])) - 1.0;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

/* The steps of s that reach a loss: up to its last cut. The events after
 * it (a shopper's last H days, whose labels have not matured) change
 * nothing, so they are not computed. */
static int seq_steps(const TrainSeq *s)
{
    int last = -1;
    for (int k = 0; k < s->ncuts; k++)
        if (s->cuts[k].t > last)
            last = s->cuts[k].t;
    return last + 1 < s->n ? last + 1 : s->n;
}

/* A group's workspace, laid out by group_layout. Per row (a step of a
 * sequence): xh (K), act (4H: i f g o), c, tanh c, h, dh from the head (H
 * each), whether a cut reads it. Per sequence: dh_next, dc_next (H each),
 * dz (4H), dxh and the gathered xh (K each), its steps, live, the live
 * rows. Per step: the first row, the rows. And u, the head's input (U). */
typedef struct Group {
    const TrainSeq *const *seqs;
    const int *idx;
    int m, T;
    size_t rows;
    double *XH, *ACT, *CC, *TC, *HH, *DH;
    double *dh_next, *dc_next, *dz, *dxh, *xhg, *u;
    size_t *off;
    int *mt, *steps, *live, *lrow;
    unsigned char *cutrow;
} Group;

/* Doubles a group of m sequences over rows steps, the longest T, needs. */
static size_t group_doubles(int H, int m, size_t rows, int T)
{
    const size_t K = (size_t)(NIN + H), G = 4u * (size_t)H, U = (size_t)(H + NE);
    size_t d = rows * (K + G + 4u * (size_t)H) + (size_t)m * (2u * (size_t)H + G + 2u * K) + U;
    size_t tail = (size_t)T * (sizeof(size_t) + sizeof(int)) + 3u * (size_t)m * sizeof(int) + rows;
    return d + (tail + sizeof(double) - 1) / sizeof(double) + 1;
}

/* Lays a group (seqs[idx[0..m)], longest first by seq_steps, steps summing
 * to rows) out on ws (group_doubles of it) and runs the LSTM forward
 * through every step. */
static void group_forward(Group *g, const double *theta, int H, const TrainSeq *const *seqs, const int *idx, int m,
                          size_t rows, double *ws)
{
    const int K = NIN + H, G = 4 * H, U = H + NE;
    const double *W = theta, *b = theta + (size_t)G * K; /* W (4H, K), b (4H,) */
    const int T = seq_steps(seqs[idx[0]]);
    *g = (Group){.seqs = seqs, .idx = idx, .m = m, .T = T, .rows = rows};
    g->XH = ws;
    g->ACT = g->XH + rows * K;
    g->CC = g->ACT + rows * G;
    g->TC = g->CC + rows * H;
    g->HH = g->TC + rows * H;
    g->DH = g->HH + rows * H;
    g->dh_next = g->DH + rows * H;
    g->dc_next = g->dh_next + (size_t)m * H;
    g->dz = g->dc_next + (size_t)m * H;
    g->dxh = g->dz + (size_t)m * G;
    g->xhg = g->dxh + (size_t)m * K;
    g->u = g->xhg + (size_t)m * K;
    g->off = (size_t *)(g->u + U);
    g->mt = (int *)(g->off + T);
    g->steps = g->mt + T;
    g->live = g->steps + m;
    g->lrow = g->live + m;
    g->cutrow = (unsigned char *)(g->lrow + m);
    double *XH = g->XH, *ACT = g->ACT, *CC = g->CC, *TC = g->TC, *HH = g->HH;
    const size_t *off = g->off;
    const int *mt = g->mt;

    /* rows per step: the sequences are longest first */
    for (int i = 0; i < m; i++)
        g->steps[i] = seq_steps(seqs[idx[i]]);
    size_t o = 0;
    for (int t = 0, k = m; t < T; t++) {
        while (k > 0 && g->steps[k - 1] <= t)
            k--;
        g->off[t] = o;
        g->mt[t] = k;
        o += (size_t)k;
    }

    for (int t = 0; t < T; t++) {
        pace_point(); /* a job's step: one matrix product over the batch's sequences */
        const int r = mt[t];
        double *xh = XH + off[t] * K, *a = ACT + off[t] * G;
        for (int i = 0; i < r; i++) {
            memcpy(xh + (size_t)i * K, seqs[idx[i]]->x + (size_t)t * NIN, NIN * sizeof(double));
            if (t > 0)
                memcpy(xh + (size_t)i * K + NIN, HH + (off[t - 1] + i) * H, (size_t)H * sizeof(double));
            else
                memset(xh + (size_t)i * K + NIN, 0, (size_t)H * sizeof(double));
            memcpy(a + (size_t)i * G, b, (size_t)G * sizeof(double));
        }
        /* a (r, 4H) += xh (r, K) @ W^T (K, 4H) */
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, r, G, K, 1.0, xh, K, W, K, 1.0, a, G);
        for (int i = 0; i < r; i++) {
            double *ai = a + (size_t)i * G; /* pre-activations of i f g o, then the gates */
            double *c = CC + (off[t] + i) * H, *tc = TC + (off[t] + i) * H, *h = HH + (off[t] + i) * H;
            const double *cp = t > 0 ? CC + (off[t - 1] + i) * H : NULL;
            vec_sigmoid(ai, 2 * H);
            vec_tanh(ai + 2 * H, ai + 2 * H, H);
            vec_sigmoid(ai + 3 * H, H);
            for (int j = 0; j < H; j++)
                c[j] = ai[H + j] * (cp ? cp[j] : 0.0) + ai[j] * ai[2 * H + j];
            vec_tanh(tc, c, H);
            for (int j = 0; j < H; j++)
                h[j] = ai[3 * H + j] * tc[j];
        }
    }
}

double trainer_ziln_loss(const double *o, double a0, double a1, double y, double *dldo)
{
    const double z[HEAD_OUT] = {o[0] + a0, o[1] + a1, o[2]};
    const ZilnParams zp = head_ziln(z, &HEAD_CALIB_NONE);
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

double trainer_head_loss(const double *z, double y, const TrainLoss *l, double *dldz)
{
    double loss = trainer_ziln_loss(z, 0.0, 0.0, y, dldz);
    if (!l || !(l->mean_weight > 0))
        return loss;
    /* log m = log p + lc, lc = mu + sigma^2 / 2 (the log of the mean given a
     * purchase), log p = -softplus(-z0) (no log of 0) */
    const ZilnParams zp = head_ziln(z, &HEAD_CALIB_NONE);
    const double s = zp.sigma, lc = zp.mu + 0.5 * s * s;
    const bool capped = lc > l->log_cond_mean_cap;
    const double logm = -softplus(-z[0]) + (capped ? l->log_cond_mean_cap : lc), m = exp(logm);
    const double w = l->mean_weight / l->mean_scale;
    y = y > 0 ? y : 0.0; /* as the likelihood reads it; a negative y would make the term unbounded below */
    if (dldz) { /* d/dm (m - y log m) = 1 - y/m, times dm/dz = m (1 - p, 1, sigma sigmoid(z2)) */
        const double f = w * (m - y);
        dldz[0] += f * (1.0 - zp.p);
        if (!capped) {
            dldz[1] += f;
            dldz[2] += f * s * sigmoid(z[2]);
        }
    }
    return loss + w * (m - y * logm);
}

/* One group's loss (its forward done): adds each sequence's loss into
 * per_seq[idx] (if not NULL) and the gradient into grad (if not NULL);
 * returns the group's loss. */
static double group_loss(Group *g, const double *theta, int H, bool hybrid, int bptt, const TrainLoss *tl, double *grad,
                         double *per_seq)
{
    const int K = NIN + H, G = 4 * H, U = H + NE;
    const double *W = theta, *b = theta + (size_t)G * K;  /* W (4H, K), b (4H,) */
    const double *hw = b + G, *hb = hw + 3 * U;           /* hw (3, U), hb (3,) */
    const TrainSeq *const *seqs = g->seqs;
    const int *idx = g->idx, m = g->m, T = g->T, *mt = g->mt;
    const size_t rows = g->rows, *off = g->off;
    double *XH = g->XH, *ACT = g->ACT, *CC = g->CC, *TC = g->TC, *HH = g->HH, *DH = g->DH;
    double *dh_next = g->dh_next, *dc_next = g->dc_next, *dz = g->dz, *dxh = g->dxh, *xhg = g->xhg, *u = g->u;
    int *live = g->live, *lrow = g->lrow;
    unsigned char *cutrow = g->cutrow;

    double loss = 0.0;
    double *ghw = grad ? grad + (size_t)G * K + G : NULL, *ghb = ghw ? ghw + 3 * U : NULL;
    if (grad) {
        memset(DH, 0, rows * H * sizeof(double));
        memset(cutrow, 0, rows);
    }
    for (int i = 0; i < m; i++) {
        const TrainSeq *s = seqs[idx[i]];
        double ls = 0.0;
        for (int k = 0; k < s->ncuts; k++) {
            const TrainCut *ct = &s->cuts[k];
            const size_t row = off[ct->t] + (size_t)i;
            double z[HEAD_OUT], d[HEAD_OUT];
            head_forward(z, u, hw, hb, H, HH + row * H, ct->e, ct->a0, ct->a1, hybrid); /* u (U,) = [h; e'] */
            ls += trainer_head_loss(z, ct->y, tl, grad ? d : NULL);
            if (!grad)
                continue;
            for (int q = 0; q < HEAD_OUT; q++) {
                ghb[q] += d[q];
                for (int j = 0; j < U; j++)
                    ghw[q * U + j] += d[q] * u[j];
            }
            double *dht = DH + row * H;
            cutrow[row] = 1;
            for (int j = 0; j < H; j++)
                dht[j] += d[0] * hw[j] + d[1] * hw[U + j] + d[2] * hw[2 * U + j];
        }
        if (per_seq)
            per_seq[idx[i]] += ls;
        loss += ls;
    }
    if (!grad)
        return loss;

    /* Backward. A step gets a gradient only from a cut at or after it in
     * the same truncation chunk (chunks are counted from the sequence's
     * end, as trainer_sequence_loss always has); the rest of a long
     * history's steps (most of them, at 12 cuts a shopper) are skipped, and
     * the matrix products take only the live rows, gathered. */
    double *gW = grad, *gb = grad + (size_t)G * K;
    memset(dh_next, 0, (size_t)m * H * sizeof(double));
    memset(dc_next, 0, (size_t)m * H * sizeof(double));
    memset(live, 0, (size_t)m * sizeof(int));
    for (int t = T - 1; t >= 0; t--) {
        pace_point();
        const int r = mt[t];
        const double *xh = XH + off[t] * K, *a = ACT + off[t] * G;
        int nl = 0;
        for (int i = 0; i < r; i++) {
            const int n = seqs[idx[i]]->n;
            double *dhn = dh_next + (size_t)i * H, *dcn = dc_next + (size_t)i * H;
            bool reset = bptt > 0 && t < n - 1 && (n - 1 - t) % bptt == 0; /* truncated BPTT: chunk boundary */
            if (reset && live[i]) {
                memset(dhn, 0, (size_t)H * sizeof(double));
                memset(dcn, 0, (size_t)H * sizeof(double));
            }
            live[i] = cutrow[off[t] + i] || (live[i] && !reset);
            if (!live[i])
                continue;
            const double *ai = a + (size_t)i * G, *tcv = TC + (off[t] + i) * H, *dht = DH + (off[t] + i) * H;
            const double *cp = t > 0 ? CC + (off[t - 1] + i) * H : NULL;
            double *dzi = dz + (size_t)nl * G;
            for (int j = 0; j < H; j++) {
                double ig = ai[j], fg = ai[H + j], gg = ai[2 * H + j], og = ai[3 * H + j], tc = tcv[j];
                double dhj = dht[j] + dhn[j];
                double dcj = dcn[j] + dhj * og * (1.0 - tc * tc);
                dzi[j] = dcj * gg * ig * (1.0 - ig);
                dzi[H + j] = dcj * (cp ? cp[j] : 0.0) * fg * (1.0 - fg);
                dzi[2 * H + j] = dcj * ig * (1.0 - gg * gg);
                dzi[3 * H + j] = dhj * tc * og * (1.0 - og);
                dcn[j] = dcj * fg;
            }
            for (int j = 0; j < G; j++)
                gb[j] += dzi[j];
            lrow[nl++] = i;
        }
        if (nl == 0)
            continue;
        const double *xl = xh;
        if (nl < r) { /* gather the live rows' inputs */
            for (int j = 0; j < nl; j++)
                memcpy(xhg + (size_t)j * K, xh + (size_t)lrow[j] * K, (size_t)K * sizeof(double));
            xl = xhg;
        }
        /* gW (4H, K) += dz^T (4H, nl) @ xh (nl, K) */
        cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, G, K, nl, 1.0, dz, G, xl, K, 1.0, gW, K);
        if (t == 0)
            break;
        /* dxh (nl, K) = dz (nl, 4H) @ W (4H, K); its last H columns flow to step t-1 */
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, nl, K, G, 1.0, dz, G, W, K, 0.0, dxh, K);
        for (int j = 0; j < nl; j++)
            memcpy(dh_next + (size_t)lrow[j] * H, dxh + (size_t)j * K + NIN, (size_t)H * sizeof(double));
    }
    return loss;
}

/* seqs' indices in sc, longest first (by seq_steps), equal lengths by
 * position; NULL when out of memory. */
static int *longest_first(const TrainSeq *const *seqs, int nseqs, TrainScratch *sc)
{
    if ((size_t)nseqs > sc->keys_cap) {
        uint64_t *k = malloc((size_t)nseqs * (sizeof(uint64_t) + sizeof(int)));
        if (!k)
            return NULL;
        free(sc->keys);
        sc->keys = k;
        sc->keys_cap = (size_t)nseqs;
    }
    /* (INT_MAX - steps, i) ascending */
    uint64_t *key = sc->keys;
    int *idx = (int *)(key + nseqs);
    for (int i = 0; i < nseqs; i++)
        key[i] = (uint64_t)(INT_MAX - seq_steps(seqs[i])) << 32 | (uint32_t)i;
    qsort(key, (size_t)nseqs, sizeof key[0], cmp_u64);
    for (int i = 0; i < nseqs; i++)
        idx[i] = (int)(key[i] & 0xffffffffu);
    return idx;
}

/* Runs the forward of the next group of the sorted idx from *g, as many
 * sequences as fit in BATCH_ROWS steps and GROUP_SEQS sequences, into
 * grp; moves *g past it. 1: grp is ready; 0: the group has no step (every
 * later one neither); -ENOMEM. */
static int next_group(Group *grp, const double *theta, int H, const TrainSeq *const *seqs, const int *idx, int nseqs,
                      int *g, TrainScratch *sc)
{
    const int T = seq_steps(seqs[idx[*g]]);
    size_t rows = (size_t)T;
    int e = *g + 1;
    while (e < nseqs && e - *g < GROUP_SEQS && rows + (size_t)seq_steps(seqs[idx[e]]) <= BATCH_ROWS)
        rows += (size_t)seq_steps(seqs[idx[e++]]);
    int first = *g;
    *g = e;
    if (T == 0)
        return 0;
    if (scratch_reserve(sc, group_doubles(H, e - first, rows, T)))
        return -ENOMEM;
    group_forward(grp, theta, H, seqs, idx + first, e - first, rows, sc->buf);
    return 1;
}

/* Runs the forward of every group of seqs (longest first) and hands each
 * to fn. 0 or -ENOMEM. */
static int each_group(const double *theta, int H, const TrainSeq *const *seqs, int nseqs, TrainScratch *sc,
                      void (*fn)(Group *grp, void *arg), void *arg)
{
    if (nseqs <= 0)
        return 0;
    const int *idx = longest_first(seqs, nseqs, sc);
    if (!idx)
        return -ENOMEM;
    for (int g = 0; g < nseqs;) {
        Group grp;
        int rc = next_group(&grp, theta, H, seqs, idx, nseqs, &g, sc);
        if (rc <= 0)
            return rc; /* 0: no steps left */
        fn(&grp, arg);
    }
    return 0;
}

typedef struct LossArgs {
    const double *theta;
    int H, bptt;
    bool hybrid;
    const TrainLoss *tl;
    double *grad, *per_seq, loss;
} LossArgs;

static void group_loss_fn(Group *grp, void *arg)
{
    LossArgs *a = arg;
    a->loss += group_loss(grp, a->theta, a->H, a->hybrid, a->bptt, a->tl, a->grad, a->per_seq);
}

int trainer_batch_loss(const double *theta, int H, const TrainSeq *const *seqs, int nseqs, bool hybrid, int bptt,
                       const TrainLoss *tl, double *grad, double *per_seq, double *loss, TrainScratch *sc)
{
    if (per_seq)
        for (int i = 0; i < nseqs; i++)
            per_seq[i] = 0.0;
    LossArgs a = {.theta = theta, .H = H, .bptt = bptt, .hybrid = hybrid, .tl = tl, .grad = grad, .per_seq = per_seq};
    int rc = each_group(theta, H, seqs, nseqs, sc, group_loss_fn, &a);
    *loss = a.loss;
    return rc;
}

typedef struct StateArgs {
    int H;
    TrainStateFn fn;
    void *arg;
} StateArgs;

static void group_states_fn(Group *grp, void *arg)
{
    StateArgs *a = arg;
    for (int i = 0; i < grp->m; i++) {
        const TrainSeq *s = grp->seqs[grp->idx[i]];
        for (int k = 0; k < s->ncuts; k++)
            a->fn(a->arg, grp->idx[i], k, grp->HH + (grp->off[s->cuts[k].t] + (size_t)i) * a->H);
    }
}

int trainer_batch_states(const double *theta, int H, const TrainSeq *const *seqs, int nseqs, TrainStateFn fn,
                         void *arg, TrainScratch *sc)
{
    StateArgs a = {.H = H, .fn = fn, .arg = arg};
    return each_group(theta, H, seqs, nseqs, sc, group_states_fn, &a);
}

double trainer_sequence_loss(const double *theta, int H, const double *x, int n, const TrainCut *cuts, int ncuts,
                             bool hybrid, int bptt, const TrainLoss *tl, double *grad)
{
    TrainSeq s = {.x = (double *)x, .n = n, .cuts = (TrainCut *)cuts, .ncuts = ncuts};
    const TrainSeq *one = &s;
    TrainScratch sc = {0};
    double l;
    int rc = trainer_batch_loss(theta, H, &one, 1, hybrid, bptt, tl, grad, NULL, &l, &sc);
    trainer_scratch_free(&sc);
    return rc ? NAN : l;
}
