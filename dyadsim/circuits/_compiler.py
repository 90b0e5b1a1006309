"""Network -> circuit IR -> ngspice netlist (THEORY.md section 6).

Per neuron j of layer v (and per sample b when several samples share a netlist):

* two state nodes ``x``, ``z``, each with a capacitor ``cap`` and a resistor ``1/g`` to
  ground and one behavioural current source.  Since ``-m - d/2 = -x`` and
  ``-m + d/2 = -z``, the saddle flow of THEORY.md section 2 is, node by node,

      cap dV(x)/dt = g [ sigma(V(u)) + (V(r) + c)/2 - V(x) ]
      cap dV(z)/dt = g [ sigma(V(u)) - (V(r) + c)/2 - V(z) ]

  (tau = cap/g), with ``c = gain * dC/da_L`` on the output layer only;
* ``m = (V(x) + V(z))/2`` as a behavioural voltage source;
* the pre-activation ``u = sum_p W_pv m_p + b_v`` as a summing node: one linear VCCS
  (G element, gm = g*W) per weight into a node with conductance g to ground, the bias as
  a current source g*b;
* the backward signal ``s = sigma'(V(u)) * (V(x) - V(z))`` as a behavioural voltage source;
* the backward sum ``r = sum_c W_vc^T s_c`` as a second summing node (G elements).

Inputs x0 and targets y are voltage sources.  Every error signal is scaled by ``gain``
(d in the circuit = gain * dC/da) and divided out at readout.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from ..errors import DyadsimError
from ._ir import Analysis, Call, Circuit, Kind, Num, Param, Volt
from ._writer import NgspiceNetlister

__all__ = ["compile_netlist", "Netlist", "DEFAULT_OPTIONS", "layer_identifier", "layer_identifiers",
           "node_name", "target_node", "GAIN_NODE", "TAU_NODE"]

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
    """``{layer: identifier}`` for every layer of a network (deterministic)."""
    taken: set = {"y", GAIN_NODE, TAU_NODE}
    return {v: layer_identifier(v, taken) for v in (net.input,) + net.nodes}


def describe_network(net, ids, n_samples) -> list:
    """Header lines naming a network's layers, edges, loss and depth (for netlist headers)."""
    sizes = " -> ".join(f"{ids[v]}({net.sizes[v]}{'' if v == net.input else ', ' + net.activations[v].name})"
                        for v in (net.input,) + net.nodes)
    return [
        f"network: {sizes}",
        "edges: " + ", ".join(f"{ids[s]}->{ids[d]}" for s, d in net.edges),
        f"loss: {net.loss.name}; depth L = {net.depth}; samples in this netlist: {n_samples}",
    ]


def node_name(kind: str, layer_id: str, i: int, b: int = 0, n_samples: int = 1) -> str:
    """Name of node ``kind`` (x, z, m, u, s, r, in) of neuron i of a layer, sample b."""
    return f"{kind}_{layer_id}_{i}" + (f"_b{b}" if n_samples > 1 else "")


def target_node(i: int, b: int = 0, n_samples: int = 1) -> str:
    return f"y_{i}" + (f"_b{b}" if n_samples > 1 else "")


GAIN_NODE = "gain_ref"
TAU_NODE = "tau_ref"


def _sigma(act: str, u):
    if act == "tanh":
        return Call("tanh", (u,))
    if act == "sigmoid":
        return Num(1.0) / (Num(1.0) + Call("exp", (-u,)))
    if act == "relu":
        return Call("ramp", (u,))
    if act == "softplus":  # stable: max(u,0) + ln(1 + exp(-|u|))
        return Call("ramp", (u,)) + Call("ln", (Num(1.0) + Call("exp", (-Call("abs", (u,)),)),))
    if act == "identity":
        return u
    raise DyadsimError(f"no circuit for activation {act!r}")


