"""The continuous-time saddle flow integrated to steady state (``relax_continuous``).

The default solver (``"ETD"``) is dyadsim's adaptive exponential collocation method
(``_etd.py``); the scipy solvers stay selectable.  Both integrate either state: (m, d), the
exact one, or (x, z), the physical encoding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
from scipy.integrate import BDF, DOP853, LSODA, RK23, RK45, Radau

from .._validate import check_bool, check_choice, check_dtype, check_int, check_real, checked_call
from ..errors import ConvergenceError, DyadsimError
from ._backend import use_torch
from ._chip import Chip
from ._etd import (ETD_METHOD, ExpCollocation, Recorder, SettleTracker, Stopping,
                   integrate_collocation, steady_state)
from ._gradients import Gradients
from ._result import GradientResult
from ._system import System

__all__ = ["ODE_METHODS", "ODE_STATES", "ContinuousResult", "relax_continuous"]

#: Solver name -> integrator: ``"ETD"`` (the default: adaptive exponential collocation,
#: dyadsim's own) and the ``scipy.integrate`` solvers.
ODE_METHODS = {ETD_METHOD: ExpCollocation, "RK45": RK45, "RK23": RK23, "DOP853": DOP853,
               "Radau": Radau, "BDF": BDF, "LSODA": LSODA}
#: ``"md"``: integrate m and d (exact); ``"xz"``: integrate x and z (the physical encoding).
ODE_STATES = ("md", "xz")
_IMPLICIT = ("Radau", "BDF", "LSODA")
_OWN = (ETD_METHOD,)
_BY_LOWER = {k.lower(): k for k in ODE_METHODS}
# (rtol, atol) by solver; the scipy solvers: (1e-10, 1e-13), in float32 (1e-5, 1e-8)
_DEFAULT_TOLS = {ETD_METHOD: (3e-2, 1e-15)}


@dataclass(repr=False)
class ContinuousResult(GradientResult):
    """Outcome of :func:`relax_continuous`.

    Parameters
    ----------
    grads : Gradients
        Read out of the final state.
    x, z : numpy.ndarray
        The final state in the physical encoding, ``(n,)`` for one sample or ``(B, n)``
        (with ``state="md"`` formed as m + d/2, m - d/2 from the exact m and d).
    t_final : float
        When the solver declared steady state (units of tau; the end of the step where the
        test passed, and the last steps are long).
    t_settle : float
        The time after which the state stays within ``settle_tol`` of the steady state
        (relative, max-norm, m and d separately), located on the solver's dense output.
    settle_tol : float
    method : str
        The solver's name (``"ETD"``, ``"DOP853"``, ...).
    nfev, njev : int
        Evaluations of the flow (or of its nonlinear part) and of its Jacobian.
    n_steps : int
        Accepted steps.
    residual : float
        The largest per-layer relative rate ``max|dy_v/dt| / max|y_v|`` at the end.
    t, x_t, z_t : numpy.ndarray or None
        The trajectory (``record=True``): at the accepted steps, for ``"ETD"`` at every
        collocation point of every step; ``m_t``, ``d_t`` give it in (m, d).
    info : dict
        ``solver``, ``state``, ``steps``, ``rejected``, ``forced`` (steps accepted at the
        smallest step size, at kinks of relu), ``nfev``, ``njev``, ``t_settle``,
        ``t_final``, ``residual``, ``settled`` (whether the final state is within
        ``settle_tol`` of the steady state), ``stalled`` (stopped at the rounding floor
        of the dtype), ``rtol``, ``atol``, ``tol``.
    state : str
        ``"md"`` or ``"xz"``.
    md_final, md_t : tuple or None
        The integrated ``(m, d)`` at the end and along the trajectory when they were the
        state (``m`` and ``d`` return them; otherwise they are formed from x and z).
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
    state: str = "xz"
    md_final: tuple | None = field(default=None, repr=False)
    md_t: tuple | None = field(default=None, repr=False)

    @property
    def m(self):  # activations: the integrated m (state="md") or (x + z)/2
        return self.md_final[0] if self.md_final is not None else 0.5 * (self.x + self.z)

    @property
    def d(self):  # error signals: the integrated d (state="md") or x - z
        return self.md_final[1] if self.md_final is not None else self.x - self.z

    @property
    def m_t(self):  # m along the recorded trajectory (or None)
        if self.md_t is not None:
            return self.md_t[0]
        return None if self.x_t is None else 0.5 * (self.x_t + self.z_t)

    @property
    def d_t(self):  # d along the recorded trajectory (or None)
        if self.md_t is not None:
            return self.md_t[1]
        return None if self.x_t is None else self.x_t - self.z_t


