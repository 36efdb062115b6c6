"""Durability: kill -9 under load loses no acknowledged event and applies
none twice; erasure survives kill -9 and leaves the disk; torn and
bit-flipped log tails are truncated and reported; corruption in the middle
of the log stops the start. The kill moments are random from a seed that
is printed; LTVD_TEST_SEED=N repeats a run. Usage: test_durability.py PATH_TO_LTVD"""
import glob
import os
import random
import signal
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ltvd_harness import check, LtvdProcess, main_exit, run_ltvd, run_tests, scaled, wait_until  # noqa: E402

LTVD = sys.argv[1]
SETTINGS = {"storage.fsync": "always", "storage.snapshot_interval_s": "3600", "storage.erasure_snapshot_s": "1"}
SEED = int(os.environ.get("LTVD_TEST_SEED") or random.SystemRandom().randrange(1 << 31))


class Client(threading.Thread):
    """Posts single events and batches of 5 with unique event_ids for its own
    shoppers until stopped; remembers what was sent and what was answered 200."""

    def __init__(self, server, tid, round_no, sent, acked, stop):
        super().__init__(daemon=True)
        self.s, self.tid, self.round, self.sent, self.acked, self.stop = server, tid, round_no, sent, acked, stop

    def run(self):
        import http.client
        rng = random.Random(SEED * 1000003 + self.tid * 1000 + self.round)
        k = 0
        conn = None
        while not self.stop.is_set():
            n = 1 if rng.random() < 0.5 else 5
            events = []
            for _ in range(n):
                k += 1
                events.append({"user_id": f"t{self.tid}-u{rng.randrange(15)}", "type": "purchase", "value": 1.0,
                               "event_id": f"r{self.round}-t{self.tid}-{k}"})
            self.sent.extend(events)
            body = events[0] if n == 1 else {"events": events}
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", self.s.port, timeout=scaled(5))
                status, _, _ = self.s.request("POST", "/v1/events", body, conn=conn)
                if status == 200:
                    self.acked.extend(events)
            except OSError:
                conn = None
                time.sleep(0.01)
            except Exception:
                conn = None


def counts_by_user(events):
    out = {}
    for e in events:
        out[e["user_id"]] = out.get(e["user_id"], 0) + 1
    return out


def kill9_rounds():
    print(f"kill9_rounds: seed {SEED} (LTVD_TEST_SEED={SEED} repeats the kill moments)")
    rng = random.Random(SEED)
    with tempfile.TemporaryDirectory(prefix="ltvd-crash-") as d:
        all_sent = []
        for rnd in range(4):
            s = LtvdProcess(LTVD, SETTINGS, storage_dir=d)
            sent, acked, stop = [], [], threading.Event()
            clients = [Client(s, t, rnd, sent, acked, stop) for t in range(4)]
            for c in clients:
                c.start()
            # at a random moment once the load runs, mid-request
            check(wait_until(lambda: len(acked) > 20, 30, 0.01), f"round {rnd}: too few acknowledged events")
            time.sleep(rng.uniform(0.0, 0.8))
            s.stop(signal.SIGKILL)
            stop.set()
            for c in clients:
                c.join(scaled(10))
            s = LtvdProcess(LTVD, SETTINGS, storage_dir=d)
            # every acknowledged event is there; nothing is there twice
            have = counts_by_user(all_sent)  # events of earlier rounds: all there
            acked_now = counts_by_user(acked)
            sent_now = counts_by_user(sent)
            for u in set(have) | set(sent_now):
                status, summary = s.json("GET", f"/v1/users/{u}")
                got = summary["events"] if status == 200 else 0
                lo = have.get(u, 0) + acked_now.get(u, 0)
                hi = have.get(u, 0) + sent_now.get(u, 0)
                check(lo <= got <= hi, f"round {rnd}, {u}: {got} events, acknowledged says >= {lo}, sent <= {hi}")
            # re-sending everything: acknowledged ids are duplicates; afterwards
            # every sent event is present exactly once
            for i in range(0, len(sent), 200):
                status, body = s.json("POST", "/v1/events", {"events": sent[i:i + 200]})
                check(status == 200, body)
            acked_ids = {e["event_id"] for e in acked}
            all_sent.extend(sent)
            total = counts_by_user(all_sent)
            for u, n in total.items():
                got = s.json("GET", f"/v1/users/{u}")[1]["events"]
                check(got == n, f"round {rnd}, {u}: {got} events after re-send, expected exactly {n}")
            status, body = s.json("POST", "/v1/events", {"events": [e for e in acked][:100]})
            check(body["duplicates"] == min(100, len(acked_ids)) and body["accepted"] == 0, body)
            s.stop(signal.SIGKILL)


