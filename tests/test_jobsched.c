/* jobsched: the worker's one-job-at-a-time schedule, tick by tick, as
 * src/main.c's timers and requests drive it:
 * - at equal periods (the defaults: both hourly) a retrain and the
 *   adjuster's tick together make one adjuster run, whichever comes first
 *   in the loop's turn (the retrain ends with one);
 * - an adjuster tick that meets a refit waits for the worker, and runs;
 * - adjuster runs longer than adjuster.interval_s do not follow each
 *   other, and the refits and the segments' refresh get the worker
 *   between them, whichever timer ticks first after a run;
 * - the order: a retrain (taking the adjuster's wish along), a refit, the
 *   segments, an adjuster run; after a stop nothing starts. */
#include <stdbool.h>

#include "jobsched.h"
#include "test_util.h"

typedef struct Counts {
    int runs[JOB_KINDS];
} Counts;

static JobKind start(JobSched *q, Counts *c)
{
    JobKind k = jobsched_next(q);
    c->runs[k]++;
    return k;
}

/* The retrain timer ticks first in the turn (it only asks: the service
 * marks a retrain requested, then uv_async wants it), then the adjuster's:
 * the tick adds nothing. Then the adjuster's first: the retrain timer is
 * due in this same turn, and the tick adds nothing either (the branch that
 * reads uv_timer_get_due_in). Either way, one adjuster run a period. */
static void test_equal_periods(void)
{
    for (int adjuster_first = 0; adjuster_first <= 1; adjuster_first++) {
        JobSched q = {0};
        Counts c = {0};
        for (int period = 0; period < 4; period++) {
            if (adjuster_first) {
                jobsched_adjuster_tick(&q, false, true);
                start(&q, &c);
                jobsched_want(&q, JOB_RETRAIN);
                start(&q, &c);
            } else {
                jobsched_adjuster_tick(&q, true, false); /* service_retrain_running: asked for */
                jobsched_want(&q, JOB_RETRAIN);
                start(&q, &c);
            }
            ASSERT(q.running == JOB_RETRAIN);
            jobsched_done(&q);
            ASSERT(start(&q, &c) == JOB_NONE); /* nothing waits */
        }
        ASSERT(c.runs[JOB_RETRAIN] == 4 && c.runs[JOB_ADJUSTER] == 0); /* each retrain's own run alone */
    }
    /* the adjuster's tick first without the due-now branch: a run of its
     * own each period, which the retrain then repeats */
    JobSched q = {0};
    Counts c = {0};
    for (int period = 0; period < 4; period++) {
        jobsched_adjuster_tick(&q, false, false);
        start(&q, &c);
        jobsched_want(&q, JOB_RETRAIN);
        jobsched_done(&q);
        start(&q, &c);
        jobsched_done(&q);
    }
    ASSERT(c.runs[JOB_RETRAIN] == 4 && c.runs[JOB_ADJUSTER] == 4);
}

/* main.c's order within a turn: the retrain's timer asks the service
 * (service_retrain_running is then true) and the uv_async that wants it
 * comes later in the loop; an adjuster tick in between, with a refit
 * running, adds nothing: the retrain's own run serves it. */
static void test_retrain_asked_not_yet_wanted(void)
{
    JobSched q = {0};
    Counts c = {0};
    jobsched_want(&q, JOB_REFIT);
    start(&q, &c);
    jobsched_adjuster_tick(&q, true, false);
    ASSERT(!q.wanted[JOB_ADJUSTER]);
    jobsched_want(&q, JOB_RETRAIN); /* the uv_async */
    jobsched_done(&q);
    ASSERT(start(&q, &c) == JOB_RETRAIN);
    jobsched_done(&q);
    ASSERT(start(&q, &c) == JOB_NONE && c.runs[JOB_ADJUSTER] == 0);
}

/* A retrain asked for while one runs is kept: the service marks the
 * running retrain finished (idle) before the worker is free, and a request
 * in that gap, answered 202, must run, or the service would report it
 * running for good and refuse every later one with 409. */
static void test_retrain_asked_during_a_retrain_runs(void)
{
    JobSched q = {0};
    Counts c = {0};
    jobsched_want(&q, JOB_RETRAIN);
    start(&q, &c);
    jobsched_want(&q, JOB_RETRAIN);
    jobsched_done(&q);
    ASSERT(start(&q, &c) == JOB_RETRAIN && c.runs[JOB_RETRAIN] == 2);
}

