"""Elementwise nonlinearities with their first and second derivatives."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy.special import erf, expit

from ..errors import DyadsimError

__all__ = ["Activation", "ACTIVATIONS", "EXTRA_ACTIVATIONS", "get_activation"]


@dataclass(frozen=True)
class Activation:
    """sigma, sigma' and sigma'' of one nonlinearity (vectorised numpy functions).

    Parameters
    ----------
    name : str
        Its name (``"tanh"``, ...).
    f, df, d2f : callable
        sigma, its first and its second derivative.
    """

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


_SQRT2 = float(np.sqrt(2.0))
_INV_SQRT_2PI = float(1.0 / np.sqrt(2.0 * np.pi))


def _gelu(u):  # exact: u * Phi(u)
    return 0.5 * u * (1.0 + erf(u / _SQRT2))


def _gelu_d(u):
    return 0.5 * (1.0 + erf(u / _SQRT2)) + u * _INV_SQRT_2PI * np.exp(-0.5 * u * u)


def _gelu_d2(u):
    return _INV_SQRT_2PI * np.exp(-0.5 * u * u) * (2.0 - u * u)


def _silu(u):
    return u * expit(u)


def _silu_d(u):
    s = expit(u)
    return s * (1.0 + u * (1.0 - s))


def _silu_d2(u):
    s = expit(u)
    return s * (1.0 - s) * (2.0 + u * (1.0 - 2.0 * s))


#: Activations beyond :data:`ACTIVATIONS` (the ones every engine, circuits included, has):
#: exact GELU and SiLU, for imported models; the numpy engines support them.
EXTRA_ACTIVATIONS: dict[str, Activation] = {
    "gelu": Activation("gelu", _gelu, _gelu_d, _gelu_d2),
    "silu": Activation("silu", _silu, _silu_d, _silu_d2),
}

#: Activations with settings, written ``name(a)`` / ``name(a,b)`` (e.g. ``"leaky_relu(0.01)"``,
#: ``"elu(1)"``, ``"softplus(2)"``, ``"hardtanh(-1,1)"``), as PyTorch's modules of the same
#: name define them; ``softplus(beta)`` is ``log(1 + exp(beta u)) / beta`` (torch's threshold
#: not applied: exact everywhere).
PARAMETRIC = {"leaky_relu": 1, "elu": 1, "softplus": 1, "hardtanh": 2}


def _fmt(v) -> str:
    return repr(float(v))


def _parametric(kind, args) -> Activation:
    name = f"{kind}({','.join(_fmt(a) for a in args)})"
    if kind == "leaky_relu":
        (a,) = args
        return Activation(name, lambda u: np.where(u > 0, u, a * u),
                          lambda u: np.where(u > 0, 1.0, a).astype(np.result_type(u)), np.zeros_like)
    if kind == "elu":
        (a,) = args
        if a < 0:
            raise DyadsimError(f"activation {name}: alpha must be >= 0")
        return Activation(name, lambda u: np.where(u > 0, u, a * np.expm1(np.minimum(u, 0))),
                          lambda u: np.where(u > 0, 1.0, a * np.exp(np.minimum(u, 0))).astype(np.result_type(u)),
                          lambda u: np.where(u > 0, 0.0, a * np.exp(np.minimum(u, 0))).astype(np.result_type(u)))
    if kind == "softplus":
        (b,) = args
        if not b > 0:
            raise DyadsimError(f"activation {name}: beta must be > 0")
        if b == 1.0:
            return ACTIVATIONS["softplus"]
        return Activation(name, lambda u: _softplus(b * u) / b, lambda u: expit(b * u),
                          lambda u: b * _sig_d(b * u))
    lo, hi = args
    if not lo < hi:
        raise DyadsimError(f"activation {name}: min_val must be below max_val")
    return Activation(name, lambda u: np.clip(u, lo, hi),
                      lambda u: ((u > lo) & (u < hi)).astype(np.result_type(u)), np.zeros_like)


def _valid() -> str:
    return ", ".join([*ACTIVATIONS, *EXTRA_ACTIVATIONS, "leaky_relu(slope)", "elu(alpha)", "softplus(beta)", "hardtanh(min,max)"])


def get_activation(name) -> Activation:
    """Look up an activation by name; unknown names raise a DyadsimError listing the valid ones.

    Parameters
    ----------
    name : str or Activation
        One of :data:`ACTIVATIONS`, or a parametric one: ``"leaky_relu(0.01)"``,
        ``"elu(1.0)"``, ``"softplus(2)"``, ``"hardtanh(-1,1)"`` (bare ``"leaky_relu"`` and
        ``"elu"`` take PyTorch's defaults 0.01 and 1, ``"hardtanh"`` (-1, 1)).

    Returns
    -------
    Activation
    """
    if isinstance(name, Activation):
        return name
    key = str(name).lower().replace(" ", "")
    if key in ACTIVATIONS:
        return ACTIVATIONS[key]
    if key in EXTRA_ACTIVATIONS:
        return EXTRA_ACTIVATIONS[key]
    defaults = {"leaky_relu": (0.01,), "elu": (1.0,), "hardtanh": (-1.0, 1.0)}
    if key in defaults:
        return _parametric(key, defaults[key])
    if "(" in key and key.endswith(")"):
        kind, _, rest = key[:-1].partition("(")
        if kind in PARAMETRIC:
            try:
                args = tuple(float(a) for a in rest.split(","))
            except ValueError:
                args = ()
            if len(args) == PARAMETRIC[kind] and all(np.isfinite(args)):
                return _parametric(kind, args)
            raise DyadsimError(f"activation {name!r}: {kind} takes {PARAMETRIC[kind]} finite number(s)")
    raise DyadsimError(f"unknown activation {name!r}; valid activations: {_valid()}")
