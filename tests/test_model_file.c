/* The model file (src/model.c): a round trip, the adjuster table kept,
 * files of every earlier format (5 to 8) loading as the network they were,
 * a count of head inputs that is not its format's refused by name, values
 * no writer makes refused behind a right checksum, a wrong width and a
 * flipped byte refused, and the temp file's link not followed. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "encoding.h"
#include "hash.h"
#include "head.h"
#include "lstm.h"
#include "model.h"
#include "model_fixture.h"
#include "test_util.h"
#include "timeutil.h"

/* The bytes of a file; *len its length. */
static unsigned char *file_bytes(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    ASSERT(f);
    fseek(f, 0, SEEK_END);
    *len = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc(*len);
    ASSERT(b && fread(b, 1, *len, f) == *len);
    fclose(f);
    return b;
}

/* Rewrites b (n bytes, its CRC not included) as a model file of format
 * `format`, with its CRC. */
static void write_model_bytes(const char *path, unsigned char *b, size_t n, uint32_t format)
{
    memcpy(b + 8, &format, 4); /* after the magic */
    uint32_t crc = crc32_update(0, b, n);
    FILE *f = fopen(path, "wb");
    ASSERT(f && fwrite(b, 1, n, f) == n && fwrite(&crc, 1, 4, f) == 4);
    fclose(f);
}

/* Format 7 added p's calibration (f64 p_scale, p_offset) after the level
 * shift, at byte 64: the magic (8), eight u32 (32), version, trained_at,
 * level_shift (8 each). Format 9 added the time of year times the
 * fallback's p to the head's inputs, format 8 the two silence hinges,
 * format 6 the time of year (two each; docs/MODEL.md, "Model file"). */
#define CALIB_AT 64u

/* A file of this build (bytes b, len with its CRC, hidden H, no adjuster
 * table) as the older format `format` (5 to 9; its CRC not included, *n
 * its length): the mean's calibration cut before format 10, p's before
 * format 7, and the head columns
 * of the season by the fallback's p before format 9, of the hinges before
 * format 8, of the time of year before format 6. */
static unsigned char *as_format(const unsigned char *b, size_t len, int H, uint32_t format, size_t *n)
{
    unsigned char *o = malloc(len);
    ASSERT(o);
    /* at CALIB_AT: p_scale, p_offset (kept from format 7), m_shrink, m_center (from 10) */
    const size_t U = (size_t)H + HEAD_EXTRA, keep = format < 7u ? 0u : 16u, cut = (format < 7u ? 16u : 0u) +
                                                                                  (format < 10u ? 16u : 0u);
    /* tail: head_w (3 U floats), head_b (3), has_adjuster (u32 0), CRC */
    const size_t hw = len - ((3u * U + 3u) * 4u + 4u + 4u);
    memcpy(o, b, CALIB_AT + keep);
    memcpy(o + CALIB_AT + keep, b + CALIB_AT + keep + cut, hw - CALIB_AT - keep - cut);
    size_t k = hw - cut;
    uint32_t extra = 0;
    for (int r = 0; r < HEAD_OUT; r++)
        for (size_t j = 0; j < U; j++) {
            const int e = (int)j - H;
            if (format < 9u && e >= HEAD_EXTRA_SEASON_BY_P)
                continue;
            if (format < 8u && e >= HEAD_EXTRA_SILENCE && e < HEAD_EXTRA_SEASON)
                continue;
            if (format < 6u && e >= HEAD_EXTRA_SEASON && e < HEAD_EXTRA_SHOPPER)
                continue;
            memcpy(o + k, b + hw + ((size_t)r * U + j) * 4u, 4);
            k += 4;
            extra += r == 0 && e >= 0;
        }
    memcpy(o + k, b + hw + 3u * U * 4u, 3u * 4u + 4u);
    *n = k + 3u * 4u + 4u;
    memcpy(o + 20, &extra, 4); /* after the magic: format, input, hidden, extra */
    return o;
}

