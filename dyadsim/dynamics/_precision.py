"""Dynamic range of the dyadic encoding and its rounding floor (docs/theory.md section 7).

A neuron's state is an activation m and an error signal d.  The *physical* encoding
(``state="xz"``, the paper's Algorithm 1) stores the two voltages x = m + d/2 and
z = m - d/2; d is then only ever known as the difference x - z of two rounded numbers, so a
layer whose d is far below its m loses about ``eps * max|m_v| / max|d_v|`` of relative
accuracy, and every layer upstream inherits it (d_v is computed from its successors' d).
The *exact* encoding (``state="md"``) stores m and d themselves; then d is rounded relative
to its own size and the floor is the eps-level one of backprop.

This module predicts that floor per layer from a state (:func:`rounding_floor`), reports it
(:class:`PrecisionReport`), warns when it exceeds the requested accuracy
(:func:`warn_if_imprecise`, :class:`~dyadsim.errors.PrecisionWarning`), and turns overflow
into a :class:`~dyadsim.errors.ConvergenceError` naming what overflowed
(:func:`check_finite_layers`, :func:`check_finite_grads`, :func:`check_representable`).
Relaxation results (:func:`~dyadsim.relax`) and the circuits reuse these functions.
"""

from __future__ import annotations

import math
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._validate import check_choice, check_dtype, check_real
from ..errors import ConvergenceError, PrecisionWarning
from ..network import param_name

__all__ = [
    "STATES", "LayerPrecision", "PrecisionReport", "dynamic_range", "rounding_floor",
    "default_accuracy", "warn_if_imprecise", "check_finite_layers", "check_finite_grads",
    "check_representable",
]

#: the state encodings of a relaxation: ``"md"`` (exact) and ``"xz"`` (physical)
STATES = ("md", "xz")

_PACKAGE_DIR = str(Path(__file__).resolve().parents[1])


def _name(node) -> str:
    return str(node)


def _extent(a) -> float:
    """max|a| without a temporary (NaN if a holds a NaN, inf if it holds an inf)."""
    if a is None or not np.size(a):
        return 0.0
    hi, lo = float(np.max(a)), float(np.min(a))
    if math.isnan(hi) or math.isnan(lo):
        return math.nan
    return max(hi, -lo)


def _layer_extents(net, m, d) -> dict:
    """``{node: (max|m_v|, max|d_v|)}`` from (B, n) / (n,) arrays or ``{node: array}`` maps
    (a node missing from a map counts as zero)."""
    def part(a, v):
        if isinstance(a, dict):
            return a.get(v)
        return np.asarray(a)[..., net.slice(v)]

    return {v: (_extent(part(m, v)), _extent(part(d, v))) for v in net.nodes}


def dynamic_range(net, m, d) -> dict:
    """The dynamic range ``max|d_v| / max|m_v|`` of every layer node.

    Parameters
    ----------
    net : Network
    m, d : ndarray, (n,) or (B, n), or mapping ``{node: (B, size)}``
        Activations and error signals (e.g. ``result.m``, ``result.d``).

    Returns
    -------
    dict
        ``{node: float}`` in topological order (``inf`` where m is 0 and d is not, ``0``
        where d is 0).
    """
    out = {}
    for v, (mm, md) in _layer_extents(net, m, d).items():
        out[v] = md / mm if mm > 0 else (0.0 if md == 0 else math.inf)
    return out


def default_accuracy(dtype) -> float:
    """The accuracy a relaxation is held to when no ``tol`` is given:
    ``max(1e-6, 1e4 * eps)`` -- 1e-6 in float64, 1.2e-3 in float32.

    Parameters
    ----------
    dtype : float64 or float32

    Returns
    -------
    float
    """
    return max(1e-6, 1e4 * float(np.finfo(check_dtype(dtype)).eps))


