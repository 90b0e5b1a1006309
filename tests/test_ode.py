"""The continuous-time saddle flow integrated to steady state (``relax_continuous``).

Oracles that share no code with the solvers: closed forms of the linear (identity) flows,
a forward pass / backprop / flow and a fixed-step RK4 written out here, backprop and
finite differences for the gradients and for the Jacobians, a reference ODE solution for the
collocation scheme."""

from __future__ import annotations

import functools
import math
import signal
from contextlib import contextmanager

import numpy as np
import pytest
from conftest import (
    ACTIVATIONS,
    LOSSES,
    TARGETS,
    fd_grads,
    make_batch,
    make_case,
    make_net,
    seeded_case,
    user_error,
)
from scipy.optimize import brentq

import dyadsim
from dyadsim.dynamics import _etd
from dyadsim.dynamics._ode import jacobian_md

# one seeded case per activation x loss, alternating MLP and DAG (keeps the ODE part fast)
ODE_SPECS = [("mlp" if i % 2 == 0 else "dag", act, loss, TARGETS[loss][i % len(TARGETS[loss])])
             for i, (act, loss) in enumerate((a, l) for a in ACTIVATIONS for l in LOSSES)]
METHOD_STATES = [("ETD", "md"), ("ETD", "xz"), ("DOP853", "md"),
                 ("DOP853", "xz")]


def _small(spec, batch=2, depth=3):
    return seeded_case(spec, depth=depth, batch=batch)


def worst_tensor_error(grads, ref) -> float:
    """The largest per-tensor relative error ||g - g_ref|| / ||g_ref|| (written out here)."""
    worst = 0.0
    for key, r in ref.items():
        den = float(np.linalg.norm(r))
        num = float(np.linalg.norm(np.asarray(grads[key]) - r))
        worst = max(worst, num / den if den > 0 else num)
    return worst


@contextmanager
def time_limit(seconds):
    """Fail instead of hanging (the NaN-tolerance regression used to loop forever)."""
    def handler(signum, frame):
        raise TimeoutError(f"did not return within {seconds} s")
    old = signal.signal(signal.SIGALRM, handler)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


# ----------------------------------------------------------------------------- an MLP, written out
def _layers(net):
    """[(W, b, activation name)] of an MLP, input to output."""
    out, prev = [], net.input
    for v in net.nodes:
        assert net.preds[v] == (prev,) or list(net.preds[v]) == [prev]
        out.append((net.params[("W", prev, v)], net.params[("b", v)], net.activations[v].name))
        prev = v
    return out


def _act(name, u):
    if name == "tanh":
        t = np.tanh(u)
        return t, 1.0 - t * t
    if name == "identity":
        return u.copy(), np.ones_like(u)
    if name == "sigmoid":
        s = 1.0 / (1.0 + np.exp(-u))
        return s, s * (1.0 - s)
    raise NotImplementedError(name)