def _default_tol(dtype) -> float:
    return 1e-12 if np.dtype(dtype) == np.float64 else 1e-5


def _positive(name, value, default, *, allow_none=False):
    if value is None:
        return default if not allow_none else None
    return check_real(name, value, low=0.0, low_open=True)


@checked_call
def relax_continuous(net, x, y, *, method=ETD_METHOD, state="md", rtol=None, atol=None,
                     tol=None, settle_tol=1e-6, t_max=None, jac="auto", dtype=np.float64,
                     record=False, max_record_bytes=256 * 2**20, progress=False,
                     seed=None, backend="numpy", device=None) -> ContinuousResult:
    """Integrate the saddle flow from x = z = 0 (m = d = 0) until steady state.

    Parameters
    ----------
    net : Network or Chip
        A :class:`~dyadsim.Chip` (per-neuron tau; Euler-Maruyama when it has noise) is
        integrated by the chip engine, with a scipy solver (``method``, default DOP853).
    x, y : array_like
        Input ``(n_in,)`` or ``(B, n_in)`` and target ``(n_out,)`` or ``(B, n_out)``.
    method : str
        ``"ETD"`` (default): adaptive exponential collocation.  The flow's linear part is
        exactly -I; each step (a panel of up to 20 tau) takes N = dy/dt + y at the 9
        Chebyshev-Lobatto points of the panel, replaces it by its interpolating polynomial
        and integrates the linear part exactly against it (an implicit exponential
        Runge-Kutta method).  Its stage equations are triangular for a feedforward network
        (W is nilpotent), so one forward and one backward sweep over the layers with 8 B
        rows solve them exactly: a panel costs 8 evaluations of the flow, done as matrix
        products 8 times taller.  The step size is controlled by the difference to the same
        formula on every other point (an embedded rule of lower order).
        Or a ``scipy.integrate`` solver: ``RK45``, ``RK23``, ``DOP853`` (explicit) or
        ``Radau``, ``BDF``, ``LSODA`` (implicit, with the analytic Jacobian of the chosen
        state, sparse for Radau/BDF).  Case-insensitive.
    state : ``"md"`` or ``"xz"``
        ``"md"`` (default) integrates m and d as separate variables, so d is exact however
        small it is next to m; ``"xz"`` integrates x and z (the physical encoding: d = x - z
        is a difference of two numbers of the size of m and loses ``eps max|m|`` of
        absolute accuracy; with ``"ETD"`` the state kept between steps is x and z).
    rtol, atol : float, optional
        Local error tolerances.  For ``"ETD"`` (default 3e-2 and 1e-15) the error estimate
        at the end of a step is measured against
        ``rtol * max(max|dy/dt|, settle_tol * max|y|) + atol`` for m and d separately:
        relative to the rate the state still changes at, so the transient (and so
        ``t_settle``) stays accurate relative to its own size as it decays.  For the scipy
        solvers they are the solver's own (default 1e-10 and 1e-13; 1e-5 and 1e-8 in
        float32).  They do not decide the accuracy of the gradients: ``tol`` does.
    tol : float, optional
        Steady state is declared when, in every layer v, ``max|dm_v/dt| <= tol max|m_v|``
        and ``max|dd_v/dt| <= tol max|d_v|`` (plus a rounding allowance of 64 eps; a layer
        heading for 0 is measured against 1e-9 of the largest value instead).  The error of
        the state is then about tol times the gain of the network's linearisation, so the
        gradients are as accurate, per tensor.  Default 1e-12 (float64), 1e-5 (float32).
    settle_tol : float
        Relative tolerance that defines the settling time ``t_settle`` (default 1e-6):
        the time after which ``max|m - m*| <= settle_tol max|m*|`` and
        ``max|d - d*| <= settle_tol max|d*|`` for good, where (m*, d*) is the steady state
        (the forward pass and its adjoint, computed by one sweep in float64: the state the
        flow converges to).  It is located on the solver's dense output.  If the final
        state itself is farther than that from (m*, d*) (the rounding floor of float32 or
        of ``state="xz"`` on deep nets), ``info["settled"]`` is False and
        ``t_settle = t_final``.
    t_max : float, optional
        Give up (ConvergenceError) after this time; default ``20*(2L) + 200`` tau.
    jac : ``"auto"``, True or False
        Give the analytic Jacobian to the scipy solver (``"auto"``: implicit ones only).
    dtype : float64 or float32
    record : bool
        Keep the trajectory at the accepted steps (``t``, ``x_t``, ``z_t``, ``m_t``, ``d_t``).
    max_record_bytes : int
        Memory budget of the recorded trajectory (beyond it, every second point is dropped).
    progress : bool
        Show a progress bar (tqdm) of the solver's steps.
    seed : int, optional
        A :class:`~dyadsim.Chip`'s thermal-noise seed (``None``: the chip's own stream).
    backend, device : str, optional
        ``"numpy"`` (default) or ``"torch"`` on ``device`` (``"cpu"``, ``"cuda"``, ...;
        torch is an optional extra), which integrates with its own adaptive exponential
        solver ``"ETD3"``; tolerances left at None take that solver's defaults.

    Returns
    -------
    ContinuousResult

    Raises
    ------
    DyadsimError
        A bad argument (NaN or non-positive tolerances, unknown method, state or option).
    ConvergenceError
        No steady state by ``t_max``, or the flow overflowed (NaN/inf, with the time).
    """
    state = check_choice("state", state, ODE_STATES, normalize=str.lower)
    torch_backend = use_torch(backend, device)
    if torch_backend or isinstance(net, Chip):
        return _other_engine(net, x, y, torch_backend, method=method, state=state, rtol=rtol,
                             atol=atol, tol=tol, settle_tol=settle_tol, t_max=t_max, jac=jac,
                             dtype=dtype, record=record, max_record_bytes=max_record_bytes,
                             progress=progress, seed=seed, backend=backend, device=device)
    if not isinstance(method, str) or method.lower() not in _BY_LOWER:
        raise DyadsimError(
            f"unknown ODE method {method!r}; valid methods: {', '.join(ODE_METHODS)}")
    method = _BY_LOWER[method.lower()]
    dtype = check_dtype(dtype)
    scipy_tols = (1e-10, 1e-13) if np.dtype(dtype) == np.float64 else (1e-5, 1e-8)
    d_rtol, d_atol = _DEFAULT_TOLS.get(method, scipy_tols)
    rtol = _positive("rtol", rtol, d_rtol)
    atol = _positive("atol", atol, d_atol)
    tol = _positive("tol", tol, _default_tol(dtype))
    settle_tol = _positive("settle_tol", settle_tol, None)
    if t_max is not None:
        t_max = check_real("t_max", t_max, low=0.0, low_open=True)
    if not (jac == "auto" or isinstance(jac, (bool, np.bool_))):
        raise DyadsimError(f"jac must be 'auto', True or False, got {jac!r}")
    record = check_bool("record", record)
    progress = check_bool("progress", progress)
    max_record_bytes = check_int("max_record_bytes", max_record_bytes, minimum=1)

    sysm = System(net, x, y, dtype)
    if t_max is None:
        t_max = 20.0 * 2 * net.depth + 200.0
    ref = sysm if sysm.dtype == np.float64 else System(net, x, y, np.float64)
    tracker = SettleTracker(*steady_state(ref), settle_tol)
    stopping = Stopping(list(sysm.slices.values()), tol, state, sysm.dtype,
                        noise=0.0 if method in _OWN else 4.0 * atol)
    recorder = Recorder(record, max_record_bytes)
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=None, desc=f"ode[{method}, {state}]", unit="step", leave=False)
    try:
        with np.errstate(over="ignore", invalid="ignore"):  # overflow: ConvergenceError
            if method == ETD_METHOD:
                out = integrate_collocation(sysm, stopping, tracker, recorder, rtol=rtol,
                                            atol=atol, settle_tol=settle_tol, t_max=t_max,
                                            state=state, bar=bar)
                m_fin, d_fin = out["Y"][0].copy(), out["Y"][1].copy()
                if state == "xz":
                    out["Y"] = out["XZ"]
                nfev, njev = out["nfev"], 0
                rec_state = "md"
            else:
                out = _integrate_scipy(sysm, method, state, rtol, atol, t_max, jac, stopping,
                                       tracker, recorder, bar)
                m_fin, d_fin = (a.astype(sysm.dtype) for a in out["md"])
                out["Y"] = out["Y"].astype(sysm.dtype)
                nfev, njev = out["nfev"], out["njev"]
                rec_state = state
    finally:
        if bar is not None:
            bar.close()
    t_final = float(out["t"])
    settled = tracker.deviation <= settle_tol
    t_settle = float(tracker.t_settle) if settled else t_final
    grads = sysm.readout(m_fin, d_fin, method=f"ode[{method}, {state}]")
    X, Z = m_fin + 0.5 * d_fin, m_fin - 0.5 * d_fin
    if state == "xz":
        X, Z = out["Y"][0].copy(), out["Y"][1].copy()
    t_arr = x_t = z_t = md_t = None
    if record:
        t_arr = np.array(recorder.t)
        traj = np.stack(recorder.y)                    # (T, 2, B, n): (m, d) or (x, z)
        a, b = traj[:, 0], traj[:, 1]
        if rec_state == "md":
            md_t = (a, b)
            x_t, z_t = a + 0.5 * b, a - 0.5 * b
        else:
            x_t, z_t = a, b
        if sysm.single:
            x_t, z_t = x_t[:, 0], z_t[:, 0]
            if md_t is not None:
                md_t = (md_t[0][:, 0], md_t[1][:, 0])
    md_final = (m_fin, d_fin) if state == "md" else None
    if sysm.single:
        X, Z = X[0], Z[0]
        if md_final is not None:
            md_final = (m_fin[0], d_fin[0])
    info = {"solver": method, "state": state, "steps": out["n_steps"],
            "rejected": out["n_rejected"], "forced": out["n_forced"], "nfev": int(nfev),
            "njev": int(njev),
            "t_settle": t_settle, "t_final": t_final, "residual": float(out["residual"]),
            "settled": bool(settled), "stalled": bool(out["stalled"]),
            "rtol": rtol, "atol": atol, "tol": tol}
    return ContinuousResult(grads, X, Z, t_final, t_settle, settle_tol, method, int(nfev),
                            int(njev), int(out["n_steps"]), float(out["residual"]), t_arr,
                            x_t, z_t, info, state, md_final, md_t)


