"""Auth on every route of `ltvd --routes`, with all three tokens set: each
route is tried without a token, with a wrong one, with every other class's
token and with its own. A refusal is 401 with `WWW-Authenticate: Bearer`
and the JSON error shape, and applies nothing; the right token gets the
route's documented status. The class of each route and its success status
come from openapi/ltvd.yaml, so a new route is covered (or fails here)
without editing this file (the model routes get a model file imported
first: model_inputs). Also: 409 on a second retrain while one runs.

Usage: test_auth.py PATH_TO_LTVD PATH_TO_OPENAPI_SPEC"""
import json
import os
import re
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ltvd_harness import purchase_histories, check, test_registry, LtvdProcess, quote_id, run_tests, \
    wait_until  # noqa: E402

LTVD = sys.argv[1]
SPEC = sys.argv[2]
TOKENS = {"ingest": "ingest-Tok-1", "admin": "admin-Tok-2", "read": "read-Tok-3"}
SETTINGS = {f"auth.{c}_token": t for c, t in TOKENS.items()}
KNOWN = "known/shopper+1"  # needs percent-encoding in paths
T0 = 1735689600  # 2025-01-01T00:00:00Z
DAY = 86400
TESTS, test = test_registry()

# A request body for the routes that need one; a route that needs a body
# and has none here fails its "allowed" step, so a new route cannot slip by.
BODIES = {
    ("POST", "/v1/events"): {"user_id": "auth-new", "type": "purchase", "ts": T0 + DAY, "value": 9.5},
    ("POST", "/v1/ltv/batch"): {"user_ids": [KNOWN, "auth-unknown"], "as_of": T0 + 2 * DAY},
}


def served_routes():
    out = subprocess.run([LTVD, "--routes"], capture_output=True, text=True, check=True).stdout
    routes = [tuple(line.split(" ", 1)) for line in out.splitlines() if line.strip()]
    check(len(routes) >= 10, f"ltvd --routes lists {routes}")
    return routes


def spec_operations():
    """{(METHOD, path): (token class or None, success status)} from the spec's
    `security:` (first scheme) and first 2xx response of each operation, read
    by indentation as test_openapi.py does: paths at 2 spaces, methods at 4,
    their keys at 6, response codes at 8."""
    ops, path, op, section = {}, None, None, None
    in_paths = False
    with open(SPEC, encoding="utf-8") as f:
        lines = f.read().splitlines()
    for line in lines:
        if re.match(r"^\S", line):
            in_paths = line.startswith("paths:")
            continue
        if not in_paths:
            continue
        m = re.match(r"^  (/\S*):\s*$", line)
        if m:
            path, op = m.group(1), None
            continue
        m = re.match(r"^    (get|post|put|delete|patch):", line)
        if m and path:
            op = (m.group(1).upper(), path)
            ops[op] = [None, None]
            continue
        m = re.match(r"^      (\w+):\s*(.*)$", line)
        if m and op:
            section = m.group(1)
            if section == "security":
                scheme = re.search(r"\{(\w+):", m.group(2))
                ops[op][0] = scheme.group(1) if scheme else None
            continue
        m = re.match(r"^        '(\d{3})':", line)
        if m and op and section == "responses" and ops[op][1] is None and m.group(1).startswith("2"):
            ops[op][1] = int(m.group(1))
    return {k: tuple(v) for k, v in ops.items()}


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


def assert_unauthorized(resp, what):
    status, hdrs, data = resp
    check(status == 401, f"{what}: status {status}, wanted 401: {data[:200]}")
    check(hdrs.get("www-authenticate") == "Bearer", f"{what}: WWW-Authenticate is {hdrs.get('www-authenticate')}")
    check(hdrs.get("content-type") == "application/json", f"{what}: {hdrs}")
    body = json.loads(data)
    check(set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}, f"{what}: {body}")
    check(body["error"]["code"] == "unauthorized" and body["error"]["details"] == [], f"{what}: {body}")


