/* Gradient checks: the analytic gradients of the ZILN loss (with and
 * without the Poisson term on the mean, trainer_head_loss) and of the LSTM
 * through time (with the head on several cut points) against central finite
 * differences, in double precision; a batch of sequences against the same
 * sequences one at a time. */
#include <stdlib.h>
#include <string.h>

#include "head.h"
#include "test_util.h"
#include "trainer.h"

static uint64_t rs = 88172645463325252ull;
static double urand(void) /* uniform in (-1, 1) */
{
    rs ^= rs << 13;
    rs ^= rs >> 7;
    rs ^= rs << 17;
    return (double)(rs >> 11) / 4503599627370496.0 - 1.0;
}

/* Central differences with h = 1e-6 on a loss of order 10 carry a
 * rounding error of about 1e-16 * 10 / 1e-6 = 1e-9: differences below
 * FD_NOISE are the finite difference's, not the gradient's. */
#define FD_NOISE 2e-9

static void check_rel(double analytic, double numeric, double tol, const char *what, size_t i)
{
    double denom = fmax(fabs(analytic) + fabs(numeric), 1e-7);
    if (fabs(analytic - numeric) > FD_NOISE && fabs(analytic - numeric) / denom > tol) {
        fprintf(stderr, "%s[%zu]: analytic %.10g, finite difference %.10g\n", what, i, analytic, numeric);
        ASSERT(0);
    }
    test_checks++;
}

/* The loss of pre-activations z (3) under whatever arg holds. */
typedef double (*HeadLossFn)(const double *z, const void *arg);

/* d (3), the analytic gradient at z, against central differences of fn. */
static void check_head_gradient(HeadLossFn fn, const void *arg, const double *z, const double *d, const char *what)
{
    for (size_t j = 0; j < 3; j++) {
        double h = 1e-6, zp[3], zm[3];
        memcpy(zp, z, sizeof zp);
        memcpy(zm, z, sizeof zm);
        zp[j] += h;
        zm[j] -= h;
        check_rel(d[j], (fn(zp, arg) - fn(zm, arg)) / (2 * h), 1e-6, what, j);
    }
}

typedef struct ZilnArg {
    double a0, a1, y;
} ZilnArg;

static double ziln_at(const double *o, const void *arg)
{
    const ZilnArg *a = arg;
    return trainer_ziln_loss(o, a->a0, a->a1, a->y, NULL);
}

typedef struct HeadArg {
    double y;
    const TrainLoss *tl;
} HeadArg;

static double head_at(const double *z, const void *arg)
{
    const HeadArg *a = arg;
    return trainer_head_loss(z, a->y, a->tl, NULL);
}

static void test_ziln_gradient(void)
{
    double ys[] = {0.0, 0.5, 12.0, 300.0};
    for (int k = 0; k < 4; k++) {
        for (int rep = 0; rep < 20; rep++) {
            double o[3] = {urand() * 2, urand() * 3, urand() * 2}, d[3];
            const ZilnArg a = {.a0 = urand(), .a1 = urand() * 2, .y = ys[k]};
            trainer_ziln_loss(o, a.a0, a.a1, a.y, d);
            check_head_gradient(ziln_at, &a, o, d, "ziln");
        }
    }
    /* the loss is the ZILN negative log-likelihood: y = 0 costs -log(1-p) */
    double o[3] = {0.3, 0, 0};
    ASSERT_NEAR(trainer_ziln_loss(o, 0.0, 0.0, 0.0, NULL), -log(1.0 - 1.0 / (1.0 + exp(-0.3))), 1e-12);
}

/* The head's training loss with the Poisson term on the mean: its gradient
 * against finite differences, below and above the cap on mu + sigma^2/2
 * (the log of the mean given a purchase); the term's
 * value is w (m - y log m) / scale for the ZILN mean m; with no TrainLoss
 * or weight 0 the loss is the ZILN likelihood alone. Over a grid of mean
 * parameters the term alone is lowest where m equals y (the mean of the
 * labels, not their typical log: what makes the total come out right). */
