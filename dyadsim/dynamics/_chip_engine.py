"""The chip dynamics engine: many sampled chips relaxed at once, vectorized over chips and
over the batch (states are per-layer arrays (K chips, B samples, n_v neurons)).

It integrates m and d (the exact representation of the doubled state) with each chip's
perturbations (see :mod:`dyadsim.dynamics._chip` for the model) in one of three ways:

* ``"steady"``: the fixed point itself, solved layer by layer (the flow's Jacobian is
  block-triangular, so the forward wave then the error wave give it exactly, at the cost
  of one forward and one backward pass; the time constants do not matter there).  With
  thermal noise the readout is a snapshot of the noisy steady state: the fixed point,
  then ``noise_steps`` exponential-Euler-Maruyama steps of one nominal tau;
* ``"euler"``: explicit Euler with step ``eta`` (nominal tau units; neuron j takes
  ``eta / tau_j``), Euler-Maruyama with noise;
* ``"continuous"``: the continuous-time flow with per-neuron tau, integrated by a scipy
  solver to steady state (noise-free), or by Euler-Maruyama with step ``dt`` (noisy).

The readout converts m, d and the derivative units' output with each chip's ADC.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from .._validate import check_choice, check_dtype, check_eta, check_int, check_real
from ..errors import ConvergenceError, DyadsimError
from ._backend import use_torch
from ._chip import Chip, architecture_of
from ._gradients import Gradients

__all__ = ["relax_chips", "ChipBatchResult", "CHIP_METHODS", "chip_readout"]

CHIP_METHODS = ("steady", "euler", "continuous")


def check_chips(chips) -> list:
    """A Chip or a non-empty sequence of Chips of one architecture, as a list (a clear
    DyadsimError otherwise)."""
    if isinstance(chips, Chip):
        chips = [chips]
    try:
        chips = list(chips)
    except TypeError:
        raise DyadsimError(f"not a Chip or a sequence of chips: {chips!r}") from None
    if not chips:
        raise DyadsimError("relax_chips needs at least one chip")
    for c in chips:
        if not isinstance(c, Chip):
            raise DyadsimError(f"not a Chip: {c!r} (make one with dyadsim.Chip.sample)")
    arch = architecture_of(chips[0].net)
    for c in chips[1:]:
        if architecture_of(c.net) != arch:
            raise DyadsimError("the chips were sampled for networks of different architectures; "
                               "relax them separately")
    return chips


class ChipStack:
    """K chips of one architecture and one batch, stacked for vectorized evaluation."""

    def __init__(self, chips, x, y, dtype=np.float64):
        chips = check_chips(chips)
        self.chips = chips
        self.net = net = chips[0].net
        self.dtype = dt = check_dtype(dtype)
        X, Y, self.single = net.check_xy(x, y)
        self.X = X.astype(dt, copy=False)
        self.Y = Y.astype(dt, copy=False)
        self.K, self.B = len(chips), X.shape[0]
        self.nodes = net.nodes
        self.acts = net.activations
        vals = [c.values() for c in chips]

        def stack(kind, key, shape):
            return np.stack([v[kind][key] for v in vals]).astype(dt).reshape(shape)

        self.WfT, self.Wb = {}, {}
        for (p, v) in net.edges:
            Wf = stack("forward", (p, v), (self.K, net.sizes[v], net.sizes[p]))
            self.WfT[(p, v)] = np.ascontiguousarray(Wf.transpose(0, 2, 1))
            if p != net.input:
                self.Wb[(p, v)] = stack("backward", (p, v), (self.K, net.sizes[v], net.sizes[p]))
        self.beta, self.ga, self.gd, self.om, self.od, self.tau = {}, {}, {}, {}, {}, {}
        for v in net.nodes:
            shp = (self.K, 1, net.sizes[v])
            b = stack("bias", v, shp)
            beta = np.broadcast_to(b, (self.K, self.B, net.sizes[v])).copy()
            if net.input in net.preds[v]:
                beta += np.matmul(self.X, self.WfT[(net.input, v)])
            self.beta[v] = beta
            self.ga[v] = stack("activation_gain", v, shp)
            self.gd[v] = stack("derivative_gain", v, shp)
            ox, oz = stack("offset_x", v, shp), stack("offset_z", v, shp)
            self.om[v] = 0.5 * (ox + oz)
            self.od[v] = ox - oz
            self.tau[v] = stack("tau", v, shp)
        self.gain = np.array([c.gain for c in chips], dtype=dt).reshape(self.K, 1, 1)
        self.noise = np.array([c.noise for c in chips], dtype=dt).reshape(self.K, 1, 1)
        half = [np.inf if c.adc_bits is None else float(2 ** (c.adc_bits - 1) - 1) for c in chips]
        self.adc_half = np.array(half).reshape(self.K, 1, 1)

    # ------------------------------------------------------------------ sweeps
    def zeros(self) -> dict:
        return {v: np.zeros((self.K, self.B, self.net.sizes[v]), dtype=self.dtype) for v in self.nodes}

    def preact(self, m, v):
        u = self.beta[v].copy()
        for p in self.net.preds[v]:
            if p != self.net.input:
                u += np.matmul(m[p], self.WfT[(p, v)])
        return u

    def backsum(self, s, v):
        r = None
        for c in self.net.succs[v]:
            t = np.matmul(s[c], self.Wb[(v, c)])
            r = t if r is None else r.__iadd__(t)
        return np.zeros((self.K, self.B, self.net.sizes[v]), dtype=self.dtype) if r is None else r

    def cost(self, m_out):
        return self.gain * self.net.loss.grad(m_out, self.Y)

    def fixed_point(self):
        """The steady state (m, d, u), exactly: the forward wave, then the error wave."""
        m, u, slope = {}, {}, {}
        for v in self.nodes:
            u[v] = self.preact(m, v)
            val, sl = self.acts[v].value_and_slope(u[v])
            m[v] = self.ga[v] * val + self.om[v]
            slope[v] = self.gd[v] * sl
        d, s = {}, {}
        for v in reversed(self.nodes):
            r = self.backsum(s, v)
            if v == self.net.output:
                r += self.cost(m[v])
            d[v] = r + self.od[v]
            s[v] = slope[v] * d[v]
        return m, d, u

    def flow(self, m, d):
        """(dm, dd) times tau: ``ga sigma(u) + o_m - m`` and ``W_b^T s + c + o_d - d``."""
        dm, s = {}, {}
        for v in self.nodes:
            u = self.preact(m, v)
            val, sl = self.acts[v].value_and_slope(u)
            dm[v] = self.ga[v] * val + self.om[v] - m[v]
            s[v] = self.gd[v] * sl * d[v]
        dd = {}
        for v in self.nodes:
            r = self.backsum(s, v)
            if v == self.net.output:
                r += self.cost(m[v])
            r += self.od[v]
            r -= d[v]
            dd[v] = r
        return dm, dd

    # ------------------------------------------------------------------ readout
    def adc(self, a):
        """Each chip's converter: round to levels k R / (2**(bits-1) - 1), R = ``max|a|`` of the
        sample's layer (auto-ranging); exact where the chip has no ADC."""
        if np.all(np.isinf(self.adc_half)):
            return a
        R = np.max(np.abs(a), axis=-1, keepdims=True)
        with np.errstate(divide="ignore", invalid="ignore"):
            step = R / self.adc_half
            q = np.where(step > 0, np.round(a / np.where(step > 0, step, 1.0)) * step, 0.0)
        return np.where(np.isinf(self.adc_half), a, q).astype(self.dtype, copy=False)

    def readout(self, m, d, u, method=None):
        """Per-chip gradients from per-layer (K, B, n_v) m, d, u."""
        net = self.net
        mq, delta = {}, {}
        for v in self.nodes:
            slope = self.gd[v] * self.acts[v].df(u[v])
            mq[v] = self.adc(m[v])
            delta[v] = self.adc(slope) * self.adc(d[v]) / self.gain
        stacked = {}
        for key in net.params:
            if key[0] == "b":
                stacked[key] = delta[key[1]].sum(axis=1) / self.B
            else:
                p, v = key[1], key[2]
                a_p = self.X if p == net.input else mq[p]
                stacked[key] = np.matmul(delta[v].transpose(0, 2, 1), a_p) / self.B
        losses = np.mean(net.loss.value(mq[net.output], self.Y), axis=1)
        out = []
        for k in range(self.K):
            g = Gradients({key: val[k] for key, val in stacked.items()}, loss=float(losses[k]),
                          method=method)
            out.append(g)
        return out

    def stacked_state(self, m, d):
        """(K, B, n) arrays of m and d in the network's stacking order."""
        M = np.concatenate([m[v] for v in self.nodes], axis=2)
        D = np.concatenate([d[v] for v in self.nodes], axis=2)
        return M, D

    def split_state(self, M):
        return {v: M[:, :, self.net.slice(v)] for v in self.nodes}

    def residual(self, m, dm, dd, d, coef):
        """Per chip: the largest update of any layer relative to that layer's largest value
        (m and d separately; a layer heading for zero is measured against 1e-6 of the
        chip's largest value)."""
        def mx(a):
            return np.max(np.abs(a), axis=(1, 2))
        m_floor = 1e-6 * np.max([mx(m[v]) for v in self.nodes], axis=0)
        d_floor = 1e-6 * np.max([mx(d[v]) for v in self.nodes], axis=0)
        tiny = np.finfo(self.dtype).tiny
        worst = np.zeros(self.K)
        with np.errstate(over="ignore", invalid="ignore"):  # inf: far from converged
            for v in self.nodes:
                um, ud = mx(coef[v] * dm[v]), mx(coef[v] * dd[v])
                rm = np.where(um > 0, um / (np.maximum(mx(m[v]), m_floor) + tiny), 0.0)
                rd = np.where(ud > 0, ud / (np.maximum(mx(d[v]), d_floor) + tiny), 0.0)
                worst = np.maximum(worst, np.maximum(rm, rd))
        return worst


