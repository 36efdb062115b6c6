"""The hot backup of docs/OPERATIONS.md ("Backup and restore", way 3), run as
written while a client posts events, restores to a service that has every
event acknowledged before the copy began, once.

ltvd runs with 64 KiB log segments and a snapshot every 64 KiB of log, so
segments rotate and snapshots delete files around and during each copy (the
races the documented order is for); each of 3 copies starts just after a
snapshot. The block is taken from the runbook itself;
a copy that fails because a file vanished is taken again into an empty
directory, as the runbook says. Each backup is then copied to a fresh
storage.dir and started: every acknowledged event's shopper is known, and
posting those events again finds each one a duplicate (the dedupe window
came back too), so nothing is missing and nothing would count twice.
A second test shows why the order matters: segments copied before a newer
snapshot make a copy ltvd refuses to start on.

Usage: test_backup.py PATH_TO_LTVD SOURCE_ROOT"""
import http.client
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ltvd_harness import check, LtvdProcess, main_exit, run_tests, scaled, test_registry, wait_until  # noqa: E402

LTVD, ROOT = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
tests, test = test_registry()
SETTINGS = {"storage.wal_segment_bytes": "65536", "storage.snapshot_wal_bytes": "65536"}
BATCH = 50
ROUNDS = 3
ATTEMPTS = 20


def runbook_block():
    """The shell block of docs/OPERATIONS.md that copies storage.dir."""
    with open(os.path.join(ROOT, "docs", "OPERATIONS.md")) as f:
        text = f.read()
    m = re.search(r"^```sh\n(# DATA: ltvd's storage\.dir; BACKUP: a new, empty directory\.\n.*?)^```", text,
                  re.M | re.S)
    check(m, "docs/OPERATIONS.md has no backup block starting '# DATA: ltvd's storage.dir; BACKUP: ...'")
    return m.group(1)


class Writer(threading.Thread):
    """Posts batches of BATCH events (one new shopper each, with event ids)
    until stopped; `acked` lists the events of every batch answered 200."""

    def __init__(self, port):
        super().__init__(daemon=True)
        self.port, self.acked, self.errors = port, [], []
        self.stopping = threading.Event()
        self.lock = threading.Lock()

    def run(self):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=scaled(30))
        i = 0
        try:
            while not self.stopping.is_set():
                events = [{"user_id": f"u{i + k}", "event_id": f"e{i + k}", "type": "purchase", "value": 10 + k}
                          for k in range(BATCH)]
                body = '{"events":[%s]}' % ",".join(
                    '{"user_id":"%s","event_id":"%s","type":"purchase","value":%d}'
                    % (e["user_id"], e["event_id"], e["value"]) for e in events)
                conn.request("POST", "/v1/events", body=body, headers={"Content-Type": "application/json"})
                resp = conn.getresponse()
                data = resp.read()
                if resp.status != 200:
                    self.errors.append(f"{resp.status} {data[:200]!r}")
                    return
                with self.lock:
                    self.acked.extend(events)
                i += BATCH
                time.sleep(0.005)  # about 10k events/s: a snapshot's worth of log a second, not more
        except OSError as e:
            self.errors.append(repr(e))
        finally:
            conn.close()

    def snapshot(self):
        with self.lock:
            return list(self.acked)


def take_backup(block, data, work, round_no):
    """Runs the runbook's block until one copy succeeds; returns (dir, attempts)."""
    last = None
    for attempt in range(1, ATTEMPTS + 1):
        backup = os.path.join(work, f"backup-{round_no}-{attempt}")
        os.mkdir(backup)
        r = subprocess.run(["sh", "-c", block], env=dict(os.environ, DATA=data, BACKUP=backup),
                           capture_output=True, text=True, timeout=scaled(60))
        if r.returncode == 0:
            return backup, attempt
        last = r.stderr
        shutil.rmtree(backup)
    raise AssertionError(f"the runbook's copy failed {ATTEMPTS} times; last error:\n{last}")


