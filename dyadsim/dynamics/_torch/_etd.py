"""The continuous-time saddle flow on a torch device: an adaptive exponential integrator.

In the (m, d) coordinates (and equally in (x, z)) the flow is ``u' = -u + N(u)`` with
``N = (sigma(W m + beta), W^T (sigma'(W m + beta) d) + g)``: its linear part is exactly
``-I``, so exponential time differencing integrates it exactly and only N is approximated.
The scheme is Cox & Matthews' ETD3RK (third order, nodes 0, 1/2, 1) with an embedded
second-order ETD solution from its first two stages (error estimate, step-size control).
Its weights are built from the scalar phi functions of ``z = -h``

    phi_1(z) = (e^z - 1)/z,  phi_{k+1}(z) = (phi_k(z) - 1/k!)/z,

and every stage reproduces a fixed point exactly (N(u*) = u* gives u_{n+1} = u*), so the
steady state -- and the gradients read out of it -- does not depend on the step sizes; for
large steps the scheme tends to a fixed-point iteration of N, which on a feedforward net
converges in finitely many steps.  The quadratic that interpolates N through the three
stages gives the dense output (exact integration of ``u' = -u + N(t)``) used for the
settling time.
"""

from __future__ import annotations

import math

import numpy as np

from ...errors import ConvergenceError, DyadsimError
from ..._validate import check_real
from .._backend import TORCH_ODE_METHODS
from .._ode import ContinuousResult
from ._system import TorchSystem, to_numpy, torch

__all__ = ["relax_continuous", "TORCH_ODE_METHODS", "phi"]

_STATES = ("md", "xz")



def phi(z: float, kmax: int = 3) -> list:
    """``[phi_0(z), ..., phi_kmax(z)]`` in float64 (Taylor series for |z| < 1).

    Parameters
    ----------
    z : float
    kmax : int

    Returns
    -------
    list of float
    """
    out = [math.exp(z)]
    if abs(z) < 1.0:
        for k in range(1, kmax + 1):
            # sum_j z^j / (j + k)!
            term = 1.0 / math.factorial(k)
            total = term
            for j in range(1, 30):
                term *= z / (j + k)
                total += term
                if abs(term) < 1e-18 * abs(total):
                    break
            out.append(total)
        return out
    out.append(math.expm1(z) / z)
    for k in range(1, kmax):
        out.append((out[k] - 1.0 / math.factorial(k)) / z)
    return out


class _Flow:
    """N(u) on flat (B, n) state pairs in the chosen coordinates, counting evaluations."""

    def __init__(self, s, state):
        self.s = s
        self.state = state
        self.nfev = 0

    def md(self, P, Q):
        if self.state == "md":
            return P, Q
        return 0.5 * (P + Q), P - Q

    def N(self, P, Q):
        """(N_P, N_Q, s) with s = sigma'(u) d per layer."""
        s = self.s
        self.nfev += 1
        m, d = self.md(P, Q)
        Nm, Nd, sd = s.drives(s.split(m), s.split(d))
        NP = torch.cat([Nm[v] for v in s.nodes], dim=1)
        NQ = torch.cat([Nd[v] for v in s.nodes], dim=1)
        if self.state == "xz":
            h = 0.5 * NQ
            NP, NQ = NP + h, NP - h
        return NP, NQ, sd


def _lin(terms):
    """sum of coef * tensor over (coef, tensor) pairs (zero coefficients skipped)."""
    out = None
    for c, t in terms:
        if c == 0.0:
            continue
        out = t * c if out is None else out.add_(t, alpha=c)
    return torch.zeros_like(terms[0][1]) if out is None else out


