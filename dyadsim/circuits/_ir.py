"""A small circuit IR between the network and netlist text (see ../shared/STYLE.md).

The compiler builds a :class:`Circuit` of plain :class:`Element` records whose
behavioural expressions are small trees (:class:`Expr`); a dialect writer
(:mod:`._writer`) turns it into text.  Nothing here knows SPICE syntax.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import Enum

from ..errors import DyadsimError

__all__ = [
    "Kind", "Element", "Section", "Circuit", "Analysis",
    "Expr", "Num", "Param", "Volt", "Call", "Op", "safe_identifier",
]

_SAFE = re.compile(r"^[a-z][a-z0-9_]*$")


def safe_identifier(text: str) -> str:
    """Check that ``text`` is a SPICE-safe identifier (lowercase letters, digits, '_').

    Everything that reaches a netlist as a name goes through here, so no user text can
    add a line, a card or a ``.control`` command.
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
    kind: Kind
    name: str  # without the prefix letter
    nodes: tuple
    value: object  # float, Param-expression, or Expr for behavioural sources
    comment: str = ""


@dataclass
class Section:
    title: str
    elements: list = field(default_factory=list)
    notes: list = field(default_factory=list)

    def add(self, kind, name, nodes, value, comment=""):
        self.elements.append(Element(kind, name, tuple(nodes), value, comment))


@dataclass(frozen=True)
class Analysis:
    kind: str  # "op" or "tran"
    tstep: float = 0.0
    tstop: float = 0.0
    tmax: float = 0.0


@dataclass
class Circuit:
    title: str
    header: list = field(default_factory=list)
    params: dict = field(default_factory=dict)  # name -> float or Expr
    sections: list = field(default_factory=list)
    options: dict = field(default_factory=dict)
    analysis: Analysis = field(default_factory=lambda: Analysis("op"))
    initial_conditions: dict = field(default_factory=dict)  # node -> volts
    nodes: set = field(default_factory=set)

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
