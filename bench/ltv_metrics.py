"""LTV ranking and calibration metrics used by the accuracy benchmarks
(definitions in docs/ACCURACY.md). Standard library only."""
import math
import statistics


def ranks(xs):
    """Average ranks (1-based) with ties sharing their mean rank."""
    order = sorted(range(len(xs)), key=lambda i: xs[i])
    r = [0.0] * len(xs)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and xs[order[j + 1]] == xs[order[i]]:
            j += 1
        avg = (i + j) / 2 + 1
        for k in range(i, j + 1):
            r[order[k]] = avg
        i = j + 1
    return r


def pearson(a, b):
    ma, mb = statistics.fmean(a), statistics.fmean(b)
    cov = sum((x - ma) * (y - mb) for x, y in zip(a, b))
    va = sum((x - ma) ** 2 for x in a)
    vb = sum((y - mb) ** 2 for y in b)
    return cov / math.sqrt(va * vb) if va > 0 and vb > 0 else float("nan")


def spearman(pred, actual):
    return pearson(ranks(pred), ranks(actual))


def gini_of(actual, score):
    """Gini of the cumulative-actual curve when customers are sorted by score,
    highest first (ties keep input order)."""
    order = sorted(range(len(actual)), key=lambda i: -score[i])
    total = sum(actual)
    n = len(actual)
    cum, area = 0.0, 0.0
    for i in order:
        cum += actual[i]
        area += cum / total
    return area / n - (n + 1) / (2 * n)


def normalised_gini(pred, actual):
    return gini_of(actual, pred) / gini_of(actual, actual)


def decile_means(pred, actual):
    """Customers sorted by prediction, highest first (ties in input order),
    cut into 10 groups of sizes as numpy.array_split makes them (the first
    n % 10 groups one larger): each group's (mean pred, mean actual)."""
    order = sorted(range(len(pred)), key=lambda i: -pred[i])
    n = len(order)
    groups, start = [], 0
    for d in range(10):
        size = n // 10 + (1 if d < n % 10 else 0)
        idx = order[start:start + size]
        start += size
        groups.append((statistics.fmean(pred[i] for i in idx), statistics.fmean(actual[i] for i in idx)))
    return groups


def decile_mape(pred, actual):
    """Mean over the deciles of decile_means of |mean pred - mean actual| /
    mean actual (deciles with no spend left out). With many tied
    predictions the figure moves by about ±0.01 with the tie order and the
    sort direction (docs/ACCURACY.md)."""
    errs = [abs(mp - ma) / ma for mp, ma in decile_means(pred, actual) if ma > 0]
    return statistics.fmean(errs)


def auc(score, label):
    r = ranks(score)
    pos = sum(label)
    neg = len(label) - pos
    if pos == 0 or neg == 0:
        return float("nan")
    rank_sum = sum(ri for ri, l in zip(r, label) if l)
    return (rank_sum - pos * (pos + 1) / 2) / (pos * neg)


def score(pred, actual):
    return {
        "gini": normalised_gini(pred, actual),
        "spearman": spearman(pred, actual),
        "decile_mape": decile_mape(pred, actual),
        "auc": auc(pred, [1 if a > 0 else 0 for a in actual]),
        "total_error": (sum(pred) - sum(actual)) / sum(actual),
    }


def jitter_spread(preds, actual, scale=0.01, draws=40, seed=0):
    """How far each metric moves when every prediction is multiplied by its
    own random factor exp(N(0, scale)): a change no user of the scores could
    notice (at 1% the Gini moves in the fourth decimal), which reorders
    customers whose predictions are close or tied. preds is one list a seed;
    each gets `draws` draws. Returns {metric: (mean, sd, min, max)} over all
    of them."""
    import random
    rng = random.Random(seed)
    figs = {m: [] for m in HIGHER_IS_BETTER}
    for pred in preds:
        for _ in range(draws):
            moved = [x * math.exp(rng.gauss(0.0, scale)) for x in pred]
            for m, v in score(moved, actual).items():
                figs[m].append(v)
    return {m: (statistics.fmean(v), statistics.stdev(v) if len(v) > 1 else 0.0, min(v), max(v))
            for m, v in figs.items()}


HIGHER_IS_BETTER = {"gini": True, "spearman": True, "decile_mape": False, "auc": True, "total_error": None}


def bootstrap_against(preds_by_cfg, actual, baseline, draws=200, seed=0):
    """How much of a difference between configurations is the customers'
    noise? Resamples customers with replacement (the same resample for every
    configuration); in each, a configuration's figure is the mean over its
    seeds' predictions. Returns {cfg: {metric: (mean difference to baseline,
    sd of the difference, share of resamples in which cfg is better)}};
    for total_error "better" means a smaller absolute error."""
    import random
    rng = random.Random(seed)
    n = len(actual)
    diffs = {c: {m: [] for m in HIGHER_IS_BETTER} for c in preds_by_cfg if c != baseline}
    wins = {c: {m: 0 for m in HIGHER_IS_BETTER} for c in diffs}
    for _ in range(draws):
        idx = [rng.randrange(n) for _ in range(n)]
        act = [actual[i] for i in idx]
        if sum(act) <= 0:
            continue
        figs = {}
        for cfg, preds in preds_by_cfg.items():
            per_seed = [score([p[i] for i in idx], act) for p in preds]
            figs[cfg] = {m: statistics.fmean(s[m] for s in per_seed) for m in HIGHER_IS_BETTER}
        for cfg in diffs:
            for m, higher in HIGHER_IS_BETTER.items():
                a, b = figs[cfg][m], figs[baseline][m]
                diffs[cfg][m].append(a - b)
                better = abs(a) < abs(b) if higher is None else (a > b if higher else a < b)
                wins[cfg][m] += better
    out = {}
    for cfg in diffs:
        k = len(diffs[cfg]["gini"])
        out[cfg] = {m: (statistics.fmean(d), statistics.stdev(d) if k > 1 else 0.0, wins[cfg][m] / max(k, 1))
                    for m, d in diffs[cfg].items()}
    return out
