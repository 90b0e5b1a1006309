"""Elementwise nonlinearities with their first and second derivatives."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy.special import expit

from ..errors import DyadsimError

__all__ = ["Activation", "ACTIVATIONS", "get_activation"]


@dataclass(frozen=True)
class Activation:
    """sigma, sigma' and sigma'' of one nonlinearity (vectorised numpy functions)."""

    name: str
    f: Callable[[np.ndarray], np.ndarray]
    df: Callable[[np.ndarray], np.ndarray]
    d2f: Callable[[np.ndarray], np.ndarray]

    def __call__(self, u):
        return self.f(u)

    def value_and_slope(self, u):
        """(sigma(u), sigma'(u)) -- computed together where one gives the other cheaply."""
        if self.name == "tanh":
            t = np.tanh(u)
            return t, 1.0 - t * t
        if self.name == "sigmoid":
            s = expit(u)
            return s, s * (1.0 - s)
        return self.f(u), self.df(u)


def _tanh_d(u):
    t = np.tanh(u)
    return 1.0 - t * t


def _tanh_d2(u):
    t = np.tanh(u)
    return -2.0 * t * (1.0 - t * t)


def _sig_d(u):
    s = expit(u)
    return s * (1.0 - s)


def _sig_d2(u):
    s = expit(u)
    return s * (1.0 - s) * (1.0 - 2.0 * s)


def _softplus(u):
    return np.logaddexp(np.zeros((), dtype=np.result_type(u)), u)


ACTIVATIONS: dict[str, Activation] = {
    "tanh": Activation("tanh", np.tanh, _tanh_d, _tanh_d2),
    "sigmoid": Activation("sigmoid", expit, _sig_d, _sig_d2),
    "relu": Activation(
        "relu",
        lambda u: np.maximum(u, 0),
        lambda u: (u > 0).astype(np.result_type(u)),
        np.zeros_like,
    ),
    "softplus": Activation("softplus", _softplus, expit, _sig_d),
    "identity": Activation("identity", lambda u: u * 1, np.ones_like, np.zeros_like),
}


def get_activation(name) -> Activation:
    """Look up an activation by name; unknown names raise a DyadsimError listing the valid ones."""
    if isinstance(name, Activation):
        return name
    try:
        return ACTIVATIONS[str(name).lower()]
    except KeyError:
        raise DyadsimError(
            f"unknown activation {name!r}; valid activations: {', '.join(ACTIVATIONS)}"
        ) from None
