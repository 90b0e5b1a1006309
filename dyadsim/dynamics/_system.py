"""The stacked system evaluated block by block (internal).

All states are (B, n) arrays; block v occupies columns ``net.slice(v)``.  Weights enter as
dense blocks, so one sweep costs one matrix product per edge, like a forward pass.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from .._validate import check_dtype
from ..errors import DyadsimError
from ._backprop import param_grads
from ._gradients import Gradients
from ._precision import check_representable


class System:
    """One network, one batch (x0, y), one dtype: the flows, the readout, the energy.

    Inputs, targets and weights that overflow the dtype raise a
    :class:`~dyadsim.errors.ConvergenceError` here.  ``beta`` (the drive, W_in x0 + b) is
    computed on first use: the wavefront schedule never needs it.

    Parameters
    ----------
    net : Network
        The network.
    x : array_like, shape (n_in,) or (B, n_in)
        The input batch (x0).
    y : array_like, shape (n_out,) or (B, n_out), optional
        The target batch; ``None`` for the forward pass only.
    dtype : numpy float dtype, optional
        ``float64`` (default) or ``float32``.
    """

    def __init__(self, net, x, y=None, dtype=np.float64):
        self.net = net
        self.dtype = dtype = check_dtype(dtype)
        if y is None:
            X, self.single = net.check_x(x)
            Y = None
        else:
            X, Y, self.single = net.check_xy(x, y)
        with np.errstate(over="ignore"):  # an overflowing cast is reported just below
            self.X = X.astype(dtype, copy=False)
            self.Y = None if Y is None else Y.astype(dtype, copy=False)
            #: {(src, dst): W in dtype, or None for edges without weights}, input edges included
            self.weights = net.edge_weights(dtype)
        check_representable("input x", X, self.X)
        if Y is not None:
            check_representable("target y", Y, self.Y)
        self.B = X.shape[0]
        self.n = net.n
        inp = net.input
        self.slices = {v: net.slice(v) for v in net.nodes}
        self.acts = {v: net.activations[v] for v in net.nodes}
        for (p, v), W in self.weights.items():
            if W is not None:
                check_representable(f"weight W[{p}->{v}]", net.params[("W", p, v)], W)
        w = self.weights.get
        gen = net.node_ops
        #: the layer nodes (sum of linear edges, elementwise activation) and the general ones
        self.layer_nodes = tuple(v for v in net.nodes if v not in gen)
        self.general = tuple(v for v in net.nodes if v in gen)
        # internal edges (both ends stacked) as (src_slice, dst_slice, op, W), in topological
        # order; the edges into general nodes are not linear maps and are left out
        self.edges = [(self.slices[p], self.slices[v], net.edge_ops[(p, v)], w((p, v)))
                      for v in self.layer_nodes for p in net.preds[v] if p != inp]
        self.in_edges = {v: [(self.slices[p], net.edge_ops[(p, v)], w((p, v)))
                             for p in net.preds[v] if p != inp] for v in self.layer_nodes}
        self.out_edges = {v: [(self.slices[c], net.edge_ops[(v, c)], w((v, c)))
                              for c in net.succs[v] if c not in gen] for v in net.nodes}
        self.out = self.slices[net.output]
        self._beta = None

    @property
    def beta(self) -> np.ndarray:
        """The drive beta = [W_in->v x0] + b, (B, n) (computed once, on first use)."""
        if self._beta is None:
            self._beta = self.net._beta(self.X, self.dtype)
        return self._beta

    # ---------------------------------------------------------------- elementary sweeps
    def preact(self, m, nodes=None) -> np.ndarray:
        """u = W m + beta (only the given nodes' columns are filled when ``nodes`` is set)."""
        u = self.beta.copy()
        for v in (self.layer_nodes if nodes is None else nodes):
            if v in self.net.node_ops:
                continue
            sl = self.slices[v]
            for psl, op, W in self.in_edges[v]:
                u[:, sl] += op.forward(W, m[:, psl])
        return u

    def apply(self, which, u, nodes=None, out=None):
        """sigma (which=0), sigma' (1) or sigma'' (2) of u, block by block."""
        res = np.zeros_like(u) if out is None else out
        for v in (self.layer_nodes if nodes is None else nodes):
            if v in self.net.node_ops:
                continue
            sl = self.slices[v]
            act = self.acts[v]
            res[:, sl] = (act.f, act.df, act.d2f)[which](u[:, sl])
        return res

    def backward(self, s) -> np.ndarray:
        """W^T s."""
        r = np.zeros_like(s)
        for psl, vsl, op, W in self.edges:
            r[:, psl] += op.backward(W, s[:, vsl])
        return r

    def cost_grad(self, m) -> np.ndarray:
        """g = [0, ..., dC/da_L] evaluated at m_L, per sample."""
        g = np.zeros_like(m)
        g[:, self.out] = self.net.loss.grad(m[:, self.out], self.Y)
        return g

    def _general_forward(self, m, F):
        """Fill F's columns of the general nodes with f_v(m_parents); their linearisation
        points ``{node: ctx}``."""
        net = self.net
        ctx = {}
        for v in self.general:
            ins = [self.X if p == net.input else m[:, self.slices[p]] for p in net.preds[v]]
            F[:, self.slices[v]], ctx[v] = net.node_ops[v].forward(ins)
        return ctx

    def _general_backward(self, ctx, d, r):
        """Add J_{f_v, p}^T d_v of every general node v into its parents' columns of r."""
        net = self.net
        for v in self.general:
            for p, g in zip(net.preds[v], net.node_ops[v].vjp(ctx[v], d[:, self.slices[v]])):
                if p != net.input:
                    r[:, self.slices[p]] += g

    def fmap(self, m):
        """(f(m), u, ctx): every node's target f_v(m) (sigma(u_v) for a layer node), the
        pre-activations and the general nodes' linearisation points."""
        u = self.preact(m)
        F = self.apply(0, u)
        ctx = self._general_forward(m, F) if self.general else {}
        return F, u, ctx

    def flow_md(self, m, d):
        """(dm/dt, dd/dt, u) at (m, d): dm/dt = f(m) - m, dd/dt = J_f(m)^T d - d + g."""
        F, u, ctx = self.fmap(m)
        dm = F - m
        dd = self.backward(self.apply(1, u) * d)
        if self.general:
            self._general_backward(ctx, d, dd)
        dd -= d
        dd += self.cost_grad(m)
        return dm, dd, u

    def flow_xz(self, x, z):
        m = 0.5 * (x + z)
        d = x - z
        dm, dd, _ = self.flow_md(m, d)
        return dm + 0.5 * dd, dm - 0.5 * dd

    def energy(self, x, z) -> np.ndarray:
        """E(x, z) = d^T F(m) + C(m_L, y), per sample."""
        m = 0.5 * (x + z)
        d = x - z
        F = self.fmap(m)[0] - m
        return np.sum(d * F, axis=1) + self.net.loss.value(m[:, self.out], self.Y)

    # ---------------------------------------------------------------- readout
    def readout(self, m, d, u=None, method=None, slope=None) -> Gradients:
        """dC/dW_pv = mean_b delta_v m_p^T, dC/db_v = mean_b delta_v, delta = sigma'(u) * d.

        ``slope`` (sigma'(u), when the caller has it) or ``u`` may be passed in; otherwise u
        is computed from m."""
        if slope is None:
            if u is None:
                u = self.preact(m)
            slope = self.apply(1, u)
        views = lambda a: {v: a[:, sl] for v, sl in self.slices.items()}  # noqa: E731
        return self.readout_blocks(views(m), views(d), views(slope), method=method)

    def readout_blocks(self, m, d, slope, method=None, delta=None) -> Gradients:
        """The readout from per-layer arrays ``{node: (B, size)}`` of m, d and sigma'(u)
        (or of delta = sigma'(u) * d directly, when the caller has formed it); the one
        parameter-gradient readout :func:`param_grads` that backprop uses too."""
        net = self.net
        if delta is None:  # the general nodes have no parameters: their delta is not read
            delta = {v: slope[v] * d[v] for v in self.layer_nodes}
        acts = dict(m)
        acts[net.input] = self.X
        grads = param_grads(net, delta, acts, self.weights, self.B, method=method)
        if self.Y is not None:
            grads.loss = float(np.mean(net.loss.value(m[net.output], self.Y)))
        return grads

    # ---------------------------------------------------------------- Jacobian
    def jacobian(self, x, z) -> sp.csr_matrix:
        """d(dx/dt, dz/dt)/d(x, z), block-diagonal over samples.

        Variables are ordered sample by sample, [x_b, z_b] for b = 0..B-1.  Not available
        for networks with general nodes (a :class:`~dyadsim.errors.DyadsimError` names one).
        """
        for v in self.general:
            raise DyadsimError(
                f"the analytic Jacobian of the flow (implicit ODE solvers Radau/BDF/LSODA, "
                f"flow_jacobian) does not support general node {v!r} ({self.net.node_ops[v].kind}): "
                "use an explicit solver (e.g. relax_continuous(method='DOP853')) or relax")
        W = self.net.W.astype(self.dtype)
        n = self.n
        I = sp.identity(n, format="csr", dtype=self.dtype)
        m = 0.5 * (x + z)
        d = x - z
        u = self.preact(m)
        s1 = self.apply(1, u)
        s2 = self.apply(2, u) * d
        H = self.net.loss.hess(m[:, self.out], self.Y)
        o = self.out
        blocks = []
        for b in range(self.B):
            D1 = sp.diags(s1[b])
            Jmm = D1 @ W - I
            Jdd = W.T @ D1 - I
            Hb = sp.lil_matrix((n, n), dtype=self.dtype)
            Hb[o, o] = H[b]
            Jdm = W.T @ sp.diags(s2[b]) @ W + Hb.tocsr()
            A = 0.5 * Jmm
            Bq = 0.25 * Jdm
            C = 0.5 * Jdd
            blocks.append(sp.bmat([[A + Bq + C, A + Bq - C], [A - Bq - C, A - Bq + C]]))
        return sp.block_diag(blocks, format="csr")