/* The refit timer (60 s) divides the adjuster's (3600 s): the adjuster's
 * tick finds a refit running, waits, and runs when it ends. */
static void test_adjuster_waits_for_a_refit(void)
{
    JobSched q = {0};
    Counts c = {0};
    jobsched_want(&q, JOB_REFIT);
    ASSERT(start(&q, &c) == JOB_REFIT);
    jobsched_adjuster_tick(&q, false, false);
    ASSERT(start(&q, &c) == JOB_NONE);
    jobsched_done(&q);
    ASSERT(start(&q, &c) == JOB_ADJUSTER);
}

/* A minute of 1 s timers (adjuster.interval_s, fallback.refit_s and the
 * segments' check, in the two orders the loop may fire them in), adjuster
 * runs of 3 s, refits and refreshes of 1 s: the adjuster's ticks during
 * its run are dropped, a refit or refresh asked for during another job
 * waits, and each gets the worker. Before, a refit tick that found the
 * worker busy was skipped, so after each adjuster run the next adjuster
 * tick, when it came first, took the worker again and the refits starved;
 * and a tick during an adjuster run waited, so runs followed each other. */
static void test_long_adjuster_runs_leave_room(void)
{
    static const int seconds[JOB_KINDS] = {0, 5, 2, 1, 3};
    for (int adjuster_first = 0; adjuster_first <= 1; adjuster_first++) {
        JobSched q = {0};
        Counts c = {0};
        int ends_at = -1;
        for (int t = 0; t < 60; t++) {
            if (q.running != JOB_NONE && t == ends_at) { /* job_done_cb */
                jobsched_done(&q);
                JobKind k = start(&q, &c);
                ends_at = t + seconds[k];
            }
            for (int i = 0; i < 2; i++) {
                bool was = q.running != JOB_NONE;
                if ((i == 0) == (adjuster_first == 1)) {
                    jobsched_adjuster_tick(&q, false, false);
                } else {
                    jobsched_want(&q, JOB_REFIT);
                    if (t % 10 == 0)
                        jobsched_want(&q, JOB_SEGMENTS); /* due every 10 s */
                }
                JobKind k = start(&q, &c);
                if (!was && k != JOB_NONE)
                    ends_at = t + seconds[k];
            }
            ASSERT(!(q.running == JOB_ADJUSTER && q.wanted[JOB_ADJUSTER])); /* never a run queued behind a run */
            ASSERT(!(q.running == JOB_REFIT && q.wanted[JOB_REFIT]));
        }
        ASSERT(c.runs[JOB_ADJUSTER] >= 8 && c.runs[JOB_REFIT] >= 8 && c.runs[JOB_SEGMENTS] >= 5);
    }
}

/* Wanted together: a retrain first (it takes the adjuster's wish along),
 * then a refit, the segments, the adjuster. A stop: nothing starts. */
static void test_order_and_stop(void)
{
    JobSched q = {0};
    Counts c = {0};
    jobsched_want(&q, JOB_SEGMENTS);
    jobsched_adjuster_tick(&q, false, false);
    jobsched_want(&q, JOB_REFIT);
    jobsched_want(&q, JOB_RETRAIN);
    JobKind order[4];
    for (int i = 0; i < 4; i++) {
        order[i] = start(&q, &c);
        jobsched_done(&q);
    }
    ASSERT(order[0] == JOB_RETRAIN && order[1] == JOB_REFIT && order[2] == JOB_SEGMENTS && order[3] == JOB_NONE);

    jobsched_want(&q, JOB_REFIT);
    jobsched_adjuster_tick(&q, false, false);
    q.stopping = true;
    ASSERT(start(&q, &c) == JOB_NONE && q.running == JOB_NONE);
    jobsched_want(&q, JOB_NONE); /* not a job: ignored */
    jobsched_want(&q, JOB_KINDS);
}

int main(void)
{
    test_equal_periods();
    test_adjuster_waits_for_a_refit();
    test_retrain_asked_not_yet_wanted();
    test_retrain_asked_during_a_retrain_runs();
    test_long_adjuster_runs_leave_room();
    test_order_and_stop();
    TEST_DONE("test_jobsched");
}
