"""Starts a real ltvd on a free loopback port and talks to it (stdlib only).

Used by the HTTP tests and the benchmarks. Each LtvdProcess owns a fresh
storage directory unless one is given. Stopping one (stop(), or leaving its
`with` block) checks what a green run must not hide: the exit status is the
expected one (0 after SIGTERM, -9 after SIGKILL) and the server's output
holds no sanitizer report; otherwise ServerCheckError carries the log tail.
run_tests() stops, and fails, any server a test left running.

Deadlines scale with LTVD_TEST_TIMEOUT_SCALE (default 1; CI sets 3 for the
sanitizer build, like meson's --timeout-multiplier). A test that cannot run
calls skip(), which exits 77: meson shows SKIP.
"""
import atexit
import glob
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.parse

TIMEOUT_SCALE = float(os.environ.get("LTVD_TEST_TIMEOUT_SCALE", "1") or "1")

# Lines a sanitizer prints; none may appear in a passing run.
SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                     "WARNING: ThreadSanitizer", "SUMMARY: ")

SKIP_EXIT = 77


def scaled(seconds):
    """A deadline or timeout in seconds, stretched for slow (sanitizer) builds."""
    return seconds * TIMEOUT_SCALE


def log_holds(d, needle):
    """Does any write-ahead log segment in d hold these bytes? A live ltvd
    deletes superseded segments after each snapshot: one gone between the
    listing and the read holds nothing."""
    for path in sorted(glob.glob(os.path.join(d, "wal-*.log"))):
        try:
            with open(path, "rb") as f:
                if needle in f.read():
                    return True
        except FileNotFoundError:
            pass
    return False


def read_shared(f):
    """The whole of a file a child process writes through the same open
    file description (its stdout/stderr): pread, so that the shared offset
    the child writes at is not moved (a seek(0) and read() while it writes
    made it write over the start of the file)."""
    fd = f.fileno()
    return os.pread(fd, os.fstat(fd).st_size, 0).decode(errors="replace")


def check(cond, msg=""):
    """Fails the running test with msg unless cond holds (msg may be a
    function, called only then: a diagnosis that costs requests)."""
    if not cond:
        raise AssertionError(msg() if callable(msg) else msg)


def test_registry():
    """(tests, test): a list and a decorator that appends a function to it,
    for a test file's `@test` functions and `run_tests(tests, ...)`."""
    tests = []

    def test(fn):
        tests.append(fn)
        return fn
    return tests, test


def purchase_histories(n, seed, day=86400):
    """Seeded BG/NBD-like purchase events of n shoppers ("s0".."s{n-1}") over
    1997-1998, sorted by time, for the event clock: 800 shoppers give a
    network retrain of about a second of CPU, against a millisecond for one
    HTTP request."""
    import random
    rng = random.Random(seed)
    base = 852076800  # 1997-01-01
    events = []
    for i in range(n):
        t = base + rng.randrange(0, 90) * day
        rate = rng.gammavariate(0.5, 1 / 10.0)
        drop = rng.betavariate(1, 3)
        while t < base + 540 * day:
            events.append({"user_id": f"s{i}", "type": "purchase", "ts": t,
                           "value": round(rng.lognormvariate(3.3, 0.5), 2)})
            if rng.random() < drop:
                break
            t += int(rng.expovariate(rate) * day) + day
    events.sort(key=lambda e: e["ts"])
    return events


def skip(reason):
    """Ends a test program that cannot run here: meson reports SKIP."""
    print(f"SKIP: {reason}")
    sys.stdout.flush()
    sys.exit(SKIP_EXIT)


def require_file(path, what):
    """skip() unless path exists."""
    if not os.path.exists(path):
        skip(f"{path} not found ({what})")
    return path


def wait_until(probe, timeout, interval=0.05):
    """Calls probe() until it returns something truthy or `timeout` (scaled)
    seconds pass; returns its last value."""
    deadline = time.monotonic() + scaled(timeout)
    while True:
        value = probe()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sanitizer_reports(text):
    """The lines of text that a sanitizer printed."""
    return [line for line in text.splitlines() if any(m in line for m in SANITIZER_MARKERS)]


def flatten(obj, prefix=""):
    """A nested config object (configs/ltvd.json) as its dotted keys
    (model.horizon_days), as --set and src/config.c's key table name them."""
    out = {}
    for k, v in obj.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


def tail(text, lines=60):
    return "\n".join(text.splitlines()[-lines:])


class ServerCheckError(AssertionError):
    """A server stopped with the wrong status, hung, or reported a sanitizer error."""


_METRIC_LINE = re.compile(r'^([A-Za-z_:][A-Za-z0-9_:]*(?:\{(?:[^"}]|"(?:[^"\\]|\\.)*")*\})?)\s+(\S+)(?:\s+\S+)?$')


