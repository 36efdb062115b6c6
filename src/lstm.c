/* lstm: the forward step. One sgemv computes all four gates at once. */
#include "lstm.h"

#include <cblas.h>
#include <math.h>
#include <string.h>

static inline float sigmoidf(float z) { return 1.0f / (1.0f + expf(-z)); }

void lstm_step(const LstmConfig *cfg, const float *w, const float *b, const float *x, float *h, float *c,
               float *scratch)
{
    const int nin = cfg->input, H = cfg->hidden, K = nin + H;
    float *xh = scratch;     /* (I+H,) */
    float *z = scratch + K;  /* (4H,) */
    memcpy(xh, x, sizeof(float) * (size_t)nin);
    memcpy(xh + nin, h, sizeof(float) * (size_t)H);
    memcpy(z, b, sizeof(float) * 4u * (size_t)H);
    /* W (4H, K) @ xh (K,) + z -> z (4H,) */
    cblas_sgemv(CblasRowMajor, CblasNoTrans, 4 * H, K, 1.0f, w, K, xh, 1, 1.0f, z, 1);
    for (int j = 0; j < H; j++) {
        float ig = sigmoidf(z[j]);
        float fg = sigmoidf(z[H + j]);
        float gg = tanhf(z[2 * H + j]);
        float og = sigmoidf(z[3 * H + j]);
        c[j] = fg * c[j] + ig * gg;
        h[j] = og * tanhf(c[j]);
    }
}