/* Sets the head's weights on inputs [from, to) to 0: what an older format
 * had no input for. */
static void zero_head_inputs(LstmWeights *w, int from, int to)
{
    const int H = w->cfg.hidden, U = H + HEAD_EXTRA;
    for (int r = 0; r < HEAD_OUT; r++)
        for (int e = from; e < to; e++)
            w->head_w[r * U + H + e] = 0.0;
}

/* p's calibration is saved and loaded with the network (since format 7),
 * and a file of format 6, before it, loads whole with none: its network
 * predicts exactly what a network with p_scale 1 and p_offset 0 does. A
 * format-7 file (no silence hinges) loads with its calibration. */
static void test_format6_calibration(const FallbackFit *fit, const ShopperAgg *agg, const char *path)
{
    const int H = 8;
    LstmWeights *net;
    ASSERT(lstm_weights_create(&net, H, 9, 3) == 0);
    net->hybrid = true;
    zero_head_inputs(net, HEAD_EXTRA_SILENCE, HEAD_EXTRA_SEASON); /* formats 6 and 7 have no hinges */
    zero_head_inputs(net, HEAD_EXTRA_SEASON_BY_P, HEAD_EXTRA);   /* nor season by p */
    ASSERT(net->calib.p_scale == 1.0 && net->calib.p_offset == 0.0); /* a new network: no calibration */
    net->calib = (HeadCalib){.level_shift = 0.2, .p_scale = 1.3, .p_offset = -0.4};
    Model *m, *loaded, *none, *six;
    ASSERT(model_create(&m, net, fit, 182, MODEL_TRAINED, 1) == 0);
    ASSERT(model_save(m, path) == 0);
    char err[256];
    ASSERT(model_load(&loaded, path, H, err, sizeof err) == 0);
    ASSERT(loaded->net->calib.level_shift == 0.2 && loaded->net->calib.p_scale == 1.3 &&
           loaded->net->calib.p_offset == -0.4);
    size_t len8, n6, n7, n8;
    unsigned char *b8 = file_bytes(path, &len8); /* this build's format */
    unsigned char *b7 = as_format(b8, len8, H, 7, &n7), *b6 = as_format(b8, len8, H, 6, &n6);
    unsigned char *f8 = as_format(b8, len8, H, 8, &n8);
    write_model_bytes(path, f8, n8, 8); /* format 8: calibrated, hinges, no season by p */
    Model *eight;
    ASSERT(model_load(&eight, path, H, err, sizeof err) == 0);
    ASSERT(eight->net->calib.p_scale == 1.3 && eight->net->calib.p_offset == -0.4);
    ASSERT(memcmp(eight->net->head_w, net->head_w, sizeof(double) * 3u * (size_t)(H + HEAD_EXTRA)) == 0);
    model_release(eight);
    free(f8);
    write_model_bytes(path, b7, n7, 7);
    Model *seven;
    ASSERT(model_load(&seven, path, H, err, sizeof err) == 0);
    ASSERT(seven->net->calib.level_shift == 0.2 && seven->net->calib.p_scale == 1.3 &&
           seven->net->calib.p_offset == -0.4);
    ASSERT(memcmp(seven->net->head_w, net->head_w, sizeof(double) * 3u * (size_t)(H + HEAD_EXTRA)) == 0);
    model_release(seven);
    write_model_bytes(path, b6, n6, 6);
    ASSERT(model_load(&six, path, H, err, sizeof err) == 0);
    ASSERT(six->status == MODEL_TRAINED && six->net->calib.level_shift == 0.2);
    ASSERT(six->net->calib.p_scale == 1.0 && six->net->calib.p_offset == 0.0);
    LstmWeights *plain; /* the same weights (the same seed), p uncalibrated: a model shares its weights */
    ASSERT(lstm_weights_create(&plain, H, 9, 3) == 0);
    plain->hybrid = true;
    zero_head_inputs(plain, HEAD_EXTRA_SILENCE, HEAD_EXTRA_SEASON);
    zero_head_inputs(plain, HEAD_EXTRA_SEASON_BY_P, HEAD_EXTRA);
    plain->calib.level_shift = 0.2;
    ASSERT(model_create(&none, plain, fit, 182, MODEL_TRAINED, 1) == 0);
    lstm_weights_release(plain);
    float h[LSTM_MAX_HIDDEN];
    for (int j = 0; j < H; j++)
        h[j] = 0.15f * (float)(j % 4) - 0.2f;
    Prediction a, b, c, d;
    int64_t at = agg->last_ts + 30 * 86400;
    model_predict(m, h, agg, NULL, at, &a);
    model_predict(loaded, h, agg, NULL, at, &b);
    model_predict(none, h, agg, NULL, at, &c);
    model_predict(six, h, agg, NULL, at, &d);
    ASSERT(a.from_network && b.from_network && c.from_network && d.from_network);
    ASSERT_REL(a.ltv, b.ltv, 1e-12);
    ASSERT_REL(c.ltv, d.ltv, 1e-12);
    ASSERT_REL(c.p_active, d.p_active, 1e-12);
    /* the calibration moved p, and the mean with it: logit p' = 1.3 logit p - 0.4 */
    double lc = log(c.p_active / (1 - c.p_active)), la = log(a.p_active / (1 - a.p_active));
    ASSERT_NEAR(la, 1.3 * lc - 0.4, 1e-9);
    ASSERT_REL(a.ltv / a.p_active, c.ltv / c.p_active, 1e-9); /* the mean given a purchase is p's calibration's own */
    /* a file whose calibration is out of range is refused */
    double bad = 9.0;
    memcpy(b8 + CALIB_AT, &bad, sizeof bad);
    write_model_bytes(path, b8, len8 - 4u, MODEL_FORMAT_VERSION);
    Model *refused = NULL;
    ASSERT(model_load(&refused, path, H, err, sizeof err) != 0 && refused == NULL);
    ASSERT(strstr(err, "calibration") != NULL);
    double one = 1.0, over = 51.0; /* p_scale back, p_offset beyond 50 */
    memcpy(b8 + CALIB_AT, &one, sizeof one);
    memcpy(b8 + CALIB_AT + 8u, &over, sizeof over);
    write_model_bytes(path, b8, len8 - 4u, MODEL_FORMAT_VERSION);
    ASSERT(model_load(&refused, path, H, err, sizeof err) != 0 && refused == NULL);
    ASSERT(strstr(err, "calibration") != NULL);
    free(b8), free(b7), free(b6);
    model_release(m), model_release(loaded), model_release(none), model_release(six);
    lstm_weights_release(net);
}

