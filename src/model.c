/* model: construction, reference counting, prediction and the model file. */
#include "model.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "hash.h"

static uint64_t splitmix64(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static float uniform_pm(uint64_t *s, float scale)
{
    return scale * (2.0f * (float)((splitmix64(s) >> 40) * (1.0 / 16777216.0)) - 1.0f);
}

static size_t lstm_w_len(const LstmConfig *c) { return 4u * (size_t)c->hidden * (size_t)(c->input + c->hidden); }
static size_t head_w_len(const LstmConfig *c) { return 3u * (size_t)(c->hidden + HEAD_EXTRA); }

static int lstm_weights_alloc(LstmWeights **out, int hidden, uint32_t id)
{
    LstmWeights *w = calloc(1, sizeof *w);
    if (!w)
        return -ENOMEM;
    w->cfg.input = FEATURE_DIM;
    w->cfg.hidden = hidden;
    w->id = id;
    atomic_init(&w->refs, 1);
    w->w = calloc(lstm_w_len(&w->cfg), sizeof(float));
    w->b = calloc(4u * (size_t)hidden, sizeof(float));
    w->head_w = calloc(head_w_len(&w->cfg), sizeof(float));
    w->head_b = calloc(3, sizeof(float));
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

static double softplus(double x) { return x > 20 ? x : log1p(exp(x)); }

void model_hybrid_anchors(const FallbackOutput *fo, double *a0, double *a1)
{
    double pb = fmin(fmax(fo->p_active, 1e-4), 1.0 - 1e-4);
    *a0 = log(pb / (1.0 - pb));
    *a1 = log(fmax(fo->ltv, 1e-6) / pb) - 0.5 * fo->ziln.sigma * fo->ziln.sigma;
}

void model_predict(const Model *m, const float *h, const ShopperAgg *agg, int64_t as_of, Prediction *out)
{
    ZilnParams z;
    CustomerSummary s;
    bool has_purchase = agg && shopper_summary(agg, as_of, &s);
    FallbackOutput fo;
    if (has_purchase) {
        fallback_predict(&m->fallback.bg, &m->fallback.gg, &s, m->horizon_days / 7.0, &fo);
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
        const int H = w->cfg.hidden, K = H + HEAD_EXTRA;
        float e[HEAD_EXTRA]; /* (E,) */
        encode_head_extra(e, agg, as_of, log1p(fo.ltv), fo.p_alive);
        double o[3];
        for (int r = 0; r < 3; r++) { /* head_w (3, H+E) @ [h; e] + head_b -> o (3,) */
            const float *row = w->head_w + (size_t)r * (size_t)K;
            double acc = w->head_b[r];
            for (int j = 0; j < H; j++)
                acc += (double)row[j] * h[j];
            for (int j = 0; j < HEAD_EXTRA; j++)
                acc += (double)row[H + j] * e[j];
            o[r] = acc;
        }
        double a0 = 0.0, a1 = 0.0;
        if (w->hybrid) /* residual on the fallback: o = 0 reproduces its p and level */
            model_hybrid_anchors(&fo, &a0, &a1);
        z.p = 1.0 / (1.0 + exp(-(o[0] + a0)));
        z.mu = o[1] + a1 + w->level_shift;
        z.sigma = softplus(o[2]) + 0.05;
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

/* ---- file format -------------------------------------------------------
 * All integers little-endian as stored by this (x86-64/arm64) build:
 *   char magic[8] "LTVDMODL"; u32 format; u32 input; u32 hidden; u32 extra;
 *   u32 horizon_days; u32 status; u32 net_id; u32 flags (1: hybrid head);
 *   u64 version; i64 trained_at; f64 level_shift;
 *   f64 r, alpha, a, b, p, q, v; u64 customers, repeat_buyers, purchases;
 *   i64 fitted_at; u64 examples, users, epochs; f64 val_loss, val_gini, seconds;
 *   f32 lstm_w[4H(I+H)], lstm_b[4H], head_w[3(H+E)], head_b[3];
 *   u32 has_adjuster; AdjTable (raw, when has_adjuster);
 * Format 3 (an AdjTable without tenure buckets) is read with its table dropped.
 *   u32 crc32 of every byte before it. */

typedef struct FileBuf {
    unsigned char *p;
    size_t len, cap, pos;
    int err;
} FileBuf;

static void put(FileBuf *b, const void *v, size_t n)
{
    if (b->err)
        return;
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 4096;
        while (cap < b->len + n)
            cap *= 2;
        unsigned char *np = realloc(b->p, cap);
        if (!np) {
            b->err = -ENOMEM;
            return;
        }
        b->p = np;
        b->cap = cap;
    }
    memcpy(b->p + b->len, v, n);
    b->len += n;
}

static void get(FileBuf *b, void *v, size_t n)
{
    if (b->err || b->pos + n > b->len) {
        b->err = -EINVAL;
        memset(v, 0, n);
        return;
    }
    memcpy(v, b->p + b->pos, n);
    b->pos += n;
}

#define PUT(b, v) put(b, &(v), sizeof(v))
#define GET(b, v) get(b, &(v), sizeof(v))

int model_save(const Model *m, const char *path)
{
    FileBuf b = {0};
    const LstmWeights *w = m->net;
    uint32_t u32[8] = {MODEL_FORMAT_VERSION, (uint32_t)w->cfg.input, (uint32_t)w->cfg.hidden, HEAD_EXTRA,
                       (uint32_t)m->horizon_days, (uint32_t)m->status, w->id, w->hybrid ? 1u : 0u};
    put(&b, "LTVDMODL", 8);
    put(&b, u32, sizeof u32);
    PUT(&b, m->version);
    PUT(&b, m->trained_at);
    PUT(&b, w->level_shift);
    const FallbackFit *f = &m->fallback;
    double d7[7] = {f->bg.r, f->bg.alpha, f->bg.a, f->bg.b, f->gg.p, f->gg.q, f->gg.v};
    put(&b, d7, sizeof d7);
    PUT(&b, f->customers);
    PUT(&b, f->repeat_buyers);
    PUT(&b, f->purchases);
    PUT(&b, f->fitted_at);
    const TrainFigures *t = &m->train;
    PUT(&b, t->examples);
    PUT(&b, t->users);
    PUT(&b, t->epochs);
    PUT(&b, t->val_loss);
    PUT(&b, t->val_gini);
    PUT(&b, t->seconds);
    put(&b, w->w, sizeof(float) * lstm_w_len(&w->cfg));
    put(&b, w->b, sizeof(float) * 4u * (size_t)w->cfg.hidden);
    put(&b, w->head_w, sizeof(float) * head_w_len(&w->cfg));
    put(&b, w->head_b, sizeof(float) * 3);
    uint32_t has_adj = m->has_adj ? 1u : 0u;
    PUT(&b, has_adj);
    if (has_adj)
        PUT(&b, m->adj);
    uint32_t crc = crc32_update(0, b.p, b.len);
    PUT(&b, crc);
    if (b.err) {
        free(b.p);
        return b.err;
    }
    char tmp[1100];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    int rc = 0;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        rc = -errno;
        goto out;
    }
    size_t off = 0;
    while (off < b.len) {
        ssize_t n = write(fd, b.p + off, b.len - off);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            rc = -errno;
            break;
        }
        off += (size_t)n;
    }
    if (!rc && fsync(fd) != 0)
        rc = -errno;
    close(fd);
    if (!rc && rename(tmp, path) != 0)
        rc = -errno;
    if (rc)
        unlink(tmp);
out:
    free(b.p);
    return rc;
}

int model_load(Model **out, const char *path, int expect_hidden, char *err, size_t errlen)
{
    FILE *fp = fopen(path, "rb");
    if (!fp) {
        snprintf(err, errlen, "cannot open %s: %s", path, strerror(errno));
        return -errno;
    }
    FileBuf b = {0};
    unsigned char chunk[65536];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, fp)) > 0 && b.len < (256u << 20))
        put(&b, chunk, n);
    fclose(fp);
    int rc = -EINVAL;
    LstmWeights *w = NULL;
    Model *m = NULL;
    char magic[8];
    uint32_t u32[8];
    if (b.err || b.len < 8 + sizeof u32 + 4) {
        snprintf(err, errlen, "%s: file too short", path);
        goto fail;
    }
    uint32_t stored_crc;
    memcpy(&stored_crc, b.p + b.len - 4, 4);
    if (crc32_update(0, b.p, b.len - 4) != stored_crc) {
        snprintf(err, errlen, "%s: checksum mismatch (corrupt model file)", path);
        goto fail;
    }
    b.len -= 4;
    get(&b, magic, 8);
    get(&b, u32, sizeof u32);
    if (memcmp(magic, "LTVDMODL", 8) != 0) {
        snprintf(err, errlen, "%s: not an ltvd model file", path);
        goto fail;
    }
    if (u32[0] != MODEL_FORMAT_VERSION && u32[0] != 3u) {
        snprintf(err, errlen, "%s: format version %u, this build reads 3 and %u", path, u32[0], MODEL_FORMAT_VERSION);
        goto fail;
    }
    if (u32[1] != FEATURE_DIM || u32[3] != HEAD_EXTRA || (int)u32[2] != expect_hidden) {
        snprintf(err, errlen, "%s: shapes input=%u hidden=%u extra=%u do not match this config (%d, %d, %d)", path,
                 u32[1], u32[2], u32[3], FEATURE_DIM, expect_hidden, HEAD_EXTRA);
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
    GET(&b, version);
    GET(&b, trained_at);
    GET(&b, w->level_shift);
    get(&b, d7, sizeof d7);
    f.bg = (BgnbdParams){d7[0], d7[1], d7[2], d7[3]};
    f.gg = (GammaGammaParams){d7[4], d7[5], d7[6]};
    GET(&b, f.customers);
    GET(&b, f.repeat_buyers);
    GET(&b, f.purchases);
    GET(&b, f.fitted_at);
    GET(&b, t.examples);
    GET(&b, t.users);
    GET(&b, t.epochs);
    GET(&b, t.val_loss);
    GET(&b, t.val_gini);
    GET(&b, t.seconds);
    get(&b, w->w, sizeof(float) * lstm_w_len(&w->cfg));
    get(&b, w->b, sizeof(float) * 4u * (size_t)w->cfg.hidden);
    get(&b, w->head_w, sizeof(float) * head_w_len(&w->cfg));
    get(&b, w->head_b, sizeof(float) * 3);
    uint32_t has_adj = 0;
    AdjTable adj;
    GET(&b, has_adj);
    if (has_adj && u32[0] == 3u) {
        /* format 3: the adjuster table had no tenure; it is dropped (the
         * next adjuster run learns a new one) */
        has_adj = 0;
        b.pos = b.len;
    } else if (has_adj)
        GET(&b, adj);
    if (b.err || b.pos != b.len || u32[5] > MODEL_TRAINED || has_adj > 1) {
        snprintf(err, errlen, "%s: truncated or malformed body", path);
        goto fail;
    }
    if ((rc = model_create(&m, w, &f, (int)u32[4], (ModelStatus)u32[5], version)) != 0)
        goto fail;
    m->trained_at = trained_at;
    m->train = t;
    m->has_adj = has_adj != 0;
    if (has_adj)
        m->adj = adj;
    lstm_weights_release(w);
    free(b.p);
    *out = m;
    return 0;
fail:
    lstm_weights_release(w);
    free(b.p);
    return rc;
}
