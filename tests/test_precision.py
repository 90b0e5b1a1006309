"""The dynamic range of the dyadic encoding (docs/theory.md section 7).

* ``relax`` is exact by default (``state="md"``): on deep sigmoid MLPs (width 16, L = 20 and
  30, mse and xent) every tensor matches an extended-precision oracle to 1e-12 in float64,
  both schedules, where the physical encoding (``state="xz"``) loses 1e-4 to 100 %;
* the predicted rounding floor (``result.precision``) matches the measured error layer by
  layer, and a :class:`dyadsim.PrecisionWarning` names the layer and the fix when the floor
  exceeds the requested accuracy -- and never on the ordinary nets of conftest;
* overflow (weights of 1e200, float32 casts of 1e100) is a ConvergenceError naming what
  overflowed, never ``converged=True`` with NaN gradients.

The oracle is a forward/backward pass written here in ``np.longdouble`` (80-bit extended
precision on x86: eps 1.1e-19), sharing no code with dyadsim.
"""

from __future__ import annotations

import json
import math
import warnings

import networkx as nx
import numpy as np
import pytest

import dyadsim
from conftest import MIXED_SPECS, SEEDED_SPECS, seeded_case

LD = np.longdouble
EPS64 = float(np.finfo(np.float64).eps)
EPS32 = float(np.finfo(np.float32).eps)
SCHEDULES = ("parallel", "wavefront")


# ----------------------------------------------------------------------------- the oracle
def _act(name, u):
    if name == "tanh":
        t = np.tanh(u)
        return t, 1 - t * t
    if name == "sigmoid":
        s = 1 / (1 + np.exp(-u))
        return s, s * (1 - s)
    if name == "identity":
        return u, np.ones_like(u)
    raise AssertionError(f"oracle has no activation {name}")


def oracle(net, x, y):
    """(gradients, {node: d = dC/da}) of the mean batch loss, in extended precision."""
    X = np.atleast_2d(np.asarray(x, dtype=LD))
    Y = np.atleast_2d(np.asarray(y, dtype=LD))
    P = {k: np.asarray(v, dtype=LD) for k, v in net.params.items()}
    a, slope = {net.input: X}, {}
    for v in net.nodes:
        u = P[("b", v)] + sum(a[p] @ P[("W", p, v)].T for p in net.preds[v])
        a[v], slope[v] = _act(net.activations[v].name, u)
    out = a[net.output]
    if net.loss.name == "mse":
        g = out - Y
    else:
        e = np.exp(out - out.max(axis=1, keepdims=True))
        g = e / e.sum(axis=1, keepdims=True) * Y.sum(axis=1, keepdims=True) - Y
    d, delta = {}, {}
    for v in reversed(net.nodes):
        d[v] = g if v == net.output else sum(delta[c] @ P[("W", v, c)] for c in net.succs[v])
        delta[v] = slope[v] * d[v]
    B = X.shape[0]
    grads = {k: (delta[k[2]].T @ a[k[1]] if k[0] == "W" else delta[k[1]].sum(axis=0)) / B
             for k in net.params}
    return grads, d


def rel_err(g, r) -> float:
    g = np.asarray(g, dtype=LD).ravel()
    r = np.asarray(r, dtype=LD).ravel()
    s = np.max(np.abs(r))
    return float(np.linalg.norm((g - r) / s) / np.linalg.norm(r / s))


def worst_err(grads, ref) -> float:
    return max(rel_err(grads[k], ref[k]) for k in ref)


def deep(L, loss, seed=0, activation="sigmoid", width=16, batch=8):
    """A deep MLP (L weight layers of width 16) whose error signal shrinks ~4x per layer."""
    net = dyadsim.mlp([width] * L + [4], activation=activation, loss=loss, seed=seed)
    rng = np.random.default_rng([seed, 7])
    x = rng.standard_normal((batch, width))
    y = (np.eye(4)[rng.integers(0, 4, batch)] if loss == "xent"
         else rng.standard_normal((batch, 4)))
    return net, x, y


class no_precision_warning:
    """The block must not issue a PrecisionWarning."""

    def __enter__(self):
        self._cm = warnings.catch_warnings(record=True)
        self.caught = self._cm.__enter__()
        warnings.simplefilter("always")
        return self

    def __exit__(self, *exc):
        self._cm.__exit__(*exc)
        bad = [w for w in self.caught if issubclass(w.category, dyadsim.PrecisionWarning)]
        assert not bad, str(bad[0].message)
        return False


