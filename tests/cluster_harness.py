"""A 3-server NATS JetStream cluster and 3 ltvd nodes in cluster mode, all
on loopback, for the cluster tests and the cluster benchmark (stdlib only).

NatsCluster starts nats-server three times (JetStream on, its own client,
route and monitoring ports and store directory in a temp dir, routed to
the other two) and waits until each one's /healthz says JetStream is up.
LtvdCluster starts ltvd nodes n1..nN against it (tests/ltvd_harness.py's
LtvdProcess, so each is checked on stop: exit status, no sanitizer
report) and can wait for a stable partition map. Both stop everything
they started, in reverse order, on stop() or at the end of a `with`.
Deadlines scale with LTVD_TEST_TIMEOUT_SCALE, as in ltvd_harness.
"""
import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request

from ltvd_harness import LtvdProcess, free_port, read_shared, scaled, skip, tail

HASH_KEY = "000102030405060708090a0b0c0d0e0f"  # the tests' cluster.hash_key


def require_nats_server():
    """The nats-server binary, or skip() (exit 77) with why."""
    path = shutil.which("nats-server")
    if not path:
        skip("nats-server is not installed (Debian package nats-server; tools/install-deps.sh installs it): "
             "the cluster tests need a real NATS JetStream cluster")
    return path


class NatsServer:
    def __init__(self, binary, name, root, client_port, route_port, monitor_port, routes):
        self.name = name
        self.port = client_port
        self.monitor_port = monitor_port
        self.store = os.path.join(root, name)
        os.makedirs(self.store, exist_ok=True)
        self.args = [binary, "-js", "-sd", self.store, "-a", "127.0.0.1", "-p", str(client_port),
                     "-m", str(monitor_port), "--server_name", name, "--cluster_name", "ltvd-test",
                     "--cluster", f"nats://127.0.0.1:{route_port}",
                     "--routes", ",".join(f"nats://127.0.0.1:{p}" for p in routes)]
        self.log = tempfile.TemporaryFile()
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen(self.args, stdout=self.log, stderr=subprocess.STDOUT)

    def url(self):
        return f"nats://127.0.0.1:{self.port}"

    def healthy(self):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.monitor_port}/healthz", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(scaled(10))
            except subprocess.TimeoutExpired:
                self.kill()

    def logs(self):
        return read_shared(self.log)


class NatsCluster:
    """Three clustered nats-servers with JetStream, in a temp dir.

    free_port() closes its socket before nats-server binds the port, so
    another process may take it in between: a start where a server exits
    with "address already in use" is retried from scratch (new ports, new
    store directories), up to START_TRIES times."""

    START_TRIES = 4

    def __init__(self, size=3):
        binary = require_nats_server()
        self.tmp = tempfile.TemporaryDirectory(prefix="ltvd-nats-")
        for attempt in range(self.START_TRIES):
            root = os.path.join(self.tmp.name, f"try{attempt}")
            ports = [(free_port(), free_port(), free_port()) for _ in range(size)]
            self.servers = []
            for i, (cp, rp, mp) in enumerate(ports):
                others = [ports[j][1] for j in range(size) if j != i]
                self.servers.append(NatsServer(binary, f"nats{i + 1}", root, cp, rp, mp, others))
            for s in self.servers:
                s.start()
            problem = self._wait_healthy()
            if problem is None:
                return
            lost_port = any(s.proc.poll() is not None and "address already in use" in s.logs()
                            for s in self.servers)
            self._stop_servers()
            if not lost_port or attempt == self.START_TRIES - 1:
                self.tmp.cleanup()
                raise RuntimeError(problem)

    def _wait_healthy(self):
        """None once every server's JetStream is up; else why not (a server
        exited, or the deadline passed)."""
        deadline = time.monotonic() + scaled(30)
        while not all(s.healthy() for s in self.servers):
            dead = [s for s in self.servers if s.proc.poll() is not None]
            if dead or time.monotonic() > deadline:
                who = dead[0] if dead else self.servers[0]
                return f"the NATS cluster did not come up ({who.name}):\n" + tail(who.logs())
            time.sleep(0.1)
        return None

    def urls(self):
        return ",".join(s.url() for s in self.servers)

    def _stop_servers(self):
        for s in reversed(self.servers):
            s.stop()

    def stop(self):
        self._stop_servers()
        self.tmp.cleanup()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
        return False


