/* model: the immutable serving model: construction, reference counting,
 * a shopper's prediction (the head's pass is head.c's) and the model file.
 * Any thread predicts from a model it holds a reference to; the worker
 * builds and saves models, main loads one at start. */
#include "model.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "hash.h"
#include "head.h"
#include "platt.h"
#include "util.h"

static float uniform_pm(uint64_t *s, float scale)
{
    return scale * (2.0f * (float)((splitmix64(s) >> 40) * (1.0 / 16777216.0)) - 1.0f);
}

static size_t lstm_w_len(const LstmConfig *c) { return 4u * (size_t)c->hidden * (size_t)(c->input + c->hidden); }
static size_t head_w_len(const LstmConfig *c) { return 3u * (size_t)(c->hidden + HEAD_EXTRA); }

bool lstm_weights_same(const LstmWeights *a, const LstmWeights *b)
{
    return a->cfg.input == b->cfg.input && a->cfg.hidden == b->cfg.hidden && a->hybrid == b->hybrid &&
           memcmp(&a->calib, &b->calib, sizeof a->calib) == 0 &&
           memcmp(a->w, b->w, lstm_w_len(&a->cfg) * sizeof *a->w) == 0 &&
           memcmp(a->b, b->b, 4u * (size_t)a->cfg.hidden * sizeof *a->b) == 0 &&
           memcmp(a->head_w, b->head_w, head_w_len(&a->cfg) * sizeof *a->head_w) == 0 &&
           memcmp(a->head_b, b->head_b, HEAD_OUT * sizeof *a->head_b) == 0;
}

static int lstm_weights_alloc(LstmWeights **out, int hidden, uint32_t id)
{
    LstmWeights *w = calloc(1, sizeof *w);
    if (!w)
        return -ENOMEM;
    w->cfg.input = FEATURE_DIM;
    w->cfg.hidden = hidden;
    w->id = id;
    w->calib = HEAD_CALIB_NONE;
    atomic_init(&w->refs, 1);
    w->w = calloc(lstm_w_len(&w->cfg), sizeof(float));
    w->b = calloc(4u * (size_t)hidden, sizeof(float));
    w->head_w = calloc(head_w_len(&w->cfg), sizeof(double));
    w->head_b = calloc(HEAD_OUT, sizeof(double));
    if (!w->w || !w->b || !w->head_w || !w->head_b) {
        lstm_weights_release(w);
        return -ENOMEM;
    }
    *out = w;
    return 0;
}

int lstm_weights_create(LstmWeights **out, int hidden, uint64_t seed, uint32_t id)
{
    if (hidden < 1 || hidden > LSTM_MAX_HIDDEN)
        return -EINVAL;
    LstmWeights *w;
    int rc = lstm_weights_alloc(&w, hidden, id);
    if (rc)
        return rc;
    uint64_t s = seed * 0x2545f4914f6cdd1dull + 1;
    const LstmConfig *c = &w->cfg;
    float scale = 1.0f / sqrtf((float)(c->input + c->hidden));
    for (size_t i = 0; i < lstm_w_len(c); i++)
        w->w[i] = uniform_pm(&s, scale);
    for (int j = 0; j < hidden; j++)
        w->b[hidden + j] = 1.0f; /* forget-gate bias 1: remember by default */
    float hscale = 1.0f / sqrtf((float)(hidden + HEAD_EXTRA));
    for (size_t i = 0; i < head_w_len(c); i++)
        w->head_w[i] = uniform_pm(&s, hscale);
    *out = w;
    return 0;
}

void lstm_weights_retain(LstmWeights *w) { atomic_fetch_add_explicit(&w->refs, 1, memory_order_relaxed); }

void lstm_weights_release(LstmWeights *w)
{
    if (!w || atomic_fetch_sub_explicit(&w->refs, 1, memory_order_acq_rel) != 1)
        return;
    free(w->w);
    free(w->b);
    free(w->head_w);
    free(w->head_b);
    free(w);
}