# ---------------------------------------------------------------------- the loops
def _noise_draws(stack, rngs, active):
    """Standard normal (2, B, n) per noisy, active chip; zeros elsewhere."""
    out = np.zeros((stack.K, 2, stack.B, stack.net.n), dtype=stack.dtype)
    for k, rng in enumerate(rngs):
        if rng is not None and active[k]:
            out[k] = rng.standard_normal((2, stack.B, stack.net.n))
    return out


def _euler_loop(stack, m, d, coef, noise_coef, n_steps, fixed, tol, rngs, record):
    """Update m += coef*dm (+ noise), d += coef*dd (+ noise), chip by chip until each chip
    has taken its ``n_steps[k]`` steps (``fixed[k]``) or converged; converged chips are
    frozen bit for bit, so a chip's result does not depend on the others."""
    K = stack.K
    fixed = np.broadcast_to(np.asarray(fixed, dtype=bool), (K,))
    adaptive = not np.all(fixed)
    steps = np.zeros(K, dtype=int)
    converged = np.zeros(K, dtype=bool)
    stalled = np.zeros(K, dtype=bool)
    residual = np.full(K, np.inf)
    best = np.full(K, np.inf)
    best_k = np.zeros(K, dtype=int)
    eps = np.finfo(stack.dtype).eps
    stall_floor = math.sqrt(eps)
    hmin = min(float(np.min(c)) for c in coef.values())
    stall_window = max(50, int(math.ceil(10.0 / hmin)))
    limit = int(np.max(n_steps)) if len(n_steps) else 0
    hist = [stack.stacked_state(m, d)] if record else None
    noisy = any(r is not None for r in rngs)
    k = 0
    for k in range(1, limit + 1):
        active = (steps < n_steps) & ~converged
        if not np.any(active):
            break
        act = active.reshape(K, 1, 1)
        dm, dd = stack.flow(m, d)
        if adaptive:
            res = stack.residual(m, dm, dd, d, coef)
        draws = _noise_draws(stack, rngs, active) if noisy else None
        for v in stack.nodes:
            upd_m = coef[v] * dm[v]
            upd_d = coef[v] * dd[v]
            if noisy:
                sl = stack.net.slice(v)
                nx, nz = draws[:, 0, :, sl], draws[:, 1, :, sl]
                upd_m = upd_m + noise_coef[v] * 0.5 * (nx + nz)
                upd_d = upd_d + noise_coef[v] * (nx - nz)
            m[v] = np.where(act, m[v] + upd_m, m[v])
            d[v] = np.where(act, d[v] + upd_d, d[v])
        steps += active
        if record:
            hist.append(stack.stacked_state(m, d))
        if adaptive:
            finite = np.all([np.all(np.isfinite(m[v]) & np.isfinite(d[v]), axis=(1, 2))
                             for v in stack.nodes], axis=0)
            bad = active & ~fixed & ~finite
            if np.any(bad):
                raise ConvergenceError(f"chip relaxation produced NaN/inf at step {k} "
                                       f"(chip {int(np.argmax(bad))})")
            track = active & ~fixed
            residual = np.where(track, res, residual)
            done = track & (res <= tol)
            better = track & (res < best)
            best = np.where(better, 0.5 * res, best)
            best_k = np.where(better, k, best_k)
            stall = track & ~done & ~better & (k - best_k > stall_window) & (res <= stall_floor)
            stalled |= stall
            converged |= done | stall
    if adaptive and not np.all(converged | fixed):
        bad = int(np.argmin(converged | fixed))
        raise ConvergenceError(
            f"chip {bad} did not converge to tol={tol:g} in {int(n_steps[bad])} steps "
            f"(last relative update {residual[bad]:.3g}); raise max_steps or tol")
    if np.any(fixed):
        dm, dd = stack.flow(m, d)
        residual = np.where(fixed, stack.residual(m, dm, dd, d, coef), residual)
    return steps, converged, stalled, residual, hist


