"""Explicit Euler on the saddle flow on a torch device: the parallel and wavefront schedules,
in the (m, d) or the (x, z) state, step for step the numpy relaxation."""

from __future__ import annotations

import numpy as np

from ...errors import ConvergenceError, DyadsimError
from ..._validate import check_eta, check_int
from .._euler import SCHEDULES, RelaxResult
from ._system import TorchSystem, to_numpy, torch

__all__ = ["relax", "STATES", "wavefront_core", "parallel_core"]

#: the schedules the torch engine runs
TORCH_SCHEDULES = ("parallel", "wavefront")
#: what the relaxation stores: ("md") the activation m and the error signal d,
#: ("xz") the physical node pair x = m + d/2, z = m - d/2
STATES = ("md", "xz")


def _default_tol(np_dtype) -> float:
    return 1e-12 if np.dtype(np_dtype) == np.float64 else float(np.finfo(np.float32).eps)


def relax(net, x, y, eta=1.0, steps=None, dtype=np.float64, *, schedule="parallel", tol=None,
          max_steps=100_000, record=False, progress=False, seed=None, state="md", device=None):
    """:func:`dyadsim.relax` on a torch device, step for step the numpy relaxation.

    Parameters
    ----------
    net, x, y, eta, steps, dtype, schedule, tol, max_steps, record, progress
        As for :func:`dyadsim.relax` (schedules ``"parallel"`` and ``"wavefront"``).
    seed : None
        Belongs to the numpy backend's async schedule and to chips; refused here.
    state : ``"xz"`` (the physical pair, as the numpy backend stores it) or ``"md"``
        (m and d stored directly: exact d in float32 too).
    device : torch device (``None``: the CPU).

    Returns
    -------
    RelaxResult
        numpy arrays; ``info`` adds backend, device, state.
    """
    eta = check_eta(eta)
    if schedule == "async":
        raise DyadsimError("the async schedule (one random neuron at a time) runs on the numpy "
                           "backend only; the torch backend has the parallel and wavefront schedules")
    if schedule not in TORCH_SCHEDULES:
        raise DyadsimError(f"unknown schedule {schedule!r}; valid schedules: {', '.join(SCHEDULES)}")
    if seed is not None:
        raise DyadsimError("seed applies to the async schedule and to chips (numpy backend); "
                           "the torch backend's schedules are deterministic")
    if state not in STATES:
        raise DyadsimError(f"unknown state {state!r}; valid states: {', '.join(STATES)}")
    if steps is not None:
        steps = check_int("steps", steps, 0)
    max_steps = check_int("max_steps", max_steps, 1)
    with torch.no_grad():
        s = TorchSystem(net, x, y, dtype, device)
        L = net.depth
        if schedule == "wavefront":
            if eta != 1.0:
                raise DyadsimError(
                    f"the wavefront schedule needs eta = 1 (got {eta}): only then is a layer "
                    "final after one update once its inputs are final")
            return _wavefront(s, 2 * L if steps is None else min(steps, 2 * L), record, state)
        if tol is None:
            tol = _default_tol(s.np_dtype)
        fixed = steps is not None or eta == 1.0
        n_steps = steps if steps is not None else (2 * L if eta == 1.0 else max_steps)
        return _parallel(s, eta, n_steps, fixed, tol, record, progress, state)


# --------------------------------------------------------------------------- helpers
def _md(P, Q, state):
    """(m, d) from the stored pair."""
    if state == "md":
        return P, Q
    return 0.5 * (P + Q), P - Q


def _xz(P, Q, state):
    """(x, z) from the stored pair."""
    if state == "xz":
        return P, Q
    h = 0.5 * Q
    return P + h, P - h


