/* adjuster: the reinforcement-learning correction of served predictions.
 *
 * State: a segment = decile of the predicted value x recency bucket (days
 * since the shopper's last event: <=30, <=90, <=180, >180) x tenure bucket
 * (days since the shopper's first event: <=90, <=180, <=365, >365). Tenure
 * keeps what was learned about young shoppers from being applied to older
 * ones, whose behaviour it says nothing about (docs/MODEL.md). Action: a
 * multiplier of that segment's predictions (ADJ_MULTIPLIERS). Reward, for a
 * batch of one segment's pairs with ratio ρ = min(Σy / Σp, 10) (clipped so
 * one heavy spender cannot dominate): r = cost(1 − ρ) − cost(m − ρ) with
 * cost(e) = e², times ADJ_OVER_WEIGHT when e > 0: how much less the
 * corrected total costs than the uncorrected one, in units of the
 * prediction, an over-predicted total costing more (an ad bidder pays for
 * an over-prediction and forgoes a margin on an under-prediction;
 * docs/MODEL.md, "Reward"). Its expectation peaks at the
 * 1/(1 + ADJ_OVER_WEIGHT) expectile of ρ: the mean ratio when outcomes are
 * certain, below it when they are noisy.
 *
 * Learning is tabular Q-learning with one-step episodes, in simulation only:
 * each episode replays a batch of matured (prediction, outcome) pairs from
 * one segment, chooses an action ε-greedily (ε decays; every action is
 * first tried ADJ_MIN_VISITS times), and updates Q by the sample mean.
 * Serving uses the greedy policy, but keeps ×1.0 unless the segment's ratio
 * is off 1 by ADJ_MIN_EFFECT and by more than ADJ_Z standard errors over at
 * least ADJ_MIN_PAIRS distinct pairs. It learns from the newest outcomes
 * alone once there are enough of them (adjuster_select): older ones describe
 * a season or a behaviour that may have passed.
 * Pure functions; the table is immutable once published. */
#ifndef LTVD_ADJUSTER_H
#define LTVD_ADJUSTER_H

#include <stddef.h>
#include <stdint.h>

#define ADJ_DECILES 10
#define ADJ_RECENCY 4
#define ADJ_TENURE 4
#define ADJ_SEGMENTS (ADJ_DECILES * ADJ_RECENCY * ADJ_TENURE)
#define ADJ_ACTIONS 11
#define ADJ_IDENTITY 5     /* index of x1.0 */
#define ADJ_MIN_PAIRS 100  /* ... with at least this many outcomes */
#define ADJ_MIN_EFFECT 0.2 /* ... and off by at least 20% */
#define ADJ_Z 3.0          /* a segment is corrected only if its ratio is this many SEs from 1 */
#define ADJ_MIN_VISITS 20
#define ADJ_BATCH 32
#define ADJ_RECENT_MIN 1000 /* live pairs of the newest horizon that replace all older evidence */
#ifndef ADJ_OVER_WEIGHT
#define ADJ_OVER_WEIGHT 2.0 /* an over-predicted total costs this many times an under-predicted one */
#endif

extern const double ADJ_MULTIPLIERS[ADJ_ACTIONS];

typedef struct AdjPair {
    double pred;          /* value served, uncorrected */
    double actual;        /* realised spend in its window */
    double recency_days;  /* days since the shopper's last event at prediction time */
    double tenure_days;   /* days since the shopper's first event at prediction time */
    int64_t t;            /* when the prediction was served (its as_of, Unix s); 0: not known (a
                           * backtest's pair, or one restored from a snapshot of format 3 or older) */
    uint32_t net;         /* the network of the model that served it (LstmWeights.id); 0: not known (a
                           * backtest's pair, or one restored from a snapshot of format 4 or older) */
    uint32_t reserved;    /* 0 (snapshots hold the struct: its padding is explicit) */
} AdjPair;

typedef struct AdjTable {
    double edges[ADJ_DECILES - 1];              /* decile boundaries of pred */
    double q[ADJ_SEGMENTS][ADJ_ACTIONS];       /* mean reward */
    uint32_t visits[ADJ_SEGMENTS][ADJ_ACTIONS];
    uint32_t pairs[ADJ_SEGMENTS];               /* replay pairs per segment */
    double ratio[ADJ_SEGMENTS];                 /* Σ actual / Σ pred over them */
    uint8_t action[ADJ_SEGMENTS];               /* greedy, served */
    uint64_t episodes;
    double reward_greedy;                       /* mean reward of the served policy over all pairs' batches */
    double trend[8];                            /* reward_greedy of the last runs, newest last */
    uint32_t runs;
    uint32_t live_pairs;                        /* of the pairs learned from: from the prediction log */
    uint32_t backtest_pairs;                    /* ... and from the backtest after a retrain */
} AdjTable;

/* The pairs to learn from: the serving network's own, the newest evidence
 * first (docs/MODEL.md, "Recent outcomes first"). A live pair is the
 * network's own when a model with network `net` served it (its refits and
 * adjuster runs keep the network; a fallback has one too); the others were
 * another network's, whose errors a new network, calibrated on newer
 * outcomes, does not make. When at least ADJ_RECENT_MIN own pairs were
 * served within `window` seconds (the horizon) of the newest own one
 * served by `latest` (now − H: a pair served later cannot have matured, so
 * one that says so, from a crafted snapshot or a clock stepped back, would
 * only move the window off the real ones), those alone; otherwise every
 * own pair served by `latest` (or at an unknown time, 0), then every
 * backtest pair (the backtest is the serving network's). out has room for nlive + nbt;
 * returns how many it holds, and *from_live how many of them are live (the
 * rest follow them and are the backtest's). */
size_t adjuster_select(const AdjPair *live, size_t nlive, const AdjPair *bt, size_t nbt, int64_t window,
                       int64_t latest, uint32_t net, AdjPair *out, size_t *from_live);
int adjuster_segment(const AdjTable *t, double pred, double recency_days, double tenure_days);
double adjuster_multiplier(const AdjTable *t, double pred, double recency_days, double tenure_days);
/* Learns a table from pairs (starting from prev's trend, or NULL). -ENODATA
 * with fewer than 100 pairs. Deterministic for a seed. */
int adjuster_learn(const AdjPair *pairs, size_t n, uint64_t seed, int episodes_per_segment, const AdjTable *prev,
                   AdjTable *out);

#endif
