"""Honest logs (issue 15, item 2), over HTTP against a real ltvd:

- With server.access_log on, every request has exactly one access line
  with its status: a read, a durable write and a DELETE (both answered
  once the log has them, fsync=always), a 404 on an unknown path holding a
  quote and %0A, a 401, an early 413 (from the Content-Length alone) and a
  client that went away mid-body (status=0 aborted=true).
- No raw user id anywhere in ltvd's output: a line names the route
  template and a keyed hash of the id (the same hash for the same id);
  unknown paths are path="unmatched".
- X-Request-Id: a sane one sent is echoed and appears in the access line;
  without one (or with one of bad characters, or too long), ltvd makes one,
  unique across 100 requests, echoed and logged.
- log.format=json: every output line is a JSON object with ts, level, msg.
- SIGHUP turns the access log on (and lowers limits.max_body_bytes) in the
  running process.
The harness checks every server's exit status and output on stop.
Usage: test_logs.py PATH_TO_LTVD"""
import http.client
import json
import os
import re
import signal
import socket
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ltvd_harness import (check, LtvdProcess, main_exit, quote_id, run_tests, scaled,  # noqa: E402
                          test_registry, wait_until)

LTVD = sys.argv[1]
TESTS, test = test_registry()
SECRET_ID = "zz-Distinctive-Shopper-4711"  # must never appear in the output
TOKENS = {"auth.read_token": "rd", "auth.ingest_token": "ing", "auth.admin_token": "adm"}


def bearer(token, rid=None):
    h = {"Authorization": f"Bearer {token}"}
    if rid:
        h["X-Request-Id"] = rid
    return h


def logfmt(line):
    """The fields of one logfmt line: key=bare or key="escaped", as a dict.
    Fails on anything else (a broken or forged line)."""
    fields, i, n = {}, 0, len(line)
    while i < n:
        m = re.compile(r'([A-Za-z0-9_.]+)=').match(line, i)
        check(m, f"not logfmt at {i}: {line!r}")
        key, i = m.group(1), m.end()
        if i < n and line[i] == '"':
            i += 1
            val = []
            while True:
                check(i < n, f"unterminated quote: {line!r}")
                ch = line[i]
                if ch == '"':
                    i += 1
                    break
                if ch == "\\":
                    esc = line[i + 1]
                    if esc == "u":
                        val.append(chr(int(line[i + 2:i + 6], 16)))
                        i += 6
                        continue
                    val.append({"n": "\n", "r": "\r", "t": "\t"}.get(esc, esc))
                    i += 2
                    continue
                check(ch >= " ", f"raw control character in {line!r}")
                val.append(ch)
                i += 1
            fields[key] = "".join(val)
        else:
            j = line.find(" ", i)
            j = n if j < 0 else j
            fields[key] = line[i:j]
            i = j
        check(i == n or line[i] == " ", f"no space after a field: {line!r}")
        i += 1
    return fields


def access_lines(s, parse=logfmt):
    return [f for f in (parse(line) for line in s.logs().splitlines() if line) if f.get("msg") == "request"]


def lines_of(s, rid, parse=logfmt):
    return [f for f in access_lines(s, parse) if f.get("request_id") == rid]


def send_headers_only(s, method, path, headers):
    """Sends a request's headers (announcing a body) and no body; returns
    (status, headers): what an early refusal answers."""
    conn = http.client.HTTPConnection("127.0.0.1", s.port, timeout=scaled(30))
    try:
        conn.putrequest(method, path)
        for k, v in headers.items():
            conn.putheader(k, v)
        conn.endheaders()
        resp = conn.getresponse()
        resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}
    finally:
        conn.close()


