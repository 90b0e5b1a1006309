"""A sampled chip in ngspice: its values placed into the behavioural netlist, simulated, and
read out through the chip's own converters (what :func:`dyadsim.spice_gradients` does
when it is given a :class:`~dyadsim.Chip`)."""

from __future__ import annotations


import numpy as np

from ..circuits import compile_chip_netlist
from ..dynamics import Gradients, chip_readout
from ..errors import DyadsimError

__all__ = ["chip_spice_gradients"]


def _chip_grads(chip, result, times=None, label=None):
    from ._spice import circuit_states

    st = circuit_states(chip.net, result, times=times)
    if times is None:
        m, d = 0.5 * (st.x + st.z), st.x - st.z
        return chip_readout(chip, st.x0, st.y, m, d, st.u, method=label)
    return [chip_readout(chip, st.x0[k], st.y[k], 0.5 * (st.x[k] + st.z[k]), st.x[k] - st.z[k],
                         st.u[k], method=label) for k in range(len(times))]


def chip_spice_gradients(chip, x, y, *, analysis="op", gain=None, backend="auto",
                         per_sample=False, processes=2, timeout=600.0, keep_files=False,
                         settle_tol=1e-6, dialect="behavioral", **compile_options):
    """:func:`dyadsim.spice_gradients` for a chip: the chip's netlist (forward and backward
    weights, unit gains, offsets, per-neuron tau, its cost gain) in ngspice, read out with
    the chip's converters (its ADC, its derivative units), exactly as the dynamics engine
    reads its steady state.

    Parameters
    ----------
    chip : Chip
        Without thermal noise (ngspice's ``.op`` is the noise-free steady state, and its
        transient noise cannot be seeded: ``chip.replace(noise=0.0)``).
    x, y : array_like
    analysis, backend, per_sample, processes, timeout, keep_files, settle_tol
        As for :func:`dyadsim.spice_gradients`.
    gain : None or float
        The chip's gain (it is part of the chip); another value is refused.
    dialect : ``"behavioral"``
        Chips are placed into the behavioural netlist only.
    **compile_options
        Options of :func:`~dyadsim.compile_netlist` (``tau``, ``g``, ``options``, ...).

    Returns
    -------
    SpiceGradients
    """
    from ._spice import _compile_and_simulate
    from ._spice import SpiceGradients, settling_time

    if dialect != "behavioral":
        raise DyadsimError(f"a chip runs in the behavioural netlist only (dialect {dialect!r} given)")
    if chip.noise > 0:
        raise DyadsimError(
            "ngspice cannot run a chip's thermal noise reproducibly (its .op is the noise-free "
            "steady state; its transient noise is seeded from the process id): use "
            "chip.replace(noise=0.0), or the dynamics engine for noise")
    if gain is not None and float(gain) != chip.gain:
        raise DyadsimError(f"gain {gain!r} differs from the chip's gain {chip.gain:g} "
                           "(sample the chip with gain=...)")
    net = chip.net
    X, Y, _ = net.check_xy(x, y)
    values = chip.values()
    netlists, results, (t0, t1, t2) = _compile_and_simulate(
        lambda xb, yb: compile_chip_netlist(net, values, xb, yb, analysis=analysis, **compile_options),
        X, Y, analysis=analysis, per_sample=per_sample, backend=backend, processes=processes,
        timeout=timeout, keep_files=keep_files)
    label = f"spice[{analysis}, chip]"
    parts = [_chip_grads(chip, r, label=label) for r in results]
    if len(parts) == 1:
        grads = parts[0]
    else:
        grads = Gradients({k: np.mean([p[k] for p in parts], axis=0) for k in parts[0]},
                          loss=float(np.mean([p.loss for p in parts])), method=label)
    info = {"analysis": analysis, "dialect": dialect, "chip": True, "netlists": len(netlists),
            "elements": int(sum(n.stats["elements"] for n in netlists)),
            "compile_s": t1 - t0, "simulate_s": t2 - t1}
    if analysis == "tran":
        settle = []
        tau = netlists[0].tau
        for r in results:
            t = np.asarray(r.time)
            idx = np.unique(np.linspace(0, len(t) - 1, min(300, len(t))).astype(int))
            traj = _chip_grads(chip, r, times=idx)
            final = traj[-1].flat()
            fn = max(np.linalg.norm(final), np.finfo(float).tiny)
            err = [np.linalg.norm(g.flat() - final) / fn for g in traj]
            settle.append(settling_time(t[idx] / tau, err, settle_tol))
        info["t_settle_tau"] = float(max(settle))
    return SpiceGradients(grads, netlists, results, info)
