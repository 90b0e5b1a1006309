"""Exact digital backpropagation: the reference every other method is compared with.

The backward recursion (:func:`error_signal`) and the parameter-gradient readout
(:func:`param_grads`) defined here are the only ones in the package: backprop, the
wavefront relaxation and :meth:`System.readout_blocks` all use them, with the one forward
pass :meth:`Network.node_forward`.
"""

from __future__ import annotations

import numpy as np

from .._validate import check_dtype, checked_call
from ..errors import ConvergenceError, DyadsimError
from ._chip import Chip
from ._backend import use_torch
from ._gradients import Gradients
from ._precision import check_finite_grads, check_finite_layers, check_representable

__all__ = ["backprop", "error_signal", "param_grads"]


def error_signal(net, node, delta, weights, a_out=None, Y=None) -> np.ndarray:
    """``d_v = sum_c W_vc^T delta_c`` (+ ``dC/da_L`` at the output): dC/da_v.

    Parameters
    ----------
    net : Network
    node : a non-input node
    delta : mapping ``{node: (B, size)}`` holding ``delta_c = sigma'(u_c) * d_c`` of every
        successor of ``node`` (for a general successor: its :class:`Pullback`, as
        :meth:`Network.node_delta` forms it)
    weights : mapping ``{(src, dst): array}`` (:meth:`Network.edge_weights`)
    a_out, Y : the output's activations and the targets (used when ``node`` is the output)

    Returns
    -------
    ndarray, (B, size)
    """
    d = None
    general = net.node_ops
    for c in net.succs[node]:
        if c in general:  # a general node's pullback J^T d_c, already formed
            contrib = delta[c][node]
        else:
            contrib = net.edge_ops[(node, c)].backward(weights.get((node, c)), delta[c])
        d = contrib if d is None else d.__iadd__(contrib)
    if node == net.output:
        g = net.loss.grad(a_out, Y)
        d = g if d is None else d.__iadd__(g)
    return d


def param_grads(net, delta, acts, weights, B, method=None) -> Gradients:
    """The readout ``dC/dW_pv = mean_b delta_v a_p^T``, ``dC/db_v = mean_b delta_v``.

    Parameters
    ----------
    net : Network
    delta : mapping ``{node: (B, size)}`` of ``sigma'(u_v) * d_v``
    acts : mapping ``{node: (B, size)}`` of activations (the input's included)
    weights : mapping ``{(src, dst): array}``
    B : int
        Batch size (the gradients are batch means).
    method : str, optional
        Label stored in the returned :class:`Gradients`.

    Returns
    -------
    Gradients
        In the network's own parameter order.
    """
    grads = Gradients(method=method)
    for key in net.params:
        if key[0] == "W":
            p, v = key[1], key[2]
            grads[key] = net.edge_ops[(p, v)].weight_grad(weights.get((p, v)), delta[v], acts[p]) / B
        else:
            grads[key] = net.bias_grad(key[1], delta[key[1]]) / B
    return grads


@checked_call
def backprop(net, x, y, dtype=np.float64, *, backend="numpy", device=None) -> Gradients:
    """Gradients of the mean batch loss by reverse-mode differentiation.

    ``delta_v = sigma'(u_v) * (sum_c W_vc^T delta_c + [v is output] dC/da_L)``,
    ``dC/dW_pv = mean_b delta_v a_p^T``, ``dC/db_v = mean_b delta_v``.

    Parameters
    ----------
    net : Network
    x : array_like, (n_in,) or (B, n_in)
    y : array_like, (n_out,) or (B, n_out)
    dtype : float64 or float32
        The precision of the whole computation.
    backend : ``"numpy"`` or ``"torch"``
        ``"torch"`` computes the same formulas with torch on ``device`` (``"cpu"``,
        ``"cuda"``, ...; torch is an optional extra); the gradients are numpy arrays either way.
    device : str, optional
        The torch device (``backend="torch"`` only).

    Returns
    -------
    Gradients
        Shaped like the parameters, with ``loss`` (the batch loss) and ``method="backprop"``.

    Raises
    ------
    DyadsimError
        Bad input (shapes, NaN, an unknown dtype or keyword argument).
    ConvergenceError
        When the computation overflows (inputs or weights that do not fit ``dtype``, or
        activations, error signals or gradients that become inf/NaN), naming what overflowed.
    """
    if isinstance(net, Chip):
        raise DyadsimError("backprop is the digital reference of a Network; for a chip use "
                           "backprop(chip.network, x, y) or relax(chip, x, y)")
    if use_torch(backend, device):
        from ._torch import backprop as torch_backprop
        return torch_backprop(net, x, y, dtype, device=device)
    dtype = check_dtype(dtype)
    X, Y, _ = net.check_xy(x, y)
    with np.errstate(over="ignore"):  # an overflowing cast is reported just below
        Xd = X.astype(dtype)
        Yd = Y.astype(dtype)
        weights = net.edge_weights(dtype)
    check_representable("input x", X, Xd)
    check_representable("target y", Y, Yd)
    for (p, v), W in weights.items():
        if W is not None:
            check_representable(f"weight W[{p}->{v}]", net.params[("W", p, v)], W)
    B = X.shape[0]
    with np.errstate(over="ignore", invalid="ignore"):
        a, slope = net.propagate(Xd, weights, slopes=True)
        delta, d = {}, {}
        for v in reversed(net.nodes):
            d[v] = error_signal(net, v, delta, weights, a[net.output], Yd)
            delta[v] = net.node_delta(v, slope[v], d[v])
        loss = float(np.mean(net.loss.value(a[net.output], Yd)))
        grads = param_grads(net, delta, a, weights, B, method="backprop")
    grads.loss = loss
    try:  # an overflow anywhere reaches the gradients (inf, or inf * 0 = NaN) or the loss
        check_finite_grads(grads, what="backprop", dtype=dtype)
    except ConvergenceError:
        check_finite_layers(net, a, d, what="backprop", dtype=dtype)  # names the layer
        raise
    return grads