def _loss_grad(loss, a, y):
    if loss == "mse":
        return a - y
    p = np.exp(a - a.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    return p * y.sum(axis=1, keepdims=True) - y


def reference_flow(layers, loss, x, y, m, d):
    """(dm/dt, dd/dt) per layer: dm = sigma(W m_prev + b) - m,
    dd_l = W_{l+1}^T (sigma'(u_{l+1}) d_{l+1}) - d_l (+ dC/da at the output)."""
    a_prev = x
    slopes, dm = [], []
    for (W, b, name), ml in zip(layers, m):
        val, s = _act(name, a_prev @ W.T + b)
        dm.append(val - ml)
        slopes.append(s)
        a_prev = ml
    dd = [None] * len(layers)
    for i in reversed(range(len(layers))):
        if i == len(layers) - 1:
            drive = _loss_grad(loss, m[i], y)
        else:
            drive = (slopes[i + 1] * d[i + 1]) @ layers[i + 1][0]
        dd[i] = drive - d[i]
    return dm, dd


def reference_steady_state(layers, loss, x, y):
    """Forward pass and its adjoint (d* = dC/da per layer)."""
    a, slopes, a_prev = [], [], x
    for W, b, name in layers:
        val, s = _act(name, a_prev @ W.T + b)
        a.append(val)
        slopes.append(s)
        a_prev = val
    d = [None] * len(layers)
    d[-1] = _loss_grad(loss, a[-1], y)
    for i in reversed(range(len(layers) - 1)):
        d[i] = (slopes[i + 1] * d[i + 1]) @ layers[i + 1][0]
    return a, d


def fine_rk4_settling(net, x, y, settle_tol, h=0.01, t_end=60.0):
    """t_settle of the flow from a fixed-step RK4 (step h) on the written-out flow: the last
    grid time above settle_tol, refined by log-linear interpolation to the next one."""
    layers, loss = _layers(net), net.loss.name
    ms, ds = reference_steady_state(layers, loss, x, y)
    sm = max(np.abs(a).max() for a in ms)
    sd = max(np.abs(a).max() for a in ds)

    def dev(m, d):
        return max(max(np.abs(a - b).max() for a, b in zip(m, ms)) / sm,
                   max(np.abs(a - b).max() for a, b in zip(d, ds)) / sd)

    def f(m, d):
        return reference_flow(layers, loss, x, y, m, d)

    m = [np.zeros_like(a) for a in ms]
    d = [np.zeros_like(a) for a in ds]
    t, last_above, prev = 0.0, (0.0, dev(m, d)), None
    while t < t_end:
        k1 = f(m, d)
        k2 = f([a + 0.5 * h * b for a, b in zip(m, k1[0])], [a + 0.5 * h * b for a, b in zip(d, k1[1])])
        k3 = f([a + 0.5 * h * b for a, b in zip(m, k2[0])], [a + 0.5 * h * b for a, b in zip(d, k2[1])])
        k4 = f([a + h * b for a, b in zip(m, k3[0])], [a + h * b for a, b in zip(d, k3[1])])
        m = [a + h / 6 * (p + 2 * q + 2 * r + s) for a, p, q, r, s in zip(m, k1[0], k2[0], k3[0], k4[0])]
        d = [a + h / 6 * (p + 2 * q + 2 * r + s) for a, p, q, r, s in zip(d, k1[1], k2[1], k3[1], k4[1])]
        t += h
        v = dev(m, d)
        if v > settle_tol:
            last_above, prev = (t, v), None
        elif prev is None:
            prev = (t, v)
    (ta, va), (tb, vb) = last_above, prev
    g = (math.log(va) - math.log(settle_tol)) / (math.log(va) - math.log(vb))
    return ta + g * (tb - ta)


# ----------------------------------------------------------------------------- closed forms
X0, W1, B1, W2, B2, Y = 0.7, 1.3, 0.2, -0.8, 0.5, 1.5


def identity_chain(depth):
    """An identity-activation mse net 1-1 (depth 1) or 1-1-1 (depth 2) with fixed weights."""
    sizes = [1] * (depth + 1)
    net = dyadsim.mlp(sizes, activation="identity", output_activation="identity", loss="mse")
    if depth == 1:
        net.params[("W", net.input, net.nodes[0])][...] = W1
        net.params[("b", net.nodes[0])][...] = B1
    else:
        h, o = net.nodes
        net.params[("W", net.input, h)][...] = W1
        net.params[("b", h)][...] = B1
        net.params[("W", h, o)][...] = W2
        net.params[("b", o)][...] = B2
    return net


def closed_form(depth, t):
    """m(t), d(t) of the linear flow from 0 (one sample; arrays over the neurons).

    depth 1: u = beta = w1 x + b1 constant, so m = beta (1 - e^-t) and, with
    dd/dt = -d + (m - y): d = (beta - y)(1 - e^-t) - beta t e^-t.
    depth 2: m_h as above; m_o' = -m_o + w2 m_h + b2 gives
    m_o = A (1 - e^-t) - w2 beta t e^-t with A = w2 beta + b2;
    d_o = (A - y)(1 - e^-t) - A t e^-t - w2 beta t^2 e^-t / 2;
    d_h' = -d_h + w2 d_o gives
    d_h = w2 [(A - y)(1 - e^-t - t e^-t) - A t^2 e^-t / 2 - w2 beta t^3 e^-t / 6].
    """
    e = math.exp(-t)
    beta = W1 * X0 + B1
    if depth == 1:
        return (np.array([beta * (1 - e)]),
                np.array([(beta - Y) * (1 - e) - beta * t * e]))
    A = W2 * beta + B2
    m = np.array([beta * (1 - e), A * (1 - e) - W2 * beta * t * e])
    d_o = (A - Y) * (1 - e) - A * t * e - W2 * beta * t * t * e / 2
    d_h = W2 * ((A - Y) * (1 - e - t * e) - A * t * t * e / 2 - W2 * beta * t ** 3 * e / 6)
    return m, np.array([d_h, d_o])


@functools.cache
def closed_settling(depth, settle_tol):
    m_inf, d_inf = closed_form(depth, 200.0)

    def dev(t):
        m, d = closed_form(depth, t)
        return max(np.abs(m - m_inf).max() / np.abs(m_inf).max(),
                   np.abs(d - d_inf).max() / np.abs(d_inf).max())

    grid = np.linspace(0.0, 80.0, 80001)
    vals = np.array([dev(t) for t in grid])
    i = int(np.nonzero(vals > settle_tol)[0].max())
    return brentq(lambda t: dev(t) - settle_tol, grid[i], grid[i + 1], xtol=1e-12)


@pytest.mark.parametrize("depth", [1, 2])
@pytest.mark.parametrize("method,state", METHOD_STATES, ids=[f"{m}-{s}" for m, s in METHOD_STATES])
def test_linear_flow_matches_closed_form(depth, method, state):
    net = identity_chain(depth)
    res = dyadsim.relax_continuous(net, [X0], [Y], method=method, state=state, record=True)
    # the trajectory at the recorded times
    worst = 0.0
    for t, m, d in zip(res.t, res.m_t, res.d_t):
        em, ed = closed_form(depth, t)
        worst = max(worst, np.abs(m - em).max(), np.abs(d - ed).max())
    assert worst <= (1e-6 if method == "ETD" and state == "md" else 1e-4), worst
    # the steady state and the settling time
    m_inf, d_inf = closed_form(depth, 200.0)
    np.testing.assert_allclose(res.m, m_inf, rtol=1e-11)
    np.testing.assert_allclose(res.d, d_inf, rtol=1e-11)
    t_exact = closed_settling(depth, res.settle_tol)
    # measured: within 2e-5 tau for every solver and state
    assert res.t_settle == pytest.approx(t_exact, abs=1e-4), (res.t_settle, t_exact)
    assert res.info["settled"]


def test_settling_time_tightens_with_rtol_to_the_closed_form():
    net = identity_chain(2)
    t_exact = closed_settling(2, 1e-6)
    errs = [abs(dyadsim.relax_continuous(net, [X0], [Y], rtol=r).t_settle - t_exact)
            for r in (1e-1, 1e-3, 1e-5)]
    assert errs[-1] <= 1e-6, errs
    assert errs[0] <= 0.01, errs
    assert errs[-1] <= errs[0]


@pytest.mark.parametrize("loss", ["mse", "xent"])
def test_settling_time_matches_fine_fixed_step_integration(loss):
    net = make_net("mlp", "tanh", loss, seed=4, depth=3, width=(3, 4), n_in=3, n_out=3)
    x, y = make_batch(net, 4, batch=2)
    t_fine = fine_rk4_settling(net, x, y, 1e-6)
    res = dyadsim.relax_continuous(net, x, y)
    assert res.t_settle == pytest.approx(t_fine, abs=1e-3), (res.t_settle, t_fine)  # 3e-5 here
    # and the state it settles to is the written-out forward pass and adjoint
    ms, ds = reference_steady_state(_layers(net), loss, x, y)
    for v, a, b in zip(net.nodes, ms, ds):
        np.testing.assert_allclose(res.m[:, net.slice(v)], a, rtol=1e-10, atol=1e-13)
        np.testing.assert_allclose(res.d[:, net.slice(v)], b, rtol=1e-8, atol=1e-13)


# ----------------------------------------------------------------------------- gradients
@pytest.mark.parametrize("spec", ODE_SPECS, ids=["-".join(s) for s in ODE_SPECS])
def test_default_matches_backprop_per_tensor(spec):
    c = _small(spec)
    ref = dyadsim.backprop(c.net, c.x, c.y)
    res = dyadsim.relax_continuous(c.net, c.x, c.y)
    assert res.method == "ETD" and res.state == "md"
    assert worst_tensor_error(res.grads, ref) <= 1e-9
    assert 0 < res.t_settle <= res.t_final
    assert res.nfev > 0 and res.n_steps > 0
    assert res.loss == pytest.approx(ref.loss, rel=1e-12)
    acts = c.net.forward(c.x)
    for v in c.net.nodes:
        np.testing.assert_allclose(res.m[:, c.net.slice(v)], acts[v], rtol=1e-10, atol=1e-12)


def test_default_matches_finite_differences():
    c = make_case("dag", "mixed", "xent", "soft", seed=2, depth=3, batch=3)
    res = dyadsim.relax_continuous(c.net, c.x, c.y)
    fd = fd_grads(c.net, c.x, c.y)
    for key, g in fd.items():
        np.testing.assert_allclose(res.grads[key], g, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("method,state", METHOD_STATES + [("BDF", "md"), ("BDF", "xz")],
                         ids=[f"{m}-{s}" for m, s in METHOD_STATES + [("BDF", "md"), ("BDF", "xz")]])
@pytest.mark.parametrize("spec", [("dag", "tanh", "xent", "soft"), ("mlp", "softplus", "mse", "real")],
                         ids=["dag-tanh-xent", "mlp-softplus-mse"])
def test_every_solver_and_state_matches_backprop(method, state, spec):
    c = _small(spec, batch=2, depth=3)
    ref = dyadsim.backprop(c.net, c.x, c.y)
    res = dyadsim.relax_continuous(c.net, c.x, c.y, method=method, state=state)
    assert res.method == method and res.info["solver"] == method and res.info["state"] == state
    assert worst_tensor_error(res.grads, ref) <= 1e-8
    if method == "BDF":
        assert res.njev > 0, "the implicit solver should have evaluated the analytic Jacobian"
    assert 0 < res.t_settle <= res.t_final


@pytest.mark.parametrize("loss", ["mse", "xent"])
def test_deep_sigmoid_net_md_matches_backprop_per_tensor(loss):
    """16 wide, L = 20: the error signals of the first layers are orders of magnitude below
    m; integrated as their own variable they stay exact."""
    net = dyadsim.mlp([8] + [16] * 19 + [4], activation="sigmoid", loss=loss, seed=1)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((8, 8))
    y = np.eye(4)[rng.integers(0, 4, 8)] if loss == "xent" else rng.standard_normal((8, 4))
    ref = dyadsim.backprop(net, x, y)
    res = dyadsim.relax_continuous(net, x, y)
    assert worst_tensor_error(res.grads, ref) <= 1e-8
    assert res.info["settled"] and not res.info["stalled"]
    r32 = dyadsim.relax_continuous(net, x, y, dtype=np.float32)
    assert worst_tensor_error(r32.grads, ref) <= 1e-4
    assert r32.x.dtype == np.float32


def test_gradient_error_follows_tol():
    c = make_case("mlp", "tanh", "xent", "onehot", seed=5, depth=6, batch=3)
    ref = dyadsim.backprop(c.net, c.x, c.y)
    errs = {tol: worst_tensor_error(dyadsim.relax_continuous(c.net, c.x, c.y, tol=tol).grads, ref)
            for tol in (1e-4, 1e-8, 1e-12)}
    assert errs[1e-12] <= 1e-10
    for tol, e in errs.items():
        assert e <= 1e3 * tol, errs
    assert errs[1e-12] <= errs[1e-4]


def test_float32_matches_backprop():
    c = _small(("mlp", "tanh", "mse", "real"), batch=3, depth=4)
    ref = dyadsim.backprop(c.net, c.x, c.y)
    for method, state in (("ETD", "md"), ("ETD", "xz"), ("DOP853", "md")):
        res = dyadsim.relax_continuous(c.net, c.x, c.y, method=method, state=state,
                                       dtype="float32")
        assert res.x.dtype == np.float32
        assert worst_tensor_error(res.grads, ref) <= 1e-4, (method, state)


def test_cnn_matches_backprop():
    from test_cnn import batch, random_cnn

    net = random_cnn(0)
    x, y = batch(net, 2, 0, "xent")
    ref = dyadsim.backprop(net, x, y)
    assert worst_tensor_error(dyadsim.relax_continuous(net, x, y).grads, ref) <= 1e-9


@pytest.mark.parametrize("state", ["md", "xz"])
def test_general_nodes_take_the_collocation_too(state):
    """Max pooling, concatenation, batchnorm and identity edges: the sweep evaluates the
    general nodes at every collocation point and sends J^T d back through them."""
    pytest.importorskip("torch")
    from test_general_nodes import KEYS, _data, _net, _params, _torch_grads

    P = _params(5)
    X, Y = _data(5, B=3)
    net = _net(P)
    ref, _ = _torch_grads(P, X, Y)
    res = dyadsim.relax_continuous(net, X, Y, state=state)
    assert res.method == "ETD" and res.info["settled"]
    for k, key in KEYS.items():
        err = np.linalg.norm(res.grads[key] - ref[k]) / np.linalg.norm(ref[k])
        assert err <= 1e-9, (k, err)
    bp = dyadsim.backprop(net, X, Y)
    np.testing.assert_allclose(res.loss, bp.loss, rtol=1e-12)


def test_batch_chunks_give_the_same_result(monkeypatch):
    c = make_case("dag", "tanh", "mse", seed=7, depth=4, batch=5)
    whole = dyadsim.relax_continuous(c.net, c.x, c.y)
    per = _etd._Panel.bytes_per_sample(c.net.n, 8, 8)
    monkeypatch.setattr(_etd, "_PANEL_BYTES", 2 * per)   # three chunks of <= 2 samples
    parts = dyadsim.relax_continuous(c.net, c.x, c.y)
    assert worst_tensor_error(parts.grads, whole.grads) <= 1e-12
    assert parts.t_settle == pytest.approx(whole.t_settle, abs=1e-9)
    assert parts.n_steps == whole.n_steps


def test_settling_time_grows_with_depth():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 4))
    y = np.eye(3)
    settle = []
    for depth in (1, 3, 6):
        net = dyadsim.mlp([4] + [8] * (depth - 1) + [3], activation="tanh", loss="xent", seed=1)
        res = dyadsim.relax_continuous(net, x, y)
        assert 0 < res.t_settle <= res.t_final
        settle.append(res.t_settle)
    assert settle[0] < settle[1] < settle[2], settle