@test
def every_request_has_one_access_line_and_no_raw_user_id():
    settings = {"server.access_log": "true", "storage.fsync": "always", "limits.max_body_bytes": "65536", **TOKENS}
    with LtvdProcess(LTVD, settings) as s:
        uid = quote_id(SECRET_ID)
        ev = {"user_id": SECRET_ID, "type": "purchase", "ts": "2026-01-05T10:00:00Z", "value": 12.5}
        expected = {}  # request id -> status
        st = s.request("POST", "/v1/events", ev, bearer("ing", "t-post"))[0]
        check(st == 200, st)
        expected["t-post"] = 200
        st = s.request("GET", f"/v1/users/{uid}/ltv", headers=bearer("rd", "t-get"))[0]
        check(st == 200, st)
        expected["t-get"] = 200
        st = s.request("GET", f"/v1/users/{uid}", headers={"X-Request-Id": "t-401"})[0]
        check(st == 401, st)
        expected["t-401"] = 401
        st = s.request("DELETE", f"/v1/users/{uid}", headers=bearer("adm", "t-delete"))[0]
        check(st == 204, st)
        expected["t-delete"] = 204
        # a quote, an escaped newline and the id in an unknown path
        st = s.request("GET", f'/v1/nope/{uid}"x%0Ay%22', headers={"X-Request-Id": "t-404"})[0]
        check(st == 404, st)
        expected["t-404"] = 404
        st, hdrs = send_headers_only(s, "POST", "/v1/events",
                                     {"Content-Length": "1000000", "Authorization": "Bearer ing",
                                      "Content-Type": "application/json", "X-Request-Id": "t-413"})
        check(st == 413 and hdrs.get("x-request-id") == "t-413", (st, hdrs))
        expected["t-413"] = 413
        # a client that announces 100 bytes, sends 10 and goes away
        with socket.create_connection(("127.0.0.1", s.port), timeout=scaled(10)) as c:
            c.sendall(b"POST /v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ing\r\n"
                      b"X-Request-Id: t-gone\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"
                      + b'{"user_id"')
        expected["t-gone"] = 0

        done = wait_until(lambda: all(lines_of(s, rid) for rid in expected), 20)
        check(done, "an access line is missing:\n" + s.logs()[-3000:])
        for rid, status in expected.items():
            lines = lines_of(s, rid)
            check(len(lines) == 1, f"{rid}: {len(lines)} access lines: {lines}")
            check(int(lines[0]["status"]) == status, (rid, lines[0]))
        by = {rid: lines_of(s, rid)[0] for rid in expected}
        check(by["t-get"]["path"] == "/v1/users/{user_id}/ltv", by["t-get"])
        check(by["t-delete"]["path"] == "/v1/users/{user_id}" and by["t-delete"]["method"] == "DELETE")
        check(re.fullmatch(r"[0-9a-f]{16}", by["t-get"]["user"]), by["t-get"])
        check(by["t-get"]["user"] == by["t-delete"]["user"] == by["t-401"]["user"], "one id, one hash")
        check(by["t-404"]["path"] == "unmatched" and "user" not in by["t-404"], by["t-404"])
        check(by["t-413"].get("early") == "true", by["t-413"])
        check(by["t-gone"].get("aborted") == "true", by["t-gone"])
        check(by["t-post"]["path"] == "/v1/events" and "user" not in by["t-post"], by["t-post"])

        s.stop()
        out = s.logs()
        for form in (SECRET_ID, uid, "Distinctive"):
            check(form not in out, f"{form!r} appears in the output")
        for line in out.splitlines():
            check(line.startswith("ts="), f"a line that is not ltvd's: {line!r}")
            logfmt(line)


@test
def request_ids_are_echoed_or_made_and_logged():
    with LtvdProcess(LTVD, {"server.access_log": "true"}) as s:
        made = []
        for _ in range(100):
            st, hdrs, _ = s.request("GET", "/healthz")
            check(st == 200)
            made.append(hdrs.get("x-request-id"))
        check(all(rid and re.fullmatch(r"[0-9a-f]{16}", rid) for rid in made), made[:5])
        check(len(set(made)) == 100, "ids made by ltvd repeat")

        sane = "Req-1.2_3-" + "a" * 54  # 64 bytes, the most kept
        st, hdrs, _ = s.request("GET", "/healthz", headers={"X-Request-Id": sane})
        check(hdrs.get("x-request-id") == sane, hdrs)
        for bad in ('bad id"x', "a" * 65, "semi;colon", ""):
            st, hdrs, _ = s.request("GET", "/healthz", headers={"X-Request-Id": bad})
            got = hdrs.get("x-request-id", "")
            check(got != bad and re.fullmatch(r"[0-9a-f]{16}", got), (bad, got))
            made.append(got)
        # a 404 and a 405 carry one too
        for method, path in (("GET", "/nowhere"), ("PUT", "/healthz")):
            st, hdrs, _ = s.request(method, path)
            check(st in (404, 405) and re.fullmatch(r"[0-9a-f]{16}", hdrs.get("x-request-id", "")), (st, hdrs))
        check(wait_until(lambda: lines_of(s, sane), 10), s.logs()[-2000:])
        check(wait_until(lambda: all(len(lines_of(s, rid)) == 1 for rid in made), 10), "a made id is not logged")


