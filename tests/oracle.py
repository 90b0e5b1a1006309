"""An independent reference for every gradient test: plain numpy, no dyadsim code.

This module never imports :mod:`dyadsim`.  It reads a network as *plain data* -- a
:class:`networkx.DiGraph` built by the test itself, or the graph of ``net.to_graph()``:
node attributes ``size`` / ``shape`` / ``activation`` / ``bias``, edge attributes ``op``
(``dense``, ``conv2d``, ``avgpool2d``), ``weight``, ``stride``, ``padding``,
``kernel_size`` -- and evaluates, written from scratch here:

* the forward pass ``u_v = b_v + sum_p op_pv(a_p)``, ``a_v = sigma_v(u_v)`` (its own
  topological order, activations, dense / conv2d / avgpool2d edges, full or per-channel
  biases; conv and pooling by padded strided slices, not by index maps);
* the loss: ``mse`` = mean over the batch of ``0.5 * sum_k (a_k - y_k)^2``, ``xent`` = mean
  over the batch of ``-sum_k y_k log softmax(a)_k`` on the output layer's activations
  (``y`` may be soft: any non-negative rows);
* gradients three ways: :meth:`Oracle.grads` (a hand-written reverse pass),
  :meth:`Oracle.fd_grads` (central finite differences of :meth:`Oracle.loss`) and, for tiny
  nets, closed forms written out by hand (:func:`closed_form_111`,
  :func:`closed_form_12_xent`).

Parameters are keyed as dyadsim keys them, ``("W", src, dst)`` and ``("b", node)``: that
is a data convention, not shared code.  ``tests/test_oracle.py`` checks the three against
each other (and against torch autograd where torch is installed).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import networkx as nx
import numpy as np

__all__ = ["Oracle", "ACTIVATION_FUNCS", "closed_form_111", "closed_form_12_xent", "tensor_errors",
           "worst_error"]


# ----------------------------------------------------------------------------- activations
def _sigmoid(u):
    # 1 / (1 + e^-u), as e^u / (1 + e^u) for u < 0: no overflow, full relative precision
    e = np.exp(-np.abs(u))
    return np.where(u >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def _sech2(u):
    # 1 / cosh(u)^2 = 4 e^{-2|u|} / (1 + e^{-2|u|})^2: no overflow
    e = np.exp(-2.0 * np.abs(u))
    return 4.0 * e / (1.0 + e) ** 2


def _softplus(u):
    # log(1 + e^u) = max(u, 0) + log(1 + e^-|u|)
    return np.maximum(u, 0.0) + np.log1p(np.exp(-np.abs(u)))


ACTIVATION_FUNCS = {
    # name: (sigma, sigma')
    "tanh": (np.tanh, _sech2),
    "sigmoid": (_sigmoid, lambda u: _sigmoid(u) * _sigmoid(-u)),
    "relu": (lambda u: np.where(u > 0, u, 0.0), lambda u: np.where(u > 0, 1.0, 0.0)),
    "softplus": (_softplus, _sigmoid),
    "identity": (lambda u: u + 0.0, lambda u: np.ones_like(u)),
}


# ----------------------------------------------------------------------------- losses
def _log_softmax(a):
    s = a - np.max(a, axis=1, keepdims=True)
    return s - np.log(np.sum(np.exp(s), axis=1, keepdims=True))


def _loss(name, a, y):
    """Mean over the batch of the per-sample cost."""
    if name == "mse":
        return float(np.mean(0.5 * np.sum((a - y) ** 2, axis=1)))
    if name == "xent":
        return float(np.mean(-np.sum(y * _log_softmax(a), axis=1)))
    raise ValueError(f"oracle: unknown loss {name!r}")


def _loss_grad(name, a, y):
    """d(batch loss)/da, (B, n_out)."""
    B = a.shape[0]
    if name == "mse":
        return (a - y) / B
    if name == "xent":
        p = np.exp(_log_softmax(a))
        return (p * np.sum(y, axis=1, keepdims=True) - y) / B
    raise ValueError(f"oracle: unknown loss {name!r}")


# ----------------------------------------------------------------------------- edges
def _pair(v, default=None):
    if v is None:
        v = default
    if np.ndim(v) == 0:
        return int(v), int(v)
    a, b = v
    return int(a), int(b)


def _out_len(n, k, s, p):
    return (n + 2 * p - k) // s + 1


def _windows(Ho, Wo, kh, kw, sh, sw):
    """For every kernel offset (ky, kx): the strided slices of the padded input it reads."""
    for ky in range(kh):
        for kx in range(kw):
            yield ky, kx, (slice(ky, ky + sh * (Ho - 1) + 1, sh), slice(kx, kx + sw * (Wo - 1) + 1, sw))


@dataclass
class _Edge:
    src: object
    dst: object
    op: str
    in_shape: tuple
    out_shape: tuple
    stride: tuple = (1, 1)
    padding: tuple = (0, 0)
    kernel: tuple = (1, 1)

    def forward(self, W, a):
        """(B, n_src) -> (B, n_dst)."""
        B = a.shape[0]
        if self.op == "dense":
            return a @ W.T
        C, H, Wd = self.in_shape
        (sh, sw), (ph, pw), (kh, kw) = self.stride, self.padding, self.kernel
        _, Ho, Wo = self.out_shape
        xp = np.zeros((B, C, H + 2 * ph, Wd + 2 * pw))
        xp[:, :, ph:ph + H, pw:pw + Wd] = a.reshape(B, C, H, Wd)
        out = np.zeros((B,) + tuple(self.out_shape))
        for ky, kx, (ys, xs) in _windows(Ho, Wo, kh, kw, sh, sw):
            patch = xp[:, :, ys, xs]  # (B, C, Ho, Wo)
            if self.op == "conv2d":
                out += np.einsum("bchw,oc->bohw", patch, W[:, :, ky, kx])
            else:  # avgpool2d, zero padding counted (count_include_pad)
                out += patch / (kh * kw)
        return out.reshape(B, -1)

    def backward(self, W, g, a):
        """(d/d a_src, d/dW) of <g, forward(W, a)>."""
        B = a.shape[0]
        if self.op == "dense":
            return g @ W, g.T @ a
        C, H, Wd = self.in_shape
        (sh, sw), (ph, pw), (kh, kw) = self.stride, self.padding, self.kernel
        _, Ho, Wo = self.out_shape
        xp = np.zeros((B, C, H + 2 * ph, Wd + 2 * pw))
        xp[:, :, ph:ph + H, pw:pw + Wd] = a.reshape(B, C, H, Wd)
        g4 = g.reshape((B,) + tuple(self.out_shape))
        gxp = np.zeros_like(xp)
        gW = None if self.op == "avgpool2d" else np.zeros_like(W)
        for ky, kx, (ys, xs) in _windows(Ho, Wo, kh, kw, sh, sw):
            if self.op == "conv2d":
                gxp[:, :, ys, xs] += np.einsum("bohw,oc->bchw", g4, W[:, :, ky, kx])
                gW[:, :, ky, kx] = np.einsum("bohw,bchw->oc", g4, xp[:, :, ys, xs])
            else:
                gxp[:, :, ys, xs] += g4 / (kh * kw)
        return gxp[:, :, ph:ph + H, pw:pw + Wd].reshape(B, -1), gW


# ----------------------------------------------------------------------------- the oracle
def _toposort(nodes, edges):
    """Kahn's algorithm (ties broken by str(name), any order would do)."""
    indeg = {v: 0 for v in nodes}
    for _, d in edges:
        indeg[d] += 1
    ready = sorted((v for v in nodes if indeg[v] == 0), key=str)
    order = []
    while ready:
        v = ready.pop(0)
        order.append(v)
        for s, d in edges:
            if s == v:
                indeg[d] -= 1
                if indeg[d] == 0:
                    ready.append(d)
                    ready.sort(key=str)
    if len(order) != len(nodes):
        raise ValueError("oracle: the graph has a cycle")
    return order


