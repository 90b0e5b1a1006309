"""The stacked system on a torch device (internal): edge ops, activations, losses, readout.

Mirrors the numpy :class:`~dyadsim.dynamics._system.System` block by block: dense edges are
matrix products, ``conv2d`` edges ``torch.nn.functional.conv2d`` (transpose: ``conv_transpose2d``,
weight gradient: ``torch.nn.grad.conv2d_weight``, both without autograd), ``avgpool2d`` edges
``avg_pool2d`` (transpose: a depthwise ``conv_transpose2d`` with the constant kernel).
Everything runs under ``torch.no_grad()``; no autograd graph is ever built.
"""

from __future__ import annotations

import numpy as np

from ...errors import DyadsimError
from ...network import ACTIVATIONS, LOSSES
from ..._validate import check_dtype
from .._gradients import Gradients

try:
    import torch
    import torch.nn.functional as F
    import torch.nn.grad as _tgrad
except ImportError:  # pragma: no cover - depends on the machine
    raise DyadsimError(
        "backend='torch' needs PyTorch, an optional extra: pip install 'dyadsim[torch]' "
        "(or pip install torch); the numpy backend (backend='numpy') needs nothing more"
    ) from None

__all__ = ["torch", "TorchSystem", "resolve", "to_numpy"]

_TORCH_DTYPES = {np.float64: torch.float64, np.float32: torch.float32}


def resolve(dtype, device):
    """``(numpy dtype, torch dtype, torch.device)`` after checking that the device exists
    and holds tensors of that dtype (a clear DyadsimError otherwise)."""
    np_dt = check_dtype(dtype)
    t_dt = _TORCH_DTYPES[np_dt]
    if device is None:
        device = "cpu"
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as exc:
        raise DyadsimError(f"unknown torch device {device!r}: {exc}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise DyadsimError(f"device {str(device)!r}: CUDA is not available to this torch "
                           f"({torch.__version__}); use device='cpu'")
    try:
        torch.zeros(1, dtype=t_dt, device=dev)
    except (RuntimeError, TypeError, AssertionError) as exc:
        raise DyadsimError(f"device {str(device)!r} cannot hold {np.dtype(np_dt).name} tensors: "
                           f"{str(exc).splitlines()[0]}") from None
    return np_dt, t_dt, dev


def to_numpy(t):
    """A torch tensor as a numpy array on the host (its dtype kept)."""
    return t.detach().cpu().numpy()


# --------------------------------------------------------------------------- activations
def _softplus(u):
    return torch.logaddexp(torch.zeros((), dtype=u.dtype, device=u.device), u)


def _vs_tanh(u):
    t = torch.tanh(u)
    return t, 1.0 - t * t


def _vs_sigmoid(u):
    s = torch.sigmoid(u)
    return s, s * (1.0 - s)


def _vs_relu(u):
    return torch.clamp_min(u, 0), (u > 0).to(u.dtype)


def _vs_softplus(u):
    return _softplus(u), torch.sigmoid(u)


def _vs_identity(u):
    return u * 1, torch.ones_like(u)


#: name -> u -> (sigma(u), sigma'(u)), the same formulas as the numpy activations
VALUE_AND_SLOPE = {"tanh": _vs_tanh, "sigmoid": _vs_sigmoid, "relu": _vs_relu,
                   "softplus": _vs_softplus, "identity": _vs_identity}


# --------------------------------------------------------------------------- losses
def _mse_value(a, y):
    r = a - y
    return 0.5 * torch.sum(r * r, dim=-1)


def _mse_grad(a, y):
    return a - y


def _xent_value(a, y):
    lse = torch.logsumexp(a, dim=-1, keepdim=True)
    return -torch.sum(y * (a - lse), dim=-1)


def _xent_grad(a, y):
    return torch.softmax(a, dim=-1) * torch.sum(y, dim=-1, keepdim=True) - y


LOSS_FUNS = {"mse": (_mse_value, _mse_grad), "xent": (_xent_value, _xent_grad)}


# --------------------------------------------------------------------------- edge ops
class _TDense:
    kind = "dense"

    def __init__(self, op, W):
        self.W = W

    def forward(self, a):
        return a @ self.W.T

    def backward(self, s):
        return s @ self.W

    def weight_grad(self, delta, a):
        return delta.T @ a


