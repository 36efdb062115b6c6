/* ranking: the normalised Gini of (score, actual) pairs (src/ranking.c). */
#ifndef LTVD_RANKING_H
#define LTVD_RANKING_H

#include <stdbool.h>
#include <stddef.h>

/* pairs: (n, 2) as (score, actual), sorted in place by score, highest first.
 * by_pred false: rank by the actual values themselves (the Gini of a
 * perfect score, the normaliser). 0 when the actual values sum to <= 0. */
double ranking_gini(double *pairs, size_t n, bool by_pred);

#endif