@dataclass(frozen=True)
class LayerPrecision:
    """Precision facts of one layer node.

    Attributes
    ----------
    node : hashable
        The layer node.
    max_m, max_d : float
        The largest magnitude of the layer's activations and of its error signals over the batch.
    dynamic_range : float
        ``max_d / max_m``.
    local_floor : float
        The layer's own share of the rounding floor (relative error of d_v).
    floor : float
        The predicted relative error of d_v, hence of ``delta_v`` and of the gradients of
        every parameter that feeds node v (its bias and the weights into it): the local
        share plus the largest floor of its successors.  Values at or above 1 mean d_v is
        buried under the rounding of the states: its gradients are noise (or zero).
    """

    node: object
    max_m: float
    max_d: float
    dynamic_range: float
    local_floor: float
    floor: float

    def to_dict(self) -> dict:
        """JSON-friendly (inf becomes None)."""
        f = lambda v: v if math.isfinite(v) else None  # noqa: E731
        return {"node": _name(self.node), "max_m": f(self.max_m), "max_d": f(self.max_d),
                "dynamic_range": f(self.dynamic_range), "local_floor": f(self.local_floor),
                "floor": f(self.floor)}


@dataclass(frozen=True)
class PrecisionReport:
    """The predicted rounding floor of a relaxed state, layer by layer.

    Attributes
    ----------
    state : str
        ``"md"`` (exact) or ``"xz"`` (physical encoding).
    dtype : str
        ``"float64"`` or ``"float32"`` (or ``"custom"`` when ``eps`` was given).
    eps : float
        The unit of rounding used (machine epsilon of the dtype, or the given one).
    eta : float
        The Euler step the floor was computed for.
    layers : dict
        ``{node: LayerPrecision}`` in topological order.
    """

    state: str
    dtype: str
    eps: float
    eta: float
    layers: dict

    @property
    def floor(self) -> float:
        """The largest predicted relative error over all layers."""
        return max((p.floor for p in self.layers.values()), default=0.0)

    @property
    def worst(self) -> LayerPrecision | None:
        """The layer with the largest predicted floor (``None`` for an empty report)."""
        if not self.layers:
            return None
        return max(self.layers.values(), key=lambda p: p.floor)

    def tensor_floor(self, key) -> float:
        """Predicted relative error of one parameter's gradient.

        Parameters
        ----------
        key : tuple
            ``("W", src, dst)`` or ``("b", node)``.

        Returns
        -------
        float
            The floor of the layer the parameter feeds (``dst`` or ``node``).
        """
        node = key[2] if key[0] == "W" else key[1]
        return self.layers[node].floor

    def to_dict(self) -> dict:
        """JSON-friendly: the encoding, eps, the worst layer and every layer."""
        w = self.worst
        fl = self.floor
        return {"state": self.state, "dtype": self.dtype, "eps": self.eps, "eta": self.eta,
                "floor": fl if math.isfinite(fl) else None,
                "worst_layer": None if w is None else _name(w.node),
                "layers": [p.to_dict() for p in self.layers.values()]}

    def table(self) -> str:
        """A text table: one row per layer."""
        head = (f"{'layer':<16} {'max|m|':>10} {'max|d|':>10} {'range d/m':>10} "
                f"{'local':>10} {'floor':>10}")
        rows = [f"rounding floor: state={self.state!r}, {self.dtype} (eps {self.eps:.2e}), "
                f"eta={self.eta:g}", head, "-" * len(head)]
        for p in self.layers.values():
            rows.append(f"{_name(p.node)[:16]:<16} {p.max_m:>10.2e} {p.max_d:>10.2e} "
                        f"{p.dynamic_range:>10.2e} {p.local_floor:>10.2e} {p.floor:>10.2e}")
        return "\n".join(rows)

    def __str__(self) -> str:
        return self.table()


def _eta_factor(eta: float) -> float:
    """Rounding errors committed at every step decay like |1 - eta|^k: the state carries
    about 1 / (1 - |1 - eta|) = 1 / min(eta, 2 - eta) of them (1 at eta = 1)."""
    return 1.0 / min(eta, 2.0 - eta)


