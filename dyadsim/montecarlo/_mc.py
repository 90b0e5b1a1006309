"""Monte Carlo of perturbed circuits on Dask: how exact the analog gradient stays.

One run = one draw of the non-idealities applied to the compiled circuit IR, one ngspice
process (the subprocess backend), one gradient readout, compared tensor by tensor with
exact backprop of the *nominal* network.  Runs are Dask tasks:

* ``scheduler=None`` (or ``"local"``): a ``distributed.LocalCluster`` with one
  single-threaded worker process per core (``workers`` of them), started and closed by the
  call;
* ``scheduler="tcp://host:port"`` (any address): a running Dask cluster;
* a ``distributed.Client``: used as it is (not closed);
* ``"processes"``, ``"threads"``, ``"synchronous"``: Dask's local schedulers, no cluster.

A run that fails -- ngspice does not converge at an extreme sample, a timeout, a readout
with NaN -- becomes rows with ``failed=True`` and its message; it is counted in
``summary()["failed"]`` and never stops the sweep.
"""

from __future__ import annotations

import math
import os
import re
import sys
import time
from dataclasses import dataclass, field

import numpy as np

from ..errors import DyadsimError, SimulatorError

__all__ = ["monte_carlo", "MonteCarloResult", "sweep", "SweepResult", "plot_sweep",
           "DIALECTS", "SCHEDULERS", "ALL_TENSORS"]

DIALECTS = ("behavioral", "device")
SCHEDULERS = ("processes", "threads", "synchronous")
#: name of the rows that hold every parameter concatenated
ALL_TENSORS = "(all parameters)"
COLUMNS = ["run", "tensor", "rel_error", "norm_ratio", "angle", "log10_angle", "failed", "error",
           "rescued", "seconds"]


# --------------------------------------------------------------------------- one run (worker side)
def _network_from(spec):
    from ..network import Network

    graph, loss = spec
    return Network.from_graph(graph, loss=loss)


#: ``reason`` of the failures :func:`simulate_robust` tries to rescue
RESCUABLE = ("singular-matrix", "no-convergence")


def simulate_robust(circuit, analysis: str, timeout: float):
    """``simulate`` with the subprocess backend, plus a rescue for a failed ``.op``.

    Direct Newton can fail on a large or strongly perturbed circuit (the device dialect's
    transistors), and ngspice's fallback (gmin and source stepping) prints "singular
    matrix" for every failed step even when it then finds the operating point.  So a
    singular-matrix or no-convergence failure is retried, first with the junction leakage
    ``gmin`` at ngspice's default 1e-12 S (better conditioned), then with
    ``allow_singular=True``; whichever answer comes back is only a *first guess*: it is fed
    as ``.nodeset`` to the original circuit, which must then converge strictly (no warning;
    a truly floating node fails again).  The retries change the circuit IR
    (:func:`~dyadsim.circuits.with_options`, :func:`~dyadsim.circuits.with_nodesets`),
    never the netlist text.

    Parameters
    ----------
    circuit : Circuit or Netlist
        The circuit IR, or a compiled :class:`~dyadsim.circuits.Netlist` (its ``circuit``).
    analysis : str
        ``"op"`` or ``"tran"`` (only an ``.op`` is rescued).
    timeout : float
        Seconds per ngspice run.

    Returns
    -------
    (OperatingPoint or Transient, bool)
        The result, and whether it needed the rescue.

    Raises
    ------
    SimulatorError
        When the circuit fails and the rescue does too (the first failure is raised).
    DyadsimError
        When ``circuit`` is netlist text: the rescue needs the circuit IR.
    """
    from ..circuits import Circuit, with_nodesets, with_options, write_circuit
    from ..simulator import simulate

    circuit = getattr(circuit, "circuit", circuit)  # a compiled Netlist
    if not isinstance(circuit, Circuit):
        raise DyadsimError(
            f"simulate_robust needs the circuit IR (a Circuit or a compiled Netlist), got "
            f"{type(circuit).__name__}: its rescue changes the circuit, not netlist text")
    text = write_circuit(circuit)

    def strict(t):
        return simulate(t, analysis, backend="subprocess", timeout=timeout)

    try:
        return strict(text), False
    except SimulatorError as exc:
        if analysis != "op" or exc.reason not in RESCUABLE:
            raise
        first = exc
    attempts = (
        lambda: strict(write_circuit(with_options(circuit, gmin=1e-12))),
        lambda: simulate(text, analysis, backend="subprocess", timeout=timeout, allow_singular=True),
    )
    for attempt in attempts:
        try:
            rough = attempt()
        except SimulatorError as exc:
            if exc.reason not in RESCUABLE:
                raise
            continue
        try:
            return strict(write_circuit(with_nodesets(circuit, rough.voltages))), True
        except SimulatorError as exc:
            if exc.reason not in RESCUABLE:
                raise
    raise first


