"""The idempotency window over HTTP (issue 12, items 4 and 9): an event_id
re-sent within limits.dedupe_window_s of its acceptance is a duplicate,
after it is applied again; limits.dedupe_max_ids caps the window and every
id pushed out early is counted in /metrics; each data directory gets its
own secret hash key, kept in its snapshots, so that the window (and the
shopper index) stay valid across a clean restart and a kill -9.

Usage: test_dedupe_window.py PATH_TO_LTVD"""
import glob
import os
import signal
import struct
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ltvd_harness import check, log_holds, test_registry, LtvdProcess, run_tests, scaled  # noqa: E402

LTVD = sys.argv[1]
TESTS, test = test_registry()
T0 = 1_735_689_600  # 2025-01-01: event times, fixed

# No periodic snapshot unless a test asks for one.
BASE = {"storage.snapshot_interval_s": "3600", "storage.snapshot_wal_bytes": str(1 << 40),
        "storage.erasure_snapshot_s": "3600"}


def settings(**kw):
    out = dict(BASE)
    out.update({k: str(v) for k, v in kw.items()})
    return out


def event(uid, eid, k=0):
    return {"user_id": uid, "type": "view", "ts": T0 + k, "event_id": eid}


def post(s, body):
    status, resp = s.json("POST", "/v1/events", body)
    check(status == 200, f"{status} {resp} for {body}")
    return resp


def events_of(s, uid):
    status, body = s.json("GET", f"/v1/users/{uid}")
    check(status == 200, f"{status} {body}")
    return body["events"]


def snapshots(d):
    return sorted(glob.glob(os.path.join(d, "snapshot-*.snap")))


def snapshot_key(path):
    """The secret hash key a snapshot of format 3 or later carries (after the 72-byte header)."""
    with open(path, "rb") as f:
        head = f.read(88)
    check(head[:8] == b"LTVDSNAP", path)
    check(struct.unpack_from("<I", head, 8)[0] == 5, f"{path}: format {struct.unpack_from('<I', head, 8)[0]}")
    return head[72:88]


@test
def repost_within_the_window_is_a_duplicate_and_applied_after_it():
    with LtvdProcess(LTVD, settings(**{"limits.dedupe_window_s": 2})) as s:
        check(post(s, event("w1", "win-1"))["accepted"] == 1)
        body = post(s, event("w1", "win-1"))
        check(body["duplicates"] == 1 and body["accepted"] == 0, f"re-sent at once: {body}")
        check(events_of(s, "w1") == 1)
        check(s.metric("ltvd_dedupe_entries") == 1)
        # re-sent until the window has passed: applied once then, not before
        deadline = time.monotonic() + scaled(30)
        while time.monotonic() < deadline:
            body = post(s, event("w1", "win-1"))
            if body["accepted"]:
                break
            check(body["duplicates"] == 1, body)
            check(events_of(s, "w1") == 1, "a duplicate is not applied")
            time.sleep(0.2)
        check(body["accepted"] == 1, f"win-1 still a duplicate long after the 2 s window: {body}")
        check(events_of(s, "w1") == 2)
        check(s.metric("ltvd_dedupe_evicted_early_total") == 0, "expiry is not early eviction")
        # and it is remembered again from its new acceptance
        check(post(s, event("w1", "win-1"))["duplicates"] == 1)


@test
def window_zero_turns_dedupe_off():
    with LtvdProcess(LTVD, settings(**{"limits.dedupe_window_s": 0})) as s:
        for _ in range(2):
            check(post(s, event("z", "same-id"))["accepted"] == 1)
        check(events_of(s, "z") == 2)
        check(s.metric("ltvd_dedupe_entries") == 0)


@test
def the_cap_evicts_the_oldest_early_and_counts_them():
    for key in ("limits.dedupe_max_ids", "limits.dedupe_window"):  # the second: the deprecated alias
        with LtvdProcess(LTVD, settings(**{key: 5})) as s:
            ids = [f"cap-{k}" for k in range(8)]
            post(s, {"events": [event("c", eid, k) for k, eid in enumerate(ids)]})
            check(s.metric("ltvd_dedupe_entries") == 5, key)
            check(s.metric("ltvd_dedupe_evicted_early_total") == 3, key)
            body = post(s, {"events": [event("c", eid, 10) for eid in ids[3:]]})
            check(body["duplicates"] == 5 and body["accepted"] == 0, f"{key}: the newest 5 are held: {body}")
            body = post(s, {"events": [event("c", eid, 20) for eid in ids[:3]]})
            check(body["accepted"] == 3 and body["duplicates"] == 0, f"{key}: the 3 oldest were evicted: {body}")
            check(s.metric("ltvd_dedupe_evicted_early_total") == 6, key)


@test
def each_data_dir_has_its_own_key_kept_across_restarts():
    """Two fresh data directories get different keys (read from their
    snapshots); a restart, clean or kill -9 after a snapshot, keeps the key,
    and an event_id accepted before it is still a duplicate after it."""
    with tempfile.TemporaryDirectory(prefix="ltvd-key-a-") as a, \
            tempfile.TemporaryDirectory(prefix="ltvd-key-b-") as b:
        keys = {}
        for d in (a, b):
            s = LtvdProcess(LTVD, settings(), storage_dir=d)
            post(s, event("k", "before-restart"))
            check(s.stop() == 0)
            keys[d] = snapshot_key(snapshots(d)[-1])
        check(keys[a] != keys[b], "two fresh instances drew the same key")

        # clean restart: the key and the window are back
        s = LtvdProcess(LTVD, settings(**{"storage.snapshot_interval_s": 1}), storage_dir=a)
        check(s.metric("ltvd_recovery_replayed_records") == 0, "the id comes from the snapshot")
        body = post(s, event("k", "before-restart"))
        check(body["duplicates"] == 1 and body["accepted"] == 0, f"after a clean restart: {body}")
        check(events_of(s, "k") == 1)

        # kill -9 once a periodic snapshot holds a new id and its segment is gone
        first = snapshots(a)[-1]
        check(post(s, event("k", "before-kill", 1))["accepted"] == 1)

        def only_in_snapshot():
            snaps = snapshots(a)
            if not snaps or snaps[-1] == first:
                return False
            return not log_holds(a, b"before-kill")

        deadline = time.monotonic() + scaled(30)
        while not only_in_snapshot() and time.monotonic() < deadline:
            time.sleep(0.1)
        check(only_in_snapshot(), "a periodic snapshot takes the id and drops its segment")
        check(s.stop(signal.SIGKILL) == -signal.SIGKILL)
        s = LtvdProcess(LTVD, settings(), storage_dir=a)
        check(s.metric("ltvd_recovery_replayed_records") == 0)
        body = post(s, {"events": [event("k", "before-restart", 2), event("k", "before-kill", 3)]})
        check(body["duplicates"] == 2 and body["accepted"] == 0, f"after kill -9: {body}")
        check(events_of(s, "k") == 2)
        check(s.stop() == 0)
        check(snapshot_key(snapshots(a)[-1]) == keys[a], "the key changed across restarts")


if __name__ == "__main__":
    passed, failed = run_tests(TESTS)
    print(f"{passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)
