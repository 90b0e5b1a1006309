"""Run ngspice on a netlist and get typed results back.

>>> from dyadsim.simulator import simulate
>>> op = simulate(netlist_text, analysis="op")          # doctest: +SKIP
>>> op.v("out")                                         # doctest: +SKIP

Two backends: ``"shared"`` runs libngspice inside this process through PySpice;
``"subprocess"`` runs ``ngspice -b`` and reads its binary raw file.  ``"auto"`` (the
default) uses the shared library when PySpice can load it.  Every failure raises one
:class:`~dyadsim.errors.SimulatorError` whose ``reason`` is one of :class:`Reason`.

Netlists are untrusted input: before ngspice sees one, :func:`check_netlist` refuses every
line that could run commands or read or write files (``.control`` blocks, ``*#`` lines,
``shell``, includes from outside the netlist's folder, ...), naming it
(:class:`UnsafeNetlistError`); ``simulate(..., allow_control=True)`` opts out.

Layout: ``_runner`` (front: :func:`simulate`, :func:`simulate_many`), ``_safety`` (what a
netlist may do), ``_shared`` and ``_subprocess`` (the backends), ``_rawfile`` (pure raw-file
parser), ``_results`` (typed results and the reading of ngspice's messages).
"""

from ..errors import SimulatorError
from ._rawfile import RawPlot, RawVariable, parse_raw
from ._results import OperatingPoint, Reason, Transient, UnknownVectorError
from ._runner import simulate, simulate_many
from ._safety import UnsafeNetlistError, check_netlist
from ._shared import shared_available
from ._subprocess import find_ngspice

__all__ = [
    "simulate",
    "simulate_many",
    "OperatingPoint",
    "Transient",
    "SimulatorError",
    "Reason",
    "UnknownVectorError",
    "UnsafeNetlistError",
    "check_netlist",
    "find_ngspice",
    "shared_available",
    "parse_raw",
    "RawPlot",
    "RawVariable",
]
