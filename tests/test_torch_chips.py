"""The torch chip engine (``relax_chips(..., backend="torch")``), run on CPU torch.

Oracles:

* torch autograd of the network written here with plain torch ops, for ideal chips
  (an ideal chip computes exact backprop);
* the same chip's perturbed model written here as a plain torch forward pass whose
  autograd gives the steady state of a chip with mismatched forward weights and activation
  gains when the backward crossbar is shared and the derivative units are exact;
* the numpy chip engine, per tensor (float64 within 1e-10), step counts included;
* with thermal noise, the readout statistics over many chips against the numpy engine
  (the draws differ between libraries), and reproducibility from the seed within torch.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

import dyadsim

HAVE_TORCH = importlib.util.find_spec("torch") is not None
pytestmark = pytest.mark.skipif(not HAVE_TORCH, reason="torch (an optional extra) is not installed")

NONIDEAL = dict(mismatch=0.1, activation_mismatch=0.05, derivative_mismatch=0.1, offset=1e-2,
                tau_spread=0.3, bits=6, g_range=20.0)


def _case(spec="6-5-4-3", act="tanh", loss="xent", B=4, seed=0):
    net = dyadsim.mlp(spec, activation=act, loss=loss, seed=seed)
    rng = np.random.default_rng(seed + 1)
    x = rng.standard_normal((B, net.n_in))
    y = np.eye(net.n_out)[rng.integers(0, net.n_out, B)] if loss == "xent" else \
        rng.standard_normal((B, net.n_out))
    return net, x, y


def _maxrel(g, ref):
    return max(float(np.linalg.norm(np.asarray(g[k]) - ref[k]) / max(np.linalg.norm(ref[k]), 1e-300))
               for k in ref)


def _torch_model_grads(Ws, bs, acts, loss, x, y, ga=None):
    """Autograd of a plain torch MLP: u_l = W_l a_{l-1} + b_l, a_l = ga_l * act_l(u_l)."""
    import torch

    fns = {"tanh": torch.tanh, "sigmoid": torch.sigmoid, "relu": torch.relu, "identity": lambda u: u}
    W = [torch.tensor(w, dtype=torch.float64, requires_grad=True) for w in Ws]
    b = [torch.tensor(v, dtype=torch.float64, requires_grad=True) for v in bs]
    a = torch.tensor(x, dtype=torch.float64)
    for i, (w, c) in enumerate(zip(W, b)):
        a = fns[acts[i]](a @ w.T + c)
        if ga is not None:
            a = a * torch.tensor(ga[i], dtype=torch.float64)
    Y = torch.tensor(y, dtype=torch.float64)
    if loss == "xent":
        per = -(Y * torch.log_softmax(a, dim=1)).sum(dim=1)
    else:
        per = 0.5 * ((a - Y) ** 2).sum(dim=1)
    L = per.mean()
    gW = torch.autograd.grad(L, W + b)
    return [g.numpy() for g in gW], float(L.detach())


def _net_layers(net):
    prev = net.input
    Ws, bs, acts, keys = [], [], [], []
    for v in net.nodes:
        Ws.append(net.params[("W", prev, v)])
        bs.append(net.bias_vector(v))
        acts.append(net.activations[v].name)
        keys.append((("W", prev, v), ("b", v)))
        prev = v
    return Ws, bs, acts, keys


@pytest.mark.parametrize("act,loss", [("tanh", "xent"), ("sigmoid", "mse"), ("relu", "mse")])
@pytest.mark.parametrize("method", ["steady", "euler", "continuous"])
def test_ideal_chips_equal_torch_autograd(act, loss, method):
    net, x, y = _case("5-7-6-3", act, loss)
    chips = [dyadsim.Chip.sample(net, seed=[3, r]) for r in range(3)]
    res = dyadsim.relax_chips(chips, x, y, method=method, backend="torch", device="cpu")
    Ws, bs, acts, keys = _net_layers(net)
    grads, L = _torch_model_grads(Ws, bs, acts, loss, x, y)
    ref = {}
    for (kW, kb), gW, gb in zip(keys, grads[:len(Ws)], grads[len(Ws):]):
        ref[kW], ref[kb] = gW, gb
    for g in res.grads:
        assert _maxrel(g, ref) <= 1e-9
        assert g.loss == pytest.approx(L, rel=1e-12)


def test_shared_crossbar_chip_equals_autograd_of_its_perturbed_model():
    """Shared crossbar, exact units, no offsets: the chip's steady state is backprop of its
    own programmed (quantized, mismatched) weights, written here as a plain torch model."""
    net, x, y = _case("5-6-4-3", "tanh", "mse")
    chip = dyadsim.Chip.sample(net, seed=7, crossbar="shared", mismatch=0.2, bits=5)
    res = dyadsim.relax_chips(chip, x, y, backend="torch")
    Wf = chip.forward_weights
    Ws, bs, acts, keys = _net_layers(net)
    prev, pert = net.input, []
    for v in net.nodes:
        pert.append(Wf[(prev, v)])
        prev = v
    assert max(np.max(np.abs(p - w)) for p, w in zip(pert, Ws)) > 1e-2  # really perturbed
    grads, _ = _torch_model_grads(pert, bs, acts, "mse", x, y)
    for i, (kW, kb) in enumerate(keys):
        np.testing.assert_allclose(res.grads[0][kW], grads[i], rtol=1e-10, atol=1e-14)
        np.testing.assert_allclose(res.grads[0][kb], grads[len(Ws) + i], rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("crossbar", ["separate", "shared"])
@pytest.mark.parametrize("method,kw", [("steady", {}), ("euler", {}), ("euler", {"eta": 0.5}),
                                       ("euler", {"steps": 7}), ("continuous", {})])
def test_matches_numpy_engine_float64(crossbar, method, kw):
    net, x, y = _case("6-5-4-3", "tanh", "xent")
    chips = [dyadsim.Chip.sample(net, seed=[1, r], crossbar=crossbar, **NONIDEAL) for r in range(4)]
    a = dyadsim.relax_chips(chips, x, y, method=method, **kw)
    b = dyadsim.relax_chips(chips, x, y, method=method, backend="torch", **kw)
    assert b.info["backend"] == "torch" and b.info["device"] == "cpu"
    for ga, gb in zip(a.grads, b.grads):
        for key in ga:
            assert np.max(np.abs(ga[key] - gb[key])) <= 1e-10 * max(1.0, np.max(np.abs(ga[key])))
        assert gb.loss == pytest.approx(ga.loss, rel=1e-10)
    if method == "euler":
        assert np.array_equal(a.steps, b.steps)
        assert np.array_equal(a.converged, b.converged)


def test_adc_readout_matches_numpy():
    net, x, y = _case("6-8-3", "tanh", "xent")
    chips = [dyadsim.Chip.sample(net, seed=[2, r], adc_bits=6, mismatch=0.05) for r in range(3)]
    a = dyadsim.relax_chips(chips, x, y)
    b = dyadsim.relax_chips(chips, x, y, backend="torch")
    np.testing.assert_allclose(b.flat(), a.flat(), rtol=0, atol=1e-12)
    exact = dyadsim.relax_chips([c.replace(adc_bits=None) for c in chips], x, y, backend="torch")
    assert np.max(np.abs(exact.flat() - b.flat())) > 1e-4  # the converters do quantize


def test_continuous_settles_like_numpy_and_steady_state_is_exact():
    net, x, y = _case("6-5-4-3", "tanh", "mse")
    chips = [dyadsim.Chip.sample(net, seed=[5, r], tau_spread=0.5, mismatch=0.05) for r in range(3)]
    a = dyadsim.relax_chips(chips, x, y, method="continuous")
    b = dyadsim.relax_chips(chips, x, y, method="continuous", backend="torch", dt=0.02)
    st = dyadsim.relax_chips(chips, x, y, method="steady")
    np.testing.assert_allclose(b.flat(), st.flat(), rtol=0, atol=1e-10 * np.max(np.abs(st.flat())))
    # exponential Euler's settling time is first order in dt
    np.testing.assert_allclose(b.t_settle, a.t_settle, rtol=0.05)
    r0 = dyadsim.relax_continuous(chips[0], x, y, backend="torch")
    assert r0.t_settle > 0 and _maxrel(r0.grads, st.grads[0]) <= 1e-9


def test_float32_close_to_float64():
    net, x, y = _case("6-5-4-3", "tanh", "xent")
    chips = [dyadsim.Chip.sample(net, seed=[1, r], **NONIDEAL) for r in range(3)]
    for method in ("steady", "euler"):
        a = dyadsim.relax_chips(chips, x, y, method=method)
        b = dyadsim.relax_chips(chips, x, y, method=method, backend="torch", dtype=np.float32)
        assert all(t.dtype == np.float32 for t in b.grads[0].values())
        assert np.max(np.abs(a.flat() - b.flat())) <= 1e-4 * np.max(np.abs(a.flat()))


def test_relax_of_a_chip_on_torch():
    net, x, y = _case("6-5-4-3", "tanh", "xent")
    chip = dyadsim.Chip.sample(net, seed=4, **NONIDEAL)
    for kw in ({"schedule": "wavefront"}, {"eta": 0.7}):
        a = dyadsim.relax(chip, x, y, **kw)
        b = dyadsim.relax(chip, x, y, backend="torch", **kw)
        assert _maxrel(b.grads, a.grads) <= 1e-10
        assert b.steps == a.steps


@pytest.mark.parametrize("method", ["steady", "euler", "continuous"])
def test_noise_statistics_match_numpy_and_are_reproducible(method):
    net, x, y = _case("6-5-4-3", "tanh", "mse", B=3)
    chips = [dyadsim.Chip.sample(net, seed=[9, r], noise=0.05) for r in range(300)]
    kw = {"t_end": 40.0} if method == "continuous" else {}
    A = dyadsim.relax_chips(chips, x, y, method=method, **kw).flat()
    rb = dyadsim.relax_chips(chips, x, y, method=method, backend="torch", **kw)
    B = rb.flat()
    assert np.array_equal(B, dyadsim.relax_chips(chips, x, y, method=method, backend="torch", **kw).flat())
    assert not np.array_equal(B, dyadsim.relax_chips(chips, x, y, method=method, backend="torch",
                                                     seed=1, **kw).flat())
    clean = dyadsim.relax_chips([c.replace(noise=0.0) for c in chips[:1]], x, y).flat()[0]
    sa, sb = A.std(axis=0), B.std(axis=0)
    assert np.all(sb > 0)
    # means agree within 5 standard errors; variances within a factor the chi-square
    # spread of 300 samples allows (ratio within [0.6, 1.6] per parameter)
    se = np.sqrt((sa ** 2 + sb ** 2) / len(chips))
    assert np.all(np.abs(A.mean(axis=0) - B.mean(axis=0)) <= 5 * se + 1e-12)
    ratio = sb ** 2 / sa ** 2
    assert 0.6 <= ratio.min() and ratio.max() <= 1.6
    # and the noise averages out to the noise-free readout
    assert np.all(np.abs(B.mean(axis=0) - clean) <= 5 * sb / np.sqrt(len(chips)) + 1e-12)


def test_errors_are_clear():
    net, x, y = _case("6-5-3", "tanh", "xent")
    chip = dyadsim.Chip.sample(net, seed=0)
    with pytest.raises(dyadsim.DyadsimError, match="solver"):
        dyadsim.relax_chips(chip, x, y, method="continuous", solver="RK45", backend="torch")
    with pytest.raises(dyadsim.DyadsimError, match="backend"):
        dyadsim.relax_chips(chip, x, y, backend="jax")
    with pytest.raises(dyadsim.DyadsimError, match="device"):
        dyadsim.relax_chips(chip, x, y, backend="torch", device="nonsense")
    with pytest.raises(dyadsim.DyadsimError, match="needs backend='torch'"):
        dyadsim.relax_chips(chip, x, y, device="cuda")
    with pytest.raises(dyadsim.DyadsimError, match="Chip"):
        dyadsim.relax_chips([net], x, y, backend="torch")
    with pytest.raises(dyadsim.DyadsimError, match="steps"):
        dyadsim.relax_chips(chip, x, y, method="euler", steps=-1, backend="torch")
    with pytest.raises(dyadsim.DyadsimError, match=">= 2"):
        dyadsim.relax_chips(dyadsim.Chip.sample(net, seed=0, tau_spread=2.0), x, y,
                            method="euler", eta=1.9, backend="torch")
