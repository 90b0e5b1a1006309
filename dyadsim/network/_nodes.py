"""General differentiable nodes: a layer node that is not "a sum of linear edges, then an
elementwise activation" (docs/theory.md, section 8).

A node op is a forward map ``m_v = f_v(m_p1, m_p2, ...)`` of its parents' activations
together with the action of its Jacobian's transpose, ``d -> (J_{f_v, p}^T d)_p``.  The
doubled-state dynamics extend to it unchanged: ``m_v`` relaxes toward ``f_v(m_parents)``,
and the error signal it sends back to a parent p is ``J_{f_v, p}^T d_v`` (in place of
``W_pv^T (sigma'(u_v) * d_v)``).  The edges into such a node carry no weight; a node op has
no parameters of its own (trainable per-channel affine maps are edges: ``batchnorm``).
"""

from __future__ import annotations

import numpy as np

from ..errors import DyadsimError
from ._edges import _pair, _padding4, window_out_shape

__all__ = ["NodeOp", "MaxPool2d", "NODE_OPS", "make_node_op", "Pullback"]


class Pullback(dict):
    """``{parent: J_{f_v, parent}^T d_v}``: what a general node sends back to each parent."""


class NodeOp:
    """Interface of a general node (see the module docstring).

    Attributes
    ----------
    kind : str
    out_shape : tuple
        The node's (C, H, W) or (n,) shape.
    """

    kind = "?"
    n_inputs = 1

    def forward(self, inputs):
        """``(f(inputs), ctx)`` from the parents' (B, n_p) activations, in parent order;
        ``ctx`` is what :meth:`vjp` needs (the linearisation point)."""
        raise NotImplementedError

    def vjp(self, ctx, g):
        """``[J_p^T g for each parent p]`` for g (B, n_v), at the point ``ctx``."""
        raise NotImplementedError

    def to_dict(self) -> dict:
        return {"op": self.kind}


class MaxPool2d(NodeOp):
    """PyTorch's MaxPool2d (ceil_mode=False): each output is the largest input of its window
    (padding counts as -inf); J^T sends the error signal to the winner of each window (the
    first one in row-major window order on a tie, as PyTorch does)."""

    kind = "maxpool2d"

    def __init__(self, in_shape, kernel_size, stride=None, padding=0, dilation=1):
        (C, Ho, Wo), _ = window_out_shape("maxpool2d", in_shape, kernel_size, stride, padding,
                                          dilation=dilation)
        self.in_shape = tuple(int(v) for v in in_shape)
        _, H, Wd = self.in_shape
        kh, kw = _pair(kernel_size, "kernel_size")
        self.kernel_size = (kh, kw)
        self.stride = _pair(stride if stride is not None else (kh, kw), "stride")
        self.padding = _pair(padding, "padding")
        self.dilation = _pair(dilation, "dilation")
        if 2 * self.padding[0] > kh or 2 * self.padding[1] > kw:
            raise DyadsimError(f"maxpool2d: padding {self.padding} must be at most half the kernel {self.kernel_size}")
        self.out_shape = (C, Ho, Wo)
        self.n_src = C * H * Wd
        self.n_dst = C * Ho * Wo
        p4 = _padding4(self.padding)
        oy, ox = np.meshgrid(np.arange(Ho), np.arange(Wo), indexing="ij")
        ky, kx = np.meshgrid(np.arange(kh), np.arange(kw), indexing="ij")
        iy = oy.reshape(-1, 1) * self.stride[0] - p4[0] + ky.reshape(1, -1) * self.dilation[0]
        ix = ox.reshape(-1, 1) * self.stride[1] - p4[2] + kx.reshape(1, -1) * self.dilation[1]
        ok = (iy >= 0) & (iy < H) & (ix >= 0) & (ix < Wd)
        base = np.where(ok, iy * Wd + ix, -1)  # (Ho*Wo, K) per channel
        c = np.arange(C)[:, None, None]
        idx = np.where(base[None] >= 0, base[None] + c * H * Wd, self.n_src)  # n_src: the -inf pad
        self.idx = idx.reshape(self.n_dst, -1).astype(np.int64)

    def forward(self, inputs):
        (a,) = inputs
        B = a.shape[0]
        apad = np.empty((B, self.n_src + 1), dtype=a.dtype)
        apad[:, :-1] = a
        apad[:, -1] = -np.inf
        win = apad[:, self.idx]  # (B, n_dst, K)
        k = np.argmax(win, axis=2)
        out = np.take_along_axis(win, k[:, :, None], axis=2)[:, :, 0]
        chosen = self.idx[np.arange(self.n_dst)[None, :], k]  # (B, n_dst) source indices
        return out, chosen

    def vjp(self, ctx, g):
        B = g.shape[0]
        flat = (ctx + (self.n_src + 1) * np.arange(B)[:, None]).ravel()
        r = np.bincount(flat, weights=g.ravel(), minlength=B * (self.n_src + 1))
        return [r.reshape(B, self.n_src + 1)[:, :-1].astype(g.dtype, copy=False)]

    def to_dict(self):
        return {"op": self.kind, "kernel_size": list(self.kernel_size), "stride": list(self.stride),
                "padding": list(self.padding), "dilation": list(self.dilation)}


NODE_OPS = ("maxpool2d",)


def make_node_op(attrs: dict, parent_shapes, node_name) -> NodeOp:
    """Build a general node's op from its graph attributes.

    Parameters
    ----------
    attrs : the node's attributes (``op`` and its settings).
    parent_shapes : the shapes of its parents, in topological order.
    node_name : used in error messages.

    Returns
    -------
    NodeOp
    """
    kind = attrs.get("op")
    if not isinstance(kind, str) or kind not in NODE_OPS:
        raise DyadsimError(f"node {node_name!r}: unknown node op {kind!r}; valid node ops: {', '.join(NODE_OPS)}")
    if len(parent_shapes) != 1:
        raise DyadsimError(f"node {node_name!r}: a {kind} node takes one input, it has {len(parent_shapes)}")
    (src,) = parent_shapes
    if len(src) != 3:
        raise DyadsimError(f"node {node_name!r}: {kind} needs a (C, H, W) input, got shape {tuple(src)}")
    try:
        return MaxPool2d(src, attrs.get("kernel_size", 2), attrs.get("stride"), attrs.get("padding", 0),
                         attrs.get("dilation", 1))
    except DyadsimError as exc:
        raise DyadsimError(f"node {node_name!r}: {exc}") from None