def parse_metrics(text):
    """Prometheus text -> {series: value}, the series written as exposed
    (`name` or `name{label="v",...}`). Raises ValueError on a line that is
    not a comment, blank or a sample."""
    out = {}
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        m = _METRIC_LINE.match(line)
        if not m:
            raise ValueError(f"not a Prometheus sample: {line!r}")
        out[m.group(1)] = float(m.group(2))
    return out


class LtvdProcess:
    live = []  # started and not yet stopped, in start order

    def __init__(self, binary, settings=None, storage_dir=None, config=None, ready_timeout=10.0, port=None):
        self.tmp = None
        if storage_dir is None:
            self.tmp = tempfile.TemporaryDirectory(prefix="ltvd-test-")
            storage_dir = self.tmp.name
        self.storage_dir = storage_dir
        # free_port() closes its socket before ltvd binds the port, so another
        # process may take it in between: a start that fails with "bind
        # failed" on a port the harness picked is retried on a new one.
        own_port = port is None and "server.port" not in (settings or {})
        for attempt in range(5):
            self.port = port or free_port()
            args = [binary]
            if config:
                args += ["--config", config]
            merged = {"server.bind": "127.0.0.1", "server.port": str(self.port),
                      "storage.dir": storage_dir, "fallback.refit_s": "3600"}
            merged.update(settings or {})
            if not own_port:
                self.port = int(merged["server.port"])
            for k, v in merged.items():
                args += ["--set", f"{k}={v}"]
            self.expected_status = None  # set when the test signals the server
            self.stopped = False
            self.log = tempfile.TemporaryFile()
            self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT)
            LtvdProcess.live.append(self)
            try:
                self.wait_ready(ready_timeout)
                return
            except BaseException:
                self.proc.kill()
                self.proc.wait()
                lost_port = own_port and "bind failed" in self.logs() and self.proc.returncode == 1
                if not lost_port or attempt == 4:
                    self._release()
                    raise
                LtvdProcess.live.remove(self)
                self.log.close()

    def wait_ready(self, timeout=10.0):
        deadline = time.monotonic() + scaled(timeout)
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ltvd exited during start (status {self.proc.returncode}):\n" + tail(self.logs()))
            try:
                status, _, _ = self.request("GET", "/readyz")
                # the 200 must be this ltvd's: another process may hold the
                # port (free_port's race), and until this one fails to bind
                # it would answer for it. ltvd logs "listening" once bound
                # (at info, the level every test starts with).
                if status == 200 and "listening" in self.logs():
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError("ltvd did not become ready:\n" + tail(self.logs()))

    def logs(self):
        return read_shared(self.log)

    def request(self, method, path, body=None, headers=None, conn=None):
        """Returns (status, headers dict, body bytes). body may be bytes,
        str, or a JSON-able object."""
        own = conn is None
        if own:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=scaled(30))
        if body is not None and not isinstance(body, (bytes, str)):
            body = json.dumps(body)
        if isinstance(body, str):
            body = body.encode()
        hdrs = {"Content-Type": "application/json"} if body is not None else {}
        hdrs.update(headers or {})
        try:
            conn.request(method, path, body=body, headers=hdrs)
            resp = conn.getresponse()
            data = resp.read()
        finally:
            if own:
                conn.close()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data

    def json(self, method, path, body=None, headers=None):
        status, hdrs, data = self.request(method, path, body, headers)
        return status, (json.loads(data) if data else None)

    def metrics(self):
        """GET /metrics as {series: value}."""
        status, _, data = self.request("GET", "/metrics")
        if status != 200:
            raise AssertionError(f"/metrics answered {status}")
        return parse_metrics(data.decode())

    def metric(self, name):
        """The value of one series of /metrics, by its exact name (with its
        labels, if any); fails the test if there is no such series."""
        value = self.metrics().get(name)
        if value is None:
            raise AssertionError(f"/metrics has no {name}")
        return value

    def wait_retrain(self, timeout=120.0, headers=None):
        """GET /v1/model's body once no retrain runs (headers: its token, if
        any); fails the test if one still runs after `timeout` (scaled)
        seconds."""
        def finished():
            m = self.json("GET", "/v1/model", headers=headers)[1]
            return m if m["retrain"]["state"] != "running" else None

        m = wait_until(finished, timeout, 0.1)
        check(m, f"the retrain did not finish within {scaled(timeout):.0f} s")
        return m

    def send_signal(self, sig, expect=None):
        """Signals the server and records the exit status that must follow:
        `expect`, or by default -9 for SIGKILL and 0 for anything else."""
        if self.expected_status is None:
            self.expected_status = expect if expect is not None else (-signal.SIGKILL if sig == signal.SIGKILL else 0)
        self.proc.send_signal(sig)

    def stop(self, sig=signal.SIGTERM, expect=None, timeout=30.0):
        """Stops the server (unless a signal was sent already), waits, and
        checks its exit status and output; returns the exit status or raises
        ServerCheckError. A second call returns the status without checks."""
        if self.stopped:
            return self.proc.returncode
        problems = []
        if self.expected_status is None and self.proc.poll() is not None:
            problems.append(f"ltvd exited by itself with status {self.proc.returncode} before it was stopped")
        elif self.expected_status is None:
            self.send_signal(sig, expect)
        try:
            self.proc.wait(scaled(timeout))
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            problems.append(f"ltvd did not exit within {scaled(timeout):.0f} s of its signal (killed)")
        rc = self.proc.returncode
        if not problems and rc != self.expected_status:
            problems.append(f"ltvd exited with status {rc}, expected {self.expected_status}")
        text = self.logs()
        reports = sanitizer_reports(text)
        if reports:
            lines = text.splitlines()
            first = next(i for i, line in enumerate(lines) if any(m in line for m in SANITIZER_MARKERS))
            problems.append("sanitizer report in ltvd's output:\n  " + "\n  ".join(reports[:10]) +
                            "\n--- the first report (its stacks) ---\n" + "\n".join(lines[first:first + 80]))
        self._release()
        if problems:
            raise ServerCheckError("\n".join(problems) + "\n--- ltvd output, last lines ---\n" + tail(text))
        return rc

    def _release(self):
        self.stopped = True
        if self in LtvdProcess.live:
            LtvdProcess.live.remove(self)
        if self.tmp:
            self.tmp.cleanup()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        try:
            self.stop()
        except ServerCheckError as e:
            if exc_type is None:
                raise
            # the test's own failure stays the one reported; this one is added
            print(f"(and on stopping ltvd: {e})", file=sys.stderr)
        return False


