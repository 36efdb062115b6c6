/* BG/NBD + Gamma-Gamma: 2F1 and the expectations match independently computed
 * values; with --cdnow-fit PATH (its own meson test, `bgnbd-cdnow`), the fitter
 * reproduces the published CDNOW parameters, and without the file that test
 * is skipped (exit 77). */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "bgnbd.h"
#include "bgnbd_reference.h"
#include "cdnow.h"
#include "refit_data.h"
#include "test_util.h"

static void test_hyp2f1(void)
{
    /* Closed forms: 2F1(1,1;2;z) = -ln(1-z)/z; 2F1(a,b;b;z) = (1-z)^-a. */
    ASSERT_REL(hyp2f1(1, 1, 2, 0.5), -log(0.5) / 0.5, 1e-12);
    ASSERT_REL(hyp2f1(1, 1, 2, 0.95), -log(0.05) / 0.95, 1e-10);
    ASSERT_REL(hyp2f1(0.7, 2.3, 2.3, 0.8), pow(0.2, -0.7), 1e-10);
    /* 2F1(1/2,1/2;3/2;z^2) = asin(z)/z */
    ASSERT_REL(hyp2f1(0.5, 0.5, 1.5, 0.81), asin(0.9) / 0.9, 1e-10);
}

static void test_expectation(void)
{
    const BgnbdParams *p = &BGNBD_CDNOW_PRIOR;
    double e = bgnbd_expected(p, 39, 0, 0, 0);
    ASSERT_REL(e, ref_expected_new(p, 39), 2e-4);
    /* Published figure: E[X(39)] for a new CDNOW customer is about 1.47 repeat
     * purchase days over the 39-week holdout (FHL 2005, figure 3 scale). */
    ASSERT(e > 1.0 && e < 2.0);
    /* P(alive) is 1 for x = 0 and falls with silence for a repeat buyer. */
    ASSERT_NEAR(bgnbd_p_alive(p, 0, 0, 30), 1.0, 1e-15);
    ASSERT(bgnbd_p_alive(p, 4, 10, 40) < bgnbd_p_alive(p, 4, 35, 40));
    /* Conditional expectation decreases with silence, increases with x. */
    ASSERT(bgnbd_expected(p, 26, 4, 10, 40) < bgnbd_expected(p, 26, 4, 35, 40));
    ASSERT(bgnbd_expected(p, 26, 2, 35, 40) < bgnbd_expected(p, 26, 6, 35, 40));
    /* FHL 2005 (section 5): a customer with x=2, t_x=30.43, T=38.86 expects
     * 1.226 transactions in the next 39 weeks. */
    ASSERT_NEAR(bgnbd_expected(p, 39, 2, 30.43, 38.86), 1.226, 0.005);
    /* Gamma-Gamma: a shrunk mean between the shopper's own and the population's. */
    const GammaGammaParams *g = &GG_CDNOW_PRIOR;
    double pop = gg_expected_value(g, 0, 0);
    ASSERT_REL(pop, 6.25 * 15.44 / 2.74, 1e-12);
    /* P(any purchase in 26 weeks) for a new shopper, from the closed form */
    ASSERT_REL(1.0 - bgnbd_p_none(p, 26, 0, 0, 0), ref_p_active_new(p, 26), 1e-9);
    double own = gg_expected_value(g, 5, 100);
    ASSERT(own < 100 && own > pop);
}

static void test_fit_cdnow(const char *path)
{
    static CustomerSummary s[4000];
    int64_t cal_end = time_days_from_civil(1997, 9, 30);
    int n = cdnow_summaries(path, cal_end, s, 4000);
    if (n < 0)
        TEST_SKIP("%s not found (the CDNOW sample lives in ../shared)", path);
    ASSERT(n == 2357);
    BgnbdParams bp = {1, 1, 1, 1};
    ASSERT(bgnbd_fit(s, (size_t)n, &bp) == 0);
    ASSERT_REL(bp.r, 0.2426, 0.0015);
    ASSERT_REL(bp.alpha, 4.4136, 0.0015);
    ASSERT_REL(bp.a, 0.7929, 0.0015);
    ASSERT_REL(bp.b, 2.4259, 0.0015);
    GammaGammaParams gp = {1, 1, 1};
    size_t repeaters = 0;
    ASSERT(gg_fit(s, (size_t)n, &gp, &repeaters) == 0);
    ASSERT(repeaters == 946);
    ASSERT_REL(gp.p, 6.25, 0.005);
    ASSERT_REL(gp.q, 3.74, 0.005);
    ASSERT_REL(gp.v, 15.44, 0.005);
    printf("fit: r=%.4f alpha=%.4f a=%.4f b=%.4f p=%.3f q=%.3f v=%.3f (%zu repeat buyers)\n", bp.r, bp.alpha,
           bp.a, bp.b, gp.p, gp.q, gp.v, repeaters);
}

