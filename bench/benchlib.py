"""Shared pieces of the HTTP benchmarks: wrk runs, the peer servers (bare
libmicrohttpd, nginx), the wrk Lua scripts, and open-loop runs
(bench/openloop), and a snapshot on demand. Standard library only."""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests"))
from ltvd_harness import free_port  # noqa: E402,F401

BODY = ('{"user_id":"u123456","known":true,"as_of":"2026-11-28T00:00:00Z","horizon_days":182,'
        '"ltv":31.4,"p_active":0.41,"p10":0,"p50":0,"p90":88,"model_version":7,"events":12,'
        '"pad":"xxxxxxxxxxxxxxxxxxxxxxxxx"}')
assert len(BODY) == 200

LUA_GET = """
math.randomseed(42)
local n = %d
request = function()
  return wrk.format("GET", "/v1/users/u" .. math.random(0, n - 1) .. "/ltv")
end
"""

LUA_POST = """
math.randomseed(7)
local n = %d
local k = 0
local types = {"view", "click", "add_to_cart", "view", "click", "purchase"}
request = function()
  k = k + 1
  local t = types[(k %% 6) + 1]
  local body = '{"user_id":"u' .. math.random(0, n - 1) .. '","type":"' .. t .. '","event_id":"bench-' .. k .. '"'
  if t == "purchase" then body = body .. ',"value":25.5' end
  return wrk.format("POST", "/v1/events", {["Content-Type"] = "application/json"}, body .. "}")
end
"""

LUA_BATCH = """
local n = %d
local bodies = {}
local nb = math.floor(n / 1000)
for b = 0, nb - 1 do
  local parts = {}
  for i = 0, 999 do
    local u = b * 1000 + i
    if i %% 4 == 0 then
      parts[#parts + 1] = '{"user_id":"u' .. u .. '","type":"purchase","value":' .. (10 + i %% 50) .. '}'
    else
      parts[#parts + 1] = '{"user_id":"u' .. u .. '","type":"view"}'
    end
  end
  bodies[b + 1] = '{"events":[' .. table.concat(parts, ",") .. ']}'
end
local k = 0
request = function()
  k = k + 1
  return wrk.format("POST", "/v1/events", {["Content-Type"] = "application/json"}, bodies[((k - 1) %% nb) + 1])
end
"""


def wrk(port, script, duration, connections=32):
    out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency", "-s", script,
                          f"http://127.0.0.1:{port}"], capture_output=True, text=True, timeout=duration + 600).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p99 = re.search(r"\s99%\s+([\d.]+)(us|ms|s)", out)
    scale = {"us": 1, "ms": 1000, "s": 1e6}
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    return {"rps": rps, "p99_us": float(p99.group(1)) * scale[p99.group(2)] if p99 else None,
            "non2xx": int(non2xx.group(1)) if non2xx else 0, "socket_errors": errors.group(1) if errors else ""}


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class Bare:
    def __init__(self, binary):
        self.port = free_port()
        self.proc = subprocess.Popen([binary, str(self.port)])
        time.sleep(0.3)

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(10)


class Nginx:
    def __init__(self, tmp):
        self.port = free_port()
        conf = os.path.join(tmp, "nginx.conf")
        with open(conf, "w") as f:
            f.write(f"""worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {tmp}; proxy_temp_path {tmp}; fastcgi_temp_path {tmp};
  uwsgi_temp_path {tmp}; scgi_temp_path {tmp};
  keepalive_requests 1000000;
  server {{
    listen 127.0.0.1:{self.port};
    location / {{ default_type application/json; return 200 '{BODY}'; }}
  }}
}}
""")
        self.proc = subprocess.Popen([shutil.which("nginx") or "/usr/sbin/nginx", "-c", conf, "-p", tmp],
                                     stderr=subprocess.DEVNULL)
        time.sleep(0.5)

    def stop(self):
        self.proc.send_signal(signal.SIGQUIT)
        self.proc.wait(10)




def write_scripts(tmp, users):
    """The three Lua scripts for `users` shoppers u0..u{users-1}; name -> path."""
    paths = {}
    for name, lua in (("get", LUA_GET), ("post", LUA_POST), ("batch", LUA_BATCH)):
        paths[name] = os.path.join(tmp, name + ".lua")
        with open(paths[name], "w") as f:
            f.write(lua % users)
    return paths


def metric(server, name):
    text = server.request("GET", "/metrics")[2].decode()
    m = re.search(r"^%s (\S+)" % re.escape(name), text, re.M)
    return float(m.group(1)) if m else None


def load_shoppers(server, script, users, duration):
    """Runs the batch script until every shopper exists; returns the runs."""
    runs = []
    while (metric(server, "ltvd_users") or 0) < users:
        runs.append(wrk(server.port, script, duration))
    return runs


