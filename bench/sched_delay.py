#!/usr/bin/env python3
"""bench/sched_delay.py: how long a thread waited for a core after each
wake-up, and what held the core meanwhile, from a `perf sched record`.

  bench/retrain_timeline --perf-sched /tmp/sched.data ...   # records the retrain's first seconds
  bench/sched_delay.py /tmp/sched.data                      # the HTTP thread (MHD-single)
  bench/sched_delay.py /tmp/sched.data --thread ltvd-wal

Reads `perf sched timehist` (one line per time a task left a CPU: when it
left, how long it had waited runnable before it got the CPU -- the
"sch delay" -- and how long it ran). For the thread named, it prints the
total scheduling delay, which tasks ran on its CPU during those delays,
and the delay per wake-up grouped by what the thread took the CPU from:
another task (a preemption: on a VM, a reschedule IPI to a busy virtual
CPU) or an idle CPU (no task for 0.5 ms before it).
"""
import argparse
import bisect
import collections
import statistics
import subprocess
import sys


def timehist(data):
    """cpu -> sorted [(start s, end s, task)], and the raw entries."""
    out = subprocess.run(["perf", "sched", "timehist", "-i", data], capture_output=True, text=True, check=True)
    entries = []
    for line in out.stdout.splitlines():
        f = line.split()
        if len(f) < 6 or not f[0][:1].isdigit():
            continue
        try:
            end, cpu, task = float(f[0]), int(f[1].strip("[]")), f[2]
            delay_ms, run_ms = float(f[4]), float(f[5])
        except ValueError:
            continue
        entries.append((cpu, end - run_ms / 1000, end, task.split("[")[0], delay_ms))
    runs = collections.defaultdict(list)
    for cpu, start, end, task, _ in entries:
        runs[cpu].append((start, end, task))
    for cpu in runs:
        runs[cpu].sort()
    return runs, entries


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data", help="a perf sched record's output file")
    p.add_argument("--thread", default="MHD-single", help="task name (comm) to study")
    args = p.parse_args()
    runs, entries = timehist(args.data)
    starts = {cpu: [r[0] for r in rs] for cpu, rs in runs.items()}
    mine = [(cpu, start, delay) for cpu, start, _, task, delay in entries if task == args.thread]
    if not mine:
        print(f"no task named {args.thread} in {args.data}", file=sys.stderr)
        return 1
    held = collections.Counter()
    taken_from = collections.defaultdict(list)
    for cpu, start, delay in mine:
        woke = start - delay / 1000
        i = max(0, bisect.bisect_left(starts[cpu], woke) - 2)
        for a, b, task in runs[cpu][i:i + 64]:
            if a > start:
                break
            overlap = min(b, start) - max(a, woke)
            if overlap > 0 and task != args.thread:
                held[task] += overlap * 1000
        j = bisect.bisect_left(starts[cpu], start) - 1
        while j >= 0 and runs[cpu][j][2] == args.thread:
            j -= 1
        prev = runs[cpu][j][2] if j >= 0 else "?"
        if j >= 0 and start - runs[cpu][j][1] > 0.0005:
            prev = "<idle>"
        taken_from[prev].append(delay)
    total = sum(d for _, _, d in mine)
    print(f"{args.thread}: {len(mine)} times on a CPU, {total:.1f} ms waiting for one after waking")
    print("held its CPU meanwhile (ms):")
    for task, ms in held.most_common(6):
        print(f"  {task:24s} {ms:9.1f}")
    print("delay per wake-up by what it took the CPU from:  count   mean µs   p99 µs   max µs")
    for task, ds in sorted(taken_from.items(), key=lambda kv: -len(kv[1]))[:6]:
        ds.sort()
        print(f"  {task:44s} {len(ds):7d} {1000 * statistics.mean(ds):9.1f} "
              f"{1000 * ds[int(0.99 * (len(ds) - 1))]:8.1f} {1000 * ds[-1]:8.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
