"""The choices docs/SEMANTICS.md records, one test each, against a real ltvd
on loopback (a fresh server per test): which bad body gets invalid_json and
which invalid_request, unknown fields, the value and quantity bounds, `+`
and percent-encoding in path ids, id length and UTF-8, as_of before the
first event, late purchases, refunds, and README command (a)'s config file.

Usage: test_semantics.py PATH_TO_LTVD SOURCE_ROOT"""
import datetime
import json
import os
import re
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ltvd_harness import check, flatten, test_registry, LtvdProcess, quote_id, run_tests  # noqa: E402

LTVD = sys.argv[1]
ROOT = sys.argv[2]
TESTS, test = test_registry()
DAY = 86400
T0 = 1735689600  # 2025-01-01T00:00:00Z: fixed past dates, so nothing depends on today


def assert_error(status, body, want_status, want_code):
    """The error shape of docs/SEMANTICS.md, "Errors", with an exact status and code."""
    check(status == want_status, f"status {status}, wanted {want_status}: {body}")
    check(isinstance(body, dict) and set(body) == {"error"}, f"not an error object: {body}")
    err = body["error"]
    check(set(err) == {"code", "message", "details"}, f"error fields: {err}")
    check(isinstance(err["message"], str) and err["message"], "an error has a message")
    check(isinstance(err["details"], list), "details must be a list")
    check(err["code"] == want_code, f"code {err['code']}, wanted {want_code}: {err}")
    return err


def raw_json(s, method, path, raw):
    status, _, data = s.request(method, path, raw)
    return status, json.loads(data)


def iso(ts):
    return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def purchase(uid, ts, value, **kw):
    ev = {"user_id": uid, "type": "purchase", "ts": ts, "value": value}
    ev.update(kw)
    return ev


def post_ok(s, body):
    status, resp = s.json("POST", "/v1/events", body)
    check(status == 200, f"{status} {resp} for {body}")
    return resp


def ltv(s, uid, as_of):
    status, p = s.json("GET", f"/v1/users/{quote_id(uid)}/ltv?as_of={as_of}")
    check(status == 200, p)
    return p


def summary(s, uid):
    status, body = s.json("GET", f"/v1/users/{quote_id(uid)}")
    check(status == 200, body)
    return body


# ---- bodies ------------------------------------------------------------------

EVENT = b'{"user_id": "u1", "type": "view", "ts": 1735689600}'
# (raw body, code): unparsable is invalid_json; parsable but not an event
# object or {"events": [...]} (or an empty events array) is invalid_request;
# an object that is an event but a bad one is invalid_event.
EVENT_BODIES = [
    (b"{", "invalid_json"),
    (b"", "invalid_json"),
    (b"{\"user_id\": \"u1\", \"type\": \"view\", \"value\": NaN}", "invalid_json"),
    (b"{\"user_id\": \"u1\", \"type\": \"view\", \"value\": Infinity}", "invalid_json"),
    (b"{\"user_id\": \"u1\", \"type\": \"view\", \"value\": -Infinity}", "invalid_json"),
    (b"\xff\xfe\x00garbage", "invalid_json"),
    (b"{'user_id': 'u1', 'type': 'view'}", "invalid_json"),
    (EVENT + b" trailing", "invalid_json"),
    (EVENT + EVENT.replace(b"u1", b"u2"), "invalid_json"),  # two objects: not one JSON text
    (b"{\"events\": [" + EVENT + b"]}]", "invalid_json"),
    (b"null", "invalid_request"),
    (b"42", "invalid_request"),
    (b"\"text\"", "invalid_request"),
    (b"[" + EVENT + b"]", "invalid_request"),
    (b"{\"events\": 5}", "invalid_request"),
    (b"{\"events\": {}}", "invalid_request"),
    (b"{\"events\": null}", "invalid_request"),
    (b"{\"events\": []}", "invalid_request"),
    (b"{}", "invalid_event"),
    (b"{\"events\": [{}]}", "invalid_event"),
    (b"{\"events\": [5]}", "invalid_event"),
]
BATCH_BODIES = [
    (b"{", "invalid_json"),
    (b"", "invalid_json"),
    (b"{\"user_ids\": [\"u1\"]} trailing", "invalid_json"),
    (b"{\"user_ids\": [\"u1\"]}{\"user_ids\": [\"u2\"]}", "invalid_json"),
    (b"{\"user_ids\": [\"u1\"], \"as_of\": NaN}", "invalid_json"),
    (b"null", "invalid_request"),
    (b"[\"u1\"]", "invalid_request"),
    (b"{}", "invalid_request"),
    (b"{\"user_ids\": 3}", "invalid_request"),
    (b"{\"user_ids\": \"u1\"}", "invalid_request"),
    (b"{\"user_ids\": [], \"as_of\": \"soon\"}", "invalid_request"),
    (b"{\"user_ids\": [], \"as_of\": true}", "invalid_request"),
    (b"{\"user_ids\": [\"u1\", 7]}", "invalid_request"),
]


