"""Edge operations: how the activations of one layer node drive another.

Every edge is a linear map from the source's flattened activations (B, n_src) to a
contribution to the destination's pre-activation (B, n_dst).  Dense edges hold a full
matrix; structured edges (2-D convolution, average pooling) hold a small weight (or none).
They are applied with strided BLAS-backed kernels: a convolution as im2col (one strided
copy per kernel tap) and a batched matrix product, its transpose as the product with W^T
and col2im (each tap's block added back where it was read), its weight gradient as a
product summed over the batch; average pooling as a sum of strided taps where the windows
tile the input, otherwise as two small averaging matrices (``A_h x A_w^T``).  The sparse
block of the global W (:meth:`EdgeOp.matrix`, for the circuits and the stacked system) comes
from an index map from each connection to the weight it shares, built on first use, so the
global system stays sparse: memory grows with the number of connections, not with n^2.

Flattening is free: activations are always stored flat, in PyTorch's (C, H, W) row-major
order, so a ``Flatten`` between a conv layer and a dense one is just a dense edge whose
source is the conv node.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from ..errors import DyadsimError

__all__ = ["EdgeOp", "Dense", "Conv2d", "AvgPool2d", "Identity", "ChannelAffine", "AdaptiveAvgPool2d",
           "EDGE_OPS", "make_edge_op", "window_out_shape",
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
    """A full weight matrix of shape (n_dst, n_src).

    Parameters
    ----------
    n_src : int
        Number of source neurons.
    n_dst : int
        Number of destination neurons.
    """

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
    """A structured map whose nonzero k is ``values[widx[k]]`` at (rows[k], cols[k]).

    The index maps (built on first use, then kept) define :meth:`matrix`, the sparse block
    of the global W; ``forward``, ``backward`` and ``weight_grad`` of the subclasses use
    BLAS-backed strided kernels instead and never build them."""

    def _values(self, W):
        return np.asarray(W).ravel()[self.widx]

    def _maps(self):  # pragma: no cover - overridden
        raise NotImplementedError

    def _get_maps(self):
        maps = self.__dict__.get("_maps_cache")
        if maps is None:
            maps = self.__dict__["_maps_cache"] = self._maps()
        return maps

    rows = property(lambda self: self._get_maps()[0], doc="Row (destination) of each connection.")
    cols = property(lambda self: self._get_maps()[1], doc="Column (source) of each connection.")
    widx = property(lambda self: self._get_maps()[2], doc="Weight index of each connection.")

    def matrix(self, W):
        return sp.csr_matrix((self._values(W), (self.rows, self.cols)), shape=(self.n_dst, self.n_src))


def _window_slices(k, d, s, n_out):
    """The input slice of kernel tap k (dilation d, stride s) over n_out outputs, in the
    padded frame."""
    start = k * d
    return slice(start, start + s * (n_out - 1) + 1, s)


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


def _out_size(n, k, s, p, what, p2=None):
    o = (n + p + (p if p2 is None else p2) - k) // s + 1
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


def _padding4(padding):
    """(top, bottom, left, right) from an int, a pair (h, w) or four ints."""
    if not isinstance(padding, (str, bytes)):
        try:
            items = list(padding)
        except TypeError:
            items = None
        if items is not None and len(items) == 4:
            return tuple(_int(v, "padding") for v in items)
    ph, pw = _pair(padding, "padding")
    return ph, ph, pw, pw


def window_out_shape(kind, in_shape, kernel_size, stride=None, padding=0, out_channels=None,
                     dilation=1, groups=1):
    """Output (C, H, W) of a conv2d/avgpool2d/maxpool2d window, validated, without building it.

    Parameters
    ----------
    kind : ``"conv2d"``, ``"avgpool2d"`` or ``"maxpool2d"``.
    in_shape : the source's (C, H, W).
    kernel_size, stride : ints or pairs (stride None: conv 1, pooling the kernel).
    padding : an int, a pair (h, w), or (top, bottom, left, right).
    out_channels : conv2d only.
    dilation : int or pair (conv2d, maxpool2d).
    groups : conv2d only; divides both channel counts.

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
    pt, pb, pl, pr = _padding4(padding)
    dh, dw = _pair(dilation, "dilation")
    _check_window(kind, (kh, kw), (sh, sw), (min(pt, pb), min(pl, pr)))
    if min(dh, dw) < 1:
        raise DyadsimError(f"{kind}: dilation must be >= 1, got {dilation}")
    Ho = _out_size(H, dh * (kh - 1) + 1, sh, pt, kind, pb)
    Wo = _out_size(Wd, dw * (kw - 1) + 1, sw, pl, kind, pr)
    if kind == "conv2d":
        co = _int(out_channels, "out_channels")
        g = _int(groups, "groups")
        if co < 1:
            raise DyadsimError(f"conv2d: out_channels must be >= 1, got {co}")
        if g < 1 or C % g or co % g:
            raise DyadsimError(f"conv2d: groups={g} must divide in_channels={C} and out_channels={co}")
        return (co, Ho, Wo), co * Ho * Wo * (C // g) * kh * kw
    return (C, Ho, Wo), C * Ho * Wo * kh * kw


def _window_maps(in_shape, out_hw, kernel, stride, padding4, dilation):
    """Index grids of a 2-D window: (oy, ox, ky, kx, iy, ix, ok) broadcast over (Ho, Wo, kh, kw)."""
    _, H, Wd = in_shape
    Ho, Wo = out_hw
    kh, kw = kernel
    oy, ox, ky, kx = np.meshgrid(np.arange(Ho), np.arange(Wo), np.arange(kh), np.arange(kw), indexing="ij")
    iy = oy * stride[0] - padding4[0] + ky * dilation[0]
    ix = ox * stride[1] - padding4[2] + kx * dilation[1]
    ok = (iy >= 0) & (iy < H) & (ix >= 0) & (ix < Wd)
    return oy, ox, ky, kx, iy, ix, ok


class Conv2d(_Indexed):
    """2-D cross-correlation (PyTorch's Conv2d): weight (C_out, C_in / groups, kh, kw),
    stride, zero padding (symmetric (h, w) or (top, bottom, left, right)), dilation, groups;
    input (C_in, H, W) -> output (C_out, H_out, W_out), all flattened.  A Conv1d is the
    case H = 1.

    Parameters
    ----------
    in_shape : tuple of int
        The source's (C_in, H, W).
    out_channels : int
        C_out; ``groups`` divides it.
    kernel_size : int or (int, int)
        (kh, kw).
    stride : int or (int, int), optional
        Default 1.
    padding : int, (int, int) or (int, int, int, int), optional
        Zeros added around the input: symmetric (h, w), or (top, bottom, left, right).
        Default 0.
    dilation : int or (int, int), optional
        Spacing of the kernel taps; default 1.
    groups : int, optional
        Number of channel groups; divides both C_in and C_out.  Default 1.
    """

    kind = "conv2d"

    def __init__(self, in_shape, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1):
        (out_channels, Ho, Wo), count = window_out_shape("conv2d", in_shape, kernel_size, stride,
                                                         padding, out_channels, dilation, groups)
        _check_connections("conv2d", count)
        self.in_shape = tuple(int(v) for v in in_shape)
        C, H, Wd = self.in_shape
        kh, kw = _pair(kernel_size, "kernel_size")
        sh, sw = _pair(stride, "stride")
        p4 = _padding4(padding)
        dh, dw = _pair(dilation, "dilation")
        g = int(groups)
        self.out_shape = (int(out_channels), Ho, Wo)
        self.kernel_size, self.stride, self.dilation, self.groups = (kh, kw), (sh, sw), (dh, dw), g
        self.padding4 = p4
        self.padding = (p4[0], p4[2]) if (p4[0], p4[2]) == (p4[1], p4[3]) else p4
        cg, og = C // g, int(out_channels) // g
        self.weight_shape = (int(out_channels), cg, kh, kw)
        self.n_src = C * H * Wd
        self.n_dst = int(np.prod(self.out_shape))
        # a tap never reads the padding at all: no padded copy is needed
        self._padded = any(p4)
        self._pointwise = (kh, kw) == (1, 1) and (sh, sw) == (1, 1) and not self._padded

    def _maps(self):
        C, H, Wd = self.in_shape
        co_n, Ho, Wo = self.out_shape
        kh, kw = self.kernel_size
        g = self.groups
        cg, og = C // g, co_n // g
        oy, ox, ky, kx, iy, ix, ok = _window_maps(self.in_shape, (Ho, Wo), (kh, kw), self.stride,
                                                  self.padding4, self.dilation)
        co = np.arange(co_n)[:, None, None, None, None, None]
        cl = np.arange(cg)[None, :, None, None, None, None]
        ci = (co // og) * cg + cl
        sel = np.broadcast_to(ok[None, None], (co_n, cg) + ok.shape)
        rows = (co * Ho + oy) * Wo + ox
        cols = (ci * H + iy) * Wd + ix
        widx = ((co * cg + cl) * kh + ky) * kw + kx
        full = sel.shape
        return tuple(np.broadcast_to(v, full)[sel].astype(np.int64) for v in (rows, cols, widx))

    # ------------------------------------------------------------ strided BLAS kernels
    # Layout: the im2col matrix of a batch is (B, g, cg * kh * kw, Ho * Wo), with rows in
    # the weight's (c, ky, kx) order, so one batched matmul with W as (g, og, cg*kh*kw)
    # gives (B, g, og, Ho * Wo) = the output already in (C_out, H_out, W_out) order.
    def _wmat(self, W, dtype):
        g = self.groups
        return np.asarray(W, dtype=dtype).reshape(g, self.weight_shape[0] // g, -1)

    def _im2col(self, a):
        B = a.shape[0]
        C, H, Wd = self.in_shape
        _, Ho, Wo = self.out_shape
        kh, kw = self.kernel_size
        g = self.groups
        x = a.reshape(B, C, H, Wd)
        if self._pointwise:
            return x.reshape(B, g, C // g, H * Wd)
        if self._padded:
            pt, pb, pl, pr = self.padding4
            xp = np.zeros((B, C, H + pt + pb, Wd + pl + pr), dtype=a.dtype)
            xp[:, :, pt:pt + H, pl:pl + Wd] = x
        else:
            xp = x
        cols = np.empty((B, C, kh, kw, Ho, Wo), dtype=a.dtype)
        (sh, sw), (dh, dw) = self.stride, self.dilation
        for ky in range(kh):
            ys = _window_slices(ky, dh, sh, Ho)
            for kx in range(kw):
                cols[:, :, ky, kx] = xp[:, :, ys, _window_slices(kx, dw, sw, Wo)]
        return cols.reshape(B, g, (C // g) * kh * kw, Ho * Wo)

    def forward(self, W, a):
        out = np.matmul(self._wmat(W, a.dtype), self._im2col(a))
        return out.reshape(a.shape[0], self.n_dst)

    def backward(self, W, s):
        B = s.shape[0]
        C, H, Wd = self.in_shape
        _, Ho, Wo = self.out_shape
        kh, kw = self.kernel_size
        g = self.groups
        Wm = self._wmat(W, s.dtype)
        dcols = np.matmul(Wm.transpose(0, 2, 1), s.reshape(B, g, Wm.shape[1], Ho * Wo))
        if self._pointwise:
            return dcols.reshape(B, self.n_src)
        dcols = dcols.reshape(B, C, kh, kw, Ho, Wo)
        pt, pb, pl, pr = self.padding4
        xp = np.zeros((B, C, H + pt + pb, Wd + pl + pr), dtype=s.dtype)
        (sh, sw), (dh, dw) = self.stride, self.dilation
        for ky in range(kh):  # col2im: each tap adds its column block back where it was read
            ys = _window_slices(ky, dh, sh, Ho)
            for kx in range(kw):
                xp[:, :, ys, _window_slices(kx, dw, sw, Wo)] += dcols[:, :, ky, kx]
        if self._padded:
            xp = xp[:, :, pt:pt + H, pl:pl + Wd]
        return xp.reshape(B, self.n_src)

    def weight_grad(self, W, delta, a):
        B = a.shape[0]
        g = self.groups
        cols = self._im2col(a)
        d = delta.reshape(B, g, self.weight_shape[0] // g, -1)
        # one (og, P) x (P, K) product per sample and group, summed over the batch
        gw = np.matmul(d, cols.transpose(0, 1, 3, 2)).sum(axis=0)
        return gw.reshape(self.weight_shape).astype(delta.dtype, copy=False)

    def to_dict(self):
        out = {"op": self.kind, "in_shape": list(self.in_shape), "out_channels": self.out_shape[0],
               "kernel_size": list(self.kernel_size), "stride": list(self.stride),
               "padding": list(self.padding)}
        if self.dilation != (1, 1):
            out["dilation"] = list(self.dilation)
        if self.groups != 1:
            out["groups"] = self.groups
        return out


class _Pool(_Indexed):
    """Shared kernels of the average poolings: a reshape-mean where the windows tile the
    input (stride = kernel, no padding; a remainder that no window reads is cropped), and
    otherwise the separable form ``out_c = A_h x_c A_w^T`` with two small averaging
    matrices (exact: every window is a rectangle whose weight is the product of a row
    weight and a column weight)."""

    has_weight = False

    def _setup(self, tile, Ah, Aw):
        self._tile = tile  # (kh, kw) of the tiling fast path, or None
        self._Ah, self._Aw = Ah, Aw

    def forward(self, W, a):
        B = a.shape[0]
        C, H, Wd = self.in_shape
        _, Ho, Wo = self.out_shape
        x = a.reshape(B, C, H, Wd)
        if self._tile is not None:
            kh, kw = self._tile
            out = None
            for ky in range(kh):  # one strided add per tap (a reduction over the small
                for kx in range(kw):  # window axes of a 6-d view is several times slower)
                    tap = x[:, :, ky:Ho * kh:kh, kx:Wo * kw:kw]
                    out = tap.copy() if out is None else out.__iadd__(tap)
            out *= 1.0 / (kh * kw)
            return out.reshape(B, self.n_dst)
        t = np.matmul(x, self._Aw.T.astype(a.dtype, copy=False))  # (B, C, H, Wo)
        return np.matmul(self._Ah.astype(a.dtype, copy=False), t).reshape(B, self.n_dst)

    def backward(self, W, s):
        B = s.shape[0]
        C, H, Wd = self.in_shape
        _, Ho, Wo = self.out_shape
        g = s.reshape(B, C, Ho, Wo)
        if self._tile is not None:
            kh, kw = self._tile
            g = (g * (1.0 / (kh * kw)))[:, :, :, None, :, None]
            if (Ho * kh, Wo * kw) == (H, Wd):
                out = np.empty((B, C, Ho, kh, Wo, kw), dtype=s.dtype)
                out[...] = g  # a fresh array: the caller may add into it
                return out.reshape(B, self.n_src)
            out = np.zeros((B, C, H, Wd), dtype=s.dtype)
            for ky in range(kh):  # a remainder row/column no window reads gets 0
                for kx in range(kw):
                    out[:, :, ky:Ho * kh:kh, kx:Wo * kw:kw] = g[:, :, :, 0, :, 0]
            return out.reshape(B, self.n_src)
        t = np.matmul(g, self._Aw.astype(s.dtype, copy=False))  # (B, C, Ho, W)
        return np.matmul(self._Ah.T.astype(s.dtype, copy=False), t).reshape(B, self.n_src)

    def weight_grad(self, W, delta, a):  # no parameters
        return None


def _avg_matrix(n_out, n_in, starts, stops):
    """(n_out, n_in): row i averages inputs starts[i] .. stops[i] - 1 (clipped to the
    input) with weight 1 / count[i]; ``count`` is given by the unclipped window."""
    A = np.zeros((n_out, n_in))
    for i, (lo, hi) in enumerate(zip(starts, stops)):
        A[i, max(lo, 0):min(hi, n_in)] = 1.0 / (hi - lo)
    return A


class AvgPool2d(_Pool):
    """Average pooling (PyTorch's AvgPool2d, count_include_pad=True): no weight.

    Parameters
    ----------
    in_shape : tuple of int
        The source's (C, H, W).
    kernel_size : int or (int, int)
        The window (kh, kw).
    stride : int, (int, int) or None, optional
        None (default): the kernel size.
    padding : int or (int, int), optional
        Symmetric zero padding (h, w), counted in every window's divisor; default 0.
    """

    kind = "avgpool2d"

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
        self.fixed = np.array([1.0 / (kh * kw)])
        tile = (kh, kw) if (sh, sw) == (kh, kw) and (ph, pw) == (0, 0) else None
        self._setup(tile,
                    _avg_matrix(Ho, H, [i * sh - ph for i in range(Ho)], [i * sh - ph + kh for i in range(Ho)]),
                    _avg_matrix(Wo, Wd, [j * sw - pw for j in range(Wo)], [j * sw - pw + kw for j in range(Wo)]))

    def _maps(self):
        C, H, Wd = self.in_shape
        _, Ho, Wo = self.out_shape
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        c, oy, ox, ky, kx = np.meshgrid(np.arange(C), np.arange(Ho), np.arange(Wo), np.arange(kh),
                                        np.arange(kw), indexing="ij")
        iy = oy * sh - ph + ky
        ix = ox * sw - pw + kx
        ok = (iy >= 0) & (iy < H) & (ix >= 0) & (ix < Wd)
        rows = ((c * Ho + oy) * Wo + ox)[ok].astype(np.int64)
        cols = ((c * H + iy) * Wd + ix)[ok].astype(np.int64)
        return rows, cols, np.zeros(len(rows), dtype=np.int64)

    def _values(self, W):
        return np.broadcast_to(self.fixed, self.rows.shape)

    def to_dict(self):
        return {"op": self.kind, "in_shape": list(self.in_shape), "kernel_size": list(self.kernel_size),
                "stride": list(self.stride), "padding": list(self.padding)}


class Identity(EdgeOp):
    """A fixed placement without weight: the source's activations are added to the
    destination's neurons ``offset .. offset + n_src`` (a residual sum uses offset 0 on every
    input edge; a concatenation places each input at its own offset)."""

    kind = "identity"
    has_weight = False

    def __init__(self, n_src, n_dst, offset=0):
        offset = _int(offset, "offset")
        if offset < 0 or offset + n_src > n_dst:
            raise DyadsimError(f"identity edge: {n_src} inputs at offset {offset} do not fit {n_dst} neurons")
        self.n_src, self.n_dst, self.offset = n_src, n_dst, offset
        self.weight_shape = (1,)
        self.full = offset == 0 and n_src == n_dst

    def forward(self, W, a):
        if self.full:
            return a.copy()
        out = np.zeros((a.shape[0], self.n_dst), dtype=a.dtype)
        out[:, self.offset:self.offset + self.n_src] = a
        return out

    def backward(self, W, s):
        return s[:, self.offset:self.offset + self.n_src].copy()

    def weight_grad(self, W, delta, a):
        return None

    def matrix(self, W):
        return sp.csr_matrix((np.ones(self.n_src), (np.arange(self.n_src) + self.offset, np.arange(self.n_src))),
                             shape=(self.n_dst, self.n_src))

    def to_dict(self):
        return {"op": self.kind, "offset": self.offset}


class ChannelAffine(EdgeOp):
    """Eval-mode batch normalisation of a (C, ...) source, channel by channel:
    ``gamma_c * (a - mean_c) / sqrt(var_c + eps)``; the weight is gamma (C,) (trainable), the
    running mean and variance are fixed, and BatchNorm's beta is the destination's
    per-channel bias.  Affine, not linear: its matrix (:meth:`matrix`) is the linear part,
    and ``forward`` adds the constant ``-gamma mean / sqrt(var + eps)``."""

    kind = "batchnorm"

    def __init__(self, src_shape, mean, var, eps=1e-5):
        self.in_shape = tuple(int(d) for d in src_shape)
        C = self.in_shape[0]
        self.n_src = self.n_dst = int(np.prod(self.in_shape))
        self.per = self.n_src // C
        mean = np.asarray(mean, dtype=np.float64).reshape(-1)
        var = np.asarray(var, dtype=np.float64).reshape(-1)
        if mean.shape != (C,) or var.shape != (C,):
            raise DyadsimError(f"batchnorm: running_mean and running_var must be ({C},), got "
                               f"{mean.shape} and {var.shape}")
        eps = float(eps)
        if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(var)) and np.all(var + eps > 0)):
            raise DyadsimError("batchnorm: running statistics must be finite with var + eps > 0")
        self.mean, self.var, self.eps = mean, var, eps
        self.inv = 1.0 / np.sqrt(var + eps)
        self.weight_shape = (C,)

    def _rep(self, c, dtype):
        return np.repeat(np.asarray(c, dtype=dtype), self.per)

    def forward(self, W, a):
        scale = self._rep(np.asarray(W) * self.inv, a.dtype)
        return (a - self._rep(self.mean, a.dtype)) * scale

    def backward(self, W, s):
        return s * self._rep(np.asarray(W) * self.inv, s.dtype)

    def weight_grad(self, W, delta, a):
        xhat = (a - self._rep(self.mean, a.dtype)) * self._rep(self.inv, a.dtype)
        return (delta * xhat).sum(axis=0).reshape(self.in_shape[0], -1).sum(axis=1)

    def matrix(self, W):
        return sp.diags(self._rep(np.asarray(W, dtype=np.float64) * self.inv, np.float64), format="csr")

    def to_dict(self):
        return {"op": self.kind, "eps": self.eps}


class AdaptiveAvgPool2d(_Pool):
    """PyTorch's AdaptiveAvgPool2d: output cell (i, j) averages rows floor(i H / Ho) ..
    ceil((i + 1) H / Ho) - 1 (and the same for columns); no weight."""

    kind = "adaptive_avgpool2d"

    def __init__(self, in_shape, output_size):
        self.in_shape = tuple(int(v) for v in in_shape)
        C, H, Wd = self.in_shape
        Ho, Wo = _pair(output_size, "output_size")
        if min(Ho, Wo) < 1:
            raise DyadsimError(f"adaptive_avgpool2d: output_size must be >= 1, got {output_size}")
        self.out_shape = (C, Ho, Wo)
        self.output_size = (Ho, Wo)
        self.weight_shape = (1,)
        self.n_src, self.n_dst = C * H * Wd, C * Ho * Wo
        self._ys = [((i * H) // Ho, -((-(i + 1) * H) // Ho)) for i in range(Ho)]
        self._xs = [((j * Wd) // Wo, -((-(j + 1) * Wd) // Wo)) for j in range(Wo)]
        tile = (H // Ho, Wd // Wo) if H % Ho == 0 and Wd % Wo == 0 else None
        self._setup(tile, _avg_matrix(Ho, H, *zip(*self._ys)), _avg_matrix(Wo, Wd, *zip(*self._xs)))

    def _maps(self):
        C, H, Wd = self.in_shape
        Ho, Wo = self.output_size
        rows, cols, vals = [], [], []
        for i, (y0, y1) in enumerate(self._ys):
            for j, (x0, x1) in enumerate(self._xs):
                yy, xx = np.meshgrid(np.arange(y0, y1), np.arange(x0, x1), indexing="ij")
                k = yy.size
                for c in range(C):
                    rows.append(np.full(k, (c * Ho + i) * Wo + j))
                    cols.append(((c * H + yy) * Wd + xx).ravel())
                    vals.append(np.full(k, 1.0 / k))
        self.vals = np.concatenate(vals)
        return (np.concatenate(rows).astype(np.int64), np.concatenate(cols).astype(np.int64),
                np.zeros(len(self.vals), dtype=np.int64))

    def _values(self, W):
        self._get_maps()
        return self.vals

    def to_dict(self):
        return {"op": self.kind, "in_shape": list(self.in_shape), "output_size": list(self.output_size)}


EDGE_OPS = ("dense", "conv2d", "avgpool2d", "identity", "batchnorm", "adaptive_avgpool2d")


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
    if kind == "identity":
        try:
            return Identity(n_src, dst_size, attrs.get("offset", 0))
        except DyadsimError as exc:
            raise DyadsimError(f"edge {edge_name}: {exc}") from None
    if kind == "batchnorm":
        if n_src != dst_size:
            raise DyadsimError(f"edge {edge_name}: batchnorm keeps the size ({n_src}), the destination has {dst_size}")
        try:
            return ChannelAffine(src_shape, attrs.get("mean"), attrs.get("var"), attrs.get("eps", 1e-5))
        except (DyadsimError, TypeError, ValueError) as exc:
            raise DyadsimError(f"edge {edge_name}: {exc}") from None
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
            more = dict(dilation=attrs.get("dilation", 1), groups=attrs.get("groups", 1))
            out_shape, _ = window_out_shape("conv2d", src_shape, *args, out_channels=W.shape[0], **more)
            _check_size(kind, src_shape, out_shape, dst_size, edge_name)
            op = Conv2d(src_shape, W.shape[0], *args, **more)
        elif kind == "adaptive_avgpool2d":
            osz = _pair(attrs.get("output_size", 1), "output_size")
            _check_size(kind, src_shape, (src_shape[0], *osz), dst_size, edge_name)
            op = AdaptiveAvgPool2d(src_shape, osz)
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
