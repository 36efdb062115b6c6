"""Everything built on the CDNOW sample (../shared/data/cdnow), against a
real ltvd: the CDNOW import format; protocol A with the fallback reproduces
the brief's BG/NBD + Gamma-Gamma row; a trained network and the shoppers'
states survive a restart; the adjuster shows up when enabled. Without the
sample this test is skipped (exit 77; CI fails on it).
Usage: test_cdnow.py PATH_TO_LTVD SOURCE_ROOT CDNOW_SAMPLE"""
import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ltvd_harness import (check, LtvdProcess, main_exit, require_file, run_import, run_tests,  # noqa: E402
                          scaled)

LTVD, ROOT, CDNOW = sys.argv[1], sys.argv[2], os.path.normpath(sys.argv[3])


def import_cdnow(s):
    r = run_import(ROOT, s.port, CDNOW, "--format", "cdnow", "--until", "1997-12-31", timeout=300)
    check(r.returncode == 0, r.stderr)
    return json.loads(r.stdout)


def cdnow_import():
    with LtvdProcess(LTVD, {"clock": "event"}) as s:
        out = import_cdnow(s)
        check(out["accepted"] == out["rows"] and out["skipped"] > 0, out)
        check(s.metrics()["ltvd_users"] == 2357, "every CDNOW customer bought before 1998")


def protocol_a_fallback_matches_brief():
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        r = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "accuracy"), "--ltvd", LTVD,
                            "--data", CDNOW, "--configs", "fallback", "--json", out.name],
                           capture_output=True, text=True, timeout=scaled(300))
        check(r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:])
        res = json.load(open(out.name))["results"]["fallback"][0]
    want = {"gini": 0.671, "spearman": 0.413, "decile_mape": 0.266, "auc": 0.777, "total_error": 0.006}
    for k, v in want.items():
        check(abs(res[k] - v) <= 0.01, f"{k} = {res[k]:.4f}, brief says {v}")


def trained_model_survives_restart():
    """Protocol A's data, a network retrain, then a restart on the same
    directory: the trained model and the shoppers' states come back and
    predictions are unchanged."""
    settings = {"clock": "event", "train.network": "true", "train.interval_s": "0"}
    ids = ["00004", "00021", "00100", "01234", "nobody"]
    body = {"user_ids": ids, "as_of": "1997-12-31T23:59:59Z"}
    with tempfile.TemporaryDirectory(prefix="ltvd-trained-") as d:
        with LtvdProcess(LTVD, settings, storage_dir=d) as s:
            import_cdnow(s)
            check(s.json("POST", "/v1/model/retrain")[0] == 202)
            m = s.wait_retrain()
            check(m["status"] == "trained" and m["retrain"]["last_training"]["swapped"], m)
            lvl = m["retrain"]["last_training"]["level"]  # the held-out shoppers the level was checked on
            check(0 < lvl["buyers"] <= lvl["shoppers"], lvl)
            before = s.json("POST", "/v1/ltv/batch", body)[1]
            check(all(p["source"] == "network" for p in before["predictions"] if p["known"]), before)
            check(s.stop() == 0)
        with LtvdProcess(LTVD, settings, storage_dir=d) as s:
            m2 = s.json("GET", "/v1/model")[1]
            check(m2["status"] == "trained" and m2["version"] == m["version"], m2)
            after = s.json("POST", "/v1/ltv/batch", body)[1]
            for p, q in zip(before["predictions"], after["predictions"]):
                check(abs(p["ltv"] - q["ltv"]) <= 1e-6 * max(1.0, p["ltv"]), (p, q))
            check(s.metrics()["ltvd_state_rebuilds_total"] == 0, "states come back with the weights they were made by")


def adjuster_visible_when_enabled():
    """adjuster.enabled=true: after a retrain GET /v1/model shows the table
    and /metrics its counters; off, it stays inactive, and a table saved
    while it was on is not served after a restart with it off."""
    for enabled in (True, False):
        settings = {"clock": "event", "train.network": "false", "train.interval_s": "0",
                    "adjuster.enabled": "true" if enabled else "false"}
        with tempfile.TemporaryDirectory(prefix="ltvd-adjuster-") as d:
            adjuster_run(settings, enabled, d)


def adjuster_run(settings, enabled, d):
    """One ltvd on d: import, retrain, check the adjuster's state; with it on,
    then off and on again after restarts on the same data."""
    with LtvdProcess(LTVD, settings, storage_dir=d) as s:
        import_cdnow(s)
        check(s.json("POST", "/v1/model/retrain")[0] == 202)
        m = s.wait_retrain()
        check(m["retrain"]["state"] == "idle", m["retrain"])
        adj = m["adjuster"]
        check(adj["enabled"] is enabled and adj["active"] is enabled, adj)
        if enabled:
            check(adj["segments"] and all(g["pairs"] > 0 for g in adj["segments"]), adj)
            check(adj["episodes"] > 0 and adj["runs"] == 1 and adj["backtest_pairs"] > 100, adj)
            # a segment with fewer than 100 outcomes is never corrected
            check(all(g["action"] == 1 for g in adj["segments"] if g["pairs"] < 100), adj)
            check(all(len(g["q"]) == len(adj["multipliers"]) for g in adj["segments"]))
            check(s.metrics()["ltvd_adjuster_runs_total"] == 1)
        else:
            check(s.metrics()["ltvd_adjuster_runs_total"] == 0)
        check(s.stop() == 0)
    if not enabled:
        return
    for on in (False, True):  # the saved table: set aside while off, served again when back on
        with LtvdProcess(LTVD, dict(settings, **{"adjuster.enabled": "true" if on else "false"}),
                         storage_dir=d) as s:
            adj = s.json("GET", "/v1/model")[1]["adjuster"]
            check(adj["enabled"] is on and adj["active"] is on, adj)
            e = s.json("GET", "/v1/users/00004/ltv?as_of=1997-12-31T23:59:59Z&explain=true")[1]
            check(e["explain"]["adjuster"]["used"] is on, e["explain"]["adjuster"])
            check(s.stop() == 0)


def main():
    require_file(CDNOW, "the CDNOW sample lives in ../shared")
    return main_exit(*run_tests([cdnow_import, protocol_a_fallback_matches_brief, trained_model_survives_restart,
                                 adjuster_visible_when_enabled]))


if __name__ == "__main__":
    sys.exit(main())
