"""tools/ltvd-import against a real ltvd: CSV and CDNOW formats, idempotent
re-import, and bad rows named by line. Also protocol A with the fallback
reproduces the brief's BG/NBD + Gamma-Gamma row (skipped without ../shared).
Usage: test_import.py PATH_TO_LTVD SOURCE_ROOT"""
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ltvd_harness import LtvdProcess, run_tests  # noqa: E402

LTVD, ROOT = sys.argv[1], sys.argv[2]
IMPORT = os.path.join(ROOT, "tools", "ltvd-import")
CDNOW = os.path.normpath(os.path.join(ROOT, "..", "shared", "data", "cdnow", "CDNOW_sample.txt"))


def check(cond, msg=""):
    if not cond:
        raise AssertionError(msg)


def run_import(port, path, *extra):
    return subprocess.run([sys.executable, IMPORT, "--url", f"http://127.0.0.1:{port}", "--quiet", *extra, path],
                          capture_output=True, text=True, timeout=120)


def csv_import_and_reimport():
    with LtvdProcess(LTVD, {"clock": "event"}) as s, tempfile.NamedTemporaryFile("w", suffix=".csv") as f:
        f.write("user_id,ts,type,value,quantity,event_id\n")
        f.write("u1,2024-01-01T10:00:00Z,view,,,\n")
        f.write("u1,2024-01-02T10:00:00Z,purchase,19.99,2,\n")
        f.write("u2,1704196800,purchase,5,,order-9\n")
        f.write("u2,2024-01-03T10:00:00+02:00,refund,5,,\n")
        f.flush()
        r = run_import(s.port, f.name, "--batch", "2")
        check(r.returncode == 0, r.stderr)
        out = json.loads(r.stdout)
        check(out["rows"] == 4 and out["accepted"] == 4 and out["duplicates"] == 0, out)
        u1 = s.json("GET", "/v1/users/u1")[1]
        check(u1["events"] == 2 and abs(u1["spend"] - 19.99) < 1e-9, u1)
        u2 = s.json("GET", "/v1/users/u2")[1]
        check(u2["purchases"] == 1 and u2["refunds"] == 1 and abs(u2["spend"]) < 1e-9, u2)
        r = run_import(s.port, f.name)
        out = json.loads(r.stdout)
        check(out["accepted"] == 0 and out["duplicates"] == 4, f"re-import must not double count: {out}")


def bad_rows_are_named():
    cases = [("u1,2024-01-01T10:00:00Z,view,\nu2,2024-13-01T00:00:00Z,view,\n", "line 2"),
             ("u1,2024-01-01T10:00:00Z,purchase,\n", "line 1"),
             ("u1,2024-01-01T10:00:00Z,view,\nu1,2024-01-01T10:00:00Z,teleport,\n", "line 2"),
             ("u1,2024-01-01T10:00:00Z,purchase,-4\n", "line 1"),
             ("u1,2024-01-01T10:00:00,view,\n", "time zone")]
    with LtvdProcess(LTVD) as s:
        for text, needle in cases:
            with tempfile.NamedTemporaryFile("w", suffix=".csv") as f:
                f.write(text)
                f.flush()
                r = run_import(s.port, f.name)
                check(r.returncode != 0 and needle in r.stderr, (text, r.returncode, r.stderr))


def cdnow_import():
    if not os.path.exists(CDNOW):
        print(f"SKIP cdnow_import: {CDNOW} not found")
        return
    with LtvdProcess(LTVD, {"clock": "event"}) as s:
        r = run_import(s.port, CDNOW, "--format", "cdnow", "--until", "1997-12-31")
        check(r.returncode == 0, r.stderr)
        out = json.loads(r.stdout)
        check(out["accepted"] == out["rows"] and out["skipped"] > 0, out)
        text = s.request("GET", "/metrics")[2].decode()
        check("ltvd_users 2357" in text, "every CDNOW customer bought before 1998")


def protocol_a_fallback_matches_brief():
    if not os.path.exists(CDNOW):
        print(f"SKIP protocol_a: {CDNOW} not found")
        return
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        r = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "accuracy"), "--ltvd", LTVD,
                            "--configs", "fallback", "--json", out.name], capture_output=True, text=True, timeout=300)
        check(r.returncode == 0, r.stderr)
        res = json.load(open(out.name))["results"]["fallback"][0]
    want = {"gini": 0.671, "spearman": 0.413, "decile_mape": 0.266, "auc": 0.777, "total_error": 0.006}
    for k, v in want.items():
        check(abs(res[k] - v) <= 0.01, f"{k} = {res[k]:.4f}, brief says {v}")


