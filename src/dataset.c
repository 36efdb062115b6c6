/* dataset: cutting shoppers' retained events into examples: candidate cut
 * times, the seeded choice among them, each cut's head inputs, anchors and
 * label (include/dataset.h). Worker thread; pure. */
#include "dataset.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "head.h"
#include "pace.h"
#include "util.h"

#define NIN FEATURE_DIM
#define NE HEAD_EXTRA

static double net_spend(const Event *ev, int n, int64_t from_excl, int64_t to_incl)
{
    double y = 0;
    for (int i = 0; i < n; i++) {
        if (ev[i].ts <= from_excl || ev[i].ts > to_incl)
            continue;
        if (ev[i].type == EV_PURCHASE)
            y += ev[i].value;
        else if (ev[i].type == EV_REFUND)
            y -= ev[i].value;
    }
    return y > 0 ? y : 0;
}

#define MAX_CANDIDATES 1280 /* candidate cut times per shopper, grid and purchase times: 3.5 years of daily ones */

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

/* The candidate cut times of one shopper's n events (ascending, by ts),
 * ascending into cand (MAX_CANDIDATES): the grid times newest - k x grid
 * from newest back to oldest, merged with the times of the purchases at or
 * before newest when purchases is set; each time once, the newest ones
 * when there are more. Returns their count. grid <= 0 (only a caller that
 * builds its own config: the configuration's is at least a day): newest
 * is the one grid time. */
static int candidate_times(int64_t *cand, const Event *ev, int n, int64_t newest, int64_t oldest, int64_t grid,
                           bool purchases)
{
    int nc = 0, i = n - 1;
    int64_t g = newest;
    while (nc < MAX_CANDIDATES) { /* newest first, then reversed */
        while (purchases && i >= 0 && (ev[i].type != EV_PURCHASE || ev[i].ts > newest))
            i--;
        const bool has_g = g >= ev[0].ts && g >= oldest, has_p = purchases && i >= 0;
        if (!has_g && !has_p)
            break;
        int64_t t = has_g && (!has_p || g >= ev[i].ts) ? g : ev[i].ts;
        if (has_g && g == t)
            g = grid > 0 ? g - grid : INT64_MIN;
        while (has_p && i >= 0 && ev[i].ts == t)
            i--;
        if (nc == 0 || cand[nc - 1] != t)
            cand[nc++] = t;
    }
    for (int a = 0, b = nc - 1; a < b; a++, b--) {
        int64_t t = cand[a];
        cand[a] = cand[b];
        cand[b] = t;
    }
    return nc;
}

