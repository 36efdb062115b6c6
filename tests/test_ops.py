"""Operations (issue 15, item 3), over HTTP against a real ltvd:

- SIGHUP reloads the config: a new read token works and the old one is
  refused at once, in the same process, also while requests keep coming on
  three HTTP threads; a broken file, a key that needs a restart or a value
  out of range keeps the running config whole (nothing half-applied), logs
  the error and counts it.
- POST /v1/admin/snapshot writes a snapshot now (202, then a new snapshot
  file); a second request while the first is pending is 409.
- The model history: each retrain's models are kept as files and listed by
  GET /v1/models; a rollback makes an older version serve (model_version of
  the predictions) and survives a restart; an exported model imported back
  gets a new version and predicts exactly as the original; a corrupt file or
  one of another hidden size is refused with 400 and changes nothing;
  model.keep bounds the files.
- `ltvd --check-config` prints the effective config with the tokens
  redacted and exits 0, or says what is wrong and exits 2.
The harness checks every server's exit status and output on stop.
Usage: test_ops.py PATH_TO_LTVD"""
import glob
import json
import os
import signal
import sys
import tempfile
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ltvd_harness import (check, LtvdProcess, main_exit, purchase_histories, run_ltvd, run_tests, scaled,  # noqa: E402
                          test_registry, wait_until)

LTVD = sys.argv[1]
TESTS, test = test_registry()
RETRAIN_WAIT_S = 120  # bounds a poll, not a timing assertion
AS_OF = "1998-07-01T00:00:00Z"


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


def write_config(path, doc):
    with open(path + ".new", "w") as f:
        f.write(doc if isinstance(doc, str) else json.dumps(doc))
    os.replace(path + ".new", path)


def reloads(s, result):
    return s.metric(f'ltvd_config_reloads_total{{result="{result}"}}')


def hup(s, result, before):
    """SIGHUP, then waits until the reload with that result is counted."""
    s.proc.send_signal(signal.SIGHUP)
    done = wait_until(lambda: reloads(s, result) == before + 1, 20)
    check(done, f"no {result} reload counted after SIGHUP:\n" + s.logs()[-2000:])
    check(s.proc.poll() is None, "ltvd exited on SIGHUP")


def status_with(s, token):
    return s.request("GET", "/v1/model", headers=bearer(token))[0]


@test
def sighup_reloads_tokens_in_the_same_process():
    with tempfile.TemporaryDirectory(prefix="ltvd-ops-") as d:
        cfg = os.path.join(d, "ltvd.json")
        write_config(cfg, {"auth": {"read_token": "read-old", "admin_token": "adm"}, "log": {"level": "info"}})
        with LtvdProcess(LTVD, {"server.threads": "3"}, config=cfg) as s:
            pid = s.proc.pid
            check(status_with(s, "read-old") == 200 and status_with(s, "read-new") == 401)
            check(reloads(s, "ok") == 0 and reloads(s, "error") == 0)
            write_config(cfg, {"auth": {"read_token": "read-new", "admin_token": "adm"}, "log": {"level": "info"}})
            hup(s, "ok", 0)
            check(status_with(s, "read-new") == 200, "the new token is accepted")
            check(status_with(s, "read-old") == 401, "the old token is refused")
            check('changed="auth.read_token"' in s.logs(), s.logs()[-1500:])
            # nothing changed: still a successful reload, nothing applied
            hup(s, "ok", 1)
            check('changed="nothing"' in s.logs())
            # log.level is reloadable: at warn, the info line of a reload is gone
            write_config(cfg, {"auth": {"read_token": "read-new", "admin_token": "adm"}, "log": {"level": "warn"}})
            hup(s, "ok", 2)
            n = s.logs().count("config reloaded")
            hup(s, "ok", 3)
            check(s.logs().count("config reloaded") == n, "log.level=warn took effect")

            # reloads while three threads keep asking: every answer is 200 or
            # 401 and, once a reload is counted, the new token answers 200
            tokens = ["tok-a", "tok-b"]
            stop, answers, errors = threading.Event(), [], []

            def hammer():
                while not stop.is_set():
                    try:
                        answers.append(status_with(s, tokens[0]))
                    except OSError as e:
                        errors.append(repr(e))
            threads = [threading.Thread(target=hammer) for _ in range(3)]
            for t in threads:
                t.start()
            try:
                for k in range(6):
                    tok = tokens[k % 2]
                    write_config(cfg, {"auth": {"read_token": tok, "admin_token": "adm"}, "log": {"level": "warn"}})
                    hup(s, "ok", 4 + k)
                    check(status_with(s, tok) == 200 and status_with(s, tokens[1 - k % 2]) == 401, k)
            finally:
                stop.set()
                for t in threads:
                    t.join()
            check(not errors and answers and set(answers) <= {200, 401}, (errors[:3], set(answers)))
            check(s.proc.pid == pid and s.proc.poll() is None, "the same process serves")


