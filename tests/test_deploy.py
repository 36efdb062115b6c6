"""Deploy files that work.

Mode `runtime` (any build): `ltvd --health-check URL` (the Docker
HEALTHCHECK) exits 0 against a running ltvd and 1 against a closed port, a
wrong path or a server that never answers; ltvd refuses to listen on a
non-loopback address with an empty write token unless auth.allow_open=true,
and says why; tokens from LTVD_AUTH_* variables are enforced; the
Dockerfile's own ENTRYPOINT and HEALTHCHECK commands, run here with this
build's binary (there is no Docker daemon in CI), refuse to start open,
start with tokens from the environment and report healthy; .dockerignore
keeps data, build output and .git out of the build context.

Mode `unit` (release builds; a sanitizer's runtime makes calls of its own):
deploy/ltvd.service passes `systemd-analyze verify`, and every syscall ltvd
makes under a representative workload (recorded with `strace -f -c`: start,
posts, reads, an erasure, a network retrain, refits, adjuster runs, a forked
snapshot child, SIGTERM and the final snapshot) is allowed by the unit's
SystemCallFilter lines, resolved with `systemd-analyze syscall-filter`.
Exits 77 (SKIP) without strace or systemd-analyze (tools/install-deps.sh
installs both).

Usage: test_deploy.py PATH_TO_LTVD SOURCE_ROOT runtime|unit"""
import ctypes
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ltvd_harness import (check, LtvdProcess, free_port, main_exit, run_tests, sanitizer_reports, scaled,  # noqa: E402
                          skip, tail)

LTVD, ROOT, MODE = os.path.abspath(sys.argv[1]), sys.argv[2], sys.argv[3]
UNIT = os.path.join(ROOT, "deploy", "ltvd.service")
DOCKERFILE = os.path.join(ROOT, "deploy", "Dockerfile")


def no_sanitizer_report(text):
    reports = sanitizer_reports(text)
    check(not reports, "sanitizer report:\n" + "\n".join(reports[:10]))


def health_check(url):
    """Runs `ltvd --health-check url`; returns the CompletedProcess."""
    r = subprocess.run([LTVD, "--health-check", url], capture_output=True, text=True, timeout=scaled(30))
    no_sanitizer_report(r.stderr)
    return r


def start_refused(args, env):
    """Runs ltvd that must refuse to start; returns (exit status, stderr)."""
    r = subprocess.run([LTVD, *args], capture_output=True, text=True, timeout=scaled(30), env=env)
    no_sanitizer_report(r.stderr)
    return r.returncode, r.stderr


def serve_until_ready_then_stop(cmd, env, log_path, ready, what):
    """Runs ltvd as cmd (its output to log_path) until ready() holds, then
    stops it with SIGTERM: it must not exit before, must exit 0 after, and
    its output must hold no sanitizer report."""
    with open(log_path, "w+") as log:
        p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            wait_for(lambda: p.poll() is not None or ready(), 30, what)
            if p.poll() is not None:
                log.seek(0)
                raise AssertionError(f"ltvd exited {p.returncode}:\n{log.read()[-2000:]}")
            p.send_signal(signal.SIGTERM)
            check(p.wait(scaled(30)) == 0, f"exit {p.returncode} after SIGTERM")
            log.seek(0)
            no_sanitizer_report(log.read())
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()


def clean_env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("LTVD_AUTH_")}
    env.update(extra)
    return env


# ---- runtime: health check ----------------------------------------------

def health_check_passes_on_a_ready_server():
    with LtvdProcess(LTVD) as s:
        r = health_check(f"http://127.0.0.1:{s.port}/readyz")
        check(r.returncode == 0, f"exit {r.returncode}: {r.stdout}{r.stderr}")
        check(" 200 " in r.stdout, r.stdout)
        r = health_check(f"http://localhost:{s.port}/healthz")
        check(r.returncode == 0, f"localhost: exit {r.returncode}: {r.stderr}")
        # any answer but 200 is unhealthy
        r = health_check(f"http://127.0.0.1:{s.port}/no/such/route")
        check(r.returncode == 1 and "404" in r.stderr, f"404 must fail: exit {r.returncode}: {r.stderr}")


