/* Calibration by decile: pairs given in any order come out in ten
 * equal-count groups by prediction, lowest first, each with the mean
 * prediction and the mean outcome of exactly its pairs; fewer than ten
 * pairs give one group each; none gives no group. */
#include <stdlib.h>
#include <string.h>

#include "calibration.h"
#include "test_util.h"

/* 1000 pairs, predictions 1..1000 shuffled, each realising twice its
 * prediction but for the top 100, which realise nothing: deciles 1-9
 * are under-predicted by x2, the tenth over-predicted. */
static void test_deciles(void)
{
    enum { N = 1000 };
    static AdjPair p[N];
    for (int i = 0; i < N; i++) {
        double pred = 1.0 + (double)((i * 7919) % N); /* a permutation of 1..1000 */
        p[i] = (AdjPair){.pred = pred, .actual = pred > 900 ? 0.0 : 2 * pred};
    }
    Calibration c;
    ASSERT(calibration_compute(p, N, &c) == 0);
    ASSERT(c.pairs == N && c.ngroups == 10);
    for (int k = 0; k < 10; k++) {
        ASSERT(c.g[k].count == 100);
        ASSERT_NEAR(c.g[k].pred_min, 100.0 * k + 1, 1e-9);
        ASSERT_NEAR(c.g[k].pred_max, 100.0 * k + 100, 1e-9);
        ASSERT_NEAR(c.g[k].predicted, 100.0 * k + 50.5, 1e-9);
        ASSERT_NEAR(c.g[k].realised, k < 9 ? 2 * (100.0 * k + 50.5) : 0.0, 1e-9);
    }
    ASSERT_NEAR(c.predicted_total, N * (N + 1) / 2.0, 1e-6);
    ASSERT_NEAR(c.realised_total, 2 * (900 * 901 / 2.0), 1e-6);
    ASSERT(p[1].pred == 1.0 + 7919 % N); /* the caller's pairs are left as they were */
}

static void test_few_and_none(void)
{
    AdjPair p[3] = {{.pred = 5, .actual = 1}, {.pred = 1, .actual = 0}, {.pred = 3, .actual = 9}};
    Calibration c;
    ASSERT(calibration_compute(p, 3, &c) == 0);
    ASSERT(c.ngroups == 3 && c.pairs == 3);
    ASSERT(c.g[0].predicted == 1 && c.g[1].predicted == 3 && c.g[2].predicted == 5);
    ASSERT(c.g[0].realised == 0 && c.g[1].realised == 9 && c.g[2].realised == 1);
    ASSERT(calibration_compute(p, 0, &c) == 0);
    ASSERT(c.ngroups == 0 && c.pairs == 0);
}

int main(void)
{
    test_deciles();
    test_few_and_none();
    TEST_DONE("test_calibration");
}
