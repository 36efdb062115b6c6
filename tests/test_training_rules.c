/* Training rules, on histories made here (no CDNOW needed): only matured
 * labels enter training.
 *
 * A training example is a shopper's history up to a cut time c with the
 * label "net spend in (c, c + H]"; only cuts with c + H <= now are used
 * (brief §4, docs/MODEL.md "Training"). The histories here run right up to
 * now, so half a year of possible cut times is too young. Asserted:
 *   - every example's cut has c + H <= now, and the cuts are exactly the
 *     documented ones (one calendar grid back from now - H, from the
 *     shopper's first event on, and a training shopper's purchase times
 *     up to now - H; validation shoppers only the grid's times in the last
 *     2 x grid_days, now - H among them);
 *   - every label equals the net spend in (c, c + H] computed here from
 *     the events, floored at 0;
 *   - events after now change no example and no label; changing the values
 *     of events in (now - H, now] changes exactly the labels whose window
 *     holds them;
 *   - a shopper first seen within the last H days yields no example;
 *   - trainer_run's example counts (train and validation) are the number
 *     of cuts the rule allows; when fewer are kept, a validation shopper
 *     still keeps its cut at now - H;
 *   - the cut times are the grid's and a training shopper's purchase
 *     times: a shopper with daily views is not cut at its views, one with
 *     one event is cut at the grid times, a held-out one at the grid's
 *     only, and the labels at purchase times leave out the purchase at
 *     the cut; past 1,280 candidates (their bound) the oldest are left
 *     out, purchases at one time count once and refunds are not cut at;
 *   - the browse and cart summary at a cut covers the ring's worth of
 *     events before it, as serving's does;
 *   - the head learns the time of year at as_of only when 1% of the
 *     matured cuts are at or before now - 365 k days (serving's time of
 *     year; k the horizon's years, rounded up), the LSTM each event's only
 *     when 1% are a year older than the latest: otherwise their weights
 *     stay exactly 0; with such cuts they move;
 *   - the level and p's calibration: tests/test_level.c. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "training_data.h"

static int cmp_ts(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

/* The cut times the rule allows for one shopper, ascending: the grid's
 * from its first event on and, for a training shopper, its purchases' up
 * to now - H. */
static int allowed_cuts(const Data *d, int i, bool val, int64_t *out)
{
    const TrainShopper *t = &d->sh[i];
    const Event *ev = d->ev + t->first;
    const int64_t newest = NOW - (int64_t)H_DAYS * DAY;
    const int64_t oldest = val ? newest - 2 * (int64_t)GRID_DAYS * DAY : INT64_MIN;
    int n = 0;
    for (int64_t c = newest - 400 * DAY; c <= newest; c += DAY) /* every day: the grid's are kept */
        if (c >= ev[0].ts && c >= oldest && (newest - c) % ((int64_t)GRID_DAYS * DAY) == 0)
            out[n++] = c;
    for (size_t k = 0; !val && k < t->n; k++) {
        bool known = false;
        for (int j = 0; j < n; j++)
            known |= out[j] == ev[k].ts;
        if (ev[k].type == EV_PURCHASE && ev[k].ts <= newest && !known)
            out[n++] = ev[k].ts;
    }
    qsort(out, (size_t)n, sizeof out[0], cmp_ts);
    return n;
}

/* Net spend in (c, c + H], floored at 0, from the shopper's events;
 * *recent: whether a purchase or refund in (now - H, now] is in it. */
static double label_of(const Data *d, int i, int64_t c, bool *recent)
{
    const TrainShopper *t = &d->sh[i];
    double y = 0;
    *recent = false;
    for (size_t k = 0; k < t->n; k++) {
        const Event *e = &d->ev[t->first + k];
        if (e->ts > c && e->ts <= c + (int64_t)H_DAYS * DAY && e->value > 0) {
            y += e->type == EV_PURCHASE ? e->value : -e->value;
            *recent |= e->ts > NOW - (int64_t)H_DAYS * DAY;
        }
    }
    return y > 0 ? y : 0;
}

