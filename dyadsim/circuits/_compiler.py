"""Network -> circuit IR -> ngspice netlist (docs/theory.md, section 6).

Per neuron j of layer v (and per sample b when several samples share a netlist):

* two state nodes ``x``, ``z``, each with a capacitor ``cap`` and a resistor ``1/g`` to
  ground and one behavioural current source.  Since ``-m - d/2 = -x`` and
  ``-m + d/2 = -z``, the saddle flow of docs/theory.md, section 2 is, node by node,

      cap dV(x)/dt = g [ sigma(V(u)) + (V(r) + c)/2 - V(x) ]
      cap dV(z)/dt = g [ sigma(V(u)) - (V(r) + c)/2 - V(z) ]

  (tau = cap/g), with ``c = gain * dC/da_L`` on the output layer only;
* ``m = (V(x) + V(z))/2`` as a behavioural voltage source;
* the pre-activation ``u = sum_p W_pv m_p + b_v`` as a summing node: one linear VCCS
  (G element, gm = g*W) per weight into a node with conductance g to ground, the bias as
  a current source g*b;
* the backward signal ``s = sigma'(V(u)) * (V(x) - V(z))`` as a behavioural voltage source;
* the backward sum ``r = sum_c W_vc^T s_c`` as a second summing node (G elements).

General nodes (docs/theory.md, section 8): identity edges (residual sums, concatenation)
are linear edges with a fixed 0/1 matrix, so they become G elements like any weight; a
batchnorm edge is affine, its linear part a diagonal matrix (one G element per neuron,
gm = g gamma / sqrt(var + eps)) and its constant -gamma mean / sqrt(var + eps) part of the
destination's bias current; a max pooling neuron's ``u`` is a behavioural ``max`` over its
window's means (the drive itself, no activation), ``s = x - z``, and each member of the
window adds ``g * s * [it is the window's first maximum]`` to its backward sum ``r`` (a
winner-take-all routing built from exact comparisons ``u(a - b)``).

Inputs x0 and targets y are voltage sources.  Every error signal is scaled by ``gain``
(d in the circuit = gain * dC/da) and divided out at readout.
"""

from __future__ import annotations

import time

import numpy as np
import scipy.sparse as sp

from .._validate import checked_call
from ..errors import DyadsimError
from ._gains import gain_param, stage_gains
from ._ir import Call, Circuit, Kind, Num, Param, Volt
from ._setup import (  # noqa: F401  (the names this module had before _setup)
    DEFAULT_OPTIONS, GAIN_NODE, TAU_NODE, TRAN_OPTIONS, Netlist, add_references, add_sources,
    check_analysis, describe_network, finish, layer_identifier, layer_identifiers, node_name,
    set_analysis, start, target_node,
)
from ._writer import NgspiceNetlister

__all__ = ["compile_netlist"]


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