@test
def invalid_json_against_invalid_request():
    with LtvdProcess(LTVD) as s:
        for raw, code in EVENT_BODIES:
            status, body = raw_json(s, "POST", "/v1/events", raw)
            err = assert_error(status, body, 400, code)
            if code == "invalid_json":
                check(err["details"] == [], (raw, err))
            else:  # says what is wrong, per event or for the body
                check(len(err["details"]) == 1 and err["details"][0]["index"] == 0, (raw, err))
        for raw, code in BATCH_BODIES:
            assert_error(*raw_json(s, "POST", "/v1/ltv/batch", raw), 400, code)
        check(s.metric("ltvd_events_applied_total") == 0 and s.metric("ltvd_users") == 0,
              "no refused body applies anything")
        for uid in ("u1", "u2"):
            check(s.json("GET", f"/v1/users/{uid}")[0] == 404)
        # JSON whitespace around the value is not trailing data (curl -d @file adds a newline)
        status, body = raw_json(s, "POST", "/v1/events", b" \r\n\t" + EVENT + b"\n")
        check(status == 200 and body["accepted"] == 1, body)
        status, body = raw_json(s, "POST", "/v1/ltv/batch", b"{\"user_ids\": [\"u1\"]}\r\n")
        check(status == 200 and body["predictions"][0]["known"] is True, body)


@test
def nul_in_strings_is_refused():
    """A \\u0000 escape would cut an id short inside ltvd (two client ids
    becoming one shopper, or a false duplicate event_id): refused whole."""
    with LtvdProcess(LTVD) as s:
        for raw in (b'{"user_id": "a\\u0000b", "type": "view"}',
                    b'{"events": [{"user_id": "a", "type": "view", "event_id": "e\\u0000x"}]}',
                    b'{"user_id": "a", "type": "view", "note": "\\u0000"}'):
            assert_error(*raw_json(s, "POST", "/v1/events", raw), 400, "invalid_request")
        assert_error(*raw_json(s, "POST", "/v1/ltv/batch", b'{"user_ids": ["a\\u0000b"]}'), 400,
                     "invalid_request")
        check(s.json("GET", "/v1/users/a")[0] == 404, "nothing applied")
        check(s.metric("ltvd_events_applied_total") == 0)
        # an escaped backslash followed by the text u0000 is no NUL
        status, body = raw_json(s, "POST", "/v1/events", b'{"user_id": "a\\\\u0000", "type": "view"}')
        check(status == 200 and body["prediction"]["user_id"] == "a\\u0000", body)
        check(summary(s, "a\\u0000")["events"] == 1)


