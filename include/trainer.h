/* trainer: fits the LSTM + ZILN head on examples cut from shoppers'
 * retained events (dataset.h). Pure computation on an immutable dataset,
 * in double precision; runs on the worker thread and allocates only its
 * own buffers.
 *
 * The head has two variants, hybrid and LSTM-only (head.h has both
 * formulas); trainer_run trains both (or the one train.head names) and
 * keeps the hybrid unless the LSTM-only head is better on validation by
 * more than one standard error.
 * After training, μ is shifted by one constant so that the network's total
 * expected spend over the current shoppers, as of now, equals the
 * fallback's: the network ranks, BG/NBD's ageing sets the level (no labels
 * are involved; brief §6 explains why a level learned from past cut times
 * does not transfer to an older cohort). */
#ifndef LTVD_TRAINER_H
#define LTVD_TRAINER_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "adjuster.h"
#include "bgnbd.h"
#include "dataset.h"
#include "encoding.h"
#include "model.h"
#include "shopper.h"

/* Every field comes from the train.* config keys (src/config.c holds the
 * defaults); the service fills it. */
typedef struct TrainConfig {
    int hidden, horizon_days;
    uint64_t seed;
    int max_epochs, batch;
    double lr;
    int cuts_per_shopper, grid_days;
    size_t max_examples;
    int bptt;              /* gradient flows back at most this many steps */
    int val_percent;
    int head;              /* 0: train both, keep the better; 1: hybrid only; 2: LSTM-only only */
    int level;             /* 0: auto (trainer_choose_level), 1: the fallback's total, 2: the network's own */
    double mean_loss_weight; /* train.mean_loss_weight: the Poisson term on the predicted mean (trainer_head_loss) */
    bool mean_shrink;      /* train.mean_shrink: with the network's own level, fit the mean's pull (trainer_fit_mean_shrink) */
    int ring;              /* model.recent_events: the browse and cart summary at a cut covers as many events
                            * as serving's ring holds (0: every event before the cut) */
    const atomic_bool *cancel; /* NULL, or set from another thread to stop at the next batch (-ECANCELED) */
} TrainConfig;


typedef struct TrainResult {
    LstmWeights *net;      /* the better variant, float, refs = 1 (caller releases) */
    bool hybrid;
    bool seasonal;         /* the head uses the time of year at as_of (1% of the cuts at or before now - 365 days) */
    bool seasonal_events;  /* the LSTM uses each event's (1% of the cuts a year older than the latest) */
    double val_loss;       /* of net */
    double val_loss_other; /* of the other variant */
    double val_loss_fallback;
    double val_loss_serving; /* of the model serving now (fallback or network) */
    double val_gini;
    double val_gini_fallback; /* the fallback's on the same validation cuts */
    double level_shift;    /* added to μ (docs/MODEL.md, "Training", step 6) */
    double p_scale, p_offset; /* p = σ(p_scale z0 + p_offset): the calibration of p (1, 0: none; step 6) */
    double m_shrink, m_center; /* the mean given a purchase pulled toward m_center where p is small (head.h; 0: none) */
    int level_rule;        /* LEVEL_RULE_*: how level_shift was chosen */
    double val_total_error_fallback;  /* the fallback's total error on the held-out shoppers at now - H */
    double val_total_error_held_out;  /* the network calibrated on training cuts one horizon earlier, there (a diagnostic) */
    double val_total_error_network;   /* the network's own before its level shift, there */
    uint64_t level_shoppers;          /* the held-out shoppers at now - H: the level's calibration set */
    uint64_t level_buyers;            /* of them, those with spend in (now - H, now] */
    uint64_t examples, val_examples, users;
    int epochs;
    int epochs_other;      /* of the other variant (0 if only one was trained) */
    double seconds;
} TrainResult;

/* Trains both variants and returns the hybrid unless the LSTM-only one has
 * a validation loss lower by more than one standard error.
 * serving: the network now serving (NULL if the fallback serves), to score
 * it on the same validation examples. -ENODATA if there are too few
 * matured examples. */
int trainer_run(const TrainSet *set, const TrainConfig *cfg, const FallbackFit *fit, const LstmWeights *serving,
                uint32_t new_id, TrainResult *out, char *err, size_t errlen);

/* The pull of the mean given a purchase toward the centre where p is small
 * (HeadCalib.m_shrink, m_center; docs/MODEL.md, "Training", step 6), fitted
 * on n held-out shoppers at now - H, z (n, 3) the network's pre-activations
 * there and y their spend after: m_center the p-weighted mean of log m, and
 * m_shrink, of a grid from 0 (none) to 1, the one whose means, scaled to
 * the shoppers' total, have the least Poisson deviance on their spend
 * (training then moves m_center: trainer_mean_shrink_centre).
 * cal's p calibration is used, its level is not; sets only m_shrink and
 * m_center (0, 0 when nobody spent or the centre is beyond HEAD_M_CENTER_MAX,
 * which a model file may not hold). Pure. */
void trainer_fit_mean_shrink(const double *z, const double *y, size_t n, HeadCalib *cal);

/* The pull's centre that moves no total: with cal->m_shrink > 0, sets
 * cal->m_center so that the pulled means of the n shoppers with
 * pre-activations z (n, 3) sum to their unpulled means (cal's p and level
 * in both), so the pull only changes how that total is shared among them.
 * Training calls it with every shopper of the training set at now (their
 * whole sequences), after the fit above. 0; -EDOM when no centre within HEAD_M_CENTER_MAX does (no
 * shopper, a total not finite), with cal's pull removed (m_shrink and
 * m_center 0). Nothing to do (0) when cal->m_shrink is 0. Pure but for
 * pace_point() between shoppers (the job's share of a core under load). */
