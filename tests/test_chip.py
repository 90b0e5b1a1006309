"""Sampled chips (dyadsim.Chip) and the chip dynamics engine (dyadsim.relax_chips).

Oracles, none sharing code with the engine:

* exact backprop of the ideal network (every non-ideality zero) and finite differences of
  the perturbed network's own forward pass (shared crossbar, weight mismatch only: the
  steady state is the gradient of the network the chip computes);
* a steady state and readout written out here sample by sample, layer by layer, in plain
  loops (every model-level non-ideality, the ADC included);
* closed forms: quantization levels and clipping, the stationary variance of an
  Ornstein-Uhlenbeck node (thermal noise), tau not mattering at steady state.
"""

from __future__ import annotations

import numpy as np
import pytest

import dyadsim
from conftest import fd_grads, make_batch, make_net

ALL_OFF = dict(mismatch=0.0, activation_mismatch=0.0, derivative_mismatch=0.0, offset=0.0,
               tau_spread=0.0, bits=None, noise=0.0, adc_bits=None)
EVERYTHING = dict(mismatch=0.08, activation_mismatch=0.05, derivative_mismatch=0.07,
                  offset=0.01, tau_spread=0.4, bits=6, g_range=20.0, adc_bits=8, gain=3.0)


def _case(kind="mlp", act="tanh", loss="mse", seed=0, batch=5, depth=3):
    net = make_net(kind, act, loss, seed, depth=depth, width=(3, 5))
    x, y = make_batch(net, seed, batch)
    return net, x, y


def _maxrel(g, ref):
    return max(float(np.max(np.abs(g[k] - ref[k]))) / max(float(np.max(np.abs(ref[k]))), 1e-300)
               for k in ref)


# ----------------------------------------------------------------------------- test-side oracle
def _oracle_adc(v, bits):
    """Signed converter, per sample and layer: levels k R / (2^(bits-1) - 1), R = max |v|."""
    if bits is None:
        return v
    out = np.empty_like(v)
    half = 2 ** (bits - 1) - 1
    for b in range(v.shape[0]):
        R = np.max(np.abs(v[b]))
        out[b] = 0.0 if R == 0 else np.round(v[b] * half / R) * (R / half)
    return out


def _oracle(chip, x, y):
    """The chip's steady state and readout, sample by sample, in plain loops."""
    net = chip.net
    vals = chip.values()
    X = np.atleast_2d(x)
    Y = np.atleast_2d(y)
    B = X.shape[0]
    grads = {k: np.zeros_like(p) for k, p in net.params.items()}
    outputs = []
    for b in range(B):
        a = {net.input: X[b]}
        u = {}
        for v in net.nodes:
            uv = net.bias_vector(v).copy()
            for p in net.preds[v]:
                uv = uv + vals["forward"][(p, v)] @ a[p]
            u[v] = uv
            om = 0.5 * (vals["offset_x"][v] + vals["offset_z"][v])
            a[v] = vals["activation_gain"][v] * net.activations[v].f(uv) + om
        d, s = {}, {}
        for v in reversed(net.nodes):
            r = np.zeros(net.sizes[v])
            for c in net.succs[v]:
                r = r + vals["backward"][(v, c)].T @ s[c]
            if v == net.output:
                r = r + chip.gain * net.loss.grad(a[v][None], Y[b][None])[0]
            d[v] = r + vals["offset_x"][v] - vals["offset_z"][v]
            s[v] = vals["derivative_gain"][v] * net.activations[v].df(u[v]) * d[v]
        bits = chip.adc_bits
        q = lambda arr: _oracle_adc(arr[None], bits)[0]  # noqa: E731
        for v in net.nodes:
            slope = vals["derivative_gain"][v] * net.activations[v].df(u[v])
            delta = q(slope) * q(d[v]) / chip.gain
            if ("b", v) in grads:
                grads[("b", v)] += delta / B
            for p in net.preds[v]:
                src = a[p] if p == net.input else q(a[p])
                grads[("W", p, v)] += np.outer(delta, src) / B
        outputs.append(a[net.output])
    return grads, np.array(outputs)