def rounding_floor(net, m, d, *, state="xz", dtype=np.float64, eta=1.0, eps=None) -> PrecisionReport:
    """The predicted relative rounding error of every layer's error signal and gradients.

    With unit roundoff ``eps`` (machine epsilon of ``dtype``, or ``eps`` when given, e.g.
    the relative resolution of a circuit's voltages) and ``c = 1 / min(eta, 2 - eta)``:

    * ``state="xz"``: storing x = m + d/2 and z = m - d/2 rounds each to about
      ``eps/2 * max|m|``, so d = x - z is off by about ``eps * max|m_v|``; relative to d the
      layer's local share is ``c * eps * max|m_v| / max|d_v|``.  d_v is computed from its
      successors' d, which carry their own error, so
      ``floor_v = local_v + max_c floor_c`` (summed along the deepest path to the output),
      plus the eps-level floor of the exact encoding.
    * ``state="md"``: d is stored as itself; ``floor_v = c * eps * (1 + rdepth(v))`` (one
      rounding per layer between v and the output), the floor of backprop.

    Measured on deep sigmoid MLPs (float64, width 16, L = 20) the relative error of d_v is
    0.5 to 1.2 times this prediction in every layer at eta = 1 and 0.7 to 1.4 times at
    eta = 0.5 (docs/theory.md section 7).

    Parameters
    ----------
    net : Network
    m, d : ndarray, (n,) or (B, n), or mapping ``{node: (B, size)}``
        The activations and (an estimate of the magnitude of) the error signals.  For the
        physical encoding pass the error signal each layer *should* hold (its update
        target), where the stored one may have been lost in rounding.
    state : ``"xz"`` or ``"md"``
    dtype : float64 or float32
    eta : float
        The Euler step (continuous time: 1).
    eps : float, optional
        Override the unit of rounding (e.g. a circuit's relative voltage resolution).

    Returns
    -------
    PrecisionReport
    """
    state = check_choice("state", state, STATES)
    eta = check_real("eta", eta, low=0, high=2, low_open=True, high_open=True)
    if eps is None:
        dt = check_dtype(dtype)
        eps_v = float(np.finfo(dt).eps)
        dname = np.dtype(dt).name
    else:
        eps_v = check_real("eps", eps, low=0)
        dname = "custom"
    return _report(net, _layer_extents(net, m, d), state, dname, eps_v, eta)


def _report(net, ext, state, dname, eps_v, eta) -> PrecisionReport:
    """The report from per-layer extents ``{node: (max|m|, max|d|)}``."""
    c = _eta_factor(eta)
    layers, acc = {}, {}
    for v in reversed(net.nodes):
        mm, md = ext[v]
        rng = md / mm if mm > 0 else (0.0 if md == 0 else math.inf)
        local = c * eps_v * mm / md if (state == "xz" and md > 0) else 0.0
        # the physical encoding's share, summed along the deepest path to the output
        acc[v] = local + max((acc[s] for s in net.succs[v]), default=0.0)
        floor = acc[v] + c * eps_v * (1 + net.block(v).rdepth)
        layers[v] = LayerPrecision(v, mm, md, rng, local, floor)
    layers = {v: layers[v] for v in net.nodes}
    return PrecisionReport(state, dname, eps_v, eta, layers)


def _user_stacklevel() -> int:
    """The stacklevel of the first frame outside the dyadsim package (for warnings)."""
    f = sys._getframe(1)
    level = 1
    while f is not None and f.f_code.co_filename.startswith(_PACKAGE_DIR):
        f = f.f_back
        level += 1
    return level