@test
def json_format_is_one_object_per_line():
    settings = {"server.access_log": "true", "log.format": "json", "storage.fsync": "always", **TOKENS}
    with LtvdProcess(LTVD, settings) as s:
        ev = {"user_id": SECRET_ID, "type": "purchase", "ts": "2026-01-05T10:00:00Z", "value": 3}
        check(s.request("POST", "/v1/events", ev, bearer("ing", "j-post"))[0] == 200)
        check(s.request("GET", '/x"\\y%0A', headers={"X-Request-Id": "j-404"})[0] == 404)
        check(s.request("GET", f"/v1/users/{quote_id(SECRET_ID)}/ltv", headers=bearer("rd", "j-get"))[0] == 200)
        check(wait_until(lambda: all(lines_of(s, r, json.loads) for r in ("j-post", "j-404", "j-get")), 10),
              s.logs()[-2000:])
        get = lines_of(s, "j-get", json.loads)[0]
        check(get["status"] == 200 and get["path"] == "/v1/users/{user_id}/ltv" and isinstance(get["us"], float), get)
        s.stop()
        lines = [line for line in s.logs().splitlines() if line]
        check(len(lines) > 5)
        for line in lines:
            obj = json.loads(line)
            check(isinstance(obj, dict) and {"ts", "level", "msg"} <= obj.keys(), line)
        check(SECRET_ID not in s.logs())


@test
def sighup_turns_the_access_log_on_and_lowers_the_body_cap():
    with tempfile.TemporaryDirectory(prefix="ltvd-logs-") as d:
        cfg = os.path.join(d, "ltvd.json")

        def write(doc):
            with open(cfg + ".new", "w") as f:
                json.dump(doc, f)
            os.replace(cfg + ".new", cfg)
        write({"auth": {"ingest_token": "ing", "admin_token": "adm"}, "server": {"access_log": False}})
        with LtvdProcess(LTVD, {}, config=cfg) as s:
            pid = s.proc.pid
            check(s.request("GET", "/healthz", headers={"X-Request-Id": "h-before"})[0] == 200)
            big = b"[" + b" " * 100000 + b"]"  # 100 kB, not an event: 400 under the default 8 MiB cap
            st = s.request("POST", "/v1/events", big, bearer("ing"))[0]
            check(st == 400, f"100 kB fits the default cap: {st}")
            write({"auth": {"ingest_token": "ing", "admin_token": "adm"}, "server": {"access_log": True},
                   "limits": {"max_body_bytes": 65536}})
            s.proc.send_signal(signal.SIGHUP)
            check(wait_until(lambda: "config reloaded" in s.logs(), 20), s.logs()[-2000:])
            changed = re.search(r'msg="config reloaded".*changed="([^"]*)"', s.logs()).group(1)
            check({"server.access_log", "limits.max_body_bytes"} <= set(changed.split(",")), changed)
            check(s.request("GET", "/healthz", headers={"X-Request-Id": "h-after"})[0] == 200)
            st = s.request("POST", "/v1/events", big, bearer("ing"))[0]
            check(st == 413, f"the lower cap holds: {st}")
            check(wait_until(lambda: lines_of(s, "h-after"), 10), s.logs()[-2000:])
            check(not lines_of(s, "h-before"), "logged while the access log was off")
            check(s.proc.pid == pid and s.proc.poll() is None, "the same process serves")


if __name__ == "__main__":
    sys.exit(main_exit(*run_tests(TESTS)))