# ----------------------------------------------------------------------------- ideal chips
@pytest.mark.parametrize("kind,act,loss", [("mlp", "tanh", "mse"), ("mlp", "sigmoid", "xent"),
                                           ("dag", "tanh", "xent"), ("dag", "softplus", "mse")])
@pytest.mark.parametrize("method", ["steady", "euler", "continuous"])
def test_ideal_chip_is_backprop(kind, act, loss, method):
    net, x, y = _case(kind, act, loss, seed=3)
    ref = dyadsim.backprop(net, x, y)
    chip = dyadsim.Chip.sample(net, seed=11, **ALL_OFF)
    assert chip.is_ideal
    res = dyadsim.relax_chips(chip, x, y, method=method)
    tol = 1e-8 if method == "continuous" else 1e-12
    assert _maxrel(res.grads[0], ref) <= tol
    assert res.grads[0].loss == pytest.approx(ref.loss, rel=1e-10)
    # the network the chip computes is the network itself
    for k, p in net.params.items():
        assert np.array_equal(chip.network.params[k], p)


def test_thin_functions_and_methods_accept_a_chip():
    net, x, y = _case(seed=4)
    ref = dyadsim.backprop(net, x, y)
    chip = dyadsim.Chip.sample(net, seed=1)
    r = dyadsim.relax(chip, x, y)
    assert isinstance(r, dyadsim.RelaxResult) and r.steps == 2 * net.depth and r.converged
    assert _maxrel(r.grads, ref) <= 1e-12
    rc = dyadsim.relax_continuous(chip, x, y)
    assert isinstance(rc, dyadsim.ContinuousResult) and rc.t_settle > 0
    assert _maxrel(rc.grads, ref) <= 1e-8
    for method in (dyadsim.Euler(), dyadsim.Euler(eta=0.5), dyadsim.ODE()):
        assert _maxrel(method(chip, x, y).grads, ref) <= 1e-8
    with pytest.raises(dyadsim.DyadsimError, match="chip.network"):
        dyadsim.backprop(chip, x, y)
    with pytest.raises(dyadsim.DyadsimError, match="wavefront"):
        dyadsim.relax(chip, x, y, eta=0.5, schedule="wavefront")


# ----------------------------------------------------------------------------- shared crossbar
@pytest.mark.parametrize("kind,act,loss", [("mlp", "tanh", "mse"), ("dag", "sigmoid", "xent")])
def test_shared_mismatch_is_gradient_of_the_perturbed_network(kind, act, loss):
    """One crossbar read both ways: the fixed point is backprop's recursion with the perturbed
    W, so the readout is the exact gradient of chip.network."""
    net, x, y = _case(kind, act, loss, seed=5)
    chip = dyadsim.Chip.sample(net, seed=2, crossbar="shared", mismatch=0.2)
    pnet = chip.network
    assert any(not np.allclose(pnet.params[k], net.params[k]) for k in net.params)
    for method in ("steady", "euler"):
        g = dyadsim.relax_chips(chip, x, y, method=method).grads[0]
        assert _maxrel(g, dyadsim.backprop(pnet, x, y)) <= 1e-12
    fd = fd_grads(pnet, x, y)
    g = dyadsim.relax_chips(chip, x, y).grads[0]
    assert _maxrel(g, fd) <= 1e-6
    # the backward crossbar *is* the forward one
    for e, Wb in chip.backward_weights.items():
        assert np.array_equal(Wb, chip.forward_weights[e])


def test_separate_crossbars_misalign_more_with_more_mismatch():
    net, x, y = _case(seed=6, batch=8, depth=4)
    angles = []
    for sigma in (0.01, 0.05, 0.2):
        a = []
        for s in range(8):
            chip = dyadsim.Chip.sample(net, seed=s, mismatch=sigma)
            g = dyadsim.relax_chips(chip, x, y).grads[0]
            a.append(dyadsim.compare(g, dyadsim.backprop(chip.network, x, y)).summary.angle)
        angles.append(float(np.mean(a)))
    assert angles[0] > 1e-4  # the two crossbars really differ
    assert angles[0] < angles[1] < angles[2], angles
    # and the shared crossbar has none, at the largest mismatch
    chip = dyadsim.Chip.sample(net, seed=0, mismatch=0.2, crossbar="shared")
    g = dyadsim.relax_chips(chip, x, y).grads[0]
    assert dyadsim.compare(g, dyadsim.backprop(chip.network, x, y)).summary.angle < 1e-7