def _noise_rngs(stack, seed):
    return [c.noise_rng(seed) if c.noise > 0 else None for c in stack.chips]


def _euler_horizon(coef, L):
    """Steps for the noise-free Euler map to forget its start to ~1e-12: the 2L-step wave
    at the slowest neuron's rate plus the geometric tail."""
    hs = np.concatenate([np.ravel(c) for c in coef.values()]) if coef else np.ones(1)
    rate = float(np.max(np.abs(1.0 - hs)))
    tail = 0 if rate == 0 else int(math.ceil(math.log(1e-12) / math.log(rate)))
    return int(math.ceil(2 * L / float(np.min(hs)))) + tail


@dataclass(repr=False)
class ChipBatchResult:
    """What :func:`relax_chips` returns: the gradients of every chip.

    Attributes
    ----------
    grads : list of Gradients
        One per chip, in the order given.
    m, d : ndarray (K, B, n)
        The final states (d in volts: gain * dC/da on a nominal chip).
    method : str
        ``"steady"``, ``"euler"`` or ``"continuous"``.
    chips : list of Chip
        The chips, in the order given.
    single : bool
        Whether ``x`` was one sample (the states then drop the batch axis when indexed).
    eta : float or None
        The Euler step (``"euler"``, and the Euler-Maruyama step of a noisy continuous run).
    steps : ndarray (K,) or None
        Euler steps taken per chip.
    converged : ndarray (K,) of bool
        Whether each chip met its tolerance.
    residual : ndarray (K,) or None
        Each chip's last relative update (0 for the steady solve).
    stalled : ndarray (K,) of bool or None
        Euler: chips whose relative update stopped falling at the rounding floor before
        reaching ``tol`` (counted as converged).
    t_final, t_settle : ndarray (K,) or None
        Continuous engine: when each chip's flow fell below ``tol``, and when its state came
        within ``settle_tol`` of its final value for good (units of the nominal tau).
    settle_tol : float or None
        The settling tolerance of ``t_settle``.
    solver : str or None
        The ODE solver (continuous engine).
    nfev : int
        Right-hand-side evaluations of the ODE solver (0 otherwise).
    history : tuple or None
        ``(m, d)`` trajectories, one row per recorded step, when recording was asked for.
    info : dict
        ``chips`` (K) and engine details.
    """

    grads: list
    m: np.ndarray
    d: np.ndarray
    method: str
    chips: list
    single: bool
    eta: float | None = None
    steps: np.ndarray | None = None
    converged: np.ndarray | None = None
    residual: np.ndarray | None = None
    stalled: np.ndarray | None = None
    t_final: np.ndarray | None = None
    t_settle: np.ndarray | None = None
    settle_tol: float | None = None
    solver: str | None = None
    nfev: int = 0
    history: tuple | None = None
    info: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.grads)

    @property
    def losses(self) -> np.ndarray:
        """(K,) batch losses, one per chip (computed from the read-out m_L)."""
        return np.array([g.loss for g in self.grads])

    def stacked(self, key) -> np.ndarray:
        """One parameter's gradient of every chip, ``(K, *shape)``."""
        return np.stack([g[key] for g in self.grads])

    def flat(self) -> np.ndarray:
        """(K, n_params): every chip's gradients as one vector."""
        return np.stack([g.flat() for g in self.grads])

    def __getitem__(self, k):
        """Chip k's result: a RelaxResult (steady, euler) or a ContinuousResult."""
        from ._euler import RelaxResult
        from ._ode import ContinuousResult

        if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer)):
            raise DyadsimError(f"index a ChipBatchResult with an int, got {k!r}")
        if not -len(self) <= k < len(self):
            raise DyadsimError(f"chip index {k} out of range for {len(self)} chips")
        k = int(k) % len(self)
        x = self.m[k] + 0.5 * self.d[k]
        z = self.m[k] - 0.5 * self.d[k]
        if self.single:
            x, z = x[0], z[0]
        info = dict(self.info)
        info.update({"chip": k, "engine": self.method})
        g = self.grads[k]
        depth = self.chips[k].net.depth
        if self.method == "continuous" and self.t_final is not None:
            r = ContinuousResult(g, x, z, float(self.t_final[k]), float(self.t_settle[k]),
                                 self.settle_tol, self.solver, self.nfev, 0,
                                 int(self.info.get("n_steps", 0)), float(self.residual[k]))
        else:
            steps = 2 * depth if self.steps is None else int(self.steps[k])
            schedule = "wavefront" if self.method == "steady" else "parallel"
            r = RelaxResult(g, steps, x, z, 1.0 if self.eta is None else self.eta, schedule,
                            bool(self.converged[k]),
                            0.0 if self.residual is None else float(self.residual[k]), depth)
            if self.stalled is not None:
                r.stalled = bool(self.stalled[k])
            if self.history is not None:
                hx = self.history[0][:, k] + 0.5 * self.history[1][:, k]
                hz = self.history[0][:, k] - 0.5 * self.history[1][:, k]
                if self.single:
                    hx, hz = hx[:, 0], hz[:, 0]
                r.history_x, r.history_z = hx, hz
        r.info.update(info)
        return r

    def __iter__(self):
        return (self[k] for k in range(len(self)))