class _TConv:
    kind = "conv2d"

    def __init__(self, op, W):
        self.W = W
        self.in_shape, self.out_shape = op.in_shape, op.out_shape
        self.stride, self.padding = op.stride, op.padding
        kh, kw = op.kernel_size
        _, H, Wd = op.in_shape
        _, Ho, Wo = op.out_shape
        # conv_transpose2d gives (Ho-1)*s - 2p + k; the rows/cols the forward never reached
        # (cut off by the stride) come back through output_padding
        self.output_padding = (H - ((Ho - 1) * op.stride[0] - 2 * op.padding[0] + kh),
                               Wd - ((Wo - 1) * op.stride[1] - 2 * op.padding[1] + kw))

    def forward(self, a):
        B = a.shape[0]
        out = F.conv2d(a.reshape((B,) + self.in_shape), self.W, None, self.stride, self.padding)
        return out.reshape(B, -1)

    def backward(self, s):
        B = s.shape[0]
        out = F.conv_transpose2d(s.reshape((B,) + self.out_shape), self.W, None, self.stride,
                                 self.padding, self.output_padding)
        return out.reshape(B, -1)

    def weight_grad(self, delta, a):
        B = a.shape[0]
        return _tgrad.conv2d_weight(a.reshape((B,) + self.in_shape), self.W.shape,
                                    delta.reshape((B,) + self.out_shape), self.stride, self.padding)


class _TPool:
    kind = "avgpool2d"

    def __init__(self, op, W, dtype, device):
        self.in_shape, self.out_shape = op.in_shape, op.out_shape
        self.kernel_size, self.stride, self.padding = op.kernel_size, op.stride, op.padding
        C = op.in_shape[0]
        kh, kw = op.kernel_size
        # avg_pool2d (count_include_pad=True) is a depthwise convolution with 1/(kh kw)
        self.kernel = torch.full((C, 1, kh, kw), float(op.fixed[0]), dtype=dtype, device=device)
        _, H, Wd = op.in_shape
        _, Ho, Wo = op.out_shape
        self.output_padding = (H - ((Ho - 1) * op.stride[0] - 2 * op.padding[0] + kh),
                               Wd - ((Wo - 1) * op.stride[1] - 2 * op.padding[1] + kw))

    def forward(self, a):
        B = a.shape[0]
        out = F.avg_pool2d(a.reshape((B,) + self.in_shape), self.kernel_size, self.stride,
                           self.padding, ceil_mode=False, count_include_pad=True)
        return out.reshape(B, -1)

    def backward(self, s):
        B = s.shape[0]
        out = F.conv_transpose2d(s.reshape((B,) + self.out_shape), self.kernel, None, self.stride,
                                 self.padding, self.output_padding, groups=self.in_shape[0])
        return out.reshape(B, -1)

    def weight_grad(self, delta, a):  # no parameters
        return None


def _edge(op, W, dtype, device):
    if op.kind == "dense":
        return _TDense(op, W)
    if op.kind == "conv2d":
        return _TConv(op, W)
    if op.kind == "avgpool2d":
        return _TPool(op, W, dtype, device)
    raise DyadsimError(f"the torch backend has no {op.kind!r} edge op")  # pragma: no cover