@test
def unknown_fields_are_ignored():
    with LtvdProcess(LTVD) as s:
        ev = purchase("uf", T0, 12.5, color="red", nested={"value": -1, "type": "nope"}, tags=[1, "x", None],
                      Value=-5, USER_ID="other", nothing=None)
        body = post_ok(s, ev)
        check(body["accepted"] == 1 and body["prediction"]["user_id"] == "uf", body)
        body = post_ok(s, {"events": [purchase("uf", T0 + DAY, 7.5, extra=True)], "source": "shop-3", "v": 2})
        check(body == {"accepted": 1, "duplicates": 0, "late": 0}, body)
        sm = summary(s, "uf")
        check(sm["events"] == 2 and sm["purchases"] == 2 and sm["spend"] == 20.0, sm)
        check(s.json("GET", "/v1/users/other")[0] == 404, "USER_ID is not user_id (names are case-sensitive)")
        status, body = s.json("POST", "/v1/ltv/batch", {"user_ids": ["uf"], "as_of": T0 + 2 * DAY, "debug": 1})
        check(status == 200 and body["predictions"][0]["known"] is True, body)


@test
def value_and_quantity_bounds():
    """value: finite, in [0, 1e12]; quantity: an integer in [1, 1e9]. At each
    bound accepted, just past it refused with the field named."""
    with LtvdProcess(LTVD) as s:
        accepted = [
            ("v-zero", purchase("v-zero", T0, 0)),
            ("v-max", purchase("v-max", T0, 1e12)),
            ("v-view", {"user_id": "v-view", "type": "view", "ts": T0, "value": 1e12}),
            ("q-one", purchase("q-one", T0, 5, quantity=1)),
            ("q-max", purchase("q-max", T0, 5, quantity=1000000000)),
        ]
        for uid, ev in accepted:
            check(post_ok(s, ev)["accepted"] == 1)
        check(summary(s, "v-zero")["spend"] == 0 and summary(s, "v-zero")["purchases"] == 1)
        check(summary(s, "v-max")["spend"] == 1e12, summary(s, "v-max"))
        refused = [
            ('{"user_id": "r1", "type": "purchase", "value": 1000000000001}', "value"),
            ('{"user_id": "r2", "type": "refund", "value": 1000000000001}', "value"),
            ('{"user_id": "r3", "type": "view", "value": 1000000000001}', "value"),
            ('{"user_id": "r4", "type": "purchase", "value": -0.01}', "value"),
            ('{"user_id": "r5", "type": "view", "value": -1}', "value"),
            ('{"user_id": "r6", "type": "purchase", "value": 1e999}', "value"),
            ('{"user_id": "r7", "type": "purchase", "value": "12"}', "value"),
            ('{"user_id": "r8", "type": "purchase"}', "value"),
            ('{"user_id": "r9", "type": "refund"}', "value"),
            ('{"user_id": "r10", "type": "view", "quantity": 0}', "quantity"),
            ('{"user_id": "r11", "type": "view", "quantity": 1000000001}', "quantity"),
            ('{"user_id": "r12", "type": "view", "quantity": 1.5}', "quantity"),
            ('{"user_id": "r13", "type": "view", "quantity": -1}', "quantity"),
            ('{"user_id": "r14", "type": "view", "quantity": "2"}', "quantity"),
        ]
        for raw, field in refused:
            err = assert_error(*raw_json(s, "POST", "/v1/events", raw.encode()), 400, "invalid_event")
            check([(d["index"], d["field"]) for d in err["details"]] == [(0, field)], (raw, err))
            uid = json.loads(raw)["user_id"]
            check(s.json("GET", f"/v1/users/{uid}")[0] == 404, f"{raw} applied nothing")
        check(s.metric("ltvd_events_applied_total") == len(accepted))


