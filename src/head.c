/* head: the head's forward pass and its anchors (include/head.h). Pure;
 * any thread. */
#include "head.h"

#include <math.h>

#include "util.h"

void head_anchors(const FallbackOutput *fo, double *a0, double *a1)
{
    double pb = fmin(fmax(fo->p_active, 1e-4), 1.0 - 1e-4);
    *a0 = log(pb / (1.0 - pb));
    *a1 = log(fmax(fo->ltv, 1e-6) / pb) - 0.5 * fo->ziln.sigma * fo->ziln.sigma;
}

void head_forward(double *z, double *u, const double *w, const double *b, int H, const double *h, const double *e,
                  double a0, double a1, bool hybrid)
{
    const int U = H + HEAD_EXTRA;
    double ev[HEAD_EXTRA]; /* (E,): e as this variant sees it */
    for (int j = 0; j < HEAD_EXTRA; j++)
        ev[j] = hybrid || j < HEAD_EXTRA_SHOPPER ? e[j] : 0.0;
    for (int r = 0; r < HEAD_OUT; r++) { /* w (3, H+E) @ [h; e'] (H+E,) + b -> z (3,) */
        const double *row = w + (size_t)r * (size_t)U;
        double acc = b[r];
        for (int j = 0; j < H; j++)
            acc += row[j] * h[j];
        for (int j = 0; j < HEAD_EXTRA; j++)
            acc += row[H + j] * ev[j];
        z[r] = acc;
    }
    if (hybrid) { /* a residual on the fallback */
        z[0] += a0;
        z[1] += a1;
    }
    if (u) {
        for (int j = 0; j < H; j++)
            u[j] = h[j];
        for (int j = 0; j < HEAD_EXTRA; j++)
            u[H + j] = ev[j];
    }
}

ZilnParams head_ziln(const double *z, const HeadCalib *c)
{
    const double p = sigmoid(c->p_scale * z[0] + c->p_offset), sigma = softplus(z[2]) + HEAD_SIGMA_MIN;
    double mu = z[1];
    if (c->m_shrink > 0) { /* log m toward m_center by the weight p / (p + m_shrink) */
        const double half_var = 0.5 * sigma * sigma, w = p / (p + c->m_shrink);
        mu = c->m_center + w * (z[1] + half_var - c->m_center) - half_var;
    }
    return (ZilnParams){.p = p, .mu = mu + c->level_shift, .sigma = sigma};
}
