"""How the ngspice path scales: compile, ``.op`` and ``.tran`` times, netlist size, memory.

For tanh MLPs of growing size (batch 1, mse, seed 0; inputs uniform in [0, 1), targets
uniform in [-0.5, 0.5] like ``dyadsim netlist``) this prints one row per network:

    weights, netlist size (elements, nodes, MB), compile time, .op time (subprocess
    backend), .tran time, peak memory of the ngspice child, max relative error vs backprop

then the growth exponent of each time with the number of weights (least-squares slope of
log time vs log weights), and ``.op`` with G-element summing vs B-source summing side by
side (``compile_netlist(..., summing="B")``).

Every ngspice run happens in a fresh worker process (``spawn``); times are wall-clock
seconds of the call alone (imports and worker start-up excluded), and, in parentheses, CPU
seconds (compile: this process; ngspice: ``RUSAGE_CHILDREN`` user + system time of the one
ngspice child), which stay meaningful on a loaded machine.  Peak memory is the
ngspice child's ``VmHWM`` (its own high-water resident set, polled from ``/proc`` every
5 ms while it runs; Linux only).  ``getrusage(RUSAGE_CHILDREN).ru_maxrss`` of the worker is
kept in the JSON too, but it is only an upper bound: Linux carries the RSS of the forked
copy of the (~90 MB) Python worker over the ``exec`` into ngspice.

    python benchmarks/bench_spice.py                                    # default sizes
    python benchmarks/bench_spice.py --sizes 16-16-10,64-32-10 --skip-tran --json out.json

Target (issue): 784-100-10 compiles in under 2 s and its ``.op`` gradients arrive in under
10 s.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import platform
import os
import resource
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures import TimeoutError as FuturesTimeout

import numpy as np

DEFAULT_SIZES = "16-16-10,64-32-10,196-64-10,784-100-10"
SUMMING_SIZES = "64-32-10,196-64-10"
#: transient settings (units of tau): the default t_stop (6L + 30 tau, the whole relaxation)
#: with a coarser output step than the library default (0.05/0.05); the final state -- and
#: so the gradients -- are the same to ~1e-14 (checked in tests/test_spice_readout.py)
TRAN = {"t_step": 0.1, "max_step": 0.2}


def problem(spec, seed=0):
    import dyadsim

    net = dyadsim.mlp(spec, activation="tanh", loss="mse", seed=seed)
    rng = np.random.default_rng(seed + 1)
    x = rng.random((1, net.n_in))
    y = rng.uniform(-0.5, 0.5, (1, net.n_out))
    return net, x, y


class PeakRSS:
    """High-water resident memory (MB) of this process's ``ngspice`` children, polled from
    /proc while the block runs (VmHWM survives until the child exits; None off Linux)."""

    def __init__(self, name="ngspice", interval=0.005):
        self.name, self.interval = name, interval
        self.peak_kb = {}
        self._stop = threading.Event()
        self._me = str(os.getpid())

    def _children(self):
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                with open(f"/proc/{pid}/stat") as fh:
                    stat = fh.read()
            except OSError:
                continue
            comm = stat[stat.find("(") + 1:stat.rfind(")")]
            if comm == self.name and stat[stat.rfind(")") + 2:].split()[1] == self._me:
                yield pid

    def _poll(self):
        while True:
            for pid in list(self._children()) + list(self.peak_kb):
                try:
                    with open(f"/proc/{pid}/status") as fh:
                        for line in fh:
                            if line.startswith("VmHWM:"):
                                kb = int(line.split()[1])
                                self.peak_kb[pid] = max(kb, self.peak_kb.get(pid, 0))
                except (OSError, ValueError):
                    pass
            if self._stop.wait(self.interval):
                return

    def __enter__(self):
        if os.path.isdir("/proc"):
            self._thread = threading.Thread(target=self._poll, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if hasattr(self, "_thread"):
            self._thread.join()

    @property
    def mb(self):
        return max(self.peak_kb.values()) / 1024 if self.peak_kb else None


def worker(spec, analysis, summing, timeout, compile_kw):
    """One compile + one ngspice run, in a fresh process.  Returns a dict of measurements."""
    import dyadsim

    net, x, y = problem(spec)
    t_compile, c_compile, spent = float("inf"), float("inf"), 0.0
    for _ in range(3):  # best of up to 3 (small nets: first-call noise), within ~1 s
        t0, c0 = time.perf_counter(), time.process_time()
        nl = dyadsim.compile_netlist(net, x, y, analysis=analysis, summing=summing, **compile_kw)
        dt, dc = time.perf_counter() - t0, time.process_time() - c0
        t_compile, c_compile, spent = min(t_compile, dt), min(c_compile, dc), spent + dt
        if spent > 1.0:
            break
    out = {
        "spec": spec, "analysis": analysis, "summing": summing,
        "weights": int(sum(np.size(p) for k, p in net.params.items() if k[0] == "W")),
        "params": int(net.n_params), "neurons": int(net.n), "depth": int(net.depth),
        "elements": int(nl.stats["elements"]), "nodes": int(nl.stats["nodes"]),
        "bytes": len(nl.text.encode()), "compile_s": t_compile, "compile_cpu_s": c_compile,
    }
    t0 = time.perf_counter()
    try:
        with PeakRSS() as mem:
            res = dyadsim.simulate(nl, analysis=analysis, backend="subprocess", timeout=timeout)
    except dyadsim.SimulatorError as exc:
        out.update(sim_s=time.perf_counter() - t0, failed=exc.reason,
                   message=str(exc).splitlines()[0][:200])
        return out
    out["sim_s"] = time.perf_counter() - t0
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)  # the one ngspice child of this worker
    out["sim_cpu_s"] = ru.ru_utime + ru.ru_stime
    out["peak_rss_mb"] = mem.mb  # ngspice's own VmHWM
    # upper bound only (KiB on Linux): includes the forked worker's RSS carried over exec
    out["ru_maxrss_children_mb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    t0 = time.perf_counter()
    grads = dyadsim.readout(net, res)
    out["readout_s"] = time.perf_counter() - t0
    out["max_rel_error"] = dyadsim.compare(grads, dyadsim.backprop(net, x, y)).max_rel_error
    if analysis == "tran":
        out["points"] = int(len(res.time))
    return out


def measure(spec, analysis, summing="G", timeout=600.0, compile_kw=None):
    """Run :func:`worker` in a fresh spawned process (its own RUSAGE_CHILDREN)."""
    ctx = mp.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
        fut = pool.submit(worker, spec, analysis, summing, timeout, compile_kw or {})
        try:
            return fut.result(timeout=timeout + 120)
        except FuturesTimeout:  # pragma: no cover - the simulator's own timeout comes first
            return {"spec": spec, "analysis": analysis, "summing": summing, "failed": "timeout"}


def slope(xs, ys):
    """Least-squares slope of log(y) vs log(x) (nan with fewer than two points)."""
    pts = [(a, b) for a, b in zip(xs, ys) if b and np.isfinite(b) and b > 0]
    if len(pts) < 2:
        return float("nan")
    lx, ly = np.log([p[0] for p in pts]), np.log([p[1] for p in pts])
    return float(np.polyfit(lx, ly, 1)[0])


def fmt_time(r, key="sim_s", cpu=None):
    if r is None:
        return "skipped"
    if r.get("failed") == "timeout":
        return f">{r.get('sim_s', 0):.0f} TIMEOUT"
    if r.get("failed"):
        return f"FAILED:{r['failed']}"
    if cpu and cpu in r:
        return f"{r[key]:.3f} ({r[cpu]:.3f})"
    return f"{r[key]:.3f}"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default=DEFAULT_SIZES, help=f"comma-separated MLPs (default {DEFAULT_SIZES})")
    ap.add_argument("--summing-sizes", default=SUMMING_SIZES,
                    help=f"sizes for the G vs B summing comparison (default {SUMMING_SIZES}; '' skips)")
    ap.add_argument("--skip-tran", action="store_true", help="do not run .tran")
    ap.add_argument("--tran-limit", type=float, default=60.0,
                    help="give up a .tran after this many seconds and flag it (default 60)")
    ap.add_argument("--tran-t-stop", type=float, default=None,
                    help="transient length in tau (default: the library's 6L + 30, the whole relaxation)")
    ap.add_argument("--timeout", type=float, default=600.0, help=".op time limit in seconds")
    ap.add_argument("--json", dest="json_out", default=None, help="also write all numbers here")
    args = ap.parse_args(argv)
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    tran_kw = dict(TRAN, **({"t_stop": args.tran_t_stop} if args.tran_t_stop else {}))

    import dyadsim

    print(f"dyadsim {dyadsim.__version__}, python {platform.python_version()}, "
          f"{platform.machine()}, {mp.cpu_count()} CPU(s); ngspice subprocess backend; batch 1")
    rows = []
    for spec in sizes:
        op = measure(spec, "op", timeout=args.timeout)
        tran = None if args.skip_tran else measure(spec, "tran", timeout=args.tran_limit,
                                                   compile_kw=tran_kw)
        rows.append({"spec": spec, "op": op, "tran": tran})
        print(f"  measured {spec}: compile {op['compile_s']:.2f} s, .op {fmt_time(op)} s, "
              f".tran {fmt_time(tran)} s", flush=True)

    head = (f"{'network':<12} {'weights':>8} {'elements':>9} {'nodes':>6} {'MB':>5} "
            f"{'compile s (cpu)':>16} {'.op s (cpu)':>16} {'.tran s (cpu)':>18} {'op MB':>6} "
            f"{'tran MB':>7} {'op err':>8} {'tran err':>8}")
    print()
    print(head)
    print("-" * len(head))
    for row in rows:
        op, tr = row["op"], row["tran"]
        tr_mb = f"{tr['peak_rss_mb']:.0f}" if tr and tr.get("peak_rss_mb") else "-"
        tr_err = f"{tr['max_rel_error']:.1e}" if tr and "max_rel_error" in tr else "-"
        op_err = f"{op['max_rel_error']:.1e}" if "max_rel_error" in op else "-"
        op_mb = f"{op['peak_rss_mb']:.0f}" if op.get("peak_rss_mb") else "-"
        print(f"{row['spec']:<12} {op['weights']:>8d} {op['elements']:>9d} {op['nodes']:>6d} "
              f"{op['bytes'] / 1e6:>5.2f} {fmt_time(op, 'compile_s', 'compile_cpu_s'):>16} "
              f"{fmt_time(op, 'sim_s', 'sim_cpu_s'):>16} {fmt_time(tr, 'sim_s', 'sim_cpu_s'):>18} "
              f"{op_mb:>6} {tr_mb:>7} {op_err:>8} {tr_err:>8}")
    t_stop = f"{args.tran_t_stop:g} tau" if args.tran_t_stop else "6L+30 tau"
    print(f"(.tran: t_stop = {t_stop}, output step {TRAN['t_step']} tau, max step "
          f"{TRAN['max_step']} tau; limit {args.tran_limit:.0f} s.  MB: ngspice peak resident "
          "memory, VmHWM.  err: max relative error vs backprop)")

    w = [r["op"]["weights"] for r in rows]
    ok = lambda r: r is not None and not r.get("failed")  # noqa: E731
    def times(which, key):
        return [r[which][key] if ok(r[which]) and key in r[which] else None for r in rows]

    exps = {
        "compile": slope(w, times("op", "compile_s")),
        "compile_cpu": slope(w, times("op", "compile_cpu_s")),
        "op": slope(w, times("op", "sim_s")),
        "op_cpu": slope(w, times("op", "sim_cpu_s")),
        "tran": slope(w, times("tran", "sim_s")),
        "tran_cpu": slope(w, times("tran", "sim_cpu_s")),
        "op_memory": slope(w, [r["op"].get("peak_rss_mb") for r in rows]),
    }
    print("\ngrowth exponent k (quantity ~ weights^k, log-log least squares over the sizes "
          "that finished):")
    for k, v in exps.items():
        print(f"  {k:<12} k = {v:.2f}")

    big = next((r for r in rows if r["spec"] == "784-100-10"), None)
    target = None
    if big is not None:
        op = big["op"]
        grads_s = op["compile_s"] + op.get("sim_s", float("nan")) + op.get("readout_s", 0.0)
        target = {"compile_s": op["compile_s"], "compile_ok": op["compile_s"] < 2.0,
                  "op_gradients_s": grads_s, "op_gradients_ok": grads_s < 10.0}
        print(f"\ntarget 784-100-10: compile {op['compile_s']:.2f} s (< 2 s: "
              f"{'yes' if target['compile_ok'] else 'NO'}); .op gradients (compile + ngspice + "
              f"readout) {grads_s:.2f} s (< 10 s: {'yes' if target['op_gradients_ok'] else 'NO'})")

    summing = []
    ss = [s.strip() for s in args.summing_sizes.split(",") if s.strip()]
    if ss:
        print("\n.op with G-element summing (one VCCS per weight) vs B-source summing "
              "(one expression per sum):")
        print(f"  {'network':<12} {'G .op s (cpu)':>16} {'B .op s (cpu)':>16} {'B/G cpu':>8} "
              f"{'G compile':>10} {'B compile':>10} {'B err':>9}")
        for spec in ss:
            g = next((r["op"] for r in rows if r["spec"] == spec), None) or measure(spec, "op")
            b = measure(spec, "op", summing="B", timeout=args.timeout)
            ratio = b["sim_cpu_s"] / g["sim_cpu_s"] if ok(b) and ok(g) else float("nan")
            summing.append({"spec": spec, "G": g, "B": b, "ratio_B_over_G_cpu": ratio,
                            "ratio_B_over_G_wall": b["sim_s"] / g["sim_s"] if ok(b) and ok(g)
                            else float("nan")})
            print(f"  {spec:<12} {fmt_time(g, 'sim_s', 'sim_cpu_s'):>16} "
                  f"{fmt_time(b, 'sim_s', 'sim_cpu_s'):>16} {ratio:>8.2f} "
                  f"{g['compile_s']:>10.3f} {b['compile_s']:>10.3f} "
                  f"{b.get('max_rel_error', float('nan')):>9.1e}")

    if args.json_out:
        with open(args.json_out, "w") as fh:
            json.dump({"rows": rows, "exponents": exps, "summing": summing, "target": target,
                       "tran_settings": tran_kw, "tran_limit_s": args.tran_limit,
                       "machine": {"python": platform.python_version(), "cpus": mp.cpu_count(),
                                   "platform": platform.platform()}},
                      fh, indent=2, default=float)
        print(f"\nwrote {args.json_out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