def health_check_fails_on_a_closed_port():
    with socket.socket() as held:  # bound, not listening: the port stays closed and ours
        held.bind(("127.0.0.1", 0))
        r = health_check(f"http://127.0.0.1:{held.getsockname()[1]}/readyz")
    check(r.returncode == 1, f"exit {r.returncode}")
    check("refused" in r.stderr, r.stderr)


def health_check_fails_on_a_server_that_never_answers():
    with socket.socket() as lsock:  # accepts (backlog) but never reads or writes
        lsock.bind(("127.0.0.1", 0))
        lsock.listen(4)
        r = health_check(f"http://127.0.0.1:{lsock.getsockname()[1]}/readyz")
    check(r.returncode == 1 and "timeout" in r.stderr, f"exit {r.returncode}: {r.stderr}")


def health_check_refuses_what_it_cannot_ask():
    # never exit 2: Docker reserves it
    for url in ("ftp://127.0.0.1/", "http://example.com/readyz", "http://127.0.0.1:0/", "http://127.0.0.1:1/a b",
                "http://127.0.0.1:1/a\r\nX: y", "127.0.0.1:8080"):
        r = health_check(url)
        check(r.returncode == 1 and r.stderr.strip(), f"{url!r}: exit {r.returncode}: {r.stderr}")


# ---- runtime: exposure ---------------------------------------------------

def open_bind_is_refused_and_says_why():
    with tempfile.TemporaryDirectory(prefix="ltvd-deploy-") as d:
        storage = os.path.join(d, "data")
        base = ["--set", "server.bind=0.0.0.0", "--set", f"server.port={free_port()}", "--set",
                f"storage.dir={storage}"]
        rc, err = start_refused(base, clean_env())
        check(rc == 2, f"exit {rc}: {err}")
        for needle in ("0.0.0.0", "auth.ingest_token", "auth.admin_token", "auth.allow_open=true",
                       "LTVD_AUTH_INGEST_TOKEN"):
            check(needle in err, f"the refusal does not mention {needle}: {err}")
        check(not os.path.exists(storage), "a refused start must not create storage.dir")
        # one write token is not enough: the other class would stay open
        rc, err = start_refused(base + ["--set", "auth.ingest_token=i-tok"], clean_env())
        check(rc == 2 and "auth.admin_token is empty" in err and "erase shoppers" in err, f"exit {rc}: {err}")
        rc, err = start_refused(base, clean_env(LTVD_AUTH_ADMIN_TOKEN="a-tok"))
        check(rc == 2 and "auth.ingest_token is empty" in err and "post events" in err, f"exit {rc}: {err}")
        # other non-loopback addresses are refused the same way
        rc, err = start_refused(["--set", "server.bind=192.0.2.1", "--set", f"storage.dir={storage}"], clean_env())
        check(rc == 2 and "192.0.2.1" in err and "auth.allow_open" in err, f"exit {rc}: {err}")


def allow_open_overrides_the_refusal():
    with LtvdProcess(LTVD, {"server.bind": "0.0.0.0", "auth.allow_open": "true"}) as s:
        # open on purpose: a write without a token is accepted
        check(s.json("POST", "/v1/events", {"user_id": "o", "type": "view"})[0] == 200)
        check("serving writes without auth on a non-loopback address" in s.logs(), "the open start must warn")


def loopback_needs_no_tokens():
    """Any 127/8 address is loopback (the harness only talks to 127.0.0.1)."""
    with tempfile.TemporaryDirectory(prefix="ltvd-deploy-") as d:
        port = free_port()
        serve_until_ready_then_stop([LTVD, "--set", "server.bind=127.0.0.2", "--set", f"server.port={port}", "--set",
                                     f"storage.dir={d}/data"], clean_env(), os.path.join(d, "ltvd.log"),
                                    lambda: health_check(f"http://127.0.0.2:{port}/readyz").returncode == 0,
                                    "ltvd on 127.0.0.2")


