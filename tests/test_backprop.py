"""Exact digital backprop (the reference everything else is compared with) against central
finite differences of ``net.loss_value``, on random MLPs and DAGs with skip connections,
every activation, both losses (real, one-hot and soft targets); batch semantics."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given

import dyadsim
from conftest import ACTIVATIONS, cases, fd_grads, make_batch, make_case, make_net, relu_margin

H = 1e-6  # central differences: truncation ~H^2, rounding ~eps*|loss|/H ~ 1e-10


def _relu_safe(case, min_margin=1e-3):
    """Re-draw the inputs until no relu pre-activation is within min_margin of its kink."""
    net = case.net
    x, y = case.x, case.y
    k = 0
    while relu_margin(net, x) < min_margin:
        k += 1
        assert k < 200, "could not find inputs away from the relu kink"
        x, y = make_batch(net, case.seed + 1000 * k, x.shape[0], case.target)
    return x, y


def _check_against_fd(net, x, y):
    before = {k: v.copy() for k, v in net.params.items()}
    g = dyadsim.backprop(net, x, y)
    fd = fd_grads(net, x, y, H)
    # finite differences restored every parameter exactly
    for k in before:
        np.testing.assert_array_equal(net.params[k], before[k])
    assert list(g) == list(net.params)
    loss = net.loss_value(x, y)
    assert g.loss == pytest.approx(loss, rel=1e-13, abs=1e-15)
    atol = 2e-8 * max(1.0, abs(loss))
    for k in net.params:
        assert g[k].shape == net.params[k].shape
        np.testing.assert_allclose(g[k], fd[k], rtol=1e-6, atol=atol, err_msg=str(k))
    return g, fd


def test_backprop_vs_finite_differences_seeded(case):
    x, y = _relu_safe(case)
    g, fd = _check_against_fd(case.net, x, y)
    # the check is not vacuous: the gradient is not zero
    assert dyadsim.compare(g, fd).summary.rel_error < 1e-6
    assert g.norm() > 1e-6


@given(cases(depth=(1, 5)))
def test_backprop_vs_finite_differences_random(c):
    assume(relu_margin(c.net, c.x) > 1e-3)
    _check_against_fd(c.net, c.x, c.y)


@pytest.mark.parametrize("act", ACTIVATIONS)
@pytest.mark.parametrize("target", ["onehot", "soft"])
def test_xent_with_output_activation(act, target):
    """xent after a non-identity output layer (softmax on top of sigma_L)."""
    net = dyadsim.mlp([3, 4, 3], activation="tanh", output_activation=act, loss="xent", seed=3)
    x, y = make_batch(net, 3, 4, target)
    k = 0
    while relu_margin(net, x) < 1e-3:
        k += 1
        x, y = make_batch(net, 3 + k, 4, target)
    _check_against_fd(net, x, y)


def test_single_sample_equals_batch_of_one(case):
    net = case.net
    x, y = case.x[0], case.y[0]
    g1 = dyadsim.backprop(net, x, y)
    gb = dyadsim.backprop(net, x[None, :], y[None, :])
    for k in gb:
        assert g1[k].shape == net.params[k].shape
        np.testing.assert_allclose(g1[k], gb[k], rtol=1e-14, atol=1e-16)
    assert g1.loss == pytest.approx(gb.loss, rel=1e-14)


def test_batch_gradient_is_mean_of_per_sample(case):
    net, X, Y = case.net, case.x, case.y
    g = dyadsim.backprop(net, X, Y)
    per = [dyadsim.backprop(net, X[i], Y[i]) for i in range(X.shape[0])]
    for k in g:
        np.testing.assert_allclose(g[k], np.mean([p[k] for p in per], axis=0),
                                   rtol=1e-12, atol=1e-15)
    assert g.loss == pytest.approx(np.mean([p.loss for p in per]), rel=1e-13, abs=1e-15)


def test_float32_backprop_close_to_float64(case):
    g64 = dyadsim.backprop(case.net, case.x, case.y)
    g32 = dyadsim.backprop(case.net, case.x, case.y, dtype=np.float32)
    assert all(v.dtype == np.float32 for v in g32.values())
    cmp = dyadsim.compare(g32, g64)
    assert cmp.summary.rel_error < 1e-4


def test_linear_mse_closed_form():
    """One identity layer with mse: dC/dW = mean (W x + b - y) x^T, dC/db = mean (W x + b - y)."""
    net = dyadsim.mlp("3-2", activation="identity", loss="mse", seed=4)
    x, y = make_batch(net, 4, 5)
    W, b = net.weight("input", "output"), net.bias("output")
    r = x @ W.T + b - y
    g = dyadsim.backprop(net, x, y)
    np.testing.assert_allclose(g[("W", "input", "output")], r.T @ x / 5, rtol=1e-13)
    np.testing.assert_allclose(g[("b", "output")], r.mean(axis=0), rtol=1e-13)


def test_softmax_xent_closed_form():
    """Identity output with xent: dC/db = mean (softmax(a) * sum(y) - y), soft targets too."""
    net = dyadsim.mlp("3-4", loss="xent", seed=5)
    x, y = make_batch(net, 5, 6, "soft")
    a = net.predict(x)
    p = np.exp(a - a.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    g = dyadsim.backprop(net, x, y)
    np.testing.assert_allclose(g[("b", "output")], (p - y).mean(axis=0), rtol=1e-12, atol=1e-15)


def test_backprop_does_not_modify_params_or_inputs():
    c = make_case("dag", "mixed", "xent", "soft", seed=9, depth=4)
    before = {k: v.copy() for k, v in c.net.params.items()}
    x0, y0 = c.x.copy(), c.y.copy()
    dyadsim.backprop(c.net, c.x, c.y)
    for k in before:
        np.testing.assert_array_equal(c.net.params[k], before[k])
    np.testing.assert_array_equal(c.x, x0)
    np.testing.assert_array_equal(c.y, y0)


def test_backprop_bad_dtype():
    net = make_net()
    x, y = make_batch(net, 0)
    with pytest.raises(dyadsim.DyadsimError, match="dtype"):
        dyadsim.backprop(net, x, y, dtype=np.float16)


def test_backprop_bad_arguments():
    net = make_net()
    x, y = make_batch(net, 0)
    with pytest.raises(dyadsim.DyadsimError, match=r"backprop\(\): got an unexpected keyword argument 'eta'"):
        dyadsim.backprop(net, x, y, eta=1.0)
    with pytest.raises(dyadsim.DyadsimError, match="missing a required argument: 'y'"):
        dyadsim.backprop(net, x)
    with pytest.raises(dyadsim.DyadsimError, match="unknown dtype"):
        dyadsim.backprop(net, x, y, dtype="flaot64")


@pytest.mark.filterwarnings("error::RuntimeWarning")
def test_backprop_overflow_is_a_convergence_error():
    """Inf gradients are never returned: weights of 1e200 on a relu net overflow the forward
    pass, inputs of 1e300 on a linear one overflow the gradient, float32 overflows the cast."""
    net = dyadsim.mlp("3-4-4-2", activation="relu", seed=0)
    for k in net.params:
        if k[0] == "W":
            net.params[k] = net.params[k] * 1e200
    x, y = np.ones((2, 3)), np.ones((2, 2))
    with pytest.raises(dyadsim.ConvergenceError, match="activations .* of layer 'h2' overflowed"):
        dyadsim.backprop(net, x, y)
    lin = dyadsim.mlp("3-4-2", activation="identity", seed=0)
    with pytest.raises(dyadsim.ConvergenceError, match=r"gradient of W\[input->h1\] overflowed"):
        dyadsim.backprop(lin, np.full((2, 3), 1e300), y)
    with pytest.raises(dyadsim.ConvergenceError, match="input x overflows float32"):
        dyadsim.backprop(lin, np.full((2, 3), 1e100), y, dtype=np.float32)
    # finite float64 inputs of 1e100 are fine in float64 (tanh saturates)
    g = dyadsim.backprop(dyadsim.mlp("3-4-2", seed=0), np.full((2, 3), 1e100), y)
    assert all(np.all(np.isfinite(v)) for v in g.values())
