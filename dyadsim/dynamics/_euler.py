"""Explicit Euler on the saddle flow: DBP's discrete relaxation (docs/theory.md, section 4)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import ConvergenceError, DyadsimError
from .._util import check_eta
from ._backend import use_torch
from ._chip import Chip
from ._gradients import Gradients
from ._result import GradientResult
from ._system import System

__all__ = ["relax", "RelaxResult", "SCHEDULES"]

SCHEDULES = ("parallel", "wavefront", "async")


@dataclass(repr=False)
class RelaxResult(GradientResult):
    """Outcome of :func:`relax`.

    ``grads`` are read out of the final state; ``steps`` Euler steps were taken;
    ``x``, ``z`` are the final states ((n,) for one sample, (B, n) for a batch);
    ``history_x``/``history_z`` (with ``record=True``) hold the states after every step,
    step 0 (all zeros) first; ``residual`` is the last update's relative size.
    """

    grads: Gradients
    steps: int
    x: np.ndarray
    z: np.ndarray
    eta: float
    schedule: str
    converged: bool
    residual: float
    depth: int
    history_x: np.ndarray | None = field(default=None, repr=False)
    history_z: np.ndarray | None = field(default=None, repr=False)
    stalled: bool = False  # stopped at the rounding floor of dtype before reaching tol
    info: dict = field(default_factory=dict)

    @property
    def m(self) -> np.ndarray:
        """Activations (x + z) / 2."""
        return 0.5 * (self.x + self.z)

    @property
    def d(self) -> np.ndarray:
        """Error signals x - z."""
        return self.x - self.z

    @property
    def history(self):
        """``(history_x, history_z)`` or ``None`` when not recorded."""
        if self.history_x is None:
            return None
        return self.history_x, self.history_z



def _default_tol(dtype) -> float:
    return 1e-12 if np.dtype(dtype) == np.float64 else float(np.finfo(np.float32).eps)


def relax(net, x, y, eta=1.0, steps=None, dtype=np.float64, *, schedule="parallel",
          tol=None, max_steps=100_000, record=False, progress=False, seed=None,
          backend="numpy", device=None) -> RelaxResult:
    """Relax the DBP saddle flow with explicit Euler from x = z = 0 and read out gradients.

    ``net`` may be a :class:`~dyadsim.Chip`: its relaxation then runs on the chip engine.

    Parameters
    ----------
    eta : Euler step in units of tau, in (0, 2).  At ``eta=1`` the readout equals backprop
        exactly at step 2L (L = ``net.depth``), and not before.
    steps : number of steps.  ``None``: exactly 2L at ``eta=1``; otherwise run until the
        relative size of an update falls below ``tol`` (at most ``max_steps``; a
        :class:`~dyadsim.errors.ConvergenceError` otherwise).
    dtype : float64 or float32 (the whole relaxation runs in that precision).
    schedule : ``"parallel"`` updates every neuron at every step (the physical picture);
        ``"wavefront"`` (``eta=1`` only) updates a layer only at the step when its inputs
        became final (forward wave at step depth(v), error wave at step L + 1 + the
        longest path from v to the output): same state at step 2L, backprop's cost.
        Its intermediate states differ from the parallel ones (unreached layers stay 0).
    tol : convergence tolerance on ``max|eta*dm_v| / max|m_v|`` and ``max|eta*dd_v| / max|d_v|``
        for every layer v
        (default 1e-12 in float64, float32's eps in float32); the run also stops, converged and ``stalled``, when the residual, already below sqrt(eps), has not halved for max(50, 10/eta) steps (the rounding floor of the state); only used when ``steps`` is None.
    record : keep the state after every step (``history_x``, ``history_z``).
    progress : show a progress bar (tqdm) for long relaxations.
    seed : the seed of the update order (``schedule="async"``: one neuron at a time, drawn
        at random, no shared step; runs until ``tol``, at most ``max_steps`` sweeps of n
        updates), or a :class:`~dyadsim.Chip`'s thermal-noise seed (``None``: the chip's own
        stream).
    backend, device : ``"numpy"`` (default) or ``"torch"`` on ``device`` (``"cpu"``,
        ``"cuda"``, ...; torch is an optional extra): the same steps, the same result
        (the parallel and wavefront schedules of a Network).
    """
    torch_backend = use_torch(backend, device)
    if isinstance(net, Chip):
        if torch_backend:
            raise DyadsimError("a Chip relaxes on the chip engine (backend='numpy'); the torch "
                               "backend runs Networks")
        from ._chip_engine import relax_chip
        return relax_chip(net, x, y, eta=eta, steps=steps, dtype=dtype, schedule=schedule, tol=tol,
                          max_steps=max_steps, record=record, seed=seed)
    if torch_backend:
        from ._torch import relax as torch_relax
        return torch_relax(net, x, y, eta, steps, dtype, schedule=schedule, tol=tol,
                           max_steps=max_steps, record=record, progress=progress, seed=seed,
                           device=device)
    eta = check_eta(eta)
    if schedule not in SCHEDULES:
        raise DyadsimError(f"unknown schedule {schedule!r}; valid schedules: {', '.join(SCHEDULES)}")
    if schedule == "async":  # no global clock: one random neuron at a time
        from ._async import relax_async

        if steps is not None or record:
            raise DyadsimError("the async schedule runs until tol (steps and record do not apply)")
        return relax_async(net, x, y, eta=eta, dtype=dtype, seed=seed, tol=tol, max_sweeps=max_steps)
    if steps is not None:
        try:
            ok = not isinstance(steps, bool) and int(steps) == steps and steps >= 0
        except (TypeError, ValueError, OverflowError):
            ok = False
        if not ok:
            raise DyadsimError(f"steps must be a non-negative int or None, got {steps!r}")
        steps = int(steps)
    sysm = System(net, x, y, dtype)
    L = net.depth
    if schedule == "wavefront":
        if eta != 1.0:
            raise DyadsimError(
                f"the wavefront schedule needs eta = 1 (got {eta}): only then is a layer "
                "final after one update once its inputs are final"
            )
        return _relax_wavefront(sysm, 2 * L if steps is None else min(steps, 2 * L), record)
    if tol is None:
        tol = _default_tol(sysm.dtype)
    fixed = steps is not None or eta == 1.0
    n_steps = steps if steps is not None else (2 * L if eta == 1.0 else max_steps)
    return _relax_parallel(sysm, eta, n_steps, fixed, tol, record, progress)


def _finish(sysm, x, z, steps, eta, schedule, converged, residual, hx, hz):
    grads = sysm.readout(0.5 * (x + z), x - z, method=f"euler[{schedule}, eta={eta:g}, steps={steps}]")
    if sysm.single:
        x, z = x[0], z[0]
        if hx is not None:
            hx, hz = hx[:, 0], hz[:, 0]
    return RelaxResult(grads, steps, x, z, eta, schedule, converged, residual, sysm.net.depth, hx, hz)


def _blockwise_residual(sysm, x, z, dm, dd) -> float:
    """Largest update of any layer relative to that layer's largest value, for m and d
    separately (d is often orders of magnitude below m).  A layer whose values head for
    exactly zero (a relu layer that dies) is measured against 1e-6 of the largest value of
    the whole state instead, or its relative update would stay near eta forever."""
    tiny = np.finfo(sysm.dtype).tiny
    m_all = 0.5 * (x + z)
    d_all = x - z
    m_floor = 1e-6 * float(np.max(np.abs(m_all))) if m_all.size else 0.0
    d_floor = 1e-6 * float(np.max(np.abs(d_all))) if d_all.size else 0.0
    worst = 0.0
    for sl in sysm.slices.values():
        um = float(np.max(np.abs(dm[:, sl])))
        ud = float(np.max(np.abs(dd[:, sl])))
        rm = um / (max(float(np.max(np.abs(m_all[:, sl]))), m_floor) + tiny) if um else 0.0
        rd = ud / (max(float(np.max(np.abs(d_all[:, sl]))), d_floor) + tiny) if ud else 0.0
        worst = max(worst, rm, rd)
    return worst


def _relax_parallel(sysm, eta, n_steps, fixed, tol, record, progress):
    shape = (sysm.B, sysm.n)
    x = np.zeros(shape, dtype=sysm.dtype)
    z = np.zeros(shape, dtype=sysm.dtype)
    hist = [(x.copy(), z.copy())] if record else None
    residual = np.inf
    converged = stalled = False
    best, best_k = np.inf, 0
    stall_window = max(50, int(np.ceil(10.0 / eta)))
    stall_floor = float(np.sqrt(np.finfo(sysm.dtype).eps))
    k = 0
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=n_steps if fixed else None, desc="relax", unit="step", leave=False)
    try:
        for k in range(1, n_steps + 1):
            m = 0.5 * (x + z)
            d = x - z
            dm, dd, _ = sysm.flow_md(m, d)
            dm *= eta
            dd *= eta
            x += dm + 0.5 * dd
            z += dm - 0.5 * dd
            if record:
                hist.append((x.copy(), z.copy()))
            if bar is not None:
                bar.update(1)
            if fixed and k == n_steps:
                residual = _blockwise_residual(sysm, x, z, dm, dd)
            if not fixed:
                if not (np.all(np.isfinite(x)) and np.all(np.isfinite(z))):
                    raise ConvergenceError(f"Euler relaxation produced NaN/inf at step {k} (eta={eta})")
                # layer by layer: the largest update relative to the layer's largest value,
                # for m and d separately (d is often orders of magnitude below m)
                residual = _blockwise_residual(sysm, x, z, dm, dd)
                if residual <= tol:
                    converged = True
                    break
                # stalled at the rounding floor (float32 with a small eta): the residual has
                # not improved for a while; the state is as good as this precision allows
                # (only near the rounding floor: far from it a residual can grow for a
                # while and still converge -- non-normal transients at eta > 1)
                if residual < best:
                    best, best_k = 0.5 * residual, k
                elif k - best_k > stall_window and residual <= stall_floor:
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
        )
    hx = hz = None
    if record:
        hx = np.stack([h[0] for h in hist])
        hz = np.stack([h[1] for h in hist])
    res = _finish(sysm, x, z, k if n_steps else 0, eta, "parallel", converged, residual, hx, hz)
    res.stalled = stalled
    return res


def _relax_wavefront(sysm, n_steps, record):
    """eta = 1; update block v's forward part at step depth(v) and its error part at step
    L + 1 + rdepth(v), each from the previous state, exactly as the parallel Euler map does.

    The state is x, z (B, n); each layer's m = (x+z)/2, d = x-z and s = sigma'(u)*d are
    read from it into contiguous arrays whenever the layer is updated, so every matrix
    product runs on contiguous data and the readout reuses s as delta."""
    net = sysm.net
    L = net.depth
    B, dt = sysm.B, sysm.dtype
    nodes = net.nodes
    # the state x, z (B, n); per layer, contiguous: m = (x+z)/2, d = x-z, s = sigma'(u)*d,
    # read from the state whenever the layer is updated
    x = np.zeros((B, sysm.n), dtype=dt)
    z = np.zeros((B, sysm.n), dtype=dt)
    xs = {v: x[:, sysm.slices[v]] for v in nodes}
    zs = {v: z[:, sysm.slices[v]] for v in nodes}
    ms, ds_, sd = {}, {}, {}
    slope = {}
    W = {(p, v): sysm.weights.get((p, v)) for (p, v) in net.edges}
    ops = net.edge_ops
    fwd = {k: [v for v in nodes if net.block(v).depth == k] for k in range(1, L + 1)}
    bwd = {k: [v for v in reversed(nodes) if L + 1 + net.block(v).rdepth == k]
           for k in range(L + 1, 2 * L + 1)}

    hist = [(x.copy(), z.copy())] if record else None
    for k in range(1, n_steps + 1):
        for v in fwd.get(k, ()):
            uv = None  # u = W m + beta (beta holds the bias and the input's contribution)
            for p in net.preds[v]:
                if p != net.input:
                    c = ops[(p, v)].forward(W[(p, v)], ms[p])
                    uv = c if uv is None else uv.__iadd__(c)
            beta_v = sysm.beta[:, sysm.slices[v]]
            uv = beta_v if uv is None else uv.__iadd__(beta_v)
            val, slope[v] = sysm.acts[v].value_and_slope(uv)
            # this is the layer's first update and it starts from x = z = m = 0, where the
            # Euler step x += sigma(u) - m is exact: x = z = m = sigma(u), bit for bit
            xs[v][...] = val
            zs[v][...] = val
            ms[v] = val  # the same values as x_v until the layer's error wave (replaced there)
        for v in bwd.get(k, ()):
            # d_v is still exactly 0 here (x_v == z_v), so dd = W^T s (+ dC/da_L)
            dd = None
            for c in net.succs[v]:
                contrib = ops[(v, c)].backward(W[(v, c)], sd[c])
                dd = contrib if dd is None else dd.__iadd__(contrib)
            if v == net.output:
                g = net.loss.grad(ms[v], sysm.Y)
                dd = g if dd is None else dd.__iadd__(g)
            dd *= 0.5
            xs[v] += dd
            zs[v] -= dd
            ds_[v] = xs[v] - zs[v]
            m_v = xs[v] + zs[v]
            m_v *= 0.5
            ms[v] = m_v
            sd[v] = slope[v] * ds_[v]
        if record:
            hist.append((x.copy(), z.copy()))
    hx = hz = None
    if record:
        hx = np.stack([h[0] for h in hist])
        hz = np.stack([h[1] for h in hist])
    done = n_steps >= 2 * L
    if not done:
        return _finish(sysm, x, z, n_steps, 1.0, "wavefront", False, np.inf, hx, hz)
    grads = sysm.readout_blocks(ms, ds_, slope, method=f"euler[wavefront, eta=1, steps={n_steps}]",
                                delta=sd)  # sigma'(u)*d of every layer, already formed
    if sysm.single:
        x, z = x[0], z[0]
        if hx is not None:
            hx, hz = hx[:, 0], hz[:, 0]
    return RelaxResult(grads, n_steps, x, z, 1.0, "wavefront", True, 0.0, L, hx, hz)