def test_single_sample_record_and_info():
    c = _small(("dag", "mixed", "xent", "onehot"))
    x, y = c.x[0], c.y[0]
    res = dyadsim.relax_continuous(c.net, x, y, record=True)
    assert res.x.shape == res.z.shape == res.m.shape == res.d.shape == (c.net.n,)
    assert res.t.ndim == 1 and res.t[0] == 0 and res.t[-1] == pytest.approx(res.t_final)
    assert np.all(np.diff(res.t) > 0)
    assert res.x_t.shape == res.z_t.shape == res.m_t.shape == (len(res.t), c.net.n)
    assert not np.any(res.x_t[0]) and not np.any(res.z_t[0])
    np.testing.assert_allclose(res.m_t[-1], res.m, rtol=0, atol=0)
    np.testing.assert_allclose(res.x, res.m + 0.5 * res.d)
    ref = dyadsim.backprop(c.net, x, y)
    assert worst_tensor_error(res.grads, ref) <= 1e-9
    rb = dyadsim.relax_continuous(c.net, x[None], y[None])
    assert worst_tensor_error(rb.grads, res.grads) <= 1e-12
    info = res.info
    for key in ("solver", "state", "steps", "rejected", "nfev", "njev", "t_settle", "t_final",
                "residual", "settled", "stalled", "rtol", "atol", "tol"):
        assert key in info, key
    assert info["t_settle"] == res.t_settle and info["t_final"] == res.t_final
    assert info["steps"] == res.n_steps and info["nfev"] == res.nfev
    assert isinstance(res, dyadsim.dynamics.GradientResult) and res.label == "ode[ETD, md]"


