"""A sampled chip's values placed into a behavioural netlist (one transform of the IR).

:func:`place_values` takes a netlist compiled from the chip's network by
:func:`~dyadsim.compile_netlist` (``summing="G"``) and the chip's per-element values
(:meth:`dyadsim.Chip.values`) and returns the netlist of that chip:

* every forward weight VCCS into a summing node u gets the chip's forward weight, every
  backward one into r the chip's backward weight (a weight that is zero in the network but
  not on the chip, e.g. the off device's mismatch, gets an element);
* the state drives become ``g (ga sigma(u) + o_x + (r + c)/2)`` and
  ``g (ga sigma(u) + o_z - (r + c)/2)`` (activation-unit gain, node offsets);
* the backward signal becomes ``s = gd sigma'(u) (x - z)`` (derivative-unit gain);
* each state capacitor becomes ``cap * tau_j`` (per-neuron time constant).

A value that is nominal (gain 1, offset 0, tau 1, the network's weight) leaves its
element as the compiler wrote it, so an ideal chip's netlist text is the network's.
"""

from __future__ import annotations

from dataclasses import replace

from ..errors import DyadsimError
from ._compiler import _cost_grad_expr, _dsigma, _sigma, compile_netlist
from ._ir import Element, Kind, Num, Param, Volt
from ._setup import node_name
from ._writer import write_circuit

__all__ = ["place_values", "compile_chip_netlist"]

_KEYS = ("forward", "backward", "bias", "activation_gain", "derivative_gain", "offset_x",
         "offset_z", "tau", "gain")


