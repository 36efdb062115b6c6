"""The training history on disk over HTTP (train.history_events > 0;
tests/test_training_history.c checks the file itself).

- A snapshot archives the log's events into storage.dir/history before
  it deletes the segments, and a retrain trains from them: with a ring of
  8 events (model.recent_events), shoppers with 40 events each over two
  years give the trainer more events than their rings hold, and more
  matured examples than the same shoppers give with the history off;
  the history and the events logged since the last snapshot (from the
  rings) make up each shopper's sequence with every event once.
- DELETE a shopper: the snapshot that the erasure schedules (within
  storage.erasure_snapshot_s) archives the tombstone and compacts, so the
  shopper's records are gone from the history's files (its unique spend
  value, as the record's f32 bytes, is no longer in them), the figures
  count them out, and of the 16 parts only the shopper's was rewritten.
- train.history_events = 0 at a restart removes the files.
- train.max_events cuts the sample by id hash to fit its budget, with the
  history and from the rings; a budget that cannot bind (sampled shoppers
  x train.history_events within it) is not checked by a count of the
  history's records (one read of it fewer).
- A history turned on after the rings filled (an upgrade) keeps each
  shopper's older ring events before what it archived.
- A history damaged on disk while ltvd runs (a flipped byte in a part's
  last chunk): a retrain trains on the rings (with a warning) instead of
  failing or reading half the file, and the erasure snapshot, whose
  compaction cannot read the file whole, deletes it and starts afresh:
  the erased shopper's records are not left behind the damaged chunk.
Usage: test_training_history.py PATH_TO_LTVD"""
import glob
import os
import struct
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ltvd_harness import check, LtvdProcess, main_exit, run_tests, scaled, wait_until  # noqa: E402

LTVD = sys.argv[1]
DAY = 86400
START = 1640995200  # 2022-01-01
SHOPPERS, EVENTS_EACH, RING = 120, 40, 8
BASE = {"clock": "event", "model.hidden_size": "8", "model.recent_events": str(RING), "model.horizon_days": "60",
        "train.network": "true", "train.interval_s": "0", "train.seed": "3", "train.max_epochs": "3",
        "storage.snapshot_interval_s": "3600", "storage.erasure_snapshot_s": "1", "train.history_events": "0"}
ON = dict(BASE, **{"train.history_events": "1024"})
WAIT_S = 120  # bounds the polls (scaled); not a timing assertion
TYPES = ["view", "click", "add_to_cart", "purchase"]
COUNTED = "training history counted for train.max_events"  # trainset.c's debug line: a read of the history


def events_of(i):
    """Shopper i: EVENTS_EACH events over about two years, every 4th a
    purchase whose value is unique to the shopper (i + 0.25)."""
    out = []
    for k in range(EVENTS_EACH):
        kind = TYPES[(k + i) % 4]
        e = {"user_id": f"h{i}", "type": kind, "ts": START + (k * 17 + i % 11) * DAY + k * 60,
             "event_id": f"h{i}-{k}"}
        if kind == "purchase":
            e["value"] = 1000 + i + 0.25
        out.append(e)
    return out


def post_all(s):
    events = [e for i in range(SHOPPERS) for e in events_of(i)]
    for k in range(0, len(events), 1000):
        status, body = s.json("POST", "/v1/events", {"events": events[k:k + 1000]})
        check(status == 200 and body["accepted"] == len(events[k:k + 1000]), body)
    return len(events)


def history(s):
    return s.json("GET", "/v1/model")[1]["history"]


def snapshot(s, archives_before):
    status, body = s.json("POST", "/v1/admin/snapshot")
    check(status == 202, (status, body))
    h = wait_until(lambda: (lambda h: h if h["archives"] > archives_before else None)(history(s)), WAIT_S)
    check(h, f"no archive after {scaled(WAIT_S):.0f} s")
    return h


