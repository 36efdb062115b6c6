/* ranking: the normalised Gini of a set of (score, actual) pairs, the ZILN
 * paper's ranking metric: how much of the actual value the score's order
 * puts first. Used by the trainer on its validation cuts. Pure; any thread. */
#include "ranking.h"

#include <stdlib.h>

static int cmp_pair_desc(const void *a, const void *b)
{
    const double *x = a, *y = b;
    return x[0] > y[0] ? -1 : x[0] < y[0];
}

double ranking_gini(double *pairs, size_t n, bool by_pred)
{
    if (!by_pred)
        for (size_t i = 0; i < n; i++)
            pairs[2 * i] = pairs[2 * i + 1];
    qsort(pairs, n, 2 * sizeof(double), cmp_pair_desc);
    double total = 0, cum = 0, area = 0;
    for (size_t i = 0; i < n; i++)
        total += pairs[2 * i + 1];
    if (total <= 0)
        return 0;
    for (size_t i = 0; i < n; i++) {
        cum += pairs[2 * i + 1];
        area += cum / total;
    }
    return area / (double)n - (double)(n + 1) / (2.0 * (double)n);
}