def state(s):
    """What a refused request must leave as it was."""
    status, m = s.json("GET", "/v1/model", headers=bearer(TOKENS["read"]))
    check(status == 200, m)
    status, known = s.json("GET", f"/v1/users/{quote_id(KNOWN)}", headers=bearer(TOKENS["read"]))
    return {"applied": s.metric("ltvd_events_applied_total"), "users": s.metric("ltvd_users"),
            "deleted": s.metric("ltvd_users_deleted_total"), "retrain_job": m["retrain"]["job"],
            "retrain_state": m["retrain"]["state"], "known": (status, known),
            "new": s.json("GET", "/v1/users/auth-new", headers=bearer(TOKENS["read"]))[0]}


def wrong_credentials(cls):
    """Every Authorization a client of class cls could get wrong."""
    right = TOKENS[cls] if cls else "x"
    creds = [("no header", None), ("unknown token", "Bearer nope"), ("empty bearer", "Bearer "),
             ("a prefix of the token", f"Bearer {right[:-1]}"), ("the token and more", f"Bearer {right}x"),
             ("no scheme", right), ("Basic scheme", f"Basic {right}")]
    creds += [(f"the {other} token", f"Bearer {tok}") for other, tok in TOKENS.items() if other != cls]
    return creds


def model_inputs(s):
    """What the model routes need on a fresh server: a model file (the
    serving prior exports without one) imported into the history, so that
    {version} names a file, POST /v1/models has a body and a rollback a
    target."""
    admin = bearer(TOKENS["admin"])
    version = s.json("GET", "/v1/model", headers=bearer(TOKENS["read"]))[1]["version"]
    status, _, blob = s.request("GET", f"/v1/models/{version}", headers=admin)
    check(status == 200 and blob[:8] == b"LTVDMODL", f"export of the serving model: {status}")
    status, _, data = s.request("POST", "/v1/models", blob, admin)
    check(status == 201, f"import: {status} {data[:200]}")
    imported = json.loads(data)["version"]
    return {"version": str(imported), ("POST", "/v1/models"): blob, ("POST", "/v1/model/rollback"): {"version": imported}}


def request(s, method, path, auth, dyn):
    headers = {"Authorization": auth} if auth is not None else None
    concrete = path.replace("{user_id}", quote_id(KNOWN)).replace("{version}", dyn["version"]) \
        .replace("{asset}", "dashboard.js")
    return s.request(method, concrete, dyn.get((method, path), BODIES.get((method, path))), headers)


def check_route(method, path, cls, success):
    """A fresh server with one known shopper; the route refused with every
    wrong credential (nothing changes), then allowed with its own token."""
    with LtvdProcess(LTVD, SETTINGS) as s:
        status, _, _ = s.request("POST", "/v1/events", {"user_id": KNOWN, "type": "purchase", "ts": T0, "value": 20},
                                 bearer(TOKENS["ingest"]))
        check(status == 200)
        dyn = model_inputs(s)
        if path.startswith(("/v1/segments", "/v1/lists/")):  # answered once the first summary is computed
            check(wait_until(lambda: s.request("GET", "/v1/segments", headers=bearer(TOKENS["read"]))[0] == 200, 30),
                  "no population summary computed")
        before = state(s)
        what = f"{method} {path}"
        if cls is None:  # open: any Authorization, or none, is ignored
            for name, auth in wrong_credentials(None) + [("the read token", bearer(TOKENS["read"])["Authorization"])]:
                status, _, data = request(s, method, path, auth, dyn)
                check(status == success, f"{what} with {name}: {status} {data[:200]}")
            return
        for name, auth in wrong_credentials(cls):
            assert_unauthorized(request(s, method, path, auth, dyn), f"{what} with {name}")
        check(state(s) == before, f"{what}: a refused request changed {before} into {state(s)}")
        status, hdrs, data = request(s, method, path, f"Bearer {TOKENS[cls]}", dyn)
        check(status == success, f"{what} with the {cls} token: {status}, wanted {success}: {data[:300]}")
        check("www-authenticate" not in hdrs, hdrs)
        after = state(s)
        # the allowed request did what the route does
        if (method, path) == ("POST", "/v1/events"):
            check(json.loads(data)["accepted"] == 1 and after["applied"] == before["applied"] + 1 and
                  after["new"] == 200, after)
        elif method == "DELETE":
            check(data == b"" and after["known"][0] == 404 and after["deleted"] == before["deleted"] + 1, after)
        elif path == "/v1/model/retrain":
            check(json.loads(data) == {"job": before["retrain_job"] + 1}, data)
            check(after["retrain_job"] == before["retrain_job"] + 1, after)
        elif path == "/v1/ltv/batch":
            preds = json.loads(data)["predictions"]
            check([p["known"] for p in preds] == [True, False], preds)
        elif "{user_id}" in path:
            check(json.loads(data)["user_id"] == KNOWN, data)
        elif path == "/v1/model/rollback":
            check(json.loads(data)["version"] == int(dyn["version"]) and
                  s.json("GET", "/v1/model", headers=bearer(TOKENS["read"]))[1]["version"] == int(dyn["version"]))
        elif path == "/v1/models/{version}":
            check(data[:8] == b"LTVDMODL" and len(data) == len(dyn[("POST", "/v1/models")]),
                  "the export is the model imported (under its new version)")
        elif path == "/v1/models":
            check(json.loads(data)["models"] if method == "GET" else json.loads(data)["version"] > int(dyn["version"]),
                  data)
        elif path == "/v1/admin/snapshot":
            check(json.loads(data) == {"job": 1}, data)
        if method == "GET":
            check(after == before, f"{what}: a read changed {before} into {after}")


