"""The stacked system on a torch device (internal): edge ops, activations, losses, readout.

Mirrors the numpy :class:`~dyadsim.dynamics._system.System` block by block: dense edges are
matrix products, ``conv2d`` edges ``torch.nn.functional.conv2d`` (transpose and weight
gradient: ``torch.nn.grad.conv2d_input`` / ``conv2d_weight``, without autograd), ``avgpool2d``
edges ``avg_pool2d`` (transpose: ``avg_pool2d_backward``).
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
_aten = torch.ops.aten


def _softplus(u):
    return torch.logaddexp(torch.zeros((), dtype=u.dtype, device=u.device), u)


class _Act:
    """sigma and the product sigma'(u) * d, the latter from sigma(u) where that is enough
    (tanh, sigmoid: one fused kernel) or from u (``needs_u``)."""

    def __init__(self, f, back, needs_u):
        self.f, self.back, self.needs_u = f, back, needs_u


#: the same formulas as dyadsim's numpy activations (softplus: sigma' = expit exactly)
ACTS = {
    "tanh": _Act(torch.tanh, lambda d, val, u: _aten.tanh_backward(d, val), False),
    "sigmoid": _Act(torch.sigmoid, lambda d, val, u: _aten.sigmoid_backward(d, val), False),
    "relu": _Act(torch.relu, lambda d, val, u: _aten.threshold_backward(d, u, 0), True),
    "softplus": _Act(_softplus, lambda d, val, u: d * torch.sigmoid(u), True),
    "identity": _Act(lambda u: u, lambda d, val, u: d, False),
}


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
class _Accumulating:
    """forward_into/backward_into for the structured ops (out of place, then added)."""

    def forward_into(self, acc, a):
        c = self.forward(a)
        return c if acc is None else acc.add_(c)

    def backward_into(self, acc, s):
        c = self.backward(s)
        return c if acc is None else acc.add_(c)


class _TDense:
    kind = "dense"

    def __init__(self, op, W):
        self.W = W
        self.WT = None if W is None else W.T

    def forward(self, a):
        return a @ self.WT

    def forward_into(self, acc, a):
        """acc + W a (acc=None: W a), in place when acc is given."""
        return torch.mm(a, self.WT) if acc is None else acc.addmm_(a, self.WT)

    def backward_into(self, acc, s):
        return torch.mm(s, self.W) if acc is None else acc.addmm_(s, self.W)

    def backward(self, s):
        return s @ self.W

    def weight_grad(self, delta, a):
        return delta.T @ a


class _TConv(_Accumulating):
    kind = "conv2d"

    def __init__(self, op, W):
        self.W = W
        self.in_shape, self.out_shape = op.in_shape, op.out_shape
        self.stride, self.padding = op.stride, op.padding

    def forward(self, a):
        B = a.shape[0]
        out = F.conv2d(a.reshape((B,) + self.in_shape), self.W, None, self.stride, self.padding)
        return out.reshape(B, -1)

    def backward(self, s):
        # the transposed convolution (input gradient of conv2d), without autograd
        B = s.shape[0]
        out = _tgrad.conv2d_input((B,) + self.in_shape, self.W, s.reshape((B,) + self.out_shape),
                                  self.stride, self.padding)
        return out.reshape(B, -1)

    def weight_grad(self, delta, a):
        B = a.shape[0]
        return _tgrad.conv2d_weight(a.reshape((B,) + self.in_shape), self.W.shape,
                                    delta.reshape((B,) + self.out_shape), self.stride, self.padding)


class _TPool(_Accumulating):
    kind = "avgpool2d"

    def __init__(self, op, W, dtype, device):
        self.in_shape, self.out_shape = op.in_shape, op.out_shape
        self.kernel_size, self.stride, self.padding = op.kernel_size, op.stride, op.padding

    def forward(self, a):
        B = a.shape[0]
        out = F.avg_pool2d(a.reshape((B,) + self.in_shape), self.kernel_size, self.stride,
                           self.padding, ceil_mode=False, count_include_pad=True)
        return out.reshape(B, -1)

    def backward(self, s):
        # the transpose of average pooling: each output's value spread evenly over its
        # window (the input is only consulted for its shape)
        B = s.shape[0]
        shape = s.new_empty((B,) + self.in_shape)  # uninitialised: only its shape is read
        out = _aten.avg_pool2d_backward(s.reshape((B,) + self.out_shape), shape, list(self.kernel_size),
                                        list(self.stride), list(self.padding), False, True, None)
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

    Build it from numpy data with ``TorchSystem(net, x, y, dtype, device)`` (validated and
    uploaded) or from tensors already on the device with :meth:`on_device`.

    Attributes
    ----------
    nodes : the non-input nodes in topological order.
    beta : ``{node: (B, size)}`` the drive W_in x0 + b.
    """

    def __init__(self, net, x, y=None, dtype=np.float64, device=None):
        np_dt, t_dt, dev = resolve(dtype, device)
        _check_supported(net)
        if y is None:
            X, single = net.check_x(x)
            Y = None
        else:
            X, Y, single = net.check_xy(x, y)
        up = lambda a: torch.as_tensor(np.ascontiguousarray(a), dtype=t_dt, device=dev)  # noqa: E731
        weights = {k[1:]: up(W) for k, W in net.params.items() if k[0] == "W"}
        biases = {v: up(net.bias_vector(v)) for v in net.nodes}
        self._setup(net, up(X), None if Y is None else up(Y), weights, biases, np_dt, t_dt, dev, single)

    @classmethod
    def on_device(cls, net, X, Y, weights, biases):
        """A system from tensors already on one device (no validation, no host copies).

        Parameters
        ----------
        net : Network
        X, Y : torch.Tensor, (B, n_in) and (B, n_out) (Y may be None)
        weights : ``{(src, dst): tensor}`` shaped like ``net.params``
        biases : ``{node: tensor (size,)}`` (the full bias vector of every node)

        Returns
        -------
        TorchSystem
        """
        _check_supported(net)
        self = cls.__new__(cls)
        np_dt = np.float64 if X.dtype == torch.float64 else np.float32
        self._setup(net, X, Y, weights, biases, np_dt, X.dtype, X.device, False)
        return self

    def _setup(self, net, X, Y, weights, biases, np_dt, t_dt, dev, single):
        self.net = net
        self.np_dtype, self.dtype, self.device = np_dt, t_dt, dev
        self.single = single
        self.X, self.Y = X, Y
        self.B = X.shape[0]
        self.n = net.n
        self.nodes = net.nodes
        self.sizes = {v: net.sizes[v] for v in net.nodes}
        self.slices = {v: net.slice(v) for v in net.nodes}
        self.acts = {v: ACTS[net.activations[v].name] for v in net.nodes}
        self.loss_value, self.loss_grad = LOSS_FUNS[net.loss.name]
        self.weights = weights
        self.ops = {e: _edge(op, weights.get(e), t_dt, dev) for e, op in net.edge_ops.items()}
        inp = net.input
        self.in_edges = {v: [(p, self.ops[(p, v)]) for p in net.preds[v] if p != inp]
                         for v in net.nodes}
        self.out_edges = {v: [(c, self.ops[(v, c)]) for c in net.succs[v]] for v in net.nodes}
        self.output = net.output
        self.beta = {}
        for v in net.nodes:
            # (B, size) where the input drives the layer; else the bias vector (size,),
            # which broadcasts over the batch
            if inp in net.preds[v]:
                self.beta[v] = self.ops[(inp, v)].forward_into(None, X).add_(biases[v])
            else:
                self.beta[v] = biases[v]

    def tensor(self, a):
        """A numpy array as a tensor of this system's dtype on its device."""
        return torch.as_tensor(np.ascontiguousarray(a), dtype=self.dtype, device=self.device)

    # ------------------------------------------------------------------ sweeps
    def preact(self, v, m):
        """u_v = beta_v + sum_p W_pv m_p from per-layer activations ``m`` (a new tensor)."""
        edges = self.in_edges[v]
        if not edges:  # only the input drives it: beta is (B, size)
            return self.beta[v].clone()
        p, op = edges[0]
        if op.kind == "dense":  # one kernel: beta + m_p W^T
            u = torch.addmm(self.beta[v], m[p], op.WT)
        else:
            u = op.forward(m[p]).add_(self.beta[v])
        for p, op in edges[1:]:
            u = op.forward_into(u, m[p])
        return u

    def activate(self, v, m):
        """(sigma(u_v), u_v or None): what :meth:`slope_times` needs later."""
        u = self.preact(v, m)
        act = self.acts[v]
        return act.f(u), (u if act.needs_u else None)

    def slope_times(self, v, d, val, u):
        """sigma'(u_v) * d from sigma(u_v) (and u_v where needed)."""
        return self.acts[v].back(d, val, u)

    def backsum(self, v, s):
        """sum_c W_vc^T s_c (``None`` for the output, which has no successors)."""
        r = None
        for c, op in self.out_edges[v]:
            r = op.backward_into(r, s[c])
        return r

    def drives(self, m, d):
        """The nonlinear part of the flow in (m, d): per layer ``(N_m, N_d, s)`` with
        N_m = sigma(u), s = sigma'(u) d, N_d = W^T s + g, so dm/dt = N_m - m, dd/dt = N_d - d."""
        Nm, s = {}, {}
        for v in self.nodes:
            Nm[v], u = self.activate(v, m)
            s[v] = self.slope_times(v, d[v], Nm[v], u)
        Nd = {}
        for v in self.nodes:
            r = self.backsum(v, s)
            if v == self.output:
                g = self.loss_grad(m[v], self.Y)
                r = g if r is None else r.add_(g)
            Nd[v] = r if r is not None else torch.zeros_like(d[v])
        return Nm, Nd, s

    # ------------------------------------------------------------------ layout
    def split(self, flat):
        """Per-layer views ``{node: (B, size)}`` of a (B, n) tensor."""
        return {v: flat[:, sl] for v, sl in self.slices.items()}

    def zeros(self):
        return torch.zeros((self.B, self.n), dtype=self.dtype, device=self.device)

    # ------------------------------------------------------------------ readout
    def readout_tensors(self, m, delta):
        """``({key: tensor}, loss tensor or None)`` on the device, from per-layer m and
        delta = sigma'(u) d."""
        net = self.net
        B = self.B
        out = {}
        for key in net.params:
            if key[0] == "b":
                v = key[1]
                g = delta[v].sum(dim=0)
                if net.bias_mode[v] == "channel":
                    g = g.reshape(net.shapes[v][0], -1).sum(dim=1)
                out[key] = g.div_(B)
            else:
                p, v = key[1], key[2]
                a_p = self.X if p == net.input else m[p]
                out[key] = self.ops[(p, v)].weight_grad(delta[v], a_p).div_(B)
        loss = None
        if self.Y is not None:
            loss = torch.mean(self.loss_value(m[self.output], self.Y))
        return out, loss

    def readout(self, m, delta, label) -> Gradients:
        """The Gradients (numpy arrays) from per-layer m and delta = sigma'(u) d."""
        out, loss = self.readout_tensors(m, delta)
        grads = Gradients(method=label)
        for key in self.net.params:
            grads[key] = to_numpy(out[key])
        if loss is not None:
            grads.loss = float(loss)
        return grads

    def delta_from(self, m, d):
        """``{node: sigma'(u) d}`` with u recomputed from per-layer m."""
        delta = {}
        for v in self.nodes:
            val, u = self.activate(v, m)
            delta[v] = self.slope_times(v, d[v], val, u)
        return delta

    def readout_md(self, m, d, label) -> Gradients:
        """The readout from per-layer m and d (sigma'(u) recomputed from m)."""
        return self.readout(m, self.delta_from(m, d), label)


def _check_supported(net):
    net.require_standard("the torch backend")
    for v in net.nodes:
        act = net.activations[v]
        if ACTIVATIONS.get(act.name) is not act:
            raise DyadsimError(
                f"node {v!r}: activation {act.name!r} is not one of dyadsim's own "
                f"({', '.join(ACTIVATIONS)}); the torch backend knows only those")
    if LOSSES.get(net.loss.name) is not net.loss:
        raise DyadsimError(f"loss {net.loss.name!r} is not one of dyadsim's own "
                           f"({', '.join(LOSSES)}); the torch backend knows only those")
