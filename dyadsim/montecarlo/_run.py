"""A Monte Carlo: the front (:func:`monte_carlo`) and one run on a worker (:func:`run_one`).

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
import time

import numpy as np

from .._validate import checked_call
from ..errors import DyadsimError, SimulatorError
from ._engine import _Engine
from ._result import ALL_TENSORS, COLUMNS, MonteCarloResult

__all__ = ["monte_carlo", "run_one", "simulate_robust", "readout_perturbed", "compile_base",
           "DIALECTS", "RESCUABLE"]

DIALECTS = ("behavioral", "device")


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

    Parameters
    ----------
    net : Network
        The nominal network the circuit was compiled from.
    result : OperatingPoint or Transient
        The perturbed circuit's simulation result (a transient's last point is used).

    Returns
    -------
    Gradients
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


@checked_call
def monte_carlo(net, x, y, *, nonidealities=(), runs=200, dialect="behavioral", scheduler=None,
                workers=None, seed=0, progress=True, timeout=120.0, analysis="op", average=None,
                compile_options=None, chip=None, engine=None, reference="network", chunk=None,
                _engine=None) -> MonteCarloResult:
    """Monte Carlo of the analog gradient under non-idealities, on Dask.

    Parameters
    ----------
    net : Network
        The network.
    x, y : array_like
        The batch (one netlist holds the whole batch).
    nonidealities : sequence, optional
        :mod:`dyadsim.circuits` non-idealities (``Mismatch(0.05)``, ``Quantization(6)``,
        ...), applied in order to every run's copy of the circuit.
    runs : int, optional
        Number of runs (default 200); run r draws from ``numpy.random.default_rng([seed, r])``.
    dialect : str, optional
        ``"behavioral"`` (default, :func:`~dyadsim.compile_netlist`) or ``"device"``
        (:func:`~dyadsim.circuits.compile_device_netlist`).
    scheduler : optional
        ``None`` (a local cluster of ``workers`` processes), a scheduler address, a
        ``distributed.Client``, or ``"processes"``/``"threads"``/``"synchronous"`` (Dask's
        local schedulers).
    workers : int or None, optional
        Processes of the local cluster (``scheduler=None``); default one per core.
    seed : int, optional
        Base seed of the runs' generators (default 0).
    progress : bool, optional
        Show a progress bar (tqdm over ``as_completed``, or Dask's ProgressBar).
    timeout : float, optional
        Seconds per ngspice run (default 120).
    analysis : str, optional
        ``"op"`` (default) or ``"tran"`` (needed for :class:`~dyadsim.circuits.ThermalNoise`).
    average : float or None, optional
        For transients, read out the node voltages averaged over this last fraction of the
        run (default 0.25 with thermal noise, else the final point).
    compile_options : dict or None, optional
        Keyword arguments of the compiler (``gain``, ``opamp``, ``bjt``, ...).
    chip : dict or None, optional
        :meth:`dyadsim.Chip.sample` options: a Monte Carlo over sampled chips (run r is
        ``Chip.sample(net, seed=[seed, r], **chip)``); see
        :func:`dyadsim.montecarlo.chip_monte_carlo`.  Not combined with ``nonidealities``.
    engine : str or None, optional
        With ``chip``: ``"dynamics"`` (default) or ``"spice"``.  Without ``chip`` only
        ``None`` or ``"spice"`` (the circuit Monte Carlo on ngspice).
    reference : str, optional
        With ``chip``: compare with backprop of the nominal network (``"network"``,
        default) or of ``chip.network`` (``"chip"``).
    chunk : int or None, optional
        With ``chip`` on the dynamics engine: chips per Dask task.

    Returns
    -------
    MonteCarloResult
        One table row per run x parameter tensor; ``info`` holds timings and the engine.
    """
    if chip is not None or engine not in (None, "spice"):
        from ._chips import chip_monte_carlo

        if chip is None:
            raise DyadsimError(f"engine={engine!r} runs sampled chips: give chip={{...}} "
                               "(Chip.sample options); the circuit non-idealities run on ngspice")
        if nonidealities:
            raise DyadsimError("chip= and nonidealities= do not combine: the chip's non-idealities "
                               "are model-level; circuit-only ones are IR transforms")
        return chip_monte_carlo(net, x, y, chip=chip, runs=runs, engine=engine or "dynamics",
                                seed=seed, scheduler=scheduler, workers=workers,
                                progress=progress, timeout=timeout, reference=reference,
                                compile_options=compile_options, chunk=chunk, _engine=_engine)
    if chunk is not None:
        raise DyadsimError("chunk= is for the chip Monte Carlo on the dynamics engine (chip=...)")
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