def retrain(s):
    status, body = s.json("POST", "/v1/model/retrain")
    check(status == 202, (status, body))
    m = wait_until(lambda: (lambda m: m if m["retrain"]["state"] != "running" else None)(
        s.json("GET", "/v1/model")[1]), WAIT_S)
    check(m, f"a retrain still runs after {scaled(WAIT_S):.0f} s")
    check(m["retrain"]["state"] == "idle" and m["retrain"]["last_error"] is None, m["retrain"])
    return m["retrain"]["last_training"]


def hist_files(s):
    """The history's parts (events-NN.hist), in part order."""
    return sorted(glob.glob(os.path.join(s.storage_dir, "history", "events*.hist")))


def hist_data(s):
    data = b""
    for path in hist_files(s):
        with open(path, "rb") as f:
            data += f.read()
    return data


def part_sizes(s):
    return {path: os.path.getsize(path) for path in hist_files(s)}


def value_bytes(i):
    return struct.pack("<f", 1000 + i + 0.25)


def history_feeds_training():
    with LtvdProcess(LTVD, BASE) as s:
        post_all(s)
        h = history(s)
        check(h["enabled"] is False and h["records"] == 0, h)
        snapshot_off = s.json("POST", "/v1/admin/snapshot")
        check(snapshot_off[0] == 202, snapshot_off)
        off = retrain(s)
        check(not hist_files(s), "history file written while off")
    with LtvdProcess(LTVD, ON) as s:
        total = post_all(s)
        h = snapshot(s, 0)
        check(h["enabled"] is True and h["records"] == total and h["archived_seq"] > 0, h)
        check(h["bytes"] == len(hist_data(s)) and h["bytes_per_event"] == 20, h)
        check(h["bytes"] < total * 21 + 4096, h)  # 20 bytes an event, and the headers
        on = retrain(s)
        # the rings hold RING events a shopper; the trainer saw the histories
        check(off["events"] <= RING * SHOPPERS, off)
        check(on["events"] > 3 * RING * SHOPPERS and on["history_events"] > 0, on)
        check(on["events"] == total and on["history_events"] == total, on)  # each event once
        check(on["examples"] > off["examples"], (on["examples"], off["examples"]))
        print(f"  ring: {off['events']} events, {off['examples']} examples; history: {on['events']} events "
              f"({on['history_events']} from disk), {on['examples']} examples")
        # events logged since the snapshot come from the rings, after the
        # history, each once: one at the same second as the shopper's last
        # archived event (a tie the merge must count) and 4 later ones
        fresh = []
        for i in range(10):
            last = events_of(i)[-1]["ts"]
            fresh += [{"user_id": f"h{i}", "type": "view", "ts": last + 60 * k, "event_id": f"h{i}-new{k}"}
                      for k in range(5)]
        status, body = s.json("POST", "/v1/events", {"events": fresh})
        check(status == 200 and body["accepted"] == len(fresh), body)
        again = retrain(s)
        check(again["events"] == total + len(fresh) and again["history_events"] == total, again)
        # the next snapshot archives them, and nothing twice
        h2 = snapshot(s, h["archives"])
        check(h2["records"] == total + len(fresh) and h2["archived_seq"] > h["archived_seq"], (h, h2))
        third = retrain(s)
        check(third["events"] == total + len(fresh) and third["history_events"] == total + len(fresh), third)


