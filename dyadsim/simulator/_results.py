"""Typed simulation results, and the reading of ngspice's messages into failure reasons.

Both backends hand over the same things: a list of :class:`~._rawfile.RawPlot` and the lines
ngspice printed.  This module turns the plot into an :class:`OperatingPoint` or a
:class:`Transient`, and the lines into a :class:`Reason` when the run failed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import Enum
from typing import Iterable, Optional

import numpy as np

from ..errors import DyadsimError, SimulatorError
from ._rawfile import RawPlot

__all__ = [
    "OperatingPoint",
    "Transient",
    "Reason",
    "Diagnosis",
    "UnknownVectorError",
    "diagnose_log",
    "simulator_error",
    "result_from_plot",
]


class Reason(str, Enum):
    """Why a simulation failed: the ``reason`` of a :class:`SimulatorError`."""

    NOT_INSTALLED = "not-installed"  #: no ngspice executable / shared library
    PARSE = "parse"  #: ngspice rejected the netlist text
    SINGULAR_MATRIX = "singular-matrix"  #: floating node, voltage-source loop, ...
    TIMESTEP_TOO_SMALL = "timestep-too-small"  #: transient step control gave up
    NO_CONVERGENCE = "no-convergence"  #: Newton / gmin / source stepping failed
    TIMEOUT = "timeout"  #: the run exceeded its time limit and was stopped
    NO_ANALYSIS = "no-analysis"  #: the netlist lacks the requested analysis card
    FAILED = "failed"  #: any other failure (message says what)


def simulator_error(message: str, *, reason: Reason | str, log: str = "", netlist_path=None) -> SimulatorError:
    """Build the one :class:`SimulatorError` a failed run raises (``.summary`` keeps ``message``)."""
    reason = reason.value if isinstance(reason, Reason) else str(reason)
    err = SimulatorError(message, reason=reason, netlist_path=netlist_path, log=log)
    err.summary = message
    return err


class UnknownVectorError(DyadsimError, KeyError):
    """A node or element name that is not in the simulation result."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


# --------------------------------------------------------------------------- names


_VOLTAGE_NAME = re.compile(r"v\((.+)\)", re.IGNORECASE)
_CURRENT_NAME = re.compile(r"i\((.+)\)", re.IGNORECASE)


def classify_vector(name: str, vtype: str) -> tuple[str, str]:
    """Split an ngspice vector name into (kind, key): kind is voltage/current/scale/other.

    Raw files say ``v(out)`` and ``i(v1)``; the shared library says ``out`` or ``V(2)``
    (numeric node names) and ``v1#branch``.  Keys come out lowercased: ``out``, ``2``, ``v1``.
    """
    low = name.strip().lower()
    vtype = vtype.strip().lower()
    if vtype in ("time", "frequency") or low in ("time", "frequency"):
        return "scale", low
    match = _VOLTAGE_NAME.fullmatch(low)
    if match and vtype in ("voltage", ""):
        return "voltage", match.group(1)
    match = _CURRENT_NAME.fullmatch(low)
    if match and vtype in ("current", ""):
        return "current", match.group(1)
    if low.endswith("#branch"):
        return "current", low[: -len("#branch")]
    if vtype == "voltage":
        return "voltage", low
    if vtype == "current":
        return "current", low
    return "other", low


def _split_key(key: str) -> tuple[Optional[str], str]:
    """``"v(out)"`` -> ("voltage", "out"); ``"i(v1)"`` -> ("current", "v1"); ``"out"`` -> (None, "out")."""
    low = str(key).strip().lower()
    match = _VOLTAGE_NAME.fullmatch(low)
    if match:
        return "voltage", match.group(1).strip()
    match = _CURRENT_NAME.fullmatch(low)
    if match:
        return "current", match.group(1).strip()
    return None, low


def _lookup(table: dict, key: str, what: str, saved=None):
    try:
        return table[key]
    except KeyError:
        have = sorted(table)
        shown = ", ".join(have[:20]) + (" ..." if len(have) > 20 else "")
        hint = ""
        if saved is not None:
            hint = (f" (only {len(saved)} node voltages were saved: pass save='all' to simulate to "
                    "keep every vector)")
        raise UnknownVectorError(f"no {what} {key!r} in the simulation result; have: {shown or 'none'}{hint}") from None


# --------------------------------------------------------------------------- results


class _Vectors:
    """Name lookups shared by the result types (``voltages``/``currents`` dicts, lowercase)."""

    def v(self, node: str):
        """Voltage of ``node`` (name as in the netlist, any case; ``"v(node)"`` accepted):
        a float for an operating point, a waveform for a transient."""
        kind, key = _split_key(node)
        return _lookup(self.voltages, key, "node", self.saved)

    def i(self, element: str):
        """Current through ``element`` (a voltage source or inductor; ``"i(v1)"`` accepted)."""
        kind, key = _split_key(element)
        return _lookup(self.currents, key, "branch current", self.saved)

    def __getitem__(self, key: str):
        kind, name = _split_key(key)
        if kind == "current":
            return _lookup(self.currents, name, "branch current", self.saved)
        return _lookup(self.voltages, name, "node", self.saved)

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, str):
            return False
        kind, name = _split_key(key)
        return name in (self.currents if kind == "current" else self.voltages)

    @property
    def nodes(self) -> list[str]:
        """Node names (lowercase), in ngspice's order."""
        return list(self.voltages)


