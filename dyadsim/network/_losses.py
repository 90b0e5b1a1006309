"""Cost functions C(a_L, y): value, gradient and Hessian-vector action, per sample."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy.special import logsumexp, softmax

from ..errors import DyadsimError

__all__ = ["Loss", "LOSSES", "EXTRA_LOSSES", "get_loss"]


@dataclass(frozen=True)
class Loss:
    """A per-sample cost.  All functions take (B, n_out) arrays.

    The batch loss is the mean of ``value``.

    Parameters
    ----------
    name : str
        ``"mse"`` or ``"xent"``.
    value : callable
        ``value(a, y)`` -> (B,) per-sample costs.
    grad : callable
        ``grad(a, y)`` -> (B, n_out) dC/da.
    hess : callable
        ``hess(a, y)`` -> (B, n_out, n_out) d2C/da2.
    """

    name: str
    value: Callable
    grad: Callable
    hess: Callable


def _mse_value(a, y):
    r = a - y
    return 0.5 * np.sum(r * r, axis=-1)


def _mse_grad(a, y):
    return a - y


def _mse_hess(a, y):
    B, n = a.shape
    return np.broadcast_to(np.eye(n, dtype=a.dtype), (B, n, n))


def _xent_value(a, y):
    # -sum_k y_k log softmax(a)_k, with logsumexp for stability
    lse = logsumexp(a, axis=-1, keepdims=True)
    return -np.sum(y * (a - lse), axis=-1)


def _xent_grad(a, y):
    p = softmax(a, axis=-1)
    return p * np.sum(y, axis=-1, keepdims=True) - y


def _xent_hess(a, y):
    p = softmax(a, axis=-1)
    s = np.sum(y, axis=-1)[:, None, None]
    return s * (np.einsum("bi,ij->bij", p, np.eye(a.shape[-1], dtype=a.dtype)) - p[:, :, None] * p[:, None, :])


def _mse_mean_value(a, y):
    r = a - y
    return np.mean(r * r, axis=-1)


def _mse_mean_grad(a, y):
    return (2.0 / a.shape[-1]) * (a - y)


def _mse_mean_hess(a, y):
    B, n = a.shape
    return np.broadcast_to((2.0 / n) * np.eye(n, dtype=a.dtype), (B, n, n))


#: ``mse`` is 0.5 * sum_k (a_k - y_k)^2 per sample (batch mean), so its gradients are n_out / 2
#: times those of torch.nn.MSELoss; ``mse_mean`` is torch's convention, mean_k (a_k - y_k)^2
#: per sample, i.e. the mean over batch and outputs, as nn.MSELoss().
LOSSES: dict[str, Loss] = {
    "mse": Loss("mse", _mse_value, _mse_grad, _mse_hess),
    "xent": Loss("xent", _xent_value, _xent_grad, _xent_hess),
}

#: Losses beyond :data:`LOSSES` (which every engine, circuits included, has).
EXTRA_LOSSES: dict[str, Loss] = {
    "mse_mean": Loss("mse_mean", _mse_mean_value, _mse_mean_grad, _mse_mean_hess),
}


def get_loss(name) -> Loss:
    """Look up a loss by name.

    Parameters
    ----------
    name : str
        ``"mse"`` or ``"xent"``.

    Returns
    -------
    Loss
        The loss; unknown names raise a DyadsimError listing the valid ones.
    """
    if isinstance(name, Loss):
        return name
    key = str(name).lower()
    if key in EXTRA_LOSSES:
        return EXTRA_LOSSES[key]
    try:
        return LOSSES[key]
    except KeyError:
        raise DyadsimError(f"unknown loss {name!r}; valid losses: {', '.join([*LOSSES, *EXTRA_LOSSES])}") from None
