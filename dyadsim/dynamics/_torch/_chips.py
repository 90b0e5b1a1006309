"""The chip engine on a torch device: K sampled chips x a batch as one tensor per layer.

The same model and the same three methods as the numpy chip engine
(:func:`dyadsim.relax_chips`): every layer's state is a ``(K chips, B samples, n_v)``
tensor, the crossbars ``(K, n_dst, n_src)`` stacks, and each sweep is one batched matrix
product per edge (``torch.baddbmm`` forward, ``torch.bmm`` backward).

* ``"steady"``: the fixed point, the forward wave then the error wave (exact);
* ``"euler"``: explicit Euler (Euler-Maruyama with noise), step for step the numpy loop
  (the same per-chip step counts, convergence test, stall test and freezing);
* ``"continuous"``: without noise, exponential Euler with step ``dt`` (each neuron's linear
  part ``-1/tau_j`` integrated exactly, so the steady state and the gradients do not depend
  on ``dt``; the settling time is first order in ``dt``), run until every chip's flow
  ``max|dm/dt|, max|dd/dt|`` falls below ``tol`` relative to its state; with noise,
  Euler-Maruyama with step ``dt``, as the numpy engine.

Thermal noise comes from one ``torch.Generator`` on the device, seeded from every noisy
chip's own noise stream and ``seed``: reproducible from the chips and the seed, but not the
numpy engine's draws (no two libraries share a normal generator), and a chip's draws depend
on the other chips of the call.
"""

from __future__ import annotations

import math
import time

import numpy as np

from ...errors import ConvergenceError, DyadsimError
from ._system import ACTS, LOSS_FUNS, _check_supported, resolve, to_numpy, torch

__all__ = ["TorchChipStack", "relax_chips"]


