"""Starts a real ltvd on a free loopback port and talks to it (stdlib only).

Used by the HTTP tests and the benchmarks. Each LtvdProcess owns a fresh
storage directory unless one is given, and is stopped with SIGTERM.
"""
import http.client
import json
import os
import signal
import socket
import subprocess
import tempfile
import time
import urllib.parse


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LtvdProcess:
    def __init__(self, binary, settings=None, storage_dir=None, config=None):
        self.port = free_port()
        self.tmp = None
        if storage_dir is None:
            self.tmp = tempfile.TemporaryDirectory(prefix="ltvd-test-")
            storage_dir = self.tmp.name
        self.storage_dir = storage_dir
        args = [binary]
        if config:
            args += ["--config", config]
        merged = {"server.bind": "127.0.0.1", "server.port": str(self.port),
                  "storage.dir": storage_dir, "fallback.refit_s": "3600"}
        merged.update(settings or {})
        for k, v in merged.items():
            args += ["--set", f"{k}={v}"]
        self.log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT)
        self.wait_ready()

    def wait_ready(self, timeout=10.0):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("ltvd exited during start:\n" + self.logs())
            try:
                status, _, _ = self.request("GET", "/readyz")
                if status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError("ltvd did not become ready:\n" + self.logs())

    def logs(self):
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def request(self, method, path, body=None, headers=None, conn=None):
        """Returns (status, headers dict, body bytes). body may be bytes,
        str, or a JSON-able object."""
        own = conn is None
        if own:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        if body is not None and not isinstance(body, (bytes, str)):
            body = json.dumps(body)
        if isinstance(body, str):
            body = body.encode()
        hdrs = {"Content-Type": "application/json"} if body is not None else {}
        hdrs.update(headers or {})
        conn.request(method, path, body=body, headers=hdrs)
        resp = conn.getresponse()
        data = resp.read()
        out = (resp.status, {k.lower(): v for k, v in resp.getheaders()}, data)
        if own:
            conn.close()
        return out

    def json(self, method, path, body=None, headers=None):
        status, hdrs, data = self.request(method, path, body, headers)
        return status, (json.loads(data) if data else None)

    def stop(self, sig=signal.SIGTERM, timeout=20):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        rc = self.proc.returncode
        if self.tmp:
            self.tmp.cleanup()
        return rc

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def quote_id(user_id):
    return urllib.parse.quote(user_id, safe="")


def run_tests(functions, *args):
    """Runs each test function (with args), prints ok/FAIL lines and the
    closing 'N passed, N failed' line; returns the number failed."""
    import time as _time
    import traceback
    passed = failed = 0
    for fn in functions:
        try:
            t0 = _time.time()
            fn(*args)
            passed += 1
            print(f"ok   {fn.__name__} ({_time.time() - t0:.2f}s)")
        except Exception:
            failed += 1
            print(f"FAIL {fn.__name__}\n{traceback.format_exc()}")
    return passed, failed
