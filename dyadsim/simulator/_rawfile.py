"""Parse ngspice raw files (binary and ASCII) into :class:`RawPlot` records.

This module never starts a process: :func:`parse_raw` is a pure function of a byte string,
so its tests run on checked-in ngspice outputs without ngspice installed.

The format, as ngspice 39 writes it (``ngspice -b -r out.raw in.cir``)::

    Title: <first line of the netlist>
    Date: <date>
    Plotname: Transient Analysis          (or "Operating Point", "AC Analysis", ...)
    Flags: real                           (or "complex")
    No. Variables: 4
    No. Points: 1019
    Variables:
    \t0\ttime\ttime
    \t1\tv(in)\tvoltage
    \t2\tv(out)\tvoltage
    \t3\ti(v1)\tcurrent
    Binary:                               (or "Values:" for the ASCII flavour)
    <points x variables little-endian float64, point-major; complex: (re, im) pairs>

Several plots follow one another in one file (one per analysis).  In the ASCII flavour each
point is ``<index>\\t<value>`` then one ``\\t<value>`` line per further variable, complex
values written ``re,im``.  Later ngspice versions add ``Command:``/``Options:`` header lines;
unknown header lines are kept in :attr:`RawPlot.header` and otherwise ignored.

Measured quirks of ngspice 39 that this parser guards against:

* A run that failed can still leave a plot with ``No. Points: 0``: that raises.
* With ``.options interp`` the *binary* writer declares the interpolated point count but
  writes one row per internal time step (the first rows all at t = 0): the trailing data
  does not fit the header, which raises instead of returning wrong numbers.  The ASCII
  writer is correct, so the subprocess backend switches to ASCII for such netlists.
* In complex plots the real ``frequency`` scale is written with an uninitialised imaginary
  part; it is returned as is (take ``.real``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from ..errors import SimulatorError

__all__ = ["RawVariable", "RawPlot", "RawFileError", "parse_raw", "ANALYSIS_OF_PLOTNAME"]


#: ngspice's ``Plotname:`` values, mapped to the short analysis names used by ``simulate``.
ANALYSIS_OF_PLOTNAME = {
    "operating point": "op",
    "transient analysis": "tran",
    "ac analysis": "ac",
    "dc transfer characteristic": "dc",
    "noise spectral density curves": "noise",
    "integrated noise": "noise",
    "pole-zero analysis": "pz",
    "sensitivity analysis": "sens",
    "transfer function": "tf",
    "distortion analysis": "disto",
}


class RawFileError(SimulatorError):
    """A raw file that cannot be read, or a plot in it without data (ngspice failed)."""

    def __init__(self, message: str, *, log: str = ""):
        super().__init__(message, reason="failed", log=log)
        self.summary = message


@dataclass(frozen=True)
class RawVariable:
    """One vector of a plot: its column ``index``, ngspice's ``name`` and ``type``.

    Parameters
    ----------
    index : int
        Its column.
    name : str
        ngspice's name of the vector.
    type : str
        ngspice's type (``voltage``, ``current``, ``time``).
    params : tuple of str, optional
        Further fields of its header line.
    """

    index: int
    name: str
    type: str
    params: tuple[str, ...] = ()


@dataclass(frozen=True, eq=False)
class RawPlot:
    """One plot (one analysis) of a raw file.

    ``columns[i]`` holds the values of ``variables[i]`` over all points (float64, or
    complex128 when ``flags`` says complex).  Look a vector up by name with ``plot[name]``
    (case-insensitive).

    Parameters
    ----------
    title, date, plotname, flags : str
        The header fields of the plot.
    variables : tuple of RawVariable
        Its vectors.
    columns : tuple of ndarray
        Their values.
    header : dict, optional
        Every header field, by name.
    """

    title: str
    date: str
    plotname: str
    flags: str
    variables: tuple[RawVariable, ...]
    columns: tuple[np.ndarray, ...]
    header: dict[str, str] = field(default_factory=dict)

    @property
    def analysis(self) -> str:
        """Short analysis name ("op", "tran", "ac", "dc", ...), or the plotname lowercased."""
        key = self.plotname.strip().lower()
        return ANALYSIS_OF_PLOTNAME.get(key, key)

    @property
    def is_complex(self) -> bool:
        """Whether the values are complex (AC, noise, pole-zero analyses)."""
        return "complex" in self.flags.lower()

    @property
    def n_points(self) -> int:
        """Number of points (1 for an operating point)."""
        return len(self.columns[0]) if self.columns else 0

    @property
    def names(self) -> tuple[str, ...]:
        """The vector names, in file order."""
        return tuple(v.name for v in self.variables)

    def __getitem__(self, name: str) -> np.ndarray:
        wanted = name.strip().lower()
        for variable, column in zip(self.variables, self.columns):
            if variable.name.lower() == wanted:
                return column
        raise KeyError(f"no vector {name!r} in plot {self.plotname!r}; have: {', '.join(self.names)}")

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.strip().lower() in {n.lower() for n in self.names}

    def as_array(self) -> np.ndarray:
        """All values as one ``(n_points, n_variables)`` array."""
        return np.column_stack(self.columns) if self.columns else np.empty((0, 0))


_HEADER_LINE = re.compile(rb"([^:\r\n]+):[ \t]*([^\r\n]*)\r?\n")


def parse_raw(data: bytes) -> list[RawPlot]:
    """Parse the bytes of an ngspice raw file (binary or ASCII) into its plots, in order.

    Parameters
    ----------
    data : bytes
        The file's contents.

    Returns
    -------
    list of RawPlot

    Raises
    ------
    RawFileError
        (a :class:`~dyadsim.errors.SimulatorError` with reason ``"failed"``) on a malformed
        file or on a plot with ``No. Points: 0``.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"parse_raw() takes bytes, not {type(data).__name__}")
    data = bytes(data)
    plots: list[RawPlot] = []
    pos = _skip_blank(data, 0)
    if pos >= len(data):
        raise RawFileError("raw file is empty (ngspice wrote no results)")
    while pos < len(data):
        plot, pos = _parse_plot(data, pos, len(plots))
        plots.append(plot)
        pos = _skip_blank(data, pos)
    return plots


