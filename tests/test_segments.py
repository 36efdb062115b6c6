"""GET /v1/segments, /v1/lists/top and /v1/lists/churn-risk against a real
ltvd on loopback (docs/SEMANTICS.md, "Segments and lists"): the cells add
up to the population, a big spender is in the top tier and first on the top
list, a shopper who stopped buying while time moved on (later events of
others, the event clock) shows on churn-risk, paging with the cursor gives
every entry exactly once, a churn-risk cursor pages only under the
thresholds that gave it (-0 is 0; others are 400, an expired one 409), an
erased shopper leaves the lists, and bad parameters are 400s.

Usage: test_segments.py PATH_TO_LTVD"""
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ltvd_harness import check, test_registry, LtvdProcess, run_tests, wait_until  # noqa: E402

LTVD = sys.argv[1]
TESTS, test = test_registry()
DAY = 86400
T0 = 852076800  # 1997-01-01


def post(s, events):
    for k in range(0, len(events), 2000):
        status, body = s.json("POST", "/v1/events", {"events": events[k:k + 2000]})
        check(status == 200, body)


def population(n):
    """n shoppers with one to three modest purchases in early 1997, and
    "big": ten weekly purchases of 900."""
    events = []
    for i in range(n):
        for k in range(1 + i % 3):
            events.append({"user_id": f"p{i}", "type": "purchase", "ts": T0 + (i % 60) * DAY + k * 20 * DAY,
                           "value": 10.0 + i % 17})
    events += [{"user_id": "big", "type": "purchase", "ts": T0 + k * 7 * DAY, "value": 900.0} for k in range(10)]
    return events


def segments_after(s, earlier=None, timeout=60):
    """The first /v1/segments answer computed after `earlier` (a computed_at
    and as_of pair), or any if None."""
    def probe():
        status, body = s.json("GET", "/v1/segments")
        if status != 200:
            check(status == 503 and body["error"]["code"] == "not_ready", body)
            return None
        return body if earlier is None or (body["computed_at"], body["as_of"]) != earlier else None
    body = wait_until(probe, timeout, interval=0.2)
    check(body, "no population summary was computed")
    return body


class SummaryChanged(Exception):
    """A refresh came between requests that had to read one summary."""


def list_page(s, path):
    """(status, body) of GET path; SummaryChanged if its cursor expired
    (409 cursor_expired)."""
    status, body = s.json("GET", path)
    if status == 409:
        check(body["error"]["code"] == "cursor_expired", body)
        raise SummaryChanged()
    return status, body


def whole_list(s, path, limit):
    """Every entry of a list, page by page; None if a refresh came between pages."""
    entries, cursor = [], None
    for _ in range(1000):
        status, page = s.json("GET", f"{path}?limit={limit}" + (f"&cursor={cursor}" if cursor else ""))
        if status == 409:
            check(page["error"]["code"] == "cursor_expired", page)
            return None
        check(status == 200, page)
        check(len(page["entries"]) <= limit, page)
        entries += page["entries"]
        cursor = page["next_cursor"]
        if not cursor:
            return entries
    raise AssertionError("the cursor never reached the end")