def _averaged(tran, fraction: float):
    """An OperatingPoint of the node voltages averaged over the last ``fraction`` of a
    transient (trapezoidal in time)."""
    from ..simulator import OperatingPoint

    trapezoid = getattr(np, "trapezoid", None) or np.trapz
    t = np.asarray(tran.time)
    k = int(np.searchsorted(t, t[-1] - fraction * (t[-1] - t[0])))
    tt = t[k:]
    if len(tt) < 2:
        return tran.final()
    span = tt[-1] - tt[0]
    volts = {n: float(trapezoid(np.asarray(a)[k:], tt) / span) for n, a in tran.voltages.items()}
    return OperatingPoint(voltages=volts, currents={}, backend=tran.backend)


def readout_perturbed(net, result):
    """Gradients from a perturbed circuit's node voltages.

    The same readout as :func:`dyadsim.readout` (``m = (x+z)/2``, ``d = (x-z)/gain``,
    the slope at the circuit's own ``V(u)``) without its check that ``V(u) = W m + b`` of
    the nominal network: a perturbed circuit violates that by design.
    """
    from ..readout import readout

    return readout(net, result, check=False)


def _failure_rows(run, names, message, seconds):
    return [{"run": run, "tensor": nm, "rel_error": math.nan, "norm_ratio": math.nan,
             "angle": math.nan, "log10_angle": math.nan, "failed": True, "error": message,
             "rescued": False, "seconds": seconds} for nm in names]


def run_one(run, circuit, nonidealities, seed, net_spec, reference, analysis, timeout,
            average=0.0):
    """One Monte Carlo run (a Dask task): perturb, simulate, read out, compare.

    Returns rows (dicts), one per parameter tensor plus one for all of them.  Never
    raises for a failed run: the rows carry ``failed=True`` and the message.
    """
    from ..circuits import apply_nonidealities
    from ..network import param_name
    from ..readout import compare

    t0 = time.perf_counter()
    names = [param_name(k) for k in reference] + [ALL_TENSORS]
    try:
        net = _network_from(net_spec)
        rng = np.random.default_rng([int(seed), int(run)])
        perturbed = apply_nonidealities(circuit, nonidealities, rng)
        result, rescued = simulate_robust(perturbed, analysis, timeout)
        if analysis == "tran" and average > 0:
            result = _averaged(result, average)
        grads = readout_perturbed(net, result)
        cmp = compare(grads, reference)
    except Exception as exc:  # noqa: BLE001 -- a failed run is data, never fatal
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        reason = getattr(exc, "reason", None)
        msg = f"{type(exc).__name__}" + (f"[{reason}]" if reason else "") + f": {first}"
        return _failure_rows(run, names, msg, time.perf_counter() - t0)
    seconds = time.perf_counter() - t0
    rows = []
    for m in list(cmp.tensors.values()) + [cmp.summary]:
        rows.append({"run": run, "tensor": ALL_TENSORS if m is cmp.summary else m.name,
                     "rel_error": m.rel_error, "norm_ratio": m.norm_ratio, "angle": m.angle,
                     "log10_angle": m.log10_angle, "failed": False, "error": "",
                     "rescued": rescued, "seconds": seconds})
    return rows