@test
def sighup_with_a_bad_config_keeps_the_old_one_whole():
    with tempfile.TemporaryDirectory(prefix="ltvd-ops-") as d:
        cfg = os.path.join(d, "ltvd.json")
        good = {"auth": {"read_token": "read-1", "admin_token": "adm"}}
        write_config(cfg, good)
        with LtvdProcess(LTVD, {}, config=cfg) as s:
            bad = [
                ("broken JSON", '{"auth": {"read_token": "read-2",', "config is not a JSON object"),
                ("a key that needs a restart, with a new token",
                 {"auth": {"read_token": "read-2", "admin_token": "adm"}, "model": {"keep": 9}},
                 "config key model.keep changed: it takes effect only on a restart"),
                ("a value out of range, with a new token",
                 {"auth": {"read_token": "read-2", "admin_token": "adm"}, "limits": {"max_batch_ids": 0}},
                 "limits.max_batch_ids"),
                ("an unknown key", {"auth": {"read_token": "read-2", "admin_token": "adm", "colour": "red"}},
                 "unknown config key 'auth.colour'"),
            ]
            for k, (what, doc, needle) in enumerate(bad):
                write_config(cfg, doc)
                hup(s, "error", k)
                check(status_with(s, "read-1") == 200 and status_with(s, "read-2") == 401,
                      f"{what}: the old config serves, nothing of the new one")
                logs = s.logs()
                check("config reload failed: the running config is kept" in logs and needle in logs,
                      f"{what}: {logs[-1500:]}")
            check(reloads(s, "ok") == 0)
            # the config file is fixed: the next SIGHUP applies it
            write_config(cfg, {"auth": {"read_token": "read-2", "admin_token": "adm"}})
            hup(s, "ok", 0)
            check(status_with(s, "read-2") == 200 and status_with(s, "read-1") == 401)


def snapshot_files(d):
    return set(glob.glob(os.path.join(d, "snapshot-*.snap")))


@test
def admin_snapshot_writes_one_now():
    with LtvdProcess(LTVD, {"auth.admin_token": "adm", "storage.snapshot_interval_s": "604800"}) as s:
        events = purchase_histories(50, seed=5)
        status, _ = s.json("POST", "/v1/events", {"events": events})
        check(status == 200)
        before, taken = snapshot_files(s.storage_dir), s.metric("ltvd_snapshots_total")
        check(s.request("POST", "/v1/admin/snapshot")[0] == 401, "the admin token is needed")
        status, body = s.json("POST", "/v1/admin/snapshot", headers=bearer("adm"))
        check(status == 202 and body == {"job": 1}, (status, body))
        # pending until the snapshot timer's next tick (each second) has
        # written it: a second request meanwhile is refused (asked again
        # if the first was already written: then it is accepted)
        for _ in range(5):
            status, body = s.json("POST", "/v1/admin/snapshot", headers=bearer("adm"))
            if status == 409:
                break
            check(status == 202, (status, body))
        check(status == 409 and body["error"]["code"] == "conflict", (status, body))
        check(wait_until(lambda: s.metric("ltvd_snapshots_total") >= taken + 1 and "job=1 result=ok" in s.logs(), 30),
              "no snapshot written")
        after = snapshot_files(s.storage_dir)
        check(after - before, f"no new snapshot file: {before} -> {after}")
        # done: a request is accepted again once nothing is pending
        check(wait_until(lambda: s.json("POST", "/v1/admin/snapshot", headers=bearer("adm"))[0] == 202, 30),
              "a request after the snapshot was written is accepted")