class LtvdCluster:
    """ltvd nodes n1..nN in cluster mode against a NatsCluster."""

    def __init__(self, binary, nats, nodes=3, partitions=16, lease_ms=3000, settings=None):
        self.binary = binary
        self.nats = nats
        self.partitions = partitions
        self.lease_ms = lease_ms
        self.settings = settings or {}
        self.nodes = {}
        try:
            for i in range(nodes):
                self.start_node(f"n{i + 1}")
        except BaseException:
            self.stop()
            raise

    def node_settings(self, name):
        s = {"cluster.node_id": name, "cluster.nats_urls": self.nats.urls(), "cluster.hash_key": HASH_KEY,
             "cluster.partitions": str(self.partitions), "cluster.replicas": "3",
             "cluster.lease_ms": str(self.lease_ms), "server.threads": "4", "train.interval_s": "0"}
        s.update(self.settings)
        return s

    def start_node(self, name):
        self.nodes[name] = LtvdProcess(self.binary, self.node_settings(name), ready_timeout=40)
        return self.nodes[name]

    def live(self):
        return {n: p for n, p in self.nodes.items() if not p.stopped and p.proc.poll() is None}

    def cluster_map(self, node):
        status, body = node.json("GET", "/v1/cluster")
        if status != 200:
            raise AssertionError(f"GET /v1/cluster answered {status}: {body}")
        return body

    def stable_map(self):
        """{partition: owner} if every live node sees all live nodes as members
        and every partition owned by its preferred node, and all agree; else
        None."""
        live = self.live()
        seen = None
        for node in live.values():
            try:
                m = self.cluster_map(node)
            except OSError:
                return None
            if sorted(x["node"] for x in m["members"]) != sorted(live):
                return None
            owners = {e["partition"]: e["owner"] for e in m["partitions"]}
            if any(e["owner"] not in live or e["owner"] != e["preferred"] for e in m["partitions"]) \
                    or len(owners) != self.partitions:
                return None
            if seen is not None and owners != seen:
                return None
            seen = owners
        if seen is None or set(seen.values()) != set(live):
            return None
        return seen

    def wait_stable(self, timeout=40):
        deadline = time.monotonic() + scaled(timeout)
        while time.monotonic() < deadline:
            m = self.stable_map()
            if m:
                return m
            time.sleep(0.2)
        maps = {n: self.cluster_map(p) for n, p in self.live().items()}
        raise AssertionError("the partition map did not settle:\n" + json.dumps(maps)[:2000])

    def diagnosis(self, lines=25):
        """Each live node's members, the partitions it maps to no one or to
        a node it does not list, and the tail of its log: for a failure
        message."""
        out = []
        for n, p in self.live().items():
            try:
                m = self.cluster_map(p)
                members = [x["node"] for x in m["members"]]
                odd = [(e["partition"], e["owner"]) for e in m["partitions"] if e["owner"] not in members]
                out.append(f"{n}: members {members}, partitions owned by no member {odd}")
            except (OSError, AssertionError, ValueError) as e:
                out.append(f"{n}: GET /v1/cluster failed: {e}")
            out.append(tail(p.logs(), lines))
        return "\n".join(out)

    def stop(self):
        for p in reversed(list(self.nodes.values())):
            if not p.stopped:
                p.stop()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        try:
            self.stop()
        except AssertionError:
            if exc_type is None:
                raise
        return False


class Haproxy:
    """deploy/haproxy/haproxy.cfg run in front of an LtvdCluster: the same
    file with its bind address and server lines replaced by loopback ones."""

    def __init__(self, cfg_path, lc):
        binary = shutil.which("haproxy")
        if not binary:
            raise RuntimeError("haproxy is not installed (Debian package haproxy; tools/install-deps.sh)")
        with open(cfg_path) as f:
            text = f.read()
        self.port = free_port()
        text = re.sub(r"(?m)^    bind :8080$", f"    bind 127.0.0.1:{self.port}", text)
        servers = "".join(f"    server {n} 127.0.0.1:{p.port}\n" for n, p in lc.nodes.items())
        text = re.sub(r"(?m)^    server n1 .*\n(    server .*\n)*", servers, text)
        self.tmp = tempfile.NamedTemporaryFile("w", suffix=".cfg", delete=False)
        self.tmp.write(text)
        self.tmp.close()
        self.log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen([binary, "-db", "-f", self.tmp.name], stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + scaled(15)
        while True:
            try:
                status, _, _ = self.request("GET", "/readyz")
                if status == 200:
                    break
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("haproxy did not start:\n" + tail(read_shared(self.log)))
            time.sleep(0.1)

    def request(self, method, path, body=None):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=scaled(30))
        try:
            data = json.dumps(body) if body is not None else None
            conn.request(method, path, body=data, headers={"Content-Type": "application/json"} if data else {})
            resp = conn.getresponse()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
        finally:
            conn.close()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(scaled(10))
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        os.unlink(self.tmp.name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
        return False


class Attempt:
    """An ltvd node started on its own (not through LtvdProcess, which
    expects it to come up): polls its /readyz until it is ready or exits,
    remembering whether /readyz ever answered 200."""

    def __init__(self, binary, lc, name, extra=None, **changes):
        self.settings = lc.node_settings(name)
        self.settings.update({"server.bind": "127.0.0.1", "server.port": str(free_port())})
        self.settings.update({f"cluster.{k}": str(v) for k, v in changes.items()})
        self.settings.update(extra or {})
        self.tmp = tempfile.TemporaryDirectory(prefix="ltvd-test-")
        self.settings["storage.dir"] = self.tmp.name
        args = [binary] + [a for k, v in self.settings.items() for a in ("--set", f"{k}={v}")]
        self.log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT)
        self.was_ready = False

    def ready(self):
        try:
            conn = http.client.HTTPConnection("127.0.0.1", int(self.settings["server.port"]), timeout=scaled(5))
            conn.request("GET", "/readyz")
            self.was_ready = self.was_ready or conn.getresponse().status == 200
            conn.close()
        except OSError:
            pass
        return self.was_ready

    def logs(self):
        return read_shared(self.log)

    def close(self):
        """SIGTERM, then SIGKILL if it has not exited in time: never left
        running, whatever the test's outcome."""
        try:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(scaled(20))
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(scaled(20))
                    raise AssertionError("a node did not exit within 20 s of SIGTERM:\n" + tail(self.logs()))
        finally:
            self.tmp.cleanup()


def settle(attempts, timeout=40):
    """Waits until each attempt is ready or has exited."""
    deadline = time.monotonic() + scaled(timeout)
    while time.monotonic() < deadline:
        if all(a.proc.poll() is not None or a.ready() for a in attempts):
            return
        time.sleep(0.1)
    raise AssertionError("a node neither joined nor exited: " + tail(attempts[0].logs()))


def connections_to(port):
    """Established TCP connections on this machine whose far end is
    127.0.0.1:port (the connecting side of each), from /proc/net/tcp."""
    n = 0
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            rem_port, state = int(fields[2].split(":")[1], 16), fields[3]
            n += rem_port == port and state == "01"
    return n