@test
def plus_and_percent_encoding_in_path_ids():
    """RFC 3986 decoding of the id in the path: `+` is a plus (not a space as
    in HTML forms), %2B is a plus, %20 a space; any id can be queried."""
    with LtvdProcess(LTVD, {"auth.admin_token": "adm"}) as s:
        post_ok(s, {"user_id": "a+b", "type": "view", "ts": T0})
        post_ok(s, {"events": [{"user_id": "a b", "type": "view", "ts": T0}] * 2})
        for path, uid, events in (("a+b", "a+b", 1), ("a%2Bb", "a+b", 1), ("a%2bb", "a+b", 1),
                                  ("a%20b", "a b", 2)):
            sm = summary(s, uid)
            status, body = s.json("GET", f"/v1/users/{path}")
            check(status == 200 and body == sm and body["user_id"] == uid and body["events"] == events,
                  (path, body))
            status, p = s.json("GET", f"/v1/users/{path}/ltv")
            check(status == 200 and p["known"] is True and p["user_id"] == uid and p["events"] == events,
                  (path, p))
        check(s.json("GET", "/v1/users/a++b")[0] == 404)
        for uid in ("a/b", "100%", "é/ü?#&=", "x%41", "\U0001F600"):
            post_ok(s, {"user_id": uid, "type": "click", "ts": T0})
            path = quote_id(uid)
            check(summary(s, uid)["user_id"] == uid)
            check(s.json("GET", f"/v1/users/{path.lower()}")[1]["user_id"] == uid, "hex digits in either case")
        check(s.json("GET", "/v1/users/xA")[0] == 404, "%41 stays three characters in the id")
        for bad in ("bad%zz", "bad%4", "bad%", "%", "a%2", "%%41"):
            for suffix in ("", "/ltv"):
                assert_error(*s.json("GET", f"/v1/users/{bad}{suffix}"), 400, "invalid_request")
        status, _, _ = s.request("DELETE", "/v1/users/a%2Fb", headers={"Authorization": "Bearer adm"})
        check(status == 204 and s.json("GET", "/v1/users/a%2Fb")[0] == 404)
        check(summary(s, "a+b")["events"] == 1, "erasing a/b touched no other id")
        # In the query string libmicrohttpd decodes as HTML forms do: a `+`
        # there is a space, so a time-zone offset's + is written %2B.
        p = ltv(s, "a+b", "2025-06-01T02:00:00%2B02:00")
        check(p["as_of"] == "2025-06-01T00:00:00Z", p)
        assert_error(*s.json("GET", "/v1/users/a+b/ltv?as_of=2025-06-01T02:00:00+02:00"), 400, "invalid_request")


@test
def id_length_and_utf8():
    """1 to 128 bytes of UTF-8, counted in bytes (not characters), in events,
    in paths and in batch reads alike."""
    ids_ok = ["x" * 128, "é" * 64, "日本" * 21 + "xx", "\U0001F600" * 32]
    ids_long = ["x" * 129, "é" * 64 + "y", "\U0001F600" * 32 + "z"]
    for uid in ids_ok:
        check(len(uid.encode()) == 128, uid)
    for uid in ids_long:
        check(len(uid.encode()) == 129, uid)
    with LtvdProcess(LTVD) as s:
        for uid in ids_ok:
            body = post_ok(s, {"user_id": uid, "type": "view", "ts": T0})
            check(body["prediction"]["user_id"] == uid)
            check(summary(s, uid)["user_id"] == uid)
            check(ltv(s, uid, T0)["known"] is True)
        status, body = s.json("POST", "/v1/ltv/batch", {"user_ids": ids_ok})
        check(status == 200 and [p["known"] for p in body["predictions"]] == [True] * 4, body)
        for uid in ids_long + [""]:
            err = assert_error(*s.json("POST", "/v1/events", {"user_id": uid, "type": "view"}), 400, "invalid_event")
            check(err["details"][0]["field"] == "user_id", err)
            for suffix in ("", "/ltv"):
                assert_error(*s.json("GET", f"/v1/users/{quote_id(uid)}{suffix}"), 400 if uid else 404,
                             "invalid_request" if uid else "not_found")
        err = assert_error(*s.json("POST", "/v1/ltv/batch", {"user_ids": ["ok", ids_long[0], "", ids_long[1]]}),
                           400, "invalid_request")
        check([d["index"] for d in err["details"]] == [1, 2, 3], err)
        # not UTF-8: a stray continuation byte, a lone lead byte, an overlong
        # '/', a UTF-16 surrogate, a code point past U+10FFFF, a truncated sequence
        bad = [b"\x80", b"a\xff", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"ab\xe6\x97"]
        for raw in bad:
            body = b'{"user_id": "' + raw + b'", "type": "view"}'
            err = assert_error(*raw_json(s, "POST", "/v1/events", body), 400, "invalid_event")
            check(err["details"][0]["field"] == "user_id", (raw, err))
            pct = "".join(f"%{c:02X}" for c in raw)
            for suffix in ("", "/ltv"):
                assert_error(*s.json("GET", f"/v1/users/{pct}{suffix}"), 400, "invalid_request")
            body = b'{"user_ids": ["' + raw + b'"]}'
            assert_error(*raw_json(s, "POST", "/v1/ltv/batch", body), 400, "invalid_request")
        for suffix in ("", "/ltv"):
            assert_error(*s.json("GET", f"/v1/users/a%00b{suffix}"), 400, "invalid_request")
        check(s.metric("ltvd_users") == len(ids_ok), "no refused id made a shopper")


