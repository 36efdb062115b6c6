"""Training rules over HTTP, on shoppers the test makes (tools/simulate.py,
seeded; no CDNOW needed). tests/test_training_rules.c checks the example
cutting itself.

- Only matured labels train: while every shopper is younger than the
  horizon, a retrain refits the fallback and trains no network; once "now"
  (clock=event) has moved far enough, the same shoppers' early cut times
  have matured and the network trains.
- A new network serves only if it beats the serving model on validation:
  the first network beats the fallback and is swapped in, and GET /v1/model's
  `training` gives the level and p's calibration it serves with, also after
  a restart; after the restart, a
  retrain that cannot beat it (learning rate 1e-6, one epoch: it stays near
  its random start) is reported as not swapped, and the serving network,
  its figures and its predictions stay as they were, with no state rebuilt.
The harness checks every server's exit status and output on stop.
Usage: test_training_rules.py PATH_TO_LTVD SOURCE_ROOT"""
import importlib.util
import os
import random
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ltvd_harness import check, LtvdProcess, main_exit, run_tests, scaled, wait_until  # noqa: E402

LTVD, ROOT = sys.argv[1], sys.argv[2]
DAY = 86400
START = 1704067200  # 2024-01-01
BASE = {"clock": "event", "model.hidden_size": "8", "train.network": "true", "train.interval_s": "0",
        "train.seed": "3"}
RETRAIN_WAIT_S = 120  # bounds the poll for a retrain's end (scaled); not a timing assertion


def shoppers(n, days, seed):
    spec = importlib.util.spec_from_file_location("simulate", os.path.join(ROOT, "tools", "simulate.py"))
    sim = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sim)
    rng, out = random.Random(seed), []
    for i in range(n):
        for k, (d, kind, value) in enumerate(sim.shopper_events(rng, f"s{i}", days)):
            e = {"user_id": f"s{i}", "type": kind, "ts": START + int(d * DAY), "event_id": f"s{i}-{k}"}
            if kind in ("purchase", "refund"):
                e["value"] = round(value, 2)
            out.append(e)
    return out


def post_all(s, events):
    for k in range(0, len(events), 1000):
        status, body = s.json("POST", "/v1/events", {"events": events[k:k + 1000]})
        check(status == 200 and body["accepted"] == len(events[k:k + 1000]), body)


def finished_model(s):
    """GET /v1/model unless a retrain is running (then None)."""
    m = s.json("GET", "/v1/model")[1]
    return m if m["retrain"]["state"] != "running" else None


def retrain(s):
    """Starts a retrain and returns GET /v1/model once it is over."""
    status, body = s.json("POST", "/v1/model/retrain")
    check(status == 202, (status, body))
    m = wait_until(lambda: finished_model(s), RETRAIN_WAIT_S)
    check(m, f"a retrain still runs after {scaled(RETRAIN_WAIT_S):.0f} s")
    check(m["retrain"]["state"] == "idle" and m["retrain"]["last_error"] is None, m["retrain"])
    return m


def only_matured_labels_train():
    # 120 days of shoppers, horizon 182 days: no label has matured
    events = shoppers(300, 120, seed=21)
    with LtvdProcess(LTVD, BASE) as s:
        post_all(s, events)
        m = retrain(s)
        check(m["fallback"]["fitted"] is True, m["fallback"])
        check(m["status"] == "fallback" and m["trained_at"] is None, m)
        lt = m["retrain"]["last_training"]
        check(lt["examples"] == 0 and lt["epochs"] == 0 and lt["swapped"] is False, lt)
        check("network training skipped" in s.logs() and "too few matured examples" in s.logs())
        # one event 150 days after the last: now - H reaches day 88, and the
        # cut times of the grid there (days 88 and 58, every shopper seen
        # by then) have matured
        last = max(e["ts"] for e in events)
        status, _ = s.json("POST", "/v1/events", {"user_id": "clock", "type": "view", "ts": last + 150 * DAY})
        check(status == 200)
        m = retrain(s)
        lt = m["retrain"]["last_training"]
        check(lt["examples"] >= 70 and lt["epochs"] >= 1, lt)  # 50 training + 20 validation cuts at least
        print(f"  young: no network; 150 days later: {lt['examples']} matured examples, swapped={lt['swapped']}")