# ---- the model history ------------------------------------------------------

HIST = {"clock": "event", "model.hidden_size": "8", "train.network": "true", "train.interval_s": "0",
        "train.seed": "3", "train.max_epochs": "5", "auth.admin_token": "adm"}
ADM = bearer("adm")


def retrain(s):
    """Starts a retrain and returns GET /v1/model once it is over."""
    v0 = s.json("GET", "/v1/model")[1]["version"]
    status, body = s.json("POST", "/v1/model/retrain", headers=ADM)
    check(status == 202, (status, body))

    def over():
        m = s.json("GET", "/v1/model")[1]
        return m if m["retrain"]["state"] != "running" and m["version"] > v0 else None
    m = wait_until(over, RETRAIN_WAIT_S)
    check(m, f"a retrain still runs after {scaled(RETRAIN_WAIT_S):.0f} s")
    return m


def models(s):
    status, body = s.json("GET", "/v1/models")
    check(status == 200, (status, body))
    return body


def ltv(s, uid):
    status, body = s.json("GET", f"/v1/users/{uid}/ltv?as_of={AS_OF}")
    check(status == 200, (status, body))
    return body


def history_files(d):
    return sorted(os.path.basename(p) for p in glob.glob(os.path.join(d, "model-*.bin")))


@test
def model_history_rollback_export_import():
    with tempfile.TemporaryDirectory(prefix="ltvd-models-") as d:
        s = LtvdProcess(LTVD, HIST, storage_dir=d)
        events = purchase_histories(800, seed=11)
        for k in range(0, len(events), 5000):
            check(s.json("POST", "/v1/events", {"events": events[k:k + 5000]})[0] == 200)
        check(models(s)["models"] == [], "no model file before the first retrain")
        m1 = retrain(s)
        m2 = retrain(s)
        h = models(s)
        versions = [e["version"] for e in h["models"]]
        check(versions == sorted(versions, reverse=True) and len(versions) >= 2, h)
        check(m1["version"] in versions and m2["version"] in versions, (m1["version"], m2["version"], versions))
        check(h["serving_version"] == m2["version"] and h["keep"] == 5, h)
        check([e["version"] for e in h["models"] if e["serving"]] == [m2["version"]], h)
        check(all(e["valid"] and e["error"] is None for e in h["models"]), h)
        check(history_files(d) == sorted(f"model-{v}.bin" for v in versions), history_files(d))
        trained = [e for e in h["models"] if e["status"] == "trained"]
        check(trained, f"a retrain over 800 shoppers trains a network: {h}")
        check(all(e["validation"]["loss"] > 0 and e["head"] in ("hybrid", "lstm_only") and e["trained_at"]
                  for e in trained), trained)
        fallback = [e for e in h["models"] if e["status"] == "fallback"]
        check(all(e["validation"] is None and e["fallback_fitted_at"] for e in fallback), fallback)

        # rollback to the oldest: its version serves, in the predictions too
        old = versions[-1]
        before = ltv(s, "s1")
        check(before["model_version"] == m2["version"], before)
        check(s.json("POST", "/v1/model/rollback", {"version": old})[0] == 401, "the admin token is needed")
        status, body = s.json("POST", "/v1/model/rollback", {"version": old}, ADM)
        check(status == 200 and body["version"] == old and body["serving"] is True, (status, body))
        rolled = ltv(s, "s1")
        check(rolled["model_version"] == old, rolled)
        check(s.json("GET", "/v1/model")[1]["version"] == old)
        for bad, code in (({"version": 999}, 404), ({"version": 0}, 400), ({"version": "2"}, 400), ([old], 400)):
            status, body = s.json("POST", "/v1/model/rollback", bad, ADM)
            check(status == code, (bad, status, body))
        check(ltv(s, "s1") == rolled, "refused rollbacks change nothing")
        check(s.stop() == 0)

        # the rollback survives a restart
        s = LtvdProcess(LTVD, HIST, storage_dir=d)
        check(ltv(s, "s1") == rolled, "after a restart the rolled-back model serves")
        check(models(s)["serving_version"] == old)

        # export -> import: a new version, not serving, predicting the same
        status, hdrs, blob = s.request("GET", f"/v1/models/{m2['version']}", headers=ADM)
        check(status == 200 and hdrs["content-type"] == "application/octet-stream" and blob[:8] == b"LTVDMODL",
              (status, hdrs, blob[:16]))
        check(s.request("GET", f"/v1/models/{m2['version']}")[0] == 401, "export needs the admin token")
        check(s.request("GET", "/v1/models/999", headers=ADM)[0] == 404)
        check(s.request("GET", "/v1/models/x1", headers=ADM)[0] == 400)
        files = history_files(d)
        octet = {"Content-Type": "application/octet-stream", **ADM}
        for what, body, needle in (("a flipped bit", blob[:200] + bytes([blob[200] ^ 1]) + blob[201:], "checksum"),
                                   ("a truncated file", blob[:-7], ""),
                                   ("not a model", b"hello", "too short"),
                                   ("no body", b"", "model file")):
            status, _, data = s.request("POST", "/v1/models", body, octet)
            err = json.loads(data)["error"]
            check(status == 400 and err["code"] == "invalid_model" and needle in err["message"], (what, status, err))
            check("model-import.tmp" not in err["message"], err)
        check(history_files(d) == files and models(s)["serving_version"] == old, "refused imports change nothing")
        check(s.request("POST", "/v1/models", blob, {"Content-Type": "application/octet-stream"})[0] == 401)
        status, _, data = s.request("POST", "/v1/models", blob, octet)
        imported = json.loads(data)
        check(status == 201 and imported["serving"] is False and imported["valid"] is True, (status, imported))
        new = imported["version"]
        check(new > max(versions), (new, versions))
        check(ltv(s, "s1") == rolled, "an import does not serve by itself")
        check(s.json("POST", "/v1/model/rollback", {"version": new}, ADM)[0] == 200)
        got, want = ltv(s, "s1"), dict(before)
        check(got["model_version"] == new, got)
        got.pop("model_version"), want.pop("model_version")
        check(got == want, f"the imported model predicts as the exported one: {got} vs {want}")
        check(s.stop() == 0)

        # a model of another hidden size is refused, naming the sizes
        with LtvdProcess(LTVD, {**HIST, "model.hidden_size": "16"}) as other:
            status, _, prior16 = other.request("GET", "/v1/models/1", headers=ADM)
            check(status == 200 and prior16[:8] == b"LTVDMODL", "the serving prior exports without a file")
        with LtvdProcess(LTVD, HIST, storage_dir=d) as s:
            status, _, data = s.request("POST", "/v1/models", prior16, octet)
            err = json.loads(data)["error"]
            check(status == 400 and "hidden" in err["message"], (status, err))
            check(models(s)["serving_version"] == new)


