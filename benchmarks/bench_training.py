"""Training benchmark: a DBP epoch against a backprop epoch, measured side by side.

Runs one epoch of :func:`dyadsim.train` per method on the same data, network, batches and
optimizer, round robin over ``--repeats`` repeats (every repeat runs every method once, so
a change in machine load hits all of them alike), and prints each method's best epoch time
as a ratio to backprop's, with the range of the per-repeat ratios.  The Euler methods use
eta = 1, where the gradients are exact: the default schedule ("auto": the wavefront) and,
for contrast, the parallel one.  The runs also check that every method ends the epoch with
the same parameters as backprop (exact gradients: the same trajectory).

    python benchmarks/bench_training.py                     # 64-64x8-10 tanh on digits
    python benchmarks/bench_training.py --repeats 10 --batch-size 64 --json out.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np


def run(net_spec="64-64x8-10", data_name="digits", batch_size=32, repeats=5, seed=0, log=print):
    import dyadsim
    import dyadsim.datasets as ds

    data = ds.load(data_name)
    base = dyadsim.mlp(net_spec, activation="tanh", loss="xent", seed=seed)
    methods = {
        "backprop": dyadsim.Backprop(),
        "euler eta=1 (auto: wavefront)": dyadsim.Euler(eta=1.0),
        "euler eta=1 parallel": dyadsim.Euler(eta=1.0, schedule="parallel"),
    }
    times = {k: [] for k in methods}
    finals = {}
    for r in range(repeats):
        for name, method in methods.items():
            net = base.copy()
            t0 = time.perf_counter()
            dyadsim.train(net, data, method=method, optimizer="adam", lr=1e-3, epochs=1,
                          batch_size=batch_size, seed=seed, progress=False)
            times[name].append(time.perf_counter() - t0)
            finals[name] = {k: v.copy() for k, v in net.params.items()}
        log(f"repeat {r + 1}/{repeats}: " + ", ".join(f"{k} {v[-1]:.3f} s" for k, v in times.items()))
    ref = np.array(times["backprop"])
    out = {"net": net_spec, "data": data_name, "batch_size": batch_size, "repeats": repeats,
           "epoch_s_best": {}, "ratio_best": {}, "ratio_range": {}, "max_param_diff_vs_backprop": {}}
    for name, ts in times.items():
        ts = np.array(ts)
        out["epoch_s_best"][name] = float(ts.min())
        out["ratio_best"][name] = float(ts.min() / ref.min())
        per = ts / ref
        out["ratio_range"][name] = [float(per.min()), float(per.max())]
        out["max_param_diff_vs_backprop"][name] = max(
            float(np.max(np.abs(finals[name][k] - finals["backprop"][k]))) for k in finals["backprop"])
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--net", default="64-64x8-10")
    ap.add_argument("--data", default="digits")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", default=None, help="also write the results to this file")
    args = ap.parse_args(argv)
    res = run(args.net, args.data, args.batch_size, args.repeats)
    print(f"\none epoch of train() on {res['data']}, {res['net']}, batch {res['batch_size']} "
          f"(best of {res['repeats']}, round robin)")
    print(f"{'method':<32} {'epoch (s)':>10} {'x backprop':>11} {'per-repeat range':>18} {'max |dparam|':>13}")
    for name in res["epoch_s_best"]:
        lo, hi = res["ratio_range"][name]
        print(f"{name:<32} {res['epoch_s_best'][name]:>10.3f} {res['ratio_best'][name]:>11.2f} "
              f"{lo:>8.2f} .. {hi:<7.2f} {res['max_param_diff_vs_backprop'][name]:>13.2e}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(res, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
