"""Transforms of the circuit IR: every change made to a compiled circuit goes through here.

* :func:`copy_circuit`, :func:`map_elements`: the building blocks (a new circuit; the
  input is never modified);
* :func:`add_opamp_offsets`: an input offset source in series with chosen op-amps;
* :func:`with_nodesets`, :func:`with_options`: first guesses (``.nodeset``) and simulator
  options (e.g. ``gmin``), what the Monte Carlo's rescue of a failed ``.op`` changes;
* the non-idealities, small frozen transforms that compose: each is a frozen dataclass
  with ``apply(circuit, rng) -> Circuit`` returning a *new* circuit with perturbed element
  values, drawing any randomness from the numpy ``Generator`` it is given.
  :func:`perturbed_netlist` applies a list of them in order to a compiled
  :class:`~dyadsim.circuits.Netlist` and writes the text again, so neither compiler needs
  to know about them::

      nl = compile_netlist(net, x, y)
      bad = perturbed_netlist(nl, [Mismatch(0.05), Quantization(6)], seed=3)

A non-ideality of size zero (``Mismatch(0)``, ``Quantization(None)``, ...) returns the
circuit unchanged, so the netlist text stays identical.  Every parameter that reaches a
netlist is checked to be a number in a sane range when the object is made.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace

import numpy as np

from ..errors import DyadsimError
from ._ir import (
    BOLTZMANN, IDEAL_OPAMP_GAIN, MAX_GAIN_TIMES_OFFSET, OFFSET_OPAMP_GAIN, Circuit, DeviceCircuit,
    DeviceKind, Element, Kind, NoiseSource, Num, Op, Param, Section, Transistor, _check_number,
    is_opamp, is_weight,
)
from ._writer import write_circuit

__all__ = [
    "copy_circuit", "map_elements", "add_opamp_offsets", "with_nodesets", "with_options",
    "Nonideality", "Mismatch", "Quantization", "AmplifierNonideal", "ThermalNoise",
    "WireResistance", "perturbed_netlist", "apply_nonidealities", "check_nonidealities",
    "evaluate",
]


# --------------------------------------------------------------------------- building blocks
def copy_circuit(circuit: Circuit) -> Circuit:
    """A copy whose sections and element lists can be changed without touching the original.

    Parameters
    ----------
    circuit : Circuit
        A circuit IR (behavioural or :class:`~._ir.DeviceCircuit`).

    Returns
    -------
    Circuit
        Of the same class; lists and dicts are new, elements (immutable) are shared.
    """
    sections = [Section(s.title, list(s.elements), list(s.notes)) for s in circuit.sections]
    return replace(circuit, header=list(circuit.header), params=dict(circuit.params),
                   sections=sections, options=dict(circuit.options),
                   initial_conditions=dict(circuit.initial_conditions), nodes=set(circuit.nodes),
                   nodesets=dict(circuit.nodesets),
                   **({"models": {k: (t, dict(p)) for k, (t, p) in circuit.models.items()}}
                      if isinstance(circuit, DeviceCircuit) else {}))


def map_elements(circuit, fn):
    """A copy of a circuit with every element replaced by what ``fn`` makes of it.

    Parameters
    ----------
    circuit : Circuit
        The circuit IR; it is not modified.
    fn : callable
        ``fn(element) -> list of Element`` (possibly empty: the element is removed).

    Returns
    -------
    Circuit
        The new circuit (sections in the same order; untouched elements are shared).
    """
    out = copy_circuit(circuit)
    for sec in out.sections:
        new = []
        for el in sec.elements:
            new.extend(fn(el))
        sec.elements = new
    return out


_map_elements = map_elements  # the old private name


def add_opamp_offsets(circuit: Circuit, offsets: dict) -> Circuit:
    """Input offsets for chosen op-amps: a DC source in series with each one's
    non-inverting input.

    Parameters
    ----------
    circuit : Circuit
        A device-level circuit (op-amps are ``E`` elements named ``oa_*``).
    offsets : dict
        ``{op-amp element name: offset in volts}``; zero or missing: unchanged.

    Returns
    -------
    Circuit
        A new circuit.
    """
    out = copy_circuit(circuit)
    for sec in out.sections:
        new = []
        for el in sec.elements:
            off = offsets.get(el.name) if is_opamp(el) else None
            if off:
                _check_number("op-amp offset", off)
                o, gnd, pos, neg = el.nodes
                node = "os_" + o
                new.append(Element(Kind.V, "os_" + o, (node, pos), float(off), "op-amp input offset"))
                new.append(replace(el, nodes=(o, gnd, node, neg)))
            else:
                new.append(el)
        sec.elements = new
    return out


def with_nodesets(circuit: Circuit, voltages: dict) -> Circuit:
    """A circuit whose first guesses (``.nodeset``) are the given node voltages.

    Parameters
    ----------
    circuit : Circuit
    voltages : dict
        ``{node: volts}``, e.g. the ``voltages`` of an operating point.  Branch currents
        (names with ``#``) and non-finite values are left out; the circuit's old first
        guesses are dropped.

    Returns
    -------
    Circuit
        A new circuit.
    """
    out = copy_circuit(circuit)
    out.nodesets = {k: float(v) for k, v in voltages.items() if "#" not in k and math.isfinite(v)}
    return out


_OPTION_NAME = re.compile(r"[a-z][a-z0-9_]*")
_OPTION_TEXT = re.compile(r"[a-z0-9_.+-]+")


def with_options(circuit: Circuit, **options) -> Circuit:
    """A circuit with some simulator options (``.options``) set; each one set moves to the
    end of the card.

    Parameters
    ----------
    circuit : Circuit
    **options
        ``name=value``: a number, ``True`` (a flag) or a plain word, e.g. ``gmin=1e-12``.

    Returns
    -------
    Circuit
        A new circuit.

    Raises
    ------
    DyadsimError
        For a name or a value that could carry text into the netlist.
    """
    out = copy_circuit(circuit)
    for k, v in options.items():
        if not _OPTION_NAME.fullmatch(k) or (
                not isinstance(v, (int, float, bool)) and not _OPTION_TEXT.fullmatch(str(v))):
            raise DyadsimError(f"invalid simulator option {k!r}={v!r}")
        out.options.pop(k, None)
        out.options[k] = v
    return out


# --------------------------------------------------------------------------- non-idealities
MISMATCH_KINDS = ("R", "G", "BI", "I", "Q")


def _number(owner, name, value, *, lo=None, hi=None, allow_none=False, integer=False):
    """Validate a parameter: a real number (not bool, not NaN/inf) within [lo, hi]."""
    if value is None and allow_none:
        return None
    ok_types = (int, np.integer) if integer else (int, float, np.integer, np.floating)
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, ok_types):
        kind = "an integer" if integer else "a number"
        raise DyadsimError(f"{owner}: {name} must be {kind}, got {value!r} ({type(value).__name__})")
    if not integer and not math.isfinite(float(value)):
        raise DyadsimError(f"{owner}: {name} must be finite, got {value!r}")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise DyadsimError(f"{owner}: {name} must be within [{lo}, {hi}], got {value!r}")
    return value


def evaluate(value, params: dict) -> float:
    """The number a constant element value stands for.

    Parameters
    ----------
    value : float or Expr
        An element value: a number, or an expression of numbers and ``.param`` names.
    params : dict
        The circuit's ``.param`` values (``circuit.params``).

    Returns
    -------
    float

    Raises
    ------
    DyadsimError
        For an unknown ``.param`` or a value that is not a constant (a node voltage).
    """
    if isinstance(value, (int, float, np.integer, np.floating)):
        return float(value)
    if isinstance(value, Num):
        return float(value.value)
    if isinstance(value, Param):
        if value.name not in params:
            raise DyadsimError(f"unknown .param {value.name!r}")
        return evaluate(params[value.name], params)
    if isinstance(value, Op):
        a, b = evaluate(value.left, params), evaluate(value.right, params)
        return {"+": a + b, "-": a - b, "*": a * b, "/": a / b}[value.op]
    raise DyadsimError(f"element value {value!r} is not a constant")


class Nonideality:
    """Base of the non-idealities: ``apply(circuit, rng) -> Circuit`` (a new circuit,
    randomness drawn from the numpy Generator ``rng``), ``is_zero`` (no change) and a
    ``label`` for tables."""

    def apply(self, circuit: Circuit, rng: np.random.Generator) -> Circuit:  # pragma: no cover
        raise NotImplementedError

    @property
    def is_zero(self) -> bool:  # pragma: no cover
        raise NotImplementedError

    @property
    def label(self) -> str:
        return repr(self)


@dataclass(frozen=True)
class Mismatch(Nonideality):
    """Device mismatch: every conductance-like element value is multiplied by an independent
    lognormal factor ``exp(sigma * N(0, 1))`` (median 1).

    ``kinds`` selects what varies: ``"R"`` resistors (the weight resistors, feedback and
    divider resistors of the device dialect; the ``1/g`` loads of the behavioural one),
    ``"G"`` linear transconductors (the behavioural weights), ``"BI"`` behavioural
    nonlinear transconductors (their whole output current), ``"I"`` current sources (tail
    and bias currents) and ``"Q"`` transistor emitter areas (their saturation current).

    Parameters
    ----------
    sigma : float, optional
        Standard deviation of the log of the factor.
    kinds : tuple of str, optional
        The element kinds that vary (all five by default).
    """

    sigma: float = 0.0
    kinds: tuple = MISMATCH_KINDS

    def __post_init__(self):
        _number("Mismatch", "sigma", self.sigma, lo=0.0, hi=10.0)
        kinds = tuple(self.kinds)
        bad = [k for k in kinds if k not in MISMATCH_KINDS]
        if bad:
            raise DyadsimError(f"Mismatch: unknown kinds {bad}; valid: {', '.join(MISMATCH_KINDS)}")
        object.__setattr__(self, "kinds", kinds)

    @property
    def is_zero(self) -> bool:
        return self.sigma == 0

    @property
    def label(self) -> str:
        return f"mismatch sigma={self.sigma:g}"

    def apply(self, circuit, rng):
        if self.is_zero:
            return circuit
        kinds = set(self.kinds)
        targets = [el for el in circuit.elements() if el.kind.name in kinds]
        factors = iter(np.exp(self.sigma * rng.standard_normal(len(targets))).tolist())
        params = circuit.params

        def fn(el):
            if el.kind.name not in kinds:
                return [el]
            f = next(factors)
            if el.kind is Kind.BI:
                return [replace(el, value=Op("*", Num(f), el.value))]
            if el.kind is DeviceKind.Q:
                return [replace(el, value=Transistor(el.value.model, el.value.area * f))]
            return [replace(el, value=evaluate(el.value, params) * f)]

        return map_elements(circuit, fn)


@dataclass(frozen=True)
class Quantization(Nonideality):
    """Finite weight precision: every weight conductance takes one of ``2**bits`` levels
    ``k * w_max / (2**bits - 1)``, k = 0 .. 2**bits - 1 (its sign kept), by rounding.

    ``w_max`` is in weight units (the full-scale conductance is ``w_max * g``); ``None``
    takes the largest weight conductance in the circuit.  Weights that round to zero are
    removed.  Weights are the crossbar resistors (device dialect) or the weight VCCS
    (behavioural dialect); biases keep full precision.

    Parameters
    ----------
    bits : int or None, optional
        Number of bits (``None``: no quantization).
    w_max : float or None, optional
        The full scale in weight units.
    """

    bits: int | None = None
    w_max: float | None = None

    def __post_init__(self):
        _number("Quantization", "bits", self.bits, lo=1, hi=24, allow_none=True, integer=True)
        w = _number("Quantization", "w_max", self.w_max, lo=0.0, allow_none=True)
        if w is not None and w <= 0:
            raise DyadsimError(f"Quantization: w_max must be positive, got {w!r}")

    @property
    def is_zero(self) -> bool:
        return self.bits is None

    @property
    def label(self) -> str:
        return f"quantization {self.bits} bits"

    def apply(self, circuit, rng):
        if self.is_zero:
            return circuit
        params = circuit.params

        def conductance(el):
            v = evaluate(el.value, params)
            return 1.0 / v if el.kind is Kind.R else v

        gs = [conductance(el) for el in circuit.elements() if is_weight(el)]
        if not gs:
            return circuit
        if self.w_max is None:
            g_max = max(abs(g) for g in gs)
        else:
            if "g" not in params:
                raise DyadsimError("Quantization: the circuit has no unit conductance .param g")
            g_max = self.w_max * evaluate(params["g"], params)
        top = 2 ** int(self.bits) - 1
        step = g_max / top if g_max > 0 else 1.0

        def fn(el):
            if not is_weight(el):
                return [el]
            g = conductance(el)
            k = min(int(round(abs(g) / step)), top)
            if k == 0:
                return []
            q = math.copysign(k * step, g)
            return [replace(el, value=1.0 / q if el.kind is Kind.R else q)]

        return map_elements(circuit, fn)


@dataclass(frozen=True)
class AmplifierNonideal(Nonideality):
    """Op-amp non-idealities (device dialect): open-loop ``gain`` for every op-amp
    (``None``: unchanged; ``inf``: ideal) and a random input offset per op-amp, normal with
    standard deviation ``offset`` volts.

    An offset needs a finite gain for ngspice to resolve the output (``gain * 4 offset``
    below ``MAX_GAIN_TIMES_OFFSET`` = 1e4): with ``gain=None`` or ``inf`` an op-amp whose
    gain is larger than that allows gets ``OFFSET_OPAMP_GAIN`` (1e6) instead.

    Parameters
    ----------
    gain : float or None, optional
        Open-loop gain of every op-amp.
    offset : float, optional
        Standard deviation of the input offsets (volts).
    """

    gain: float | None = None
    offset: float = 0.0

    def __post_init__(self):
        if self.gain is not None and not (isinstance(self.gain, float) and math.isinf(self.gain)
                                          and self.gain > 0):
            _number("AmplifierNonideal", "gain", self.gain, lo=1.0, hi=1e15)
        _number("AmplifierNonideal", "offset", self.offset, lo=0.0, hi=1.0)
        if self.offset > 0 and self.gain is not None and math.isfinite(self.gain) and \
                self.gain * 4 * self.offset > MAX_GAIN_TIMES_OFFSET:
            raise DyadsimError(
                f"AmplifierNonideal: gain {self.gain:g} with offsets of {self.offset:g} V (std): "
                f"gain * 4 std must stay below {MAX_GAIN_TIMES_OFFSET:g} for ngspice to resolve "
                "the outputs (see dyadsim.circuits.OFFSET_OPAMP_GAIN)")

    @property
    def is_zero(self) -> bool:
        return self.gain is None and self.offset == 0

    @property
    def label(self) -> str:
        return f"op-amp gain={self.gain} offset={self.offset:g} V"

    def apply(self, circuit, rng):
        if self.is_zero:
            return circuit
        amps = [el for el in circuit.elements() if is_opamp(el)]
        if not amps:
            raise DyadsimError("AmplifierNonideal applies to device-level netlists "
                               "(compile_device_netlist); this circuit has no op-amps")
        out = circuit
        if self.gain is not None or self.offset > 0:
            if self.gain is None:  # keep each gain, but no more than an offset allows
                A = None
            elif math.isinf(self.gain):
                A = IDEAL_OPAMP_GAIN
            else:
                A = float(self.gain)
            cap = MAX_GAIN_TIMES_OFFSET / (4 * self.offset) if self.offset > 0 else math.inf

            def gain_of(el):
                a = float(el.value) if A is None else A
                return min(OFFSET_OPAMP_GAIN, cap) if a > cap else a

            out = map_elements(out, lambda el: [replace(el, value=gain_of(el))] if is_opamp(el) else [el])
        if self.offset:
            draws = self.offset * rng.standard_normal(len(amps))
            out = add_opamp_offsets(out, {el.name: float(v) for el, v in zip(amps, draws)})
        return out


@dataclass(frozen=True)
class ThermalNoise(Nonideality):
    """Transient noise: a white noise current source across every resistor, with one-sided
    PSD ``4 k T / R`` (Johnson noise at ``temperature`` kelvin) plus ``psd / R**2`` (an
    extra voltage-noise density ``psd`` in V^2/Hz per resistor).

    ngspice's ``trnoise(rms dt 0 0)`` sources draw a new sample every ``dt`` seconds
    (default: the transient's output step) with ``rms = sqrt(PSD / (2 dt))``.  Only for
    ``analysis="tran"``.  ngspice 39 seeds its noise generator from the process id, so
    noisy runs are not reproducible bit for bit (the ``seed`` of the other
    non-idealities does not reach it).

    Parameters
    ----------
    temperature : float, optional
        Kelvin of the Johnson noise.
    psd : float, optional
        Extra voltage-noise density per resistor (V^2/Hz).
    dt : float or None, optional
        Sample interval of the noise sources (seconds).
    """

    temperature: float = 0.0
    psd: float = 0.0
    dt: float | None = None

    def __post_init__(self):
        _number("ThermalNoise", "temperature", self.temperature, lo=0.0, hi=1e9)
        _number("ThermalNoise", "psd", self.psd, lo=0.0, hi=1.0)
        d = _number("ThermalNoise", "dt", self.dt, lo=0.0, hi=1.0, allow_none=True)
        if d is not None and d <= 0:
            raise DyadsimError(f"ThermalNoise: dt must be positive, got {d!r}")

    @property
    def is_zero(self) -> bool:
        return self.temperature == 0 and self.psd == 0

    @property
    def label(self) -> str:
        return f"thermal noise T={self.temperature:g} K psd={self.psd:g} V^2/Hz"

    def apply(self, circuit, rng):
        if self.is_zero:
            return circuit
        if circuit.analysis.kind != "tran":
            raise DyadsimError("ThermalNoise needs a transient netlist (analysis='tran')")
        dt = self.dt if self.dt is not None else circuit.analysis.tstep
        params = circuit.params

        def fn(el):
            if el.kind is not Kind.R:
                return [el]
            r = evaluate(el.value, params)
            s = 4.0 * BOLTZMANN * self.temperature / r + self.psd / (r * r)
            rms = math.sqrt(s / (2.0 * dt))
            return [el, Element(DeviceKind.NOISE, "n_" + el.name, el.nodes, NoiseSource(rms, dt),
                                "thermal noise of the resistor above")]

        return map_elements(circuit, fn)


@dataclass(frozen=True)
class WireResistance(Nonideality):
    """Series wire resistance ``ohms`` in every weight path.

    Device dialect: a resistor in series with each crossbar resistor, between it and the
    summing node (a new node per weight).  Behavioural dialect: the weight VCCS ``gm``
    becomes ``gm / (1 + |gm| ohms)``, the conductance of the same series connection.

    Parameters
    ----------
    ohms : float, optional
        The series resistance.
    """

    ohms: float = 0.0

    def __post_init__(self):
        _number("WireResistance", "ohms", self.ohms, lo=0.0, hi=1e9)

    @property
    def is_zero(self) -> bool:
        return self.ohms == 0

    @property
    def label(self) -> str:
        return f"wire resistance {self.ohms:g} ohm"

    def apply(self, circuit, rng):
        if self.is_zero:
            return circuit
        params = circuit.params
        r_w = float(self.ohms)

        def fn(el):
            if not is_weight(el):
                return [el]
            if el.kind is Kind.R:
                a, b = el.nodes
                mid = "ww_" + el.name
                return [replace(el, nodes=(a, mid)),
                        Element(Kind.R, "wire_" + el.name, (mid, b), r_w, "wire resistance")]
            gm = evaluate(el.value, params)
            return [replace(el, value=gm / (1.0 + abs(gm) * r_w))]

        return map_elements(circuit, fn)


def apply_nonidealities(circuit: Circuit, nonidealities, rng) -> Circuit:
    """Apply non-idealities to a circuit, in order.

    Parameters
    ----------
    circuit : Circuit
        The circuit (not modified).
    nonidealities : sequence
        Non-idealities (:class:`Mismatch`, :class:`Quantization`, ...).
    rng : numpy.random.Generator
        Where the random draws come from.

    Returns
    -------
    Circuit
        A new circuit, or ``circuit`` itself when all of them are of size zero.
    """
    for ni in check_nonidealities(nonidealities):
        circuit = ni.apply(circuit, rng)
    return circuit


def check_nonidealities(nonidealities) -> list:
    """The non-idealities as a list, each checked to be a :class:`Nonideality`.

    Parameters
    ----------
    nonidealities : Nonideality, iterable of Nonideality, or None
        One non-ideality, several, or none.

    Returns
    -------
    list
        The non-idealities in order (``[]`` for ``None``).

    Raises
    ------
    DyadsimError
        When an item is not a non-ideality.
    """
    if nonidealities is None:
        return []
    if isinstance(nonidealities, Nonideality):
        return [nonidealities]
    items = list(nonidealities)
    for ni in items:
        if not isinstance(ni, Nonideality):
            raise DyadsimError(f"not a non-ideality: {ni!r} (use Mismatch, Quantization, "
                               "AmplifierNonideal, ThermalNoise, WireResistance)")
    return items


_check_list = check_nonidealities  # the old private name


def perturbed_netlist(netlist, nonidealities, seed=None):
    """A copy of a compiled netlist with non-idealities applied to its circuit IR and the
    text written again.

    Parameters
    ----------
    netlist : Netlist
        A compiled netlist (:func:`~dyadsim.compile_netlist` or
        :func:`~dyadsim.circuits.compile_device_netlist`).
    nonidealities : sequence
        Non-idealities (:class:`Mismatch`, :class:`Quantization`, ...), applied in order.
    seed : optional
        Anything ``numpy.random.default_rng`` takes (an int, a sequence of ints, a
        ``SeedSequence``) or a ``Generator``; the same seed gives the same perturbed netlist.

    Returns
    -------
    Netlist
        The perturbed copy, with the same node maps.
    """
    items = check_nonidealities(nonidealities)
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    circuit = apply_nonidealities(netlist.circuit, items, rng)
    text = write_circuit(circuit)
    stats = circuit.stats()
    if "dialect" in netlist.stats:
        stats["dialect"] = netlist.stats["dialect"]
    stats["nonidealities"] = [ni.label for ni in items if not ni.is_zero]
    return replace(netlist, text=text, circuit=circuit, path=None, stats=stats)