# --------------------------------------------------------------------------- results
def _finite(values):
    a = np.asarray(values, dtype=float)
    return a[np.isfinite(a)]


def _stats(values) -> tuple:
    """(mean, std) of the finite values; std is the sample std (ddof=1), exactly 0 when
    every value is the same; (None, None) when there is no finite value."""
    a = _finite(values)
    if a.size == 0:
        return None, None
    if np.all(a == a[0]):
        return float(a[0]), 0.0
    return float(np.mean(a)), float(np.std(a, ddof=1)) if a.size > 1 else 0.0


@dataclass
class MonteCarloResult:
    """``table``: a pandas DataFrame, one row per run x parameter tensor (columns
    :data:`COLUMNS`; the rows named :data:`ALL_TENSORS` hold all parameters together).
    ``summary()``: runs, failures and per-tensor statistics.  ``info``: timings, engine."""

    table: object
    runs: int
    nonidealities: list
    dialect: str
    tensors: list
    info: dict = field(default_factory=dict)

    @property
    def failed_runs(self) -> list:
        t = self.table
        return sorted(set(int(r) for r in t.loc[t["failed"], "run"]))

    def failures(self) -> list:
        """``[{"run": r, "error": message}]`` of every failed run."""
        t = self.table[self.table["failed"]]
        seen, out = set(), []
        for run, msg in zip(t["run"], t["error"]):
            if int(run) not in seen:
                seen.add(int(run))
                out.append({"run": int(run), "error": str(msg)})
        return sorted(out, key=lambda d: d["run"])

    def summary(self) -> dict:
        """``runs``, ``failed``, ``rescued`` and, per parameter tensor (and
        :data:`ALL_TENSORS`), the mean and standard deviation of the misalignment angle
        (radians and log10), of the norm ratio and of the relative error against backprop,
        over the runs that did not fail."""
        t = self.table
        ok = t[~t["failed"]]
        tensors = {}
        for name in self.tensors + [ALL_TENSORS]:
            rows = ok[ok["tensor"] == name]
            d = {"n": int(len(rows))}
            for col in ("angle", "log10_angle", "norm_ratio", "rel_error"):
                mean, std = _stats(rows[col])
                d[f"{col}_mean"], d[f"{col}_std"] = mean, std
            tensors[name] = d
        return {
            "runs": int(self.runs),
            "failed": len(self.failed_runs),
            "rescued": int(len(set(ok.loc[ok["rescued"], "run"]))) if len(ok) else 0,
            "dialect": self.dialect,
            "nonidealities": [ni.label for ni in self.nonidealities],
            "tensors": tensors,
            "failures": self.failures(),
        }


