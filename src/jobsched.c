/* jobsched: which worker job runs next (include/jobsched.h). Pure state;
 * main thread only. */
#include "jobsched.h"

void jobsched_want(JobSched *q, JobKind k)
{
    if (k <= JOB_NONE || k >= JOB_KINDS || (k != JOB_RETRAIN && q->running == k))
        return;
    q->wanted[k] = true;
}

void jobsched_adjuster_tick(JobSched *q, bool retrain_running, bool retrain_due_now)
{
    bool adjusting = q->running == JOB_RETRAIN || q->running == JOB_ADJUSTER;
    if (adjusting || q->wanted[JOB_RETRAIN] || retrain_running || retrain_due_now)
        return;
    q->wanted[JOB_ADJUSTER] = true;
}

JobKind jobsched_next(JobSched *q)
{
    if (q->running != JOB_NONE || q->stopping)
        return JOB_NONE;
    for (int k = JOB_RETRAIN; k < JOB_KINDS; k++) {
        if (!q->wanted[k])
            continue;
        q->wanted[k] = false;
        if (k == JOB_RETRAIN)
            q->wanted[JOB_ADJUSTER] = false;
        q->running = (JobKind)k;
        return q->running;
    }
    return JOB_NONE;
}

void jobsched_done(JobSched *q) { q->running = JOB_NONE; }
