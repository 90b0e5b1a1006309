"""Netlist writers: a base netlister walks the IR; a dialect overrides the hooks.

:class:`NgspiceNetlister` writes behavioural circuits; :class:`DeviceNetlister` adds
transistors, transient noise sources and ``.model`` cards (on a behavioural circuit it
writes exactly what :class:`NgspiceNetlister` writes); :func:`write_circuit` writes
either kind.
"""

from __future__ import annotations

import io
import re

from ..errors import DyadsimError
from ._ir import (
    Analysis, Call, Circuit, DeviceKind, Element, Expr, Kind, Num, Op, Param, Volt, _check_number,
    safe_identifier,
)

__all__ = ["Netlister", "NgspiceNetlister", "DeviceNetlister", "write_circuit", "format_number"]

_COMMENT_BAD = re.compile(r"[^\x20-\x7e]")


def format_number(x: float) -> str:
    """Shortest round-trip repr of a float (deterministic, full precision).

    Parameters
    ----------
    x : float

    Returns
    -------
    str
        ``"0"`` for zero, else ``repr(float(x))`` (e.g. ``"1e-12"``, ``"0.5"``).
    """
    x = float(x)
    if x == 0:
        return "0"
    return repr(x)


def format_comment(text: str) -> str:
    """One printable ASCII line: control characters (newlines!) are escaped."""
    return _COMMENT_BAD.sub(lambda m: ascii(m.group())[1:-1], str(text))


class Netlister:
    """Walks a :class:`Circuit` and writes it to a text stream.

    Subclasses override ``format_*`` hooks for their dialect; ``write_*`` methods write.

    Parameters
    ----------
    stream : text stream, optional
        Where to write (default: a new ``io.StringIO``).
    """

    comment_prefix = "*"
    _precedence = {"+": 1, "-": 1, "*": 2, "/": 2}

    def __init__(self, stream=None):
        self.stream = stream if stream is not None else io.StringIO()

    # -- writing
    def write(self, circuit: Circuit) -> None:
        self.write_title(circuit)
        self.write_header(circuit)
        self.write_params(circuit)
        for section in circuit.sections:
            self.write_section(section)
        self.write_initial_conditions(circuit)
        self.write_options(circuit)
        self.write_analysis(circuit.analysis)
        self.write_end()

    def _line(self, text=""):
        self.stream.write(text + "\n")

    def write_comment(self, text):
        self._line(f"{self.comment_prefix} {format_comment(text)}".rstrip())

    def write_title(self, circuit):
        # ngspice may read a first line that looks like a card ('.include ...', '*ng_script')
        # as one: the title always starts with a fixed word
        self._line("dyadsim: " + format_comment(circuit.title))

    def write_header(self, circuit):
        for line in circuit.header:
            self.write_comment(line)
        self._line()

    def write_params(self, circuit):
        for name, value in circuit.params.items():
            self._line(f".param {safe_identifier(name)}={self.format_param_value(value)}")
        self._line()

    def write_section(self, section):
        self.write_comment("-" * 70)
        self.write_comment(section.title)
        for note in section.notes:
            self.write_comment(note)
        self.write_comment("-" * 70)
        last = None
        for el in section.elements:
            if el.comment and el.comment != last:
                self.write_comment(el.comment)
            last = el.comment
            self._line(self.format_element(el))
        self._line()

    def write_initial_conditions(self, circuit):
        pass

    def write_options(self, circuit):
        pass

    def write_analysis(self, analysis: Analysis):
        pass

    def write_end(self):
        self._line(".end")

    # -- formatting hooks
    def format_param_value(self, value) -> str:
        if isinstance(value, Expr):
            return "{" + self.format_expr(value) + "}"
        return format_number(value)

    def format_value(self, value) -> str:
        if isinstance(value, Expr) and not isinstance(value, Num):
            return "{" + self.format_expr(value) + "}"
        if isinstance(value, Num):
            value = value.value
        return format_number(value)

    def format_element(self, el: Element) -> str:
        raise NotImplementedError

    def format_expr(self, e: Expr, parent: int = 0) -> str:
        if isinstance(e, Num):
            s = format_number(e.value)
            return f"({s})" if e.value < 0 else s
        if isinstance(e, Param):
            return safe_identifier(e.name)
        if isinstance(e, Volt):
            return self.format_voltage(e.node)
        if isinstance(e, Call):
            return self.format_call(e.fn, [self.format_expr(a) for a in e.args])
        if isinstance(e, Op):
            p = self._precedence[e.op]
            left = self.format_expr(e.left, p)
            # right operand of - and / needs parentheses at equal precedence
            right = self.format_expr(e.right, p + (1 if e.op in "-/" else 0))
            s = f"{left}{e.op}{right}"
            return f"({s})" if p < parent else s
        raise TypeError(f"not an expression: {e!r}")

    def format_voltage(self, node: str) -> str:
        return f"v({safe_identifier(node)})"

    def format_call(self, fn: str, args: list) -> str:
        return f"{fn}({', '.join(args)})"


