"""File helpers shared by every stage: atomic writes, output-path checks, text reads.

* :func:`atomic_write` -- write a file so that it is either the old one or the complete
  new one, never a truncated mix: the data goes to a temporary file in the same folder,
  is flushed to disk (``fsync``), and is renamed over the target (``os.replace``, atomic
  on POSIX and Windows).  An exception (``KeyboardInterrupt`` included) anywhere inside
  the ``with`` block removes the temporary file and leaves the old file untouched.
* :func:`check_output_path` -- refuse, before any work is done, an output path that
  cannot be written (a folder, a path under a file, a read-only folder).
* :func:`read_text` -- read a UTF-8 text file, or raise a
  :class:`~dyadsim.errors.DyadsimError` naming the file and the first bad byte.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from pathlib import Path
from typing import IO, Iterator, Union

from .errors import DyadsimError

__all__ = ["atomic_write", "check_output_path", "read_text", "TEMP_SUFFIX", "to_jsonable", "write_text",
           "write_json", "save_figure"]

#: Suffix of the temporary files :func:`atomic_write` creates (``.NAME.XXXXXXXX.tmp``).
TEMP_SUFFIX = ".tmp"

PathLike = Union[str, "os.PathLike[str]"]


def _temp_name(target: Path) -> Path:
    return target.with_name(f".{target.name}.{secrets.token_hex(4)}{TEMP_SUFFIX}")


@contextlib.contextmanager
def atomic_write(path: PathLike, mode: str = "w", *, encoding: str = "utf-8",
                 newline: str | None = None, fsync: bool = True) -> Iterator[IO]:
    """Open ``path`` for writing so that the file is replaced only once it is complete.

    Parameters
    ----------
    path
        The file to (re)write.  Its folder must exist (create it first).
    mode
        ``"w"`` (text, the default) or ``"wb"`` (binary).
    encoding, newline
        As for :func:`open`, text mode only (default encoding UTF-8).
    fsync
        Flush the data to disk before the rename (default), so that a crash right after
        cannot leave an empty file in place of the old one.

    Returns
    -------
    context manager
        Yields the open temporary file.  On a normal exit of the ``with`` block the
        temporary file takes the place of ``path`` (keeping the old file's permission
        bits, else the process umask's default); on any exception it is deleted and
        ``path`` is left as it was.

    Examples
    --------
    >>> with atomic_write("out.csv") as fh:          # doctest: +SKIP
    ...     fh.write("a,b\\n1,2\\n")
    """
    if mode not in ("w", "wb", "wt"):
        raise DyadsimError(f"atomic_write: mode must be 'w' or 'wb', got {mode!r}")
    target = Path(path)
    binary = mode == "wb"
    for _ in range(100):
        tmp = _temp_name(target)
        try:
            # O_EXCL: never follow or reuse someone else's file; 0o666 & ~umask like open()
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
            break
        except FileExistsError:
            continue
        except OSError as exc:  # name the file the caller asked for, not the temporary one
            raise OSError(exc.errno, exc.strerror or str(exc), str(target)) from None
    else:  # pragma: no cover - 100 collisions of a 32-bit random name
        raise FileExistsError(f"cannot create a temporary file next to {target}")
    try:
        try:
            mode_bits = stat.S_IMODE(os.stat(target).st_mode)
        except OSError:
            mode_bits = None
        if mode_bits is not None:
            os.chmod(tmp, mode_bits)
        fh = os.fdopen(fd, "wb" if binary else "w", **({} if binary else {"encoding": encoding, "newline": newline}))
    except BaseException:
        os.close(fd)
        _unlink(tmp)
        raise
    try:
        with fh:
            yield fh
            fh.flush()
            if fsync:
                os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        _unlink(tmp)
        raise
    if fsync:
        _fsync_dir(target.parent)


def _unlink(path: Path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable (POSIX); a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def check_output_path(path: PathLike, what: str = "output file", *, make_parents: bool = True) -> Path:
    """Check, before doing any work, that a file can be written at ``path``.

    Parameters
    ----------
    path
        The file that will be written.
    what
        How the message names it (``"--out"``, ``"network file"``, ...).
    make_parents
        Whether missing parent folders will be created (then the nearest existing one must
        be a writable folder); otherwise the parent must exist.

    Returns
    -------
    pathlib.Path
        ``path`` as a Path.

    Raises
    ------
    DyadsimError
        Naming the path and why it cannot be written: it is a folder, a parent is a file,
        a folder is not writable, or the file itself is read-only.
    """
    p = Path(path)
    if str(path) == "" or p.name in ("", ".", ".."):
        raise DyadsimError(f"{what} {str(path)!r} is not a file name")
    if p.is_dir():
        raise DyadsimError(f"{what} {str(p)!r} is a folder, not a file")
    if p.exists() and not os.access(p, os.W_OK):
        raise DyadsimError(f"{what} {str(p)!r} exists and is not writable")
    parent = p.parent
    while not parent.exists():
        if not make_parents:
            raise DyadsimError(f"{what} {str(p)!r}: folder {str(p.parent)!r} does not exist")
        if parent.is_symlink():  # a dangling link
            raise DyadsimError(f"{what} {str(p)!r}: {str(parent)!r} is a broken link")
        if parent == parent.parent:
            break
        parent = parent.parent
    if parent.exists() and not parent.is_dir():
        raise DyadsimError(f"{what} {str(p)!r}: {str(parent)!r} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise DyadsimError(f"{what} {str(p)!r}: folder {str(parent)!r} is not writable")
    return p


def read_text(path: PathLike, what: str = "file") -> str:
    """The contents of a UTF-8 text file.

    Parameters
    ----------
    path
        The file to read.
    what
        How the message names it (``"netlist file"``).

    Returns
    -------
    str

    Raises
    ------
    DyadsimError
        If the file is not UTF-8 text (naming the file, the bad byte and its line).
    OSError
        If it cannot be read (missing, a folder, no permission): ``filename`` is set.
    """
    data = Path(path).read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise DyadsimError(
            f"{what} {str(path)!r} is not UTF-8 text: byte 0x{data[exc.start]:02x} at offset "
            f"{exc.start} (line {line}) cannot be decoded"
        ) from None


def to_jsonable(obj):
    """Plain JSON values: dict keys as strings, tuples as lists, numpy scalars and arrays
    as Python numbers and lists, NaN and infinities as ``None`` (JSON has neither), paths
    as strings, anything else as its ``repr``.  The one JSON cleaner of the package."""
    import math

    import numpy as np

    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        v = float(obj)
        return v if math.isfinite(v) else None
    if obj is None or isinstance(obj, str):
        return obj
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, type) and issubclass(obj, np.generic):
        return np.dtype(obj).name
    return repr(obj)


def write_text(path: PathLike, text: str) -> Path:
    """Write a text file atomically (see :func:`atomic_write`); returns its path."""
    path = Path(path)
    with atomic_write(path, "w") as fh:
        fh.write(text)
    return path


def write_json(path: PathLike, obj, indent: int = 2) -> Path:
    """Write ``obj`` (cleaned by :func:`to_jsonable`) as strict JSON, atomically."""
    import json

    return write_text(path, json.dumps(to_jsonable(obj), indent=indent, allow_nan=False) + "\n")


def save_figure(fig, path: PathLike, **kwargs) -> Path:
    """``fig.savefig`` through :func:`atomic_write` (the format from the suffix)."""
    path = Path(path)
    kwargs.setdefault("format", path.suffix.lstrip(".") or "png")
    with atomic_write(path, "wb") as fh:
        fig.savefig(fh, **kwargs)
    return path