def test_record_budget_thins_the_trajectory():
    c = _small(("mlp", "tanh", "mse", "real"))
    full = dyadsim.relax_continuous(c.net, c.x, c.y, record=True)
    small = dyadsim.relax_continuous(c.net, c.x, c.y, record=True,
                                     max_record_bytes=4 * full.x_t[0].nbytes * 2)
    assert 2 <= len(small.t) < len(full.t)
    assert small.t[-1] == pytest.approx(full.t_final)


def test_progress_bar_runs(capsys):
    c = _small(("mlp", "tanh", "mse", "real"))
    res = dyadsim.relax_continuous(c.net, c.x, c.y, progress=True)
    assert res.info["settled"]


def test_t_max_too_short_raises_convergence_error():
    c = _small(("mlp", "tanh", "mse", "real"))
    for method in ("ETD", "DOP853"):
        with pytest.raises(dyadsim.ConvergenceError, match="steady state"):
            dyadsim.relax_continuous(c.net, c.x, c.y, method=method, t_max=2.0)


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
@pytest.mark.parametrize("method", ["ETD", "RK45"])
def test_overflow_is_a_convergence_error_naming_the_time(method):
    net = dyadsim.mlp([2, 3, 3, 2], activation="identity", loss="mse", seed=0)
    for key in net.params:
        if key[0] == "W":
            net.params[key][...] = 1e200
    with pytest.raises(dyadsim.ConvergenceError, match=r"at t=\d"):
        dyadsim.relax_continuous(net, np.ones((1, 2)), np.zeros((1, 2)), method=method)


