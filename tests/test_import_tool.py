"""tools/ltvd-import is resumable and safe, against a real ltvd: it waits
for /readyz, retries 503s and lost answers without counting anything twice,
gives up on what will not pass, refuses https, keeps event ids apart for
different files of the same name, sets bad rows aside with --rejects,
resumes from --checkpoint (even past ltvd's dedupe window), splits a batch
ltvd finds too large, and shows the total and an ETA while it runs.

Faults ltvd does not make on demand (a 503 storage_failed, an answer lost
on the way back) come from a small proxy in this file between the tool
and the real ltvd. Usage: test_import_tool.py PATH_TO_LTVD SOURCE_ROOT"""
import http.client
import http.server
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ltvd_harness import check, test_registry, TIMEOUT_SCALE, LtvdProcess, free_port, run_tests  # noqa: E402

LTVD, ROOT = sys.argv[1], sys.argv[2]
IMPORT = os.path.join(ROOT, "tools", "ltvd-import")
SCALE = TIMEOUT_SCALE
T0 = 1735689600  # 2025-01-01T00:00:00Z
HEADER = "user_id,ts,type,value,quantity,event_id\n"
TESTS, test = test_registry()


def run_import(port, path, *extra, timeout=120):
    return subprocess.run([sys.executable, IMPORT, "--url", f"http://127.0.0.1:{port}", "--quiet", *extra, path],
                          capture_output=True, text=True, timeout=timeout * SCALE)


