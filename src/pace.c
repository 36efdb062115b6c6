/* pace: a job's compute thread held to a share of a core while the server
 * is busy (include/pace.h). */
#include "pace.h"

#include <errno.h>
#include <time.h>

#include "timeutil.h"

#define RATE_WINDOW_NS 100000000ull /* the request rate is read over 100 ms */
#define MAX_SLEEP_NS 50000000ull    /* a slice overrun (a long unit of work) sleeps 50 ms at most */
#define SLICE_NS ((uint64_t)(PACE_SLICE_MS * 1e6))

static _Thread_local struct {
    Pace *p;
    uint64_t slice_start; /* start of the running slice */
    uint64_t slept;
} th;

void pace_init(Pace *p, double share, uint64_t (*requests)(const void *), const void *arg,
               atomic_uint_fast64_t *slept_total, const atomic_bool *cancel)
{
    p->slept_total = slept_total;
    p->cancel = cancel;
    p->share = share;
    p->requests = requests;
    p->arg = arg;
    atomic_init(&p->rate_at, 0);
    atomic_init(&p->rate_count, 0);
    atomic_init(&p->busy, false);
    atomic_init(&p->carry_ns, 0);
}

static bool active(const Pace *p)
{
    return p && p->share < 1 && p->requests && !(p->cancel && atomic_load_explicit(p->cancel, memory_order_relaxed));
}

Pace *pace_attach(Pace *p)
{
    Pace *was = th.p;
    uint64_t now = time_mono_ns();
    if (active(th.p)) { /* the slice goes on in the job's next thread */
        uint64_t run = now - th.slice_start;
        atomic_store(&th.p->carry_ns, run < SLICE_NS ? run : SLICE_NS);
    }
    th.p = p;
    th.slept = 0;
    th.slice_start = now;
    if (!active(p))
        return was;
    uint64_t zero = 0;
    if (atomic_compare_exchange_strong(&p->rate_at, &zero, now))
        atomic_store(&p->rate_count, p->requests(p->arg)); /* the first attachment starts the rate */
    th.slice_start = now - atomic_exchange(&p->carry_ns, 0);
    return was;
}

uint64_t pace_sleep_ns(uint64_t run_ns, double share)
{
    if (!(share > 0) || share >= 1)
        return 0;
    double ns = (double)run_ns * (1.0 - share) / share;
    return ns < (double)MAX_SLEEP_NS ? (uint64_t)ns : MAX_SLEEP_NS;
}

uint64_t pace_slept_ns(void) { return th.slept; }

void pace_resume(void)
{
    if (active(th.p))
        th.slice_start = time_mono_ns() - atomic_exchange(&th.p->carry_ns, 0);
}

/* Reads the request rate when its window has passed (one thread does). */
static bool busy_now(Pace *p, uint64_t now)
{
    uint64_t at = atomic_load(&p->rate_at);
    if (now > at && now - at >= RATE_WINDOW_NS && atomic_compare_exchange_strong(&p->rate_at, &at, now)) {
        uint64_t count = p->requests(p->arg), before = atomic_exchange(&p->rate_count, count);
        if (count >= before) /* a reading out of order says nothing */
            atomic_store(&p->busy, (double)(count - before) * 1e9 / (double)(now - at) >= PACE_BUSY_RPS);
    }
    return atomic_load(&p->busy);
}

void pace_point(void)
{
    Pace *p = th.p;
    if (!active(p))
        return;
    uint64_t now = time_mono_ns();
    if (!busy_now(p, now)) {
        th.slice_start = now; /* idle: no debt carried into a busy spell */
        return;
    }
    uint64_t run = now - th.slice_start;
    if (run < SLICE_NS)
        return;
    uint64_t ns = pace_sleep_ns(run, p->share);
    struct timespec ts = {(time_t)(ns / 1000000000ull), (long)(ns % 1000000000ull)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
    th.slice_start = time_mono_ns();
    uint64_t slept = th.slice_start - now;
    th.slept += slept;
    if (p->slept_total)
        atomic_fetch_add_explicit(p->slept_total, slept, memory_order_relaxed);
}