@checked_call
def compile_netlist(net, x, y, *, analysis="op", gain=1.0, tau=1e-6, g=1e-3, t_stop=None,
                    t_step=None, max_step=None, options=None, title=None, summing="G") -> Netlist:
    """Compile a network and a batch (x, y) into an ngspice netlist.

    A batch of B samples gives one netlist holding B independent copies of the circuit.
    Networks may hold identity edges, batchnorm edges and max pooling nodes (see the module
    docstring); layers need the activations tanh, sigmoid, relu, softplus or identity and
    the loss mse or xent.  Anything else is refused with a
    :class:`~dyadsim.errors.DyadsimError` naming the layer.  Max pooling is exact where each
    window's maximum is unique; on an exact tie the circuit's rounding of m picks the winner.

    Parameters
    ----------
    net : Network
        The network.
    x, y : array_like
        The batch: inputs (B, n_in) and targets (B, n_out) (or one sample).
    analysis : str
        ``"op"`` (the steady state: the fast path to gradients) or ``"tran"`` (the
        relaxation from x = z = 0).
    gain : float, ``"auto"``, mapping ``{layer: float}`` or sequence
        Scale of the error voltages.  A number: one gain for the whole circuit, error
        voltages ``gain * dC/da``.  ``"auto"``: gain staging, one power-of-ten gain per
        layer chosen from a float64 backprop pass of this batch so that every layer's
        largest error voltage lies in :data:`~dyadsim.circuits.GAIN_TARGET` (0.1 to 1 V);
        the backward couplings then carry the ratio of neighbouring gains and the readout
        divides by each layer's gain (``.param gain_<layer>``, nodes ``gain_ref_<layer>``).
        Per-layer gains can also be given (one per non-input layer).  Refused: gains
        outside :data:`~dyadsim.circuits.GAIN_LIMITS`, and any whose error voltages exceed
        :data:`~dyadsim.circuits.MAX_ERROR_VOLTAGE` (ngspice stops converging).
    tau, g : float
        Time constant C/g in seconds; ``g`` is the transconductance scale in siemens.
    t_stop, t_step, max_step : float, optional
        Transient settings in units of tau (defaults: 6L + 30, 0.05 and 0.05).
    options : dict, optional
        Extra/overriding ``.options`` (merged into :data:`DEFAULT_OPTIONS`).
    title : str, optional
        The netlist's title line.
    summing : str
        How the weighted sums u and r are built: ``"G"`` (default) one linear VCCS per
        weight into a summing node with conductance g to ground; ``"B"`` one behavioural
        voltage source per node whose expression holds the whole sum.  ``G`` is the faster
        one for ngspice (a B expression with K terms costs ~K^2 per Newton step; measured in
        ``benchmarks/bench_spice.py``).

    Returns
    -------
    Netlist
    """
    t0 = time.perf_counter()
    if summing not in ("G", "B"):
        raise DyadsimError(f"unknown summing {summing!r}; valid: G, B")
    check_analysis(analysis)
    for nm, val in (("tau", tau), ("g", g)):
        if not (isinstance(val, (int, float)) and np.isfinite(val) and val > 0):
            raise DyadsimError(f"{nm} must be a positive finite number, got {val!r}")
    fr = start(net, x, y, t0, node_ops=CIRCUIT_NODE_OPS, affine=True)
    for v in net.nodes:
        if v not in net.node_ops and net.activations[v].name not in CIRCUIT_ACTIVATIONS:
            raise DyadsimError(
                f"compile_netlist: layer {v!r} has activation {net.activations[v].name!r}, which has "
                f"no circuit (circuits exist for {', '.join(CIRCUIT_ACTIVATIONS)})")
    gains = stage_gains(net, fr.X, fr.Y, gain)
    X, Y, B, L, ids, nm = fr.X, fr.Y, fr.B, net.depth, fr.ids, fr.nm
    node_map, aux_map, in_nodes, tgt_nodes = fr.node_map, fr.aux_map, fr.in_nodes, fr.tgt_nodes
    gen = net.node_ops

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
    if gen:
        c.header += [
            "max pooling neurons: u = max of the window's m (the drive, in place of sigma(u)),",
            "  s = x - z, and each window member's r gets s times [it is the window's first",
            "  maximum] (a winner-take-all routing of the error, as backprop's argmax).",
        ]
    c.params = {"g": float(g), "tau": float(tau), "cap": Param("tau") * Param("g")}
    if gains.staged:
        # one gain per layer: error voltage x - z = gain_v dC/da_v; the backward couplings
        # c -> v carry gain_v / gain_c; the cost injection the output's gain
        c.header += [
            "gain staging: one gain per layer, .param gain_<layer>; x - z = gain_<layer> * dC/da",
            "  on every layer, W^T transconductances c -> v scaled by gain_v/gain_c, the cost",
            "  injected with the output layer's gain, d read out as (V(x)-V(z))/V(gain_ref_<layer>).",
        ]
        for v in net.nodes:
            c.params[gain_param(ids[v])] = gains[v]
        c.params["gain"] = Param(gain_param(ids[net.output]))
        gainP = Param(gain_param(ids[net.output]))

        def ratio(v, ch):
            return Param(gain_param(ids[v])) / Param(gain_param(ids[ch]))
    else:
        c.params["gain"] = float(gain)
        gainP = Param("gain")
        ratio = None
    gP = Param("g")
    # every connection of every linear edge (conv kernels repeat their shared weight here);
    # batchnorm edges are affine: their linear part is a diagonal matrix (G elements) and
    # their constant -gamma mean / sqrt(var + eps) joins the destination's bias current
    lin = [e for e in net.edges if e[1] not in gen]
    fwd = {e: sp.csr_matrix(net.edge_matrix(*e)) for e in lin}
    bwd = {e: sp.csc_matrix(net.edge_matrix(*e)) for e in lin}
    offset = {v: np.zeros(net.sizes[v]) for v in net.nodes if v not in gen}
    for (p, v) in lin:
        if net.edge_ops[(p, v)].kind == "batchnorm":
            offset[v] += net.edge_forward(p, v, np.zeros((1, net.sizes[p])))[0]
    # windows of the max pooling nodes: the members of each (padding left out), and for
    # each parent neuron the windows it belongs to
    windows, member_of = {}, {}
    for v in net.general_nodes:
        op = gen[v]
        windows[v] = [[int(k) for k in row if k < op.n_src] for row in op.idx]
        inv: dict = {}
        for j, ks in enumerate(windows[v]):
            for pos, k in enumerate(ks):
                inv.setdefault(k, []).append((j, pos))
        member_of[v] = inv
    add_references(c, [ids[v] for v in net.nodes] if gains.staged else ())

    for b in range(B):
        sfx = f" (sample {b})" if B > 1 else ""
        add_sources(c.section(f"inputs x0 and targets y{sfx}"), fr, b)

        def mean_node(p, k):
            return in_nodes[(b, k)] if p == net.input else nm("m", p, k, b)

        for v in net.nodes:
            act = net.activations[v].name
            size = net.sizes[v]
            what = f"{gen[v].kind} neurons" if v in gen else f"{act} neurons"
            sec = c.section(f"layer {ids[v]}: {size} {what}, inputs from "
                            + ", ".join(ids[p] for p in net.preds[v]) + sfx)
            bias = None if v in gen else net.bias_vector(v) + offset[v]
            is_out = v == net.output
            for i in range(size):
                xn, zn = nm("x", v, i, b), nm("z", v, i, b)
                mn, un, sn, rn = (nm(k, v, i, b) for k in ("m", "u", "s", "r"))
                node_map[(b, v, i)] = (xn, zn)
                aux_map[(b, v, i)] = {"m": mn, "u": un, "s": sn, "r": rn}
                if v in gen:  # max pooling: u = the window's maximum, the drive itself
                    (p,) = net.preds[v]
                    ks = windows[v][i]
                    expr = Volt(mean_node(p, ks[-1]))
                    for k in reversed(ks[:-1]):
                        expr = Call("max", (Volt(mean_node(p, k)), expr))
                    sec.add(Kind.BV, un, (un, "0"), expr,
                            f"neuron {ids[v]}[{i}]: u = max of its window's m (max pooling)")
                # pre-activation summing node u = sum W m + b
                elif summing == "G":
                    cm = f"neuron {ids[v]}[{i}]: u = sum_p W m_p + b (VCCS g*W per weight, 1/g to ground)"
                    sec.add(Kind.R, f"{un}", (un, "0"), Num(1.0) / gP, cm)
                    if bias[i] != 0.0:
                        sec.add(Kind.I, f"b_{un}", ("0", un), gP * float(bias[i]), cm)
                    for p in net.preds[v]:
                        for k, w in _row(fwd[(p, v)], i):
                            sec.add(Kind.G, f"{un}_{ids[p]}_{k}", ("0", un, mean_node(p, k), "0"), gP * w, cm)
                else:
                    expr = Num(float(bias[i]))
                    for p in net.preds[v]:
                        for k, w in _row(fwd[(p, v)], i):
                            expr = expr + Num(w) * Volt(mean_node(p, k))
                    sec.add(Kind.BV, un, (un, "0"), expr,
                            f"neuron {ids[v]}[{i}]: u = sum_p W m_p + b, r = sum_c W_c^T s_c (B sums)")
                # backward sum r = sum_c J_c^T s_c: linear children through their weights,
                # max pooling children through the winner of each window holding this neuron
                routed = []
                for ch in net.succs[v]:
                    if ch in gen:
                        for j, pos in member_of[ch].get(i, ()):
                            ks = windows[ch][j]
                            sj = Volt(nm("s", ch, j, b)) if ratio is None else ratio(v, ch) * Volt(nm("s", ch, j, b))
                            routed.append(sj * _winner(Volt(mean_node(v, i)), [Volt(mean_node(v, k)) for k in ks], pos))
                if summing == "G":
                    cr = f"neuron {ids[v]}[{i}]: r = sum_c W_c^T s_c (backward sum)"
                    sec.add(Kind.R, f"{rn}", (rn, "0"), Num(1.0) / gP, cr)
                    for ch in net.succs[v]:
                        if ch in gen:
                            continue
                        for j, w in _col(bwd[(v, ch)], i):
                            gm = gP * w if ratio is None else gP * w * ratio(v, ch)
                            sec.add(Kind.G, f"{rn}_{ids[ch]}_{j}", ("0", rn, nm("s", ch, j, b), "0"),
                                    gm, cr)
                    for q, term in enumerate(routed):
                        sec.add(Kind.BI, f"{rn}_w{q}", ("0", rn), gP * term,
                                f"neuron {ids[v]}[{i}]: r += s of a max pooling window it wins")
                else:
                    expr = Num(0.0)
                    for ch in net.succs[v]:
                        if ch in gen:
                            continue
                        for j, w in _col(bwd[(v, ch)], i):
                            wt = Num(w) if ratio is None else Num(w) * ratio(v, ch)
                            expr = expr + wt * Volt(nm("s", ch, j, b))
                    for term in routed:
                        expr = expr + term
                    sec.add(Kind.BV, rn, (rn, "0"), expr,
                            f"neuron {ids[v]}[{i}]: r = sum_c J_c^T s_c (B sum)")
                u = Volt(un)
                # m, s
                slope = Num(1.0) if v in gen else _dsigma(act, u)
                cms = f"neuron {ids[v]}[{i}]: m = (x+z)/2, s = " + ("x - z" if v in gen else f"{act}'(u) * (x - z)")
                sec.add(Kind.BV, mn, (mn, "0"), Num(0.5) * (Volt(xn) + Volt(zn)), cms)
                sec.add(Kind.BV, sn, (sn, "0"),
                        (Volt(xn) - Volt(zn)) if v in gen else slope * (Volt(xn) - Volt(zn)), cms)
                # state nodes
                half = Volt(rn)
                if is_out:
                    half = half + gainP * _cost_grad_expr(net, i, b, B, nm, tgt_nodes)
                cs = f"neuron {ids[v]}[{i}]: state pair x, z (RC to ground, tau = cap/g)"
                drive = u if v in gen else _sigma(act, u)
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
    return finish(c, fr, writer.stream.getvalue(), analysis, gains, g, tau)


#: activations with a circuit (the behavioural dialect)
CIRCUIT_ACTIVATIONS = ("tanh", "sigmoid", "relu", "softplus", "identity")
#: general node ops with a circuit (the behavioural dialect)
CIRCUIT_NODE_OPS = ("maxpool2d",)


def _winner(mine, members, pos):
    """1 when ``members[pos]`` (= ``mine``) is the first maximum of ``members``, else 0:
    strictly above every earlier member and not below any later one (backprop's
    tie-break), from exact comparisons (ngspice's ``u()``: 1 for a positive argument)."""
    ind = None
    for q, other in enumerate(members):
        if q == pos:
            continue
        term = Call("step", (mine - other,)) if q < pos else Num(1.0) - Call("step", (other - mine,))
        ind = term if ind is None else ind * term
    return Num(1.0) if ind is None else ind


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
