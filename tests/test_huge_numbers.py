"""Client numbers beyond every integer type (issue 12, item 10): each is a
400 JSON error naming the field, nothing is applied, and the server goes
on. The sanitizer build in CI adds -fsanitize=float-cast-overflow, so a
double cast to an integer before its range check would stop the server
here (the harness fails the test on its exit status and output).
Usage: test_huge_numbers.py PATH_TO_LTVD"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ltvd_harness import check, LtvdProcess, main_exit, run_tests  # noqa: E402

LTVD = sys.argv[1]
# JSON numbers past uint32, int64 (2^63), uint64 (2^64 = 1.8e19) and near
# the double's end; negative ones; non-integers where an integer is asked.
HUGE = ["4294967296", "9223372036854775807", "9223372036854775808", "18446744073709551615",
        "18446744073709551616", "1.8e19", "1e20", "1e300", "1.7976931348623157e308", "-1e20",
        "-9223372036854775809"]


def huge_numbers_are_refused():
    with LtvdProcess(LTVD, {"clock": "event"}) as s:
        check(s.json("POST", "/v1/events", {"user_id": "base", "type": "view", "ts": 1.7e9})[0] == 200)
        for field in ("quantity", "ts", "value"):
            for num in HUGE[1:] if field == "value" else HUGE:  # a value of 2^32 is a fine amount
                fields = {"user_id": '"h"', "type": '"purchase"', "value": "1", "ts": "1700000000", field: num}
                body = "{" + ", ".join(f'"{k}": {v}' for k, v in fields.items()) + "}"
                status, _, data = s.request("POST", "/v1/events", body)
                check(status == 400 and f'"{field}"'.encode() in data, f"{field}={num}: {status} {data[:300]}")
            batch = '{"events": [{"user_id": "h2", "type": "view", "ts": 1700000000, "quantity": 1e20}]}'
            check(s.request("POST", "/v1/events", batch)[0] == 400)
        for num in HUGE + ["99999999999999999999999999", "1e20"]:
            status, _, data = s.request("GET", f"/v1/users/base/ltv?as_of={num}")
            check(status == 400, f"as_of={num}: {status} {data[:200]}")
        check(s.json("GET", "/v1/users/h2")[0] == 404, "nothing of a refused batch is applied")
        check(s.json("GET", "/v1/users/h")[0] == 404, "nothing of a refused event is applied")
        check(s.json("GET", "/v1/users/base/ltv")[0] == 200, "the server goes on")


def main():
    return main_exit(*run_tests([huge_numbers_are_refused]))


if __name__ == "__main__":
    sys.exit(main())
