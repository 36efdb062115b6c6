/* The model's math: LSTM step against a plain reference loop, ZILN mean and
 * quantiles against closed forms, the event encoding, prediction's
 * dependence on silence, the head's calibration, Platt's fit, the cold
 * start, and the CRC-32 against its definition. (The model file:
 * tests/test_model_file.c.) */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bgnbd_reference.h"
#include "platt.h"
#include "encoding.h"
#include "hash.h"
#include "head.h"
#include "lstm.h"
#include "model.h"
#include "model_fixture.h"
#include "test_util.h"
#include "timeutil.h"
#include "util.h"
#include "ziln.h"

static double sig(double z) { return 1.0 / (1.0 + exp(-z)); }

/* Double-precision reference: the textbook equations, one gate at a time. */
static void lstm_reference(int I, int H, const float *w, const float *b, const float *x, double *h, double *c)
{
    double z[4 * LSTM_MAX_HIDDEN];
    for (int r = 0; r < 4 * H; r++) {
        double acc = b[r];
        for (int k = 0; k < I; k++)
            acc += (double)w[r * (I + H) + k] * x[k];
        for (int k = 0; k < H; k++)
            acc += (double)w[r * (I + H) + I + k] * h[k];
        z[r] = acc;
    }
    for (int j = 0; j < H; j++) {
        double i = sig(z[j]), f = sig(z[H + j]), g = tanh(z[2 * H + j]), o = sig(z[3 * H + j]);
        c[j] = f * c[j] + i * g;
        h[j] = o * tanh(c[j]);
    }
}

static void test_lstm_step(void)
{
    LstmWeights *net;
    ASSERT(lstm_weights_create(&net, 32, 7, 1) == 0);
    const int I = net->cfg.input, H = net->cfg.hidden;
    float h[32] = {0}, c[32] = {0}, x[FEATURE_DIM];
    double hr[32] = {0}, cr[32] = {0};
    float scratch[LSTM_MAX_INPUT + 5 * LSTM_MAX_HIDDEN];
    ASSERT(lstm_scratch_floats(&net->cfg) <= sizeof scratch / sizeof scratch[0]);
    uint64_t s = 12345;
    for (int step = 0; step < 50; step++) {
        for (int k = 0; k < I; k++) {
            s = s * 6364136223846793005ull + 1442695040888963407ull;
            x[k] = (float)((double)(s >> 11) / 9007199254740992.0 * 4.0 - 2.0);
        }
        lstm_step(&net->cfg, net->w, net->b, x, h, c, scratch);
        lstm_reference(I, H, net->w, net->b, x, hr, cr);
        for (int j = 0; j < H; j++) {
            ASSERT_NEAR(h[j], hr[j], 1e-5);
            ASSERT_NEAR(c[j], cr[j], 1e-5);
        }
    }
    lstm_weights_release(net);
}

static void test_ziln(void)
{
    ASSERT_NEAR(normal_quantile(0.975), 1.959963984540054, 1e-9);
    ASSERT_NEAR(normal_quantile(0.5), 0.0, 1e-12);
    ASSERT_NEAR(normal_quantile(0.1), -1.2815515655446004, 1e-9);
    ASSERT_NEAR(normal_quantile(1e-10), -6.361340902404056, 1e-7);
    for (double q = 0.001; q < 1.0; q += 0.0137)
        ASSERT_NEAR(normal_cdf(normal_quantile(q)), q, 1e-12);

    ZilnParams z = {0.4, 1.0, 0.5};
    ASSERT_NEAR(ziln_mean(&z), 0.4 * exp(1.0 + 0.125), 1e-12);
    /* P(spend = 0) = 0.6, so the 10% and 50% quantiles are 0 */
    ASSERT_NEAR(ziln_quantile(&z, 0.1), 0.0, 0);
    ASSERT_NEAR(ziln_quantile(&z, 0.5), 0.0, 0);
    /* q = 0.9 -> log-normal quantile at (0.9 - 0.6) / 0.4 = 0.75 */
    ASSERT_REL(ziln_quantile(&z, 0.9), exp(1.0 + 0.5 * 0.6744897501960817), 1e-9);
    ZilnParams all = {1.0, 2.0, 0.3};
    ASSERT_REL(ziln_quantile(&all, 0.5), exp(2.0), 1e-12); /* median of a log-normal */
    ZilnParams back = ziln_from_mean(12.5, 0.3, 0.8);
    ASSERT_REL(ziln_mean(&back), 12.5, 1e-12);
    ASSERT_NEAR(back.p, 0.3, 0);
}