# ----------------------------------------------------------------------------- every non-ideality
@pytest.mark.parametrize("crossbar", ["separate", "shared"])
@pytest.mark.parametrize("kind,act,loss", [("mlp", "tanh", "mse"), ("dag", "sigmoid", "xent")])
def test_steady_state_matches_the_plain_loop_oracle(crossbar, kind, act, loss):
    net, x, y = _case(kind, act, loss, seed=7)
    chip = dyadsim.Chip.sample(net, seed=9, crossbar=crossbar, **EVERYTHING)
    want, acts = _oracle(chip, x, y)
    res = dyadsim.relax_chips(chip, x, y)
    assert _maxrel(res.grads[0], want) <= 1e-12
    np.testing.assert_allclose(chip.predict(x), acts, rtol=1e-13, atol=1e-15)
    # Euler (per-neuron steps eta/tau_j) and the continuous flow reach the same state
    for method, kw, tol in (("euler", {"eta": 0.6}, 1e-9), ("continuous", {}, 1e-7)):
        g = dyadsim.relax_chips(chip, x, y, method=method, **kw).grads[0]
        # an ADC level boundary could flip between two engines' states; the chip has an ADC,
        # so compare without it
        g0 = dyadsim.relax_chips(chip.replace(adc_bits=None), x, y, method=method, **kw).grads[0]
        w0, _ = _oracle(chip.replace(adc_bits=None), x, y)
        assert _maxrel(g0, w0) <= tol, method
        assert _maxrel(g, want) <= 1e-2, method


def test_each_nonideality_changes_the_gradient_and_zero_does_not():
    net, x, y = _case(seed=8)
    ref = dyadsim.backprop(net, x, y)
    base = dyadsim.Chip.sample(net, seed=4)
    assert _maxrel(dyadsim.relax_chips(base, x, y).grads[0], ref) <= 1e-12
    for name, size in [("mismatch", 0.05), ("activation_mismatch", 0.05),
                       ("derivative_mismatch", 0.05), ("offset", 0.01), ("bits", 4),
                       ("w_max", 0.3), ("adc_bits", 6)]:
        g = dyadsim.relax_chips(base.replace(**{name: size}), x, y).grads[0]
        assert _maxrel(g, ref) > 1e-4, name
    # tau only shapes the transient
    g = dyadsim.relax_chips(base.replace(tau_spread=0.8), x, y, method="continuous").grads[0]
    assert _maxrel(g, ref) <= 1e-8


def test_tau_spread_slows_settling_but_keeps_the_steady_state():
    net, x, y = _case(seed=9, depth=4)
    chip = dyadsim.Chip.sample(net, seed=3)
    t = []
    for spread in (0.0, 0.5):
        r = dyadsim.relax_chips(chip.replace(tau_spread=spread), x, y, method="continuous")
        assert _maxrel(r.grads[0], dyadsim.backprop(net, x, y)) <= 1e-8
        t.append(float(r.t_settle[0]))
    assert t[1] > t[0]


