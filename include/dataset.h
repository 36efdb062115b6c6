/* dataset: the training examples, cut from shoppers' retained events.
 *
 * Example: a shopper's history up to a cut time c, the head's inputs at c,
 * and the label "net spend in (c, c + H]". Cut times are the times of one
 * calendar grid, every grid_days back from now - H (the latest time whose
 * label has matured), from the shopper's first retained event on, and a
 * training shopper's own purchase times up to now - H: a grid time
 * meets the shoppers as serving does, all at one time, a purchase time
 * the state a repeat purchase leaves (the draw of cuts_per_shopper thins
 * a long-standing shopper's times more than a new one's: docs/MODEL.md,
 * "Training", step 2). A shopper is in
 * the validation split when its id hash says so (val_percent); validation
 * shoppers are cut only at the grid times in the last 2 x grid_days, now -
 * H among them, which they always keep (the level is calibrated there:
 * src/trainer_eval.c), the way predictions are served: as late as
 * possible.
 *
 * Pure computation on the worker thread. A TrainSet is the caller's (the
 * service copies it out of the store); a Dataset owns its arrays until
 * dataset_free. */
#ifndef LTVD_DATASET_H
#define LTVD_DATASET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "bgnbd.h"
#include "encoding.h"
#include "model.h"
#include "shopper.h"

/* Longer retained histories are left out (the ring is shorter by default). */
#define DATASET_MAX_EVENTS 1024

/* One shopper's retained events (events[first .. first+n)), with the encoder
 * context and aggregates from before the first of them. */
typedef struct TrainShopper {
    size_t first, n;
    EncodeContext ctx0;
    ShopperAgg agg0;
    uint64_t key;   /* hash of the id: decides the validation split */
} TrainShopper;

/* What training reads: every shopper's retained events, as of now. */
typedef struct TrainSet {
    Event *events;          /* (nevents,) ids unused */
    size_t nevents;
    TrainShopper *shoppers; /* (nshoppers,) */
    size_t nshoppers;
    int64_t now;            /* labels must have matured by now */
    size_t history_events;  /* of nevents, from the training history on disk (history.h) */
    /* (nshoppers,) or NULL: each shopper as a state rebuilt from its ring
     * after a swap sees it (its last model.recent_events events, with the
     * context and aggregates advanced through the earlier ones), where the
     * sequences are longer than the ring (the training history); the level
     * shift is computed on these, as predictions are served from them. */
    TrainShopper *served;
} TrainSet;

/* One example of a sequence: the head's inputs after step t. */
typedef struct TrainCut {
    int t;                 /* state after step t */
    int64_t c;             /* the cut time */
    bool val;              /* of a validation shopper */
    double e[HEAD_EXTRA];  /* encode_head_extra at the cut */
    double a0, a1;         /* the fallback's anchors (head_anchors) */
    double y;              /* label */
    double bg_p, bg_mu, bg_sigma; /* the fallback's ZILN at this cut */
} TrainCut;

/* One shopper's encoded events and its cuts. */
typedef struct TrainSeq {
    double *x;       /* (n, FEATURE_DIM) */
    int n;
    TrainCut *cuts;  /* (ncuts,), by t */
    int ncuts;
    bool val;        /* in the validation split */
} TrainSeq;

typedef struct Dataset {
    TrainSeq *seqs;  /* (nseq,) */
    size_t nseq;
    size_t examples; /* cuts over all sequences */
} Dataset;

/* The train.* keys the cutting reads (TrainConfig holds them too). */
typedef struct DatasetConfig {
    int horizon_days, grid_days, cuts_per_shopper, val_percent;
    size_t max_examples;   /* stop adding shoppers past this many cuts */
    uint64_t seed;         /* which cuts are kept when there are more */
    int ring;              /* the recent summary at a cut: the last ring events (0: all) */
} DatasetConfig;

/* Cuts every shopper of set into a sequence of examples, with the
 * fallback fit's prediction at each cut. 0 or -ENOMEM (d is then empty).
 * Free d with dataset_free. */
int dataset_build(Dataset *d, const TrainSet *set, const DatasetConfig *cfg, const FallbackFit *fit);
void dataset_free(Dataset *d);

#endif
