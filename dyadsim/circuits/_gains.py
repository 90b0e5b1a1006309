"""Gain staging: the scale of the error voltages, one gain per layer (docs/theory.md, section 7).

In a DBP circuit the error signal of layer v is the voltage ``D_v = V(x) - V(z) =
gain_v * d_v`` with ``d_v = dC/da_v``.  Deep sigmoid networks have error signals that shrink
by orders of magnitude per layer (``max|d|`` ~ 1e-13 in the first layer of a depth-20 MLP of
width 16 while the activations are ~0.5 V), and ngspice resolves a node voltage only to
about ``reltol * |V|``: with a single gain the deep layers' error voltages drown in the
tolerance of their own state nodes.

``gain="auto"`` stages the gain layer by layer from a digital reference pass (backprop's
error signals of the same batch): ``gain_v`` is the power of ten that puts
``max_b max_j |gain_v d_v|`` into :data:`GAIN_TARGET` = [0.1, 1) V.  Then

* the state pair of layer v holds ``x - z = gain_v d_v``,
* the backward coupling from layer c into layer v carries ``gain_v / gain_c`` (on the
  ``W^T`` transconductances of that edge: the only place where two layers' error scales
  meet, and per edge, so it is right for any DAG),
* the cost injection uses the output layer's gain,
* the readout divides each layer's ``x - z`` by its own gain, read back from the reference
  node ``gain_ref_<layer>`` (:func:`gain_node`), so :func:`dyadsim.readout` needs no
  argument.

A scalar ``gain`` is the old single-gain circuit, text unchanged.  Every gain is refused
outside :data:`GAIN_LIMITS`, and every gain choice whose largest error voltage
``max|gain_v d_v|`` (from the reference pass) exceeds :data:`MAX_ERROR_VOLTAGE`: ngspice's
Newton iteration stops converging there (measured: depth-20 sigmoid MLP, mse, scalar gain
1e7 (error voltages up to 3e5 V) solves, 1e8 (3e6 V) and 1e12 run into the gmin and source
stepping fall-backs and never finish).
"""

from __future__ import annotations

import math

import numpy as np

from ..dynamics import error_signal
from ..errors import DyadsimError

__all__ = ["GAIN_TARGET", "GAIN_LIMITS", "MAX_ERROR_VOLTAGE", "gain_node", "gain_param",
           "reference_error_extents", "stage_gains", "Gains"]

#: the range (volts) ``gain="auto"`` puts every layer's largest error voltage into
GAIN_TARGET = (0.1, 1.0)
#: the smallest and largest gain accepted (a scalar, or any one layer's)
GAIN_LIMITS = (1e-9, 1e30)
#: the largest error voltage ``max|gain_v d_v|`` accepted (volts)
MAX_ERROR_VOLTAGE = 1e4


def gain_node(layer_id: str) -> str:
    """The reference node whose voltage is the gain of one layer (staged circuits).

    Parameters
    ----------
    layer_id : str
        The layer's netlist identifier (:func:`~dyadsim.circuits.layer_identifiers`).

    Returns
    -------
    str
        ``"gain_ref_<layer_id>"``.
    """
    return f"gain_ref_{layer_id}"


def gain_param(layer_id: str) -> str:
    """The ``.param`` name of one layer's gain in a staged netlist (``"gain_<layer_id>"``).

    Parameters
    ----------
    layer_id : str

    Returns
    -------
    str
    """
    return f"gain_{layer_id}"


