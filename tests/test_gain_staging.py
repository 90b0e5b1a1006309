"""Gain staging (gain="auto" and per-layer gains): deep sigmoid circuits read out to backprop.

Oracle: a chain-rule backprop of the MLP written here (numpy, float64, nothing shared with
dyadsim's backprop or readout), cross-checked against torch autograd where installed.
"""

import math

import numpy as np
import pytest

import dyadsim
from dyadsim.circuits import GAIN_LIMITS, GAIN_TARGET, MAX_ERROR_VOLTAGE, compile_device_netlist

ACT = {
    "sigmoid": (lambda u: 1.0 / (1.0 + np.exp(-u)),
                lambda u: np.exp(-u) / (1.0 + np.exp(-u)) ** 2),
    "tanh": (np.tanh, lambda u: 1.0 / np.cosh(u) ** 2),
    "identity": (lambda u: u, lambda u: np.ones_like(u)),
}


def oracle(net, x, y):
    """{key: gradient} and {layer: dC/da (B, size)} of a chain MLP, by hand."""
    nodes = list(net.nodes)
    prev = [net.input] + nodes[:-1]
    a, us = {net.input: np.asarray(x, float)}, {}
    for p, v in zip(prev, nodes):
        u = a[p] @ net.params[("W", p, v)].T + net.params[("b", v)]
        us[v] = u
        a[v] = ACT[net.activations[v].name][0](u)
    aL = a[nodes[-1]]
    if net.loss.name == "mse":
        dC = aL - y
    else:
        e = np.exp(aL - aL.max(axis=1, keepdims=True))
        dC = e / e.sum(axis=1, keepdims=True) * y.sum(axis=1, keepdims=True) - y
    B = x.shape[0]
    grads, ds = {}, {}
    d = dC
    for p, v in reversed(list(zip(prev, nodes))):
        ds[v] = d
        delta = ACT[net.activations[v].name][1](us[v]) * d
        grads[("W", p, v)] = delta.T @ a[p] / B
        grads[("b", v)] = delta.mean(axis=0)
        d = delta @ net.params[("W", p, v)]
    return grads, ds


def worst(grads, ref):
    return max(np.linalg.norm(np.asarray(grads[k]) - r) / np.linalg.norm(r) for k, r in ref.items())


def deep(L, loss, act="sigmoid", seed=0, B=1):
    net = dyadsim.mlp("16-" + f"16x{L - 1}" + "-4", activation=act, loss=loss, seed=seed)
    rng = np.random.default_rng(seed)
    x = rng.random((B, 16))
    y = np.eye(4)[rng.integers(0, 4, B)] if loss == "xent" else rng.uniform(0, 1, (B, 4))
    return net, x, y


def test_oracle_matches_torch_autograd():
    torch = pytest.importorskip("torch")
    net, x, y = deep(4, "xent")
    ref, _ = oracle(net, x, y)
    params = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in net.params.items()}
    a = torch.tensor(x)
    nodes = list(net.nodes)
    for p, v in zip([net.input] + nodes[:-1], nodes):
        u = a @ params[("W", p, v)].T + params[("b", v)]
        a = torch.sigmoid(u) if net.activations[v].name == "sigmoid" else u
    loss = -(torch.tensor(y) * torch.log_softmax(a, dim=1)).sum(dim=1).mean()
    loss.backward()
    for k, g in ref.items():
        np.testing.assert_allclose(g, params[k].grad.numpy(), rtol=1e-12, atol=1e-16)


@pytest.mark.spice
@pytest.mark.parametrize("loss", ["mse", "xent"])
def test_auto_gain_deep_sigmoid_matches_backprop(loss):
    net, x, y = deep(20, loss)
    ref, _ = oracle(net, x, y)
    one = dyadsim.spice_gradients(net, x, y, gain=1.0, backend="subprocess", timeout=120)
    auto = dyadsim.spice_gradients(net, x, y, gain="auto", backend="subprocess", timeout=120)
    e1, ea = worst(one.grads, ref), worst(auto.grads, ref)
    # measured: gain 1 gives 1.2e-3 (mse) / 2.4e-4 (xent); auto 5e-15
    assert e1 > 1e-5
    assert ea <= 1e-7, (e1, ea)
    assert auto.netlist.staged and len(set(auto.netlist.gains.values())) > 5