/* The mean's calibration (format 10): m_shrink and m_center are saved and
 * loaded with the network, and pull log m toward m_center by p / (p +
 * m_shrink) while p and σ stay (the served quantiles are that
 * distribution's); a format-9 file loads with none and predicts what the
 * same network without it does; values out of range are refused. */
static void test_format10_mean_calibration(const FallbackFit *fit, const ShopperAgg *agg, const char *path)
{
    const int H = 8;
    const HeadCalib cal = {.level_shift = 0.1, .p_scale = 1.2, .p_offset = -0.3, .m_shrink = 0.05, .m_center = 3.0};
    LstmWeights *net, *plain; /* the same weights (the same seed), plain without the mean's calibration */
    ASSERT(lstm_weights_create(&net, H, 21, 3) == 0 && lstm_weights_create(&plain, H, 21, 3) == 0);
    net->hybrid = plain->hybrid = true;
    net->calib = cal;
    plain->calib = cal;
    plain->calib.m_shrink = plain->calib.m_center = 0.0;
    Model *m, *none, *loaded, *nine;
    ASSERT(model_create(&m, net, fit, 182, MODEL_TRAINED, 1) == 0);
    ASSERT(model_create(&none, plain, fit, 182, MODEL_TRAINED, 1) == 0);
    ASSERT(model_save(m, path) == 0);
    char err[256];
    ASSERT(model_load(&loaded, path, H, err, sizeof err) == 0);
    ASSERT(memcmp(&loaded->net->calib, &cal, sizeof cal) == 0);
    size_t len, n9;
    unsigned char *b10 = file_bytes(path, &len), *b9 = as_format(b10, len, H, 9, &n9);
    write_model_bytes(path, b9, n9, 9);
    ASSERT(model_load(&nine, path, H, err, sizeof err) == 0);
    ASSERT(nine->net->calib.m_shrink == 0.0 && nine->net->calib.m_center == 0.0 && nine->net->calib.p_scale == 1.2 &&
           nine->net->calib.p_offset == -0.3 && nine->net->calib.level_shift == 0.1);
    float h[LSTM_MAX_HIDDEN];
    int pulled = 0;
    for (int day = 1; day <= 360; day += 17) {
        for (int j = 0; j < H; j++)
            h[j] = 0.2f * (float)((j + day) % 5) - 0.4f;
        const int64_t at = agg->last_ts + (int64_t)day * 86400;
        Prediction a, b, c, d;
        model_predict(m, h, agg, NULL, at, &a);
        model_predict(loaded, h, agg, NULL, at, &b);
        model_predict(none, h, agg, NULL, at, &c);
        model_predict(nine, h, agg, NULL, at, &d);
        ASSERT(a.from_network && c.from_network);
        ASSERT(a.ltv == b.ltv && a.p50 == b.p50 && a.p90 == b.p90); /* saved and loaded */
        ASSERT(c.ltv == d.ltv && c.p90 == d.p90);                   /* format 9: none */
        ASSERT_REL(a.p_active, c.p_active, 1e-12);                  /* p is not moved */
        const double p = a.p_active, w = p / (p + cal.m_shrink), lm = log(c.ltv / p) - cal.level_shift;
        ASSERT_NEAR(log(a.ltv / p) - cal.level_shift, cal.m_center + w * (lm - cal.m_center), 1e-9);
        pulled += fabs(a.ltv / c.ltv - 1.0) > 1e-3;
        if (a.p90 > 0 && c.p90 > 0) /* σ kept: the quantiles move with the mean */
            ASSERT_REL(a.p90 / c.p90, a.ltv / c.ltv, 1e-9);
    }
    ASSERT(pulled > 0);
    /* out of range: refused (m_shrink below 0, beyond its bound or NaN; m_center beyond its bound) */
    const double bad[][2] = {{-0.01, 3.0}, {HEAD_M_SHRINK_MAX * 2, 3.0}, {NAN, 3.0}, {0.05, HEAD_M_CENTER_MAX + 1}};
    for (int k = 0; k < 4; k++) {
        memcpy(b10 + CALIB_AT + 16u, bad[k], sizeof bad[k]);
        write_model_bytes(path, b10, len - 4u, MODEL_FORMAT_VERSION);
        Model *refused = NULL;
        ASSERT(model_load(&refused, path, H, err, sizeof err) != 0 && refused == NULL);
        ASSERT(strstr(err, "mean calibration out of range") != NULL);
    }
    free(b10), free(b9);
    model_release(m), model_release(none), model_release(loaded), model_release(nine);
    lstm_weights_release(net), lstm_weights_release(plain);
}

