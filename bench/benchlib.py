"""Shared pieces of the HTTP benchmarks: wrk runs, the peer servers (bare
libmicrohttpd, nginx) and the wrk Lua scripts. Standard library only."""
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