def relax_chips(chips, x, y, *, method="steady", eta=1.0, steps=None, dtype=np.float64,
                tol=None, max_steps=100_000, seed=None, noise_steps=None, solver="DOP853",
                rtol=1e-10, atol=1e-13, t_max=None, settle_tol=1e-6, dt=0.05, t_end=None,
                record=False, backend="numpy", device=None) -> ChipBatchResult:
    """Relax many sampled chips at once on one batch and read out each chip's gradients.

    Parameters
    ----------
    chips : Chip or sequence of Chip
        Chips of one architecture (their weights may differ).
    x, y : array_like
        The batch, (n_in,)/(B, n_in) and (n_out,)/(B, n_out).
    method : ``"steady"``, ``"euler"`` or ``"continuous"``
        The fixed point directly (fastest; exact), explicit Euler with step ``eta``, or the
        continuous-time flow (see the module docstring).
    eta : float
        Euler step in nominal tau, in (0, 2) (``"euler"`` only).
    steps : int or None
        Euler steps; ``None`` decides per chip: 2L when every neuron's step is exactly 1
        and the chip has no noise, until ``tol`` without noise otherwise, and with noise
        the noise-free convergence horizon ``ceil(2L / h_min)`` plus the geometric tail to
        1e-12 (h = eta / tau_j; every h must be below 2).
    dtype : float64 or float32
    tol, max_steps : float or None, int
        Convergence tolerance on the relative update per layer (default 1e-12 in float64,
        float32's eps); ``max_steps`` bounds the Euler run.
    seed : int or None
        Seed of the thermal noise: ``None`` is each chip's own stream (reproducible), an
        int another independent stream per chip.
    noise_steps : int or None
        ``"steady"`` with noise: exponential-Euler-Maruyama steps of one tau after the
        fixed point (default 2L + 20: the state forgets the fixed point).
    solver, rtol, atol, t_max, settle_tol : ``"continuous"`` without noise
        A scipy solver (DOP853, RK45, RK23, Radau, BDF, LSODA), its tolerances, the time
        limit (default ``(40 L + 200) max tau``) and the settling tolerance.
    dt, t_end : ``"continuous"`` with noise
        Euler-Maruyama step and end time in nominal tau (default ``(4L + 30) max tau``).
        When any chip of the batch has noise, every chip of it runs Euler-Maruyama.
    record : bool
        Keep the Euler states after every step (``history``: (m, d) arrays (T, K, B, n)).
    backend : ``"numpy"`` or ``"torch"``
        ``"torch"`` (an optional extra) runs the same engine with every layer's state one
        ``(K, B, n_v)`` tensor on ``device`` and batched matrix products; ``"steady"`` and
        ``"euler"`` are step for step the numpy engine's.  Noise-free ``"continuous"``
        integrates there with exponential Euler of step ``dt`` (the same steady state;
        ``solver``, ``rtol`` and ``atol`` do not apply), and its thermal noise comes from a
        torch generator seeded from the chips and ``seed`` (reproducible, but other draws
        than numpy's).
    device : str, torch.device or None
        The torch device (``backend="torch"`` only; ``None``: the CPU).

    Returns
    -------
    ChipBatchResult
        ``result.grads[k]`` are chip k's gradients; ``result[k]`` its RelaxResult or
        ContinuousResult.
    """
    method = check_choice("chip method", method, CHIP_METHODS)
    if use_torch(backend, device):
        return _relax_chips_torch(chips, x, y, method=method, eta=eta, steps=steps, dtype=dtype,
                                  tol=tol, max_steps=max_steps, seed=seed,
                                  noise_steps=noise_steps, solver=solver, rtol=rtol, atol=atol,
                                  t_max=t_max, settle_tol=settle_tol, dt=dt, t_end=t_end,
                                  record=record, device=device)
    t0 = time.perf_counter()
    stack = ChipStack(chips, x, y, dtype)
    L = stack.net.depth
    if tol is None:
        tol = (1e-11 if method == "continuous" else 1e-12) if stack.dtype == np.float64 \
            else float(np.finfo(np.float32).eps)
    tol = check_real("tol", tol, low=0.0, low_open=True)
    if steps is not None:
        steps = check_int("steps", steps, 0)
    max_steps = check_int("max_steps", max_steps, 1)
    if seed is not None:
        seed = check_int("seed", seed, 0)
    rngs = _noise_rngs(stack, seed)
    noisy = any(r is not None for r in rngs)
    K = stack.K
    label = f"chip[{method}]"
    common = dict(chips=stack.chips, single=stack.single, info={"chips": K})

    if method == "steady":
        m, d, u = stack.fixed_point()
        steps_arr = None
        if noisy:
            n_noise = 2 * L + 20 if noise_steps is None else check_int("noise_steps", noise_steps, 1)
            coef = {v: -np.expm1(-1.0 / stack.tau[v]) for v in stack.nodes}
            ncoef = {v: stack.noise * np.sqrt(-np.expm1(-2.0 / stack.tau[v])) for v in stack.nodes}
            _euler_loop(stack, m, d, coef, ncoef, np.full(K, n_noise), True, tol, rngs, False)
            u = {v: stack.preact(m, v) for v in stack.nodes}
            common["info"]["noise_steps"] = n_noise
        grads = stack.readout(m, d, u, method=label)
        M, D = stack.stacked_state(m, d)
        res = ChipBatchResult(grads, M, D, method, converged=np.ones(K, dtype=bool),
                              residual=np.zeros(K), steps=steps_arr, **common)
    elif method == "euler" or (method == "continuous" and noisy):
        if method == "euler":
            h_step = check_eta(eta)
            label = f"chip[euler, eta={h_step:g}]"
        else:
            h_step = check_real("dt", dt, low=0.0, low_open=True, high=1.0)
            label = f"chip[continuous, Euler-Maruyama dt={h_step:g}]"
        coef = {v: h_step / stack.tau[v] for v in stack.nodes}
        h_max = max(float(np.max(c)) for c in coef.values())
        if h_max >= 2.0:
            tau_min = min(float(np.min(t)) for t in stack.tau.values())
            raise DyadsimError(
                f"the fastest neuron's Euler step eta/tau_j = {h_max:.3g} is >= 2 (tau_j = "
                f"{tau_min:.3g}): the relaxation would diverge; use a step below {2 * tau_min:.3g}")
        ncoef = {v: stack.noise * np.sqrt(2.0 * coef[v]) for v in stack.nodes}
        # per chip: how many steps, and whether it stops there (fixed) or at tol
        exact = np.all([np.all(c == 1.0, axis=(1, 2)) for c in coef.values()], axis=0)
        noisy_k = np.array([r is not None for r in rngs])
        if method == "continuous":
            tmax_tau = max(float(np.max(t)) for t in stack.tau.values())
            t_end_v = (4 * L + 30) * tmax_tau if t_end is None else check_real(
                "t_end", t_end, low=0.0, low_open=True)
            n = np.full(K, int(math.ceil(t_end_v / h_step)))
            fixed = np.ones(K, dtype=bool)
        elif steps is not None:
            n, fixed = np.full(K, steps), np.ones(K, dtype=bool)
        else:
            horizon = [_euler_horizon({v: coef[v][k] for v in stack.nodes}, L) for k in range(K)]
            n = np.where(exact & ~noisy_k, 2 * L, np.where(noisy_k, horizon, max_steps))
            fixed = exact | noisy_k
        m, d = stack.zeros(), stack.zeros()
        steps_arr, conv, stalled, resid, hist = _euler_loop(
            stack, m, d, coef, ncoef, n, fixed, tol, rngs, record)
        conv = np.where(fixed, exact & ~noisy_k & (method == "euler") & (n >= 2 * L), conv)
        u = {v: stack.preact(m, v) for v in stack.nodes}
        grads = stack.readout(m, d, u, method=label)
        M, D = stack.stacked_state(m, d)
        history = None
        if record:
            history = (np.stack([h[0] for h in hist]), np.stack([h[1] for h in hist]))
        if method == "continuous":
            t_fin = steps_arr * h_step
            res = ChipBatchResult(grads, M, D, "continuous", converged=conv, residual=resid,
                                  t_final=t_fin, t_settle=np.full(K, np.nan), settle_tol=settle_tol,
                                  solver=f"Euler-Maruyama(dt={h_step:g})", steps=steps_arr,
                                  eta=h_step, history=history, **common)
            res.info["n_steps"] = int(np.max(steps_arr))
        else:
            res = ChipBatchResult(grads, M, D, "euler", eta=h_step, steps=steps_arr, converged=conv,
                                  residual=resid, stalled=stalled, history=history, **common)
    else:
        res = _continuous(stack, solver, rtol, atol, tol, settle_tol, t_max, f"chip[continuous, {solver}]")
    res.info["wall_s"] = time.perf_counter() - t0
    return res