def tokens_from_the_environment_are_enforced():
    """The Docker image's way: tokens in LTVD_AUTH_* variables, bound to 0.0.0.0."""
    saved = {k: os.environ.get(k) for k in ("LTVD_AUTH_INGEST_TOKEN", "LTVD_AUTH_ADMIN_TOKEN")}
    os.environ.update(LTVD_AUTH_INGEST_TOKEN="env-ingest", LTVD_AUTH_ADMIN_TOKEN="env-admin")
    try:
        with LtvdProcess(LTVD, {"server.bind": "0.0.0.0"}) as s:
            ev = {"user_id": "e", "type": "view"}
            check(s.json("POST", "/v1/events", ev)[0] == 401, "no token: 401")
            check(s.json("POST", "/v1/events", ev, {"Authorization": "Bearer env-ingest"})[0] == 200)
            check(s.json("POST", "/v1/model/retrain", None, {"Authorization": "Bearer env-ingest"})[0] == 401)
            check(s.json("POST", "/v1/model/retrain", None, {"Authorization": "Bearer env-admin"})[0] in (202, 409))
            check("env-ingest" not in s.logs() and "env-admin" not in s.logs(), "tokens must not be logged")
        # --set still wins over the environment
        with LtvdProcess(LTVD, {"auth.ingest_token": "set-ingest"}) as s:
            ev = {"user_id": "e", "type": "view"}
            check(s.json("POST", "/v1/events", ev, {"Authorization": "Bearer env-ingest"})[0] == 401)
            check(s.json("POST", "/v1/events", ev, {"Authorization": "Bearer set-ingest"})[0] == 200)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


# ---- runtime: the Dockerfile's commands -----------------------------------

def dockerfile_instruction(keyword):
    """The JSON (exec form) array of the Dockerfile's `keyword` instruction,
    continuation lines joined."""
    with open(DOCKERFILE) as f:
        text = re.sub(r"\\\n\s*", " ", f.read())
    lines = [ln for ln in text.splitlines() if ln.startswith(keyword + " ")]
    check(len(lines) == 1, f"one {keyword} in {DOCKERFILE}")
    m = re.search(r"(\[.*\])\s*$", lines[0])
    check(m, f"{keyword} must use the exec form (a JSON array; /bin/sh in the image is dash): {lines[0]}")
    return json.loads(m.group(1))


def as_built_here(cmd, port, storage):
    """An image command with this build's binary, the repository's config, a
    test port and storage directory in place of the image's paths."""
    out = []
    for arg in cmd:
        arg = arg.replace("/usr/bin/ltvd", LTVD)
        arg = arg.replace("/etc/ltvd/ltvd.json", os.path.join(ROOT, "configs", "ltvd.json"))
        arg = arg.replace("storage.dir=/var/lib/ltvd", f"storage.dir={storage}").replace(":8080/", f":{port}/")
        out.append(arg)
    return out


def dockerfile_entrypoint_and_healthcheck_work():
    entry, probe = dockerfile_instruction("ENTRYPOINT"), dockerfile_instruction("HEALTHCHECK")
    check(entry[0] == "/usr/bin/ltvd" and "server.bind=0.0.0.0" in entry, entry)
    check(probe[:2] == ["/usr/bin/ltvd", "--health-check"], f"HEALTHCHECK runs ltvd itself: {probe}")
    with tempfile.TemporaryDirectory(prefix="ltvd-docker-") as d:
        storage = os.path.join(d, "data")
        held = socket.socket()  # holds the port until ltvd takes it
        held.bind(("127.0.0.1", 0))
        port = held.getsockname()[1]
        entry = as_built_here(entry, port, storage) + ["--set", f"server.port={port}"]
        probe = as_built_here(probe, port, storage)
        # no tokens: the image refuses to start, and says how to fix it
        rc, err = start_refused(entry[1:], clean_env())
        check(rc == 2 and "LTVD_AUTH_INGEST_TOKEN" in err and "auth.allow_open=true" in err, f"exit {rc}: {err}")
        check(subprocess.run(probe, capture_output=True, timeout=scaled(30)).returncode == 1, "unhealthy when down")
        held.close()
        env = clean_env(LTVD_AUTH_INGEST_TOKEN="docker-ingest", LTVD_AUTH_ADMIN_TOKEN="docker-admin")
        serve_until_ready_then_stop(entry, env, os.path.join(d, "ltvd.log"),
                                    lambda: subprocess.run(probe, capture_output=True,
                                                           timeout=scaled(30)).returncode == 0,
                                    "the HEALTHCHECK to pass")


