"""Concurrency over HTTP: POSTs and GETs from several threads while network
retrains (fallback refit, training, swap, rebuild of every state) run back to
back on a real ltvd with three HTTP threads.

Asserted: no request fails (a retrain refused with 409 while one runs is the
only refusal the docs allow); every acknowledged event is counted exactly
once, per shopper and in the metrics, duplicates included; a reader never
sees the model version go backwards and a batch of predictions carries one
version; the retrains succeed and a trained network serves; once quiet, the
server predicts for every shopper what a second ltvd computes by replaying
the first one's log in order under the same model. The harness checks that
both servers exit 0 with no sanitizer report in their output (the suite
also runs under ThreadSanitizer, .ci/run).

Data: shoppers from tools/simulate.py (seeded), then live traffic for new
shoppers. Usage: test_concurrency.py PATH_TO_LTVD SOURCE_ROOT"""
import glob
import http.client
import importlib.util
import json
import os
import random
import shutil
import sys
import tempfile
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ltvd_harness import check, LtvdProcess, main_exit, run_tests, scaled, tail, wait_until  # noqa: E402

LTVD, ROOT = sys.argv[1], sys.argv[2]
DAY = 86400
START = 1704067200          # 2024-01-01: the history's first day
HISTORY_DAYS = 300
LIVE_START = START + HISTORY_DAYS * DAY
AS_OF = "2025-06-01T00:00:00Z"
AS_OF_Q = AS_OF.replace(":", "%3A")
NHIST, NLIVE = 150, 30
POSTERS, READERS, POSTS = 3, 2, 120
MIN_RETRAINS = 3
SETTINGS = {"clock": "event", "server.threads": "3", "model.hidden_size": "8", "model.horizon_days": "30",
            "model.recent_events": "1024", "train.network": "true", "train.interval_s": "0",
            "train.max_epochs": "4", "train.seed": "5", "storage.snapshot_interval_s": "604800"}
RETRAIN_WAIT_S = 120  # bounds the poll for a retrain's end (scaled); not a timing assertion


