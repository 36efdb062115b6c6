/* The level a trained network serves with, and p's calibration
 * (docs/MODEL.md, "Training", step 6), on shoppers made here
 * (training_data.h). Asserted:
 *   - the level rule for each train.level: auto takes the network's own
 *     level only for a seasonal network trained from the history (events
 *     loaded from it, not only the history on) with enough held-out
 *     shoppers with spend; that level is the network calibrated on the
 *     held-out shoppers at now - H (its shift undoes its own error there),
 *     and what it serves them at now - H sums to their spend after;
 *   - train.level=fallback from sequences longer than the ring: what is
 *     served after the swap (states rebuilt from the rings) sums to the
 *     fallback's total at now;
 *   - p's calibration: fitted on the held-out shoppers at now - H with the
 *     network's own level when 50 of them bought and 50 did not, never with
 *     the fallback's; what is served there, p's calibration included, sums
 *     to their spend after, also when serving's states come from rings;
 *   - the mean's pull: its fit and its centre on shoppers made here, and in
 *     training a network with a pull serves at now the total of its twin
 *     trained without it. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>

#include "platt.h"
#include "training_data.h"

/* The held-out shoppers of data with an event by now - H: the level's
 * calibration set (each once). */
static uint64_t held_out_at_newest(const Data *data, int val_percent)
{
    uint64_t n = 0;
    for (size_t i = 0; i < data->set.nshoppers; i++)
        n += (int)(data->sh[i].key % 100) < val_percent && data->sh[i].n > 0 &&
             data->ev[data->sh[i].first].ts <= NOW - (int64_t)H_DAYS * DAY;
    return n;
}

static void held_out_totals(const Data *d, const Model *m, int val_percent, size_t ring, int64_t cut,
                            double *pred, double *actual, size_t *idle);

/* auto's rule itself: seasonal, from the history, and either enough buyers
 * among the held-out shoppers at now - H or a network closer to their total
 * than the fallback. */
static void check_auto_rule(void)
{
    const size_t many = TRAINER_LEVEL_MIN_BUYERS, few = TRAINER_LEVEL_MIN_BUYERS - 1;
    const size_t least = TRAINER_LEVEL_MIN_COMPARE;
    ASSERT(trainer_level_auto_own(true, true, many, 100, 180, 101, 0.5));  /* calibrated on them: whatever it missed */
    ASSERT(trainer_level_auto_own(true, true, few, 100, 105, 186, 0.1));   /* the fallback missed by more */
    ASSERT(trainer_level_auto_own(true, true, least, 100, 99.6, 185, 0.5)); /* ACCURACY's case: |log 1.85| = 0.62 */
    ASSERT(!trainer_level_auto_own(true, true, least - 1, 100, 99.6, 185, 0.1)); /* too few buyers to compare */
    ASSERT(!trainer_level_auto_own(true, true, few, 100, 105, 186, 0.6));  /* within the network's noise */
    ASSERT(!trainer_level_auto_own(true, true, few, 100, 130, 110, 0.01)); /* the network missed by more */
    ASSERT(!trainer_level_auto_own(true, true, few, 100, 5, 200, 0.01));   /* -95% misses by more than x2 in log */
    ASSERT(!trainer_level_auto_own(true, true, few, 100, 20, 185, 0.01));  /* -80% against +85%: the fallback */
    ASSERT(!trainer_level_auto_own(true, true, few, 100, 95, 0, 0.01));    /* no fallback total to compare */
    ASSERT(!trainer_level_auto_own(true, true, few, 100, 95, 186, NAN));
    ASSERT(!trainer_level_auto_own(false, true, many, 100, 100, 186, 0.1)); /* not seasonal */
    ASSERT(!trainer_level_auto_own(true, false, many, 100, 100, 186, 0.1)); /* not from the history */
    ASSERT(!trainer_level_auto_own(true, true, few, 0, 100, 186, 0.1));    /* no spend after: nothing to read */
    ASSERT(!trainer_level_auto_own(true, true, many, 100, NAN, 186, 0.1));
}

/* The level rule for each train.level, seasonal (two years of shoppers) or
 * not (330 days: no matured cut at now - 365 days), from the history or the
 * rings; with too few held-out buyers to calibrate on (two years of too few
 * shoppers) auto takes the network's level unshifted, as it misses their
 * total by less than the fallback. */