class TorchChipStack:
    """K chips of one architecture and one batch, as tensors on one device.

    Parameters
    ----------
    chips : list of Chip
        Already checked to share one architecture.
    x, y : array_like
        The batch.
    dtype : float64 or float32
    device : torch device or None (the CPU)
    """

    def __init__(self, chips, x, y, dtype=np.float64, device=None):
        np_dt, t_dt, dev = resolve(dtype, device)
        self.np_dtype, self.dtype, self.device = np_dt, t_dt, dev
        self.chips = chips
        self.net = net = chips[0].net
        _check_supported(net)
        X, Y, self.single = net.check_xy(x, y)
        self.K, self.B = len(chips), X.shape[0]
        self.nodes = net.nodes
        self.acts = {v: ACTS[net.activations[v].name] for v in net.nodes}
        self.loss_value, self.loss_grad = LOSS_FUNS[net.loss.name]
        up = lambda a: torch.as_tensor(np.ascontiguousarray(a), dtype=t_dt, device=dev)  # noqa: E731
        self.X, self.Y = up(X), up(Y)
        K = self.K
        vals = [c.values() for c in chips]

        def stack(kind, key, shape):
            out = torch.empty((K,) + tuple(shape), dtype=t_dt, device=dev)
            for k, v in enumerate(vals):  # one chip at a time: no (K, ...) host copy
                out[k].copy_(torch.from_numpy(np.ascontiguousarray(
                    np.asarray(v[kind][key], dtype=np.float64).reshape(shape))))
            return out

        self.WfT, self.Wb = {}, {}
        for (p, v) in net.edges:
            Wf = stack("forward", (p, v), (net.sizes[v], net.sizes[p]))
            self.WfT[(p, v)] = Wf.transpose(1, 2)
            if p != net.input:
                self.Wb[(p, v)] = stack("backward", (p, v), (net.sizes[v], net.sizes[p]))
        self.beta, self.ga, self.gd, self.om, self.od, self.tau = {}, {}, {}, {}, {}, {}
        for v in net.nodes:
            shp = (1, net.sizes[v])
            b = stack("bias", v, shp)
            if net.input in net.preds[v]:
                self.beta[v] = torch.matmul(self.X, self.WfT[(net.input, v)]).add_(b)
            else:
                self.beta[v] = b.expand(K, self.B, net.sizes[v]).contiguous()
            self.ga[v] = stack("activation_gain", v, shp)
            self.gd[v] = stack("derivative_gain", v, shp)
            ox, oz = stack("offset_x", v, shp), stack("offset_z", v, shp)
            self.om[v] = 0.5 * (ox + oz)
            self.od[v] = ox - oz
            self.tau[v] = stack("tau", v, shp)
        col = lambda a: torch.as_tensor(np.asarray(a, dtype=np.float64), dtype=t_dt,  # noqa: E731
                                        device=dev).reshape(K, 1, 1)
        self.gain = col([c.gain for c in chips])
        self.noise = col([c.noise for c in chips])
        half = [math.inf if c.adc_bits is None else float(2 ** (c.adc_bits - 1) - 1) for c in chips]
        self.any_adc = any(math.isfinite(h) for h in half)
        self.adc_half = col(half)

    # ------------------------------------------------------------------ sweeps
    def zeros(self):
        return {v: torch.zeros((self.K, self.B, self.net.sizes[v]), dtype=self.dtype,
                               device=self.device) for v in self.nodes}

    def preact(self, m, v):
        u = self.beta[v]
        first = True
        for p in self.net.preds[v]:
            if p != self.net.input:
                if first:
                    u = torch.baddbmm(u, m[p], self.WfT[(p, v)])
                    first = False
                else:
                    u = u.baddbmm_(m[p], self.WfT[(p, v)])
        return u.clone() if first else u

    def backsum(self, s, v):
        r = None
        for c in self.net.succs[v]:
            r = torch.bmm(s[c], self.Wb[(v, c)]) if r is None else r.baddbmm_(s[c], self.Wb[(v, c)])
        return torch.zeros((self.K, self.B, self.net.sizes[v]), dtype=self.dtype,
                           device=self.device) if r is None else r

    def value_and_slope(self, v, u):
        act = self.acts[v]
        val = act.f(u)
        return val, act.back(torch.ones_like(u), val, u)

    def cost(self, m_out):
        return self.gain * self.loss_grad(m_out, self.Y)

    def fixed_point(self):
        """The steady state (m, d, u) exactly: the forward wave, then the error wave."""
        m, u, slope = {}, {}, {}
        for v in self.nodes:
            u[v] = self.preact(m, v)
            val, sl = self.value_and_slope(v, u[v])
            m[v] = self.ga[v] * val + self.om[v]
            slope[v] = self.gd[v] * sl
        d, s = {}, {}
        for v in reversed(self.nodes):
            r = self.backsum(s, v)
            if v == self.net.output:
                r = r + self.cost(m[v])
            d[v] = r + self.od[v]
            s[v] = slope[v] * d[v]
        return m, d, u

    def flow(self, m, d):
        """(dm, dd) times tau."""
        dm, s = {}, {}
        for v in self.nodes:
            u = self.preact(m, v)
            val, sl = self.value_and_slope(v, u)
            dm[v] = self.ga[v] * val + self.om[v] - m[v]
            s[v] = self.gd[v] * sl * d[v]
        dd = {}
        for v in self.nodes:
            r = self.backsum(s, v)
            if v == self.net.output:
                r = r + self.cost(m[v])
            dd[v] = r + self.od[v] - d[v]
        return dm, dd

    # ------------------------------------------------------------------ readout
    def adc(self, a):
        if not self.any_adc:
            return a
        R = torch.amax(torch.abs(a), dim=-1, keepdim=True)
        step = R / self.adc_half
        pos = step > 0
        q = torch.where(pos, torch.round(a / torch.where(pos, step, torch.ones_like(step))) * step,
                        torch.zeros_like(a))
        return torch.where(torch.isinf(self.adc_half), a, q)

    def readout_tensors(self, m, d, u):
        """``({key: (K, *shape) tensor}, (K,) losses)`` on the device."""
        net = self.net
        mq, delta = {}, {}
        for v in self.nodes:
            slope = self.gd[v] * self.value_and_slope(v, u[v])[1]
            mq[v] = self.adc(m[v])
            delta[v] = self.adc(slope) * self.adc(d[v]) / self.gain
        out = {}
        for key in net.params:
            if key[0] == "b":
                out[key] = delta[key[1]].sum(dim=1) / self.B
            else:
                p, v = key[1], key[2]
                a_p = self.X if p == net.input else mq[p]
                out[key] = torch.matmul(delta[v].transpose(1, 2), a_p) / self.B
        losses = torch.mean(self.loss_value(mq[net.output], self.Y), dim=1)
        return out, losses

    def readout(self, m, d, u, method):
        from .._gradients import Gradients

        out, losses = self.readout_tensors(m, d, u)
        host = {key: to_numpy(t).astype(np.float64 if self.np_dtype == np.float64 else np.float32,
                                        copy=False) for key, t in out.items()}
        losses = to_numpy(losses)
        return [Gradients({key: val[k] for key, val in host.items()}, loss=float(losses[k]),
                          method=method) for k in range(self.K)]

    def stacked(self, x):
        return torch.cat([x[v] for v in self.nodes], dim=2)

    def residual(self, m, dm, dd, d, coef):
        """Per chip (K,) tensor: the numpy engine's relative-update measure."""
        def mx(a):
            return torch.amax(torch.abs(a), dim=(1, 2))
        m_floor = 1e-6 * torch.stack([mx(m[v]) for v in self.nodes]).amax(dim=0)
        d_floor = 1e-6 * torch.stack([mx(d[v]) for v in self.nodes]).amax(dim=0)
        tiny = torch.finfo(self.dtype).tiny
        worst = torch.zeros(self.K, dtype=self.dtype, device=self.device)
        zero = torch.zeros((), dtype=self.dtype, device=self.device)
        for v in self.nodes:
            um, ud = mx(coef[v] * dm[v]), mx(coef[v] * dd[v])
            rm = torch.where(um > 0, um / (torch.maximum(mx(m[v]), m_floor) + tiny), zero)
            rd = torch.where(ud > 0, ud / (torch.maximum(mx(d[v]), d_floor) + tiny), zero)
            worst = torch.maximum(worst, torch.maximum(rm, rd))
        return worst


