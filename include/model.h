/* model: an immutable, reference-counted snapshot of everything that turns a
 * shopper into a prediction: the LSTM weights (LstmWeights), the ZILN head,
 * and the fitted BG/NBD + Gamma-Gamma fallback.
 *
 * A Model is never modified once published (service_publish); a retrain or
 * refit builds a new one and the service swaps the pointer. Readers hold a reference
 * (model_retain/model_release, atomic, any thread); the last release frees.
 *
 * The network is shared between models that differ only in the fallback
 * (an LstmWeights is itself reference-counted), so a fallback refit does not
 * invalidate shoppers' LSTM states: states are tagged with network->id. */
#ifndef LTVD_MODEL_H
#define LTVD_MODEL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "adjuster.h"
#include "bgnbd.h"
#include "coldstart.h"
#include "encoding.h"
#include "head.h"
#include "lstm.h"
#include "shopper.h"
#include "ziln.h"

#define MODEL_FILE_NAME "model.bin"
/* Network ids (LstmWeights.id): a trained network takes the model version
 * it was trained as, below this bit; an untrained one (the fallback's) has
 * it set, with train.seed in the rest (src/main.c). Never 0: a state
 * tagged 0 belongs to no network (src/service_shard.c). */
#define NET_ID_UNTRAINED 0x80000000u
#define MODEL_FORMAT_VERSION 10u
#define MODEL_V4_HEAD_EXTRA 6 /* head inputs of formats 3 and 4 */
#define MODEL_V5_HEAD_EXTRA 9 /* of format 5: no time of year at as_of, no silence hinges */
#define MODEL_V7_HEAD_EXTRA 11 /* of formats 6 and 7: no silence hinges (e[7], e[8] now) */
#define MODEL_V8_HEAD_EXTRA 13 /* of format 8: no season by the fallback's p (e[13], e[14] now) */

typedef enum { MODEL_FALLBACK = 0, MODEL_TRAINED = 1 } ModelStatus;

/* LSTM + head weights. Immutable once published. */
typedef struct LstmWeights {
    atomic_int refs;
    uint32_t id;      /* identity that shoppers' states are tagged with */
    bool hybrid;      /* head predicts a residual on the fallback (docs/MODEL.md) */
    HeadCalib calib;  /* the level shift added to mu, the calibration of p and the mean's pull (head.h) */
    LstmConfig cfg;   /* input = FEATURE_DIM, hidden = H */
    float *w;         /* (4H, I+H) stacked gates i, f, g, o */
    float *b;         /* (4H,) */
    double *head_w;   /* (3, H+E): rows p-logit, mu, sigma-pre (head.h); f32 values, as the file stores them */
    double *head_b;   /* (3,) */
} LstmWeights;

/* How a network's level was chosen (docs/MODEL.md, "Training", step 6):
 * the fallback's total at now, or the network's own, calibrated on the
 * held-out shoppers at the latest matured cut time (now - H). */
enum { LEVEL_RULE_FALLBACK = 0, LEVEL_RULE_NETWORK = 1 };

/* "fallback" or "network". */
const char *model_level_rule_name(int rule);

typedef struct TrainFigures {
    uint64_t examples, users, epochs;
    double val_loss, val_gini, seconds;
    /* of the last run, in memory only: */
    uint64_t events, history_events; /* in the training set; from the training history on disk */
    double val_loss_other, val_loss_fallback, val_loss_serving, val_gini_fallback;
    double level_shift, p_scale, p_offset, m_shrink, m_center;
    double val_total_error_fallback, val_total_error_held_out, val_total_error_network;
    uint64_t level_shoppers, level_buyers; /* the held-out shoppers at now - H, and those with spend after */
    int level_rule; /* LEVEL_RULE_* */
    bool hybrid, swapped, seasonal, seasonal_events;
} TrainFigures;

typedef struct FallbackFit {
    BgnbdParams bg;
    GammaGammaParams gg;
    uint64_t customers, repeat_buyers, purchases; /* what the fit saw */
    int64_t fitted_at;                            /* 0: never fitted, prior in use */
    ColdStartFit cold;                            /* shoppers with events but no purchase */
} FallbackFit;

typedef struct Model {
    atomic_int refs;
    uint64_t version;           /* increases on every swap */
    ModelStatus status;
    int64_t trained_at;         /* 0 if never */
    int horizon_days;
    LstmWeights *net;           /* always present; serves only when TRAINED */
    FallbackFit fallback;
    TrainFigures train;
    ZilnParams cold_start;      /* precomputed fallback for unknown shoppers */
    bool has_adj;               /* the RL adjuster's corrections apply */
    AdjTable adj;
} Model;

/* A prediction as served. */
typedef struct Prediction {
    double ltv, p_active, p10, p50, p90;
    double uncorrected;  /* ltv before the RL adjuster's correction */
    bool from_network;
} Prediction;

/* Random network (seeded) of the given width; refs = 1. */
int lstm_weights_create(LstmWeights **out, int hidden, uint64_t seed, uint32_t id);
void lstm_weights_retain(LstmWeights *w);
void lstm_weights_release(LstmWeights *w);
/* The same network: shape, head kind, calibration and every weight equal
 * (the id aside). */
bool lstm_weights_same(const LstmWeights *a, const LstmWeights *b);

/* A new model around net (retained), with the fallback fit; refs = 1.
 * Precomputes the cold-start prediction. */
int model_create(Model **out, LstmWeights *net, const FallbackFit *fit, int horizon_days, ModelStatus status,
                 uint64_t version);
void model_retain(Model *m);
void model_release(Model *m); /* NULL-safe */

/* The fallback's prediction at as_of over horizon_days: BG/NBD + Gamma-Gamma
 * for a shopper with a purchase, the cold start from behaviour (coldstart.h)
 * for one with events and no purchase, the population prior for an unknown
 * one (agg NULL). rs summarises the retained events (NULL: none). Pure. */
void model_fallback(const FallbackFit *fit, int horizon_days, const ShopperAgg *agg, const RecentSummary *rs,
                    int64_t as_of, FallbackOutput *out);

/* The prediction for a shopper at as_of. h (H,) is the shopper's LSTM state
 * under m->net (ignored unless the model is TRAINED); agg NULL means an
 * unknown shopper; rs summarises its retained events (NULL: none).
 * Allocation-free; any thread. */
void model_predict(const Model *m, const float *h, const ShopperAgg *agg, const RecentSummary *rs, int64_t as_of,
                   Prediction *out);

/* Versioned binary file: magic, format, shapes, fields, floats, CRC-32.
 * Save writes to a temp file, fsyncs and renames. Load verifies everything
 * and fails with -EINVAL and a message on any mismatch. A file of formats 3
 * or 4 loads without its network (status fallback) and with err saying so
 * (err[0] is 0 when there is nothing to say); one of format 5 loads with
 * zero weights on the two head inputs it lacked, so it predicts as it did. */
int model_save(const Model *m, const char *path);
int model_load(Model **out, const char *path, int expect_hidden, char *err, size_t errlen);

#endif