def _skip_blank(data: bytes, pos: int) -> int:
    while pos < len(data) and data[pos] in b" \t\r\n\x00":
        pos += 1
    return pos


def _parse_plot(data: bytes, pos: int, number: int) -> tuple[RawPlot, int]:
    header: dict[str, str] = {}
    variables: list[RawVariable] = []
    where = f"plot {number + 1} of the raw file"
    while True:
        match = _HEADER_LINE.match(data, pos)
        if match is None:
            snippet = data[pos:pos + 40].decode("latin-1", "replace")
            raise RawFileError(f"malformed raw file header in {where} at byte {pos}: {snippet!r}")
        key = match.group(1).decode("latin-1").strip()
        value = match.group(2).decode("latin-1").strip()
        pos = match.end()
        lowered = key.lower()
        if lowered == "variables":
            if header.get("No. Points", "").split()[:1] == ["0"]:
                break  # a failed run: ngspice 39 stops the file right here
            n_vars = _header_int(header, "No. Variables", where)
            variables, pos = _parse_variables(data, pos, n_vars, where)
        elif lowered in ("binary", "values"):
            break
        else:
            header[key] = value
    n_points = _header_int(header, "No. Points", where)
    plotname = header.get("Plotname", "")
    if n_points == 0:
        raise RawFileError(
            f"raw file plot {plotname!r} has no points: ngspice stopped before writing results "
            "(check its exit code and log)"
        )
    if not variables:
        raise RawFileError(f"raw file {where} has no 'Variables:' section")
    flags = header.get("Flags", "real")
    is_complex = "complex" in flags.lower()
    if lowered == "binary":
        columns, pos = _parse_binary(data, pos, n_points, len(variables), is_complex, plotname)
    else:
        columns, pos = _parse_ascii(data, pos, n_points, len(variables), is_complex, plotname)
    plot = RawPlot(
        title=header.get("Title", ""),
        date=header.get("Date", ""),
        plotname=plotname,
        flags=flags,
        variables=tuple(variables),
        columns=tuple(columns),
        header=header,
    )
    return plot, pos