# ----------------------------------------------------------------------------- Jacobians
def _fd_jacobian(fun, y0, h=1e-6):
    J = np.zeros((y0.size, y0.size))
    for k in range(y0.size):
        e = np.zeros_like(y0)
        e[k] = h
        J[:, k] = (fun(y0 + e) - fun(y0 - e)) / (2 * h)
    return J


@pytest.mark.parametrize("spec", [("dag", "mixed", "xent", "soft"), ("mlp", "softplus", "mse", "real")],
                         ids=["dag-mixed-xent", "mlp-softplus-mse"])
def test_analytic_jacobians_match_finite_differences(spec):
    c = make_case(*spec, seed=3, depth=3, batch=2)
    net, n, B = c.net, c.net.n, 2
    if spec[1] == "mixed":  # keep relu off its kink
        from conftest import relu_margin
        assert relu_margin(net, c.x) > 1e-3
    rng = np.random.default_rng(0)
    a = rng.uniform(-0.5, 0.5, (B, n))
    b = rng.uniform(-0.5, 0.5, (B, n))

    def flow_md(v):  # variables ordered sample by sample, [m_b, d_b]
        s = v.reshape(B, 2, n)
        dm, dd = dyadsim.flow_md(net, s[:, 0], s[:, 1], c.x, c.y)
        return np.stack([dm, dd], axis=1).ravel()

    def flow_xz(v):
        s = v.reshape(B, 2, n)
        dx, dz = dyadsim.flow(net, s[:, 0], s[:, 1], c.x, c.y)
        return np.stack([dx, dz], axis=1).ravel()

    from dyadsim.dynamics._system import System
    sysm = System(net, c.x, c.y)
    v0 = np.stack([a, b], axis=1).ravel()
    J_md = jacobian_md(sysm, a, b).toarray()
    np.testing.assert_allclose(J_md, _fd_jacobian(flow_md, v0), atol=1e-7)
    J_xz = dyadsim.flow_jacobian(net, a, b, c.x, c.y).toarray()
    np.testing.assert_allclose(J_xz, _fd_jacobian(flow_xz, v0), atol=1e-7)


