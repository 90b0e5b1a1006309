"""The continuous-time saddle flow integrated with scipy to steady state."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.integrate import DOP853, LSODA, RK23, RK45, BDF, Radau

from .._validate import check_bool, check_int, check_real, checked_call
from ..errors import ConvergenceError, DyadsimError
from ._backend import use_torch
from ._chip import Chip
from ._gradients import Gradients
from ._result import GradientResult
from ._system import System

__all__ = ["relax_continuous", "ContinuousResult", "ODE_METHODS"]

ODE_METHODS = {"RK45": RK45, "RK23": RK23, "DOP853": DOP853, "Radau": Radau, "BDF": BDF, "LSODA": LSODA}
_IMPLICIT = ("Radau", "BDF", "LSODA")


@dataclass(repr=False)
class ContinuousResult(GradientResult):
    """Outcome of :func:`relax_continuous`.

    ``t_settle`` is the time (units of tau) after which m and d stay within
    ``settle_tol`` (relative, max-norm) of the final state; ``t_final`` is when the flow
    fell below ``tol``.  ``t``/``x_t``/``z_t`` hold the trajectory at the solver's steps
    when ``record=True``.
    """

    grads: Gradients
    x: np.ndarray
    z: np.ndarray
    t_final: float
    t_settle: float
    settle_tol: float
    method: str
    nfev: int
    njev: int
    n_steps: int
    residual: float
    t: np.ndarray | None = field(default=None, repr=False)
    x_t: np.ndarray | None = field(default=None, repr=False)
    z_t: np.ndarray | None = field(default=None, repr=False)
    info: dict = field(default_factory=dict)

    @property
    def m(self):
        return 0.5 * (self.x + self.z)

    @property
    def d(self):
        return self.x - self.z



@checked_call
def relax_continuous(net, x, y, *, method="DOP853", rtol=1e-10, atol=1e-13, tol=1e-11,
                     settle_tol=1e-6, t_max=None, jac="auto", dtype=np.float64,
                     record=False, max_record_bytes=256 * 2**20, progress=False,
                     seed=None, backend="numpy", device=None) -> ContinuousResult:
    """Integrate dx/dt = dE/dx, dz/dt = -dE/dz from x = z = 0 until steady state.

    ``net`` may be a :class:`~dyadsim.Chip` (per-neuron tau; Euler-Maruyama when it has noise).

    Parameters
    ----------
    method : a ``scipy.integrate`` solver: RK45, RK23, DOP853 (explicit, default: the flow
        is not stiff, every eigenvalue of its linearisation is -1) or Radau, BDF, LSODA
        (implicit; they get the analytic Jacobian, sparse for Radau/BDF).
    rtol, atol : the solver's local error tolerances.
    tol : steady state is declared when max|dm/dt| <= tol*max|m| and
        max|dd/dt| <= tol*max|d| (plus a rounding floor).
    settle_tol : relative tolerance that defines the settling time ``t_settle``.
    t_max : give up (ConvergenceError) after this time; default ``20*(2L) + 200`` tau.
    jac : ``"auto"`` (supply it to implicit methods), ``True`` or ``False``.
    seed : a :class:`~dyadsim.Chip`'s thermal-noise seed (``None``: the chip's own stream).
    backend, device : ``"numpy"`` (default) or ``"torch"`` on ``device`` (``"cpu"``,
        ``"cuda"``, ...; torch is an optional extra), which integrates with the adaptive
        exponential solver ``"ETD3"`` (the default there) instead of scipy's; ``rtol`` and
        ``atol`` left at their defaults take that solver's own (rtol 3e-2, relative to each
        step's increment).
    """
    rtol = check_real("rtol", rtol, low=0, low_open=True)
    atol = check_real("atol", atol, low=0, low_open=True)
    tol = check_real("tol", tol, low=0, low_open=True)
    settle_tol = check_real("settle_tol", settle_tol, low=0, low_open=True)
    t_max = check_real("t_max", t_max, low=0, low_open=True, allow_none=True)
    max_record_bytes = check_int("max_record_bytes", max_record_bytes, 1)
    record = check_bool("record", record)
    progress = check_bool("progress", progress)
    if not (isinstance(jac, str) and jac == "auto"):
        jac = check_bool("jac", jac)
    torch_backend = use_torch(backend, device)
    if isinstance(net, Chip):  # a sampled chip: per-neuron tau, noise as an SDE
        from ._chip_engine import relax_chip_continuous
        return relax_chip_continuous(net, x, y, method=method, rtol=rtol, atol=atol, tol=tol,
                                     settle_tol=settle_tol, t_max=t_max, dtype=dtype, seed=seed,
                                     backend=backend, device=device)
    if torch_backend:
        from ._torch import relax_continuous as torch_ode
        # the defaults here are the scipy solvers'; left at them, the torch solver's own apply
        kw = {} if method == "DOP853" else {"method": method}
        if (rtol, atol) != (1e-10, 1e-13):
            kw.update(rtol=rtol, atol=atol)
        return torch_ode(net, x, y, tol=tol, settle_tol=settle_tol, t_max=t_max,
                         jac=jac, dtype=dtype, record=record, max_record_bytes=max_record_bytes,
                         progress=progress, device=device, **kw)
    if method not in ODE_METHODS:
        raise DyadsimError(f"unknown ODE method {method!r}; valid methods: {', '.join(ODE_METHODS)}")
    sysm = System(net, x, y, dtype)
    B, n = sysm.B, sysm.n
    L = net.depth
    if t_max is None:
        t_max = 20.0 * 2 * L + 200.0
    use_jac = (method in _IMPLICIT) if jac == "auto" else bool(jac)

    def split(yv):
        s = yv.reshape(B, 2, n)
        return s[:, 0, :], s[:, 1, :]

    def fun(t, yv):
        xs, zs = split(yv)
        dx, dz = sysm.flow_xz(xs, zs)
        return np.stack([dx, dz], axis=1).ravel()

    kw = dict(rtol=rtol, atol=atol)
    if use_jac:
        def jac_fun(t, yv):
            xs, zs = split(yv)
            J = sysm.jacobian(np.ascontiguousarray(xs), np.ascontiguousarray(zs))
            return J.toarray() if method == "LSODA" else J
        kw["jac"] = jac_fun
    y0 = np.zeros(B * 2 * n, dtype=sysm.dtype)
    solver = ODE_METHODS[method](fun, 0.0, y0, t_max, **kw)
    eps = np.finfo(sysm.dtype).eps

    traj_t = [0.0]
    traj_y = [y0.copy()]
    stride = 1  # keep every stride-th step once the memory budget is reached
    count = 0
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=None, desc=f"ode[{method}]", unit="step", leave=False)
    residual = np.inf
    try:
        while True:
            msg = solver.step()
            if solver.status == "failed":
                raise ConvergenceError(f"ODE solver {method} failed at t={solver.t:.4g}: {msg}")
            count += 1
            if bar is not None:
                bar.update(1)
            yv = solver.y
            xs, zs = split(yv)
            m = 0.5 * (xs + zs)
            d = xs - zs
            dm, dd, _ = sysm.flow_md(m, d)
            m_scale = float(np.max(np.abs(m)))
            d_scale = float(np.max(np.abs(d)))
            floor = 64 * eps * m_scale + np.finfo(sysm.dtype).tiny
            residual = max(float(np.max(np.abs(dm))) / (m_scale + floor),
                           float(np.max(np.abs(dd))) / (d_scale + floor))
            if not np.isfinite(residual):
                raise ConvergenceError(f"ODE relaxation produced NaN/inf at t={solver.t:.4g}")
            if count % stride == 0:
                traj_t.append(solver.t)
                traj_y.append(yv.copy())
                if len(traj_y) * yv.nbytes > max_record_bytes:
                    traj_t = traj_t[::2]
                    traj_y = traj_y[::2]
                    stride *= 2
            done = (float(np.max(np.abs(dm))) <= tol * m_scale + floor
                    and float(np.max(np.abs(dd))) <= tol * d_scale + floor)
            if done:
                break
            if solver.status == "finished":
                raise ConvergenceError(
                    f"the flow did not reach steady state (tol={tol:g}) by t_max={t_max:g} tau "
                    f"(relative residual {residual:.3g})"
                )
    finally:
        if bar is not None:
            bar.close()
    if traj_t[-1] != solver.t:
        traj_t.append(solver.t)
        traj_y.append(solver.y.copy())
    t_final = float(solver.t)
    xs, zs = split(solver.y.copy())
    m_inf = 0.5 * (xs + zs)
    d_inf = xs - zs
    # settling time: the first recorded time after which every recorded state is within
    # settle_tol of the final one
    m_sc = max(float(np.max(np.abs(m_inf))), np.finfo(float).tiny)
    d_sc = max(float(np.max(np.abs(d_inf))), np.finfo(float).tiny)
    t_settle = t_final
    for tk, yk in zip(reversed(traj_t), reversed(traj_y)):
        a, b = split(yk)
        em = float(np.max(np.abs(0.5 * (a + b) - m_inf))) / m_sc
        ed = float(np.max(np.abs((a - b) - d_inf))) / d_sc
        if max(em, ed) > settle_tol:
            break
        t_settle = float(tk)
    grads = sysm.readout(m_inf, d_inf, method=f"ode[{method}]")
    X, Z = xs.copy(), zs.copy()
    t_arr = x_t = z_t = None
    if record:
        t_arr = np.array(traj_t)
        stack = np.stack(traj_y).reshape(len(traj_y), B, 2, n)
        x_t, z_t = stack[:, :, 0, :], stack[:, :, 1, :]
        if sysm.single:
            x_t, z_t = x_t[:, 0], z_t[:, 0]
    if sysm.single:
        X, Z = X[0], Z[0]
    njev = getattr(solver, "njev", 0)
    return ContinuousResult(grads, X, Z, t_final, t_settle, settle_tol, method,
                            int(solver.nfev) + count, int(njev), count, residual, t_arr, x_t, z_t)