def _dsigma(act: str, u):
    if act == "tanh":
        t = Call("tanh", (u,))
        return Num(1.0) - t * t
    if act in ("sigmoid", "softplus"):
        s = Num(1.0) / (Num(1.0) + Call("exp", (-u,)))
        return s * (Num(1.0) - s) if act == "sigmoid" else s
    if act == "relu":
        return Call("step", (u,))
    if act == "identity":
        return Num(1.0)
    raise DyadsimError(f"no circuit for activation {act!r}")


@dataclass
class Netlist:
    """A compiled netlist: ``text``, ``write(path)``, and where every neuron lives.

    ``node_map[(sample, layer, i)] = (x_node, z_node)`` for every stacked neuron;
    ``aux_map[(sample, layer, i)] = {"m": ..., "u": ..., "s": ..., "r": ...}``;
    ``input_nodes[(sample, i)]``, ``target_nodes[(sample, i)]``.
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

    @property
    def n_samples(self) -> int:
        return self.x.shape[0]

    def nodes_of(self, layer, i, sample=0):
        """(x_node, z_node) of neuron i of a layer."""
        return self.node_map[(sample, layer, i)]

    def write(self, path) -> Path:
        """Write the netlist text to ``path`` (a file name chosen by the caller; it never
        enters the netlist)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.text)
        self.path = path
        return path

    def __str__(self) -> str:
        return self.text


