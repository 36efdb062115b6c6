#!/usr/bin/env python3
"""bench/lock_stats_report.py: sums the store lock's per-second figures that
an ltvd built with -DLTVD_LOCK_STATS appends to $LTVD_LOCK_STATS
(src/store.c), per call site, resolved with addr2line.

  meson setup build-ls -Dc_args='-DLTVD_LOCK_STATS -g' && ninja -C build-ls
  LTVD_LOCK_STATS=/tmp/locks.txt bench/tail_bench --ltvd build-ls/src/ltvd ...
  bench/lock_stats_report.py /tmp/locks.txt build-ls/src/ltvd

Per site: holds, total and longest hold, the largest per-second p99 bound,
total and longest wait for the lock. Then, for each worker site, the
seconds in which it held the lock and the HTTP thread's waits in them
(service_predict_many: GET ltv), which is what a GET's tail pays for it.
Python 3 standard library only."""
import collections
import re
import subprocess
import sys

HTTP_SITE = "service_predict_many"
LINE = re.compile(r"^(\d+)\.\d+ site=(0x[0-9a-f]+) sym=\S+ n=(\d+) hold_ms=([\d.]+) hold_max_us=([\d.]+) "
                  r"hold_p50_us<=([\d.]+) hold_p99_us<=([\d.]+) wait_ms=([\d.]+) wait_max_us=([\d.]+)$")


def resolve(binary, addrs):
    out = subprocess.run(["addr2line", "-f", "-e", binary] + addrs, capture_output=True, text=True,
                         check=True).stdout.split("\n")
    return {a: out[2 * i] for i, a in enumerate(addrs)}


def main():
    if len(sys.argv) != 3:
        print(__doc__)
        return 2
    rows = []
    with open(sys.argv[1]) as f:
        for line in f:
            m = LINE.match(line.strip())
            if m:
                sec, site = int(m.group(1)), m.group(2)
                n, hold, hmax, _, p99, wait, wmax = (float(x) for x in m.groups()[2:])
                rows.append((sec, site, n, hold, hmax, p99, wait, wmax))
    names = resolve(sys.argv[2], sorted({r[1] for r in rows}))
    per = collections.defaultdict(lambda: [0, 0.0, 0.0, 0.0, 0.0, 0.0, set()])
    for sec, site, n, hold, hmax, p99, wait, wmax in rows:
        p = per[names[site]]
        p[0] += n
        p[1] += hold
        p[2] = max(p[2], hmax)
        p[3] = max(p[3], p99)
        p[4] += wait
        p[5] = max(p[5], wmax)
        p[6].add(sec)
    print(f"{'site':34s}{'holds':>10s}{'hold ms':>10s}{'max us':>10s}{'p99<= us':>10s}{'wait ms':>10s}"
          f"{'max wait us':>12s}{'seconds':>8s}")
    for name, p in sorted(per.items(), key=lambda kv: -kv[1][1]):
        print(f"{name:34s}{p[0]:10.0f}{p[1]:10.1f}{p[2]:10.0f}{p[3]:10.0f}{p[4]:10.1f}{p[5]:12.0f}{len(p[6]):8d}")
    http = {sec: (n, wait, wmax) for sec, site, n, hold, hmax, p99, wait, wmax in rows
            if names[site] == HTTP_SITE}
    print(f"\nGET ltv's waits for the lock ({HTTP_SITE}) in the seconds each other site held it:")
    print(f"{'site':34s}{'seconds':>8s}{'GETs':>10s}{'wait ms':>10s}{'us/GET':>8s}{'max wait us':>12s}")
    for name, p in sorted(per.items(), key=lambda kv: -kv[1][1]):
        if name == HTTP_SITE:
            continue
        secs = [s for s in p[6] if s in http]
        gets = sum(http[s][0] for s in secs)
        wait = sum(http[s][1] for s in secs)
        wmax = max((http[s][2] for s in secs), default=0)
        print(f"{name:34s}{len(secs):8d}{gets:10.0f}{wait:10.1f}{1000 * wait / gets if gets else 0:8.1f}"
              f"{wmax:12.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
