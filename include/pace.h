/* pace: a job's compute thread held to a share of a core while the server
 * is busy.
 *
 * On two cores a job that computes flat out beside the HTTP thread and its
 * clients leaves no core idle, and a woken HTTP thread then waits for one
 * (docs/PERFORMANCE.md, "Jobs paced under load"): even at nice 19, a busy
 * loop beside ltvd at 25,000 GET/s took its p99 from 0.9 ms to 312 ms; the
 * same loop busy a quarter of every 8 ms, to 2.7 ms. So the compute
 * threads (service_run_niced) call pace_point() between units of work (a
 * training batch, an optimiser iteration, a batch of rebuilt states), and
 * the worker thread between the batches of a job's store walks (off the
 * lock: store.c); while
 * the server answers at least PACE_BUSY_RPS requests a second, the thread
 * sleeps as needed to run at most `share` of the wall time, in slices of
 * PACE_SLICE_MS. Idle, it runs flat out: a retrain on a quiet server takes
 * no longer.
 *
 * Threads: pace_attach and pace_point on the thread being paced (its slice
 * is thread-local); the threads paced by one Pace share its reading of the
 * request rate (atomics), and a job's next thread goes on with the slice
 * its last one left (a rebuild runs a thread per batch of states). The
 * Pace and the counter it reads must outlive the attachments. A thread
 * never attached pays one test per point. */
#ifndef LTVD_PACE_H
#define LTVD_PACE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#define PACE_BUSY_RPS 1000.0 /* requests a second at which the server counts as busy */
#define PACE_SLICE_MS 2.0    /* run this long, then sleep in proportion */

typedef struct Pace {
    double share;                        /* of the wall time the thread may run while busy; >= 1: never paced */
    uint64_t (*requests)(const void *);  /* requests answered so far (monotonic) */
    const void *arg;
    atomic_uint_fast64_t rate_at, rate_count; /* the last reading of the request counter: when, and its value */
    atomic_bool busy;                    /* the rate at that reading was PACE_BUSY_RPS or more */
    atomic_uint_fast64_t carry_ns;       /* the slice a detached thread had run */
    atomic_uint_fast64_t *slept_total;   /* optional: every paced thread's sleep added here (a metric) */
    const atomic_bool *cancel;           /* optional: once set (shutting down), nothing sleeps */
} Pace;

/* Sets p up: share (>= 1: never paced), the request counter and its arg,
 * and where the sleep is counted (NULL: nowhere). */
void pace_init(Pace *p, double share, uint64_t (*requests)(const void *), const void *arg,
               atomic_uint_fast64_t *slept_total, const atomic_bool *cancel);
/* Paces this thread by p from now on (NULL: not at all); returns the
 * attachment it replaces, for the caller to put back (a job's walk on the
 * worker inside a job that is paced already). */
Pace *pace_attach(Pace *p);
/* A point between units of work: may sleep (see above). */
void pace_point(void);
/* After waiting for another thread of the same job (a join): this thread's
 * slice goes on from where that one left it, not from before the wait. */
void pace_resume(void);
/* The sleep owed after running `run_ns` in a slice at `share`: what makes
 * run / (run + sleep) = share. Pure. */
uint64_t pace_sleep_ns(uint64_t run_ns, double share);
/* Total time this thread slept in pace_point since it attached (as slept,
 * not as asked). */
uint64_t pace_slept_ns(void);

#endif