def test_oracle_against_finite_differences():
    """The oracle itself: central differences of a separately written longdouble loss."""
    net, x, y = deep(3, "xent", seed=3, width=5, batch=3)
    g, _ = oracle(net, x, y)

    def loss():
        a = np.asarray(x, dtype=LD)
        for v in net.nodes:
            (p,) = net.preds[v]
            a = _act(net.activations[v].name,
                     np.asarray(net.params[("b", v)], LD) + a @ np.asarray(net.params[("W", p, v)], LD).T)[0]
        e = np.exp(a - a.max(axis=1, keepdims=True))
        logp = (a - a.max(axis=1, keepdims=True)) - np.log(e.sum(axis=1, keepdims=True))
        return float(np.mean(-np.sum(np.asarray(y, LD) * logp, axis=1)))

    h = 1e-6
    for key, p in net.params.items():
        fd = np.zeros_like(p)
        for idx in np.ndindex(p.shape):
            old = p[idx]
            p[idx] = old + h
            fp = loss()
            p[idx] = old - h
            fm = loss()
            p[idx] = old
            fd[idx] = (fp - fm) / (2 * h)
        np.testing.assert_allclose(np.asarray(g[key], float), fd, rtol=1e-6, atol=1e-9)


# ----------------------------------------------------------------------------- exact by default
@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("loss", ["mse", "xent"])
@pytest.mark.parametrize("L", [20, 30])
def test_default_relax_is_exact_on_deep_sigmoid_nets(L, loss, schedule, record_property):
    net, x, y = deep(L, loss)
    ref, d_ref = oracle(net, x, y)
    with no_precision_warning():
        res = dyadsim.relax(net, x, y, schedule=schedule)
    assert res.state == "md" and res.converged and res.steps == 2 * L
    errs = {k: rel_err(res.grads[k], ref[k]) for k in ref}
    record_property("worst_rel_error", max(errs.values()))
    assert max(errs.values()) <= 1e-12, sorted(errs.items(), key=lambda kv: -kv[1])[:3]
    # the error signal itself, however small (max|d| of the first layer ~1e-12 at L = 20)
    for v in net.nodes:
        assert rel_err(res.d[:, net.slice(v)], d_ref[v]) <= 1e-12, v
    assert res.precision.floor <= 1e-13
    # dyadsim's own backprop agrees too
    assert dyadsim.compare(res, dyadsim.backprop(net, x, y)).max_rel_error <= 1e-12


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("L", [20, 30])
def test_default_relax_float32_deep(L, schedule):
    net, x, y = deep(L, "xent", seed=1)
    ref, _ = oracle(net, x, y)
    with no_precision_warning():
        res = dyadsim.relax(net, x, y, schedule=schedule, dtype=np.float32)
    err = worst_err(res.grads, ref)
    assert err <= 50 * L * EPS32, err  # measured 7.6e-7 and 1.3e-6
    assert res.precision.floor <= 1e-4


@pytest.mark.parametrize("loss", ["mse", "xent"])
def test_md_exact_for_eta_below_and_above_one(loss):
    net, x, y = deep(8, loss, seed=2)
    ref, _ = oracle(net, x, y)
    for eta in (0.5, 1.5):
        with no_precision_warning():
            res = dyadsim.relax(net, x, y, eta=eta)
        assert res.converged
        assert worst_err(res.grads, ref) <= 1e-10, eta


