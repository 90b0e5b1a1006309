"""DBP's discrete relaxation (explicit Euler on the saddle flow), docs/theory.md, section 4.

* eta = 1: the readout equals backprop to rounding at step 2L exactly (parallel and
  wavefront schedules) and is measurably wrong at step 2L - 1 -- both sides of the
  finite-time claim, on MLPs and DAGs with skip connections, every activation, both losses;
* eta in (0, 1) and (1, 2) converge to the same gradients, slower as eta shrinks;
* float32 misalignment angles; the steady state (m = forward pass, d_L = dC/da_L);
* single samples and batch means; recorded histories; bad arguments.
"""

from __future__ import annotations

import networkx as nx
import numpy as np
import pytest
from hypothesis import assume, given

import dyadsim
from conftest import (ACTIVATIONS, all_grads_nonzero, cases, has_dead_layer, make_batch,
                      make_case, make_net, seeded_case, user_error)

SCHEDULES = ("parallel", "wavefront")
STATES = ("md", "xz")
EPS32 = float(np.finfo(np.float32).eps)


def _cmp(res, ref):
    return dyadsim.compare(res.grads if hasattr(res, "grads") else res, ref)


def _well_conditioned(net, x, y, ref=None):
    """Gradients that are not pure rounding noise: every tensor's gradient is a sizeable part
    of the whole (softmax-xent on a confident, correct prediction gives p - y ~ 1e-12, whose
    relative error is eps / 1e-12 in *any* method)."""
    ref = dyadsim.backprop(net, x, y) if ref is None else ref
    norms = [np.linalg.norm(v) for v in ref.values()]
    return ref.norm() > 1e-3 and min(norms) > 1e-4


# ----------------------------------------------------------------------------- finite time
@pytest.mark.parametrize("state", STATES)
@pytest.mark.parametrize("schedule", SCHEDULES)
def test_exact_at_2L_seeded(case, schedule, state):
    net, x, y = case.net, case.x, case.y
    ref = dyadsim.backprop(net, x, y)
    res = dyadsim.relax(net, x, y, eta=1, schedule=schedule, state=state)
    assert res.steps == 2 * net.depth
    assert res.converged and res.schedule == schedule and res.depth == net.depth
    assert res.state == state
    cmp = _cmp(res, ref)
    assert cmp.max_rel_error <= 1e-12, cmp.table()
    for key, m in cmp.tensors.items():
        assert m.rel_error <= 1e-12, (key, m)
        assert abs(m.norm_ratio - 1) <= 1e-12, (key, m)
    assert cmp.summary.rel_error <= 1e-12
    assert res.loss == pytest.approx(ref.loss, rel=1e-13)


@pytest.mark.parametrize("state", STATES)
@pytest.mark.parametrize("schedule", SCHEDULES)
def test_wrong_at_2L_minus_1_seeded(case, schedule, state):
    net, x, y = case.net, case.x, case.y
    ref = dyadsim.backprop(net, x, y)
    res = dyadsim.relax(net, x, y, eta=1, steps=2 * net.depth - 1, schedule=schedule,
                        state=state)
    assert res.steps == 2 * net.depth - 1
    assert not res.converged
    err = _cmp(res, ref).max_rel_error
    assert err > 1e-6, f"{case.label}: step 2L-1 already exact (max rel error {err:.2e})"


@given(cases(depth=(1, 5)))
def test_finite_time_both_sides_random(c):
    """Both sides of the claim on random nets.  Relu nets are excluded from the 2L-1 side:
    whether the deepest contribution is zero there depends on the on/off pattern (a generic
    property only for smooth activations)."""
    net, x, y = c.net, c.x, c.y
    ref = dyadsim.backprop(net, x, y)
    assume(_well_conditioned(net, x, y, ref))
    L = net.depth
    for schedule in SCHEDULES:
        res = dyadsim.relax(net, x, y, schedule=schedule)
        assert res.steps == 2 * L
        assert _cmp(res, ref).max_rel_error <= 1e-12
    if any(a.name == "relu" for a in net.activations.values()):
        return
    for schedule in SCHEDULES:
        early = dyadsim.relax(net, x, y, steps=2 * L - 1, schedule=schedule)
        assert _cmp(early, ref).max_rel_error > 1e-9


