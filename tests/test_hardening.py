"""Reject before buffering, and the shutdown of held requests (issue 12,
items 1 and 5). A request that announces a body is refused from its headers
alone: 413 for a Content-Length over limits.max_body_bytes (or any body on a
route that takes none), 404, 401, 503 overloaded when its declared length
does not fit in limits.max_inflight_body_bytes; each answer arrives before
any body byte was sent, and instead of "100 Continue". The body budget is
given back whichever way a request ends; small requests keep being served
while big uploads fill it; server.max_connections_per_ip caps one address;
the memory of ltvd stays bounded under the issue's attack; clients that
vanish while their write is held for the log, and a SIGTERM under write
load, leave no sanitizer report and a clean exit.

No assertion on durations: every wait is a generous, scaled deadline.

Usage: test_hardening.py PATH_TO_LTVD"""
import http.client
import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ltvd_harness import (check, main_exit, run_tests, scaled, test_registry, wait_until,  # noqa: E402
                          LtvdProcess)

LTVD = sys.argv[1]
TOKEN = "ingest-Tok-1"
AUTH = f"Authorization: Bearer {TOKEN}\r\n"
MIB = 1 << 20
TS = 1735689600
TESTS, test = test_registry()


def rss_factor():
    """ThreadSanitizer keeps about four bytes of shadow per byte the program
    touches (AddressSanitizer one in eight), so a build linked with libtsan
    shows the same admitted bodies as about five times the RSS."""
    out = subprocess.run(["ldd", LTVD], capture_output=True, text=True).stdout
    return 5 if "libtsan" in out else 1



def connect(port, source="127.0.0.1"):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(scaled(30))
    s.bind((source, 0))
    s.connect(("127.0.0.1", port))
    return s


def head(method, path, length=None, extra=""):
    """The request line and headers of a request announcing `length` body bytes."""
    h = f"{method} {path} HTTP/1.1\r\nHost: ltvd\r\nContent-Type: application/json\r\n{extra}"
    if length is not None:
        h += f"Content-Length: {length}\r\n"
    return (h + "\r\n").encode()


def read_answer(sock):
    """Reads one HTTP answer: (status, {header: value}, body bytes, closed)
    where closed says the server closed the connection after it. A "100
    Continue" interim line is returned as such (status 100, no body)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError(f"connection closed before an answer: {data!r}")
        data += chunk
    top, rest = data.split(b"\r\n\r\n", 1)
    lines = top.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:])}
    if status == 100:
        return status, headers, rest, False
    want = int(headers.get("content-length", "0"))
    while len(rest) < want:
        chunk = sock.recv(65536)
        if not chunk:
            break
        rest += chunk
    closed = False
    if headers.get("connection", "").lower() == "close":
        try:
            closed = sock.recv(1) == b""
        except ConnectionResetError:
            closed = True
    return status, headers, rest[:want], closed


def error_code(body):
    return json.loads(body)["error"]["code"]


def rejected(s, reason):
    return s.metric(f'ltvd_http_rejected_total{{reason="{reason}"}}')


def inflight(s):
    return s.metric("ltvd_http_body_inflight_bytes")


def event(user, value=10.0):
    return json.dumps({"user_id": user, "type": "purchase", "ts": TS, "value": value}).encode()


def proc_status(pid, key):
    """A kB field of /proc/PID/status (VmRSS, VmHWM), in bytes."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no {key} in /proc/{pid}/status")


@test
def too_large_is_answered_before_the_body():
    with LtvdProcess(LTVD, {"auth.ingest_token": TOKEN}) as s:
        for extra in (AUTH, AUTH + "Expect: 100-continue\r\n"):
            with connect(s.port) as c:
                c.sendall(head("POST", "/v1/events", 100_000_000, extra))  # and not one body byte
                status, hdrs, body, closed = read_answer(c)
                check(status == 413 and error_code(body) == "payload_too_large", f"{status} {body!r}")
                check("limits.max_body_bytes" in json.loads(body)["error"]["message"], body)
                check(closed, "the connection of a refused upload is closed, its body never read")
        check(rejected(s, "too_large") == 2, "both refusals are counted as too_large")
        check(inflight(s) == 0, "a refused upload reserves nothing")
        check(s.json("POST", "/v1/events", event("after"), {"Authorization": f"Bearer {TOKEN}"})[0] == 200,
              "a normal write is still served")


