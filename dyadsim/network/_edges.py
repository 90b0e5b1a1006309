"""Edge operations: how the activations of one layer node drive another.

Every edge is a linear map from the source's flattened activations (B, n_src) to a
contribution to the destination's pre-activation (B, n_dst).  Dense edges hold a full
matrix; structured edges (2-D convolution, average pooling) hold a small weight (or none)
and an index map from each connection to the weight it shares, so the global system stays
sparse: memory grows with the number of connections, not with n^2.

Flattening is free: activations are always stored flat, in PyTorch's (C, H, W) row-major
order, so a ``Flatten`` between a conv layer and a dense one is just a dense edge whose
source is the conv node.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from ..errors import DyadsimError

__all__ = ["EdgeOp", "Dense", "Conv2d", "AvgPool2d", "EDGE_OPS", "make_edge_op", "window_out_shape",
           "MAX_CONNECTIONS"]


class EdgeOp:
    """Interface of an edge operation (see module docstring)."""

    kind = "?"
    has_weight = True

    def check_weight(self, W, what):  # pragma: no cover - overridden
        raise NotImplementedError

    def forward(self, W, a):
        """Contribution W a: (B, n_src) -> (B, n_dst)."""
        raise NotImplementedError

    def backward(self, W, s):
        """W^T s: (B, n_dst) -> (B, n_src)."""
        raise NotImplementedError

    def weight_grad(self, W, delta, a):
        """sum_b dC/dW for this edge given delta (B, n_dst) and a_src (B, n_src)."""
        raise NotImplementedError

    def matrix(self, W):
        """The (n_dst, n_src) matrix (dense ndarray or scipy.sparse)."""
        raise NotImplementedError

    def to_dict(self) -> dict:
        return {"op": self.kind}


class Dense(EdgeOp):
    """A full weight matrix of shape (n_dst, n_src)."""

    kind = "dense"

    def __init__(self, n_src, n_dst):
        self.n_src, self.n_dst = n_src, n_dst
        self.weight_shape = (n_dst, n_src)

    def forward(self, W, a):
        return a @ W.T

    def backward(self, W, s):
        return s @ W

    def weight_grad(self, W, delta, a):
        return delta.T @ a

    def matrix(self, W):
        return W


class _Indexed(EdgeOp):
    """A sparse map whose nonzero k is ``values[widx[k]]`` at (rows[k], cols[k])."""

    rows: np.ndarray
    cols: np.ndarray
    widx: np.ndarray

    def _values(self, W):
        return np.asarray(W).ravel()[self.widx]

    def matrix(self, W):
        return sp.csr_matrix((self._values(W), (self.rows, self.cols)), shape=(self.n_dst, self.n_src))

    def forward(self, W, a):
        M = self.matrix(W).astype(a.dtype, copy=False)
        return np.asarray((M @ a.T).T)

    def backward(self, W, s):
        M = self.matrix(W).astype(s.dtype, copy=False)
        return np.asarray((M.T @ s.T).T)

    def weight_grad(self, W, delta, a):
        contrib = np.einsum("bk,bk->k", delta[:, self.rows], a[:, self.cols])
        return np.bincount(self.widx, weights=contrib, minlength=int(np.prod(self.weight_shape))
                           ).reshape(self.weight_shape).astype(delta.dtype, copy=False)


#: The most connections (weight uses) one structured edge may have: its index maps hold
#: three int64 per connection, and building them takes about 60 bytes per connection.
MAX_CONNECTIONS = 200_000_000


def _int(v, name) -> int:
    if isinstance(v, (bool, np.bool_)):
        raise DyadsimError(f"{name} must be an int or a pair of ints, got {v!r}")
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)) and float(v).is_integer():
        return int(v)
    raise DyadsimError(f"{name} must be an int or a pair of ints, got {v!r}")


def _pair(v, name):
    """An int or a pair of ints (bools, non-integral numbers and other lengths refused)."""
    if isinstance(v, (str, bytes)):
        raise DyadsimError(f"{name} must be an int or a pair of ints, got {v!r}")
    try:
        items = list(v)
    except TypeError:
        x = _int(v, name)
        return x, x
    if len(items) != 2:
        raise DyadsimError(f"{name} must be an int or a pair of ints, got {v!r}")
    return _int(items[0], name), _int(items[1], name)


def _out_size(n, k, s, p, what):
    o = (n + 2 * p - k) // s + 1
    if o < 1:
        raise DyadsimError(f"{what}: kernel {k} with padding {p} does not fit an input of size {n}")
    return o


def _check_window(what, kernel, stride, padding):
    kh, kw = kernel
    sh, sw = stride
    ph, pw = padding
    if min(kh, kw) < 1:
        raise DyadsimError(f"{what}: kernel_size must be >= 1, got {kernel}")
    if min(sh, sw) < 1:
        raise DyadsimError(f"{what}: stride must be >= 1, got {stride}")
    if min(ph, pw) < 0:
        raise DyadsimError(f"{what}: padding must be >= 0, got {padding}")


def _check_connections(what, count):
    if count > MAX_CONNECTIONS:
        raise DyadsimError(
            f"{what} would have {count} connections, more than the {MAX_CONNECTIONS} one edge may "
            "have (check its padding, stride and kernel size)")


def window_out_shape(kind, in_shape, kernel_size, stride=None, padding=0, out_channels=None):
    """Output (C, H, W) of a conv2d/avgpool2d edge, validated, without building it.

    Parameters
    ----------
    kind : ``"conv2d"`` or ``"avgpool2d"``.
    in_shape : the source's (C, H, W).
    kernel_size, stride, padding : ints or pairs (stride None: conv 1, pooling the kernel).
    out_channels : conv2d only.

    Returns
    -------
    (tuple, int)
        The output shape and the number of connections (weight uses) of the edge.
    """
    in_shape = tuple(_int(v, "in_shape") for v in in_shape)
    if len(in_shape) != 3 or min(in_shape) < 1:
        raise DyadsimError(f"{kind} needs a (C, H, W) input shape of positive sizes, got {in_shape!r}")
    C, H, Wd = in_shape
    kh, kw = _pair(kernel_size, "kernel_size")
    if stride is None:
        stride = 1 if kind == "conv2d" else (kh, kw)
    sh, sw = _pair(stride, "stride")
    ph, pw = _pair(padding, "padding")
    _check_window(kind, (kh, kw), (sh, sw), (ph, pw))
    Ho = _out_size(H, kh, sh, ph, kind)
    Wo = _out_size(Wd, kw, sw, pw, kind)
    if kind == "conv2d":
        co = _int(out_channels, "out_channels")
        if co < 1:
            raise DyadsimError(f"conv2d: out_channels must be >= 1, got {co}")
        return (co, Ho, Wo), co * Ho * Wo * C * kh * kw
    return (C, Ho, Wo), C * Ho * Wo * kh * kw


class Conv2d(_Indexed):
    """2-D cross-correlation (PyTorch's Conv2d): weight (C_out, C_in, kh, kw), stride,
    zero padding; input (C_in, H, W) -> output (C_out, H_out, W_out), all flattened."""

    kind = "conv2d"

    def __init__(self, in_shape, out_channels, kernel_size, stride=1, padding=0):
        (out_channels, Ho, Wo), count = window_out_shape("conv2d", in_shape, kernel_size, stride,
                                                         padding, out_channels)
        _check_connections("conv2d", count)
        self.in_shape = tuple(int(v) for v in in_shape)
        C, H, Wd = self.in_shape
        kh, kw = _pair(kernel_size, "kernel_size")
        sh, sw = _pair(stride, "stride")
        ph, pw = _pair(padding, "padding")
        self.out_shape = (int(out_channels), Ho, Wo)
        self.kernel_size, self.stride, self.padding = (kh, kw), (sh, sw), (ph, pw)
        self.weight_shape = (int(out_channels), C, kh, kw)
        self.n_src = C * H * Wd
        self.n_dst = int(np.prod(self.out_shape))
        co, oy, ox, ci, ky, kx = np.meshgrid(np.arange(out_channels), np.arange(Ho), np.arange(Wo),
                                             np.arange(C), np.arange(kh), np.arange(kw), indexing="ij")
        iy = oy * sh - ph + ky
        ix = ox * sw - pw + kx
        ok = (iy >= 0) & (iy < H) & (ix >= 0) & (ix < Wd)
        self.rows = ((co * Ho + oy) * Wo + ox)[ok].astype(np.int64)
        self.cols = ((ci * H + iy) * Wd + ix)[ok].astype(np.int64)
        self.widx = (((co * C + ci) * kh + ky) * kw + kx)[ok].astype(np.int64)

    def to_dict(self):
        return {"op": self.kind, "in_shape": list(self.in_shape), "out_channels": self.out_shape[0],
                "kernel_size": list(self.kernel_size), "stride": list(self.stride),
                "padding": list(self.padding)}


class AvgPool2d(_Indexed):
    """Average pooling (PyTorch's AvgPool2d, count_include_pad=True): no weight."""

    kind = "avgpool2d"
    has_weight = False

    def __init__(self, in_shape, kernel_size, stride=None, padding=0):
        (C, Ho, Wo), count = window_out_shape("avgpool2d", in_shape, kernel_size, stride, padding)
        _check_connections("avgpool2d", count)
        self.in_shape = tuple(int(v) for v in in_shape)
        C, H, Wd = self.in_shape
        kh, kw = _pair(kernel_size, "kernel_size")
        sh, sw = _pair(stride if stride is not None else (kh, kw), "stride")
        ph, pw = _pair(padding, "padding")
        self.out_shape = (C, Ho, Wo)
        self.kernel_size, self.stride, self.padding = (kh, kw), (sh, sw), (ph, pw)
        self.weight_shape = (1,)
        self.n_src = C * H * Wd
        self.n_dst = C * Ho * Wo
        c, oy, ox, ky, kx = np.meshgrid(np.arange(C), np.arange(Ho), np.arange(Wo), np.arange(kh),
                                        np.arange(kw), indexing="ij")
        iy = oy * sh - ph + ky
        ix = ox * sw - pw + kx
        ok = (iy >= 0) & (iy < H) & (ix >= 0) & (ix < Wd)
        self.rows = ((c * Ho + oy) * Wo + ox)[ok].astype(np.int64)
        self.cols = ((c * H + iy) * Wd + ix)[ok].astype(np.int64)
        self.widx = np.zeros(len(self.rows), dtype=np.int64)
        self.fixed = np.array([1.0 / (kh * kw)])

    def _values(self, W):
        return np.broadcast_to(self.fixed, self.rows.shape)

    def weight_grad(self, W, delta, a):  # no parameters
        return None

    def to_dict(self):
        return {"op": self.kind, "in_shape": list(self.in_shape), "kernel_size": list(self.kernel_size),
                "stride": list(self.stride), "padding": list(self.padding)}


EDGE_OPS = ("dense", "conv2d", "avgpool2d")


def make_edge_op(attrs: dict, src_shape, dst_size, edge_name) -> EdgeOp:
    """Build an edge's op from its graph attributes (``op`` and its settings).

    The output size is checked against ``dst_size`` before any index map is built, so a
    conv with a huge padding is refused at once instead of allocating gigabytes.
    """
    kind = attrs.get("op", "dense")
    n_src = int(np.prod(src_shape))
    if kind == "dense":
        return Dense(n_src, dst_size)
    if not isinstance(kind, str) or kind not in EDGE_OPS:
        raise DyadsimError(f"edge {edge_name}: unknown op {kind!r}; valid ops: {', '.join(EDGE_OPS)}")
    if len(src_shape) != 3:
        raise DyadsimError(
            f"edge {edge_name}: op {kind!r} needs a source node with a (C, H, W) 'shape', got {tuple(src_shape)}"
        )
    try:
        if kind == "conv2d":
            W = attrs.get("weight")
            if W is None:
                raise DyadsimError(f"edge {edge_name} has no 'weight' array")
            W = np.asarray(W)
            if W.ndim != 4:
                raise DyadsimError(f"conv2d edge {edge_name}: weight must be (C_out, C_in, kh, kw), got shape {W.shape}")
            args = (W.shape[2:], attrs.get("stride", 1), attrs.get("padding", 0))
            out_shape, _ = window_out_shape("conv2d", src_shape, *args, out_channels=W.shape[0])
            _check_size(kind, src_shape, out_shape, dst_size, edge_name)
            op = Conv2d(src_shape, W.shape[0], *args)
        else:
            args = (attrs.get("kernel_size", 2), attrs.get("stride"), attrs.get("padding", 0))
            out_shape, _ = window_out_shape("avgpool2d", src_shape, *args)
            _check_size(kind, src_shape, out_shape, dst_size, edge_name)
            op = AvgPool2d(src_shape, *args)
    except DyadsimError as exc:
        if str(exc).startswith("edge"):
            raise
        raise DyadsimError(f"edge {edge_name}: {exc}") from None
    return op


def _check_size(kind, src_shape, out_shape, dst_size, edge_name):
    n_dst = int(np.prod(out_shape, dtype=object))
    if n_dst != dst_size:
        raise DyadsimError(
            f"edge {edge_name}: {kind} maps {tuple(src_shape)} to {tuple(out_shape)} "
            f"= {n_dst} neurons, but the destination has size {dst_size}"
        )