static void check_level_rules(void)
{
    static Data span, few, brief;
    make_span(&span, NSPAN, 720);
    make_span(&few, NOLD, 720);
    make_span(&brief, NSPAN, 330);
    struct {
        int level, seasonal; /* seasonal: the two-year data (2: of NOLD shoppers, too few held out) */
        bool history, loaded;
        int rule;
    } cases[] = {
        {0, 1, true, true, LEVEL_RULE_NETWORK},      {0, 1, false, false, LEVEL_RULE_FALLBACK},
        {0, 1, true, false, LEVEL_RULE_FALLBACK},    /* the history on, nothing loaded from it */
        {0, 0, true, true, LEVEL_RULE_FALLBACK},     /* not seasonal */
        {0, 2, true, true, LEVEL_RULE_NETWORK},      /* too few held-out shoppers with spend to calibrate on,
                                                      * and the network misses their total by less than the
                                                      * fallback (the CDNOW prior here): its level, unshifted */
        {1, 1, true, true, LEVEL_RULE_FALLBACK},     {2, 1, false, false, LEVEL_RULE_NETWORK},
        {2, 0, false, false, LEVEL_RULE_NETWORK},    {2, 2, true, true, LEVEL_RULE_NETWORK},
    };
    int calibrated = 0, platt_fits = 0, exact = 0;
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        TrainConfig tc;
        train_config(&tc, 30);
        tc.level = cases[k].level;
        tc.mean_shrink = false; /* the level as calibrated at now - H; with the pull it keeps the total at now
                                 * instead (check_pull_keeps_total) */
        const Data *data = cases[k].seasonal == 2 ? &few : cases[k].seasonal ? &span : &brief;
        TrainSet set = data->set;
        set.served = cases[k].history ? (TrainShopper *)data->sh : NULL; /* the full histories, as served */
        set.history_events = cases[k].loaded ? set.nevents : 0;
        TrainResult tr;
        train_ok(&set, &tc, 11, &tr);
        ASSERT(tr.level_rule == cases[k].rule && tr.seasonal == (cases[k].seasonal != 0));
        ASSERT(tr.net->calib.level_shift == tr.level_shift && isfinite(tr.level_shift));
        ASSERT(tr.net->calib.p_scale == tr.p_scale && tr.net->calib.p_offset == tr.p_offset);
        const bool platt = tr.p_scale != 1.0 || tr.p_offset != 0.0;
        ASSERT(tr.level_shoppers == held_out_at_newest(data, tc.val_percent) && tr.level_shoppers > 0);
        ASSERT(tr.level_buyers > 0 && tr.level_buyers <= tr.level_shoppers);
        if (cases[k].seasonal == 2) /* too few to calibrate on, enough to compare */
            ASSERT(tr.level_buyers >= TRAINER_LEVEL_MIN_COMPARE && tr.level_buyers < TRAINER_LEVEL_MIN_BUYERS);
        if (cases[k].seasonal == 2 && tr.level_rule == LEVEL_RULE_NETWORK) /* its own level, unshifted */
            ASSERT(tr.level_shift == 0.0 && fabs(tr.val_total_error_network) < fabs(tr.val_total_error_fallback));
        if (tr.level_rule == LEVEL_RULE_NETWORK) { /* calibrated where it can be checked, or no shift
                                                    * (served = the training sequences: no further ratio) */
            ASSERT(tr.level_shift == 0.0 || platt || fabs(tr.level_shift + log1p(tr.val_total_error_network)) < 1e-9);
            /* p is calibrated with the level (Platt's fit on the same held-out shoppers), never without it */
            ASSERT(!platt || (tr.level_shift != 0.0 && tr.p_scale >= PLATT_SCALE_MIN &&
                              tr.p_scale <= PLATT_SCALE_MAX && isfinite(tr.p_offset)));
            calibrated += tr.level_shift != 0.0;
            platt_fits += platt;
            if (tr.level_shift != 0.0 && !set.served) { /* what it serves the held-out shoppers at now - H is
                                                          * what they spent after */
                FallbackFit fit = prior_fit();
                Model *m;
                ASSERT(model_create(&m, tr.net, &fit, H_DAYS, MODEL_TRAINED, 1) == 0);
                double pred, actual;
                held_out_totals(data, m, tc.val_percent, 0, NOW - (int64_t)H_DAYS * DAY, &pred, &actual, NULL);
                ASSERT(actual > 0);
                ASSERT_REL(pred, actual, 1e-5);
                exact++;
                model_release(m);
            }
        }
        else
            ASSERT(tr.level_shift != 0.0 && !platt); /* the fallback's total at now; p as the network has it */
        lstm_weights_release(tr.net);
    }
    ASSERT(calibrated > 0); /* the held-out window had enough spend to calibrate on */
    printf("level rules: %d networks calibrated, %d of them with p calibrated, %d checked as served\n",
           calibrated, platt_fits, exact);
    ASSERT(exact > 0);
}