def warn_if_imprecise(report: PrecisionReport, accuracy=None, *, what="relax", fix=None) -> list:
    """Warn (:class:`~dyadsim.errors.PrecisionWarning`) when the predicted floor of some
    layer exceeds the requested accuracy.

    Parameters
    ----------
    report : PrecisionReport
    accuracy : float, optional
        The requested relative accuracy (default :func:`default_accuracy` of the report's
        dtype; 1e-6 for a custom eps).
    what : str
        Names the computation in the message.
    fix : str, optional
        The advice in the message (default: the ways out that apply: ``state="md"``,
        ``dtype=float64``, gain staging).

    Returns
    -------
    list of LayerPrecision
        The layers over the accuracy, worst first (empty: no warning was issued).
    """
    if accuracy is None:
        accuracy = default_accuracy(np.float64 if report.dtype in ("float64", "custom")
                                    else np.float32)
    accuracy = check_real("accuracy", accuracy, low=0, low_open=True)
    bad = sorted((p for p in report.layers.values() if p.floor > accuracy),
                 key=lambda p: -p.floor)
    if not bad:
        return bad
    w = bad[0]
    if fix is None:
        fixes = []
        if report.state == "xz":
            fixes.append("state='md' (d stored exactly)")
        if report.dtype == "float32":
            fixes.append("dtype=float64")
        fixes.append("gain staging (scale the error signal up toward the activations)")
        fix = ", or ".join(fixes)
    # where the loss starts: the layer over the accuracy that is closest to the output
    starts = [p for p in bad if p.floor - p.local_floor <= accuracy]
    origin = starts[0] if starts else bad[-1]
    size = ("at or above 1: its error signal is lost in rounding" if w.floor >= 1
            else f"{w.floor:.2g}")
    where = f"layer {_name(w.node)!r}"
    if len(bad) > 1:
        where += f" and {len(bad) - 1} more layer(s)"
    msg = (f"{what}: {where} exceed(s) the requested accuracy {accuracy:.2g}; the predicted "
           f"relative error of the gradients into {_name(w.node)!r} is {size}.  It starts at "
           f"layer {_name(origin.node)!r}, whose dynamic range max|d|/max|m| is "
           f"{origin.dynamic_range:.2g} with state={report.state!r} in {report.dtype} "
           f"(eps {report.eps:.2g}); fix: use {fix}")
    warnings.warn(msg, PrecisionWarning, stacklevel=_user_stacklevel())
    return bad


# ----------------------------------------------------------------------------- overflow
def check_representable(what: str, original, cast) -> None:
    """Raise a ConvergenceError when casting finite values to a lower precision made them
    inf (e.g. float64 inputs of 1e100 in float32).

    Parameters
    ----------
    what : str
        Names the array in the message (``"input x"``, ``"weight W[a->b]"``).
    original, cast : ndarray
        The array before and after the cast.
    """
    if cast.dtype == np.asarray(original).dtype:
        return
    if not np.all(np.isfinite(cast)):
        big = float(np.max(np.abs(original)))
        lim = float(np.finfo(cast.dtype).max)
        raise ConvergenceError(
            f"{what} overflows {np.dtype(cast.dtype).name}: values up to {big:.3g} exceed its "
            f"largest number {lim:.3g}; scale it down or use dtype=float64")


def check_finite_layers(net, m, d, *, what: str, dtype, step=None) -> None:
    """Raise a ConvergenceError naming the first layer whose activations or error signals
    overflowed (inf or NaN).

    Parameters
    ----------
    net : Network
    m, d : ndarray (B, n) / (n,) or mapping ``{node: array}``
        Activations and error signals (``d`` may be None).
    what : str
        Names the computation in the message (``"relax"``, ``"backprop"``).
    dtype : the dtype of the computation
    step : int, optional
        The step at which the overflow was found (named in the message).
    """
    _raise_if_nonfinite(net, _layer_extents(net, m, d), what, dtype, step)


def _raise_if_nonfinite(net, ext, what, dtype, step=None) -> None:
    at = "" if step is None else f" at step {step}"
    dname = np.dtype(dtype).name
    for k, label in ((0, "activations (forward pass)"), (1, "error signal d (backward pass)")):
        for v in net.nodes:
            if not math.isfinite(ext[v][k]):
                raise ConvergenceError(
                    f"{what}: the {label} of layer {_name(v)!r} overflowed to inf/NaN{at} in "
                    f"{dname}; the weights or inputs are too large for {dname} (scale them "
                    f"down{', or use dtype=float64' if dname == 'float32' else ''})")


def check_finite_grads(grads, *, what: str, dtype) -> None:
    """Raise a ConvergenceError naming the first gradient (or the loss) that is not finite.

    Parameters
    ----------
    grads : Gradients
    what : str
        Names the computation in the message.
    dtype : the dtype of the computation
    """
    dname = np.dtype(dtype).name
    for k, g in grads.items():
        if not math.isfinite(_extent(g)):
            raise ConvergenceError(
                f"{what}: the gradient of {param_name(k)} overflowed to inf/NaN in {dname}; the "
                f"weights or inputs are too large (scale them down"
                f"{', or use dtype=float64' if dname == 'float32' else ''})")
    loss = getattr(grads, "loss", None)
    if loss is not None and not math.isfinite(loss):
        raise ConvergenceError(f"{what}: the loss overflowed to {loss} in {dname}")