/* The backtest lists every validation example (cut order within shopper
 * order) with its label, the shopper's age and recency at the cut. With
 * every shopper in validation, that is every example. */
static size_t check_examples(const Data *d, AdjPair **pairs_out)
{
    TrainConfig tc;
    train_config(&tc, 100);
    FallbackFit fit = {BGNBD_CDNOW_PRIOR, GG_CDNOW_PRIOR, 0, 0, 0, 0, {0}};
    AdjPair *pairs;
    size_t np;
    ASSERT(trainer_backtest(&d->set, &tc, &fit, NULL, &pairs, &np) == 0);
    size_t k = 0, reaching = 0;
    for (int i = 0; i < (int)d->set.nshoppers; i++) {
        int64_t cuts[MAX_EV + 64];
        int nc = allowed_cuts(d, i, true, cuts);
        const Event *ev = d->ev + d->sh[i].first;
        if (i >= NOLD)
            ASSERT(nc == 0); /* young: nothing has matured */
        for (int j = 0; j < nc; j++, k++) {
            ASSERT(k < np);
            int64_t c = cuts[j];
            ASSERT(c + (int64_t)H_DAYS * DAY <= NOW);
            double age = (double)(c - ev[0].ts) / DAY;
            int64_t last = ev[0].ts;
            for (size_t e = 0; e < d->sh[i].n && ev[e].ts <= c; e++)
                last = ev[e].ts;
            ASSERT_NEAR(pairs[k].tenure_days, age, 1e-3 * (1 + age)); /* float features: ~1e-7 relative */
            ASSERT_NEAR(pairs[k].recency_days, (double)(c - last) / DAY, 1e-3 * (1 + age));
            bool recent;
            ASSERT(pairs[k].actual == label_of(d, i, c, &recent)); /* sums of a few multiples of 0.5: exact */
            reaching += recent;
        }
    }
    ASSERT(k == np); /* and no other example */
    ASSERT(reaching > 0); /* matured windows may reach into (now - H, now]: c + H <= now is the rule */
    *pairs_out = pairs;
    return np;
}

/* With fewer cuts kept than allowed, every validation shopper still keeps
 * its cut at now - H (the level is calibrated there, one cut per held-out
 * shopper): the last of its examples, in cut order, is at that age. */
static void check_newest_kept(const Data *d)
{
    TrainConfig tc;
    train_config(&tc, 100);
    tc.cuts_per_shopper = 2;
    FallbackFit fit = {BGNBD_CDNOW_PRIOR, GG_CDNOW_PRIOR, 0, 0, 0, 0, {0}};
    AdjPair *pairs;
    size_t np, k = 0;
    ASSERT(trainer_backtest(&d->set, &tc, &fit, NULL, &pairs, &np) == 0);
    const int64_t newest = NOW - (int64_t)H_DAYS * DAY;
    int thinned = 0;
    for (int i = 0; i < (int)d->set.nshoppers; i++) {
        int64_t cuts[MAX_EV + 64];
        int nc = allowed_cuts(d, i, true, cuts);
        int keep = nc < 2 ? nc : 2;
        thinned += nc > 2;
        k += (size_t)keep;
        if (keep) {
            double age = (double)(newest - d->ev[d->sh[i].first].ts) / DAY;
            ASSERT(k <= np);
            ASSERT_NEAR(pairs[k - 1].tenure_days, age, 1e-3 * (1 + age));
        }
    }
    ASSERT(k == np && thinned > 0);
    free(pairs);
}

/* The cut times are the calendar grid's and a training shopper's
 * purchase times, whatever else it did: a shopper with a view every day
 * for 61 days and a purchase every fifth (one of them at now - H) is cut
 * at its purchase days, the grid's among them, and not at its views; a
 * shopper with one view 60 days less an hour before now - H is cut at the
 * grid times, now - H - k x grid, from its first event on. Held out, the
 * first is cut at the grid times only. */
