/* The prediction log: one pending prediction per shopper, bounded, erasure
 * removes it, matured entries become pairs (all others stay findable after
 * removals), and the ring of pairs keeps the newest `cap` once it wraps. */
#include <stdlib.h>
#include <string.h>

#include "predlog.h"
#include "test_util.h"

/* outcome: shopper k spent 10 k; shoppers with k % 7 == 0 are "gone" */
static double outcome(void *arg, const PredLogEntry *e)
{
    (*(int *)arg)++;
    return e->key % 7 == 0 ? -1.0 : 10.0 * (double)e->key;
}

static double outcome_known(void *arg, const PredLogEntry *e)
{
    (void)arg;
    return 10.0 * (double)e->key;
}

/* Logs shoppers first..first+n-1 (prediction = key) and matures them all. */
static void mature_batch(PredLog *l, uint64_t first, int n)
{
    for (uint64_t k = first; k < first + (uint64_t)n; k++) {
        PredLogEntry e = {k, (int64_t)k, (double)k, 0, 5, 50, 1, (uint32_t)(k % 3 + 1), 0};
        predlog_record(l, &e);
    }
    size_t cursor = 0;
    while (predlog_mature(l, (int64_t)(first + (uint64_t)n), &cursor, 256, outcome_known, NULL))
        ;
}

/* 1 if p[0..n) holds exactly the pairs of keys first..first+n-1 (in any
 * order: maturing goes in table order), each with its own outcome, the
 * time its prediction was served (mature_batch: the key) and the network
 * that served it (key % 3 + 1). */
static int check_batch(const AdjPair *p, int first, int n)
{
    char *seen = calloc((size_t)n, 1);
    int ok = seen != NULL;
    for (int i = 0; ok && i < n; i++) {
        int k = (int)p[i].pred - first;
        ok = p[i].pred == (double)(first + k) && k >= 0 && k < n && !seen[k] && p[i].actual == 10.0 * p[i].pred &&
             p[i].t == first + k && p[i].net == (uint32_t)((first + k) % 3 + 1);
        if (ok)
            seen[k] = 1;
    }
    free(seen);
    return ok;
}

static double value_of_key(void *arg, const PredLogEntry *e)
{
    (void)arg;
    return e->pred; /* each shopper spent what was predicted */
}

/* The ring's sums (GET /metrics) are kept as pairs come and go, never
 * summed afresh: a pair of 1e15 leaving must not take the small ones'
 * digits with it. 300,000 pairs through a ring of 10, a huge one every
 * 20th: whenever the ring holds small ones only, the sums are theirs to
 * within 1e-12. */
static void check_sums_keep_their_digits(void)
{
    PredLog *l;
    ASSERT(predlog_create(&l, 10) == 0);
    double small[10];
    int checked = 0;
    for (uint64_t k = 1; k <= 300000; k++) {
        double v = k % 20 == 0 ? 1e15 : 0.1 * (double)(k % 97) + 0.003;
        PredLogEntry e = {.key = k, .t = (int64_t)k, .pred = v, .net_id = 1};
        predlog_record(l, &e);
        size_t cursor = 0;
        while (predlog_mature(l, (int64_t)k, &cursor, 64, value_of_key, NULL))
            ;
        small[k % 10] = v;
        if (k % 20 == 19) { /* the last ten are 10..19 of this twenty: no huge one among them */
            double want = 0;
            for (int i = 0; i < 10; i++)
                want += small[i];
            PredLogStats st;
            predlog_stats(l, &st);
            ASSERT(st.pairs == 10);
            ASSERT_NEAR(st.pairs_predicted, want, 1e-12 * want);
            ASSERT_NEAR(st.pairs_realised, want, 1e-12 * want);
            checked++;
        }
    }
    ASSERT(checked == 15000);
    predlog_destroy(l);
}