@pytest.mark.spice
def test_auto_gain_depth_30_and_a_batch():
    net, x, y = deep(30, "mse", B=2)
    ref, _ = oracle(net, x, y)
    auto = dyadsim.spice_gradients(net, x, y, gain="auto", backend="shared", timeout=120)
    assert worst(auto.grads, ref) <= 1e-7


def test_auto_gains_put_every_layer_into_the_target_range():
    for loss in ("mse", "xent"):
        net, x, y = deep(12, loss, B=3)
        _, ds = oracle(net, x, y)
        nl = dyadsim.compile_netlist(net, x, y, gain="auto")
        for v in net.nodes:
            volts = nl.gains[v] * np.max(np.abs(ds[v]))
            assert GAIN_TARGET[0] <= volts < GAIN_TARGET[1], (v, volts)
            assert math.log10(nl.gains[v]) == round(math.log10(nl.gains[v]))  # powers of ten
        assert nl.gain == nl.gains[net.output]


def test_staged_netlist_text_has_per_layer_params_and_references():
    net, x, y = deep(5, "xent")
    nl = dyadsim.compile_netlist(net, x, y, gain="auto")
    text = nl.text
    ids = nl.layer_ids
    for v in net.nodes:
        lid = ids[v]
        assert f".param gain_{lid}=" in text
        assert f"Vgain_{lid} gain_ref_{lid} 0 DC {{gain_{lid}}}" in text
        assert f"gain_ref_{lid}" in nl.readout_nodes
    nodes = list(net.nodes)
    for v, c in zip(nodes[:-1], nodes[1:]):  # the backward coupling c -> v carries the ratio
        assert f"*gain_{ids[v]}/gain_{ids[c]}}}" in text
    assert f"gain_{ids[net.output]}*" in text  # the cost injection
    # a scalar gain writes none of it
    plain = dyadsim.compile_netlist(net, x, y, gain=2.0).text
    assert "gain_ref_" not in plain and ".param gain_" not in plain
    assert plain == dyadsim.compile_netlist(net, x, y, gain=2.0).text


@pytest.mark.spice
@pytest.mark.parametrize("summing", ["G", "B"])
def test_readout_needs_no_arguments_and_explicit_gains_agree(summing):
    net, x, y = deep(8, "mse", B=2)
    ref, _ = oracle(net, x, y)
    nl = dyadsim.compile_netlist(net, x, y, gain="auto", summing=summing)
    res = dyadsim.simulate(nl, backend="subprocess")
    g_auto = dyadsim.readout(net, res)
    assert worst(g_auto, ref) <= 1e-8
    # the same gains given explicitly, as a dict and as a list
    for gains in (dict(nl.gains), [nl.gains[v] for v in net.nodes]):
        r = dyadsim.spice_gradients(net, x, y, gain=gains, backend="subprocess", summing=summing)
        assert worst(r.grads, ref) <= 1e-8
    # reading with the wrong (scalar) gain gives wrong gradients: the per-layer nodes matter
    assert worst(dyadsim.readout(net, res, gain=1.0), ref) > 0.5


@pytest.mark.spice
def test_shallow_nets_unchanged_by_auto():
    net = dyadsim.mlp("3-4-2", activation="tanh", loss="mse", seed=1)
    rng = np.random.default_rng(3)
    x, y = rng.random((2, 3)), rng.uniform(-0.5, 0.5, (2, 2))
    ref, _ = oracle(net, x, y)
    one = dyadsim.spice_gradients(net, x, y, backend="subprocess")
    auto = dyadsim.spice_gradients(net, x, y, gain="auto", backend="subprocess")
    assert worst(one.grads, ref) <= 1e-8 and worst(auto.grads, ref) <= 1e-8


@pytest.mark.spice
def test_auto_gain_transient_reads_out_per_layer():
    net, x, y = deep(6, "mse")
    ref, _ = oracle(net, x, y)
    r = dyadsim.spice_gradients(net, x, y, analysis="tran", gain="auto", backend="subprocess",
                                timeout=300)
    assert worst(r.grads, ref) <= 1e-5
    assert math.isfinite(r.info["t_settle_tau"])