# ----------------------------------------------------------------------------- the schemes
def _scalar_N(y):
    return np.tanh(2 * y + 1) + 0.3 * np.sin(3 * y)


def _scalar_exact(y0, t):
    from scipy.integrate import solve_ivp
    return solve_ivp(lambda s, y: -y + _scalar_N(y), (0, t), [y0], method="DOP853",
                     rtol=1e-13, atol=1e-15).y[0, -1]


def test_collocation_panel_on_a_scalar_flow():
    """One panel of :class:`ExpCollocation` (the stage equations solved by fixed point:
    for a scalar flow they are not triangular) converges to the flow at high order, at its
    end, at interior times (dense output) and in its error estimate."""
    col = _etd.ExpCollocation(8)
    errs, ests, dense = [], [], []
    for H in (2.0, 1.0, 0.5):
        A, ex, low = col.matrices(H)
        y = np.full(col.K + 1, 0.2)
        for _ in range(300):
            y[1:] = ex * 0.2 + A @ _scalar_N(y)
        errs.append(abs(y[-1] - _scalar_exact(0.2, H)))
        ests.append(abs(y[-1] - (math.exp(-H) * 0.2 + low @ _scalar_N(y))))
        row = col.dense_row(H, 0.37)
        dense.append(abs(float(row[:-1] @ _scalar_N(y) + row[-1] * 0.2)
                         - _scalar_exact(0.2, 0.37 * H)))
    assert errs[-1] <= 1e-10 and dense[-1] <= 1e-9, (errs, dense)
    for e in (errs, dense):
        assert e[0] / e[1] > 2 ** 4 and e[1] / e[2] > 2 ** 4, (errs, dense)
    # the estimate is the error of the lower-order rule (on every other node): larger, and
    # falling with H too (its error constant changes sign near H = 1, so not monotonically)
    assert all(a >= b for a, b in zip(ests, errs)) and ests[-1] < 1e-2 * ests[0], ests