class NgspiceNetlister(Netlister):
    """The ngspice dialect (B sources, ``.options``, ``.ic``, ``.op``/``.tran``).

    Parameters
    ----------
    stream : text stream, optional
        Where to write (default: a new ``io.StringIO``).
    """

    _functions = {"tanh": "tanh", "exp": "exp", "ln": "ln", "abs": "abs", "sqrt": "sqrt",
                  "step": "u", "ramp": "uramp", "max": "max", "min": "min"}

    def format_call(self, fn, args):
        return f"{self._functions[fn]}({','.join(args)})"

    def format_element(self, el: Element) -> str:
        name = el.kind.prefix + safe_identifier(el.name)
        nodes = " ".join(n if n == "0" else safe_identifier(n) for n in el.nodes)
        if el.kind is Kind.BI:
            return f"{name} {nodes} I={self.format_expr(el.value)}"
        if el.kind is Kind.BV:
            return f"{name} {nodes} V={self.format_expr(el.value)}"
        if el.kind in (Kind.V, Kind.I):
            return f"{name} {nodes} DC {self.format_value(el.value)}"
        return f"{name} {nodes} {self.format_value(el.value)}"

    def write_initial_conditions(self, circuit):
        if circuit.initial_conditions:
            self.write_comment("initial state of the relaxation (x = z = 0); .ic without uic keeps t=0")
            items = [f"v({safe_identifier(n)})={format_number(v)}"
                     for n, v in circuit.initial_conditions.items()]
            for i in range(0, len(items), 8):
                self._line(".ic " + " ".join(items[i:i + 8]))
            self._line()
        nodesets = getattr(circuit, "nodesets", None) or {}
        if nodesets:
            self.write_comment("first guess of the operating point at the transistor nodes (.nodeset)")
            items = [f"v({safe_identifier(n)})={format_number(_check_number('nodeset', v))}"
                     for n, v in nodesets.items()]
            for i in range(0, len(items), 8):
                self._line(".nodeset " + " ".join(items[i:i + 8]))
            self._line()

    def write_options(self, circuit):
        if circuit.options:
            opts = " ".join(
                k if v is True else f"{k}={format_number(v) if isinstance(v, float) else v}"
                for k, v in circuit.options.items()
            )
            self._line(f".options {opts}")

    def write_analysis(self, a: Analysis):
        if a.kind == "op":
            self._line(".op")
        elif a.kind == "tran":
            self._line(f".tran {format_number(a.tstep)} {format_number(a.tstop)} 0 {format_number(a.tmax)}")
        else:
            raise ValueError(f"unknown analysis {a.kind!r}")


class DeviceNetlister(NgspiceNetlister):
    """ngspice writer for circuits that may hold transistors, ``.model`` cards and
    transient noise sources.  On a plain behavioural :class:`~._ir.Circuit` it writes
    exactly what :class:`NgspiceNetlister` writes.

    Parameters
    ----------
    stream : text stream, optional
        Where to write (default: a new ``io.StringIO``).
    """

    def write_params(self, circuit):
        super().write_params(circuit)
        models = getattr(circuit, "models", None) or {}
        if not models:
            return
        self.write_comment("device models (Gummel-Poon bipolar transistors)")
        for name, (mtype, params) in models.items():
            if mtype not in ("npn", "pnp"):
                raise DyadsimError(f"unknown model type {mtype!r}")
            body = " ".join(f"{safe_identifier(k)}={format_number(_check_number(k, v))}"
                            for k, v in params.items())
            self._line(f".model {safe_identifier(name)} {mtype}({body})")
        self._line()

    def format_element(self, el: Element) -> str:
        if el.kind is DeviceKind.Q:
            t = el.value
            nodes = " ".join(n if n == "0" else safe_identifier(n) for n in el.nodes)
            area = _check_number("transistor area", t.area, positive=True)
            return f"Q{safe_identifier(el.name)} {nodes} {safe_identifier(t.model)} area={format_number(area)}"
        if el.kind is DeviceKind.NOISE:
            ns = el.value
            nodes = " ".join(n if n == "0" else safe_identifier(n) for n in el.nodes)
            rms = _check_number("noise rms", ns.rms, nonneg=True)
            dt = _check_number("noise dt", ns.dt, positive=True)
            return (f"I{safe_identifier(el.name)} {nodes} DC 0 "
                    f"trnoise({format_number(rms)} {format_number(dt)} 0 0)")
        return super().format_element(el)


def write_circuit(circuit: Circuit) -> str:
    """The netlist text of a circuit, behavioural or device-level.

    Parameters
    ----------
    circuit : Circuit
        The circuit IR (a :class:`~._ir.DeviceCircuit` for transistors and ``.model`` cards).

    Returns
    -------
    str
        The ngspice netlist, ending with ``.end``.
    """
    writer = DeviceNetlister()
    writer.write(circuit)
    return writer.stream.getvalue()