def compile_netlist(net, x, y, *, analysis="op", gain=1.0, tau=1e-6, g=1e-3, t_stop=None,
                    t_step=None, max_step=None, options=None, title=None, summing="G") -> Netlist:
    """Compile a network and a batch (x, y) into an ngspice netlist.

    Parameters
    ----------
    analysis : ``"op"`` (the steady state: the fast path to gradients) or ``"tran"`` (the
        relaxation from x = z = 0).
    gain : scale of the injected cost current; error voltages are ``gain * dC/da``.
    tau : time constant C/g in seconds; ``g`` is the transconductance scale in siemens.
    t_stop, t_step, max_step : transient settings in units of tau (defaults: 6L + 30,
        0.05 and 0.05).
    options : extra/overriding ``.options`` (merged into :data:`DEFAULT_OPTIONS`).
    summing : how the weighted sums u and r are built: ``"G"`` (default) one linear VCCS per
        weight into a summing node with conductance g to ground; ``"B"`` one behavioural
        voltage source per node whose expression holds the whole sum.  ``G`` is the faster
        one for ngspice (a B expression with K terms costs ~K^2 per Newton step; measured in
        ``benchmarks/bench_spice.py``).
    A batch of B samples gives one netlist holding B independent copies of the circuit.
    """
    t0 = time.perf_counter()
    if summing not in ("G", "B"):
        raise DyadsimError(f"unknown summing {summing!r}; valid: G, B")
    if analysis not in ("op", "tran"):
        raise DyadsimError(f"unknown analysis {analysis!r}; valid analyses: op, tran")
    for nm, val in (("gain", gain), ("tau", tau), ("g", g)):
        if not (isinstance(val, (int, float)) and np.isfinite(val) and val > 0):
            raise DyadsimError(f"{nm} must be a positive finite number, got {val!r}")
    X, Y, _ = net.check_xy(x, y)
    B = X.shape[0]
    L = net.depth
    ids = layer_identifiers(net)

    def nm(kind, v, i, b):
        return node_name(kind, ids[v], i, b, B)

    c = Circuit(title=title or f"DBP circuit: {L}-deep network, {net.n} neurons, "
                               f"{B} sample(s), analysis {analysis}")
    c.header = [
        "Dyadic Backpropagation as a circuit (generated by dyadsim; do not edit by hand).",
        *describe_network(net, ids, B),
        "per neuron: state nodes x_*, z_* (activation m = (x+z)/2, error d = (x-z)/gain),",
        "  aux nodes m_* (mean), u_* (pre-activation), s_* (sigma'(u)*(x-z)), r_* (W^T s).",
        "cap dV(x)/dt = g*(sigma(u) + (r + c)/2 - V(x)),  cap dV(z)/dt = g*(sigma(u) - (r + c)/2 - V(z)),",
        "  c = gain * dC/da_L on the output layer (0 elsewhere); tau = cap/g.",
        "steady state (.op): the forward pass and the backprop errors; gradients are read out",
        "  as dC/dW_pv = mean_b sigma'(u_v)*d_v m_p^T with d = (V(x)-V(z))/gain.",
    ]
    c.params = {"g": float(g), "tau": float(tau), "cap": Param("tau") * Param("g"),
                "gain": float(gain)}
    gP, gainP = Param("g"), Param("gain")
    # every connection of every edge (conv kernels repeat their shared weight here)
    fwd = {e: sp.csr_matrix(net.edge_matrix(*e)) for e in net.edges}
    bwd = {e: sp.csc_matrix(net.edge_matrix(*e)) for e in net.edges}
    ref = c.section("reference: the cost gain as a voltage, so a readout needs only the node voltages")
    ref.add(Kind.V, "gain", (GAIN_NODE, "0"), gainP, "V(gain_ref) = gain, V(tau_ref) = tau (in seconds)")
    ref.add(Kind.V, "tau", (TAU_NODE, "0"), Param("tau"), "V(gain_ref) = gain, V(tau_ref) = tau (in seconds)")
    node_map, aux_map, in_nodes, tgt_nodes = {}, {}, {}, {}

    for b in range(B):
        sfx = f" (sample {b})" if B > 1 else ""
        sec = c.section(f"inputs x0 and targets y{sfx}")
        for i in range(net.n_in):
            n = nm("in", net.input, i, b)
            in_nodes[(b, i)] = n
            sec.add(Kind.V, f"{n}", (n, "0"), float(X[b, i]), "input voltages (clamped)")
        for i in range(net.n_out):
            n = target_node(i, b, B)
            tgt_nodes[(b, i)] = n
            sec.add(Kind.V, n, (n, "0"), float(Y[b, i]), "target voltages")
        for v in net.nodes:
            act = net.activations[v].name
            size = net.sizes[v]
            sec = c.section(f"layer {ids[v]}: {size} {act} neurons, inputs from "
                            + ", ".join(ids[p] for p in net.preds[v]) + sfx)
            bias = net.bias_vector(v)
            is_out = v == net.output
            for i in range(size):
                xn, zn = nm("x", v, i, b), nm("z", v, i, b)
                mn, un, sn, rn = (nm(k, v, i, b) for k in ("m", "u", "s", "r"))
                node_map[(b, v, i)] = (xn, zn)
                aux_map[(b, v, i)] = {"m": mn, "u": un, "s": sn, "r": rn}
                # pre-activation summing node u = sum W m + b
                if summing == "G":
                    cm = f"neuron {ids[v]}[{i}]: u = sum_p W m_p + b (VCCS g*W per weight, 1/g to ground)"
                    sec.add(Kind.R, f"{un}", (un, "0"), Num(1.0) / gP, cm)
                    if bias[i] != 0.0:
                        sec.add(Kind.I, f"b_{un}", ("0", un), gP * float(bias[i]), cm)
                    for p in net.preds[v]:
                        for k, w in _row(fwd[(p, v)], i):
                            src = in_nodes[(b, k)] if p == net.input else nm("m", p, k, b)
                            sec.add(Kind.G, f"{un}_{ids[p]}_{k}", ("0", un, src, "0"), gP * w, cm)
                    cr = f"neuron {ids[v]}[{i}]: r = sum_c W_c^T s_c (backward sum)"
                    sec.add(Kind.R, f"{rn}", (rn, "0"), Num(1.0) / gP, cr)
                    for ch in net.succs[v]:
                        for j, w in _col(bwd[(v, ch)], i):
                            sec.add(Kind.G, f"{rn}_{ids[ch]}_{j}", ("0", rn, nm("s", ch, j, b), "0"),
                                    gP * w, cr)
                else:
                    cm = f"neuron {ids[v]}[{i}]: u = sum_p W m_p + b, r = sum_c W_c^T s_c (B sums)"
                    expr = Num(float(bias[i]))
                    for p in net.preds[v]:
                        for k, w in _row(fwd[(p, v)], i):
                            src = in_nodes[(b, k)] if p == net.input else nm("m", p, k, b)
                            expr = expr + Num(w) * Volt(src)
                    sec.add(Kind.BV, un, (un, "0"), expr, cm)
                    expr = Num(0.0)
                    for ch in net.succs[v]:
                        for j, w in _col(bwd[(v, ch)], i):
                            expr = expr + Num(w) * Volt(nm("s", ch, j, b))
                    sec.add(Kind.BV, rn, (rn, "0"), expr, cm)
                u = Volt(un)
                # m, s
                sec.add(Kind.BV, mn, (mn, "0"), Num(0.5) * (Volt(xn) + Volt(zn)),
                        f"neuron {ids[v]}[{i}]: m = (x+z)/2, s = {act}'(u) * (x - z)")
                sec.add(Kind.BV, sn, (sn, "0"), _dsigma(act, u) * (Volt(xn) - Volt(zn)),
                        f"neuron {ids[v]}[{i}]: m = (x+z)/2, s = {act}'(u) * (x - z)")
                # state nodes
                half = Volt(rn)
                if is_out:
                    half = half + gainP * _cost_grad_expr(net, i, b, B, nm, tgt_nodes)
                cs = f"neuron {ids[v]}[{i}]: state pair x, z (RC to ground, tau = cap/g)"
                drive = _sigma(act, u)
                sec.add(Kind.C, f"{xn}", (xn, "0"), Param("cap"), cs)
                sec.add(Kind.R, f"{xn}", (xn, "0"), Num(1.0) / gP, cs)
                sec.add(Kind.BI, f"{xn}", ("0", xn), gP * (drive + Num(0.5) * half), cs)
                sec.add(Kind.C, f"{zn}", (zn, "0"), Param("cap"), cs)
                sec.add(Kind.R, f"{zn}", (zn, "0"), Num(1.0) / gP, cs)
                sec.add(Kind.BI, f"{zn}", ("0", zn), gP * (drive - Num(0.5) * half), cs)

    set_analysis(c, analysis, net.depth, tau, node_map, t_stop, t_step, max_step,
                 dict(DEFAULT_OPTIONS), options)
    writer = NgspiceNetlister()
    writer.write(c)
    text = writer.stream.getvalue()
    nl = Netlist(text, c, net, X, Y, analysis, float(gain), float(g), float(tau), node_map,
                 aux_map, ids, in_nodes, tgt_nodes)
    nl.stats = c.stats()
    nl.compile_time = time.perf_counter() - t0
    return nl


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