def _stages(flow, P, Q, h, N1):
    """The three ETD3 stages from (P, Q) with step h: N1 given, returns N2, N3."""
    p_half = phi(-0.5 * h, 1)
    p_full = phi(-h, 1)
    a21 = 0.5 * h * p_half[1]
    aP = _lin([(p_half[0], P), (a21, N1[0])])
    aQ = _lin([(p_half[0], Q), (a21, N1[1])])
    N2 = flow.N(aP, aQ)
    c = h * p_full[1]
    bP = _lin([(p_full[0], P), (2 * c, N2[0]), (-c, N1[0])])
    bQ = _lin([(p_full[0], Q), (2 * c, N2[1]), (-c, N1[1])])
    N3 = flow.N(bP, bQ)
    return N2, N3


def _dense(P, Q, N1, N2, N3, h, tau):
    """u(t_n + tau), 0 <= tau <= h, from the quadratic through the stages (tau = h gives
    the ETD3 step)."""
    e, p1, p2, p3 = phi(-tau, 3)
    # N(s) = N1 + s A + s^2 C through N(h/2) = N2, N(h) = N3
    cA = tau * tau * p2 / h
    cC = 2.0 * tau ** 3 * p3 / (h * h)
    w1 = tau * p1 - 3 * cA + 2 * cC
    w2 = 4 * cA - 4 * cC
    w3 = -cA + 2 * cC
    outP = _lin([(e, P), (w1, N1[0]), (w2, N2[0]), (w3, N3[0])])
    outQ = _lin([(e, Q), (w1, N1[1]), (w2, N2[1]), (w3, N3[1])])
    return outP, outQ


def _maxabs(*ts):
    return torch.stack([t.abs().amax() for t in ts])


def _layer_max(s, *flat):
    """(layers, len(flat)) float64 array of each layer's max |.| of each (B, n) tensor."""
    rows = [torch.stack([t[:, sl].abs().amax() for t in flat]) for sl in s.slices.values()]
    return to_numpy(torch.stack(rows)).astype(np.float64)


def _steady(lay, sc, tol, eps, tiny, state):
    """(steady?, residual) from per-layer maxima [|dm/dt|, |dd/dt|, |m|, |d|]: every layer's
    flow within tol of the layer's own scale (a layer heading for zero is measured against
    1e-6 of the whole state), above the rounding floor of the stored state (d's own scale in
    md, m's in xz where d = x - z)."""
    scale_m = np.maximum(lay[:, 2], 1e-6 * sc[2]) + tiny
    scale_d = np.maximum(lay[:, 3], 1e-6 * sc[3]) + tiny
    floor_d = 64 * eps * (scale_d if state == "md" else np.maximum(scale_m, lay[:, 3]))
    ok = np.all(lay[:, 0] <= (tol + 64 * eps) * scale_m) and np.all(lay[:, 1] <= tol * scale_d + floor_d)
    with np.errstate(over="ignore"):  # the zero state at t = 0
        residual = float(max(np.max(lay[:, 0] / scale_m), np.max(lay[:, 1] / scale_d)))
    return bool(ok), residual


