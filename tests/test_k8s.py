"""deploy/k8s/ checked without a cluster (there is none in CI).

- `yamllint --strict` with deploy/k8s/.yamllint passes on every file.
- `kubectl kustomize deploy/k8s` renders the kustomization, `kubectl label
  --local` parses every rendered object and `kubectl set image --local`
  decodes the StatefulSet into its typed form (a field of the wrong type
  fails). These are kubectl's client-side checks that need no API server:
  `kubectl apply/create --dry-run=client` asks the server for its API list
  even then. kubectl runs with a kubeconfig pointing at a closed loopback
  port, so it can never reach a real cluster.
- The rendered objects are checked against ltvd itself: one replica; the
  probes' paths are GET routes of `ltvd --routes` (/readyz for startup and
  readiness, /healthz for liveness) on the port the ConfigMap's config
  listens on, as are the Services' target ports; the config's storage.dir is
  the volume claim's mount; `--config` names the file the ConfigMap mounts;
  every LTVD_AUTH_* variable is one src/config.c reads, taken from the
  Secret (never a literal, never on the command line); resources are set
  and the memory limit covers the config's limits.max_users at the measured
  909 B per shopper plus the bounded retrain, log buffers and dedupe window;
  non-root, read-only root file system, no capabilities, seccomp
  RuntimeDefault; a preStop delay inside terminationGracePeriodSeconds; a
  PodDisruptionBudget and a headless Service for the pod.
- Those checks fail when they should: each of a list of broken copies (a
  wrong readiness path, a wrong port, a token on the command line, ...)
  must be reported.
- The README's `kubectl create secret` command (client dry run) makes the
  Secret the StatefulSet reads; the container's command, run here with this
  build's binary, the ConfigMap's config and no tokens refuses to start
  (exit 2, naming the variables); with the Secret's tokens it starts, the
  probes' paths answer 200 without a token, writes need the ingest token,
  and SIGTERM ends it with 0.

Exits 77 (SKIP) without kubectl or yamllint (tools/install-deps.sh installs
Debian's kubernetes-client and yamllint), and fails so under CI.
KUBECTL=PATH picks another kubectl binary; passes with Debian 12's kubectl
1.20.2 and with 1.32.

Usage: test_k8s.py PATH_TO_LTVD SOURCE_ROOT"""
import base64
import copy
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ltvd_harness import check, flatten, LtvdProcess, main_exit, run_tests, scaled, skip, test_registry  # noqa: E402

LTVD, ROOT = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
K8S = os.path.join(ROOT, "deploy", "k8s")
tests, test = test_registry()

# docs/PERFORMANCE.md: RSS per shopper with 1M shoppers (H = 32, 32 recent
# events), and the bounds of docs/MODEL.md ("Training": 56 B per copied
# event, 128 B per encoded event, 192 B per example; with the training
# history 32 B more per event read from it, and at most train.max_events
# events), docs/DURABILITY.md
# (two log buffers), docs/OPERATIONS.md (4096 connections x 8 KiB, 28 B per
# dedupe entry).
BYTES_PER_SHOPPER = 909
TRAIN_BYTES_PER_EVENT = 56 + 128
HISTORY_BYTES_PER_EVENT = 32
TRAIN_BYTES_PER_EXAMPLE = 192
CONNECTION_BYTES = 4096 * 8192
DEDUPE_BYTES_PER_ENTRY = 28


def train_events(eff):
    """The events a retrain holds at most (src/trainset.c): each sampled
    shopper's ring, or with the history up to train.history_events
    (at least the ring, at most 1,024), all within train.max_events."""
    ring, hist = int(eff["model.recent_events"]), int(eff["train.history_events"])
    each = min(max(ring, hist), 1024) if hist else ring
    return min(int(eff["train.max_shoppers"]) * each, int(eff["train.max_events"]))


DRAIN_S = 5  # src/main.c on_signal: held answers are waited for up to 500 x 10 ms
MIN_STARTUP_BUDGET_S = 300  # restart to ready: 3.7 s at 1M shoppers, far more at 10M


def tool(name, env_var=None):
    path = os.environ.get(env_var) if env_var else None
    path = path or shutil.which(name)
    if not path:
        msg = f"{name} is not installed (tools/install-deps.sh installs it)"
        if os.environ.get("CI"):
            print(f"FAIL: {msg}, and CI must check deploy/k8s\n0 passed, 1 failed")
            sys.exit(1)
        skip(msg)
    return path


