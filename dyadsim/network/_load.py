"""Reading a saved network (``.npz``) as untrusted input.

A network file is a zip archive (written by ``np.savez``) of ``.npy`` members:
``__graph__`` (a 0-d unicode array holding the JSON graph description), ``W{k}`` (the
weight of edge k, for edges with weights) and ``b{i}`` (the bias of node i, for nodes with
a bias).  Everything is checked in this order, each step before the next one reads or
allocates anything:

1. the file: a regular file of at most ``file_bytes``;
2. the zip directory: readable, no duplicate, unexpected or encrypted members, a known
   compression, declared sizes within the limits (the declared size caps what
   decompression may produce, so a small file cannot expand into gigabytes);
3. ``__graph__``: its ``.npy`` header (a unicode scalar of at most ``header_chars``), then
   the JSON: exact keys and types, layer count, sizes, names, edges, convolution and
   pooling settings within the limits, and the resulting layer sizes consistent;
4. every array's ``.npy`` header: a real dtype and exactly the shape the graph implies,
   and a declared member size that holds exactly that much data;
5. only then the arrays themselves, and :meth:`Network.from_graph` (which checks again).

Any failure is a :class:`~dyadsim.errors.DyadsimError` naming the file.
"""

from __future__ import annotations

import json
import math
import re
import zipfile
import zlib
from os import PathLike
from pathlib import Path

import networkx as nx
import numpy as np

from ..errors import DyadsimError
from ._edges import EDGE_OPS, window_out_shape
from ._network import _FORMAT, _FORMAT_VERSION, Network

__all__ = ["LOAD_LIMITS", "read_network_file"]

#: What :func:`dyadsim.load` accepts by default (override with ``load(path, limits={...})``).
LOAD_LIMITS = {
    "file_bytes": 4 * 2**30,        # size of the file on disk
    "header_chars": 4_000_000,      # length of the JSON graph description
    "layers": 10_000,               # layer nodes, the input included
    "edges": 100_000,
    "neurons": 10_000_000,          # all layer sizes together, the input included
    "params": 100_000_000,          # weights and biases together (800 MB of float64)
    "connections": 50_000_000,      # uses of a weight in all conv/pool edges together
    "kernel": 1024,                 # kernel size, per dimension
    "stride": 1024,                 # stride, per dimension
    "padding": 1024,                # zero padding, per dimension
    "name_chars": 1000,             # length of a layer name
    "compression_ratio": 20,        # declared / stored size of a compressed member over 1 MiB
}

_MEMBER = re.compile(r"(__graph__|W(?:0|[1-9][0-9]{0,8})|b(?:0|[1-9][0-9]{0,8}))\.npy")
_KEYS = {"format", "version", "loss", "nodes", "edges"}
_NODE_KEYS = {"name", "size", "shape", "activation", "bias"}
_EDGE_KEYS = {"op", "stride", "padding", "kernel_size"}
_NPY_SLACK = 4096  # the most a .npy header may take


class _Bad(Exception):
    """Internal: a reason the file is refused (turned into a DyadsimError naming it)."""


def _limits(overrides) -> dict:
    limits = dict(LOAD_LIMITS)
    if overrides is None:
        return limits
    if not isinstance(overrides, dict):
        raise DyadsimError(f"limits must be a dict, got {type(overrides).__name__}")
    for key, value in overrides.items():
        if key not in LOAD_LIMITS:
            raise DyadsimError(f"unknown load limit {key!r}; valid: {', '.join(LOAD_LIMITS)}")
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise DyadsimError(f"load limit {key!r} must be a positive int, got {value!r}")
        limits[key] = int(value)
    return limits


def read_network_file(path, limits=None) -> Network:
    """The network stored in ``path`` (see the module docstring); DyadsimError otherwise."""
    if not isinstance(path, (str, PathLike)):
        raise DyadsimError(f"path must be a str or a path, got {type(path).__name__}")
    limits = _limits(limits)
    path = Path(path)
    if not path.exists():
        raise DyadsimError(f"network file not found: {path}")
    if not path.is_file():
        raise DyadsimError(f"{path} is not a network file: not a regular file")
    try:
        size = path.stat().st_size
        if size == 0:
            raise _Bad("the file is empty")
        if size > limits["file_bytes"]:
            raise _Bad(f"the file holds {size} bytes, more than the limit file_bytes={limits['file_bytes']}")
        with zipfile.ZipFile(path) as archive:
            return _read(archive, limits)
    except _Bad as exc:
        raise DyadsimError(f"{path} is not a dyadsim network file: {exc}") from None
    except DyadsimError as exc:  # from Network.from_graph: the graph itself is wrong
        raise DyadsimError(f"{path}: {exc}") from None
    except MemoryError:
        raise DyadsimError(f"{path}: not enough memory to load this network") from None
    except OSError as exc:
        raise DyadsimError(f"cannot read network file {path}: {exc.strerror or exc}") from None
    except (zipfile.BadZipFile, zlib.error, EOFError, ValueError, KeyError, IndexError, TypeError,
            NotImplementedError, RuntimeError, OverflowError, UnicodeError) as exc:
        what = "not a zip archive" if isinstance(exc, zipfile.BadZipFile) else "corrupt or truncated"
        raise DyadsimError(f"{path} is not a dyadsim network file ({what}: "
                           f"{type(exc).__name__}: {exc})") from None


# ----------------------------------------------------------------------------- zip level


def _read(archive: zipfile.ZipFile, limits) -> Network:
    infos = archive.infolist()
    if len(infos) > 2 * limits["edges"] + limits["layers"] + 1:
        raise _Bad(f"{len(infos)} members, more than a network within the limits has")
    members = {}
    for info in infos:
        if not _MEMBER.fullmatch(info.filename):
            raise _Bad(f"unexpected member {info.filename!r} (a network file holds only "
                       "__graph__.npy, W<k>.npy and b<i>.npy)")
        if info.filename in members:
            raise _Bad(f"member {info.filename!r} appears twice")
        if info.flag_bits & 0x1:
            raise _Bad(f"member {info.filename!r} is encrypted")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise _Bad(f"member {info.filename!r} uses an unsupported compression ({info.compress_type})")
        if info.file_size > 2**20 and info.file_size > limits["compression_ratio"] * max(info.compress_size, 1):
            raise _Bad(f"member {info.filename!r} expands from {info.compress_size} to {info.file_size} "
                       f"bytes, more than compression_ratio={limits['compression_ratio']} allows")
        members[info.filename] = info
    if "__graph__.npy" not in members:
        raise _Bad("no __graph__ member (the graph description)")
    graph_info = members.pop("__graph__.npy")
    if graph_info.file_size > 4 * limits["header_chars"] + _NPY_SLACK:
        raise _Bad(f"the graph description holds {graph_info.file_size} bytes, more than the limit "
                   f"header_chars={limits['header_chars']} allows")
    desc = _read_description(archive, graph_info, limits)
    plan = _plan(desc, limits)
    expected = {f"{name}.npy": check for name, check in plan["arrays"].items()}
    for name in members:
        if name not in expected:
            raise _Bad(f"unexpected member {name!r}: the graph has no "
                       f"{'edge with a weight' if name[0] == 'W' else 'node with a bias'} number {name[1:-4]}")
    for name in expected:
        if name not in members:
            raise _Bad(f"member {name!r} is missing")
    totals = {"params": plan["params"], "connections": plan["connections"]}
    dtypes = {name: _array_header(archive, members[name], expected[name], totals) for name in sorted(expected)}
    if totals["params"] > limits["params"]:
        raise _Bad(f"{totals['params']} parameters, more than the limit params={limits['params']}")
    if totals["connections"] > limits["connections"]:
        raise _Bad(f"{totals['connections']} conv/pool connections, more than the limit "
                   f"connections={limits['connections']}")
    arrays = {name[:-4]: _read_array(archive, members[name], dtypes[name]) for name in sorted(expected)}
    return _build(desc, arrays)


def _npy_header(fp, what):
    """(shape, fortran_order, dtype, header_bytes) of an open ``.npy`` member."""
    fmt = np.lib.format
    try:
        version = fmt.read_magic(fp)
        if version == (1, 0):
            shape, fortran, dtype = fmt.read_array_header_1_0(fp, max_header_size=_NPY_SLACK)
        elif version in ((2, 0), (3, 0)):
            shape, fortran, dtype = fmt.read_array_header_2_0(fp, max_header_size=_NPY_SLACK)
        else:
            raise _Bad(f"member {what!r}: unsupported .npy version {version}")
    except (ValueError, SyntaxError) as exc:
        raise _Bad(f"member {what!r}: bad .npy header ({exc})") from None
    return shape, fortran, dtype, fp.tell()


def _check_declared_size(info, header_bytes, nbytes):
    if info.file_size != header_bytes + nbytes:
        raise _Bad(f"member {info.filename!r} declares {info.file_size} bytes, but its header "
                   f"describes {header_bytes + nbytes} (truncated or padded)")


def _read_description(archive, info, limits) -> dict:
    with archive.open(info) as fp:
        shape, _, dtype, header_bytes = _npy_header(fp, info.filename)
        if shape != () or dtype.kind != "U":
            raise _Bad(f"the graph description is not a text scalar (dtype {dtype}, shape {shape})")
        if dtype.itemsize // 4 > limits["header_chars"]:
            raise _Bad(f"the graph description holds {dtype.itemsize // 4} characters, more than "
                       f"the limit header_chars={limits['header_chars']}")
        _check_declared_size(info, header_bytes, dtype.itemsize)
        data = fp.read(dtype.itemsize)
    if len(data) != dtype.itemsize:
        raise _Bad("the graph description is truncated")
    text = str(np.frombuffer(data, dtype=dtype)[0])
    try:
        desc = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise _Bad(f"the graph description is not valid JSON ({type(exc).__name__}: {str(exc)[:100]})") from None
    if not isinstance(desc, dict):
        raise _Bad(f"the graph description is a JSON {type(desc).__name__}, not an object")
    if desc.get("format") != _FORMAT:
        raise _Bad(f"format {desc.get('format')!r} is not {_FORMAT!r}")
    version = desc.get("version")
    if not _is_int(version) or version < 1:
        raise _Bad(f"bad format version {version!r}")
    if version > _FORMAT_VERSION:
        raise _Bad(f"format version {version} was written by a newer dyadsim (this one reads "
                   f"version {_FORMAT_VERSION})")
    extra = set(desc) - _KEYS
    missing = _KEYS - set(desc)
    if extra or missing:
        raise _Bad(f"graph description keys: missing {sorted(missing)}, unexpected {sorted(extra)}")
    return desc


def _array_header(archive, info, check, totals):
    """Read and check one array's .npy header (``check(shape, totals)`` raises _Bad)."""
    with archive.open(info) as fp:
        shape, fortran, dtype, header_bytes = _npy_header(fp, info.filename)
    if dtype.kind not in "fiu" or dtype.itemsize > 8 or dtype.hasobject:
        raise _Bad(f"member {info.filename!r} has dtype {dtype}; a real number type is needed")
    shape = tuple(shape)
    if not all(_is_int(d) and d >= 0 for d in shape):  # pragma: no cover - numpy checks
        raise _Bad(f"member {info.filename!r} has a bad shape {shape}")
    check(shape, totals)
    _check_declared_size(info, header_bytes, math.prod(shape) * dtype.itemsize)
    return dtype


def _exact(name, want):
    def check(shape, totals):
        if shape != want:
            raise _Bad(f"member {name}.npy has shape {shape}, the graph needs {want}")
    return check


def _bias_check(name, size, channels):
    def check(shape, totals):
        if shape not in ((size,), (channels,)):
            raise _Bad(f"member {name}.npy has shape {shape}, the graph needs ({size},) or "
                       f"({channels},) (one bias per channel)")
    return check


def _conv_check(k, src, n_dst, stride, padding, limits):
    def check(shape, totals):
        if len(shape) != 4 or shape[1] != src[0] or min(shape) < 1:
            raise _Bad(f"member W{k}.npy has shape {shape}; edge {k} (conv2d) needs "
                       f"(out_channels, {src[0]}, kh, kw)")
        kernel = shape[2:]
        if max(kernel) > limits["kernel"]:
            raise _Bad(f"edge {k}: kernel {kernel} is larger than kernel={limits['kernel']}")
        if shape[0] > limits["neurons"]:
            raise _Bad(f"edge {k}: {shape[0]} output channels, more than neurons={limits['neurons']}")
        try:
            out, count = window_out_shape("conv2d", src, kernel, stride, padding, out_channels=shape[0])
        except DyadsimError as exc:
            raise _Bad(f"edge {k}: {exc}") from None
        if math.prod(out) != n_dst:
            raise _Bad(f"edge {k}: conv2d maps {list(src)} to {list(out)} = {math.prod(out)} neurons, "
                       f"but its destination has size {n_dst}")
        totals["connections"] += count
        totals["params"] += math.prod(shape)
    return check


def _read_array(archive, info, dtype):
    with archive.open(info) as fp:
        array = np.lib.format.read_array(fp, allow_pickle=False)
    if array.dtype != dtype:  # pragma: no cover - read_array follows the header
        raise _Bad(f"member {info.filename!r} changed dtype while reading")
    return array


# ----------------------------------------------------------------------------- graph level


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _pair(v, what, limit, minimum):
    if _is_int(v):
        v = [v, v]
    if not (isinstance(v, list) and len(v) == 2 and all(_is_int(x) for x in v)):
        raise _Bad(f"{what} must be an int or a pair of ints, got {v!r}")
    if min(v) < minimum or max(v) > limit:
        raise _Bad(f"{what} {v} is outside [{minimum}, {limit}]")
    return tuple(v)


def _plan(desc, limits) -> dict:
    """Check the graph description; return the arrays it implies, by name, with shapes."""
    nodes, edges = desc["nodes"], desc["edges"]
    if not isinstance(desc["loss"], str):
        raise _Bad(f"loss must be a string, got {desc['loss']!r}")
    if not isinstance(nodes, list) or not isinstance(edges, list):
        raise _Bad("'nodes' and 'edges' must be lists")
    if not 2 <= len(nodes) <= limits["layers"]:
        raise _Bad(f"{len(nodes)} layer nodes; a network has 2 to layers={limits['layers']}")
    if len(edges) > limits["edges"]:
        raise _Bad(f"{len(edges)} edges, more than the limit edges={limits['edges']}")
    names, shapes, total = set(), [], 0
    arrays = {}
    for i, nd in enumerate(nodes):
        where = f"node {i}"
        if not isinstance(nd, dict) or not set(nd) <= _NODE_KEYS or not {"name", "size"} <= set(nd):
            raise _Bad(f"{where}: must be an object with keys {sorted(_NODE_KEYS)}")
        name = nd["name"]
        if not (isinstance(name, str) or _is_int(name)):
            raise _Bad(f"{where}: name must be a string or an int, got {name!r}")
        if isinstance(name, str) and len(name) > limits["name_chars"]:
            raise _Bad(f"{where}: name of {len(name)} characters, more than name_chars={limits['name_chars']}")
        if _is_int(name) and abs(name) >= 2**63:
            raise _Bad(f"{where}: name {name} is out of range")
        if name in names:
            raise _Bad(f"{where}: duplicate layer name {name!r}")
        names.add(name)
        size = nd["size"]
        if not _is_int(size) or not 1 <= size <= limits["neurons"]:
            raise _Bad(f"{where} ({name!r}): size must be an int in [1, neurons={limits['neurons']}], got {size!r}")
        total += size
        if total > limits["neurons"]:
            raise _Bad(f"more than neurons={limits['neurons']} neurons in all")
        shape = nd.get("shape", [size])
        if not (isinstance(shape, list) and 1 <= len(shape) <= 4 and all(_is_int(d) and d >= 1 for d in shape)):
            raise _Bad(f"{where} ({name!r}): shape must be a list of 1 to 4 positive ints, got {shape!r}")
        if math.prod(shape) != size:
            raise _Bad(f"{where} ({name!r}): shape {shape} does not hold size {size}")
        shapes.append(tuple(shape))
        act = nd.get("activation")
        if i == 0:
            if act is not None:
                raise _Bad(f"{where} ({name!r}) is the input and must have no activation, got {act!r}")
        elif not isinstance(act, str):
            raise _Bad(f"{where} ({name!r}): activation must be a string, got {act!r}")
        bias = nd.get("bias", i > 0)
        if not isinstance(bias, bool) or (i == 0 and bias):
            raise _Bad(f"{where} ({name!r}): bias must be true or false (false for the input), got {bias!r}")
        if bias:
            arrays[f"b{i}"] = None  # shape decided below (per neuron or per channel)
    params = 0
    connections = 0
    seen_edges = set()
    in_degree = [0] * len(nodes)
    for k, edge in enumerate(edges):
        where = f"edge {k}"
        if not (isinstance(edge, list) and len(edge) in (2, 3) and _is_int(edge[0]) and _is_int(edge[1])):
            raise _Bad(f"{where}: must be [source index, destination index, settings], got {str(edge)[:80]}")
        i, j = edge[0], edge[1]
        if not (0 <= i < len(nodes) and 0 <= j < len(nodes)) or i == j:
            raise _Bad(f"{where}: node indices {i}, {j} out of range or equal")
        if (i, j) in seen_edges:
            raise _Bad(f"{where}: duplicate edge {i} -> {j}")
        seen_edges.add((i, j))
        in_degree[j] += 1
        attrs = edge[2] if len(edge) == 3 else {}
        if not isinstance(attrs, dict) or not set(attrs) <= _EDGE_KEYS:
            raise _Bad(f"{where}: settings must be an object with keys among {sorted(_EDGE_KEYS)}")
        op = attrs.get("op", "dense")
        if op not in EDGE_OPS:
            raise _Bad(f"{where}: unknown op {op!r}; valid: {', '.join(EDGE_OPS)}")
        src, dst = shapes[i], shapes[j]
        n_src, n_dst = math.prod(src), math.prod(dst)
        if op == "dense":
            if set(attrs) - {"op"}:
                raise _Bad(f"{where}: a dense edge has no settings, got {sorted(attrs)}")
            arrays[f"W{k}"] = _exact(f"W{k}", (n_dst, n_src))
            params += n_dst * n_src
        else:
            if len(src) != 3:
                raise _Bad(f"{where}: {op} needs a (C, H, W) source, node {i} has shape {list(src)}")
            stride = _pair(attrs.get("stride", 1), f"{where}: stride", limits["stride"], 1) \
                if op == "conv2d" or "stride" in attrs else None
            padding = _pair(attrs.get("padding", 0), f"{where}: padding", limits["padding"], 0)
            if op == "conv2d":
                if "kernel_size" in attrs:
                    raise _Bad(f"{where}: a conv2d edge takes its kernel size from its weight")
                arrays[f"W{k}"] = _conv_check(k, src, n_dst, stride, padding, limits)  # needs its header
            else:
                kernel = _pair(attrs.get("kernel_size", 2), f"{where}: kernel_size", limits["kernel"], 1)
                try:
                    out, count = window_out_shape("avgpool2d", src, kernel, stride, padding)
                except DyadsimError as exc:
                    raise _Bad(f"{where}: {exc}") from None
                if math.prod(out) != n_dst:
                    raise _Bad(f"{where}: avgpool2d maps {list(src)} to {list(out)} = {math.prod(out)} "
                               f"neurons, but node {j} has size {n_dst}")
                connections += count
    if in_degree[0]:
        raise _Bad("node 0 (the input) has incoming edges")
    for i, nd in enumerate(nodes):
        if f"b{i}" in arrays:
            size = nd["size"]
            arrays[f"b{i}"] = (_bias_check(f"b{i}", size, shapes[i][0]) if len(shapes[i]) == 3
                               else _exact(f"b{i}", (size,)))
            params += size
    if params > limits["params"]:
        raise _Bad(f"{params} parameters, more than the limit params={limits['params']}")
    if connections > limits["connections"]:
        raise _Bad(f"{connections} pooling connections, more than the limit connections={limits['connections']}")
    return {"arrays": arrays, "params": params, "connections": connections}


def _build(desc, arrays) -> Network:
    """Networkx graph -> Network (which validates everything again)."""
    nodes, edges = desc["nodes"], desc["edges"]
    G = nx.DiGraph()
    names = [nd["name"] for nd in nodes]
    for i, nd in enumerate(nodes):
        attrs = {"size": nd["size"]}
        if len(nd.get("shape", [])) > 1:
            attrs["shape"] = tuple(nd["shape"])
        if i > 0:
            attrs["activation"] = nd["activation"]
            attrs["bias"] = arrays[f"b{i}"] if nd.get("bias", True) else False
        G.add_node(nd["name"], **attrs)
    for k, edge in enumerate(edges):
        attrs = dict(edge[2]) if len(edge) > 2 else {}
        for key in ("stride", "padding", "kernel_size"):
            if key in attrs and isinstance(attrs[key], list):
                attrs[key] = tuple(attrs[key])
        if f"W{k}" in arrays:
            attrs["weight"] = arrays[f"W{k}"]
        G.add_edge(names[edge[0]], names[edge[1]], **attrs)
    return Network.from_graph(G, loss=desc["loss"])
