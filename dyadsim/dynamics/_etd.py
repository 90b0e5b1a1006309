"""Exponential collocation of the saddle flow (internal): ``relax_continuous(method="ETD")``.

In (m, d) the flow has the form ``dy/dt = -y + N(y)`` with

    N(m, d) = (sigma(W m + beta),  W^T (sigma'(W m + beta) * d) + g(m)):

its linear part is exactly ``-I``.  :class:`ExpCollocation` integrates that part exactly
(variation of constants) against the interpolating polynomial of N through the
Chebyshev-Lobatto points of a step, an implicit exponential Runge-Kutta method whose stage
equations a forward and a backward sweep over the layers solve exactly, because W is
nilpotent (strictly lower triangular).  A fixed point of the flow is a fixed point of every
step.

Also here, shared by every solver of :func:`~dyadsim.relax_continuous`: the steady state
(one topological sweep), the stopping test (per layer), the settling-time tracker that
finds the last time the state was farther than ``settle_tol`` from the steady state on the
solver's dense output, and the trajectory recorder.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import expit

from ..errors import ConvergenceError

__all__ = ["ETD_METHOD", "ExpCollocation", "Recorder", "SettleTracker", "Stopping", "eval_md",
           "integrate_collocation", "steady_state"]

ETD_METHOD = "ETD"
_NOISE = 64.0               # error estimates below 64 eps of the state are rounding noise
_GL_X, _GL_W = np.polynomial.legendre.leggauss(64)
_GROW, _H_MAX, _H0 = 2.0, 20.0, 2.0   # collocation: panel growth per step, longest, first
_PANEL_BYTES = 256 * 2**20  # collocation node arrays: samples are done in chunks beyond this


# ----------------------------------------------------------------------------- shared pieces
def steady_state(sysm):
    """The fixed point of the flow, ``(m*, d*)``: the forward pass and its adjoint.

    One sweep in topological order (W is strictly lower triangular, so each node's value is
    final once its inputs are) and one in reverse: ``m*_v = sigma(u_v)`` (``f_v`` of its
    parents for a general node), ``d*_v = sum_c J_{f_c, v}^T d*_c + [v is the output]
    dC/da_L`` (``W_vc^T (sigma'(u_c) d*_c)`` for a layer node c).
    """
    net = sysm.net
    B, n = sysm.B, sysm.n
    general = set(sysm.general)
    m = np.zeros((B, n), dtype=sysm.dtype)
    S = np.zeros((B, n), dtype=sysm.dtype)
    ctx = {}
    for v in net.nodes:
        sl = sysm.slices[v]
        if v in general:
            ins = [sysm.X if p == net.input else m[:, sysm.slices[p]] for p in net.preds[v]]
            m[:, sl], ctx[v] = net.node_ops[v].forward(ins)
            continue
        u = sysm.beta[:, sl].copy()
        for psl, op, W in sysm.in_edges[v]:
            u += op.forward(W, m[:, psl])
        m[:, sl], S[:, sl] = sysm.acts[v].value_and_slope(u)
    d = np.zeros((B, n), dtype=sysm.dtype)
    d[:, sysm.out] = net.loss.grad(m[:, sysm.out], sysm.Y)
    for v in reversed(net.nodes):
        sl = sysm.slices[v]
        for csl, op, W in sysm.out_edges[v]:   # the layer successors
            d[:, sl] += op.backward(W, S[:, csl] * d[:, csl])
        if v in general:  # d_v is final: send J^T d_v to the parents
            for p, g in zip(net.preds[v], net.node_ops[v].vjp(ctx[v], d[:, sl])):
                if p != net.input:
                    d[:, sysm.slices[p]] += g
    return m, d


class Stopping:
    """The steady-state test, layer by layer and for m and d separately.

    Layer v has reached steady state when ``max|dm_v/dt| <= tol * max|m_v|`` and
    ``max|dd_v/dt| <= tol * max|d_v|`` (a layer whose values head for zero is measured
    against ``floor`` times the largest value of the whole m or d instead), plus a rounding
    allowance of 64 eps of the layer's values -- in the (x, z) encoding d is a difference of
    two numbers of the size of m, so its allowance is 64 eps max|m| -- and of ``noise`` (a
    solver whose local error control is absolute, ``atol``, leaves a state that is only that
    accurate: its rates stay at about ``atol``).
    """

    floor = 1e-9

    def __init__(self, blocks, tol, state, dtype, noise=0.0):
        self.blocks = blocks
        self.tol = float(tol)
        self.xz = state == "xz"
        self.eps = float(np.finfo(dtype).eps)
        self.noise = float(noise)

    def __call__(self, ycol, fcol):
        """``(residual, converged)`` from the per-neuron maxima over the batch of |m|, |d|
        (``ycol``, shape (2, n)) and of |dm/dt|, |dd/dt| (``fcol``); residual = the largest
        per-layer relative rate."""
        worst = 0.0
        ok = True
        if ycol.shape[1] == 0:
            return worst, ok
        m_all = float(ycol[0].max())
        for p in (0, 1):
            g = float(ycol[p].max())
            for sl in self.blocks:
                a = float(fcol[p, sl].max())
                if a == 0.0:
                    continue
                b = float(ycol[p, sl].max())
                den = max(b, self.floor * g)
                allow = 64.0 * self.eps * (m_all if (p == 1 and self.xz) else b) + self.noise
                if not a <= self.tol * den + allow:
                    ok = False
                worst = max(worst, a / den if den > 0 else math.inf)
        return worst, ok

    def from_states(self, m, d, fm, fd):
        """The same test from full (B, n) arrays."""
        ycol = np.stack([np.abs(m).max(axis=0), np.abs(d).max(axis=0)]) if m.shape[0] else \
            np.zeros((2, m.shape[1]))
        fcol = np.stack([np.abs(fm).max(axis=0), np.abs(fd).max(axis=0)]) if m.shape[0] else \
            np.zeros((2, m.shape[1]))
        return self(ycol, fcol)


class SettleTracker:
    """Finds ``t_settle``, the time after which the state stays within ``settle_tol`` of
    the steady state ``(m*, d*)``: ``max|m - m*| <= settle_tol max|m*|`` and
    ``max|d - d*| <= settle_tol max|d*|``.

    It is told every accepted step with the step's continuous extension; where the last
    excursion above ``settle_tol`` ends inside a step, the crossing is located on that
    extension (to ``1e-6`` of the step) by the Illinois method on ``log(dev/settle_tol)``.
    Steps whose ends are both below ``settle_tol / 10`` are not searched inside.
    """

    resolution = 1e-6

    def __init__(self, m_star, d_star, settle_tol):
        self.m_star = np.asarray(m_star, dtype=np.float64)
        self.d_star = np.asarray(d_star, dtype=np.float64)
        sm = float(np.max(np.abs(self.m_star))) if self.m_star.size else 0.0
        sd = float(np.max(np.abs(self.d_star))) if self.d_star.size else 0.0
        if sd == 0.0:
            sd = sm
        if sm == 0.0:
            sm = sd
        if sm == 0.0:
            sm = sd = 1.0
        self.sm, self.sd = sm, sd
        self.tol = float(settle_tol)
        self.t_settle = 0.0
        self.dev_prev = self.dev(np.zeros_like(self.m_star), np.zeros_like(self.d_star))
        self.deviation = self.dev_prev

    def dev(self, m, d, rows=None) -> float:
        """``max(max|m - m*| / max|m*|, max|d - d*| / max|d*|)`` (over the samples ``rows``
        of the batch when given: a slice)."""
        ms = self.m_star if rows is None else self.m_star[rows]
        ds = self.d_star if rows is None else self.d_star[rows]
        em = float(np.max(np.abs(m - ms))) if m.size else 0.0
        ed = float(np.max(np.abs(d - ds))) if d.size else 0.0
        return max(em / self.sm, ed / self.sd)

    def note(self, t: float):
        """The state was farther than ``settle_tol`` from the steady state at time t."""
        self.t_settle = max(self.t_settle, float(t))

    def last_crossing(self, f, pts):
        """The last ``theta`` where ``f`` (the deviation along a step, theta in [0, 1])
        falls through ``settle_tol``, given samples ``pts = [(theta, f(theta)), ...]``
        (ascending, both ends included): 1.0 if the last sample is above, None if no
        sample is; otherwise refined between the last sample above and the next one."""
        tol = self.tol
        last = None
        for i, (_, v) in enumerate(pts):
            if v > tol:
                last = i
        if last is None:
            return None
        if last == len(pts) - 1:
            return 1.0
        a, fa = pts[last]
        b, fb = pts[last + 1]
        ga = math.log(fa / tol)
        gb = math.log(max(fb, 1e-300) / tol)
        side = 0
        while (b - a) > self.resolution:
            c = b - gb * (b - a) / (gb - ga) if gb != ga else 0.5 * (a + b)
            if not a < c < b:
                c = 0.5 * (a + b)
            gc = math.log(max(f(c), 1e-300) / tol)
            if gc > 0:
                a, ga = c, gc
                if side == -1:
                    gb *= 0.5
                side = -1
            else:
                b, gb = c, gc
                if side == 1:
                    ga *= 0.5
                side = 1
            if abs(gc) < 1e-10:  # dev(c) = settle_tol to 1e-10 relative: c is the crossing
                return c
        return 0.5 * (a + b)

    def step(self, t0, t1, m1, d1, interp):
        """Account for the accepted step [t0, t1] ending at (m1, d1); ``interp(theta)``
        returns (m, d) at ``t0 + theta (t1 - t0)``."""
        dev0 = self.dev_prev
        dev1 = self.dev(m1, d1)
        self.dev_prev = self.deviation = dev1
        if dev1 > self.tol:
            self.note(t1)
            return
        if max(dev0, dev1) <= 0.1 * self.tol:
            return
        f = lambda th: self.dev(*interp(th))
        pts = [(0.0, dev0)] + [(th, f(th)) for th in (0.25, 0.5, 0.75)] + [(1.0, dev1)]
        th = self.last_crossing(f, pts)
        if th is not None:
            self.note(t0 + th * (t1 - t0))


class Recorder:
    """The trajectory at the accepted steps, within a memory budget (beyond it, every
    second point is dropped and the stride doubles)."""

    def __init__(self, enabled, max_bytes):
        self.enabled = enabled
        self.max_bytes = max_bytes
        self.t, self.y = [], []
        self.stride, self.count = 1, 0

    def add(self, t, Y, force=False):
        if not self.enabled:
            return
        self.count += 1
        if force or self.count % self.stride == 0:
            self.t.append(float(t))
            self.y.append(np.array(Y, copy=True))
            if len(self.y) * Y.nbytes > self.max_bytes and len(self.y) > 2:
                self.t = self.t[::2]
                self.y = self.y[::2]
                self.stride *= 2

    def finish(self, t, Y):
        if self.enabled and (not self.t or self.t[-1] != t):
            self.t.append(float(t))
            self.y.append(np.array(Y, copy=True))


# ----------------------------------------------------------------------------- collocation


def _lagrange(nodes, bw, x) -> np.ndarray:
    """``L[q, j] = l_j(x_q)``: the Lagrange basis on ``nodes`` (barycentric weights ``bw``)."""
    x = np.atleast_1d(np.asarray(x, dtype=np.float64))
    diff = x[:, None] - nodes[None, :]
    exact = np.abs(diff) < 1e-15
    with np.errstate(divide="ignore", invalid="ignore"):
        T = bw[None, :] / diff
        L = T / T.sum(axis=1, keepdims=True)
    rows = exact.any(axis=1)
    if rows.any():
        L[rows] = exact[rows].astype(np.float64)
    return L


def _cheb_lobatto(K):
    j = np.arange(K + 1)
    nodes = 0.5 * (1.0 - np.cos(np.pi * j / K))
    bw = (-1.0) ** j
    bw[0] *= 0.5
    bw[-1] *= 0.5
    return nodes, bw


class ExpCollocation:
    """Exponential collocation at the K + 1 Chebyshev-Lobatto points of a step (panel).

    On a panel [t0, t0 + H] with nodes ``s_0 = 0 < s_1 < ... < s_K = H`` the state at every
    node is the variation-of-constants formula with N replaced by its interpolant ``P``
    through the values at all nodes, integrated exactly against the linear part:

        y(s_i) = e^{-s_i} y(0) + sum_j A_ij N(y(s_j)),
        A_ij = int_0^{s_i} e^{-(s_i - s)} l_j(s) ds.

    This is an implicit (collocation) exponential Runge-Kutta method with K + 1 stages.  For
    the saddle flow its stage equations are triangular: N_v of layer v depends on the
    predecessors' m (W is strictly lower triangular) and, for d, on the successors' d and on
    m, so one forward sweep over the layers (all nodes at once) and one backward sweep solve
    them exactly -- K evaluations of N per panel, as K matrix products with K B rows.  The
    embedded solution uses the even nodes only (the Chebyshev-Lobatto points of K/2); their
    difference at the panel's end is the error estimate.  The dense output is the same
    formula at any time of the panel (:meth:`dense_row`).
    """

    def __init__(self, K=8):
        if K < 2 or K % 2:
            raise ValueError("K must be an even number >= 2")
        self.K = K
        self.nodes, self.bw = _cheb_lobatto(K)
        self.sub = np.arange(0, K + 1, 2)
        self.sub_nodes, self.sub_bw = _cheb_lobatto(K // 2)
        self.error_order = K // 2 + 1
        self._H = None

    @staticmethod
    def _expint_rows(nodes, bw, H, targets):
        """``R[q, j] = int_0^{t_q H} e^{-(t_q H - s)} l_j(s / H) ds`` (64-point Gauss-Legendre:
        the integrand is smooth, and H <= 20 keeps e^{-(t H - s)} well resolved)."""
        R = np.zeros((len(targets), len(nodes)))
        for q, tq in enumerate(targets):
            sq = tq * H
            if sq <= 0.0:
                continue
            sg = 0.5 * (_GL_X + 1.0) * sq
            wq = 0.5 * _GL_W * sq * np.exp(-(sq - sg))
            R[q] = wq @ _lagrange(nodes, bw, sg / H)
        return R

    def matrices(self, H: float):
        """``(A, ex, low)``: A (K, K+1) maps the N values at the nodes to the node states
        1..K, ``ex = e^{-s_i}`` (i = 1..K), ``low`` (K+1,) the embedded end row."""
        if H == self._H:
            return self._cache
        A = self._expint_rows(self.nodes, self.bw, H, self.nodes[1:])
        low = np.zeros(self.K + 1)
        low[self.sub] = self._expint_rows(self.sub_nodes, self.sub_bw, H, [1.0])[0]
        ex = np.exp(-self.nodes[1:] * H)
        self._H = H
        self._cache = (A, ex, low)
        return self._cache

    def dense_row(self, H: float, theta: float) -> np.ndarray:
        """Coefficients on ``[N(s_0), ..., N(s_K), y(0)]`` of the state at ``theta H``: the
        same variation-of-constants formula as the nodes' (exact for the linear part)."""
        row = np.empty(self.K + 2)
        row[:-1] = self._expint_rows(self.nodes, self.bw, H, [theta])[0]
        row[-1] = math.exp(-theta * H)
        return row


def eval_md(sysm, m, d):
    """``(N_m, sigma'(u), N_d)`` at the state (m, d), (B, n) arrays (sigma' is 0 in the
    columns of general nodes)."""
    Nm, u, ctx = sysm.fmap(m)
    S = sysm.apply(1, u)
    Nd = sysm.backward(S * d)
    if sysm.general:
        sysm._general_backward(ctx, d, Nd)
    Nd += sysm.cost_grad(m)
    return Nm, S, Nd


def _act_into(act, u, val, slope):
    """sigma(u) into ``val`` and sigma'(u) into ``slope`` (in place for tanh and sigmoid)."""
    if act.name == "tanh":
        np.tanh(u, out=val)
        np.multiply(val, val, out=slope)
        np.subtract(1.0, slope, out=slope)
    elif act.name == "sigmoid":
        expit(u, out=val)
        np.multiply(val, val, out=slope)
        np.subtract(val, slope, out=slope)
    else:
        a, s = act.value_and_slope(u)
        val[...] = a
        slope[...] = s


class _Panel:
    """Per-layer node arrays of one chunk of samples (contiguous per layer)."""

    def __init__(self, sysm, K, Bc, dtype):
        self.m = {}
        self.d = {}
        self.sd = {}
        self.nm = {}   # [N_m(s_0), ..., N_m(s_K), m(0)] per layer
        self.nd = {}   # the same for d
        widest = max(sl.stop - sl.start for sl in sysm.slices.values())
        self._u = np.empty(K * Bc * widest, dtype=dtype)   # pre-activations, one layer at a time
        for v in sysm.net.nodes:
            nv = sysm.slices[v].stop - sysm.slices[v].start
            # node states 0..K and, in row K + 1, the error estimate of the panel's end
            self.m[v] = np.empty((K + 2, Bc, nv), dtype=dtype)
            self.d[v] = np.empty((K + 2, Bc, nv), dtype=dtype)
            self.sd[v] = np.empty((K, Bc, nv), dtype=dtype)
            self.nm[v] = np.empty((K + 2, Bc, nv), dtype=dtype)
            self.nd[v] = np.empty((K + 2, Bc, nv), dtype=dtype)

    @staticmethod
    def bytes_per_sample(n, K, itemsize):
        return (4 * (K + 2) + 2 * K) * n * itemsize

    def u(self, K, Bc, nv):
        return self._u[:K * Bc * nv].reshape(K, Bc, nv)

    def node_state(self, sysm, j):
        """(m, d) at node j (0..K), (Bc, n)."""
        first = next(iter(self.m.values()))
        Bc = first.shape[1]
        m = np.empty((Bc, sysm.n), dtype=first.dtype)
        d = np.empty_like(m)
        for v, sl in sysm.slices.items():
            m[:, sl] = self.m[v][j]
            d[:, sl] = self.d[v][j]
        return m, d

    def dense(self, sysm, row):
        """(m, d) at an interior time of the panel, ``row`` (K+2,) the dense-output
        coefficients on ``[N(s_0), ..., N(s_K), y(0)]`` (:meth:`ExpCollocation.dense_row`)."""
        first = next(iter(self.m.values()))
        m = np.empty((first.shape[1], sysm.n), dtype=first.dtype)
        d = np.empty_like(m)
        r = row.astype(first.dtype)
        for v, sl in sysm.slices.items():
            m[:, sl] = np.tensordot(r, self.nm[v], axes=1)
            d[:, sl] = np.tensordot(r, self.nd[v], axes=1)
        return m, d


def _apply(op, W, src, out, first, direction):
    """``out = op(src)`` (first) or ``out += op(src)``; dense edges multiply in place."""
    if getattr(op, "kind", None) == "dense":
        M = W.T if direction == "forward" else W
        if first:
            np.matmul(src, M, out=out)
        else:
            out += src @ M
        return
    r = op.forward(W, src) if direction == "forward" else op.backward(W, src)
    if first:
        out[...] = r
    else:
        out += r


def _sweep(sysm, K, R, Aext, m0, d0, Nm0, S0, Nd0, P, out):
    """One panel for the samples R: the node states into the panel arrays P, the values of
    N and sigma' at the panel's end into ``out`` (Nm1, S1, Nd1), the end state into
    ``out[3:]`` (m1, d1); returns the embedded-error maxima (m, d).

    ``Aext`` (K+1, K+2) maps ``[N(s_0), ..., N(s_K), y(0)]`` to the node states 1..K and,
    in its last row, to the difference of the two end values (the error estimate)."""
    net = sysm.net
    Bc = R.stop - R.start
    rows = K * Bc
    Nm1, S1, Nd1, m1, d1 = out
    err = [0.0, 0.0]
    general = set(sysm.general)
    ctx = {}
    for v in net.nodes:
        sl = sysm.slices[v]
        nv = sl.stop - sl.start
        Mv, buf, SD = P.m[v], P.nm[v], P.sd[v]
        if v in general:  # f_v of its parents at every node; its linearisation for J^T
            ins = [np.tile(sysm.X[R], (K, 1)) if p == net.input
                   else P.m[p][1:K + 1].reshape(rows, P.m[p].shape[2]) for p in net.preds[v]]
            val, ctx[v] = net.node_ops[v].forward(ins)
            buf[1:K + 1] = val.reshape(K, Bc, nv)
            SD[...] = 0.0
        else:
            _layer_forward(sysm, net, K, R, Bc, rows, v, sl, nv, P, buf, SD)
        buf[0] = Nm0[R, sl]
        buf[K + 1] = m0[R, sl]
        Mv[0] = m0[R, sl]
        np.matmul(Aext, buf.reshape(K + 2, Bc * nv), out=Mv[1:].reshape(K + 1, Bc * nv))
        err[0] = max(err[0], float(np.max(np.abs(Mv[K + 1]))))
        Nm1[R, sl] = buf[K]
        S1[R, sl] = SD[K - 1]
        m1[R, sl] = Mv[K]
    Y = sysm.Y[R]
    pushed = {}   # J^T d of general nodes, sent to their parents (rows, n_p)
    for v in reversed(net.nodes):
        sl = sysm.slices[v]
        nv = sl.stop - sl.start
        Dv, buf, SDv = P.d[v], P.nd[v], P.sd[v]
        nd = buf[1:K + 1].reshape(rows, nv)
        first = True
        for c_node in net.succs[v]:
            if c_node in general:
                continue  # pushed below, when c_node was done
            src = P.sd[c_node].reshape(rows, P.sd[c_node].shape[2])
            _apply(net.edge_ops[(v, c_node)], sysm.weights.get((v, c_node)), src, nd, first,
                   "backward")
            first = False
        if v in pushed:
            if first:
                nd[...] = pushed.pop(v)
            else:
                nd += pushed.pop(v)
            first = False
        if sl == sysm.out:
            Yt = np.broadcast_to(Y, (K,) + Y.shape).reshape(rows, Y.shape[1])
            g = net.loss.grad(P.m[v][1:K + 1].reshape(rows, nv), Yt)
            if first:
                nd[...] = g
            else:
                nd += g
            first = False
        if first:
            nd[...] = 0.0
        buf[0] = Nd0[R, sl]
        buf[K + 1] = d0[R, sl]
        Dv[0] = d0[R, sl]
        np.matmul(Aext, buf.reshape(K + 2, Bc * nv), out=Dv[1:].reshape(K + 1, Bc * nv))
        err[1] = max(err[1], float(np.max(np.abs(Dv[K + 1]))))
        Nd1[R, sl] = buf[K]
        d1[R, sl] = Dv[K]
        if v in general:
            grads = net.node_ops[v].vjp(ctx[v], Dv[1:K + 1].reshape(rows, nv))
            for p, gp in zip(net.preds[v], grads):
                if p != net.input:
                    pushed[p] = gp if p not in pushed else pushed[p] + gp
        else:
            # what the predecessors' backward products need: sigma'(u_v) d_v at the nodes
            SDv *= Dv[1:K + 1]
    return err


def _layer_forward(sysm, net, K, R, Bc, rows, v, sl, nv, P, buf, SD):
    """N_m = sigma(u) of layer node v at the nodes 1..K into ``buf[1:K+1]``, sigma' into SD."""
    u = P.u(K, Bc, nv)
    u2 = u.reshape(rows, nv)
    first = True
    for p in net.preds[v]:
        if p == net.input:
            continue  # its contribution is in beta
        src = P.m[p][1:K + 1].reshape(rows, P.m[p].shape[2])
        _apply(net.edge_ops[(p, v)], sysm.weights.get((p, v)), src, u2, first, "forward")
        first = False
    if first:
        u[...] = sysm.beta[R, sl]
    else:
        u += sysm.beta[R, sl]
    _act_into(sysm.acts[v], u, buf[1:K + 1], SD)


def integrate_collocation(sysm, stopping, tracker, recorder, *, rtol, atol, settle_tol, t_max,
                          state="md", h_max=None, h_min=1e-6, K=8, bar=None):
    """Integrate the flow from 0 with :class:`ExpCollocation` panels and step-size control
    until ``stopping`` says steady state.

    The error estimate at a panel's end is measured, for m and d separately, against
    ``rtol * max(max|dy/dt|, settle_tol * max|y|) + atol`` at the panel's end (plus 64 eps
    max|y|, the rounding floor): relative to the rate the state still changes at, which
    keeps the transient accurate relative to its own size as it decays (errors made early
    decay with it), down to ``settle_tol`` of the state.  A panel whose error stays above
    that at ``h_min`` (a kink of relu) is accepted and counted in ``n_forced``.  With
    ``state="xz"`` the state kept between panels is x and z (with their rounding).  The
    trajectory handed to ``recorder`` is (m, d) at every node.  Returns a dict with the final
    state and the counters (``nfev`` counts evaluations of N for the whole batch).
    """
    xz = state == "xz"
    dt = sysm.dtype
    B, n = sysm.B, sysm.n
    h_max = _H_MAX if h_max is None else h_max
    col = ExpCollocation(K)
    per = _Panel.bytes_per_sample(n, K, np.dtype(dt).itemsize)
    chunk = max(1, min(B, _PANEL_BYTES // per))
    chunks = [slice(i, min(B, i + chunk)) for i in range(0, B, chunk)]
    panels = {}

    def panel(size):
        if size not in panels:
            panels[size] = _Panel(sysm, K, size, dt)
        return panels[size]

    m0 = np.zeros((B, n), dtype=dt)
    d0 = np.zeros((B, n), dtype=dt)
    Nm0, S0, Nd0 = eval_md(sysm, m0, d0)
    nfev = 1
    if not (np.isfinite(Nm0).all() and np.isfinite(Nd0).all()):
        raise ConvergenceError("the ODE relaxation produced NaN/inf at t=0 tau "
                               "(the flow overflows: are the weights or inputs huge?)")
    recorder.add(0.0, np.stack([m0, d0]), force=True)
    residual, ok = stopping.from_states(m0, d0, Nm0 - m0, Nd0 - d0)
    eps = float(np.finfo(dt).eps)
    expo = -1.0 / (col.error_order + 1)
    t = 0.0
    H = float(np.clip(_H0 * (rtol / 1e-2) ** (-expo), 0.05, _H0))
    n_acc = n_rej = n_forced = 0
    stalled = False
    best, best_step = math.inf, 0
    ymax_prev = [0.0, 0.0]
    dev_start = [tracker.dev(m0[R], d0[R], rows=R) for R in chunks]
    grow_ok = True
    nodes = col.nodes
    while not ok:
        H = min(H, h_max, t_max - t)
        A, ex, low = col.matrices(H)
        Aext = np.zeros((K + 1, K + 2))
        Aext[:K, :K + 1] = A
        Aext[:K, K + 1] = ex
        Aext[K, :K + 1] = A[-1] - low       # the two end values share e^{-H} y(0)
        Aext = Aext.astype(dt)
        out = tuple(np.empty_like(m0) for _ in range(5))
        m1, d1 = out[3], out[4]
        err_abs = [0.0, 0.0]
        notes = []
        dev_end = []
        rec_nodes = [] if recorder.enabled else None
        for ci, R in enumerate(chunks):
            P = panel(R.stop - R.start)
            e = _sweep(sysm, K, R, Aext, m0, d0, Nm0, S0, Nd0, P, out)
            err_abs = [max(err_abs[0], e[0]), max(err_abs[1], e[1])]
            # settling: the deviation at the nodes, the crossing on the node polynomial
            de = tracker.dev(m1[R], d1[R], rows=R)
            dev_end.append(de)
            if de > tracker.tol:
                notes.append(1.0)
            elif max(de, dev_start[ci]) > 0.1 * tracker.tol:
                pts = [(0.0, dev_start[ci])]
                pts += [(float(nodes[j]), tracker.dev(*P.node_state(sysm, j), rows=R))
                        for j in range(1, K)]
                pts.append((1.0, de))

                def f(th, P=P, R=R, H=H):
                    return tracker.dev(*P.dense(sysm, col.dense_row(H, th)), rows=R)

                th = tracker.last_crossing(f, pts)
                if th is not None:
                    notes.append(th)
            if rec_nodes is not None:
                rec_nodes.append((R, [P.node_state(sysm, j) for j in range(1, K + 1)]))
        nfev += K
        Nm1, S1, Nd1 = out[:3]
        rate = [float(np.max(np.abs(Nm1 - m1))), float(np.max(np.abs(Nd1 - d1)))]
        ymax = [float(np.max(np.abs(m1))), float(np.max(np.abs(d1)))]
        if not all(math.isfinite(x) for x in err_abs + ymax):
            raise ConvergenceError(
                f"the ODE relaxation produced NaN/inf at t={t + H:.4g} tau (panel {n_acc + 1}); "
                "the flow overflows: are the weights or inputs huge?")
        err = 0.0
        for p in (0, 1):
            sc = (rtol * max(rate[p], settle_tol * max(ymax[p], ymax_prev[p])) + atol
                  + _NOISE * eps * max(ymax[p], ymax_prev[p]))
            err = max(err, err_abs[p] / sc)
        if err > 1.0 and H > h_min:
            n_rej += 1
            H = max(h_min, H * max(0.2, 0.9 * err ** expo))
            grow_ok = False
            continue
        if err > 1.0:
            n_forced += 1  # at the smallest step (a kink of relu): accepted as it is
        if not (np.isfinite(Nm1).all() and np.isfinite(Nd1).all()):
            raise ConvergenceError(
                f"the ODE relaxation produced NaN/inf at t={t + H:.4g} tau (panel {n_acc + 1}); "
                "the flow overflows: are the weights or inputs huge?")
        if notes:
            tracker.note(t + max(notes) * H)
        tracker.deviation = tracker.dev_prev = max(dev_end)
        dev_start = dev_end
        if rec_nodes is not None:
            for j in range(K):
                Yj = np.empty((2, B, n), dtype=dt)
                for R, states in rec_nodes:
                    Yj[0, R], Yj[1, R] = states[j]
                recorder.add(t + nodes[j + 1] * H, Yj, force=True)
        t += H
        n_acc += 1
        if xz:
            # the physical encoding: the state kept between panels is x = m + d/2 and
            # z = m - d/2, so d = x - z carries their rounding (eps max|m|)
            X, Z = m1 + 0.5 * d1, m1 - 0.5 * d1
            m1, d1 = 0.5 * (X + Z), X - Z
            Nm1, S1, Nd1 = eval_md(sysm, m1, d1)
            nfev += 1
        m0, d0, Nm0, S0, Nd0 = m1, d1, Nm1, S1, Nd1
        ymax_prev = ymax
        residual, ok = stopping.from_states(m0, d0, Nm0 - m0, Nd0 - d0)
        if bar is not None:
            bar.update(1)
        if residual < 0.5 * best:
            best, best_step = residual, n_acc
        elif not ok and n_acc - best_step >= 6 and residual <= math.sqrt(eps) and H >= 1.0:
            ok = stalled = True  # at the rounding floor of the dtype
        if ok:
            break
        if t >= t_max:
            raise ConvergenceError(
                f"the flow did not reach steady state (tol={stopping.tol:g}) by "
                f"t_max={t_max:g} tau (largest per-layer relative rate {residual:.3g})")
        fac = _GROW if err == 0.0 else min(_GROW, max(0.2, 0.9 * err ** expo))
        H *= fac if grow_ok else min(1.0, fac)
        grow_ok = True
    recorder.finish(t, np.stack([m0, d0]))
    out = {"Y": np.stack([m0, d0]), "t": t, "n_steps": n_acc, "n_rejected": n_rej,
           "n_forced": n_forced, "residual": residual, "stalled": stalled, "nfev": nfev}
    if xz:
        out["XZ"] = np.stack([X, Z]) if n_acc else np.zeros((2, B, n), dtype=dt)
    return out