@test
def cells_add_up_and_a_big_spender_is_top():
    with tempfile.TemporaryDirectory(prefix="ltvd-seg-") as d:
        with LtvdProcess(LTVD, {"clock": "event", "auth.allow_open": "true"}, storage_dir=d) as s:
            post(s, population(120))
        # After a restart the first summary is computed from the recovered
        # shoppers; segments.refresh_s=3600 keeps it (and its cursors) for the test.
        with LtvdProcess(LTVD, {"clock": "event", "segments.refresh_s": "3600", "segments.list_max": "50"},
                         storage_dir=d) as s:
            g = segments_after(s)
            check(g["shoppers"] == 121, g)
            check(sum(c["count"] for c in g["segments"]) == 121, g["segments"])
            cells = {(c["tier"], c["activity"]) for c in g["segments"]}
            check(len(g["segments"]) == 12 and cells == {(t, a) for t in ("top", "high", "mid", "low")
                                                          for a in ("active", "at_risk", "lapsed")}, cells)
            check(sum(g["distributions"]["ltv"]["counts"]) == 121, g["distributions"])
            check(sum(g["distributions"]["p_active"]["counts"]) == 121, g["distributions"])
            spend = sum(c["realised_spend"] for c in g["segments"])
            check(abs(spend - (9000 + sum((10.0 + i % 17) * (1 + i % 3) for i in range(120)))) < 0.5, spend)
            mins = [t["min_ltv"] for t in g["tiers"]]
            check([t["name"] for t in g["tiers"]] == ["top", "high", "mid", "low"] and mins == sorted(mins)[::-1]
                  and mins[-1] == 0, g["tiers"])
            status, top = s.json("GET", "/v1/lists/top?limit=1")
            check(status == 200 and top["entries"][0]["user_id"] == "big", top)
            check(top["entries"][0]["ltv"] >= g["tiers"][0]["min_ltv"], (top, g["tiers"]))
            status, big = s.json("GET", "/v1/users/big/ltv")
            check(abs(big["ltv"] - top["entries"][0]["ltv"]) < 1e-3 * max(1.0, big["ltv"]), (big, top))
            check(top["total"] == 50 and top["computed_at"] == g["computed_at"] and top["age_s"] >= 0, top)

            # paging: every entry exactly once, in the order of one big page
            whole = s.json("GET", "/v1/lists/top?limit=1000")[1]["entries"]
            paged = whole_list(s, "/v1/lists/top", 7)
            check(paged is not None, "no refresh was due (segments.refresh_s=3600)")
            ids = [e["user_id"] for e in paged]
            check(len(ids) == 50 and len(set(ids)) == 50 and ids == [e["user_id"] for e in whole], ids)
            ltvs = [e["ltv"] for e in paged]
            check(ltvs == sorted(ltvs, reverse=True), ltvs)
            # a cursor pages only the list that gave it, and only as next_cursor wrote it
            top_cursor = s.json("GET", "/v1/lists/top?limit=7")[1]["next_cursor"]
            status, body = s.json("GET", f"/v1/lists/churn-risk?cursor={top_cursor}")
            check(status == 400 and body["error"]["code"] == "invalid_request", body)
            for bent in (f"t%09{top_cursor[1:]}", top_cursor.replace(".", ".%20"), top_cursor.replace(".", ".+")):
                status, body = s.json("GET", f"/v1/lists/top?cursor={bent}")
                check(status == 400 and body["error"]["code"] == "invalid_request", (bent, body))
            check(s.json("GET", f"/v1/lists/top?cursor={top_cursor}")[0] == 200, top_cursor)

            # erasure: the shopper leaves the lists at once
            status, _, _ = s.request("DELETE", "/v1/users/big")
            check(status == 204, status)
            ids = [e["user_id"] for e in s.json("GET", "/v1/lists/top?limit=1000")[1]["entries"]]
            check("big" not in ids and len(ids) == 49, ids)
            # created again under the same id: another shopper, not the erased one's row
            post(s, [{"user_id": "big", "type": "view", "ts": T0 + 10 * DAY}])
            ids = [e["user_id"] for e in s.json("GET", "/v1/lists/top?limit=1000")[1]["entries"]]
            check("big" not in ids and len(ids) == 49, ids)

            # bad parameters: 400 with the error shape, and nothing served
            for q in ("limit=0", "limit=1001", "limit=x", "cursor=zz", "cursor=1.2.3", "cursor=-1.0"):
                status, body = s.json("GET", f"/v1/lists/top?{q}")
                check(status == 400 and body["error"]["code"] == "invalid_request", (q, body))
            for q in ("min_value=-5", "max_p_active=2", "max_p_active=nan", "min_value="):
                status, body = s.json("GET", f"/v1/lists/churn-risk?{q}")
                check(status == 400 and body["error"]["code"] == "invalid_request", (q, body))