/* A model file of format 8 (13 head inputs: no season by the fallback's p)
 * loads as the network with weight 0 on those two and its own weights on
 * the silence hinges, which predicts what it did at any silence (1 to 400
 * days: the hinges read 0 before 30 days, and both are non-zero past
 * 180). A format-9 header on that body, or a format-8 header on a format-9
 * body, is refused by name. */
static void test_format8_hinges(const FallbackFit *fit, const ShopperAgg *agg, const char *path)
{
    const int H = 8, U = H + HEAD_EXTRA;
    LstmWeights *net;
    ASSERT(lstm_weights_create(&net, H, 11, 3) == 0);
    net->hybrid = true;
    zero_head_inputs(net, HEAD_EXTRA_SEASON_BY_P, HEAD_EXTRA);
    for (int r = 0; r < HEAD_OUT; r++) /* hinge weights large enough to move a prediction */
        for (int j = 0; j < 2; j++)
            net->head_w[r * U + H + HEAD_EXTRA_SILENCE + j] = (float)(0.3 - 0.2 * j + 0.1 * r);
    Model *m, *loaded = NULL;
    ASSERT(model_create(&m, net, fit, 182, MODEL_TRAINED, 1) == 0);
    ASSERT(model_save(m, path) == 0);
    size_t len, n8;
    unsigned char *cur = file_bytes(path, &len), *b8 = as_format(cur, len, H, 8, &n8);
    char err[256];
    write_model_bytes(path, b8, n8, 9); /* a format-9 header, 13 head inputs */
    ASSERT(model_load(&loaded, path, H, err, sizeof err) == -EINVAL && loaded == NULL);
    ASSERT(strstr(err, "format 9 with") && strstr(err, "extra=13") && strstr(err, "has input=16 and extra=15"));
    write_model_bytes(path, cur, len - 4u, 8); /* a format-8 header, 15 head inputs */
    ASSERT(model_load(&loaded, path, H, err, sizeof err) == -EINVAL && loaded == NULL);
    ASSERT(strstr(err, "extra=15") && strstr(err, "has input=16 and extra=13"));
    write_model_bytes(path, b8, n8, 8);
    ASSERT(model_load(&loaded, path, H, err, sizeof err) == 0);
    ASSERT(memcmp(loaded->net->head_w, net->head_w, sizeof(double) * 3u * (size_t)U) == 0);
    float h[LSTM_MAX_HIDDEN];
    for (int j = 0; j < H; j++)
        h[j] = 0.1f * (float)(j % 3) - 0.1f;
    double far = 0, near = 0;
    for (int days = 1; days <= 400; days += 57) {
        Prediction a, b;
        model_predict(m, h, agg, NULL, agg->last_ts + (int64_t)days * 86400, &a);
        model_predict(loaded, h, agg, NULL, agg->last_ts + (int64_t)days * 86400, &b);
        ASSERT(a.from_network && b.from_network);
        ASSERT_REL(a.ltv, b.ltv, 1e-12);
        ASSERT_REL(a.p_active, b.p_active, 1e-12);
        if (days == 1)
            near = a.ltv;
        far = a.ltv;
    }
    ASSERT(far != near);
    free(cur), free(b8);
    model_release(loaded), model_release(m);
    lstm_weights_release(net);
}

