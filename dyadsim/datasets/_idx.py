"""Reader for the IDX file format used by MNIST and Fashion-MNIST.

An IDX file is a big-endian header followed by raw data::

    bytes 0-1   zero
    byte  2     data type code (0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32,
                0x0D float32, 0x0E float64)
    byte  3     number of dimensions d (>= 1)
    4*d bytes   the dimensions, unsigned 32-bit big-endian
    rest        the data, C order, big-endian

Files may be gzip-compressed; compression is detected from the content (the gzip magic
bytes), not the extension.
"""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

import numpy as np

from ..errors import DyadsimError

__all__ = ["read_idx", "IDX_DTYPES"]

#: IDX type code -> numpy dtype (big-endian as stored in the file).
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

_GZIP_MAGIC = b"\x1f\x8b"


def _read_bytes(path: Path) -> bytes:
    if not path.exists():
        raise DyadsimError(f"IDX file not found: {path}")
    if not path.is_file():
        raise DyadsimError(f"IDX path is not a regular file: {path}")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DyadsimError(f"cannot read IDX file {path}: {exc}") from None
    if raw[:2] == _GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise DyadsimError(
                f"IDX file {path} looks gzip-compressed but could not be decompressed "
                f"(corrupt or truncated archive): {exc}"
            ) from None
    return raw


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read one IDX file (plain or gzip-compressed) into a numpy array.

    Parameters
    ----------
    path:
        File to read. Gzip compression is detected from the file's first bytes, so both
        ``train-images-idx3-ubyte`` and ``train-images-idx3-ubyte.gz`` work.

    Returns
    -------
    numpy.ndarray
        An array of the shape given by the file's header, in native byte order, with the
        dtype given by the header's type code (``uint8`` for MNIST).

    Raises
    ------
    DyadsimError
        If the file is missing, not a file, not valid gzip, has a bad magic number or an
        unknown type code, or if its data section is shorter or longer than the header
        says. The message names the file and what was expected versus found.
    """
    path = Path(path).expanduser()
    raw = _read_bytes(path)
    n = len(raw)
    if n < 4:
        raise DyadsimError(
            f"IDX file {path} is truncated: {n} byte(s), but the magic number alone "
            f"takes 4 bytes"
        )
    if raw[0] != 0 or raw[1] != 0:
        raise DyadsimError(
            f"IDX file {path} has a bad magic number 0x{raw[:4].hex()}: the first two "
            f"bytes must be zero (expected 0x0000TTDD, T = type code, D = number of "
            f"dimensions); this is not an IDX file"
        )
    code, ndim = raw[2], raw[3]
    if code not in IDX_DTYPES:
        valid = ", ".join(f"0x{c:02X}" for c in IDX_DTYPES)
        raise DyadsimError(
            f"IDX file {path} has a bad magic number 0x{raw[:4].hex()}: unknown data "
            f"type code 0x{code:02X} (expected one of {valid})"
        )
    if ndim == 0:
        raise DyadsimError(
            f"IDX file {path} has a bad magic number 0x{raw[:4].hex()}: zero dimensions"
        )
    header_len = 4 + 4 * ndim
    if n < header_len:
        raise DyadsimError(
            f"IDX file {path} is truncated in its header: {ndim} dimension(s) need "
            f"{header_len} header bytes, found {n}"
        )
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = IDX_DTYPES[code]
    count = int(np.prod(dims, dtype=np.int64)) if dims else 0
    expected = count * dtype.itemsize
    found = n - header_len
    if found < expected:
        raise DyadsimError(
            f"IDX file {path} is truncated: header declares shape {dims} of {dtype.name} "
            f"({expected} data bytes) but only {found} data bytes follow the header"
        )
    if found > expected:
        raise DyadsimError(
            f"IDX file {path} has {found - expected} unexpected trailing byte(s): header "
            f"declares shape {dims} of {dtype.name} ({expected} data bytes), found {found}"
        )
    data = np.frombuffer(raw, dtype=dtype, count=count, offset=header_len)
    return data.astype(dtype.newbyteorder("="), copy=True).reshape(dims)
