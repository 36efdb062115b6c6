/* head: the ZILN head on top of a shopper's LSTM state, written once and
 * called by serving (model_predict) and by training (trainer.c, for the
 * loss, validation, the level shift and the backtest), so the prediction
 * served for a shopper is the one that was validated.
 *
 *   o = head_w [h; e'] + head_b        head_w (3, H+E), head_b (3,)
 *   z = (o0 + a0', o1 + a1', o2)       pre-activations
 *   p = σ(p_scale z0 + p_offset), μ = z1 + level_shift, σ = softplus(z2) + 0.05
 *   (with the mean's pull, HeadCalib.m_shrink > 0, μ moves so that log m =
 *   μ + σ²/2 is pulled toward m_center where p is small)
 *
 * Two variants (docs/MODEL.md):
 *   hybrid:    e' = e and a' = the fallback's anchors (head_anchors), so
 *              o = 0 reproduces the fallback's p and mean;
 *   lstm-only: e' = e with the fallback's inputs e[11..14] read as 0, and
 *              a' = 0: nothing of the fallback reaches it.
 * Double precision (serving widens its float state). Pure functions, any
 * thread, no allocation. */
#ifndef LTVD_HEAD_H
#define LTVD_HEAD_H

#include <stdbool.h>

#include "bgnbd.h"
#include "encoding.h"
#include "ziln.h"

#define HEAD_OUT 3       /* outputs: p-logit, mu, sigma before its softplus */
#define HEAD_SIGMA_MIN 0.05

/* The hybrid head's anchors from the fallback's prediction: a0 = logit p,
 * a1 = log(ltv / p) - sigma^2/2 (p clamped to [1e-4, 1 - 1e-4]). */
void head_anchors(const FallbackOutput *fo, double *a0, double *a1);

/* z (3,): the pre-activations for a shopper with LSTM state h (H,), head
 * inputs e (HEAD_EXTRA,) from encode_head_extra and the fallback's anchors
 * a0, a1, under weights w (3, H+E) and b (3,) of the given variant. u
 * (H+E,), when not NULL, receives [h; e'], the input the head saw (its
 * weights' gradient is z's times u). */
void head_forward(double *z, double *u, const double *w, const double *b, int H, const double *h, const double *e,
                  double a0, double a1, bool hybrid);

/* What training sets after the fit (docs/MODEL.md, "Training", step 6):
 * μ moved by level_shift, and p's logit taken to p_scale z0 + p_offset (a
 * Platt calibration fitted on matured held-out cuts; 1 and 0 when none). */
typedef struct HeadCalib {
    double level_shift, p_scale, p_offset;
    /* the mean given a purchase, m = exp(z1 + σ²/2), pulled toward
     * exp(m_center) where p is small: log m' = m_center + p / (p + m_shrink)
     * (log m - m_center), μ moved with it (σ kept); m_shrink 0: none */
    double m_shrink, m_center;
} HeadCalib;

#define HEAD_M_SHRINK_MAX 100.0 /* model_load refuses beyond */
#define HEAD_M_CENTER_MAX 50.0  /* |m_center|: the same; the fit fits none beyond */

#define HEAD_CALIB_NONE \
    ((HeadCalib){.level_shift = 0.0, .p_scale = 1.0, .p_offset = 0.0, .m_shrink = 0.0, .m_center = 0.0})

/* The distribution pre-activations z describe, under calibration c. */
ZilnParams head_ziln(const double *z, const HeadCalib *c);

#endif