def erasure_leaves_history():
    storage = tempfile.TemporaryDirectory(prefix="ltvd-test-")
    with LtvdProcess(LTVD, ON, storage_dir=storage.name) as s:
        total = post_all(s)
        h = snapshot(s, 0)
        # no part compacted yet (each far under 1 MiB): no shopper counted, and the figures say so
        check(h["shoppers"] == 0 and h["parts"] == 16 and h["parts_not_compacted"] == list(range(16)), h)
        data = hist_data(s)
        check(value_bytes(7) in data and value_bytes(8) in data, "the purchases are in the history file")
        sizes = part_sizes(s)
        status, _ = s.request("DELETE", "/v1/users/h7")[:2]
        check(status == 204, status)
        # the erasure's own snapshot (storage.erasure_snapshot_s) archives its tombstone and compacts
        h2 = wait_until(lambda: (lambda x: x if x["compactions"] > h["compactions"] else None)(history(s)), WAIT_S)
        check(h2, f"no compaction after the erasure within {scaled(WAIT_S):.0f} s")
        check(h2["records"] == total - EVENTS_EACH and h2["tombstones"] == 0, h2)
        check(0 < h2["shoppers"] < SHOPPERS, h2)  # the compacted part's shoppers: the others (listed below) are not
        data = hist_data(s)
        check(value_bytes(7) not in data, "the erased shopper's records are still in the history file")
        check(value_bytes(8) in data, "the other shoppers' records must stay")
        # the erasure rewrote one part: the others only grew by the archive's (empty) chunk
        changed = [p for p, n in part_sizes(s).items() if n < sizes[p]]
        check(len(changed) == 1 and len(sizes) == 16, (changed, len(sizes)))
        rewritten = int(os.path.basename(changed[0])[len("events-"):-len(".hist")])
        check(h2["parts_not_compacted"] == [i for i in range(16) if i != rewritten], (rewritten, h2))
    # restarted with the history off: the file goes
    with storage:
        with LtvdProcess(LTVD, BASE, storage_dir=storage.name) as s2:
            check(not hist_files(s2), "history file left with train.history_events = 0")
            check("training history removed" in s2.logs(), s2.logs())


def damaged_history_is_reset():
    with LtvdProcess(LTVD, ON) as s:
        post_all(s)
        h = snapshot(s, 0)
        sizes = part_sizes(s)
        last = START + 800 * DAY
        more = [{"user_id": "h1", "type": "view", "ts": last + 60 * k, "event_id": f"h1-more{k}"} for k in range(5)]
        status, body = s.json("POST", "/v1/events", {"events": more})
        check(status == 200 and body["accepted"] == len(more), body)
        h2 = snapshot(s, h["archives"])
        check(h2["records"] == h["records"] + len(more), (h, h2))
        # h1's part: the one whose new chunk holds records, not only a header
        grown = [p for p, n in part_sizes(s).items() if n > sizes[p] + 24]
        check(len(grown) == 1, grown)
        with open(grown[0], "r+b") as f:  # the new chunk's first record
            f.seek(sizes[grown[0]] + 24 + 3)
            b = f.read(1)
            f.seek(sizes[grown[0]] + 24 + 3)
            f.write(bytes([b[0] ^ 0x40]))
        t = retrain(s)
        check(t["history_events"] == 0 and t["events"] <= RING * SHOPPERS, t)
        check("training history unreadable" in s.logs(), "no warning for the unreadable history")
        status, _ = s.request("DELETE", "/v1/users/h7")[:2]
        check(status == 204, status)
        # history_reset's own line, logged once the new file and its figures are in place (the
        # snapshot's line before it also ends in "deleted and started afresh": waiting for that
        # one raced the reset)
        ok = wait_until(lambda: 'msg="training history deleted and started afresh"' in s.logs(), WAIT_S)
        check(ok, f"the damaged history was not reset within {scaled(WAIT_S):.0f} s")
        data = hist_data(s)
        check(value_bytes(7) not in data and value_bytes(8) not in data, "records left in the reset history")
        h3 = history(s)
        check(h3["records"] == 0 and h3["bytes"] == len(data) == 16 * 16, h3)