# ----------------------------------------------------------------------------- the physical encoding
@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("loss", ["mse", "xent"])
def test_xz_loses_the_first_layers_and_warns(loss, schedule):
    net, x, y = deep(20, loss)
    ref, _ = oracle(net, x, y)
    with pytest.warns(dyadsim.PrecisionWarning) as rec:
        res = dyadsim.relax(net, x, y, schedule=schedule, state="xz")
    assert res.state == "xz"
    first = ("W", net.input, net.nodes[0])
    err = rel_err(res.grads[first], ref[first])
    assert 1e-6 < err < 1e-2, err  # measured 5e-5 .. 1.1e-4
    # the pooled summary hides it; the comparison's worst row does not
    cmp = dyadsim.compare(res, dyadsim.backprop(net, x, y))
    assert cmp.summary.rel_error < 1e-12 < 1e-6 < cmp.worst.rel_error
    msg = str(rec[0].message)
    assert f"layer {net.nodes[0]!r}" in msg and "state='md'" in msg and "gain staging" in msg
    assert rec[0].filename == __file__  # attributed to the caller, not to dyadsim
    assert res.precision.worst.node == net.nodes[0]
    assert res.info["precision_floor"] == res.precision.floor > 1e-6


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("loss", ["mse", "xent"])
def test_xz_at_depth_30_is_lost_and_warns(loss, dtype):
    net, x, y = deep(30, loss)
    ref, _ = oracle(net, x, y)
    with pytest.warns(dyadsim.PrecisionWarning, match="lost in rounding") as rec:
        res = dyadsim.relax(net, x, y, state="xz", dtype=dtype)
    assert worst_err(res.grads, ref) > 0.5
    assert res.precision.floor >= 1
    if dtype == np.float32:
        assert "dtype=float64" in str(rec[0].message)


@pytest.mark.parametrize("schedule, eta", [("parallel", 1.0), ("wavefront", 1.0),
                                           ("parallel", 0.5)])
@pytest.mark.parametrize("seed", [0, 1])
def test_predicted_floor_matches_measurement(seed, schedule, eta):
    """xz in float64: the measured relative error of every layer's d is 0.25 to 2.5 times the
    predicted floor, and no gradient is worse than 2.5 times its layer's floor."""
    net, x, y = deep(20, "mse", seed=seed)
    ref, d_ref = oracle(net, x, y)
    with pytest.warns(dyadsim.PrecisionWarning):
        res = dyadsim.relax(net, x, y, schedule=schedule, eta=eta, state="xz")
    rep = res.precision
    checked = 0
    for v in net.nodes:
        floor = rep.layers[v].floor
        if not 1e3 * EPS64 < floor < 1e-2:  # rounding-level layers and lost ones aside
            continue
        measured = rel_err(res.d[:, net.slice(v)], d_ref[v])
        assert 0.25 * floor <= measured <= 2.5 * floor, (v, measured, floor)
        for key in (("b", v),) + tuple(("W", p, v) for p in net.preds[v]):
            assert rel_err(res.grads[key], ref[key]) <= 2.5 * rep.tensor_floor(key), key
        checked += 1
    assert checked >= 8


def test_states_agree_where_the_range_is_ordinary(case):
    """Both encodings run the same Euler map: on conftest's nets they agree to rounding."""
    for schedule in SCHEDULES:
        md = dyadsim.relax(case.net, case.x, case.y, schedule=schedule)
        xz = dyadsim.relax(case.net, case.x, case.y, schedule=schedule, state="xz")
        np.testing.assert_allclose(xz.m, md.m, rtol=1e-13, atol=1e-15)
        np.testing.assert_allclose(xz.d, md.d, rtol=1e-11, atol=1e-14)
        assert dyadsim.compare(xz, md).max_rel_error <= 1e-11


# ----------------------------------------------------------------------------- no false alarms
@pytest.mark.parametrize("spec", SEEDED_SPECS + MIXED_SPECS,
                         ids=["-".join(s) for s in SEEDED_SPECS + MIXED_SPECS])
def test_no_false_alarm_on_ordinary_nets(spec):
    c = seeded_case(spec)
    with no_precision_warning():
        for state in ("md", "xz"):
            for dtype in (np.float64, np.float32):
                for eta in (1.0, 0.5):
                    r = dyadsim.relax(c.net, c.x, c.y, eta=eta, state=state, dtype=dtype)
                    assert r.precision.floor <= dyadsim.dynamics.default_accuracy(dtype)
        dyadsim.relax(c.net, c.x, c.y, schedule="wavefront", state="xz", dtype=np.float32)