def _header_int(header: dict[str, str], key: str, where: str) -> int:
    try:
        return int(header[key].split()[0])
    except (KeyError, IndexError, ValueError):
        raise RawFileError(f"raw file {where}: missing or bad {key!r} header line") from None


def _parse_variables(data: bytes, pos: int, n_vars: int, where: str) -> tuple[list[RawVariable], int]:
    variables = []
    for expected in range(n_vars):
        end = data.find(b"\n", pos)
        if end < 0:
            raise RawFileError(f"raw file {where}: truncated 'Variables:' section")
        fields = data[pos:end].decode("latin-1").split()
        pos = end + 1
        if len(fields) < 3 or fields[0] != str(expected):
            raise RawFileError(f"raw file {where}: bad variable line {data[pos:end]!r}")
        variables.append(RawVariable(int(fields[0]), fields[1], fields[2], tuple(fields[3:])))
    return variables, pos


def _parse_binary(data, pos, n_points, n_vars, is_complex, plotname):
    width = 2 if is_complex else 1
    n_bytes = n_points * n_vars * width * 8
    if pos + n_bytes > len(data):
        raise RawFileError(
            f"raw file plot {plotname!r} is truncated: header says {n_points} points x {n_vars} "
            f"vectors ({n_bytes} bytes), file has {len(data) - pos} bytes of data"
        )
    flat = np.frombuffer(data, dtype="<f8", count=n_points * n_vars * width, offset=pos)
    table = flat.reshape(n_points, n_vars * width)
    if is_complex:
        columns = [table[:, 2 * i] + 1j * table[:, 2 * i + 1] for i in range(n_vars)]
    else:
        columns = [np.array(table[:, i]) for i in range(n_vars)]
    end = pos + n_bytes
    rest = _skip_blank(data, end)
    if rest < len(data) and not data.startswith(b"Title:", rest):
        raise RawFileError(
            f"raw file plot {plotname!r}: {len(data) - end} bytes follow the {n_points} declared "
            "points and are not another plot (ngspice 39 writes such files in binary mode with "
            "'.options interp'; use the ASCII raw format for those runs)"
        )
    return columns, end


def _parse_ascii(data, pos, n_points, n_vars, is_complex, plotname):
    end = data.find(b"\nTitle:", pos)
    end = len(data) if end < 0 else end + 1
    chunk = data[pos:end]
    if is_complex:
        chunk = chunk.replace(b",", b" ")
    tokens = chunk.split()
    width = 2 if is_complex else 1
    per_point = 1 + n_vars * width
    if len(tokens) != n_points * per_point:
        raise RawFileError(
            f"raw file plot {plotname!r}: ASCII data has {len(tokens)} numbers, expected "
            f"{n_points} points x (1 + {n_vars * width}) = {n_points * per_point}"
        )
    try:
        table = np.array(tokens, dtype=np.bytes_).astype(np.float64).reshape(n_points, per_point)
    except ValueError as exc:
        raise RawFileError(f"raw file plot {plotname!r}: bad number in ASCII data ({exc})") from None
    if not np.array_equal(table[:, 0], np.arange(n_points)):
        raise RawFileError(f"raw file plot {plotname!r}: ASCII point indices are not 0..{n_points - 1}")
    values = table[:, 1:]
    if is_complex:
        columns = [values[:, 2 * i] + 1j * values[:, 2 * i + 1] for i in range(n_vars)]
    else:
        columns = [np.array(values[:, i]) for i in range(n_vars)]
    return columns, end