# --------------------------------------------------------------------------- engines
class _Engine:
    """Runs a list of (func, args) tasks on a Dask scheduler; returns results in order.

    A task whose Dask future itself fails (a worker died) gives ``on_error(index, exc)``.
    """

    def __init__(self, scheduler=None, workers=None, progress=True):
        self.scheduler = scheduler
        self.workers = workers
        self.progress = progress
        self.client = None
        self.cluster = None
        self.own = False
        self.kind = None

    def __enter__(self):
        sch = self.scheduler
        if self.workers is not None and (isinstance(self.workers, bool) or not isinstance(self.workers, int)
                                         or self.workers < 1):
            raise DyadsimError(f"workers must be a positive integer, got {self.workers!r}")
        if sch in SCHEDULERS:
            self.kind = sch
            return self
        from distributed import Client

        if isinstance(sch, Client):
            self.client, self.kind = sch, "client"
            return self
        if sch is None or sch == "local":
            from distributed import LocalCluster

            n = self.workers or os.cpu_count() or 1
            self.cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                                        dashboard_address=None, silence_logs=40)
            self.client = Client(self.cluster)
            self.own, self.kind = True, f"LocalCluster({n} workers)"
            return self
        if isinstance(sch, str) and re.fullmatch(r"[A-Za-z0-9+.:/\[\]_-]{1,300}", sch):
            self.client = Client(sch, timeout="30s")
            self.own, self.kind = True, f"cluster at {sch}"
            return self
        raise DyadsimError(
            f"scheduler must be None (a local cluster), a scheduler address like "
            f"'tcp://host:8786', a distributed.Client, or one of {', '.join(SCHEDULERS)}; got {sch!r}")

    def __exit__(self, *exc):
        if self.own:
            self.client.close()
            if self.cluster is not None:
                self.cluster.close()

    @property
    def n_workers(self) -> int:
        if self.client is not None:
            return len(self.client.scheduler_info().get("workers", {})) or 1
        if self.kind == "synchronous":
            return 1
        return self.workers or os.cpu_count() or 1

    def map(self, func, args_list, shared, on_error, desc="Monte Carlo"):
        """``func(*args, *shared)`` for each args in args_list (shared sent once)."""
        if self.client is not None:
            return self._map_distributed(func, args_list, shared, on_error, desc)
        import dask

        # wrap the shared objects once, untraversed: dask would otherwise walk (and, for
        # pure tasks, hash) the whole circuit IR once per task -- about a second each
        shared_d = [dask.delayed(obj, traverse=False) for obj in shared]
        call = dask.delayed(_guarded, pure=False, traverse=False)
        tasks = [call(func, i, on_error, *args, *shared_d) for i, args in enumerate(args_list)]
        kw = {"scheduler": self.kind}
        if self.kind != "synchronous" and self.workers:
            kw["num_workers"] = self.workers
        if self.progress:
            from dask.diagnostics import ProgressBar

            with ProgressBar(minimum=0.5, out=sys.stderr):
                return list(dask.compute(*tasks, **kw))
        return list(dask.compute(*tasks, **kw))

    def _map_distributed(self, func, args_list, shared, on_error, desc):
        from distributed import as_completed

        client = self.client
        shared_f = client.scatter(list(shared), broadcast=True)
        futures = [client.submit(func, *args, *shared_f, pure=False) for args in args_list]
        index = {f.key: i for i, f in enumerate(futures)}
        results = [None] * len(futures)
        bar = None
        if self.progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(futures), desc=desc, unit="run")
        try:
            for fut in as_completed(futures):
                i = index[fut.key]
                try:
                    results[i] = fut.result()
                except Exception as exc:  # noqa: BLE001 -- worker lost, task crashed
                    results[i] = on_error(i, exc)
                if bar is not None:
                    bar.update(1)
        finally:
            if bar is not None:
                bar.close()
        return results


def _guarded(func, i, on_error, *args):
    try:
        return func(*args)
    except Exception as exc:  # noqa: BLE001
        return on_error(i, exc)


# --------------------------------------------------------------------------- front
def _check_int(name, value, lo, hi):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not lo <= value <= hi:
        raise DyadsimError(f"{name} must be an integer in [{lo}, {hi}], got {value!r}")
    return int(value)


def compile_base(net, x, y, dialect="behavioral", analysis="op", **compile_options):
    """The nominal netlist a Monte Carlo perturbs."""
    if dialect == "behavioral":
        from ..circuits import compile_netlist

        return compile_netlist(net, x, y, analysis=analysis, **compile_options)
    if dialect == "device":
        from ..circuits import compile_device_netlist

        return compile_device_netlist(net, x, y, analysis=analysis, **compile_options)
    raise DyadsimError(f"unknown dialect {dialect!r}; valid: {', '.join(DIALECTS)}")


