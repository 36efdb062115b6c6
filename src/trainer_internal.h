/* trainer_internal: what trainer.c (fitting) shares with trainer_eval.c
 * (predictions at the cuts, the Gini, the level, the backtest). Not a
 * public interface; include/trainer.h is.
 *
 * Threads: none of its own; each function uses only what it is given. */
#ifndef LTVD_TRAINER_INTERNAL_H
#define LTVD_TRAINER_INTERNAL_H

#include <math.h>
#include <stdbool.h>

#include "trainer.h"

/* tanh through exp, for trainer_step_forward (the level's walk over every
 * shopper): glibc's tanh goes through expm1, several times slower than
 * exp (perf of a retrain, before training moved to trainer_batch.c's
 * vectorised gates). Below 1e-3 the series
 * x - x^3/3 (relative error under 2x^4/15 <= 1.4e-13); above it the
 * formula's cancellation, relative error under about 1e-13. */
static inline double tanh_exp(double x)
{
    double a = fabs(x);
    if (a < 1e-3)
        return x - x * x * x / 3.0;
    double e = exp(-2.0 * a), r = (1.0 - e) / (1.0 + e);
    return x < 0 ? -r : r;
}

/* Inference-only LSTM step in double: W (4H, I+H), b (4H,), x (I,), h (H,),
 * c (H,), scratch z (4H,), xh (I+H,). */
void trainer_step_forward(const double *W, const double *b, int H, const double *x, double *h, double *c, double *z,
                          double *xh);

/* The mean spend the head predicts from pre-activations z (3,) under calibration c. */
double trainer_head_mean(const double *z, const HeadCalib *c);

/* A network's weights as the trainer's flat parameter vector theta
 * (trainer_param_count(hidden) doubles). */
void trainer_theta_from_net(double *theta, const LstmWeights *w);

/* The cutting rules among the train.* keys. */
DatasetConfig trainer_dataset_config(const TrainConfig *cfg);

/* Normalised Gini of the network's predicted means on the validation cuts;
 * *fallback gets the fallback's on the same cuts. */
double trainer_val_gini(const double *theta, int H, const Dataset *d, bool hybrid, double *fallback);

/* The level shift and the calibration of p to serve with (docs/MODEL.md,
 * "Training", step 6); out gets them, the rule chosen (level_rule) and the
 * checked total errors (val_total_error_*). */
HeadCalib trainer_choose_level(const TrainSet *set, const TrainConfig *cfg, const FallbackFit *fit, const double *theta,
                            bool hybrid, const Dataset *d, TrainResult *out);

#endif