def reference_error_extents(net, X, Y) -> dict:
    """``{layer: max|d_v|}``: the largest error signal of every layer in float64 backprop.

    Parameters
    ----------
    net : Network
    X, Y : ndarray, (B, n_in) and (B, n_out)
        A validated batch.

    Returns
    -------
    dict
        ``{layer: float}`` over the non-input layers, topological order.
    """
    X = np.asarray(X, dtype=np.float64)
    Y = np.asarray(Y, dtype=np.float64)
    weights = net.edge_weights(np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        a, slope = net.propagate(X, weights, slopes=True)
        delta, out = {}, {}
        for v in reversed(net.nodes):
            d = error_signal(net, v, delta, weights, a[net.output], Y)
            delta[v] = net.node_delta(v, slope[v], d)  # a general node: its pullback
            out[v] = float(np.max(np.abs(d))) if d.size else 0.0
    return {v: out[v] for v in net.nodes}


class Gains:
    """The resolved gains of one compilation (internal to the compilers).

    Attributes
    ----------
    scalar : float or None
        The single gain (the classic circuit), or ``None`` for a staged one.
    per_layer : dict
        ``{layer: gain}`` for every non-input layer (all equal to ``scalar`` when scalar).
    """

    def __init__(self, scalar, per_layer):
        self.scalar = scalar
        self.per_layer = per_layer

    @property
    def staged(self) -> bool:
        return self.scalar is None

    def __getitem__(self, v):
        return self.per_layer[v]


def _one_gain(what, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise DyadsimError(f"{what} must be a positive finite number, 'auto', or one number "
                           f"per layer; got {value!r}")
    g = float(value)
    if not math.isfinite(g) or g <= 0:
        raise DyadsimError(f"{what} must be a positive finite number, got {value!r}")
    lo, hi = GAIN_LIMITS
    if not lo <= g <= hi:
        raise DyadsimError(f"{what} = {g:g} is outside the range ngspice handles, "
                           f"[{lo:g}, {hi:g}]")
    return g


def stage_gains(net, X, Y, gain) -> Gains:
    """Validate ``gain`` and resolve it to one gain per layer.

    Parameters
    ----------
    net : Network
    X, Y : ndarray
        The validated batch the circuit is compiled for (its reference pass picks
        ``"auto"`` gains and checks the error voltages of any choice).
    gain : float, ``"auto"``, mapping ``{layer: float}`` or sequence of floats
        A scalar (one gain for every layer: the classic circuit); ``"auto"`` (staged from the
        reference pass into :data:`GAIN_TARGET`); or explicit per-layer gains, one per
        non-input layer (a mapping over exactly those layers, or a sequence in
        ``net.nodes`` order).

    Returns
    -------
    Gains

    Raises
    ------
    DyadsimError
        A gain that is not a positive finite number within :data:`GAIN_LIMITS`, per-layer
        gains of the wrong length or layers, an unknown string, or gains whose largest
        error voltage exceeds :data:`MAX_ERROR_VOLTAGE`.
    """
    nodes = list(net.nodes)
    if isinstance(gain, str):
        if gain.strip().lower() != "auto":
            raise DyadsimError(f"gain must be a positive finite number, 'auto', or one number "
                               f"per layer; got {gain!r}")
        ext = reference_error_extents(net, X, Y)
        lo_v = GAIN_TARGET[0]
        per = {}
        for v in nodes:
            dm = ext[v]
            if not math.isfinite(dm):
                raise DyadsimError(f"gain='auto': the reference error signal of layer {v!r} "
                                   "overflows; scale the weights or inputs down")
            if dm <= 0.0:  # no error signal at all: any gain gives 0 V
                per[v] = 1.0
                continue
            k = math.ceil(math.log10(lo_v / dm))
            g = 10.0 ** k
            if g * dm >= GAIN_TARGET[1]:  # rounding at an exact power of ten
                g /= 10.0
            per[v] = float(min(max(g, GAIN_LIMITS[0]), GAIN_LIMITS[1]))
        return _check_volts(Gains(None, per), ext)
    if isinstance(gain, dict):
        keys = set(gain)
        if keys != set(nodes):
            missing = [v for v in nodes if v not in keys]
            extra = [k for k in gain if k not in set(nodes)]
            raise DyadsimError(
                f"per-layer gains need exactly one gain per non-input layer {nodes!r}"
                + (f"; missing {missing!r}" if missing else "")
                + (f"; not layers of this network: {extra!r}" if extra else ""))
        per = {v: _one_gain(f"gain of layer {v!r}", gain[v]) for v in nodes}
        gains = Gains(None, per)
    elif isinstance(gain, (list, tuple, np.ndarray)):
        arr = list(np.asarray(gain, dtype=object).ravel()) if isinstance(gain, np.ndarray) else list(gain)
        if isinstance(gain, np.ndarray) and gain.ndim != 1 or len(arr) != len(nodes):
            raise DyadsimError(f"per-layer gains need one gain per non-input layer: "
                               f"{len(nodes)} values, got {np.shape(gain)}")
        per = {v: _one_gain(f"gain of layer {v!r}", g) for v, g in zip(nodes, arr)}
        gains = Gains(None, per)
    else:
        g = _one_gain("gain", gain)
        gains = Gains(g, {v: g for v in nodes})
    return _check_volts(gains, reference_error_extents(net, X, Y))


def _check_volts(gains, ext) -> Gains:
    nodes = list(ext)
    worst = max(nodes, key=lambda v: gains[v] * ext[v])
    volts = gains[worst] * ext[worst]
    if not volts <= MAX_ERROR_VOLTAGE:
        raise DyadsimError(
            f"gain {gains[worst]:g} puts the error voltage of layer {worst!r} at {volts:.3g} V "
            f"(max|gain * dC/da| of this batch); ngspice does not converge above about "
            f"{MAX_ERROR_VOLTAGE:g} V: use a smaller gain, or gain='auto'")
    return gains
