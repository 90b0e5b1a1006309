"""Front door: :func:`simulate` (one netlist) and :func:`simulate_many` (several, in parallel).

setup (netlist text, analysis check, run directory) -> run (a backend) -> parse (RawPlot)
-> typed result; a failure anywhere raises one :class:`~dyadsim.errors.SimulatorError`.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterable, Optional, Union

from .._io import atomic_write, read_text
from .._validate import check_bool, check_int, check_timeout, checked_call
from ..errors import DyadsimError, SimulatorError
from . import _shared, _subprocess
from ._results import OperatingPoint, Reason, Transient, result_from_plot, simulator_error, singular_matrix_lines
from ._safety import checked_netlist

__all__ = ["simulate", "simulate_many", "ANALYSES", "BACKENDS", "SAVE_ALL", "SAVE_AUTO"]

ANALYSES = ("op", "tran")
BACKENDS = ("auto", "shared", "subprocess")

_CARD = {
    "op": re.compile(r"^[ \t]*\.op\b", re.IGNORECASE | re.MULTILINE),
    "tran": re.compile(r"^[ \t]*\.tran\b", re.IGNORECASE | re.MULTILINE),
}
_END_CARD = re.compile(r"^[ \t]*\.end[ \t]*$", re.IGNORECASE | re.MULTILINE)
_RUN_DIR_PREFIX = "dyadsim-ngspice-"
_NODE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:#<>\[\]-]{0,199}")
_SAVES_PER_LINE = 16
_KEEP_HINT = "; pass keep_files=True to keep the netlist and ngspice's files for debugging"

#: ``save=`` values: every vector, or (for dyadsim's own netlists) what the readout reads.
SAVE_ALL = "all"
SAVE_AUTO = "auto"

Result = Union[OperatingPoint, Transient]


@checked_call
def simulate(
    netlist,
    analysis: Optional[str] = None,
    backend: str = "auto",
    timeout: Optional[float] = 60.0,
    workdir: Union[str, os.PathLike, None] = None,
    keep_files: bool = False,
    *,
    allow_singular: bool = False,
    allow_control: bool = False,
    save=SAVE_AUTO,
) -> Result:
    """Run an ngspice netlist and return its ``.op`` or ``.tran`` result.

    Parameters
    ----------
    netlist
        The deck: netlist text (title line, elements, ``.options``, the analysis card,
        ``.end``), an object with a ``.text`` attribute (and optionally ``.path`` and
        ``.readout_nodes``, like :class:`~dyadsim.circuits.Netlist`), or a path
        (``pathlib.Path``, or a str without newline naming an existing file).
        A missing ``.end`` is appended.  The file must be UTF-8 text.
    analysis
        ``"op"`` or ``"tran"``: which result to return.  The netlist carries the card
        itself; if it lacks it, SimulatorError(reason="no-analysis").  ``None`` picks the
        one card the netlist has.
    backend
        ``"shared"`` (libngspice in this process, through PySpice), ``"subprocess"``
        (``ngspice -b``), or ``"auto"``: shared when PySpice loads libngspice and the engine
        is free, else subprocess (also for a netlist with ``.options interp`` or ``.save
        none``, which the shared library would keep for every later transient, and for a
        transient once a shared run has had them anyway, through ``allow_control=True``).
    timeout
        Seconds; ``None`` or ``inf``: no limit.  The subprocess backend kills ngspice when
        it expires.  The shared backend raises at the deadline and halts a transient at
        once, but cannot interrupt a netlist parse or an ``.op``: those keep the engine busy
        until they end.
    workdir
        Parent directory of the temporary run directory (default: the system's).
    keep_files
        Keep the run directory (``in.cir``, ``out.log``, ``out.raw``), after a success or a
        failure; the result's (or the SimulatorError's) ``netlist_path`` then points into
        it.  By default nothing is left behind, whatever happens (a timeout, a crash, an
        interrupt); a SimulatorError's ``netlist_path`` then names the user's own netlist
        file, if there is one.
    allow_singular
        ngspice 39 "solves" a floating node through gmin/source stepping and a transient-op
        fallback, with an arbitrary value there.  By default any "singular matrix" report
        raises SimulatorError(reason="singular-matrix"); ``True`` accepts such results.
    allow_control
        By default a netlist that could make ngspice run commands or touch files is refused
        with an :class:`~dyadsim.simulator.UnsafeNetlistError` (a DyadsimError) naming the
        line: ``.control`` blocks, ``*#`` command lines, ``*ng_script``, ``shell``, unknown
        dot cards, XSPICE models that read files, and ``.include``/``.lib`` of files outside
        the netlist file's folder (netlist text may include nothing).  ``True`` runs such
        netlists as they are: ngspice can then do anything this process may do (run
        programs, read and write files).  Only pass it for netlists you trust.
    save
        Which vectors ngspice keeps: ``"auto"`` (default) the netlist's ``readout_nodes``
        when it has them (dyadsim's own netlists: the node voltages the gradient readout
        reads, which also makes transient raw files far smaller), else everything;
        ``"all"`` (or None) everything; or a list of node names (their voltages).

    Returns
    -------
    OperatingPoint or Transient
    """
    if backend not in BACKENDS:
        raise DyadsimError(f"unknown backend {backend!r}; expected one of {', '.join(BACKENDS)}")
    timeout = check_timeout(timeout)
    keep_files = check_bool("keep_files", keep_files)
    allow_singular = check_bool("allow_singular", allow_singular)
    allow_control = check_bool("allow_control", allow_control)
    text, source_path, readout_nodes = _read_netlist(netlist)
    saved = _save_selection(save, readout_nodes)
    folder = None if source_path is None else Path(source_path).parent
    text, sticky = checked_netlist(text, folder, allow_control=allow_control, source=source_path)
    analysis = _check_analysis(text, analysis, source_path)
    if backend == "shared" and sticky:
        raise DyadsimError(
            f"the netlist uses {' and '.join(sorted(sticky))}, which ngspice 39's shared library "
            "keeps switched on for every later run in this process (later transients would be "
            "interpolated, or keep no vectors); use backend='subprocess' (or 'auto', which does)")
    if backend == "auto":
        shared = not sticky and _shared.shared_available() and not _shared.engine_busy()
        if shared and _shared.sticky_settings() and "tran" in _analysis_cards(text):
            shared = False  # an earlier shared run left such a setting on (allow_control=True)
        backend = "shared" if shared else "subprocess"
    if not _END_CARD.search(text):
        text = text.rstrip("\n") + "\n.end\n"
    if saved is not None:
        text = _with_saves(text, saved)
    if backend == "subprocess":
        result = _simulate_subprocess(text, analysis, source_path, timeout, workdir, keep_files, allow_singular,
                                      ascii_raw="interp" in sticky)
    else:
        result = _simulate_shared(text, analysis, source_path, timeout, workdir, keep_files, allow_singular)
    if saved is not None:
        result = dataclasses.replace(result, saved=tuple(saved))
    return result


@checked_call
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
    allow_control: bool = False,
    save=SAVE_AUTO,
) -> list:
    """Run several netlists in parallel ngspice processes (subprocess backend), in order.

    Parameters
    ----------
    netlists
        Netlists in any form :func:`simulate` takes.
    analysis, timeout, workdir, keep_files, allow_singular, allow_control, save
        As for :func:`simulate`, applied to every run.
    processes
        How many ngspice processes run at a time.
    return_exceptions
        ``True``: a failed run's :class:`SimulatorError` is returned in its slot;
        ``False``: the first failure (in input order) is raised once the runs already
        started have ended.

    Returns
    -------
    list
        One :class:`OperatingPoint` / :class:`Transient` (or SimulatorError) per netlist.
    """
    netlists = list(netlists)
    processes = check_int("processes", processes, minimum=1)
    check_timeout(timeout)
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
            allow_control=allow_control,
            save=save,
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


def _read_netlist(netlist) -> tuple[str, Optional[str], Optional[tuple]]:
    """Netlist text, the file it came from (if any), and its readout nodes (if it names them)."""
    if isinstance(netlist, (bytes, bytearray)):
        try:
            netlist = bytes(netlist).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DyadsimError(f"netlist bytes are not UTF-8 text (byte {exc.start}: {exc.reason})") from None
    if isinstance(netlist, os.PathLike):
        return _read_file(Path(netlist)) + (None,)
    if isinstance(netlist, str):
        if "\n" not in netlist:
            try:
                is_file = bool(netlist.strip()) and "\x00" not in netlist and Path(netlist).is_file()
            except (OSError, ValueError):  # a name too long for the file system, ...
                is_file = False
            if is_file:
                return _read_file(Path(netlist)) + (None,)
            raise DyadsimError(
                f"netlist {netlist[:80]!r} is neither an existing file nor netlist text "
                "(a netlist has a title line, elements and .end on separate lines)"
            )
        return netlist, None, None
    text = getattr(netlist, "text", None)
    if isinstance(text, str):
        path = getattr(netlist, "path", None)
        nodes = getattr(netlist, "readout_nodes", None)
        return text, None if path is None else str(path), None if nodes is None else tuple(nodes)
    raise DyadsimError(
        f"netlist must be netlist text, a path, or an object with a .text attribute; got {type(netlist).__name__}"
    )


def _read_file(path: Path) -> tuple[str, str]:
    if not path.is_file():
        raise DyadsimError(f"netlist file {str(path)!r} does not exist")
    return read_text(path, "netlist file"), str(path)


def _save_selection(save, readout_nodes) -> Optional[list]:
    """The node names to ``.save`` (None: everything)."""
    if save is None or (isinstance(save, str) and save == SAVE_ALL):
        return None
    if isinstance(save, str) and save == SAVE_AUTO:
        if not readout_nodes:
            return None
        names = list(readout_nodes)
    elif isinstance(save, str):
        raise DyadsimError(f"save must be 'auto', 'all', None or a list of node names, got {save!r}")
    else:
        try:
            names = list(save)
        except TypeError:
            raise DyadsimError(f"save must be 'auto', 'all', None or a list of node names, got {save!r}") from None
        if not names:
            raise DyadsimError("save is an empty list: name at least one node (or pass save='all')")
    for name in names:
        if not isinstance(name, str) or not _NODE_NAME.fullmatch(name):
            raise DyadsimError(f"save: {name!r} is not a node name (letters, digits and _.:#<>[]- only)")
    return list(dict.fromkeys(n.lower() for n in names))


def _with_saves(text: str, names: list) -> str:
    """``.save v(...)`` cards for ``names``, placed before the netlist's ``.end``."""
    cards = [".save " + " ".join(f"v({n})" for n in names[i:i + _SAVES_PER_LINE])
             for i in range(0, len(names), _SAVES_PER_LINE)]
    block = "* dyadsim: keep only the node voltages that are read back\n" + "\n".join(cards) + "\n"
    end = _END_CARD.search(text)
    return text[:end.start()] + block + text[end.start():]


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