static void test_encoding(void)
{
    int64_t monday = time_days_from_civil(2026, 11, 30) * 86400;
    Event ev = {.ts = monday, .value = 19.0, .quantity = 3, .type = EV_PURCHASE};
    EncodeContext ctx = {0};
    float x[FEATURE_DIM];
    encode_event(x, &ev, &ctx);
    for (int t = 0; t < EV_NTYPES; t++)
        ASSERT_NEAR(x[t], t == EV_PURCHASE ? 1.0 : 0.0, 0);
    ASSERT_NEAR(x[5], log(20.0), 1e-6);
    ASSERT_NEAR(x[6], log(4.0), 1e-6);
    ASSERT_NEAR(x[7], 0.0, 0);   /* no previous event */
    ASSERT_NEAR(x[8], 1.0, 0);   /* first event */
    ASSERT_NEAR(x[9], 0.0, 1e-6); /* Monday: phase 0 of the week */
    ASSERT_NEAR(x[10], 1.0, 1e-6);
    encode_context_advance(&ctx, &ev);
    Event view = {.ts = monday + 2 * 86400, .value = 5.0, .quantity = 1, .type = EV_VIEW};
    encode_event(x, &view, &ctx);
    ASSERT_NEAR(x[EV_VIEW], 1.0, 0);
    ASSERT_NEAR(x[5], 0.0, 0);            /* a view's value is ignored */
    ASSERT_NEAR(x[7], log(3.0), 1e-6);    /* two days since the purchase */
    ASSERT_NEAR(x[8], 0.0, 0);
    ASSERT_NEAR(x[13], log(2.0), 1e-6);   /* one event before */
    ASSERT_NEAR(x[14], log(2.0), 1e-6);   /* one purchase before */
    ASSERT_NEAR(x[15], log(3.0), 1e-6);   /* shopper is two days old */

    /* the head's time of year is as_of's, the same phase an event at
     * as_of gets: a prediction in November and one in May, six months
     * apart, see opposite seasons whatever the shopper did */
    ShopperAgg agg;
    shopper_agg_init(&agg);
    shopper_agg_apply(&agg, &ev);
    float e_nov[HEAD_EXTRA], e_may[HEAD_EXTRA];
    int64_t nov = time_days_from_civil(2024, 11, 15) * 86400, may = nov + (int64_t)(365.2425 / 2 * 86400);
    encode_head_extra(e_nov, &agg, NULL, nov, 1.0, 0.5, 0.25);
    encode_head_extra(e_may, &agg, NULL, may, 1.0, 0.5, 0.25);
    Event at_nov = {.ts = nov, .type = EV_VIEW};
    encode_event(x, &at_nov, &ctx);
    const int S = HEAD_EXTRA_SEASON;
    ASSERT_NEAR(e_nov[S], x[11], 1e-6);
    ASSERT_NEAR(e_nov[S + 1], x[12], 1e-6);
    ASSERT_NEAR(e_may[S], -e_nov[S], 1e-5);
    ASSERT_NEAR(e_may[S + 1], -e_nov[S + 1], 1e-5);
    ASSERT_NEAR(e_nov[HEAD_EXTRA_SHOPPER], 1.0, 0); /* then the fallback's two */
    ASSERT_NEAR(e_nov[HEAD_EXTRA_SHOPPER + 1], 0.5, 0);
    /* and the time of year times the fallback's p */
    ASSERT_NEAR(e_nov[HEAD_EXTRA_SEASON_BY_P], 0.25 * e_nov[S], 1e-7);
    ASSERT_NEAR(e_nov[HEAD_EXTRA_SEASON_BY_P + 1], 0.25 * e_nov[S + 1], 1e-7);
    ASSERT_NEAR(e_may[HEAD_EXTRA_SEASON_BY_P], -0.25 * e_nov[S], 1e-5);
    /* the silence hinges: log1p of the recency beyond 30 and 180 days, 0 before */
    const int Q = HEAD_EXTRA_SILENCE;
    float e[HEAD_EXTRA];
    encode_head_extra(e, &agg, NULL, agg.last_ts + 10 * 86400, 1.0, 0.5, 0.25);
    ASSERT(e[Q] == 0.0f && e[Q + 1] == 0.0f);
    encode_head_extra(e, &agg, NULL, agg.last_ts + 90 * 86400, 1.0, 0.5, 0.25);
    ASSERT_NEAR(e[Q], log(91.0) - log(31.0), 1e-6);
    ASSERT(e[Q + 1] == 0.0f);
    encode_head_extra(e, &agg, NULL, agg.last_ts + 400 * 86400, 1.0, 0.5, 0.25);
    ASSERT_NEAR(e[0], log(401.0), 1e-5);
    ASSERT_NEAR(e[Q], log(401.0) - log(31.0), 1e-5);
    ASSERT_NEAR(e[Q + 1], log(401.0) - log(181.0), 1e-5);
}

