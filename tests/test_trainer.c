/* Gradient checks: the analytic gradients of the ZILN loss and of the LSTM
 * through time (with the head on several cut points) against central finite
 * differences, in double precision. */
#include <stdlib.h>
#include <string.h>

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

static void test_ziln_gradient(void)
{
    double ys[] = {0.0, 0.5, 12.0, 300.0};
    for (int k = 0; k < 4; k++) {
        for (int rep = 0; rep < 20; rep++) {
            double o[3] = {urand() * 2, urand() * 3, urand() * 2}, d[3];
            double a0 = urand(), a1 = urand() * 2;
            trainer_ziln_loss(o, a0, a1, ys[k], d);
            for (size_t j = 0; j < 3; j++) {
                double h = 1e-6, op[3], om[3];
                memcpy(op, o, sizeof op);
                memcpy(om, o, sizeof om);
                op[j] += h;
                om[j] -= h;
                double num = (trainer_ziln_loss(op, a0, a1, ys[k], NULL) - trainer_ziln_loss(om, a0, a1, ys[k], NULL)) /
                             (2 * h);
                check_rel(d[j], num, 1e-6, "ziln", j);
            }
        }
    }
    /* the loss is the ZILN negative log-likelihood: y = 0 costs -log(1-p) */
    double o[3] = {0.3, 0, 0};
    ASSERT_NEAR(trainer_ziln_loss(o, 0.0, 0.0, 0.0, NULL), -log(1.0 - 1.0 / (1.0 + exp(-0.3))), 1e-12);
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
    trainer_sequence_loss(theta, H, x, n, cuts, 3, true, 0, grad);
    double worst = 0;
    for (size_t i = 0; i < P; i++) {
        double keep = theta[i], h = 1e-6;
        theta[i] = keep + h;
        double lp = trainer_sequence_loss(theta, H, x, n, cuts, 3, true, 0, NULL);
        theta[i] = keep - h;
        double lm = trainer_sequence_loss(theta, H, x, n, cuts, 3, true, 0, NULL);
        theta[i] = keep;
        double num = (lp - lm) / (2 * h);
        check_rel(grad[i], num, 1e-4, "bptt", i);
        double rel = fabs(grad[i] - num) / fmax(fabs(grad[i]) + fabs(num), 1e-7);
        worst = fmax(worst, rel);
    }
    printf("BPTT gradient check: %zu parameters, worst relative error %.2e\n", P, worst);
    /* truncated BPTT changes the gradient of early steps only */
    double *gt = calloc(P, sizeof(double));
    trainer_sequence_loss(theta, H, x, n, cuts, 3, true, 2, gt);
    size_t hb = P - 3;
    for (size_t j = 0; j < 3; j++)
        ASSERT_NEAR(gt[hb + j], grad[hb + j], 1e-12); /* head bias: no recurrence involved */
    free(gt);
    free(theta);
    free(grad);
}

/* The head's inputs at the cut (e: recency, tenure, purchases, spend, the
 * days since the last browse, cart and purchase, the fallback's two): for
 * both variants, the gradient of every head weight matches finite
 * differences; the LSTM-only head's weights on the fallback's two inputs get
 * none (it sees them as 0), its weights on the time-since inputs do. */
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
        trainer_sequence_loss(theta, H, x, n, cuts, 2, hybrid, 0, grad);
        for (int r = 0; r < 3; r++)
            for (int j = H; j < U; j++) {
                size_t i = hw0 + (size_t)r * (size_t)U + (size_t)j;
                double keep = theta[i], h = 1e-6;
                theta[i] = keep + h;
                double lp = trainer_sequence_loss(theta, H, x, n, cuts, 2, hybrid, 0, NULL);
                theta[i] = keep - h;
                double lm = trainer_sequence_loss(theta, H, x, n, cuts, 2, hybrid, 0, NULL);
                theta[i] = keep;
                check_rel(grad[i], (lp - lm) / (2 * h), 1e-5, hybrid ? "head input (hybrid)" : "head input", i);
                int e = j - H;
                if (!hybrid && e >= HEAD_EXTRA_SHOPPER)
                    ASSERT_NEAR(grad[i], 0.0, 0);
                if (e >= 4 && e < HEAD_EXTRA_SHOPPER)
                    ASSERT(fabs(grad[i]) > 1e-6); /* the time-since inputs reach the loss */
            }
    }
    free(theta);
    free(grad);
}

int main(void)
{
    test_ziln_gradient();
    test_lstm_bptt_gradient();
    test_head_input_gradient();
    TEST_DONE("test_trainer");
}
