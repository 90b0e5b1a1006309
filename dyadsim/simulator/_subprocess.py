"""Batch-mode backend: one ``ngspice -b -r out.raw -o out.log in.cir`` process per run.

The caller owns the run directory (``_runner`` creates it, and removes it after a
success unless asked to keep it).  Success is decided by the exit code, not by the raw file:
a failed run can leave a raw file with ``No. Points: 0``.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Optional

from ._rawfile import RawFileError, RawPlot, parse_raw
from ._results import Reason, diagnose_log, simulator_error

__all__ = ["find_ngspice", "run_subprocess", "NGSPICE_ENV", "INSTALL_HINT"]

#: Environment variable naming the ngspice executable (default: ``ngspice`` on PATH).
NGSPICE_ENV = "DYADSIM_NGSPICE"

INSTALL_HINT = (
    "install it with `apt-get install -y ngspice libngspice0-dev` "
    "(or run `make setup`, see the README)"
)

NETLIST_NAME = "in.cir"
RAW_NAME = "out.raw"
LOG_NAME = "out.log"

_CRASHES = ("SIGSEGV", "SIGBUS", "SIGABRT", "SIGFPE", "SIGILL")
# ngspice takes every card that starts with ".opt" as an options card
_INTERP_OPTION = re.compile(r"^[ \t]*\.opt\w*\b[^\n]*\binterp\b", re.IGNORECASE | re.MULTILINE)


def find_ngspice() -> str:
    """The path of the ngspice executable.

    ``$DYADSIM_NGSPICE`` names it explicitly; otherwise ``ngspice`` is looked up on PATH.

    Returns
    -------
    str
        The path.

    Raises
    ------
    SimulatorError
        With reason ``"not-installed"`` if there is none.
    """
    explicit = os.environ.get(NGSPICE_ENV)
    if explicit:
        found = shutil.which(explicit)
        if found is None:
            raise simulator_error(
                f"ngspice executable {explicit!r} (from ${NGSPICE_ENV}) does not exist or is "
                f"not executable; {INSTALL_HINT}",
                reason=Reason.NOT_INSTALLED,
            )
        return found
    found = shutil.which("ngspice")
    if found is None:
        raise simulator_error(f"ngspice is not installed (no `ngspice` on PATH); {INSTALL_HINT}", reason=Reason.NOT_INSTALLED)
    return found


def run_subprocess(
    text: str, run_dir: Path, *, timeout: Optional[float], executable: Optional[str] = None,
    ascii_raw: bool = False,
) -> tuple[list[RawPlot], str]:
    """Write ``text`` to ``run_dir/in.cir``, run ngspice in batch mode, parse ``out.raw``.

    Returns ``(plots, log)``.  Raises a :class:`SimulatorError` whose ``netlist_path`` is
    ``run_dir/in.cir`` on any failure.  ``ascii_raw`` asks for the ASCII raw format (set
    by itself for a netlist with ``.options interp``).
    """
    executable = executable or find_ngspice()
    run_dir = Path(run_dir)
    netlist = run_dir / NETLIST_NAME
    netlist.write_text(text, encoding="utf-8")
    env = dict(os.environ)
    if ascii_raw or _INTERP_OPTION.search(text):
        # ngspice 39's binary writer is wrong with `.options interp` (see _rawfile).
        env["SPICE_ASCIIRAWFILE"] = "1"
    command = [executable, "-b", "-r", RAW_NAME, "-o", LOG_NAME, NETLIST_NAME]
    try:
        process = subprocess.Popen(
            command,
            cwd=run_dir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,  # own process group: a timeout kills everything it started
        )
    except OSError as exc:
        raise simulator_error(
            f"cannot start ngspice ({executable}): {exc}; {INSTALL_HINT}",
            reason=Reason.NOT_INSTALLED,
            netlist_path=netlist,
        ) from None
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill(process)
        log = _read_log(run_dir, b"", b"")
        raise simulator_error(
            f"ngspice did not finish within the {timeout:g} s timeout and was killed",
            reason=Reason.TIMEOUT,
            log=log,
            netlist_path=netlist,
        ) from None
    except BaseException:  # KeyboardInterrupt: never leave ngspice running
        _kill(process)
        raise
    log = _read_log(run_dir, stdout, stderr)
    if process.returncode < 0:  # killed by a signal: a crash (SEGV), the OOM killer, kill(1)
        number = -process.returncode
        try:
            name = signal.Signals(number).name
        except ValueError:
            name = f"signal {number}"
        diagnosis = diagnose_log(log.splitlines())
        said = f"; before that it said: {diagnosis.message}" if diagnosis is not None else ""
        raise simulator_error(
            f"ngspice was killed by signal {name} ({number}){' -- it crashed' if name in _CRASHES else ''}{said}",
            reason=diagnosis.reason if diagnosis is not None else Reason.FAILED,
            log=log,
            netlist_path=netlist,
        )
    if process.returncode != 0:
        diagnosis = diagnose_log(log.splitlines(), failed=True)
        raise simulator_error(
            f"{diagnosis.message} (exit code {process.returncode})",
            reason=diagnosis.reason,
            log=log,
            netlist_path=netlist,
        )
    raw = run_dir / RAW_NAME
    if not raw.exists():
        raise simulator_error("ngspice exited normally but wrote no raw file", reason=Reason.FAILED, log=log, netlist_path=netlist)
    try:
        plots = parse_raw(raw.read_bytes())
    except RawFileError as exc:
        raise simulator_error(exc.summary, reason=exc.reason, log=log, netlist_path=netlist) from None
    return plots, log


def _kill(process: subprocess.Popen) -> None:
    """Kill ngspice's process group and reap it (no zombie)."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        process.kill()
    except ProcessLookupError:
        pass
    process.communicate()


_BANNER = re.compile(r"^(\*\*.*|\*+|Batch mode|Simulation output goes to rawfile:.*|Comments and warnings go to log-file:.*)$")


#: How much of a log is kept: its head and its tail (a ``.print`` of a long transient can
#: write gigabytes into it).
LOG_HEAD_BYTES = 64 * 1024
LOG_TAIL_BYTES = 1024 * 1024


def _read_log_file(path: Path) -> str:
    size = path.stat().st_size
    with open(path, "rb") as fh:
        if size <= LOG_HEAD_BYTES + LOG_TAIL_BYTES:
            data = fh.read()
        else:
            head = fh.read(LOG_HEAD_BYTES)
            fh.seek(size - LOG_TAIL_BYTES)
            tail = fh.read()
            skipped = size - len(head) - len(tail)
            data = head + f"\n[... {skipped} bytes of ngspice output left out ...]\n".encode() + tail
    return data.decode("utf-8", errors="replace")


def _read_log(run_dir: Path, stdout: bytes, stderr: bytes) -> str:
    """ngspice's log file (head and tail when huge), then whatever it printed on stdout
    (banner dropped) and stderr."""
    parts = []
    log_file = run_dir / LOG_NAME
    if log_file.exists():
        parts.append(_read_log_file(log_file))
    out = [l for l in stdout.decode("utf-8", "replace").splitlines() if l.strip() and not _BANNER.match(l.strip())]
    if out:
        parts.append("\n".join(out))
    err = stderr.decode("utf-8", "replace").strip()
    if err:
        parts.append(err)
    return "\n".join(p.strip("\n") for p in parts if p.strip())