@dataclass
class Oracle:
    """A network read from a plain graph, evaluated in float64 with this module's own code.

    Build with :meth:`from_graph` (a graph the test built) or :meth:`from_net`
    (``net.to_graph()`` read as data, plus ``net.loss.name``).  ``params`` holds copies.
    """

    order: list
    input: object
    output: object
    sizes: dict
    acts: dict
    bias_channels: dict  # node -> None (full bias or no bias) or number of channels
    edges: list
    loss_name: str
    params: dict = field(default_factory=dict)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_graph(cls, G: nx.DiGraph, loss: str) -> "Oracle":
        nodes = list(G.nodes)
        pairs = list(G.edges)
        order = _toposort(nodes, pairs)
        inp = [v for v in nodes if G.in_degree(v) == 0]
        out = [v for v in nodes if G.out_degree(v) == 0]
        if len(inp) != 1 or len(out) != 1:
            raise ValueError("oracle: need one source and one sink")
        shapes, sizes = {}, {}
        for v in nodes:
            attrs = G.nodes[v]
            shape = attrs.get("shape")
            size = attrs.get("size")
            if shape is not None:
                shapes[v] = tuple(int(d) for d in shape)
                sizes[v] = int(np.prod(shapes[v]))
            else:
                sizes[v] = int(size)
                shapes[v] = (sizes[v],)
        params, acts, bias_channels = {}, {}, {}
        for v in order[1:]:
            acts[v] = str(G.nodes[v]["activation"]).lower()
            if acts[v] not in ACTIVATION_FUNCS:
                raise ValueError(f"oracle: unknown activation {acts[v]!r}")
            b = G.nodes[v].get("bias")
            bias_channels[v] = None
            if b is None:
                params[("b", v)] = np.zeros(sizes[v])
            elif b is not False:
                b = np.array(b, dtype=np.float64).reshape(-1)
                if b.shape[0] != sizes[v]:
                    bias_channels[v] = b.shape[0]
                params[("b", v)] = b
        edges = []
        for d in order[1:]:
            for s in [p for p in order if G.has_edge(p, d)]:
                attrs = G.edges[s, d]
                op = attrs.get("op", "dense")
                if op == "dense":
                    e = _Edge(s, d, op, shapes[s], shapes[d])
                    params[("W", s, d)] = np.array(attrs["weight"], dtype=np.float64)
                elif op == "conv2d":
                    W = np.array(attrs["weight"], dtype=np.float64)
                    e = _Edge(s, d, op, shapes[s], shapes[d], _pair(attrs.get("stride"), 1),
                              _pair(attrs.get("padding"), 0), W.shape[2:])
                    params[("W", s, d)] = W
                elif op == "avgpool2d":
                    k = _pair(attrs.get("kernel_size"), 2)
                    e = _Edge(s, d, op, shapes[s], shapes[d], _pair(attrs.get("stride"), k),
                              _pair(attrs.get("padding"), 0), k)
                else:
                    raise ValueError(f"oracle: unknown op {op!r}")
                if op != "dense":
                    C, H, Wd = e.in_shape
                    kh, kw = e.kernel
                    Co = params[("W", s, d)].shape[0] if op == "conv2d" else C
                    want = (Co, _out_len(H, kh, e.stride[0], e.padding[0]),
                            _out_len(Wd, kw, e.stride[1], e.padding[1]))
                    if tuple(shapes[d]) != want:
                        raise ValueError(f"oracle: edge {s}->{d} gives {want}, node has {shapes[d]}")
                edges.append(e)
        return cls(order, inp[0], out[0], sizes, acts, bias_channels, edges, loss, params)

    @classmethod
    def from_net(cls, net) -> "Oracle":
        """Read ``net.to_graph()`` as plain data (sizes, shapes, names, arrays)."""
        return cls.from_graph(net.to_graph(), net.loss.name)

    # ------------------------------------------------------------------ evaluation
    def _bias(self, v, params):
        b = params.get(("b", v))
        if b is None:
            return 0.0
        C = self.bias_channels[v]
        if C is None:
            return b
        return np.repeat(b, self.sizes[v] // C)

    def forward(self, x, params=None):
        """(pre-activations, activations) as ``{node: (B, size)}`` for x of any shape whose
        rows flatten to the input size."""
        params = self.params if params is None else params
        X = np.asarray(x, dtype=np.float64)
        X = X.reshape(-1, self.sizes[self.input]) if X.ndim > 1 else X.reshape(1, -1)
        a = {self.input: X}
        u = {}
        for v in self.order[1:]:
            uv = np.zeros((X.shape[0], self.sizes[v])) + self._bias(v, params)
            for e in self.edges:
                if e.dst == v:
                    uv = uv + e.forward(params.get(("W", e.src, v)), a[e.src])
            u[v] = uv
            a[v] = ACTIVATION_FUNCS[self.acts[v]][0](uv)
        return u, a

    def _targets(self, y, B):
        Y = np.asarray(y, dtype=np.float64)
        return Y.reshape(B, -1)

    def loss(self, x, y, params=None) -> float:
        """The batch loss (mean over samples)."""
        _, a = self.forward(x, params)
        aL = a[self.output]
        return _loss(self.loss_name, aL, self._targets(y, aL.shape[0]))

    def grads(self, x, y, params=None) -> dict:
        """d(batch loss)/d(every parameter) by this module's own reverse pass."""
        params = self.params if params is None else params
        u, a = self.forward(x, params)
        B = a[self.input].shape[0]
        g = {v: np.zeros((B, self.sizes[v])) for v in self.order}  # d loss / d a_v
        g[self.output] = _loss_grad(self.loss_name, a[self.output], self._targets(y, B))
        out = {}
        for v in reversed(self.order[1:]):
            delta = g[v] * ACTIVATION_FUNCS[self.acts[v]][1](u[v])  # d loss / d u_v
            if ("b", v) in params:
                C = self.bias_channels[v]
                gb = delta.sum(axis=0)
                out[("b", v)] = gb if C is None else gb.reshape(C, -1).sum(axis=1)
            for e in self.edges:
                if e.dst == v:
                    ga, gW = e.backward(params.get(("W", e.src, v)), delta, a[e.src])
                    g[e.src] = g[e.src] + ga
                    if gW is not None:
                        out[("W", e.src, v)] = gW
        return {k: out[k] for k in params}

    def fd_grads(self, x, y, rel_step=1e-6, keys=None) -> dict:
        """Central finite differences of :meth:`loss`, step ``rel_step * max(1, |p|)``."""
        out = {}
        for key in (self.params if keys is None else keys):
            P = self.params[key]
            G = np.zeros_like(P)
            for idx in np.ndindex(P.shape):
                h = rel_step * max(1.0, abs(float(P[idx])))
                trial = dict(self.params)
                Pp = P.copy()
                Pp[idx] += h
                trial[key] = Pp
                fp = self.loss(x, y, trial)
                Pm = P.copy()
                Pm[idx] -= h
                trial[key] = Pm
                fm = self.loss(x, y, trial)
                G[idx] = (fp - fm) / (2.0 * h)
            out[key] = G
        return out

    def relu_margin(self, x) -> float:
        """Smallest |u| over relu neurons (inf without relu): distance from the kink."""
        u, _ = self.forward(x)
        m = [np.min(np.abs(u[v])) for v in self.order[1:] if self.acts[v] == "relu"]
        return float(min(m)) if m else float("inf")


# ----------------------------------------------------------------------------- closed form
def closed_form_111(act1, act2, w1, b1, w2, b2, x, y):
    """Gradients of the mse loss of the 1-1-1 net ``a1 = s1(w1 x + b1)``,
    ``a2 = s2(w2 a1 + b2)`` on one sample, written out by hand (``s`` identity or tanh,
    with tanh' = 1 - tanh^2).  Returns ``{"w1", "b1", "w2", "b2", "loss"}``."""
    def s_and_ds(name, u):
        if name == "identity":
            return u, 1.0
        if name == "tanh":
            t = np.tanh(u)
            return t, 1.0 - t * t
        raise ValueError(name)

    a1, s1 = s_and_ds(act1, w1 * x + b1)
    a2, s2 = s_and_ds(act2, w2 * a1 + b2)
    d2 = (a2 - y) * s2
    d1 = d2 * w2 * s1
    return {"w2": d2 * a1, "b2": d2, "w1": d1 * x, "b1": d1, "loss": 0.5 * (a2 - y) ** 2}


def closed_form_12_xent(w, b, x, y):
    """Softmax cross-entropy of the one-layer identity net ``u = w x + b`` (1 input, 2
    outputs) on one sample with (possibly soft) target ``y``, written as
    ``C = y1 softplus(u2 - u1) + y2 softplus(u1 - u2)``, so ``dC/du1 = y2 s(u1 - u2) -
    y1 s(u2 - u1)`` (s = logistic).  Returns ``{"w" (2, 1), "b" (2,), "loss"}``."""
    u1, u2 = w[0, 0] * x + b[0], w[1, 0] * x + b[1]
    sp = lambda t: np.log1p(np.exp(t))  # noqa: E731  (|t| is small in the tests)
    s = lambda t: 1.0 / (1.0 + np.exp(-t))  # noqa: E731
    g1 = y[1] * s(u1 - u2) - y[0] * s(u2 - u1)
    g2 = y[0] * s(u2 - u1) - y[1] * s(u1 - u2)
    return {"w": np.array([[g1 * x], [g2 * x]]), "b": np.array([g1, g2]),
            "loss": y[0] * sp(u2 - u1) + y[1] * sp(u1 - u2)}


# ----------------------------------------------------------------------------- comparison
def tensor_errors(got: dict, ref: dict, floor: float = 1e-6) -> dict:
    """Relative error of every tensor, ``|g - r| / max(|r|, floor * |ref|)`` (2-norms).

    The floor (relative to the norm of the whole reference gradient) only matters for a
    tensor whose reference is (almost) exactly zero, e.g. behind a dead relu layer.  Keys or
    shapes that differ are an error of ``inf``.
    """
    total = float(np.sqrt(sum(np.sum(np.asarray(r) ** 2) for r in ref.values())))
    errs = {}
    for k, r in ref.items():
        g = got.get(k)
        if g is None or np.shape(g) != np.shape(r):
            errs[k] = float("inf")
            continue
        den = max(float(np.linalg.norm(r)), floor * total, 1e-300)
        errs[k] = float(np.linalg.norm(np.asarray(g, dtype=np.float64) - r)) / den
    for k in got:
        if k not in ref:
            errs[k] = float("inf")
    return errs


def worst_error(got: dict, ref: dict, floor: float = 1e-6):
    """(worst tensor key, its relative error)."""
    errs = tensor_errors(got, ref, floor)
    k = max(errs, key=lambda q: errs[q])
    return k, errs[k]
