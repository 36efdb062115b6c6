/* training_data: the shoppers the training-rule tests train on, made
 * here (no CDNOW needed), and how they train. Shared by
 * test_training_rules.c and test_level.c; static functions, one copy per
 * test. */
#ifndef LTVD_TEST_TRAINING_DATA_H
#define LTVD_TEST_TRAINING_DATA_H

#include <stdio.h>
#include <string.h>

#include "dataset.h"
#include "test_util.h"
#include "trainer.h"

#define DAY 86400
#define H_DAYS 60
#define GRID_DAYS 30
#define NOW 1735689600 /* 2025-01-01 */
#define NOLD 40        /* shoppers from 400 days before now up to now */
#define NYOUNG 6       /* shoppers whose first event is within the last H days */
#define MAX_EV 128
#define AFTER_NOW 5    /* events appended after now in the third data set */
#define NSPAN 240      /* shoppers of the level rules' two years: enough held-out ones to calibrate on */
#define NCHURN 480     /* of p's calibration: half of them churn, enough held out with spend and without */
#define MAX_SHOPPERS (NCHURN > NOLD + NYOUNG ? NCHURN : NOLD + NYOUNG)

typedef struct Data {
    Event ev[MAX_SHOPPERS * (MAX_EV + AFTER_NOW)];
    TrainShopper sh[MAX_SHOPPERS];
    TrainSet set;
} Data;

/* Points d's training set at its events and shoppers, as of NOW. */
static inline void finish_set(Data *d, size_t ne, int nshoppers)
{
    d->set.events = d->ev;
    d->set.nevents = ne;
    d->set.shoppers = d->sh;
    d->set.nshoppers = (size_t)nshoppers;
    d->set.now = NOW;
}

/* Builds the histories. after_now: append events after now; scale_recent:
 * multiply the values of events in (now - H, now] by this. The first event
 * of a shopper is at midnight, as are the grid's cut times (now - H -
 * k x grid), and every later one at 1 to 12 h past it: a grid time may
 * fall on a shopper's first event (which it then holds), never on a later
 * one; a training shopper's purchase times are cut times too. */
static inline void make_data(Data *d, bool with_young, bool after_now, double scale_recent)
{
    memset(d, 0, sizeof *d);
    size_t ne = 0;
    int nsh = NOLD + (with_young ? NYOUNG : 0);
    for (int i = 0; i < nsh; i++) {
        TrainShopper *t = &d->sh[i];
        t->first = ne;
        shopper_agg_init(&t->agg0);
        t->key = (uint64_t)i * 37u + 11u; /* key % 100 decides the validation split */
        int back_days = i < NOLD ? 400 - 5 * i : H_DAYS - 1 - 7 * (i - NOLD);
        int64_t start = NOW - (int64_t)back_days * DAY; /* midnight: NOW is */
        int64_t ts = start;
        for (int k = 0; k < MAX_EV && ts <= NOW; k++) {
            Event *e = &d->ev[ne++];
            e->ts = ts;
            e->quantity = 1;
            int kind = (k * 5 + i) % 9;
            e->type = kind < 4 ? EV_VIEW : kind < 6 ? EV_ADD_TO_CART : kind < 8 ? EV_PURCHASE : EV_REFUND;
            e->value = e->type == EV_PURCHASE ? 10.0 * (1 + (k + i) % 5) : e->type == EV_REFUND ? 4.5 : 0.0;
            if (ts > NOW - (int64_t)H_DAYS * DAY)
                e->value *= scale_recent;
            /* next: 2 to 8 days later, at 1 to 12 h past midnight */
            ts = ts - ts % DAY + (int64_t)(2 + (k * 3 + i) % 7) * DAY + (int64_t)(1 + (k + i) % 12) * 3600;
        }
        if (after_now)
            for (int k = 0; k < AFTER_NOW; k++) {
                Event *e = &d->ev[ne++];
                e->ts = NOW + (int64_t)(k + 1) * 3 * DAY;
                e->quantity = 1;
                e->type = EV_PURCHASE;
                e->value = 1000.0;
            }
        t->n = ne - t->first;
    }
    finish_set(d, ne, nsh);
}

