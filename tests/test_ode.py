"""The continuous-time saddle flow integrated to steady state (``relax_continuous``):
the same gradients as backprop, explicit (DOP853) and implicit (BDF, Radau with the sparse
analytic Jacobian) solvers, settling times, and bad arguments."""

from __future__ import annotations

import numpy as np
import pytest

import dyadsim
from conftest import ACTIVATIONS, LOSSES, TARGETS, make_batch, make_net, seeded_case, user_error

# one seeded case per activation x loss, alternating MLP and DAG (keeps the ODE part fast)
ODE_SPECS = [("mlp" if i % 2 == 0 else "dag", act, loss, TARGETS[loss][i % len(TARGETS[loss])])
             for i, (act, loss) in enumerate((a, l) for a in ACTIVATIONS for l in LOSSES)]


def _small(spec, batch=2, depth=3):
    return seeded_case(spec, depth=depth, batch=batch)


@pytest.mark.parametrize("spec", ODE_SPECS, ids=["-".join(s) for s in ODE_SPECS])
def test_dop853_matches_backprop(spec):
    c = _small(spec)
    ref = dyadsim.backprop(c.net, c.x, c.y)
    res = dyadsim.relax_continuous(c.net, c.x, c.y)
    assert res.method == "DOP853"
    cmp = dyadsim.compare(res.grads, ref)
    assert cmp.max_rel_error <= 1e-6, cmp.table()
    assert 0 < res.t_settle <= res.t_final
    assert res.nfev > 0 and res.n_steps > 0
    assert res.loss == pytest.approx(ref.loss, rel=1e-9)
    # the steady state is the forward pass
    acts = c.net.forward(c.x)
    for v in c.net.nodes:
        np.testing.assert_allclose(res.m[:, c.net.slice(v)], acts[v], rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("method", ["BDF", pytest.param("Radau", marks=pytest.mark.slow)])
@pytest.mark.parametrize("spec", [("dag", "tanh", "xent", "soft"), ("mlp", "softplus", "mse", "real")],
                         ids=["dag-tanh-xent", "mlp-softplus-mse"])
def test_implicit_methods_with_sparse_jacobian(method, spec):
    c = _small(spec, batch=2, depth=3)
    ref = dyadsim.backprop(c.net, c.x, c.y)
    res = dyadsim.relax_continuous(c.net, c.x, c.y, method=method)
    assert res.method == method
    assert res.njev > 0, "the implicit solver should have evaluated the analytic Jacobian"
    assert dyadsim.compare(res.grads, ref).max_rel_error <= 1e-6
    assert 0 < res.t_settle <= res.t_final


def test_other_explicit_methods():
    c = _small(("mlp", "tanh", "mse", "real"))
    ref = dyadsim.backprop(c.net, c.x, c.y)
    res = dyadsim.relax_continuous(c.net, c.x, c.y, method="RK45")
    assert dyadsim.compare(res.grads, ref).max_rel_error <= 1e-6


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


def test_single_sample_and_record():
    c = _small(("dag", "mixed", "xent", "onehot"))
    x, y = c.x[0], c.y[0]
    res = dyadsim.relax_continuous(c.net, x, y, record=True)
    assert res.x.shape == res.z.shape == (c.net.n,)
    assert res.t.ndim == 1 and res.t[0] == 0 and res.t[-1] == pytest.approx(res.t_final)
    assert np.all(np.diff(res.t) > 0)
    assert res.x_t.shape == res.z_t.shape == (len(res.t), c.net.n)
    assert not np.any(res.x_t[0]) and not np.any(res.z_t[0])
    np.testing.assert_array_equal(res.x_t[-1], res.x)
    ref = dyadsim.backprop(c.net, x, y)
    assert dyadsim.compare(res.grads, ref).max_rel_error <= 1e-6
    rb = dyadsim.relax_continuous(c.net, x[None], y[None])
    assert dyadsim.compare(rb.grads, res.grads).max_rel_error <= 1e-8


def test_t_max_too_short_raises_convergence_error():
    c = _small(("mlp", "tanh", "mse", "real"))
    with pytest.raises(dyadsim.ConvergenceError, match="steady state"):
        dyadsim.relax_continuous(c.net, c.x, c.y, t_max=2.0)


def test_unknown_ode_method_lists_valid_ones():
    net = make_net()
    x, y = make_batch(net, 0)
    with user_error("unknown ODE method 'Euler'") as ei:
        dyadsim.relax_continuous(net, x, y, method="Euler")
    for m in ("RK45", "RK23", "DOP853", "Radau", "BDF", "LSODA"):
        assert m in str(ei.value)


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