@test
def routing_and_auth_are_decided_before_the_body():
    with LtvdProcess(LTVD, {"auth.ingest_token": TOKEN}) as s:
        cases = [
            (head("POST", "/v1/events", MIB), 401, "unauthorized"),
            (head("POST", "/v1/events", MIB, "Authorization: Bearer wrong\r\n"), 401, "unauthorized"),
            (head("POST", "/v1/events", MIB, "Expect: 100-continue\r\n"), 401, "unauthorized"),
            (head("GET", "/v1/model", 4096), 413, "payload_too_large"),
            (head("POST", "/v1/model/retrain", 1025, AUTH), 413, "payload_too_large"),
            (head("POST", "/nowhere", MIB), 404, "not_found"),
            (head("PUT", "/v1/events", MIB, AUTH), 405, "method_not_allowed"),
        ]
        for req, want, code in cases:
            with connect(s.port) as c:
                c.sendall(req)
                status, hdrs, body, closed = read_answer(c)
                check(status == want and error_code(body) == code, f"{req!r}: {status} {body!r}")
                check(closed, f"{req!r}: connection closed after the early answer")
                if want == 401:
                    check(hdrs.get("www-authenticate") == "Bearer", hdrs)
        check(rejected(s, "unauthorized") == 3, "three early 401s")
        check(rejected(s, "body_not_allowed") == 2 and rejected(s, "not_found") == 1, "413 and 404 counted")
        check(rejected(s, "method_not_allowed") == 1, "405 counted")
        check(s.metric("ltvd_events_applied_total") == 0, "nothing was applied")
        # the accepted path still gets its "100 Continue", then its answer
        body = event("expecting")
        with connect(s.port) as c:
            c.sendall(head("POST", "/v1/events", len(body), AUTH + "Expect: 100-continue\r\n"))
            status, _, _, _ = read_answer(c)
            check(status == 100, f"an accepted upload is told to continue, got {status}")
            c.sendall(body)
            status, _, answer, closed = read_answer(c)
            check(status == 200 and not closed, f"{status} {answer!r}")
        check(s.metric("ltvd_events_applied_total") == 1)


@test
def body_budget_refuses_uploads_over_it_and_serves_small_ones():
    budget, big = 4 * MIB, MIB
    settings = {"auth.ingest_token": TOKEN, "limits.max_body_bytes": str(big),
                "limits.max_inflight_body_bytes": str(budget)}
    with LtvdProcess(LTVD, settings) as s:
        bodies = [event(f"slow{i}").ljust(big) for i in range(4)]  # valid JSON padded with spaces
        slow = []
        for b in bodies:  # the whole budget, sent slowly: 1000 bytes of each for now
            c = connect(s.port)
            c.sendall(head("POST", "/v1/events", big, AUTH) + b[:1000])
            slow.append(c)
        check(wait_until(lambda: inflight(s) == budget, 30), f"4 uploads reserve {budget}: {inflight(s)}")
        for _ in range(3):  # no room: refused from the headers, with Retry-After
            with connect(s.port) as c:
                c.sendall(head("POST", "/v1/events", big, AUTH))
                status, hdrs, body, closed = read_answer(c)
                check(status == 503 and error_code(body) == "overloaded", f"{status} {body!r}")
                check(hdrs.get("retry-after") == "1" and closed, hdrs)
        # a chunked upload that grows past the budget is refused too, its bytes dropped
        conn = http.client.HTTPConnection("127.0.0.1", s.port, timeout=scaled(30))
        conn.request("POST", "/v1/events", body=iter([b" " * 65536] * 4),
                     headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
                     encode_chunked=True)
        resp = conn.getresponse()
        body = resp.read()
        conn.close()
        check(resp.status == 503 and error_code(body) == "overloaded", f"chunked: {resp.status} {body!r}")
        check(rejected(s, "overloaded") == 4, "3 declared and 1 chunked refusal")
        # small requests keep being served while the budget is full
        status, _ = s.json("POST", "/v1/events", event("small"), {"Authorization": f"Bearer {TOKEN}"})
        check(status == 200, f"a small write while the budget is full: {status}")
        status, user = s.json("GET", "/v1/users/small")
        check(status == 200 and user["events"] == 1, f"a read while the budget is full: {status} {user}")
        check(inflight(s) == budget, "small requests gave their bytes back")
        # one slow upload completes, the others are dropped: every byte comes back
        slow[0].sendall(bodies[0][1000:])
        status, _, answer, _ = read_answer(slow[0])
        check(status == 200, f"the completed slow upload is applied: {status} {answer!r}")
        for c in slow:
            c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # reset, as a crash would
            c.close()
        check(wait_until(lambda: inflight(s) == 0, 30), f"aborted uploads give their bytes back: {inflight(s)}")
        with connect(s.port) as c:  # and the budget takes a big upload again
            c.sendall(head("POST", "/v1/events", big, AUTH) + bodies[1])
            status, _, answer, _ = read_answer(c)
            check(status == 200, f"{status} {answer!r}")
        check(s.metric("ltvd_events_applied_total") == 3)
        check(inflight(s) == 0)