@test
def as_of_before_the_first_event():
    """Allowed (200, the shopper is known); with no purchase by as_of the
    fallback gives the cold start from behaviour: before any event that is
    the prediction for an id never seen; once the shopper has browsed for a
    while without buying (and no fit of such shoppers exists yet), at most
    that, never more than a one-time buyer known as long. Between the first
    and last purchase, recency is zero and the later purchases still
    count."""
    with LtvdProcess(LTVD) as s:
        post_ok(s, {"events": [{"user_id": "early", "type": "view", "ts": T0 + 10 * DAY},
                               purchase("early", T0 + 20 * DAY, 40), purchase("early", T0 + 50 * DAY, 30),
                               purchase("early", T0 + 80 * DAY, 50), purchase("once", T0 + 20 * DAY, 40)]})
        for as_of in (T0, T0 + 15 * DAY):  # before the first event; between it and the first purchase
            p = ltv(s, "early", as_of)
            cold = ltv(s, "never-seen", as_of)
            check(p["known"] is True and p["as_of"] == iso(as_of) and p["events"] == 4, p)
            check(p["last_event_ts"] == iso(T0 + 80 * DAY), p)
            check(cold["known"] is False, cold)
            if as_of == T0:
                for k in ("ltv", "p_active", "p10", "p50", "p90"):
                    check(p[k] == cold[k], f"{k}: {p[k]} != cold start {cold[k]}")
            else:
                check(0 < p["ltv"] < cold["ltv"], f"a browser of 5 days: {p} vs cold start {cold}")
            status, body = s.json("POST", "/v1/ltv/batch", {"user_ids": ["early", "never-seen"], "as_of": as_of})
            check(status == 200 and [q["ltv"] for q in body["predictions"]] == [p["ltv"], cold["ltv"]], body)
        mid = ltv(s, "early", T0 + 35 * DAY)
        once = ltv(s, "once", T0 + 35 * DAY)
        check(mid["ltv"] > once["ltv"] and mid["p_active"] > once["p_active"],
              f"later purchases count: {mid} vs {once}")


