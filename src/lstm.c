/* lstm: the forward step. One sgemv computes all four gates at once; the
 * gate nonlinearities then run as plain loops over arrays that the compiler
 * vectorises. libm's expf/tanhf are scalar calls and cost more than the
 * sgemv itself (measured: 55% of a step in tanhf/expm1f), so exp is computed
 * here: exp(x) = 2^n * e^r with n = round(x / ln 2), |r| <= ln2/2, and e^r
 * by its degree-6 Taylor polynomial (relative error < 2e-7). tanh(x) is
 * 2 sigmoid(2x) - 1. Any thread, on caller-owned state and scratch. */
#include "lstm.h"

#include <cblas.h>
#include <stdint.h>
#include <string.h>

static inline float exp_approx(float x)
{
    x = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
    /* round to nearest by the 1.5 * 2^23 trick (no call, vectorises) */
    float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
    float r = x - n * 0.693145751953125f - n * 1.428606820309417232e-6f;
    float p = 1.0f + r * (1.0f + r * (0.5f + r * (1.0f / 6 + r * (1.0f / 24 + r * (1.0f / 120 + r * (1.0f / 720))))));
    int32_t bits = ((int32_t)n + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

/* out[k] = sigmoid(in[k]) for k < n. Vectorised by the compiler (needs
 * -fno-trapping-math, set in meson.build). */
static void sigmoid_vec(float *out, const float *in, int n)
{
    for (int k = 0; k < n; k++)
        out[k] = 1.0f / (1.0f + exp_approx(-in[k]));
}

void lstm_step(const LstmConfig *cfg, const float *w, const float *b, const float *x, float *h, float *c,
               float *scratch)
{
    const int nin = cfg->input, H = cfg->hidden, K = nin + H;
    float *xh = scratch;     /* (I+H,) */
    float *z = scratch + K;  /* (4H,): pre-activations, then activations */
    memcpy(xh, x, sizeof(float) * (size_t)nin);
    memcpy(xh + nin, h, sizeof(float) * (size_t)H);
    memcpy(z, b, sizeof(float) * 4u * (size_t)H);
    /* W (4H, K) @ xh (K,) + z -> z (4H,) */
    cblas_sgemv(CblasRowMajor, CblasNoTrans, 4 * H, K, 1.0f, w, K, xh, 1, 1.0f, z, 1);
    float *g = z + 2 * H;    /* (H,): cell candidate, tanh */
    for (int j = 0; j < H; j++)
        g[j] *= 2.0f;
    sigmoid_vec(z, z, 4 * H);
    for (int j = 0; j < H; j++) {
        g[j] = 2.0f * g[j] - 1.0f;               /* tanh(z_g) */
        c[j] = z[H + j] * c[j] + z[j] * g[j];    /* f*c + i*g */
        xh[j] = 2.0f * c[j];                      /* reuse scratch for tanh(c) */
    }
    sigmoid_vec(xh, xh, H);
    for (int j = 0; j < H; j++)
        h[j] = z[3 * H + j] * (2.0f * xh[j] - 1.0f); /* o * tanh(c) */
}