def _other_engine(net, x, y, torch_backend, *, method, state, rtol, atol, tol, settle_tol,
                  t_max, jac, dtype, record, max_record_bytes, progress, seed, backend, device):
    """A :class:`~dyadsim.Chip` (the chip engine) or the torch backend: their own solvers
    and defaults; only what the caller set is passed on."""
    for name, value in (("rtol", rtol), ("atol", atol), ("tol", tol)):
        if value is not None:
            check_real(name, value, low=0.0, low_open=True)
    settle_tol = check_real("settle_tol", settle_tol, low=0.0, low_open=True)
    if t_max is not None:
        t_max = check_real("t_max", t_max, low=0.0, low_open=True)
    record = check_bool("record", record)
    progress = check_bool("progress", progress)
    max_record_bytes = check_int("max_record_bytes", max_record_bytes, minimum=1)
    if not (isinstance(jac, str) and jac == "auto"):
        jac = check_bool("jac", jac)
    kw = {k: v for k, v in (("rtol", rtol), ("atol", atol), ("tol", tol)) if v is not None}
    given = method != ETD_METHOD  # ETD is this engine's own: the others take their default
    if isinstance(net, Chip):  # a sampled chip: per-neuron tau, noise as an SDE
        from ._chip_engine import relax_chip_continuous
        if given:
            kw["method"] = method
        return relax_chip_continuous(net, x, y, settle_tol=settle_tol, t_max=t_max,
                                     dtype=dtype, seed=seed, backend=backend, device=device,
                                     **kw)
    from ._torch import relax_continuous as torch_ode
    if given:
        kw["method"] = method
    return torch_ode(net, x, y, settle_tol=settle_tol, t_max=t_max, jac=jac, dtype=dtype,
                     record=record, max_record_bytes=max_record_bytes, progress=progress,
                     state=state, device=device, **kw)


