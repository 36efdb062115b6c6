/* jobs_niced: a job's compute threads: run at the lowest CPU priority
 * (nice 19), paced while the server is busy (pace.h), never taking the
 * store lock (jobs.c says why the worker itself keeps its priority).
 *
 * Threads: service_run_niced on the worker (or the snapshot worker, unpaced);
 * service_lower_priority on any thread or a forked child. */
#include "service_internal.h"

#include <pthread.h>
#include <sys/resource.h>

typedef struct Niced {
    int (*fn)(void *arg);
    void *arg;
    Service *s;
    int rc;
} Niced;

/* nice 19. SCHED_IDLE was tried (5c7d655: it cut the HTTP thread's waits
 * for a core during a retrain, docs/PERFORMANCE.md) and taken out: with
 * the kernel's autogroup on (Debian's default), an idle-class trainer under
 * ASan's slowdown kept an erasure's snapshot from coming within 60 s and
 * shutdown waiting over 90 s (test_snapshots' erasure_snapshot_while_
 * retrain_runs: fails with it, passes in 10 s without; autogroup off, it
 * passed either way). Applies to the calling thread on Linux and needs no
 * privilege; the worker thread itself is never lowered (raising it again
 * would need CAP_SYS_NICE). */
void service_lower_priority(void)
{
    setpriority(PRIO_PROCESS, 0, 19);
}

static void *niced_main(void *arg)
{
    Niced *n = arg;
    service_lower_priority();
    if (n->s)
        pace_attach(&n->s->pace);
    n->rc = n->fn(n->arg);
    if (n->s)
        pace_attach(NULL);
    return NULL;
}

/* Worker: runs fn(arg) on a new thread at the lowest priority, paced by
 * s (pace.h; s NULL: not paced, as the snapshot's merge beside a job), and
 * waits for it; fn must not take the store lock. Runs it here if no
 * thread can be made (paced as this thread is). */
int service_run_niced(Service *s, int (*fn)(void *arg), void *arg)
{
    Niced n = {.fn = fn, .arg = arg, .s = s};
    pthread_t t;
    if (pthread_create(&t, NULL, niced_main, &n) != 0)
        return fn(arg);
    pthread_join(t, NULL);
    pace_resume(); /* the wait was not this thread's work: its slice goes on from the other's */
    return n.rc;
}