/* A model file of format 5 (9 head inputs: no time of year at as_of, no
 * silence hinges) loads as a trained network that predicts what it did:
 * its head weights land on their inputs, and the four new inputs get
 * weight 0. Made from a file of this build whose weights on those inputs
 * are 0 and p uncalibrated, with the calibration and those columns cut. */
static void test_format5_head(const LstmWeights *proto, const FallbackFit *fit, const ShopperAgg *agg,
                              const char *path)
{
    const int H = proto->cfg.hidden, U = H + HEAD_EXTRA;
    LstmWeights *net;
    ASSERT(lstm_weights_create(&net, H, 7, 2) == 0);
    net->hybrid = true;
    for (int r = 0; r < HEAD_OUT; r++)
        for (int j = 0; j < U; j++)
            net->head_w[r * U + j] = (float)(0.01 * (j % 7) - 0.02 * r);
    zero_head_inputs(net, HEAD_EXTRA_SILENCE, HEAD_EXTRA_SHOPPER);
    zero_head_inputs(net, HEAD_EXTRA_SEASON_BY_P, HEAD_EXTRA);
    Model *m;
    ASSERT(model_create(&m, net, fit, 182, MODEL_TRAINED, 1) == 0);
    ASSERT(model_save(m, path) == 0);
    size_t len8, n5;
    unsigned char *b8 = file_bytes(path, &len8), *b5 = as_format(b8, len8, H, 5, &n5);
    uint32_t nine;
    memcpy(&nine, b5 + 20, 4);
    ASSERT(nine == MODEL_V5_HEAD_EXTRA);
    write_model_bytes(path, b5, n5, 5);
    free(b5), free(b8);
    Model *loaded;
    char err[256];
    ASSERT(model_load(&loaded, path, H, err, sizeof err) == 0);
    ASSERT(loaded->status == MODEL_TRAINED && loaded->net->hybrid);
    ASSERT(memcmp(loaded->net->head_w, net->head_w, sizeof(double) * 3u * (size_t)U) == 0);
    float h[LSTM_MAX_HIDDEN];
    for (int j = 0; j < H; j++)
        h[j] = 0.1f * (float)(j % 5) - 0.2f;
    for (int k = 0; k < 3; k++) { /* three seasons, and silences of 1 to 241 days */
        int64_t at = agg->last_ts + (1 + 120 * k) * 86400;
        Prediction a, b;
        model_predict(m, h, agg, NULL, at, &a);
        model_predict(loaded, h, agg, NULL, at, &b);
        ASSERT(a.from_network && b.from_network);
        ASSERT_REL(a.ltv, b.ltv, 1e-12);
        ASSERT_REL(a.p_active, b.p_active, 1e-12);
    }
    model_release(loaded);
    model_release(m);
    lstm_weights_release(net);
}

