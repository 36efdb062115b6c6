"""GET /metrics follows the Prometheus conventions, and the files of
deploy/prometheus and deploy/grafana fit what ltvd exports (issue 15,
item 1).

- A live page passes `promtool check metrics` with nothing to say, fresh
  and after traffic; every series a fresh process can know of is there at
  zero; no name keeps a non-base unit (the old *_ms).
- Requests are counted under the status code they were answered with
  (code="404", "401", ...), in the counter and the histogram alike.
- ltvd_build_info, process_* (RSS, CPU, fds, start time), the fsync
  histogram, the capacity gauge and the freshness timestamps hold what
  they say.
- deploy/prometheus: `promtool check config` / `check rules` pass and
  `promtool test rules` runs the alert unit tests; deploy/grafana: the
  dashboard is valid JSON, every query parses as PromQL, and every metric
  an alert or a panel names is on a live page.

promtool is Debian's `prometheus` package (tools/install-deps.sh). Without
it the test is skipped (exit 77), except under CI (CI set), where that is a
failure. Usage: test_metrics.py path/to/ltvd SOURCE_ROOT"""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

from ltvd_harness import (LtvdProcess, check, main_exit, purchase_histories, run_tests, scaled, test_registry,
                          wait_until)

tests, test = test_registry()

ROOT = sys.argv[2] if len(sys.argv) > 2 else "."
PROM = os.path.join(ROOT, "deploy", "prometheus")
DASHBOARD = os.path.join(ROOT, "deploy", "grafana", "ltvd-dashboard.json")
TOKENS = {"auth.ingest_token": "ingest-secret", "auth.admin_token": "admin-secret",
          "auth.read_token": "read-secret"}
INGEST = {"Authorization": "Bearer ingest-secret"}
READ = {"Authorization": "Bearer read-secret"}
ADMIN = {"Authorization": "Bearer admin-secret"}


def promtool(*args, stdin=None):
    """(exit status, stdout + stderr) of promtool with args."""
    r = subprocess.run(["promtool", *args], input=stdin, capture_output=True, text=True, timeout=scaled(120),
                       cwd=ROOT)
    return r.returncode, (r.stdout + r.stderr).strip()


def scrape(s):
    """The raw /metrics text."""
    status, hdrs, data = s.request("GET", "/metrics")
    check(status == 200, f"/metrics answered {status}")
    check(hdrs["content-type"].startswith("text/plain; version=0.0.4"), hdrs["content-type"])
    return data.decode()


def check_page(text, when):
    """promtool check metrics on a page: exit 0 and not a word of complaint."""
    rc, out = promtool("check", "metrics", stdin=text)
    check(rc == 0 and out == "", f"promtool check metrics on the {when} page (exit {rc}):\n{out}")


def names_on(metrics):
    """The metric names of a parsed page (series names without labels)."""
    return {k.split("{", 1)[0] for k in metrics}


@test
def fresh_page_is_clean_and_complete(binary):
    with LtvdProcess(binary) as s:
        text = scrape(s)
        check_page(text, "fresh")
        m = s.metrics()
        # counters, gauges and the fsync histogram are there before anything happened
        for name in ("ltvd_snapshots_total", "ltvd_snapshot_failures_total", "ltvd_retrain_failures_total",
                     "ltvd_dedupe_evicted_early_total", "ltvd_wal_failed", "ltvd_snapshot_last_duration_seconds",
                     "ltvd_snapshot_last_pause_seconds",
                     "ltvd_retrain_last_duration_seconds", "ltvd_snapshot_last_success_timestamp_seconds",
                     "ltvd_retrain_last_success_timestamp_seconds", "ltvd_model_last_trained_timestamp_seconds",
                     'ltvd_wal_fsync_duration_seconds_bucket{le="+Inf"}', "ltvd_wal_fsync_duration_seconds_count"):
            check(m.get(name) == 0, f"a fresh page shows {name} 0, not {m.get(name)}")
        check(m['ltvd_wal_fsync_duration_seconds_bucket{le="1e-05"}'] == 0, "the fsync buckets start at 10 us")
        check(m["ltvd_recovery_duration_seconds"] >= 0)
        # the statuses each route can answer, at zero before any request
        for route, code in (("/v1/events", "503"), ("/v1/events", "401"), ("/v1/users/{user_id}", "404"),
                            ("/v1/model/retrain", "409"), ("/v1/ltv/batch", "413"), ("unknown", "404")):
            key = f'ltvd_http_requests_total{{route="{route}",code="{code}"}}'
            check(m.get(key) == 0, f"{key} is on the fresh page at 0")
        for route, code in (("/v1/events", "200"), ("/v1/users/{user_id}", "204"), ("/v1/model/retrain", "202")):
            key = f'ltvd_http_request_duration_seconds_bucket{{route="{route}",code="{code}",le="+Inf"}}'
            check(m.get(key) == 0, f"{key} is on the fresh page at 0")
        for name in names_on(m):
            check(not name.endswith(("_ms", "_milliseconds")), f"{name}: not a base unit")
        check("status=" not in text, "requests are labelled code=, as Prometheus exporters do")


