/* adjuster: the RL adjuster's arithmetic: segmenting, the simulated
 * episodes, the greedy policy (include/adjuster.h). Pure: the worker
 * learns a table, any thread reads a published one; the caller owns the
 * pairs and the table. */
#include "adjuster.h"

#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

const double ADJ_MULTIPLIERS[ADJ_ACTIONS] = {0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.25, 1.5, 1.75, 2.0};

int adjuster_segment(const AdjTable *t, double pred, double recency_days, double tenure_days)
{
    int d = 0;
    while (d < ADJ_DECILES - 1 && pred > t->edges[d])
        d++;
    int r = recency_days <= 30 ? 0 : recency_days <= 90 ? 1 : recency_days <= 180 ? 2 : 3;
    int a = tenure_days <= 90 ? 0 : tenure_days <= 180 ? 1 : tenure_days <= 365 ? 2 : 3;
    return (d * ADJ_RECENCY + r) * ADJ_TENURE + a;
}

double adjuster_multiplier(const AdjTable *t, double pred, double recency_days, double tenure_days)
{
    return ADJ_MULTIPLIERS[t->action[adjuster_segment(t, pred, recency_days, tenure_days)]];
}

/* A live pair served by network `net` (a pair of unknown network, 0, is
 * nobody's: ids are never 0). */
static bool own_pair(const AdjPair *p, uint32_t net) { return p->net == net && net != 0; }