int model_create(Model **out, LstmWeights *net, const FallbackFit *fit, int horizon_days, ModelStatus status,
                 uint64_t version)
{
    Model *m = calloc(1, sizeof *m);
    if (!m)
        return -ENOMEM;
    atomic_init(&m->refs, 1);
    m->version = version;
    m->status = status;
    m->horizon_days = horizon_days;
    m->net = net;
    lstm_weights_retain(net);
    m->fallback = *fit;
    FallbackOutput fo;
    fallback_predict(&fit->bg, &fit->gg, NULL, horizon_days / 7.0, &fo);
    m->cold_start = fo.ziln;
    *out = m;
    return 0;
}

void model_retain(Model *m) { atomic_fetch_add_explicit(&m->refs, 1, memory_order_relaxed); }

void model_release(Model *m)
{
    if (!m || atomic_fetch_sub_explicit(&m->refs, 1, memory_order_acq_rel) != 1)
        return;
    lstm_weights_release(m->net);
    free(m);
}

/* The population prior's fallback output (no purchase history): the same
 * for every shopper under one fit and horizon, and dear to compute (its
 * 2F1 series converges slowly at T = 0: about 2,400 instructions, callgrind),
 * so each thread keeps the last one it computed. */
static void fallback_prior(const FallbackFit *fit, double t, FallbackOutput *out)
{
    static _Thread_local struct {
        BgnbdParams bg;
        GammaGammaParams gg;
        double t;
        FallbackOutput out;
        bool valid;
    } memo;
    if (memo.valid && memo.t == t && memcmp(&memo.bg, &fit->bg, sizeof memo.bg) == 0 &&
        memcmp(&memo.gg, &fit->gg, sizeof memo.gg) == 0) {
        *out = memo.out;
        return;
    }
    fallback_predict(&fit->bg, &fit->gg, NULL, t, out);
    memo.bg = fit->bg;
    memo.gg = fit->gg;
    memo.t = t;
    memo.out = *out;
    memo.valid = true;
}

void model_fallback(const FallbackFit *fit, int horizon_days, const ShopperAgg *agg, const RecentSummary *rs,
                    int64_t as_of, FallbackOutput *out)
{
    const double t = horizon_days / 7.0;
    CustomerSummary s;
    if (agg && shopper_summary(agg, as_of, &s)) {
        fallback_predict(&fit->bg, &fit->gg, &s, t, out);
        return;
    }
    fallback_prior(fit, t, out); /* the population prior */
    out->p_alive = 1.0;
    if (!agg || agg->events == 0 || fit->cold.state == COLD_PRIOR)
        return;
    if (fit->cold.state == COLD_FITTED) {
        double f[COLD_FEATURES];
        coldstart_features(f, agg, rs, as_of);
        ZilnParams z = coldstart_predict(&fit->cold, f);
        out->ziln = z;
        out->ltv = ziln_mean(&z);
        out->p_active = z.p;
        out->expected_purchases = z.p;
        out->value = z.p > 0 ? out->ltv / z.p : 0.0;
        return;
    }
    /* no evidence: at most what a one-time buyer known as long is worth */
    double tenure_weeks = fmax(0.0, (double)(as_of - agg->first_ts) / (7.0 * 86400.0));
    CustomerSummary once = {.x = 0, .t_x = 0, .T = tenure_weeks, .m = 0};
    FallbackOutput lapsed;
    fallback_predict(&fit->bg, &fit->gg, &once, t, &lapsed);
    if (lapsed.ltv < out->ltv) {
        *out = lapsed;
        out->p_alive = 1.0;
    }
}