/* A population with no visible dropout: every repeat buyer bought at a steady
 * rate right up to the end. The likelihood then improves without end as a
 * and b (and Gamma-Gamma's q, v) grow; the fit must stop inside its bound
 * (1e7) with finite parameters, and predict the steady buyers' own rate
 * rather than an absurd value. */
static void test_fit_without_dropout(void)
{
    static CustomerSummary s[600];
    for (int i = 0; i < 600; i++) {
        double T = 14.0 + i % 9;                           /* weeks since the first purchase */
        double x = i % 3 == 0 ? 0 : (i % 3) * 1.0;         /* repeat purchases */
        s[i] = (CustomerSummary){.x = x, .t_x = x > 0 ? T - (i % 4) * 0.3 : 0, .T = T, .m = x > 0 ? 15 + i % 7 : 0};
    }
    BgnbdParams bp = {1, 1, 1, 1};
    /* a shutdown stops a fit at once and leaves the parameters as they were */
    atomic_bool stop = true;
    ASSERT(bgnbd_fit_cancel(s, 600, &bp, &stop) == -ECANCELED);
    ASSERT(bp.r == 1 && bp.alpha == 1 && bp.a == 1 && bp.b == 1);
    GammaGammaParams gq = {1, 1, 1};
    ASSERT(gg_fit_cancel(s, 600, &gq, NULL, &stop) == -ECANCELED && gq.p == 1 && gq.q == 1 && gq.v == 1);
    ASSERT(bgnbd_fit(s, 600, &bp) == 0);
    GammaGammaParams gp = {1, 1, 1};
    size_t repeaters = 0;
    ASSERT(gg_fit(s, 600, &gp, &repeaters) == 0);
    ASSERT(repeaters == 400);
    const double lo = 1e-7 * 0.999, hi = 1e7 * 1.001;
    ASSERT(bp.r > lo && bp.alpha > lo && bp.a > lo && bp.b > lo);
    ASSERT(bp.r < hi && bp.alpha < hi && bp.a < hi && bp.b < hi);
    ASSERT(gp.p < hi && gp.q < hi && gp.v < hi);
    /* A buyer with 2 repeats in 20 weeks, the last just now, expects about
     * the same rate ahead: between 0.5 and 2 purchases in the next 20 weeks. */
    FallbackOutput out;
    CustomerSummary steady = {.x = 2, .t_x = 20, .T = 20, .m = 18};
    fallback_predict(&bp, &gp, &steady, 20, &out);
    ASSERT(out.expected_purchases > 0.5 && out.expected_purchases < 2.0);
    ASSERT(out.value > 15 && out.value < 22); /* within the spends seen */
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* The refit's sample (refit_data.h): of 200,000 customers added in a
 * scrambled order, exactly the 500 with the smallest keys are kept, each
 * with its own summary; with room for all, all are kept. */
static void test_summary_sample(void)
{
    enum { N = 200000, CAP = 500 };
    uint64_t *all = malloc(N * sizeof *all);
    ASSERT(all != NULL);
    SummarySample ss, every;
    ASSERT(summary_sample_init(&ss, CAP) == 0);
    ASSERT(summary_sample_init(&every, N) == 0);
    uint64_t z = 0x9e3779b97f4a7c15ull;
    for (int i = 0; i < N; i++) {
        z ^= z << 13, z ^= z >> 7, z ^= z << 17; /* xorshift: distinct, scrambled */
        all[i] = z;
        CustomerSummary cs = {.x = (double)(z % 1000003), .t_x = 1, .T = 2, .m = 3};
        summary_sample_add(&ss, &cs, z);
        summary_sample_add(&every, &cs, z);
    }
    ASSERT(ss.total == N && ss.n == CAP);
    ASSERT(every.total == N && every.n == N);
    qsort(all, N, sizeof *all, cmp_u64);
    uint64_t *kept = malloc(CAP * sizeof *kept);
    ASSERT(kept != NULL);
    for (size_t i = 0; i < ss.n; i++) {
        ASSERT(ss.arr[i].x == (double)(ss.keys[i] % 1000003)); /* its own summary */
        kept[i] = ss.keys[i];
    }
    qsort(kept, CAP, sizeof *kept, cmp_u64);
    for (int i = 0; i < CAP; i++)
        ASSERT(kept[i] == all[i]);
    summary_sample_free(&ss);
    summary_sample_free(&every);
    free(kept);
    free(all);
}

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "--cdnow-fit") == 0) {
        test_fit_cdnow(argv[2]);
        TEST_DONE("test_bgnbd --cdnow-fit");
    }
    test_hyp2f1();
    test_expectation();
    test_fit_without_dropout();
    test_summary_sample();
    TEST_DONE("test_bgnbd");
}