@test
def a_wiped_model_history_leaves_no_state_of_the_old_network():
    """Shoppers' states (and logged predictions) name the network they were
    computed under, and a snapshot keeps them. With model.bin and the model
    history deleted but the snapshot kept, the next network trained must
    still rebuild every state: it predicts exactly as the same model file
    imported into a fresh ltvd with the same events. Before, ids restarted
    from the files and the new network could take the old one's id, so its
    shoppers kept the old network's states."""
    events = purchase_histories(800, seed=11)

    def post_all(s):
        for k in range(0, len(events), 5000):
            check(s.json("POST", "/v1/events", {"events": events[k:k + 5000]})[0] == 200)

    def served(s):
        out = {}
        for uid in ("s1", "s2", "s3"):
            p = ltv(s, uid)
            p.pop("model_version")
            out[uid] = p
        return out

    with tempfile.TemporaryDirectory(prefix="ltvd-ids-") as d:
        with LtvdProcess(LTVD, HIST, storage_dir=d) as s:
            post_all(s)
            check(retrain(s)["status"] == "trained", "a network serves")
            check(s.stop() == 0)  # the final snapshot keeps the states
        for path in glob.glob(os.path.join(d, "model*.bin")):
            os.unlink(path)
        other = {**HIST, "train.seed": "4"}  # another network from the same events
        with LtvdProcess(LTVD, other, storage_dir=d) as s:
            check(s.json("GET", "/v1/model")[1]["status"] == "fallback", "no model file: the fallback serves")
            m = retrain(s)  # the same order of versions as the first life: before, the same network id
            check(m["status"] == "trained" and m["retrain"]["last_training"]["swapped"], m["retrain"])
            version = m["version"]
            status, _, blob = s.request("GET", f"/v1/models/{version}", headers=ADM)
            check(status == 200 and blob[:8] == b"LTVDMODL", status)
            got = served(s)
        with LtvdProcess(LTVD, other) as fresh:
            post_all(fresh)
            status, _, data = fresh.request("POST", "/v1/models", blob,
                                            {"Content-Type": "application/octet-stream", **ADM})
            check(status == 201, (status, data))
            check(fresh.json("POST", "/v1/model/rollback", {"version": json.loads(data)["version"]}, ADM)[0] == 200)
            want = served(fresh)
        check(got == want, f"the new network's predictions after the wipe: {got} against a fresh ltvd's {want}")


