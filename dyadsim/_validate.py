"""Argument validation shared by every stage (internal, but the one place for it).

Every public function validates its arguments through these helpers, so the rules and
the messages agree everywhere: a bad value raises :class:`~dyadsim.errors.DyadsimError`
naming the argument, what it must be, and what it got.
"""

from __future__ import annotations

import math
import numbers
from typing import Iterable

import numpy as np

from .errors import DyadsimError

__all__ = [
    "check_dtype", "check_eta", "check_int", "check_real", "check_bool", "check_choice",
    "as_float_array", "check_finite", "check_timeout", "check_options", "checked_call",
]


def check_dtype(dtype):
    """``float64`` or ``float32`` (anything ``np.dtype`` accepts) -> the numpy scalar type."""
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise DyadsimError(f"unknown dtype {dtype!r}; use float64 or float32") from None
    if dt not in (np.float64, np.float32):
        raise DyadsimError(f"dtype must be float64 or float32, got {dt}")
    return dt.type


def check_int(name: str, value, minimum=None, maximum=None, *, allow_none=False):
    """An integer (bool and non-integral floats refused) within ``[minimum, maximum]``."""
    if value is None and allow_none:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        if isinstance(value, float) and value.is_integer() and math.isfinite(value):
            value = int(value)
        else:
            what = "an integer" + (" or None" if allow_none else "")
            raise DyadsimError(f"{name} must be {what}, got {value!r} ({type(value).__name__})")
    value = int(value)
    if minimum is not None and value < minimum:
        raise DyadsimError(f"{name} must be an integer >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise DyadsimError(f"{name} must be an integer <= {maximum}, got {value}")
    return value


def check_real(name: str, value, *, low=None, high=None, low_open=False, high_open=False,
               allow_inf=False, allow_none=False):
    """A real number (finite unless ``allow_inf``; NaN, complex, bool and strings refused)
    within the given bounds (closed unless ``low_open``/``high_open``)."""
    if value is None and allow_none:
        return None
    if isinstance(value, (bool, np.bool_)) or isinstance(value, (complex, np.complexfloating)) \
            or not isinstance(value, numbers.Real):
        raise DyadsimError(f"{name} must be a real number, got {value!r} ({type(value).__name__})")
    value = float(value)
    if math.isnan(value):
        raise DyadsimError(f"{name} must be a number, got NaN")
    if math.isinf(value) and not allow_inf:
        raise DyadsimError(f"{name} must be finite, got {value}")
    if low is not None and (value < low or (low_open and value == low)):
        raise DyadsimError(f"{name} must be {'>' if low_open else '>='} {low:g}, got {value:g}")
    if high is not None and (value > high or (high_open and value == high)):
        raise DyadsimError(f"{name} must be {'<' if high_open else '<='} {high:g}, got {value:g}")
    return value


def check_eta(eta) -> float:
    """The Euler step: a real number in (0, 2)."""
    if isinstance(eta, (bool, np.bool_)) or not isinstance(eta, numbers.Real):
        raise DyadsimError(f"eta must be a number in (0, 2), got {eta!r}")
    eta = float(eta)
    if not math.isfinite(eta) or eta <= 0 or eta >= 2:
        raise DyadsimError(
            f"eta must be in (0, 2), got {eta}: the Euler map x -> x + eta*F(x) has the "
            "eigenvalue 1 - eta, which is outside (-1, 1) there, so the relaxation diverges "
            "(or, for eta <= 0, never moves)"
        )
    return eta


def check_bool(name: str, value) -> bool:
    """A bool (numpy bools accepted; 0/1 and strings refused)."""
    if not isinstance(value, (bool, np.bool_)):
        raise DyadsimError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def check_choice(name: str, value, choices: Iterable, *, normalize=None):
    """One of ``choices`` (after ``normalize(value)`` when given, e.g. ``str.lower``)."""
    choices = tuple(choices)
    v = value
    if normalize is not None and isinstance(value, str):
        v = normalize(value)
    try:
        ok = v in choices
    except TypeError:
        ok = False
    if not ok:
        raise DyadsimError(f"unknown {name} {value!r}; valid: {', '.join(map(str, choices))}")
    return v


def as_float_array(value, what: str, dtype=np.float64) -> np.ndarray:
    """``value`` as a real float array; complex input (even with zero imaginary part),
    objects and strings are refused instead of being cast silently."""
    if isinstance(value, (str, bytes)):
        raise DyadsimError(f"{what} is not a numeric array: got a string")
    try:
        raw = np.asarray(value)
    except (TypeError, ValueError) as exc:
        raise DyadsimError(f"{what} is not a numeric array: {exc}") from None
    if np.iscomplexobj(raw):
        raise DyadsimError(f"{what} is complex; dyadsim works with real numbers only")
    if raw.dtype.kind not in "biuf":
        try:
            raw = raw.astype(np.float64)
        except (TypeError, ValueError) as exc:
            raise DyadsimError(f"{what} is not a numeric array: {exc}") from None
        if np.iscomplexobj(raw):  # pragma: no cover - astype(float) refuses complex
            raise DyadsimError(f"{what} is complex; dyadsim works with real numbers only")
    with np.errstate(over="ignore"):
        arr = np.array(raw, dtype=dtype)
    return arr


def check_finite(arr, what: str) -> None:
    """Refuse NaN or inf, saying how many values are bad."""
    arr = np.asarray(arr)
    finite = np.isfinite(arr)
    if not np.all(finite):
        bad = int(arr.size - np.count_nonzero(finite))
        raise DyadsimError(f"{what} contains {bad} non-finite value(s) (NaN or inf)")


def check_timeout(timeout, name="timeout"):
    """A positive number of seconds; ``None`` or ``inf`` mean no limit (returned as None)."""
    if timeout is None:
        return None
    t = check_real(name, timeout, low=0, low_open=True, allow_inf=True)
    return None if math.isinf(t) else t


def check_options(name: str, options: dict, valid: Iterable[str]) -> dict:
    """Refuse unknown keyword arguments, listing the valid ones."""
    valid = tuple(valid)
    bad = [k for k in options if k not in valid]
    if bad:
        raise DyadsimError(
            f"{name}: unknown option(s) {', '.join(map(repr, bad))}; valid: {', '.join(valid)}")
    return dict(options)


def checked_call(fn):
    """Decorator: a call with unknown or missing arguments raises a
    :class:`~dyadsim.errors.DyadsimError` naming the function and the argument (instead of
    Python's bare ``TypeError`` or, for functions taking ``**options``, an error from deep
    inside)."""
    import functools
    import inspect

    sig = inspect.signature(fn)

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            sig.bind(*args, **kwargs)
        except TypeError as exc:
            msg = f"{fn.__qualname__}(): {exc}"
            unknown = [k for k in kwargs if k not in sig.parameters]
            if unknown and not any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()):
                valid = [p for p, par in sig.parameters.items()
                         if par.kind in (par.KEYWORD_ONLY, par.POSITIONAL_OR_KEYWORD)
                         and par.default is not par.empty]
                msg += (f" (unknown option{'s' if len(unknown) > 1 else ''} "
                        f"{', '.join(map(repr, unknown))}; valid: {', '.join(valid)})")
            raise DyadsimError(msg) from None
        return fn(*args, **kwargs)

    return wrapper
