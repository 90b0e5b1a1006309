"""Device-level dialect (crossbars, op-amps, BJT differential pairs) and the non-idealities
that transform the circuit IR (dyadsim/circuits/_device.py, _transforms.py)."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

import dyadsim
from dyadsim.circuits import (
    BJTModel, DeviceKind, OpAmp, compile_device_netlist, is_opamp, is_weight, thermal_voltage,
)
from dyadsim.circuits import Kind
from dyadsim.circuits import (
    AmplifierNonideal, Mismatch, Quantization, ThermalNoise, WireResistance, evaluate,
    perturbed_netlist,
)
from dyadsim.errors import DyadsimError
from dyadsim.montecarlo import readout_perturbed

#: measured: the ideal-device readout is 5e-9 .. 1.2e-8 from backprop (docs/device_circuit.md)
DEVICE_TOL = 1e-6
BEHAVIOURAL_TOL = 1e-6

ZERO = [Mismatch(0.0), Quantization(None), AmplifierNonideal(), ThermalNoise(), WireResistance(0.0)]


def problem(spec="3-4-2", seed=0, batch=2, output_activation=None):
    net = dyadsim.mlp(spec, activation="tanh", loss="mse", seed=seed,
                      output_activation=output_activation)
    rng = np.random.default_rng(seed + 1)
    x = rng.random((batch, net.n_in))
    y = rng.uniform(-0.5, 0.5, (batch, net.n_out))
    return net, x, y


def spice_error(nl, net, x, y, ideal=True):
    """Readout vs backprop.  Ideal circuits go through :func:`dyadsim.readout` itself (which
    checks V(u) = W m + b to 1e-4); non-ideal ones through the Monte Carlo's readout, which
    does not."""
    res = dyadsim.simulate(nl, backend="subprocess", timeout=60)
    grads = dyadsim.readout(net, res) if ideal else readout_perturbed(net, res)
    return dyadsim.compare(grads, dyadsim.backprop(net, x, y))


def weight_magnitudes(circuit):
    out = []
    for el in circuit.elements():
        if is_weight(el):
            v = evaluate(el.value, circuit.params)
            out.append(abs(1.0 / v if el.kind is Kind.R else v))
    return out


# ----------------------------------------------------------------------------- structure
def test_device_netlist_keeps_the_behavioural_node_names():
    net, x, y = problem()
    dev = compile_device_netlist(net, x, y)
    beh = dyadsim.compile_netlist(net, x, y)
    assert dev.node_map == beh.node_map
    assert dev.input_nodes == beh.input_nodes and dev.target_nodes == beh.target_nodes
    nodes = {n for el in dev.circuit.elements() for n in el.nodes}
    for (b, v, i), (xn, zn) in dev.node_map.items():
        assert {xn, zn, dev.aux_map[(b, v, i)]["u"]} <= nodes
    assert "gain_ref" in nodes and "tau_ref" in nodes
    kinds = dev.stats["by_kind"]
    # 4 transistors per tanh neuron (pair + mirror), one per-neuron multiplier at most
    assert kinds["Q"] == 4 * 2 * (4 + 2)
    assert kinds["BV"] == 2 * 2  # only the output layer's s is read (by h1's backward sum)
    assert ".model qn npn(" in dev.text and ".model qp pnp(" in dev.text
    assert all(el.value == 1e12 for el in dev.circuit.elements() if is_opamp(el))


def test_device_dialect_rejects_what_it_cannot_build():
    net = dyadsim.mlp("3-4-2", activation="relu", loss="mse", seed=0)
    with pytest.raises(DyadsimError, match="tanh and identity"):
        compile_device_netlist(net, np.zeros((1, 3)), np.zeros((1, 2)))
    net = dyadsim.mlp("3-4-2", activation="tanh", loss="xent", seed=0)
    with pytest.raises(DyadsimError, match="mse"):
        compile_device_netlist(net, np.zeros((1, 3)), np.eye(2)[:1])
    net, x, y = problem()
    for bad in (dict(gain=-1.0), dict(r_unit=float("nan")), dict(temp="27"), dict(temp=1e4),
                dict(opamp="ideal"), dict(g_offset=-0.1), dict(i_tail=0.0)):
        with pytest.raises(DyadsimError):
            compile_device_netlist(net, x, y, **bad)
    with pytest.raises(DyadsimError):
        OpAmp(gain=float("nan"))
    with pytest.raises(DyadsimError):
        BJTModel(bf=-5)


def test_thermal_voltage_is_ngspices():
    # kT/q at 27 C with ngspice 39's CODATA-2014 constants, measured from a BJT's Ic(Vbe)
    assert thermal_voltage(27.0) == pytest.approx(0.025864917007157, rel=1e-12)


@pytest.mark.parametrize("dialect", ["behavioral", "device"])
@pytest.mark.parametrize("analysis", ["op", "tran"])
def test_zero_size_nonidealities_leave_the_text_identical(dialect, analysis):
    net, x, y = problem()
    compile_ = dyadsim.compile_netlist if dialect == "behavioral" else compile_device_netlist
    nl = compile_(net, x, y, analysis=analysis)
    p = perturbed_netlist(nl, ZERO, seed=123)
    assert p.text == nl.text
    assert p.node_map == nl.node_map


# ----------------------------------------------------------------------------- accuracy
@pytest.mark.spice
@pytest.mark.parametrize("output_activation", [None, "identity"])
def test_ideal_device_readout_matches_backprop(output_activation):
    net, x, y = problem("3-4-3-2", output_activation=output_activation)
    dev = perturbed_netlist(compile_device_netlist(net, x, y), ZERO, seed=0)
    assert spice_error(dev, net, x, y).max_rel_error < DEVICE_TOL
    beh = perturbed_netlist(dyadsim.compile_netlist(net, x, y), ZERO, seed=0)
    assert spice_error(beh, net, x, y).max_rel_error < BEHAVIOURAL_TOL


@pytest.mark.spice
def test_differential_conductance_pairs_with_a_baseline():
    """g_offset: both halves of every weight pair carry a baseline conductance; only their
    difference matters, so the ideal readout is unchanged, and there are twice the weights."""
    net, x, y = problem()
    plain = compile_device_netlist(net, x, y)
    pairs = compile_device_netlist(net, x, y, g_offset=0.5)
    n_plain = sum(is_weight(e) for e in plain.circuit.elements())
    assert sum(is_weight(e) for e in pairs.circuit.elements()) == 2 * n_plain
    assert spice_error(pairs, net, x, y).max_rel_error < DEVICE_TOL


@pytest.mark.spice
def test_device_transient_relaxes_to_the_same_gradients():
    net, x, y = problem(batch=1)
    op = spice_error(compile_device_netlist(net, x, y), net, x, y)
    tr = spice_error(compile_device_netlist(net, x, y, analysis="tran", t_step=0.1, max_step=0.2),
                     net, x, y)
    assert tr.max_rel_error < DEVICE_TOL
    assert abs(tr.max_rel_error - op.max_rel_error) < 1e-7


@pytest.mark.spice
def test_real_devices_cost_precision():
    """Finite op-amp gain and a beta-100 / Early-voltage transistor move the readout away
    from backprop, in that order of size (docs/device_circuit.md has the numbers)."""
    net, x, y = problem()
    ideal = spice_error(compile_device_netlist(net, x, y), net, x, y).max_rel_error
    amp = spice_error(compile_device_netlist(net, x, y, opamp=OpAmp(gain=1e5)), net, x, y,
                      ideal=False).max_rel_error
    bjt = spice_error(compile_device_netlist(net, x, y, bjt=BJTModel.realistic()), net, x, y,
                      ideal=False).max_rel_error
    assert ideal < 1e-7 < amp < 1e-3 < bjt < 1.0


# ----------------------------------------------------------------------------- non-idealities
@pytest.mark.parametrize("dialect", ["behavioral", "device"])
@pytest.mark.parametrize("bits", [1, 2, 3, 5])
def test_quantization_gives_at_most_2_to_the_bits_magnitudes(dialect, bits):
    net, x, y = problem("4-6-3")
    compile_ = dyadsim.compile_netlist if dialect == "behavioral" else compile_device_netlist
    nl = compile_(net, x, y)
    before = weight_magnitudes(nl.circuit)
    q = perturbed_netlist(nl, [Quantization(bits)], seed=0)
    after = weight_magnitudes(q.circuit)
    assert len(set(np.round(after, 12))) <= 2 ** bits
    assert max(after) == pytest.approx(max(before), rel=1e-12)
    assert len(after) <= len(before)  # weights that round to 0 disappear
    # biases keep full precision
    biases = lambda c: [e for e in c.elements() if e.name.startswith("bias_")]  # noqa: E731
    assert biases(q.circuit) == biases(nl.circuit)
    # a fixed full scale: levels are multiples of w_max * g / (2**bits - 1)
    q = perturbed_netlist(nl, [Quantization(bits, w_max=4.0)], seed=0)
    step = 4.0 * nl.circuit.params["g"] / (2 ** bits - 1)
    k = np.asarray(weight_magnitudes(q.circuit)) / step
    assert np.allclose(k, np.round(k), atol=1e-9) and np.all(k <= 2 ** bits - 1 + 1e-9)


@pytest.mark.parametrize("dialect", ["behavioral", "device"])
def test_mismatch_is_reproducible_with_a_seed(dialect):
    net, x, y = problem()
    compile_ = dyadsim.compile_netlist if dialect == "behavioral" else compile_device_netlist
    nl = compile_(net, x, y)
    a = perturbed_netlist(nl, [Mismatch(0.05)], seed=(7, 3))
    b = perturbed_netlist(nl, [Mismatch(0.05)], seed=(7, 3))
    c = perturbed_netlist(nl, [Mismatch(0.05)], seed=(7, 4))
    assert a.text == b.text != c.text != nl.text
    # every conductance-like element moved, by a factor near 1; nothing else did
    for old, new in zip(nl.circuit.elements(), a.circuit.elements()):
        assert old.kind == new.kind and old.nodes == new.nodes
        if old.kind in (Kind.R, Kind.G, Kind.I):
            ratio = evaluate(new.value, a.circuit.params) / evaluate(old.value, nl.circuit.params)
            assert ratio != 1.0 and 0.6 < ratio < 1.6
        elif old.kind is DeviceKind.Q:
            assert old.value.area == 1.0 != new.value.area
        elif old.kind in (Kind.V, Kind.E, Kind.C, Kind.BV):
            assert old == new
    # the original netlist is untouched
    assert nl.text == compile_(net, x, y).text


def test_nonidealities_compose_in_order():
    net, x, y = problem()
    nl = compile_device_netlist(net, x, y)
    both = perturbed_netlist(nl, [WireResistance(50.0), Quantization(4), Mismatch(0.01),
                                  AmplifierNonideal(gain=1e5, offset=1e-3)], seed=1)
    n_w = sum(is_weight(e) for e in nl.circuit.elements())
    wires = [e for e in both.circuit.elements() if e.name.startswith("wire_")]
    assert 0 < len(wires) <= n_w
    amps = [e for e in both.circuit.elements() if is_opamp(e)]
    assert {e.value for e in amps} == {1e5}
    offsets = [e for e in both.circuit.elements() if e.kind is Kind.V and e.name.startswith("os")]
    assert len(offsets) == len(amps)
    assert 1e-4 < np.std([e.value for e in offsets]) < 1e-2
    # the wire resistors were mismatched too (Mismatch came after WireResistance)
    assert len({e.value for e in wires}) == len(wires)


def test_amplifier_nonideal_needs_opamps():
    net, x, y = problem()
    beh = dyadsim.compile_netlist(net, x, y)
    with pytest.raises(DyadsimError, match="op-amps"):
        perturbed_netlist(beh, [AmplifierNonideal(gain=1e4)], seed=0)


def test_wire_resistance_in_the_behavioural_dialect_lowers_each_transconductance():
    net, x, y = problem()
    nl = dyadsim.compile_netlist(net, x, y)
    w = perturbed_netlist(nl, [WireResistance(100.0)], seed=0)
    for old, new in zip(nl.circuit.elements(), w.circuit.elements()):
        if old.kind is Kind.G:
            gm = evaluate(old.value, nl.circuit.params)
            assert evaluate(new.value, w.circuit.params) == pytest.approx(gm / (1 + abs(gm) * 100.0))


def test_thermal_noise_adds_trnoise_sources_to_transients_only():
    net, x, y = problem()
    with pytest.raises(DyadsimError, match="transient"):
        perturbed_netlist(dyadsim.compile_netlist(net, x, y), [ThermalNoise(300.0)], seed=0)
    nl = dyadsim.compile_netlist(net, x, y, analysis="tran")
    p = perturbed_netlist(nl, [ThermalNoise(300.0)], seed=0)
    n_r = sum(e.kind is Kind.R for e in nl.circuit.elements())
    lines = [ln for ln in p.text.splitlines() if "trnoise(" in ln]
    assert len(lines) == n_r
    # 1 kOhm at 300 K sampled every 0.05 tau = 50 ns: rms = sqrt(4kT/R / (2 dt))
    rms = math.sqrt(4 * 1.38064852e-23 * 300.0 / 1e3 / (2 * 0.05e-6))
    assert float(re.search(r"trnoise\((\S+) ", lines[0]).group(1)) == pytest.approx(rms, rel=1e-12)


@pytest.mark.spice
def test_thermal_noise_runs_in_ngspice():
    net, x, y = problem(batch=1)
    nl = dyadsim.compile_netlist(net, x, y, analysis="tran", t_step=0.1, max_step=0.1)
    quiet = spice_error(nl, net, x, y).max_rel_error
    noisy = spice_error(perturbed_netlist(nl, [ThermalNoise(psd=1e-13)], seed=0), net, x, y,
                        ideal=False)
    assert quiet < 1e-6 < noisy.max_rel_error < 1.0


# ----------------------------------------------------------------------------- validation
@pytest.mark.parametrize("make", [
    lambda: Mismatch(float("nan")), lambda: Mismatch(-0.1), lambda: Mismatch("0.1"),
    lambda: Mismatch(True), lambda: Mismatch(0.1, kinds=("R", "V")), lambda: Mismatch(1e3),
    lambda: Quantization(3.5), lambda: Quantization(0), lambda: Quantization("8"),
    lambda: Quantization(True), lambda: Quantization(4, w_max=-1.0), lambda: Quantization(99),
    lambda: AmplifierNonideal(gain=0.5), lambda: AmplifierNonideal(offset=float("inf")),
    lambda: AmplifierNonideal(gain="1e5"), lambda: ThermalNoise(temperature=-1.0),
    lambda: ThermalNoise(temperature=float("inf")), lambda: ThermalNoise("300"),
    lambda: ThermalNoise(psd=float("nan")), lambda: ThermalNoise(300.0, dt=0.0),
    lambda: WireResistance("1\n.control\nshell rm -rf /\n.endc"), lambda: WireResistance(-1.0),
])
def test_parameters_that_reach_the_netlist_are_validated_numbers(make):
    with pytest.raises(DyadsimError):
        make()


def test_perturbed_netlist_rejects_non_nonidealities():
    net, x, y = problem()
    nl = dyadsim.compile_netlist(net, x, y)
    with pytest.raises(DyadsimError, match="not a non-ideality"):
        perturbed_netlist(nl, ["Mismatch(0.1)"], seed=0)


# ----------------------------------------------------------------------------- IR transforms
@pytest.mark.parametrize("dialect", ["behavioral", "device"])
def test_with_nodesets_and_with_options_make_new_circuits(dialect):
    from dyadsim.circuits import with_nodesets, with_options, write_circuit

    net, x, y = problem()
    compile_ = dyadsim.compile_netlist if dialect == "behavioral" else compile_device_netlist
    nl = compile_(net, x, y)
    before = write_circuit(nl.circuit)
    assert before == nl.text  # one writer for both dialects
    guess = {"x_h1_0_b0": 0.25, "z_h1_0_b0": -0.5, "vcc#branch": 1.0, "m_h1_0_b0": float("nan")}
    c = with_nodesets(nl.circuit, guess)
    assert c.nodesets == {"x_h1_0_b0": 0.25, "z_h1_0_b0": -0.5}  # old guesses dropped
    cards = [ln for ln in write_circuit(c).splitlines() if ln.startswith(".nodeset")]
    assert cards == [".nodeset v(x_h1_0_b0)=0.25 v(z_h1_0_b0)=-0.5"]
    o = with_options(nl.circuit, gmin=1e-12, reltol=1e-6)
    line = next(ln for ln in write_circuit(o).splitlines() if ln.startswith(".options"))
    assert line.endswith(" gmin=1e-12 reltol=1e-06") and line.count("reltol=") == 1
    assert write_circuit(nl.circuit) == before  # the input is never changed
    for bad in ({"gmin\n.control": 1.0}, {"gmin": "1e-12\n.end"}, {"Gmin": 1.0}):
        with pytest.raises(DyadsimError, match="invalid simulator option"):
            with_options(nl.circuit, **bad)
    with pytest.raises(DyadsimError, match="unsafe netlist identifier"):
        write_circuit(with_nodesets(nl.circuit, {"x\n.control": 1.0}))