@test
def every_route_refuses_wrong_tokens_and_allows_its_own():
    ops = spec_operations()
    routes = served_routes()
    classes = {}
    for method, path in routes:
        check((method, path) in ops, f"{method} {path} is served but not in the spec")
        cls, success = ops[(method, path)]
        check(success is not None, f"the spec gives {method} {path} no 2xx response")
        check(cls in (None, *TOKENS), f"{method} {path}: unknown security scheme {cls}")
        classes[(method, path)] = cls
        check_route(method, path, cls, success)
    # what the brief promises, read back from the table just used
    check(classes[("POST", "/v1/events")] == "ingest")
    check(classes[("POST", "/v1/model/retrain")] == "admin" and classes[("DELETE", "/v1/users/{user_id}")] == "admin")
    for open_path in ("/healthz", "/readyz", "/metrics"):
        check(classes[("GET", open_path)] is None, f"{open_path} stays open")
    for read in (("GET", "/v1/users/{user_id}/ltv"), ("GET", "/v1/users/{user_id}"), ("POST", "/v1/ltv/batch"),
                 ("GET", "/v1/model"), ("GET", "/v1/calibration")):
        check(classes[read] == "read", read)


@test
def refused_before_anything_else():
    """A refused caller learns nothing: 401 whether the user exists or the
    body is valid (an unknown route is still 404, a wrong method 405)."""
    with LtvdProcess(LTVD, SETTINGS) as s:
        for method, path, body in (("DELETE", "/v1/users/nobody", None), ("GET", "/v1/users/nobody", None),
                                   ("GET", "/v1/users/bad%zz/ltv", None), ("POST", "/v1/events", b"{not json"),
                                   ("POST", "/v1/events", {"events": []}), ("POST", "/v1/ltv/batch", b"[")):
            assert_unauthorized(s.request(method, path, body), f"{method} {path}")
            assert_unauthorized(s.request(method, path, body, bearer(TOKENS["read"] if method == "DELETE"
                                                                     else TOKENS["admin"])), f"{method} {path}")
        status, _, data = s.request("GET", "/v2/none")
        check(status == 404 and json.loads(data)["error"]["code"] == "not_found")
        status, hdrs, data = s.request("PUT", "/v1/model/retrain")
        check(status == 405 and hdrs.get("allow") == "POST" and json.loads(data)["error"]["code"] ==
              "method_not_allowed")
        check(s.metric("ltvd_events_applied_total") == 0 and s.metric("ltvd_users") == 0)