void model_predict(const Model *m, const float *h, const ShopperAgg *agg, const RecentSummary *rs, int64_t as_of,
                   Prediction *out)
{
    ZilnParams z;
    FallbackOutput fo;
    if (agg) {
        model_fallback(&m->fallback, m->horizon_days, agg, rs, as_of, &fo);
        z = fo.ziln;
    } else {
        z = m->cold_start;
        fo.ltv = ziln_mean(&z);
        fo.p_alive = 1.0;
        fo.p_active = z.p;
        fo.ziln = z;
    }
    out->from_network = false;
    if (m->status == MODEL_TRAINED && h && agg) {
        const LstmWeights *w = m->net;
        const int H = w->cfg.hidden;
        float ef[HEAD_EXTRA]; /* (E,) */
        encode_head_extra(ef, agg, rs, as_of, log1p(fo.ltv), fo.p_alive, fo.p_active);
        double hd[LSTM_MAX_HIDDEN], e[HEAD_EXTRA], zo[HEAD_OUT]; /* h (H,), e (E,), z (3,) in double */
        for (int j = 0; j < H; j++)
            hd[j] = h[j];
        for (int j = 0; j < HEAD_EXTRA; j++)
            e[j] = ef[j];
        double a0 = 0.0, a1 = 0.0;
        if (w->hybrid)
            head_anchors(&fo, &a0, &a1);
        head_forward(zo, NULL, w->head_w, w->head_b, H, hd, e, a0, a1, w->hybrid);
        z = head_ziln(zo, &w->calib);
        out->from_network = true;
    }
    out->uncorrected = ziln_mean(&z);
    if (m->has_adj && agg) {
        /* the adjuster's greedy correction for this shopper's segment */
        double recency = fmax(0.0, (double)(as_of - agg->last_ts) / 86400.0);
        double tenure = fmax(0.0, (double)(as_of - agg->first_ts) / 86400.0);
        double mult = adjuster_multiplier(&m->adj, ziln_mean(&z), recency, tenure);
        if (mult != 1.0 && z.p > 0)
            z.mu += log(mult);
    }
    ZilnSummary sum;
    ziln_summarize(&z, &sum);
    out->ltv = sum.mean;
    out->p_active = sum.p_active;
    out->p10 = sum.p10;
    out->p50 = sum.p50;
    out->p90 = sum.p90;
}

const char *model_level_rule_name(int rule)
{
    return rule == LEVEL_RULE_NETWORK ? "network" : "fallback";
}

/* ---- file format -------------------------------------------------------
 * All integers little-endian as stored by this (x86-64/arm64) build:
 *   char magic[8] "LTVDMODL"; u32 format; u32 input; u32 hidden; u32 extra;
 *   u32 horizon_days; u32 status; u32 net_id; u32 flags (1: hybrid head);
 *   u64 version; i64 trained_at; f64 level_shift;
 *   (formats 7 to 10:) f64 p_scale, p_offset;
 *   (format 10:) f64 m_shrink, m_center;
 *   f64 r, alpha, a, b, p, q, v; u64 customers, repeat_buyers, purchases;
 *   i64 fitted_at;
 *   (formats 5 to 10:) u32 cold_state; f64 cold_beta_p[COLD_FEATURES], cold_beta_mu[COLD_FEATURES], cold_sigma; u64 cold_examples, cold_converted;
 *   u64 examples, users, epochs; f64 val_loss, val_gini, seconds;
 *   f32 lstm_w[4H(I+H)], lstm_b[4H], head_w[3(H+E)], head_b[3];
 *   u32 has_adjuster; AdjTable (raw, when has_adjuster);
 * Format 3 (an AdjTable without tenure buckets) is read with its table dropped;
 * formats 3 and 4 have no cold-start fit (it is COLD_CAPPED until the next refit),
 * and 6 head inputs (extra = 6): their network is skipped and the model loads
 * with status fallback (model_load's err says so). Formats 5 to 8 have 9, 11
 * and 13 head inputs and load with zero weights on the inputs they lacked
 * (get_old_head), which leaves their predictions as they were. Formats 3 to
 * 6 have no calibration of p: it loads as p_scale 1, p_offset 0. Formats 3 to
 * 9 have no pull of the mean toward the centre: m_shrink loads as 0 (none).
 *   u32 crc32 of every byte before it. */

