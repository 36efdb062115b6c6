"""GET /dashboard in a real browser: a real ltvd with the CDNOW sample
imported and one retrain done, the page loaded in headless Chromium
(Debian's `chromium`, driven over --remote-debugging-pipe), and the page's
own self-check read back: every chart must be drawn with data
(data-state="ok"), no JavaScript error, CSP violation or failed load may
occur, and the read token must leave the address bar. A screenshot goes to
SCREENSHOT. Then the same page on an ltvd whose dashboard.chartjs_path is
missing must say so. Also the routes themselves: content types, the CSP,
auth on the data and /v1/calibration's deciles.

Skipped (exit 77) without the CDNOW sample or without chromium.
Usage: test_dashboard.py PATH_TO_LTVD SOURCE_ROOT CDNOW_SAMPLE SCREENSHOT"""
import base64
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ltvd_harness import (check, LtvdProcess, main_exit, require_file, run_import, run_tests, scaled, skip,  # noqa: E402
                          wait_until)

LTVD, ROOT, CDNOW, SCREENSHOT = sys.argv[1], sys.argv[2], os.path.normpath(sys.argv[3]), sys.argv[4]
READ_TOKEN = "dash-read-token-0123456789"
CHARTS = ["history-loss", "history-gini", "calibration", "rates", "ltv", "pactive", "segment-sizes",
          "segment-values", "adjuster"]
SETTINGS = {"clock": "event", "train.network": "true", "train.interval_s": "0", "adjuster.enabled": "true",
            "model.horizon_days": "90", "segments.refresh_s": "1", "auth.read_token": READ_TOKEN}
AUTH = {"Authorization": "Bearer " + READ_TOKEN}


class Browser:
    """Headless Chromium driven by the DevTools protocol over a pipe (fds 3
    and 4 of the child: commands in, answers and events out, each JSON text
    ended by NUL). One page target, attached in flat mode."""

    def __init__(self, width=1400, height=2400):
        self.profile = tempfile.TemporaryDirectory(prefix="ltvd-chromium-")
        cmd_r, self.cmd_w = os.pipe()
        self.out_r, out_w = os.pipe()

        def child_fds():
            a, b = os.dup(cmd_r), os.dup(out_w)  # out of the way of 3 and 4 first
            os.dup2(a, 3)
            os.dup2(b, 4)

        self.proc = subprocess.Popen(
            ["chromium", "--headless=new", "--no-sandbox", "--disable-gpu", "--remote-debugging-pipe",
             "--no-first-run", "--no-default-browser-check", "--disable-extensions", "--mute-audio",
             f"--window-size={width},{height}", f"--user-data-dir={self.profile.name}"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            preexec_fn=child_fds, close_fds=False)
        os.close(cmd_r)
        os.close(out_w)
        self.buf = b""
        self.next_id = 0
        self.events = []
        self.session = None
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            self.call(domain + ".enable")
        self.call("Emulation.setDeviceMetricsOverride",
                  {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})

    def _read_message(self, deadline):
        while b"\0" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.out_r], [], [], left)[0]:
                raise AssertionError("chromium did not answer in time")
            chunk = os.read(self.out_r, 1 << 20)
            if not chunk:
                raise AssertionError(f"chromium exited (status {self.proc.poll()})")
            self.buf += chunk
        msg, self.buf = self.buf.split(b"\0", 1)
        return json.loads(msg)

    def call(self, method, params=None, timeout=60.0):
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params or {}}
        if self.session:
            msg["sessionId"] = self.session
        os.write(self.cmd_w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + scaled(timeout)
        while True:
            m = self._read_message(deadline)
            if m.get("id") == self.next_id:
                check("error" not in m, f"{method}: {m.get('error')}")
                return m["result"]
            if "method" in m:
                self.events.append(m)

    def evaluate(self, expression):
        r = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        check("exceptionDetails" not in r, r)
        return r["result"].get("value")

    def problems(self):
        """Uncaught exceptions and console / log errors (CSP violations,
        failed loads) seen so far, as text."""
        out = []
        for e in self.events:
            p = e.get("params", {})
            if e["method"] == "Runtime.exceptionThrown":
                d = p["exceptionDetails"]
                out.append("exception: " + d.get("exception", {}).get("description", d.get("text", "")))
            elif e["method"] == "Log.entryAdded" and p["entry"]["level"] == "error":
                out.append(f"log ({p['entry']['source']}): {p['entry']['text']} {p['entry'].get('url', '')}")
            elif e["method"] == "Runtime.consoleAPICalled" and p["type"] == "error":
                out.append("console.error: " + " ".join(str(a.get("value", a.get("description"))) for a in p["args"]))
        return out

    def load(self, url, timeout=60.0):
        """Navigates to url and waits for the page's self-check to finish
        (<body data-ready="true">); returns what it reports."""
        self.events.clear()
        self.call("Page.navigate", {"url": url})
        ready = wait_until(lambda: self.evaluate("document.body && document.body.dataset.ready") == "true",
                           timeout, 0.25)
        check(ready, "the page did not finish loading: " + json.dumps(self.report()))
        return self.report()

    def report(self):
        return self.evaluate("""(() => ({
            charts: Object.fromEntries([...document.querySelectorAll('canvas[data-chart]')]
                                       .map(c => [c.dataset.chart, c.dataset.state])),
            notes: Object.fromEntries([...document.querySelectorAll('canvas[data-chart]')]
                                      .map(c => [c.dataset.chart, c.closest('.panel').querySelector('.note').textContent])),
            errors: [...document.querySelectorAll('#errors li')].map(li => li.textContent),
            chartjs: document.body ? document.body.dataset.chartjs || '' : '',
            banner: document.getElementById('banner') ? document.getElementById('banner').textContent : '',
            url: location.href,
            adjuster_rows: document.querySelectorAll('#adjuster-table tbody tr').length,
        }))()""")

    def screenshot(self, path):
        data = self.call("Page.captureScreenshot", {"format": "png"})["data"]
        with open(path, "wb") as f:
            f.write(base64.b64decode(data))

    def close(self):
        try:
            self.session = None
            self.call("Browser.close", timeout=10)
        except (AssertionError, OSError):
            pass
        try:
            self.proc.wait(timeout=scaled(10))
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self.cmd_w)
        os.close(self.out_r)
        self.profile.cleanup()


