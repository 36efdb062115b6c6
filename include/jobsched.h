/* jobsched: which worker job runs next. One job at a time runs on the
 * worker: a retrain, a fallback refit, the segments' refresh or an
 * adjuster run. Timers and retrain requests only say that a job is
 * wanted; the wanted jobs run in that order of priority whenever the
 * worker is free, so a tick that finds the worker busy is not lost to
 * another timer that ticks more often (the priority is strict: refits and
 * refreshes that kept the worker busy without a gap would hold off the
 * adjuster's timer runs; a retrain still ends with one). The decisions are here, free of libuv, so that tests drive them
 * tick by tick (tests/test_jobsched.c); src/main.c turns them into
 * uv_queue_work calls. Main thread only. */
#ifndef LTVD_JOBSCHED_H
#define LTVD_JOBSCHED_H

#include <stdbool.h>

typedef enum { JOB_NONE, JOB_RETRAIN, JOB_REFIT, JOB_SEGMENTS, JOB_ADJUSTER, JOB_KINDS } JobKind;

typedef struct JobSched {
    JobKind running;         /* the worker's job, JOB_NONE when free */
    bool wanted[JOB_KINDS];  /* asked for, waiting for the worker */
    bool stopping;           /* no job starts any more */
} JobSched;

/* A retrain (POST /v1/model/retrain or its timer), a refit (its timer) or
 * the segments' refresh (due) is wanted. A refit or refresh asked for
 * while that very job runs is dropped, as the running one serves it (and a
 * job longer than its timer's period would otherwise follow itself). */
void jobsched_want(JobSched *q, JobKind k);

/* The adjuster's timer ticked. The tick is dropped when a run is coming
 * anyway: the running job runs the adjuster (a retrain ends with a run),
 * a retrain was asked for or runs (retrain_running), or the retrain's
 * timer is due in this same turn of the loop (retrain_due_now: at equal
 * periods, the defaults, the two tick together, and the retrain's tick
 * only asks, through uv_async). Otherwise the run is wanted. A tick during
 * an adjuster run is dropped rather than kept: a run longer than
 * adjuster.interval_s would start the next the moment it ends. */
void jobsched_adjuster_tick(JobSched *q, bool retrain_running, bool retrain_due_now);

/* The job to start now, marked running, or JOB_NONE (a job runs, none is
 * wanted, or the service stops). Priority: a retrain (which takes the
 * adjuster's wish along: it ends with an adjuster run), a refit, the
 * segments, an adjuster run. */
JobKind jobsched_next(JobSched *q);

/* The running job ended. */
void jobsched_done(JobSched *q);

#endif
