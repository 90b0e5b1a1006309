"""Device-level netlist dialect: crossbars, op-amps and bipolar transistors (docs/device_circuit.md).

The behavioural compiler (:mod:`._compiler`) states each neuron's equations as nonlinear
controlled sources.  This dialect builds the same steady state from devices a hardware
designer would use:

* **weights**: resistor crossbars.  A signed weight is a pair of conductances
  ``G+ - G- = w / R_unit``; ``G+`` comes from the *inverted* copy of the source voltage and
  ``G-`` from the source voltage itself, both into the virtual-ground node of an op-amp
  transimpedance stage (an inverting summer), so the stage's output is ``+sum w v``.
  Every neuron's activation m (and, backwards, s) therefore exists twice: ``m`` and
  ``mb = -m``.  ``g_offset`` adds the same baseline conductance to both halves, like a
  differential memristor pair.
* **amplifiers**: op-amps as high-gain voltage-controlled voltage sources (``E``); finite
  gain and an input offset are options (:class:`OpAmp`).
* **tanh**: a bipolar differential pair (``Q`` elements, ngspice's Gummel-Poon model) with a
  PNP current-mirror load and a tail current ``I_tail``:  ``I_c1 - I_c2 = I_tail *
  tanh(V_d / 2V_T)``.  Two matched resistive dividers to a common-mode rail give
  ``V_d = 2 V_T * u`` (V_T = kT/q at the simulated temperature), and a transimpedance
  stage with ``R_T = 1 V / I_tail`` turns the mirror's output current into
  ``V(sgb) = -tanh(u)``.
* **the product sigma'(u) * d**: the one behavioural block, an ideal four-quadrant
  multiplier (AD633 / Gilbert-cell stand-in) computing ``s = (V(x) - V(z)) * (1 - V(sgb)^2)``
  from the *device-made* tanh.  Identity neurons use an op-amp difference amplifier instead.
* **state pair**: each of x and z is an op-amp leaky integrator (``R_unit || C`` feedback,
  ``tau = R_unit C``) summing ``sigma(u)`` with weight 1 and the backward sum ``r`` (and, on
  the output layer, the cost ``gain * (m - y)``) with weight +-1/2.

Node names of x, z, u, inputs, targets and the gain/tau reference sources are those of the
behavioural dialect, so :func:`dyadsim.readout` reads either.  Supported: ``tanh`` and
``identity`` activations, the ``mse`` loss.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from .._validate import checked_call
from ..errors import DyadsimError
from ._ir import (  # noqa: F401  (the names this module had before _ir held them)
    BOLTZMANN, CELSIUS_TO_KELVIN, CHARGE, IDEAL_OPAMP_GAIN, MAX_GAIN_TIMES_OFFSET,
    OFFSET_OPAMP_GAIN, OPAMP_PREFIX, WEIGHT_PREFIX, DeviceCircuit, DeviceKind, Kind, NoiseSource,
    Num, Param, Transistor, Volt, _check_number, is_opamp, is_weight, thermal_voltage,
)
from ._gains import gain_param, stage_gains
from ._setup import (
    DEFAULT_OPTIONS, Netlist, add_references, add_sources, check_analysis, describe_network,
    check_nodes, finish, set_analysis, start,
)
from ._transforms import add_opamp_offsets, copy_circuit  # noqa: F401
from ._writer import DeviceNetlister, format_number, write_circuit  # noqa: F401

__all__ = ["compile_device_netlist", "OpAmp", "BJTModel", "DEVICE_ACTIVATIONS"]

DEVICE_ACTIVATIONS = ("tanh", "identity")

#: ngspice puts ``gmin`` (default 1e-12 S) across every pn junction: a leakage that alone
#: limits the ideal-device readout to ~5e-7 relative error (measured; docs/device_circuit.md).
#: 1e-15 takes it below the 5e-9 floor of the rest; smaller values (1e-18) gain nothing and
#: make Newton fail more often (a transistor that switches off leaves a node with ~gmin only).
DEVICE_OPTIONS = {"gmin": 1e-15}

#: rails (volts): PNP mirror supply, common mode of the pair's bases, tail current sink
V_CC, V_CM, V_EE = 2.5, -1.0, -3.0


# --------------------------------------------------------------------------- device options
@dataclass(frozen=True)
class OpAmp:
    """Every op-amp of a device netlist: open-loop ``gain`` (``inf``: ideal, written as
    :data:`IDEAL_OPAMP_GAIN`) and the same input ``offset`` voltage in volts (a systematic
    offset; random per-amplifier offsets are :class:`~dyadsim.circuits.AmplifierNonideal`).
    With an offset the gain must be finite in practice: ``inf`` then means
    :data:`OFFSET_OPAMP_GAIN` and ``gain * |offset|`` is limited to
    :data:`MAX_GAIN_TIMES_OFFSET` (numerical resolution, see there).

    Parameters
    ----------
    gain : float
        Open-loop gain, >= 1 (``inf``: ideal).
    offset : float
        Input offset voltage in volts, within +-1 V.

    Raises
    ------
    DyadsimError
        A gain below 1, an offset beyond 1 V, or a gain-offset product ngspice cannot resolve.
    """

    gain: float = math.inf
    offset: float = 0.0

    def __post_init__(self):
        g = _check_number("op-amp gain", self.gain, positive=True, allow_inf=True)
        if g < 1:
            raise DyadsimError(f"op-amp gain must be >= 1, got {g!r}")
        _check_number("op-amp offset", self.offset)
        if abs(self.offset) > 1.0:
            raise DyadsimError(f"op-amp offset must be within +-1 V, got {self.offset!r}")
        if self.spice_gain * abs(self.offset) > MAX_GAIN_TIMES_OFFSET:
            raise DyadsimError(
                f"op-amp gain {g:g} with offset {self.offset:g} V: gain * |offset| must stay below "
                f"{MAX_GAIN_TIMES_OFFSET:g} for ngspice to resolve the output (see OFFSET_OPAMP_GAIN)")

    @property
    def spice_gain(self) -> float:
        """The E element's gain: the given one, or for ``inf`` :data:`IDEAL_OPAMP_GAIN`
        (:data:`OFFSET_OPAMP_GAIN` when there is an offset)."""
        if math.isinf(self.gain):
            if self.offset == 0:
                return IDEAL_OPAMP_GAIN
            return min(OFFSET_OPAMP_GAIN, MAX_GAIN_TIMES_OFFSET / abs(self.offset))
        return float(self.gain)


@dataclass(frozen=True)
class BJTModel:
    """Gummel-Poon parameters of every transistor (NPN pair, PNP mirror).

    The default approaches an ideal exponential device: saturation current ``is_``, huge
    forward beta, no Early effect (``vaf=inf``), no series resistances, no high-injection
    knee.  :meth:`realistic` is a small-signal discrete-transistor-like set.

    Parameters
    ----------
    is_ : float
        Saturation current (A), > 0.
    bf, br : float
        Forward and reverse beta, > 0.
    nf : float
        Forward emission coefficient, > 0.
    vaf : float
        Forward Early voltage (V), > 0 (``inf``: no Early effect).
    ikf : float
        High-injection knee current (A), > 0 (``inf``: none).
    rb, re, rc : float
        Base, emitter and collector series resistances (ohms), >= 0.
    """

    is_: float = 1e-16
    bf: float = 1e9
    br: float = 1.0
    nf: float = 1.0
    vaf: float = math.inf
    ikf: float = math.inf
    rb: float = 0.0
    re: float = 0.0
    rc: float = 0.0

    def __post_init__(self):
        for name in ("is_", "bf", "br", "nf"):
            _check_number(f"BJT {name}", getattr(self, name), positive=True)
        for name in ("vaf", "ikf"):
            _check_number(f"BJT {name}", getattr(self, name), positive=True, allow_inf=True)
        for name in ("rb", "re", "rc"):
            _check_number(f"BJT {name}", getattr(self, name), nonneg=True)

    @classmethod
    def ideal(cls) -> "BJTModel":
        return cls()

    @classmethod
    def realistic(cls) -> "BJTModel":
        """beta 100, Early voltage 50 V, 100 ohm base, 1 ohm emitter, 10 ohm collector
        resistance, knee current 10 mA (a generic small-signal transistor)."""
        return cls(is_=1e-16, bf=100.0, br=1.0, vaf=50.0, ikf=10e-3, rb=100.0, re=1.0, rc=10.0)

    def card(self) -> dict:
        """``.model`` parameters (infinite ones are ngspice's defaults and left out)."""
        out = {"is": self.is_, "bf": self.bf, "br": self.br, "nf": self.nf}
        for name in ("vaf", "ikf"):
            if math.isfinite(getattr(self, name)):
                out[name] = getattr(self, name)
        for name in ("rb", "re", "rc"):
            if getattr(self, name) > 0:
                out[name] = getattr(self, name)
        return out


# --------------------------------------------------------------------------- compiler
def _edge_entries(M):
    """(rows, cols, vals) of the nonzero entries of a dense or scipy.sparse edge matrix."""
    if sp.issparse(M):
        coo = sp.coo_matrix(M)
        keep = coo.data != 0
        return coo.row[keep], coo.col[keep], np.asarray(coo.data[keep], dtype=np.float64)
    A = np.asarray(M, dtype=np.float64)
    r, c = np.nonzero(A)
    return r, c, A[r, c]


class _Builder:
    """Adds the stages of one device circuit to sections (internal)."""

    def __init__(self, circuit, r_unit, opamp_gain, g_offset):
        self.c = circuit
        self.R = r_unit
        self.A = opamp_gain
        self.g_offset = g_offset

    def res(self, sec, name, a, b, ohms, comment):
        sec.add(Kind.R, name, (a, b), float(ohms), comment)

    def opamp(self, sec, out, vneg, vpos="0", comment=""):
        """E element: V(out) = A * (V(vpos) - V(vneg))."""
        sec.add(Kind.E, OPAMP_PREFIX + out, (out, "0", vpos, vneg), float(self.A), comment)

    def inverter(self, sec, out, inp, comment):
        vg = "v" + out
        self.res(sec, "i_" + out, inp, vg, self.R, comment)
        self.res(sec, "f_" + out, out, vg, self.R, comment)
        self.opamp(sec, out, vg, comment=comment)

    def crossbar(self, sec, out, vg, terms, comment, prefix=WEIGHT_PREFIX):
        """Weighted inputs into virtual ground ``vg`` of the stage whose output is ``out``:
        terms are (w, positive_source, negative_source); out = sum w * V(positive)."""
        g0 = self.g_offset
        for w, pos, neg in terms:
            gp = g0 + max(w, 0.0)  # in units of 1/R_unit, from the inverted source
            gn = g0 + max(-w, 0.0)  # from the source itself
            if gp > 0:
                self.res(sec, f"{prefix}{out}_{neg}", neg, vg, self.R / gp, comment)
            if gn > 0:
                self.res(sec, f"{prefix}{out}_{pos}", pos, vg, self.R / gn, comment)


@checked_call
def compile_device_netlist(net, x, y, *, analysis="op", gain=1.0, tau=1e-6, r_unit=10e3,
                           opamp=None, bjt=None, i_tail=100e-6, r_divider=100.0, g_offset=0.0,
                           temp=27.0, t_stop=None, t_step=None, max_step=None, options=None,
                           title=None) -> Netlist:
    """Compile a network and a batch (x, y) into a device-level ngspice netlist.

    Returns the same :class:`~dyadsim.circuits.Netlist` as
    :func:`~dyadsim.compile_netlist`, so :func:`dyadsim.readout` works on its results.

    Parameters
    ----------
    net : Network
        tanh/identity layers with the mse loss (what the device neuron implements).
    x : array_like, (n_in,) or (B, n_in)
        Inputs (voltage sources).
    y : array_like, (n_out,) or (B, n_out)
        Targets (voltage sources).
    analysis : ``"op"`` or ``"tran"`` (relaxation from x = z = 0).
    gain : float, ``"auto"``, mapping or sequence
        Cost gain; error voltages are ``gain * dC/da``.  ``"auto"`` (or per-layer gains)
        stages one gain per layer as in :func:`~dyadsim.compile_netlist`; in this dialect
        the ratio of neighbouring gains is folded into the backward crossbar's
        conductances (``gain_v / gain_c * W^T``) and the cost resistors use the output
        layer's gain.
    tau : time constant ``R_unit * C`` of the x/z integrators, seconds.
    r_unit : the unit resistance (ohms): weight w is the conductance ``|w| / r_unit``.
    opamp : OpAmp, optional
        The op-amps (default ideal).
    bjt : BJTModel, optional
        The transistors (default near-ideal).
    i_tail : tail current of every differential pair (amperes); the transimpedance is
        ``1 V / i_tail``.
    r_divider : the lower resistor of the input dividers (ohms); it sets their source
        resistance, and so the error the base currents cause at finite beta.
    g_offset : baseline conductance (units of ``1/r_unit``) added to both halves of every
        weight pair (``0``: only the nonzero half exists).
    temp : simulation temperature in Celsius (sets V_T; ``tnom`` is set equal).
    t_stop, t_step, max_step, options, title : as in :func:`~dyadsim.compile_netlist`.

    Returns
    -------
    Netlist
        The netlist text with its node map, statistics and gains.
    """
    t0 = time.perf_counter()
    opamp = OpAmp() if opamp is None else opamp
    bjt = BJTModel() if bjt is None else bjt
    if not isinstance(opamp, OpAmp):
        raise DyadsimError(f"opamp must be an OpAmp, got {type(opamp).__name__}")
    if not isinstance(bjt, BJTModel):
        raise DyadsimError(f"bjt must be a BJTModel, got {type(bjt).__name__}")
    check_analysis(analysis)
    for nm_, val in (("tau", tau), ("r_unit", r_unit), ("i_tail", i_tail),
                     ("r_divider", r_divider)):
        _check_number(nm_, val, positive=True)
    g_offset = _check_number("g_offset", g_offset, nonneg=True)
    temp = _check_number("temp", temp)
    if not -200.0 < temp < 500.0:
        raise DyadsimError(f"temp must be a temperature in Celsius within (-200, 500), got {temp!r}")
    check_nodes(net, "compile_device_netlist")
    if net.loss.name != "mse":
        raise DyadsimError(
            f"the device dialect supports the mse loss only (got {net.loss.name!r}); "
            "use the behavioural compile_netlist for xent")
    for v in net.nodes:
        act = net.activations[v].name
        if act not in DEVICE_ACTIVATIONS:
            raise DyadsimError(
                f"layer {v!r} has activation {act!r}: the device dialect builds "
                f"{' and '.join(DEVICE_ACTIVATIONS)} neurons only; use the behavioural compile_netlist")
    fr = start(net, x, y, t0, what="compile_device_netlist")
    gains = stage_gains(net, fr.X, fr.Y, gain)
    X, Y, B, L, ids, nm = fr.X, fr.Y, fr.B, net.depth, fr.ids, fr.nm
    node_map, aux_map, in_nodes, tgt_nodes = fr.node_map, fr.aux_map, fr.in_nodes, fr.tgt_nodes
    R = float(r_unit)
    g_out = gains[net.output]  # the cost gain
    vt = thermal_voltage(temp)
    k_div = 2.0 * vt  # divider ratio: V_d = 2 V_T * u (u in volts)
    r_a = r_divider * (1.0 - k_div) / k_div
    r_t = 1.0 / i_tail  # transimpedance: 1 V per I_tail
    cap = tau / R
    # Newton's first guess: the ideal circuit's operating point, from the digital
    # forward and backward passes (a mismatched circuit starts next to its answer)
    nominal = _nominal_voltages(net, X, Y, gains, k_div, vt, bjt, i_tail)

    c = DeviceCircuit(title=title or f"DBP device-level circuit: {L}-deep network, {net.n} "
                                     f"neurons, {B} sample(s), analysis {analysis}")
    c.header = [
        "Dyadic Backpropagation, device-level dialect (generated by dyadsim; do not edit by hand).",
        *describe_network(net, ids, B),
        f"unit resistance {format_number(R)} ohm: weight w = conductance |w|/R_unit from the inverted (w>0)",
        "  or the plain (w<0) copy of the source voltage into an op-amp virtual ground (inverting summer).",
        f"tanh: NPN differential pair, PNP mirror load, I_tail = {format_number(i_tail)} A, dividers",
        f"  V_d = 2 V_T u with V_T = {format_number(vt)} V (temp {format_number(temp)} C);",
        "  V(sgb) = -tanh(u) from a transimpedance stage R_T = 1 V / I_tail.",
        "s = (V(x) - V(z)) * (1 - V(sgb)^2): behavioural multiplier B-source (the only one).",
        "x, z: op-amp leaky integrators, tau = R_unit * C; steady state = backprop (see docs/device_circuit.md).",
    ]
    c.params = {"g": 1.0 / R, "tau": float(tau), "cap": float(cap), "gain": float(g_out)}
    if gains.staged:
        c.header += [
            "gain staging: one gain per layer, .param gain_<layer>; x - z = gain_<layer> * dC/da;",
            "  the backward crossbar c -> v holds the conductances of gain_v/gain_c * W^T, the",
            "  cost resistors use the output layer's gain, d read out as (V(x)-V(z))/V(gain_ref_<layer>).",
        ]
        c.params.update({gain_param(ids[v]): gains[v] for v in net.nodes})
    c.models = {"qn": ("npn", bjt.card()), "qp": ("pnp", bjt.card())}
    bld = _Builder(c, R, opamp.spice_gain, g_offset)

    add_references(c, [ids[v] for v in net.nodes] if gains.staged else ())
    rails = c.section("supply and bias rails")
    rc = "rails: +-1 V references (biases), mirror supply, pair common mode, tail sink"
    rails.add(Kind.V, "refp", ("vrefp", "0"), 1.0, rc)
    rails.add(Kind.V, "refn", ("vrefn", "0"), -1.0, rc)
    rails.add(Kind.V, "cc", ("vcc", "0"), V_CC, rc)
    rails.add(Kind.V, "cm", ("vcm", "0"), V_CM, rc)
    rails.add(Kind.V, "ee", ("vee", "0"), V_EE, rc)

    # nonzero entries of every edge: forward by destination row, backward by source column
    fwd = {v: {i: [] for i in range(net.sizes[v])} for v in net.nodes}
    bwd = {v: {i: [] for i in range(net.sizes[v])} for v in net.nodes}
    for (p, v) in net.edges:
        rows, cols, vals = _edge_entries(net.edge_matrix(p, v))
        for i, k, w in zip(rows.tolist(), cols.tolist(), vals.tolist()):
            fwd[v][i].append((p, k, w))
            if p != net.input:  # staged: the error scale changes from gain_v to gain_p
                bwd[p][k].append((v, i, w if not gains.staged else w * (gains[p] / gains[v])))
    has_bwd_in = {v: any(p != net.input for p in net.preds[v]) for v in net.nodes}

    def pos_neg(p, k, b, kind="m"):
        """(plain, inverted) voltage nodes of neuron k of layer p."""
        if p == net.input:
            return in_nodes[(b, k)], "inb" + in_nodes[(b, k)][2:]
        return nm(kind, p, k, b), nm(kind + "b", p, k, b)

    for b in range(B):
        sfx = f" (sample {b})" if B > 1 else ""
        sec = c.section(f"inputs x0, targets y and their inverted copies{sfx}")
        add_sources(
            sec, fr, b,
            on_input=lambda n: bld.inverter(sec, "inb" + n[2:], n,
                                            "inverted input copy inb = -in (unity inverter)"),
            on_target=lambda n: bld.inverter(sec, "yb" + n[1:], n,
                                             "inverted target copy yb = -y (unity inverter)"))
        for v in net.nodes:
            act = net.activations[v].name
            size = net.sizes[v]
            is_out = v == net.output
            bias = net.bias_vector(v)
            for i in range(size):
                sec = c.section(f"neuron {ids[v]}[{i}] ({act}), inputs from "
                                + ", ".join(ids[p] for p in net.preds[v]) + sfx)
                n = {k: nm(k, v, i, b) for k in ("x", "z", "u", "m", "mb", "sgb", "s", "sb", "r", "rb")}
                node_map[(b, v, i)] = (n["x"], n["z"])
                aux_map[(b, v, i)] = {k: n[k] for k in ("m", "mb", "u", "sgb", "s", "sb", "r", "rb")}
                # forward crossbar -> u
                cm = "u = sum_p W m_p + b: crossbar into the virtual ground of an inverting summer"
                vu = "v" + n["u"]
                terms = [(w, *pos_neg(p, k, b)) for (p, k, w) in fwd[v][i]]
                bld.crossbar(sec, n["u"], vu, terms, cm)
                if bias[i] != 0.0:  # from the -1 V (b > 0) or +1 V (b < 0) reference
                    bld.crossbar(sec, n["u"], vu, [(float(bias[i]), "vrefp", "vrefn")], cm,
                                 prefix="bias_")
                bld.res(sec, "f_" + n["u"], n["u"], vu, R, cm)
                bld.opamp(sec, n["u"], vu, comment=cm)
                # m and mb
                cm = "mb = -(x+z)/2 (inverting summer), m = -mb (unity inverter)"
                vmb = "v" + n["mb"]
                bld.res(sec, "i_" + n["mb"] + "_x", n["x"], vmb, 2 * R, cm)
                bld.res(sec, "i_" + n["mb"] + "_z", n["z"], vmb, 2 * R, cm)
                bld.res(sec, "f_" + n["mb"], n["mb"], vmb, R, cm)
                bld.opamp(sec, n["mb"], vmb, comment=cm)
                bld.inverter(sec, n["m"], n["mb"], cm)
                # nonlinearity -> sgb = -sigma(u)
                if act == "tanh":
                    _tanh_stage(sec, n, nm, v, i, b, r_a, r_divider, r_t, i_tail, bld)
                else:
                    bld.inverter(sec, n["sgb"], n["u"], "identity: sgb = -u (unity inverter)")
                # s = sigma'(u) (x - z) and sb = -s, only if someone reads them
                if has_bwd_in[v]:
                    if act == "tanh":
                        sec.add(Kind.BV, n["s"], (n["s"], "0"),
                                (Volt(n["x"]) - Volt(n["z"])) * (Num(1.0) - Volt(n["sgb"]) * Volt(n["sgb"])),
                                "s = (x - z)(1 - sgb^2): ideal four-quadrant multiplier (the one behavioural block)")
                    else:
                        # x - z = -(2 mb + 2 z): an inverting summer (a textbook difference
                        # amplifier drives the op-amp's + input, and then A * (V+ - V-)
                        # loses |V+| * eps * A of resolution in double precision)
                        cm = "identity: s = x - z = -(2 mb + 2 z) (inverting summer)"
                        vs_ = "v" + n["s"]
                        bld.res(sec, "i_" + n["s"] + "_mb", n["mb"], vs_, R / 2, cm)
                        bld.res(sec, "i_" + n["s"] + "_z", n["z"], vs_, R / 2, cm)
                        bld.res(sec, "f_" + n["s"], n["s"], vs_, R, cm)
                        bld.opamp(sec, n["s"], vs_, comment=cm)
                    bld.inverter(sec, n["sb"], n["s"], "sb = -s (unity inverter)")
                # backward crossbar -> r, rb
                if net.succs[v]:
                    cm = "r = sum_c W_c^T s_c: backward crossbar into an inverting summer; rb = -r"
                    vr = "v" + n["r"]
                    terms = [(w, *pos_neg(ch, j, b, "s")) for (ch, j, w) in bwd[v][i]]
                    bld.crossbar(sec, n["r"], vr, terms, cm)
                    bld.res(sec, "f_" + n["r"], n["r"], vr, R, cm)
                    bld.opamp(sec, n["r"], vr, comment=cm)
                    bld.inverter(sec, n["rb"], n["r"], cm)
                # the state pair: leaky integrators
                for state, sign in (("x", +1), ("z", -1)):
                    cm = (f"{state}: leaky integrator, tau dV/dt = sigma(u) {'+' if sign > 0 else '-'} (r + c)/2 - V"
                          + ("  with c = gain*(m - y)" if is_out else ""))
                    st = n[state]
                    vg = "v" + st
                    bld.res(sec, "i_" + st + "_sg", n["sgb"], vg, R, cm)
                    if net.succs[v]:
                        bld.res(sec, "i_" + st + "_r", n["rb"] if sign > 0 else n["r"], vg, 2 * R, cm)
                    if is_out:
                        yn = tgt_nodes[(b, i)]
                        mpos, ypos = (n["mb"], yn) if sign > 0 else (n["m"], "yb" + yn[1:])
                        bld.res(sec, "i_" + st + "_m", mpos, vg, 2 * R / g_out, cm)
                        bld.res(sec, "i_" + st + "_y", ypos, vg, 2 * R / g_out, cm)
                    bld.res(sec, "f_" + st, st, vg, R, cm)
                    sec.add(Kind.C, "f_" + st, (st, vg), float(cap), cm)
                    bld.opamp(sec, st, vg, comment=cm)
                # first guess of every signal node of this neuron
                for kind, vals in nominal[(b, v)].items():
                    node = n[kind] if kind in n else nm(kind, v, i, b)
                    if act == "identity" and kind in ("ba", "bb", "e", "c1"):
                        continue
                    if kind in ("s", "sb") and not has_bwd_in[v]:
                        continue
                    if kind in ("r", "rb") and not net.succs[v]:
                        continue
                    c.nodesets[node] = float(vals[i])

    opts = dict(DEFAULT_OPTIONS)
    opts.update(DEVICE_OPTIONS)
    opts.update({"temp": float(temp), "tnom": float(temp)})
    set_analysis(c, analysis, L, tau, node_map, t_stop, t_step, max_step, opts, options)
    if opamp.offset != 0.0:
        c = add_opamp_offsets(c, {el.name: opamp.offset for el in c.elements() if is_opamp(el)})
    return finish(c, fr, write_circuit(c), analysis, gains, 1.0 / R, tau, dialect="device")


def _nominal_voltages(net, X, Y, gains, k_div, vt, bjt, i_tail):
    """``{(sample, layer): {node kind: (size,) volts}}`` of the ideal circuit's steady state."""
    B = X.shape[0]
    a, u = {net.input: X}, {}
    for v in net.nodes:
        uv = np.tile(net.bias_vector(v), (B, 1))
        for p in net.preds[v]:
            M = net.edge_matrix(p, v)
            uv = uv + np.asarray(M @ a[p].T).T
        u[v] = uv
        a[v] = net.activations[v].f(uv)
    d, delta = {}, {}
    for v in reversed(net.nodes):
        dv = np.zeros_like(u[v])
        for c in net.succs[v]:
            M = net.edge_matrix(v, c)
            dv = dv + np.asarray(M.T @ delta[c].T).T
        g = net.loss.grad(a[v], Y) if v == net.output else 0.0
        d[v] = dv + g
        delta[v] = net.activations[v].df(u[v]) * d[v]
    out = {}
    vcm_b = V_CM * (1.0 - k_div)
    for v in net.nodes:
        g = net.loss.grad(a[v], Y) if v == net.output else 0.0
        gain = gains[v]
        for b in range(B):
            m, dd = a[v][b], gain * d[v][b]
            s = gain * delta[v][b]
            r = gain * (d[v][b] - (g[b] if v == net.output else 0.0))
            vals = {"x": m + dd / 2, "z": m - dd / 2, "u": u[v][b], "m": m, "mb": -m,
                    "sgb": -m, "s": s, "sb": -s, "r": r, "rb": -r}
            if net.activations[v].name == "tanh":
                ba = V_CM + k_div * (u[v][b] - V_CM)
                i1 = 0.5 * i_tail * (1.0 + np.tanh(u[v][b]))
                vbe1 = vt * bjt.nf * np.log(np.maximum(i1, 1e-30) / bjt.is_ + 1.0)
                vals.update({"ba": ba, "bb": np.full_like(ba, vcm_b), "e": ba - vbe1,
                             "c1": V_CC - vbe1})
            out[(b, v)] = vals
    return out


def _tanh_stage(sec, n, nm, v, i, b, r_a, r_b, r_t, i_tail, bld):
    """Differential pair + PNP mirror + transimpedance: V(sgb) = -tanh(u)."""
    cm = ("tanh: dividers to vcm give V(ba) - V(bb) = 2 V_T u; NPN pair qa/qb with tail I_tail; "
          "PNP mirror; TIA R_T = 1 V/I_tail: sgb = -tanh(u)")
    ba, bb, e, c1 = (nm(k, v, i, b) for k in ("ba", "bb", "e", "c1"))
    vs = "v" + n["sgb"]
    bld.res(sec, "da_" + ba, n["u"], ba, r_a, cm)
    bld.res(sec, "db_" + ba, ba, "vcm", r_b, cm)
    bld.res(sec, "da_" + bb, "0", bb, r_a, cm)
    bld.res(sec, "db_" + bb, bb, "vcm", r_b, cm)
    sec.add(DeviceKind.Q, "a_" + e, (c1, ba, e), Transistor("qn"), cm)
    sec.add(DeviceKind.Q, "b_" + e, (vs, bb, e), Transistor("qn"), cm)
    sec.add(Kind.I, "tail_" + e, (e, "vee"), float(i_tail), cm)
    sec.add(DeviceKind.Q, "c_" + e, (c1, c1, "vcc"), Transistor("qp"), cm)
    sec.add(DeviceKind.Q, "d_" + e, (vs, c1, "vcc"), Transistor("qp"), cm)
    bld.res(sec, "f_" + n["sgb"], n["sgb"], vs, r_t, cm)
    bld.opamp(sec, n["sgb"], vs, comment=cm)