@test
def requests_are_counted_by_code(binary):
    with LtvdProcess(binary, TOKENS) as s:
        for i in range(3):
            status, _ = s.json("POST", "/v1/events",
                               {"user_id": f"u{i}", "event_id": f"e{i}", "type": "view", "ts": time.time() - 60},
                               INGEST)
            check(status == 200, status)
        check(s.json("GET", "/v1/users/u0", headers=READ)[0] == 200)
        check(s.json("GET", "/v1/users/nobody", headers=READ)[0] == 404)
        check(s.json("GET", "/v1/no/such/route", headers=READ)[0] == 404)
        check(s.json("POST", "/v1/events", {"user_id": "x", "type": "view", "ts": time.time()})[0] == 401)
        check(s.json("DELETE", "/v1/users/u1", headers=INGEST)[0] == 401)  # an admin route
        text = scrape(s)
        check_page(text, "after-traffic")
        m = s.metrics()

        def count(route, code):
            return m.get(f'ltvd_http_requests_total{{route="{route}",code="{code}"}}')

        check(count("/v1/events", "200") == 3, count("/v1/events", "200"))
        check(count("/v1/events", "401") == 1, "the refused post counted under 401")
        check(count("/v1/users/{user_id}", "200") == 1)
        check(count("/v1/users/{user_id}", "404") == 1, "the unknown shopper counted under 404")
        check(count("/v1/users/{user_id}", "401") == 1, "the DELETE without the admin token")
        check(count("unknown", "404") == 1, "the unknown route counted under 404")
        hist = 'ltvd_http_request_duration_seconds_count{route="/v1/users/{user_id}",code="404"}'
        check(m.get(hist) == 1, f"{hist}: the histogram has the code too ({m.get(hist)})")
        inf = 'ltvd_http_request_duration_seconds_bucket{route="/v1/events",code="200",le="+Inf"}'
        check(m.get(inf) == 3, f"{inf}: {m.get(inf)}")
        # storage.fsync=always: each durable post waited for a timed fsync
        check(m["ltvd_wal_fsyncs_total"] >= 1)
        check(m["ltvd_wal_fsync_duration_seconds_count"] == m["ltvd_wal_fsyncs_total"],
              "every group-commit fsync is in the histogram")
        check(abs(m["ltvd_wal_fsync_duration_seconds_sum"] - m["ltvd_wal_fsync_seconds_total"]) < 1e-3)


