/* platt: a Platt calibration of predicted probabilities against
 * outcomes (src/platt.c). Pure; any thread. */
#ifndef LTVD_PLATT_H
#define LTVD_PLATT_H

#include <stddef.h>

#define PLATT_SCALE_MIN 0.2 /* a fit outside [min, max] is refused: a network that barely ranks, or noise */
#define PLATT_SCALE_MAX 5.0
#define PLATT_OFFSET_MAX 20.0 /* and one whose |offset| is beyond this (a saturated p; model_load allows 50) */

/* Fits P(y > 0) = σ(scale · logit + offset) by maximum likelihood (Newton's
 * method on the two parameters) over n pairs (logit[i], y[i]). 0 with
 * *scale and *offset set; -EDOM, leaving them alone, when the outcomes are
 * all of one kind, the fit does not converge, the scale falls outside
 * [PLATT_SCALE_MIN, PLATT_SCALE_MAX] or the offset outside ±PLATT_OFFSET_MAX. */
int platt_fit(const double *logit, const double *y, size_t n, double *scale, double *offset);

#endif
