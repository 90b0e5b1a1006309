"""Core benchmark: DBP relaxation vs exact backprop, measured side by side in one run.

Times, on one network and one batch (float64, numpy's threads as they are):

* ``backprop``             -- exact reverse-mode gradients (the reference, ratio 1.00);
* ``relax parallel``       -- explicit Euler at eta = 1, every neuron updated every step
                              (2L steps: the physical picture);
* ``relax wavefront``      -- the same relaxation updating only the layers that can change
                              (same state at step 2L, backprop's cost; target <= 1.3x), in
                              the default exact encoding (state="md");
* ``relax wavefront xz``   -- the same in the physical encoding (state="xz": the node
                              voltages x, z are stored and updated);
* ``relax_continuous``     -- the continuous-time flow integrated to steady state with
                              scipy (DOP853 by default): the ODE reference (slow).

Each is the best of ``--repeats`` runs with ``time.perf_counter`` (the ODE: best of
``--ode-repeats``, default 1), taken round robin (every repeat runs every method once, so
a change in machine load hits all of them alike), reported as a ratio to backprop (best
over best) together with the range of the per-repeat ratios (each method's time in a
repeat over backprop's time in the same repeat), and the max relative error of its
gradients against backprop (``compare(...).max_rel_error``).  ``--threads N`` pins the BLAS
thread pools (threadpoolctl) to N threads for the whole run.

    python benchmarks/bench_core.py                       # 784-256x8-10 tanh, xent, batch 256
    python benchmarks/bench_core.py --skip-ode --repeats 10
    python benchmarks/bench_core.py --skip-ode --repeats 20 --threads 1
    python benchmarks/bench_core.py --net 784-128x4-10 --batch 64 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import numpy as np


def _blas_threads() -> str:
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "unknown (threadpoolctl not installed)"
    info = [f"{d.get('internal_api')}:{d.get('num_threads')}" for d in threadpool_info()]
    return ", ".join(info) or "none"


def run(net_spec="784-256x8-10", batch=256, repeats=5, skip_ode=False, ode_method="DOP853",
        ode_repeats=1, activation="tanh", loss="xent", seed=0, warmup=True, log=print) -> dict:
    """Run the benchmark and return a JSON-able dict (also prints progress via ``log``)."""
    import dyadsim

    net = dyadsim.mlp(net_spec, activation=activation, loss=loss, seed=seed)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, net.n_in))
    if loss == "xent":
        y = np.eye(net.n_out)[rng.integers(0, net.n_out, size=batch)]
    else:
        y = rng.standard_normal((batch, net.n_out))
    L = net.depth

    methods = [
        ("backprop", lambda: dyadsim.backprop(net, x, y), repeats, "exact reverse mode"),
        ("relax parallel", lambda: dyadsim.relax(net, x, y, eta=1.0, schedule="parallel"),
         repeats, f"Euler eta=1, {2 * L} steps"),
        ("relax wavefront", lambda: dyadsim.relax(net, x, y, eta=1.0, schedule="wavefront"),
         repeats, f"Euler eta=1, {2 * L} steps, wavefront, state=md"),
        ("relax wavefront xz", lambda: dyadsim.relax(net, x, y, eta=1.0, schedule="wavefront",
                                                     state="xz"),
         repeats, f"Euler eta=1, {2 * L} steps, wavefront, state=xz"),
    ]
    if not skip_ode:
        methods.append((f"relax_continuous {ode_method}",
                        lambda: dyadsim.relax_continuous(net, x, y, method=ode_method),
                        ode_repeats, "ODE reference"))

    if warmup:  # caches, BLAS thread start-up, lazy imports (not for the slow ODE)
        for name, fn, _, _ in methods:
            if not name.startswith("relax_continuous"):
                fn()

    # Round robin: repeat r runs every method once, so that a change in machine load
    # during the run hits all methods alike; each method keeps its best time.
    best = {name: float("inf") for name, *_ in methods}
    per_repeat = {name: [] for name, *_ in methods}  # ratio to backprop in the same repeat
    outs = {}
    for r in range(max(reps for _, _, reps, _ in methods)):
        this = {}
        for name, fn, reps, _ in methods:
            if r >= max(1, reps):
                continue
            log(f"  [{r + 1}] timing {name} ...")
            t0 = time.perf_counter()
            outs[name] = fn()
            this[name] = time.perf_counter() - t0
            best[name] = min(best[name], this[name])
        for name, t in this.items():
            per_repeat[name].append(t / this["backprop"])

    rows = []
    ref = outs["backprop"]
    for name, fn, reps, note in methods:
        out = outs[name]
        grads = out if name == "backprop" else out.grads
        err = dyadsim.compare(grads, ref).max_rel_error
        row = {"method": name, "seconds": best[name], "repeats": max(1, reps),
               "max_rel_error": err, "note": note,
               "ratio_range": [min(per_repeat[name]), max(per_repeat[name])]}
        if hasattr(out, "steps"):
            row["steps"] = int(out.steps)
        if hasattr(out, "t_settle"):
            row.update(t_settle=out.t_settle, t_final=out.t_final, nfev=out.nfev,
                       n_steps=out.n_steps)
            row["note"] = (f"ODE reference, t_settle={out.t_settle:.1f} tau, "
                           f"{out.n_steps} steps, {out.nfev} f-evals")
        rows.append(row)
    t_bp = rows[0]["seconds"]
    for r in rows:
        r["ratio"] = r["seconds"] / t_bp
    wave = next(r for r in rows if r["method"] == "relax wavefront")
    return {
        "benchmark": "bench_core",
        "net": net_spec, "activation": activation, "loss": loss, "batch": batch,
        "depth": L, "neurons": net.n, "params": net.n_params, "dtype": "float64",
        "repeats": repeats,
        "python": platform.python_version(), "numpy": np.__version__,
        "cpu_count": os.cpu_count(), "blas_threads": _blas_threads(),
        "results": rows,
        "target": {"wavefront_over_backprop_max": 1.3,
                   "wavefront_over_backprop": wave["ratio"],
                   "met": wave["ratio"] <= 1.3},
    }


def format_table(report: dict) -> str:
    head = (f"{'method':<26} {'best [ms]':>11} {'x backprop':>11} {'range':>13} "
            f"{'max rel err':>12}  note")
    lines = [
        f"bench_core: {report['net']} {report['activation']} MLP, loss={report['loss']}, "
        f"batch={report['batch']}, {report['dtype']}, depth L={report['depth']}, "
        f"{report['params']} params",
        f"numpy {report['numpy']}, {report['cpu_count']} CPUs, BLAS threads: "
        f"{report['blas_threads']}",
        head, "-" * len(head),
    ]
    for r in report["results"]:
        lo, hi = r["ratio_range"]
        rng = f"{lo:.2f}-{hi:.2f}"
        lines.append(f"{r['method']:<26} {1e3 * r['seconds']:>11.2f} {r['ratio']:>11.2f} "
                     f"{rng:>13} {r['max_rel_error']:>12.2e}  {r['note']}")
    t = report["target"]
    lines.append(f"target: wavefront <= {t['wavefront_over_backprop_max']:.1f}x backprop: "
                 f"{t['wavefront_over_backprop']:.2f}x -> {'met' if t['met'] else 'MISSED'}")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--net", default="784-256x8-10",
                   help="MLP layer sizes, e.g. 784-256x8-10 (default)")
    p.add_argument("--batch", type=int, default=256, help="batch size (default 256)")
    p.add_argument("--repeats", type=int, default=5,
                   help="best of this many runs per method (default 5)")
    p.add_argument("--skip-ode", action="store_true", help="do not time relax_continuous")
    p.add_argument("--ode-method", default="DOP853", help="scipy solver for the ODE (DOP853)")
    p.add_argument("--ode-repeats", type=int, default=1,
                   help="best of this many ODE runs (default 1: it is slow)")
    p.add_argument("--activation", default="tanh", help="hidden activation (default tanh)")
    p.add_argument("--loss", default="xent", choices=["xent", "mse"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None,
                   help="pin the BLAS thread pools to this many threads (threadpoolctl)")
    p.add_argument("--json", metavar="OUT.json", help="also write the results as JSON")
    args = p.parse_args(argv)
    if args.batch < 1 or args.repeats < 1 or args.ode_repeats < 1:
        p.error("--batch, --repeats and --ode-repeats must be positive")

    if args.threads is not None and args.threads < 1:
        p.error("--threads must be positive")
    limiter = None
    if args.threads is not None:
        import dyadsim  # noqa: F401  (loads every BLAS library first, so all are limited)
        from threadpoolctl import threadpool_limits

        limiter = threadpool_limits(limits=args.threads, user_api="blas")
    try:
        report = run(args.net, args.batch, args.repeats, args.skip_ode, args.ode_method,
                     args.ode_repeats, args.activation, args.loss, args.seed,
                     log=lambda s: print(s, file=sys.stderr, flush=True))
    finally:
        if limiter is not None:
            limiter.unregister()
    print(format_table(report))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(report, fh, indent=2)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