/* The head under a calibration: p = σ(p_scale z0 + p_offset), μ = z1 +
 * level_shift; none leaves z as it is. */
static void test_head_calibration(void)
{
    const double z[HEAD_OUT] = {0.3, 2.0, 0.1};
    const HeadCalib cal = {.level_shift = 0.2, .p_scale = 1.3, .p_offset = -0.4};
    ZilnParams c = head_ziln(z, &cal), none = head_ziln(z, &HEAD_CALIB_NONE);
    ASSERT_NEAR(c.p, 1.0 / (1.0 + exp(-(1.3 * 0.3 - 0.4))), 1e-15);
    ASSERT_NEAR(c.mu, 2.0 + 0.2, 1e-15);
    ASSERT_NEAR(c.sigma, log1p(exp(0.1)) + HEAD_SIGMA_MIN, 1e-15);
    ASSERT_NEAR(none.p, 1.0 / (1.0 + exp(-0.3)), 1e-15);
    ASSERT(none.mu == 2.0 && none.sigma == c.sigma);
}

static void test_prediction_decays_with_silence(void)
{
    LstmWeights *net;
    ShopperAgg agg;
    Model *m = fixture_model(&net, &agg);
    Prediction soon, later, cold;
    model_predict(m, NULL, &agg, NULL, agg.last_ts + 86400, &soon);
    model_predict(m, NULL, &agg, NULL, agg.last_ts + 200 * 86400, &later);
    model_predict(m, NULL, NULL, NULL, agg.last_ts, &cold);
    ASSERT(soon.ltv > later.ltv);
    ASSERT(soon.p_active > later.p_active);
    ASSERT(soon.p10 <= soon.p50 && soon.p50 <= soon.p90);
    ASSERT(!cold.from_network);
    /* Cold start: a shopper just acquired, over H = 182 days = 26 weeks:
     * expected repeat purchases (by quadrature, not the 2F1 series) times
     * the Gamma-Gamma population mean; P(active) from its closed form. */
    ASSERT_REL(cold.ltv, ref_expected_new(&BGNBD_CDNOW_PRIOR, 26.0) * ref_gg_population_mean(&GG_CDNOW_PRIOR), 2e-4);
    ASSERT_REL(cold.p_active, ref_p_active_new(&BGNBD_CDNOW_PRIOR, 26.0), 1e-9);
    ASSERT(cold.p10 <= cold.p50 && cold.p50 <= cold.p90);
    model_release(m);
    lstm_weights_release(net);
}

/* The CRC-32 that guards snapshots, log records and model files: the
 * standard check value, and the same result as the bit-at-a-time
 * definition for every length and alignment and when fed in pieces, so
 * files written by earlier builds still check. */
static uint32_t crc32_bitwise(const unsigned char *p, size_t n)
{
    uint32_t c = 0xffffffffu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++)
            c = (c & 1) ? 0xedb88320u ^ (c >> 1) : c >> 1;
    }
    return ~c;
}

static void test_crc32(void)
{
    ASSERT(crc32_update(0, "123456789", 9) == 0xcbf43926u);
    ASSERT(crc32_update(0, "", 0) == 0);
    unsigned char buf[300];
    uint64_t x = 0x9e3779b97f4a7c15ull;
    for (size_t i = 0; i < sizeof buf; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        buf[i] = (unsigned char)x;
    }
    for (size_t off = 0; off < 8; off++)
        for (size_t n = 0; n + off <= 290; n += 7) {
            uint32_t want = crc32_bitwise(buf + off, n);
            ASSERT(crc32_update(0, buf + off, n) == want);
            size_t cut = n / 3;
            ASSERT(crc32_update(crc32_update(0, buf + off, cut), buf + off + cut, n - cut) == want);
        }
}