/* What m serves at `at` to the shopper whose events (from t->ctx0 and
 * t->agg0 on) are ev[0, n): its state rebuilt from zero in float, as
 * service_ensure_state does, read with a ring of `ring` events (0: all);
 * *fo gets the fallback's prediction for it. */
static void serve_one(const Model *m, const TrainShopper *t, const Event *ev, size_t n, size_t ring, int64_t at,
                      Prediction *out, FallbackOutput *fo)
{
    const LstmWeights *w = m->net;
    float h[LSTM_MAX_HIDDEN] = {0}, c[LSTM_MAX_HIDDEN] = {0}, x[FEATURE_DIM];
    float scratch[LSTM_MAX_INPUT + 5 * LSTM_MAX_HIDDEN];
    EncodeContext ctx = t->ctx0;
    ShopperAgg agg = t->agg0;
    for (size_t k = 0; k < n; k++) {
        encode_event(x, &ev[k], &ctx);
        lstm_step(&w->cfg, w->w, w->b, x, h, c, scratch);
        encode_context_advance(&ctx, &ev[k]);
        shopper_agg_apply(&agg, &ev[k]);
    }
    RecentSummary rs;
    recent_summary_of(&rs, ev, n, ring, at);
    model_predict(m, h, &agg, &rs, at, out);
    model_fallback(&m->fallback, m->horizon_days, &agg, &rs, at, fo);
    ASSERT(out->from_network);
}

/* What m serves at `cut` to d's held-out shoppers seen by then (*pred,
 * from their events up to cut, read with a ring of `ring`), their net
 * spend in (cut, cut + H] (*actual), and how many of them spent nothing
 * there (*idle, when not NULL). */
static void held_out_totals(const Data *d, const Model *m, int val_percent, size_t ring, int64_t cut,
                            double *pred, double *actual, size_t *idle)
{
    *pred = *actual = 0;
    if (idle)
        *idle = 0;
    for (size_t i = 0; i < d->set.nshoppers; i++) {
        const TrainShopper *t = &d->sh[i];
        const Event *ev = d->ev + t->first;
        if ((int)(t->key % 100) >= val_percent || t->n == 0 || ev[0].ts > cut)
            continue;
        size_t k = 0;
        while (k < t->n && ev[k].ts <= cut)
            k++;
        Prediction p;
        FallbackOutput fo;
        serve_one(m, t, ev, k, ring, cut, &p, &fo);
        *pred += p.ltv;
        double spend = 0;
        for (; k < t->n && ev[k].ts <= cut + (int64_t)H_DAYS * DAY; k++)
            spend += ev[k].type == EV_PURCHASE ? ev[k].value : ev[k].type == EV_REFUND ? -ev[k].value : 0.0;
        *actual += spend;
        if (idle)
            *idle += spend <= 0;
    }
}

/* served (d's nshoppers,): each of d's sequences as a state rebuilt from a
 * ring of `ring` events sees it: its last `ring` events, with the encoder
 * context and aggregates advanced through the ones before (the service
 * gives the trainer these as set->served with the training history). */
static void serve_windows(const Data *d, TrainShopper *served, size_t ring)
{
    for (size_t i = 0; i < d->set.nshoppers; i++) {
        TrainShopper *v = &served[i];
        *v = d->sh[i];
        size_t skip = v->n > ring ? v->n - ring : 0;
        for (size_t k = 0; k < skip; k++) {
            encode_context_advance(&v->ctx0, &d->ev[v->first + k]);
            shopper_agg_apply(&v->agg0, &d->ev[v->first + k]);
        }
        v->first += skip;
        v->n -= skip;
    }
}

/* What m serves at NOW, summed over d's shoppers: *net the predictions
 * (each state rebuilt through the events of seqs[i], serve_one), *fb the
 * fallback's for the same shoppers. */