@test
def late_purchases_are_counted_and_do_not_corrupt():
    """The same purchases in time order (server A) and with one arriving late
    (server B): the same aggregates and the same prediction; B counts one
    late event, keeps it out of the recent-event ring, and goes on normally."""
    days = [T0 + 10 * DAY, T0 + 40 * DAY, T0 + 70 * DAY]
    as_of = T0 + 100 * DAY
    with LtvdProcess(LTVD) as a, LtvdProcess(LTVD) as b:
        for ts, v in zip(days, (20, 35, 15)):
            check(post_ok(a, purchase("s", ts, v))["late"] == 0)
        for ts, v in ((days[0], 20), (days[2], 15)):
            check(post_ok(b, purchase("s", ts, v))["late"] == 0)
        body = post_ok(b, purchase("s", days[1], 35))
        check(body["accepted"] == 1 and body["late"] == 1 and body["duplicates"] == 0, body)
        sa, sb = summary(a, "s"), summary(b, "s")
        check(sa["recent_events"] == 3 and sb["recent_events"] == 2, (sa, sb))
        for k in ("events", "purchases", "refunds", "purchase_days", "spend", "first_event_ts", "last_event_ts"):
            check(sa[k] == sb[k], f"{k}: in order {sa[k]}, with a late purchase {sb[k]}")
        check(sb["purchases"] == 3 and sb["purchase_days"] == 3 and sb["spend"] == 70, sb)
        check(ltv(a, "s", iso(as_of)) == ltv(b, "s", iso(as_of)), "the late purchase counts as in order")
        check(a.metric("ltvd_events_late_total") == 0 and b.metric("ltvd_events_late_total") == 1)
        # a late purchase before the first one becomes the first purchase day
        body = post_ok(b, purchase("s", T0, 5))
        check(body["late"] == 1, body)
        sb = summary(b, "s")
        check(sb["first_event_ts"] == iso(T0) and sb["purchase_days"] == 4 and sb["spend"] == 75, sb)
        # the shopper goes on: the next in-order event is not late and enters the ring
        body = post_ok(b, purchase("s", days[2] + DAY, 10))
        check(body["late"] == 0, body)
        sb = summary(b, "s")
        check(sb["recent_events"] == 3 and sb["last_event_ts"] == iso(days[2] + DAY), sb)
        check(b.metric("ltvd_events_late_total") == 2 and b.metric("ltvd_events_applied_total") == 5)


@test
def refunds_lower_the_prediction():
    """A refund lowers spend and, for a repeat buyer, the expected spend per
    purchase day, so ltv falls; p_active (purchase days) does not move. For a
    one-time buyer the fallback uses the population's spend per day
    (docs/MODEL.md), so a refund leaves the prediction as it was."""
    as_of = iso(T0 + 100 * DAY)
    with LtvdProcess(LTVD) as s:
        post_ok(s, {"events": [purchase("rep", T0, 50), purchase("rep", T0 + 30 * DAY, 40),
                               purchase("rep", T0 + 60 * DAY, 60), purchase("one", T0, 50)]})
        before = ltv(s, "rep", as_of)
        body = post_ok(s, {"user_id": "rep", "type": "refund", "ts": T0 + 61 * DAY, "value": 30})
        check(body["accepted"] == 1 and body["late"] == 0, body)
        after = ltv(s, "rep", as_of)
        check(after["ltv"] < before["ltv"], f"a refund must lower ltv: {before['ltv']} -> {after['ltv']}")
        check(after["p_active"] == before["p_active"], (before, after))
        sm = summary(s, "rep")
        check(sm["spend"] == 120 and sm["refunds"] == 1 and sm["purchases"] == 3 and sm["events"] == 4, sm)
        # a larger refund lowers it further
        post_ok(s, {"user_id": "rep", "type": "refund", "ts": T0 + 62 * DAY, "value": 40})
        check(ltv(s, "rep", as_of)["ltv"] < after["ltv"])
        once = ltv(s, "one", as_of)
        post_ok(s, {"user_id": "one", "type": "refund", "ts": T0 + DAY, "value": 50})
        once_after = ltv(s, "one", as_of)
        for k in ("ltv", "p_active", "p10", "p50", "p90"):
            check(once_after[k] == once[k], f"one-time buyer: {k} {once[k]} -> {once_after[k]}")
        check(summary(s, "one")["spend"] == 0)


def as_setting(v):
    """A config file value as --set writes it."""
    return ("true" if v else "false") if isinstance(v, bool) else str(v)