@test
def a_lapsing_valuable_shopper_is_a_churn_risk():
    settings = {"clock": "event", "segments.refresh_s": "1", "auth.allow_open": "true"}
    with LtvdProcess(LTVD, settings) as s:
        events = population(60)
        events += [{"user_id": "loyal", "type": "purchase", "ts": T0 + 50 * DAY + k * 5 * DAY, "value": 400.0}
                   for k in range(8)]
        post(s, sorted(events, key=lambda e: e["ts"]))
        first = segments_after(s)
        status, before = s.json("GET", "/v1/lists/churn-risk?limit=1000")
        check(status == 200 and "loyal" not in [e["user_id"] for e in before["entries"]], before)
        status, p0 = s.json("GET", "/v1/users/loyal/ltv")
        # time moves on: others buy a year and a half later; loyal does not
        post(s, [{"user_id": f"p{i}", "type": "purchase", "ts": T0 + 600 * DAY + i, "value": 10.0}
                 for i in range(5)])
        later = segments_after(s, (first["computed_at"], first["as_of"]))
        later = later if later["as_of"] > first["as_of"] else segments_after(s, (later["computed_at"],
                                                                                 later["as_of"]))
        check(later["as_of"] > first["as_of"], (first["as_of"], later["as_of"]))
        status, p1 = s.json("GET", "/v1/users/loyal/ltv")
        check(p1["p_active"] < p0["p_active"] - 0.05, (p0, p1))
        status, churn = s.json("GET", "/v1/lists/churn-risk?limit=1000")
        check(status == 200, churn)
        row = next((e for e in churn["entries"] if e["user_id"] == "loyal"), None)
        check(row is not None, churn)
        check(abs(row["p_active_drop"] - (row["p_active_peak"] - row["p_active"])) < 1e-5 and
              row["p_active_drop"] > 0.05 and row["realised_spend"] == 3200, row)
        drops = [e["p_active_drop"] for e in churn["entries"]]
        check(drops == sorted(drops, reverse=True), drops)
        # the thresholds filter the list
        status, none = s.json("GET", f"/v1/lists/churn-risk?min_value={row['realised_spend'] + 1}")
        check(status == 200 and "loyal" not in [e["user_id"] for e in none["entries"]], none)
        status, low = s.json("GET", f"/v1/lists/churn-risk?max_p_active={row['p_active'] / 2}")
        check(status == 200 and "loyal" not in [e["user_id"] for e in low["entries"]], low)
        status, kept = s.json("GET", f"/v1/lists/churn-risk?max_p_active={min(1, row['p_active'] + 0.01)}"
                                     f"&min_value={row['realised_spend'] - 1}")
        check(status == 200 and "loyal" in [e["user_id"] for e in kept["entries"]], kept)
        # erased: gone from the list before the next refresh
        check(s.request("DELETE", "/v1/users/loyal")[0] == 204, "erase")
        status, churn = s.json("GET", "/v1/lists/churn-risk?limit=1000")
        check("loyal" not in [e["user_id"] for e in churn["entries"]], churn)


