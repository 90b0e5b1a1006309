"""A small circuit IR between the network and netlist text.

The compilers (:mod:`._compiler`, behavioural; :mod:`._device`, device level) build a
:class:`Circuit` of plain :class:`Element` records whose behavioural expressions are small
trees (:class:`Expr`); the transforms (:mod:`._transforms`) change circuits; a dialect
writer (:mod:`._writer`) turns one into text.  Nothing here knows SPICE syntax.

Element kinds: :class:`Kind` (R, C, V, I, G, E and behavioural sources) and
:class:`DeviceKind` (bipolar transistors, transient noise sources), with their values
:class:`Transistor` and :class:`NoiseSource`.  A :class:`DeviceCircuit` adds ``.model``
cards.  Roles the transforms look for: :func:`is_opamp`, :func:`is_weight`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from enum import Enum

import numpy as np

from ..errors import DyadsimError

__all__ = [
    "Kind", "DeviceKind", "Element", "Section", "Circuit", "DeviceCircuit", "Analysis",
    "Transistor", "NoiseSource", "Expr", "Num", "Param", "Volt", "Call", "Op",
    "safe_identifier", "is_opamp", "is_weight", "thermal_voltage",
    "IDEAL_OPAMP_GAIN", "OFFSET_OPAMP_GAIN", "MAX_GAIN_TIMES_OFFSET",
]

#: ngspice 39's physical constants (src/include/ngspice/const.h, CODATA 2014): V_T must
#: match the simulator's to the last digit, or tanh's argument is scaled wrongly.
BOLTZMANN = 1.38064852e-23
CHARGE = 1.6021766208e-19
CELSIUS_TO_KELVIN = 273.15

#: Open-loop gain that stands for an ideal op-amp (``OpAmp(gain=inf)``).  Closed-loop
#: errors are ~ noise_gain / A; measured in docs/device_circuit.md.
IDEAL_OPAMP_GAIN = 1e12
#: An input offset lifts the virtual ground off 0 V, and ngspice then resolves
#: A * (V+ - V-) only to ~ 2e-16 * A * |V_offset| volts: beyond A * |V_offset| ~ 1e4 Newton
#: cannot meet reltol = 1e-9 (measured: 1e7 x 1 mV converges, 1e8 x 1 mV does not).  So an
#: op-amp with an offset is a finite-gain one: OpAmp(gain=inf, offset != 0) uses this gain,
#: and larger products are refused.
OFFSET_OPAMP_GAIN = 1e6
MAX_GAIN_TIMES_OFFSET = 1e4

#: prefixes of element names with a role the non-idealities look for
OPAMP_PREFIX = "oa_"
WEIGHT_PREFIX = "w_"


def thermal_voltage(temp_celsius: float) -> float:
    """kT/q at a temperature, with ngspice's constants.

    Parameters
    ----------
    temp_celsius : float
        Temperature in degrees Celsius.

    Returns
    -------
    float
        The thermal voltage in volts (0.025864917... at 27 C).
    """
    return BOLTZMANN * (temp_celsius + CELSIUS_TO_KELVIN) / CHARGE


def _check_number(name, value, *, positive=False, nonneg=False, allow_inf=False):
    """A real number that may reach a netlist (bool, NaN, inf refused unless allowed)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise DyadsimError(f"{name} must be a number, got {value!r}")
    value = float(value)
    if math.isnan(value) or (math.isinf(value) and not allow_inf):
        raise DyadsimError(f"{name} must be a finite number, got {value!r}")
    if positive and not value > 0:
        raise DyadsimError(f"{name} must be positive, got {value!r}")
    if nonneg and value < 0:
        raise DyadsimError(f"{name} must be >= 0, got {value!r}")
    return value

_SAFE = re.compile(r"^[a-z][a-z0-9_]*$")


def safe_identifier(text: str) -> str:
    """Check that ``text`` is a SPICE-safe identifier (lowercase letters, digits, '_').

    Everything that reaches a netlist as a name goes through here, so no user text can
    add a line, a card or a ``.control`` command.

    Parameters
    ----------
    text : str
        The candidate name: a lowercase letter, then lowercase letters, digits or ``_``;
        at most 200 characters.

    Returns
    -------
    str
        ``text`` itself.

    Raises
    ------
    DyadsimError
        When it is not such a name.
    """
    if type(text) is str and text in _checked:
        return text
    if not isinstance(text, str) or not _SAFE.fullmatch(text) or len(text) > 200:
        raise DyadsimError(f"unsafe netlist identifier {text!r}")
    if len(_checked) < 1_000_000:
        _checked.add(text)
    return text