def erasure_survives_kill9():
    with tempfile.TemporaryDirectory(prefix="ltvd-erase-") as d:
        s = LtvdProcess(LTVD, SETTINGS, storage_dir=d)
        secret = "shopper-to-forget-8d1f"
        for k in range(5):
            s.json("POST", "/v1/events", {"user_id": secret, "type": "purchase", "value": 3, "event_id": f"x{k}"})
        s.json("POST", "/v1/events", {"user_id": "stays", "type": "view"})
        check(s.request("DELETE", f"/v1/users/{secret}")[0] == 204)
        s.stop(signal.SIGKILL)  # before any snapshot
        with LtvdProcess(LTVD, SETTINGS, storage_dir=d) as s:
            check(s.json("GET", f"/v1/users/{secret}")[0] == 404, "erasure must survive kill -9")
            check(s.json("GET", "/v1/users/stays")[0] == 200)

            # prompt compaction (storage.erasure_snapshot_s = 1): soon no file on disk mentions the id
            def on_disk():
                blobs = [open(p, "rb").read() for p in glob.glob(os.path.join(d, "*")) if os.path.isfile(p)]
                return any(secret.encode() in b for b in blobs)

            check(wait_until(lambda: not on_disk(), 15, 0.2), "erased id still on disk")


def damaged_tail(kind):
    with tempfile.TemporaryDirectory(prefix=f"ltvd-{kind}-") as d:
        s = LtvdProcess(LTVD, SETTINGS, storage_dir=d)
        for k in range(10):
            check(s.json("POST", "/v1/events", {"user_id": "tail", "type": "view", "event_id": f"e{k}"})[0] == 200)
        s.stop(signal.SIGKILL)
        seg = sorted(glob.glob(os.path.join(d, "wal-*.log")))[-1]
        data = bytearray(open(seg, "rb").read())
        if kind == "truncated":
            data = data[:-7]            # the last record loses its end
        else:
            data[-3] ^= 0x40            # one bit of the last record flips
        open(seg, "wb").write(data)
        with LtvdProcess(LTVD, SETTINGS, storage_dir=d) as s:
            got = s.json("GET", "/v1/users/tail")[1]["events"]
            check(got == 9, f"{kind} tail: {got} events, expected the 9 before the damaged record")
            check(s.metrics()["ltvd_wal_truncations_total"] == 1, "truncation is reported in metrics")
            check("truncated" in s.logs(), "and in the log")
            # the log goes on after the cut: new writes survive another restart
            check(s.json("POST", "/v1/events", {"user_id": "tail", "type": "view", "event_id": "after"})[0] == 200)
            s.stop(signal.SIGKILL)
        with LtvdProcess(LTVD, SETTINGS, storage_dir=d) as s:
            check(s.json("GET", "/v1/users/tail")[1]["events"] == 10)


def truncated_tail():
    damaged_tail("truncated")


def bitflipped_tail():
    damaged_tail("bitflip")


def middle_corruption_stops_start():
    """A corrupt record in the middle of the log: the start is refused with
    exit status 1 (main.c: recovery failed) and the log left untouched."""
    with tempfile.TemporaryDirectory(prefix="ltvd-middle-") as d:
        s = LtvdProcess(LTVD, SETTINGS, storage_dir=d)
        for k in range(10):
            check(s.json("POST", "/v1/events", {"user_id": "mid", "type": "view"})[0] == 200)
        s.stop(signal.SIGKILL)
        seg = sorted(glob.glob(os.path.join(d, "wal-*.log")))[0]
        data = bytearray(open(seg, "rb").read())
        data[30] ^= 0x01  # inside the first record
        open(seg, "wb").write(data)
        args = ["--set", f"storage.dir={d}", "--set", "server.bind=127.0.0.1", "--set", "server.port=0"]
        r = run_ltvd(LTVD, args, 1)
        check("corrupt record" in r.stderr, r.stderr[-500:])
        data[30] ^= 0x01
        data[0:4] = b"\0\0\0\0"  # a zeroed length field, valid records after it
        open(seg, "wb").write(data)
        r = run_ltvd(LTVD, args, 1)
        check("corrupt record" in r.stderr, r.stderr[-500:])
        check(open(seg, "rb").read() == data, "and the log is left untouched")


def clean_restart_replays_nothing():
    with tempfile.TemporaryDirectory(prefix="ltvd-clean-") as d:
        with LtvdProcess(LTVD, SETTINGS, storage_dir=d) as s:
            s.json("POST", "/v1/events", {"events": [{"user_id": f"c{k}", "type": "view"} for k in range(50)]})
            check(s.stop() == 0)
        check(glob.glob(os.path.join(d, "snapshot-*.snap")), "clean shutdown writes a snapshot")
        with LtvdProcess(LTVD, SETTINGS, storage_dir=d) as s:
            m = s.metrics()
            check(m["ltvd_users"] == 50 and m["ltvd_recovery_replayed_records"] == 0, m)


