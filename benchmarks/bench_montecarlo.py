"""Monte Carlo of non-ideal DBP circuits on Dask: speed-up, mismatch sweep, device accuracy.

Three modes (run from the repository root):

    python benchmarks/bench_montecarlo.py                 # speed-up: local cluster vs one process
    python benchmarks/bench_montecarlo.py --sweep         # docs/figures/mismatch_sweep.{png,csv}
    python benchmarks/bench_montecarlo.py --device        # device dialect vs backprop, per non-ideality
    python benchmarks/bench_montecarlo.py --schematic     # docs/figures/device_neuron.png

Problem: ``dyadsim.mlp(NET, activation="tanh", loss="mse", seed=0)`` (default 16-16-10)
with the CLI's random batch (``dyadsim.cli._main.random_batch``: inputs uniform in [0, 1),
targets uniform in [-0.5, 0.5]; default batch 8), one netlist per run holding the batch.

*Speed-up*: the same ``--runs`` (200) Monte Carlo runs of ``Mismatch(--sigma)`` once with
Dask's ``synchronous`` scheduler (one Python process; every run is still its own ngspice
process, one at a time) and once on a ``distributed.LocalCluster`` with one single-threaded
worker process per core (``--workers``, default all cores).  Wall-clock seconds of the
``monte_carlo`` call; the cluster time is given with and without its start-up (the start-up
is timed separately, by starting and closing an identical cluster first).  Both runs must
give identical tables (same seeds), which the script checks.

*Sweep*: ``sweep(..., factory=lambda s: [Mismatch(s)], values=--sigmas)`` with ``--runs``
(default 50 in this mode) runs per sigma; the figure shows the misalignment angle and norm
ratio of every parameter tensor against sigma (mean +- one std over runs); the CSV holds
one row per (sigma, tensor).

*Device*: the device-level dialect, one ``.op`` each, relative error (max over tensors) and
log10 misalignment against backprop for the ideal circuit and for one non-ideal part at a
time (op-amp gain, ngspice's junction gmin, each BJT parameter of ``BJTModel.realistic()``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]


def problem(spec, batch, seed=0):
    import dyadsim
    from dyadsim.cli._main import random_batch

    net = dyadsim.mlp(spec, activation="tanh", loss="mse", seed=seed)
    x, y = random_batch(net, batch, seed)
    return net, x, y


def log(*a):
    print(*a, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- speed-up
def _burn(n):
    s = 0
    for i in range(n):
        s += i
    return s


def parallel_efficiency(workers, n=2 * 10**7):
    """Pure-Python CPU burn: time on one process vs ``workers`` at once (1.0 = perfect).
    Shows what the machine really gives right now (shared hosts, SMT siblings, other jobs)."""
    import multiprocessing as mp

    t0 = time.perf_counter()
    _burn(n)
    one = time.perf_counter() - t0
    with mp.get_context("spawn").Pool(workers) as pool:
        pool.map(_burn, [1000] * workers)  # start-up
        t0 = time.perf_counter()
        pool.map(_burn, [n] * workers)
        many = time.perf_counter() - t0
    return one / many


def speedup(args):
    from distributed import Client, LocalCluster

    from dyadsim.montecarlo import Mismatch, monte_carlo

    net, x, y = problem(args.net, args.batch)
    workers = args.workers or os.cpu_count() or 1
    ni = [Mismatch(args.sigma)]
    kw = dict(nonidealities=ni, runs=args.runs, dialect=args.dialect, seed=0, progress=args.progress,
              timeout=args.timeout)

    eff_before = parallel_efficiency(workers)
    log(f"one process (synchronous), {args.runs} runs ...")
    t0 = time.perf_counter()
    one = monte_carlo(net, x, y, scheduler="synchronous", **kw)
    t_one = time.perf_counter() - t0

    log(f"cluster start-up ({workers} workers) ...")
    t0 = time.perf_counter()
    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                           dashboard_address=None, silence_logs=40)
    client = Client(cluster)
    client.close()
    cluster.close()
    t_start = time.perf_counter() - t0

    log(f"LocalCluster({workers} workers), {args.runs} runs ...")
    t0 = time.perf_counter()
    par = monte_carlo(net, x, y, scheduler=None, workers=workers, **kw)
    t_par = time.perf_counter() - t0

    eff_after = parallel_efficiency(workers)
    same = one.table["angle"].equals(par.table["angle"])
    s = par.summary()
    res = {
        "network": args.net, "batch": args.batch, "dialect": args.dialect, "runs": args.runs,
        "sigma": args.sigma, "workers": workers, "cpus": os.cpu_count(),
        "one_process_s": t_one, "cluster_s": t_par, "cluster_startup_s": t_start,
        "speedup": t_one / t_par, "speedup_without_startup": t_one / max(t_par - t_start, 1e-9),
        "per_run_s": float(one.table.drop_duplicates("run")["seconds"].mean()),
        "identical_tables": bool(same), "failed": s["failed"],
        "cpu_parallel_efficiency": [eff_before, eff_after],
        "load_average": list(os.getloadavg()),
        "angle_mean_all": s["tensors"]["(all parameters)"]["angle_mean"],
        "python": platform.python_version(),
    }
    print(f"bench_montecarlo speed-up: {args.net} tanh MLP, batch {args.batch}, {args.dialect} "
          f"dialect, Mismatch({args.sigma}), {args.runs} runs, {os.cpu_count()} CPUs")
    print(f"  one process (synchronous)        {t_one:8.2f} s   ({res['per_run_s'] * 1e3:.0f} ms per run)")
    print(f"  LocalCluster, {workers} worker processes {t_par:8.2f} s   (start-up {t_start:.2f} s)")
    print(f"  speed-up                         {res['speedup']:8.2f} x   "
          f"({res['speedup_without_startup']:.2f} x without start-up)")
    print(f"  identical tables: {same}; failed runs: {s['failed']}; mean misalignment "
          f"{res['angle_mean_all']:.3e} rad")
    print(f"  machine check: {workers} CPU-bound Python processes ran at {eff_before:.2f} / "
          f"{eff_after:.2f} of {workers}x one (before / after); load average "
          f"{' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    return res


# --------------------------------------------------------------------------- sweep
def mismatch_sweep(args):
    from dyadsim.montecarlo import Mismatch, plot_sweep, sweep

    net, x, y = problem(args.net, args.batch)
    sigmas = [float(s) for s in args.sigmas.split(",")]
    t0 = time.perf_counter()
    res = sweep(net, x, y, factory=lambda s: [Mismatch(s)], values=sigmas, runs=args.runs,
                label="mismatch sigma (lognormal, every conductance)", dialect=args.dialect,
                workers=args.workers, progress=args.progress, seed=0, timeout=args.timeout)
    elapsed = time.perf_counter() - t0
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    st = res.summary_table()
    st.to_csv(out.with_suffix(".csv"), index=False)
    plot_sweep(res, out.with_suffix(".png"),
               title=f"{args.net} tanh MLP, batch {args.batch}, {args.dialect} netlist: gradient vs "
                     f"mismatch ({args.runs} runs per sigma; mean +- 1 std)")
    print(f"bench_montecarlo sweep: {args.net}, {args.dialect}, {args.runs} runs x {len(sigmas)} "
          f"sigmas in {elapsed:.1f} s -> {out.with_suffix('.png')}, {out.with_suffix('.csv')}")
    head = f"{'sigma':>7}  {'tensor':<18} {'angle mean':>11} {'angle std':>10} {'norm ratio':>10} {'std':>8} failed"
    print(head)
    for _, r in st.iterrows():
        print(f"{r['value']:7.3g}  {r['tensor'][:18]:<18} {r['angle_mean']:11.3e} {r['angle_std']:10.2e} "
              f"{r['norm_ratio_mean']:10.4f} {r['norm_ratio_std']:8.4f} {r['failed']:6d}")
    return {"elapsed_s": elapsed, "rows": json.loads(st.to_json(orient="records"))}


# --------------------------------------------------------------------------- device accuracy
def device_accuracy(args):
    import dyadsim
    from dyadsim.circuits import BJTModel, OpAmp, compile_device_netlist
    from dyadsim.errors import SimulatorError
    from dyadsim.montecarlo import simulate_robust
    from dyadsim.montecarlo import readout_perturbed

    net, x, y = problem(args.net, args.batch)
    ref = dyadsim.backprop(net, x, y)
    real = BJTModel.realistic()
    cases = [
        ("behavioural netlist (reference)", None),
        ("device, ideal (default)", {}),
        ("device, ngspice default gmin 1e-12", {"options": {"gmin": 1e-12}}),
        ("device, gmin 1e-18", {"options": {"gmin": 1e-18}}),
        ("device, op-amp gain 1e9", {"opamp": OpAmp(gain=1e9)}),
        ("device, op-amp gain 1e6", {"opamp": OpAmp(gain=1e6)}),
        ("device, op-amp gain 1e4", {"opamp": OpAmp(gain=1e4)}),
        ("device, op-amp gain 1e6 + offset 1 mV (all)", {"opamp": OpAmp(offset=1e-3)}),
        ("device, BJT beta 100", {"bjt": BJTModel(bf=100.0)}),
        ("device, BJT beta 1000", {"bjt": BJTModel(bf=1000.0)}),
        ("device, BJT Early voltage 50 V", {"bjt": BJTModel(vaf=50.0)}),
        ("device, BJT rb 100, re 1, rc 10 ohm", {"bjt": BJTModel(rb=100.0, re=1.0, rc=10.0)}),
        ("device, BJT knee current 10 mA", {"bjt": BJTModel(ikf=10e-3)}),
        ("device, BJTModel.realistic()", {"bjt": real}),
        ("device, realistic BJT + op-amp 1e5", {"bjt": real, "opamp": OpAmp(gain=1e5)}),
    ]
    rows = []
    print(f"bench_montecarlo device accuracy: {args.net} tanh MLP, batch {args.batch}, .op, vs backprop")
    head = f"{'circuit':<38} {'max rel err':>12} {'log10 angle':>12} {'norm ratio':>11} {'elements':>9} {'sim s':>7}"
    print(head)
    print("-" * len(head))
    for label, kw in cases:
        nl = dyadsim.compile_netlist(net, x, y) if kw is None else compile_device_netlist(net, x, y, **kw)
        t0 = time.perf_counter()
        try:
            res, rescued = simulate_robust(nl, "op", args.timeout)
        except SimulatorError as exc:
            dt = time.perf_counter() - t0
            rows.append({"circuit": label, "failed": f"{exc.reason}: {str(exc).splitlines()[0]}",
                         "simulate_s": dt})
            print(f"{label:<38} failed after {dt:.1f} s ({exc.reason})", flush=True)
            continue
        dt = time.perf_counter() - t0
        c = dyadsim.compare(readout_perturbed(net, res), ref)
        row = {"circuit": label, "max_rel_error": c.max_rel_error, "log10_angle": c.summary.log10_angle,
               "norm_ratio": c.summary.norm_ratio, "elements": nl.stats["elements"], "simulate_s": dt,
               "rescued": rescued}
        rows.append(row)
        print(f"{label:<38} {c.max_rel_error:12.3e} {c.summary.log10_angle:12.2f} "
              f"{c.summary.norm_ratio:11.6f} {nl.stats['elements']:9d} {dt:7.2f}"
              + ("  (rescued)" if rescued else ""), flush=True)
    return {"rows": rows}


# --------------------------------------------------------------------------- schematic
def schematic(args):
    """docs/figures/device_neuron.png: the stages of one device-level tanh neuron."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Polygon

    fig, ax = plt.subplots(figsize=(15, 8.2))
    fig.subplots_adjust(left=0.01, right=0.99, top=0.99, bottom=0.01)
    ax.set_xlim(0, 150)
    ax.set_ylim(0, 84)
    ax.axis("off")

    def box(x, y, w, h, title, body="", color="#eef3fb"):
        ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.4", fc=color, ec="0.25", lw=1.1))
        ax.text(x + w / 2, y + h - 1.6, title, ha="center", va="top", fontsize=9.5, weight="bold")
        if body:
            ax.text(x + w / 2, y + h - 5.2, body, ha="center", va="top", fontsize=7.6, family="monospace")

    def opamp(x, y, label):
        ax.add_patch(Polygon([(x, y - 2.6), (x, y + 2.6), (x + 4.5, y)], closed=True, fc="white", ec="k", lw=1))
        ax.text(x + 1.3, y, label, fontsize=6.5, va="center")

    def arrow(p, q, text="", dy=0.9, color="k", ls="-"):
        ax.add_patch(FancyArrowPatch(p, q, arrowstyle="-|>", mutation_scale=11, lw=1.0, color=color, ls=ls))
        if text:
            ax.text((p[0] + q[0]) / 2, (p[1] + q[1]) / 2 + dy, text, ha="center", fontsize=7.8, color=color)

    ax.text(75, 83, "One device-level tanh neuron (compile_device_netlist); R = R_unit = 10 kOhm, "
            "V_T = kT/q = 25.865 mV at 27 C", ha="center", va="top", fontsize=11)
    # forward crossbar + summer
    box(2, 56, 30, 22, "forward crossbar -> u",
        "G = |w|/R per weight:\nw>0 from mb_p = -m_p\nw<0 from m_p\nbias |b|/R from -+1 V\n"
        "into virtual ground,\nR feedback:\nu = sum_p w m_p + b", color="#fff4e0")
    opamp(26, 59, "A1")
    # tanh block
    box(40, 50, 44, 28, "tanh: BJT differential pair",
        "V(ba)-V(bb) = 2V_T u, I_c1-I_c2 = I_T tanh u, R_T = 1V/I_T", color="#e8f6e8")

    def bjt(x, y, flip=1, pnp=False, name=""):
        """A bipolar transistor symbol; base lead to the left (flip=1) or right (-1)."""
        ax.plot([x, x], [y - 1.6, y + 1.6], color="k", lw=1.6)
        ax.plot([x - 2.2 * flip, x], [y, y], color="k", lw=1)
        ax.plot([x, x + 1.8 * flip], [y + 0.7, y + 2.4], color="k", lw=1)  # collector (npn)
        ax.plot([x, x + 1.8 * flip], [y - 0.7, y - 2.4], color="k", lw=1)  # emitter (npn)
        if pnp:
            ax.annotate("", xy=(x + 0.2 * flip, y + 0.8), xytext=(x + 1.8 * flip, y + 2.4),
                        arrowprops=dict(arrowstyle="-|>", lw=0.8, color="k", mutation_scale=7))
        else:
            ax.annotate("", xy=(x + 1.8 * flip, y - 2.4), xytext=(x + 0.2 * flip, y - 0.8),
                        arrowprops=dict(arrowstyle="-|>", lw=0.8, color="k", mutation_scale=7))
        ax.text(x - 3.2 * flip, y + 1.2, name, fontsize=7, ha="center")

    # NPN pair (emitters down to the tail source), PNP mirror on top (emitters up to V_CC)
    bjt(52, 57, 1, name="Qa")
    bjt(68, 57, -1, name="Qb")
    ax.plot([53.8, 53.8, 66.2, 66.2], [54.6, 54.6, 54.6, 54.6], color="k", lw=1)
    ax.add_patch(plt.Circle((60, 53.2), 1.1, fill=False, lw=1))
    ax.text(61.8, 52.8, "I_T", fontsize=7)
    ax.plot([60, 60], [54.6, 54.3], color="k", lw=1)
    ax.plot([60, 60], [52.1, 51.3], color="k", lw=1)
    ax.text(60, 50.6, "V_EE", fontsize=6.5, ha="center")
    ax.text(47.5, 57, "ba", fontsize=7, ha="right", va="center")
    ax.text(72.5, 57, "bb", fontsize=7, ha="left", va="center")
    bjt(52, 67.5, 1, pnp=True, name="Qc")
    bjt(68, 67.5, -1, pnp=True, name="Qd")
    # flip the PNPs: emitters up (draw the rails)
    ax.plot([53.8, 66.2], [70.6, 70.6], color="k", lw=1)  # V_CC rail
    ax.plot([53.8, 53.8], [69.9, 70.6], color="k", lw=1)
    ax.plot([66.2, 66.2], [69.9, 70.6], color="k", lw=1)
    ax.text(66.8, 70.6, "V_CC", fontsize=6.5, ha="left", va="center")
    ax.plot([53.8, 53.8], [59.4, 65.1], color="k", lw=1)  # Qa collector -> Qc
    ax.plot([66.2, 66.2], [59.4, 65.1], color="k", lw=1)  # Qb collector -> Qd
    ax.plot([49.8, 49.8, 53.8], [67.5, 63, 63], color="k", lw=1)  # Qc diode connection
    ax.plot([49.8, 70.2], [67.5, 67.5], color="k", lw=0.6, ls=":")  # common mirror base
    ax.plot([66.2, 76.5], [62.5, 62.5], color="k", lw=1)
    ax.text(71.5, 63.1, "I_T tanh u", fontsize=6.5, ha="center")
    opamp(78, 62.5, "A2")
    arrow((32.5, 67), (39.5, 67), "u")
    # multiplier
    box(92, 56, 26, 22, "multiplier (behavioural B)",
        "s = (x - z)(1 - sgb^2)\n  = gain sigma'(u) d\n(AD633 / Gilbert-cell\n stand-in; the only\n"
        " behavioural block)\nsb = -s (inverter A3)", color="#fde8e8")
    arrow((84.5, 62.5), (91.5, 62.5), "sgb")
    arrow((118.5, 70), (148, 70), "s, sb -> backward crossbars\nof the predecessors", dy=1.5)
    # backward crossbar
    box(2, 24, 30, 22, "backward crossbar -> r",
        "G = |W_cv|/R from the\nsuccessors' sb (w>0)\nor s (w<0), R feedback:\n"
        "r = sum_c W_cv^T s_c\nrb = -r (inverter A5)", color="#fff4e0")
    opamp(26, 27, "A4")
    # integrators
    box(40, 6, 44, 38, "state pair: leaky integrators",
        "x: R from sgb, 2R from rb,\n   2R/gain from mb and y (output layer)\n"
        "z: R from sgb, 2R from r,\n   2R/gain from m and yb (output layer)\n"
        "feedback R || C, tau = R C:\n\n"
        "tau dx/dt = sigma(u) + (r + c)/2 - x\ntau dz/dt = sigma(u) - (r + c)/2 - z\n"
        "c = gain (m - y)  (mse, output layer)", color="#eef3fb")
    opamp(78, 12, "A6")
    opamp(78, 20, "A7")
    arrow((62, 49.5), (62, 44.5), "sgb", dy=0)
    arrow((32.5, 35), (39.5, 35), "r, rb")
    # mean
    box(92, 18, 26, 22, "mean m",
        "mb = -(x + z)/2\n (summer A8: 2R, 2R, R)\nm = -mb (inverter A9)", color="#eef3fb")
    arrow((84.5, 29), (91.5, 29), "x, z")
    arrow((118.5, 29), (148, 29), "m, mb -> forward crossbars\nof the successors", dy=1.5)
    arrow((84.5, 40), (100, 55.5), "x, z ", color="0.35", dy=0)
    ax.text(2, 1.5, "Readout (dyadsim.readout): m = (V(x)+V(z))/2, d = (V(x)-V(z))/gain, slope at V(u): "
            "dC/dW = mean_b tanh'(u) d m_p^T.   Op-amps: E elements, A = 1e12 (ideal) or finite; "
            "all inverting (+ input at 0 V).", fontsize=8)
    out = Path(args.out).with_name("device_neuron.png")
    fig.savefig(out, dpi=120)
    print(f"wrote {out}")
    return {"path": str(out)}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sweep", action="store_true", help="mismatch sweep -> docs/figures/mismatch_sweep.*")
    ap.add_argument("--device", action="store_true", help="device-dialect accuracy table")
    ap.add_argument("--schematic", action="store_true", help="docs/figures/device_neuron.png")
    ap.add_argument("--net", default="16-16-10")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--runs", type=int, default=None, help="runs (200; 50 per sigma with --sweep)")
    ap.add_argument("--sigma", type=float, default=0.05, help="mismatch of the speed-up runs")
    ap.add_argument("--sigmas", default="0.001,0.003,0.01,0.03,0.1,0.3")
    ap.add_argument("--dialect", default="behavioral", choices=["behavioral", "device"])
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds per ngspice run")
    ap.add_argument("--out", default=str(ROOT / "docs" / "figures" / "mismatch_sweep.png"))
    ap.add_argument("--no-progress", dest="progress", action="store_false")
    ap.add_argument("--json", default=None, help="write the numbers to this JSON file")
    args = ap.parse_args(argv)
    if args.runs is None:
        args.runs = 50 if args.sweep else 200
    if args.schematic:
        out = schematic(args)
    elif args.device:
        out = device_accuracy(args)
    elif args.sweep:
        out = mismatch_sweep(args)
    else:
        out = speedup(args)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