def event_budget_cuts_the_sample():
    """train.max_events: a training set that would hold more events loses
    the shoppers with the highest id hashes until it fits. With the
    history, each shopper is counted by its records there (40), so the
    budget cuts only once a snapshot has archived them (before, the rings
    of 8 fit); from the rings (of 16 here), by its ring."""
    budget = 3200
    with LtvdProcess(LTVD, dict(ON, **{"train.max_events": str(budget), "log.level": "debug"})) as s:
        total = post_all(s)
        retrain(s)
        check("training sample cut" not in s.logs(), "cut while the history was empty: the rings fit")
        snapshot(s, 0)
        t = retrain(s)
        kept = budget // EVENTS_EACH
        line = f"shoppers_before={SHOPPERS} shoppers={kept} events={budget} budget={budget}"
        check(total > budget and line in s.logs(), (line, [x for x in s.logs().splitlines() if "cut" in x]))
        check(t["events"] == budget and t["history_events"] == budget, t)  # 80 shoppers' 40 events, from disk
        counted = f"shoppers={SHOPPERS} records={total}"
        check(any(COUNTED in x and counted in x for x in s.logs().splitlines()), (counted, s.logs()[-2000:]))
    ring = 16
    with LtvdProcess(LTVD, dict(BASE, **{"model.recent_events": str(ring), "train.max_events": "1000"})) as s:
        post_all(s)
        retrain(s)
        kept = 1000 // ring
        line = f"shoppers_before={SHOPPERS} shoppers={kept} events={kept * ring} budget=1000"
        check(line in s.logs(), (line, [x for x in s.logs().splitlines() if "cut" in x]))


def unbound_budget_reads_no_count():
    """A budget that cannot bind (sampled shoppers x train.history_events
    at most train.max_events: 120 x 40 = 4800 here) is not checked by
    reading the history once more to count each shopper's records: no
    count is logged, and the retrain still trains on every event of the
    history, uncut."""
    cap = EVENTS_EACH
    conf = {"train.history_events": str(cap), "train.max_events": str(SHOPPERS * cap), "log.level": "debug"}
    with LtvdProcess(LTVD, dict(ON, **conf)) as s:
        total = post_all(s)
        snapshot(s, 0)
        t = retrain(s)
        check(t["events"] == total and t["history_events"] == total, t)
        check("network trained" in s.logs() and "training epoch" in s.logs(), "no debug lines: log.level ignored?")
        check(COUNTED not in s.logs() and "training sample cut" not in s.logs(),
              [x for x in s.logs().splitlines() if "counted" in x or "cut" in x])


def young_history_keeps_the_ring():
    """The history turned on where shoppers already have rings (an
    upgrade): it holds only what was archived since, so each shopper's
    older ring events come before it in the training sequence, not
    dropped. Each shopper: 40 events with the history off, then one more
    with it on and a snapshot: the retrain reads its 8-event ring (7 old, 1
    new), one of them from the history."""
    storage = tempfile.TemporaryDirectory(prefix="ltvd-test-")
    with storage:
        with LtvdProcess(LTVD, BASE, storage_dir=storage.name) as s:
            post_all(s)
        with LtvdProcess(LTVD, ON, storage_dir=storage.name) as s:
            more = [{"user_id": f"h{i}", "type": "view", "ts": events_of(i)[-1]["ts"] + 3600,
                     "event_id": f"h{i}-late"} for i in range(SHOPPERS)]
            status, body = s.json("POST", "/v1/events", {"events": more})
            check(status == 200 and body["accepted"] == SHOPPERS, body)
            h = snapshot(s, 0)
            check(h["records"] == SHOPPERS, h)
            t = retrain(s)
            check(t["events"] == SHOPPERS * RING and t["history_events"] == SHOPPERS, t)


def bad_keys_refused():
    for key, value in (("train.history_events", "2000"), ("train.history_events", "-1"), ("train.max_events", "999"),
                       ("train.history_days", "0"), ("train.history_max_mb", "0")):
        with tempfile.TemporaryDirectory(prefix="ltvd-test-") as d:
            r = subprocess.run([LTVD, "--set", f"storage.dir={d}", "--set", f"{key}={value}", "--check-config"],
                               capture_output=True, text=True, timeout=30)
            check(r.returncode != 0 and key in (r.stdout + r.stderr), (key, value, r.returncode, r.stderr))


def main():
    tests = [history_feeds_training, erasure_leaves_history, damaged_history_is_reset, event_budget_cuts_the_sample,
             unbound_budget_reads_no_count, young_history_keeps_the_ring, bad_keys_refused]
    only = [f for f in tests if f.__name__ in sys.argv[2:]]
    return main_exit(*run_tests(only or tests))


if __name__ == "__main__":
    sys.exit(main())