@test
def per_ip_connection_cap():
    with LtvdProcess(LTVD, {"server.max_connections_per_ip": "4"}) as s:
        held = []
        for _ in range(4):  # four keep-alive connections, each served once
            c = connect(s.port)
            c.sendall(b"GET /healthz HTTP/1.1\r\nHost: ltvd\r\n\r\n")
            check(read_answer(c)[0] == 200)
            held.append(c)

        def fifth(source):
            try:
                with connect(s.port, source) as c:
                    c.sendall(b"GET /healthz HTTP/1.1\r\nHost: ltvd\r\n\r\n")
                    return read_answer(c)[0]
            except (AssertionError, ConnectionError):
                return None  # closed without an answer

        check(fifth("127.0.0.1") is None, "a fifth connection from the same address is closed unanswered")
        check(fifth("127.0.0.2") == 200, "another address is served")
        held.pop().close()
        check(wait_until(lambda: fifth("127.0.0.1") == 200, 30), "room again once one closed")
        for c in held:
            c.close()


def attack(port, n, length, extra, send, results, source="127.0.0.1", sent=None):
    """n connections announcing `length` bytes; each sends `send` of them,
    then waits for an answer (or the close). results gets each status (None:
    closed unanswered), sent (a list) one entry per connection done sending;
    returns the threads and the open sockets."""
    socks, lock = [], threading.Lock()
    sent = [] if sent is None else sent
    chunk = b" " * 65536

    def one():
        try:
            c = connect(port, source)
        except OSError:
            with lock:
                results.append(None)
            return
        with lock:
            socks.append(c)
        status = None
        try:
            c.sendall(head("POST", "/v1/events", length, extra))
            left = send
            while left > 0:
                c.sendall(chunk[:min(left, len(chunk))])
                left -= min(left, len(chunk))
            sent.append(True)
            if send < length:
                status = read_answer(c)[0]
        except (OSError, AssertionError):
            sent.append(False)
            try:  # refused mid-send: the answer may still be there to read
                status = read_answer(c)[0]
            except (OSError, AssertionError):
                pass
        with lock:
            results.append(status)

    threads = [threading.Thread(target=one) for _ in range(n)]
    for t in threads:
        t.start()
    return threads, socks