@test
def a_churn_cursor_pages_only_under_its_thresholds():
    # segments.refresh_s=2: a summary lasts for a few pages, and a try whose
    # cursor expires anyway starts again with a fresh one
    settings = {"clock": "event", "segments.refresh_s": "2", "auth.allow_open": "true"}
    limit = 5
    churn = "/v1/lists/churn-risk"
    with LtvdProcess(LTVD, settings) as s:
        post(s, population(60))
        # a summary of all 61 records each shopper's peak p_active
        check(wait_until(lambda: segments_after(s)["shoppers"] == 61, 60), "no summary of the whole population")
        # time moves on: everyone but p0-p4 falls from that peak, and the
        # churn-risk list grows to many pages
        post(s, [{"user_id": f"p{i}", "type": "purchase", "ts": T0 + 600 * DAY + i, "value": 10.0}
                 for i in range(5)])
        grown = wait_until(lambda: s.json("GET", f"{churn}?limit=1000")[1].get("total", 0) > 3 * limit, 60,
                           interval=0.2)
        check(grown, s.json("GET", f"{churn}?limit=1000"))

        def pages_of_one_summary():
            status, first = list_page(s, f"{churn}?limit={limit}")
            check(status == 200 and len(first["entries"]) == limit and first["next_cursor"], first)
            cursor = first["next_cursor"]
            whole = [e["user_id"] for e in list_page(s, f"{churn}?limit=1000")[1]["entries"]]
            nxt = whole[limit:2 * limit]

            def expect(cond, msg):
                """check(cond, msg), unless a refresh came since the first
                page (then its cursor has expired: SummaryChanged)."""
                if not cond:
                    list_page(s, f"{churn}?limit=1&cursor={cursor}")
                check(cond, msg)

            def ids(body):
                return [e["user_id"] for e in body["entries"]]

            # (a) the same thresholds, as the defaults, spelt out or left out:
            # the next page, with none of the first's entries
            for same in ("", "&min_value=0&max_p_active=1", "&max_p_active=1.0&min_value=0.0"):
                status, second = list_page(s, f"{churn}?limit={limit}&cursor={cursor}{same}")
                check(status == 200, (same, second))
                both = ids(first) + ids(second)
                expect(both == whole[:2 * limit] and len(set(both)) == 2 * limit, (same, both, whole))
            # (b) other thresholds: 400, also those that filter nothing out of this list
            for other in ("min_value=1", "min_value=1e-300", "max_p_active=0.5", "max_p_active=0.999999",
                          "min_value=0&max_p_active=0.9"):
                status, body = list_page(s, f"{churn}?limit={limit}&cursor={cursor}&{other}")
                check(status == 400 and body["error"]["code"] == "invalid_request" and
                      "min_value/max_p_active" in body["error"]["message"], (other, body))
            # a cursor given under thresholds pages under those only (every
            # shopper here spent 10 or more: min_value=1 keeps them all)
            status, narrow = list_page(s, f"{churn}?limit={limit}&min_value=1")
            check(status == 200 and narrow["next_cursor"], narrow)
            status, body = list_page(s, f"{churn}?limit={limit}&cursor={narrow['next_cursor']}")
            check(status == 400 and "min_value/max_p_active" in body["error"]["message"], body)
            status, body = list_page(s, f"{churn}?limit={limit}&cursor={narrow['next_cursor']}&min_value=1")
            check(status == 200, body)
            expect(ids(body) == nxt, (ids(body), nxt))
            # and on its own list only
            status, body = list_page(s, f"/v1/lists/top?cursor={cursor}")
            check(status == 400 and body["error"]["code"] == "invalid_request", body)
            # (c) -0 is 0: the same filter, so the same cursor
            for given, followed in (("", "min_value=-0"), ("min_value=-0", "min_value=0"),
                                    ("min_value=-0.0", ""), ("max_p_active=1&min_value=-0", "min_value=0e0")):
                status, page = list_page(s, f"{churn}?limit={limit}&{given}")
                check(status == 200, (given, page))
                expect(page["next_cursor"] == cursor, (given, page["next_cursor"], cursor))
                status, body = list_page(s, f"{churn}?limit={limit}&cursor={page['next_cursor']}&{followed}")
                check(status == 200, (given, followed, body))
                expect(ids(body) == nxt, (given, followed, ids(body), nxt))
            return cursor

        for _ in range(20):
            try:
                cursor = pages_of_one_summary()
                break
            except SummaryChanged:
                continue
        else:
            raise AssertionError("a refresh came between the pages of every try")
        # expired: 409 under any thresholds (the cursor's summary is checked first)
        expired = wait_until(lambda: s.json("GET", f"{churn}?cursor={cursor}")[0] == 409, 30, interval=0.2)
        check(expired, "the cursor never expired (segments.refresh_s=2)")
        for q in ("", "&min_value=1"):
            status, body = s.json("GET", f"{churn}?cursor={cursor}{q}")
            check(status == 409 and body["error"]["code"] == "cursor_expired", (q, body))

if __name__ == "__main__":
    passed, failed = run_tests(TESTS)
    print(f"{passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)