/* A browser's events at day offsets (views, one cart when cart_day >= 0). */
static void browser(ShopperAgg *agg, RecentSummary *rs, int64_t t0, int views, int cart_day)
{
    shopper_agg_init(agg);
    recent_summary_init(rs);
    for (int k = 0; k < views; k++) {
        Event ev = {.ts = t0 + k * 86400, .quantity = 1, .type = EV_VIEW};
        shopper_agg_apply(agg, &ev);
        recent_summary_apply(rs, &ev);
    }
    if (cart_day >= 0) {
        Event ev = {.ts = t0 + cart_day * 86400, .quantity = 1, .type = EV_ADD_TO_CART};
        shopper_agg_apply(agg, &ev);
        recent_summary_apply(rs, &ev);
    }
}

/* Cold start from behaviour: without a fit a browser is worth at most a
 * one-time buyer known as long (and the textbook prior otherwise); with a
 * fit on cuts where carts and recent visits announce purchases, browsers
 * are ranked by what they did and a long silence costs. */
static void test_cold_start(void)
{
    const int H = 182;
    const int64_t t0 = time_days_from_civil(1997, 1, 1) * 86400, at = t0 + 300 * 86400;
    FallbackFit fit = {BGNBD_CDNOW_PRIOR, GG_CDNOW_PRIOR, 0, 0, 0, 0, {0}};
    ShopperAgg agg, once;
    RecentSummary rs;
    browser(&agg, &rs, t0, 3, -1);
    FallbackOutput prior, capped, buyer, fo;
    fit.cold.state = COLD_PRIOR;
    model_fallback(&fit, H, &agg, &rs, at, &prior);
    model_fallback(&fit, H, NULL, NULL, at, &fo);
    ASSERT_REL(prior.ltv, fo.ltv, 1e-12); /* the population prior */
    /* the prior is kept per thread for the last fit and horizon: another
     * fit or horizon gets its own, computed afresh */
    FallbackFit other = fit;
    other.bg.r *= 2;
    FallbackOutput direct, fo2, fo3;
    fallback_predict(&other.bg, &other.gg, NULL, H / 7.0, &direct);
    model_fallback(&other, H, NULL, NULL, at, &fo2);
    ASSERT_REL(fo2.ltv, direct.ltv, 1e-12);
    ASSERT(fabs(fo2.ltv - fo.ltv) > 0.01 * fo.ltv);
    fallback_predict(&fit.bg, &fit.gg, NULL, 2 * H / 7.0, &direct);
    model_fallback(&fit, 2 * H, NULL, NULL, at, &fo3);
    ASSERT_REL(fo3.ltv, direct.ltv, 1e-12);
    model_fallback(&fit, H, NULL, NULL, at, &fo3);
    ASSERT_REL(fo3.ltv, fo.ltv, 1e-12);
    fit.cold.state = COLD_CAPPED;
    model_fallback(&fit, H, &agg, &rs, at, &capped);
    shopper_agg_init(&once);
    Event p = {.ts = t0, .value = 20, .quantity = 1, .type = EV_PURCHASE};
    shopper_agg_apply(&once, &p);
    model_fallback(&fit, H, &once, NULL, at, &buyer);
    ASSERT(capped.ltv <= buyer.ltv * (1 + 1e-12)); /* no evidence: no more than a lapsed one-time buyer */
    ASSERT(capped.ltv < prior.ltv);

    /* examples: logit P(convert) = -3 + 2 (a cart) + 2 (a visit in the last
     * 30 days): 5% for neither, 27% for one; spend 50 */
    enum { N = 4000 };
    ColdExample *ex = calloc(N, sizeof *ex);
    ASSERT(ex != NULL);
    for (int i = 0; i < N; i++) {
        ShopperAgg a;
        RecentSummary r;
        int recent = i % 2, cart = (i / 2) % 2;
        browser(&a, &r, t0, 2 + i % 5, cart ? 1 : -1);
        int64_t c = recent ? t0 + 20 * 86400 : t0 + (60 + i % 300) * 86400;
        coldstart_features(ex[i].f, &a, &r, c);
        double u = (double)((uint32_t)i * 2654435761u % 1000u) / 1000.0; /* a fixed scramble of i */
        ex[i].y = u < 1.0 / (1.0 + exp(3.0 - 2.0 * cart - 2.0 * recent)) ? 50.0 : 0.0;
        ex[i].w = 1.0;
    }
    ASSERT(coldstart_fit(ex, 10, &fit.cold) == 0 && fit.cold.state == COLD_CAPPED); /* too few */
    ASSERT(coldstart_fit(ex, N, &fit.cold) == 0 && fit.cold.state == COLD_FITTED);
    ASSERT(fit.cold.examples == N && fit.cold.converted > 0);
    FallbackOutput carted, silent, fresh;
    browser(&agg, &rs, t0, 3, 1);
    model_fallback(&fit, H, &agg, &rs, t0 + 200 * 86400, &carted);
    browser(&agg, &rs, t0, 3, -1);
    model_fallback(&fit, H, &agg, &rs, t0 + 200 * 86400, &silent);
    model_fallback(&fit, H, &agg, &rs, t0 + 20 * 86400, &fresh);
    ASSERT(carted.p_active > 2 * silent.p_active);
    ASSERT(fresh.p_active > 2 * silent.p_active);
    ASSERT(silent.p_active > 0.01 && silent.p_active < 0.15);
    ASSERT(carted.ltv > silent.ltv && fresh.ltv > silent.ltv);
    ASSERT_REL(fresh.ltv / fresh.p_active, 50.0, 0.05); /* spend given any, for a fixed spend */
    free(ex);
}