# ----------------------------------------------------------------------------- programming
def test_quantization_clipping_and_on_off_ratio_closed_form():
    net, x, y = _case(seed=10)
    W = {e: net.params[("W",) + e] for e in net.edges}
    chip = dyadsim.Chip.sample(net, seed=0, bits=3, w_max=0.4)
    levels = 0.4 * np.arange(8) / 7
    for e, Wq in chip.forward_weights.items():
        mag = np.abs(Wq)
        assert np.all(mag <= 0.4 + 1e-15)
        assert np.all(np.min(np.abs(mag[..., None] - levels), axis=-1) <= 1e-15)
        assert np.all((np.sign(Wq) == np.sign(W[e])) | (Wq == 0))
        # nearest level of the clipped magnitude
        want = levels[np.argmin(np.abs(np.minimum(np.abs(W[e]), 0.4)[..., None] - levels), axis=-1)]
        np.testing.assert_allclose(mag, want, atol=1e-15)
    # w_max=None maps each edge's largest |W| to full scale: nothing clips
    chip = dyadsim.Chip.sample(net, seed=0, bits=12)
    for e, Wq in chip.forward_weights.items():
        assert np.max(np.abs(Wq)) == pytest.approx(np.max(np.abs(W[e])), rel=1e-14)
        assert np.max(np.abs(Wq - W[e])) <= np.max(np.abs(W[e])) / 4095 / 2 * (1 + 1e-12)
    # a finite on/off ratio alone changes nothing (the off device cancels) ...
    chip = dyadsim.Chip.sample(net, seed=0, g_range=5.0)
    for e, Wq in chip.forward_weights.items():
        assert np.array_equal(Wq, W[e])
    # ... with mismatch the off device adds an error of the order of g_min = w_max/(r-1)
    G = net.to_graph()
    first = net.edges[0]
    Wz = G.edges[first]["weight"]
    Wz[0, :] = 0.0
    znet = dyadsim.Network.from_graph(G, loss=net.loss.name)
    for r, expect_zero in ((None, True), (3.0, False)):
        chip = dyadsim.Chip.sample(znet, seed=0, mismatch=0.1, g_range=r)
        row = chip.forward_weights[first][0]
        assert np.all(row == 0) == expect_zero
        if not expect_zero:
            g_min = np.max(np.abs(Wz)) / (r - 1)
            assert 1e-3 * g_min < np.max(np.abs(row)) < 1.0 * g_min


def test_lognormal_mismatch_statistics():
    net = dyadsim.mlp("60-60-40", seed=1)
    i, h, o = net.input, net.nodes[0], net.nodes[1]
    chip = dyadsim.Chip.sample(net, seed=5, mismatch=0.1)
    W = net.params[("W", i, h)]
    Wf = chip.forward_weights[(i, h)]
    Wb = chip.backward_weights[(h, o)]
    lf = np.log(Wf / W).ravel()
    assert abs(np.mean(lf)) < 0.01 and abs(np.std(lf) - 0.1) < 0.005
    # forward and backward devices are independent (separate crossbars)
    l1 = np.log(chip.forward_weights[(h, o)] / net.params[("W", h, o)]).ravel()
    l2 = np.log(Wb / net.params[("W", h, o)]).ravel()
    assert abs(np.corrcoef(l1, l2)[0, 1]) < 0.05
    ga = np.concatenate(list(chip.replace(activation_mismatch=0.2).activation_gain.values()))
    assert abs(np.std(np.log(ga)) - 0.2) < 0.03


def test_network_folds_gains_and_offsets():
    net = make_net("mlp", "tanh", "xent", 2, depth=3)  # identity output
    x, _ = make_batch(net, 2, 6)
    chip = dyadsim.Chip.sample(net, seed=1, mismatch=0.1, activation_mismatch=0.1, offset=0.05)
    assert chip.output_exact
    np.testing.assert_allclose(chip.network.predict(x), chip.predict(x), rtol=1e-12, atol=1e-14)
    tnet = make_net("mlp", "tanh", "mse", 2, depth=3)  # tanh output: its gain stays outside
    tchip = dyadsim.Chip.sample(tnet, seed=1, activation_mismatch=0.1)
    assert not tchip.output_exact
    assert not np.allclose(tchip.network.predict(x), tchip.predict(x))