def traffic(s, stop):
    """Predictions and a few events while the page samples /metrics, so the
    rates chart has something to show."""
    ids = ["00004", "00021", "00100", "01234"]
    k = 0
    while not stop.is_set():
        s.request("GET", f"/v1/users/{ids[k % len(ids)]}/ltv", headers=AUTH)
        if k % 10 == 0:
            s.request("POST", "/v1/events", {"user_id": f"dash-{k}", "type": "view", "ts": "1997-12-31T12:00:00Z"})
        k += 1
        stop.wait(0.05)


def retrain(s):
    check(s.json("POST", "/v1/model/retrain")[0] == 202)

    def finished():
        m = s.json("GET", "/v1/model", headers=AUTH)[1]
        return m if m["retrain"]["state"] != "running" else None

    m = wait_until(finished, 180, 0.2)
    check(m and m["retrain"]["state"] == "idle", m and m["retrain"])


def trained_server():
    """CDNOW to the end of 1997, a retrain, a prediction served to every
    shopper (the prediction log keeps them), then the first half of 1998
    (the event clock passes their 90-day horizon) and a second retrain,
    which matures them: both sources of calibration have data."""
    s = LtvdProcess(LTVD, SETTINGS)
    r = run_import(ROOT, s.port, CDNOW, "--format", "cdnow", "--until", "1997-12-31", timeout=300)
    check(r.returncode == 0, r.stderr)
    retrain(s)
    with open(CDNOW) as f:
        ids = sorted({line.split()[0] for line in f if line.strip()})
    status, body = s.json("POST", "/v1/ltv/batch", {"user_ids": ids}, headers=AUTH)
    check(status == 200 and sum(p["known"] for p in body["predictions"]) == len(ids) == 2357, status)
    r = run_import(ROOT, s.port, CDNOW, "--format", "cdnow", timeout=300)  # 1997's rows again are duplicates
    check(r.returncode == 0, r.stderr)
    retrain(s)
    serving = s.json("GET", "/v1/model", headers=AUTH)[1]["version"]

    def segments_current():
        status, seg = s.json("GET", "/v1/segments", headers=AUTH)
        return status == 200 and seg["model_version"] == serving and seg["shoppers"] >= 2357

    check(wait_until(segments_current, 60, 0.2), "GET /v1/segments did not catch up with the serving model")
    return s


def check_routes(s):
    """The files: content types and the CSP; the data: the read token."""
    status, h, body = s.request("GET", "/dashboard")
    check(status == 200 and h["content-type"].startswith("text/html"), (status, h))
    csp = h.get("content-security-policy", "")
    check("script-src 'self'" in csp and "default-src 'none'" in csp and "unsafe-inline" not in csp, csp)
    check(h.get("x-content-type-options") == "nosniff", h)
    check(b"<script>" not in body and b" on" not in body.split(b"<body", 1)[1].split(b">", 1)[0],
          "no inline script and no inline handler on the page")
    for path, ctype in (("/dashboard/dashboard.js", "text/javascript"), ("/dashboard/dashboard.css", "text/css"),
                        ("/dashboard/chart.js", "text/javascript")):
        status, h, body = s.request("GET", path)
        check(status == 200 and h["content-type"].startswith(ctype) and body, (path, status, h))
    check(s.request("GET", "/dashboard/index.html")[0] == 404)
    # the page holds no data; the data asks for the read token
    for path in ("/v1/calibration", "/v1/model", "/v1/models", "/v1/segments"):
        check(s.request("GET", path)[0] == 401, f"{path} without the read token")