static void served_totals(const Data *d, const TrainShopper *seqs, const Model *m, size_t ring, double *net, double *fb)
{
    *net = *fb = 0;
    for (size_t i = 0; i < d->set.nshoppers; i++) {
        Prediction p;
        FallbackOutput fo;
        serve_one(m, &seqs[i], d->ev + seqs[i].first, seqs[i].n, ring, NOW, &p, &fo);
        *net += p.ltv;
        *fb += fo.ltv;
    }
}

/* train.level=fallback from the training history: the sequences (two years,
 * 121 events) are longer than the ring serving rebuilds states from
 * (SERVE_RING), and the level is set so that what serving predicts after
 * the swap, the states rebuilt from the rings, sums to the fallback's
 * total at now; not the network's total over the whole sequences, which
 * no shopper is served from. A short ring: this network forgets fast (its
 * total from a ring of 8 is within 1e-5 of the whole sequences', from 2
 * about 5e-3 off), and the test must tell the two apart. */
#define SERVE_RING 2
#define SERVE_TOL 1e-5 /* float states against the trainer's double: 1e-8 measured */
static void check_fallback_level_as_served(void)
{
    static Data span;
    static TrainShopper served[MAX_SHOPPERS];
    make_span(&span, NSPAN, 720);
    serve_windows(&span, served, SERVE_RING);
    TrainConfig tc;
    train_config(&tc, 30);
    tc.level = 1;
    tc.ring = SERVE_RING;
    TrainSet set = span.set;
    set.served = served;
    set.history_events = set.nevents;
    TrainResult tr;
    train_ok(&set, &tc, 13, &tr);
    ASSERT(tr.level_rule == LEVEL_RULE_FALLBACK && tr.level_shift != 0.0);
    FallbackFit fit = prior_fit();
    Model *m;
    ASSERT(model_create(&m, tr.net, &fit, H_DAYS, MODEL_TRAINED, 1) == 0);
    double net_ring, fb_ring, net_all, fb_all;
    served_totals(&span, served, m, SERVE_RING, &net_ring, &fb_ring);
    served_totals(&span, span.sh, m, SERVE_RING, &net_all, &fb_all);
    printf("fallback level: served %.4f, fallback %.4f; from the whole sequences %.4f\n", net_ring, fb_ring,
           net_all);
    ASSERT_REL(fb_all, fb_ring, 1e-12); /* the same shoppers, aggregates and rings: only the states differ */
    /* the rings' states are not the whole sequences' (else this test could not tell the two apart) */
    ASSERT(fabs(net_all / net_ring - 1.0) > 100 * SERVE_TOL);
    /* what is served sums to the fallback's total */
    ASSERT_REL(net_ring, fb_ring, SERVE_TOL);
    model_release(m);
    lstm_weights_release(tr.net);
}

/* p's calibration: where held-out shoppers at now - H both bought and did
 * not, the network's own level comes with Platt's calibration of p fitted
 * on them, and what that network serves them at now - H sums to what they
 * spent after (the level's calibration, p's included; this data fits no
 * mean's pull, which would keep the total at now instead:
 * check_pull_keeps_total). With serving's
 * states rebuilt from short rings (set->served), the served/trained ratio
 * is taken with the calibrated p too: the held-out total, scaled by the
 * rings' total at now over the whole sequences', is still exact. With
 * fewer than 50 held-out shoppers without spend, p is left alone; the
 * fallback's level always leaves it alone. */