def monte_carlo(net, x, y, *, nonidealities=(), runs=200, dialect="behavioral", scheduler=None,
                workers=None, seed=0, progress=True, timeout=120.0, analysis="op", average=None,
                compile_options=None, _engine=None) -> MonteCarloResult:
    """Monte Carlo of the analog gradient under non-idealities, on Dask.

    Parameters
    ----------
    net, x, y : the network and the batch (one netlist holds the whole batch).
    nonidealities : list of :mod:`dyadsim.circuits` non-idealities (``Mismatch(0.05)``,
        ``Quantization(6)``, ...), applied in order to every run's copy of the circuit.
    runs : number of runs; run r draws from ``numpy.random.default_rng([seed, r])``.
    dialect : ``"behavioral"`` (:func:`~dyadsim.compile_netlist`) or ``"device"``
        (:func:`~dyadsim.circuits.compile_device_netlist`).
    scheduler : ``None`` (a local cluster of ``workers`` processes, default one per core),
        a scheduler address, a ``distributed.Client``, or ``"processes"``/``"threads"``/
        ``"synchronous"`` (Dask's local schedulers).
    progress : show a progress bar (tqdm over ``as_completed``, or Dask's ProgressBar).
    timeout : seconds per ngspice run.
    analysis : ``"op"`` (default) or ``"tran"`` (needed for :class:`ThermalNoise`).
    average : for transients, read out the node voltages averaged over this last fraction
        of the run (default 0.25 with thermal noise, else the final point).
    compile_options : keyword arguments of the compiler (``gain``, ``opamp``, ``bjt``, ...).
    """
    from ..circuits import ThermalNoise, check_nonidealities
    from ..dynamics import backprop
    from ..network import param_name

    runs = _check_int("runs", runs, 1, 10_000_000)
    seed = _check_int("seed", seed, 0, 2**63 - 1)
    if dialect not in DIALECTS:
        raise DyadsimError(f"unknown dialect {dialect!r}; valid: {', '.join(DIALECTS)}")
    if analysis not in ("op", "tran"):
        raise DyadsimError(f"unknown analysis {analysis!r}; valid: op, tran")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float))
                                or not timeout > 0 or not math.isfinite(timeout)):
        raise DyadsimError(f"timeout must be a positive number of seconds, got {timeout!r}")
    items = check_nonidealities(nonidealities)
    noisy = any(isinstance(ni, ThermalNoise) and not ni.is_zero for ni in items)
    if noisy and analysis != "tran":
        raise DyadsimError("ThermalNoise needs analysis='tran'")
    if average is None:
        average = 0.25 if noisy else 0.0
    if isinstance(average, bool) or not isinstance(average, (int, float)) or not 0 <= average <= 1:
        raise DyadsimError(f"average must be a fraction in [0, 1], got {average!r}")

    t0 = time.perf_counter()
    X, Y, _ = net.check_xy(x, y)
    base = compile_base(net, X, Y, dialect, analysis, **(compile_options or {}))
    reference = backprop(net, X, Y)
    names = [param_name(k) for k in reference]
    net_spec = (net.to_graph(), net.loss.name)
    t1 = time.perf_counter()

    def on_error(i, exc):
        return _failure_rows(i, names + [ALL_TENSORS], f"{type(exc).__name__}: {exc}", math.nan)

    args = [(r, ) for r in range(runs)]
    shared = (base.circuit, items, seed, net_spec, reference, analysis, timeout, float(average))
    engine = _engine or _Engine(scheduler, workers, progress)
    if _engine is None:
        with engine:
            rows = engine.map(run_one, args, shared, on_error)
            n_workers = engine.n_workers
    else:
        rows = engine.map(run_one, args, shared, on_error)
        n_workers = engine.n_workers
    t2 = time.perf_counter()
    import pandas as pd

    table = pd.DataFrame([row for chunk in rows for row in chunk], columns=COLUMNS)
    table = table.sort_values(["run"], kind="stable").reset_index(drop=True)
    info = {"compile_s": t1 - t0, "runs_s": t2 - t1, "engine": engine.kind, "workers": n_workers,
            "elements": base.stats.get("elements"), "analysis": analysis, "seed": seed,
            "batch": int(X.shape[0])}
    return MonteCarloResult(table, runs, items, dialect, names, info)