# ----------------------------------------------------------------------------- result fields
@pytest.mark.parametrize("state", ["md", "xz"])
@pytest.mark.parametrize("schedule", SCHEDULES)
def test_result_state_fields(state, schedule):
    net, x, y = deep(4, "xent", seed=5, width=5, batch=3)
    res = dyadsim.relax(net, x, y, schedule=schedule, state=state, record=True)
    assert res.x.shape == res.z.shape == res.m.shape == res.d.shape == (3, net.n)
    if state == "md":  # m, d are the state; x, z derived
        np.testing.assert_array_equal(res.x, res.m + 0.5 * res.d)
        np.testing.assert_array_equal(res.z, res.m - 0.5 * res.d)
    else:  # x, z are the state; m, d derived
        np.testing.assert_array_equal(res.m, 0.5 * (res.x + res.z))
        np.testing.assert_array_equal(res.d, res.x - res.z)
    hx, hz = res.history
    hm, hd = res.history_m, res.history_d
    assert hx.shape == hm.shape == (res.steps + 1, 3, net.n)
    np.testing.assert_allclose(hm[-1], res.m, rtol=1e-15, atol=1e-300)
    np.testing.assert_allclose(hd[-1], res.d, rtol=1e-15, atol=1e-300)
    np.testing.assert_allclose(0.5 * (hx + hz), hm, rtol=1e-14, atol=1e-16)
    assert not np.any(hm[0]) and not np.any(hd[0])
    # the report and info
    assert list(res.precision.layers) == list(net.nodes)
    for v, p in res.precision.layers.items():
        assert p.max_m == pytest.approx(np.max(np.abs(res.m[:, net.slice(v)])), rel=1e-12)
        assert p.max_d == pytest.approx(np.max(np.abs(res.d[:, net.slice(v)])), rel=1e-9)
        assert p.dynamic_range == pytest.approx(p.max_d / p.max_m, rel=1e-12)
    info = json.loads(json.dumps(res.info, allow_nan=False))
    assert info["state"] == state and info["dtype"] == "float64"
    assert info["precision"]["state"] == state and len(info["precision"]["layers"]) == len(net.nodes)
    assert info["accuracy"] == dyadsim.dynamics.default_accuracy(np.float64) == 1e-6
    assert state in repr(res)


def test_euler_method_passes_the_state():
    net, x, y = deep(3, "mse", seed=6, width=4, batch=2)
    r = dyadsim.Euler(state="xz")(net, x, y)
    assert r.state == "xz" and r.info["state"] == "xz"
    assert dyadsim.Euler()(net, x, y).state == "md"


# ----------------------------------------------------------------------------- the functions
def _chain():
    """in(1) -> a(2) -> b(2) -> out(1), identity activations, for hand-made states."""
    G = nx.DiGraph()
    G.add_node("in", size=1)
    for v, n in (("a", 2), ("b", 2), ("out", 1)):
        G.add_node(v, size=n, activation="identity", bias=np.zeros(n))
    G.add_edge("in", "a", weight=np.ones((2, 1)))
    G.add_edge("a", "b", weight=np.ones((2, 2)))
    G.add_edge("b", "out", weight=np.ones((1, 2)))
    return dyadsim.Network.from_graph(G)


def test_dynamic_range_and_floor_closed_form():
    net = _chain()
    # columns: a (2), b (2), out (1)
    m = np.array([[1.0, -4.0, 2.0, 0.5, 3.0], [0.5, 1.0, -1.0, 1.0, 1.0]])
    d = np.array([[1e-8, 0.0, 1e-3, -2e-3, 6.0], [-2e-8, 1e-9, 0.0, 1e-3, 1.0]])
    dr = dyadsim.dynamics.dynamic_range(net, m, d)
    assert dr == {"a": pytest.approx(2e-8 / 4), "b": pytest.approx(2e-3 / 2), "out": pytest.approx(2.0)}
    rep = dyadsim.dynamics.rounding_floor(net, m, d, state="xz", dtype=np.float64)
    e = EPS64
    loc = {"out": e * 3 / 6, "b": e * 2 / 2e-3, "a": e * 4 / 2e-8}
    for v in net.nodes:
        assert rep.layers[v].local_floor == pytest.approx(loc[v], rel=1e-12)
    rd = {"a": 2, "b": 1, "out": 0}
    want = {"out": loc["out"], "b": loc["b"] + loc["out"], "a": loc["a"] + loc["b"] + loc["out"]}
    for v in net.nodes:
        assert rep.layers[v].floor == pytest.approx(want[v] + e * (1 + rd[v]), rel=1e-12)
    assert rep.worst.node == "a" and rep.floor == rep.layers["a"].floor
    assert rep.tensor_floor(("W", "in", "a")) == rep.layers["a"].floor
    assert rep.tensor_floor(("b", "out")) == rep.layers["out"].floor
    # the exact encoding: eps per layer between v and the output, whatever the range
    md = dyadsim.dynamics.rounding_floor(net, m, d, state="md", dtype=np.float32, eta=0.5)
    for v in net.nodes:
        assert md.layers[v].local_floor == 0
        assert md.layers[v].floor == pytest.approx(2 * EPS32 * (1 + rd[v]), rel=1e-12)
    # eta and eps override
    r2 = dyadsim.dynamics.rounding_floor(net, m, d, state="xz", eta=1.5, eps=1e-6)
    assert r2.dtype == "custom" and r2.eps == 1e-6
    assert r2.layers["out"].local_floor == pytest.approx(2 * 1e-6 * 3 / 6)
    # per-node maps work like stacked arrays
    blocks = {v: m[:, net.slice(v)] for v in net.nodes}, {v: d[:, net.slice(v)] for v in net.nodes}
    assert dyadsim.dynamics.rounding_floor(net, *blocks).floor == rep.floor
    assert "floor" in rep.table() and json.loads(json.dumps(rep.to_dict()))["worst_layer"] == "a"


