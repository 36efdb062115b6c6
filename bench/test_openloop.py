#!/usr/bin/env python3
"""bench/openloop against real servers on loopback: it sends what its
schedule says, counts every request, and does not hide a stall.

Counts only: no assertion depends on how fast this machine is, except
lower bounds that a slower machine can only raise (a server stopped for
0.4 s makes the requests due meanwhile wait at least the rest of it).

  test_openloop.py OPENLOOP BARE_MHD LTVD
"""
import json
import os
import signal
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))
from ltvd_harness import LtvdProcess, free_port, run_tests  # noqa: E402

OPENLOOP, BARE, LTVD = sys.argv[1:4]


class Bare:
    """bench/bare_mhd on a free port: 200 and a 200-byte body for anything."""

    def __enter__(self):
        self.port = free_port()
        self.proc = subprocess.Popen([BARE, str(self.port)])
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), 1).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("bare_mhd did not listen")

    def __exit__(self, *exc):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(10)


def openloop(port, *args, check=True):
    out = subprocess.run([OPENLOOP, *map(str, args), f"http://127.0.0.1:{port}"], capture_output=True, text=True,
                         timeout=120)
    if check:
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)
    return out


def assert_accounted(r):
    assert r["requests"] == r["answered"] + r["errors"] + r["unfinished"], r
    lat = r["latency_us"]
    assert lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["p99_9"] <= lat["max"], r


def test_sends_the_schedule_and_answers_all():
    """200 req/s for 1 s after 0.3 s of warm-up: exactly 200 measured requests,
    all answered with 200, a positive median, and the send lag reported."""
    with Bare() as b:
        r = openloop(b.port, "-r", 200, "-c", 4, "-d", 1, "-w", 0.3, "-p", "/v1/users/u{id}/ltv", "-n", 1000)
    assert r["requests"] == 200 and r["answered"] == 200, r
    assert r["errors"] == 0 and r["non2xx"] == 0 and r["unfinished"] == 0, r
    assert r["latency_us"]["p50"] > 0, r
    assert 0 <= r["send_lag_us"]["p50"] <= r["latency_us"]["max"], r
    assert_accounted(r)


def test_a_stall_shows_in_the_tail():
    """The server is stopped for 0.4 s inside a 4 s window at 500 req/s: the
    ~100 requests due in the first 0.2 s of the stop wait at least 0.2 s,
    so p99 (the top 20 of 2000) is at least 200 ms and the max about 400 ms.
    A closed-loop tool would have had only its 8 in-flight requests wait."""
    with Bare() as b:
        cmd = [OPENLOOP, "-r", "500", "-c", "8", "-d", "4", "-w", "0", f"http://127.0.0.1:{b.port}"]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        time.sleep(1.5)
        b.proc.send_signal(signal.SIGSTOP)
        time.sleep(0.4)
        b.proc.send_signal(signal.SIGCONT)
        out, _ = proc.communicate(timeout=60)
    r = json.loads(out)
    assert r["requests"] == 2000 and r["answered"] == 2000, r
    assert r["errors"] == 0 and r["unfinished"] == 0, r
    assert r["latency_us"]["p99"] >= 200000, r
    assert r["latency_us"]["max"] >= 350000, r
    assert_accounted(r)


def test_templates_reach_ltvd():
    """POST bodies with {id} and {seq}: every request of the run (warm-up
    included) is a distinct event (event_id from {seq}) for one of 50
    shoppers; a wrong route counts as non-2xx."""
    with LtvdProcess(LTVD, {"storage.fsync": "none"}) as s:
        body = '{"user_id":"ol{id}","type":"view","event_id":"ol-{seq}"}'
        r = openloop(s.port, "-r", 200, "-c", 4, "-d", 1, "-w", 0.5, "-m", "POST", "-b", body, "-n", 50,
                     "-p", "/v1/events")
        assert r["requests"] == 200 and r["answered"] == 200 and r["non2xx"] == 0, r
        text = s.request("GET", "/metrics")[2].decode()
        metrics = dict(line.split(" ", 1) for line in text.splitlines() if line and not line.startswith("#"))
        assert float(metrics["ltvd_events_applied_total"]) == 300, metrics["ltvd_events_applied_total"]
        assert float(metrics["ltvd_events_duplicate_total"]) == 0
        assert 2 <= float(metrics["ltvd_users"]) <= 50, metrics["ltvd_users"]
        r = openloop(s.port, "-r", 100, "-c", 2, "-d", 1, "-w", 0, "-p", "/v1/nope/{id}")
        assert r["requests"] == 100 and r["non2xx"] == 100 and r["errors"] == 0, r


def test_server_gone_counts_errors_and_stops():
    """The server is killed mid-run: the run still ends by itself, every
    request due after that is an error or unfinished, none is lost."""
    with Bare() as b:
        proc = subprocess.Popen([OPENLOOP, "-r", "200", "-c", "4", "-d", "3", "-w", "0", "--drain", "1",
                                 f"http://127.0.0.1:{b.port}"], stdout=subprocess.PIPE, text=True)
        time.sleep(1.5)
        b.proc.kill()
        b.proc.wait()
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0
    r = json.loads(out)
    assert r["requests"] == 600, r
    assert r["answered"] >= 1 and r["errors"] >= 100, r
    assert_accounted(r)


def test_sigint_ends_the_window():
    """SIGINT during a 100 s window: the run ends soon after with a result
    for the part that ran (stopped_early, every request accounted for);
    during the warm-up: an empty result."""
    with Bare() as b:
        proc = subprocess.Popen([OPENLOOP, "-r", "200", "-c", "4", "-d", "100", "-w", "0.2",
                                 f"http://127.0.0.1:{b.port}"], stdout=subprocess.PIPE, text=True)
        time.sleep(1.5)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0
        r = json.loads(out)
        assert r["stopped_early"] is True, r
        assert 0 < r["requests"] < 200 * 100 and r["duration_s"] < 100, r
        assert r["answered"] == r["requests"] and r["errors"] == 0 and r["unfinished"] == 0, r
        assert_accounted(r)
        proc = subprocess.Popen([OPENLOOP, "-r", "200", "-c", "4", "-d", "100", "-w", "100",
                                 f"http://127.0.0.1:{b.port}"], stdout=subprocess.PIPE, text=True)
        time.sleep(1.0)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
        r = json.loads(out)
        assert proc.returncode == 0 and r["requests"] == 0 and r["duration_s"] == 0, r


def test_refuses_bad_targets():
    """Loopback only; nothing listening is an error exit, not a result."""
    out = openloop(free_port(), "-r", 10, check=False)
    assert out.returncode == 1 and "cannot connect" in out.stderr, out.stderr
    out = subprocess.run([OPENLOOP, "-r", "10", "http://10.0.0.1:80"], capture_output=True, text=True, timeout=10)
    assert out.returncode == 2 and "loopback" in out.stderr, out.stderr
    out = subprocess.run([OPENLOOP, "-r", "0", "http://127.0.0.1:80"], capture_output=True, text=True, timeout=10)
    assert out.returncode == 2, out.stderr


if __name__ == "__main__":
    passed, failed = run_tests([test_sends_the_schedule_and_answers_all, test_a_stall_shows_in_the_tail,
                                test_templates_reach_ltvd, test_server_gone_counts_errors_and_stops,
                                test_sigint_ends_the_window, test_refuses_bad_targets])
    print(f"{passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)