def _relax_chips_torch(chips, x, y, *, solver, rtol, atol, steps, max_steps, seed, record,
                       **kw):
    """Validate what the torch chip engine shares with the numpy one, then run it."""
    chips = check_chips(chips)
    if (solver, rtol, atol) != ("DOP853", 1e-10, 1e-13):
        raise DyadsimError("solver, rtol and atol choose the numpy engine's scipy solver; the "
                           "torch chip engine integrates the continuous flow with exponential "
                           "Euler of step dt (use backend='numpy' for a scipy solver)")
    if steps is not None:
        steps = check_int("steps", steps, 0)
    max_steps = check_int("max_steps", max_steps, 1)
    if seed is not None:
        seed = check_int("seed", seed, 0)
    if not isinstance(record, (bool, np.bool_)):
        raise DyadsimError(f"record must be True or False, got {record!r}")
    from ._torch import relax_chips as torch_relax_chips

    return torch_relax_chips(chips, x, y, steps=steps, max_steps=max_steps, seed=seed,
                             record=bool(record), horizon=_euler_horizon, **kw)


def _continuous(stack, solver, rtol, atol, tol, settle_tol, t_max, label):
    """Noise-free continuous flow with per-neuron tau, one scipy solver over every chip."""
    from ._ode import ODE_METHODS

    solver = check_choice("ODE solver", solver, tuple(ODE_METHODS))
    K, B, n, L = stack.K, stack.B, stack.net.n, stack.net.depth
    tau_all = np.concatenate([stack.tau[v] for v in stack.nodes], axis=2)  # (K, 1, n)
    tmax_tau = float(np.max(tau_all))
    if t_max is None:
        t_max = (40.0 * L + 200.0) * tmax_tau
    t_max = check_real("t_max", t_max, low=0.0, low_open=True)
    settle_tol = check_real("settle_tol", settle_tol, low=0.0, low_open=True)
    shape = (K, 2, B, n)

    def fun(t, yv):
        s = yv.reshape(shape)
        m, d = stack.split_state(s[:, 0]), stack.split_state(s[:, 1])
        dm, dd = stack.flow(m, d)
        DM, DD = stack.stacked_state(dm, dd)
        return np.stack([DM / tau_all, DD / tau_all], axis=1).ravel()

    y0 = np.zeros(K * 2 * B * n, dtype=stack.dtype)
    # an explicit solver whose step grows to the stability limit of the fastest neuron
    # keeps that neuron's mode alive at the rtol level (the residual stalls near 1e-9 with
    # tau_spread = 0.5): a step of at most 3 tau_min keeps every mode damped
    tau_min = float(np.min(tau_all))
    kw = {"rtol": rtol, "atol": atol, "max_step": 3.0 * tau_min}
    integ = ODE_METHODS[solver](fun, 0.0, y0, t_max, **kw)
    eps = np.finfo(stack.dtype).eps
    t_done = np.full(K, np.nan)
    traj_t, traj_y = [0.0], [y0.reshape(shape).copy()]
    resid = np.full(K, np.inf)
    count = 0
    while True:
        msg = integ.step()
        if integ.status == "failed":
            raise ConvergenceError(f"ODE solver {solver} failed at t={integ.t:.4g}: {msg}")
        count += 1
        s = integ.y.reshape(shape)
        traj_t.append(float(integ.t))
        traj_y.append(s.copy())
        if len(traj_y) > 4096:  # keep the memory bounded: every other point
            traj_t, traj_y = traj_t[::2], traj_y[::2]
        M, D = s[:, 0], s[:, 1]
        dm, dd = stack.flow(stack.split_state(M), stack.split_state(D))
        DM, DD = stack.stacked_state(dm, dd)
        ms = np.max(np.abs(M), axis=(1, 2))
        ds = np.max(np.abs(D), axis=(1, 2))
        floor = 64 * eps * ms + np.finfo(stack.dtype).tiny
        um = np.max(np.abs(DM / tau_all), axis=(1, 2))
        ud = np.max(np.abs(DD / tau_all), axis=(1, 2))
        resid = np.maximum(um / (ms + floor), ud / (ds + floor))
        if not np.all(np.isfinite(resid)):
            raise ConvergenceError(f"chip ODE relaxation produced NaN/inf at t={integ.t:.4g}")
        done = (um <= tol * ms + floor) & (ud <= tol * ds + floor)
        t_done = np.where(done & np.isnan(t_done), integ.t, t_done)
        if np.all(done):
            break
        if integ.status == "finished":
            raise ConvergenceError(
                f"the chips' flow did not reach steady state (tol={tol:g}) by t_max={t_max:g} tau")
    final = integ.y.reshape(shape).copy()
    M, D = final[:, 0], final[:, 1]
    t_settle = np.full(K, float(integ.t))
    m_sc = np.maximum(np.max(np.abs(M), axis=(1, 2)), np.finfo(float).tiny)
    d_sc = np.maximum(np.max(np.abs(D), axis=(1, 2)), np.finfo(float).tiny)
    still = np.ones(K, dtype=bool)
    for tk, yk in zip(reversed(traj_t), reversed(traj_y)):
        em = np.max(np.abs(yk[:, 0] - M), axis=(1, 2)) / m_sc
        ed = np.max(np.abs(yk[:, 1] - D), axis=(1, 2)) / d_sc
        still &= np.maximum(em, ed) <= settle_tol
        if not np.any(still):
            break
        t_settle = np.where(still, tk, t_settle)
    m, d = stack.split_state(M), stack.split_state(D)
    u = {v: stack.preact(m, v) for v in stack.nodes}
    grads = stack.readout(m, d, u, method=label)
    res = ChipBatchResult(grads, M, D, "continuous", chips=stack.chips, single=stack.single,
                          converged=np.ones(K, dtype=bool), residual=resid, t_final=t_done,
                          t_settle=t_settle, settle_tol=settle_tol, solver=solver,
                          nfev=int(integ.nfev), info={"chips": K, "n_steps": count})
    return res