static void test_model_file(void)
{
    LstmWeights *net;
    ShopperAgg agg;
    Model *m = fixture_model(&net, &agg);
    const FallbackFit fit = m->fallback;

    /* model file: round trip, then a flipped byte is refused */
    char path[] = "/tmp/ltvd_test_modelXXXXXX";
    int fd = mkstemp(path);
    ASSERT(fd >= 0);
    close(fd);
    ASSERT(model_save(m, path) == 0);
    struct stat st;
    ASSERT(stat(path, &st) == 0 && (st.st_mode & 0137) == 0); /* at most 0640, as the snapshots */
    /* a link planted at the temp name is replaced, not followed */
    char tmp_link[64], target[64];
    snprintf(tmp_link, sizeof tmp_link, "%s.tmp", path);
    snprintf(target, sizeof target, "%s.target", path);
    ASSERT(symlink(target, tmp_link) == 0);
    ASSERT(model_save(m, path) == 0);
    ASSERT(access(target, F_OK) != 0 && lstat(tmp_link, &st) != 0);
    Model *loaded;
    char err[256];
    ASSERT(model_load(&loaded, path, 8, err, sizeof err) == 0);
    ASSERT(loaded->version == m->version && loaded->horizon_days == 182);
    ASSERT(memcmp(loaded->net->w, m->net->w, sizeof(float) * 4 * 8 * (FEATURE_DIM + 8)) == 0);
    ASSERT(!loaded->has_adj);
    model_release(loaded);

    /* with an adjuster table: kept across a save and a load */
    m->has_adj = true;
    memset(&m->adj, 0, sizeof m->adj);
    memset(m->adj.action, ADJ_IDENTITY, sizeof m->adj.action);
    m->adj.action[ADJ_SEGMENTS - 1] = 0; /* x0.5 for the top decile, recent, oldest tenure */
    m->adj.runs = 3;
    ASSERT(model_save(m, path) == 0);
    ASSERT(model_load(&loaded, path, 8, err, sizeof err) == 0);
    ASSERT(loaded->has_adj && loaded->adj.runs == 3 && loaded->adj.action[ADJ_SEGMENTS - 1] == 0);
    Prediction a, b;
    model_predict(m, NULL, &agg, NULL, agg.last_ts + 86400, &a);
    model_predict(loaded, NULL, &agg, NULL, agg.last_ts + 86400, &b);
    ASSERT_REL(a.ltv, b.ltv, 1e-12);
    model_release(loaded);
    FILE *f3 = fopen(path, "r+b");
    ASSERT(f3);
    fseek(f3, 0, SEEK_END);
    long len = ftell(f3);
    unsigned char *bytes = malloc((size_t)len);
    fseek(f3, 0, SEEK_SET);
    ASSERT(fread(bytes, 1, (size_t)len, f3) == (size_t)len);
    uint32_t three = 3;
    memcpy(bytes + 8, &three, 4); /* the format field follows the magic */
    uint32_t crc = crc32_update(0, bytes, (size_t)len - 4);
    memcpy(bytes + len - 4, &crc, 4);
    fseek(f3, 0, SEEK_SET);
    ASSERT(fwrite(bytes, 1, (size_t)len, f3) == (size_t)len);
    fclose(f3);
    free(bytes);
    /* a format-3 header on this build's body: each format has its one count
     * of head inputs (3 and 4: 6), so no writer made this file */
    ASSERT(model_load(&loaded, path, 8, err, sizeof err) == -EINVAL && strstr(err, "extra=15"));
    test_format5_head(net, &fit, &agg, path);
    test_format6_calibration(&fit, &agg, path);
    test_format8_hinges(&fit, &agg, path);
    test_format10_mean_calibration(&fit, &agg, path);
    /* values no writer makes, behind a right checksum, are refused by name */
    float w3 = m->net->w[3];
    m->net->w[3] = NAN;
    ASSERT(model_save(m, path) == 0);
    ASSERT(model_load(&loaded, path, 8, err, sizeof err) == -EINVAL && strstr(err, "non-finite LSTM weight"));
    m->net->w[3] = w3;
    m->adj.action[7] = ADJ_ACTIONS;
    ASSERT(model_save(m, path) == 0);
    ASSERT(model_load(&loaded, path, 8, err, sizeof err) == -EINVAL && strstr(err, "adjuster action"));
    m->adj.action[7] = ADJ_IDENTITY;
    double q = m->fallback.gg.q;
    m->fallback.gg.q = 0.5;
    ASSERT(model_save(m, path) == 0);
    ASSERT(model_load(&loaded, path, 8, err, sizeof err) == -EINVAL && strstr(err, "q <= 1"));
    m->fallback.gg.q = q;
    double r = m->fallback.bg.r;
    m->fallback.bg.r = INFINITY;
    ASSERT(model_save(m, path) == 0);
    ASSERT(model_load(&loaded, path, 8, err, sizeof err) == -EINVAL && strstr(err, "fallback parameters"));
    m->fallback.bg.r = r;
    ASSERT(model_save(m, path) == 0);
    ASSERT(model_load(&loaded, path, 8, err, sizeof err) == 0);
    model_release(loaded);

    m->has_adj = false;
    ASSERT(model_save(m, path) == 0);
    ASSERT(model_load(&loaded, path, 16, err, sizeof err) == -EINVAL); /* wrong width */
    ASSERT(strstr(err, "hidden=8") != NULL);
    FILE *f = fopen(path, "r+b");
    ASSERT(f);
    fseek(f, 200, SEEK_SET);
    int byte = fgetc(f);
    fseek(f, 200, SEEK_SET);
    fputc(byte ^ 0x10, f);
    fclose(f);
    ASSERT(model_load(&loaded, path, 8, err, sizeof err) == -EINVAL);
    ASSERT(strstr(err, "checksum") != NULL);
    unlink(path);
    model_release(m);
    lstm_weights_release(net);
}

int main(void)
{
    test_model_file();
    TEST_DONE("test_model_file");
}