static void test_head_loss(void)
{
    const TrainLoss tl = {.mean_weight = 3.0, .mean_scale = 7.0, .log_cond_mean_cap = 2.0};
    double ys[] = {0.0, 0.5, 12.0, 300.0};
    int capped = 0;
    for (int k = 0; k < 4; k++)
        for (int rep = 0; rep < 40; rep++) {
            double z[3] = {urand() * 2, urand() * 3, urand() * 2}, d[3];
            const HeadArg a = {.y = ys[k], .tl = &tl};
            trainer_head_loss(z, a.y, a.tl, d);
            double sg = log1p(exp(z[2])) + HEAD_SIGMA_MIN;
            capped += z[1] + 0.5 * sg * sg > tl.log_cond_mean_cap;
            check_head_gradient(head_at, &a, z, d, "head loss");
        }
    ASSERT(capped > 10); /* both sides of the cap were checked */
    double z[3] = {0.4, 1.2, -0.3}, y = 5.0;
    ZilnParams zp = head_ziln(z, &HEAD_CALIB_NONE);
    double m = ziln_mean(&zp);
    ASSERT_NEAR(trainer_head_loss(z, y, &tl, NULL) - trainer_ziln_loss(z, 0, 0, y, NULL), 3.0 * (m - y * log(m)) / 7.0,
                1e-12);
    const TrainLoss off = {.mean_weight = 0.0, .mean_scale = 7.0, .log_cond_mean_cap = 2.0};
    ASSERT(trainer_head_loss(z, y, NULL, NULL) == trainer_ziln_loss(z, 0, 0, y, NULL));
    ASSERT(trainer_head_loss(z, y, &off, NULL) == trainer_ziln_loss(z, 0, 0, y, NULL));
    /* a negative label counts as no spend in both parts */
    ASSERT(trainer_head_loss(z, -3.0, &tl, NULL) == trainer_head_loss(z, 0.0, &tl, NULL));
    /* the term's minimum over mu (p and sigma fixed) is at m = y */
    const TrainLoss big = {.mean_weight = 1.0, .mean_scale = 1.0, .log_cond_mean_cap = 50.0};
    double best = INFINITY, best_m = 0;
    for (int i = 0; i <= 4000; i++) {
        z[1] = -2.0 + i * 0.001;
        double l = trainer_head_loss(z, y, &big, NULL) - trainer_ziln_loss(z, 0, 0, y, NULL);
        if (l < best) {
            best = l;
            zp = head_ziln(z, &HEAD_CALIB_NONE);
            best_m = ziln_mean(&zp);
        }
    }
    ASSERT_NEAR(best_m, y, 0.01);
}

static void test_lstm_bptt_gradient(void)
{
    const int H = 5, n = 7;
    size_t P = trainer_param_count(H);
    double *theta = malloc(P * sizeof(double)), *grad = calloc(P, sizeof(double));
    double x[7 * FEATURE_DIM];
    for (size_t i = 0; i < P; i++)
        theta[i] = urand() * 0.5;
    for (int i = 0; i < n * FEATURE_DIM; i++)
        x[i] = urand();
    TrainCut cuts[3];
    int ts[3] = {1, 4, 6};
    double ys[3] = {0.0, 20.0, 3.5};
    for (int k = 0; k < 3; k++) {
        memset(&cuts[k], 0, sizeof cuts[k]);
        cuts[k].t = ts[k];
        cuts[k].y = ys[k];
        cuts[k].a0 = urand();
        cuts[k].a1 = urand();
        for (int j = 0; j < HEAD_EXTRA; j++)
            cuts[k].e[j] = urand();
    }
    /* with the Poisson term on the mean: its gradient goes through the head
     * into the recurrence like the likelihood's */
    const TrainLoss tl = {.mean_weight = 2.0, .mean_scale = 8.0, .log_cond_mean_cap = 30.0};
    trainer_sequence_loss(theta, H, x, n, cuts, 3, true, 0, &tl, grad);
    double worst = 0;
    for (size_t i = 0; i < P; i++) {
        double keep = theta[i], h = 1e-6;
        theta[i] = keep + h;
        double lp = trainer_sequence_loss(theta, H, x, n, cuts, 3, true, 0, &tl, NULL);
        theta[i] = keep - h;
        double lm = trainer_sequence_loss(theta, H, x, n, cuts, 3, true, 0, &tl, NULL);
        theta[i] = keep;
        double num = (lp - lm) / (2 * h);
        check_rel(grad[i], num, 1e-4, "bptt", i);
        double rel = fabs(grad[i] - num) / fmax(fabs(grad[i]) + fabs(num), 1e-7);
        worst = fmax(worst, rel);
    }
    printf("BPTT gradient check: %zu parameters, worst relative error %.2e\n", P, worst);
    /* truncated BPTT changes the gradient of early steps only */
    double *gt = calloc(P, sizeof(double));
    trainer_sequence_loss(theta, H, x, n, cuts, 3, true, 2, &tl, gt);
    size_t hb = P - 3;
    for (size_t j = 0; j < 3; j++)
        ASSERT_NEAR(gt[hb + j], grad[hb + j], 1e-12); /* head bias: no recurrence involved */
    free(gt);
    free(theta);
    free(grad);
}