@test
def an_empty_token_leaves_its_class_open():
    """Only the admin token set: reads and writes need none, admin calls do."""
    with LtvdProcess(LTVD, {"auth.admin_token": TOKENS["admin"]}) as s:
        status, body = s.json("POST", "/v1/events", {"user_id": "o1", "type": "view", "ts": T0})
        check(status == 200 and body["accepted"] == 1, body)
        check(s.json("GET", "/v1/users/o1/ltv")[0] == 200 and s.json("GET", "/v1/model")[0] == 200)
        assert_unauthorized(s.request("DELETE", "/v1/users/o1"), "DELETE without the admin token")
        assert_unauthorized(s.request("POST", "/v1/model/retrain"), "retrain without the admin token")
        check(s.json("GET", "/v1/users/o1")[1]["events"] == 1 and s.json("GET", "/v1/model")[1]["retrain"]["job"] == 0)
        check(s.request("DELETE", "/v1/users/o1", headers=bearer(TOKENS["admin"]))[0] == 204)
        check(s.json("GET", "/v1/users/o1")[0] == 404)


@test
def the_scheme_is_case_insensitive():
    """RFC 7235: the auth-scheme is case-insensitive; the token is not."""
    with LtvdProcess(LTVD, SETTINGS) as s:
        for scheme in ("Bearer", "bearer", "BEARER", "bEaReR"):
            status, _ = s.json("GET", "/v1/model", headers={"Authorization": f"{scheme} {TOKENS['read']}"})
            check(status == 200, f"{scheme}: {status}")
        status, hdrs, _ = s.request("GET", "/v1/model", headers={"Authorization": f"bearer {TOKENS['read'].upper()}"})
        check(status == 401, f"a token in other case is another token: {status}")


@test
def second_retrain_while_one_runs_is_409():
    settings = dict(SETTINGS, **{"clock": "event", "model.horizon_days": "30", "train.interval_s": "0"})
    with LtvdProcess(LTVD, settings) as s:
        events = purchase_histories(800, 7)
        for k in range(0, len(events), 5000):
            status, _, data = s.request("POST", "/v1/events", {"events": events[k:k + 5000]},
                                        bearer(TOKENS["ingest"]))
            check(status == 200, data[:300])
        m0 = s.json("GET", "/v1/model", headers=bearer(TOKENS["read"]))[1]
        check(m0["retrain"]["state"] == "idle" and m0["retrain"]["job"] == 0, m0["retrain"])
        assert_unauthorized(s.request("POST", "/v1/model/retrain"), "retrain without a token")
        status, body = s.json("POST", "/v1/model/retrain", headers=bearer(TOKENS["admin"]))
        check(status == 202 and body == {"job": 1}, body)
        # while it runs: a refused caller still gets 401, the admin 409
        assert_unauthorized(s.request("POST", "/v1/model/retrain", headers=bearer(TOKENS["ingest"])),
                            "retrain with the ingest token while one runs")
        status, body = s.json("POST", "/v1/model/retrain", headers=bearer(TOKENS["admin"]))
        check(status == 409, f"second retrain: {status} {body}")
        check(body == {"error": {"code": "conflict", "message": body["error"]["message"], "details": []}}, body)
        m = s.json("GET", "/v1/model", headers=bearer(TOKENS["read"]))[1]
        check(m["retrain"]["job"] == 1, "the refused retrain was not queued")
        m = s.wait_retrain(600, bearer(TOKENS["read"]))
        check(m["retrain"]["state"] == "idle" and m["retrain"]["job"] == 1 and m["retrain"]["last_error"] is None,
              m["retrain"])
        check(m["retrain"]["last_training"]["epochs"] > 0, f"the network trained: {m['retrain']}")
        check(s.metric("ltvd_retrain_runs_total") == 1 and s.metric("ltvd_retrain_running") == 0)
        # once it is over, the next one starts
        status, body = s.json("POST", "/v1/model/retrain", headers=bearer(TOKENS["admin"]))
        check(status == 202 and body == {"job": 2}, body)
        m = s.wait_retrain(600, bearer(TOKENS["read"]))
        check(m["retrain"]["state"] == "idle" and m["retrain"]["job"] == 2, m["retrain"])
        check(s.metric("ltvd_retrain_runs_total") == 2)


if __name__ == "__main__":
    passed, failed = run_tests(TESTS)
    print(f"{passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)