int dataset_build(Dataset *d, const TrainSet *set, const DatasetConfig *cfg, const FallbackFit *fit)
{
    memset(d, 0, sizeof *d);
    TrainSeq *seqs = calloc(set->nshoppers ? set->nshoppers : 1, sizeof *seqs);
    if (!seqs)
        return -ENOMEM;
    uint64_t rng = cfg->seed * 0x9e3779b97f4a7c15ull + 7;
    const int64_t Hs = (int64_t)cfg->horizon_days * 86400;
    const int64_t grid = (int64_t)cfg->grid_days * 86400;
    size_t nseq = 0, total = 0;
    int64_t cand[MAX_CANDIDATES];
    for (size_t si = 0; si < set->nshoppers && total < cfg->max_examples; si++) {
        if (si % 64 == 0)
            pace_point(); /* a job's unit: 64 shoppers' sequences encoded */
        const TrainShopper *sh = &set->shoppers[si];
        const Event *ev = set->events + sh->first;
        int n = (int)sh->n;
        if (n == 0 || n > DATASET_MAX_EVENTS)
            continue;
        /* candidate cut times: one calendar grid for every shopper, every
         * grid_days back from newest (the latest time whose label has
         * matured) to the shopper's first retained event, and for a
         * training shopper also the times of its purchases up to newest.
         * Serving asks about every shopper at one time, whatever each was
         * doing then, and so does a grid time (the draw below keeps each
         * candidate with probability cuts_per_shopper / their count, so
         * long-standing shoppers weigh less at one time: docs/MODEL.md,
         * "Training", step 2). A purchase time shows the state a repeat
         * purchase leaves, which a coarse grid meets rarely where
         * histories are short (CDNOW: 4-7 grid times a shopper). Cutting
         * at every event time instead (views as well) over-represented
         * shoppers in the middle of a visit; the network's bias then moved
         * with the season and the population's age, so the level
         * calibrated at now - H did not carry to now (docs/ACCURACY.md,
         * "Cut times on one calendar grid"). Validation shoppers are
         * judged the way predictions are served, as late as possible:
         * only the grid times in the last 2 x grid_days, newest among
         * them, which they always keep (below). Past MAX_CANDIDATES, the
         * oldest candidates go. */
        bool val = (int)(sh->key % 100) < cfg->val_percent;
        const int64_t newest = set->now - Hs;
        int nc = candidate_times(cand, ev, n, newest, val ? newest - 2 * grid : ev[0].ts, grid, !val);
        if (nc == 0)
            continue;
        /* keep at most cuts_per_shopper, drawn without replacement; a
         * validation shopper always keeps its cut at newest (the level's
         * calibration takes each held-out shopper once, there): it is the
         * last candidate, kept in front of the draw, and the draw it
         * replaces is made all the same, so the shoppers after this one
         * get the cuts they would get without the rule */
        int keep = nc < cfg->cuts_per_shopper ? nc : cfg->cuts_per_shopper;
        int first = 0;
        if (val && keep < nc) { /* cand[nc - 1] is newest */
            int64_t t = cand[0];
            cand[0] = cand[nc - 1];
            cand[nc - 1] = t;
            first = 1;
            (void)splitmix64(&rng);
        }
        for (int i = first; i < keep; i++) {
            int j = i + (int)(splitmix64(&rng) % (uint64_t)(nc - i));
            int64_t t = cand[i];
            cand[i] = cand[j];
            cand[j] = t;
        }
        qsort(cand, (size_t)keep, sizeof cand[0], cmp_i64);
        TrainSeq *s = &seqs[nseq];
        s->x = malloc((size_t)n * NIN * sizeof(double));
        s->cuts = malloc((size_t)keep * sizeof(TrainCut));
        if (!s->x || !s->cuts) {
            free(s->x);
            free(s->cuts);
            memset(s, 0, sizeof *s);
            d->seqs = seqs;
            d->nseq = nseq;
            dataset_free(d);
            return -ENOMEM;
        }
        s->n = n;
        s->val = val;
        EncodeContext ctx = sh->ctx0;
        float xf[NIN];
        for (int i = 0; i < n; i++) {
            encode_event(xf, &ev[i], &ctx);
            encode_context_advance(&ctx, &ev[i]);
            for (int k = 0; k < NIN; k++)
                s->x[(size_t)i * NIN + k] = xf[k];
        }
        ShopperAgg agg = sh->agg0;
        RecentSummary rs;
        int applied = 0;
        for (int k = 0; k < keep; k++) {
            int64_t c = cand[k];
            while (applied < n && ev[applied].ts <= c)
                shopper_agg_apply(&agg, &ev[applied++]);
            TrainCut *ct = &s->cuts[s->ncuts];
            ct->t = applied - 1;
            ct->c = c;
            ct->val = val;
            if (ct->t < 0)
                continue;
            /* as serving sees it: the browse and cart summary of the
             * ring's events, however long the training sequence */
            recent_summary_of(&rs, ev, (size_t)applied, (size_t)(cfg->ring > 0 ? cfg->ring : 0), c);
            FallbackOutput fo;
            model_fallback(fit, cfg->horizon_days, &agg, &rs, c, &fo);
            float e[NE];
            encode_head_extra(e, &agg, &rs, c, log1p(fo.ltv), fo.p_alive, fo.p_active);
            for (int j = 0; j < NE; j++)
                ct->e[j] = e[j];
            head_anchors(&fo, &ct->a0, &ct->a1);
            ct->bg_p = fo.ziln.p;
            ct->bg_mu = fo.ziln.mu;
            ct->bg_sigma = fo.ziln.sigma;
            ct->y = net_spend(ev, n, c, c + Hs);
            s->ncuts++;
        }
        if (s->ncuts == 0) {
            free(s->x);
            free(s->cuts);
            memset(s, 0, sizeof *s);
            continue;
        }
        total += (size_t)s->ncuts;
        nseq++;
    }
    d->seqs = seqs;
    d->nseq = nseq;
    d->examples = total;
    return 0;
}

void dataset_free(Dataset *d)
{
    for (size_t i = 0; i < d->nseq; i++) {
        free(d->seqs[i].x);
        free(d->seqs[i].cuts);
    }
    free(d->seqs);
    memset(d, 0, sizeof *d);
}