int main(void)
{
    check_sums_keep_their_digits();
    PredLog *l;
    ASSERT(predlog_create(&l, 1000) == 0);
    for (uint64_t k = 1; k <= 1200; k++) { /* 200 more than fit */
        PredLogEntry e = {k, (int64_t)k, 1.0 * (double)k, 0, 5, 50, 1, 1, 0};
        predlog_record(l, &e);
    }
    PredLogStats st;
    predlog_stats(l, &st);
    ASSERT(st.pending == 1000 && st.logged == 1000 && st.dropped_full == 200);
    PredLogEntry again = {5, 9999, 1, 0, 0, 0, 2, 1, 0};
    predlog_record(l, &again); /* shopper 5 already pending: not logged */
    predlog_forget(l, 10);     /* erased */
    predlog_forget(l, 5000);   /* never logged: no effect */
    predlog_stats(l, &st);
    ASSERT(st.pending == 999 && st.logged == 1000);

    /* entries with t <= 500 mature, in two passes of the cursor */
    int calls = 0;
    size_t cursor = 0;
    while (predlog_mature(l, 500, &cursor, 100, outcome, &calls))
        ;
    predlog_stats(l, &st);
    int gone = 0;
    for (int k = 1; k <= 500; k++)
        gone += k != 10 && k % 7 == 0;
    ASSERT(calls == 499);
    ASSERT(st.matured == (uint64_t)(499 - gone) && st.dropped_unknown == (uint64_t)gone);
    ASSERT(st.pending == 500 && st.pairs == (size_t)(499 - gone));
    AdjPair *pairs = malloc(1000 * sizeof *pairs);
    size_t n = predlog_pairs(l, pairs, 1000);
    ASSERT(n == st.pairs);
    for (size_t i = 0; i < n; i++) {
        ASSERT_NEAR(pairs[i].actual, 10.0 * pairs[i].pred, 1e-9); /* each outcome went with its prediction */
        ASSERT(pairs[i].pred <= 500 && (uint64_t)pairs[i].pred % 7 != 0 && pairs[i].recency_days == 5);
    }
    /* the other 500 are still there: each matures exactly once, later */
    calls = 0;
    cursor = 0;
    while (predlog_mature(l, 2000, &cursor, 64, outcome, &calls))
        ;
    ASSERT(calls == 500);
    predlog_stats(l, &st);
    ASSERT(st.pending == 0);
    int gone_all = 0; /* of the 999 logged and not erased, those whose shopper is gone */
    for (int k = 1; k <= 1000; k++)
        gone_all += k != 10 && k % 7 == 0;
    ASSERT(st.matured == (uint64_t)(999 - gone_all) && st.pairs == (size_t)(999 - gone_all));

    /* The pair ring keeps the newest `cap`: 700 more pairs push out the
     * oldest of those (the ring wraps), then 300 more leave only the two
     * new batches, oldest first. */
    AdjPair *before = malloc(1000 * sizeof *before);
    ASSERT(before && predlog_pairs(l, before, 1000) == st.pairs);
    size_t old_pairs = st.pairs;
    mature_batch(l, 3001, 700);
    predlog_stats(l, &st);
    ASSERT(st.pairs == 1000 && st.cap == 1000);
    ASSERT(predlog_pairs(l, pairs, 1000) == 1000);
    /* the newest 300 of the earlier pairs, in their order; the rest are gone */
    ASSERT(memcmp(pairs, before + old_pairs - 300, 300 * sizeof *pairs) == 0);
    ASSERT(check_batch(pairs + 300, 3001, 700));
    free(before);
    /* the generation a cached calibration is checked against moves with the
     * pairs only */
    uint64_t gen = predlog_pair_generation(l);
    predlog_stats(l, &st);
    ASSERT(predlog_pairs(l, pairs, 1000) == 1000 && predlog_pair_generation(l) == gen);
    mature_batch(l, 5001, 300);
    ASSERT(predlog_pair_generation(l) == gen + 300);
    predlog_stats(l, &st);
    ASSERT(st.pairs == 1000);
    ASSERT(predlog_pairs(l, pairs, 1000) == 1000);
    ASSERT(check_batch(pairs, 3001, 700) && check_batch(pairs + 700, 5001, 300));
    double want_pred = 0, want_real = 0;
    for (int k = 3001; k <= 3700; k++)
        want_pred += k, want_real += 10.0 * k;
    for (int k = 5001; k <= 5300; k++)
        want_pred += k, want_real += 10.0 * k;
    ASSERT_NEAR(st.pairs_predicted, want_pred, 0); /* sums of integers: exact */
    ASSERT_NEAR(st.pairs_realised, want_real, 0);
    /* asking for fewer gives the newest ones */
    ASSERT(predlog_pairs(l, pairs, 300) == 300 && check_batch(pairs, 5001, 300));
    /* the largest network id below a bound (recovery keeps new ids above
     * the trained networks'): the pairs' (mature_batch: 1..3), then a
     * pending entry's, until it matures into a pair and the ring pushes
     * that pair out; an id at or over the bound (an untrained network's)
     * never counts */
    ASSERT(predlog_max_net(l, 1000) == 3 && predlog_max_net(l, 3) == 2);
    PredLogEntry pending = {9001, 9001, 1, 0, 5, 50, 1, 77, 0};
    predlog_record(l, &pending);
    PredLogEntry untrained = {9002, 9002, 1, 0, 5, 50, 1, 0x80000005u, 0};
    predlog_record(l, &untrained);
    ASSERT(predlog_max_net(l, 1000) == 77 && predlog_max_net(l, UINT32_MAX) == 0x80000005u);
    mature_batch(l, 9001, 2); /* already pending: they mature as they were */
    ASSERT(predlog_max_net(l, 1000) == 77 && predlog_max_net(l, UINT32_MAX) == 0x80000005u);
    mature_batch(l, 10001, 1000);
    ASSERT(predlog_max_net(l, 1000) == 3);
    free(pairs);
    predlog_destroy(l);
    TEST_DONE("test_predlog");
}