# ----------------------------------------------------------------------------- bad input
def test_unknown_ode_method_lists_valid_ones():
    net = make_net()
    x, y = make_batch(net, 0)
    with user_error("unknown ODE method 'Euler'") as ei:
        dyadsim.relax_continuous(net, x, y, method="Euler")
    for m in ("ETD", "RK45", "RK23", "DOP853", "Radau", "BDF", "LSODA"):
        assert m in str(ei.value)
    for bad in (None, 3, ""):
        with user_error("unknown ODE method"):
            dyadsim.relax_continuous(net, x, y, method=bad)
    # names are case-insensitive
    assert dyadsim.relax_continuous(net, x, y, method="dop853").method == "DOP853"
    assert dyadsim.relax_continuous(net, x, y, method="etd", state="MD").method == "ETD"


@pytest.mark.parametrize("name", ["rtol", "atol", "tol", "settle_tol", "t_max"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), -1.0, 0.0, "1e-3", True, 1e-3 + 0j],
                         ids=["nan", "inf", "negative", "zero", "string", "bool", "complex"])
def test_bad_numeric_arguments_are_refused_at_once(name, value):
    net = make_net()
    x, y = make_batch(net, 0)
    with time_limit(30), user_error(name):
        dyadsim.relax_continuous(net, x, y, **{name: value})


@pytest.mark.parametrize("method", ["ETD", "DOP853", "BDF"])
def test_nan_tolerances_never_hang(method):
    net = make_net()
    x, y = make_batch(net, 0)
    for name in ("rtol", "atol", "t_max"):
        with time_limit(30), user_error("NaN"):
            dyadsim.relax_continuous(net, x, y, method=method, **{name: float("nan")})


def test_other_bad_arguments():
    net = make_net()
    x, y = make_batch(net, 0)
    for bad in (0, -5, 2.5, True, "1"):
        with user_error("max_record_bytes"):
            dyadsim.relax_continuous(net, x, y, max_record_bytes=bad)
    with user_error("unknown state 'mz'"):
        dyadsim.relax_continuous(net, x, y, state="mz")
    with user_error("jac must be"):
        dyadsim.relax_continuous(net, x, y, method="BDF", jac="yes")
    for name in ("record", "progress"):
        with user_error(name):
            dyadsim.relax_continuous(net, x, y, **{name: 1})
    with user_error("relax_continuous.*unexpected keyword argument 'rtoll'"):
        dyadsim.relax_continuous(net, x, y, rtoll=1e-3)
    with user_error("dtype"):
        dyadsim.relax_continuous(net, x, y, dtype=np.int32)


def test_relax_continuous_bad_inputs():
    net = make_net("mlp", "tanh", "mse", seed=0, n_in=3, n_out=2)
    x, y = make_batch(net, 0, 2)
    with user_error("input x has shape"):
        dyadsim.relax_continuous(net, np.zeros((2, 5)), y)
    with user_error("target y has shape"):
        dyadsim.relax_continuous(net, x, np.zeros((2, 3)))
    with user_error("input x.*non-finite"):
        dyadsim.relax_continuous(net, np.full_like(x, np.nan), y)


@pytest.mark.parametrize("kw, match", [
    ({"rtol": float("nan")}, "rtol must be a number"),
    ({"atol": float("nan")}, "atol must be a number"),
    ({"t_max": float("nan")}, "t_max must be a number"),
    ({"tol": -1.0}, "tol must be > 0"),
    ({"settle_tol": 0.0}, "settle_tol must be > 0"),
    ({"record": "yes"}, "record must be True or False"),
    ({"max_record_bytes": 2.5}, "max_record_bytes must be an integer"),
    ({"bogus": 1}, "unexpected keyword argument 'bogus'"),
])
def test_bad_numeric_arguments_fail_at_once(kw, match):
    """NaN tolerances used to make the solver loop forever: now refused before it starts."""
    net = dyadsim.mlp("3-4-2", seed=0)
    with pytest.raises(dyadsim.DyadsimError, match=match):
        dyadsim.relax_continuous(net, np.ones((2, 3)), np.zeros((2, 2)), **kw)
