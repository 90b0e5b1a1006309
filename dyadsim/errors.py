"""Exceptions raised by dyadsim.

Every error a user can cause with bad input is a :class:`DyadsimError`, which is also a
:class:`ValueError`, and its message names the offending thing (node, edge, argument).
Failures of the numerical machinery or of ngspice are :class:`ConvergenceError` and
:class:`SimulatorError` (both :class:`RuntimeError`).  A result whose accuracy is limited
by the dynamic range of its encoding comes with a :class:`PrecisionWarning`.
"""

from __future__ import annotations

__all__ = [
    "DyadsimException",
    "DyadsimError",
    "ConvergenceError",
    "SimulatorError",
    "PrecisionWarning",
]


class DyadsimException(Exception):
    """Root of every exception dyadsim raises on purpose."""


class DyadsimError(DyadsimException, ValueError):
    """Invalid input: a malformed network, a shape mismatch, NaN, an unknown name."""


class ConvergenceError(DyadsimException, RuntimeError):
    """An iterative method did not reach its tolerance within its budget."""


class SimulatorError(DyadsimException, RuntimeError):
    """ngspice failed (not installed, parse error, singular matrix, timestep, timeout).

    The attributes carry what a user needs to debug; the message shows the netlist path
    and the last 15 lines of ngspice's log.

    Parameters
    ----------
    message : str
        What went wrong.
    reason : str, optional
        A short category string (``"failed"``, ``"not-installed"``, ``"timeout"``, ...).
    netlist_path : str or path-like, optional
        Where the netlist was written, if anywhere.
    log : str, optional
        ngspice's own output.

    Attributes
    ----------
    reason : str
        As given.
    netlist_path : str or None
        As given, as a string.
    log : str
        As given.
    """

    def __init__(self, message: str, *, reason: str = "failed", netlist_path=None, log: str = ""):
        self.reason = reason
        self.netlist_path = None if netlist_path is None else str(netlist_path)
        self.log = log
        full = message
        if self.netlist_path:
            full += f"\n  netlist: {self.netlist_path}"
        if log:
            tail = "\n".join(log.strip().splitlines()[-15:])
            full += "\n  ngspice said:\n    " + tail.replace("\n", "\n    ")
        super().__init__(full)


class PrecisionWarning(UserWarning):
    """A result is less accurate than asked for because of its number encoding.

    Raised (as a warning) when the predicted rounding floor of a relaxation -- the relative
    error that storing the error signal d as the difference of two large states x and z
    costs, layer by layer -- exceeds the requested accuracy.  The message names the layer
    and the fix: ``state="md"`` (exact), ``dtype=float64``, or gain staging in a circuit.
    """