def _residual(s, m, d, dm, dd) -> float:
    """The numpy relaxation's blockwise residual (largest update of a layer relative to the
    layer's largest value, for m and d; dying layers measured against 1e-6 of the whole
    state), with one device-to-host transfer."""
    rows = []
    for v in s.nodes:
        rows.append(torch.stack([dm[v].abs().amax(), dd[v].abs().amax(),
                                 m[v].abs().amax(), d[v].abs().amax()]))
    a = to_numpy(torch.stack(rows)).astype(np.float64)
    tiny = np.finfo(s.np_dtype).tiny
    m_floor = 1e-6 * float(a[:, 2].max())
    d_floor = 1e-6 * float(a[:, 3].max())
    worst = 0.0
    for um, ud, mm, dd_ in a:
        rm = um / (max(mm, m_floor) + tiny) if um else 0.0
        rd = ud / (max(dd_, d_floor) + tiny) if ud else 0.0
        worst = max(worst, rm, rd)
    return float(worst)


def _result(s, P, Q, state, steps, eta, schedule, converged, residual, hist, grads):
    X, Z = _xz(P, Q, state)
    Xn, Zn = to_numpy(X), to_numpy(Z)
    hx = hz = None
    if hist is not None:
        hx = np.stack([h[0] for h in hist])
        hz = np.stack([h[1] for h in hist])
    if s.single:
        Xn, Zn = Xn[0], Zn[0]
        if hx is not None:
            hx, hz = hx[:, 0], hz[:, 0]
    res = RelaxResult(grads, steps, Xn, Zn, eta, schedule, converged, residual, s.net.depth, hx, hz)
    res.info.update({"backend": "torch", "device": str(s.device), "state": state})
    return res


def _snapshot(P, Q, state):
    X, Z = _xz(P, Q, state)
    return to_numpy(X).copy(), to_numpy(Z).copy()


# --------------------------------------------------------------------------- parallel
def _sweep(s, Pv, Qv, eta, state):
    """One Euler step of every neuron, in place; returns the scaled updates (dm, dd)."""
    m, d = {}, {}
    for v in s.nodes:
        m[v], d[v] = _md(Pv[v], Qv[v], state)
    Nm, Nd, _ = s.drives(m, d)
    dm, dd = {}, {}
    for v in s.nodes:
        dm[v] = Nm[v].sub_(m[v]).mul_(eta)
        dd[v] = Nd[v].sub_(d[v]).mul_(eta)
    for v in s.nodes:
        if state == "xz":
            h = 0.5 * dd[v]
            Pv[v].add_(dm[v] + h)
            Qv[v].add_(dm[v] - h)
        else:
            Pv[v].add_(dm[v])
            Qv[v].add_(dd[v])
    return dm, dd


def parallel_core(s, eta, n_steps, state):
    """``n_steps`` parallel Euler steps from zero: the stored pair (P, Q)."""
    P, Q = s.zeros(), s.zeros()
    Pv, Qv = s.split(P), s.split(Q)
    for _ in range(n_steps):
        _sweep(s, Pv, Qv, eta, state)
    return P, Q


def _parallel(s, eta, n_steps, fixed, tol, record, progress, state):
    P, Q = s.zeros(), s.zeros()
    Pv, Qv = s.split(P), s.split(Q)
    hist = [_snapshot(P, Q, state)] if record else None
    residual = np.inf
    converged = stalled = False
    best, best_k = np.inf, 0
    stall_window = max(50, int(np.ceil(10.0 / eta)))
    stall_floor = float(np.sqrt(np.finfo(s.np_dtype).eps))
    k = 0
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=n_steps if fixed else None, desc="relax[torch]", unit="step", leave=False)
    try:
        for k in range(1, n_steps + 1):
            dm, dd = _sweep(s, Pv, Qv, eta, state)
            if record:
                hist.append(_snapshot(P, Q, state))
            if bar is not None:
                bar.update(1)
            if fixed and k == n_steps:
                m2, d2 = _md(P, Q, state)
                residual = _residual(s, s.split(m2), s.split(d2), dm, dd)
            if not fixed:
                m2, d2 = _md(P, Q, state)
                if not bool(torch.isfinite(m2).all() & torch.isfinite(d2).all()):
                    raise ConvergenceError(f"Euler relaxation produced NaN/inf at step {k} (eta={eta})")
                residual = _residual(s, s.split(m2), s.split(d2), dm, dd)
                if residual <= tol:
                    converged = True
                    break
                if residual < best:
                    best, best_k = 0.5 * residual, k
                elif k - best_k > stall_window and residual <= stall_floor:
                    converged = stalled = True
                    break
    finally:
        if bar is not None:
            bar.close()
    if fixed:
        converged = eta == 1.0 and k >= 2 * s.net.depth
    elif not converged:
        raise ConvergenceError(
            f"Euler relaxation with eta={eta} did not reach tol={tol:g} in {n_steps} steps "
            f"(last relative update {residual:.3g}); raise max_steps or tol")
    steps = k if n_steps else 0
    m, d = _md(P, Q, state)
    grads = s.readout_md(s.split(m), s.split(d), f"euler[parallel, eta={eta:g}, steps={steps}]")
    res = _result(s, P, Q, state, steps, eta, "parallel", converged, residual, hist, grads)
    res.stalled = stalled
    return res