def stop_all_live():
    """Stops every server still running (newest first); returns the list of
    problems found (exit status, sanitizer reports)."""
    problems = []
    while LtvdProcess.live:
        s = LtvdProcess.live[-1]
        try:
            s.stop()
        except ServerCheckError as e:
            problems.append(str(e))
        except Exception as e:  # noqa: BLE001 - whatever happens, the process must not outlive us
            s.proc.kill()
            s._release()
            problems.append(repr(e))
    return problems


atexit.register(stop_all_live)


def run_ltvd(binary, args, expect_status, timeout=20.0):
    """Runs ltvd to completion (a start that must be refused, --routes, ...)
    and checks its exit status and that it printed no sanitizer report.
    Returns the CompletedProcess (text mode)."""
    r = subprocess.run([binary, *args], capture_output=True, text=True, timeout=scaled(timeout))
    problems = []
    if r.returncode != expect_status:
        problems.append(f"ltvd {' '.join(args)} exited with status {r.returncode}, expected {expect_status}")
    reports = sanitizer_reports(r.stdout + r.stderr)
    if reports:
        problems.append("sanitizer report:\n  " + "\n  ".join(reports[:10]))
    if problems:
        raise ServerCheckError("\n".join(problems) + "\n--- stderr, last lines ---\n" + tail(r.stderr))
    return r


def run_import(root, port, path, *extra, timeout=120.0):
    """tools/ltvd-import against the server on `port`; returns the CompletedProcess."""
    return subprocess.run([sys.executable, os.path.join(root, "tools", "ltvd-import"), "--url",
                           f"http://127.0.0.1:{port}", "--quiet", *extra, path],
                          capture_output=True, text=True, timeout=scaled(timeout))


def quote_id(user_id):
    return urllib.parse.quote(user_id, safe="")


def run_tests(functions, *args):
    """Runs each test function (with args), prints ok/FAIL lines and
    returns (passed, failed). A server a test left running is stopped and
    checked, and counts as a failure of that test. LTVD_TEST_ONLY=name runs
    only the tests whose name contains it (while working on one)."""
    passed = failed = 0
    only = os.environ.get("LTVD_TEST_ONLY", "")
    for fn in [f for f in functions if only in f.__name__]:
        t0 = time.monotonic()
        error = None
        try:
            fn(*args)
        except Exception:  # noqa: BLE001 - each test's failure is reported, the others still run
            error = traceback.format_exc()
        leaked = len(LtvdProcess.live)
        problems = stop_all_live()
        if error is None and leaked:
            error = f"the test left {leaked} ltvd server(s) running\n" + "\n".join(problems)
        elif error and problems:
            error += "\nand on stopping its servers:\n" + "\n".join(problems)
        if error is None:
            passed += 1
            print(f"ok   {fn.__name__} ({time.monotonic() - t0:.2f}s)")
        else:
            failed += 1
            print(f"FAIL {fn.__name__}\n{error}")
        sys.stdout.flush()
    return passed, failed


def main_exit(passed, failed):
    """Prints the closing 'N passed, N failed' line; the process's exit status."""
    print(f"{passed} passed, {failed} failed")
    return 1 if failed or not passed else 0
