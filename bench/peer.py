#!/usr/bin/env python3
"""bench/peer.py: the accuracy benchmarks' peer, a gradient-boosted tree
model on windowed event counts and RFM (issue 14, part 5).

Features of a shopper at a cut time c (all from events at or before c):
  - counts of view, click, add_to_cart and purchase events in the last
    7, 30, 90 and 365 days (16; purchases only for CDNOW: 4);
  - purchase spend in the last 30, 90 and 365 days;
  - RFM: days since the last purchase (recency; the tenure when there is
    none), purchases (frequency), mean net spend per purchase (monetary),
    net spend, days since the first event (tenure);
  - days since the last event of each type (the tenure when there is none).
Training examples: every shopper already seen at each cut of a grid_days
grid ending at the latest matured cut (now - H), the same matured cuts
ltvd's network trains on (docs/MODEL.md, "Training", step 2); target: net
spend in (c, c + H], floored at 0. Model: sklearn's
HistGradientBoostingRegressor(loss="poisson"); P(buy) for the AUC column is
the regressor's score (as for the other rows), and a
HistGradientBoostingClassifier on "any purchase in (c, c + H]" is fitted
too and its AUC reported beside it. Deterministic given the seed
(random_state, one OpenMP thread).

Runs as a subprocess of bench/simulated and bench/accuracy, under an
interpreter that has sklearn (Debian's python3-sklearn lives in
/usr/bin/python3, which need not be the python3 on PATH):

  bench/peer.py --events ev.csv --now T --horizon H --seed S --out preds.json

ev.csv: user_id,ts,type,value rows (any order); every user_id in it gets a
prediction at --now (the serving cut), written as {user_id: ltv} plus
{"_p_buy": {user_id: p}} and the training figures.
"""
import argparse
import csv
import json
import os
import sys

DAY = 86400
TYPES = ("view", "click", "add_to_cart", "purchase")
WINDOWS = (7, 30, 90, 365)
SPEND_WINDOWS = (30, 90, 365)


def interpreter():
    """A Python that can import sklearn: this one, else /usr/bin/python3."""
    try:
        import sklearn  # noqa: F401
        return sys.executable
    except ImportError:
        return "/usr/bin/python3"


def load(path):
    """user_id -> {type: sorted ts array, "spend": (ts, signed value) arrays}."""
    import numpy as np
    raw = {}
    with open(path) as f:
        for row in csv.reader(f):
            if not row or row[0] == "user_id":
                continue
            raw.setdefault(row[0], []).append((int(row[1]), row[2], float(row[3] or 0)))
    out = {}
    for uid, evs in raw.items():
        evs.sort()
        d = {t: np.array([ts for ts, k, _ in evs if k == t], dtype=np.int64) for t in TYPES}
        money = [(ts, v if k == "purchase" else -v) for ts, k, v in evs if k in ("purchase", "refund")]
        d["money_ts"] = np.array([m[0] for m in money], dtype=np.int64)
        d["money_cum"] = np.concatenate([[0.0], np.cumsum([m[1] for m in money])])
        d["pur_val_cum"] = np.concatenate([[0.0], np.cumsum([v for ts, k, v in evs if k == "purchase"])])
        d["first"] = evs[0][0]
        d["all_ts"] = np.array([e[0] for e in evs], dtype=np.int64)
        out[uid] = d
    return out


def features(d, cuts, types, windows=WINDOWS, spend_windows=SPEND_WINDOWS):
    """The feature rows of one shopper at the given cut times (numpy)."""
    import numpy as np
    cuts = np.asarray(cuts, dtype=np.int64)
    cols = []
    tenure = np.maximum(0, cuts - d["first"]) / DAY
    for t in types:
        ts = d[t]
        upto = np.searchsorted(ts, cuts, side="right")
        for w in windows:
            cols.append(upto - np.searchsorted(ts, cuts - w * DAY, side="right"))
        last = np.where(upto > 0, ts[np.maximum(upto - 1, 0)] if len(ts) else 0, -1)
        cols.append(np.where(upto > 0, (cuts - last) / DAY, tenure))
    pts = d["purchase"]
    pupto = np.searchsorted(pts, cuts, side="right")
    pcum = d["pur_val_cum"]
    for w in spend_windows:
        cols.append(pcum[pupto] - pcum[np.searchsorted(pts, cuts - w * DAY, side="right")])
    mupto = np.searchsorted(d["money_ts"], cuts, side="right")
    net = d["money_cum"][mupto]
    cols.append(pupto)                                    # frequency
    cols.append(np.where(pupto > 0, net / np.maximum(pupto, 1), 0.0))  # monetary
    cols.append(net)
    cols.append(tenure)
    year = 2 * np.pi * ((cuts % (365.25 * DAY)) / (365.25 * DAY))
    cols.append(np.sin(year))                             # time of year of the cut, as ltvd's inputs 11-12
    cols.append(np.cos(year))
    return np.column_stack(cols).astype(np.float64)