@dataclass(frozen=True)
class OperatingPoint(_Vectors):
    """DC operating point: node voltages and branch currents, keys lowercased.

    ``op.v("out")`` (case-insensitive) and ``op["out"]`` give a node voltage;
    ``op.i("v1")`` and ``op["i(v1)"]`` give the current through a voltage source
    (ngspice's sign: positive flowing into the source's + terminal).  ``saved`` names the
    nodes ngspice was asked to keep (``simulate(save=...)``; None: everything).

    Parameters
    ----------
    voltages : dict
        Node name (lowercase) -> volts.
    currents : dict
        Voltage source name (lowercase) -> amperes.
    netlist_path : str or None, optional
        Where the netlist was written, if anywhere.
    backend : str, optional
        The backend that ran it (``"subprocess"``, ``"shared"``).
    log : str, optional
        ngspice's output.
    saved : tuple or None, optional
        The nodes ngspice was asked to keep.
    """

    voltages: dict[str, float]
    currents: dict[str, float]
    netlist_path: Optional[str] = None
    backend: str = ""
    log: str = field(default="", repr=False)
    saved: Optional[tuple] = field(default=None, repr=False)


@dataclass(frozen=True, eq=False)
class Transient(_Vectors):
    """Transient waveforms: ``time`` and per-node/per-branch arrays of the same length.

    Arrays are read-only.  ``tr.v("out")`` gives a waveform; ``tr["time"]`` the time axis;
    ``tr.final()`` gives an :class:`OperatingPoint` of the values at the last time point.
    ``saved`` names the nodes ngspice was asked to keep (None: everything).

    Parameters
    ----------
    time : ndarray
        The time points (seconds).
    voltages : dict
        Node name (lowercase) -> waveform.
    currents : dict
        Voltage source name (lowercase) -> current waveform.
    netlist_path : str or None, optional
        Where the netlist was written, if anywhere.
    backend : str, optional
        The backend that ran it (``"subprocess"``, ``"shared"``).
    log : str, optional
        ngspice's output.
    saved : tuple or None, optional
        The nodes ngspice was asked to keep.
    """

    time: np.ndarray
    voltages: dict[str, np.ndarray]
    currents: dict[str, np.ndarray]
    netlist_path: Optional[str] = None
    backend: str = ""
    log: str = field(default="", repr=False)
    saved: Optional[tuple] = field(default=None, repr=False)

    def __getitem__(self, key: str) -> np.ndarray:
        kind, name = _split_key(key)
        if kind != "current" and name == "time":
            return self.time
        return super().__getitem__(key)

    def final(self) -> OperatingPoint:
        """The last time point as an :class:`OperatingPoint` (same keys, float values)."""
        return OperatingPoint(
            voltages={k: float(a[-1]) for k, a in self.voltages.items()},
            currents={k: float(a[-1]) for k, a in self.currents.items()},
            netlist_path=self.netlist_path,
            backend=self.backend,
            log=self.log,
            saved=self.saved,
        )


def _readonly(array: np.ndarray) -> np.ndarray:
    array = np.asarray(array)
    if array.flags.writeable and array.flags.owndata:
        array.setflags(write=False)
    elif array.flags.writeable:
        array = array.copy()
        array.setflags(write=False)
    return array


def result_from_plot(plot: RawPlot, analysis: str, *, netlist_path=None, backend: str = "", log: str = ""):
    """Turn a ``RawPlot`` of an ``"op"`` or ``"tran"`` analysis into the typed result."""
    voltages: dict = {}
    currents: dict = {}
    time = None
    for variable, column in zip(plot.variables, plot.columns):
        kind, key = classify_vector(variable.name, variable.type)
        if np.iscomplexobj(column):
            column = column.real if key in ("time", "frequency") else column
        if kind == "scale":
            time = column
        elif kind == "voltage":
            voltages[key] = column
        else:  # branch currents and any other (device-internal) vectors
            currents[key] = column
    if analysis == "op":
        return OperatingPoint(
            voltages={k: float(np.real(c[0])) for k, c in voltages.items()},
            currents={k: float(np.real(c[0])) for k, c in currents.items()},
            netlist_path=None if netlist_path is None else str(netlist_path),
            backend=backend,
            log=log,
        )
    if analysis == "tran":
        if time is None:
            raise simulator_error(f"transient plot {plot.plotname!r} has no time vector", reason=Reason.FAILED, log=log)
        return Transient(
            time=_readonly(time),
            voltages={k: _readonly(c) for k, c in voltages.items()},
            currents={k: _readonly(c) for k, c in currents.items()},
            netlist_path=None if netlist_path is None else str(netlist_path),
            backend=backend,
            log=log,
        )
    raise ValueError(f"unsupported analysis {analysis!r}")