@test
def readme_config_file_is_loaded():
    """README command (a) runs `ltvd --config configs/ltvd.json`. Started with
    that file, overriding only the port and the storage directory, every key
    of the file is in force, as the start line and the API show. The file
    writes out the built-in defaults, so a copy with two values changed shows
    that values come from the file."""
    path = os.path.join(ROOT, "configs", "ltvd.json")
    with open(path, encoding="utf-8") as f:
        file_cfg = flatten(json.load(f))
    check(file_cfg["server.bind"] == "127.0.0.1" and file_cfg["server.port"] == 8080
          and file_cfg["storage.dir"] == "./ltvd-data", "README (a): 127.0.0.1:8080, state in ./ltvd-data")
    # The harness sets a few keys of its own (server.bind, fallback.refit_s):
    # those the file also sets get the file's value, learnt from a first start.
    settings = {}
    for _ in range(2):
        s = LtvdProcess(LTVD, settings, config=path)
        args = s.proc.args
        sets = dict(args[i + 1].split("=", 1) for i, a in enumerate(args) if a == "--set")
        conflicts = {k: as_setting(file_cfg[k]) for k, v in sets.items()
                     if k in file_cfg and k not in ("server.port", "storage.dir") and as_setting(file_cfg[k]) != v}
        if not conflicts:
            break
        s.stop()
        settings.update(conflicts)
    with s:
        check(args[1:3] == ["--config", path], args)
        check({"server.port", "storage.dir"} <= set(sets) and not conflicts,
              f"only the port and the storage dir override the file: {sets}")
        start = [line for line in s.logs().splitlines() if 'msg="starting"' in line]
        check(len(start) == 1, s.logs())
        effective = {k: v.strip('"') for k, v in re.findall(r'(\S+?)=("[^"]*"|\S+)', start[0])}
        for key, want in file_cfg.items():
            if key in ("server.port", "storage.dir"):
                continue
            check(key in effective, f"{key} missing from the start line")
            got = effective[key]
            if isinstance(want, bool):
                ok = got == ("true" if want else "false")
            elif isinstance(want, (int, float)):
                ok = float(got) == float(want)
            else:
                ok = got == want
            check(ok, f"{key}: file says {want!r}, in force {got!r}")
        # and through the API
        status, m = s.json("GET", "/v1/model")
        check(status == 200 and m["horizon_days"] == file_cfg["model.horizon_days"]
              and m["hidden_size"] == file_cfg["model.hidden_size"]
              and m["retrain"]["network"] is file_cfg["train.network"]
              and m["adjuster"]["enabled"] is file_cfg["adjuster.enabled"], m)
        check(all(file_cfg[f"auth.{c}_token"] == "" for c in ("ingest", "admin", "read")))
        check(post_ok(s, {"user_id": "cfg", "type": "view"})["accepted"] == 1, "no token needed")
        n = file_cfg["limits.max_batch_ids"]
        check(s.json("POST", "/v1/ltv/batch", {"user_ids": ["cfg"] * n})[0] == 200)
        err = assert_error(*s.json("POST", "/v1/ltv/batch", {"user_ids": ["cfg"] * (n + 1)}), 413,
                           "payload_too_large")
        check(f"at most {n} " in err["message"], err)
    # The same file with two values changed: those are the ones in force, so
    # the values above came through --config, not from the built-in defaults.
    with open(path, encoding="utf-8") as f:
        changed = json.load(f)
    changed["model"]["horizon_days"] = 91
    changed["limits"]["max_batch_ids"] = 77
    with tempfile.NamedTemporaryFile("w", suffix=".json") as tmp:
        json.dump(changed, tmp)
        tmp.flush()
        with LtvdProcess(LTVD, settings, config=tmp.name) as s:
            check(s.json("GET", "/v1/model")[1]["horizon_days"] == 91)
            check(s.json("POST", "/v1/ltv/batch", {"user_ids": ["c"] * 77})[0] == 200)
            err = assert_error(*s.json("POST", "/v1/ltv/batch", {"user_ids": ["c"] * 78}), 413, "payload_too_large")
            check("at most 77 " in err["message"], err)


if __name__ == "__main__":
    passed, failed = run_tests(TESTS)
    print(f"{passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)