KUBECTL = tool("kubectl", "KUBECTL")
YAMLLINT = tool("yamllint")
WORK = tempfile.TemporaryDirectory(prefix="ltvd-k8s-")
KUBECONFIG = os.path.join(WORK.name, "kubeconfig")
with open(KUBECONFIG, "w") as f:
    f.write("apiVersion: v1\nkind: Config\ncurrent-context: none\n"
            "clusters: [{name: none, cluster: {server: 'https://127.0.0.1:1'}}]\n"
            "users: [{name: none, user: {token: none}}]\n"
            "contexts: [{name: none, context: {cluster: none, user: none}}]\n")
KENV = dict(os.environ, KUBECONFIG=KUBECONFIG, HOME=WORK.name)


def kubectl(*args, stdin=None):
    r = subprocess.run([KUBECTL, *args], input=stdin, capture_output=True, text=True, errors="replace", env=KENV,
                       timeout=scaled(60))
    check(r.returncode == 0, f"kubectl {' '.join(args)} exited {r.returncode}:\n{r.stderr[-3000:]}")
    return r.stdout


def json_stream(text):
    """The JSON values printed one after the other (kubectl -o json on several objects)."""
    dec, i, out = json.JSONDecoder(), 0, []
    while True:
        while i < len(text) and text[i].isspace():
            i += 1
        if i >= len(text):
            return out
        obj, i = dec.raw_decode(text, i)
        out.extend(obj["items"] if obj.get("kind") == "List" else [obj])


def parse_objects(yaml_text):
    """Every object in yaml_text, parsed by kubectl (no API server)."""
    return json_stream(kubectl("label", "--local", "-f", "-", "-o", "json", "checked-by=test-k8s", stdin=yaml_text))


_rendered = None


def rendered():
    """(objects, YAML) of `kubectl kustomize deploy/k8s`, rendered once."""
    global _rendered
    if _rendered is None:
        text = kubectl("kustomize", K8S)
        _rendered = (parse_objects(text), text)
    return _rendered


# ---- what ltvd itself says ---------------------------------------------------

def config_table():
    """{key: (default string, secret)} from the table in src/config.c."""
    with open(os.path.join(ROOT, "src", "config.c")) as f:
        src = f.read()
    rows = re.findall(r'\{"([a-z_.]+)", CT_\w+, F\(\w+\), "([^"]*)", [^{}]*\{[^{}]*\}, (true|false)\}', src)
    check(len(rows) > 20, f"could not read the key table of src/config.c ({len(rows)} rows)")
    return {name: (default, secret == "true") for name, default, secret in rows}


def secret_env_names(table):
    """The environment variables config_apply_env (src/config.c) reads."""
    return {"LTVD_" + k.replace(".", "_").upper() for k, (_, secret) in table.items() if secret}


def ltvd_routes():
    r = subprocess.run([LTVD, "--routes"], capture_output=True, text=True, timeout=scaled(30))
    check(r.returncode == 0, f"ltvd --routes exited {r.returncode}")
    return {tuple(line.split()[:2]) for line in r.stdout.splitlines() if line.strip()}


