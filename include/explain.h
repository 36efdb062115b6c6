/* explain: why a shopper's prediction is what it is (GET
 * /v1/users/{id}/ltv?explain=true): the fallback's part (BG/NBD frequency,
 * recency, tenure and spend -> its LTV), what the network changed from it,
 * the adjuster's correction, and which of the most recent retained events
 * moved the prediction most (leave-one-out through the LSTM).
 * docs/SEMANTICS.md, "Explanations", says how the parts compose.
 *
 * Threads: any (the HTTP thread). The shopper is copied under one short
 * hold of the store lock; everything else runs outside it, on the caller's
 * own scratch. Ownership: the caller's Explanation holds no pointers. */
#ifndef LTVD_EXPLAIN_H
#define LTVD_EXPLAIN_H

#include <stdbool.h>
#include <stdint.h>

#include "service.h"

/* Events the leave-one-out replays without, the newest of the ring: the
 * cost is ring_len + K(K-1)/2 LSTM steps and K + 1 head evaluations. */
#define EXPLAIN_EVENTS 8

typedef struct ExplainEvent {
    int64_t ts;
    EventType type;
    double value;
    double effect; /* the ring replay's LTV minus the LTV with this event left out of the LSTM's memory */
} ExplainEvent;

typedef struct Explanation {
    /* the fallback (BG/NBD + Gamma-Gamma) on the shopper's aggregates */
    bool has_purchase;          /* false: the cold-start prior */
    const char *source; /* which fallback answered: "bgnbd", "prior", "cold_start", "cold_start_capped" */
    double frequency;           /* repeat purchase days (x) */
    double recency_weeks;       /* first to last purchase (t_x) */
    double tenure_weeks;        /* first purchase to as_of (T) */
    double weeks_since_last;    /* last purchase to as_of (T - t_x) */
    double mean_spend;          /* per repeat purchase day (m) */
    double spend;               /* net spend so far */
    double expected_purchases, value_per_purchase, p_alive, fallback_p_active;
    double fallback_ltv;
    /* the network */
    bool network_used;
    double network_ltv;         /* before the adjuster (Prediction.uncorrected) */
    /* the adjuster */
    bool adjuster_used;
    double adjuster_multiplier;
    /* ltv = fallback_ltv + (network_ltv - fallback_ltv) + (ltv - network_ltv) */
    double ltv;
    ExplainEvent events[EXPLAIN_EVENTS]; /* (nevents,), by |effect|, largest first */
    unsigned nevents;
    unsigned ring_events;       /* events the ring holds (the network's memory is rebuilt from them) */
} Explanation;

/* The prediction for id at as_of (< 0: now), as service_predict serves it
 * (not logged for the adjuster), and its explanation. */
void service_explain(Service *s, const char *id, size_t len, int64_t as_of, PredictionView *pv, Explanation *ex);

#endif