def trained_model_survives_restart():
    """Protocol A's data, a network retrain, then a restart on the same
    directory: the trained model and the shoppers' states come back and
    predictions are unchanged."""
    if not os.path.exists(CDNOW):
        print(f"SKIP trained_model_survives_restart: {CDNOW} not found")
        return
    with tempfile.TemporaryDirectory(prefix="ltvd-trained-") as d:
        settings = {"clock": "event", "train.network": "true", "train.interval_s": "0"}
        s = LtvdProcess(LTVD, settings, storage_dir=d)
        r = run_import(s.port, CDNOW, "--format", "cdnow", "--until", "1997-12-31")
        check(r.returncode == 0, r.stderr)
        check(s.json("POST", "/v1/model/retrain")[0] == 202)
        m = wait_retrain(s)
        check(m["status"] == "trained" and m["retrain"]["last_training"]["swapped"], m)
        ids = ["00004", "00021", "00100", "01234", "nobody"]
        before = s.json("POST", "/v1/ltv/batch", {"user_ids": ids, "as_of": "1997-12-31T23:59:59Z"})[1]
        check(all(p["source"] == "network" for p in before["predictions"] if p["known"]), before)
        check(s.stop() == 0)
        s = LtvdProcess(LTVD, settings, storage_dir=d)
        m2 = s.json("GET", "/v1/model")[1]
        check(m2["status"] == "trained" and m2["version"] == m["version"], m2)
        after = s.json("POST", "/v1/ltv/batch", {"user_ids": ids, "as_of": "1997-12-31T23:59:59Z"})[1]
        for p, q in zip(before["predictions"], after["predictions"]):
            check(abs(p["ltv"] - q["ltv"]) <= 1e-6 * max(1.0, p["ltv"]), (p, q))
        check(metric_value(s, "ltvd_state_rebuilds_total") == 0, "states come back with the weights they were made by")
        check(s.stop() == 0)


def adjuster_visible_when_enabled():
    """adjuster.enabled=true: after a retrain GET /v1/model shows the table
    and /metrics its counters; with the default (off) it stays inactive."""
    if not os.path.exists(CDNOW):
        print(f"SKIP adjuster_visible_when_enabled: {CDNOW} not found")
        return
    for enabled in (True, False):
        settings = {"clock": "event", "train.network": "false", "train.interval_s": "0",
                    "adjuster.enabled": "true" if enabled else "false"}
        with LtvdProcess(LTVD, settings) as s:
            check(run_import(s.port, CDNOW, "--format", "cdnow", "--until", "1997-12-31").returncode == 0)
            check(s.json("POST", "/v1/model/retrain")[0] == 202)
            m = wait_retrain(s)
            adj = m["adjuster"]
            check(adj["enabled"] is enabled and adj["active"] is enabled, adj)
            if enabled:
                check(adj["segments"] and all(g["pairs"] > 0 for g in adj["segments"]), adj)
                check(adj["episodes"] > 0 and adj["runs"] == 1 and adj["backtest_pairs"] > 100, adj)
                # a segment with fewer than 100 outcomes is never corrected
                check(all(g["action"] == 1 for g in adj["segments"] if g["pairs"] < 100), adj)
                check(all(len(g["q"]) == len(adj["multipliers"]) for g in adj["segments"]))
                check(metric_value(s, "ltvd_adjuster_runs_total") == 1)
            else:
                check(metric_value(s, "ltvd_adjuster_runs_total") == 0)


def wait_retrain(s, timeout=60.0):
    """GET /v1/model once the running retrain is over."""
    deadline = time.time() + timeout
    while True:
        m = s.json("GET", "/v1/model")[1]
        if m["retrain"]["state"] != "running" or time.time() > deadline:
            return m
        time.sleep(0.1)


def metric_value(s, name):
    for line in s.request("GET", "/metrics")[2].decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


def main():
    passed, failed = run_tests([csv_import_and_reimport, bad_rows_are_named, cdnow_import, protocol_a_fallback_matches_brief,
               trained_model_survives_restart, adjuster_visible_when_enabled])
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