# ----------------------------------------------------------------------------- scipy
def jacobian_md(sysm, m, d) -> sp.csr_matrix:
    """d(dm/dt, dd/dt)/d(m, d), block-diagonal over samples, variables ordered
    ``[m_0, d_0, m_1, d_1, ...]``::

        [[diag(s1) W - I,                    0            ],
         [W^T diag(s2 * d) W + H_C,   W^T diag(s1) - I     ]]

    with ``s1 = sigma'(u)``, ``s2 = sigma''(u)``, ``H_C`` the loss Hessian in the output block.
    Not available for networks with general nodes (a DyadsimError names one).
    """
    _no_general_nodes(sysm)
    W = sp.csr_matrix(sysm.net.W, dtype=sysm.dtype)
    n = sysm.n
    I = sp.identity(n, format="csr", dtype=sysm.dtype)
    u = sysm.preact(m)
    s1 = sysm.apply(1, u)
    s2 = sysm.apply(2, u) * d
    H = sysm.net.loss.hess(m[:, sysm.out], sysm.Y)
    o = sysm.out
    lo = o.start
    blocks = []
    for b in range(sysm.B):
        D1 = sp.diags(s1[b])
        Hb = sp.coo_matrix(np.asarray(H[b]))
        Hb = sp.csr_matrix((Hb.data, (Hb.row + lo, Hb.col + lo)), shape=(n, n))
        Jmm = D1 @ W - I
        Jdm = W.T @ sp.diags(s2[b]) @ W + Hb
        Jdd = W.T @ D1 - I
        blocks.append(sp.bmat([[Jmm, None], [Jdm, Jdd]], format="csr"))
    return sp.block_diag(blocks, format="csr")


