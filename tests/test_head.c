/* Serving and training agree: the prediction the service serves for a
 * shopper at time c equals the one the trainer computes for the same
 * shopper, history and time on validation (trainer_backtest: what a model
 * "would have served" at each validation cut), for both heads.
 *
 * The two sides share only the weights: serving runs the float LSTM step
 * (lstm.c) on events applied one by one through the service; the trainer
 * runs its double-precision step over the whole sequence. So they agree to
 * float precision, not bit for bit: within 1e-7 relative here, 1e-5 leaves
 * room for other BLAS kernels. A head input fed on one side and not the
 * other (the LSTM-only head once saw the fallback's two inputs when served,
 * not when trained) moves a prediction by tens of percent. */
#include <stdlib.h>
#include <string.h>

#include "service.h"
#include "test_util.h"
#include "trainer.h"

#define DAY 86400
#define HIDDEN 16
#define HORIZON 182
#define GRID_DAYS 150 /* validation cuts: NEWEST - 300 days, NEWEST - 150 days and NEWEST, from the first event on
                       * (and other grids and times in main) */
#define MAX_EVENTS 8

static const int64_t NOW = 1735603200; /* 2024-12-31: labels must have matured by now */

typedef struct Shopper {
    const char *id;
    int n;
    Event ev[MAX_EVENTS]; /* by time; the ones after NOW - HORIZON are labels only */
} Shopper;

static Event ev_at(const char *id, EventType type, int64_t ts, double value)
{
    return (Event){.user_id = id, .user_len = strlen(id), .type = type, .ts = ts, .value = value, .quantity = 1};
}

/* Three histories that end before the last cut time (NEWEST) and carry on
 * after it, so every cut has a label. */
static void make_shoppers(Shopper *sh)
{
    const int64_t newest = NOW - (int64_t)HORIZON * DAY;
    sh[0] = (Shopper){.id = "repeat", .n = 6};
    sh[0].ev[0] = ev_at("repeat", EV_VIEW, newest - 300 * DAY, 0);
    sh[0].ev[1] = ev_at("repeat", EV_PURCHASE, newest - 290 * DAY, 40);
    sh[0].ev[2] = ev_at("repeat", EV_CLICK, newest - 120 * DAY, 0);
    sh[0].ev[3] = ev_at("repeat", EV_PURCHASE, newest - 100 * DAY, 15.5);
    sh[0].ev[4] = ev_at("repeat", EV_PURCHASE, newest - 20 * DAY, 70);
    sh[0].ev[5] = ev_at("repeat", EV_PURCHASE, newest + 30 * DAY, 25);
    sh[1] = (Shopper){.id = "once", .n = 3};
    sh[1].ev[0] = ev_at("once", EV_ADD_TO_CART, newest - 61 * DAY, 0);
    sh[1].ev[1] = ev_at("once", EV_PURCHASE, newest - 60 * DAY, 120);
    sh[1].ev[2] = ev_at("once", EV_VIEW, newest + 5 * DAY, 0);
    sh[2] = (Shopper){.id = "refunder", .n = 5};
    sh[2].ev[0] = ev_at("refunder", EV_PURCHASE, newest - 500 * DAY, 80);
    sh[2].ev[1] = ev_at("refunder", EV_REFUND, newest - 499 * DAY, 30);
    sh[2].ev[2] = ev_at("refunder", EV_PURCHASE, newest - 200 * DAY, 22);
    sh[2].ev[3] = ev_at("refunder", EV_PURCHASE, newest - 3 * DAY, 9);
    sh[2].ev[4] = ev_at("refunder", EV_PURCHASE, newest + 100 * DAY, 60);
}

static Model *network_model(bool hybrid, const FallbackFit *fit)
{
    LstmWeights *net;
    ASSERT(lstm_weights_create(&net, HIDDEN, 3, 7) == 0);
    net->hybrid = hybrid;
    /* every part of the calibration, the mean's pull included: serving and
     * the trainer's backtest must apply them alike */
    net->calib = (HeadCalib){.level_shift = 0.3, .p_scale = 1.1, .p_offset = -0.2, .m_shrink = 0.05, .m_center = 3.0};
    Model *m;
    ASSERT(model_create(&m, net, fit, HORIZON, MODEL_TRAINED, 1) == 0);
    lstm_weights_release(net);
    return m;
}