def summary(r):
    check(r.stdout.strip(), f"no summary; exit {r.returncode}: {r.stderr[-1500:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def purchases(n, seed=0, start=0, user=lambda i: f"u{i % 7}"):
    """CSV rows: n purchases, values telling seeds apart."""
    return "".join(f"{user(i)},{T0 + 3600 * (start + i)},purchase,{seed + i + 1}.5,,\n" for i in range(n))


def write(d, name, text, mode="w"):
    path = os.path.join(d, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, mode, encoding="utf-8" if "b" not in mode else None) as f:
        f.write(text)
    return path


def spend_by_user(s, users):
    out = {}
    for u in users:
        status, body = s.json("GET", f"/v1/users/{u}")
        out[u] = (body["events"], round(body["spend"], 6)) if status == 200 else None
    return out


def expected_spend(text):
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("user_id"):
            continue
        u, _, _, v = line.split(",")[:4]
        n, total = out.get(u, (0, 0.0))
        out[u] = (n + 1, round(total + float(v), 6))
    return out


class LtvdOnPort(LtvdProcess):
    """An ltvd on a port chosen before it starts."""

    def __init__(self, port, settings=None, **kw):
        self.fixed_port = port
        super().__init__(LTVD, dict(settings or {}, **{"server.port": str(port)}), **kw)

    def wait_ready(self, timeout=10.0):
        self.port = self.fixed_port
        super().wait_ready(timeout * SCALE)


class FaultProxy:
    """Forwards HTTP to an ltvd, except POST /v1/events answers follow a
    script: ("503", code) answers 503 with that error code and forwards
    nothing; "lose" forwards, then closes the connection unanswered;
    "pass" forwards. After the script, `then` applies. self.log holds
    (method, path, action) of every request."""

    def __init__(self, upstream_port, script, then="pass"):
        self.script, self.then, self.log = list(script), then, []
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def handle_one(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else None
                action = "pass"
                if self.command == "POST" and self.path == "/v1/events":
                    action = proxy.script.pop(0) if proxy.script else proxy.then
                proxy.log.append((self.command, self.path, action))
                if isinstance(action, tuple):
                    data = json.dumps({"error": {"code": action[1], "message": "injected", "details": []}}).encode()
                    self.answer(int(action[0]), data)
                    return
                conn = http.client.HTTPConnection("127.0.0.1", upstream_port, timeout=60)
                hdrs = {k: v for k, v in self.headers.items() if k.lower() in ("content-type", "authorization")}
                conn.request(self.command, self.path, body=body, headers=hdrs)
                resp = conn.getresponse()
                data = resp.read()
                conn.close()
                if action == "lose":
                    self.close_connection = True
                    return
                self.answer(resp.status, data)

            def answer(self, status, data):
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = handle_one

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def posts(self):
        return [a for m, p, a in self.log if m == "POST"]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


@test
def https_and_other_schemes_are_refused_before_anything_is_sent():
    with socket.socket() as listener, tempfile.TemporaryDirectory() as d:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        listener.setblocking(False)
        port = listener.getsockname()[1]
        path = write(d, "e.csv", HEADER + purchases(3))
        r = subprocess.run([sys.executable, IMPORT, "--url", f"https://127.0.0.1:{port}", path],
                           capture_output=True, text=True, timeout=60 * SCALE)
        check(r.returncode == 1 and "https is not supported" in r.stderr and "plain HTTP" in r.stderr, r.stderr)
        for url in (f"ftp://127.0.0.1:{port}", f"127.0.0.1:{port}", f"http://127.0.0.1:{port}/?x=1"):
            r = subprocess.run([sys.executable, IMPORT, "--url", url, path], capture_output=True, text=True,
                               timeout=60 * SCALE)
            check(r.returncode == 1 and "--url" in r.stderr, (url, r.stderr))
        try:
            listener.accept()
        except BlockingIOError:
            pass
        else:
            raise AssertionError("the tool connected to an address it refused")


@test
def waits_for_ltvd_to_be_ready():
    """Started before ltvd: it waits, then imports everything once."""
    port = free_port()
    with tempfile.TemporaryDirectory() as d:
        text = HEADER + purchases(12)
        path = write(d, "e.csv", text)
        err_path = os.path.join(d, "stderr")
        with open(err_path, "w") as err:
            proc = subprocess.Popen([sys.executable, IMPORT, "--url", f"http://127.0.0.1:{port}", "--quiet",
                                     "--retry-for", "120", path], stdout=subprocess.PIPE, stderr=err, text=True)
        try:
            deadline = time.time() + 60 * SCALE
            while "waiting for ltvd to be ready" not in open(err_path).read():
                check(proc.poll() is None, f"the tool ended before ltvd started: {open(err_path).read()}")
                check(time.time() < deadline, "the tool never said it waits")
                time.sleep(0.05)
            with LtvdOnPort(port) as s:
                out, _ = proc.communicate(timeout=120 * SCALE)
                log = open(err_path).read()
                check(proc.returncode == 0, log)
                check("ltvd is ready" in log, log)
                res = json.loads(out)
                check(res["accepted"] == 12 and res["duplicates"] == 0, res)
                check(spend_by_user(s, expected_spend(text)) == expected_spend(text))
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


@test
def retries_503_and_lost_answers_without_counting_twice():
    """503 storage_failed, 503 not_ready (then a wait on /readyz) and an
    answer lost after ltvd applied the batch: each batch is sent again, and
    every row is applied exactly once."""
    with LtvdProcess(LTVD) as s, tempfile.TemporaryDirectory() as d:
        text = HEADER + purchases(20)
        path = write(d, "e.csv", text)
        script = [("503", "storage_failed"), ("503", "not_ready"), "lose"]
        with FaultProxy(s.port, script) as proxy:
            r = run_import(proxy.port, path, "--batch", "5", "--retry-for", "120")
            check(r.returncode == 0, r.stderr)
            res = summary(r)
            check(res["retries"] == 3 and res["rows"] == 20, res)
            # the lost answer's batch was applied, so its resend is all duplicates
            check(res["accepted"] == 15 and res["duplicates"] == 5, res)
            check(proxy.posts() == script + ["pass"] * 4, proxy.posts())
            after = [p for m, p, a in proxy.log[proxy.log.index(("POST", "/v1/events", ("503", "not_ready"))):]]
            check(after[1] == "/readyz", f"after a 503 not_ready the tool waits for /readyz: {proxy.log}")
        check(spend_by_user(s, expected_spend(text)) == expected_spend(text), "each row applied once")
        check(s.metric("ltvd_events_applied_total") == 20)


@test
def gives_up_on_what_will_not_pass():
    """503 capacity is not retried; a 503 that lasts is retried until
    --retry-for runs out; both stop with exit 1 and a message."""
    with LtvdProcess(LTVD) as s, tempfile.TemporaryDirectory() as d:
        path = write(d, "e.csv", HEADER + purchases(4))
        with FaultProxy(s.port, [], then=("503", "capacity")) as proxy:
            r = run_import(proxy.port, path, "--retry-for", "30")
            check(r.returncode == 1 and "capacity" in r.stderr, r.stderr)
            check(len(proxy.posts()) == 1, proxy.posts())
        with FaultProxy(s.port, [], then=("503", "storage_failed")) as proxy:
            r = run_import(proxy.port, path, "--retry-for", "1.5")
            check(r.returncode == 1 and "gave up" in r.stderr and "storage_failed" in r.stderr, r.stderr)
            check(len(proxy.posts()) >= 2, proxy.posts())
        check(s.metric("ltvd_events_applied_total") == 0)


@test
def same_name_different_files_do_not_collide():
    """Ids come from the file's bytes: two different events.csv both count,
    a copy under another name counts nothing, a grown file only its new
    rows, a fixed row only itself and what follows."""
    with LtvdProcess(LTVD) as s, tempfile.TemporaryDirectory() as d:
        a_text, b_text = HEADER + purchases(10, seed=0), HEADER + purchases(10, seed=100)
        a, b = write(d, "a/events.csv", a_text), write(d, "b/events.csv", b_text)
        res = summary(run_import(s.port, a))
        check(res["accepted"] == 10 and res["duplicates"] == 0, res)
        res = summary(run_import(s.port, b))
        check(res["accepted"] == 10 and res["duplicates"] == 0, f"b/events.csv is not a/events.csv: {res}")
        copy = os.path.join(d, "c", "renamed.csv")
        os.makedirs(os.path.dirname(copy))
        shutil.copy(a, copy)
        res = summary(run_import(s.port, copy))
        check(res["accepted"] == 0 and res["duplicates"] == 10, f"the same bytes are the same events: {res}")
        grown = write(d, "grown.csv", a_text + purchases(4, seed=500, start=10))
        res = summary(run_import(s.port, grown))
        check(res["accepted"] == 4 and res["duplicates"] == 10, f"a grown file adds only its new rows: {res}")
        lines = a_text.splitlines(keepends=True)
        lines[6] = lines[6].replace(".5,", ".25,")
        fixed = write(d, "fixed.csv", "".join(lines))
        res = summary(run_import(s.port, fixed))
        check(res["duplicates"] == 5 and res["accepted"] == 5, f"rows before the edited one keep their ids: {res}")
        check(s.metric("ltvd_events_applied_total") == 29)


@test
def bad_rows_go_to_the_rejects_file():
    """Rows the tool cannot read and events ltvd refuses (a ts too far in
    the future for clock=wall) are written to --rejects with their line,
    reason and raw text; every other row is applied."""
    with LtvdProcess(LTVD) as s, tempfile.TemporaryDirectory() as d:
        rows = [HEADER, "g1,2025-01-01T00:00:00Z,purchase,10,,\n", "g1,2025-01-02T00:00:00Z,teleport,,,\n",
                "g2,2025-01-02T00:00:00Z,purchase,5,,\n", "g2,2099-01-01T00:00:00Z,purchase,7,,\n",
                "g3,yesterday,view,,,\n", "g3,2025-01-03T00:00:00Z,view,,,\n"]
        path = write(d, "e.csv", "".join(rows))
        with open(path, "ab") as f:
            f.write(b"g\xff4,2025-01-03T00:00:00Z,view,,,\n")
            f.write(b"g4,2025-01-04T00:00:00Z,purchase,1.25,2,\n")
        rejects = os.path.join(d, "rejects.jsonl")
        r = run_import(s.port, path, "--batch", "2", "--rejects", rejects)
        check(r.returncode == 0, r.stderr)
        res = summary(r)
        check(res["rejected"] == 4 and res["accepted"] == 4 and res["rows"] == 5, res)
        got = sorted((json.loads(line) for line in open(rejects, encoding="utf-8")), key=lambda g: g["line"])
        check([g["line"] for g in got] == [3, 5, 6, 8], got)
        check("teleport" in got[0]["reason"] and got[0]["row"] == rows[2].rstrip("\n"), got[0])
        check(got[1]["reason"].startswith("ltvd: ts") and "future" in got[1]["reason"], got[1])
        check(got[1]["row"] == rows[4].rstrip("\n"), got[1])
        check("yesterday" in got[2]["reason"] and "UTF-8" in got[3]["reason"], got)
        check(spend_by_user(s, ["g1", "g2", "g3", "g4"]) ==
              {"g1": (1, 10.0), "g2": (1, 5.0), "g3": (1, 0.0), "g4": (1, 1.25)})
        # without --rejects, the first bad row stops it, after every row before it
        with LtvdProcess(LTVD) as s2:
            r = run_import(s2.port, path, "--batch", "100")
            check(r.returncode == 1 and "line 3" in r.stderr and "teleport" in r.stderr, r.stderr)
            check(s2.metric("ltvd_events_applied_total") == 1, "the row before the bad one was imported")


@test
def checkpoint_resumes_even_past_the_dedupe_window():
    """An import that gave up half way, run again with its checkpoint,
    sends only the rest, although ltvd remembers just 4 event ids; a
    checkpoint of other bytes is refused; after a bad row is fixed the
    import goes on from that row."""
    with LtvdProcess(LTVD, {"limits.dedupe_max_ids": "4"}) as s, tempfile.TemporaryDirectory() as d:
        text = HEADER + purchases(30)
        path = write(d, "e.csv", text)
        ckpt = os.path.join(d, "e.ckpt")
        with FaultProxy(s.port, ["pass"] * 3, then=("503", "storage_failed")) as proxy:
            r = run_import(proxy.port, path, "--batch", "5", "--checkpoint", ckpt, "--retry-for", "1")
            check(r.returncode == 1 and "gave up" in r.stderr, r.stderr)
        state = json.load(open(ckpt))
        check(state["line"] == 16 and not state["complete"], state)
        check(s.metric("ltvd_events_applied_total") == 15)
        r = run_import(s.port, path, "--batch", "5", "--checkpoint", ckpt)
        check(r.returncode == 0, r.stderr)
        res = summary(r)
        check(res["resumed_from_line"] == 16 and res["rows"] == 30 and res["accepted"] == 30, res)
        check(s.metric("ltvd_events_applied_total") == 30, "each row applied once")
        check(spend_by_user(s, expected_spend(text)) == expected_spend(text))
        check(json.load(open(ckpt))["complete"])
        res = summary(run_import(s.port, path, "--checkpoint", ckpt))
        check(res["rows"] == 30 and s.metric("ltvd_events_applied_total") == 30, "a finished import sends nothing")
        other = write(d, "other.csv", HEADER + purchases(30, seed=9))
        r = run_import(s.port, other, "--checkpoint", ckpt)
        check(r.returncode == 1 and "checkpoint" in r.stderr, r.stderr)
        # a bad row stops it; fixed, the import goes on from that row
        lines = (HEADER + purchases(12, user=lambda i: f"f{i % 3}")).splitlines(keepends=True)
        good8 = lines[8]
        lines[8] = good8.replace("purchase", "purchse")
        path2 = write(d, "f.csv", "".join(lines))
        ckpt2 = os.path.join(d, "f.ckpt")
        r = run_import(s.port, path2, "--batch", "5", "--checkpoint", ckpt2)
        check(r.returncode == 1 and "line 9" in r.stderr, r.stderr)
        check(json.load(open(ckpt2))["line"] == 8, open(ckpt2).read())
        lines[8] = good8
        write(d, "f.csv", "".join(lines))
        r = run_import(s.port, path2, "--batch", "5", "--checkpoint", ckpt2)
        check(r.returncode == 0, r.stderr)
        res = summary(r)
        check(res["resumed_from_line"] == 8 and res["accepted"] == 12, res)
        check(spend_by_user(s, ["f0", "f1", "f2"]) == expected_spend("".join(lines)))


@test
def batch_over_ltvd_limits_is_split():
    with LtvdProcess(LTVD, {"limits.max_batch_events": "3"}) as s, tempfile.TemporaryDirectory() as d:
        text = HEADER + purchases(10)
        r = run_import(s.port, write(d, "e.csv", text), "--batch", "10")
        check(r.returncode == 0, r.stderr)
        check(summary(r)["accepted"] == 10 and s.metric("ltvd_events_applied_total") == 10)


@test
def progress_shows_the_total_and_an_eta():
    with LtvdProcess(LTVD) as s, tempfile.TemporaryDirectory() as d:
        path = write(d, "e.csv", HEADER + purchases(20))
        r = subprocess.run([sys.executable, IMPORT, "--url", f"http://127.0.0.1:{s.port}", "--batch", "5",
                            "--progress-every", "0", path], capture_output=True, text=True, timeout=120 * SCALE)
        check(r.returncode == 0, r.stderr)
        pattern = re.compile(r"line (\d+) of 21 \(([\d.]+)%\), (\d+) rows sent, [\d,]+ lines/s, "
                             r"ETA (\d\d:\d\d:\d\d|--:--:--)")
        found = [pattern.search(line) for line in r.stderr.splitlines()]
        found = [m for m in found if m]
        check(len(found) >= 4, r.stderr)
        lines_reached = [int(m.group(1)) for m in found]
        check(lines_reached == sorted(lines_reached) and lines_reached[0] < 21, lines_reached)
        last = found[-1]
        check(last.group(1) == "21" and last.group(2) == "100.0" and last.group(3) == "20" and
              last.group(4) == "00:00:00", last.group(0))


if __name__ == "__main__":
    passed, failed = run_tests(TESTS)
    print(f"{passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)