/* A uniform draw in (0, 1). */
static double unit_draw(uint64_t *s)
{
    return ((double)(splitmix64(s) >> 11) + 0.5) * (1.0 / 9007199254740992.0);
}

/* Platt's calibration: outcomes drawn from σ(b z + a) give back a and b
 * within their sampling error, at the likelihood's maximum (where the
 * predicted buyers sum to the observed ones: what makes the level's total
 * exact after it); outcomes of one kind, or unrelated to z, are refused
 * and change nothing. */
static void test_platt(void)
{
    enum { N = 40000 };
    static double z[N], y[N];
    /* the last: far from the start (0, 1), where a full Newton step
     * overshoots and only the halved steps reach the maximum */
    const double truth[][2] = {{0.5, 1.4}, {0.0, 1.0}, {-1.0, 0.7}, {7.26, 2.5}};
    uint64_t s = 42;
    for (size_t t = 0; t < sizeof truth / sizeof truth[0]; t++) {
        for (int i = 0; i < N; i++) {
            z[i] = t < 3 ? 4.0 * unit_draw(&s) - 3.0 /* logits in (-3, 1): mostly unlikely buyers, as shoppers are */
                         : 3.6 * unit_draw(&s) - 3.15;
            y[i] = unit_draw(&s) < sigmoid(truth[t][1] * z[i] + truth[t][0]) ? 12.5 : 0.0;
        }
        double b = 0, a = 0;
        ASSERT(platt_fit(z, y, N, &b, &a) == 0);
        ASSERT_NEAR(a, truth[t][0], 0.1);
        ASSERT_NEAR(b, truth[t][1], 0.08);
        double ga = 0, gb = 0, buyers = 0;
        for (int i = 0; i < N; i++) {
            double r = (y[i] > 0) - sigmoid(b * z[i] + a);
            ga += r, gb += r * z[i], buyers += y[i] > 0;
        }
        ASSERT(fabs(ga) < 1e-6 * buyers && fabs(gb) < 1e-6 * buyers);
    }
    double b = 7, a = 7;
    for (int i = 0; i < N; i++)
        y[i] = 0.0;
    ASSERT(platt_fit(z, y, N, &b, &a) == -EDOM && b == 7 && a == 7);
    for (int i = 0; i < N; i++)
        y[i] = unit_draw(&s) < 0.1 ? 1.0 : 0.0; /* unrelated to z: a scale near 0 */
    ASSERT(platt_fit(z, y, N, &b, &a) == -EDOM && b == 7 && a == 7);
    ASSERT(platt_fit(z, y, 0, &b, &a) == -EDOM);
    /* a saturated p (logits near 12, compressed): the fit would need an
     * offset near -55, beyond what a model file may hold; refused */
    for (int i = 0; i < N; i++) {
        z[i] = 11.0 + 2.0 * unit_draw(&s);
        y[i] = unit_draw(&s) < sigmoid(4.5 * (z[i] - 12.0) - 1.0) ? 1.0 : 0.0;
    }
    b = a = 7;
    ASSERT(platt_fit(z, y, N, &b, &a) == -EDOM && b == 7 && a == 7);
}

int main(void)
{
    test_crc32();
    test_platt();
    test_lstm_step();
    test_ziln();
    test_encoding();
    test_prediction_decays_with_silence();
    test_head_calibration();
    test_cold_start();
    TEST_DONE("test_math");
}