def _make_run_dir(workdir) -> Path:
    try:
        if workdir is not None:
            Path(workdir).mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=_RUN_DIR_PREFIX, dir=workdir))
    except OSError as exc:
        where = "the system's temporary folder" if workdir is None else f"workdir {str(workdir)!r}"
        raise DyadsimError(f"cannot create a run directory in {where}: {exc.strerror or exc}") from None


# --------------------------------------------------------------------------- run


def _simulate_subprocess(text, analysis, source_path, timeout, workdir, keep_files, allow_singular,
                         ascii_raw=False) -> Result:
    executable = _subprocess.find_ngspice()  # before making a run directory
    run_dir = _make_run_dir(workdir)
    netlist_file = run_dir / _subprocess.NETLIST_NAME
    try:
        plots, log = _subprocess.run_subprocess(text, run_dir, timeout=timeout, executable=executable,
                                                ascii_raw=ascii_raw)
        return _finish(plots, log, analysis, "subprocess", allow_singular,
                       netlist_path=netlist_file if keep_files else source_path)
    except SimulatorError as exc:
        raise _failure(exc, netlist_file if keep_files else source_path) from None
    finally:  # success, failure, timeout, KeyboardInterrupt: nothing left unless asked for
        if not keep_files:
            shutil.rmtree(run_dir, ignore_errors=True)


