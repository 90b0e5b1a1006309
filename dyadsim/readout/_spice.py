"""Gradients out of ngspice node voltages, and the compile -> simulate -> readout chain."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from .._validate import checked_call
from ..circuits import (GAIN_NODE, TAU_NODE, compile_netlist, gain_node, layer_identifiers, node_name,
                        target_node)
from ..dynamics import Chip, GradientResult, Gradients, System
from ..errors import DyadsimError

__all__ = ["readout", "spice_gradients", "SpiceGradients", "relaxation_trace", "settling_time",
           "circuit_states", "CircuitStates"]


def _n_samples(net, result) -> int:
    ids = layer_identifiers(net)
    v0 = net.nodes[0]
    if node_name("x", ids[v0], 0) in result.voltages:
        return 1
    B = 0
    while node_name("x", ids[v0], 0, B, 2) in result.voltages:
        B += 1
    if B == 0:
        raise DyadsimError(
            "the simulation result holds no node of this network's circuit "
            f"(looked for {node_name('x', ids[v0], 0)!r}); was it compiled from another network?"
        )
    return B


def _states_from(net, get, B, T=()):
    """Stacked (x, z, u, x0, y) arrays (B, n, *T) from a node-voltage getter."""
    ids = layer_identifiers(net)
    T = tuple(T)
    X = np.empty((B, net.n) + T)
    Z = np.empty((B, net.n) + T)
    U = np.empty((B, net.n) + T)
    X0 = np.empty((B, net.n_in) + T)
    Y = np.empty((B, net.n_out) + T)
    for b in range(B):
        for i in range(net.n_in):
            X0[b, i] = get(node_name("in", ids[net.input], i, b, B))
        for i in range(net.n_out):
            Y[b, i] = get(target_node(i, b, B))
        for v in net.nodes:
            off = net.block(v).offset
            for i in range(net.sizes[v]):
                X[b, off + i] = get(node_name("x", ids[v], i, b, B))
                Z[b, off + i] = get(node_name("z", ids[v], i, b, B))
                U[b, off + i] = get(node_name("u", ids[v], i, b, B))
    return X, Z, U, X0, Y


class CircuitStates(NamedTuple):
    """The node voltages of a DBP circuit, stacked like the digital states.

    Parameters
    ----------
    x, z : numpy.ndarray
        The state pair V(x), V(z) of every neuron, ``(batch, net.n)``.
    u : numpy.ndarray
        The pre-activations V(u), ``(batch, net.n)``.
    x0 : numpy.ndarray
        The input voltages, ``(batch, net.n_in)``.
    y : numpy.ndarray
        The target voltages, ``(batch, net.n_out)``.
    batch : int
        How many samples the netlist holds.

    For a transient read at several time points, every array has a leading time axis.
    """

    x: np.ndarray
    z: np.ndarray
    u: np.ndarray
    x0: np.ndarray
    y: np.ndarray
    batch: int


def circuit_states(net, result, *, times=None) -> CircuitStates:
    """Read a network's states out of the node voltages of its simulated circuit.

    Works for either netlist dialect (behavioural or device: they name the state, input
    and target nodes alike).

    Parameters
    ----------
    net : Network
        The network the netlist was compiled from.
    result : OperatingPoint or Transient
        A simulation result.  For a transient, its last time point is read unless
        ``times`` is given.
    times : sequence of int, optional
        For a transient: the indices of the time points to read; the arrays then get a
        leading time axis ``(len(times), batch, ...)``.

    Returns
    -------
    CircuitStates
        ``(x, z, u, x0, y, batch)``.

    Raises
    ------
    DyadsimError
        When the result holds no node of this network's circuit, or ``times`` is given
        for an operating point.
    """
    is_tran = hasattr(result, "final") and hasattr(result, "time")
    if times is not None:
        if not is_tran:
            raise DyadsimError("circuit_states: times= needs a transient result")
        idx = np.asarray(times, dtype=int)
        if idx.ndim != 1 or idx.size == 0 or idx.min() < -len(result.time) or idx.max() >= len(result.time):
            raise DyadsimError(f"circuit_states: times must be indices into the {len(result.time)} "
                               "time points of the transient")
        B = _n_samples(net, result)
        X, Z, U, X0, Y = _states_from(net, lambda n: np.asarray(result.v(n))[idx], B, (len(idx),))
        X, Z, U, X0, Y = (np.moveaxis(a, -1, 0) for a in (X, Z, U, X0, Y))
        return CircuitStates(X, Z, U, X0, Y, B)
    if is_tran:
        result = result.final()
    if not hasattr(result, "voltages"):
        raise DyadsimError(f"circuit_states needs a simulation result with node voltages, "
                           f"got {type(result).__name__}")
    B = _n_samples(net, result)
    return CircuitStates(*_states_from(net, result.v, B), B)


def _layer_gains(net, get, voltages, gain=None):
    """``(n,)`` array: the gain of every stacked neuron, from ``gain`` (a number, or
    ``{layer: number}``) or read back from the circuit (``gain_ref_<layer>`` of a staged
    circuit, else ``gain_ref``, else 1)."""
    ids = layer_identifiers(net)
    if gain is None:
        if all(gain_node(ids[v]) in voltages for v in net.nodes):
            gain = {v: float(get(gain_node(ids[v]))) for v in net.nodes}
        else:
            gain = float(get(GAIN_NODE)) if GAIN_NODE in voltages else 1.0
    out = np.empty(net.n)
    for v in net.nodes:
        gv = gain[v] if isinstance(gain, dict) else gain
        gv = float(gv)
        if not (np.isfinite(gv) and gv > 0):
            raise DyadsimError(f"the gain of layer {v!r} is {gv!r}: a gain must be positive and finite")
        out[net.slice(v)] = gv
    return out


@checked_call
def readout(net, result, *, gain=None, method="spice", check=True) -> Gradients:
    """Gradients from the steady-state node voltages of a DBP circuit.

    ``result`` is an :class:`~dyadsim.simulator.OperatingPoint` or a
    :class:`~dyadsim.simulator.Transient` (its last time point is used).  With
    ``m = (V(x)+V(z))/2``, ``d_v = (V(x)-V(z))/gain_v`` and the slope sigma'(V(u)) read at
    the pre-activation nodes, ``dC/dW_pv = mean_b sigma'(u_v) d_v m_p^T``.  Inputs, targets
    and the gains are read back from the circuit's own source nodes: ``gain_ref_<layer>``
    of a gain-staged circuit (``gain="auto"``), else the single ``gain_ref``.  ``gain``
    (a number or ``{layer: number}``) overrides what the circuit says.

    ``check`` verifies that the circuit's V(u) equals W m + b of ``net`` (to 1e-4), which
    catches a result read out with the wrong network; turn it off for circuits perturbed
    on purpose (mismatch, quantization: :mod:`dyadsim.montecarlo`).

    Parameters
    ----------
    net : Network
        The network the netlist was compiled from.
    result : OperatingPoint or Transient
        The simulation result.
    gain : float, mapping or None, optional
        The error-voltage gain (a number or ``{layer: number}``); None (default): read back
        from the circuit.
    method : str, optional
        The label the returned gradients carry (default ``"spice"``).
    check : bool, optional
        Verify that V(u) equals W m + b of ``net`` (default True).

    Returns
    -------
    Gradients
        ``{("W", src, dst): ..., ("b", node): ...}`` averaged over the batch, with ``loss``.
    """
    if hasattr(result, "final") and hasattr(result, "time"):
        result = result.final()
    if not hasattr(result, "voltages"):
        raise DyadsimError(f"readout needs a simulation result with node voltages, got {type(result).__name__}")
    X, Z, U, X0, Y, _ = circuit_states(net, result)
    gain = _layer_gains(net, result.v, result.voltages, gain)
    if not (np.all(np.isfinite(X)) and np.all(np.isfinite(Z)) and np.all(np.isfinite(U))):
        raise DyadsimError("the circuit's state voltages contain NaN or inf")
    sysm = System(net, X0, Y)
    m = 0.5 * (X + Z)
    d = (X - Z) / gain
    if check:
        _check_belongs(sysm, m, U)
    return sysm.readout(m, d, u=U, method=method)


def _check_belongs(sysm, m, U, rtol=1e-4):
    """The circuit's pre-activations must be W m + b of *this* network (for a general node:
    f_v of its parents' m): catches a result read out with another network whose layer
    names happen to match."""
    expect = sysm.preact(m)
    if sysm.general:  # a max pooling node's u is its forward value f_v(m_parent)
        F = sysm.fmap(m)[0]
        for v in sysm.general:
            expect[:, sysm.slices[v]] = F[:, sysm.slices[v]]
    scale = max(float(np.max(np.abs(expect))), 1e-12)
    err = float(np.max(np.abs(expect - U))) / scale
    if err > rtol:
        raise DyadsimError(
            f"the circuit's pre-activation voltages differ from W m + b of this network by {err:.2g} "
            "(relative): the result was not simulated from this network's netlist"
        )


def settling_time(t, err, tol=1e-6) -> float:
    """First time after which the error trace ``err`` (same length as ``t``) stays at or
    below ``tol``.

    Parameters
    ----------
    t : array_like
        The time points.
    err : array_like
        The error at each time point.
    tol : float, optional
        The tolerance (default 1e-6).

    Returns
    -------
    float
        The first ``t[k]`` with ``err[k:] <= tol``; ``inf`` if the last point is still
        above ``tol``.
    """
    bad = np.nonzero(np.asarray(err) > tol)[0]
    if len(bad) == 0:
        return float(t[0])
    if bad[-1] + 1 >= len(t):
        return float("inf")
    return float(t[bad[-1] + 1])


@checked_call
def relaxation_trace(net, tran, *, tau=None, gain=None, max_points=300):
    """Readout along a transient: times (in tau), states and gradient errors vs the final state.

    Parameters
    ----------
    net : Network
        The network the netlist was compiled from.
    tran : Transient
        The ngspice transient.
    tau : float or None, optional
        The time constant (s); None (default): the circuit's ``tau_ref`` node, else 1.
    gain : float, mapping or None, optional
        A number or ``{layer: number}``; None (default): what the circuit's reference nodes
        say (per layer for a gain-staged circuit).
    max_points : int, optional
        At most this many time points, evenly spaced over the run (default 300).

    Returns
    -------
    dict
        ``t`` (T,) in tau units, ``m`` and ``d`` (T, B, n), and ``grad_error`` (T,): the
        relative error of the gradients read out at t against those at the end.
    """
    t = np.asarray(tran.time)
    idx = np.unique(np.linspace(0, len(t) - 1, min(max_points, len(t))).astype(int))
    X, Z, U, X0, Y, _ = circuit_states(net, tran, times=idx)  # (T, B, ...)
    if tau is None:
        tau = float(tran.v(TAU_NODE)[-1]) if TAU_NODE in tran.voltages else 1.0
    X0, Y = X0[-1], Y[-1]
    gain = _layer_gains(net, lambda n: float(np.asarray(tran.v(n))[-1]), tran.voltages, gain)
    sysm = System(net, X0, Y)
    m = 0.5 * (X + Z)
    d = (X - Z) / gain
    final = sysm.readout(m[-1], d[-1], u=U[-1]).flat()
    fn = max(np.linalg.norm(final), np.finfo(float).tiny)
    err = np.array([np.linalg.norm(sysm.readout(m[k], d[k], u=U[k]).flat() - final) / fn
                    for k in range(len(idx))])
    return {"t": t[idx] / tau, "m": m, "d": d, "grad_error": err}


@dataclass(repr=False)
class SpiceGradients(GradientResult):
    """Result of :func:`spice_gradients`: ``grads``, the netlist(s), the simulator
    result(s), and ``info`` (timings, sizes, settling time for transients).

    Parameters
    ----------
    grads : Gradients
        The gradients read out (averaged over the batch).
    netlists : list of Netlist
        One netlist for the batch, or one per sample (``per_sample=True``);
        ``netlist`` is the first.
    results : list
        The simulator results (OperatingPoint or Transient), one per netlist; ``result``
        is the first.
    info : dict, optional
        ``analysis``, ``dialect``, ``netlists``, ``elements``, ``compile_s``,
        ``simulate_s`` and, for transients, ``t_settle_tau``.
    """

    grads: Gradients
    netlists: list
    results: list
    info: dict = field(default_factory=dict)

    @property
    def netlist(self):
        return self.netlists[0]

    @property
    def result(self):
        return self.results[0]


DIALECTS = ("behavioral", "device")


def _compile_and_simulate(compile_one, X, Y, *, analysis, per_sample, backend, processes,
                          timeout, keep_files):
    """Compile one netlist for the batch (or one per sample) and simulate it (them, as
    parallel subprocesses); returns ``(netlists, results, (t0, t1, t2))``."""
    from ..simulator import simulate, simulate_many

    t0 = time.perf_counter()
    if per_sample and X.shape[0] > 1:
        netlists = [compile_one(X[b], Y[b]) for b in range(X.shape[0])]
    else:
        netlists = [compile_one(X, Y)]
    t1 = time.perf_counter()
    if len(netlists) == 1:
        results = [simulate(netlists[0], analysis=analysis, backend=backend, timeout=timeout,
                            keep_files=keep_files)]
    else:
        if backend not in ("auto", "subprocess"):
            raise DyadsimError(
                f"per_sample=True runs the samples as parallel ngspice subprocesses; backend "
                f"{backend!r} cannot do that (use backend='auto' or 'subprocess')")
        results = simulate_many(netlists, analysis=analysis, processes=processes, timeout=timeout,
                                keep_files=keep_files)
    return netlists, results, (t0, t1, time.perf_counter())


@checked_call
def spice_gradients(net, x, y, *, analysis="op", gain=1.0, backend="auto", per_sample=False,
                    processes=2, timeout=600.0, keep_files=False, settle_tol=1e-6,
                    dialect="behavioral", **compile_options) -> SpiceGradients:
    """Compile -> simulate in ngspice -> read out: the analog path's gradients.

    ``per_sample=True`` compiles one netlist per sample and runs them in parallel
    (``processes`` ngspice subprocesses); otherwise the whole batch is one netlist.  The
    readout averages over the batch like the digital path.  Transients report
    ``info["t_settle_tau"]``: when the gradient readout came within ``settle_tol`` of its
    final value.  ``dialect`` picks the compiler: ``"behavioral"``
    (:func:`~dyadsim.compile_netlist`) or ``"device"`` (op-amps, conductance crossbars and
    BJT pairs: :func:`~dyadsim.circuits.compile_device_netlist`, tanh/identity and mse only).
    ``keep_files`` applies with ``per_sample=True`` too; several samples always run as
    parallel ``ngspice -b`` subprocesses, so ``backend`` must then be ``"auto"`` or
    ``"subprocess"``.

    ``net`` may be a :class:`~dyadsim.Chip`: its values go into the netlist and its
    converters read it out (the chip's own cost gain applies).

    Parameters
    ----------
    net : Network or Chip
        The network (or sampled chip).
    x, y : array_like
        The batch.
    analysis : str, optional
        ``"op"`` (default) or ``"tran"``.
    gain : float, ``"auto"``, mapping or sequence, optional
        Scale of the error voltages, as for :func:`~dyadsim.compile_netlist` (default 1.0);
        a chip takes only a number (its own cost gain).
    backend : str, optional
        The simulator backend (default ``"auto"``).
    per_sample : bool, optional
        One netlist per sample instead of one for the batch (default False).
    processes : int, optional
        Parallel ngspice subprocesses with ``per_sample=True`` (default 2).
    timeout : float, optional
        Seconds per ngspice run (default 600).
    keep_files : bool, optional
        Keep the netlist and raw files (default False).
    settle_tol : float, optional
        Tolerance of ``info["t_settle_tau"]`` for transients (default 1e-6).
    dialect : str, optional
        ``"behavioral"`` (default) or ``"device"``.
    **compile_options
        Further keywords of the compiler (``tau``, ``g``, ``t_stop``, ...).

    Returns
    -------
    SpiceGradients
        The gradients with the netlists, the simulator results and ``info``.
    """
    from ..circuits import compile_device_netlist

    if isinstance(net, Chip):
        if isinstance(gain, (str, dict, list, tuple, np.ndarray)):
            raise DyadsimError(f"gain={gain!r}: a chip has one cost gain of its own (sample "
                               "it with gain=...); gain staging is for networks")
        from ._chip_spice import chip_spice_gradients
        return chip_spice_gradients(
            net, x, y, analysis=analysis, gain=None if gain == 1.0 else gain, backend=backend,
            per_sample=per_sample, processes=processes, timeout=timeout, keep_files=keep_files,
            settle_tol=settle_tol, dialect=dialect, **compile_options)

    if dialect not in DIALECTS:
        raise DyadsimError(f"unknown dialect {dialect!r}; valid: {', '.join(DIALECTS)}")
    compile_fn = compile_netlist if dialect == "behavioral" else compile_device_netlist
    X, Y, _ = net.check_xy(x, y)
    netlists, results, (t0, t1, t2) = _compile_and_simulate(
        lambda xb, yb: compile_fn(net, xb, yb, analysis=analysis, gain=gain, **compile_options),
        X, Y, analysis=analysis, per_sample=per_sample, backend=backend, processes=processes,
        timeout=timeout, keep_files=keep_files)
    # a scalar gain as given (the classic circuit); staged gains are read back per layer
    parts = [readout(net, r, gain=gain if nl.gains and not nl.staged else None)
             for nl, r in zip(netlists, results)]
    if len(parts) == 1:
        grads = parts[0]
    else:
        grads = Gradients({k: np.mean([p[k] for p in parts], axis=0) for k in parts[0]},
                          loss=float(np.mean([p.loss for p in parts])))
    grads.method = f"spice[{analysis}]"
    info = {
        "analysis": analysis,
        "dialect": dialect,
        "netlists": len(netlists),
        "elements": int(sum(n.stats["elements"] for n in netlists)),
        "compile_s": t1 - t0,
        "simulate_s": t2 - t1,
    }
    if analysis == "tran":
        tau = netlists[0].tau
        settle = []
        for r in results:
            tr = relaxation_trace(net, r, tau=tau, gain=gain if not netlists[0].staged else None)
            settle.append(settling_time(tr["t"], tr["grad_error"], settle_tol))
        info["t_settle_tau"] = float(max(settle))
    return SpiceGradients(grads, netlists, results, info)