/* The file's bytes: built in memory, then written at once (save); read
 * whole, then taken apart (load). err: the first failure, sticky. */
typedef struct FileBuf {
    ByteBuf b;
    size_t pos;
    int err;
} FileBuf;

static void put(FileBuf *f, const void *v, size_t n)
{
    if (!f->err)
        f->err = bytebuf_put(&f->b, v, n);
}

static void get(FileBuf *f, void *v, size_t n)
{
    if (f->err || f->pos + n > f->b.len) {
        f->err = -EINVAL;
        memset(v, 0, n);
        return;
    }
    memcpy(v, f->b.p + f->pos, n);
    f->pos += n;
}

/* The head's weights are held in double (head.h) and stored as f32: their
 * values are f32 ones (lstm_weights_create, the trainer rounds them), so
 * the file keeps them exactly. */
static void put_f32(FileBuf *f, const double *v, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        float x = (float)v[i];
        put(f, &x, sizeof x);
    }
}

static void get_f32(FileBuf *f, double *v, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        float x;
        get(f, &x, sizeof x);
        v[i] = x;
    }
}

/* An older format's head_w into this build's (3, H+15): the columns an
 * older head did not have read as weight 0, which gives the network it
 * was. Format 5's rows: h, the shopper's 7, the fallback's 2; formats 6
 * and 7 add the time of year (2) before the fallback's; format 8 the
 * silence hinges (2) before the time of year; format 9 the time of year
 * times the fallback's p (2) last. */
_Static_assert(HEAD_EXTRA_SILENCE == 7 && HEAD_EXTRA_SEASON == HEAD_EXTRA_SILENCE + 2 &&
                   HEAD_EXTRA_SHOPPER == HEAD_EXTRA_SEASON + 2 && HEAD_EXTRA_SEASON_BY_P == HEAD_EXTRA_SHOPPER + 2 &&
                   HEAD_EXTRA == HEAD_EXTRA_SEASON_BY_P + 2 && MODEL_V5_HEAD_EXTRA == HEAD_EXTRA_SILENCE + 2 &&
                   MODEL_V7_HEAD_EXTRA == MODEL_V5_HEAD_EXTRA + 2 && MODEL_V8_HEAD_EXTRA == MODEL_V7_HEAD_EXTRA + 2,
               "head layout: the shopper's 7, the silence hinges 2, the time of year 2, the fallback's 2, the season "
               "by the fallback's p 2");
static void get_old_head(FileBuf *f, double *head_w, int H, bool has_season, bool has_hinges)
{
    const size_t U = (size_t)H + HEAD_EXTRA;
    for (int r = 0; r < HEAD_OUT; r++) {
        double *row = head_w + (size_t)r * U;
        memset(row, 0, U * sizeof *row);
        get_f32(f, row, (size_t)H + HEAD_EXTRA_SILENCE);
        if (has_hinges)
            get_f32(f, row + H + HEAD_EXTRA_SILENCE, 2);
        if (has_season)
            get_f32(f, row + H + HEAD_EXTRA_SEASON, 2);
        get_f32(f, row + H + HEAD_EXTRA_SHOPPER, 2);
    }
}

/* The head inputs a file of this format has (3 to MODEL_FORMAT_VERSION). */
static int format_head_extra(uint32_t format)
{
    return format < 5u ? MODEL_V4_HEAD_EXTRA
           : format == 5u ? MODEL_V5_HEAD_EXTRA
           : format < 8u ? MODEL_V7_HEAD_EXTRA
           : format == 8u ? MODEL_V8_HEAD_EXTRA
                          : HEAD_EXTRA;
}

