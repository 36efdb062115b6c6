"""ltvd_events_rejected_total counts every event of a post refused as
invalid: a single event as well as each event of a batch (the whole batch
is refused), and nothing for a valid post or one that is not an event body
at all. Usage: test_rejected.py path/to/ltvd"""
import sys

from ltvd_harness import LtvdProcess, main_exit, run_tests


def metric(s, name):
    return s.metrics()[name]


def rejected_events_are_counted(binary):
    with LtvdProcess(binary, {"clock": "event"}) as s:
        name = "ltvd_events_rejected_total"
        assert metric(s, name) == 0
        status, _ = s.json("POST", "/v1/events", {"user_id": "a", "type": "teleport"})
        assert status == 400
        assert metric(s, name) == 1, "a refused single event counts"
        bad_batch = {"events": [{"user_id": "b", "type": "view", "ts": 1.7e9},
                                {"user_id": "b", "type": "purchase", "ts": 1.7e9},  # no value
                                {"user_id": "c", "type": "click", "ts": 1.7e9}]}
        status, body = s.json("POST", "/v1/events", bad_batch)
        assert status == 400 and len(body["error"]["details"]) == 1, body
        assert metric(s, name) == 4, "every event of a refused batch counts"
        status, _ = s.json("POST", "/v1/events", {"user_id": "d", "type": "view", "ts": 1.7e9})
        assert status == 200
        status, _ = s.json("POST", "/v1/events", {"events": "not a list"})
        assert status == 400
        assert metric(s, name) == 4, "valid posts and non-event bodies do not count"
        assert s.json("GET", "/v1/users/b")[0] == 404  # nothing of the refused batch applied


if __name__ == "__main__":
    sys.exit(main_exit(*run_tests([rejected_events_are_counted], sys.argv[1])))
