"""One sampled chip, two engines: the dynamics engine's steady state and ngspice's ``.op``
of the chip's netlist agree per tensor to <= 1e-6, for separate and shared crossbars and
every model-level non-ideality (noise excluded: ngspice cannot seed it; the ADC is applied
to both engines' states by the same converter model)."""

from __future__ import annotations

import numpy as np
import pytest

import dyadsim
from dyadsim.circuits import compile_chip_netlist, compile_netlist, place_values
from conftest import make_batch, make_net

pytestmark = pytest.mark.spice

EFFECTS = {
    "none": {},
    "mismatch": {"mismatch": 0.15},
    "activation_mismatch": {"activation_mismatch": 0.1},
    "derivative_mismatch": {"derivative_mismatch": 0.1},
    "offset": {"offset": 0.01},
    "tau_spread": {"tau_spread": 0.5},
    "bits": {"bits": 4},
    "w_max": {"w_max": 0.3},
    "g_range": {"mismatch": 0.1, "g_range": 8.0},
    "adc_bits": {"adc_bits": 8},
    "gain": {"gain": 4.0, "offset": 0.005},
    "everything": {"mismatch": 0.1, "activation_mismatch": 0.05, "derivative_mismatch": 0.05,
                   "offset": 0.01, "tau_spread": 0.4, "bits": 6, "g_range": 20.0,
                   "adc_bits": 10, "gain": 3.0},
}


def _per_tensor(g, ref):
    return {k: float(np.linalg.norm(g[k] - ref[k]) / max(np.linalg.norm(ref[k]), 1e-300))
            for k in ref}


@pytest.mark.parametrize("crossbar", ["separate", "shared"])
@pytest.mark.parametrize("effect", list(EFFECTS))
def test_op_agrees_with_the_dynamics_engine(crossbar, effect):
    net = make_net("dag", "tanh", "xent", 3, depth=3, width=(2, 4))
    x, y = make_batch(net, 3, 3)
    chip = dyadsim.Chip.sample(net, seed=21, crossbar=crossbar, **EFFECTS[effect])
    dyn = dyadsim.relax_chips(chip, x, y).grads[0]
    sp = dyadsim.spice_gradients(chip, x, y)
    err = _per_tensor(sp.grads, dyn)
    assert max(err.values()) <= 1e-6, err
    assert sp.loss == pytest.approx(dyn.loss, rel=1e-6)
    vs_net = max(_per_tensor(sp.grads, dyadsim.backprop(net, x, y)).values())
    if effect in ("none", "tau_spread"):  # tau shapes only the transient
        assert vs_net <= 1e-6
    else:  # the chip really differs from the network
        assert vs_net > 1e-4


def test_transient_relaxes_to_the_same_state_and_tau_matters_only_on_the_way():
    net = make_net("mlp", "tanh", "mse", 4, depth=2, width=(2, 3))
    x, y = make_batch(net, 4, 2)
    chip = dyadsim.Chip.sample(net, seed=2, mismatch=0.1, tau_spread=0.6)
    dyn = dyadsim.relax_chips(chip, x, y).grads[0]
    tr = dyadsim.spice_gradients(chip, x, y, analysis="tran", t_stop=80.0)
    assert max(_per_tensor(tr.grads, dyn).values()) <= 1e-4
    cont = dyadsim.relax_chips(chip, x, y, method="continuous")
    # ngspice's settling time (gradient readout within 1e-6) is of the engine's order
    assert 0.3 * cont.t_settle[0] < tr.info["t_settle_tau"] < 3 * cont.t_settle[0]


def test_ideal_chip_netlist_is_the_networks():
    net = make_net("dag", "sigmoid", "mse", 5, depth=3)
    x, y = make_batch(net, 5, 2)
    chip = dyadsim.Chip.sample(net, seed=0)
    assert compile_chip_netlist(net, chip.values(), x, y).text == compile_netlist(net, x, y).text
    bad = dyadsim.Chip.sample(net, seed=0, mismatch=0.1)
    assert compile_chip_netlist(net, bad.values(), x, y).text != compile_netlist(net, x, y).text


def test_the_method_object_runs_a_chip():
    net = make_net("mlp", "tanh", "mse", 6, depth=2)
    x, y = make_batch(net, 6, 2)
    chip = dyadsim.Chip.sample(net, seed=1, mismatch=0.1, derivative_mismatch=0.1)
    r = dyadsim.Spice()(chip, x, y)
    assert max(_per_tensor(r.grads, dyadsim.relax_chips(chip, x, y).grads[0]).values()) <= 1e-6


def test_chip_netlist_bad_input():
    net = make_net("mlp", "tanh", "mse", 7, depth=2)
    x, y = make_batch(net, 7, 2)
    chip = dyadsim.Chip.sample(net, seed=1, gain=2.0)
    with pytest.raises(dyadsim.DyadsimError, match="noise"):
        dyadsim.spice_gradients(chip.replace(noise=1e-3), x, y)
    with pytest.raises(dyadsim.DyadsimError, match="gain"):
        dyadsim.spice_gradients(chip, x, y, gain=3.0)
    with pytest.raises(dyadsim.DyadsimError, match="behavioural"):
        dyadsim.spice_gradients(chip, x, y, dialect="device")
    with pytest.raises(dyadsim.DyadsimError, match="summing"):
        compile_chip_netlist(net, chip.values(), x, y, summing="B")
    with pytest.raises(dyadsim.DyadsimError, match="gain"):
        place_values(compile_netlist(net, x, y), chip.values())
    other = make_net("mlp", "tanh", "mse", 8, depth=3)
    with pytest.raises(dyadsim.DyadsimError, match="fit"):
        place_values(compile_netlist(other, *make_batch(other, 8, 2), gain=2.0), chip.values())
    vals = chip.values()
    del vals["tau"]
    with pytest.raises(dyadsim.DyadsimError, match="lack"):
        place_values(compile_netlist(net, x, y, gain=2.0), vals)