static void check_p_calibration(void)
{
    static Data churn;
    static TrainShopper served[MAX_SHOPPERS];
    make_span_churn(&churn, NCHURN, 720, true);
    serve_windows(&churn, served, SERVE_RING);
    const struct {
        int level, val_percent;
        bool rings, shrink;
    } cases[] = {{2, 50, false, false}, {2, 50, true, false}, {2, 40, false, false}, {1, 50, false, true},
                 {2, 50, false, true}, {2, 50, true, true}};
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        TrainConfig tc;
        train_config(&tc, cases[k].val_percent);
        tc.level = cases[k].level;
        tc.ring = cases[k].rings ? SERVE_RING : 0;
        tc.mean_shrink = cases[k].shrink;
        TrainSet set = churn.set;
        set.history_events = set.nevents;
        set.served = cases[k].rings ? served : NULL;
        TrainResult tr;
        train_ok(&set, &tc, 17, &tr);
        ASSERT(tr.net->calib.p_scale == tr.p_scale && tr.net->calib.p_offset == tr.p_offset &&
               tr.net->calib.m_shrink == tr.m_shrink && tr.net->calib.m_center == tr.m_center);
        if (tc.level == 1) { /* the fallback's level: neither p nor the mean calibrated */
            ASSERT(tr.level_rule == LEVEL_RULE_FALLBACK && tr.p_scale == 1.0 && tr.p_offset == 0.0 &&
                   tr.m_shrink == 0.0);
            lstm_weights_release(tr.net);
            continue;
        }
        printf("p's calibration (%d%% held out%s%s): p_scale %.4f p_offset %.4f m_shrink %.3g level_shift %.4f over "
               "%llu shoppers\n", cases[k].val_percent, cases[k].rings ? ", served from rings" : "",
               cases[k].shrink ? ", the mean's pull on" : "", tr.p_scale, tr.p_offset, tr.m_shrink, tr.level_shift,
               (unsigned long long)tr.level_shoppers);
        /* the premise of the check below: no pull here, on or off (a pull would keep the total at now
         * instead of the held-out one at now - H: check_pull_keeps_total) */
        ASSERT(tr.m_shrink == 0.0 && tr.m_center == 0.0);
        ASSERT(tr.level_rule == LEVEL_RULE_NETWORK && tr.level_shoppers >= 100 && isfinite(tr.level_shift));
        if (cases[k].val_percent == 40) /* 192 held out, 47 of them without spend: too few to fit p on */
            ASSERT(tr.p_scale == 1.0 && tr.p_offset == 0.0);
        else
            ASSERT(tr.p_scale != 1.0 && tr.p_scale >= PLATT_SCALE_MIN && tr.p_scale <= PLATT_SCALE_MAX &&
                   fabs(tr.p_offset) <= PLATT_OFFSET_MAX);
        FallbackFit fit = prior_fit();
        Model *m;
        ASSERT(model_create(&m, tr.net, &fit, H_DAYS, MODEL_TRAINED, 1) == 0);
        double pred, actual, scale = 1.0;
        size_t idle;
        held_out_totals(&churn, m, tc.val_percent, (size_t)tc.ring, NOW - (int64_t)H_DAYS * DAY, &pred, &actual,
                        &idle);
        /* the premises: the gate's case has too few held-out shoppers without spend, the others enough */
        ASSERT(cases[k].val_percent == 40 ? idle < 50 : idle >= 50);
        if (cases[k].rings) {
            double net_ring, net_all, fb;
            served_totals(&churn, served, m, SERVE_RING, &net_ring, &fb);
            served_totals(&churn, churn.sh, m, SERVE_RING, &net_all, &fb);
            ASSERT(fabs(net_all / net_ring - 1.0) > 100 * SERVE_TOL); /* the rings' states differ */
            scale = net_ring / net_all;
        }
        printf("  served at now - H to the held-out shoppers: %.4f (x %.4f), their spend after %.4f\n", pred, scale,
               actual);
        ASSERT(actual > 0);
        ASSERT_REL(pred * scale, actual, SERVE_TOL);
        model_release(m);
        lstm_weights_release(tr.net);
    }
}

/* The mean's pull in training: on the churn shoppers of p's calibration,
 * with what a returning churner spends drawn apart from what it spent
 * before (so where p is small the network's mean given a purchase says
 * nothing of the spend), a pull is fitted, and the network it comes with
 * serves at now the same total as the same network trained without it
 * (train.mean_shrink false: the same fit, the level calibrated alike),
 * from the whole sequences and from rings, while some shoppers' values
 * move: the pull reorders, it does not move the total. */