# --------------------------------------------------------------------------- diagnosis

# Lines are matched case-insensitively.  ngspice prints notes ("Note: ..."), warnings
# ("Warning: ..."), progress ("Reference value", "Trying gmin = ...") and banners on the same
# streams as its errors, so only these patterns count as errors.
_PARSE_PATTERNS = [
    r"error on line",
    r"unknown subckt",
    r"could not find",
    r"no such function",
    r"syntax error",
    r"circuit not parsed",
    r"simulation interrupted due to error",
    r"model name is not found",
    r"unknown (?:device|element|parameter|model|command|option)",
    r"undefined (?:parameter|subckt|model)",
    r"is not a valid",
    r"too few nodes",
    r"missing .end",
    r"there aren't any circuits loaded",
]
_OP_FAILURE_PATTERNS = [
    r"doanalyses: op",
    r"dc solution failed",
    r"transient op failed",
    r"iteration limit reached",
    r"gmin stepping failed",
    r"source stepping failed",
    r"no convergence",
    r"convergence problem",
    r"too many iterations",
]
_ERROR_LINE = re.compile(
    r"\berror\b|^doanalyses:|simulation\(s\) aborted|timestep too small|could not find|"
    r"no such vector|interrupted|^fatal",
    re.IGNORECASE,
)
_INFO_PREFIX = re.compile(r"^(note|warning|info)\b", re.IGNORECASE)


@dataclass(frozen=True)
class Diagnosis:
    """A failure read from ngspice's output: its reason and the lines that say so."""

    reason: Reason
    lines: tuple[str, ...]

    @property
    def message(self) -> str:
        """``"ngspice: <the first few error lines>"``."""
        return "ngspice: " + " | ".join(self.lines[:4])


def clean_lines(lines: Iterable[str]) -> list[str]:
    """Strip the shared library's ``stdout ``/``stderr `` prefixes and trailing CR/blanks."""
    out = []
    for line in lines:
        for prefix in ("stdout ", "stderr "):
            if line.startswith(prefix):
                line = line[len(prefix):]
                break
        line = line.rstrip("\r\n ").replace("\r", " ")
        out.append(line)
    return out


def error_lines(lines: Iterable[str]) -> list[str]:
    """The lines that report an error (notes, warnings, progress and banners excluded)."""
    found = []
    lines = list(lines)
    for n, line in enumerate(lines):
        text = line.strip()
        if not text or _INFO_PREFIX.match(text) or not _ERROR_LINE.search(text):
            continue
        found.append(text)
        # "Error on line 3 or its substitute:" is followed by the line and the reason
        if text.lower().startswith("error on line"):
            found.extend(l.strip() for l in lines[n + 1:n + 3] if l.strip())
    return list(dict.fromkeys(found))


def diagnose_log(lines: Iterable[str], *, failed: bool = False) -> Optional[Diagnosis]:
    """Read ngspice's output lines; return why the run failed, or None if nothing failed.

    ``failed=True`` (the process exited non-zero) always yields a diagnosis, with reason
    ``"failed"`` when no line says more.  A singular matrix is reported as the root cause
    even when ngspice's own last message is about gmin stepping or the time step.
    """
    lines = clean_lines(lines)
    errors = error_lines(lines)
    if not errors:
        if not failed:
            return None
        tail = [l for l in lines if l.strip()][-3:]
        return Diagnosis(Reason.FAILED, tuple(tail) or ("ngspice exited with an error and printed nothing",))
    joined = "\n".join(errors).lower()
    everything = "\n".join(lines).lower()

    def has(patterns, text=joined):
        return any(re.search(p, text) for p in patterns)

    if has(_PARSE_PATTERNS):
        reason = Reason.PARSE
    elif "singular matrix" in everything:
        reason = Reason.SINGULAR_MATRIX
        hints = [l.strip() for l in lines if "singular matrix" in l.lower()][:1]
        errors = list(dict.fromkeys(hints + errors))
    elif has(_OP_FAILURE_PATTERNS):
        reason = Reason.NO_CONVERGENCE
    elif "timestep too small" in joined:
        reason = Reason.TIMESTEP_TOO_SMALL
    else:
        reason = Reason.FAILED
    return Diagnosis(reason, tuple(errors))


def singular_matrix_lines(lines: Iterable[str]) -> list[str]:
    """Lines in which ngspice reports a singular matrix (it may have recovered from it)."""
    return [l.strip() for l in clean_lines(lines) if "singular matrix" in l.lower()]