size_t adjuster_select(const AdjPair *live, size_t nlive, const AdjPair *bt, size_t nbt, int64_t window,
                       int64_t latest, uint32_t net, AdjPair *out, size_t *from_live)
{
    int64_t newest = 0;
    for (size_t i = 0; i < nlive; i++)
        if (own_pair(&live[i], net) && live[i].t > newest && live[i].t <= latest)
            newest = live[i].t;
    size_t n = 0;
    for (size_t i = 0; newest && i < nlive; i++) /* t == 0: when it was served is not known */
        if (own_pair(&live[i], net) && live[i].t > 0 && live[i].t > newest - window && live[i].t <= newest)
            out[n++] = live[i];
    if (n >= ADJ_RECENT_MIN) {
        *from_live = n;
        return n;
    }
    n = 0;
    for (size_t i = 0; i < nlive; i++)
        if (own_pair(&live[i], net) && live[i].t <= latest)
            out[n++] = live[i];
    if (nbt)
        memcpy(out + n, bt, nbt * sizeof *bt);
    *from_live = n;
    return n + nbt;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* The cost of a corrected total m·Σp against the realised Σy, in units of
 * the prediction (e = m − ρ): squared, and ADJ_OVER_WEIGHT times as much
 * when the total is over-predicted (e > 0): an ad bidder pays for an
 * over-prediction (a bid above what the shopper returns) and only forgoes
 * a margin on an under-prediction (docs/MODEL.md, "Reward"). */
static double cost(double e)
{
    return e > 0 ? ADJ_OVER_WEIGHT * e * e : e * e;
}

/* With ρ = Σy/Σp the batch's realised-to-predicted ratio (clipped at 10 so
 * a single heavy spender cannot dominate), r = cost(1 − ρ) − cost(m − ρ):
 * how much less the corrected total costs than the uncorrected one. Its
 * expectation is largest at m = the 1/(1 + ADJ_OVER_WEIGHT) expectile of ρ
 * (the mean ratio when ADJ_OVER_WEIGHT is 1; below it otherwise, by an
 * amount that grows with the batches' spread). */
static double reward(double sp, double sy, double m)
{
    if (sp <= 0)
        return 0.0;
    double rho = fmin(sy / sp, 10.0);
    return cost(1.0 - rho) - cost(m - rho);
}

static int greedy(const AdjTable *t, int s)
{
    int best = ADJ_IDENTITY;
    for (int a = 0; a < ADJ_ACTIONS; a++)
        if (t->visits[s][a] >= ADJ_MIN_VISITS && t->q[s][a] > t->q[s][best])
            best = a;
    return best;
}

int adjuster_learn(const AdjPair *pairs, size_t n, uint64_t seed, int episodes_per_segment, const AdjTable *prev,
                   AdjTable *out)
{
    if (n < 100)
        return -ENODATA;
    memset(out, 0, sizeof *out);
    memset(out->action, ADJ_IDENTITY, sizeof out->action); /* no outcomes, no correction */
    if (prev) {
        memcpy(out->trend, prev->trend, sizeof out->trend);
        out->runs = prev->runs;
    }
    double *sorted = malloc(n * sizeof(double));
    size_t *idx = malloc(n * sizeof(size_t));
    size_t start[ADJ_SEGMENTS + 1] = {0};
    int *seg = malloc(n * sizeof(int));
    if (!sorted || !idx || !seg) {
        free(sorted), free(idx), free(seg);
        return -ENOMEM;
    }
    for (size_t i = 0; i < n; i++)
        sorted[i] = pairs[i].pred;
    qsort(sorted, n, sizeof(double), cmp_double);
    for (int d = 1; d < ADJ_DECILES; d++)
        out->edges[d - 1] = sorted[(size_t)d * n / ADJ_DECILES];
    /* bucket the pairs by segment (counting sort) */
    for (size_t i = 0; i < n; i++) {
        seg[i] = adjuster_segment(out, pairs[i].pred, pairs[i].recency_days, pairs[i].tenure_days);
        out->pairs[seg[i]]++;
    }
    for (int s = 0; s < ADJ_SEGMENTS; s++)
        start[s + 1] = start[s] + out->pairs[s];
    size_t fill[ADJ_SEGMENTS];
    memcpy(fill, start, sizeof fill);
    for (size_t i = 0; i < n; i++)
        idx[fill[seg[i]]++] = i;
    uint64_t rng = seed * 0x2545f4914f6cdd1dull + 17;
    for (int s = 0; s < ADJ_SEGMENTS; s++) {
        size_t cnt = out->pairs[s];
        if (cnt < 8)
            continue; /* too few outcomes to learn from: stays x1.0 */
        int E = episodes_per_segment;
        for (int e = 0; e < E; e++) {
            double eps = fmax(0.05, 1.0 - (double)e / (0.7 * E));
            int a;
            if (e < ADJ_ACTIONS * ADJ_MIN_VISITS)
                a = e % ADJ_ACTIONS; /* warm-up: every action is tried ADJ_MIN_VISITS times */
            else if ((double)(splitmix64(&rng) >> 11) * (1.0 / 9007199254740992.0) < eps)
                a = (int)(splitmix64(&rng) % ADJ_ACTIONS);
            else {
                a = 0;
                for (int k = 1; k < ADJ_ACTIONS; k++)
                    if (out->q[s][k] > out->q[s][a])
                        a = k;
            }
            double sp = 0, sy = 0;
            for (int k = 0; k < ADJ_BATCH; k++) {
                const AdjPair *p = &pairs[idx[start[s] + splitmix64(&rng) % cnt]];
                sp += p->pred;
                sy += p->actual;
            }
            double r = reward(sp, sy, ADJ_MULTIPLIERS[a]);
            out->visits[s][a]++;
            out->q[s][a] += (r - out->q[s][a]) / out->visits[s][a]; /* one-step episode: the target is r */
            out->episodes++;
        }
    }
    /* the served policy, and its reward over every segment's whole replay set */
    double total_r = 0;
    int counted = 0;
    for (int s = 0; s < ADJ_SEGMENTS; s++) {
        if (!out->pairs[s])
            continue;
        double sp = 0, sy = 0, dev = 0;
        for (size_t k = start[s]; k < start[s + 1]; k++) {
            sp += pairs[idx[k]].pred;
            sy += pairs[idx[k]].actual;
        }
        /* Is this segment's outcome ratio R = Σy/Σp distinguishable from 1
         * given its distinct pairs? (Episodes resample the same pairs, so
         * their count says nothing about this.) se(R) = sqrt(Σ(y - R p)²)/Σp. */
        double R = sp > 0 ? sy / sp : 1.0;
        for (size_t k = start[s]; k < start[s + 1]; k++) {
            double d = pairs[idx[k]].actual - R * pairs[idx[k]].pred;
            dev += d * d;
        }
        double se = sp > 0 ? sqrt(dev) / sp : INFINITY;
        out->ratio[s] = R;
        bool material = out->pairs[s] >= ADJ_MIN_PAIRS && fabs(R - 1.0) >= ADJ_MIN_EFFECT && fabs(R - 1.0) > ADJ_Z * se;
        out->action[s] = (uint8_t)(material ? greedy(out, s) : ADJ_IDENTITY);
        total_r += reward(sp, sy, ADJ_MULTIPLIERS[out->action[s]]);
        counted++;
    }
    out->reward_greedy = counted ? total_r / counted : 0.0;
    memmove(out->trend, out->trend + 1, sizeof out->trend - sizeof out->trend[0]);
    out->trend[7] = out->reward_greedy;
    out->runs++;
    free(sorted), free(idx), free(seg);
    return 0;
}
