"""Small shared helpers (internal)."""

from __future__ import annotations

import numpy as np

from .errors import DyadsimError


def check_dtype(dtype):
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise DyadsimError(f"unknown dtype {dtype!r}; use float64 or float32") from None
    if dt not in (np.float64, np.float32):
        raise DyadsimError(f"dtype must be float64 or float32, got {dt}")
    return dt.type


def check_eta(eta) -> float:
    try:
        eta = float(eta)
    except (TypeError, ValueError):
        raise DyadsimError(f"eta must be a number in (0, 2), got {eta!r}") from None
    if not np.isfinite(eta) or eta <= 0 or eta >= 2:
        raise DyadsimError(
            f"eta must be in (0, 2), got {eta}: the Euler map x -> x + eta*F(x) has the "
            "eigenvalue 1 - eta, which is outside (-1, 1) there, so the relaxation diverges "
            "(or, for eta <= 0, never moves)"
        )
    return eta