@test
def memory_stays_bounded_under_the_attack():
    """The issue's attack, scaled to the test: 100 connections without a
    token each sending a 3.9 MB body (before: ~390 MB buffered), then 40
    with the token that declare 3.9 MB and send all but 100 kB of it and
    hold (before: ~156 MB; now 17 fit in the budget, 23 are refused). Peak RSS may grow by at most the body budget
    (64 MiB, the default) plus 64 MiB of slack; a legitimate client is
    served during the attack."""
    length = 3_900_000
    fits = 64 * MIB // length  # 17 such uploads fit in the default budget
    with LtvdProcess(LTVD, {"auth.ingest_token": TOKEN, "server.max_connections_per_ip": "0"}) as s:
        pid = s.proc.pid
        base = proc_status(pid, "VmHWM")
        res_a = []
        threads, socks = attack(s.port, 100, length, "", length, res_a)
        for t in threads:
            t.join(scaled(120))
        for c in socks:
            c.close()
        check(len(res_a) == 100 and all(r in (None, 401) for r in res_a), f"no token: {res_a}")
        res_b, sent = [], []
        threads, socks = attack(s.port, 40, length, AUTH, length - 100_000, res_b, sent=sent)
        check(wait_until(lambda: rejected(s, "overloaded") >= 40 - fits, 120),
              f"over-budget uploads refused: {rejected(s, 'overloaded')}")
        status, _ = s.json("POST", "/v1/events", event("legit"), {"Authorization": f"Bearer {TOKEN}"})
        check(status == 200, f"a legitimate write during the attack: {status}")
        check(s.json("GET", "/v1/users/legit")[0] == 200, "a read during the attack")
        check(inflight(s) <= 64 * MIB, f"the budget holds: {inflight(s)}")
        check(wait_until(lambda: len(sent) == 40, 120), "every attacker sent what it would")
        check(sent.count(True) >= fits, f"{fits} uploads are admitted and hold their bytes: {sent}")
        time.sleep(0.5)  # let ltvd read what was sent (the bound holds whenever it is read)
        peak = proc_status(pid, "VmHWM") - base
        for c in socks:
            c.close()
        for t in threads:
            t.join(scaled(120))
        check(all(r in (None, 503) for r in res_b), f"over-budget uploads get 503 (or a reset): {res_b}")
        check(peak < 128 * MIB * rss_factor(), f"peak RSS grew by {peak / MIB:.0f} MiB under the attack")
        check(wait_until(lambda: inflight(s) == 0, 30), "every reservation given back")
        check(rejected(s, "unauthorized") >= 1, "the tokenless uploads were refused early")
        print(f"  peak RSS growth under the attack: {peak / MIB:.1f} MiB")


@test
def clients_that_vanish_while_held_and_sigterm_under_writes():
    """fsync=always holds each write's answer until the log has it: clients
    that post and close (or reset) at once, 300 times, leave ltvd serving;
    then a SIGTERM while four clients keep writing ends with status 0 and
    no sanitizer report (the harness checks both)."""
    with LtvdProcess(LTVD, {"storage.fsync": "always"}) as s:
        for i in range(300):
            body = event(f"gone{i % 7}")
            c = connect(s.port)
            c.sendall(head("POST", "/v1/events", len(body)) + body)
            if i % 2:
                c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            c.close()
        def served():  # the per-IP cap counts connections until ltvd has seen them close
            try:
                return s.json("GET", "/healthz")[0] == 200
            except OSError:
                return False
        check(wait_until(served, 30), "ltvd serves after the vanished clients")
        check(wait_until(lambda: s.metric("ltvd_events_applied_total") > 0, 30), "the posts were applied")
        check(s.json("POST", "/v1/events", event("after"))[0] == 200, "a write after them is answered")
        stop = threading.Event()

        def writer(k):
            n = 0
            while not stop.is_set():
                try:
                    s.request("POST", "/v1/events", event(f"w{k}-{n}"))
                except OSError:
                    pass
                n += 1

        writers = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
        for w in writers:
            w.start()
        wait_until(lambda: s.metric("ltvd_events_applied_total") > 400, 30)
        s.stop()  # SIGTERM under load: must exit 0, no sanitizer report
        stop.set()
        for w in writers:
            w.join(scaled(30))


if __name__ == "__main__":
    sys.exit(main_exit(*run_tests(TESTS)))