def test_floor_special_values():
    net = _chain()
    m = np.zeros((1, 5))
    d = np.zeros((1, 5))
    d[0, 4] = 1.0
    rep = dyadsim.dynamics.rounding_floor(net, m, d)
    assert rep.layers["out"].dynamic_range == math.inf and rep.layers["out"].local_floor == 0
    assert rep.layers["a"].dynamic_range == 0 and rep.layers["a"].local_floor == 0
    assert json.dumps(rep.to_dict(), allow_nan=False)  # inf -> null
    with pytest.raises(dyadsim.DyadsimError, match="state"):
        dyadsim.dynamics.rounding_floor(net, m, d, state="x+z")
    with pytest.raises(dyadsim.DyadsimError, match="eta"):
        dyadsim.dynamics.rounding_floor(net, m, d, eta=2.0)


def test_warn_if_imprecise():
    net = _chain()
    m = np.ones((1, 5))
    d = np.full((1, 5), 1e-12)
    d[0, 4] = 1.0
    rep = dyadsim.dynamics.rounding_floor(net, m, d, state="xz")
    with pytest.warns(dyadsim.PrecisionWarning) as rec:
        bad = dyadsim.dynamics.warn_if_imprecise(rep, 1e-6, what="test")
    assert [p.node for p in bad] == ["a", "b"]  # worst first
    msg = str(rec[0].message)
    assert msg.startswith("test: layer 'a' and 1 more layer(s)")
    assert "starts at layer 'b'" in msg and "state='md'" in msg
    assert rec[0].filename == __file__
    with no_precision_warning():
        assert dyadsim.dynamics.warn_if_imprecise(rep, 1.0) == []
    with pytest.warns(dyadsim.PrecisionWarning, match="fix: use gain='auto'$"):
        dyadsim.dynamics.warn_if_imprecise(rep, 1e-6, fix="gain='auto'")
    assert issubclass(dyadsim.PrecisionWarning, UserWarning)


def test_default_accuracy():
    assert dyadsim.dynamics.default_accuracy(np.float64) == 1e-6
    assert dyadsim.dynamics.default_accuracy("float32") == pytest.approx(1e4 * EPS32)


def test_tol_sets_the_accuracy():
    """A user tol is the accuracy asked for: asking 1e-9 of float32 warns."""
    net, x, y = deep(3, "mse", seed=8, width=4, batch=2)
    with pytest.warns(dyadsim.PrecisionWarning, match="dtype=float64"):
        r = dyadsim.relax(net, x, y, dtype=np.float32, tol=1e-9)
    assert r.info["accuracy"] == 1e-9


# ----------------------------------------------------------------------------- overflow
def _scaled(activation, factor):
    net = dyadsim.mlp("3-4-4-2", activation=activation, seed=0)
    for k in net.params:
        if k[0] == "W":
            net.params[k] = net.params[k] * factor
    return net, np.ones((2, 3)), np.ones((2, 2))


RELAX_VARIANTS = [dict(), dict(state="xz"), dict(schedule="wavefront"),
                  dict(schedule="wavefront", state="xz"), dict(eta=0.5), dict(eta=0.5, state="xz")]


