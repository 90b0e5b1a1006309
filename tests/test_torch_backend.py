"""The torch backend (``backend="torch"``), run on CPU torch.

Oracles that share no code with the engine:

* torch autograd of the network written here with plain torch ops (``F.linear``,
  ``F.conv2d``, ``F.avg_pool2d``, ``torch.tanh`` ...), from the network's parameters;
* central finite differences of a numpy forward pass written here (dense networks);
* the closed-form solution ``expm(A t)`` of the (linear) flow of an identity-activation
  network, for the settling time and the trajectory of the exponential solver;
* the numpy backend, step for step (states, steps, residuals, histories).

Also: ``import dyadsim`` never imports torch, and without torch ``backend="torch"`` is a
clear DyadsimError.  Everything but those two is skipped when torch is not installed.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import networkx as nx
import numpy as np
import pytest

import dyadsim
from conftest import (ACTIVATIONS, LOSSES, MIXED_SPECS, SEEDED_IDS, SEEDED_SPECS, TARGETS,
                      make_case, seeded_case, user_error)

HAVE_TORCH = importlib.util.find_spec("torch") is not None
needs_torch = pytest.mark.skipif(not HAVE_TORCH, reason="torch (an optional extra) is not installed")
ROOT = Path(__file__).resolve().parents[1]
SCHEDULES = ("parallel", "wavefront")
STATES = ("md", "xz")
ALL_SPECS = SEEDED_SPECS + MIXED_SPECS
ALL_IDS = SEEDED_IDS + ["-".join(s) for s in MIXED_SPECS]


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """One intra-op thread: these nets are tiny, and on a shared machine more threads only
    contend (the results do not depend on it)."""
    if not HAVE_TORCH:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _relax(net, x, y, state="xz", **kw):
    """relax on the torch backend in the given state."""
    from dyadsim.dynamics._torch import relax

    return relax(net, x, y, state=state, **kw)


def _ode(net, x, y, state="md", **kw):
    from dyadsim.dynamics._torch import relax_continuous

    return relax_continuous(net, x, y, state=state, **kw)


def _rel(a, b):
    """max over tensors of ||a - b|| / ||b|| (b the oracle)."""
    worst = 0.0
    assert set(a) == set(b)
    for k in b:
        A, Bv = np.asarray(a[k], dtype=np.float64), np.asarray(b[k], dtype=np.float64)
        assert A.shape == Bv.shape, k
        nb = np.linalg.norm(Bv)
        worst = max(worst, np.linalg.norm(A - Bv) / (nb if nb > 0 else 1.0))
    return worst


# ----------------------------------------------------------------------------- oracles
def autograd(net, x, y):
    """(grads, loss) by torch autograd of the network written with plain torch ops."""
    import torch
    import torch.nn.functional as F

    acts = {"tanh": torch.tanh, "sigmoid": torch.sigmoid, "relu": torch.relu,
            "softplus": lambda u: F.softplus(u, beta=1.0, threshold=60.0), "identity": lambda u: u}
    params = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in net.params.items()}
    X = torch.tensor(np.asarray(x, dtype=np.float64).reshape(-1, net.n_in))
    Y = torch.tensor(np.asarray(y, dtype=np.float64).reshape(-1, net.n_out))
    B = X.shape[0]
    a = {net.input: X}
    for v in net.nodes:
        u = 0.0
        for p in net.preds[v]:
            op = net.edge_ops[(p, v)]
            if op.kind == "dense":
                c = a[p] @ params[("W", p, v)].T
            elif op.kind == "conv2d":
                c = F.conv2d(a[p].reshape((B,) + tuple(net.shapes[p])), params[("W", p, v)],
                             stride=op.stride, padding=op.padding).reshape(B, -1)
            else:
                c = F.avg_pool2d(a[p].reshape((B,) + tuple(net.shapes[p])), op.kernel_size,
                                 op.stride, op.padding, count_include_pad=True).reshape(B, -1)
            u = u + c
        if ("b", v) in net.params:
            b = params[("b", v)]
            if net.bias_mode[v] == "channel":
                C = net.shapes[v][0]
                b = b.reshape(C, 1).expand(C, net.sizes[v] // C).reshape(-1)
            u = u + b
        a[v] = acts[net.activations[v].name](u)
    out = a[net.output]
    if net.loss.name == "mse":
        loss = (0.5 * ((out - Y) ** 2).sum(dim=1)).mean()
    else:
        loss = (-(Y * torch.log_softmax(out, dim=1)).sum(dim=1)).mean()
    keys = list(params)
    gs = torch.autograd.grad(loss, [params[k] for k in keys])
    return {k: g.numpy() for k, g in zip(keys, gs)}, float(loss.detach())


def np_loss(net, params, x, y):
    """The mean batch loss from a numpy forward pass written here (dense edges only)."""
    f = {"tanh": np.tanh, "sigmoid": lambda u: 1 / (1 + np.exp(-u)), "relu": lambda u: np.maximum(u, 0),
         "softplus": lambda u: np.log1p(np.exp(-np.abs(u))) + np.maximum(u, 0), "identity": lambda u: u}
    a = {net.input: np.atleast_2d(x)}
    for v in net.nodes:
        u = params[("b", v)] + sum(a[p] @ params[("W", p, v)].T for p in net.preds[v])
        a[v] = f[net.activations[v].name](u)
    out, Y = a[net.output], np.atleast_2d(y)
    if net.loss.name == "mse":
        return float(np.mean(0.5 * np.sum((out - Y) ** 2, axis=1)))
    z = out - out.max(axis=1, keepdims=True)
    logp = z - np.log(np.sum(np.exp(z), axis=1, keepdims=True))
    return float(np.mean(-np.sum(Y * logp, axis=1)))


def fd(net, x, y, h=1e-6):
    params = {k: v.copy() for k, v in net.params.items()}
    out = {}
    for k, p in params.items():
        g = np.zeros_like(p)
        for idx in np.ndindex(p.shape):
            old = p[idx]
            p[idx] = old + h
            fp = np_loss(net, params, x, y)
            p[idx] = old - h
            fm = np_loss(net, params, x, y)
            p[idx] = old
            g[idx] = (fp - fm) / (2 * h)
        out[k] = g
    return out


def random_cnn(seed, loss):
    """img (C,H,W) -> conv (stride, padding) -> avgpool (maybe overlapping) -> conv -> dense,
    plus skip edges; per-channel and per-neuron biases; activations drawn from all five."""
    rng = np.random.default_rng([seed, 7])
    C0, H = int(rng.integers(1, 3)), int(rng.integers(6, 9))
    G = nx.DiGraph()
    G.add_node("img", shape=(C0, H, H))
    k1, s1, p1 = int(rng.integers(2, 4)), int(rng.integers(1, 3)), int(rng.integers(0, 2))
    C1 = int(rng.integers(2, 4))
    conv1 = dyadsim.Conv2d((C0, H, H), C1, k1, s1, p1)
    bias1 = rng.normal(0, 0.2, C1) if seed % 2 else rng.normal(0, 0.2, int(np.prod(conv1.out_shape)))
    G.add_node("c1", shape=conv1.out_shape, activation=str(rng.choice(ACTIVATIONS)), bias=bias1)
    G.add_edge("img", "c1", op="conv2d", weight=rng.normal(0, 0.5, conv1.weight_shape), stride=s1, padding=p1)
    prev, shape = "c1", conv1.out_shape
    if min(shape[1:]) >= 3:
        kp, sp_ = (3, 2) if seed % 3 == 0 else (2, 1 + seed % 2)  # overlapping when stride < kernel
        pp = 1 if (seed % 4 == 1 and kp == 3) else 0
        pool = dyadsim.AvgPool2d(shape, kp, sp_, pp)
        G.add_node("pool", shape=pool.out_shape, activation="identity", bias=False)
        G.add_edge(prev, "pool", op="avgpool2d", kernel_size=kp, stride=sp_, padding=pp)
        prev, shape = "pool", pool.out_shape
    conv2 = dyadsim.Conv2d(shape, 2, min(2, shape[1]), 1, 1 if seed % 2 else 0)
    G.add_node("c2", shape=conv2.out_shape, activation=str(rng.choice(ACTIVATIONS)), bias=rng.normal(0, 0.2, 2))
    G.add_edge(prev, "c2", op="conv2d", weight=rng.normal(0, 0.5, conv2.weight_shape), padding=1 if seed % 2 else 0)
    G.add_node("out", size=3, activation="identity" if loss == "xent" else "tanh", bias=rng.normal(0, 0.2, 3))
    G.add_edge("c2", "out", weight=rng.normal(0, 0.5, (3, int(np.prod(conv2.out_shape)))))
    G.add_edge("c1", "out", weight=rng.normal(0, 0.3, (3, int(np.prod(conv1.out_shape)))))
    net = dyadsim.Network.from_graph(G, loss=loss)
    B = 3
    x = rng.random((B, C0, H, H))
    y = np.eye(3)[rng.integers(0, 3, B)] if loss == "xent" else rng.normal(0, 0.5, (B, 3))
    return net, x, y


# ----------------------------------------------------------------------------- optional
def test_import_dyadsim_does_not_import_torch():
    code = ("import sys, dyadsim, dyadsim.dynamics, dyadsim.readout, dyadsim.training; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         env={**__import__("os").environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_without_torch_backend_torch_is_a_clear_error():
    code = ("import sys; sys.modules['torch'] = None\n"
            "import numpy as np, dyadsim\n"
            "net = dyadsim.mlp('2-3-2', seed=0)\n"
            "print(dyadsim.backprop(net, np.ones(2), np.ones(2))[('b', 'output')].shape)\n"
            "try:\n"
            "    dyadsim.relax(net, np.ones(2), np.ones(2), backend='torch')\n"
            "except dyadsim.DyadsimError as e:\n"
            "    print('ERR', isinstance(e, ValueError), e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         env={**__import__("os").environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert lines[0] == "(2,)"
    assert lines[1].startswith("ERR True") and "pip install" in lines[1] and "torch" in lines[1]


# ----------------------------------------------------------------------------- backprop
@needs_torch
@pytest.mark.parametrize("spec", ALL_SPECS, ids=ALL_IDS)
def test_backprop_matches_autograd_and_numpy(spec):
    c = seeded_case(spec)
    g = dyadsim.backprop(c.net, c.x, c.y, backend="torch", device="cpu")
    ref, loss = autograd(c.net, c.x, c.y)
    assert all(isinstance(v, np.ndarray) and v.dtype == np.float64 for v in g.values())
    assert _rel(g, ref) <= 1e-12
    assert g.loss == pytest.approx(loss, rel=1e-13)
    assert _rel(g, dyadsim.backprop(c.net, c.x, c.y)) <= 1e-13
    assert list(g) == list(c.net.params)


@needs_torch
@pytest.mark.parametrize("kind", ["mlp", "dag"])
@pytest.mark.parametrize("loss", LOSSES)
def test_backprop_matches_finite_differences(kind, loss):
    c = make_case(kind, "mixed" if kind == "dag" else "softplus", loss, seed=3, depth=3, batch=3)
    g = dyadsim.backprop(c.net, c.x, c.y, backend="torch")
    assert _rel(g, fd(c.net, c.x, c.y)) <= 1e-6


# ----------------------------------------------------------------------------- relax
@needs_torch
@pytest.mark.parametrize("state", STATES)
@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("spec", ALL_SPECS, ids=ALL_IDS)
def test_relax_exact_at_2L_and_not_at_2L_minus_1(spec, schedule, state):
    c = seeded_case(spec)
    L = c.net.depth
    ref, loss = autograd(c.net, c.x, c.y)
    res = _relax(c.net, c.x, c.y, state=state, schedule=schedule)
    assert isinstance(res, dyadsim.RelaxResult) and isinstance(res, dyadsim.GradientResult)
    assert res.steps == 2 * L and res.converged and res.schedule == schedule
    assert _rel(res.grads, ref) <= 1e-10
    assert res.loss == pytest.approx(loss, rel=1e-12)
    assert res.info["backend"] == "torch" and res.info["state"] == state
    early = _relax(c.net, c.x, c.y, state=state, schedule=schedule, steps=2 * L - 1)
    assert early.steps == 2 * L - 1 and not early.converged
    assert _rel(early.grads, ref) > 1e-6


@needs_torch
@pytest.mark.parametrize("eta", [1.0, 0.6, 1.4])
@pytest.mark.parametrize("spec", [("mlp", "tanh", "xent", "soft"), ("dag", "mixed", "mse", "real"),
                                  ("dag", "relu", "xent", "onehot")], ids=lambda s: "-".join(s))
def test_relax_step_for_step_like_numpy(spec, eta):
    c = seeded_case(spec, batch=3)
    for schedule in SCHEDULES if eta == 1.0 else ("parallel",):
        a = dyadsim.relax(c.net, c.x, c.y, eta=eta, schedule=schedule, record=True)
        b = dyadsim.relax(c.net, c.x, c.y, eta=eta, schedule=schedule, record=True, backend="torch")
        assert b.steps == a.steps and b.converged == a.converged and b.stalled == a.stalled
        if a.residual > 1e-9:  # above the rounding floor the residuals agree closely
            assert b.residual == pytest.approx(a.residual, rel=1e-6)
        else:  # both converged at the rounding floor (values there are rounding noise)
            assert b.residual <= 1e-11
        assert b.history_x.shape == a.history_x.shape
        np.testing.assert_allclose(b.history_x, a.history_x, rtol=0, atol=1e-12)
        np.testing.assert_allclose(b.history_z, a.history_z, rtol=0, atol=1e-12)
        assert _rel(b.grads, a.grads) <= 1e-10
        assert b.grads.method == a.grads.method


@needs_torch
def test_relax_md_and_xz_states_agree_and_single_sample_shapes():
    c = seeded_case(("dag", "mixed", "xent", "soft"))
    x, y = c.x[0], c.y[0]
    ref = dyadsim.relax(c.net, x, y, record=True)
    for state in STATES:
        for schedule in SCHEDULES:
            r = _relax(c.net, x, y, state=state, schedule=schedule, record=True)
            assert r.x.shape == r.z.shape == (c.net.n,)
            assert r.history_x.shape == (2 * c.net.depth + 1, c.net.n)
            np.testing.assert_allclose(r.m, ref.m, atol=1e-13)
            np.testing.assert_allclose(r.d, ref.d, atol=1e-13)


@needs_torch
@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("loss", LOSSES)
def test_cnn_matches_autograd(seed, loss):
    net, x, y = random_cnn(seed, loss)
    assert {op.kind for op in net.edge_ops.values()} >= {"conv2d", "dense"}
    ref, _ = autograd(net, x, y)
    assert _rel(dyadsim.backprop(net, x, y, backend="torch"), ref) <= 1e-12
    L = net.depth
    for state in STATES:
        for schedule in SCHEDULES:
            r = _relax(net, x, y, state=state, schedule=schedule)
            assert _rel(r.grads, ref) <= 1e-10
        early = _relax(net, x, y, state=state, steps=2 * L - 1)
        assert _rel(early.grads, ref) > 1e-6
    o = dyadsim.relax_continuous(net, x, y, backend="torch")
    assert _rel(o.grads, ref) <= 1e-8


@needs_torch
def test_cnn_edge_ops_match_numpy_ops():
    """Each structured op's forward, transpose and weight gradient against dyadsim's numpy op."""
    import torch
    from dyadsim.dynamics._torch._system import _edge

    rng = np.random.default_rng(0)
    cases = [dyadsim.Conv2d((2, 7, 6), 3, (3, 2), (2, 1), (1, 0)), dyadsim.Conv2d((1, 8, 8), 2, 3, 3, 1),
             dyadsim.AvgPool2d((2, 7, 7), 3, 2, 1), dyadsim.AvgPool2d((3, 6, 6), 2, 1, 0),
             dyadsim.AvgPool2d((1, 5, 5), 2)]
    for op in cases:
        W = rng.standard_normal(op.weight_shape) if op.has_weight else None
        t = _edge(op, None if W is None else torch.tensor(W), torch.float64, torch.device("cpu"))
        a = rng.standard_normal((4, op.n_src))
        s = rng.standard_normal((4, op.n_dst))
        np.testing.assert_allclose(t.forward(torch.tensor(a)).numpy(), op.forward(W, a), atol=1e-13)
        np.testing.assert_allclose(t.backward(torch.tensor(s)).numpy(), op.backward(W, s), atol=1e-13)
        M = op.matrix(W).toarray()  # the dense matrix: an explicit oracle for the transpose
        np.testing.assert_allclose(t.backward(torch.tensor(s)).numpy(), s @ M, atol=1e-13)
        if op.has_weight:
            np.testing.assert_allclose(t.weight_grad(torch.tensor(s), torch.tensor(a)).numpy(),
                                       op.weight_grad(W, s, a), atol=1e-12)


# ----------------------------------------------------------------------------- ODE
ODE_SPECS = [("mlp" if i % 2 == 0 else "dag", act, loss, TARGETS[loss][i % len(TARGETS[loss])])
             for i, (act, loss) in enumerate((a, l) for a in ACTIVATIONS for l in LOSSES)]


@needs_torch
@pytest.mark.parametrize("state", STATES)
@pytest.mark.parametrize("spec", ODE_SPECS, ids=["-".join(s) for s in ODE_SPECS])
def test_ode_matches_autograd(spec, state):
    c = seeded_case(spec, depth=3, batch=2)
    ref, loss = autograd(c.net, c.x, c.y)
    r = _ode(c.net, c.x, c.y, state=state)
    assert isinstance(r, dyadsim.ContinuousResult) and r.method == "ETD3"
    assert _rel(r.grads, ref) <= 1e-8
    assert r.loss == pytest.approx(loss, rel=1e-9)
    assert 0 < r.t_settle <= r.t_final and r.nfev >= 3 * r.n_steps > 0
    acts = c.net.forward(c.x)
    for v in c.net.nodes:
        np.testing.assert_allclose(r.m[:, c.net.slice(v)], acts[v], rtol=1e-8, atol=1e-10)


@needs_torch
def test_ode_thin_function_defaults_and_numpy_agreement():
    c = seeded_case(("dag", "tanh", "xent", "soft"), depth=3, batch=2)
    r = dyadsim.relax_continuous(c.net, c.x, c.y, backend="torch")
    assert r.method == "ETD3" and r.info["backend"] == "torch"
    n = dyadsim.relax_continuous(c.net, c.x, c.y)
    assert _rel(r.grads, n.grads) <= 1e-8
    np.testing.assert_allclose(r.m, n.m, atol=1e-9)
    with user_error("exponential solver"):
        dyadsim.relax_continuous(c.net, c.x, c.y, backend="torch", method="RK45")


def _linear_flow(net, x, y):
    """u = (m, d) obeys u' = A u + c for an identity-activation mse network; returns the
    exact error function t -> max(|m(t)-m*|/max|m*|, |d(t)-d*|/max|d*|) and u(t)."""
    from scipy.linalg import expm

    n = net.n
    W = np.zeros((n, n))
    beta = np.zeros(n)
    for v in net.nodes:
        sv = net.slice(v)
        beta[sv] = net.params[("b", v)]
        for p in net.preds[v]:
            if p == net.input:
                beta[sv] += net.params[("W", p, v)] @ x
            else:
                W[sv, net.slice(p)] = net.params[("W", p, v)]
    o = net.slice(net.output)
    Sel = np.zeros((n, n))
    Sel[o, o] = np.eye(o.stop - o.start)
    A = np.block([[W - np.eye(n), np.zeros((n, n))], [Sel, W.T - np.eye(n)]])
    c = np.concatenate([beta, -np.pad(y, (o.start, n - o.stop))])
    us = np.linalg.solve(-A, c)

    def u(t):
        return us - expm(A * t) @ us

    def err(t):
        e = u(t) - us
        return max(np.abs(e[:n]).max() / np.abs(us[:n]).max(), np.abs(e[n:]).max() / np.abs(us[n:]).max())

    return u, err


@needs_torch
def test_ode_settling_time_and_trajectory_against_the_closed_form():
    net = dyadsim.random_dag(n_hidden=3, sizes=(2, 4), n_in=3, n_out=2, skip_prob=0.5,
                             activations="identity", loss="mse", seed=4)
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal(3), rng.standard_normal(2)
    u, err = _linear_flow(net, x, y)
    ts = np.linspace(0, 80, 321)
    above = [t for t in ts if err(t) > 1e-6]
    lo, hi = above[-1], above[-1] + ts[1]
    for _ in range(40):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if err(mid) > 1e-6 else (lo, mid)
    exact = hi
    r = _ode(net, x, y)
    assert abs(r.t_settle - exact) <= 0.01 * exact, (r.t_settle, exact)
    tight = _ode(net, x, y, rtol=1e-5, record=True)
    assert abs(tight.t_settle - exact) <= 1e-3, (tight.t_settle, exact)
    n = net.n
    pick = np.unique(np.linspace(0, len(tight.t) - 1, 40).astype(int))
    for tk, xk, zk in zip(tight.t[pick], tight.x_t[pick], tight.z_t[pick]):
        ue = u(tk)
        np.testing.assert_allclose(0.5 * (xk + zk), ue[:n], atol=1e-6)
        np.testing.assert_allclose(xk - zk, ue[n:], atol=1e-6)
    # from the dense output between solver steps, not at one of them
    assert np.min(np.abs(tight.t - tight.t_settle)) > 1e-6


@needs_torch
def test_ode_settling_time_with_a_small_memory_budget_replays():
    c = seeded_case(("mlp", "tanh", "xent", "onehot"), depth=3, batch=2)
    full = _ode(c.net, c.x, c.y)
    small = _ode(c.net, c.x, c.y, max_record_bytes=1)
    assert small.t_settle == pytest.approx(full.t_settle, abs=1e-9)
    assert small.info["nfev_settle"] > full.info["nfev_settle"]
    assert _rel(small.grads, full.grads) == 0


@needs_torch
def test_ode_relu_kinks_do_not_stall_the_step_control():
    c = seeded_case(("dag", "relu", "mse", "real"), depth=4, batch=4)
    ref, _ = autograd(c.net, c.x, c.y)
    r = _ode(c.net, c.x, c.y)
    assert _rel(r.grads, ref) <= 1e-8


# ----------------------------------------------------------------------------- float32
@needs_torch
@pytest.mark.parametrize("spec", [("mlp", "tanh", "xent", "soft"), ("dag", "mixed", "mse", "real")],
                         ids=lambda s: "-".join(s))
def test_float32_sanity(spec):
    c = seeded_case(spec)
    ref, _ = autograd(c.net, c.x, c.y)
    outs = [dyadsim.backprop(c.net, c.x, c.y, dtype=np.float32, backend="torch")]
    for schedule in SCHEDULES:
        outs.append(dyadsim.relax(c.net, c.x, c.y, dtype=np.float32, schedule=schedule, backend="torch").grads)
    o = dyadsim.relax_continuous(c.net, c.x, c.y, dtype=np.float32, backend="torch")
    outs.append(o.grads)
    assert o.x.dtype == np.float32
    for g in outs:
        assert all(v.dtype == np.float32 for v in g.values())
        assert _rel(g, ref) <= 1e-4
    net = make_case("mlp", "tanh", "xent", seed=2, depth=3, batch=3).net
    np32 = dyadsim.relax(net, np.ones((2, 3)), np.eye(3)[:2], dtype=np.float32)
    t32 = dyadsim.relax(net, np.ones((2, 3)), np.eye(3)[:2], dtype=np.float32, backend="torch")
    np.testing.assert_allclose(t32.x, np32.x, atol=1e-6)


# ----------------------------------------------------------------------------- API
@needs_torch
def test_method_objects_take_backend_and_device():
    c = seeded_case(("mlp", "tanh", "mse", "real"), depth=3, batch=2)
    ref, _ = autograd(c.net, c.x, c.y)
    for m in (dyadsim.Backprop(backend="torch", device="cpu"),
              dyadsim.Euler(backend="torch"), dyadsim.Euler(eta=1, schedule="parallel", backend="torch"),
              dyadsim.ODE(backend="torch"), dyadsim.ODE(solver="ETD3", backend="torch"),
              dyadsim.get_method("euler", backend="torch", dtype="float64")):
        res = m(c.net, c.x, c.y)
        assert isinstance(res, dyadsim.GradientResult)
        assert _rel(res.grads, ref) <= 1e-8
        assert res.info["backend"] == "torch" and res.info["device"] == "cpu"
        assert m.config()["backend"] == "torch"
    with user_error("ODE solver"):
        dyadsim.ODE(solver="DOP853", backend="torch")


@needs_torch
def test_bad_backend_and_device_arguments():
    c = seeded_case(("mlp", "tanh", "mse", "real"), depth=2, batch=2)
    net, x, y = c.net, c.x, c.y
    with user_error("unknown backend 'jax'"):
        dyadsim.backprop(net, x, y, backend="jax")
    with user_error("backend='torch'"):
        dyadsim.relax(net, x, y, device="cuda")
    with user_error("unknown torch device"):
        dyadsim.relax(net, x, y, backend="torch", device="nonsense")
    import torch

    if not torch.cuda.is_available():
        with user_error("CUDA is not available"):
            dyadsim.relax_continuous(net, x, y, backend="torch", device="cuda")
    with user_error("unknown state"):
        _relax(net, x, y, state="xy")
    with user_error("wavefront schedule needs eta = 1"):
        dyadsim.relax(net, x, y, eta=0.5, schedule="wavefront", backend="torch")
    with user_error("eta must be in"):
        dyadsim.relax(net, x, y, eta=2.0, backend="torch")
    with user_error("target y has shape"):
        dyadsim.relax(net, x, y[:, :1], backend="torch")
    with user_error("float64 or float32"):
        dyadsim.backprop(net, x, y, dtype=np.int32, backend="torch")
    odd = dyadsim.Network.from_graph(net.to_graph(), loss="mse")
    odd.activations[odd.nodes[0]] = dyadsim.network.Activation("tanh", np.tanh, np.tanh, np.tanh)
    with user_error("knows only those"):
        dyadsim.backprop(odd, x, y, backend="torch")
    with user_error("numpy backend only"):
        dyadsim.relax(net, x, y, schedule="async", backend="torch")
    with user_error("seed applies"):
        dyadsim.relax(net, x, y, seed=3, backend="torch")
    chip = dyadsim.Chip.sample(net, seed=0, mismatch=0.01)
    for fn in (dyadsim.relax, dyadsim.relax_continuous):  # a chip runs on the torch chip engine
        assert fn(chip, x, y, backend="torch").info["backend"] == "torch"
    with user_error("solver"):
        dyadsim.relax_continuous(chip, x, y, method="RK45", backend="torch")
    with pytest.raises(dyadsim.ConvergenceError, match="did not reach tol"):
        dyadsim.relax(net, x, y, eta=0.3, max_steps=3, backend="torch")
    with pytest.raises(dyadsim.ConvergenceError, match="t_max"):
        dyadsim.relax_continuous(net, x, y, backend="torch", t_max=2.0)


# ----------------------------------------------------------------------------- benchmark
@needs_torch
def test_bench_gpu_quick_runs_on_cpu(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_gpu.py"), "--device", "cpu",
                           "--quick", "--json", str(out)], capture_output=True, text=True, cwd=ROOT,
                          env={**__import__("os").environ, "PYTHONPATH": str(ROOT)}, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads(out.read_text())
    assert data["device"] == "cpu" and data["quick"] is True
    assert "10 minutes" in proc.stdout and "--device cuda" in proc.stdout
    rows = {(r["model"], r["mode"], r["method"]): r for r in data["rows"]}
    for model in ("mlp", "lenet5"):
        for mode, methods in (("api", ("backprop", "relax wavefront", "relax parallel", "relax_continuous")),
                              ("engine", ("backprop", "relax wavefront", "relax parallel"))):
            assert rows[(model, mode, "torch autograd")]["ratio"] == 1.0
            for method in methods:
                r = rows[(model, mode, method)]
                assert r["median_s"] > 0 and r["ratio_min"] <= r["ratio_max"]
                assert r["max_rel_error"] <= 1e-4, r  # float32 against float64 autograd
    mc = [r for r in data["rows"] if r["model"].startswith("mc")]
    assert [r["method"] for r in mc] == ["100 Monte Carlo chips [numpy]", "100 Monte Carlo chips [torch]"]
    for r in mc:
        assert r["median_s"] > 0 and r["ratio"] > 0
        assert 1e-6 < r["max_rel_error"] < 1  # a sampled chip: near, but not at, the nominal net
    # float32 on both engines: the same chips agree to float32 rounding
    assert mc[0]["max_rel_error"] == pytest.approx(mc[1]["max_rel_error"], rel=1e-3)


def test_general_nodes_are_refused_by_name():
    pytest.importorskip("torch")
    import networkx as nx

    G = nx.DiGraph()
    G.add_node("img", shape=(1, 4, 4))
    G.add_node("pool", shape=(1, 2, 2), op="maxpool2d", kernel_size=2, stride=2)
    G.add_edge("img", "pool")
    G.add_node("out", size=2, activation="tanh")
    G.add_edge("pool", "out", weight=np.ones((2, 4)))
    net = dyadsim.Network.from_graph(G)
    x, y = np.ones((1, 16)), np.zeros((1, 2))
    dyadsim.backprop(net, x, y)  # numpy handles it
    with pytest.raises(dyadsim.DyadsimError, match="torch backend does not support general node 'pool'"):
        dyadsim.backprop(net, x, y, backend="torch")