#define PUT(b, v) put(b, &(v), sizeof(v))
#define GET(b, v) get(b, &(v), sizeof(v))

/* fsyncs the directory holding path. 0 or -errno. */
static int fsync_parent(const char *path)
{
    char dir[1100];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash == dir)
        slash[1] = '\0';
    else if (slash)
        *slash = '\0';
    else
        snprintf(dir, sizeof dir, ".");
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    int rc = fsync(fd) != 0 ? -errno : 0;
    close(fd);
    return rc;
}

int model_save(const Model *m, const char *path)
{
    FileBuf fb = {0};
    const LstmWeights *w = m->net;
    uint32_t u32[8] = {MODEL_FORMAT_VERSION, (uint32_t)w->cfg.input, (uint32_t)w->cfg.hidden, HEAD_EXTRA,
                       (uint32_t)m->horizon_days, (uint32_t)m->status, w->id, w->hybrid ? 1u : 0u};
    put(&fb, "LTVDMODL", 8);
    put(&fb, u32, sizeof u32);
    PUT(&fb, m->version);
    PUT(&fb, m->trained_at);
    PUT(&fb, w->calib.level_shift);
    PUT(&fb, w->calib.p_scale);
    PUT(&fb, w->calib.p_offset);
    PUT(&fb, w->calib.m_shrink);
    PUT(&fb, w->calib.m_center);
    const FallbackFit *f = &m->fallback;
    double d7[7] = {f->bg.r, f->bg.alpha, f->bg.a, f->bg.b, f->gg.p, f->gg.q, f->gg.v};
    put(&fb, d7, sizeof d7);
    PUT(&fb, f->customers);
    PUT(&fb, f->repeat_buyers);
    PUT(&fb, f->purchases);
    PUT(&fb, f->fitted_at);
    PUT(&fb, f->cold.state);
    put(&fb, f->cold.beta_p, sizeof f->cold.beta_p);
    put(&fb, f->cold.beta_mu, sizeof f->cold.beta_mu);
    PUT(&fb, f->cold.sigma);
    PUT(&fb, f->cold.examples);
    PUT(&fb, f->cold.converted);
    const TrainFigures *t = &m->train;
    PUT(&fb, t->examples);
    PUT(&fb, t->users);
    PUT(&fb, t->epochs);
    PUT(&fb, t->val_loss);
    PUT(&fb, t->val_gini);
    PUT(&fb, t->seconds);
    put(&fb, w->w, sizeof(float) * lstm_w_len(&w->cfg));
    put(&fb, w->b, sizeof(float) * 4u * (size_t)w->cfg.hidden);
    put_f32(&fb, w->head_w, head_w_len(&w->cfg));
    put_f32(&fb, w->head_b, HEAD_OUT);
    uint32_t has_adj = m->has_adj ? 1u : 0u;
    PUT(&fb, has_adj);
    if (has_adj)
        PUT(&fb, m->adj);
    uint32_t crc = crc32_update(0, fb.b.p, fb.b.len);
    PUT(&fb, crc);
    if (fb.err) {
        bytebuf_free(&fb.b);
        return fb.err;
    }
    char tmp[1100];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    int rc = 0;
    /* The temp name is predictable: whatever is there (a stale file, a
     * planted link) goes, and the file is made afresh, 0640 like the
     * snapshots and the log. */
    if (unlink(tmp) != 0 && errno != ENOENT) {
        rc = -errno;
        goto out;
    }
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0640);
    if (fd < 0) {
        rc = -errno;
        goto out;
    }
    rc = write_all(fd, fb.b.p, fb.b.len);
    if (!rc && fsync(fd) != 0)
        rc = -errno;
    close(fd);
    if (!rc && rename(tmp, path) != 0)
        rc = -errno;
    if (!rc)
        rc = fsync_parent(path); /* the rename itself survives a crash */
    if (rc)
        unlink(tmp);
out:
    bytebuf_free(&fb.b);
    return rc;
}