static inline void train_config(TrainConfig *tc, int val_percent)
{
    memset(tc, 0, sizeof *tc);
    tc->hidden = 4;
    tc->horizon_days = H_DAYS;
    tc->seed = 1;
    tc->max_epochs = 1;
    tc->batch = 16;
    tc->lr = 0.01;
    tc->cuts_per_shopper = 256; /* keep every allowed cut, so the count is exact */
    tc->grid_days = GRID_DAYS;
    tc->max_examples = 1000000;
    tc->bptt = 16;
    tc->val_percent = val_percent;
    tc->head = 1;
    tc->mean_loss_weight = 8.0; /* train.mean_loss_weight's default */
    tc->mean_shrink = true;     /* train.mean_shrink's */
}

/* The fallback every training here uses: the published CDNOW prior. */
static inline FallbackFit prior_fit(void)
{
    return (FallbackFit){BGNBD_CDNOW_PRIOR, GG_CDNOW_PRIOR, 0, 0, 0, 0, {0}};
}

/* trainer_run on set under tc with prior_fit() as the fallback; fails the
 * test if it fails. */
static inline void train_ok(const TrainSet *set, const TrainConfig *tc, uint32_t id, TrainResult *tr)
{
    FallbackFit fit = prior_fit();
    char err[256];
    int rc = trainer_run(set, tc, &fit, NULL, id, tr, err, sizeof err);
    if (rc)
        fprintf(stderr, "trainer_run: %s\n", err);
    ASSERT(rc == 0);
}

/* Shoppers with an event every 6 days (a purchase every third) from
 * days_back before now up to now; with churn, every second one stops
 * 10-59 days before now - H, and half of those come back for one purchase
 * H / 2 days before now (so that a network cannot tell at now - H which of
 * them will buy); with churn, each shopper spends its own amount, 5 to 53. */
static inline void make_span_mixed(Data *d, int nshoppers, int days_back, bool churn, int nolder, int older_days_back);

static inline void make_span_churn(Data *d, int nshoppers, int days_back, bool churn)
{
    make_span_mixed(d, nshoppers, days_back, churn, 0, 0);
}

/* The same, the first nolder shoppers from older_days_back instead. */
static inline void make_span_mixed(Data *d, int nshoppers, int days_back, bool churn, int nolder, int older_days_back)
{
    memset(d, 0, sizeof *d);
    size_t ne = 0;
    for (int i = 0; i < nshoppers; i++) {
        TrainShopper *t = &d->sh[i];
        t->first = ne;
        shopper_agg_init(&t->agg0);
        t->key = (uint64_t)i * 37u + 11u;
        const int stop = churn && i % 2 ? H_DAYS + 10 + i % 50 : -1; /* days before now */
        const double value = 5.0 + 6.0 * (i % 9);                    /* with churn: each shopper its own spend */
        const int back = i < nolder ? older_days_back : days_back;
        for (int k = 0; k < MAX_EV && k * 6 <= back && back - k * 6 > stop; k++) {
            Event *e = &d->ev[ne++];
            e->ts = NOW - (int64_t)(back - k * 6) * DAY + (int64_t)(1 + i % 12) * 3600;
            e->quantity = 1;
            e->type = k % 3 == 2 ? EV_PURCHASE : EV_VIEW;
            e->value = e->type != EV_PURCHASE ? 0.0 : churn ? value : 10.0 + i % 7;
        }
        if (stop >= 0 && i % 4 == 3)
            d->ev[ne++] = (Event){.ts = NOW - (int64_t)(H_DAYS / 2) * DAY, .type = EV_PURCHASE, .quantity = 1,
                                  .value = value};
        t->n = ne - t->first;
    }
    finish_set(d, ne, nshoppers);
}

static inline void make_span(Data *d, int nshoppers, int days_back)
{
    make_span_churn(d, nshoppers, days_back, false);
}

#endif