# ----------------------------------------------------------------------------- noise
def test_thermal_noise_has_the_ou_variance():
    """Zero weights decouple the nodes: each hidden x, z is an Ornstein-Uhlenbeck process of
    stationary std ``noise``, so m = (x+z)/2 has std noise/sqrt(2) and d = x-z noise*sqrt(2)."""
    G = dyadsim.mlp("2-50-2", seed=0).to_graph()
    for e in G.edges:
        G.edges[e]["weight"] = 0.0 * G.edges[e]["weight"]
    for v in G.nodes:
        if "bias" in G.nodes[v]:
            G.nodes[v]["bias"] = 0.0 * np.asarray(G.nodes[v]["bias"])
    net = dyadsim.Network.from_graph(G)
    x = np.zeros((400, 2))
    y = np.zeros((400, 2))
    chip = dyadsim.Chip.sample(net, seed=0, noise=0.01)
    hid = net.slice(net.nodes[0])
    for method, kw in (("continuous", {"dt": 0.02, "t_end": 10.0}), ("steady", {"noise_steps": 30})):
        r = dyadsim.relax_chips(chip, x, y, method=method, **kw)
        assert np.std(r.m[0][:, hid]) == pytest.approx(0.01 / np.sqrt(2), rel=0.05), method
        assert np.std(r.d[0][:, hid]) == pytest.approx(0.01 * np.sqrt(2), rel=0.05), method


def test_noise_is_reproducible_from_the_seed():
    net, x, y = _case(seed=12)
    chip = dyadsim.Chip.sample(net, seed=7, noise=1e-3, mismatch=0.05)
    a = dyadsim.relax_chips(chip, x, y, method="euler").flat()
    b = dyadsim.relax_chips(chip, x, y, method="euler").flat()
    c = dyadsim.relax_chips(chip, x, y, method="euler", seed=1).flat()
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    again = dyadsim.Chip.sample(net, seed=7, noise=1e-3, mismatch=0.05)
    assert np.array_equal(dyadsim.relax_chips(again, x, y, method="euler").flat(), a)
    other = dyadsim.Chip.sample(net, seed=8, noise=1e-3, mismatch=0.05)
    assert not np.array_equal(dyadsim.relax_chips(other, x, y, method="euler").flat(), a)
    # the noisy gradient is near the noise-free one
    clean = dyadsim.relax_chips(chip.replace(noise=0.0), x, y).flat()
    assert np.linalg.norm(a - clean) < 0.1 * np.linalg.norm(clean)


def test_seed_reproduces_the_chip_and_draws_are_independent_per_effect():
    net, x, y = _case(seed=13)
    a = dyadsim.Chip.sample(net, seed=3, mismatch=0.1, offset=0.01)
    b = dyadsim.Chip.sample(net, seed=3, mismatch=0.1, offset=0.01)
    c = dyadsim.Chip.sample(net, seed=4, mismatch=0.1, offset=0.01)
    for e in net.edges:
        assert np.array_equal(a.forward_weights[e], b.forward_weights[e])
        assert not np.array_equal(a.forward_weights[e], c.forward_weights[e])
    # switching on another effect leaves the weight draws alone
    d = dyadsim.Chip.sample(net, seed=3, mismatch=0.1, offset=0.01, derivative_mismatch=0.3)
    for e in net.edges:
        assert np.array_equal(a.forward_weights[e], d.forward_weights[e])


# ----------------------------------------------------------------------------- batching over chips
@pytest.mark.parametrize("method", ["steady", "euler", "continuous"])
def test_batched_over_chips_equals_chip_by_chip(method):
    net, x, y = _case("dag", "tanh", "xent", seed=14)
    chips = [dyadsim.Chip.sample(net, seed=s, mismatch=0.1, tau_spread=0.3 * (s % 2),
                                 offset=0.005, adc_bits=10 if s == 2 else None,
                                 noise=1e-3 if (s == 1 and method != "continuous") else 0.0)
             for s in range(4)]
    kw = {"eta": 0.7} if method == "euler" else {}
    batch = dyadsim.relax_chips(chips, x, y, method=method, **kw)
    assert len(batch) == 4 and batch.flat().shape == (4, net.n_params)
    tol = 1e-7 if method == "continuous" else 1e-13
    for k, chip in enumerate(chips):
        one = dyadsim.relax_chips(chip, x, y, method=method, **kw)
        assert _maxrel(batch.grads[k], one.grads[0]) <= tol, k
        if method == "euler":
            assert batch.steps[k] == one.steps[0]
        assert isinstance(batch[k], dyadsim.GradientResult)
    assert np.array_equal(batch.stacked(("W",) + net.edges[0])[1], batch.grads[1][("W",) + net.edges[0]])