/* Values a file with a good checksum may still carry that no fit or
 * training writes (a damaged writer, a crafted file): NULL when every one is
 * usable, else what is wrong. The fallback's parameters as bgnbd.c keeps
 * them (finite, in (0, 1e7], q > 1), a level shift within ±50, p's
 * calibration as platt_fit makes it (scale in [0.2, 5], |offset| <= 50; the
 * fit itself keeps the offset within 20), finite network weights, a horizon
 * within model.horizon_days's bounds, and adjuster actions that name one. */
static const char *model_values_bad(const LstmWeights *w, const FallbackFit *f, uint32_t horizon,
                                    const AdjTable *adj, bool has_adj)
{
    const double fp[7] = {f->bg.r, f->bg.alpha, f->bg.a, f->bg.b, f->gg.p, f->gg.q, f->gg.v};
    for (int i = 0; i < 7; i++)
        if (!isfinite(fp[i]) || fp[i] <= 0 || fp[i] > 1e7)
            return "fallback parameters out of range";
    if (f->gg.q <= 1.0)
        return "fallback parameter q <= 1 (infinite mean spend)";
    if (f->cold.state > COLD_FITTED)
        return "cold-start state out of range";
    for (int i = 0; i < COLD_FEATURES; i++)
        if (!isfinite(f->cold.beta_p[i]) || !isfinite(f->cold.beta_mu[i]) || fabs(f->cold.beta_p[i]) > 1e6 ||
            fabs(f->cold.beta_mu[i]) > 1e6)
            return "a cold-start coefficient out of range";
    if (f->cold.state == COLD_FITTED && !(f->cold.sigma >= 0.05 && f->cold.sigma <= 5.0))
        return "cold-start sigma out of range";
    if (horizon < 1 || horizon > 3650)
        return "horizon outside 1-3650 days";
    if (!isfinite(w->calib.level_shift) || fabs(w->calib.level_shift) > 50)
        return "level shift out of range";
    if (!(w->calib.p_scale >= PLATT_SCALE_MIN && w->calib.p_scale <= PLATT_SCALE_MAX) ||
        !(fabs(w->calib.p_offset) <= 50))
        return "probability calibration out of range";
    if (!(w->calib.m_shrink >= 0 && w->calib.m_shrink <= HEAD_M_SHRINK_MAX) || !(fabs(w->calib.m_center) <= HEAD_M_CENTER_MAX))
        return "mean calibration out of range";
    size_t nw = lstm_w_len(&w->cfg), nb = 4u * (size_t)w->cfg.hidden, nh = head_w_len(&w->cfg);
    for (size_t i = 0; i < nw; i++)
        if (!isfinite(w->w[i]))
            return "a non-finite LSTM weight";
    for (size_t i = 0; i < nb; i++)
        if (!isfinite(w->b[i]))
            return "a non-finite LSTM bias";
    for (size_t i = 0; i < nh; i++)
        if (!isfinite(w->head_w[i]))
            return "a non-finite head weight";
    for (size_t i = 0; i < HEAD_OUT; i++)
        if (!isfinite(w->head_b[i]))
            return "a non-finite head bias";
    if (has_adj) {
        for (size_t i = 0; i < ADJ_SEGMENTS; i++)
            if (adj->action[i] >= ADJ_ACTIONS)
                return "an adjuster action out of range";
        for (size_t i = 0; i < ADJ_DECILES - 1; i++)
            if (!isfinite(adj->edges[i]))
                return "a non-finite adjuster decile edge";
    }
    return NULL;
}