/* The head's inputs at the cut (e: recency, tenure, purchases, spend, the
 * days since the last browse, cart and purchase, the silence hinges, the
 * time of year at the cut, the fallback's two, the time of year times the
 * fallback's p): for both variants, the gradient of every head weight
 * matches finite differences; the LSTM-only head's weights on the four
 * inputs from the fallback get none (it sees them as 0), its weights on
 * the time-since, hinge and time-of-year inputs do. */
static void test_head_input_gradient(void)
{
    const int H = 4, n = 5, U = H + HEAD_EXTRA;
    size_t P = trainer_param_count(H), hw0 = P - 3 - 3u * (size_t)U; /* head_w (3, U) then head_b (3,) */
    double *theta = malloc(P * sizeof(double)), *grad = malloc(P * sizeof(double));
    double x[5 * FEATURE_DIM];
    for (size_t i = 0; i < P; i++)
        theta[i] = urand() * 0.5;
    for (int i = 0; i < n * FEATURE_DIM; i++)
        x[i] = urand();
    TrainCut cuts[2];
    for (int k = 0; k < 2; k++) {
        memset(&cuts[k], 0, sizeof cuts[k]);
        cuts[k].t = 2 + 2 * k;
        cuts[k].y = k ? 12.0 : 0.0;
        cuts[k].a0 = urand();
        cuts[k].a1 = urand();
        for (int j = 0; j < HEAD_EXTRA; j++)
            cuts[k].e[j] = 0.5 + urand();
    }
    for (int hybrid = 0; hybrid < 2; hybrid++) {
        memset(grad, 0, P * sizeof(double));
        trainer_sequence_loss(theta, H, x, n, cuts, 2, hybrid, 0, NULL, grad);
        for (int r = 0; r < 3; r++)
            for (int j = H; j < U; j++) {
                size_t i = hw0 + (size_t)r * (size_t)U + (size_t)j;
                double keep = theta[i], h = 1e-6;
                theta[i] = keep + h;
                double lp = trainer_sequence_loss(theta, H, x, n, cuts, 2, hybrid, 0, NULL, NULL);
                theta[i] = keep - h;
                double lm = trainer_sequence_loss(theta, H, x, n, cuts, 2, hybrid, 0, NULL, NULL);
                theta[i] = keep;
                check_rel(grad[i], (lp - lm) / (2 * h), 1e-5, hybrid ? "head input (hybrid)" : "head input", i);
                int e = j - H;
                if (!hybrid && e >= HEAD_EXTRA_SHOPPER)
                    ASSERT_NEAR(grad[i], 0.0, 0);
                if (e >= 4 && e < HEAD_EXTRA_SHOPPER)
                    ASSERT(fabs(grad[i]) > 1e-6); /* the time-since and time-of-year inputs reach the loss */
            }
    }
    free(theta);
    free(grad);
}

/* The loss and gradient of one sequence, step by step with plain loops:
 * the reference trainer_batch_loss is checked against. The gradient is
 * added into grad; truncation cuts the carried gradient every bptt steps
 * counted from the sequence's end (docs/MODEL.md, "Fit"). */