def test_chips_follow_their_network_and_refuse_another():
    net, x, y = _case(seed=15)
    chip = dyadsim.Chip.sample(net, seed=0, mismatch=0.1)
    moved = net.copy()
    for p in moved.params.values():
        p *= 0.5
    c2 = chip.with_network(moved)
    for e in net.edges:  # same devices, new weights
        np.testing.assert_allclose(c2.forward_weights[e], 0.5 * chip.forward_weights[e], rtol=1e-14)
    other = dyadsim.mlp([net.n_in, 7, net.n_out], seed=0)
    with pytest.raises(dyadsim.DyadsimError, match="another network"):
        chip.with_network(other)
    with pytest.raises(dyadsim.DyadsimError, match="different architectures"):
        dyadsim.relax_chips([chip, dyadsim.Chip.sample(other, seed=0)], x, y)
    with pytest.raises(dyadsim.DyadsimError, match="input x"):
        dyadsim.relax_chips(chip, np.zeros((2, net.n_in + 1)), y[:2])


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("kw,match", [
    ({"mismatchh": 0.1}, "unknown option"),
    ({"mismatch": -0.1}, "mismatch must be >= 0"),
    ({"offset": float("nan")}, "offset must be a number"),
    ({"noise": -1.0}, "noise"),
    ({"tau_spread": float("inf")}, "tau_spread"),
    ({"bits": 0}, "bits must be >= 1"),
    ({"bits": 2.5}, "bits must be an integer"),
    ({"adc_bits": 1}, "adc_bits must be >= 2"),
    ({"g_range": 1.0}, "g_range must be > 1"),
    ({"w_max": 0.0}, "w_max"),
    ({"gain": 0.0}, "gain"),
    ({"crossbar": "diagonal"}, "crossbar"),
])
def test_bad_options(kw, match):
    net = dyadsim.mlp("2-3-2", seed=0)
    with pytest.raises(dyadsim.DyadsimError, match=match):
        dyadsim.Chip.sample(net, seed=0, **kw)


def test_bad_seed_network_and_engine_arguments():
    net, x, y = _case(seed=16)
    for seed in (-1, 1.5, "a", None, True):
        with pytest.raises(dyadsim.DyadsimError, match="seed"):
            dyadsim.Chip.sample(net, seed=seed)
    with pytest.raises(TypeError):
        dyadsim.Chip.sample(net)  # the seed is required
    with pytest.raises(dyadsim.DyadsimError, match="Network"):
        dyadsim.Chip.sample("net", seed=0)
    cnn = dyadsim.network.Network.from_graph(_conv_graph())
    with pytest.raises(dyadsim.DyadsimError, match="dense"):
        dyadsim.Chip.sample(cnn, seed=0)
    chip = dyadsim.Chip.sample(net, seed=0)
    with pytest.raises(dyadsim.DyadsimError, match="chip method"):
        dyadsim.relax_chips(chip, x, y, method="magic")
    with pytest.raises(dyadsim.DyadsimError, match="eta"):
        dyadsim.relax_chips(chip, x, y, method="euler", eta=2.5)
    with pytest.raises(dyadsim.DyadsimError, match="Chip"):
        dyadsim.relax_chips([chip, net], x, y)
    with pytest.raises(dyadsim.DyadsimError, match="at least one"):
        dyadsim.relax_chips([], x, y)
    with pytest.raises(dyadsim.DyadsimError, match="seed"):
        dyadsim.relax_chips(chip, x, y, seed=-3)


def _conv_graph():
    import networkx as nx

    rng = np.random.default_rng(0)
    G = nx.DiGraph()
    G.add_node("in", shape=(1, 4, 4))
    G.add_node("c", shape=(2, 3, 3), activation="tanh")
    G.add_node("out", size=2, activation="identity")
    G.add_edge("in", "c", op="conv2d", weight=rng.standard_normal((2, 1, 2, 2)))
    G.add_edge("c", "out", weight=rng.standard_normal((2, 18)))
    return G