def check_calibration(s):
    status, cal = s.json("GET", "/v1/calibration", headers=AUTH)
    check(status == 200, cal)
    bt = cal["backtest"]
    check(bt and bt["pairs"] > 100 and len(bt["deciles"]) == 10, cal)
    check(sum(d["count"] for d in bt["deciles"]) == bt["pairs"], bt)
    preds = [d["predicted"] for d in bt["deciles"]]
    check(preds == sorted(preds), f"deciles go up by prediction: {preds}")
    check(bt["deciles"][-1]["realised"] > bt["deciles"][0]["realised"],
          "the top decile realised more than the bottom one")
    check(abs(sum(d["count"] * d["predicted"] for d in bt["deciles"]) - bt["predicted_total"])
          <= 1e-3 * max(1.0, bt["predicted_total"]), bt)
    model = s.json("GET", "/v1/model", headers=AUTH)[1]
    check(bt["model_version"] <= model["version"], (bt, model["version"]))
    runs = model["retrain"]["runs"]
    check(len(runs) == 2 and all(r["val_loss_fallback"] > 0 and 0 < r["val_gini_fallback"] < 1 for r in runs), runs)
    check(runs[0]["version"] < runs[1]["version"] and runs[1]["at"] > runs[0]["at"], runs)
    live = cal["live"]
    check(live and live["pairs"] > 1000 and len(live["deciles"]) == 10, f"the served predictions matured: {live}")
    check(sum(d["count"] for d in live["deciles"]) == live["pairs"], live)


def dashboard_in_chromium():
    with trained_server() as s:
        check_routes(s)
        check_calibration(s)
        browser = Browser()
        stop = threading.Event()
        feeder = threading.Thread(target=traffic, args=(s, stop), daemon=True)
        feeder.start()
        try:
            rep = browser.load(f"http://127.0.0.1:{s.port}/dashboard#token={READ_TOKEN}")
            # let the rates chart gather a few points for the screenshot
            wait_until(lambda: browser.evaluate("document.querySelector('#c-rates') && "
                                                "charts.rates ? charts.rates.data.labels.length : 0") >= 3, 15, 0.5)
            browser.screenshot(SCREENSHOT)
            rep = browser.report()
            problems = browser.problems()
        finally:
            stop.set()
            feeder.join()
            browser.close()
        print("dashboard:", json.dumps(rep, indent=1))
        print("screenshot:", SCREENSHOT)
        check(not problems, "browser errors:\n  " + "\n  ".join(problems))
        check(not rep["errors"], rep["errors"])
        bad = {c: (rep["charts"].get(c), rep["notes"].get(c)) for c in CHARTS if rep["charts"].get(c) != "ok"}
        check(not bad, f"charts without data: {bad}")
        check(set(rep["charts"]) == set(CHARTS), rep["charts"])
        check(rep["adjuster_rows"] > 0, "the adjuster's table has rows")
        check(READ_TOKEN not in rep["url"], f"the token stays in the address bar: {rep['url']}")
        check(os.path.getsize(SCREENSHOT) > 10000, "a screenshot was written")


def dashboard_without_chartjs():
    """dashboard.chartjs_path missing: /dashboard/chart.js answers 404 with
    what to install, and the page says Chart.js is missing instead of
    failing silently."""
    settings = {"dashboard.chartjs_path": "/nonexistent/chart.min.js", "auth.read_token": READ_TOKEN}
    with LtvdProcess(LTVD, settings) as s:
        status, body = s.json("GET", "/dashboard/chart.js")
        check(status == 404 and "libjs-chart.js" in body["error"]["message"], body)
        check("/nonexistent" in s.logs(), "the log names the path")
        browser = Browser(1000, 800)
        try:
            rep = browser.load(f"http://127.0.0.1:{s.port}/dashboard#token={READ_TOKEN}")
        finally:
            browser.close()
        check(rep["chartjs"] == "missing", rep)
        check("Chart.js did not load" in rep["banner"] and "libjs-chart.js" in rep["banner"], rep["banner"])
        check(all(rep["charts"][c] == "error" for c in CHARTS), rep["charts"])


def main():
    require_file(CDNOW, "the CDNOW sample lives in ../shared")
    if not shutil.which("chromium"):
        skip("chromium is not installed (tools/install-deps.sh installs Debian's chromium)")
    return main_exit(*run_tests([dashboard_in_chromium, dashboard_without_chartjs]))


if __name__ == "__main__":
    sys.exit(main())