/* The trainer's validation predictions for one shopper as of now, at its
 * cut times in order: the grid times in the last 2 x grid_days up to
 * now - HORIZON, from its first event on. */
static size_t trainer_predictions(const Shopper *sh, const Model *m, int64_t now, int grid_days, AdjPair **pairs)
{
    TrainShopper ts = {.first = 0, .n = (size_t)sh->n, .key = 0};
    shopper_agg_init(&ts.agg0);
    TrainSet set = {.events = (Event *)sh->ev, .nevents = (size_t)sh->n, .shoppers = &ts, .nshoppers = 1,
                    .now = now};
    TrainConfig tc = {
        .hidden = HIDDEN,
        .horizon_days = HORIZON,
        .seed = 1,
        .cuts_per_shopper = 64, /* keep every candidate cut */
        .grid_days = grid_days,
        .max_examples = 1000,
        .val_percent = 100,     /* every shopper validates */
    };
    size_t n = 0;
    ASSERT(trainer_backtest(&set, &tc, &m->fallback, m->net, pairs, &n) == 0);
    return n;
}

/* Serves the three shoppers as the trainer cut them as of NOW - back_days
 * (the events up to each grid time, then a prediction at that time) and
 * compares; returns the number of cuts compared. */
static size_t check_head(bool hybrid, int back_days, int grid_days)
{
    LtvdConfig cfg;
    config_defaults(&cfg);
    cfg.clock = CLOCK_EVENT;
    cfg.limits_max_users = 100;
    cfg.model_hidden_size = HIDDEN;
    cfg.model_horizon_days = HORIZON;
    static Metrics metrics;
    metrics_init(&metrics);
    FallbackFit fit = {.bg = BGNBD_CDNOW_PRIOR, .gg = GG_CDNOW_PRIOR};
    Model *m = network_model(hybrid, &fit);
    model_retain(m);
    Service *s;
    ASSERT(service_create(&s, &cfg, &metrics, m) == 0);

    const int64_t now = NOW - (int64_t)back_days * DAY, newest = now - (int64_t)HORIZON * DAY;
    Shopper sh[3];
    make_shoppers(sh);
    size_t compared = 0;
    for (int k = 0; k < 3; k++) {
        AdjPair *pairs;
        size_t n = trainer_predictions(&sh[k], m, now, grid_days, &pairs);
        size_t cut = 0, applied = 0;
        for (int back = 2; back >= 0; back--) {
            const int64_t c = newest - (int64_t)back * grid_days * DAY;
            if (c < sh[k].ev[0].ts)
                continue;
            for (; applied < (size_t)sh[k].n && sh[k].ev[applied].ts <= c; applied++) {
                ApplyResult res;
                ASSERT(service_apply(s, &sh[k].ev[applied], 1, &res, NULL) == 0 && res.accepted == 1);
            }
            PredictionView pv;
            service_predict(s, sh[k].id, strlen(sh[k].id), c, &pv);
            ASSERT(pv.known && pv.p.from_network);
            ASSERT(cut < n);
            ASSERT_REL(pv.p.ltv, pairs[cut].pred, 1e-5);
            ASSERT(pv.p.ltv > 0);
            cut++;
        }
        ASSERT(cut == n); /* and the trainer cut nowhere else */
        compared += cut;
        free(pairs);
    }
    service_destroy(s);
    model_release(m);
    return compared;
}

int main(void)
{
    for (int hybrid = 0; hybrid < 2; hybrid++) {
        /* as of NOW, 150-day grid: 300 and 150 days before NEWEST and NEWEST; "once" began 61 days before it */
        ASSERT(check_head(hybrid, 0, GRID_DAYS) == 7);
        /* daily grid: "refunder" one, two and three days after its purchase 3 days before NEWEST */
        ASSERT(check_head(hybrid, 0, 1) == 9);
        /* 20 days earlier, 10-day grid: "repeat" at the time of its purchase (NEWEST - 20 days: no silence), and
         * 10 and 20 days before it */
        ASSERT(check_head(hybrid, 20, 10) == 9);
    }
    TEST_DONE("test_head");
}