# ---------------------------------------------------------------------- noise
def _generator(stack, seed):
    """One device generator seeded from every noisy chip's noise stream (and ``seed``);
    ``None`` when no chip has noise."""
    noisy = [c for c in stack.chips if c.noise > 0]
    if not noisy:
        return None
    words = [int(c.noise_rng(seed).integers(0, 2**63)) for c in noisy]
    s = int(np.random.SeedSequence(words).generate_state(1, np.uint64)[0]) & (2**63 - 1)
    gen = torch.Generator(device=stack.device)
    gen.manual_seed(s)
    return gen


def _euler_loop(stack, m, d, coef, noise_coef, n_steps, fixed, tol, gen, record, res_scale=1.0):
    """The numpy engine's loop: per-chip step budgets (``fixed``: stop there) or
    convergence at ``tol`` (residual / ``res_scale``), converged chips frozen."""
    K = stack.K
    fixed = np.broadcast_to(np.asarray(fixed, dtype=bool), (K,))
    adaptive = not np.all(fixed)
    steps = np.zeros(K, dtype=int)
    converged = np.zeros(K, dtype=bool)
    stalled = np.zeros(K, dtype=bool)
    residual = np.full(K, np.inf)
    best = np.full(K, np.inf)
    best_k = np.zeros(K, dtype=int)
    eps = float(np.finfo(stack.np_dtype).eps)
    stall_floor = math.sqrt(eps)
    hmin = min(float(torch.min(c)) for c in coef.values())
    stall_window = max(50, int(math.ceil(10.0 / hmin)))
    limit = int(np.max(n_steps)) if len(n_steps) else 0
    hist = [(to_numpy(stack.stacked(m)), to_numpy(stack.stacked(d)))] if record else None
    noisy_k = torch.as_tensor(np.array([c.noise > 0 for c in stack.chips]), device=stack.device)
    n = stack.net.n
    for k in range(1, limit + 1):
        active = (steps < n_steps) & ~converged
        if not np.any(active):
            break
        all_active = bool(np.all(active))
        act = None if all_active else torch.as_tensor(active, device=stack.device).reshape(K, 1, 1)
        dm, dd = stack.flow(m, d)
        if adaptive:
            res = to_numpy(stack.residual(m, dm, dd, d, coef)).astype(np.float64) / res_scale
        draws = None
        if gen is not None:
            draws = torch.randn((K, 2, stack.B, n), generator=gen, dtype=stack.dtype,
                                device=stack.device)
            draws *= noisy_k.reshape(K, 1, 1, 1)
        for v in stack.nodes:
            upd_m = coef[v] * dm[v]
            upd_d = coef[v] * dd[v]
            if draws is not None:
                sl = stack.net.slice(v)
                nx, nz = draws[:, 0, :, sl], draws[:, 1, :, sl]
                upd_m = upd_m + noise_coef[v] * 0.5 * (nx + nz)
                upd_d = upd_d + noise_coef[v] * (nx - nz)
            if all_active:
                m[v] = m[v] + upd_m
                d[v] = d[v] + upd_d
            else:
                m[v] = torch.where(act, m[v] + upd_m, m[v])
                d[v] = torch.where(act, d[v] + upd_d, d[v])
        steps += active
        if record:
            hist.append((to_numpy(stack.stacked(m)), to_numpy(stack.stacked(d))))
        if adaptive:
            finite = to_numpy(torch.stack([torch.isfinite(m[v]).all(dim=(1, 2))
                                           & torch.isfinite(d[v]).all(dim=(1, 2))
                                           for v in stack.nodes]).all(dim=0))
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
        r = to_numpy(stack.residual(m, dm, dd, d, coef)).astype(np.float64) / res_scale
        residual = np.where(fixed, r, residual)
    return steps, converged, stalled, residual, hist