def relax_continuous(net, x, y, *, method="ETD3", rtol=3e-2, atol=1e-14, tol=1e-11,
                     settle_tol=1e-6, t_max=None, jac="auto", dtype=np.float64, record=False,
                     max_record_bytes=256 * 2**20, progress=False, state="md", device=None,
                     h0=None, h_min=1e-3):
    """:func:`dyadsim.relax_continuous` on a torch device with the exponential solver.

    Parameters
    ----------
    net, x, y : Network and its batch.
    method : ``"ETD3"`` (the only one: ETD3RK with an embedded ETD2 error estimate).
    rtol : float
        Local error of a step relative to that step's own increment, for m and d apart
        (the transient is resolved relative to itself while it decays, so the settling
        time stays accurate; the steady state itself does not depend on it).  The default
        3e-2 put ``t_settle`` within 0.03 tau (0.1 %) of the closed form on a linear network;
        1e-4 within 3e-6 tau.
    atol : float
        Absolute floor of that error scale (beside a rounding floor of 64 eps).
    tol : float
        Steady state: in every layer max|dm/dt| <= tol max|m_v| and max|dd/dt| <= tol max|d_v|
        (a layer heading for zero measured against 1e-6 of the whole state), above the
        rounding floor of the stored state.
    settle_tol : float
        ``t_settle``: from then on m and d stay within settle_tol (relative, max-norm) of the
        final state; found on the dense output (the quadratic through the step's stages).
    t_max : float or None
        Give up (ConvergenceError) at this time; default ``20*(2L) + 200`` tau.
    jac : ``"auto"`` or ``False`` (no Jacobian is used).
    dtype : float64 or float32.
    record : keep the state at every accepted step (``t``, ``x_t``, ``z_t``).
    max_record_bytes : int
        Memory for the recorded trajectory (thinned beyond it) and for the states kept on
        the device to locate the settling time; when they do not fit, the accepted steps are
        replayed from t = 0 to find it (``info["nfev_settle"]`` counts those evaluations).
    progress : a tqdm progress bar.
    state : ``"md"`` (default: m and d stored) or ``"xz"`` (the physical x, z pair).
    device : torch device (``None``: the CPU).
    h0 : first step (default rtol**(1/3)).
    h_min : float
        Steps this short are accepted even above rtol (relu kinks, where the error is first
        order in h); counted in ``info["short_steps"]``.

    Returns
    -------
    ContinuousResult
        numpy arrays; ``info`` adds backend, device, state, rejected_steps, short_steps,
        nfev_settle.
    """
    if method not in TORCH_ODE_METHODS:
        raise DyadsimError(
            f"the torch backend integrates with the exponential solver only: method must be "
            f"one of {', '.join(TORCH_ODE_METHODS)}, got {method!r} (the scipy solvers run "
            "with backend='numpy')")
    if jac not in ("auto", False):
        raise DyadsimError("jac: the exponential solver needs no Jacobian (use jac='auto')")
    if state not in _STATES:
        raise DyadsimError(f"unknown state {state!r}; valid states: {', '.join(_STATES)}")
    rtol = check_real("rtol", rtol, low=0, low_open=True)
    atol = check_real("atol", atol, low=0)
    tol = check_real("tol", tol, low=0, low_open=True)
    settle_tol = check_real("settle_tol", settle_tol, low=0, low_open=True)
    L = net.depth
    t_max = check_real("t_max", 20.0 * 2 * L + 200.0 if t_max is None else t_max, low=0, low_open=True)
    h = check_real("h0", rtol ** (1.0 / 3.0) if h0 is None else h0, low=0, low_open=True)
    h_min = check_real("h_min", h_min, low=0)
    with torch.no_grad():
        s = TorchSystem(net, x, y, dtype, device)
        return _solve(s, method, rtol, atol, tol, settle_tol, t_max, record, max_record_bytes,
                      progress, state, h, h_min)