def swap_only_when_better():
    ids = [f"s{i}" for i in range(0, 1000, 23)]
    as_of = "2025-01-01T00:00:00Z"
    # both processes train from the rings, so both retrains cut the same
    # examples (the training history, filled when the first one stops, would
    # give the second another validation set)
    rules = {"model.horizon_days": "60", "train.history_events": "0"}
    with tempfile.TemporaryDirectory(prefix="ltvd-rules-") as d:
        with LtvdProcess(LTVD, dict(BASE, **rules, **{"train.max_epochs": "20"}), storage_dir=d) as s:
            post_all(s, shoppers(1000, 360, seed=22))
            v0 = s.json("GET", "/v1/model")[1]["version"]
            m1 = retrain(s)
            lt1 = m1["retrain"]["last_training"]
            # the network beat what served (the fallback) on validation: it serves
            check(lt1["val_loss_serving"] == lt1["val_loss_fallback"], lt1)
            check(lt1["val_loss"] < lt1["val_loss_serving"] and lt1["swapped"] is True, lt1)
            check(m1["status"] == "trained" and m1["trained_at"] is not None and m1["version"] > v0, m1)
            check(m1["training"]["examples"] == lt1["examples"] and m1["training"]["val_loss"] == lt1["val_loss"],
                  m1)
            # what the serving network applies is what its training chose
            tr1 = m1["training"]
            check((tr1["level_shift"], tr1["p_scale"], tr1["p_offset"]) ==
                  (lt1["level"]["shift"], lt1["level"]["p_scale"], lt1["level"]["p_offset"]), (tr1, lt1["level"]))
            check(tr1["level_shift"] != 0, tr1)
            p1 = s.json("POST", "/v1/ltv/batch", {"user_ids": ids, "as_of": as_of})[1]["predictions"]
            check(all(p["source"] == "network" and p["model_version"] == m1["version"] for p in p1), p1)

        # Same shoppers, same seed; a candidate that barely moves from its
        # random start cannot beat the trained network.
        with LtvdProcess(LTVD, dict(BASE, **rules, **{"train.max_epochs": "1", "train.learning_rate": "0.000001"}),
                         storage_dir=d) as s:
            m0 = s.json("GET", "/v1/model")[1]
            check(m0["status"] == "trained" and m0["version"] == m1["version"], m0)
            # after the restart the serving network's figures, its level and p's calibration included, are the
            # file's (the last training's are gone with the process)
            check(m0["training"] == m1["training"], (m0["training"], m1["training"]))
            m2 = retrain(s)
            lt = m2["retrain"]["last_training"]
            check(lt["epochs"] == 1 and lt["swapped"] is False, lt)
            check(lt["val_loss"] >= lt["val_loss_serving"], lt)
            # the serving network is what was judged, and it beats the fallback
            check(lt["val_loss_serving"] < lt["val_loss_fallback"], lt)
            # still the same network: same training figures and time, no
            # state rebuilt, the same predictions (the fallback refit that
            # every retrain starts with may publish a new version number)
            check(m2["status"] == "trained" and m2["trained_at"] == m0["trained_at"], m2)
            check(m2["training"] == m0["training"], (m2["training"], m0["training"]))
            check(s.metrics()["ltvd_state_rebuilds_total"] == 0)
            p2 = s.json("POST", "/v1/ltv/batch", {"user_ids": ids, "as_of": as_of})[1]["predictions"]
            for p, q in zip(p1, p2):
                check(q["source"] == "network" and q["model_version"] == m2["version"], q)
                # equal up to the answer's sixth decimal and the refit's own
                # tolerance: the refit starts from the fitted parameters and
                # may stop a hair away (a CI run under TSan: 0.252191 against
                # 0.252192); another network would differ by far more
                check(abs(p["ltv"] - q["ltv"]) <= 1e-6 + 1e-5 * max(p["ltv"], q["ltv"]), (p, q))
            print(f"  swapped: val loss {lt1['val_loss']:.4f} < fallback {lt1['val_loss_fallback']:.4f}; "
                  f"kept: candidate {lt['val_loss']:.4f} >= serving {lt['val_loss_serving']:.4f}")


def main():
    return main_exit(*run_tests([only_matured_labels_train, swap_only_when_better]))


if __name__ == "__main__":
    sys.exit(main())