static void check_grid_times(void)
{
    enum { N = 61 };
    static Event ev[N + 1];
    const int64_t newest = NOW - (int64_t)H_DAYS * DAY, grid = (int64_t)GRID_DAYS * DAY;
    for (int k = 0; k < N; k++)
        ev[k] = (Event){.ts = newest - (int64_t)(N - 1 - k) * DAY, .type = k % 5 ? EV_VIEW : EV_PURCHASE,
                        .value = k % 5 ? 0.0 : 20.0, .quantity = 1};
    ev[N] = (Event){.ts = newest - (int64_t)(N - 1) * DAY + 3600, .type = EV_VIEW, .quantity = 1}; /* the other */
    TrainShopper sh[2] = {{.first = 0, .n = N, .key = 1}, {.first = N, .n = 1, .key = 2}};
    shopper_agg_init(&sh[0].agg0);
    shopper_agg_init(&sh[1].agg0);
    TrainSet set = {.events = ev, .nevents = N + 1, .shoppers = sh, .nshoppers = 2, .now = NOW};
    FallbackFit fit = {BGNBD_CDNOW_PRIOR, GG_CDNOW_PRIOR, 0, 0, 0, 0, {0}};
    DatasetConfig dc = {.horizon_days = H_DAYS, .grid_days = GRID_DAYS, .cuts_per_shopper = 256,
                        .max_examples = 1000, .seed = 1, .val_percent = 0};
    Dataset d;
    ASSERT(dataset_build(&d, &set, &dc, &fit) == 0 && d.nseq == 2);
    /* the daily shopper: 13 purchase days, newest - 5k days (the grid's three among them: events at c count) */
    ASSERT(d.seqs[0].ncuts == 13);
    for (int k = 0; k < 13; k++) {
        const TrainCut *ct = &d.seqs[0].cuts[k];
        ASSERT(ct->c == newest - (int64_t)(12 - k) * 5 * DAY);
        double y = 0; /* the label: the purchases in (c, c + H], the one at c not among them */
        for (int e = 0; e < N; e++)
            y += ev[e].ts > ct->c && ev[e].ts <= ct->c + (int64_t)H_DAYS * DAY ? ev[e].value : 0.0;
        ASSERT(ct->y == y && ev[ct->t].ts == ct->c); /* and the inputs end with the purchase at c */
    }
    /* the other's first event is an hour after a grid time: its first grid time is now - H - grid */
    ASSERT(d.seqs[1].ncuts == 2);
    for (int k = 0; k < 2; k++)
        ASSERT(d.seqs[1].cuts[k].c == newest - (int64_t)(1 - k) * grid);
    dataset_free(&d);
    dc.val_percent = 100; /* held out: the grid's times in the last 2 x grid_days only */
    set.nshoppers = 1;
    ASSERT(dataset_build(&d, &set, &dc, &fit) == 0 && d.nseq == 1 && d.seqs[0].ncuts == 3);
    for (int k = 0; k < 3; k++)
        ASSERT(d.seqs[0].cuts[k].c == newest - (int64_t)(2 - k) * grid && d.seqs[0].val);
    dataset_free(&d);
    /* a daily grid over 1,500 days: the newest 1,280 grid times are the candidates (the bound), the older ones go */
    ev[0] = (Event){.ts = newest - 1500 * (int64_t)DAY, .type = EV_PURCHASE, .value = 10.0, .quantity = 1};
    ev[1] = (Event){.ts = newest, .type = EV_VIEW, .quantity = 1};
    sh[0].n = 2;
    dc.val_percent = 0;
    dc.grid_days = 1;
    dc.cuts_per_shopper = 2000; /* above the config's bound, to keep every candidate */
    dc.max_examples = 5000;
    ASSERT(dataset_build(&d, &set, &dc, &fit) == 0 && d.nseq == 1);
    ASSERT(d.seqs[0].ncuts == 1280);
    ASSERT(d.seqs[0].cuts[0].c == newest - 1279 * (int64_t)DAY && d.seqs[0].cuts[1279].c == newest);
    dataset_free(&d);
    /* and 100 purchases half a day off the grid in its last 100 days, two of them at one time, and a refund:
     * the newest 1,280 candidates are 1,180 grid times and 99 purchase times (one for the pair) and now - H */
    static Event many[104];
    int m = 0;
    many[m++] = (Event){.ts = newest - 1500 * (int64_t)DAY, .type = EV_PURCHASE, .value = 10.0, .quantity = 1};
    for (int k = 99; k >= 0; k--)
        many[m++] = (Event){.ts = newest - (int64_t)k * DAY - (k == 0 ? DAY + DAY / 2 : DAY / 2), .type = EV_PURCHASE,
                            .value = 5.0, .quantity = 1}; /* k = 1 and 0: both at now - H - 1.5 days */
    many[m++] = (Event){.ts = newest - DAY / 4, .type = EV_REFUND, .value = 5.0, .quantity = 1};
    many[m++] = (Event){.ts = newest, .type = EV_VIEW, .quantity = 1};
    TrainShopper one = {.first = 0, .n = (size_t)m, .key = 1};
    shopper_agg_init(&one.agg0);
    TrainSet mset = {.events = many, .nevents = (size_t)m, .shoppers = &one, .nshoppers = 1, .now = NOW};
    ASSERT(dataset_build(&d, &mset, &dc, &fit) == 0 && d.nseq == 1 && d.seqs[0].ncuts == 1280);
    int off_grid = 0;
    for (int k = 0; k < 1280; k++) {
        const int64_t c = d.seqs[0].cuts[k].c;
        ASSERT(k == 0 || c > d.seqs[0].cuts[k - 1].c);
        off_grid += (newest - c) % DAY != 0;
    }
    ASSERT(off_grid == 99 && d.seqs[0].cuts[0].c == newest - 1180 * (int64_t)DAY);
    ASSERT(d.seqs[0].cuts[1279].c == newest);
    dataset_free(&d);
}

