/* pace: a job's compute thread sleeps to keep to its share of a core while
 * the server is busy, and never while it is idle; a job's short threads
 * are paced as one; the sleep owed for a slice is what makes
 * run / (run + sleep) the share, capped. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "pace.h"
#include "test_util.h"
#include "timeutil.h"

static atomic_uint_fast64_t served, total;
static atomic_bool cancel;

/* A server answering about 100,000 requests a second (busy) or none. */
static uint64_t requests_busy(const void *arg)
{
    (void)arg;
    return atomic_fetch_add(&served, 1000) + 1000; /* read every 100 ms or more: 10,000/s, less if read later */
}

static uint64_t requests_idle(const void *arg)
{
    (void)arg;
    return 42;
}

/* Busy work for `ms`, pace_point every 50 us. */
static void *work(void *arg)
{
    double ms = *(const double *)arg;
    uint64_t end = time_mono_ns() + (uint64_t)(ms * 1e6);
    volatile double x = 0;
    while (time_mono_ns() < end) {
        uint64_t unit = time_mono_ns() + 50000;
        while (time_mono_ns() < unit)
            x += 1.0;
        pace_point();
    }
    return NULL;
}

/* work() for `ms` of wall time attached to p; the share of it spent asleep
 * in pace_point. */
static double spin_paced(Pace *p, double ms)
{
    pace_attach(p);
    uint64_t t0 = time_mono_ns();
    work(&ms);
    double slept = (double)pace_slept_ns() / (double)(time_mono_ns() - t0);
    pace_attach(NULL);
    return slept;
}

/* The same in short attachments of 1 ms each (a rebuild's thread per batch
 * of states): the slice goes on from one to the next. */
static double spin_short(Pace *p, double ms)
{
    uint64_t t0 = time_mono_ns(), end = t0 + (uint64_t)(ms * 1e6), slept = 0;
    double piece = 1.0;
    while (time_mono_ns() < end) {
        pace_attach(p);
        work(&piece);
        slept += pace_slept_ns();
        pace_attach(NULL);
    }
    return (double)slept / (double)(time_mono_ns() - t0);
}

static void *paced_work(void *arg)
{
    pace_attach((Pace *)((void **)arg)[0]);
    work(((void **)arg)[1]);
    pace_attach(NULL);
    return NULL;
}

/* A job's thread that waits for its compute thread (a join) is not charged
 * for the wait: after pace_resume its next point owes at most a slice's
 * sleep, not the cap's 50 ms. */
static void test_no_charge_for_a_join(Pace *busy)
{
    pace_attach(busy);
    double long_ms = 60, short_ms = 0.1;
    void *args[2] = {busy, &long_ms};
    pthread_t t;
    ASSERT(pthread_create(&t, NULL, paced_work, args) == 0);
    ASSERT(pthread_join(t, NULL) == 0);
    pace_resume();
    uint64_t before = pace_slept_ns();
    work(&short_ms);
    ASSERT(pace_slept_ns() - before < 45000000ull); /* the 60 ms spent joining would have cost the 50 ms cap */
    pace_attach(NULL);
}

int main(void)
{
    /* the arithmetic */
    ASSERT(pace_sleep_ns(2000000, 0.25) == 6000000);
    ASSERT(pace_sleep_ns(2000000, 0.5) == 2000000);
    ASSERT(pace_sleep_ns(2000000, 1.0) == 0);
    ASSERT(pace_sleep_ns(2000000, 0.0) == 0);              /* no share is no pacing, not forever */
    ASSERT(pace_sleep_ns(1000000000, 0.05) == 50000000);  /* a long unit of work: 50 ms at most */

    /* busy: about three quarters of the time asleep at share 0.25 (the
     * first 100 ms, before a rate is known, run unpaced) */
    Pace busy;
    pace_init(&busy, 0.25, requests_busy, NULL, &total, &cancel);
    double asleep = spin_paced(&busy, 600);
    ASSERT(asleep > 0.45 && asleep < 0.9);
    /* the rate is known now: threads of 1 ms each are paced as one */
    asleep = spin_short(&busy, 400);
    ASSERT(asleep > 0.5 && asleep < 0.9);
    ASSERT(atomic_load(&total) > 300000000ull); /* the metric counts every paced thread's sleep (~0.55 s here) */
    /* an attachment inside another gives the outer one back */
    Pace *was = pace_attach(&busy);
    ASSERT(was == NULL && pace_attach(NULL) == &busy);
    test_no_charge_for_a_join(&busy);
    /* shutting down (cancel_jobs set): a job runs flat out to its end */
    atomic_store(&cancel, true);
    ASSERT(spin_paced(&busy, 300) == 0.0);
    atomic_store(&cancel, false);
    /* idle server, or share 1, or a thread never attached: never asleep */
    Pace idle;
    pace_init(&idle, 0.25, requests_idle, NULL, NULL, NULL);
    ASSERT(spin_paced(&idle, 300) == 0.0);
    Pace full;
    pace_init(&full, 1.0, requests_busy, NULL, NULL, NULL);
    ASSERT(spin_paced(&full, 300) == 0.0);
    ASSERT(spin_paced(NULL, 50) == 0.0);
    TEST_DONE("pace");
}
