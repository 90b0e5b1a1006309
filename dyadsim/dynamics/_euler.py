"""Explicit Euler on the saddle flow: DBP's discrete relaxation (docs/theory.md section 4).

Two encodings of the doubled state (docs/theory.md section 7):

* ``state="md"`` (default, exact): the activation m and the error signal d are the state.
  The Euler map is the same, but d is never formed as the difference of two rounded
  numbers, so in float64 every gradient matches backprop to rounding however small d is.
* ``state="xz"`` (physical): the two node voltages x = m + d/2 and z = m - d/2 are stored
  and updated, as in the paper's Algorithm 1 and in a circuit.  A layer whose d is far
  below its m loses about eps * max|m| / max|d| of relative accuracy (and every layer
  upstream inherits it); every result reports that floor and warns when it matters.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from .._validate import (check_bool, check_choice, check_dtype, check_eta, check_int,
                         check_real, checked_call)
from ..errors import ConvergenceError, DyadsimError, PrecisionWarning
from ._backend import use_torch
from ._backprop import error_signal, param_grads
from ._chip import Chip
from ._precision import (STATES, _layer_extents, _raise_if_nonfinite, _report, _user_stacklevel,
                         check_finite_grads, default_accuracy, warn_if_imprecise)
from ._result import GradientResult
from ._system import System

__all__ = ["relax", "RelaxResult", "SCHEDULES", "STATES"]

SCHEDULES = ("parallel", "wavefront", "async")

#: ``record=True`` refuses to keep more history than this (two states per step)
MAX_RECORD_BYTES = 2 * 2**30


def _size(nbytes: float) -> str:
    return f"{nbytes / 2**30:.2f} GiB" if nbytes >= 2**30 else f"{nbytes / 2**20:.2f} MiB"


def _check_record(sysm, n_steps, at=None):
    """Refuse a history larger than :data:`MAX_RECORD_BYTES` (before it is allocated)."""
    per = 2 * sysm.B * sysm.n * np.dtype(sysm.dtype).itemsize
    if (n_steps + 1) * per > MAX_RECORD_BYTES:
        when = f" (reached at step {at})" if at is not None else ""
        raise DyadsimError(
            f"record=True would keep {_size((n_steps + 1) * per)} of history{when}, more "
            f"than {_size(MAX_RECORD_BYTES)}: record fewer steps (steps=...), a smaller "
            "batch, or run without record")


def _value(v):
    return v() if callable(v) else v


class RelaxResult(GradientResult):
    """Outcome of :func:`relax`.

    Parameters
    ----------
    grads : Gradients
        Read out of the final state.
    steps : int
        Euler steps taken.
    x, z : ndarray, optional
        The final node voltages, ((n,) for one sample, (B, n) for a batch); in the exact
        encoding they are derived from ``m`` and ``d`` (x = m + d/2, z = m - d/2).
    eta, schedule, converged, residual, depth, stalled
        See Attributes.
    history_x, history_z : ndarray, optional
        States after every step (``record=True``), step 0 (all zeros) first.
    info : dict, optional
    m, d : ndarray, optional (keyword)
        The final activations and error signals (stored exactly with ``state="md"``).
    history_m, history_d : ndarray, optional (keyword)
    state : ``"md"`` or ``"xz"`` (keyword)
    precision : PrecisionReport, optional (keyword)

    Any array may also be given as a callable that computes it on first access.

    Attributes
    ----------
    grads : Gradients
    steps : int
    eta : float
    schedule : str
        ``"parallel"`` or ``"wavefront"``.
    state : str
        ``"md"`` (exact) or ``"xz"`` (physical encoding).
    converged : bool
        At ``eta=1``: the run reached step 2L (the readout is exact); otherwise the update
        fell below ``tol``.
    residual : float
        The last update's relative size (layer by layer, m and d separately).
    depth : int
        The network's depth L.
    stalled : bool
        Stopped at the rounding floor of the dtype before reaching ``tol``.
    precision : PrecisionReport
        Per layer: the dynamic range max|d|/max|m| and the predicted rounding floor of the
        encoding and dtype (also in ``info["precision"]``).
    info : dict
        ``state``, ``dtype``, ``precision`` (the report as a dict), ``precision_floor``
        (the largest predicted relative error), ``accuracy`` (what it was held to).
    """

    def __init__(self, grads, steps, x=None, z=None, eta=1.0, schedule="parallel",
                 converged=False, residual=math.inf, depth=0, history_x=None, history_z=None,
                 stalled=False, info=None, *, m=None, d=None, history_m=None, history_d=None,
                 state=None, precision=None):
        super().__init__(grads, info)
        if x is None and m is None:
            raise DyadsimError("RelaxResult needs the final state: x and z, or m and d")
        self.steps = steps
        self.eta = eta
        self.schedule = schedule
        self.converged = converged
        self.residual = residual
        self.depth = depth
        self.stalled = stalled
        self.state = state if state is not None else ("xz" if x is not None else "md")
        self.precision = precision
        self._arr = {"x": x, "z": z, "m": m, "d": d,
                     "hx": history_x, "hz": history_z, "hm": history_m, "hd": history_d}

    def _get(self, key):
        v = self._arr[key]
        if callable(v):
            v = self._arr[key] = v()
        return v

    def _derive(self, key, a, b, f):
        v = self._get(key)
        if v is None and self._get(a) is not None:
            v = self._arr[key] = f(self._get(a), self._get(b))
        return v

    @property
    def x(self) -> np.ndarray:
        """The x (plus) node voltages m + d/2."""
        return self._derive("x", "m", "d", lambda m, d: m + 0.5 * d)

    @property
    def z(self) -> np.ndarray:
        """The z (minus) node voltages m - d/2."""
        return self._derive("z", "m", "d", lambda m, d: m - 0.5 * d)

    @property
    def m(self) -> np.ndarray:
        """Activations (x + z) / 2 (stored exactly with ``state="md"``)."""
        return self._derive("m", "x", "z", lambda x, z: 0.5 * (x + z))

    @property
    def d(self) -> np.ndarray:
        """Error signals x - z (stored exactly with ``state="md"``)."""
        return self._derive("d", "x", "z", lambda x, z: x - z)

    @property
    def history_x(self):
        """x after every step (``record=True``), or ``None``."""
        return self._derive("hx", "hm", "hd", lambda m, d: m + 0.5 * d)

    @property
    def history_z(self):
        """z after every step (``record=True``), or ``None``."""
        return self._derive("hz", "hm", "hd", lambda m, d: m - 0.5 * d)

    @property
    def history_m(self):
        """m after every step (``record=True``), or ``None``."""
        return self._derive("hm", "hx", "hz", lambda x, z: 0.5 * (x + z))

    @property
    def history_d(self):
        """d after every step (``record=True``), or ``None``."""
        return self._derive("hd", "hx", "hz", lambda x, z: x - z)

    def _setter(key):  # noqa: N805 - a helper of the class body
        def set_(self, value):
            self._arr[key] = value
        return set_

    x = x.setter(_setter("x"))
    z = z.setter(_setter("z"))
    m = m.setter(_setter("m"))
    d = d.setter(_setter("d"))
    history_x = history_x.setter(_setter("hx"))
    history_z = history_z.setter(_setter("hz"))
    history_m = history_m.setter(_setter("hm"))
    history_d = history_d.setter(_setter("hd"))
    del _setter

    @property
    def history(self):
        """``(history_x, history_z)`` or ``None`` when not recorded."""
        if self.history_x is None:
            return None
        return self.history_x, self.history_z

    def __repr__(self) -> str:
        fl = self.precision.floor if self.precision is not None else math.nan
        return (f"RelaxResult(label={self.label!r}, state={self.state!r}, steps={self.steps}, "
                f"converged={self.converged}, precision_floor={fl:.2g})")


def _default_tol(dtype) -> float:
    return 1e-12 if np.dtype(dtype) == np.float64 else float(np.finfo(np.float32).eps)


@checked_call
def relax(net, x, y, eta=1.0, steps=None, dtype=np.float64, *, schedule="parallel", state="md",
          tol=None, max_steps=100_000, record=False, progress=False, seed=None,
          backend="numpy", device=None) -> RelaxResult:
    """Relax the DBP saddle flow with explicit Euler from x = z = 0 and read out gradients.

    ``net`` may be a :class:`~dyadsim.Chip`: its relaxation then runs on the chip engine.

    Parameters
    ----------
    net : Network or Chip
    x : array_like, (n_in,) or (B, n_in)
    y : array_like, (n_out,) or (B, n_out)
    eta : float
        Euler step in units of tau, in (0, 2).  At ``eta=1`` the readout equals backprop
        exactly at step 2L (L = ``net.depth``), and not before, in both encodings.
    steps : int, optional
        Number of steps.  ``None``: exactly 2L at ``eta=1``; otherwise run until the
        relative size of an update falls below ``tol`` (at most ``max_steps``; a
        :class:`~dyadsim.errors.ConvergenceError` otherwise).
    dtype : float64 or float32
        The whole relaxation runs in that precision.
    schedule : ``"parallel"`` or ``"wavefront"``
        ``"parallel"`` updates every neuron at every step (the physical picture);
        ``"wavefront"`` (``eta=1`` only) updates a layer only at the step when its inputs
        became final (forward wave at step depth(v), error wave at step L + 1 + the
        longest path from v to the output): same state at step 2L, backprop's cost.
        Its intermediate states differ from the parallel ones (unreached layers stay 0).
        ``"async"``: no global clock, one neuron at a time drawn at random (runs until
        ``tol``, at most ``max_steps`` sweeps of n updates; m and d are its state).
    state : ``"md"`` or ``"xz"``
        The encoding of the doubled state.  ``"md"`` (default) stores the activation m and
        the error signal d; the Euler map is the same, but d is exact however small it is,
        and in float64 every gradient matches backprop to ~1e-15 (the wavefront in this
        encoding *is* a forward and a backward pass).  ``"xz"`` stores the node voltages
        x = m + d/2 and z = m - d/2 and updates them, ``x += eta dx/dt``,
        ``z += eta dz/dt``: the paper's Algorithm 1 and what a circuit does.  There each
        layer loses about ``eps * max|m| / max|d|`` of relative accuracy, accumulating
        towards the input (``result.precision`` predicts it; see docs/theory.md section 7).
    tol : float, optional
        Convergence tolerance on ``max|eta*dm_v| / max|m_v|`` and
        ``max|eta*dd_v| / max|d_v|`` for every layer v (default 1e-12 in float64, float32's
        eps in float32); the run also stops, converged and ``stalled``, when the residual,
        already below sqrt(eps), has not halved for max(50, 10/eta) steps (the rounding
        floor of the state; at eta > 1 the threshold sqrt(eps) grows by (eta / (2 - eta))^L, at
        most 100x, since every layer amplifies the rounding noise there, and with
        ``state="xz"`` it is at least 10x the predicted rounding floor); only used when
        ``steps`` is None.  It is also the accuracy the rounding floor is held to (default:
        :func:`default_accuracy`, 1e-6 in float64); a run that stalled above it warns.
    max_steps : int
        The step budget when running to ``tol``.
    record : bool
        Keep the state after every step (``history_x``/``history_z``, and
        ``history_m``/``history_d``).
    progress : bool
        Show a progress bar (tqdm) for long relaxations.
    seed : int, optional
        The seed of the update order (``schedule="async"``), or a
        :class:`~dyadsim.Chip`'s thermal-noise seed (``None``: the chip's own stream).
    backend : ``"numpy"`` or ``"torch"``
        ``"torch"`` runs the same steps with torch on ``device`` (the parallel and
        wavefront schedules of a Network; torch is an optional extra); the result holds
        numpy arrays either way.
    device : str, optional
        The torch device (``"cpu"``, ``"cuda"``, ...; ``backend="torch"`` only).

    Returns
    -------
    RelaxResult

    Raises
    ------
    DyadsimError
        Bad arguments (each is validated; unknown keyword arguments are refused).
    ConvergenceError
        The budget ran out before ``tol``, or the state or the gradients overflowed to
        inf/NaN (the message names the layer or the tensor).

    Warns
    -----
    PrecisionWarning
        When the predicted rounding floor of some layer exceeds the requested accuracy
        (``tol``, or :func:`default_accuracy`), naming the layer and the fix.
    """
    torch_backend = use_torch(backend, device)
    if isinstance(net, Chip):
        if state != "md":
            raise DyadsimError("state applies to the relaxation of a Network; a chip relaxes "
                               "its own physical model (see dyadsim.Chip)")
        from ._chip_engine import relax_chip
        return relax_chip(net, x, y, eta=eta, steps=steps, dtype=dtype, schedule=schedule, tol=tol,
                          max_steps=max_steps, record=record, seed=seed, backend=backend,
                          device=device)
    if torch_backend:
        from ._torch import relax as torch_relax
        return torch_relax(net, x, y, eta, steps, dtype, schedule=schedule, tol=tol,
                           max_steps=max_steps, record=record, progress=progress, seed=seed,
                           state=state, device=device)
    eta = check_eta(eta)
    schedule = check_choice("schedule", schedule, SCHEDULES)
    state = check_choice("state", state, STATES)
    steps = check_int("steps", steps, 0, allow_none=True)
    max_steps = check_int("max_steps", max_steps, 1)
    tol = check_real("tol", tol, low=0, low_open=True, allow_none=True)
    record = check_bool("record", record)
    progress = check_bool("progress", progress)
    dtype = check_dtype(dtype)
    if schedule == "async":
        if steps is not None or record:
            raise DyadsimError("the async schedule runs until tol (steps and record do not apply)")
        if state != "md":
            raise DyadsimError("the async schedule updates m and d (state='md') only")
        net.require_standard("relax(schedule='async')")
        from ._async import relax_async

        with np.errstate(over="ignore", invalid="ignore"):
            res = relax_async(net, x, y, eta=eta, dtype=dtype, seed=seed, tol=tol,
                              max_sweeps=max_steps)
        check_finite_grads(res.grads, what="relax (async)", dtype=dtype)
        ext = _layer_extents(net, res.m, res.d)
        res.precision = _report(net, ext, "md", np.dtype(dtype).name,
                                float(np.finfo(dtype).eps), eta)
        res.state = "md"
        return _diagnose(res, state, dtype, eta, tol)
    if steps is not None and steps > max_steps and schedule == "parallel":
        raise DyadsimError(
            f"steps={steps} exceeds the step budget max_steps={max_steps}; raise max_steps "
            "to run that long")
    if schedule == "wavefront" and eta != 1.0:
        raise DyadsimError(
            f"the wavefront schedule needs eta = 1 (got {eta}): only then is a layer "
            "final after one update once its inputs are final"
        )
    sysm = System(net, x, y, dtype)
    L = net.depth
    if record and (steps is not None or eta == 1.0 or schedule == "wavefront"):
        _check_record(sysm, min(steps, 2 * L) if schedule == "wavefront" and steps is not None
                      else (2 * L if steps is None else steps))
    with np.errstate(over="ignore", invalid="ignore"):
        if schedule == "wavefront":
            res = _relax_wavefront(sysm, 2 * L if steps is None else min(steps, 2 * L),
                                   record, state)
        else:
            conv_tol = _default_tol(sysm.dtype) if tol is None else tol
            fixed = steps is not None or eta == 1.0
            n_steps = steps if steps is not None else (2 * L if eta == 1.0 else max_steps)
            res = _relax_parallel(sysm, eta, n_steps, fixed, conv_tol, record, progress, state)
    return _diagnose(res, state, dtype, eta, tol)


def _diagnose(res, state, dtype, eta, tol):
    """Fill ``info`` with the precision facts and warn where they fall short."""
    accuracy = tol if tol is not None else default_accuracy(dtype)
    res.info.update({"state": state, "dtype": np.dtype(dtype).name, "accuracy": accuracy,
                     "precision_floor": res.precision.floor,
                     "precision": res.precision.to_dict()})
    what = f"relax(state={state!r}, dtype={np.dtype(dtype).name}, eta={eta:g})"
    if res.converged:
        warn_if_imprecise(res.precision, accuracy, what=what)
    if res.stalled and res.residual > accuracy:
        fixes = (["state='md'"] if state == "xz" else []) + (
            ["dtype=float64"] if np.dtype(dtype) == np.float32 else []) + ["an eta closer to 1"]
        warnings.warn(
            f"{what}: stalled at the rounding floor of {np.dtype(dtype).name} with a last "
            f"relative update of {res.residual:.2g}, above the requested accuracy "
            f"{accuracy:.2g}; fix: use {', or '.join(fixes)}",
            PrecisionWarning, stacklevel=_user_stacklevel())
    return res


def _finish(sysm, *, steps, eta, schedule, state, converged, residual, m, d, d_est=None,
            x=None, z=None, grads=None, hist=None, stalled=False):
    """Check for overflow, read out (unless ``grads`` is given), report the precision.

    ``m``, ``d`` are (B, n) arrays or complete ``{node: array}`` maps; ``d_est`` estimates
    the error signal each layer should hold (xz: its update target); ``x``, ``z`` are
    given in the physical encoding; ``hist`` is a list of (a, b) state pairs."""
    net = sysm.net
    ext = _layer_extents(net, m, d if d_est is None else d_est)
    _raise_if_nonfinite(net, ext, "relax", sysm.dtype, None)
    blocks = isinstance(m, dict)
    if grads is None:
        grads = sysm.readout(m, d, method=f"euler[{schedule}, eta={eta:g}, steps={steps}]")
    check_finite_grads(grads, what="relax", dtype=sysm.dtype)
    report = _report(net, ext, state, np.dtype(sysm.dtype).name,
                     float(np.finfo(sysm.dtype).eps), eta)
    single = sysm.single

    def shaped(a):
        if blocks:
            a = _assemble(sysm, a)
        return a[0] if single else a

    def lazy(a):
        return None if a is None else (lambda: shaped(a))

    h = {}
    if hist is not None:
        A = np.stack([p[0] for p in hist])
        Bh = np.stack([p[1] for p in hist])
        if single:
            A, Bh = A[:, 0], Bh[:, 0]
        h = {"history_x": A, "history_z": Bh} if state == "xz" else {"history_m": A, "history_d": Bh}
    if state == "xz":
        return RelaxResult(grads, steps, lazy(x), lazy(z), eta, schedule, converged, residual,
                           net.depth, stalled=stalled, state=state, precision=report, **h)
    return RelaxResult(grads, steps, None, None, eta, schedule, converged, residual, net.depth,
                       stalled=stalled, m=lazy(m), d=lazy(d), state=state, precision=report,
                       **h)


def _assemble(sysm, blocks) -> np.ndarray:
    """``{node: (B, size)}`` -> (B, n), zeros for the nodes that are missing."""
    out = np.zeros((sysm.B, sysm.n), dtype=sysm.dtype)
    for v, sl in sysm.slices.items():
        if v in blocks:
            out[:, sl] = blocks[v]
    return out


def _blockwise_residual(sysm, m_all, d_all, dm, dd) -> float:
    """Largest update of any layer relative to that layer's largest value, for m and d
    separately (d is often orders of magnitude below m, and shrinks layer by layer towards
    the input: each layer's d is measured against itself, never against the whole state).

    A layer whose values head for exactly zero (a relu layer that dies, an error signal cut
    off by saturated units) would keep a relative update near eta forever, so it is measured
    against a floor instead: 1e-6 of the largest m of the whole state for m, 1e-6 of the
    largest d of its successors (itself, at the output) for d, and never below
    tiny / eps (values that close to underflow are zero for every purpose)."""
    dt = sysm.dtype
    tiny = float(np.finfo(dt).tiny)
    absolute = tiny / float(np.finfo(dt).eps)
    m_floor = max(1e-6 * _amax(m_all), absolute)
    dmax = {v: _amax(d_all[:, sl]) for v, sl in sysm.slices.items()}
    net = sysm.net
    worst = 0.0
    for v, sl in sysm.slices.items():
        um = _amax(dm[:, sl])
        ud = _amax(dd[:, sl])
        ref_d = max((dmax[c] for c in net.succs[v]), default=dmax[v])
        d_floor = max(1e-6 * ref_d, absolute)
        rm = um / (max(_amax(m_all[:, sl]), m_floor) + tiny) if um else 0.0
        rd = ud / (max(dmax[v], d_floor) + tiny) if ud else 0.0
        worst = max(worst, rm, rd)
    return worst


def _noise_floor(sysm, state, eta, m, d) -> float:
    """The predicted rounding floor of the state (relative error of the worst layer's d):
    with ``state="xz"`` it includes the dynamic range, and a residual at that level is all
    the encoding allows."""
    ext = _layer_extents(sysm.net, m, d)
    return _report(sysm.net, ext, state, "", float(np.finfo(sysm.dtype).eps), eta).floor


def _amax(a) -> float:
    """max|a| (0 for an empty array)."""
    if not a.size:
        return 0.0
    return max(float(np.max(a)), -float(np.min(a)))


def _relax_parallel(sysm, eta, n_steps, fixed, tol, record, progress, state):
    shape = (sysm.B, sysm.n)
    xz = state == "xz"
    # the state: (m, d) exactly, or the node voltages (x, z)
    a = np.zeros(shape, dtype=sysm.dtype)
    b = np.zeros(shape, dtype=sysm.dtype)
    hist = [(a.copy(), b.copy())] if record else None
    residual = np.inf
    converged = stalled = False
    best, best_k = np.inf, 0
    stall_window = max(50, int(np.ceil(10.0 / eta)))
    # the rounding noise of the state: ~eps at eta <= 1; at eta > 1 every layer between the
    # input and the output amplifies it by up to eta / (2 - eta) (capped: 100)
    amp = min(100.0, max(1.0, eta / (2.0 - eta)) ** sysm.net.depth)
    stall_floor = float(np.sqrt(np.finfo(sysm.dtype).eps)) * amp
    k = 0
    m, d = a, b
    dd = None
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=n_steps if fixed else None, desc="relax", unit="step", leave=False)
    try:
        for k in range(1, n_steps + 1):
            if xz:
                m = 0.5 * (a + b)
                d = a - b
            dm, dd, _ = sysm.flow_md(m, d)
            dm *= eta
            dd *= eta
            if xz:
                a += dm + 0.5 * dd
                b += dm - 0.5 * dd
            else:
                a += dm
                b += dd
            if record:
                if not fixed:
                    _check_record(sysm, k, at=k)
                hist.append((a.copy(), b.copy()))
            if bar is not None:
                bar.update(1)
            if fixed and k < n_steps:
                continue
            m_now, d_now = (0.5 * (a + b), a - b) if xz else (a, b)
            if not fixed:
                if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
                    _raise_if_nonfinite(sysm.net, _layer_extents(sysm.net, m_now, d_now),
                                        f"relax (eta={eta})", sysm.dtype, k)
            # layer by layer: the largest update relative to the layer's largest value,
            # for m and d separately (d is often orders of magnitude below m)
            residual = _blockwise_residual(sysm, m_now, d_now, dm, dd)
            if fixed:
                continue
            if residual <= tol:
                converged = True
                break
            # stalled at the rounding floor (float32 with a small eta): the residual has
            # not improved for a while; the state is as good as this precision allows
            # (only near the rounding floor: far from it a residual can grow for a
            # while and still converge -- non-normal transients at eta > 1)
            if residual < best:
                best, best_k = 0.5 * residual, k
            elif k - best_k > stall_window and residual <= max(
                    stall_floor, 10 * _noise_floor(sysm, state, eta, m_now, d_now)):
                converged = stalled = True
                break
    finally:
        if bar is not None:
            bar.close()
    if fixed:
        converged = eta == 1.0 and k >= 2 * sysm.net.depth
    elif not converged:
        raise ConvergenceError(
            f"Euler relaxation with eta={eta} did not reach tol={tol:g} in {n_steps} steps "
            f"(last relative update {residual:.3g}); raise max_steps or tol"
            + ("; with state='xz' the rounding of x and z may keep it from converging: try "
               "state='md'" if xz else "")
            + (f"; at eta > 1 every layer amplifies the rounding noise of the iteration by up "
               f"to eta/(2-eta) = {eta / (2 - eta):.3g}, about "
               f"{float(np.finfo(sysm.dtype).eps) * (eta / (2 - eta)) ** sysm.net.depth:.2g} "
               f"over the depth L={sysm.net.depth}: use eta <= 1 (eta=1 is exact in 2L steps)"
               if eta > 1 else "")
        )
    steps = k if n_steps else 0
    if xz:
        m_fin, d_fin = 0.5 * (a + b), a - b
        # what d should be: the last update's target (d itself may be lost in rounding)
        d_est = d_fin if dd is None else d + dd / eta
        return _finish(sysm, steps=steps, eta=eta, schedule="parallel", state=state,
                       converged=converged, residual=residual, m=m_fin, d=d_fin, d_est=d_est,
                       x=a, z=b, hist=hist, stalled=stalled)
    return _finish(sysm, steps=steps, eta=eta, schedule="parallel", state=state,
                   converged=converged, residual=residual, m=a, d=b, hist=hist, stalled=stalled)


def _relax_wavefront(sysm, n_steps, record, state):
    """eta = 1; update block v's forward part at step depth(v) and its error part at step
    L + 1 + rdepth(v), each from the previous state, exactly as the parallel Euler map does.

    A layer's first update starts from x = z = m = 0, where the Euler step m += sigma(u) - m
    is exact: m = sigma(u) (:meth:`Network.node_forward`, the forward pass).  At its error
    wave d_v is still 0, so the update is d_v = W^T (sigma' d)_succ (+ dC/da_L)
    (:func:`error_signal`, the backward pass), and m_v does not move.  In the exact
    encoding that is all (this schedule *is* backprop); in the physical one the update is
    applied to x = m + d/2 and z = m - d/2, and m and d are read back from the rounded x, z.
    """
    net = sysm.net
    L = net.depth
    W = sysm.weights
    xz = state == "xz"
    nodes = net.nodes
    fwd = {k: [v for v in nodes if net.block(v).depth == k] for k in range(1, L + 1)}
    bwd = {k: [v for v in reversed(nodes) if L + 1 + net.block(v).rdepth == k]
           for k in range(L + 1, 2 * L + 1)}
    a = {net.input: sysm.X}  # m of every updated layer
    slope, delta, dblk = {}, {}, {}
    target, xb, zb = {}, {}, {}  # xz: the update target of d, the stored x and z

    def snapshot():
        ms = {v: a[v] for v in nodes if v in a}
        if xz:
            return (_assemble(sysm, {**ms, **xb}), _assemble(sysm, {**ms, **zb}))
        return _assemble(sysm, ms), _assemble(sysm, dblk)

    hist = [snapshot()] if record else None
    for k in range(1, n_steps + 1):
        for v in fwd.get(k, ()):
            a[v], slope[v] = net.node_forward(v, a, W, slope=True)
        for v in bwd.get(k, ()):
            dv = error_signal(net, v, delta, W, a[net.output], sysm.Y)
            if xz:
                target[v] = dv
                half = 0.5 * dv
                xv = a[v] + half
                zv = a[v] - half
                dv = xv - zv
                mv = xv + zv
                mv *= 0.5
                a[v], xb[v], zb[v] = mv, xv, zv
            dblk[v] = dv
            delta[v] = net.node_delta(v, slope[v], dv)
        if record:
            hist.append(snapshot())
    done = n_steps >= 2 * L
    if not done:  # a partial state: read out like any other state
        ms = {v: a[v] for v in nodes if v in a}
        m_full = _assemble(sysm, ms)
        d_full = _assemble(sysm, dblk)
        kw = {}
        if xz:
            kw = dict(x=_assemble(sysm, {**ms, **xb}), z=_assemble(sysm, {**ms, **zb}))
        return _finish(sysm, steps=n_steps, eta=1.0, schedule="wavefront", state=state,
                       converged=False, residual=np.inf, m=m_full, d=d_full, hist=hist, **kw)
    grads = param_grads(net, delta, a, W, sysm.B,
                        method=f"euler[wavefront, eta=1, steps={n_steps}]")
    grads.loss = float(np.mean(net.loss.value(a[net.output], sysm.Y)))
    ms = {v: a[v] for v in nodes}
    kw = dict(x=xb, z=zb, d_est=target) if xz else {}
    return _finish(sysm, steps=n_steps, eta=1.0, schedule="wavefront", state=state,
                   converged=True, residual=0.0, m=ms, d=dblk, grads=grads, hist=hist, **kw)