def dockerignore_patterns():
    with open(os.path.join(ROOT, ".dockerignore")) as f:
        pats = [ln.strip() for ln in f if ln.strip() and not ln.startswith("#")]
    check(not any(p.startswith("!") for p in pats), "this check reads no '!' exceptions")
    out = []
    for p in pats:  # Docker's syntax: ** any directories (or none), * and ? within one name
        rx = re.escape(p.strip("/")).replace(r"\*\*/", "(?:.*/)?").replace(r"\*\*", ".*")
        out.append(re.compile(rx.replace(r"\*", "[^/]*").replace(r"\?", "[^/]") + "$"))
    return out


def dockerignore_keeps_data_out_of_the_build_context():
    pats = dockerignore_patterns()

    def excluded(path):  # a path is left out when it or a directory above it matches
        parts = path.split("/")
        return any(rx.match("/".join(parts[:i])) for i in range(1, len(parts) + 1) for rx in pats)
    for path in (".git/HEAD", "build/build.ninja", "build-san/src/ltvd", "ltvd-data/wal-0000000000000001.log",
                 "ltvd-data/snapshot-0000000000000001.snap", "bench/ltvd-data/model.bin", "data/model.bin",
                 "tests/__pycache__/ltvd_harness.cpython-311.pyc"):
        check(excluded(path), f".dockerignore lets {path} into the image's build context")
    for path in ("meson.build", "src/main.c", "src/meson.build", "include/config.h", "tests/meson.build",
                 "tests/test_deploy.py", "bench/meson.build", "configs/ltvd.json", "deploy/Dockerfile"):
        check(not excluded(path), f".dockerignore leaves out {path}, which the build needs")


# ---- unit: systemd-analyze verify ----------------------------------------

def unit_text():
    with open(UNIT) as f:
        return f.read()


def unit_passes_systemd_analyze_verify():
    """The unit as shipped, with ExecStart pointing at this build's binary
    (verify checks that the command exists)."""
    text = unit_text()
    check("ExecStart=/usr/bin/ltvd " in text, "ExecStart runs /usr/bin/ltvd")
    with tempfile.TemporaryDirectory(prefix="ltvd-unit-") as d:
        path = os.path.join(d, "ltvd.service")
        with open(path, "w") as f:
            f.write(text.replace("ExecStart=/usr/bin/ltvd ", f"ExecStart={LTVD} "))
        r = subprocess.run(["systemd-analyze", "verify", path], capture_output=True, text=True, timeout=scaled(60))
    out = (r.stdout + r.stderr).strip()
    check(r.returncode == 0 and not out, f"systemd-analyze verify: exit {r.returncode}:\n{out}")


# ---- unit: the syscall filter --------------------------------------------

_groups = {}


def expand(entry):
    """A SystemCallFilter entry (a syscall or @group) -> set of syscall names."""
    if not entry.startswith("@"):
        return {entry}
    if entry not in _groups:
        r = subprocess.run(["systemd-analyze", "syscall-filter", entry], capture_output=True, text=True,
                           timeout=scaled(60))
        check(r.returncode == 0, f"systemd-analyze syscall-filter {entry}: {r.stderr}")
        lines = [ln.strip() for ln in r.stdout.splitlines()]
        check(lines and lines[0] == entry, f"unexpected output for {entry}: {r.stdout[:200]}")
        _groups[entry] = set()  # guards against a cycle
        names = set()
        for ln in lines[1:]:
            if ln and not ln.startswith("#"):
                names |= expand(ln)
        _groups[entry] = names
    return _groups[entry]