static void check_pull_keeps_total(void)
{
    static Data churn;
    static TrainShopper served[MAX_SHOPPERS];
    make_span_churn(&churn, NCHURN, 720, true);
    int changed = 0;
    for (int i = 0; i < NCHURN; i++) { /* the returning purchase (make_span_mixed) is a churner's last event */
        const TrainShopper *t = &churn.sh[i];
        Event *last = &churn.ev[t->first + t->n - 1];
        if (i % 2 && i % 4 == 3 && last->ts == NOW - (int64_t)(H_DAYS / 2) * DAY) {
            last->value = 5.0 + 6.0 * ((i * 5 + 3) % 9);
            changed++;
        }
    }
    ASSERT(changed > 50);
    serve_windows(&churn, served, SERVE_RING);
    for (int rings = 0; rings < 2; rings++) {
        TrainResult tr[2];
        for (int on = 0; on < 2; on++) {
            TrainConfig tc;
            train_config(&tc, 50);
            tc.level = 2;
            tc.ring = rings ? SERVE_RING : 0;
            tc.mean_shrink = on;
            TrainSet set = churn.set;
            set.history_events = set.nevents;
            set.served = rings ? served : NULL;
            train_ok(&set, &tc, 17, &tr[on]);
        }
        printf("the pull in training%s: m_shrink %.3g, m_center %.4f, level shift %.4f (without it %.4f)\n",
               rings ? " (served from rings)" : "", tr[1].m_shrink, tr[1].m_center, tr[1].level_shift,
               tr[0].level_shift);
        ASSERT(tr[0].m_shrink == 0.0 && tr[1].m_shrink > 0.0 && fabs(tr[1].m_center) <= HEAD_M_CENTER_MAX);
        FallbackFit fit = prior_fit();
        Model *m[2];
        double net[2], fb[2];
        for (int on = 0; on < 2; on++) {
            ASSERT(model_create(&m[on], tr[on].net, &fit, H_DAYS, MODEL_TRAINED, 1) == 0);
            served_totals(&churn, rings ? served : churn.sh, m[on], rings ? SERVE_RING : 0, &net[on], &fb[on]);
        }
        int moved = 0;
        for (size_t i = 0; i < churn.set.nshoppers; i++) {
            const TrainShopper *t = rings ? &served[i] : &churn.sh[i];
            Prediction p[2];
            FallbackOutput fo;
            for (int on = 0; on < 2; on++)
                serve_one(m[on], t, churn.ev + t->first, t->n, rings ? SERVE_RING : 0, NOW, &p[on], &fo);
            moved += fabs(p[1].ltv / p[0].ltv - 1.0) > 0.01;
        }
        printf("  served at now: %.4f with the pull, %.4f without; %d shoppers' values moved by over 1%%\n", net[1],
               net[0], moved);
        ASSERT_REL(net[1], net[0], SERVE_TOL);
        ASSERT(moved > 10);
        for (int on = 0; on < 2; on++) {
            model_release(m[on]);
            lstm_weights_release(tr[on].net);
        }
    }
}

/* The mean's pull toward the centre (trainer_fit_mean_shrink), on
 * held-out shoppers made here: 20,000 with p from 0.3% to 90% and a network
 * mean given a purchase log m ~ N(4, 0.5). When the spend of those who buy
 * follows m everywhere, no pull is fitted; when below p = 0.15 it does not
 * follow m at all (their log m is a fresh draw), a pull is fitted, and it
 * lowers the deviance it was chosen by. Then the centre that keeps their
 * total (trainer_mean_shrink_centre). */
static double unit(uint64_t *s)
{
    *s ^= *s << 13, *s ^= *s >> 7, *s ^= *s << 17;
    return ((double)(*s >> 11) + 0.5) / 9007199254740992.0;
}

static double normal(uint64_t *s) { return sqrt(-2 * log(unit(s))) * cos(6.283185307179586 * unit(s)); }

