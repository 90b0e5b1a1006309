"""Shared-library backend: ngspice inside this process, through PySpice's ``NgSpiceShared``.

How a run goes (all measured on ngspice 39.3 / PySpice 1.5):

* ``load_circuit(text)`` parses the netlist synchronously.  Parse errors do not raise in
  PySpice (they go to ngspice's stderr: "Error on line ...", "unknown subckt", ...), so
  the captured lines are diagnosed before running.
* ``bg_run`` runs the analyses in ngspice's background thread.  Its end is signalled through
  the ``BGThreadRunning`` callback; ``ngSpice_running()`` cannot be polled instead, because
  it reads False both before the thread has started and after it has ended.
* The vectors are read with ``plot_names`` / ``plot(...)`` (PySpice copies them out of
  ngspice's memory); then ``remcirc`` and ``destroy all`` leave ngspice empty again.  A
  run starts by destroying any plot still there (left by other code using the library),
  so it reads only its own.
* Each circuit brings its own ``.options`` (a run after one with other options, ``.temp``,
  ``.save`` or a halted transient gives bit-identical results to the subprocess backend),
  with two exceptions, process-wide flags of ngspice's output code that the first plot made
  with them sets and nothing clears (neither ``remcirc``, ``destroy all`` nor ``unset
  interp``): ``interp`` (every later transient comes out resampled onto the TSTEP grid:
  101 points instead of 1019 for an RC deck) and ``.save none`` (every later transient
  keeps one point).  ``simulate`` keeps both away from this engine unless
  ``allow_control=True``; as a backstop the engine notes runs that had them (ngspice's
  "Interpolated raw file data" warning, a ``save none`` line), and afterwards refuses a
  transient that does not ask for them itself (reason ``"failed"``) rather than returning
  it; :func:`sticky_settings` tells ``backend="auto"`` to use the subprocess then.

libngspice is process-global state, and PySpice 1.5 can create only one ``NgSpiceShared``
per process (a second one fails in ``ffi.cdef``), so one engine serves every run, one run at
a time (a lock).  Each run is carried out by a worker thread while the caller waits with
its timeout.  On timeout the caller raises at once and the worker stops ngspice: a transient
halts within about 10 ms (``bg_halt``); parsing and an ``.op`` cannot be interrupted, so the
engine stays busy until they end (the next shared run waits for it, ``backend="auto"``
switches to the subprocess backend meanwhile).  Only the subprocess backend kills runaway
work outright.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from typing import Optional

import numpy as np

from ..errors import SimulatorError
from ._rawfile import RawPlot, RawVariable
from ._results import Reason, clean_lines, diagnose_log, simulator_error
from ._subprocess import INSTALL_HINT

__all__ = ["get_engine", "shared_available", "engine_busy", "sticky_settings", "run_shared"]

_INIT_LOCK = threading.Lock()
_RUN_LOCK = threading.Lock()  # held for a whole run, by the worker thread that does it
_ENGINE = None
_ENGINE_ERROR: Optional[str] = None

_TYPENAME_TO_PLOTNAME = {
    "op": "Operating Point",
    "tran": "Transient Analysis",
    "ac": "AC Analysis",
    "dc": "DC transfer characteristic",
    "noise": "Noise Spectral Density Curves",
    "pz": "Pole-Zero Analysis",
    "sens": "Sensitivity Analysis",
    "tf": "Transfer Function",
    "disto": "Distortion Analysis",
}
_HALT_GRACE_S = 1.5  # ngspice's bg_halt itself gives up after about 1 s
_INTERP_WARNING = "Interpolated raw file data"  # printed when a plot starts with `interp` set
_SAVE_NONE = re.compile(r"^[ \t]*\.?save\b[^\n]*(?<![\w.])none\b", re.IGNORECASE | re.MULTILINE)


def _make_engine_class():
    from PySpice.Spice.NgSpice.Shared import NgSpiceCommandError, NgSpiceShared, ffi

    class CapturingNgSpice(NgSpiceShared):
        """``NgSpiceShared`` that records ngspice's output lines and the end of ``bg_run``."""

        def _setup_capture(self):
            self._dyadsim_lines: list[str] = []
            self._dyadsim_capturing = False
            self._dyadsim_bg_done = threading.Event()
            self._dyadsim_bg_done.set()
            self._dyadsim_exited = False
            self._dyadsim_sticky: set[str] = set()  # see the module notes on `interp`

        def __init__(self, *args, **kwargs):
            self._setup_capture()
            super().__init__(*args, **kwargs)

        # -- callbacks ------------------------------------------------------------------
        def send_char(self, message, ngspice_id):
            if self._dyadsim_capturing:
                self._dyadsim_lines.append(message)
                return 0
            return super().send_char(message, ngspice_id)

        @staticmethod
        def _background_thread_running(exited, ngspice_id, user_data):
            # ngspice passes fl_exited: True when its background thread has ended.
            self = ffi.from_handle(user_data)
            if exited:
                self._dyadsim_bg_done.set()
            return 0

        @property
        def _is_running(self):
            return not self._dyadsim_bg_done.is_set()

        @_is_running.setter
        def _is_running(self, exited):
            # PySpice's own callback (for an instance adopted from other code) stores
            # ngspice's fl_exited here; PySpice's __init__ stores False.
            if exited is True and hasattr(self, "_dyadsim_bg_done"):
                self._dyadsim_bg_done.set()

        @staticmethod
        def _exit(exit_status, immediate_unloading, quit_exit, ngspice_id, user_data):
            self = ffi.from_handle(user_data)
            self._dyadsim_exited = True
            if self._dyadsim_capturing:
                self._dyadsim_lines.append(f"stderr Error: ngspice stopped itself (exit status {exit_status})")
            return exit_status

        # -- helpers ----------------------------------------------------------------------
        def command(self, text: str) -> bool:
            """Run an ngspice command; False if ngspice itself refused it (see the lines)."""
            try:
                self.exec_command(text)
            except NgSpiceCommandError:
                pass  # PySpice flags any stderr line, notes included; we diagnose ourselves
            except NameError as exc:  # ngSpice_Command returned non-zero
                self._dyadsim_lines.append(f"stderr Error: ngspice command {text!r} failed ({exc})")
                return False
            return True

        def load(self, text: str) -> None:
            """Hand the netlist to ngspice (``ngSpice_Circ``); errors land in the lines."""
            try:
                self.load_circuit(text)
            except NameError as exc:  # ngSpice_Circ returned non-zero
                self._dyadsim_lines.append(f"stderr Error: ngspice could not load the circuit ({exc})")
            except Exception as exc:  # NgSpiceCircuitError: "error" seen on stdout
                if type(exc).__name__ != "NgSpiceCircuitError":
                    raise

    return CapturingNgSpice