static double ref_sequence_loss(const double *theta, int H, const TrainSeq *s, bool hybrid, int bptt,
                                const TrainLoss *tl, double *grad)
{
    const int I = FEATURE_DIM, K = I + H, G = 4 * H, U = H + HEAD_EXTRA, n = s->n;
    const double *W = theta, *b = W + (size_t)G * K, *hw = b + G, *hb = hw + 3 * U;
    double *act = calloc((size_t)n * G, sizeof(double)), *cc = calloc((size_t)n * H, sizeof(double));
    double *hh = calloc((size_t)n * H, sizeof(double)), *dh = calloc((size_t)n * H, sizeof(double));
    double *dhn = calloc((size_t)H, sizeof(double)), *dcn = calloc((size_t)H, sizeof(double));
    double *xh = calloc((size_t)K, sizeof(double)), *dz = calloc((size_t)G, sizeof(double));
    for (int t = 0; t < n; t++) {
        for (int k = 0; k < K; k++)
            xh[k] = k < I ? s->x[(size_t)t * I + k] : t > 0 ? hh[(size_t)(t - 1) * H + k - I] : 0.0;
        double *a = act + (size_t)t * G;
        for (int g = 0; g < G; g++) {
            double z = b[g];
            for (int k = 0; k < K; k++)
                z += W[(size_t)g * K + k] * xh[k];
            a[g] = g >= 2 * H && g < 3 * H ? tanh(z) : 1.0 / (1.0 + exp(-z));
        }
        for (int j = 0; j < H; j++) {
            double cp = t > 0 ? cc[(size_t)(t - 1) * H + j] : 0.0;
            cc[(size_t)t * H + j] = a[H + j] * cp + a[j] * a[2 * H + j];
            hh[(size_t)t * H + j] = a[3 * H + j] * tanh(cc[(size_t)t * H + j]);
        }
    }
    double loss = 0, *ghw = grad + (size_t)G * K + G, *ghb = ghw + 3 * U;
    for (int k = 0; k < s->ncuts; k++) {
        const TrainCut *ct = &s->cuts[k];
        double z[HEAD_OUT], d[HEAD_OUT], u[64];
        head_forward(z, u, hw, hb, H, hh + (size_t)ct->t * H, ct->e, ct->a0, ct->a1, hybrid);
        loss += trainer_head_loss(z, ct->y, tl, d);
        for (int q = 0; q < HEAD_OUT; q++) {
            ghb[q] += d[q];
            for (int j = 0; j < U; j++)
                ghw[q * U + j] += d[q] * u[j];
            for (int j = 0; j < H; j++)
                dh[(size_t)ct->t * H + j] += d[q] * hw[q * U + j];
        }
    }
    for (int t = n - 1; t >= 0; t--) {
        if (bptt > 0 && t < n - 1 && (n - 1 - t) % bptt == 0)
            for (int j = 0; j < H; j++)
                dhn[j] = dcn[j] = 0.0;
        const double *a = act + (size_t)t * G;
        for (int j = 0; j < H; j++) {
            double c = cc[(size_t)t * H + j], tc = tanh(c), cp = t > 0 ? cc[(size_t)(t - 1) * H + j] : 0.0;
            double dhj = dh[(size_t)t * H + j] + dhn[j], dcj = dcn[j] + dhj * a[3 * H + j] * (1 - tc * tc);
            dz[j] = dcj * a[2 * H + j] * a[j] * (1 - a[j]);
            dz[H + j] = dcj * cp * a[H + j] * (1 - a[H + j]);
            dz[2 * H + j] = dcj * a[j] * (1 - a[2 * H + j] * a[2 * H + j]);
            dz[3 * H + j] = dhj * tc * a[3 * H + j] * (1 - a[3 * H + j]);
            dcn[j] = dcj * a[H + j];
        }
        for (int k = 0; k < K; k++)
            xh[k] = k < I ? s->x[(size_t)t * I + k] : t > 0 ? hh[(size_t)(t - 1) * H + k - I] : 0.0;
        for (int g = 0; g < G; g++) {
            grad[(size_t)G * K + g] += dz[g];
            for (int k = 0; k < K; k++)
                grad[(size_t)g * K + k] += dz[g] * xh[k];
        }
        for (int j = 0; j < H; j++) {
            dhn[j] = 0;
            for (int g = 0; g < G; g++)
                dhn[j] += W[(size_t)g * K + I + j] * dz[g];
        }
    }
    free(act), free(cc), free(hh), free(dh), free(dhn), free(dcn), free(xh), free(dz);
    return loss;
}

/* A batch of sequences of different lengths gives the loss and gradient
 * of the plain reference above, summed over the sequences, and each
 * sequence's own loss in per_seq, for both heads, with and without
 * truncation. The batch has long sequences (longer than a BPTT chunk, with
 * steps after their last cut, chunks without a cut and two cuts at one
 * step), enough steps up to the last cuts for three groups of BATCH_ROWS
 * (trainer_batch.c), more short sequences than GROUP_SEQS, and one with
 * no cut. */