def spend_between(d, a, b):
    """Net spend in (a, b] for arrays of a and b."""
    import numpy as np
    ts = d["money_ts"]
    return d["money_cum"][np.searchsorted(ts, b, side="right")] - d["money_cum"][np.searchsorted(ts, a, side="right")]


def fit_predict(shoppers, now, horizon, seed, grid_days=30, types=TYPES, featurize=None, tree=None):
    """Trains on matured grid cuts before now - H; predicts every shopper at now.
    featurize(d, cuts) replaces the feature rows (default: features() over
    types) and tree the boosting parameters (bench/peer_ablation)."""
    import numpy as np
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
    if featurize is None:
        def featurize(d, c):
            return features(d, c, types)
    params = {"max_iter": 300, "learning_rate": 0.05, **(tree or {})}
    latest = now - horizon * DAY
    first = min(d["first"] for d in shoppers.values())
    cuts = list(range(latest, first, -grid_days * DAY))[::-1]
    X, y = [], []
    for d in shoppers.values():
        mine = [c for c in cuts if c >= d["first"]]
        if not mine:
            continue
        c = np.array(mine, dtype=np.int64)
        X.append(featurize(d, c))
        y.append(np.maximum(0.0, spend_between(d, c, c + horizon * DAY)))
    X, y = np.vstack(X), np.concatenate(y)
    reg = HistGradientBoostingRegressor(loss="poisson", early_stopping=True, validation_fraction=0.2,
                                        n_iter_no_change=20, random_state=seed, **params)
    reg.fit(X, y)
    clf = HistGradientBoostingClassifier(early_stopping=True, validation_fraction=0.2, n_iter_no_change=20,
                                         random_state=seed, **params)
    clf.fit(X, y > 0)
    ids = list(shoppers)
    Xs = np.vstack([featurize(shoppers[u], [now]) for u in ids])
    ltv = reg.predict(Xs)
    pbuy = clf.predict_proba(Xs)[:, 1]
    return {"ltv": dict(zip(ids, map(float, ltv))), "p_buy": dict(zip(ids, map(float, pbuy))),
            "examples": int(len(y)), "cuts": len(cuts), "features": int(X.shape[1]),
            "iterations": int(reg.n_iter_), "classifier_iterations": int(clf.n_iter_)}


def run(events_csv, now, horizon, seed, types=TYPES, timeout=1800):
    """Runs this file under an interpreter with sklearn; returns fit_predict's dict."""
    import subprocess
    import tempfile
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        out = f.name
    try:
        env = dict(os.environ, OMP_NUM_THREADS="1")
        subprocess.run([interpreter(), os.path.abspath(__file__), "--events", events_csv, "--now", str(now),
                        "--horizon", str(horizon), "--seed", str(seed), "--types", ",".join(types), "--out", out],
                       check=True, env=env, timeout=timeout)
        with open(out) as f:
            return json.load(f)
    finally:
        os.unlink(out)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--events", required=True)
    p.add_argument("--now", type=int, required=True, help="serving cut (unix seconds)")
    p.add_argument("--horizon", type=int, required=True, help="days")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--types", default=",".join(TYPES))
    p.add_argument("--out", required=True)
    args = p.parse_args()
    shoppers = load(args.events)
    r = fit_predict(shoppers, args.now, args.horizon, args.seed, types=tuple(args.types.split(",")))
    with open(args.out, "w") as f:
        json.dump(r, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