def chip_readout(chip, x, y, m, d, u, method=None) -> Gradients:
    """One chip's readout from measured stacked states (for the circuit engine).

    Parameters
    ----------
    chip : Chip
    x, y : array_like
        The batch the states belong to.
    m, d, u : ndarray (B, n)
        Activations, error voltages (gain * dC/da) and pre-activations of every neuron.
    method : str, optional
        Label of the gradients.

    Returns
    -------
    Gradients
        As the chip's converters read them (its ADC, its derivative units' gains).
    """
    stack = ChipStack([chip], x, y)
    shp = (1, stack.B, stack.net.n)
    M, D, U = (np.asarray(a, dtype=np.float64).reshape(shp) for a in (m, d, u))
    return stack.readout(stack.split_state(M), stack.split_state(D), stack.split_state(U),
                         method=method)[0]


def relax_chip(chip, x, y, *, eta=1.0, steps=None, dtype=np.float64, schedule="parallel",
               tol=None, max_steps=100_000, record=False, seed=None, backend="numpy", device=None):
    """:func:`dyadsim.relax` on a chip: the Euler engine (``schedule="parallel"``) or, for
    ``"wavefront"``, the steady state it reaches at step 2L on a chip without noise (the
    fixed point; with noise, the parallel Euler-Maruyama run at eta = 1).  Returns a
    RelaxResult."""
    from ._euler import SCHEDULES

    schedule = check_choice("schedule", schedule, SCHEDULES)
    if schedule == "async":
        raise DyadsimError("the async schedule relaxes a Network; a chip's clock-free relaxation "
                           "is its continuous flow (relax_continuous(chip, ...), tau_spread=...)")
    eta = check_eta(eta)
    if schedule == "wavefront" and eta != 1.0:
        raise DyadsimError(f"the wavefront schedule needs eta = 1 (got {eta})")
    if schedule == "wavefront" and chip.noise == 0:
        r = relax_chips([chip], x, y, method="steady", dtype=dtype, backend=backend, device=device)
    else:
        r = relax_chips([chip], x, y, method="euler", eta=eta, steps=steps, dtype=dtype, tol=tol,
                        max_steps=max_steps, record=record, seed=seed, backend=backend,
                        device=device)
    return r[0]


def relax_chip_continuous(chip, x, y, *, method="DOP853", rtol=1e-10, atol=1e-13, tol=1e-11,
                          settle_tol=1e-6, t_max=None, dtype=np.float64, seed=None, dt=0.05,
                          t_end=None, backend="numpy", device=None):
    """:func:`dyadsim.relax_continuous` on a chip (per-neuron tau; Euler-Maruyama with step
    ``dt`` when the chip has noise).  Returns a ContinuousResult."""
    r = relax_chips([chip], x, y, method="continuous", solver=method, rtol=rtol, atol=atol,
                    tol=tol, settle_tol=settle_tol, t_max=t_max, dtype=dtype, seed=seed, dt=dt,
                    t_end=t_end, backend=backend, device=device)
    return r[0]