def _solve(s, method, rtol, atol, tol, settle_tol, t_max, record, max_record_bytes, progress,
           state, h, h_min):
    flow = _Flow(s, state)
    eps = float(np.finfo(s.np_dtype).eps)
    tiny = float(np.finfo(s.np_dtype).tiny)
    P, Q = s.zeros(), s.zeros()
    t = 0.0
    hs = []  # accepted steps
    kept = []  # (k, t_k, P_k, Q_k) for the settling time, newest last, within the budget
    state_bytes = 2 * P.element_size() * P.numel()
    dropped = False
    traj_t, traj_x, traj_z, stride = [], [], [], 1

    def snapshot():
        Pm, Qm = flow.md(P, Q)
        hq = 0.5 * Qm
        return to_numpy(Pm + hq).copy(), to_numpy(Pm - hq).copy()

    if record:
        xs0, zs0 = snapshot()
        traj_t.append(0.0)
        traj_x.append(xs0)
        traj_z.append(zs0)
    N1 = flow.N(P, Q)
    n_steps = rejected = forced = 0
    fac_max = 5.0
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=None, desc=f"ode[{method}, torch]", unit="step", leave=False)
    try:
        while True:
            # steady state?  the flow f = N - u at the current state, in (m, d) terms,
            # layer by layer (an early layer's d can sit orders of magnitude below the
            # output's)
            m, d = flow.md(P, Q)
            fm, fd = flow.md(N1[0] - P, N1[1] - Q)
            lay = _layer_max(s, fm, fd, m, d)
            if not np.all(np.isfinite(lay)):
                raise ConvergenceError(f"ODE relaxation produced NaN/inf at t={t:.4g}")
            sc = lay.max(axis=0)
            done, residual = _steady(lay, sc, tol, eps, tiny, state)
            if done:
                break
            if t >= t_max * (1 - 1e-12):
                raise ConvergenceError(
                    f"the flow did not reach steady state (tol={tol:g}) by t_max={t_max:g} tau "
                    f"(relative residual {residual:.3g})")
            # one ETD3(2) step, retried with a smaller h until its error estimate passes
            while True:
                h = min(h, t_max - t)
                N2, N3 = _stages(flow, P, Q, h, N1)
                p = phi(-h, 3)
                w1 = h * (p[1] - 3 * p[2] + 4 * p[3])
                w2 = h * (4 * p[2] - 8 * p[3])
                w3 = h * (4 * p[3] - p[2])
                e1, e2, e3 = h * (4 * p[3] - p[2]), h * (2 * p[2] - 8 * p[3]), w3
                newP = _lin([(p[0], P), (w1, N1[0]), (w2, N2[0]), (w3, N3[0])])
                newQ = _lin([(p[0], Q), (w1, N1[1]), (w2, N2[1]), (w3, N3[1])])
                EP = _lin([(e1, N1[0]), (e2, N2[0]), (e3, N3[0])])
                EQ = _lin([(e1, N1[1]), (e2, N2[1]), (e3, N3[1])])
                Em, Ed = flow.md(EP, EQ)
                m1, d1 = flow.md(newP, newQ)
                a = to_numpy(_maxabs(Em, Ed, m1, d1, m1 - m, d1 - d)).astype(np.float64)
                if not np.all(np.isfinite(a)):
                    err = np.inf
                else:
                    # relative to the step's own increment (m and d apart), above a
                    # rounding floor: the transient is resolved to rtol while it decays
                    fl_m = atol + 64 * eps * max(a[2], sc[2])
                    fl_d = atol + 64 * eps * (max(a[3], sc[3]) if state == "md" else max(a[2], sc[2]))
                    err = max(a[0] / (fl_m + rtol * a[4]), a[1] / (fl_d + rtol * a[5]))
                if err <= 1.0:
                    break
                if h <= h_min and np.isfinite(err):
                    # a relu kink inside the step: its error is first order in h and
                    # does not shrink like h^3; take the short step as it is
                    forced += 1
                    break
                rejected += 1
                fac_max = 1.0
                h *= max(0.2, 0.9 * err ** (-1.0 / 3.0)) if np.isfinite(err) else 0.2
                if h < 1e-12 * max(t, 1.0):
                    raise ConvergenceError(f"ODE step size underflow at t={t:.4g} tau")
            # accept
            if not dropped or kept:
                kept.append((n_steps, t, P, Q))
                while len(kept) * state_bytes > max_record_bytes and kept:
                    kept.pop(0)
                    dropped = True
            hs.append(h)
            t += h
            n_steps += 1
            P, Q = newP, newQ
            N1 = flow.N(P, Q)
            if bar is not None:
                bar.update(1)
            if record and n_steps % stride == 0:
                xs_, zs_ = snapshot()
                traj_t.append(t)
                traj_x.append(xs_)
                traj_z.append(zs_)
                if len(traj_x) * 2 * xs_.nbytes > max_record_bytes:
                    traj_t, traj_x, traj_z = traj_t[::2], traj_x[::2], traj_z[::2]
                    stride *= 2
            fac = 0.9 * err ** (-1.0 / 3.0) if err > 0 else fac_max
            h = max(h * min(fac_max, max(0.2, fac)), h_min)
            fac_max = 5.0
    finally:
        if bar is not None:
            bar.close()
    nfev_solve = flow.nfev
    m_inf, d_inf = flow.md(P, Q)
    # sigma'(u) d at the final state, formed by its last flow evaluation
    grads = s.readout(s.split(m_inf), N1[2], f"ode[{method}]")
    t_settle = _settle(flow, P, Q, hs, kept, dropped, settle_tol, t, m_inf, d_inf)
    if record and traj_t[-1] != t:
        xs_, zs_ = snapshot()
        traj_t.append(t)
        traj_x.append(xs_)
        traj_z.append(zs_)
    Pm, Qm = flow.md(P, Q)
    X, Z = to_numpy(Pm + 0.5 * Qm), to_numpy(Pm - 0.5 * Qm)
    t_arr = x_t = z_t = None
    if record:
        t_arr = np.array(traj_t)
        x_t, z_t = np.stack(traj_x), np.stack(traj_z)
        if s.single:
            x_t, z_t = x_t[:, 0], z_t[:, 0]
    if s.single:
        X, Z = X[0], Z[0]
    res = ContinuousResult(grads, X, Z, float(t), float(t_settle), settle_tol, method,
                           nfev_solve, 0, n_steps, float(residual), t_arr, x_t, z_t)
    res.info.update({"backend": "torch", "device": str(s.device), "state": state,
                     "rejected_steps": rejected, "short_steps": forced, "nfev_settle": flow.nfev - nfev_solve})
    return res