@test
def versions_stay_versions_after_a_restart_on_the_fallback():
    """Shoppers' states and logged predictions made under the fallback name
    its untrained network, whose id is no version (the top bit and the
    seed): a restart does not raise the versions to it. Before the id floor
    left those out, the next retrain's version was 2^31 and more, and a
    trained network's id could then equal a fallback's of another seed."""
    settings = {**HIST, "train.network": "false"}
    with tempfile.TemporaryDirectory(prefix="ltvd-fallback-ids-") as d:
        with LtvdProcess(LTVD, settings, storage_dir=d) as s:
            check(s.json("POST", "/v1/events", {"events": purchase_histories(200, seed=13)})[0] == 200)
            ltv(s, "s1")  # a state computed under the fallback's network
            check(s.json("POST", "/v1/ltv/batch", {"user_ids": ["s2", "s3"]})[0] == 200)  # logged
            v = retrain(s)["version"]
            check(s.stop() == 0)
        with LtvdProcess(LTVD, settings, storage_dir=d) as s:
            again = retrain(s)["version"]
            check(v < again < v + 10, f"versions {v} before the restart, {again} after")


@test
def model_keep_bounds_the_history():
    # the adjuster on (the default): each retrain makes two versions, the
    # refit's and the adjuster's, which replaces the refit's file, so the
    # history reaches back two retrains
    with LtvdProcess(LTVD, {**HIST, "model.keep": "2", "train.network": "false"}) as s:
        events = purchase_histories(300, seed=12)
        check(s.json("POST", "/v1/events", {"events": events})[0] == 200)
        served = [retrain(s)["version"] for _ in range(4)]
        check(s.metrics()["ltvd_adjuster_runs_total"] == 4, "the adjuster ran after each retrain")
        check(all(b - a == 2 for a, b in zip(served, served[1:])), served)
        h = models(s)
        check([e["version"] for e in h["models"]] == served[-1:-3:-1], (served, h))
        check(history_files(s.storage_dir) == sorted(f"model-{v}.bin" for v in served[-2:]),
              history_files(s.storage_dir))
        # the serving one stays even when older than the newest model.keep
        check(s.json("POST", "/v1/model/rollback", {"version": served[-2]}, ADM)[0] == 200)
        status, _, blob = s.request("GET", f"/v1/models/{served[-1]}", headers=ADM)
        for _ in range(2):
            check(s.request("POST", "/v1/models", blob, ADM)[0] == 201)
        kept = [e["version"] for e in models(s)["models"]]
        check(len(kept) == 3 and served[-2] in kept, kept)