@pytest.mark.filterwarnings("error::RuntimeWarning")
@pytest.mark.parametrize("activation", ["relu", "identity", "softplus"])
def test_huge_weights_are_a_convergence_error(activation):
    net, x, y = _scaled(activation, 1e200)
    for kw in RELAX_VARIANTS:
        with pytest.raises(dyadsim.ConvergenceError, match=r"layer 'h\d'.*overflowed") as ei:
            dyadsim.relax(net, x, y, **kw)
        assert not isinstance(ei.value, ValueError)
    with pytest.raises(dyadsim.ConvergenceError, match="backprop: .*layer 'h2'.*overflowed"):
        dyadsim.backprop(net, x, y)


@pytest.mark.filterwarnings("error::RuntimeWarning")
@pytest.mark.parametrize("activation", ["tanh", "sigmoid"])
def test_huge_weights_that_saturate_are_fine(activation):
    """Saturating units: sigma' = 0 exactly, so nothing overflows; no false error."""
    net, x, y = _scaled(activation, 1e200)
    ref = dyadsim.backprop(net, x, y)
    assert all(np.all(np.isfinite(v)) for v in ref.values())
    for kw in RELAX_VARIANTS:
        r = dyadsim.relax(net, x, y, **kw)
        assert r.converged and all(np.all(np.isfinite(v)) for v in r.grads.values())


@pytest.mark.filterwarnings("error::RuntimeWarning")
def test_float32_casts_that_overflow():
    net, x, y = _scaled("tanh", 1.0)
    for fn in (lambda **k: dyadsim.relax(net, **k), lambda **k: dyadsim.backprop(net, **k),
               lambda **k: dyadsim.relax(net, schedule="wavefront", **k)):
        with pytest.raises(dyadsim.ConvergenceError, match="input x overflows float32"):
            fn(x=x * 1e100, y=y, dtype=np.float32)
        with pytest.raises(dyadsim.ConvergenceError, match="target y overflows float32"):
            fn(x=x, y=y * 1e39, dtype=np.float32)
    big, _, _ = _scaled("tanh", 1e39)
    with pytest.raises(dyadsim.ConvergenceError, match=r"weight W\[input->h1\] overflows float32"):
        dyadsim.relax(big, x, y, dtype=np.float32)
    # the same inputs are fine in float64
    assert dyadsim.relax(net, x * 1e100, y).converged


@pytest.mark.filterwarnings("error::RuntimeWarning")
def test_overflowing_gradient_is_a_convergence_error():
    """A linear net with inputs of 1e300: activations fit float64, the gradient does not."""
    net = dyadsim.mlp("3-4-2", activation="identity", seed=0)
    x, y = np.full((2, 3), 1e300), np.ones((2, 2))
    with pytest.raises(dyadsim.ConvergenceError, match="overflowed"):
        dyadsim.backprop(net, x, y)
    for kw in RELAX_VARIANTS[:4]:
        with pytest.raises(dyadsim.ConvergenceError, match="overflowed"):
            dyadsim.relax(net, x, y, **kw)


# ----------------------------------------------------------------------------- schedules
def test_exact_wavefront_is_backprop_bit_for_bit(case):
    """In the exact encoding the wavefront at eta = 1 is a forward and a backward pass:
    the same operations as backprop, so the same bits."""
    g = dyadsim.backprop(case.net, case.x, case.y)
    r = dyadsim.relax(case.net, case.x, case.y, schedule="wavefront")
    for k in g:
        np.testing.assert_array_equal(r.grads[k], g[k])
    assert r.loss == g.loss


def test_async_schedule_reports_precision():
    net, x, y = deep(3, "mse", seed=9, width=4, batch=2)
    ref, _ = oracle(net, x, y)
    with no_precision_warning():
        r = dyadsim.relax(net, x, y, schedule="async", seed=1)
    assert r.state == "md" and r.precision is not None and r.info["state"] == "md"
    np.testing.assert_array_equal(r.x, r.m + 0.5 * r.d)
    assert worst_err(r.grads, ref) <= 1e-10
    with pytest.raises(dyadsim.DyadsimError, match="async schedule updates m and d"):
        dyadsim.relax(net, x, y, schedule="async", state="xz")