def load_simulate():
    spec = importlib.util.spec_from_file_location("simulate", os.path.join(ROOT, "tools", "simulate.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def history_events():
    sim, rng, out = load_simulate(), random.Random(11), []
    for i in range(NHIST):
        for k, (d, kind, value) in enumerate(sim.shopper_events(rng, f"h{i}", HISTORY_DAYS)):
            e = {"user_id": f"h{i}", "type": kind, "ts": START + int(d * DAY), "event_id": f"h{i}-{k}"}
            if kind in ("purchase", "refund"):
                e["value"] = round(value * 2) / 2  # a multiple of 0.5: sums are exact in any order
            out.append(e)
    return out


def live_event(t, j, k=0):
    """Event k of poster t's request j; a function of its id, so a repeat
    carries the same event."""
    shopper = (j * 7 + t * 3 + k) % NLIVE
    n = j * 8 + k
    e = {"user_id": f"live{shopper}", "ts": LIVE_START + (j * 3 + t) * 3600 + k * 60,
         "event_id": f"t{t}-{j}-{k}", "type": ("view", "click", "add_to_cart", "purchase")[n % 4]}
    if e["type"] == "purchase":
        e["value"] = 5.0 + (n % 9) * 2.5
    return e


class Traffic:
    """What the threads saw (counts and the acknowledged events under lock)."""

    def __init__(self):
        self.errors = []
        self.acked = {}            # event_id -> event, for every event of a 200 answer
        self.posted = 0            # events in 200 answers, repeats included
        self.accepted = self.duplicates = 0
        self.lock = threading.Lock()
        self.posters_done = threading.Event()
        self.writers_done = threading.Event()  # posters and retrains
        self.retrains = 0
        self.conflicts = 0
        self.quiet = {}            # (model_version, history shopper) -> first ltv seen
        self.quiet_checked = 0


def poster(s, tr, t):
    conn = http.client.HTTPConnection("127.0.0.1", s.port, timeout=scaled(60))
    last = 0
    for j in range(POSTS):
        if j % 4 == 3:
            # a batch: 6 new events, one repeat of our previous request's
            # event and one of another poster's (which may race with it)
            events = [live_event(t, j, k) for k in range(6)]
            events += [live_event(t, j - 1, 0), live_event((t + 1) % POSTERS, j, 0)]
        else:
            events = [live_event(t, j)]
        body = events[0] if len(events) == 1 else {"events": events}
        try:
            status, _, data = s.request("POST", "/v1/events", body, conn=conn)
        except OSError as e:
            tr.errors.append(f"poster {t}: {e!r}")
            return
        if status != 200:
            tr.errors.append(f"poster {t}: POST /v1/events -> {status} {data[:200]!r}")
            continue
        ans = json.loads(data)
        with tr.lock:
            tr.posted += len(events)
            tr.accepted += ans["accepted"]
            tr.duplicates += ans["duplicates"]
            for e in events:
                tr.acked[e["event_id"]] = e
        if ans["accepted"] + ans["duplicates"] != len(events):
            tr.errors.append(f"poster {t}: {ans} for {len(events)} events")
        if len(events) == 1:
            v = ans["prediction"]["model_version"]
            if v < last:
                tr.errors.append(f"poster {t}: model_version went back from {last} to {v}")
            last = v
    conn.close()


def reader(s, tr, r):
    """Predictions at a fixed as_of. A history shopper gets no event during
    the run, so under one model version its prediction must be the same
    every time: a state left over from other weights would show."""
    conn = http.client.HTTPConnection("127.0.0.1", s.port, timeout=scaled(60))
    last, i = 0, 0
    while not tr.writers_done.is_set() and i < 100000:
        i += 1
        if i % 3:
            uid = f"live{i % NLIVE}" if i % 2 else f"h{i % NHIST}"
            status, _, data = s.request("GET", f"/v1/users/{uid}/ltv?as_of={AS_OF_Q}", conn=conn)
            if status != 200:
                tr.errors.append(f"reader {r}: GET ltv {uid} -> {status} {data[:200]!r}")
                continue
            preds = [json.loads(data)]
        else:
            ids = [f"h{(i + k) % NHIST}" for k in range(10)] + [f"live{(i + k) % NLIVE}" for k in range(10)]
            status, _, data = s.request("POST", "/v1/ltv/batch", {"user_ids": ids, "as_of": AS_OF}, conn=conn)
            if status != 200:
                tr.errors.append(f"reader {r}: POST /v1/ltv/batch -> {status} {data[:200]!r}")
                continue
            preds = json.loads(data)["predictions"]
            if len({p["model_version"] for p in preds}) != 1:
                tr.errors.append(f"reader {r}: one batch, several model versions {preds}")
        for p in preds:
            v = p["model_version"]
            if v < last:
                tr.errors.append(f"reader {r}: model_version went back from {last} to {v}")
            last = max(last, v)
            if p["user_id"].startswith("h"):
                with tr.lock:
                    first = tr.quiet.setdefault((v, p["user_id"]), p["ltv"])
                    tr.quiet_checked += 1
                if p["ltv"] != first:
                    tr.errors.append(f"reader {r}: {p['user_id']} under version {v}: ltv {p['ltv']}, "
                                     f"earlier {first}")
    conn.close()


def finished_model(s):
    """GET /v1/model unless a retrain is running (then None)."""
    m = s.json("GET", "/v1/model")[1]
    return m if m["retrain"]["state"] != "running" else None


def retrainer(s, tr):
    """Retrains back to back until the posters are done and at least
    MIN_RETRAINS have finished."""
    job = 0
    while (not tr.posters_done.is_set() or tr.retrains < MIN_RETRAINS) and tr.retrains < 50:
        status, body = s.json("POST", "/v1/model/retrain")
        if status == 409:
            tr.conflicts += 1  # documented: one is still running
        elif status != 202 or body["job"] <= job:
            tr.errors.append(f"retrain -> {status} {body}")
            return
        else:
            job = body["job"]
        m = wait_until(lambda: finished_model(s), RETRAIN_WAIT_S, interval=0.02)
        if not m:
            tr.errors.append(f"a retrain still runs after {scaled(RETRAIN_WAIT_S):.0f} s")
            return
        if m["retrain"]["state"] != "idle" or m["retrain"]["last_error"] is not None:
            tr.errors.append(f"retrain ended {m['retrain']}")
            return
        tr.retrains += status == 202


def guarded(fn, tr, *args):
    """Runs a thread's body; an exception (the server gone, say) is an error."""
    def run():
        try:
            fn(*args)
        except Exception as e:  # noqa: BLE001 - reported, not swallowed
            tr.errors.append(f"{fn.__name__}: {e!r}")
    return threading.Thread(target=run)


def traffic_during_retrains():
    with tempfile.TemporaryDirectory(prefix="ltvd-conc-") as d:
        a_dir, b_dir = os.path.join(d, "a"), os.path.join(d, "b")
        with LtvdProcess(LTVD, SETTINGS, storage_dir=a_dir) as s:
            hist = history_events()
            for k in range(0, len(hist), 1000):
                check(s.json("POST", "/v1/events", {"events": hist[k:k + 1000]})[0] == 200)
            tr = Traffic()
            threads = [guarded(poster, tr, s, tr, t) for t in range(POSTERS)]
            threads += [guarded(reader, tr, s, tr, r) for r in range(READERS)]
            rt = guarded(retrainer, tr, s, tr)
            for th in threads + [rt]:
                th.start()
            for th in threads[:POSTERS]:
                th.join()
            tr.posters_done.set()
            rt.join()
            tr.writers_done.set()
            for th in threads[POSTERS:]:
                th.join()
            check(not tr.errors, "\n".join(tr.errors[:20]) + "\n--- ltvd output, last lines ---\n" + tail(s.logs()))
            print(f"  {tr.posted} events posted in {POSTERS * POSTS} requests, {tr.accepted} applied, "
                  f"{tr.duplicates} duplicates; {tr.retrains} retrains ({tr.conflicts} x 409); "
                  f"{tr.quiet_checked} predictions of quiet shoppers under "
                  f"{len({v for v, _ in tr.quiet})} model versions")

            # every acknowledged event counted exactly once
            check(tr.accepted == len(tr.acked) and tr.duplicates == tr.posted - len(tr.acked),
                  (tr.accepted, tr.duplicates, tr.posted, len(tr.acked)))
            per = {}
            for e in tr.acked.values():
                n, spend = per.get(e["user_id"], (0, 0.0))
                per[e["user_id"]] = (n + 1, spend + e.get("value", 0.0) * (e["type"] == "purchase"))
            check(len(per) == NLIVE)
            for uid, (n, spend) in per.items():
                status, u = s.json("GET", f"/v1/users/{uid}")
                check(status == 200 and u["events"] == n and u["spend"] == spend, (uid, n, spend, u))
            mx = s.metrics()
            check(mx["ltvd_events_applied_total"] == len(hist) + len(tr.acked))
            check(mx["ltvd_events_duplicate_total"] == tr.posted - len(tr.acked))
            check(mx["ltvd_retrain_runs_total"] == tr.retrains and tr.retrains >= MIN_RETRAINS)
            check(mx["ltvd_retrain_failures_total"] == 0)
            # a network was swapped in while events arrived: states were rebuilt
            m = s.json("GET", "/v1/model")[1]
            check(m["status"] == "trained" and mx["ltvd_state_rebuilds_total"] > 0, m)

            # The same log replayed in order by a second ltvd, under the
            # model the first one serves (its model.bin): same predictions.
            os.makedirs(b_dir)
            for f in glob.glob(os.path.join(a_dir, "wal-*.log")) + [os.path.join(a_dir, "model.bin")]:
                shutil.copy(f, b_dir)
            ids = [f"h{i}" for i in range(NHIST)] + [f"live{i}" for i in range(NLIVE)]
            pa = s.json("POST", "/v1/ltv/batch", {"user_ids": ids, "as_of": AS_OF})[1]["predictions"]
            with LtvdProcess(LTVD, SETTINGS, storage_dir=b_dir) as b:
                pb = b.json("POST", "/v1/ltv/batch", {"user_ids": ids, "as_of": AS_OF})[1]["predictions"]
            for p, q in zip(pa, pb):
                check(p["model_version"] == q["model_version"] and p["source"] == q["source"] == "network", (p, q))
                check(p["events"] == q["events"] and p["last_event_ts"] == q["last_event_ts"], (p, q))
                for k in ("ltv", "p_active", "p90"):
                    # ring values are floats: the log's doubles round to them
                    check(abs(p[k] - q[k]) <= 1e-5 * max(abs(q[k]), 1e-9), (k, p, q))


def main():
    return main_exit(*run_tests([traffic_during_retrains]))


if __name__ == "__main__":
    sys.exit(main())