def check_restore(backup, work, round_no, acked):
    """Starts ltvd on a copy of backup; every acked event is there, once."""
    restore = os.path.join(work, f"restore-{round_no}")
    shutil.copytree(backup, restore)
    with LtvdProcess(LTVD, settings=SETTINGS, storage_dir=restore, ready_timeout=60) as srv:
        ids = [e["user_id"] for e in acked]
        for k in range(0, len(ids), 1000):
            status, body = srv.json("POST", "/v1/ltv/batch", {"user_ids": ids[k:k + 1000]})
            check(status == 200, f"batch read answered {status}")
            unknown = [p["user_id"] for p in body["predictions"] if not p["known"]]
            check(not unknown, f"round {round_no}: {len(unknown)} shoppers acknowledged before the copy are "
                  f"missing from the restore, e.g. {unknown[:5]}")
        for k in range(0, len(acked), 1000):
            chunk = [{"user_id": e["user_id"], "event_id": e["event_id"], "type": "purchase", "value": e["value"]}
                     for e in acked[k:k + 1000]]
            status, body = srv.json("POST", "/v1/events", {"events": chunk})
            check(status == 200 and body["duplicates"] == len(chunk) and body["accepted"] == 0,
                  f"round {round_no}: re-posting acknowledged events answered {status} {body}: "
                  "the restore lost events or their event ids")
    shutil.rmtree(restore)


@test
def hot_copy_in_runbook_order_restores_every_acknowledged_event():
    block = runbook_block()
    work = tempfile.mkdtemp(prefix="ltvd-backup-")
    try:
        with LtvdProcess(LTVD, settings=SETTINGS) as srv:
            writer = Writer(srv.port)
            writer.start()
            backups, attempts = [], []
            try:
                for round_no in range(ROUNDS):
                    # Each copy after another snapshot has deleted files (the
                    # snapshot timer looks once a second).
                    seen = srv.metric("ltvd_snapshots_total")
                    check(wait_until(lambda: srv.metric("ltvd_snapshots_total") > seen, 60),
                          f"round {round_no}: no snapshot within 60 s while events were posted")
                    time.sleep(0.2)
                    acked = writer.snapshot()
                    backup, n = take_backup(block, srv.storage_dir, work, round_no)
                    backups.append((backup, acked))
                    attempts.append(n)
            finally:
                writer.stopping.set()
                writer.join(scaled(60))
            check(not writer.errors, f"the writer failed: {writer.errors}")
            snapshots = srv.metric("ltvd_snapshots_total")
        for round_no, (backup, acked) in enumerate(backups):
            check(acked, f"round {round_no}: no event acknowledged before the copy")
            check_restore(backup, work, round_no, acked)
        print(f"  {ROUNDS} copies, attempts {attempts}, {len(backups[-1][1])} events acknowledged before the last, "
              f"{snapshots:.0f} snapshots during the run")
    finally:
        shutil.rmtree(work, ignore_errors=True)


@test
def snapshot_copied_after_the_segments_is_refused():
    """Why the order: segments copied first, then a snapshot taken in between
    (here one forced by an erasure), then that newer snapshot: the copy lacks
    the segment the snapshot needs, and ltvd refuses to start on it rather
    than serve without the events logged after the snapshot."""
    work = tempfile.mkdtemp(prefix="ltvd-backup-")
    try:
        settings = dict(SETTINGS, **{"storage.erasure_snapshot_s": "0"})
        with LtvdProcess(LTVD, settings=settings) as srv:
            events = [{"user_id": f"w{i}", "event_id": f"w{i}", "type": "purchase", "value": 5} for i in range(200)]
            check(srv.json("POST", "/v1/events", {"events": events})[0] == 200, "posting events failed")
            backup = os.path.join(work, "wrong-order")
            os.mkdir(backup)
            for name in sorted(os.listdir(srv.storage_dir)):
                if name.startswith("wal-"):
                    shutil.copy(os.path.join(srv.storage_dir, name), backup)
            before = srv.metric("ltvd_snapshots_total")
            check(srv.request("DELETE", "/v1/users/w0")[0] == 204, "the erasure failed")
            check(srv.json("POST", "/v1/events", {"events": [dict(events[1], event_id="late")]})[0] == 200,
                  "posting after the erasure failed")
            check(wait_until(lambda: srv.metric("ltvd_snapshots_total") > before, 30),
                  "no snapshot followed the erasure")
            snaps = sorted(n for n in os.listdir(srv.storage_dir) if n.endswith(".snap"))
            shutil.copy(os.path.join(srv.storage_dir, snaps[-1]), backup)
        r = subprocess.run([LTVD, "--set", f"storage.dir={backup}", "--set", "server.port=0"],
                           capture_output=True, text=True, timeout=scaled(60))
        check(r.returncode != 0 and "is missing" in r.stderr,
              f"ltvd started on a copy without the newest snapshot's segment (exit {r.returncode}):\n"
              f"{r.stderr[-1500:]}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main_exit(*run_tests(tests)))
