#!/usr/bin/env python3
"""The LSTM step's peer: PyTorch's LSTMCell(16, H), called once per event
(as a service would) and batched 1000 events at a time. Prints JSON with
the median microseconds per event over 7 runs. Needs Debian's python3-torch
(run with /usr/bin/python3). Usage: lstm_torch.py [H] [STEPS]"""
import json
import statistics
import sys
import time

try:
    import torch
except ImportError:
    print(json.dumps({"skipped": "python3-torch is not installed (apt-get install python3-torch)"}))
    sys.exit(0)

H = int(sys.argv[1]) if len(sys.argv) > 1 else 32
STEPS = int(sys.argv[2]) if len(sys.argv) > 2 else 20000
torch.set_num_threads(1)
torch.manual_seed(1)
cell = torch.nn.LSTMCell(16, H)
xs = torch.randn(64, 1, 16)


def per_event():
    h = torch.zeros(1, H)
    c = torch.zeros(1, H)
    t0 = time.perf_counter()
    with torch.no_grad():
        for i in range(STEPS):
            h, c = cell(xs[i % 64], (h, c))
    return (time.perf_counter() - t0) / STEPS * 1e6


def batched(batch=1000, reps=200):
    x = torch.randn(batch, 16)
    h = torch.zeros(batch, H)
    c = torch.zeros(batch, H)
    t0 = time.perf_counter()
    with torch.no_grad():
        for _ in range(reps):
            h, c = cell(x, (h, c))
    return (time.perf_counter() - t0) / (reps * batch) * 1e6


per = [per_event() for _ in range(7)]
bat = [batched() for _ in range(7)]
print(json.dumps({"torch": torch.__version__, "hidden": H, "threads": 1,
                  "us_per_event_median": round(statistics.median(per), 3),
                  "us_per_event_batched_1000_median": round(statistics.median(bat), 3)}))
