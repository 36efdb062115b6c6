/* The prediction log: one pending prediction per shopper, bounded, erasure
 * removes it, and matured entries become pairs (all others stay findable
 * after removals). */
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

int main(void)
{
    PredLog *l;
    ASSERT(predlog_create(&l, 1000) == 0);
    for (uint64_t k = 1; k <= 1200; k++) { /* 200 more than fit */
        PredLogEntry e = {k, (int64_t)k, 1.0 * (double)k, 0, 5, 50, 1};
        predlog_record(l, &e);
    }
    PredLogStats st;
    predlog_stats(l, &st);
    ASSERT(st.pending == 1000 && st.logged == 1000 && st.dropped_full == 200);
    PredLogEntry again = {5, 9999, 1, 0, 0, 0, 2};
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
    /* the pair ring keeps the newest `cap` */
    ASSERT(st.pairs <= 1000);
    free(pairs);
    predlog_destroy(l);
    TEST_DONE("test_predlog");
}