# --------------------------------------------------------------------------- the system
class TorchSystem:
    """One network, one batch, one dtype and device: per-layer torch tensors.

    Attributes
    ----------
    nodes : the non-input nodes in topological order.
    beta : ``{node: (B, size)}`` the drive W_in x0 + b.
    """

    def __init__(self, net, x, y=None, dtype=np.float64, device=None):
        self.net = net
        self.np_dtype, self.dtype, self.device = resolve(dtype, device)
        for v in net.nodes:
            act = net.activations[v]
            if ACTIVATIONS.get(act.name) is not act:
                raise DyadsimError(
                    f"node {v!r}: activation {act.name!r} is not one of dyadsim's own "
                    f"({', '.join(ACTIVATIONS)}); the torch backend knows only those")
        if LOSSES.get(net.loss.name) is not net.loss:
            raise DyadsimError(f"loss {net.loss.name!r} is not one of dyadsim's own "
                               f"({', '.join(LOSSES)}); the torch backend knows only those")
        if y is None:
            X, self.single = net.check_x(x)
            Y = None
        else:
            X, Y, self.single = net.check_xy(x, y)
        t = self.tensor
        self.X = t(X)
        self.Y = None if Y is None else t(Y)
        self.B = X.shape[0]
        self.n = net.n
        self.nodes = net.nodes
        self.sizes = {v: net.sizes[v] for v in net.nodes}
        self.slices = {v: net.slice(v) for v in net.nodes}
        self.vs = {v: VALUE_AND_SLOPE[net.activations[v].name] for v in net.nodes}
        self.loss_value, self.loss_grad = LOSS_FUNS[net.loss.name]
        self.weights = {k[1:]: t(W) for k, W in net.params.items() if k[0] == "W"}
        self.ops = {e: _edge(op, self.weights.get(e), self.dtype, self.device)
                    for e, op in net.edge_ops.items()}
        inp = net.input
        self.in_edges = {v: [(p, self.ops[(p, v)]) for p in net.preds[v] if p != inp]
                         for v in net.nodes}
        self.out_edges = {v: [(c, self.ops[(v, c)]) for c in net.succs[v]] for v in net.nodes}
        self.output = net.output
        self.beta = {}
        for v in net.nodes:
            b = t(net.bias_vector(v)).expand(self.B, -1)
            if inp in net.preds[v]:
                self.beta[v] = self.ops[(inp, v)].forward(self.X) + b
            else:
                self.beta[v] = b.clone()

    def tensor(self, a):
        """A numpy array as a tensor of this system's dtype on its device."""
        return torch.as_tensor(np.ascontiguousarray(a), dtype=self.dtype, device=self.device)

    # ------------------------------------------------------------------ sweeps
    def preact(self, v, m):
        """u_v = beta_v + sum_p W_pv m_p from per-layer activations ``m``."""
        u = None
        for p, op in self.in_edges[v]:
            c = op.forward(m[p])
            u = c if u is None else u.add_(c)
        return self.beta[v].clone() if u is None else u.add_(self.beta[v])

    def backsum(self, v, s):
        """sum_c W_vc^T s_c (``None`` for the output, which has no successors)."""
        r = None
        for c, op in self.out_edges[v]:
            contrib = op.backward(s[c])
            r = contrib if r is None else r.add_(contrib)
        return r

    def drives(self, m, d):
        """The nonlinear part of the flow in (m, d): per layer ``(N_m, N_d, slope)`` with
        N_m = sigma(u), N_d = W^T (sigma'(u) d) + g, so dm/dt = N_m - m, dd/dt = N_d - d."""
        Nm, slope, s = {}, {}, {}
        for v in self.nodes:
            Nm[v], slope[v] = self.vs[v](self.preact(v, m))
            s[v] = slope[v] * d[v]
        Nd = {}
        for v in self.nodes:
            r = self.backsum(v, s)
            if v == self.output:
                g = self.loss_grad(m[v], self.Y)
                r = g if r is None else r.add_(g)
            Nd[v] = r if r is not None else torch.zeros_like(d[v])
        return Nm, Nd, slope

    # ------------------------------------------------------------------ layout
    def split(self, flat):
        """Per-layer views ``{node: (B, size)}`` of a (B, n) tensor."""
        return {v: flat[:, sl] for v, sl in self.slices.items()}

    def zeros(self):
        return torch.zeros((self.B, self.n), dtype=self.dtype, device=self.device)

    # ------------------------------------------------------------------ readout
    def readout(self, m, delta, label) -> Gradients:
        """The Gradients (numpy arrays) from per-layer m and delta = sigma'(u) d."""
        net = self.net
        B = self.B
        out = {}
        for key in net.params:
            if key[0] == "b":
                v = key[1]
                g = delta[v].sum(dim=0)
                if net.bias_mode[v] == "channel":
                    g = g.reshape(net.shapes[v][0], -1).sum(dim=1)
                out[key] = g / B
            else:
                p, v = key[1], key[2]
                a_p = self.X if p == net.input else m[p]
                out[key] = self.ops[(p, v)].weight_grad(delta[v], a_p) / B
        loss = None
        if self.Y is not None:
            loss = torch.mean(self.loss_value(m[self.output], self.Y))
        # one transfer at the end: every tensor to the host
        host = {k: to_numpy(t) for k, t in out.items()}
        grads = Gradients(method=label)
        for key in net.params:
            grads[key] = host[key]
        if loss is not None:
            grads.loss = float(loss)
        return grads

    def readout_md(self, m, d, label) -> Gradients:
        """The readout from per-layer m and d (the slope recomputed from m)."""
        delta = {}
        for v in self.nodes:
            _, slope = self.vs[v](self.preact(v, m))
            delta[v] = slope * d[v]
        return self.readout(m, delta, label)