@test
def adjuster_timer_runs_beside_the_refit_timer():
    """The adjuster's timer runs it even when the refit timer ticks at the
    same moment (at the defaults, 60 s and 3600 s, every adjuster tick
    meets a refit tick): a tick that finds the worker busy waits for it.
    Before, the refit took the worker and the adjuster's tick was dropped,
    so it ran only after retrains. The refits go on beside it too (a tick
    during an adjuster run is not kept waiting, or runs longer than the
    interval would follow each other and keep the worker)."""
    settings = {**HIST, "train.network": "false", "fallback.refit_s": "1", "fallback.refit_growth": "0",
                "adjuster.interval_s": "1"}
    with LtvdProcess(LTVD, settings) as s:
        check(s.json("POST", "/v1/events", {"events": purchase_histories(300, seed=5)})[0] == 200)
        retrain(s)  # the adjuster's first run, after the retrain: the backtest gives it pairs
        first, fits = s.metrics()["ltvd_adjuster_runs_total"], s.metrics()["ltvd_fallback_fits_total"]
        check(first >= 1, first)
        runs = wait_until(lambda: s.metrics()["ltvd_adjuster_runs_total"] >= first + 3, 30)
        check(runs, f"the adjuster's 1 s timer ran {s.metrics()['ltvd_adjuster_runs_total'] - first:.0f} times "
                    f"in {scaled(30):.0f} s beside a 1 s refit timer")
        posted = []

        def refitted():  # a refit needs new purchases: one more each poll
            k = len(posted)
            posted.append(s.json("POST", "/v1/events", {"events": [
                {"user_id": f"s{k % 300}", "type": "purchase", "ts": 852076800 + 541 * 86400 + 60 * k,
                 "value": 10.0}]})[0])
            return s.metrics()["ltvd_fallback_fits_total"] >= fits + 3

        refits = wait_until(refitted, 30, interval=0.2)
        check(set(posted) == {200}, posted)
        check(refits, f"the 1 s refit timer ran {s.metrics()['ltvd_fallback_fits_total'] - fits:.0f} times in "
                      f"{scaled(30):.0f} s beside a 1 s adjuster timer")


@test
def calibration_live_part_survives_a_restart():
    """GET /v1/calibration's live part (the prediction log's matured pairs by
    decile) is grouped when the pairs change, not per request; after a
    restart it is grouped again from the pairs the final snapshot kept."""
    settings = {**HIST, "train.network": "false", "model.horizon_days": "30", "adjuster.interval_s": "0"}
    with tempfile.TemporaryDirectory(prefix="ltvd-cal-") as d:
        with LtvdProcess(LTVD, settings, storage_dir=d) as s:
            events = purchase_histories(300, seed=7)
            check(s.json("POST", "/v1/events", {"events": events})[0] == 200)
            ids = [f"s{i}" for i in range(300)]
            status, body = s.json("POST", "/v1/ltv/batch", {"user_ids": ids})  # logged, as of now
            check(status == 200 and all(p["known"] for p in body["predictions"]), status)
            empty = s.json("GET", "/v1/calibration")[1]["live"]
            check(empty["pairs"] == 0 and empty["deciles"] == [], empty)
            later = max(e["ts"] for e in events) + 31 * 86400  # the event clock passes their horizon
            check(s.json("POST", "/v1/events", {"events": [{"user_id": "s0", "type": "view", "ts": later}]})[0] == 200)
            retrain(s)  # its adjuster run matures them
            live = s.json("GET", "/v1/calibration")[1]["live"]
            check(live["pairs"] >= 250 and len(live["deciles"]) == 10, live)
            check(sum(g["count"] for g in live["deciles"]) == live["pairs"], live)
            check(s.stop() == 0)
        with LtvdProcess(LTVD, settings, storage_dir=d) as s:
            again = s.json("GET", "/v1/calibration")[1]["live"]
            check(again == live, (again, live))
            # a second round of predictions matures: the grouping follows the pairs
            check(s.json("POST", "/v1/ltv/batch", {"user_ids": ids})[0] == 200)
            check(s.json("POST", "/v1/events", {"events": [{"user_id": "s1", "type": "view",
                                                            "ts": later + 31 * 86400}]})[0] == 200)
            retrain(s)
            more = s.json("GET", "/v1/calibration")[1]["live"]
            check(more["pairs"] >= live["pairs"] + 250, (more["pairs"], live["pairs"]))
            check(sum(g["count"] for g in more["deciles"]) == more["pairs"], more)