_checked: set = set()  # identifiers already validated (netlists repeat each node name)


class Kind(str, Enum):
    """Element kinds; ``prefix`` is the SPICE element letter."""

    R = "R"  # resistor: nodes (n+, n-), value ohms
    C = "C"  # capacitor: nodes (n+, n-), value farads
    V = "V"  # independent DC voltage source: nodes (n+, n-), value volts
    I = "I"  # independent DC current source: nodes (n+, n-), value amperes (n+ -> n-)
    G = "G"  # VCCS: nodes (n+, n-, nc+, nc-), value transconductance
    E = "E"  # VCVS: nodes (n+, n-, nc+, nc-), value gain
    BI = "BI"  # behavioural current source: nodes (n+, n-), value Expr (current n+ -> n-)
    BV = "BV"  # behavioural voltage source: nodes (n+, n-), value Expr

    @property
    def prefix(self) -> str:
        """The SPICE element letter."""
        return self.value[0]


class DeviceKind(str, Enum):
    """Element kinds of the device level, beyond :class:`Kind`; ``prefix`` is the SPICE letter."""

    Q = "Q"  # bipolar transistor: nodes (collector, base, emitter), value Transistor
    NOISE = "INOISE"  # transient noise current source: nodes (n+, n-), value NoiseSource

    @property
    def prefix(self) -> str:
        """The SPICE element letter."""
        return self.value[0]


@dataclass(frozen=True)
class Transistor:
    """Value of a ``Q`` element.

    Parameters
    ----------
    model : str
        The ``.model`` card it uses.
    area : float
        Emitter area (scales the saturation current IS).
    """

    model: str
    area: float = 1.0


@dataclass(frozen=True)
class NoiseSource:
    """Value of a transient noise current source (ngspice ``trnoise(rms dt 0 0)``).

    Parameters
    ----------
    rms : float
        White noise of ``rms`` amperes; one-sided PSD = 2 rms^2 dt.
    dt : float
        A new sample every ``dt`` seconds.
    """

    rms: float
    dt: float


# ---------------------------------------------------------------- expressions
class Expr:
    """Base of expression trees; build with the operators or the constructors below."""

    def _wrap(self, o):
        return o if isinstance(o, Expr) else Num(float(o))

    def __add__(self, o): return Op("+", self, self._wrap(o))
    def __radd__(self, o): return Op("+", self._wrap(o), self)
    def __sub__(self, o): return Op("-", self, self._wrap(o))
    def __rsub__(self, o): return Op("-", self._wrap(o), self)
    def __mul__(self, o): return Op("*", self, self._wrap(o))
    def __rmul__(self, o): return Op("*", self._wrap(o), self)
    def __truediv__(self, o): return Op("/", self, self._wrap(o))
    def __rtruediv__(self, o): return Op("/", self._wrap(o), self)
    def __neg__(self): return Op("-", Num(0.0), self)


@dataclass(frozen=True)
class Num(Expr):
    value: float


@dataclass(frozen=True)
class Param(Expr):
    name: str


@dataclass(frozen=True)
class Volt(Expr):
    node: str


@dataclass(frozen=True)
class Call(Expr):
    fn: str  # one of: tanh exp ln abs sqrt step ramp max min
    args: tuple


@dataclass(frozen=True)
class Op(Expr):
    op: str
    left: Expr
    right: Expr


# ---------------------------------------------------------------- circuit records
@dataclass(frozen=True)
class Element:
    """One circuit element.

    Parameters
    ----------
    kind : Kind
        What it is (its SPICE prefix letter).
    name : str
        Its name, without the prefix letter.
    nodes : tuple of str
        Its terminals, in SPICE order.
    value : object
        A float, a ``.param`` expression, or an expression for behavioural sources.
    comment : str, optional
        Written after the element.
    """
    kind: Kind
    name: str  # without the prefix letter
    nodes: tuple
    value: object  # float, Param-expression, or Expr for behavioural sources
    comment: str = ""