def _create_engine():
    # PySpice logs every ngspice stderr line (notes included) as an error and warns
    # "Unsupported Ngspice version 39"; the lines are captured and diagnosed here instead.
    logging.getLogger("PySpice").addHandler(logging.NullHandler())
    logging.getLogger("PySpice.Spice.NgSpice.Shared").setLevel(logging.CRITICAL)
    cls = _make_engine_class()
    from PySpice.Spice.NgSpice.Shared import NgSpiceShared

    existing = NgSpiceShared._instances.get(0)
    if existing is not None:
        # Another part of the process already initialised libngspice through PySpice; a
        # second instance is impossible, so adopt that one.
        # Its BGThreadRunning callback stays PySpice's (which returns None: cffi then prints
        # "Exception ignored from cffi callback ... an integer is required" per run); it
        # still stores ngspice's fl_exited in `_is_running`, which our property catches.
        if not isinstance(existing, cls):
            existing.__class__ = cls
            existing._setup_capture()
        return existing
    engine = cls(ngspice_id=0, send_data=False)
    NgSpiceShared._instances[0] = engine
    return engine


def get_engine():
    """The process-wide ngspice shared-library engine (created on first use).

    Raises :class:`SimulatorError` with reason ``"not-installed"`` when PySpice or
    libngspice cannot be loaded.
    """
    global _ENGINE, _ENGINE_ERROR
    with _INIT_LOCK:
        if _ENGINE is not None:
            return _ENGINE
        if _ENGINE_ERROR is None:
            try:
                _ENGINE = _create_engine()
                return _ENGINE
            except Exception as exc:  # ImportError, OSError (no libngspice.so), cffi errors
                _ENGINE_ERROR = (
                    f"PySpice cannot load the ngspice shared library ({type(exc).__name__}: {exc}); "
                    f"{INSTALL_HINT}, or use backend='subprocess'"
                )
        raise simulator_error(_ENGINE_ERROR, reason=Reason.NOT_INSTALLED)