# --------------------------------------------------------------------------- wavefront
def wavefront_core(s, n_steps, state, record=False):
    """The wavefront schedule's state after ``n_steps`` (<= 2L) steps.

    Returns ``(P, Q, ms, sd, hist)``: the stored pair, per-layer m and sigma'(u) d of the
    layers updated so far, and the recorded states (``None`` without ``record``)."""
    net = s.net
    L = net.depth
    if n_steps >= 2 * L and not record:  # every layer is written before it is read
        P = torch.empty((s.B, s.n), dtype=s.dtype, device=s.device)
        Q = torch.empty_like(P)
    else:
        P, Q = s.zeros(), s.zeros()
    Pv, Qv = s.split(P), s.split(Q)
    ms, sd, val, uu = {}, {}, {}, {}
    fwd = {k: [v for v in s.nodes if net.block(v).depth == k] for k in range(1, L + 1)}
    bwd = {k: [v for v in reversed(s.nodes) if L + 1 + net.block(v).rdepth == k]
           for k in range(L + 1, 2 * L + 1)}
    hist = [_snapshot(P, Q, state)] if record else None
    for k in range(1, n_steps + 1):
        for v in fwd.get(k, ()):
            val[v], uu[v] = s.activate(v, ms)
            # the first update from m = d = 0 is exact: m = sigma(u), d = 0 (x = z = m)
            Pv[v].copy_(val[v])
            if state == "xz":
                Qv[v].copy_(val[v])
            ms[v] = val[v]
        for v in bwd.get(k, ()):
            # d_v is still exactly 0 here, so the update is dd = W^T s (+ dC/da_L)
            dd = s.backsum(v, sd)
            if v == net.output:
                g = s.loss_grad(ms[v], s.Y)
                dd = g if dd is None else dd.add_(g)
            if state == "xz":
                dd.mul_(0.5)
                Pv[v].add_(dd)
                Qv[v].sub_(dd)
                d_v = Pv[v] - Qv[v]
                ms[v] = (Pv[v] + Qv[v]).mul_(0.5)
            else:
                Qv[v].copy_(dd)
                d_v = dd
            sd[v] = s.slope_times(v, d_v, val[v], uu[v])
        if record:
            hist.append(_snapshot(P, Q, state))
    return P, Q, ms, sd, hist


def _wavefront(s, n_steps, record, state):
    """eta = 1: layer v's forward part is updated at step depth(v), its error part at step
    L + 1 + rdepth(v), each from the previous state (see the numpy schedule)."""
    L = s.net.depth
    P, Q, ms, sd, hist = wavefront_core(s, n_steps, state, record)
    label = f"euler[wavefront, eta=1, steps={n_steps}]"
    if n_steps < 2 * L:
        m, d = _md(P, Q, state)
        grads = s.readout_md(s.split(m), s.split(d), label)
        return _result(s, P, Q, state, n_steps, 1.0, "wavefront", False, np.inf, hist, grads)
    grads = s.readout(ms, sd, label)
    return _result(s, P, Q, state, n_steps, 1.0, "wavefront", True, 0.0, hist, grads)