static void test_batch_equals_sequences(void)
{
    enum { NLONG = 19, NSHORT = 1100, NB = NLONG + NSHORT + 1 };
    const int H = 4;
    const int lens[NLONG] = {1, 3, 700, 7, 2, 1000, 33, 5, 1000, 900, 64, 1, 980, 17, 1000, 1024, 1000, 999, 1000};
    size_t P = trainer_param_count(H);
    double *theta = malloc(P * sizeof(double)), *g1 = calloc(P, sizeof(double)), *gb = calloc(P, sizeof(double));
    TrainSeq *seq = calloc(NB, sizeof *seq);
    const TrainSeq **ptr = calloc(NB, sizeof *ptr);
    double *one = calloc(NB, sizeof(double)), *per = calloc(NB, sizeof(double));
    int steps = 0; /* up to each sequence's last cut: what the groups hold */
    for (size_t i = 0; i < P; i++)
        theta[i] = urand() * 0.3;
    for (int s = 0; s < NB; s++) {
        int n = s < NLONG ? lens[s] : s < NLONG + NSHORT ? 1 + s % 6 : 9;
        seq[s].n = n;
        seq[s].x = malloc((size_t)n * FEATURE_DIM * sizeof(double));
        for (int i = 0; i < n * FEATURE_DIM; i++)
            seq[s].x[i] = urand();
        seq[s].ncuts = s == NB - 1 ? 0 : s >= NLONG ? (n < 2 ? n : 2) : n < 4 ? n : 4;
        seq[s].cuts = calloc((size_t)(seq[s].ncuts ? seq[s].ncuts : 1), sizeof(TrainCut));
        for (int k = 0; k < seq[s].ncuts; k++) {
            TrainCut *ct = &seq[s].cuts[k];
            /* long ones: cuts at 1/5, 2/5, 2/5 again and 4/5 of the way */
            ct->t = n < 4 || s >= NLONG ? k : (k + 1 - (k == 2)) * (n - 1) / 5;
            ct->y = k % 2 ? 10.0 * (1.0 + urand()) : 0.0;
            ct->a0 = urand();
            ct->a1 = urand();
            for (int j = 0; j < HEAD_EXTRA; j++)
                ct->e[j] = urand();
        }
        if (seq[s].ncuts)
            steps += seq[s].cuts[seq[s].ncuts - 1].t + 1;
        ptr[s] = &seq[s];
    }
    ASSERT(steps > 2 * 4096 && NSHORT > 1024);
    TrainScratch sc = {0};
    const TrainLoss tl = {.mean_weight = 8.0, .mean_scale = 10.0, .log_cond_mean_cap = 30.0};
    for (int variant = 0; variant < 6; variant++) { /* the last two: with the mean's term */
        bool hybrid = variant % 2 == 0;
        int bptt = variant < 2 || variant >= 4 ? 0 : 32;
        const TrainLoss *l = variant >= 4 ? &tl : NULL;
        memset(g1, 0, P * sizeof(double));
        memset(gb, 0, P * sizeof(double));
        double sum = 0, lb;
        for (int s = 0; s < NB; s++) {
            one[s] = ref_sequence_loss(theta, H, &seq[s], hybrid, bptt, l, g1);
            sum += one[s];
        }
        ASSERT(trainer_batch_loss(theta, H, ptr, NB, hybrid, bptt, l, gb, per, &lb, &sc) == 0);
        ASSERT_NEAR(lb, sum, 1e-9 * fabs(sum));
        for (int s = 0; s < NB; s++)
            ASSERT_NEAR(per[s], one[s], 1e-12 * fmax(fabs(one[s]), 1.0));
        ASSERT(per[NB - 1] == 0.0);
        double worst = 0;
        for (size_t i = 0; i < P; i++) {
            double rel = fabs(gb[i] - g1[i]) / fmax(fabs(g1[i]), 1e-9);
            worst = fmax(worst, rel);
            ASSERT(fabs(gb[i] - g1[i]) <= 1e-9 * fmax(fabs(g1[i]), 1e-3));
        }
        printf("batch of %d sequences (%d steps to their last cuts), %s head, bptt %d%s: loss %.6f, gradient worst "
               "relative difference %.1e\n", NB, steps, hybrid ? "hybrid" : "LSTM-only", bptt, l ? ", mean term" : "", lb,
               worst);
    }
    /* truncation must change the gradient of the recurrent weights */
    double *gt = calloc(P, sizeof(double)), l0, l32;
    memset(gb, 0, P * sizeof(double));
    ASSERT(trainer_batch_loss(theta, H, ptr, NB, true, 0, NULL, gb, NULL, &l0, &sc) == 0);
    ASSERT(trainer_batch_loss(theta, H, ptr, NB, true, 32, NULL, gt, NULL, &l32, &sc) == 0);
    ASSERT(l0 == l32); /* the loss does not depend on truncation */
    ASSERT(fabs(gt[FEATURE_DIM] - gb[FEATURE_DIM]) > 1e-12); /* W[0][I]: input gate on h[0] */
    trainer_scratch_free(&sc);
    for (int s = 0; s < NB; s++) {
        free(seq[s].x);
        free(seq[s].cuts);
    }
    free(seq), free(ptr), free(one), free(per), free(gt), free(theta), free(g1), free(gb);
}

int main(void)
{
    test_ziln_gradient();
    test_head_loss();
    test_lstm_bptt_gradient();
    test_head_input_gradient();
    test_batch_equals_sequences();
    TEST_DONE("test_trainer");
}
