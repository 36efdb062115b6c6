/* A small model for the model tests (test_math.c, test_model_file.c): a
 * seeded network of hidden 8 beside the published CDNOW fallback, status
 * fallback, and a shopper with four purchases a month apart from
 * 1997-01-01. Release the model and the network after use. */
#ifndef LTVD_TEST_MODEL_FIXTURE_H
#define LTVD_TEST_MODEL_FIXTURE_H

#include "model.h"
#include "test_util.h"
#include "timeutil.h"

static inline Model *fixture_model(LstmWeights **net, ShopperAgg *agg)
{
    ASSERT(lstm_weights_create(net, 8, 1, 1) == 0);
    FallbackFit fit = {BGNBD_CDNOW_PRIOR, GG_CDNOW_PRIOR, 0, 0, 0, 0, {0}};
    Model *m;
    ASSERT(model_create(&m, *net, &fit, 182, MODEL_FALLBACK, 1) == 0);
    shopper_agg_init(agg);
    int64_t t0 = time_days_from_civil(1997, 1, 1) * 86400;
    for (int k = 0; k < 4; k++) {
        Event ev = {.ts = t0 + k * 30 * 86400, .value = 20, .quantity = 1, .type = EV_PURCHASE};
        shopper_agg_apply(agg, &ev);
    }
    return m;
}

#endif
