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
* ``relax_continuous``     -- the continuous-time flow integrated to steady state with its
                              defaults (``method="ETD"``, exponential collocation; any solver
                              with ``--ode-method``): the ODE reference.

Each is the best of ``--repeats`` runs with ``time.perf_counter`` (the ODE: best of
``--ode-repeats``, default 3), taken round robin (every repeat runs every method once, so
a change in machine load hits all of them alike), reported as a ratio to backprop (best
over best) together with the range of the per-repeat ratios (each method's time in a
repeat over backprop's time in the same repeat), and the max relative error of its
gradients against backprop (``compare(...).max_rel_error``).  ``--threads N`` pins the BLAS
thread pools (threadpoolctl) to N threads for the whole run.

``--ode-grid`` instead checks the ODE's target: with its defaults, on 784-256x8-10 tanh
for both losses and batches 16 and 256, every tensor within 1e-8 of backprop at no more
than 100x backprop's time, each case timed side by side with backprop (round robin).
``--quick`` runs a small version of either (784-64x4-10, batch 64 or batches 16 and 64,
2 repeats) in seconds.

    python benchmarks/bench_core.py                       # 784-256x8-10 tanh, xent, batch 256
    python benchmarks/bench_core.py --skip-ode --repeats 10
    python benchmarks/bench_core.py --skip-ode --repeats 20 --threads 1
    python benchmarks/bench_core.py --ode-grid --threads 1   # the ODE target (about a minute)
    python benchmarks/bench_core.py --ode-grid --quick
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


def _batch(net, batch, loss, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, net.n_in))
    if loss == "xent":
        y = np.eye(net.n_out)[rng.integers(0, net.n_out, size=batch)]
    else:
        y = rng.standard_normal((batch, net.n_out))
    return x, y