def _row(M, i):
    """(column, value) of the nonzeros of row i of a CSR matrix."""
    lo, hi = M.indptr[i], M.indptr[i + 1]
    return zip(M.indices[lo:hi].tolist(), M.data[lo:hi].tolist())


def _col(M, j):
    """(row, value) of the nonzeros of column j of a CSC matrix."""
    lo, hi = M.indptr[j], M.indptr[j + 1]
    return zip(M.indices[lo:hi].tolist(), M.data[lo:hi].tolist())


def _cost_grad_expr(net, i, b, B, nm, tgt_nodes):
    """dC/da_L[i] as an expression of the output means and the target voltages."""
    out = net.output
    m = [Volt(nm("m", out, k, b)) for k in range(net.n_out)]
    yv = [Volt(tgt_nodes[(b, k)]) for k in range(net.n_out)]
    if net.loss.name == "mse":
        return m[i] - yv[i]
    if net.loss.name == "xent":
        # softmax(m)_i * sum(y) - y_i, shifted by m_i for range: p_i = 1/sum_k exp(m_k - m_i)
        denom = Call("exp", (m[0] - m[i],)) if i != 0 else Num(1.0)
        for k in range(1, net.n_out):
            denom = denom + (Call("exp", (m[k] - m[i],)) if k != i else Num(1.0))
        ysum = yv[0]
        for k in range(1, net.n_out):
            ysum = ysum + yv[k]
        return (Num(1.0) / denom) * ysum - yv[i]
    raise DyadsimError(f"no circuit for loss {net.loss.name!r}")
