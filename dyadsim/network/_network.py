"""The network model: a DAG of layer nodes, stacked into one global system.

A :class:`Network` is built from a :class:`networkx.DiGraph` whose nodes are *layers*
(attribute ``size``, and ``activation``/``bias`` on every node but the input) and whose
edges carry dense weight blocks (attribute ``weight`` of shape (size_dst, size_src)).
Stacking every non-input neuron in topological order gives the global system of
docs/theory.md, section 1, ``a = sigma(W a + beta(x0))`` with ``W`` strictly block-lower-
triangular (nilpotent, ``W**L == 0``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Hashable

import networkx as nx
import numpy as np
import scipy.sparse as sp

from .._io import atomic_write
from .._validate import as_float_array, check_finite, checked_call
from ..errors import DyadsimError
from ._activations import Activation, get_activation
from ._edges import make_edge_op
from ._nodes import NodeOp, Pullback, make_node_op
from ._losses import Loss, get_loss

__all__ = ["Network", "ParamKey", "load"]

ParamKey = tuple  # ("W", src, dst) or ("b", node)

_FORMAT = "dyadsim-network"
_FORMAT_VERSION = 1


# the one validation module's helpers, under the names this module has always used
_check_finite = check_finite
_as_float_array = as_float_array


@dataclass(frozen=True)
class _Block:
    """One layer node of the stacked system (internal)."""

    name: Hashable
    index: int  # position among the non-input nodes (topological order)
    size: int
    offset: int  # first neuron in the global vector
    activation: Activation
    depth: int  # longest path from the input, in edges
    rdepth: int  # longest path to the output, in edges

    @property
    def slice(self) -> slice:
        return slice(self.offset, self.offset + self.size)


class Network:
    """A feedforward network as one global dynamical system.

    Build one with :meth:`from_graph`, :func:`dyadsim.mlp` or :func:`dyadsim.load`.

    Parameters
    ----------
    graph : networkx.DiGraph
        The layer graph: one source (the input), one sink (the output), acyclic; validated
        as by :meth:`from_graph`.
    loss : str or Loss, optional
        ``"mse"`` (default) or ``"xent"``, or a :class:`~dyadsim.network.Loss`.

    Attributes
    ----------
    input, output : the names of the source (input) and sink (output) layer nodes.
    nodes : the non-input layer nodes, in topological order (the stacking order of ``W``).
    sizes : ``{node: number of neurons}``, the input included.
    activations : ``{node: Activation}`` for the non-input nodes.
    params : ``{("W", src, dst): array (size_dst, size_src), ("b", node): array (size,)}``.
        The arrays are the network's own (training updates them in place).
    loss : the :class:`~dyadsim.network.Loss` (``mse`` or ``xent``).
    depth : L, the longest input-to-output path in edges.
    n : number of stacked (non-input) neurons.
    """

    def __init__(self, graph: nx.DiGraph, loss="mse"):
        # Use Network.from_graph; this validates as well.
        self._init_from_graph(graph, loss)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_graph(cls, G: nx.DiGraph, loss="mse") -> "Network":
        """Validate a layer graph and build the network.

        Raises :class:`~dyadsim.errors.DyadsimError` (a ``ValueError``) naming the problem:
        a cycle (with a node on it), several sources or sinks, a missing or bad ``size``,
        an unknown activation, a weight or bias of the wrong shape (naming the edge/node),
        NaN or inf in a parameter.
        """
        return cls(G, loss=loss)

    def _init_from_graph(self, G, loss) -> None:
        if not isinstance(G, nx.DiGraph) or G.is_multigraph():
            raise DyadsimError(
                f"a network is built from a networkx.DiGraph of layer nodes, got {type(G).__name__}"
            )
        if G.number_of_nodes() < 2:
            raise DyadsimError("a network needs at least an input node and an output node")
        for node in G.nodes:
            if not isinstance(node, (str, int)) or isinstance(node, bool):
                raise DyadsimError(
                    f"layer node names must be str or int, got {node!r} ({type(node).__name__})"
                )
        if not nx.is_directed_acyclic_graph(G):
            cycle = nx.find_cycle(G)
            path = " -> ".join(repr(e[0]) for e in cycle) + f" -> {cycle[0][0]!r}"
            raise DyadsimError(
                f"the layer graph has a cycle through node {cycle[0][0]!r} ({path}); "
                "a feedforward network must be acyclic"
            )
        sources = [v for v in G.nodes if G.in_degree(v) == 0]
        sinks = [v for v in G.nodes if G.out_degree(v) == 0]
        if len(sources) != 1:
            raise DyadsimError(
                f"the layer graph must have exactly one source (the input), found {len(sources)}: "
                f"{sorted(map(repr, sources))}"
            )
        if len(sinks) != 1:
            raise DyadsimError(
                f"the layer graph must have exactly one sink (the output), found {len(sinks)}: "
                f"{sorted(map(repr, sinks))}"
            )
        self.input = sources[0]
        self.output = sinks[0]
        self.loss: Loss = get_loss(loss)

        sizes = {}
        shapes = {}
        for v, attrs in G.nodes(data=True):
            size = attrs.get("size")
            shape = attrs.get("shape")
            if attrs.get("op") is not None and size is None and shape is None:
                continue  # a general node: its shape follows from its op and its inputs
            if shape is not None:
                try:
                    shape = tuple(int(d) for d in shape)
                except (TypeError, ValueError):
                    raise DyadsimError(f"node {v!r}: 'shape' must be a tuple of ints, got {shape!r}") from None
                if not shape or min(shape) < 1:
                    raise DyadsimError(f"node {v!r}: 'shape' must be positive ints, got {shape!r}")
                if size is None:
                    size = int(np.prod(shape))
                elif int(np.prod(shape)) != size:
                    raise DyadsimError(f"node {v!r}: 'size' {size} does not match 'shape' {shape}")
            if isinstance(size, (bool, np.bool_)) or not isinstance(size, (int, np.integer)) or size < 1:
                raise DyadsimError(f"node {v!r}: 'size' must be a positive int, got {size!r}")
            sizes[v] = int(size)
            shapes[v] = shape if shape is not None else (int(size),)
        self.sizes = sizes
        self.shapes = shapes

        act_in = G.nodes[self.input].get("activation")
        if act_in not in (None, "identity"):
            raise DyadsimError(
                f"input node {self.input!r} must not have an activation (got {act_in!r}): "
                "the input is clamped, not a neuron"
            )
        if G.nodes[self.input].get("bias") is not None and G.nodes[self.input].get("bias") is not False:
            raise DyadsimError(f"input node {self.input!r} must not have a bias")

        order = list(nx.lexicographical_topological_sort(G, key=str))
        assert order[0] == self.input
        node_ops = {}
        for v in order[1:]:
            attrs = G.nodes[v]
            if attrs.get("op") is None:
                continue
            if attrs.get("activation") not in (None, "identity"):
                raise DyadsimError(f"node {v!r} is a {attrs['op']} node: it takes no activation "
                                   f"(got {attrs['activation']!r}); add a node after it")
            if attrs.get("bias") is not None and attrs.get("bias") is not False:
                raise DyadsimError(f"node {v!r} is a {attrs['op']} node: it takes no bias")
            parents = sorted(G.predecessors(v), key=order.index)
            for p in parents:
                if set(G.edges[p, v]) - {"op"} or G.edges[p, v].get("op") not in (None, "node_input"):
                    raise DyadsimError(f"edge {p!r} -> {v!r}: the edges into {attrs['op']} node {v!r} carry "
                                       "no weight and no op")
            op = make_node_op(attrs, [shapes[p] for p in parents], v)
            n = int(np.prod(op.out_shape))
            if v in sizes and (sizes[v] != n or (len(shapes[v]) > 1 and shapes[v] != tuple(op.out_shape))):
                raise DyadsimError(f"node {v!r}: its {op.kind} gives shape {tuple(op.out_shape)} "
                                   f"({n} neurons), but 'size'/'shape' says {shapes[v]}")
            sizes[v], shapes[v] = n, tuple(op.out_shape)
            node_ops[v] = op
        self.node_ops: dict[Hashable, NodeOp] = node_ops
        # Longest paths from the input and to the output, in edges.  (networkx's
        # longest-path helpers read the edge attribute "weight" as a length, and ours is a
        # matrix, so count edges explicitly.)
        depth = {self.input: 0}
        for v in order[1:]:
            depth[v] = 1 + max(depth[p] for p in G.predecessors(v))
        rdepth = {self.output: 0}
        for v in reversed(order[:-1]):
            rdepth[v] = 1 + max(rdepth[c] for c in G.successors(v))
        self.depth = int(depth[self.output])

        params: dict = {}
        bias_mode: dict = {}
        activations = {}
        blocks = {}
        offset = 0
        for i, v in enumerate(order[1:]):
            attrs = G.nodes[v]
            if v in node_ops:
                act = _node_placeholder(v, node_ops[v])
                activations[v] = act
                blocks[v] = _Block(v, i, sizes[v], offset, act, depth[v], rdepth[v])
                offset += sizes[v]
                bias_mode[v] = None
                continue
            if "activation" not in attrs or attrs["activation"] is None:
                raise DyadsimError(f"node {v!r} has no 'activation'")
            act = get_activation(attrs["activation"])
            activations[v] = act
            blocks[v] = _Block(v, i, sizes[v], offset, act, depth[v], rdepth[v])
            offset += sizes[v]
            bias = attrs.get("bias")
            C = self.shapes[v][0]
            if bias is False:
                bias_mode[v] = None
            elif bias is None:
                bias_mode[v] = "full"
                params[("b", v)] = np.zeros(sizes[v])
            else:
                b = _as_float_array(bias, f"bias of node {v!r}")
                if b.shape == (sizes[v],):
                    bias_mode[v] = "full"
                elif len(self.shapes[v]) >= 2 and b.shape == (C,):
                    bias_mode[v] = "channel"  # one bias per channel, shared over positions
                else:
                    expect = f"({sizes[v]},)" + (f" or ({C},) (per channel)" if len(self.shapes[v]) >= 2 else "")
                    raise DyadsimError(f"bias of node {v!r} has shape {b.shape}, expected {expect}")
                _check_finite(b, f"bias of node {v!r}")
                params[("b", v)] = b
        edge_ops = {}
        for v in order[1:]:
            for p in sorted(G.predecessors(v), key=lambda q: order.index(q)):
                attrs = G.edges[p, v]
                if v in node_ops:
                    edge_ops[(p, v)] = _NodeInput(p, v, node_ops[v], sizes[p], sizes[v])
                    continue
                op = make_edge_op(attrs, self.shapes[p], sizes[v], f"{p!r} -> {v!r}")
                edge_ops[(p, v)] = op
                if not op.has_weight:
                    continue
                w = attrs.get("weight")
                if w is None:
                    raise DyadsimError(f"edge {p!r} -> {v!r} has no 'weight' array")
                W = _as_float_array(w, f"weight of edge {p!r} -> {v!r}")
                if W.shape != tuple(op.weight_shape):
                    if op.kind == "dense":
                        raise DyadsimError(
                            f"weight of edge {p!r} -> {v!r} has shape {W.shape}, expected "
                            f"({sizes[v]}, {sizes[p]}) = (size of {v!r}, size of {p!r})"
                        )
                    raise DyadsimError(
                        f"weight of {op.kind} edge {p!r} -> {v!r} has shape {W.shape}, expected {tuple(op.weight_shape)}"
                    )
                _check_finite(W, f"weight of edge {p!r} -> {v!r}")
                params[("W", p, v)] = W
        self.edge_ops = edge_ops
        self.bias_mode = bias_mode
        self.nodes = tuple(order[1:])
        self.activations = activations
        self.params = params
        self._blocks = blocks
        self._order = tuple(order)
        self.n = offset
        self.preds = {v: tuple(p for p in order if G.has_edge(p, v)) for v in order}
        self.succs = {v: tuple(c for c in order if G.has_edge(v, c)) for v in order}

    # ------------------------------------------------------------------ basic facts
    @property
    def n_in(self) -> int:
        """Width of the input x0."""
        return self.sizes[self.input]

    @property
    def n_out(self) -> int:
        """Width of the output a_L."""
        return self.sizes[self.output]

    @property
    def edges(self) -> tuple:
        """(src, dst) pairs, grouped by destination in topological order."""
        return tuple(self.edge_ops)

    @property
    def n_params(self) -> int:
        return int(sum(a.size for a in self.params.values()))

    def block(self, node) -> _Block:
        """Layout facts of one non-input node: offset, size, depth, activation."""
        try:
            return self._blocks[node]
        except KeyError:
            raise DyadsimError(f"no non-input layer node named {node!r}") from None

    def slice(self, node) -> slice:
        """The slice of the global state vector holding ``node``'s neurons."""
        return self.block(node).slice

    def edge_matrix(self, src, dst):
        """The linear map of edge src -> dst as a (size_dst, size_src) matrix acting on
        flattened activations (dense ndarray for dense edges; scipy.sparse for structured
        ones).  Use this, not ``params``, when every connection is needed (netlists)."""
        return self.edge_ops[(src, dst)].matrix(self.params.get(("W", src, dst)))

    def edge_forward(self, src, dst, a, dtype=None):
        """The contribution of edge src -> dst to dst's pre-activation, (B, n_src) -> (B, n_dst)."""
        W = self.params.get(("W", src, dst))
        if W is not None and dtype is not None:
            W = W.astype(dtype, copy=False)
        return self.edge_ops[(src, dst)].forward(W, a)

    def bias_vector(self, node, dtype=np.float64) -> np.ndarray:
        """The bias of every neuron of a node, (size,) (zeros for a node without bias)."""
        mode = self.bias_mode[node]
        if mode is None:
            return np.zeros(self.sizes[node], dtype=dtype)
        b = self.params[("b", node)].astype(dtype, copy=False)
        if mode == "channel":
            return np.repeat(b, self.sizes[node] // b.shape[0])
        return b

    def bias_grad(self, node, delta) -> np.ndarray:
        """sum_b dC/db of a node from delta (B, size), shaped like its bias parameter."""
        g = delta.sum(axis=0)
        if self.bias_mode[node] == "channel":
            return g.reshape(self.shapes[node][0], -1).sum(axis=1)
        return g

    def weight(self, src, dst) -> np.ndarray:
        return self.params[("W", src, dst)]

    def bias(self, node) -> np.ndarray:
        return self.params[("b", node)]

    def param_keys(self) -> list:
        return list(self.params)

    def __repr__(self) -> str:
        layers = ", ".join(f"{v!r}:{self.sizes[v]}" for v in self._order)
        return f"<Network L={self.depth} n={self.n} loss={self.loss.name} layers=[{layers}]>"

    def summary(self) -> str:
        """A human-readable description: layers, activations, edges, depth."""
        lines = [f"Network: depth L={self.depth}, {self.n} neurons, {self.n_params} parameters, loss={self.loss.name}"]
        lines.append(f"  input  {self.input!r}: {self.n_in}")
        for v in self.nodes:
            b = self._blocks[v]
            ins = ", ".join(repr(p) for p in self.preds[v])
            if v in self.node_ops:
                lines.append(f"  node   {v!r}: {b.size} {self.node_ops[v].kind} <- [{ins}]  (depth {b.depth})")
                continue
            lines.append(f"  layer  {v!r}: {b.size} {b.activation.name} <- [{ins}]  (depth {b.depth})")
        return "\n".join(lines)

    # ------------------------------------------------------------------ global system
    @property
    def W(self) -> sp.csr_matrix:
        """The global nilpotent weight matrix (n x n, sparse, strictly block-lower-triangular)."""
        blocks = []
        for (src, dst) in self.edges:
            if src == self.input:
                continue
            M = sp.coo_matrix(self.edge_matrix(src, dst))
            blocks.append((M.row + self._blocks[dst].offset, M.col + self._blocks[src].offset, M.data))
        if not blocks:
            return sp.csr_matrix((self.n, self.n))
        return sp.csr_matrix(
            (np.concatenate([b[2] for b in blocks]),
             (np.concatenate([b[0] for b in blocks]), np.concatenate([b[1] for b in blocks]))),
            shape=(self.n, self.n),
        )

    def beta(self, x0, dtype=np.float64) -> np.ndarray:
        """The drive beta(x0) = [W_in->v x0] + b: shape (n,) for 1-D x0, (B, n) for a batch."""
        X, single = self.check_x(x0)
        out = self._beta(X, dtype)
        return out[0] if single else out

    def _beta(self, X, dtype=np.float64) -> np.ndarray:
        """beta for an already validated (B, n_in) batch."""
        out = np.empty((X.shape[0], self.n), dtype=dtype)
        for v in self.nodes:
            sl = self._blocks[v].slice
            out[:, sl] = self.bias_vector(v)
            if self.input in self.preds[v] and v not in self.node_ops:
                out[:, sl] += self.edge_forward(self.input, v, X)
        return out

    # ------------------------------------------------------------------ input checks
    def check_x(self, x, name="x") -> tuple[np.ndarray, bool]:
        """Validate an input batch: returns (array (B, n_in), was_single_sample).

        Accepts (n_in,) or (B, n_in), and for an input node with a (C, H, W) shape also the
        shaped forms (C, H, W) and (B, C, H, W) (flattened row-major, as PyTorch does).
        """
        X = _as_float_array(x, f"input {name}")
        shape = self.shapes[self.input]
        single = X.ndim == 1
        if len(shape) > 1 and X.shape[-len(shape):] == shape and X.ndim in (len(shape), len(shape) + 1):
            single = X.ndim == len(shape)
            X = X.reshape((1 if single else X.shape[0], self.n_in))
        elif single:
            X = X[None, :]
        if X.ndim != 2 or X.shape[1] != self.n_in:
            shaped = f" or {shape} / (batch, *{shape})" if len(shape) > 1 else ""
            raise DyadsimError(
                f"input {name} has shape {np.shape(x)}, expected ({self.n_in},) or (batch, {self.n_in}){shaped} "
                f"for input node {self.input!r} of size {self.n_in}"
            )
        if X.shape[0] == 0:
            raise DyadsimError(f"input {name} is an empty batch")
        _check_finite(X, f"input {name}")
        return X, single

    def check_xy(self, x, y) -> tuple[np.ndarray, np.ndarray, bool]:
        """Validate an (input, target) pair: returns (X (B, n_in), Y (B, n_out), single)."""
        X, single = self.check_x(x)
        Y = _as_float_array(y, "target y")
        if Y.ndim == 1 and (single or X.shape[0] == 1):
            Y = Y[None, :]
        elif Y.ndim == 1 and Y.shape[0] == self.n_out:
            raise DyadsimError(
                f"target y is one sample of width {self.n_out} but x is a batch of {X.shape[0]}: "
                f"give y as (batch, {self.n_out})"
            )
        if Y.ndim != 2 or Y.shape[1] != self.n_out:
            raise DyadsimError(
                f"target y has shape {np.shape(y)}, expected ({self.n_out},) or (batch, {self.n_out}) "
                f"for output node {self.output!r} of size {self.n_out}"
            )
        if Y.shape[0] != X.shape[0]:
            raise DyadsimError(
                f"x and y have different batch sizes: {X.shape[0]} inputs, {Y.shape[0]} targets"
            )
        _check_finite(Y, "target y")
        return X, Y, single

    # ------------------------------------------------------------------ evaluation
    def edge_weights(self, dtype=None) -> dict:
        """Every edge's weight, ``{(src, dst): array or None}`` (``None`` for an edge without
        parameters, e.g. average pooling), cast to ``dtype`` when given (no copy when it
        already has that dtype)."""
        out = {}
        for (p, v) in self.edge_ops:
            W = self.params.get(("W", p, v))
            out[(p, v)] = W if W is None or dtype is None else W.astype(dtype, copy=False)
        return out

    def node_forward(self, node, acts, weights=None, *, slope=False):
        """One layer node of the forward pass: ``a_v = sigma_v(b_v + sum_p W_pv a_p)``.

        The one implementation of the forward pass: :meth:`propagate`, backprop and the
        wavefront relaxation all call it.

        Parameters
        ----------
        node : hashable
            A non-input layer node.
        acts : mapping
            ``{node: (B, size) array}`` holding the activations of every predecessor of
            ``node`` (the input included); their dtype is the dtype of the result.
        weights : mapping, optional
            ``{(src, dst): array}`` as :meth:`edge_weights` returns it (already cast);
            default: the network's parameters cast to the activations' dtype.
        slope : bool
            Also return ``sigma'(u)`` (for a general node: its linearisation point, what
            :meth:`node_delta` needs).

        Returns
        -------
        ndarray or (ndarray, ndarray)
            ``a_v`` (B, size), or ``(a_v, sigma'(u_v))`` with ``slope=True``.
        """
        preds = self.preds[node]
        first = acts[preds[0]]
        op = self.node_ops.get(node)
        if op is not None:
            out, ctx = op.forward([acts[p] for p in preds])
            return (out, ctx) if slope else out
        dtype = first.dtype
        u = np.empty((first.shape[0], self.sizes[node]), dtype=dtype)
        u[...] = self.bias_vector(node, dtype)
        for p in preds:
            if weights is None:
                W = self.params.get(("W", p, node))
                W = None if W is None else W.astype(dtype, copy=False)
            else:
                W = weights.get((p, node))
            u += self.edge_ops[(p, node)].forward(W, acts[p])
        act = self.activations[node]
        return act.value_and_slope(u) if slope else act.f(u)

    @property
    def general_nodes(self) -> tuple:
        """The nodes that carry a node op (e.g. max pooling), in topological order."""
        return tuple(v for v in self.nodes if v in self.node_ops)

    def require_standard(self, what: str) -> None:
        """Raise a :class:`~dyadsim.errors.DyadsimError` naming the first general node (and
        the first affine ``batchnorm`` edge) when ``what`` (an engine) cannot handle them.

        Parameters
        ----------
        what : str
            The engine or function, for the message.
        """
        for v in self.general_nodes:
            raise DyadsimError(
                f"{what} does not support general node {v!r} ({self.node_ops[v].kind}); it needs "
                "layer nodes that sum linear edges and apply an elementwise activation (use "
                "dyadsim.backprop, relax or relax_continuous with an explicit solver)")
        for (p, v), op in self.edge_ops.items():
            if op.kind == "batchnorm":
                raise DyadsimError(
                    f"{what} does not support the batchnorm edge {p!r} -> {v!r} (an affine map); "
                    "use dyadsim.backprop, relax or relax_continuous")

    def node_delta(self, node, slope, d):
        """What node ``node`` sends back to its parents, from its error signal ``d``:
        ``sigma'(u) * d`` (one array: each edge applies its W^T) for a layer node, a
        :class:`Pullback` ``{parent: J^T d}`` for a general node.

        Parameters
        ----------
        node : a non-input node
        slope : what :meth:`node_forward` returned with ``slope=True``
        d : ndarray, (B, size)

        Returns
        -------
        ndarray or Pullback
        """
        op = self.node_ops.get(node)
        if op is None:
            return slope * d
        return Pullback(zip(self.preds[node], op.vjp(slope, d)))

    def propagate(self, X, weights=None, *, slopes=False):
        """The forward pass of an already validated (B, n_in) batch, in ``X``'s dtype.

        Parameters
        ----------
        X : ndarray, (B, n_in)
            Inputs (see :meth:`check_x` for validation).
        weights : mapping, optional
            Weights as :meth:`edge_weights` gives them (default: the parameters, cast).
        slopes : bool
            Also return ``{node: sigma'(u)}``.

        Returns
        -------
        dict or (dict, dict)
            Activations ``{node: (B, size)}`` (the input included), and with
            ``slopes=True`` also the slopes of every non-input node.
        """
        if weights is None:
            weights = self.edge_weights(X.dtype)
        acts = {self.input: X}
        slope = {}
        for v in self.nodes:
            if slopes:
                acts[v], slope[v] = self.node_forward(v, acts, weights, slope=True)
            else:
                acts[v] = self.node_forward(v, acts, weights)
        return (acts, slope) if slopes else acts

    def forward(self, x, dtype=np.float64) -> dict:
        """Activations ``{node: (B, size)}`` of the forward pass (the input included)."""
        X, _ = self.check_x(x)
        return self.propagate(X.astype(dtype, copy=False))

    def predict(self, x) -> np.ndarray:
        """The output a_L for x (same leading shape as x)."""
        X, single = self.check_x(x)
        out = self.propagate(X)[self.output]
        return out[0] if single else out

    def loss_value(self, x, y) -> float:
        """The batch loss: mean over samples of C(a_L, y)."""
        X, Y, _ = self.check_xy(x, y)
        aL = self.propagate(X)[self.output]
        return float(np.mean(self.loss.value(aL, Y)))

    # ------------------------------------------------------------------ graph I/O
    def to_graph(self) -> nx.DiGraph:
        """A new networkx DiGraph describing this network (arrays are copies)."""
        G = nx.DiGraph()
        G.add_node(self.input, **self._node_attrs(self.input))
        for v in self.nodes:
            attrs = self._node_attrs(v)
            if v in self.node_ops:
                attrs.update(self.node_ops[v].to_dict())
                G.add_node(v, **attrs)
                continue
            attrs["activation"] = self.activations[v].name
            attrs["bias"] = self.params[("b", v)].copy() if self.bias_mode[v] else False
            G.add_node(v, **attrs)
        for (s, d) in self.edges:
            attrs = self._edge_attrs(s, d)
            if ("W", s, d) in self.params:
                attrs["weight"] = self.params[("W", s, d)].copy()
            G.add_edge(s, d, **attrs)
        return G

    def _node_attrs(self, v) -> dict:
        attrs = {"size": self.sizes[v]}
        if len(self.shapes[v]) > 1:
            attrs["shape"] = tuple(self.shapes[v])
        return attrs

    def _edge_attrs(self, s, d) -> dict:
        op = self.edge_ops[(s, d)]
        desc = op.to_dict()
        if desc["op"] == "dense":
            return {}
        if desc["op"] == "node_input":
            return {}
        out = {"op": desc["op"]}
        for k in ("stride", "padding", "kernel_size", "dilation", "output_size"):
            if k in desc and not (desc["op"] == "conv2d" and k == "kernel_size"):
                out[k] = tuple(desc[k])
        for k in ("groups", "offset", "eps"):
            if k in desc:
                out[k] = desc[k]
        if desc["op"] == "batchnorm":
            out["mean"], out["var"] = op.mean.copy(), op.var.copy()
        return out

    def _unsavable(self):
        """What the network file format (version 1) cannot store, or None."""
        for v in self.general_nodes:
            return f"node {v!r} is a {self.node_ops[v].kind} node"
        for (s, d), op in self.edge_ops.items():
            if op.kind not in ("dense", "conv2d", "avgpool2d"):
                return f"edge {s!r} -> {d!r} is a {op.kind} edge"
            if op.kind == "conv2d" and (op.dilation != (1, 1) or op.groups != 1 or len(op.padding) != 2):
                return f"conv2d edge {s!r} -> {d!r} has dilation, groups or asymmetric padding"
        for v in self.nodes:
            if self.activations[v].name not in ("tanh", "sigmoid", "relu", "softplus", "identity"):
                return f"node {v!r} has activation {self.activations[v].name!r}"
        return None

    def copy(self) -> "Network":
        return Network.from_graph(self.to_graph(), loss=self.loss.name)

    def save(self, path) -> Path:
        """Save to one portable ``.npz`` file (arrays plus a JSON graph description).

        Parameters
        ----------
        path
            The file; ``.npz`` is appended when it has another suffix or none.  The write is
            atomic: an interrupted save leaves the old file (if any) as it was.

        Returns
        -------
        pathlib.Path
            Where the network was written.
        """
        if not isinstance(path, (str, PathLike)):
            raise DyadsimError(f"path must be a str or a path, got {type(path).__name__}")
        why = self._unsavable()
        if why is not None:
            raise DyadsimError(
                f"save: {why}, which the network file format (version {_FORMAT_VERSION}) cannot "
                "store yet; keep the model it came from (from_torch) or the graph (to_graph)")
        path = Path(path)
        if path.suffix != ".npz":
            path = path.with_suffix(path.suffix + ".npz") if path.suffix else path.with_suffix(".npz")
        nodes = list(self._order)
        desc = {
            "format": _FORMAT,
            "version": _FORMAT_VERSION,
            "loss": self.loss.name,
            "nodes": [
                {"name": v, "size": self.sizes[v], "shape": list(self.shapes[v]),
                 "activation": None if v == self.input else self.activations[v].name,
                 "bias": v != self.input and self.bias_mode[v] is not None}
                for v in nodes
            ],
            "edges": [[nodes.index(s), nodes.index(d), self._edge_attrs(s, d)] for (s, d) in self.edges],
        }
        arrays = {"__graph__": np.array(json.dumps(desc))}
        for k, (s, d) in enumerate(self.edges):
            if ("W", s, d) in self.params:
                arrays[f"W{k}"] = self.params[("W", s, d)]
        for v in self.nodes:
            if self.bias_mode[v] is not None:
                arrays[f"b{nodes.index(v)}"] = self.params[("b", v)]
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(path, "wb") as fh:
            np.savez(fh, **arrays)
        return path


@checked_call
def load(path: str | PathLike, *, limits: dict | None = None) -> Network:
    """Load a network saved with :meth:`Network.save`.

    The file is untrusted input.  Before anything is decompressed or allocated, the zip
    directory, the member names, the JSON graph description and every array's ``.npy``
    header (dtype, shape) are checked against each other and against :data:`LOAD_LIMITS`;
    no pickle is ever loaded.

    Parameters
    ----------
    path
        The ``.npz`` file.
    limits
        Overrides of :data:`LOAD_LIMITS` (e.g. ``{"neurons": 10**8}`` for a bigger network).

    Returns
    -------
    Network

    Raises
    ------
    DyadsimError
        Naming the file and the problem: not a network file (empty, truncated, corrupt,
        another format), a member that is missing, unexpected or of the wrong shape or
        dtype, a graph description that is malformed or over a limit.
    """
    from ._load import read_network_file

    return read_network_file(path, limits)



def _raiser(v, kind):
    def f(u):
        raise DyadsimError(f"node {v!r} is a {kind} node (a general node), not a layer with an "
                           "elementwise activation: this engine does not support it")
    return f


def _node_placeholder(v, op) -> Activation:
    """The ``activations`` entry of a general node: named after its op; calling it raises."""
    f = _raiser(v, op.kind)
    return Activation(op.kind, f, f, f)


class _NodeInput:
    """The op of an edge into a general node: no weight, no linear map of its own (the
    node's op combines its inputs); any engine that treats it as a linear edge gets an error
    naming the node."""

    kind = "node_input"
    has_weight = False

    def __init__(self, src, dst, op, n_src, n_dst):
        self.src, self.dst, self.node_op = src, dst, op
        self.n_src, self.n_dst = n_src, n_dst
        self.weight_shape = (1,)

    def _refuse(self, *args):
        raise DyadsimError(
            f"edge {self.src!r} -> {self.dst!r} feeds {self.node_op.kind} node {self.dst!r}, a general "
            "node with no linear map per edge: this engine does not support it")

    forward = backward = matrix = _refuse

    def weight_grad(self, W, delta, a):
        return None

    def to_dict(self) -> dict:
        return {"op": self.kind}