def run(net_spec="784-256x8-10", batch=256, repeats=5, skip_ode=False, ode_method=None,
        ode_repeats=3, activation="tanh", loss="xent", seed=0, warmup=True, log=print) -> dict:
    """Run the benchmark and return a JSON-able dict (also prints progress via ``log``)."""
    import dyadsim

    net = dyadsim.mlp(net_spec, activation=activation, loss=loss, seed=seed)
    x, y = _batch(net, batch, loss, seed)
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
        ode_kw = {} if ode_method is None else {"method": ode_method}
        methods.append((f"relax_continuous {ode_method or 'ETD'}",
                        lambda: dyadsim.relax_continuous(net, x, y, **ode_kw),
                        ode_repeats, "ODE reference"))

    if warmup:  # caches, BLAS thread start-up, lazy imports (not for a slow scipy ODE)
        for name, fn, _, _ in methods:
            if not name.startswith("relax_continuous") or ode_method is None:
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
            row["note"] = (f"ODE reference, t_settle={out.t_settle:.3f} tau, "
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


def run_ode_grid(net_spec="784-256x8-10", losses=("mse", "xent"), batches=(16, 256), repeats=3,
                 activation="tanh", seed=0, max_ratio=100.0, max_error=1e-8, ode_method=None,
                 log=print) -> dict:
    """The ODE's target: ``relax_continuous`` with its defaults against backprop, side by
    side (round robin after a warm-up, ``repeats`` each), for every loss and batch size."""
    import dyadsim

    ode_kw = {} if ode_method is None else {"method": ode_method}
    cases = []
    for loss in losses:
        net = dyadsim.mlp(net_spec, activation=activation, loss=loss, seed=seed)
        for batch in batches:
            x, y = _batch(net, batch, loss, seed)
            log(f"case {net_spec} {activation} {loss} batch {batch}")
            fns = {"backprop": lambda: dyadsim.backprop(net, x, y),
                   "ode": lambda: dyadsim.relax_continuous(net, x, y, **ode_kw)}
            for fn in fns.values():  # warm-up
                fn()
            times = {k: [] for k in fns}
            outs = {}
            for r in range(repeats):
                for k, fn in fns.items():
                    log(f"  [{r + 1}] timing {k} ...")
                    t0 = time.perf_counter()
                    outs[k] = fn()
                    times[k].append(time.perf_counter() - t0)
            res = outs["ode"]
            err = dyadsim.compare(res.grads, outs["backprop"]).max_rel_error
            per = [t / b for t, b in zip(times["ode"], times["backprop"])]
            ratio = min(times["ode"]) / min(times["backprop"])
            cases.append({
                "loss": loss, "batch": batch, "backprop_ms": 1e3 * min(times["backprop"]),
                "ode_ms": 1e3 * min(times["ode"]), "ratio": ratio,
                "ratio_range": [min(per), max(per)], "max_rel_error": err,
                "solver": res.method, "steps": res.n_steps,
                "rejected": res.info.get("rejected"), "nfev": res.nfev,
                "t_settle": res.t_settle, "t_final": res.t_final,
                "met": bool(err <= max_error and ratio <= max_ratio),
            })
    return {
        "benchmark": "bench_core --ode-grid", "net": net_spec, "activation": activation,
        "dtype": "float64", "repeats": repeats, "python": platform.python_version(),
        "numpy": np.__version__, "cpu_count": os.cpu_count(), "blas_threads": _blas_threads(),
        "cases": cases,
        "target": {"max_ratio": max_ratio, "max_rel_error": max_error,
                   "met": all(c["met"] for c in cases)},
    }


def format_grid(report: dict) -> str:
    head = (f"{'loss':<5} {'batch':>5} {'backprop [ms]':>13} {'ODE [ms]':>10} "
            f"{'x backprop':>10} {'range':>13} {'max rel err':>11}  {'steps':>5} "
            f"{'f-evals':>7} {'t_settle':>9}")
    lines = [
        f"bench_core --ode-grid: {report['net']} {report['activation']} MLP, float64, "
        f"relax_continuous defaults vs backprop, best of {report['repeats']} each",
        f"numpy {report['numpy']}, {report['cpu_count']} CPUs, BLAS threads: "
        f"{report['blas_threads']}",
        head, "-" * len(head),
    ]
    for c in report["cases"]:
        lo, hi = c["ratio_range"]
        rng = f"{lo:.1f}-{hi:.1f}"
        lines.append(f"{c['loss']:<5} {c['batch']:>5} {c['backprop_ms']:>13.2f} "
                     f"{c['ode_ms']:>10.1f} {c['ratio']:>10.1f} {rng:>13} "
                     f"{c['max_rel_error']:>11.2e}  {c['steps']:>5} {c['nfev']:>7} "
                     f"{c['t_settle']:>9.3f}")
    t = report["target"]
    lines.append(f"target: every tensor within {t['max_rel_error']:g} of backprop at <= "
                 f"{t['max_ratio']:g}x its time: {'met' if t['met'] else 'MISSED'}")
    return "\n".join(lines)


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
    p.add_argument("--net", default=None,
                   help="MLP layer sizes, e.g. 784-256x8-10 (default; 784-64x4-10 with --quick)")
    p.add_argument("--batch", type=int, default=None,
                   help="batch size (default 256; 64 with --quick)")
    p.add_argument("--repeats", type=int, default=None,
                   help="best of this many runs per method (default 5; 3 with --ode-grid; "
                        "2 with --quick)")
    p.add_argument("--skip-ode", action="store_true", help="do not time relax_continuous")
    p.add_argument("--ode-method", default=None,
                   help="relax_continuous solver (default: its own, ETD)")
    p.add_argument("--ode-repeats", type=int, default=3,
                   help="best of this many ODE runs in the main table (default 3)")
    p.add_argument("--ode-grid", action="store_true",
                   help="check the ODE target instead: both losses, batches 16 and 256")
    p.add_argument("--quick", action="store_true",
                   help="a small, fast version (784-64x4-10, batch 64 / batches 16 and 64, "
                        "2 repeats)")
    p.add_argument("--activation", default="tanh", help="hidden activation (default tanh)")
    p.add_argument("--loss", default="xent", choices=["xent", "mse"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None,
                   help="pin the BLAS thread pools to this many threads (threadpoolctl)")
    p.add_argument("--json", metavar="OUT.json", help="also write the results as JSON")
    args = p.parse_args(argv)
    net = args.net or ("784-64x4-10" if args.quick else "784-256x8-10")
    repeats = args.repeats or (2 if args.quick else (3 if args.ode_grid else 5))
    batch = args.batch or (64 if args.quick else 256)
    if batch < 1 or repeats < 1 or args.ode_repeats < 1:
        p.error("--batch, --repeats and --ode-repeats must be positive")

    if args.threads is not None and args.threads < 1:
        p.error("--threads must be positive")
    limiter = None
    if args.threads is not None:
        import dyadsim  # noqa: F401  (loads every BLAS library first, so all are limited)
        from threadpoolctl import threadpool_limits

        limiter = threadpool_limits(limits=args.threads, user_api="blas")
    log = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731
    try:
        if args.ode_grid:
            batches = (args.batch,) if args.batch else ((16, 64) if args.quick else (16, 256))
            report = run_ode_grid(net, batches=batches, repeats=repeats,
                                  activation=args.activation, seed=args.seed,
                                  ode_method=args.ode_method, log=log)
        else:
            report = run(net, batch, repeats, args.skip_ode, args.ode_method,
                         min(args.ode_repeats, repeats), args.activation, args.loss,
                         args.seed, log=log)
    finally:
        if limiter is not None:
            limiter.unregister()
    print(format_grid(report) if args.ode_grid else format_table(report))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(report, fh, indent=2)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