def allowed_syscalls(text):
    """Applies the unit's SystemCallFilter= lines the way systemd does: the
    first line sets the mode (an allow list also takes @default); then each
    line adds its names (no ~) or removes them (~), in order."""
    allow_list, names = None, set()
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("SystemCallFilter="):
            continue
        value = line[len("SystemCallFilter="):].strip()
        if not value:
            allow_list, names = None, set()
            continue
        invert = value.startswith("~")
        entries = set()
        for word in value.lstrip("~").split():
            entries |= expand(word.split(":")[0])  # a name may carry ":errno"
        if allow_list is None:
            allow_list = not invert
            if allow_list:
                names |= expand("@default")
        if invert == (not allow_list):
            names |= entries  # add to the allow list, or to the deny list
        else:
            names -= entries
    check(allow_list is not None, "the unit has no SystemCallFilter")
    check(allow_list, "this test reads allow-list filters only (the first SystemCallFilter= without ~)")
    return names


def post(port, path, body):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=scaled(60))
    try:
        c.request("POST", path, body=json.dumps(body) if body is not None else None,
                  headers={"Content-Type": "application/json"})
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def get(port, path):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=scaled(60))
    try:
        c.request("GET", path)
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def metric(port, name):
    for line in get(port, "/metrics")[1].decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


def wait_for(probe, seconds, what):
    """Polls probe() (an OSError counts as not yet) for `seconds`, scaled."""
    deadline = time.monotonic() + scaled(seconds)
    while time.monotonic() < deadline:
        try:
            if probe():
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def workload(port, logs):
    """What a deployed ltvd does: ingest, reads, an erasure, a network
    retrain, fallback refits and adjuster runs on their timers, a forked
    snapshot. Every step is checked, so the recorded set covers it."""
    wait_for(lambda: get(port, "/readyz")[0] == 200, 60, "ready")
    events = []
    for u in range(160):  # a year of purchases: 30-day labels mature
        first, repeats = 1 + u % 7, u % 4  # some buy once, some come back, all stop at some point
        for k, m in enumerate(range(first, min(first + 2 * repeats, 12) + 1, 2)):
            events.append({"user_id": f"u{u}", "type": "purchase", "value": 5 + (u * m) % 40,
                           "ts": f"2025-{m:02d}-{1 + (u + k) % 27:02d}T10:00:00Z", "event_id": f"e{u}-{m}"})
            events.append({"user_id": f"u{u}", "type": "view", "ts": f"2025-{m:02d}-{1 + (u + k) % 27:02d}T09:00:00Z"})
    for k in range(0, len(events), 250):
        status, body = post(port, "/v1/events", {"events": events[k:k + 250]})
        check(status == 200, f"batch post: {status} {body[:200]}")
    check(post(port, "/v1/events", {"user_id": "single", "type": "view", "ts": "2025-12-20T00:00:00Z"})[0] == 200)
    check(post(port, "/v1/events", events[0])[0] == 200, "a duplicate is acknowledged")
    check(post(port, "/v1/events", {"user_id": "", "type": "view"})[0] == 400)
    check(get(port, "/v1/users/u1/ltv")[0] == 200)
    check(get(port, "/v1/users/u1")[0] == 200)
    check(post(port, "/v1/ltv/batch", {"user_ids": [f"u{i}" for i in range(50)] + ["nobody"]})[0] == 200)
    check(get(port, "/v1/model")[0] == 200 and get(port, "/no/such")[0] == 404)
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=scaled(60))
    c.request("DELETE", "/v1/users/u0")
    check(c.getresponse().status in (200, 204), "erasure")
    c.close()
    status, body = post(port, "/v1/model/retrain", None)
    check(status == 202, f"retrain: {status} {body}")

    def trained():
        m = json.loads(get(port, "/v1/model")[1])
        return m["retrain"]["state"] != "running" and m["retrain"]["last_training"]["epochs"] > 0
    wait_for(trained, 240, "a retrain that trains the network")
    # the erasure (and the logged events) make the snapshot timer fork a child
    wait_for(lambda: (metric(port, "ltvd_snapshots_total") or 0) >= 1, 60, "a snapshot")
    wait_for(lambda: (metric(port, "ltvd_fallback_fits_total") or 0) >= 1, 60, "a fallback refit")
    wait_for(lambda: "msg=\"adjuster " in logs(), 60, "an adjuster run")
    check(metric(port, "ltvd_snapshot_failures_total") == 0, "snapshots succeed")