def _settle_times(stack, coef, steps, M_end, D_end, settle_tol, h):
    """Per chip: the first time after which the (deterministic) exponential-Euler trajectory
    stays within ``settle_tol`` of its final state (rerun from zero, nothing stored)."""
    K = stack.K
    m, d = stack.zeros(), stack.zeros()
    m_sc = torch.clamp(torch.amax(torch.abs(M_end), dim=(1, 2)), min=torch.finfo(stack.dtype).tiny)
    d_sc = torch.clamp(torch.amax(torch.abs(D_end), dim=(1, 2)), min=torch.finfo(stack.dtype).tiny)
    last_out = torch.zeros(K, dtype=torch.long, device=stack.device)  # last step outside
    steps_t = torch.as_tensor(steps, device=stack.device)
    for k in range(0, int(np.max(steps)) + 1):
        em = torch.amax(torch.abs(stack.stacked(m) - M_end), dim=(1, 2)) / m_sc
        ed = torch.amax(torch.abs(stack.stacked(d) - D_end), dim=(1, 2)) / d_sc
        out = (torch.maximum(em, ed) > settle_tol) & (k <= steps_t)
        last_out = torch.where(out, torch.full_like(last_out, k + 1), last_out)
        if k == int(np.max(steps)):
            break
        dm, dd = stack.flow(m, d)
        live = torch.as_tensor(k < steps, device=stack.device).reshape(K, 1, 1)
        for v in stack.nodes:
            m[v] = torch.where(live, m[v] + coef[v] * dm[v], m[v])
            d[v] = torch.where(live, d[v] + coef[v] * dd[v], d[v])
    return to_numpy(last_out).astype(np.float64) * h