@test
def build_process_and_capacity(binary):
    version = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30).stdout.split()[-1]
    t0 = time.time()
    with LtvdProcess(binary, {"limits.max_users": "12345", "limits.dedupe_max_ids": "777"}) as s:
        text = scrape(s)
        info = [line for line in text.splitlines() if line.startswith("ltvd_build_info{")]
        check(len(info) == 1, info)
        labels = dict(re.findall(r'(\w+)="([^"]*)"', info[0]))
        check(info[0].endswith("} 1"), info[0])
        check(labels.get("version") == version, f"build_info version {labels.get('version')} vs --version {version}")
        check(re.fullmatch(r"[0-9a-f]{7,40}|unknown", labels.get("commit", "")), labels)
        check(re.match(r"(gcc|clang) \d+\.\d+", labels.get("compiler", "")), labels)
        m = s.metrics()
        check(m["process_resident_memory_bytes"] > 1 << 20, m["process_resident_memory_bytes"])
        check(m["process_virtual_memory_bytes"] >= m["process_resident_memory_bytes"])
        check(t0 - scaled(30) <= m["process_start_time_seconds"] <= time.time() + 1,
              f"start time {m['process_start_time_seconds']} vs launched at {t0}")
        check(m["process_cpu_seconds_total"] >= 0)
        check(0 < m["process_open_fds"] <= m["process_max_fds"], (m["process_open_fds"], m["process_max_fds"]))
        check(m["process_threads"] >= 2)
        check(m["ltvd_memory_limit_bytes"] >= 0)
        check(m["ltvd_users_max"] == 12345, "ltvd_users_max is limits.max_users")
        check(m["ltvd_dedupe_window"] == 777, "ltvd_dedupe_window is limits.dedupe_max_ids")
        # the cap is reached within the window: early evictions counted
        events = [{"user_id": f"d{i % 10}", "event_id": f"ev{i}", "type": "view", "ts": time.time() - 60}
                  for i in range(800)]
        check(s.json("POST", "/v1/events", {"events": events})[0] == 200)
        m = s.metrics()
        check(m["ltvd_dedupe_entries"] == 777 and m["ltvd_dedupe_evicted_early_total"] == 800 - 777,
              (m["ltvd_dedupe_entries"], m["ltvd_dedupe_evicted_early_total"]))


@test
def freshness_timestamps(binary):
    settings = {"clock": "event", "train.network": "false", "storage.snapshot_interval_s": "1"}
    with LtvdProcess(binary, settings) as s:
        events = purchase_histories(60, seed=5)
        for i in range(0, len(events), 500):
            check(s.json("POST", "/v1/events", {"events": events[i:i + 500]})[0] == 200)
        t0 = time.time()
        check(s.json("POST", "/v1/model/retrain")[0] == 202)
        check(wait_until(lambda: s.metrics()["ltvd_retrain_runs_total"] >= 1, 60), "the retrain ran")
        check(wait_until(lambda: s.metrics()["ltvd_snapshots_total"] >= 1, 30), "a snapshot was written")
        m = s.metrics()
        check(m["ltvd_retrain_failures_total"] == 0, s.json("GET", "/v1/model")[1])
        for name in ("ltvd_retrain_last_success_timestamp_seconds", "ltvd_model_last_trained_timestamp_seconds"):
            check(t0 - 1 <= m[name] <= time.time() + 1, f"{name} {m[name]}: wall-clock time of the retrain")
        snap = m["ltvd_snapshot_last_success_timestamp_seconds"]
        check(t0 - scaled(60) <= snap <= time.time() + 1, f"snapshot timestamp {snap}")
        check(0 < m["ltvd_retrain_last_duration_seconds"] < scaled(60), m["ltvd_retrain_last_duration_seconds"])
        check(0 < m["ltvd_snapshot_last_duration_seconds"] < scaled(60), m["ltvd_snapshot_last_duration_seconds"])
        # the hold of the store lock (rotation and fork) is part of the snapshot's time
        pause = m["ltvd_snapshot_last_pause_seconds"]
        check(0 < pause <= m["ltvd_snapshot_last_duration_seconds"], f"snapshot pause {pause}")


# ---- deploy/prometheus and deploy/grafana ---------------------------------

PROMQL_WORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "bool",
                "offset", "inf", "nan"}