int model_load(Model **out, const char *path, int expect_hidden, char *err, size_t errlen)
{
    if (errlen)
        err[0] = '\0';
    FILE *fp = fopen(path, "rb");
    if (!fp) {
        snprintf(err, errlen, "cannot open %s: %s", path, strerror(errno));
        return -errno;
    }
    FileBuf fb = {0};
    unsigned char chunk[65536];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, fp)) > 0 && fb.b.len < (256u << 20))
        put(&fb, chunk, n);
    fclose(fp);
    int rc = -EINVAL;
    LstmWeights *w = NULL;
    Model *m = NULL;
    char magic[8];
    uint32_t u32[8];
    if (fb.err || fb.b.len < 8 + sizeof u32 + 4) {
        snprintf(err, errlen, "%s: file too short", path);
        goto fail;
    }
    uint32_t stored_crc;
    memcpy(&stored_crc, fb.b.p + fb.b.len - 4, 4);
    if (crc32_update(0, fb.b.p, fb.b.len - 4) != stored_crc) {
        snprintf(err, errlen, "%s: checksum mismatch (corrupt model file)", path);
        goto fail;
    }
    fb.b.len -= 4;
    get(&fb, magic, 8);
    get(&fb, u32, sizeof u32);
    if (memcmp(magic, "LTVDMODL", 8) != 0) {
        snprintf(err, errlen, "%s: not an ltvd model file", path);
        goto fail;
    }
    if (u32[0] < 3u || u32[0] > MODEL_FORMAT_VERSION) {
        snprintf(err, errlen, "%s: format version %u, this build reads 3 to %u", path, u32[0], MODEL_FORMAT_VERSION);
        goto fail;
    }
    if ((int)u32[2] != expect_hidden) {
        snprintf(err, errlen, "%s holds a network of hidden=%u, made with model.hidden_size=%u; this config has "
                 "model.hidden_size=%d (set it back, or move the file away to serve the fallback until a model of "
                 "the new size is trained)", path, u32[2], u32[2], expect_hidden);
        goto fail;
    }
    /* formats 3 and 4 had 6 head inputs: their network cannot serve with
     * this build's head; their fallback loads, and the network is dropped
     * (the fallback serves until the next retrain) */
    /* each format has its one count of head inputs */
    const bool old_head = u32[0] < 5u && u32[3] == MODEL_V4_HEAD_EXTRA;
    const bool v5_head = u32[0] == 5u && u32[3] == MODEL_V5_HEAD_EXTRA;
    /* format 6 is format 7 without p's calibration */
    const bool v7_head = (u32[0] == 6u || u32[0] == 7u) && u32[3] == MODEL_V7_HEAD_EXTRA;
    const bool v8_head = u32[0] == 8u && u32[3] == MODEL_V8_HEAD_EXTRA;
    const bool this_head = u32[0] >= 9u && u32[3] == HEAD_EXTRA; /* format 9 is format 10 without m_shrink */
    if (u32[1] != FEATURE_DIM || !(old_head || v5_head || v7_head || v8_head || this_head)) {
        snprintf(err, errlen, "%s: format %u with shapes input=%u extra=%u: a format-%u file has input=%d and "
                 "extra=%d (damaged, or not written by ltvd)", path, u32[0], u32[1], u32[3], u32[0], FEATURE_DIM,
                 format_head_extra(u32[0]));
        goto fail;
    }
    if ((rc = lstm_weights_alloc(&w, (int)u32[2], u32[6])) != 0)
        goto fail;
    w->hybrid = (u32[7] & 1u) != 0;
    rc = -EINVAL;
    uint64_t version;
    int64_t trained_at;
    double d7[7];
    FallbackFit f;
    TrainFigures t;
    GET(&fb, version);
    GET(&fb, trained_at);
    GET(&fb, w->calib.level_shift);
    if (u32[0] >= 7u) {
        GET(&fb, w->calib.p_scale);
        GET(&fb, w->calib.p_offset);
    }
    if (u32[0] >= 10u) {
        GET(&fb, w->calib.m_shrink);
        GET(&fb, w->calib.m_center);
    }
    get(&fb, d7, sizeof d7);
    f.bg = (BgnbdParams){d7[0], d7[1], d7[2], d7[3]};
    f.gg = (GammaGammaParams){d7[4], d7[5], d7[6]};
    GET(&fb, f.customers);
    GET(&fb, f.repeat_buyers);
    GET(&fb, f.purchases);
    GET(&fb, f.fitted_at);
    memset(&f.cold, 0, sizeof f.cold);
    f.cold.state = COLD_CAPPED;
    if (u32[0] >= 5u) {
        GET(&fb, f.cold.state);
        get(&fb, f.cold.beta_p, sizeof f.cold.beta_p);
        get(&fb, f.cold.beta_mu, sizeof f.cold.beta_mu);
        GET(&fb, f.cold.sigma);
        GET(&fb, f.cold.examples);
        GET(&fb, f.cold.converted);
    }
    GET(&fb, t.examples);
    GET(&fb, t.users);
    GET(&fb, t.epochs);
    GET(&fb, t.val_loss);
    GET(&fb, t.val_gini);
    GET(&fb, t.seconds);
    if (old_head) { /* skipped: LSTM weights and biases, the old head (3 (H+6) + 3) */
        size_t skip = sizeof(float) * (lstm_w_len(&w->cfg) + 4u * (size_t)w->cfg.hidden +
                                       3u * ((size_t)w->cfg.hidden + MODEL_V4_HEAD_EXTRA) + HEAD_OUT);
        if (fb.pos + skip > fb.b.len)
            fb.err = -EINVAL;
        else
            fb.pos += skip;
        w->calib = HEAD_CALIB_NONE;
    } else {
        get(&fb, w->w, sizeof(float) * lstm_w_len(&w->cfg));
        get(&fb, w->b, sizeof(float) * 4u * (size_t)w->cfg.hidden);
        if (v5_head || v7_head || v8_head)
            get_old_head(&fb, w->head_w, w->cfg.hidden, v7_head || v8_head, v8_head);
        else
            get_f32(&fb, w->head_w, head_w_len(&w->cfg));
        get_f32(&fb, w->head_b, HEAD_OUT);
    }
    uint32_t has_adj = 0;
    AdjTable adj;
    GET(&fb, has_adj);
    if (has_adj && (u32[0] == 3u || old_head)) {
        /* format 3: the adjuster table had no tenure; format 4's belongs to
         * the dropped network: either is dropped (the next adjuster run
         * learns a new one) */
        has_adj = 0;
        fb.pos = u32[0] == 3u ? fb.b.len : fb.pos + sizeof adj;
        if (fb.pos > fb.b.len)
            fb.err = -EINVAL;
    } else if (has_adj)
        GET(&fb, adj);
    if (fb.err || fb.pos != fb.b.len || u32[5] > MODEL_TRAINED || has_adj > 1) {
        snprintf(err, errlen, "%s: truncated or malformed body", path);
        goto fail;
    }
    const char *bad = model_values_bad(w, &f, u32[4], &adj, has_adj != 0);
    if (bad) {
        snprintf(err, errlen, "%s: %s (the checksum is right: a damaged writer or a crafted file)", path, bad);
        goto fail;
    }
    if ((rc = model_create(&m, w, &f, (int)u32[4], old_head ? MODEL_FALLBACK : (ModelStatus)u32[5], version)) != 0)
        goto fail;
    if (old_head && u32[5] == MODEL_TRAINED)
        snprintf(err, errlen, "%s: format %u, a network with %d head inputs, which this build does not have: the "
                 "fallback serves until the next retrain", path, u32[0], MODEL_V4_HEAD_EXTRA);
    m->trained_at = trained_at;
    m->train = t;
    m->has_adj = has_adj != 0;
    if (has_adj)
        m->adj = adj;
    lstm_weights_release(w);
    bytebuf_free(&fb.b);
    *out = m;
    return 0;
fail:
    lstm_weights_release(w);
    bytebuf_free(&fb.b);
    return rc;
}
