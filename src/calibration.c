/* calibration: equal-count groups of (prediction, outcome) pairs by
 * prediction, each group's mean prediction against its mean outcome
 * (include/calibration.h). */
#include "calibration.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static int cmp_pred(const void *a, const void *b)
{
    double x = ((const AdjPair *)a)->pred, y = ((const AdjPair *)b)->pred;
    return x < y ? -1 : x > y;
}

int calibration_compute(const AdjPair *pairs, size_t n, Calibration *out)
{
    memset(out, 0, sizeof *out);
    if (n == 0)
        return 0;
    AdjPair *sorted = malloc(n * sizeof *sorted); /* (n,) */
    if (!sorted)
        return -ENOMEM;
    memcpy(sorted, pairs, n * sizeof *sorted);
    qsort(sorted, n, sizeof *sorted, cmp_pred);
    int groups = n < CAL_GROUPS ? (int)n : CAL_GROUPS;
    for (int k = 0; k < groups; k++) {
        size_t lo = (size_t)k * n / (size_t)groups, hi = (size_t)(k + 1) * n / (size_t)groups;
        CalGroup *g = &out->g[k];
        double sp = 0, sy = 0;
        for (size_t i = lo; i < hi; i++) {
            sp += sorted[i].pred;
            sy += sorted[i].actual;
        }
        g->count = (uint32_t)(hi - lo);
        g->predicted = sp / (double)(hi - lo);
        g->realised = sy / (double)(hi - lo);
        g->pred_min = sorted[lo].pred;
        g->pred_max = sorted[hi - 1].pred;
        out->predicted_total += sp;
        out->realised_total += sy;
    }
    out->pairs = n;
    out->ngroups = groups;
    free(sorted);
    return 0;
}