@pytest.mark.parametrize("state", STATES)
@pytest.mark.parametrize("depth", [1, 2, 6])
def test_exact_step_is_2L_for_every_depth(depth, state):
    c = make_case("dag", "tanh", "xent", "soft", seed=depth, depth=depth, batch=3,
                  skip_prob=1.0)
    ref = dyadsim.backprop(c.net, c.x, c.y)
    errs = [_cmp(dyadsim.relax(c.net, c.x, c.y, steps=k, state=state), ref).max_rel_error
            for k in range(0, 2 * depth + 3)]
    first_exact = min(k for k, e in enumerate(errs) if e <= 1e-12)
    assert first_exact == 2 * depth, errs
    # and it stays exact afterwards (the fixed point is a fixed point of the Euler map)
    assert all(e <= 1e-12 for e in errs[2 * depth:])
    assert errs[0] == pytest.approx(1.0)  # x = z = 0: all gradients zero


def test_wavefront_equals_parallel_state_at_2L(case):
    p = dyadsim.relax(case.net, case.x, case.y)
    w = dyadsim.relax(case.net, case.x, case.y, schedule="wavefront")
    np.testing.assert_allclose(w.m, p.m, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(w.d, p.d, rtol=1e-12, atol=1e-15)


def test_wavefront_steps_beyond_2L():
    c = make_case("mlp", "tanh", "mse", seed=3, depth=3)
    res = dyadsim.relax(c.net, c.x, c.y, schedule="wavefront", steps=20)
    assert res.steps == 2 * c.net.depth  # nothing changes after 2L; it stops there
    assert _cmp(res, dyadsim.backprop(c.net, c.x, c.y)).max_rel_error <= 1e-12


# ----------------------------------------------------------------------------- other eta
def test_eta_below_one_converges_slower(case):
    net, x, y = case.net, case.x, case.y
    ref = dyadsim.backprop(net, x, y)
    steps = []
    for eta in (1.0, 0.9, 0.5, 0.2):
        res = dyadsim.relax(net, x, y, eta=eta)
        assert res.converged and not res.stalled, (eta, res.residual)
        assert res.eta == eta
        assert _cmp(res, ref).max_rel_error <= 1e-8, (eta, _cmp(res, ref).table())
        steps.append(res.steps)
    assert steps[0] == 2 * net.depth
    assert all(a < b for a, b in zip(steps, steps[1:])), steps


@pytest.mark.parametrize("eta", [1.2, 1.5])
def test_eta_above_one_converges(case, eta):
    ref = dyadsim.backprop(case.net, case.x, case.y)
    res = dyadsim.relax(case.net, case.x, case.y, eta=eta)
    assert res.converged and res.steps > 2 * case.net.depth
    assert _cmp(res, ref).max_rel_error <= 1e-8


@given(cases(depth=(1, 4)))
def test_eta_convergence_random(c):
    net, x, y = c.net, c.x, c.y
    # a dead relu layer has all-zero gradients, where a relative error is undefined
    # (test_dead_layer_does_not_stop_relaxation_early covers its convergence)
    assume(not has_dead_layer(net, x))
    ref = dyadsim.backprop(net, x, y)
    assume(_well_conditioned(net, x, y, ref))
    prev = 0
    for eta in (0.9, 0.5, 0.2):
        res = dyadsim.relax(net, x, y, eta=eta)
        assert _cmp(res, ref).max_rel_error <= 1e-8
        assert res.steps > prev
        prev = res.steps
    res = dyadsim.relax(net, x, y, eta=1.5)
    assert _cmp(res, ref).max_rel_error <= 1e-8


def test_eta_below_one_fixed_steps_is_not_converged():
    c = make_case("mlp", "tanh", "mse", seed=1)
    res = dyadsim.relax(c.net, c.x, c.y, eta=0.5, steps=2 * c.net.depth)
    assert res.steps == 2 * c.net.depth and not res.converged
    assert _cmp(res, dyadsim.backprop(c.net, c.x, c.y)).max_rel_error > 1e-3


def test_eta_below_one_budget_exhausted_raises_convergence_error():
    c = make_case("mlp", "tanh", "mse", seed=1)
    with pytest.raises(dyadsim.ConvergenceError, match="did not reach") as ei:
        dyadsim.relax(c.net, c.x, c.y, eta=0.2, max_steps=10)
    assert isinstance(ei.value, RuntimeError) and not isinstance(ei.value, ValueError)


def _dead_relu_net():
    """in -> a -> h(relu) -> out plus a skip in -> out.  h is active while a is still
    relaxing (u_h = 0.5 at m_a = 0) and dead at the fixed point (u_h = -1.5)."""
    G = nx.DiGraph()
    G.add_node("in", size=1)
    G.add_node("a", size=1, activation="identity", bias=np.zeros(1))
    G.add_node("h", size=1, activation="relu", bias=np.array([0.5]))
    G.add_node("out", size=2, activation="identity", bias=np.array([0.1, -0.2]))
    G.add_edge("in", "a", weight=np.array([[2.0]]))
    G.add_edge("a", "h", weight=np.array([[-1.0]]))
    G.add_edge("h", "out", weight=np.array([[1.0], [0.5]]))
    G.add_edge("in", "out", weight=np.array([[0.7], [-0.3]]))
    return dyadsim.Network.from_graph(G, loss="mse"), np.array([[1.0]]), np.array([[0.3, 0.4]])


def test_dead_layer_does_not_stop_relaxation_early():
    net, x, y = _dead_relu_net()
    ref = dyadsim.backprop(net, x, y)
    res = dyadsim.relax(net, x, y, eta=0.2)
    assert res.converged
    assert _cmp(res, ref).summary.rel_error <= 1e-8


# ----------------------------------------------------------------------------- float32
def _conditioning(net, x, y):
    """max|m| / rms(d) at the fixed point: how far the error signal d = x - z sits below the
    states x, z it is the difference of (float32 rounds x and z, not d)."""
    r = dyadsim.relax(net, x, y)
    return float(np.max(np.abs(r.m)) / np.sqrt(np.mean(r.d ** 2)))


@pytest.mark.parametrize("eta", [1.0, 0.5])
def test_float32_misalignment(case, eta, record_property):
    net, x, y = case.net, case.x, case.y
    ref = dyadsim.backprop(net, x, y)
    res = dyadsim.relax(net, x, y, eta=eta, dtype=np.float32)
    assert res.x.dtype == np.float32
    assert all(v.dtype == np.float32 for v in res.grads.values())
    s = _cmp(res, ref).summary
    ratio = _conditioning(net, x, y)
    record_property("log10_angle", s.log10_angle)
    record_property("conditioning", ratio)
    # always: within a few float32 eps, scaled by how far d sits below m
    assert s.angle <= 16 * EPS32 * max(1.0, ratio), (s, ratio)
    assert s.norm_ratio == pytest.approx(1.0, abs=1e-4)
    if ratio <= 10:  # the usual case: around 1e-6 or below
        assert s.log10_angle < -5.5, (case.label, s.log10_angle, ratio)


@given(cases(depth=(1, 5)))
def test_float32_misalignment_random(c):
    net, x, y = c.net, c.x, c.y
    assume(not has_dead_layer(net, x) and all_grads_nonzero(net, x, y))
    ref = dyadsim.backprop(net, x, y)
    ratio = _conditioning(net, x, y)
    for eta in (1.0, 0.5):
        s = _cmp(dyadsim.relax(net, x, y, eta=eta, dtype=np.float32), ref).summary
        assert s.angle <= 16 * EPS32 * max(1.0, ratio)


# ----------------------------------------------------------------------------- steady state
@pytest.mark.parametrize("schedule", SCHEDULES)
def test_steady_state_is_forward_pass_and_output_error(case, schedule):
    net, x, y = case.net, case.x, case.y
    res = dyadsim.relax(net, x, y, schedule=schedule)
    acts = net.forward(x)
    assert res.m.shape == res.d.shape == (x.shape[0], net.n)
    for v in net.nodes:
        np.testing.assert_allclose(res.m[:, net.slice(v)], acts[v], rtol=1e-13, atol=1e-14)
    aL = acts[net.output]
    np.testing.assert_allclose(res.d[:, net.slice(net.output)], net.loss.grad(aL, y),
                               rtol=1e-12, atol=1e-14)
    # hidden d_v = sum_c W_vc^T (sigma'(u_c) d_c): the backprop recursion, per sample
    u = {v: np.zeros((x.shape[0], net.sizes[v])) for v in net.nodes}
    for v in net.nodes:
        u[v] = u[v] + net.bias(v) + sum(
            (x if p == net.input else acts[p]) @ net.weight(p, v).T for p in net.preds[v])
    for v in net.nodes:
        if v == net.output:
            continue
        want = sum((net.activations[c].df(u[c]) * res.d[:, net.slice(c)]) @ net.weight(v, c)
                   for c in net.succs[v])
        np.testing.assert_allclose(res.d[:, net.slice(v)], want, rtol=1e-11, atol=1e-14)


def test_steady_state_output_error_closed_form():
    net = make_net("mlp", "tanh", "xent", seed=2, n_out=4)
    x, y = make_batch(net, 2, 3, "soft")
    res = dyadsim.relax(net, x, y)
    a = net.predict(x)
    p = np.exp(a) / np.exp(a).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(res.d[:, net.slice(net.output)], p - y, rtol=1e-12, atol=1e-15)


# ----------------------------------------------------------------------------- batches
@pytest.mark.parametrize("schedule", SCHEDULES)
def test_single_sample_equals_batch_of_one(case, schedule):
    net = case.net
    x, y = case.x[1], case.y[1]
    r1 = dyadsim.relax(net, x, y, schedule=schedule)
    rb = dyadsim.relax(net, x[None], y[None], schedule=schedule)
    assert r1.x.shape == r1.z.shape == (net.n,)
    assert rb.x.shape == (1, net.n)
    np.testing.assert_array_equal(r1.x, rb.x[0])
    for k in rb.grads:
        assert r1.grads[k].shape == net.params[k].shape
        np.testing.assert_allclose(r1.grads[k], rb.grads[k], rtol=1e-14, atol=1e-16)
    ref = dyadsim.backprop(net, x, y)
    assert _cmp(r1, ref).max_rel_error <= 1e-12


def test_batch_gradient_is_mean_of_per_sample(case):
    net, X, Y = case.net, case.x, case.y
    rb = dyadsim.relax(net, X, Y)
    per = [dyadsim.relax(net, X[i], Y[i]).grads for i in range(X.shape[0])]
    for k in rb.grads:
        np.testing.assert_allclose(rb.grads[k], np.mean([p[k] for p in per], axis=0),
                                   rtol=1e-11, atol=1e-15)


# ----------------------------------------------------------------------------- history
@pytest.mark.parametrize("state", STATES)
@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("batch", [1, 3])
def test_record_history(schedule, batch, state):
    c = make_case("dag", "mixed", "xent", "onehot", seed=4, depth=4, batch=batch)
    net = c.net
    if batch == 1:
        x, y = c.x[0], c.y[0]  # single sample: history is (steps+1, n)
    else:
        x, y = c.x, c.y
    res = dyadsim.relax(net, x, y, schedule=schedule, record=True, state=state)
    hx, hz = res.history
    shape = (res.steps + 1, net.n) if batch == 1 else (res.steps + 1, batch, net.n)
    assert res.steps == 2 * net.depth
    assert hx.shape == hz.shape == shape
    assert not np.any(hx[0]) and not np.any(hz[0])
    np.testing.assert_array_equal(hx[-1], res.x)
    np.testing.assert_array_equal(hz[-1], res.z)
    for k in range(res.steps + 1):
        rk = dyadsim.relax(net, x, y, schedule=schedule, steps=k, state=state)
        assert rk.steps == k and rk.history is None
        np.testing.assert_allclose(rk.x, hx[k], rtol=1e-13, atol=1e-15)
        np.testing.assert_allclose(rk.z, hz[k], rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("state", STATES)
def test_record_history_eta_below_one(state):
    c = make_case("mlp", "sigmoid", "mse", seed=5, depth=3, batch=2)
    res = dyadsim.relax(c.net, c.x, c.y, eta=0.5, record=True, state=state)
    hx, hz = res.history
    assert hx.shape == (res.steps + 1, 2, c.net.n)
    assert not np.any(hx[0])
    for k in (1, 5, res.steps // 2):
        rk = dyadsim.relax(c.net, c.x, c.y, eta=0.5, steps=k, state=state)
        np.testing.assert_allclose(rk.x, hx[k], rtol=1e-13, atol=1e-15)
        np.testing.assert_allclose(rk.z, hz[k], rtol=1e-13, atol=1e-15)


def test_no_history_by_default():
    c = make_case()
    res = dyadsim.relax(c.net, c.x, c.y)
    assert res.history is None and res.history_x is None


def test_parallel_forward_wave_one_layer_per_step():
    """At eta = 1, m of a layer at depth k is final after k steps and not before."""
    c = make_case("mlp", "tanh", "mse", seed=6, depth=4)
    net = c.net
    res = dyadsim.relax(net, c.x, c.y, record=True)
    hx, hz = res.history
    acts = net.forward(c.x)
    for v in net.nodes:
        k = net.block(v).depth
        m_k = 0.5 * (hx[k] + hz[k])[:, net.slice(v)]
        m_before = 0.5 * (hx[k - 1] + hz[k - 1])[:, net.slice(v)]
        np.testing.assert_allclose(m_k, acts[v], rtol=1e-13, atol=1e-15)
        assert np.max(np.abs(m_before - acts[v])) > 1e-6


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("eta", [0, -0.5, 2, 2.5, float("nan"), float("inf"), -float("inf")])
def test_bad_eta(eta):
    c = make_case()
    with user_error(r"eta must be in \(0, 2\)"):
        dyadsim.relax(c.net, c.x, c.y, eta=eta)


def test_eta_not_a_number():
    c = make_case()
    with user_error("eta must be a number"):
        dyadsim.relax(c.net, c.x, c.y, eta="fast")


@pytest.mark.parametrize("eta", [0.5, 0.999, 1.5])
def test_wavefront_needs_eta_one(eta):
    c = make_case()
    with user_error("wavefront schedule needs eta = 1"):
        dyadsim.relax(c.net, c.x, c.y, eta=eta, schedule="wavefront")


def test_unknown_schedule():
    c = make_case()
    with user_error("unknown schedule 'gossip'.*parallel, wavefront, async"):
        dyadsim.relax(c.net, c.x, c.y, schedule="gossip")


@pytest.mark.parametrize("steps, match", [
    (-1, r"steps must be an integer >= 0, got -1"),
    (1.5, r"steps must be an integer or None, got 1.5"),
    (True, r"steps must be an integer or None, got True"),
    (float("nan"), r"steps must be an integer or None, got nan"),
    ("abc", r"steps must be an integer or None, got 'abc'"),
])
def test_bad_steps(steps, match):
    c = make_case()
    with user_error(match):
        dyadsim.relax(c.net, c.x, c.y, steps=steps)


@pytest.mark.parametrize("kw, match", [
    (dict(tol=-1), r"tol must be > 0, got -1"),
    (dict(tol=0), r"tol must be > 0, got 0"),
    (dict(tol=float("nan")), r"tol must be a number, got NaN"),
    (dict(tol=float("inf")), r"tol must be finite"),
    (dict(tol="1e-6"), r"tol must be a real number"),
    (dict(tol=1e-6 + 0j), r"tol must be a real number"),
    (dict(max_steps=2.5), r"max_steps must be an integer, got 2.5"),
    (dict(max_steps=0), r"max_steps must be an integer >= 1, got 0"),
    (dict(max_steps=True), r"max_steps must be an integer, got True"),
    (dict(steps=10**6), r"steps=1000000 exceeds the step budget max_steps=100000"),
    (dict(steps=1e30), r"exceeds the step budget"),
    (dict(state="x+z"), r"unknown state 'x\+z'; valid: md, xz"),
    (dict(state=None), r"unknown state None"),
    (dict(schedule=None), r"unknown schedule None"),
    (dict(record="yes"), r"record must be True or False, got 'yes'"),
    (dict(record=1), r"record must be True or False, got 1"),
    (dict(progress=0), r"progress must be True or False, got 0"),
    (dict(foo=1), r"relax\(\): got an unexpected keyword argument 'foo'"),
    (dict(dtype="int8"), r"dtype must be float64 or float32"),
    (dict(dtype="nonsense"), r"unknown dtype"),
])
def test_relax_bad_arguments(kw, match):
    c = make_case()
    with user_error(match):
        dyadsim.relax(c.net, c.x, c.y, **kw)


def test_relax_refuses_a_history_too_large_to_keep(monkeypatch):
    import sys

    net = dyadsim.mlp("20-200x3-5", seed=0)
    x, y = make_batch(net, 0, 64)
    # a fixed number of steps is refused before anything is allocated
    with user_error(r"record=True would keep 11.54 GiB of history, more than 2.00 GiB"):
        dyadsim.relax(net, x, y, record=True, steps=20_000, max_steps=20_000)
    # an open-ended run stops when it reaches the bound (lowered here to 1 MiB)
    monkeypatch.setattr(sys.modules["dyadsim.dynamics._euler"], "MAX_RECORD_BYTES", 2**20)
    with user_error(r"record=True would keep 1.18 MiB of history \(reached at step 1\), more than 1.00 MiB"):
        dyadsim.relax(net, x, y, record=True, eta=0.001, max_steps=20_000)


def test_relax_bad_shapes_and_values():
    net = make_net("mlp", "tanh", "xent", seed=0, n_in=3, n_out=2)
    x, y = make_batch(net, 0, 2, "onehot")
    with user_error("input x has shape"):
        dyadsim.relax(net, np.zeros((2, 4)), y)
    with user_error("target y has shape"):
        dyadsim.relax(net, x, np.zeros((2, 3)))
    with user_error("input x.*non-finite"):
        dyadsim.relax(net, np.full_like(x, np.nan), y)
    with user_error("target y.*non-finite"):
        dyadsim.relax(net, x, np.full_like(y, np.inf))
    with user_error("dtype"):
        dyadsim.relax(net, x, y, dtype=np.int32)


@pytest.mark.parametrize("act", ACTIVATIONS)
def test_relax_does_not_touch_params(act):
    c = make_case("dag", act, "mse", seed=8)
    before = {k: v.copy() for k, v in c.net.params.items()}
    dyadsim.relax(c.net, c.x, c.y, eta=0.5)
    for k in before:
        np.testing.assert_array_equal(c.net.params[k], before[k])


def test_seeded_cases_are_generic():
    """The fixture's cases are generic (guards the premise of the 2L - 1 tests)."""
    from conftest import MIXED_SPECS, SEEDED_SPECS
    for spec in SEEDED_SPECS + MIXED_SPECS:
        c = seeded_case(spec)
        assert not has_dead_layer(c.net, c.x) and all_grads_nonzero(c.net, c.x, c.y)