def shared_available() -> bool:
    """Whether the shared-library backend can run (PySpice loads libngspice).

    Returns
    -------
    bool
    """
    try:
        engine = get_engine()
    except Exception:
        return False
    return not engine._dyadsim_exited


def engine_busy() -> bool:
    """Whether a run (possibly an abandoned, timed-out one) holds the shared engine."""
    return _RUN_LOCK.locked()


def sticky_settings() -> frozenset:
    """The settings an earlier shared run left switched on for every later transient.

    Returns
    -------
    frozenset of str
        ``"interp"`` and/or ``"save none"`` once a run in the shared library had them (see
        the module notes); transients must then use the subprocess backend.
    """
    return frozenset(() if _ENGINE is None else _ENGINE._dyadsim_sticky)


class _Job:
    def __init__(self, text: str, title: str):
        self.text = text
        self.title = title
        self.done = threading.Event()  # the worker has finished and released the engine
        self.abandon = threading.Event()  # the caller gave up (timeout, KeyboardInterrupt)
        self.plots: list[RawPlot] = []
        self.error: Optional[BaseException] = None
        self.log = ""


def run_shared(text: str, *, timeout: Optional[float]) -> tuple[list[RawPlot], str]:
    """Run a netlist in the shared library; return ``(plots, log)`` or raise SimulatorError.

    The SimulatorError carries no ``netlist_path``: the runner adds one.
    """
    engine = get_engine()
    if engine._dyadsim_exited:
        raise simulator_error(
            "the ngspice shared library stopped itself in an earlier run and cannot be reused in "
            "this process; use backend='subprocess'",
            reason=Reason.FAILED,
        )
    start = time.monotonic()
    if not _RUN_LOCK.acquire(timeout=-1 if timeout is None else timeout):
        raise simulator_error(
            f"timed out after {timeout:g} s waiting for the shared ngspice engine, still busy with "
            "an earlier run (a netlist parse or an .op cannot be interrupted in shared mode); "
            "use backend='subprocess' to have runaway runs killed",
            reason=Reason.TIMEOUT,
        )
    title, _, body = text.partition("\n")
    if not title.strip():
        # PySpice drops empty lines, which would turn the first element into the title
        text = "untitled\n" + body
    job = _Job(text, title.strip())
    worker = threading.Thread(target=_work, args=(engine, job), name="dyadsim-ngspice-shared", daemon=True)
    try:
        worker.start()
    except BaseException:
        _RUN_LOCK.release()
        raise
    remaining = None if timeout is None else max(0.0, timeout - (time.monotonic() - start))
    try:
        finished = job.done.wait(remaining)
    except BaseException:  # KeyboardInterrupt while waiting: stop ngspice, then re-raise
        job.abandon.set()
        job.done.wait(_HALT_GRACE_S)
        raise
    if not finished:
        job.abandon.set()
        stopped = job.done.wait(_HALT_GRACE_S)
        log = job.log if stopped else "\n".join(clean_lines(list(engine._dyadsim_lines)))
        detail = "" if stopped else (
            "; ngspice is still parsing or solving an .op, which cannot be interrupted in shared "
            "mode, so the engine stays busy until it ends (use backend='subprocess' to kill it)"
        )
        raise simulator_error(f"ngspice did not finish within the {timeout:g} s timeout{detail}", reason=Reason.TIMEOUT, log=log)
    if job.error is not None:
        raise job.error
    return job.plots, job.log