# ---------------------------------------------------------------------- the front
def relax_chips(chips, x, y, *, method, eta, steps, dtype, tol, max_steps, seed, noise_steps,
                settle_tol, dt, t_end, t_max, record, device, horizon):
    """The torch chip engine behind ``relax_chips(..., backend="torch")``; the arguments
    are validated by the caller (:func:`dyadsim.relax_chips`), which documents them.

    Returns
    -------
    ChipBatchResult
        numpy arrays on the host; ``info`` adds backend and device.
    """
    from .._chip_engine import ChipBatchResult
    from ..._validate import check_eta, check_int, check_real

    t0 = time.perf_counter()
    with torch.no_grad():
        stack = TorchChipStack(chips, x, y, dtype, device)
        L = stack.net.depth
        K = stack.K
        if tol is None:
            tol = (1e-11 if method == "continuous" else 1e-12) if stack.np_dtype == np.float64 \
                else float(np.finfo(np.float32).eps)
        tol = check_real("tol", tol, low=0.0, low_open=True)
        gen = _generator(stack, seed)
        noisy = gen is not None
        noisy_k = np.array([c.noise > 0 for c in stack.chips])
        label = f"chip[{method}]"
        info = {"chips": K, "backend": "torch", "device": str(stack.device)}
        common = dict(chips=stack.chips, single=stack.single, info=info)
        if method == "steady":
            m, d, u = stack.fixed_point()
            if noisy:
                n_noise = 2 * L + 20 if noise_steps is None else check_int("noise_steps", noise_steps, 1)
                coef = {v: -torch.expm1(-1.0 / stack.tau[v]) for v in stack.nodes}
                ncoef = {v: stack.noise * torch.sqrt(-torch.expm1(-2.0 / stack.tau[v]))
                         for v in stack.nodes}
                _euler_loop(stack, m, d, coef, ncoef, np.full(K, n_noise), True, tol, gen, False)
                u = {v: stack.preact(m, v) for v in stack.nodes}
                info["noise_steps"] = n_noise
            grads = stack.readout(m, d, u, label)
            res = ChipBatchResult(grads, to_numpy(stack.stacked(m)), to_numpy(stack.stacked(d)),
                                  method, converged=np.ones(K, dtype=bool), residual=np.zeros(K),
                                  steps=None, **common)
        elif method == "euler" or noisy:
            if method == "euler":
                h_step = check_eta(eta)
                label = f"chip[euler, eta={h_step:g}]"
            else:
                h_step = check_real("dt", dt, low=0.0, low_open=True, high=1.0)
                label = f"chip[continuous, Euler-Maruyama dt={h_step:g}]"
            coef = {v: h_step / stack.tau[v] for v in stack.nodes}
            h_max = max(float(torch.max(c)) for c in coef.values())
            if h_max >= 2.0:
                tau_min = min(float(torch.min(t)) for t in stack.tau.values())
                raise DyadsimError(
                    f"the fastest neuron's Euler step eta/tau_j = {h_max:.3g} is >= 2 (tau_j = "
                    f"{tau_min:.3g}): the relaxation would diverge; use a step below {2 * tau_min:.3g}")
            ncoef = {v: stack.noise * torch.sqrt(2.0 * coef[v]) for v in stack.nodes}
            exact = np.array([all(bool(torch.all(coef[v][k] == 1.0)) for v in stack.nodes)
                              for k in range(K)])
            if method == "continuous":
                tmax_tau = max(float(torch.max(t)) for t in stack.tau.values())
                t_end_v = (4 * L + 30) * tmax_tau if t_end is None else check_real(
                    "t_end", t_end, low=0.0, low_open=True)
                n = np.full(K, int(math.ceil(t_end_v / h_step)))
                fixed = np.ones(K, dtype=bool)
            elif steps is not None:
                n, fixed = np.full(K, steps), np.ones(K, dtype=bool)
            else:
                hor = [horizon({v: to_numpy(coef[v][k]) for v in stack.nodes}, L) for k in range(K)]
                n = np.where(exact & ~noisy_k, 2 * L, np.where(noisy_k, hor, max_steps))
                fixed = exact | noisy_k
            m, d = stack.zeros(), stack.zeros()
            steps_arr, conv, stalled, resid, hist = _euler_loop(
                stack, m, d, coef, ncoef, n, fixed, tol, gen, record)
            conv = np.where(fixed, exact & ~noisy_k & (method == "euler") & (n >= 2 * L), conv)
            u = {v: stack.preact(m, v) for v in stack.nodes}
            grads = stack.readout(m, d, u, label)
            M, D = to_numpy(stack.stacked(m)), to_numpy(stack.stacked(d))
            history = None
            if record:
                history = (np.stack([h[0] for h in hist]), np.stack([h[1] for h in hist]))
            if method == "continuous":
                res = ChipBatchResult(grads, M, D, "continuous", converged=conv, residual=resid,
                                      t_final=steps_arr * h_step, t_settle=np.full(K, np.nan),
                                      settle_tol=settle_tol, solver=f"Euler-Maruyama(dt={h_step:g})",
                                      steps=steps_arr, eta=h_step, history=history, **common)
                info["n_steps"] = int(np.max(steps_arr))
            else:
                res = ChipBatchResult(grads, M, D, "euler", eta=h_step, steps=steps_arr,
                                      converged=conv, residual=resid, stalled=stalled,
                                      history=history, **common)
        else:  # noise-free continuous: exponential Euler to steady state
            h_step = check_real("dt", dt, low=0.0, low_open=True, high=1.0)
            settle_tol = check_real("settle_tol", settle_tol, low=0.0, low_open=True)
            tmax_tau = max(float(torch.max(t)) for t in stack.tau.values())
            if t_max is None:
                t_max = (40.0 * L + 200.0) * tmax_tau
            t_max = check_real("t_max", t_max, low=0.0, low_open=True)
            coef = {v: -torch.expm1(-h_step / stack.tau[v]) for v in stack.nodes}
            zero = {v: torch.zeros_like(c) for v, c in coef.items()}
            m, d = stack.zeros(), stack.zeros()
            n = np.full(K, int(math.ceil(t_max / h_step)))
            # residual per unit time: the update of a step over its length
            scale = -math.expm1(-h_step)
            try:
                steps_arr, _, _, resid, _ = _euler_loop(stack, m, d, coef, zero, n, False, tol,
                                                        None, False, res_scale=scale)
            except ConvergenceError as exc:
                raise ConvergenceError(f"the chips' flow did not reach steady state by "
                                       f"t_max={t_max:g} tau: {exc}") from None
            M_t, D_t = stack.stacked(m), stack.stacked(d)
            t_settle = _settle_times(stack, coef, steps_arr, M_t, D_t, settle_tol, h_step)
            u = {v: stack.preact(m, v) for v in stack.nodes}
            label = f"chip[continuous, ETD1 dt={h_step:g}]"
            grads = stack.readout(m, d, u, label)
            res = ChipBatchResult(grads, to_numpy(M_t), to_numpy(D_t), "continuous",
                                  converged=np.ones(K, dtype=bool), residual=resid,
                                  t_final=steps_arr * h_step, t_settle=t_settle,
                                  settle_tol=settle_tol, solver=f"ETD1(dt={h_step:g})",
                                  nfev=int(np.max(steps_arr)) + 1, **common)
            info["n_steps"] = int(np.max(steps_arr))
        res.info["wall_s"] = time.perf_counter() - t0
        return res