/* The browse and cart summary at a training cut covers the last `ring`
 * events, as serving's ring does, however long the sequence: a shopper
 * views, adds to cart 20 days later, then views once a day. At a cut with
 * more than 3 views after the cart a ring of 4 no longer holds it ("since
 * the last add-to-cart" is then the shopper's age, as for none), while the
 * whole sequence (ring 0) does. */
static void check_ring_summary(void)
{
    enum { N = 40 };
    static Event ev[N];
    const int64_t start = NOW - (int64_t)(H_DAYS + 60) * DAY + 3600;
    for (int k = 0; k < N; k++)
        ev[k] = (Event){.ts = start + (int64_t)(k == 0 ? 0 : 19 + k) * DAY, .type = k == 1 ? EV_ADD_TO_CART : EV_VIEW,
                        .quantity = 1};
    TrainShopper sh = {.first = 0, .n = N, .key = 1};
    shopper_agg_init(&sh.agg0);
    TrainSet set = {.events = ev, .nevents = N, .shoppers = &sh, .nshoppers = 1, .now = NOW};
    FallbackFit fit = {BGNBD_CDNOW_PRIOR, GG_CDNOW_PRIOR, 0, 0, 0, 0, {0}};
    int held = 0, gone = 0;
    for (int ring = 0; ring <= 4; ring += 4) {
        DatasetConfig dc = {.horizon_days = H_DAYS, .grid_days = 1, .cuts_per_shopper = 256, /* a cut a day */
                            .max_examples = 1000, .seed = 1, .ring = ring};
        Dataset d;
        ASSERT(dataset_build(&d, &set, &dc, &fit) == 0 && d.nseq == 1);
        for (int k = 0; k < d.seqs[0].ncuts; k++) {
            const TrainCut *ct = &d.seqs[0].cuts[k];
            if (ct->t < 1)
                continue; /* before the cart */
            double age = (double)(ct->c - ev[0].ts) / DAY, since = (double)(ct->c - ev[1].ts) / DAY;
            bool in_ring = ring == 0 || ct->t - 1 < ring;
            ASSERT_NEAR(ct->e[5], log1p(in_ring ? since : age), 1e-5); /* e[5]: days since the last add-to-cart */
            held += in_ring;
            gone += !in_ring;
        }
        dataset_free(&d);
    }
    ASSERT(held > 0 && gone > 0);
}

