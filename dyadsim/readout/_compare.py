"""Precision metrics of docs/theory.md, section 5: relative error, norm ratio, misalignment."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass

import numpy as np

from .._validate import checked_call
from ..errors import DyadsimError
from ..network import param_name

__all__ = ["compare", "Comparison", "TensorMetrics", "angle"]


def angle(a, b) -> float:
    """The angle between two vectors in radians, accurate down to ~1e-16 rad.

    Uses ``2*atan2(|a^ - b^|, |a^ + b^|)`` on the unit vectors (arccos of the cosine loses
    every digit below ~1e-8 rad).

    Parameters
    ----------
    a, b : array_like
        The vectors (flattened).

    Returns
    -------
    float
        The angle; zero vectors: 0 if both are zero, pi/2 otherwise.
    """
    a = _unit_scale(np.ravel(np.asarray(a, dtype=np.float64)))
    b = _unit_scale(np.ravel(np.asarray(b, dtype=np.float64)))
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 or nb == 0:
        return 0.0 if na == nb else math.pi / 2
    ua, ub = a / na, b / nb
    return float(2.0 * math.atan2(np.linalg.norm(ua - ub), np.linalg.norm(ua + ub)))


def _unit_scale(v):
    """v divided by its largest magnitude (norms of tiny or huge vectors under/overflow)."""
    s = float(np.max(np.abs(v))) if v.size else 0.0
    return v / s if s > 0 and np.isfinite(s) else v


def _log10(x: float) -> float:
    return math.log10(x) if x > 0 else -math.inf


@dataclass(frozen=True)
class TensorMetrics:
    """Metrics of one parameter tensor (or of all of them, for the summary).

    Parameters
    ----------
    name : str
        The tensor's name (``"W[src->dst]"``, ``"b[node]"``, ``"(all parameters)"``).
    size : int
        Number of entries.
    rel_error : float
        ``|g - g_ref| / |g_ref|``.
    norm_ratio : float
        ``|g| / |g_ref|``.
    angle : float
        Angle between ``g`` and ``g_ref`` in radians (:func:`angle`).
    log10_angle : float
        Its base-10 logarithm.
    """

    name: str
    size: int
    rel_error: float  # ||g~ - g|| / ||g||
    norm_ratio: float  # ||g~|| / ||g||
    angle: float  # radians
    log10_angle: float  # log10 of radians (-inf when the directions agree exactly)

    def to_dict(self) -> dict:
        d = asdict(self)
        for k in ("rel_error", "norm_ratio", "angle", "log10_angle"):
            if not math.isfinite(d[k]):
                d[k] = None  # JSON has no inf/NaN
        return d


def _metrics(name, g, r) -> TensorMetrics:
    g = np.ravel(np.asarray(g, dtype=np.float64))
    r = np.ravel(np.asarray(r, dtype=np.float64))
    scale = max(float(np.max(np.abs(g))) if g.size else 0.0, float(np.max(np.abs(r))) if r.size else 0.0)
    if scale > 0 and np.isfinite(scale):  # ratios are scale-free; norms of 1e-170 underflow
        g, r = g / scale, r / scale
    nr = float(np.linalg.norm(r))
    ng = float(np.linalg.norm(g))
    diff = float(np.linalg.norm(g - r))
    if nr == 0:
        rel = 0.0 if diff == 0 else math.inf
        ratio = 1.0 if ng == 0 else math.inf
    else:
        rel = diff / nr
        ratio = ng / nr
    th = angle(g, r)
    return TensorMetrics(name, int(r.size), rel, ratio, th, _log10(th))


_key_name = param_name  # the old private name, kept for old imports


@dataclass(frozen=True)
class Comparison:
    """The comparison of gradients with a reference.

    Attributes
    ----------
    tensors : dict
        ``{key: TensorMetrics}`` per parameter tensor, keyed like the gradients.
    summary : TensorMetrics
        Over all parameters concatenated ("(all parameters)").  Large tensors dominate it:
        a small tensor that is badly off hardly shows, so it is never the only headline.
    max_rel_error : float
        The largest per-tensor relative error (``worst.rel_error``).
    label, reference_label : str
    worst : TensorMetrics or None
        The tensor with the largest relative error (``None`` without tensors); the table
        and ``to_dict()`` lead with it.

    ``str()`` gives the table, ``to_json()`` JSON.
    """

    tensors: dict
    summary: TensorMetrics
    max_rel_error: float
    label: str = ""
    reference_label: str = ""
    worst: TensorMetrics | None = None

    def to_dict(self) -> dict:
        """JSON-friendly: the worst tensor first, the pooled summary, every tensor."""
        return {
            "method": self.label,
            "reference": self.reference_label,
            "worst": None if self.worst is None else self.worst.to_dict(),
            "summary": self.summary.to_dict(),
            "max_rel_error": self.max_rel_error if math.isfinite(self.max_rel_error) else None,
            "tensors": [m.to_dict() for m in self.tensors.values()],
        }

    def to_json(self, indent=2) -> str:
        """:meth:`to_dict` as JSON text (always valid JSON: inf/NaN become null)."""
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)

    def table(self) -> str:
        """A text table: the worst tensor and the pooled row first, then every tensor."""
        head = f"{'tensor':<28} {'size':>8} {'rel.error':>11} {'norm ratio':>18} {'log10 angle':>12}"
        sep = "-" * len(head)

        def row(m, name=None):
            name = m.name if name is None else name
            return (f"{name[:28]:<28} {m.size:>8d} {m.rel_error:>11.3e} {m.norm_ratio:>18.15f} "
                    f"{m.log10_angle:>12.2f}")

        rows = [head, sep]
        if self.worst is not None:
            rows.append(row(self.worst, f"worst: {self.worst.name}"))
        rows += [row(self.summary), sep]
        rows += [row(m) for m in self.tensors.values()]
        title = f"{self.label or 'gradients'} vs {self.reference_label or 'reference'}"
        return title + "\n" + "\n".join(rows)

    def __str__(self) -> str:
        return self.table()


@checked_call
def compare(grads, reference, *, label=None, reference_label=None) -> Comparison:
    """Compare gradients with a reference, tensor by tensor and globally.

    Parameters
    ----------
    grads, reference : mapping or GradientResult
        ``{key: array}`` with the same keys and shapes (e.g. ``dyadsim.relax(...).grads``
        and ``dyadsim.backprop(...)``); a result is read through its ``.grads``.
    label, reference_label : str, optional
        Names for the table (default: the gradients' ``method``).

    Returns
    -------
    Comparison
        Per-tensor metrics, the worst tensor (``worst``, ``max_rel_error``) and the pooled
        summary; the table leads with the worst tensor.
    """
    if hasattr(grads, "grads") and not isinstance(grads, dict):
        grads = grads.grads
    if hasattr(reference, "grads") and not isinstance(reference, dict):
        reference = reference.grads
    missing = [k for k in reference if k not in grads]
    extra = [k for k in grads if k not in reference]
    if missing or extra:
        raise DyadsimError(
            "gradients and reference have different parameters: "
            f"missing {[param_name(k) for k in missing]}, unexpected {[param_name(k) for k in extra]}"
        )
    tensors = {}
    for k, r in reference.items():
        g = grads[k]
        if np.shape(g) != np.shape(r):
            raise DyadsimError(
                f"gradient {param_name(k)} has shape {np.shape(g)}, reference has {np.shape(r)}"
            )
        if not np.all(np.isfinite(g)):
            raise DyadsimError(f"gradient {param_name(k)} contains NaN or inf")
        tensors[k] = _metrics(param_name(k), g, r)
    flat_g = np.concatenate([np.ravel(grads[k]) for k in reference]) if reference else np.zeros(0)
    flat_r = np.concatenate([np.ravel(reference[k]) for k in reference]) if reference else np.zeros(0)
    summary = _metrics("(all parameters)", flat_g, flat_r)
    worst = max(tensors.values(), key=lambda m: m.rel_error, default=None)
    max_rel = 0.0 if worst is None else worst.rel_error
    return Comparison(
        tensors, summary, max_rel,
        label or getattr(grads, "method", None) or "",
        reference_label or getattr(reference, "method", None) or "",
        worst,
    )