def _no_general_nodes(sysm):
    for v in sysm.general:
        raise DyadsimError(
            f"the analytic Jacobian of the flow (implicit ODE solvers Radau/BDF/LSODA, "
            f"jac=True) does not support general node {v!r} ({sysm.net.node_ops[v].kind}): "
            "use method='ETD' or an explicit solver (e.g. method='DOP853'), or relax")


def _integrate_scipy(sysm, method, state, rtol, atol, t_max, jac, stopping, tracker,
                     recorder, bar):
    """One scipy solver, stepped until ``stopping`` says steady state."""
    B, n = sysm.B, sysm.n
    use_jac = (method in _IMPLICIT) if jac == "auto" else bool(jac)
    if use_jac:
        _no_general_nodes(sysm)

    def split(yv):
        s = yv.reshape(B, 2, n)
        return s[:, 0, :], s[:, 1, :]

    if state == "xz":
        def fun(t, yv):
            xs, zs = split(yv)
            dx, dz = sysm.flow_xz(xs, zs)
            return np.stack([dx, dz], axis=1).ravel()

        def to_md(yv):
            xs, zs = split(yv)
            return 0.5 * (xs + zs), xs - zs

        def jac_fun(t, yv):
            xs, zs = split(yv)
            J = sysm.jacobian(np.ascontiguousarray(xs), np.ascontiguousarray(zs))
            return J.toarray() if method == "LSODA" else J
    else:
        def fun(t, yv):
            ms, ds = split(yv)
            dm, dd, _ = sysm.flow_md(ms, ds)
            return np.stack([dm, dd], axis=1).ravel()

        def to_md(yv):
            ms, ds = split(yv)
            return ms.copy(), ds.copy()

        def jac_fun(t, yv):
            ms, ds = split(yv)
            J = jacobian_md(sysm, np.ascontiguousarray(ms), np.ascontiguousarray(ds))
            return J.toarray() if method == "LSODA" else J

    kw = {"rtol": rtol, "atol": atol}
    if use_jac:
        kw["jac"] = jac_fun
    y0 = np.zeros(B * 2 * n, dtype=sysm.dtype)
    solver = ODE_METHODS[method](fun, 0.0, y0, t_max, **kw)
    eps = float(np.finfo(sysm.dtype).eps)

    def native(yv):
        return yv.reshape(B, 2, n).transpose(1, 0, 2)

    recorder.add(0.0, native(y0), force=True)
    count = 0
    best, best_step = math.inf, 0
    stalled = False
    residual = math.inf
    m, d = to_md(y0)
    dm, dd, _ = sysm.flow_md(m, d)
    residual, ok = stopping.from_states(m, d, dm, dd)
    extra = 1
    while not ok:
        t0 = solver.t
        msg = solver.step()
        if solver.status == "failed":
            raise ConvergenceError(f"ODE solver {method} failed at t={solver.t:.4g} tau: {msg}")
        count += 1
        if bar is not None:
            bar.update(1)
        yv = solver.y
        m, d = to_md(yv)
        dm, dd, _ = sysm.flow_md(m, d)
        extra += 1
        residual, ok = stopping.from_states(m, d, dm, dd)
        if not math.isfinite(residual) and not (np.isfinite(m).all() and np.isfinite(d).all()):
            raise ConvergenceError(
                f"the ODE relaxation produced NaN/inf at t={solver.t:.4g} tau (step {count}); "
                "the flow overflows: are the weights or inputs huge?")
        t1 = solver.t
        interp_fn = None

        def interp(theta, t0=t0, t1=t1):
            nonlocal interp_fn
            if interp_fn is None:
                interp_fn = solver.dense_output()
            return to_md(interp_fn(t0 + theta * (t1 - t0)))

        tracker.step(t0, t1, m, d, interp)
        recorder.add(t1, native(yv))
        if residual < 0.5 * best:
            best, best_step = residual, count
        elif not ok and count - best_step >= 50 and residual <= math.sqrt(eps):
            ok = stalled = True
        if ok:
            break
        if solver.status == "finished":
            raise ConvergenceError(
                f"the flow did not reach steady state (tol={stopping.tol:g}) by t_max={t_max:g} "
                f"tau (largest per-layer relative rate {residual:.3g})")
    recorder.finish(solver.t, native(solver.y))
    return {"md": to_md(solver.y.copy()), "Y": native(solver.y).copy(), "t": solver.t,
            "n_steps": count, "n_rejected": 0, "n_forced": 0, "residual": residual,
            "stalled": stalled, "nfev": int(solver.nfev) + extra,
            "njev": int(getattr(solver, "njev", 0))}