/* trainer_run's counts are those of the allowed cuts, split by key. */
static void check_counts(const Data *d, uint64_t *examples)
{
    TrainConfig tc;
    train_config(&tc, 30);
    uint64_t want = 0, want_val = 0, users = 0;
    for (int i = 0; i < (int)d->set.nshoppers; i++) {
        bool val = (int)(d->sh[i].key % 100) < tc.val_percent;
        int64_t cuts[MAX_EV + 64];
        int nc = allowed_cuts(d, i, val, cuts);
        want += (uint64_t)nc;
        want_val += val ? (uint64_t)nc : 0;
        users += nc > 0;
    }
    TrainResult tr;
    train_ok(&d->set, &tc, 7, &tr);
    ASSERT(tr.examples == want && tr.val_examples == want_val && tr.users == users);
    lstm_weights_release(tr.net);
    *examples = tr.examples;
}

/* The season gates. The head learns the time of year at as_of only when
 * 1% of the matured cuts are at or before now - 365 k days (k the horizon's
 * years, rounded up), where a label has shown serving's time of year; the
 * LSTM learns each event's only when 1% are a year older than the latest,
 * now - H - 365 days. Shoppers with an event every 6 days and a purchase
 * (a cut) every 18 from D days back, at H = 60 unless said:
 *   - D = 330: neither; D = 377: its oldest cut at now - 365 d + 1-12 h,
 *     neither; D = 378: a purchase at now - 366 d + 1-12 h, the head only
 *     (under the gate before 2026-12-01, neither); D = 400, the head only;
 *   - D = 720: both; at H = 400 neither (the head's would be now - 730);
 *   - H = 400, D = 731: the grid cut at now - H - 11 x 30 d = now - 730 d,
 *     the head only; D = 730: that cut is before the first event, neither;
 *   - H = 365, D = 400: every cut is at or before now - 365, the head. */
/* How many shoppers, from index 0 (make_span_mixed's older ones), hold
 * `want` of the training split at check_season_gate's val_percent (30): a
 * shopper is held out when its key (make_span_churn: 37 i + 11) % 100 is
 * below it (src/dataset.c). */
static int older_in_training(int want)
{
    int n = 0;
    for (int training = 0; training < want; n++)
        training += (37 * n + 11) % 100 >= 30;
    return n;
}