def place_values(netlist, values):
    """The netlist of a chip: its per-element values placed into a compiled netlist.

    Parameters
    ----------
    netlist : Netlist
        Compiled by :func:`~dyadsim.compile_netlist` (behavioural, ``summing="G"``) from
        the chip's network, with ``gain`` equal to the chip's.
    values : dict
        :meth:`dyadsim.Chip.values`: ``forward``/``backward`` weights per edge,
        ``activation_gain``, ``derivative_gain``, ``offset_x``, ``offset_z``, ``tau`` per
        layer, ``bias`` and ``gain``.

    Returns
    -------
    Netlist
        A new netlist (same node maps), its text written again.

    Raises
    ------
    DyadsimError
        Missing values, values of the wrong shape, another gain, or a netlist that is not
        a behavioural ``summing="G"`` one of this network.
    """
    net = netlist.net
    missing = [k for k in _KEYS if k not in values]
    if missing:
        raise DyadsimError(f"chip values lack {', '.join(missing)}")
    if float(values["gain"]) != float(netlist.gain):
        raise DyadsimError(f"the netlist was compiled with gain {netlist.gain:g}, the chip has "
                           f"gain {float(values['gain']):g}: compile with the chip's gain")
    for kind in ("forward", "backward"):
        for e, W in values[kind].items():
            if e not in net.edge_ops or W.shape != (net.sizes[e[1]], net.sizes[e[0]]):
                raise DyadsimError(f"chip {kind} weight of edge {e!r} does not fit the netlist's network")
    for kind in ("activation_gain", "derivative_gain", "offset_x", "offset_z", "tau", "bias"):
        for v in net.nodes:
            if v not in values[kind] or values[kind][v].shape != (net.sizes[v],):
                raise DyadsimError(f"chip {kind} of layer {v!r} does not fit the netlist's network")
    for v in net.nodes:
        if any(values["bias"][v] != net.bias_vector(v)):
            raise DyadsimError("the chip's biases differ from the netlist's network: compile the "
                               "netlist from the chip's network")
    ids, B = netlist.layer_ids, netlist.n_samples
    gP, gainP = Param("g"), Param("gain")

    def nm(kind, v, i, b):
        return node_name(kind, ids[v], i, b, B)

    where = {}  # node or element name -> (role, b, v, i)
    for (b, v, i), aux in netlist.aux_map.items():
        xn, zn = netlist.node_map[(b, v, i)]
        # the forward weights follow the bias source where there is one, as compiled
        if net.bias_vector(v)[i] != 0.0:
            where[("I", "b_" + aux["u"])] = ("u", b, v, i)
        else:
            where[("R", aux["u"])] = ("u", b, v, i)
        where[("R", aux["r"])] = ("r", b, v, i)
        where[("BI", xn)] = ("x", b, v, i)
        where[("BI", zn)] = ("z", b, v, i)
        where[("BV", aux["s"])] = ("s", b, v, i)
        where[("C", xn)] = ("cx", b, v, i)
        where[("C", zn)] = ("cz", b, v, i)
    sums = {aux[k] for aux in netlist.aux_map.values() for k in ("u", "r")}
    found = set()
    Wf, Wb = values["forward"], values["backward"]

    def fn(el):
        if el.kind is Kind.G and len(el.nodes) == 4 and el.nodes[1] in sums:
            return []  # a weight: rewritten after its summing node's resistor
        role = where.get((el.kind.name, el.name))
        if role is None:
            return [el]
        what, b, v, i = role
        found.add(what)
        if what == "u":
            un = netlist.aux_map[(b, v, i)]["u"]
            out = [el]
            for p in net.preds[v]:
                row = Wf[(p, v)][i]
                for k in range(net.sizes[p]):
                    if row[k] != 0.0:
                        src = netlist.input_nodes[(b, k)] if p == net.input else nm("m", p, k, b)
                        out.append(Element(Kind.G, f"{un}_{ids[p]}_{k}", ("0", un, src, "0"),
                                           gP * float(row[k]), el.comment))
            return out
        if what == "r":
            out = [el]
            for c in net.succs[v]:
                col = Wb[(v, c)][:, i]
                for j in range(net.sizes[c]):
                    if col[j] != 0.0:
                        out.append(Element(Kind.G, f"{el.name}_{ids[c]}_{j}",
                                           ("0", el.name, nm("s", c, j, b), "0"),
                                           gP * float(col[j]), el.comment))
            return out
        act = net.activations[v].name
        if what in ("x", "z"):
            ga = float(values["activation_gain"][v][i])
            off = float(values["offset_x" if what == "x" else "offset_z"][v][i])
            if ga == 1.0 and off == 0.0:
                return [el]
            drive = _sigma(act, Volt(nm("u", v, i, b)))
            if ga != 1.0:
                drive = Num(ga) * drive
            if off != 0.0:
                drive = drive + Num(off)
            half = Volt(nm("r", v, i, b))
            if v == net.output:
                half = half + gainP * _cost_grad_expr(net, i, b, B, nm, netlist.target_nodes)
            val = gP * (drive + Num(0.5) * half) if what == "x" else gP * (drive - Num(0.5) * half)
            return [replace(el, value=val)]
        if what == "s":
            gd = float(values["derivative_gain"][v][i])
            if gd == 1.0:
                return [el]
            xn, zn = netlist.node_map[(b, v, i)]
            val = Num(gd) * _dsigma(act, Volt(nm("u", v, i, b))) * (Volt(xn) - Volt(zn))
            return [replace(el, value=val)]
        t = float(values["tau"][v][i])  # a state capacitor
        return [el] if t == 1.0 else [replace(el, value=Param("cap") * Num(t))]

    from ._transforms import map_elements

    circuit = map_elements(netlist.circuit, fn)
    if "u" not in found or "x" not in found:
        raise DyadsimError("chip values go into a behavioural netlist compiled with summing='G' "
                           "(compile_netlist(..., summing='G')); this netlist has no summing "
                           "resistors or state drives of its network")
    text = write_circuit(circuit)
    stats = circuit.stats()
    stats.update({k: v for k, v in netlist.stats.items() if k not in stats})
    stats["chip"] = True
    return replace(netlist, text=text, circuit=circuit, path=None, stats=stats)




def compile_chip_netlist(net, values, x, y, **compile_options):
    """Compile ``net`` and place a chip's values into it (:func:`place_values`).

    Parameters
    ----------
    net : Network
        The chip's network.
    values : dict
        :meth:`dyadsim.Chip.values`.
    x, y : array_like
        The batch.
    **compile_options
        Options of :func:`~dyadsim.compile_netlist` (``analysis``, ``tau``, ...); ``gain``
        is the chip's and ``summing`` must be ``"G"``.

    Returns
    -------
    Netlist
    """
    if "gain" in compile_options and float(compile_options["gain"]) != float(values["gain"]):
        raise DyadsimError(f"gain {compile_options['gain']!r} differs from the chip's gain "
                           f"{values['gain']:g} (a chip's cost gain is part of the chip)")
    if compile_options.get("summing", "G") != "G":
        raise DyadsimError("a chip's netlist is built with summing='G' (one VCCS per device)")
    compile_options = {k: v for k, v in compile_options.items() if k != "gain"}
    nl = compile_netlist(net, x, y, gain=float(values["gain"]), **compile_options)
    return place_values(nl, values)
