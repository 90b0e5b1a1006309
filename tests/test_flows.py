"""The energy and the saddle flows (docs/theory.md, section 2), checked by finite differences:
flow = (+dE/dx, -dE/dz); flow_md is the same flow in (m, d); flow_jacobian is the
Jacobian of flow (single sample and batch, in the ordering its docstring documents)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given

import dyadsim
from conftest import cases, make_batch, make_case, make_net, user_error

H = 1e-6


def _random_states(net, x, seed, scale=0.7, min_margin=1e-3):
    """Random (x, z) states of the batch's shape whose relu pre-activations W m + beta stay
    at least min_margin away from the kink (finite differences across a kink are useless)."""
    X = np.atleast_2d(x)
    W = net.W.toarray()
    beta = net.beta(X)
    # relu neurons whose pre-activation depends on the state (nodes fed by the input only
    # have u = beta, which no state perturbation moves across the kink)
    relu = np.concatenate([np.full(net.sizes[v], net.activations[v].name == "relu"
                                   and any(p != net.input for p in net.preds[v]))
                           for v in net.nodes])
    for k in range(200):
        rng = np.random.default_rng([seed, k])
        xs = scale * rng.standard_normal((X.shape[0], net.n))
        zs = scale * rng.standard_normal((X.shape[0], net.n))
        u = (0.5 * (xs + zs)) @ W.T + beta
        if not relu.any() or np.min(np.abs(u[:, relu])) > min_margin:
            return xs, zs
    raise RuntimeError("no state away from the relu kink")


def _fd_energy_grads(net, xs, zs, x0, y):
    """dE/dx, dE/dz by central differences; samples are independent, so one column of every
    sample is perturbed at once."""
    gx = np.zeros_like(xs)
    gz = np.zeros_like(zs)
    for i in range(net.n):
        for arr, g in ((xs, gx), (zs, gz)):
            old = arr[:, i].copy()
            arr[:, i] = old + H
            ep = dyadsim.energy(net, xs, zs, x0, y)
            arr[:, i] = old - H
            em = dyadsim.energy(net, xs, zs, x0, y)
            arr[:, i] = old
            g[:, i] = (np.asarray(ep) - np.asarray(em)) / (2 * H)
    return gx, gz


def _check_energy_vs_flow(net, x0, y, seed):
    xs, zs = _random_states(net, x0, seed)
    dx, dz = dyadsim.flow(net, xs, zs, x0, y)
    assert dx.shape == dz.shape == xs.shape
    gx, gz = _fd_energy_grads(net, xs, zs, x0, y)
    scale = max(1.0, float(np.max(np.abs(dx))), float(np.max(np.abs(dz))))
    np.testing.assert_allclose(dx, gx, rtol=1e-6, atol=1e-7 * scale)
    np.testing.assert_allclose(dz, -gz, rtol=1e-6, atol=1e-7 * scale)


def test_flow_is_energy_gradient_batch(case):
    _check_energy_vs_flow(case.net, case.x, case.y, seed=1)


def test_flow_is_energy_gradient_single_sample(case):
    net, x0, y = case.net, case.x[0], case.y[0]
    xs, zs = _random_states(net, x0, seed=2)
    xs, zs = xs[0], zs[0]
    e = dyadsim.energy(net, xs, zs, x0, y)
    assert isinstance(e, float)
    dx, dz = dyadsim.flow(net, xs, zs, x0, y)
    assert dx.shape == dz.shape == (net.n,)
    gx = np.zeros(net.n)
    gz = np.zeros(net.n)
    for i in range(net.n):
        for arr, g in ((xs, gx), (zs, gz)):
            old = arr[i]
            arr[i] = old + H
            ep = dyadsim.energy(net, xs, zs, x0, y)
            arr[i] = old - H
            em = dyadsim.energy(net, xs, zs, x0, y)
            arr[i] = old
            g[i] = (ep - em) / (2 * H)
    np.testing.assert_allclose(dx, gx, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(dz, -gz, rtol=1e-6, atol=1e-7)
    # a single sample is the batch's first row
    Dx, Dz = dyadsim.flow(net, xs[None], zs[None], x0[None], y[None])
    np.testing.assert_allclose(Dx[0], dx, rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(Dz[0], dz, rtol=1e-14, atol=1e-15)


@given(cases(depth=(1, 4)))
def test_flow_is_energy_gradient_random(c):
    _check_energy_vs_flow(c.net, c.x, c.y, seed=c.seed)


def test_energy_closed_form(case):
    """E = d . F(m) + C(m_L, y) per sample, with F(m) = sigma(W m + beta) - m."""
    net, x0, y = case.net, case.x, case.y
    xs, zs = _random_states(net, x0, seed=3)
    m, d = 0.5 * (xs + zs), xs - zs
    u = m @ net.W.toarray().T + net.beta(x0)
    F = np.concatenate([net.activations[v].f(u[:, net.slice(v)]) for v in net.nodes], 1) - m
    want = np.sum(d * F, axis=1) + net.loss.value(m[:, net.slice(net.output)], y)
    np.testing.assert_allclose(dyadsim.energy(net, xs, zs, x0, y), want, rtol=1e-12, atol=1e-13)


def test_flow_md_is_the_transformed_flow(case):
    net, x0, y = case.net, case.x, case.y
    xs, zs = _random_states(net, x0, seed=4)
    dx, dz = dyadsim.flow(net, xs, zs, x0, y)
    dm, dd = dyadsim.flow_md(net, 0.5 * (xs + zs), xs - zs, x0, y)
    np.testing.assert_allclose(dm, 0.5 * (dx + dz), rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(dd, dx - dz, rtol=1e-12, atol=1e-13)


def test_flow_md_closed_form(case):
    """dm = sigma(W m + beta) - m,  dd = W^T (sigma'(W m + beta) * d) - d + g."""
    net, x0, y = case.net, case.x, case.y
    rng = np.random.default_rng(5)
    m = rng.standard_normal((x0.shape[0], net.n))
    d = rng.standard_normal((x0.shape[0], net.n))
    W = net.W.toarray()
    u = m @ W.T + net.beta(x0)
    sig = np.concatenate([net.activations[v].f(u[:, net.slice(v)]) for v in net.nodes], 1)
    dsig = np.concatenate([net.activations[v].df(u[:, net.slice(v)]) for v in net.nodes], 1)
    g = np.zeros_like(m)
    g[:, net.slice(net.output)] = net.loss.grad(m[:, net.slice(net.output)], y)
    dm, dd = dyadsim.flow_md(net, m, d, x0, y)
    np.testing.assert_allclose(dm, sig - m, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(dd, (dsig * d) @ W - d + g, rtol=1e-12, atol=1e-13)


def _pack(xs, zs):
    """[x_0, z_0, x_1, z_1, ...]: the ordering flow_jacobian documents for a batch."""
    return np.stack([xs, zs], axis=1).ravel()


def _unpack(v, B, n):
    s = v.reshape(B, 2, n)
    return s[:, 0].copy(), s[:, 1].copy()


def _fd_jacobian(net, xs, zs, x0, y):
    B, n = xs.shape
    v0 = _pack(xs, zs)
    J = np.zeros((v0.size, v0.size))
    for j in range(v0.size):
        vp, vm = v0.copy(), v0.copy()
        vp[j] += H
        vm[j] -= H
        fp = _pack(*dyadsim.flow(net, *_unpack(vp, B, n), x0, y))
        fm = _pack(*dyadsim.flow(net, *_unpack(vm, B, n), x0, y))
        J[:, j] = (fp - fm) / (2 * H)
    return J


@pytest.mark.parametrize("batch", [1, 2])
def test_flow_jacobian_vs_finite_differences(case, batch):
    net = case.net
    x0, y = case.x[:batch], case.y[:batch]
    xs, zs = _random_states(net, x0, seed=6)
    J = dyadsim.flow_jacobian(net, xs, zs, x0, y)
    assert J.shape == (2 * net.n * batch,) * 2
    assert hasattr(J, "tocsr"), "the Jacobian is a scipy sparse matrix"
    Jfd = _fd_jacobian(net, xs, zs, x0, y)
    scale = max(1.0, float(np.max(np.abs(Jfd))))
    np.testing.assert_allclose(J.toarray(), Jfd, rtol=1e-6, atol=1e-7 * scale)
    if batch == 2:  # block diagonal: samples do not couple
        n2 = 2 * net.n
        assert not np.any(J.toarray()[:n2, n2:]) and not np.any(J.toarray()[n2:, :n2])


def test_flow_jacobian_single_sample_1d(case):
    """One sample given as 1-D arrays: a (2n, 2n) matrix over [x, z]."""
    net, x0, y = case.net, case.x[0], case.y[0]
    xs, zs = _random_states(net, x0, seed=7)
    xs, zs = xs[0], zs[0]
    J = dyadsim.flow_jacobian(net, xs, zs, x0, y).toarray()
    assert J.shape == (2 * net.n, 2 * net.n)
    Jfd = _fd_jacobian(net, xs[None], zs[None], x0[None], y[None])
    np.testing.assert_allclose(J, Jfd, rtol=1e-6, atol=1e-7 * max(1.0, np.max(np.abs(Jfd))))


@given(cases(depth=(1, 4), batch=(1, 2)))
def test_flow_jacobian_random(c):
    xs, zs = _random_states(c.net, c.x, seed=c.seed)
    J = dyadsim.flow_jacobian(c.net, xs, zs, c.x, c.y).toarray()
    Jfd = _fd_jacobian(c.net, xs, zs, c.x, c.y)
    np.testing.assert_allclose(J, Jfd, rtol=1e-6, atol=1e-7 * max(1.0, np.max(np.abs(Jfd))))


def test_linearisation_eigenvalues_are_minus_one(case):
    """(m, d) decouple into block-triangular form with D W - I and W^T D - I on the
    diagonal, so J + I is nilpotent: (J + I)^(2L) = 0 at any state."""
    net = case.net
    x0, y = case.x[:1], case.y[:1]
    xs, zs = _random_states(net, x0, seed=8)
    J = dyadsim.flow_jacobian(net, xs, zs, x0, y).toarray()
    N = J + np.eye(J.shape[0])
    P = np.linalg.matrix_power(N, 2 * net.depth)
    assert np.max(np.abs(P)) <= 1e-10 * max(1.0, np.max(np.abs(N))) ** (2 * net.depth)


def test_flow_vanishes_and_energy_is_loss_at_steady_state(case):
    net, x0, y = case.net, case.x, case.y
    res = dyadsim.relax(net, x0, y)
    dx, dz = dyadsim.flow(net, res.x, res.z, x0, y)
    scale = max(1.0, float(np.max(np.abs(res.x))))
    assert np.max(np.abs(dx)) <= 1e-13 * scale and np.max(np.abs(dz)) <= 1e-13 * scale
    e = dyadsim.energy(net, res.x, res.z, x0, y)
    aL = net.predict(x0)
    np.testing.assert_allclose(e, net.loss.value(aL, y), rtol=1e-12, atol=1e-14)


def test_zero_state_flow():
    """From x = z = 0: dm = sigma(beta), dd = g(0) (cost gradient at a zero output)."""
    c = make_case("mlp", "sigmoid", "mse", seed=3)
    net = c.net
    zero = np.zeros((c.x.shape[0], net.n))
    dm, dd = dyadsim.flow_md(net, zero, zero, c.x, c.y)
    beta = net.beta(c.x)
    sig = np.concatenate([net.activations[v].f(beta[:, net.slice(v)]) for v in net.nodes], 1)
    np.testing.assert_allclose(dm, sig, rtol=1e-14)
    want = np.zeros_like(zero)
    want[:, net.slice(net.output)] = -c.y
    np.testing.assert_allclose(dd, want, rtol=1e-14)


def test_state_shape_and_value_errors():
    net = make_net("mlp", "tanh", "mse", seed=0)
    x0, y = make_batch(net, 0, 2)
    good = np.zeros((2, net.n))
    for fn in (dyadsim.energy, dyadsim.flow, dyadsim.flow_jacobian):
        with user_error(rf"state x has shape \(2, {net.n + 1}\)"):
            fn(net, np.zeros((2, net.n + 1)), good, x0, y)
        with user_error("state z has shape"):
            fn(net, good, np.zeros((3, net.n)), x0, y)
        bad = good.copy()
        bad[0, 0] = np.nan
        with user_error("state z contains NaN"):
            fn(net, good, bad, x0, y)
        with user_error("input x has shape"):
            fn(net, good, good, np.zeros((2, net.n_in + 1)), y)
    with user_error("state m has shape"):
        dyadsim.flow_md(net, np.zeros(net.n + 2), np.zeros(net.n), x0[0], y[0])
    with user_error("state d contains NaN"):
        dyadsim.flow_md(net, good, np.full_like(good, np.inf), x0, y)