int trainer_mean_shrink_centre(const double *z, size_t n, HeadCalib *cal);

/* train.level=auto's choice (docs/MODEL.md, "Training", step 6): the
 * network's own level rather than the fallback's, when the head learned
 * the time of year at as_of (seasonal), the set came from the training
 * history (from_history), and, on the held-out shoppers at now - H (their
 * spend after, y; the network's unshifted total, net; the fallback's, fb;
 * `buyers` of them with spend): TRAINER_LEVEL_MIN_BUYERS bought (the
 * level is then calibrated on them), or at least TRAINER_LEVEL_MIN_COMPARE
 * did and the network missed their total by less than the fallback did, in
 * log ratio, by more than se (the standard error of the network's log
 * ratio there). */
#define TRAINER_LEVEL_MIN_BUYERS 50
#define TRAINER_LEVEL_MIN_COMPARE 10
bool trainer_level_auto_own(bool seasonal, bool from_history, size_t buyers, double y, double net, double fb,
                            double se);

/* Backtest: the predictions a model would have served at the validation
 * cut times, with the matured outcomes (for the RL adjuster). net NULL means
 * the fallback. *out is malloc'd (caller frees). -ENODATA if none. */
int trainer_backtest(const TrainSet *set, const TrainConfig *cfg, const FallbackFit *fit, const LstmWeights *net,
                     AdjPair **out, size_t *n);

/* ---- the loss and its gradient (trainer_batch.c) ------------------------ */

/* The training loss at a cut beside the ZILN likelihood (docs/MODEL.md,
 * "Training", step 4, and "The mean's own loss"): mean_weight times the
 * Poisson deviance's terms in the head's mean m = p exp(mu + sigma^2/2),
 * (m - y log m) / mean_scale, with mean_scale the training labels' mean.
 * Where mu + sigma^2/2 (the log of the mean given a purchase) passes
 * log_cond_mean_cap, the term takes it at the cap: it then no longer acts
 * on mu and sigma (an overflow guard; the likelihood still does). */
typedef struct TrainLoss {
    double mean_weight, mean_scale, log_cond_mean_cap;
} TrainLoss;

/* The loss at one cut for head pre-activations z (3, anchors included:
 * head_forward's z) and label y: the ZILN negative log-likelihood, plus
 * the mean's term when l is not NULL and its weight is above 0; dldz (3)
 * receives its gradient when not NULL. */
double trainer_head_loss(const double *z, double y, const TrainLoss *l, double *dldz);

/* What trainer_batch_loss reuses between calls: grown as needed, at most
 * about 12 MiB at hidden 32 (trainer_batch.c). Zero-initialise; free with
 * trainer_scratch_free. */
typedef struct TrainScratch {
    double *buf;
    size_t cap;
    uint64_t *keys; /* room for keys_cap sort keys and keys_cap ints; a call with
                       n sequences puts its n ints right after its n keys */
    size_t keys_cap;
} TrainScratch;

void trainer_scratch_free(TrainScratch *sc);

/* The summed loss (*loss: trainer_head_loss under tl; tl NULL: the ZILN
 * likelihood alone, as validation scores) of nseqs sequences over their
 * cuts under the head variant, with their steps computed together
 * (trainer_batch.c); the gradient is added into grad and each sequence's loss written to
 * per_seq[i] when they are not NULL. Equals the sum of step-by-step BPTT
 * over the sequences up to rounding (the order of summation, the gates'
 * vectorised exp). 0, or -ENOMEM (grad may then hold part of the sum). */
int trainer_batch_loss(const double *theta, int H, const TrainSeq *const *seqs, int nseqs, bool hybrid, int bptt,
                       const TrainLoss *tl, double *grad, double *per_seq, double *loss, TrainScratch *sc);

/* Calls fn(arg, i, k, h) with the LSTM state h (H,) of seqs[i] at its
 * cut k, for every cut, computed in the same groups as
 * trainer_batch_loss (in no particular order). 0 or -ENOMEM. */
typedef void (*TrainStateFn)(void *arg, int i, int k, const double *h);
int trainer_batch_states(const double *theta, int H, const TrainSeq *const *seqs, int nseqs, TrainStateFn fn,
                         void *arg, TrainScratch *sc);

/* ---- exposed for the gradient checks ------------------------------------ */

/* The loss of one sequence (x: (n, FEATURE_DIM)) over its cuts under the
 * head variant (hybrid) and tl (as trainer_batch_loss's), and its gradient
 * added into grad when not NULL (a batch of one: trainer_batch_loss; NAN when out of memory)
 * (same layout as theta: W (4H, I+H), b (4H), head_w (3, H+E),
 * head_b (3)). bptt <= 0: full BPTT. */
double trainer_sequence_loss(const double *theta, int H, const double *x, int n, const TrainCut *cuts, int ncuts,
                             bool hybrid, int bptt, const TrainLoss *tl, double *grad);
size_t trainer_param_count(int H);
/* ZILN negative log-likelihood of y for head outputs o (3) plus anchors
 * a0, a1 (0 when o already holds them: head_forward's z); dldo (3)
 * receives its gradient when not NULL. */
double trainer_ziln_loss(const double *o, double a0, double a1, double y, double *dldo);

#endif