static void check_season_gate(void)
{
    /* a small store: 40 shoppers of 330 days, and its oldest of 720 days,
     * whose cuts before now - 365 (and before the latest - 365) are well
     * over 1% of all: 19 such shoppers in the training split are not
     * enough for a season, 20 are (the gate counts the training split's
     * shoppers and cuts; a validation shopper's learn nothing) */
    static Data d330, d377, d378, d400, d720, d730, d731, few19, few20;
    make_span_mixed(&few19, NOLD + older_in_training(19), 330, false, older_in_training(19), 720);
    make_span_mixed(&few20, NOLD + older_in_training(20), 330, false, older_in_training(20), 720);
    make_span(&d330, NOLD, 330);
    make_span(&d377, NOLD, 377);
    make_span(&d378, NOLD, 378);
    make_span(&d400, NOLD, 400);
    make_span(&d720, NOLD, 720);
    make_span(&d730, NOLD, 730);
    make_span(&d731, NOLD, 731);
    const struct {
        const Data *data;
        int horizon_days;
        bool head, events;
    } cases[] = {
        {&d330, H_DAYS, false, false}, {&d377, H_DAYS, false, false}, {&d378, H_DAYS, true, false},
        {&d400, H_DAYS, true, false},  {&d720, H_DAYS, true, true},   {&d720, 400, false, false},
        {&d731, 400, true, false},     {&d730, 400, false, false},    {&d400, 365, true, false},
        {&few19, H_DAYS, false, false}, {&few20, H_DAYS, true, true},
        /* at H = 365 the held-out shoppers' cuts (now - H and the two grid
         * times before) are at or before now - 365 too: they do not count */
        {&few19, 365, false, false},    {&few20, 365, true, false},
    };
    for (size_t h = 0; h < sizeof cases / sizeof cases[0]; h++) {
        TrainConfig tc;
        train_config(&tc, 30);
        tc.max_epochs = 2;
        tc.horizon_days = cases[h].horizon_days;
        TrainResult tr;
        train_ok(&cases[h].data->set, &tc, 9, &tr);
        if (tr.seasonal != cases[h].head || tr.seasonal_events != cases[h].events)
            fprintf(stderr, "season gate case %zu: head %d events %d\n", h, tr.seasonal, tr.seasonal_events);
        ASSERT(tr.seasonal == cases[h].head && tr.seasonal_events == cases[h].events);
        const int U = tr.net->cfg.hidden + HEAD_EXTRA;
        double season = 0, by_p = 0, other = 0; /* the time of year alone, and times the fallback's p */
        for (int r = 0; r < 3; r++) {
            const double *row = tr.net->head_w + (size_t)r * (size_t)U + tr.net->cfg.hidden;
            season += fabs(row[HEAD_EXTRA_SEASON]) + fabs(row[HEAD_EXTRA_SEASON + 1]);
            by_p += fabs(row[HEAD_EXTRA_SEASON_BY_P]) + fabs(row[HEAD_EXTRA_SEASON_BY_P + 1]);
            other += fabs(row[0]) + fabs(row[1]);
        }
        const int H = tr.net->cfg.hidden, K = FEATURE_DIM + H;
        double event_season = 0; /* the LSTM's weights on each event's time of year, inputs 11 and 12 */
        for (int g = 0; g < 4 * H; g++)
            event_season += fabs(tr.net->w[(size_t)g * (size_t)K + FEATURE_SEASON]) +
                            fabs(tr.net->w[(size_t)g * (size_t)K + FEATURE_SEASON + 1]);
        ASSERT(other > 0);
        ASSERT(cases[h].head ? season > 0 && by_p > 0 : season == 0 && by_p == 0);
        ASSERT(cases[h].events ? event_season > 0 : event_season == 0);
        lstm_weights_release(tr.net);
    }
}

int main(void)
{
    static Data base, young, late, recent;
    make_data(&base, false, false, 1.0);
    make_data(&young, true, false, 1.0);
    make_data(&late, true, true, 1.0);
    make_data(&recent, true, false, 3.0);

    AdjPair *p_base, *p_young, *p_late, *p_recent;
    size_t n_base = check_examples(&base, &p_base);
    size_t n_young = check_examples(&young, &p_young);
    size_t n_late = check_examples(&late, &p_late);
    size_t n_recent = check_examples(&recent, &p_recent);
    printf("%zu examples; young shoppers add %zu\n", n_base, n_young - n_base);

    /* shoppers first seen within the last H days: no example */
    ASSERT(n_young == n_base);
    /* events after now: the same examples, labels and predictions */
    ASSERT(n_late == n_young);
    for (size_t k = 0; k < n_young; k++) {
        ASSERT(p_late[k].actual == p_young[k].actual && p_late[k].pred == p_young[k].pred);
        ASSERT(p_late[k].tenure_days == p_young[k].tenure_days);
    }
    /* values in (now - H, now] tripled: the same cuts, and exactly the labels
     * whose window holds such an event change (checked against the events
     * in check_examples); some do */
    ASSERT(n_recent == n_young);
    size_t changed = 0;
    for (size_t k = 0; k < n_young; k++) {
        ASSERT(p_recent[k].tenure_days == p_young[k].tenure_days);
        changed += p_recent[k].actual != p_young[k].actual;
    }
    ASSERT(changed > 0);

    uint64_t e_young, e_late;
    check_counts(&young, &e_young);
    check_counts(&late, &e_late);
    ASSERT(e_late == e_young);
    check_newest_kept(&young);
    check_ring_summary();
    check_grid_times();
    check_season_gate();
    printf("trainer_run: %llu examples, %zu labels moved by (now - H, now] values\n", (unsigned long long)e_young,
           changed);
    free(p_base);
    free(p_young);
    free(p_late);
    free(p_recent);
    TEST_DONE("test_training_rules");
}
