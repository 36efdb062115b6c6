#!/usr/bin/env python3
"""Seeded synthetic shoppers for ltvd: views, clicks, carts and purchases
with heavy-tailed values, yearly seasonality and churn, where browsing
carries information about coming purchases.

Each shopper arrives in the first 90 days (--arrive-days: a population that
keeps arriving) and churns after an exponential lifetime. While alive, "interest episodes" arrive at a shopper-specific rate
(gamma-distributed across shoppers, higher in the seasonal peak); an episode
is a burst of views and clicks over ~10 days, often with add-to-carts, and
ends in a purchase with probability 0.55 about 1-3 weeks after it starts. A
few purchases also happen with no browsing at all. Values are log-normal
(heavy tail) around a shopper-specific level. BG/NBD sees only the
purchases; a model that sees the browsing knows which shoppers are in an
episode at the cut time.

Writes CSV (user_id,ts,type,value,quantity,event_id) sorted by shopper and
time, as tools/ltvd-import reads it. Standard library only.

  tools/simulate.py --shoppers 25000 --days 1095 --seed 1 > sim.csv
"""
import argparse
import math
import random
import sys

DAY = 86400
START = 1577836800  # 2020-01-01T00:00:00Z


def season(day):
    """Yearly multiplier: peak in late November/December."""
    return 1.0 + 0.6 * math.cos(2 * math.pi * (day % 365 - 340) / 365)


def shopper_events(rng, uid, days, browse_first=0.0, arrive_days=90.0):
    arrive = rng.uniform(0, arrive_days)
    life = rng.expovariate(1 / 420.0)
    end = min(days, arrive + life)
    rate = rng.gammavariate(0.8, 1 / 0.8) / 45.0      # episodes per day (mean 1 / 45 days)
    level = math.exp(rng.gauss(3.3, 0.5))              # typical order value
    if browse_first > 0 and rng.random() < browse_first:   # arrives browsing, buys nothing yet
        out = [(arrive, "view", 0.0)]
        out += [(arrive + rng.uniform(0, 2), "view", 0.0) for _ in range(int(rng.expovariate(1 / 3.0)))]
    else:
        out = [(arrive, "view", 0.0), (arrive + rng.uniform(0, 0.2), "purchase", level * math.exp(rng.gauss(0, 0.6)))]
    t = arrive
    while True:
        t += rng.expovariate(rate * 1.3)
        if t >= end:
            break
        if rng.random() > season(t) / 1.6:             # thinning: seasonal intensity
            continue
        n_views = 3 + int(rng.expovariate(1 / 6.0))
        span = rng.uniform(4, 14)
        for _ in range(n_views):
            out.append((t + rng.uniform(0, span), "view" if rng.random() < 0.7 else "click", 0.0))
        if rng.random() < 0.55:
            buy = t + rng.uniform(7, 21)
            if buy < end:
                if rng.random() < 0.8:
                    out.append((buy - rng.uniform(0, 2), "add_to_cart", 0.0))
                value = level * math.exp(rng.gauss(0, 0.6))
                out.append((buy, "purchase", value))
                if rng.random() < 0.04:
                    out.append((buy + rng.uniform(3, 20), "refund", value))
    for _ in range(rng.randrange(0, 2)):               # an unannounced purchase now and then
        x = rng.uniform(arrive, end)
        out.append((x, "purchase", level * math.exp(rng.gauss(0, 0.6))))
    out = [(d, k, v) for d, k, v in out if d < days]
    out.sort()
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shoppers", type=int, default=1000)
    p.add_argument("--days", type=int, default=730)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--browse-first", type=float, default=0.0,
                   help="share of shoppers who arrive browsing, without a purchase")
    p.add_argument("--arrive-days", type=float, default=90.0,
                   help="shoppers arrive uniformly over the first this many days (default 90: one cohort)")
    args = p.parse_args()
    if not 0 < args.arrive_days <= args.days:
        p.error("--arrive-days must be in (0, --days]")
    rng = random.Random(args.seed)
    w = sys.stdout.write
    w("user_id,ts,type,value,quantity,event_id\n")
    for i in range(args.shoppers):
        uid = f"sim{i}"
        for k, (d, kind, value) in enumerate(shopper_events(rng, uid, args.days, args.browse_first, args.arrive_days)):
            ts = START + int(d * DAY)
            val = f"{value:.2f}" if kind in ("purchase", "refund") else ""
            qty = "1" if kind in ("purchase", "add_to_cart") else ""
            w(f"{uid},{ts},{kind},{val},{qty},{uid}-{k}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