# --------------------------------------------------------------------------- sweeps
@dataclass
class SweepResult:
    """A Monte Carlo per non-ideality size: ``values``, ``results`` (MonteCarloResult each)
    and ``table`` (all runs, with a ``value`` column)."""

    values: list
    results: list
    label: str = "size"

    @property
    def table(self):
        import pandas as pd

        parts = []
        for v, r in zip(self.values, self.results):
            t = r.table.copy()
            t.insert(0, "value", v)
            parts.append(t)
        return pd.concat(parts, ignore_index=True)

    def summary_table(self):
        """One row per (value, tensor): mean/std of angle, log10 angle and norm ratio."""
        import pandas as pd

        rows = []
        for v, r in zip(self.values, self.results):
            s = r.summary()
            for name, d in s["tensors"].items():
                rows.append({"value": v, "tensor": name, "runs": s["runs"], "failed": s["failed"], **d})
        return pd.DataFrame(rows)


def sweep(net, x, y, *, factory, values, runs=50, label=None, scheduler=None, workers=None,
          progress=True, **mc_kwargs) -> SweepResult:
    """A Monte Carlo per value: ``factory(value)`` gives the non-idealities, e.g.
    ``factory=lambda s: [Mismatch(s)]``.  One Dask cluster serves all of them."""
    values = list(values)
    if not values:
        raise DyadsimError("sweep needs at least one value")
    if not callable(factory):
        raise DyadsimError("factory must be a callable value -> list of non-idealities")
    results = []
    with _Engine(scheduler, workers, progress) as engine:
        for v in values:
            results.append(monte_carlo(net, x, y, nonidealities=factory(v), runs=runs,
                                       progress=progress, _engine=engine, **mc_kwargs))
    return SweepResult(values, results, label or "non-ideality size")


def plot_sweep(result: SweepResult, path=None, *, title=None, logx=None):
    """Gradient misalignment angle and norm ratio against the non-ideality's size, one line
    per parameter tensor (mean over runs, bars: one standard deviation).  Returns the
    matplotlib Figure; saves a PNG to ``path`` when given."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    st = result.summary_table()
    vals = np.asarray(result.values, dtype=float)
    if logx is None:
        pos = vals[vals > 0]
        logx = pos.size >= 2 and pos.max() / pos.min() >= 20 and np.all(vals > 0)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    tensors = list(dict.fromkeys(st["tensor"]))
    for k, name in enumerate(tensors):
        rows = st[st["tensor"] == name]
        style = dict(color="k", lw=2.2, marker="s") if name == ALL_TENSORS else dict(color=f"C{k}", lw=1.3, marker="o")
        x = rows["value"].to_numpy(float)
        am = rows["angle_mean"].to_numpy(float)
        asd = rows["angle_std"].to_numpy(float)
        ax1.errorbar(x, am, yerr=asd, capsize=3, label=name, ms=4, **style)
        nm_ = rows["norm_ratio_mean"].to_numpy(float)
        nsd = rows["norm_ratio_std"].to_numpy(float)
        ax2.errorbar(x, nm_, yerr=nsd, capsize=3, label=name, ms=4, **style)
    ax1.set_yscale("log")
    ax1.set_ylabel("misalignment angle vs backprop (rad)")
    ax2.axhline(1.0, color="0.6", lw=0.8, ls="--")
    ax2.set_ylabel("norm ratio ||g~|| / ||g||")
    for ax in (ax1, ax2):
        ax.set_xlabel(result.label)
        if logx:
            ax.set_xscale("log")
        ax.grid(alpha=0.3, which="both")
    ax1.legend(fontsize=7)
    runs = result.results[0].runs if result.results else 0
    failed = sum(r.summary()["failed"] for r in result.results)
    fig.suptitle(title or f"DBP circuit gradient vs {result.label} ({runs} runs per point, "
                          f"{failed} failed; mean +- 1 std)", fontsize=10)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig
