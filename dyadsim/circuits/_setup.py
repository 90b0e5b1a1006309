"""What both compilers share: node naming, the set-up of a circuit, and the Netlist.

The behavioural compiler (:mod:`._compiler`) and the device compiler (:mod:`._device`)
build different neurons from the same frame: the network's layer identifiers and node
names (so :func:`dyadsim.readout` reads either dialect), the reference sources of the
gain and tau, the input and target sources of every sample, the analysis card and the
validated ``.options``, and the :class:`Netlist` record that comes back.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .._io import atomic_write
from ..errors import DyadsimError
from ._gains import gain_node, gain_param
from ._ir import Analysis, Circuit, Kind, Param

__all__ = ["DEFAULT_OPTIONS", "TRAN_OPTIONS", "ANALYSES", "GAIN_NODE", "TAU_NODE", "Netlist",
           "layer_identifier", "layer_identifiers", "describe_network", "node_name",
           "target_node", "set_analysis"]

#: Simulator options for the precision the readout needs (measured: .op gradients agree
#: with backprop to ~1e-9 relative; see tests/test_circuits.py).
DEFAULT_OPTIONS = {
    "reltol": 1e-9,
    "abstol": 1e-16,
    "vntol": 1e-13,
    "chgtol": 1e-18,
    "itl1": 500,
    "itl4": 100,
}
TRAN_OPTIONS = {"method": "trap"}

_NON_ALNUM = re.compile(r"[^a-z0-9]+")


def layer_identifier(name, taken: set) -> str:
    """A netlist-safe, unique, readable identifier for a layer name.

    Lowercase letters and digits only (ngspice is case-insensitive; '_' is kept for the
    separators of node and element names, so that ``kind_layer_index`` always parses one
    way), starting with a letter; names that collide get a numeric suffix ``n1``, ``n2``...
    The result can never contain whitespace, a newline, '.', '{', '=' or anything else with
    meaning to ngspice.

    Parameters
    ----------
    name : object
        The layer's name in the network (any hashable; its ``str`` is used).
    taken : set
        Identifiers already given out; the new one is added to it.

    Returns
    -------
    str
    """
    raw = str(name)
    base = _NON_ALNUM.sub("", raw.lower())[:40] or "layer"
    if not base[0].isalpha():
        base = "l" + base
    cand = base
    k = 1
    while cand in taken:
        cand = f"{base}n{k}"
        k += 1
    taken.add(cand)
    return cand


def layer_identifiers(net) -> dict:
    """The netlist identifier of every layer of a network (deterministic).

    Parameters
    ----------
    net : Network

    Returns
    -------
    dict
        ``{layer: identifier}``, the input layer included; never ``y``, :data:`GAIN_NODE`
        or :data:`TAU_NODE`.
    """
    taken: set = {"y", GAIN_NODE, TAU_NODE}
    return {v: layer_identifier(v, taken) for v in (net.input,) + net.nodes}


def describe_network(net, ids, n_samples) -> list:
    """Header lines naming a network's layers, edges, loss and depth (for netlist headers).

    Parameters
    ----------
    net : Network
    ids : dict
        ``{layer: identifier}`` (:func:`layer_identifiers`).
    n_samples : int
        Samples in the netlist.

    Returns
    -------
    list of str
    """
    sizes = " -> ".join(f"{ids[v]}({net.sizes[v]}{'' if v == net.input else ', ' + net.activations[v].name})"
                        for v in (net.input,) + net.nodes)
    return [
        f"network: {sizes}",
        "edges: " + ", ".join(f"{ids[s]}->{ids[d]}" for s, d in net.edges),
        f"loss: {net.loss.name}; depth L = {net.depth}; samples in this netlist: {n_samples}",
    ]


def node_name(kind: str, layer_id: str, i: int, b: int = 0, n_samples: int = 1) -> str:
    """The name of a node of a neuron in a compiled netlist (both dialects).

    Parameters
    ----------
    kind : str
        ``"x"``, ``"z"`` (the state pair), ``"m"``, ``"u"``, ``"s"``, ``"r"`` (behavioural
        aux nodes; the device dialect has more), or ``"in"`` (an input).
    layer_id : str
        The layer's identifier (:func:`layer_identifiers`).
    i : int
        The neuron's index in its layer.
    b, n_samples : int
        The sample, and how many the netlist holds (a suffix ``_b{b}`` when more than one).

    Returns
    -------
    str
        e.g. ``"x_h1_0"``, or ``"x_h1_0_b2"`` in a batch netlist.
    """
    return f"{kind}_{layer_id}_{i}" + (f"_b{b}" if n_samples > 1 else "")


def target_node(i: int, b: int = 0, n_samples: int = 1) -> str:
    """The name of the node holding target ``i`` of sample ``b``.

    Parameters
    ----------
    i : int
        Output index.
    b, n_samples : int
        The sample, and how many the netlist holds.

    Returns
    -------
    str
        ``"y_{i}"``, or ``"y_{i}_b{b}"`` in a batch netlist.
    """
    return f"y_{i}" + (f"_b{b}" if n_samples > 1 else "")


#: node whose voltage is the cost gain (read back by the readout)
GAIN_NODE = "gain_ref"
#: node whose voltage is tau in seconds
TAU_NODE = "tau_ref"


@dataclass
class Netlist:
    """A compiled netlist: ``text``, ``write(path)``, and where every neuron lives.

    ``node_map[(sample, layer, i)] = (x_node, z_node)`` for every stacked neuron;
    ``aux_map[(sample, layer, i)] = {"m": ..., "u": ..., "s": ..., "r": ...}``;
    ``input_nodes[(sample, i)]``, ``target_nodes[(sample, i)]``.
    ``gain`` is the cost gain (the output layer's); ``gains`` holds the gain of every layer
    (``{layer: float}``, all equal for a scalar gain) and ``staged`` says whether the
    netlist has one gain per layer (``gain="auto"`` or per-layer gains: reference nodes
    ``gain_ref_<layer>``, ``.param gain_<layer>``).  Made by the compilers
    (:func:`~dyadsim.compile_netlist`, :func:`~dyadsim.circuits.compile_device_netlist`),
    not by hand.

    Parameters
    ----------
    text : str
        The netlist.
    circuit : Circuit
        The IR it was written from.
    net : Network
        The network it computes.
    x, y : ndarray
        The batch, (B, n_in) and (B, n_out).
    analysis : str
        ``"op"`` or ``"tran"``.
    gain, g, tau : float
        The cost gain, the transconductance scale (S) and the time constant (s).
    node_map, aux_map, layer_ids, input_nodes, target_nodes : dict
        Where every neuron, auxiliary node, layer, input and target lives (see above).
    compile_time : float
        Seconds the compiler took.
    path : Path, optional
        Where :meth:`write` last wrote it.
    stats : dict
        Element counts by kind.
    gains : dict
        ``{layer: gain}``.
    staged : bool
        One gain per layer.
    """

    text: str
    circuit: Circuit
    net: object
    x: np.ndarray
    y: np.ndarray
    analysis: str
    gain: float
    g: float
    tau: float
    node_map: dict
    aux_map: dict
    layer_ids: dict
    input_nodes: dict
    target_nodes: dict
    compile_time: float = 0.0
    path: Path | None = None
    stats: dict = field(default_factory=dict)
    gains: dict = field(default_factory=dict)
    staged: bool = False

    @property
    def n_samples(self) -> int:
        return self.x.shape[0]

    def nodes_of(self, layer, i, sample=0):
        """(x_node, z_node) of neuron i of a layer."""
        return self.node_map[(sample, layer, i)]

    @property
    def readout_nodes(self) -> tuple:
        """The nodes whose voltages the gradient readout reads: inputs, targets, x, z and u
        of every neuron, and the gain/tau references.  ``simulate`` keeps only these
        (``.save``) unless asked for everything (``save="all"``)."""
        nodes = [*self.input_nodes.values(), *self.target_nodes.values()]
        for key, (xn, zn) in self.node_map.items():
            nodes += [xn, zn, self.aux_map[key]["u"]]
        refs = [GAIN_NODE, TAU_NODE]
        if self.staged:
            refs += [gain_node(self.layer_ids[v]) for v in self.gains]
        return tuple(dict.fromkeys(nodes + refs))

    def write(self, path) -> Path:
        """Write the netlist text to ``path`` (a file name chosen by the caller; it never
        enters the netlist), atomically: an interrupted write leaves the old file."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(path) as fh:
            fh.write(self.text)
        self.path = path
        return path

    def __str__(self) -> str:
        return self.text


def set_analysis(c, analysis, L, tau, node_map, t_stop, t_step, max_step, opts, options):
    """Analysis card, initial state (x = z = 0 for a transient) and validated ``.options``.

    Transient settings are in units of tau (defaults: 6L + 30, 0.05, 0.05); ``opts`` are
    the dialect's base options, ``options`` the user's (names and values checked, so no
    text can reach the netlist through them)."""
    if analysis == "tran":
        opts.update(TRAN_OPTIONS)
        t_stop = (6 * L + 30) if t_stop is None else t_stop
        t_step = 0.05 if t_step is None else t_step
        max_step = 0.05 if max_step is None else max_step
        for name, val in (("t_stop", t_stop), ("t_step", t_step), ("max_step", max_step)):
            if isinstance(val, bool) or not (isinstance(val, (int, float)) and np.isfinite(val) and val > 0):
                raise DyadsimError(f"{name} must be a positive number of tau, got {val!r}")
        c.analysis = Analysis("tran", t_step * tau, t_stop * tau, max_step * tau)
        c.initial_conditions = {n: 0.0 for pair in node_map.values() for n in pair}
    for k, v in (options or {}).items():
        if not re.fullmatch(r"[a-z][a-z0-9_]*", str(k)) or (
                not isinstance(v, (int, float, bool)) and not re.fullmatch(r"[a-z0-9_.+-]+", str(v))):
            raise DyadsimError(f"invalid simulator option {k!r}={v!r}")
    opts.update(options or {})
    c.options = opts


ANALYSES = ("op", "tran")


def check_analysis(analysis) -> str:
    """``"op"`` or ``"tran"``."""
    if analysis not in ANALYSES:
        raise DyadsimError(f"unknown analysis {analysis!r}; valid analyses: op, tran")
    return analysis


@dataclass
class Frame:
    """One compilation's set-up: the batch, the layer identifiers, the node maps being
    filled, and the start time (internal)."""

    net: object
    X: np.ndarray
    Y: np.ndarray
    ids: dict
    t0: float
    node_map: dict = field(default_factory=dict)
    aux_map: dict = field(default_factory=dict)
    in_nodes: dict = field(default_factory=dict)
    tgt_nodes: dict = field(default_factory=dict)

    @property
    def B(self) -> int:
        return self.X.shape[0]

    def nm(self, kind, v, i, b):
        """Name of node ``kind`` of neuron i of layer v, sample b."""
        return node_name(kind, self.ids[v], i, b, self.B)


def start(net, x, y, t0, *, what="compile_netlist", node_ops=(), affine=False) -> Frame:
    """Check the batch against the network and name its layers.

    Parameters
    ----------
    net : Network
    x, y : array_like
        The batch.
    t0 : float
        The compilation's start time (``time.perf_counter()``).
    what : str
        The compiler, for error messages.
    node_ops, affine :
        As in :func:`check_nodes`.

    Returns
    -------
    Frame
    """
    check_nodes(net, what, node_ops, affine)
    X, Y, _ = net.check_xy(x, y)
    return Frame(net, X, Y, layer_identifiers(net), t0)


def check_nodes(net, what="compile_netlist", node_ops=(), affine=False) -> None:
    """Refuse, naming it, a general node without a circuit in a dialect (and an affine
    batchnorm edge in a dialect that cannot build one).

    Parameters
    ----------
    net : Network
    what : str
        The compiler, for error messages.
    node_ops : tuple of str
        The general node ops the dialect builds.
    affine : bool
        Whether the dialect builds affine (batchnorm) edges.
    """
    for v in net.general_nodes:
        if net.node_ops[v].kind not in node_ops:
            raise DyadsimError(
                f"{what}: node {v!r} is a {net.node_ops[v].kind} node, which has no circuit in this "
                "dialect (circuits exist for layers that sum linear edges and apply tanh, sigmoid, "
                "relu, softplus or identity" + (", and for " + ", ".join(node_ops) + " nodes)"
                                                 if node_ops else ")"))
    if not affine:
        for (p, v), op in net.edge_ops.items():
            if op.kind == "batchnorm":
                raise DyadsimError(
                    f"{what}: edge {p!r} -> {v!r} is a batchnorm edge (affine: its offset "
                    "-gamma mean / sqrt(var + eps) has no circuit in this dialect; the behavioural "
                    "compile_netlist builds it)")


def add_references(c: Circuit, staged_ids=()) -> None:
    """The reference sources V(gain_ref) = gain and V(tau_ref) = tau, so that a readout
    needs only the node voltages; for a staged circuit also V(gain_ref_<layer>) =
    gain_<layer> for every layer identifier in ``staged_ids``."""
    ref = c.section("reference: the cost gain as a voltage, so a readout needs only the node voltages")
    cm = "V(gain_ref) = gain, V(tau_ref) = tau (in seconds)"
    ref.add(Kind.V, "gain", (GAIN_NODE, "0"), Param("gain"), cm)
    ref.add(Kind.V, "tau", (TAU_NODE, "0"), Param("tau"), cm)
    if staged_ids:
        sec = c.section("reference: the gain of every layer (gain staging: error voltage of "
                        "layer v = gain_v * dC/da_v)")
        cm = "V(gain_ref_<layer>) = gain_<layer>"
        for lid in staged_ids:
            sec.add(Kind.V, "gain_" + lid, (gain_node(lid), "0"), Param(gain_param(lid)), cm)


def add_sources(sec, fr: Frame, b, on_input=None, on_target=None) -> None:
    """The clamped input and target voltage sources of sample ``b`` (recorded in the
    frame's maps); ``on_input(n)`` / ``on_target(n)`` add what a dialect builds after each."""
    net = fr.net
    for i in range(net.n_in):
        n = fr.nm("in", net.input, i, b)
        fr.in_nodes[(b, i)] = n
        sec.add(Kind.V, n, (n, "0"), float(fr.X[b, i]), "input voltages (clamped)")
        if on_input is not None:
            on_input(n)
    for i in range(net.n_out):
        n = target_node(i, b, fr.B)
        fr.tgt_nodes[(b, i)] = n
        sec.add(Kind.V, n, (n, "0"), float(fr.Y[b, i]), "target voltages")
        if on_target is not None:
            on_target(n)


def finish(c: Circuit, fr: Frame, text, analysis, gains, g, tau, **stats) -> Netlist:
    """The :class:`Netlist` of a compiled circuit (stats, compile time); ``gains`` is
    the compilation's :class:`~._gains.Gains`."""
    nl = Netlist(text, c, fr.net, fr.X, fr.Y, analysis, float(gains[fr.net.output]), float(g),
                 float(tau), fr.node_map, fr.aux_map, fr.ids, fr.in_nodes, fr.tgt_nodes,
                 gains=dict(gains.per_layer), staged=gains.staged)
    nl.stats = c.stats()
    nl.stats.update(stats)
    nl.compile_time = time.perf_counter() - fr.t0
    return nl