def _simulate_shared(text, analysis, source_path, timeout, workdir, keep_files, allow_singular) -> Result:
    try:
        plots, log = _shared.run_shared(text, timeout=timeout)
        kept = _keep_files(text, log, workdir) if keep_files else None
        return _finish(plots, log, analysis, "shared", allow_singular, netlist_path=kept or source_path)
    except SimulatorError as exc:
        if exc.netlist_path is not None or exc.reason == Reason.NOT_INSTALLED.value:
            raise
        kept = _keep_files(text, exc.log, workdir) if keep_files else None
        raise _failure(exc, kept or source_path) from None


def _failure(exc: SimulatorError, netlist_path) -> SimulatorError:
    """The error a failed run raises: pointing at the kept files, or saying how to keep them."""
    message = _summary(exc)
    if netlist_path is None and exc.reason != Reason.NOT_INSTALLED.value:
        message += _KEEP_HINT
    return simulator_error(message, reason=exc.reason, log=exc.log, netlist_path=netlist_path)


def _summary(exc: SimulatorError) -> str:
    return getattr(exc, "summary", None) or str(exc).split("\n", 1)[0]


def _keep_files(text: str, log: str, workdir) -> Path:
    """Write the netlist and ngspice's log to a new run directory (shared backend)."""
    run_dir = _make_run_dir(workdir)
    for name, content in ((_subprocess.NETLIST_NAME, text), (_subprocess.LOG_NAME, log)):
        with atomic_write(run_dir / name) as fh:
            fh.write(content)
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
