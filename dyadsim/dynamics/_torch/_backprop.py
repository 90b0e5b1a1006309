"""Exact reverse-mode gradients on a torch device (no autograd: the explicit formulas)."""

from __future__ import annotations

import numpy as np

from ._system import TorchSystem, torch

__all__ = ["backprop", "backprop_core"]


def backprop_core(s):
    """(activations, delta) per layer: the forward pass and delta = sigma'(u) dC/da."""
    a, uu, delta = {}, {}, {}
    for v in s.nodes:
        a[v], uu[v] = s.activate(v, a)
    for v in reversed(s.nodes):
        dv = s.backsum(v, delta)
        if v == s.output:
            g = s.loss_grad(a[v], s.Y)
            dv = g if dv is None else dv.add_(g)
        delta[v] = s.slope_times(v, dv, a[v], uu[v])
    return a, delta


def backprop(net, x, y, dtype=np.float64, *, device=None):
    """:func:`dyadsim.backprop` on a torch device.

    Parameters
    ----------
    net, x, y, dtype : as for :func:`dyadsim.backprop`.
    device : torch device (``None``: the CPU).

    Returns
    -------
    Gradients
        numpy arrays, in the network's parameter order.
    """
    with torch.no_grad():
        s = TorchSystem(net, x, y, dtype, device)
        a, delta = backprop_core(s)
        return s.readout(a, delta, "backprop")
