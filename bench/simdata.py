"""A simulated population for the accuracy benchmarks: tools/simulate.py's
events in a temporary CSV, and each shopper's net spend in a window.
Standard library only."""
import csv
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
START = 1577836800  # tools/simulate.py's day 0


def simulate(shoppers, days, seed, arrive_days):
    """Runs tools/simulate.py; returns the CSV's path (the caller deletes it)."""
    with tempfile.NamedTemporaryFile("w", suffix=".csv", delete=False) as f:
        subprocess.run([sys.executable, os.path.join(ROOT, "tools", "simulate.py"), "--shoppers", str(shoppers),
                        "--days", str(days), "--seed", str(seed), "--arrive-days", str(arrive_days)],
                       stdout=f, check=True)
        return f.name


def spend_after(path, cut, horizon_days):
    """({user_id: net spend in (cut, cut + H]}, every user_id of the file
    included; the number of events in the file)."""
    actual, events = {}, 0
    for row in csv.reader(open(path)):
        if not row or row[0] == "user_id":
            continue
        events += 1
        ts = int(row[1])
        actual.setdefault(row[0], 0.0)
        if cut < ts <= cut + horizon_days * 86400:
            v = float(row[3] or 0)
            actual[row[0]] += v if row[2] == "purchase" else -v if row[2] == "refund" else 0
    return actual, events
