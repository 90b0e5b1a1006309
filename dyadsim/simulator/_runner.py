"""Front door: :func:`simulate` (one netlist) and :func:`simulate_many` (several, in parallel).

setup (netlist text, analysis check, run directory) -> run (a backend) -> parse (RawPlot)
-> typed result; a failure anywhere raises one :class:`~dyadsim.errors.SimulatorError`.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterable, Optional, Union

from ..errors import DyadsimError, SimulatorError
from . import _shared, _subprocess
from ._results import OperatingPoint, Reason, Transient, result_from_plot, simulator_error, singular_matrix_lines

__all__ = ["simulate", "simulate_many", "ANALYSES", "BACKENDS"]

ANALYSES = ("op", "tran")
BACKENDS = ("auto", "shared", "subprocess")

_CARD = {
    "op": re.compile(r"^[ \t]*\.op\b", re.IGNORECASE | re.MULTILINE),
    "tran": re.compile(r"^[ \t]*\.tran\b", re.IGNORECASE | re.MULTILINE),
}
_END_CARD = re.compile(r"^[ \t]*\.end[ \t]*$", re.IGNORECASE | re.MULTILINE)
_RUN_DIR_PREFIX = "dyadsim-ngspice-"

Result = Union[OperatingPoint, Transient]


def simulate(
    netlist,
    analysis: Optional[str] = None,
    backend: str = "auto",
    timeout: Optional[float] = 60.0,
    workdir: Union[str, os.PathLike, None] = None,
    keep_files: bool = False,
    *,
    allow_singular: bool = False,
) -> Result:
    """Run an ngspice netlist and return its ``.op`` or ``.tran`` result.

    Parameters
    ----------
    netlist
        The deck: netlist text (title line, elements, ``.options``, the analysis card,
        ``.end``), an object with a ``.text`` attribute (and optionally ``.path``), or a
        path (``pathlib.Path``, or a str without newline naming an existing file).
        A missing ``.end`` is appended.
    analysis
        ``"op"`` or ``"tran"``: which result to return.  The netlist carries the card
        itself; if it lacks it, SimulatorError(reason="no-analysis").  ``None`` picks the
        one card the netlist has.
    backend
        ``"shared"`` (libngspice in this process, through PySpice), ``"subprocess"``
        (``ngspice -b``), or ``"auto"``: shared when PySpice loads libngspice and the engine
        is free, else subprocess.
    timeout
        Seconds (``None``: no limit).  The subprocess backend kills ngspice when it expires.
        The shared backend raises at the deadline and halts a transient at once, but cannot
        interrupt a netlist parse or an ``.op``: those keep the engine busy until they end.
    workdir
        Parent directory of the temporary run directory (default: the system's).
    keep_files
        Keep the run directory (``in.cir``, ``out.log``, ``out.raw``); the result's
        ``netlist_path`` then points into it.  A failed run always keeps it, and the
        SimulatorError's ``netlist_path`` names its ``in.cir``.
    allow_singular
        ngspice 39 "solves" a floating node through gmin/source stepping and a transient-op
        fallback, with an arbitrary value there.  By default any "singular matrix" report
        raises SimulatorError(reason="singular-matrix"); ``True`` accepts such results.

    Returns
    -------
    OperatingPoint or Transient
    """
    text, source_path = _read_netlist(netlist)
    analysis = _check_analysis(text, analysis, source_path)
    _check_timeout(timeout)
    if backend not in BACKENDS:
        raise DyadsimError(f"unknown backend {backend!r}; expected one of {', '.join(BACKENDS)}")
    if backend == "auto":
        backend = "shared" if _shared.shared_available() and not _shared.engine_busy() else "subprocess"
    if not _END_CARD.search(text):
        text = text.rstrip("\n") + "\n.end\n"
    if backend == "subprocess":
        return _simulate_subprocess(text, analysis, source_path, timeout, workdir, keep_files, allow_singular)
    return _simulate_shared(text, analysis, source_path, timeout, workdir, keep_files, allow_singular)


def simulate_many(
    netlists: Iterable,
    analysis: Optional[str] = None,
    processes: int = 2,
    timeout: Optional[float] = 60.0,
    *,
    return_exceptions: bool = False,
    workdir: Union[str, os.PathLike, None] = None,
    keep_files: bool = False,
    allow_singular: bool = False,
) -> list:
    """Run several netlists in parallel ngspice processes (subprocess backend), in order.

    ``processes`` ngspice processes run at a time.  With ``return_exceptions=True`` a failed
    run's :class:`SimulatorError` is returned in its slot; otherwise the first failure (in
    input order) is raised once the runs already started have ended.
    """
    netlists = list(netlists)
    if not isinstance(processes, int) or processes < 1:
        raise DyadsimError(f"processes must be a positive integer, got {processes!r}")
    _check_timeout(timeout)
    if not netlists:
        return []

    def one(netlist):
        return simulate(
            netlist,
            analysis,
            backend="subprocess",
            timeout=timeout,
            workdir=workdir,
            keep_files=keep_files,
            allow_singular=allow_singular,
        )

    results: list = []
    with ThreadPoolExecutor(max_workers=min(processes, len(netlists)), thread_name_prefix="dyadsim-ngspice") as pool:
        futures = [pool.submit(one, n) for n in netlists]
        for index, future in enumerate(futures):
            try:
                results.append(future.result())
            except SimulatorError as exc:
                if not return_exceptions:
                    for pending in futures[index + 1:]:
                        pending.cancel()
                    raise
                results.append(exc)
    return results


# --------------------------------------------------------------------------- setup


def _read_netlist(netlist) -> tuple[str, Optional[str]]:
    """Netlist text and the file it came from (if any)."""
    if isinstance(netlist, (bytes, bytearray)):
        netlist = bytes(netlist).decode("utf-8")
    if isinstance(netlist, os.PathLike):
        return _read_file(Path(netlist))
    if isinstance(netlist, str):
        if "\n" not in netlist:
            if netlist.strip() and Path(netlist).is_file():
                return _read_file(Path(netlist))
            raise DyadsimError(
                f"netlist {netlist[:80]!r} is neither an existing file nor netlist text "
                "(a netlist has a title line, elements and .end on separate lines)"
            )
        return netlist, None
    text = getattr(netlist, "text", None)
    if isinstance(text, str):
        path = getattr(netlist, "path", None)
        return text, None if path is None else str(path)
    raise DyadsimError(
        f"netlist must be netlist text, a path, or an object with a .text attribute; got {type(netlist).__name__}"
    )


def _read_file(path: Path) -> tuple[str, str]:
    if not path.is_file():
        raise DyadsimError(f"netlist file {str(path)!r} does not exist")
    return path.read_text(encoding="utf-8"), str(path)


def _analysis_cards(text: str) -> set[str]:
    body = text.split("\n", 1)[1] if "\n" in text else ""  # the first line is the title
    return {name for name, card in _CARD.items() if card.search(body)}


def _check_analysis(text: str, analysis: Optional[str], source_path: Optional[str] = None) -> str:
    if not text.strip():
        raise DyadsimError("netlist is empty")
    cards = _analysis_cards(text)
    if analysis is None:
        if len(cards) == 1:
            return next(iter(cards))
        if not cards:
            raise simulator_error(
                "netlist has no .op or .tran analysis card; add one (e.g. `.op` or `.tran 1u 1m`)",
                reason=Reason.NO_ANALYSIS,
                netlist_path=source_path,
            )
        raise DyadsimError("netlist has both .op and .tran cards; pass analysis='op' or analysis='tran'")
    if analysis not in ANALYSES:
        raise DyadsimError(f"unknown analysis {analysis!r}; expected one of {', '.join(ANALYSES)}")
    if analysis not in cards:
        found = ", ".join(f".{c}" for c in sorted(cards)) or "none"
        raise simulator_error(
            f"analysis={analysis!r} requested but the netlist has no .{analysis} card (analysis cards found: {found})",
            reason=Reason.NO_ANALYSIS,
            netlist_path=source_path,
        )
    return analysis


def _check_timeout(timeout) -> None:
    if timeout is not None and not (isinstance(timeout, (int, float)) and timeout > 0):
        raise DyadsimError(f"timeout must be a positive number of seconds or None, got {timeout!r}")


def _make_run_dir(workdir) -> Path:
    if workdir is not None:
        Path(workdir).mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=_RUN_DIR_PREFIX, dir=workdir))


# --------------------------------------------------------------------------- run


def _simulate_subprocess(text, analysis, source_path, timeout, workdir, keep_files, allow_singular) -> Result:
    executable = _subprocess.find_ngspice()  # before making a run directory
    run_dir = _make_run_dir(workdir)
    netlist_file = run_dir / _subprocess.NETLIST_NAME
    try:
        plots, log = _subprocess.run_subprocess(text, run_dir, timeout=timeout, executable=executable)
        result = _finish(plots, log, analysis, "subprocess", allow_singular,
                         netlist_path=netlist_file if keep_files else source_path)
    except SimulatorError as exc:
        if exc.netlist_path is None:  # failure found after the run: point at the kept files
            raise simulator_error(_summary(exc), reason=exc.reason, log=exc.log, netlist_path=netlist_file) from None
        raise
    except BaseException:  # KeyboardInterrupt, bugs: not an ngspice failure, tidy up
        shutil.rmtree(run_dir, ignore_errors=True)
        raise
    if not keep_files:
        shutil.rmtree(run_dir, ignore_errors=True)
    return result


def _simulate_shared(text, analysis, source_path, timeout, workdir, keep_files, allow_singular) -> Result:
    try:
        plots, log = _shared.run_shared(text, timeout=timeout)
        kept = _keep_files(text, log, workdir) if keep_files else None
        return _finish(plots, log, analysis, "shared", allow_singular, netlist_path=kept or source_path)
    except SimulatorError as exc:
        if exc.netlist_path is not None or exc.reason == Reason.NOT_INSTALLED.value:
            raise
        kept = _keep_files(text, exc.log, workdir)
        raise simulator_error(_summary(exc), reason=exc.reason, log=exc.log, netlist_path=kept) from None


def _summary(exc: SimulatorError) -> str:
    return getattr(exc, "summary", None) or str(exc).split("\n", 1)[0]


def _keep_files(text: str, log: str, workdir) -> Path:
    """Write the netlist and ngspice's log to a new run directory (shared backend)."""
    run_dir = _make_run_dir(workdir)
    (run_dir / _subprocess.NETLIST_NAME).write_text(text, encoding="utf-8")
    (run_dir / _subprocess.LOG_NAME).write_text(log, encoding="utf-8")
    return run_dir / _subprocess.NETLIST_NAME


def _finish(plots, log, analysis, backend, allow_singular, *, netlist_path) -> Result:
    """Check the run's messages and pick the requested plot."""
    if not allow_singular:
        singular = singular_matrix_lines(log.splitlines())
        if singular:
            raise simulator_error(
                f"ngspice: {singular[0]} -- the circuit has a floating node or a loop of voltage "
                "sources; ngspice 39 may still return numbers (gmin/source stepping, transient-op "
                "fallback) but they are arbitrary there (pass allow_singular=True to accept them)",
                reason=Reason.SINGULAR_MATRIX,
                log=log,
            )
    chosen = [plot for plot in plots if plot.analysis == analysis]
    if not chosen:
        have = ", ".join(repr(p.plotname) for p in plots) or "none"
        raise simulator_error(f"ngspice produced no {analysis} results (plots: {have})", reason=Reason.FAILED, log=log)
    plot = chosen[-1]
    if plot.n_points == 0:
        raise simulator_error(f"ngspice's {plot.plotname!r} plot has no points", reason=Reason.FAILED, log=log)
    return result_from_plot(plot, analysis, netlist_path=netlist_path, backend=backend, log=log)