# Shoppers with real purchase histories: one shopper in four (u = 4j)
# replays CDNOW customer j mod 2357 (the sample's 6,919 purchases from
# 1997-01-01 to 1998-06-30, shifted so that its last day is yesterday) with
# a view half a minute before each purchase; the other three only view, on
# the days some customer bought. The fallback fit then has CDNOW's interior
# optimum, and its customers are the sample repeated, so a refit's
# Nelder-Mead takes the same path at any N and its cost grows with N alone.
# About 3.7 events per shopper; 250 shoppers per batch. The script sends the batches listed in `todo` once
# each, then asks /healthz (wrk cannot stop early). Its first call answers
# /healthz too: wrk calls request() once, unsent, to check the script.
LUA_HISTORY = """
local n, base = %d, %d
local todo = {%s}
local raw = [[%s]]
local hist = {}
for c in raw:gmatch("[^|]+") do
  local h = {}
  for d, v in c:gmatch("(%%d+):([%%d.]+)") do
    h[#h + 1] = tonumber(d)
    h[#h + 1] = v
  end
  hist[#hist + 1] = h
end
local per = 250
local k = 0
request = function()
  k = k + 1
  if k == 1 or k > #todo + 1 then
    return wrk.format("GET", "/healthz")
  end
  local b = todo[k - 1]
  local parts = {}
  for u = b * per, math.min(n, (b + 1) * per) - 1 do
    local buyer = u %% 4 == 0
    local h = hist[(buyer and u / 4 or u) %% #hist + 1]
    for j = 1, #h, 2 do
      local ts = base + h[j] * 86400 + 43200 + j * 60
      parts[#parts + 1] = string.format('{"user_id":"u%%d","type":"view","ts":%%d}', u, ts - 30)
      if buyer then
        parts[#parts + 1] = string.format('{"user_id":"u%%d","type":"purchase","value":%%s,"ts":%%d}',
                                          u, h[j + 1], ts)
      end
    end
  end
  return wrk.format("POST", "/v1/events", {["Content-Type"] = "application/json"},
                    '{"events":[' .. table.concat(parts, ",") .. ']}')
end
"""
HISTORY_PER_BATCH = 250
CDNOW = os.path.join(ROOT, "..", "shared", "data", "cdnow", "CDNOW_sample.txt")


def cdnow_histories(path=CDNOW):
    """The CDNOW sample as LUA_HISTORY's `raw` (customers in file order,
    separated by '|', each purchase 'day:value' with day counted from
    1997-01-01), the number of days it spans, and each customer's number
    of purchases."""
    import datetime
    day0 = datetime.date(1997, 1, 1)
    customers, last_id, last_day = [], None, 0
    with open(path) as f:
        for line in f:
            cid, _, date, _, value = line.split()
            day = (datetime.date(int(date[:4]), int(date[4:6]), int(date[6:])) - day0).days
            if cid != last_id:
                customers.append([])
                last_id = cid
            customers[-1].append(f"{day}:{float(value):.2f}")
            last_day = max(last_day, day)
    return "|".join(" ".join(c) for c in customers), last_day, [len(c) for c in customers]


def history_purchases(users, cdnow=CDNOW):
    """How many purchase events LUA_HISTORY sends for `users` shoppers."""
    counts = cdnow_histories(cdnow)[2]
    return sum(counts[j % len(counts)] for j in range(0, (users + 3) // 4))


def load_history(server, tmp, users, duration, cdnow=CDNOW):
    """Loads shoppers u0..u{users-1} with LUA_HISTORY until all exist.
    A batch is applied whole, so after a wrk run that ended before sending
    every batch, a batch whose first shopper is unknown is sent again and
    no history is sent twice. Returns the wrk runs."""
    raw, span_days, _ = cdnow_histories(cdnow)
    base = (int(time.time()) // 86400 - 1 - span_days) * 86400  # the sample's last day is yesterday
    runs = []
    script = os.path.join(tmp, "history.lua")
    nb = -(-users // HISTORY_PER_BATCH)
    todo = list(range(nb))
    while todo:
        if len(runs) >= 50:
            raise RuntimeError(f"loading stalled with {len(todo)} batches left")
        with open(script, "w") as f:
            f.write(LUA_HISTORY % (users, base, ",".join(map(str, todo)), raw))
        runs.append(wrk(server.port, script, duration))
        if (metric(server, "ltvd_users") or 0) >= users:
            break
        todo = [b for b in todo
                if not server.json("GET", f"/v1/users/u{b * HISTORY_PER_BATCH}")[0] == 200]
    return runs


def openloop(binary, port, rate, duration, warmup=2.0, connections=32, path="/v1/users/u{id}/ltv", ids=1,
             seed=1, method="GET", body=None, drain=5.0):
    """One bench/openloop run against 127.0.0.1:port; returns its JSON
    result (latency_us.p50/p90/p99/p99_9/max, achieved_rps, errors, ...)."""
    args = [binary, "-r", str(rate), "-c", str(connections), "-d", str(duration), "-w", str(warmup),
            "--drain", str(drain), "-p", path, "-n", str(ids), "-s", str(seed), "-m", method]
    if body is not None:
        args += ["-b", body]
    out = subprocess.run(args + [f"http://127.0.0.1:{port}"], capture_output=True, text=True,
                         timeout=warmup + duration + drain + 60)
    if out.returncode != 0:
        raise RuntimeError(f"openloop failed ({out.returncode}): {out.stderr.strip()}")
    return json.loads(out.stdout)


def snapshot_now(s, timeout):
    """POST /v1/admin/snapshot and wait until it is written (the training
    history archives the log's segments on the way)."""
    before = s.metric("ltvd_snapshots_total")
    status, body = s.json("POST", "/v1/admin/snapshot")
    if status != 202:
        raise RuntimeError(f"snapshot refused: {body}")
    t0 = time.time()
    while s.metric("ltvd_snapshots_total") <= before:
        if time.time() - t0 > timeout:
            raise RuntimeError("snapshot did not finish")
        time.sleep(0.2)