def post_shoppers(s, n, seed):
    """Posts purchase_histories(n, seed); returns the newest event's time and the ids."""
    events = purchase_histories(n, seed=seed)
    for k in range(0, len(events), 10000):
        check(s.json("POST", "/v1/events", {"events": events[k:k + 10000]})[0] == 200)
    return max(e["ts"] for e in events), [f"s{i}" for i in range(n)]


@test
def adjuster_learns_from_the_newest_horizon_alone():
    """With 1,000 matured predictions served within one horizon of the
    newest, the adjuster learns from those alone (backtest_pairs 0); the
    window is the horizon in seconds: two batches a day apart are both in
    it at H = 30 days."""
    settings = {**HIST, "train.network": "false", "model.horizon_days": "30", "adjuster.interval_s": "0"}
    with LtvdProcess(LTVD, settings) as s:
        t, ids = post_shoppers(s, 1200, seed=9)
        for half, day in ((ids[:600], 1), (ids[600:], 32)):
            check(s.json("POST", "/v1/ltv/batch", {"user_ids": half})[0] == 200)  # logged, as of now
            check(s.json("POST", "/v1/events", {"events": [{"user_id": "s0", "type": "view",
                                                            "ts": t + day * 86400}]})[0] == 200)
        adj = retrain(s)["adjuster"]  # its run matures both batches
        check(adj["live_pairs"] == 1200 and adj["backtest_pairs"] == 0, adj)


@test
def adjuster_learns_only_from_the_serving_networks_predictions():
    """Predictions the fallback served are not a network's evidence: after a
    retrain swaps in a network at the same event time (the event clock stands
    still), their matured pairs are not learned from; the network's own are."""
    settings = {**HIST, "model.horizon_days": "30", "adjuster.interval_s": "1"}
    with LtvdProcess(LTVD, settings) as s:
        t, ids = post_shoppers(s, 1200, seed=11)
        body = s.json("POST", "/v1/ltv/batch", {"user_ids": ids})[1]  # the fallback's, logged
        check(all(p["source"] != "network" for p in body["predictions"]), body["predictions"][:3])
        m = retrain(s)
        check(m["status"] == "trained" and m["retrain"]["last_training"]["swapped"], m["retrain"])

        def adjusted(day):  # moves the event clock to t + day, then waits for two adjuster runs
            check(s.json("POST", "/v1/events", {"events": [{"user_id": "s0", "type": "view",
                                                            "ts": t + day * 86400}]})[0] == 200)
            runs = s.metrics()["ltvd_adjuster_runs_total"]
            check(wait_until(lambda: s.metrics()["ltvd_adjuster_runs_total"] >= runs + 2, 30), "adjuster runs")
            return s.json("GET", "/v1/model")[1]["adjuster"]

        adj = adjusted(31)  # the fallback's 1,200 predictions matured
        check(adj["live_pairs"] == 0 and adj["backtest_pairs"] > 0, adj)
        check(s.json("POST", "/v1/ltv/batch", {"user_ids": ids})[0] == 200)  # the network's, logged
        adj = adjusted(62)
        check(adj["live_pairs"] == 1200 and adj["backtest_pairs"] == 0, adj)