def _settle(flow, P_end, Q_end, hs, kept, dropped, settle_tol, t_end, m_inf, d_inf):
    """The first time after which m and d stay within settle_tol (relative, max-norm) of
    the final state, from the dense output of the step where the error last exceeded it."""
    tiny = float(np.finfo(float).tiny)
    m_sc = max(float(m_inf.abs().amax()), tiny)
    d_sc = max(float(d_inf.abs().amax()), tiny)

    def err(P, Q):
        m, d = flow.md(P, Q)
        a = to_numpy(_maxabs(m - m_inf, d - d_inf)).astype(np.float64)
        return max(a[0] / m_sc, a[1] / d_sc)

    found = None  # (k, t_k, P_k, Q_k) of the last step start whose error exceeds settle_tol
    for k, tk, P, Q in reversed(kept):
        if err(P, Q) > settle_tol:
            found = (k, tk, P, Q)
            break
    if found is None and (dropped or not kept):
        # the crossing lies before the states kept in memory: replay the accepted steps
        # from t = 0 (same step sizes), remembering the last start above settle_tol
        first_kept = kept[0][0] if kept else len(hs)
        P, Q = torch.zeros_like(P_end), torch.zeros_like(Q_end)
        tk = 0.0
        for k in range(first_kept):
            if err(P, Q) > settle_tol:
                found = (k, tk, P, Q)
            N1 = flow.N(P, Q)
            N2, N3 = _stages(flow, P, Q, hs[k], N1)
            P, Q = _dense(P, Q, N1, N2, N3, hs[k], hs[k])
            tk += hs[k]
    if found is None:
        return 0.0 if err(torch.zeros_like(P_end), torch.zeros_like(Q_end)) <= settle_tol else t_end
    k, tk, P, Q = found
    h = hs[k]
    N1 = flow.N(P, Q)
    N2, N3 = _stages(flow, P, Q, h, N1)

    def e_at(tau):
        return err(*_dense(P, Q, N1, N2, N3, h, tau))

    grid = np.linspace(0.0, h, 33)
    vals = [e_at(float(g)) for g in grid]
    last = max(i for i, v in enumerate(vals) if v > settle_tol or i == 0)
    if last == len(grid) - 1:  # rounding: the end of the step still above (should not be)
        return tk + h
    lo, hi = float(grid[last]), float(grid[last + 1])
    for _ in range(40):
        mid = 0.5 * (lo + hi)
        if e_at(mid) > settle_tol:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-9 * max(h, 1.0):
            break
    return tk + hi
