"""tools/ltvd-import against a real ltvd: the CSV format, idempotent
re-import, and bad rows named by line. (The CDNOW format and everything
built on the CDNOW sample: tests/test_cdnow.py.)
Usage: test_import.py PATH_TO_LTVD SOURCE_ROOT"""
import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ltvd_harness import check, LtvdProcess, main_exit, run_import, run_tests  # noqa: E402

LTVD, ROOT = sys.argv[1], sys.argv[2]


def csv_import_and_reimport():
    with LtvdProcess(LTVD, {"clock": "event"}) as s, tempfile.NamedTemporaryFile("w", suffix=".csv") as f:
        f.write("user_id,ts,type,value,quantity,event_id\n")
        f.write("u1,2024-01-01T10:00:00Z,view,,,\n")
        f.write("u1,2024-01-02T10:00:00Z,purchase,19.99,2,\n")
        f.write("u2,1704196800,purchase,5,,order-9\n")
        f.write("u2,2024-01-03T10:00:00+02:00,refund,5,,\n")
        f.flush()
        r = run_import(ROOT, s.port, f.name, "--batch", "2")
        check(r.returncode == 0, r.stderr)
        out = json.loads(r.stdout)
        check(out["rows"] == 4 and out["accepted"] == 4 and out["duplicates"] == 0, out)
        u1 = s.json("GET", "/v1/users/u1")[1]
        check(u1["events"] == 2 and abs(u1["spend"] - 19.99) < 1e-9, u1)
        u2 = s.json("GET", "/v1/users/u2")[1]
        check(u2["purchases"] == 1 and u2["refunds"] == 1 and abs(u2["spend"]) < 1e-9, u2)
        r = run_import(ROOT, s.port, f.name)
        check(r.returncode == 0, r.stderr)
        out = json.loads(r.stdout)
        check(out["accepted"] == 0 and out["duplicates"] == 4, f"re-import must not double count: {out}")
        m = s.metrics()
        check(m["ltvd_users"] == 2 and m["ltvd_events_duplicate_total"] == 4, m)


def bad_rows_are_named():
    cases = [("u1,2024-01-01T10:00:00Z,view,\nu2,2024-13-01T00:00:00Z,view,\n", "line 2"),
             ("u1,2024-01-01T10:00:00Z,purchase,\n", "line 1"),
             ("u1,2024-01-01T10:00:00Z,view,\nu1,2024-01-01T10:00:00Z,teleport,\n", "line 2"),
             ("u1,2024-01-01T10:00:00Z,purchase,-4\n", "line 1"),
             ("u1,2024-01-01T10:00:00,view,\n", "time zone")]
    with LtvdProcess(LTVD) as s:
        for text, needle in cases:
            with tempfile.NamedTemporaryFile("w", suffix=".csv") as f:
                f.write(text)
                f.flush()
                r = run_import(ROOT, s.port, f.name)
                check(r.returncode != 0 and needle in r.stderr, (text, r.returncode, r.stderr))


def main():
    return main_exit(*run_tests([csv_import_and_reimport, bad_rows_are_named]))


if __name__ == "__main__":
    sys.exit(main())