@pytest.mark.spice
def test_device_dialect_auto_gain():
    net = dyadsim.mlp("3-4-4-4-2", activation="tanh", loss="mse", seed=1)
    rng = np.random.default_rng(0)
    x = rng.random((2, 3))
    _, ds = oracle(net, x, np.zeros((2, 2)))  # dC/da_L = a_L for y = 0
    y = ds[net.output] - rng.uniform(0.002, 0.004, (2, 2))  # small residuals
    ref, _ = oracle(net, x, y)
    nl = compile_device_netlist(net, x, y, gain="auto")
    assert nl.staged and nl.gains[net.output] > 1.0  # small residuals get a larger gain
    ids = nl.layer_ids
    for v in net.nodes:
        assert f".param gain_{ids[v]}=" in nl.text and f"gain_ref_{ids[v]}" in nl.text
    g = dyadsim.readout(net, dyadsim.simulate(nl, backend="subprocess"))
    # measured 4.5e-7 with every gain from 1 to 100: the device dialect's own floor here
    # (finite op-amp gain and transistor non-idealities, not the error voltages)
    assert worst(g, ref) <= 1e-6
    r = dyadsim.spice_gradients(net, x, y, gain="auto", dialect="device", backend="shared")
    assert worst(r.grads, ref) <= 1e-6
    one = dyadsim.spice_gradients(net, x, y, dialect="device", backend="shared")
    assert worst(r.grads, one.grads) <= 1e-6


BAD = [0, 0.0, -1.0, float("nan"), float("inf"), -float("inf"), True, None, "1", "Auto!",
       [1.0, 1.0], {"h1": 1.0}, 1e31, 1e-10, [1.0, float("nan"), 1.0, 1.0], [1.0, 1.0, 1.0, "a"],
       1e12, 1e7]


@pytest.mark.parametrize("gain", BAD, ids=[repr(g)[:20] for g in BAD])
def test_bad_gains_refused_before_anything_runs(gain):
    net = dyadsim.mlp("3-4-4-4-2", activation="tanh", loss="mse", seed=1)
    rng = np.random.default_rng(0)
    x, y = rng.random((1, 3)), rng.uniform(-0.5, 0.5, (1, 2))
    calls = [
        lambda: dyadsim.compile_netlist(net, x, y, gain=gain),
        lambda: compile_device_netlist(net, x, y, gain=gain),
        lambda: dyadsim.spice_gradients(net, x, y, gain=gain, backend="shared"),
        lambda: dyadsim.spice_gradients(net, x, y, gain=gain, backend="subprocess"),
        lambda: dyadsim.spice_gradients(net, x, y, gain=gain, dialect="device", per_sample=True),
        lambda: dyadsim.Spice(gain=gain)(net, x, y),
    ]
    for call in calls:
        with pytest.raises(dyadsim.DyadsimError, match="gain"):
            call()


def test_gain_limits_and_voltage_cap_are_documented_values():
    assert GAIN_LIMITS[0] < 1.0 < GAIN_LIMITS[1] and MAX_ERROR_VOLTAGE >= 1e3
    net = dyadsim.mlp("3-4-2", activation="tanh", loss="mse", seed=1)
    x, y = np.full((1, 3), 0.5), np.full((1, 2), 0.3)
    _, ds = oracle(net, x, y)
    top = max(float(np.max(np.abs(d))) for d in ds.values())
    ok = 0.9 * MAX_ERROR_VOLTAGE / top
    dyadsim.compile_netlist(net, x, y, gain=ok)  # just inside the cap
    with pytest.raises(dyadsim.DyadsimError, match="error voltage"):
        dyadsim.compile_netlist(net, x, y, gain=1.2 * MAX_ERROR_VOLTAGE / top)


def test_chip_refuses_staging():
    net = dyadsim.mlp("3-4-2", activation="tanh", loss="mse", seed=1)
    chip = dyadsim.Chip.sample(net, seed=0)
    with pytest.raises(dyadsim.DyadsimError, match="gain"):
        dyadsim.spice_gradients(chip, np.ones((1, 3)), np.zeros((1, 2)), gain="auto")