@test
def adjuster_tick_beside_a_retrain_tick_runs_once():
    """At equal periods (the defaults: both hourly) the retrain's tick and
    the adjuster's come together; the retrain ends with an adjuster run, so
    the adjuster's tick adds none. Before, the adjuster's tick started a run
    while the retrain's request was still on its way, and each period ran
    the adjuster twice."""
    settings = {**HIST, "train.network": "false", "train.interval_s": "2", "adjuster.interval_s": "2"}
    with LtvdProcess(LTVD, settings) as s:
        check(s.json("POST", "/v1/events", {"events": purchase_histories(300, seed=5)})[0] == 200)
        check(wait_until(lambda: s.metrics()["ltvd_retrain_runs_total"] >= 4, 60), "four periodic retrains")
        m = s.metrics()
        retrains, runs = m["ltvd_retrain_runs_total"], m["ltvd_adjuster_runs_total"]
        check(retrains - 1 <= runs <= retrains + 1, f"{runs:.0f} adjuster runs for {retrains:.0f} retrains")


# ---- --check-config ------------------------------------------------------------

@test
def check_config_good_and_bad():
    with tempfile.TemporaryDirectory(prefix="ltvd-check-") as d:
        cfg = os.path.join(d, "ltvd.json")
        data = os.path.join(d, "data")
        write_config(cfg, {"server": {"port": 9999}, "storage": {"dir": data},
                           "auth": {"admin_token": "s3cret-admin"}})
        r = run_ltvd(LTVD, ["--check-config", "--config", cfg, "--set", "log.level=debug"], 0)
        check("s3cret-admin" not in r.stdout + r.stderr, "tokens are redacted")
        lines = {line.split("=", 1)[0].strip(): line for line in r.stdout.splitlines() if "=" in line}
        check('"<set>"' in lines["auth.admin_token"] and "reloadable" in lines["auth.admin_token"], r.stdout)
        check("9999" in lines["server.port"] and "restart" in lines["server.port"], r.stdout)
        check("debug" in lines["log.level"] and data in lines["storage.dir"], r.stdout)
        check("config ok" in r.stdout, r.stdout)
        check(not os.path.exists(data), "--check-config creates nothing")

        for what, doc, args, needle in (
                ("broken JSON", "{", [], "not a JSON object"),
                ("an unknown key", {"server": {"prot": 1}}, [], "unknown config key 'server.prot'"),
                ("a bad --set", {}, ["--set", "model.keep=0"], "model.keep"),
                ("storage.dir is a file", {"storage": {"dir": cfg}}, [], "is not a directory"),
                ("a non-loopback bind without tokens", {"server": {"bind": "0.0.0.0"}}, [], "auth.allow_open")):
            write_config(cfg, doc)
            r = run_ltvd(LTVD, ["--check-config", "--config", cfg, *args], 2)
            check(needle in r.stderr and "config ok" not in r.stdout, f"{what}: {r.stderr}")
        r = run_ltvd(LTVD, ["--check-config", "--config", os.path.join(d, "missing.json")], 2)
        check("cannot open config" in r.stderr, r.stderr)

        # a model.bin that would not load under the config is found too
        with LtvdProcess(LTVD, {"model.hidden_size": "8", "train.network": "false", "clock": "event"},
                         storage_dir=data) as s:
            check(s.json("POST", "/v1/events", {"events": purchase_histories(300, seed=13)})[0] == 200)
            check(s.json("POST", "/v1/model/retrain")[0] == 202)
            check(wait_until(lambda: os.path.exists(os.path.join(data, "model.bin")), RETRAIN_WAIT_S))
        r = run_ltvd(LTVD, ["--check-config", "--set", f"storage.dir={data}", "--set", "model.hidden_size=8"], 0)
        r = run_ltvd(LTVD, ["--check-config", "--set", f"storage.dir={data}", "--set", "model.hidden_size=16"], 2)
        check("hidden" in r.stderr and "model.bin" in r.stderr, r.stderr)


if __name__ == "__main__":
    sys.exit(main_exit(*run_tests(TESTS)))