@dataclass
class Section:
    """A titled group of elements (written under a comment line).

    Parameters
    ----------
    title : str
        The section's comment.
    elements : list of Element, optional
        Its elements (``add`` appends one).
    notes : list of str, optional
        Comment lines written before the elements.
    """
    title: str
    elements: list = field(default_factory=list)
    notes: list = field(default_factory=list)

    def add(self, kind, name, nodes, value, comment=""):
        self.elements.append(Element(kind, name, tuple(nodes), value, comment))


@dataclass(frozen=True)
class Analysis:
    """The analysis card.

    Parameters
    ----------
    kind : str
        ``"op"`` or ``"tran"``.
    tstep, tstop, tmax : float, optional
        The transient's output step, end time and largest internal step (seconds).
    """
    kind: str  # "op" or "tran"
    tstep: float = 0.0
    tstop: float = 0.0
    tmax: float = 0.0


@dataclass
class Circuit:
    """A whole circuit: header lines, ``.param`` values, sections of elements, initial
    conditions, first guesses (``.nodeset``), ``.options`` and the analysis.

    Parameters
    ----------
    title : str
        The title line.
    header : list of str, optional
        Comment lines after the title.
    params : dict, optional
        ``.param`` values: name -> float or expression.
    sections : list of Section, optional
        The elements, in sections.
    options : dict, optional
        ``.options`` values.
    analysis : Analysis, optional
        The analysis (default ``.op``).
    initial_conditions : dict, optional
        ``.ic`` values: node -> volts.
    nodes : set, optional
        Every node name of the circuit.
    nodesets : dict, optional
        ``.nodeset`` values (Newton's first guess): node -> volts.
    """

    title: str
    header: list = field(default_factory=list)
    params: dict = field(default_factory=dict)  # name -> float or Expr
    sections: list = field(default_factory=list)
    options: dict = field(default_factory=dict)
    analysis: Analysis = field(default_factory=lambda: Analysis("op"))
    initial_conditions: dict = field(default_factory=dict)  # node -> volts
    nodes: set = field(default_factory=set)
    nodesets: dict = field(default_factory=dict)  # node -> volts: Newton's first guess (.nodeset)

    def section(self, title) -> Section:
        s = Section(title)
        self.sections.append(s)
        return s

    def elements(self):
        for s in self.sections:
            yield from s.elements

    def stats(self) -> dict:
        counts: dict = {}
        for e in self.elements():
            key = e.kind.name
            counts[key] = counts.get(key, 0) + 1
        nodes = {n for e in self.elements() for n in e.nodes if n != "0"}
        return {"elements": sum(counts.values()), "by_kind": counts, "nodes": len(nodes)}


@dataclass
class DeviceCircuit(Circuit):
    """A :class:`Circuit` with ``.model`` cards.

    Parameters
    ----------
    title : str
        The title line.
    header : list of str, optional
        Comment lines after the title.
    params : dict, optional
        ``.param`` values: name -> float or expression.
    sections : list of Section, optional
        The elements, in sections.
    options : dict, optional
        ``.options`` values.
    analysis : Analysis, optional
        The analysis (default ``.op``).
    initial_conditions : dict, optional
        ``.ic`` values: node -> volts.
    nodes : set, optional
        Every node name of the circuit.
    nodesets : dict, optional
        ``.nodeset`` values (Newton's first guess): node -> volts.
    models : dict, optional
        ``models[name] = (type, {param: value})``.
    """

    models: dict = field(default_factory=dict)


# ---------------------------------------------------------------- roles
def is_opamp(el: Element) -> bool:
    """Whether an element is an op-amp of the device dialect (an ``E`` element named ``oa_*``).

    Parameters
    ----------
    el : Element

    Returns
    -------
    bool
    """
    return el.kind is Kind.E and el.name.startswith(OPAMP_PREFIX)


def is_weight(el: Element) -> bool:
    """Whether an element is a weight: a crossbar resistor (device dialect, named ``w_*``)
    or a weight VCCS (behavioural dialect: every ``G`` element).

    Parameters
    ----------
    el : Element

    Returns
    -------
    bool
    """
    return (el.kind is Kind.R and el.name.startswith(WEIGHT_PREFIX)) or el.kind is Kind.G