M64 = (1 << 64) - 1


def old_hash64(data, seed):
    """hash64 of src/hash.c: the unkeyed hash ltvd used before format 3."""
    def mix(x):
        x ^= x >> 32
        x = x * 0xd6e8feb86659fd93 & M64
        x ^= x >> 32
        x = x * 0xd6e8feb86659fd93 & M64
        return x ^ (x >> 32)
    h = seed ^ (len(data) * 0x9e3779b97f4a7c15 & M64)
    while len(data) >= 8:
        h = (mix(h ^ int.from_bytes(data[:8], "little")) + 0x9e3779b97f4a7c15) & M64
        data = data[8:]
    return mix(h ^ int.from_bytes(data, "little") ^ (len(data) << 56 & M64))


def old_format_snapshots_are_read():
    """Snapshots of the earlier formats still restore their shoppers and
    their dedupe window: formats 4 and 3 (the prediction log without its
    networks, and without its pairs' serving time; tests/test_snapshot.c
    reads such entries and pairs), format 2 (no hash key, dedupe keys of the
    unkeyed hash without arrival times) and format 1 (no prediction log
    either), made here from a format-5 one. The event_ids in them are
    duplicates after the start, new ones are not, and the next snapshot is
    format 5."""
    import struct
    import zlib
    ids = [f"old-eid-{k}" for k in range(20)]
    for fmt in (4, 3, 2, 1):
        with tempfile.TemporaryDirectory(prefix=f"ltvd-snap{fmt}-") as d:
            with LtvdProcess(LTVD, SETTINGS, storage_dir=d) as s:
                s.json("POST", "/v1/events", {"events": [{"user_id": f"f{k}", "type": "view", "event_id": ids[k]}
                                                         for k in range(20)]})
            [path] = glob.glob(os.path.join(d, "snapshot-*.snap"))
            data = open(path, "rb").read()
            check(struct.unpack_from("<I", data, 8)[0] == 5, "snapshots are written in format 5")
            slot_bytes, = struct.unpack_from("<I", data, 20)
            users, keys = struct.unpack_from("<QQ", data, 48)
            check(users == 20 and keys == 20, (users, keys))
            slots_at = 72 + 24  # the header, then the hash key and the legacy count
            dedupe_at = slots_at + users * slot_bytes
            tail = data[dedupe_at + keys * 16:-4]
            check(tail == bytes(16), "no prediction log: both counts are zero")
            old = bytearray(data[:72])
            struct.pack_into("<I", old, 8, fmt)
            if fmt >= 3:  # with an empty log, formats 3 and 4 differ from 5 in their number alone
                old += data[72:-4]
            else:
                old += data[slots_at:dedupe_at]
                for eid in ids:  # oldest first, as the window holds them
                    old += struct.pack("<Q", old_hash64(eid.encode(), 0x65766e745f696400) or 1)
            if fmt == 2:
                old += tail
            open(path, "wb").write(bytes(old) + struct.pack("<I", zlib.crc32(bytes(old))))
            with LtvdProcess(LTVD, SETTINGS, storage_dir=d) as s:
                m = s.metrics()
                check(m["ltvd_users"] == 20 and m["ltvd_dedupe_entries"] == 20, m)
                check(s.json("GET", "/v1/users/f7")[1]["events"] == 1)
                status, body = s.json("POST", "/v1/events", {"events": [
                    {"user_id": f"f{k}", "type": "view", "event_id": ids[k]} for k in range(20)] + [
                    {"user_id": "f7", "type": "view", "event_id": "new-eid"}]})
                check(status == 200 and body["duplicates"] == 20 and body["accepted"] == 1,
                      f"format {fmt}: the old ids are recognised: {body}")
                check(s.json("GET", "/v1/users/f7")[1]["events"] == 2)
            [path] = glob.glob(os.path.join(d, "snapshot-*.snap"))
            check(struct.unpack_from("<I", open(path, "rb").read(), 8)[0] == 5)
            with LtvdProcess(LTVD, SETTINGS, storage_dir=d) as s:
                status, body = s.json("POST", "/v1/events", {"events": [
                    {"user_id": "f3", "type": "view", "event_id": eid} for eid in ids + ["new-eid"]]})
                check(body["duplicates"] == 21, f"format {fmt}: and after the next restart: {body}")


def main():
    return main_exit(*run_tests([kill9_rounds, erasure_survives_kill9, truncated_tail, bitflipped_tail,
                                 middle_corruption_stops_start, clean_restart_replays_nothing,
                                 old_format_snapshots_are_read]))


if __name__ == "__main__":
    sys.exit(main())