def quantity(q):
    """A Kubernetes quantity ("2560Mi", "2G", "500m", 3) as a number."""
    m = re.fullmatch(r"([0-9.]+)([a-zA-Z]*)", str(q))
    check(m, f"bad quantity {q!r}")
    units = {"": 1, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12,
             "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
    check(m.group(2) in units, f"unknown unit in {q!r}")
    return float(m.group(1)) * units[m.group(2)]


# ---- the checks on rendered objects --------------------------------------------

def one(objs, kind, problems):
    found = [o for o in objs if o.get("kind") == kind]
    if len(found) != 1:
        problems.append(f"expected one {kind}, found {len(found)}")
        return None
    return found[0]


def matches(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def manifest_problems(objs, table, routes):
    """Everything wrong with the rendered objects, as a list of sentences."""
    p = []
    sts = one(objs, "StatefulSet", p)
    cm = one(objs, "ConfigMap", p)
    pdb = one(objs, "PodDisruptionBudget", p)
    services = [o for o in objs if o.get("kind") == "Service"]
    if not sts or not cm:
        return p
    spec = sts["spec"]
    if spec.get("replicas") != 1:
        p.append(f"replicas is {spec.get('replicas')}: ltvd is single-node, one pod owns storage.dir")
    pod = spec["template"]["spec"]
    pod_labels = spec["template"]["metadata"].get("labels", {})
    if not matches(spec["selector"].get("matchLabels"), pod_labels):
        p.append("the StatefulSet's selector does not match its pod labels")
    containers = pod.get("containers", [])
    if len(containers) != 1:
        p.append(f"expected one container, found {len(containers)}")
        return p
    c = containers[0]

    # The config the container reads: --config PATH inside the ConfigMap's mount.
    argv = list(c.get("command", [])) + list(c.get("args", []))
    if not argv or argv[0] != "/usr/bin/ltvd":
        p.append(f"the container runs {argv[:1]}, not /usr/bin/ltvd (deploy/Dockerfile installs it there)")
    config = None
    if "--config" not in argv[:-1]:
        p.append("the container's command has no --config")
    else:
        path = argv[argv.index("--config") + 1]
        vols = {v["name"]: v for v in pod.get("volumes", [])}
        for m in c.get("volumeMounts", []):
            v = vols.get(m["name"], {})
            if "configMap" not in v or not path.startswith(m["mountPath"].rstrip("/") + "/"):
                continue
            key = path[len(m["mountPath"].rstrip("/")) + 1:]
            items = {i["key"]: i["path"] for i in v["configMap"].get("items", [])}
            key = next((k for k, pth in items.items() if pth == key), None) if items else key
            if v["configMap"].get("name") == cm["metadata"]["name"] and key in cm.get("data", {}):
                config = json.loads(cm["data"][key])
        if config is None:
            p.append(f"--config {path} is not a key of ConfigMap {cm['metadata']['name']} mounted in the container")
    if config is None:
        return p
    flat = flatten(config)
    unknown = sorted(k for k in flat if k not in table)
    if unknown:
        p.append(f"the ConfigMap's config has keys src/config.c does not know: {unknown}")
    eff = {k: d for k, (d, _) in table.items()}
    eff.update({k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in flat.items()})
    for k, (_, secret) in table.items():
        if secret and flat.get(k):
            p.append(f"{k} has a value in the ConfigMap: tokens belong in the Secret")
    if any("--set" == a for a in argv) and any("auth." in a for a in argv):
        p.append("the command line sets an auth key: tokens on the command line are readable in /proc")
    if any(re.search(r"token", a, re.I) for a in argv):
        p.append("a token on the command line")
    port = int(eff["server.port"])
    if eff["auth.allow_open"] == "true":
        p.append("auth.allow_open is true: writes served without tokens")

    # Ports: the container port named in probes and Services is the config's.
    ports = {pt.get("name"): pt["containerPort"] for pt in c.get("ports", [])}

    def resolve(ref):
        return ports.get(ref) if isinstance(ref, str) else ref

    if port not in ports.values():
        p.append(f"no containerPort is the config's server.port {port}")
    for probe, path in (("startupProbe", "/readyz"), ("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        pr = c.get(probe)
        if not pr or "httpGet" not in pr:
            p.append(f"no {probe} with httpGet")
            continue
        g = pr["httpGet"]
        if g.get("path") != path:
            p.append(f"{probe} asks {g.get('path')}, expected {path}")
        if ("GET", g.get("path")) not in routes:
            p.append(f"{probe}'s path {g.get('path')} is not a GET route of ltvd --routes")
        if resolve(g.get("port")) != port:
            p.append(f"{probe} goes to port {g.get('port')!r} ({resolve(g.get('port'))}), ltvd listens on {port}")
        if g.get("scheme", "HTTP") != "HTTP":
            p.append(f"{probe} uses {g.get('scheme')}; ltvd speaks plain HTTP")
    notes = spec["template"]["metadata"].get("annotations", {})
    if "prometheus.io/port" in notes and notes["prometheus.io/port"] != str(port):
        p.append(f"prometheus.io/port is {notes['prometheus.io/port']}, ltvd listens on {port}")
    if "prometheus.io/path" in notes and ("GET", notes["prometheus.io/path"]) not in routes:
        p.append(f"prometheus.io/path {notes['prometheus.io/path']} is not a GET route of ltvd --routes")
    st = c.get("startupProbe", {})
    budget = st.get("periodSeconds", 10) * st.get("failureThreshold", 3)
    if budget < MIN_STARTUP_BUDGET_S:
        p.append(f"the startupProbe gives recovery {budget} s, less than {MIN_STARTUP_BUDGET_S} s")

    if not services:
        p.append("no Service")
    headless = [s for s in services if s["spec"].get("clusterIP") == "None"]
    if spec.get("serviceName") not in [s["metadata"]["name"] for s in headless]:
        p.append(f"serviceName {spec.get('serviceName')!r} is not a headless Service")
    if not [s for s in services if s["spec"].get("clusterIP") != "None"]:
        p.append("no Service for clients besides the headless one")
    for s in services:
        if not matches(s["spec"].get("selector"), pod_labels):
            p.append(f"Service {s['metadata']['name']} does not select the pod")
        for sp in s["spec"].get("ports", []):
            if resolve(sp.get("targetPort", sp.get("port"))) != port:
                p.append(f"Service {s['metadata']['name']} sends to {sp.get('targetPort')!r}, not to port {port}")

    # storage.dir is the volume claim.
    claims = [t["metadata"]["name"] for t in spec.get("volumeClaimTemplates", [])]
    mounts = {m["mountPath"].rstrip("/"): m["name"] for m in c.get("volumeMounts", [])}
    if mounts.get(eff["storage.dir"].rstrip("/")) not in claims:
        p.append(f"storage.dir {eff['storage.dir']} is not the mount of a volumeClaimTemplate ({claims})")

    # Tokens: from a Secret, under names ltvd reads.
    known = secret_env_names(table)
    env = {e["name"]: e for e in c.get("env", [])}
    for name, e in env.items():
        if name.startswith("LTVD_") and name not in known:
            p.append(f"env {name} is not read by ltvd (src/config.c reads {sorted(known)})")
        if name in known and "secretKeyRef" not in e.get("valueFrom", {}):
            p.append(f"env {name} is not taken from a Secret")
    for name in ("LTVD_AUTH_INGEST_TOKEN", "LTVD_AUTH_ADMIN_TOKEN"):
        ref = env.get(name, {}).get("valueFrom", {}).get("secretKeyRef")
        if not ref:
            p.append(f"no {name} from a Secret: on 0.0.0.0 ltvd refuses to start without it")
        elif ref.get("optional"):
            p.append(f"{name} is optional: ltvd would fail to start instead of waiting for the Secret")

    # Resources: memory for the shoppers, the worker's largest job and the buffers.
    res = c.get("resources", {})
    for side in ("requests", "limits"):
        for what in ("cpu", "memory"):
            if what not in res.get(side, {}):
                p.append(f"resources.{side}.{what} is not set")
    if "memory" in res.get("limits", {}):
        need = (int(eff["limits.max_users"]) * BYTES_PER_SHOPPER
                + int(eff["limits.dedupe_max_ids"]) * DEDUPE_BYTES_PER_ENTRY
                + 2 * int(eff["storage.wal_buffer_bytes"]) + CONNECTION_BYTES
                + train_events(eff) * (TRAIN_BYTES_PER_EVENT
                                       + (HISTORY_BYTES_PER_EVENT if int(eff["train.history_events"]) else 0))
                + int(eff["train.max_examples"]) * TRAIN_BYTES_PER_EXAMPLE)
        limit = quantity(res["limits"]["memory"])
        if limit < need:
            p.append(f"memory limit {res['limits']['memory']} is below the {need / 2**20:.0f} MiB "
                     f"limits.max_users={eff['limits.max_users']} and a retrain need")
        if quantity(res.get("requests", {}).get("memory", 0)) != limit:
            p.append("memory request differs from the limit: the pod could be scheduled where the limit does not fit")

    # Security.
    psc, csc = pod.get("securityContext", {}), c.get("securityContext", {})

    def either(key):
        return csc.get(key, psc.get(key))

    if either("runAsNonRoot") is not True:
        p.append("runAsNonRoot is not true")
    uid = either("runAsUser")
    if not isinstance(uid, int) or uid == 0:
        p.append(f"runAsUser is {uid!r}, not a non-zero number (the image's USER is a name, which runAsNonRoot cannot check)")
    if csc.get("readOnlyRootFilesystem") is not True:
        p.append("readOnlyRootFilesystem is not true")
    if csc.get("allowPrivilegeEscalation") is not False:
        p.append("allowPrivilegeEscalation is not false")
    if "ALL" not in csc.get("capabilities", {}).get("drop", []) or csc.get("capabilities", {}).get("add"):
        p.append("capabilities are not all dropped")
    if (either("seccompProfile") or {}).get("type") != "RuntimeDefault":
        p.append("seccompProfile is not RuntimeDefault")

    # Stop: a preStop delay, then ltvd's drain and final snapshot, inside the grace period.
    pre = c.get("lifecycle", {}).get("preStop", {})
    cmd = pre.get("exec", {}).get("command", [])
    delay = (pre.get("sleep", {}).get("seconds") if "sleep" in pre
             else int(cmd[1]) if len(cmd) == 2 and cmd[0] in ("/bin/sleep", "/usr/bin/sleep") and cmd[1].isdigit()
             else None)
    if not delay or delay < 5:
        p.append(f"no preStop delay of 5 s or more (found {pre})")
    else:
        grace = pod.get("terminationGracePeriodSeconds", 30)
        if grace < delay + DRAIN_S + 60:
            p.append(f"terminationGracePeriodSeconds {grace} leaves under a minute after preStop ({delay} s) "
                     f"and the drain ({DRAIN_S} s) for a running refit and the final snapshot")

    if pdb and not matches(pdb["spec"].get("selector", {}).get("matchLabels"), pod_labels):
        p.append("the PodDisruptionBudget does not select the pod")
    if pdb and not (pdb["spec"].get("minAvailable") == 1 or pdb["spec"].get("maxUnavailable") == 0):
        p.append("the PodDisruptionBudget lets an eviction take the only pod")
    return p


def statefulset(objs):
    return next(o for o in objs if o["kind"] == "StatefulSet")


def container(objs):
    return statefulset(objs)["spec"]["template"]["spec"]["containers"][0]


def probe(objs, name):
    return container(objs)[name]["httpGet"]


def env_entry(objs, name):
    return next(e for e in container(objs)["env"] if e["name"] == name)


def config_of(objs):
    cm = next(o for o in objs if o["kind"] == "ConfigMap")
    return cm, json.loads(cm["data"]["ltvd.json"])


def set_config(objs, fn):
    cm, cfg = config_of(objs)
    fn(cfg)
    cm["data"]["ltvd.json"] = json.dumps(cfg)


# Broken copies the checks must report: (what, change).
MUTATIONS = [
    ("readiness path /ready", lambda o: probe(o, "readinessProbe").update(path="/ready")),
    ("startup probe on /healthz", lambda o: probe(o, "startupProbe").update(path="/healthz")),
    ("liveness on port 8081", lambda o: probe(o, "livenessProbe").update(port=8081)),
    ("config listening on 9090", lambda o: set_config(o, lambda c: c["server"].update(port=9090))),
    ("unknown config key", lambda o: set_config(o, lambda c: c["server"].update(bind_address="0.0.0.0"))),
    ("storage.dir off the volume", lambda o: set_config(o, lambda c: c["storage"].update(dir="/data"))),
    ("--config elsewhere", lambda o: container(o).update(command=["/usr/bin/ltvd", "--config", "/etc/ltvd.json"])),
    ("token on the command line", lambda o: container(o).update(
        command=container(o)["command"] + ["--set", "auth.ingest_token=abc"])),
    ("env name ltvd does not read", lambda o: env_entry(o, "LTVD_AUTH_INGEST_TOKEN").update(name="LTVD_INGEST_TOKEN")),
    ("token as a literal", lambda o: env_entry(o, "LTVD_AUTH_ADMIN_TOKEN").update(value="abc", valueFrom={})),
    ("two replicas", lambda o: statefulset(o)["spec"].update(replicas=2)),
    ("memory limit 1Gi", lambda o: container(o)["resources"]["limits"].update(memory="1Gi")),
    ("max_users 4M", lambda o: set_config(o, lambda c: c["limits"].update(max_users=4000000))),
    ("no cpu request", lambda o: container(o)["resources"]["requests"].pop("cpu")),
    ("writable root", lambda o: container(o)["securityContext"].update(readOnlyRootFilesystem=False)),
    ("root user", lambda o: statefulset(o)["spec"]["template"]["spec"]["securityContext"].update(runAsUser=0)),
    ("no preStop", lambda o: container(o).pop("lifecycle")),
    ("short grace", lambda o: statefulset(o)["spec"]["template"]["spec"].update(terminationGracePeriodSeconds=30)),
    ("no PodDisruptionBudget", lambda o: o.remove(next(x for x in o if x["kind"] == "PodDisruptionBudget"))),
    ("scrape annotation on another port", lambda o: statefulset(o)["spec"]["template"]["metadata"]["annotations"].update(
        {"prometheus.io/port": "9100"})),
    ("Service to the wrong port", lambda o: next(x for x in o if x["kind"] == "Service")["spec"]["ports"][0].update(
        targetPort=8081)),
]


# ---- tests -----------------------------------------------------------------

@test
def yamllint_clean():
    r = subprocess.run([YAMLLINT, "--strict", "-f", "parsable", "-c", os.path.join(K8S, ".yamllint"), K8S],
                       capture_output=True, text=True, timeout=scaled(60))
    check(r.returncode == 0, f"yamllint found problems:\n{r.stdout}{r.stderr}")
    # The config is read: a file with a problem is reported.
    bad = os.path.join(WORK.name, "bad.yaml")
    with open(bad, "w") as f:
        f.write("a: 1 \nb:   [1,2]\n")
    r = subprocess.run([YAMLLINT, "--strict", "-c", os.path.join(K8S, ".yamllint"), bad],
                       capture_output=True, text=True, timeout=scaled(60))
    check(r.returncode != 0, "yamllint passed a file with trailing spaces")


@test
def kubectl_renders_and_decodes():
    objs, text = rendered()
    kinds = sorted(o["kind"] for o in objs)
    check(kinds == ["ConfigMap", "PodDisruptionBudget", "Service", "Service", "StatefulSet"], f"rendered {kinds}")
    # Typed decoding of the StatefulSet: a field of the wrong type fails here.
    docs = [d for d in re.split(r"^---\n", text, flags=re.M) if re.search(r"^kind: StatefulSet$", d, re.M)]
    check(len(docs) == 1, "no StatefulSet document in the rendered YAML")
    out = json_stream(kubectl("set", "image", "--local", "-f", "-", "-o", "json", "ltvd=ltvd:checked", stdin=docs[0]))
    check(out and out[0]["spec"]["template"]["spec"]["containers"][0]["image"] == "ltvd:checked",
          "kubectl set image --local did not update the StatefulSet's container")
    broken = docs[0].replace("replicas: 1", "replicas: one")
    r = subprocess.run([KUBECTL, "set", "image", "--local", "-f", "-", "-o", "json", "ltvd=x"], input=broken,
                       capture_output=True, text=True, errors="replace", env=KENV, timeout=scaled(60))
    check(r.returncode != 0, "kubectl decoded `replicas: one` without complaint: the typed check checks nothing")
    # The example Secret parses and has the names the StatefulSet reads.
    with open(os.path.join(K8S, "secret.example.yaml")) as f:
        secret = parse_objects(f.read())[0]
    refs = {e["valueFrom"]["secretKeyRef"]["name"] for e in container(objs)["env"] if "valueFrom" in e}
    check(refs == {secret["metadata"]["name"]}, f"env reads Secrets {refs}, the example is {secret['metadata']['name']}")


@test
def manifests_match_ltvd():
    objs, _ = rendered()
    problems = manifest_problems(objs, config_table(), ltvd_routes())
    check(not problems, "deploy/k8s does not match ltvd:\n  " + "\n  ".join(problems))


@test
def checks_catch_broken_manifests():
    objs, _ = rendered()
    table, routes = config_table(), ltvd_routes()
    missed = []
    for what, change in MUTATIONS:
        broken = copy.deepcopy(objs)
        change(broken)
        found = manifest_problems(broken, table, routes)
        if not found:
            missed.append(what)
        else:
            print(f"  {what}: {found[0]}")
    check(not missed, f"broken copies not reported: {missed}")


def readme_secret_command():
    """The `kubectl create secret` command of the README's Deploy section."""
    with open(os.path.join(ROOT, "README.md")) as f:
        text = f.read()
    m = re.search(r"^## Deploy\n(.*?)(?=^## )", text, re.M | re.S)
    check(m, "README.md has no '## Deploy' section")
    joined = m.group(1).replace("\\\n", " ")
    cmd = [line.strip() for line in joined.splitlines() if line.strip().startswith("kubectl create secret")]
    check(len(cmd) == 1, f"expected one `kubectl create secret` command in README's Deploy section, found {cmd}")
    check("kubectl apply -k deploy/k8s" in m.group(1), "README's Deploy section does not apply deploy/k8s")
    return cmd[0]


def readme_secret():
    """{key: value} of the Secret the README's command creates (client dry run)."""
    cmd = readme_secret_command()
    r = subprocess.run(["bash", "-c", cmd.replace("kubectl", shlex.quote(KUBECTL), 1) + " --dry-run=client -o json"],
                       capture_output=True, text=True, errors="replace", env=KENV, timeout=scaled(60))
    check(r.returncode == 0, f"{cmd} --dry-run=client failed:\n{r.stderr}")
    s = json.loads(r.stdout)
    return s["metadata"]["name"], {k: base64.b64decode(v).decode() for k, v in s.get("data", {}).items()}


@test
def container_starts_with_the_readme_secret():
    objs, _ = rendered()
    c = container(objs)
    name, data = readme_secret()
    env = {}
    for e in c["env"]:
        ref = e.get("valueFrom", {}).get("secretKeyRef")
        check(ref and ref["name"] == name, f"env {e['name']} does not read Secret {name}")
        if ref["key"] in data:
            env[e["name"]] = data[ref["key"]]
        else:
            check(ref.get("optional"), f"the README's Secret has no key {ref['key']} for {e['name']}")
    check(all(len(v) >= 32 for v in env.values()), "the README's tokens are shorter than 32 characters")

    # The container's command with this build's binary, the ConfigMap's config
    # (storage.dir in a temporary directory) and no tokens: refused, as in a pod
    # whose Secret is missing keys.
    _, cfg = config_of(objs)
    data_dir = os.path.join(WORK.name, "data")
    cfg["storage"]["dir"] = data_dir
    conf = os.path.join(WORK.name, "ltvd.json")
    with open(conf, "w") as f:
        json.dump(cfg, f)
    argv = [LTVD if a == "/usr/bin/ltvd" else conf if a == "/etc/ltvd/ltvd.json" else a for a in c["command"]]
    bare = {k: v for k, v in os.environ.items() if not k.startswith("LTVD_AUTH_")}
    r = subprocess.run(argv, capture_output=True, text=True, env=bare, timeout=scaled(30))
    check(r.returncode == 2, f"without tokens ltvd exited {r.returncode}, expected 2:\n{r.stderr[-2000:]}")
    check("LTVD_AUTH_INGEST_TOKEN" in r.stderr, f"the refusal does not name the variables:\n{r.stderr[-2000:]}")
    check(not os.path.exists(data_dir), "a refused start created storage.dir")

    # With the Secret's tokens (and a read token, as an operator may add):
    # listening on loopback here, on a free port; the same config otherwise.
    env["LTVD_AUTH_READ_TOKEN"] = "r" * 40
    saved = dict(os.environ)
    os.environ.update(env)
    try:
        srv = LtvdProcess(LTVD, config=conf, storage_dir=data_dir, settings={"server.bind": "127.0.0.1"},
                          ready_timeout=30)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    with srv:
        for pr in ("startupProbe", "readinessProbe", "livenessProbe"):
            status, _, body = srv.request("GET", c[pr]["httpGet"]["path"])
            check(status == 200, f"{pr} {c[pr]['httpGet']['path']} answered {status} without a token: {body!r}")
        event = {"user_id": "k8s", "type": "purchase", "value": 5}
        status, _, _ = srv.request("POST", "/v1/events", event)
        check(status == 401, f"a write without a token answered {status}, expected 401")
        status, _, body = srv.request("POST", "/v1/events", event,
                                      {"Authorization": f"Bearer {env['LTVD_AUTH_INGEST_TOKEN']}"})
        check(status == 200, f"a write with the Secret's ingest token answered {status}: {body!r}")
        check(srv.stop(signal.SIGTERM, timeout=60) == 0, "SIGTERM did not end ltvd with 0")


if __name__ == "__main__":
    sys.exit(main_exit(*run_tests(tests)))
