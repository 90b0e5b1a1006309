"""Settling time of the circuit's relaxation vs network depth L.

For width-8 tanh MLPs (8 inputs, L weight layers of 8 neurons, mse, batch 1) with
L = 1..8 and a few seeds, this runs the ngspice ``.tran`` relaxation from x = z = 0 and
measures when the gradient readout comes (and stays) within 1e-6 relative error of its
final value, in units of tau = C/g.  As a second method it integrates the same networks'
continuous saddle flow with :func:`dyadsim.relax_continuous` and takes its ``t_settle``
(the time after which m and d stay within 1e-6, max-norm relative, of the final state;
measured at the solver's steps, so it can be late by up to one step).

It prints the table, fits ``t_settle = a + b L`` (least squares over all seeds) for both
methods, and writes ``docs/figures/settling_vs_depth.png`` and ``.csv``.

    python benchmarks/settling_vs_depth.py                 # L = 1..8, 3 seeds
    python benchmarks/settling_vs_depth.py --depths 1,2,4 --seeds 1 --out-dir /tmp
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
TRAN = {"t_step": 0.05, "max_step": 0.1}  # units of tau; t_stop: the default 6L + 30


def problem(L, width, seed):
    import dyadsim

    net = dyadsim.mlp([width] * (L + 1), activation="tanh", loss="mse", seed=seed)
    rng = np.random.default_rng([seed, L])
    x = rng.uniform(-1, 1, (1, width))
    y = rng.uniform(-0.5, 0.5, (1, width))
    return net, x, y


def fit_line(L, t):
    """Least squares t = a + b L; returns (a, b, r2)."""
    L, t = np.asarray(L, float), np.asarray(t, float)
    b, a = np.polyfit(L, t, 1)
    pred = a + b * L
    ss_res = float(np.sum((t - pred) ** 2))
    ss_tot = float(np.sum((t - t.mean()) ** 2)) or 1.0
    return float(a), float(b), 1.0 - ss_res / ss_tot


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--depths", default="1,2,3,4,5,6,7,8")
    ap.add_argument("--width", type=int, default=8)
    ap.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 per depth")
    ap.add_argument("--tol", type=float, default=1e-6, help="settling tolerance (relative)")
    ap.add_argument("--processes", type=int, default=2, help="parallel ngspice processes")
    ap.add_argument("--out-dir", default=str(ROOT / "docs" / "figures"))
    args = ap.parse_args(argv)
    depths = [int(s) for s in args.depths.split(",") if s.strip()]

    import dyadsim
    from dyadsim.readout import settling_time

    cases = [(L, s) for L in depths for s in range(args.seeds)]
    probs = {c: problem(c[0], args.width, c[1]) for c in cases}
    netlists = [dyadsim.compile_netlist(*probs[c], analysis="tran", **TRAN) for c in cases]
    t0 = time.perf_counter()
    results = dyadsim.simulate_many(netlists, analysis="tran", processes=args.processes,
                                    timeout=600)
    t_spice = time.perf_counter() - t0

    rows = []
    for c, nl, res in zip(cases, netlists, results):
        L, seed = c
        net, x, y = probs[c]
        ref = dyadsim.backprop(net, x, y)
        tr = dyadsim.relaxation_trace(net, res, max_points=len(res.time))  # every point
        ts = settling_time(tr["t"], tr["grad_error"], args.tol)
        err = dyadsim.compare(dyadsim.readout(net, res), ref).max_rel_error
        t1 = time.perf_counter()
        ode = dyadsim.relax_continuous(net, x, y, settle_tol=args.tol)
        rows.append({
            "L": L, "seed": seed, "width": args.width, "neurons": net.n,
            "t_settle_spice_tau": ts, "t_settle_ode_tau": ode.t_settle,
            "spice_max_rel_error": err,
            "ode_max_rel_error": dyadsim.compare(ode.grads, ref).max_rel_error,
            "tran_points": len(res.time), "t_stop_tau": float(res.time[-1] / nl.tau),
            "ode_s": time.perf_counter() - t1,
        })

    print(f"width-{args.width} tanh MLPs, batch 1, settling to {args.tol:g} relative; "
          f".tran output step {TRAN['t_step']} tau, max step {TRAN['max_step']} tau "
          f"({len(cases)} transients in {t_spice:.1f} s, {args.processes} processes)")
    head = (f"{'L':>3} {'spice t_settle/tau (mean +- sd)':>32} {'ode t_settle/tau':>22} "
            f"{'spice err':>10} {'ode err':>9}")
    print(head)
    print("-" * len(head))
    for L in depths:
        sel = [r for r in rows if r["L"] == L]
        sp = np.array([r["t_settle_spice_tau"] for r in sel])
        od = np.array([r["t_settle_ode_tau"] for r in sel])
        print(f"{L:>3} {sp.mean():>24.2f} +- {sp.std():<5.2f} {od.mean():>14.2f} +- {od.std():<5.2f}"
              f" {max(r['spice_max_rel_error'] for r in sel):>10.1e}"
              f" {max(r['ode_max_rel_error'] for r in sel):>9.1e}")

    Ls = [r["L"] for r in rows]
    fits = {
        "spice": fit_line(Ls, [r["t_settle_spice_tau"] for r in rows]),
        "ode": fit_line(Ls, [r["t_settle_ode_tau"] for r in rows]),
    }
    print("\nlinear fit t_settle = a + b*L (tau), all seeds:")
    for k, (a, b, r2) in fits.items():
        print(f"  {k:<6} a = {a:6.2f}  b = {b:5.2f} tau per layer  R^2 = {r2:.3f}")

    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    csv_path = out / "settling_vs_depth.csv"
    with open(csv_path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.0, 3.8))
    grid = np.linspace(min(depths), max(depths), 50)
    for key, col, label, marker in (("t_settle_spice_tau", "C0", "ngspice .tran (gradient readout)", "o"),
                                    ("t_settle_ode_tau", "C1", "continuous ODE (m, d state)", "s")):
        name = "spice" if "spice" in key else "ode"
        a, b, r2 = fits[name]
        jitter = -0.08 if name == "spice" else 0.08
        ax.scatter(np.array(Ls) + jitter, [r[key] for r in rows], s=14, color=col, marker=marker,
                   alpha=0.6, label=f"{label}")
        means = [np.mean([r[key] for r in rows if r["L"] == L]) for L in depths]
        ax.plot(depths, means, color=col, lw=1.0)
        ax.plot(grid, a + b * grid, color=col, ls="--", lw=1.0,
                label=f"fit {a:.1f} + {b:.2f} L (R$^2$ {r2:.2f})")
    ax.set_xlabel("depth L (weight layers)")
    ax.set_ylabel(f"settling time to {args.tol:g} / tau")
    ax.set_title(f"DBP relaxation: settling time vs depth (width-{args.width} tanh MLPs)",
                 fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    png_path = out / "settling_vs_depth.png"
    fig.savefig(png_path, dpi=100)
    plt.close(fig)
    print(f"\nwrote {png_path} ({png_path.stat().st_size // 1024} KB) and {csv_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