def ltvd_child(pid):
    """The child of `pid` running this ltvd (strace also forks short-lived
    probe children when it starts)."""
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        kids = [int(x) for x in f.read().split()]
    real = os.path.realpath(LTVD)
    for kid in kids:
        try:
            if os.readlink(f"/proc/{kid}/exe") == real:
                return kid
        except OSError:
            pass
    raise AssertionError(f"no child of {pid} runs {LTVD}: {kids}")


def run_workload(d, wrapper=(), preexec_fn=None):
    """Starts ltvd (under `wrapper`, a command prefix such as strace, whose
    child is ltvd), runs the workload, sends SIGTERM; returns (exit status of
    the started process, ltvd's output)."""
    # port 0: ltvd picks a free port and logs it, so no other server can
    # take the port between a probe and the bind
    settings = {"server.bind": "127.0.0.1", "server.port": "0", "storage.dir": os.path.join(d, "data"),
                "server.access_log": "true", "clock": "event", "model.horizon_days": "30",
                "train.interval_s": "0", "train.max_epochs": "2", "fallback.refit_s": "1",
                "adjuster.enabled": "true", "adjuster.interval_s": "1", "storage.snapshot_interval_s": "1",
                "storage.erasure_snapshot_s": "1"}
    args = [*wrapper, LTVD]
    for k, v in settings.items():
        args += ["--set", f"{k}={v}"]
    log_path = os.path.join(d, "ltvd.log")
    logs = lambda: open(log_path, errors="replace").read()  # noqa: E731
    listening = re.compile(r'msg="listening" addr=127\.0\.0\.1:(\d+)')
    with open(log_path, "w") as log:
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=clean_env(), preexec_fn=preexec_fn)
    ltvd_pid = None
    try:
        wait_for(lambda: proc.poll() is not None or listening.search(logs()), 60, "ltvd to listen")
        check(proc.poll() is None, f"ltvd exited at start ({proc.returncode}):\n{logs()[-3000:]}")
        ltvd_pid = ltvd_child(proc.pid) if wrapper else proc.pid
        workload(int(listening.search(logs()).group(1)), logs)
        check(proc.poll() is None, f"ltvd exited during the workload ({proc.returncode})")
        os.kill(ltvd_pid, signal.SIGTERM)
        rc = proc.wait(scaled(120))
        no_sanitizer_report(logs())
        return rc, logs()
    except BaseException:
        if proc.poll() is None:  # ltvd first: killing strace would leave it running
            try:
                os.kill(ltvd_pid or (ltvd_child(proc.pid) if wrapper else proc.pid), signal.SIGKILL)
            except (OSError, AssertionError):
                pass
        proc.kill()
        proc.wait()
        print(tail(logs()))
        raise


def parse_strace_summary(path):
    """strace -c output -> set of syscall names."""
    names = set()
    with open(path) as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 5 and parts[0][0].isdigit() and parts[-1] != "total":
                names.add(parts[-1])
    return names