def _work(engine, job: _Job) -> None:
    """Worker thread: load, run in the background, wait, read the plots, clean up."""
    sticky = set(engine._dyadsim_sticky)
    try:
        engine._dyadsim_lines = []
        engine._dyadsim_capturing = True
        if any(name.lower() != "const" for name in engine.plot_names):
            engine.command("destroy all")  # plots left by other code using the library
        engine.load(job.text)
        diagnosis = diagnose_log(engine._dyadsim_lines)
        if diagnosis is not None:
            job.error = simulator_error(diagnosis.message, reason=diagnosis.reason)
            return
        if job.abandon.is_set():
            return
        engine._dyadsim_bg_done.clear()
        if not engine.command("bg_run"):
            engine._dyadsim_bg_done.set()  # no background thread to wait for
        while not engine._dyadsim_bg_done.wait(0.05):
            if job.abandon.is_set():
                engine.command("bg_halt")  # stops a transient; gives up on an .op after ~1 s
                engine._dyadsim_bg_done.wait()  # an .op runs to its end: the engine stays busy
                break
        engine.command("bg_halt")  # join ngspice's finished background thread
        if job.abandon.is_set():
            return
        diagnosis = diagnose_log(engine._dyadsim_lines)
        if diagnosis is not None:
            job.error = simulator_error(diagnosis.message, reason=diagnosis.reason)
            return
        job.plots = _read_plots(engine, job.title)
        leaked = sticky - _sticky_asked(job.text, engine._dyadsim_lines)
        if leaked and any(p.analysis == "tran" for p in job.plots):
            job.plots = []
            job.error = simulator_error(
                f"an earlier run in this process switched {' and '.join(sorted(leaked))} on in the ngspice "
                "shared library, which never clears it: this transient would come back resampled "
                "(interp) or with one point (save none); use backend='subprocess' (backend='auto' does)",
                reason=Reason.FAILED,
            )
    except BaseException as exc:  # reported to the caller, never lost in the thread
        job.error = exc if _is_simulator_error(exc) else simulator_error(
            f"shared ngspice run failed: {type(exc).__name__}: {exc}", reason=Reason.FAILED
        )
    finally:
        try:
            engine.command("remcirc")
            engine.command("destroy all")
        finally:
            engine._dyadsim_capturing = False
            engine._dyadsim_sticky |= _sticky_asked(job.text, engine._dyadsim_lines)
            job.log = "\n".join(clean_lines(engine._dyadsim_lines))
            engine._dyadsim_lines = []
            if job.error is not None and not getattr(job.error, "log", ""):
                job.error = simulator_error(job.error.summary, reason=job.error.reason, log=job.log)
            _RUN_LOCK.release()
            job.done.set()


def _sticky_asked(text: str, lines) -> set:
    """The sticky settings a run had: ``interp`` by ngspice's warning, ``save none`` by its line."""
    asked = {"interp"} if any(_INTERP_WARNING in line for line in lines) else set()
    return asked | ({"save none"} if _SAVE_NONE.search(text) else set())


def _is_simulator_error(exc: BaseException) -> bool:
    return isinstance(exc, SimulatorError) and hasattr(exc, "summary")


_TYPENAME = re.compile(r"([a-z]+)(\d*)$", re.IGNORECASE)


def _read_plots(engine, title: str) -> list[RawPlot]:
    """Copy every plot of the run out of ngspice (oldest first), as RawPlot records."""
    plots = []
    for typename in reversed(engine.plot_names):
        if typename.lower() == "const":
            continue
        match = _TYPENAME.match(typename)
        kind = match.group(1).lower() if match else typename.lower()
        vectors = list(engine.plot(None, typename).items())[::-1]  # ngspice lists newest first
        scale = [item for item in vectors if item[0].lower() in ("time", "frequency")]
        vectors = scale + [item for item in vectors if item not in scale]
        variables, columns = [], []
        for index, (name, vector) in enumerate(vectors):
            variables.append(RawVariable(index, name, str(vector._type)))
            columns.append(np.array(np.asarray(vector.to_waveform())))
        is_complex = any(np.iscomplexobj(c) for c in columns)
        plots.append(
            RawPlot(
                title=title,
                date="",
                plotname=_TYPENAME_TO_PLOTNAME.get(kind, typename),
                flags="complex" if is_complex else "real",
                variables=tuple(variables),
                columns=tuple(columns),
                header={"typename": typename},
            )
        )
    return plots