def metric_names(expr):
    """The metric names a PromQL expression selects: label matchers,
    strings, ranges and grouping lists removed, function names dropped."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)
    e = re.sub(r"\{[^}]*\}", "", e)
    e = re.sub(r"\[[^\]]*\]", "", e)
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", e)
    names = set()
    for m in re.finditer(r"(?<![\w.$])([A-Za-z_:][A-Za-z0-9_:]*)(\s*\()?", e):
        if not m.group(2) and m.group(1) not in PROMQL_WORDS:
            names.add(m.group(1))
    return names


def dashboard_exprs():
    with open(DASHBOARD) as f:
        dash = json.load(f)
    exprs = []

    def walk(panels):
        for p in panels:
            exprs.extend(t["expr"] for t in p.get("targets", []) if t.get("expr"))
            walk(p.get("panels", []))
    walk(dash["panels"])
    for var in dash.get("templating", {}).get("list", []):
        q = var.get("query")
        if isinstance(q, dict) and q.get("query", "").startswith("label_values("):
            exprs.append(re.sub(r"label_values\((\w+),.*", r"\1", q["query"]))
    return dash, exprs


def alert_exprs():
    with open(os.path.join(PROM, "alerts.yml")) as f:
        text = f.read()
    # the expressions of the rules file, one line or a `|` block each
    exprs = []
    lines = text.splitlines()
    for i, line in enumerate(lines):
        m = re.match(r"^(\s*)expr:\s*(.*)$", line)
        if not m:
            continue
        if m.group(2).strip() == "|":
            block = []
            for nxt in lines[i + 1:]:
                if nxt.strip() and len(nxt) - len(nxt.lstrip()) <= len(m.group(1)):
                    break
                block.append(nxt.strip())
            exprs.append(" ".join(block))
        else:
            exprs.append(m.group(2))
    return exprs


@test
def alert_rules_check_and_pass_their_unit_tests(binary):
    rc, out = promtool("check", "rules", os.path.join(PROM, "alerts.yml"))
    check(rc == 0 and "SUCCESS" in out, out)
    rc, out = promtool("check", "config", os.path.join(PROM, "prometheus.yml"))
    check(rc == 0, out)
    rc, out = promtool("test", "rules", os.path.join(PROM, "alerts_test.yml"))
    check(rc == 0 and "SUCCESS" in out, out)


@test
def dashboard_and_alerts_name_only_exported_metrics(binary):
    dash, exprs = dashboard_exprs()
    check(dash.get("uid") and dash.get("title") and len(exprs) >= 20, "a dashboard with its panels' queries")
    # every panel query is PromQL: promtool parses them as recording rules
    # (Grafana's variables replaced by values)
    with tempfile.TemporaryDirectory(prefix="ltvd-dash-") as tmp:
        path = os.path.join(tmp, "dashboard_rules.yml")
        with open(path, "w") as f:
            f.write("groups:\n  - name: dashboard\n    rules:\n")
            for i, e in enumerate(exprs):
                e = e.replace("$__rate_interval", "1m").replace("$instance", ".*")
                f.write(f"      - record: dashboard:query{i}\n        expr: {json.dumps(e)}\n")
        rc, out = promtool("check", "rules", path)
        check(rc == 0, f"a dashboard query does not parse:\n{out}")
    named = set()
    for e in exprs + alert_exprs():
        named |= metric_names(e)
    check({"ltvd_http_requests_total", "ltvd_wal_fsync_duration_seconds_bucket", "ltvd_users_max",
           "process_resident_memory_bytes"} <= named, sorted(named))
    with LtvdProcess(binary) as s:
        exported = names_on(s.metrics())
    missing = sorted(named - exported - {"up"})  # up: Prometheus's own, per target
    check(not missing, f"named by deploy/grafana or deploy/prometheus but not exported: {missing}")


if __name__ == "__main__":
    if shutil.which("promtool") is None:
        msg = "promtool not found (Debian package prometheus; tools/install-deps.sh installs it)"
        if os.environ.get("CI"):
            print(f"FAIL: {msg}, and CI must check the metrics\n0 passed, 1 failed")
            sys.exit(1)
        print(f"SKIP: {msg}")
        sys.exit(77)
    sys.exit(main_exit(*run_tests(tests, sys.argv[1])))
