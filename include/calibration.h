/* calibration: predicted against realised spend by decile of the
 * prediction, from (prediction, outcome) pairs: the prediction log's
 * matured pairs and the backtest a retrain runs (GET /v1/calibration, the
 * dashboard's calibration chart).
 *
 * Pure: any thread; the caller owns the pairs and the result. */
#ifndef LTVD_CALIBRATION_H
#define LTVD_CALIBRATION_H

#include <stddef.h>
#include <stdint.h>

#include "adjuster.h"

#define CAL_GROUPS 10

typedef struct CalGroup {
    uint32_t count;
    double predicted; /* mean prediction of the group's pairs */
    double realised;  /* mean realised spend of the same pairs */
    double pred_min, pred_max;
} CalGroup;

typedef struct Calibration {
    size_t pairs;
    int ngroups;      /* CAL_GROUPS, or fewer with fewer pairs (0 with none) */
    CalGroup g[CAL_GROUPS];
    double predicted_total, realised_total;
} Calibration;

/* Sorts a copy of pairs (n,) by prediction and cuts it into equal-count
 * groups, lowest predictions first. 0, or -ENOMEM (out then holds no groups). */
int calibration_compute(const AdjPair *pairs, size_t n, Calibration *out);

#endif