static void check_mean_shrink_fit(void)
{
    enum { N = 20000 };
    static double z[3 * N], y[2][N];
    uint64_t rng = 0x9e3779b97f4a7c15ull;
    const double sigma = 0.6, z2 = log(expm1(sigma - HEAD_SIGMA_MIN)); /* softplus(z2) + 0.05 = sigma */
    for (int i = 0; i < N; i++) {
        const double p = 0.003 + 0.9 * pow(unit(&rng), 2.0), lm = 4.0 + 0.5 * normal(&rng);
        z[3 * i] = log(p / (1 - p));
        z[3 * i + 1] = lm - 0.5 * sigma * sigma;
        z[3 * i + 2] = z2;
        const bool buys = unit(&rng) < p;
        const double draw = sigma * normal(&rng) - 0.5 * sigma * sigma, fresh = 4.0 + 0.5 * normal(&rng);
        y[0][i] = buys ? exp(lm + draw) : 0.0;
        y[1][i] = buys ? exp((p < 0.15 ? fresh : lm) + draw) : 0.0;
    }
    HeadCalib follows = HEAD_CALIB_NONE, noise = HEAD_CALIB_NONE;
    trainer_fit_mean_shrink(z, y[0], N, &follows);
    trainer_fit_mean_shrink(z, y[1], N, &noise);
    printf("mean's pull: m_shrink %.3g where the spend follows m, %.3g (centre %.3f) where it does not below p = 0.15\n",
           follows.m_shrink, noise.m_shrink, noise.m_center);
    ASSERT(follows.m_shrink <= 0.001);
    ASSERT(noise.m_shrink >= 0.01 && fabs(noise.m_center - 4.0) < 0.1);
    ASSERT(noise.level_shift == 0.0 && noise.p_scale == 1.0); /* only the mean's two are set */
    /* the fitted pull lowers the deviance (total scaled to the spend) against none */
    double dev[2];
    for (int k = 0; k < 2; k++) {
        HeadCalib c = k ? noise : HEAD_CALIB_NONE;
        double sm = 0, sy = 0, syl = 0;
        for (int i = 0; i < N; i++) {
            const ZilnParams zp = head_ziln(z + 3 * i, &c);
            sm += ziln_mean(&zp);
            sy += y[1][i];
            syl += y[1][i] > 0 ? y[1][i] * log(ziln_mean(&zp)) : 0.0;
        }
        dev[k] = sy * log(sm) - syl;
    }
    ASSERT(dev[1] < dev[0]);
    /* the centre that moves no total (trainer_mean_shrink_centre), under a
     * p calibration and a level shift: the pulled means sum to the unpulled
     * ones, shoppers' means move both ways, nothing else of cal changes */
    HeadCalib kept = noise, unpulled;
    kept.p_scale = 1.2, kept.p_offset = -0.3, kept.level_shift = 0.4;
    unpulled = kept;
    unpulled.m_shrink = unpulled.m_center = 0.0;
    ASSERT(trainer_mean_shrink_centre(z, N, &kept) == 0);
    double sum_kept = 0, sum_unpulled = 0;
    int up = 0, down = 0;
    for (int i = 0; i < N; i++) {
        const ZilnParams a = head_ziln(z + 3 * i, &kept), b = head_ziln(z + 3 * i, &unpulled);
        sum_kept += ziln_mean(&a), sum_unpulled += ziln_mean(&b);
        up += ziln_mean(&a) > 1.01 * ziln_mean(&b), down += ziln_mean(&a) < 0.99 * ziln_mean(&b);
        ASSERT(a.p == b.p && a.sigma == b.sigma);
    }
    printf("the pull's centre keeping the total: %.4f (fitted %.4f); %d shoppers' means up, %d down by over 1%%\n",
           kept.m_center, noise.m_center, up, down);
    ASSERT_REL(sum_kept, sum_unpulled, 1e-9);
    ASSERT(up > 100 && down > 100 && fabs(kept.m_center) <= HEAD_M_CENTER_MAX);
    ASSERT(kept.m_shrink == noise.m_shrink && kept.p_scale == 1.2 && kept.p_offset == -0.3 && kept.level_shift == 0.4);
    HeadCalib no_pull = unpulled; /* nothing to do without a pull */
    no_pull.m_center = 1.5;
    ASSERT(trainer_mean_shrink_centre(z, N, &no_pull) == 0 && no_pull.m_center == 1.5);
    HeadCalib nobody = noise; /* no shopper, or a total that is not finite: the pull is removed */
    ASSERT(trainer_mean_shrink_centre(z, 0, &nobody) == -EDOM && nobody.m_shrink == 0.0 && nobody.m_center == 0.0);
    double inf_z[3] = {0.0, INFINITY, 0.0};
    HeadCalib overflow = noise;
    ASSERT(trainer_mean_shrink_centre(inf_z, 1, &overflow) == -EDOM && overflow.m_shrink == 0.0);
    HeadCalib none = HEAD_CALIB_NONE;
    double zero[3 * 4] = {0}, ys[4] = {0};
    trainer_fit_mean_shrink(zero, ys, 4, &none); /* nobody spent: none */
    ASSERT(none.m_shrink == 0.0 && none.m_center == 0.0);
    for (int i = 0; i < N; i++) /* a diverged network's means, log m about 100: a centre no file may hold */
        z[3 * i + 1] += 96.0;
    HeadCalib diverged = HEAD_CALIB_NONE;
    trainer_fit_mean_shrink(z, y[1], N, &diverged);
    ASSERT(diverged.m_shrink == 0.0 && diverged.m_center == 0.0);
}

int main(void)
{
    check_auto_rule();
    check_level_rules();
    check_fallback_level_as_served();
    check_p_calibration();
    check_mean_shrink_fit();
    check_pull_keeps_total();
    TEST_DONE("test_level");
}
