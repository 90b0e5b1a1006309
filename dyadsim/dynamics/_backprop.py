"""Exact digital backpropagation: the reference every other method is compared with."""

from __future__ import annotations

import numpy as np

from .._util import check_dtype
from ..errors import DyadsimError
from ._chip import Chip
from ._backend import use_torch
from ._gradients import Gradients

__all__ = ["backprop"]


def backprop(net, x, y, dtype=np.float64, *, backend="numpy", device=None) -> Gradients:
    """Gradients of the mean batch loss by reverse-mode differentiation.

    ``delta_v = sigma'(u_v) * (sum_c W_vc^T delta_c + [v is output] dC/da_L)``,
    ``dC/dW_pv = mean_b delta_v a_p^T``, ``dC/db_v = mean_b delta_v``.
    ``x`` is (n_in,) or (B, n_in), ``y`` is (n_out,) or (B, n_out).
    ``backend="torch"`` computes the same formulas with torch on ``device`` (``"cpu"``,
    ``"cuda"``, ...; torch is an optional extra); the gradients are numpy arrays either way.
    """
    if isinstance(net, Chip):
        raise DyadsimError("backprop is the digital reference of a Network; for a chip use "
                           "backprop(chip.network, x, y) or relax(chip, x, y)")
    if use_torch(backend, device):
        from ._torch import backprop as torch_backprop
        return torch_backprop(net, x, y, dtype, device=device)
    dtype = check_dtype(dtype)
    X, Y, _ = net.check_xy(x, y)
    X = X.astype(dtype)
    Y = Y.astype(dtype)
    B = X.shape[0]
    a = {net.input: X}
    u = {}
    for v in net.nodes:
        uv = np.empty((B, net.sizes[v]), dtype=dtype)
        uv[:] = net.bias_vector(v, dtype)
        for p in net.preds[v]:
            uv += net.edge_forward(p, v, a[p], dtype)
        a[v], u[v] = net.activations[v].value_and_slope(uv)  # u[v] now holds sigma'(u)
    loss = float(np.mean(net.loss.value(a[net.output], Y)))
    delta = {}
    for v in reversed(net.nodes):
        if v == net.output:
            dv = net.loss.grad(a[v], Y)
        else:
            dv = np.zeros((B, net.sizes[v]), dtype=dtype)
            for c in net.succs[v]:
                W = net.params.get(("W", v, c))
                dv += net.edge_ops[(v, c)].backward(None if W is None else W.astype(dtype, copy=False), delta[c])
        delta[v] = u[v] * dv
    grads = Gradients(loss=loss, method="backprop")
    for key in net.params:
        if key[0] == "W":
            p, v = key[1], key[2]
            W = net.params[key].astype(dtype, copy=False)
            grads[key] = net.edge_ops[(p, v)].weight_grad(W, delta[v], a[p]) / B
        else:
            grads[key] = net.bias_grad(key[1], delta[key[1]]) / B
    return grads