def every_syscall_ltvd_makes_is_allowed_by_the_unit():
    allowed = allowed_syscalls(unit_text())
    check({"read", "write", "openat", "fsync", "clone3"} <= allowed, "the resolved allow list looks wrong")
    with tempfile.TemporaryDirectory(prefix="ltvd-strace-") as d:
        summary = os.path.join(d, "strace.txt")
        rc, out = run_workload(d, ["strace", "-f", "-c", "-o", summary])
        check(rc == 0, f"ltvd under strace exited {rc}:\n{out[-3000:]}")
        check("snapshot written" in out, "no snapshot in the log")
        used = parse_strace_summary(summary)
    # the workload reached what the old filter killed: worker jobs, OpenBLAS
    check({"setpriority", "mbind"} <= used, f"the workload missed the worker jobs: {sorted(used)}")
    check("wait4" in used and ("clone" in used or "fork" in used), "no forked snapshot child was traced")
    denied = sorted(used - allowed)
    print(f"ltvd made {len(used)} distinct syscalls ({' '.join(sorted(used))}); the unit allows {len(allowed)}")
    check(not denied, f"syscalls ltvd makes that {UNIT} denies: {denied}")


SCMP_ACT_KILL_PROCESS = 0x80000000
SCMP_ACT_ALLOW = 0x7FFF0000
PR_SET_NO_NEW_PRIVS = 38


def seccomp_installer(allowed):
    """A preexec_fn that loads a seccomp filter allowing only `allowed` and
    killing the process on anything else (libseccomp, which systemd itself
    uses; stricter than the unit, whose SystemCallErrorNumber=EPERM would
    only fail the call)."""
    lib = ctypes.CDLL("libseccomp.so.2", use_errno=True)
    libc = ctypes.CDLL(None, use_errno=True)
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_rule_add.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint]
    lib.seccomp_load.argtypes = [ctypes.c_void_p]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    numbers = [n for n in (lib.seccomp_syscall_resolve_name(name.encode()) for name in sorted(allowed)) if n >= 0]
    check(len(numbers) > 100, "libseccomp resolved too few of the allowed names")

    def install():
        if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            os._exit(120)
        ctx = lib.seccomp_init(SCMP_ACT_KILL_PROCESS)
        if not ctx:
            os._exit(121)
        for n in numbers:
            if lib.seccomp_rule_add(ctx, SCMP_ACT_ALLOW, n, 0) != 0:
                os._exit(122)
        if lib.seccomp_load(ctx) != 0:
            os._exit(123)
    return install


def ltvd_runs_under_the_units_filter():
    """systemd is not PID 1 in every test environment, so the unit itself
    cannot be started; the same allow list, loaded with libseccomp, can."""
    with tempfile.TemporaryDirectory(prefix="ltvd-seccomp-") as d:
        rc, out = run_workload(d, preexec_fn=seccomp_installer(allowed_syscalls(unit_text())))
    check(rc != -signal.SIGSYS, f"ltvd was killed by the filter (SIGSYS):\n{out[-3000:]}")
    check(rc == 0 and "snapshot written" in out and "stopped" in out, f"exit {rc}:\n{out[-3000:]}")


def main():
    for k in [k for k in os.environ if k.startswith("LTVD_AUTH_")]:
        del os.environ[k]  # the tests set what they need
    if MODE == "runtime":
        tests = [health_check_passes_on_a_ready_server, health_check_fails_on_a_closed_port,
                 health_check_fails_on_a_server_that_never_answers, health_check_refuses_what_it_cannot_ask,
                 open_bind_is_refused_and_says_why, allow_open_overrides_the_refusal, loopback_needs_no_tokens,
                 tokens_from_the_environment_are_enforced, dockerfile_entrypoint_and_healthcheck_work,
                 dockerignore_keeps_data_out_of_the_build_context]
    elif MODE == "unit":
        missing = [t for t in ("systemd-analyze", "strace") if not shutil.which(t)]
        if missing:
            skip(f"{', '.join(missing)} not installed (tools/install-deps.sh installs them)")
        tests = [unit_passes_systemd_analyze_verify, every_syscall_ltvd_makes_is_allowed_by_the_unit,
                 ltvd_runs_under_the_units_filter]
    else:
        print(f"unknown mode {MODE}")
        return 2
    return main_exit(*run_tests(tests))


if __name__ == "__main__":
    sys.exit(main())
