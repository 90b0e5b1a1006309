"""Precision metrics (docs/theory.md, section 5): per-tensor relative error, norm ratio and
misalignment angle against closed-form cases; JSON and table output; bad input."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import dyadsim
from conftest import make_case, user_error


def _orthonormal_pair(rng, n):
    q, _ = np.linalg.qr(rng.standard_normal((n, 2)))
    return q[:, 0], q[:, 1]


def _ref(rng):
    return dyadsim.Gradients({("W", "a", "b"): rng.standard_normal((3, 4)),
                              ("b", "b"): rng.standard_normal(3)}, method="ref")


# ----------------------------------------------------------------------------- angle
@pytest.mark.parametrize("theta", [1e-12, 1e-9, 1e-6, 1e-3, 0.5, 1.0, np.pi / 2, 3.0])
def test_angle_of_rotated_vectors(theta):
    rng = np.random.default_rng(0)
    u, v = _orthonormal_pair(rng, 50)
    a = 3.0 * u
    b = 0.25 * (np.cos(theta) * u + np.sin(theta) * v)
    got = dyadsim.angle(a, b)
    # the rounding of b itself limits the attainable accuracy to ~1e-16 rad
    assert got == pytest.approx(theta, rel=0.03, abs=3e-16)
    assert dyadsim.angle(b, a) == pytest.approx(got, rel=1e-12, abs=1e-16)


def test_angle_tiny_is_not_lost_to_arccos():
    """arccos(cos) would return 0 or ~1.5e-8 here; the angle must come out as 1e-9."""
    u, v = _orthonormal_pair(np.random.default_rng(1), 1000)
    theta = 1e-9
    b = np.cos(theta) * u + np.sin(theta) * v
    assert dyadsim.angle(u, b) == pytest.approx(theta, rel=0.03)


def test_angle_special_cases():
    x = np.array([1.0, 2.0, 3.0])
    assert dyadsim.angle(x, 2 * x) == 0.0
    assert dyadsim.angle(x, -x) == pytest.approx(np.pi, rel=1e-14)
    assert dyadsim.angle([1, 0], [0, 1]) == pytest.approx(np.pi / 2, rel=1e-14)
    assert dyadsim.angle([1, 0], [1, 1]) == pytest.approx(np.pi / 4, rel=1e-14)
    assert dyadsim.angle(np.zeros(3), np.zeros(3)) == 0.0
    assert dyadsim.angle(np.zeros(3), x) == pytest.approx(np.pi / 2)
    # any shape: the arrays are flattened
    assert dyadsim.angle(x.reshape(3, 1), x) == 0.0


@given(st.floats(1e-10, 3.0), st.integers(2, 40), st.integers(0, 2**16))
def test_angle_property(theta, n, seed):
    u, v = _orthonormal_pair(np.random.default_rng(seed), n)
    b = np.cos(theta) * u + np.sin(theta) * v
    assert dyadsim.angle(u, b) == pytest.approx(theta, rel=0.03, abs=1e-15)


# ----------------------------------------------------------------------------- compare
def test_compare_doubled_gradients():
    """g = 2 r: relative error 1, norm ratio 2, angle 0 (log10 angle -inf)."""
    r = _ref(np.random.default_rng(2))
    g = dyadsim.Gradients({k: 2 * v for k, v in r.items()}, method="doubled")
    cmp = dyadsim.compare(g, r)
    assert set(cmp.tensors) == set(r)
    for m in list(cmp.tensors.values()) + [cmp.summary]:
        assert m.rel_error == pytest.approx(1.0, rel=1e-14)
        assert m.norm_ratio == pytest.approx(2.0, rel=1e-14)
        assert m.angle == 0.0
        assert m.log10_angle == -math.inf
    assert cmp.max_rel_error == pytest.approx(1.0, rel=1e-14)
    assert cmp.label == "doubled" and cmp.reference_label == "ref"
    assert cmp.tensors[("W", "a", "b")].size == 12 and cmp.summary.size == 15


def test_compare_perpendicular_error():
    """g = r + e with e perpendicular to r, |e| = 0.1 |r|: rel error 0.1, norm ratio
    sqrt(1.01), angle atan(0.1)."""
    rng = np.random.default_rng(3)
    u, v = _orthonormal_pair(rng, 12)
    r = {("W", "a", "b"): (5 * u).reshape(3, 4)}
    g = {("W", "a", "b"): (5 * u + 0.5 * v).reshape(3, 4)}
    m = dyadsim.compare(g, r).tensors[("W", "a", "b")]
    assert m.rel_error == pytest.approx(0.1, rel=1e-12)
    assert m.norm_ratio == pytest.approx(math.sqrt(1.01), rel=1e-12)
    assert m.angle == pytest.approx(math.atan(0.1), rel=1e-12)
    assert m.log10_angle == pytest.approx(math.log10(math.atan(0.1)), rel=1e-12)


def test_compare_tiny_rotation_per_tensor_and_summary():
    rng = np.random.default_rng(4)
    theta = 1e-9
    r, g = {}, {}
    for k, n in ((("W", "a", "b"), 20), (("b", "b"), 5)):
        u, v = _orthonormal_pair(rng, n)
        r[k] = 2.0 * u
        g[k] = 2.0 * (np.cos(theta) * u + np.sin(theta) * v)
    cmp = dyadsim.compare(g, r)
    for m in cmp.tensors.values():
        assert m.angle == pytest.approx(theta, rel=0.03)
        assert m.log10_angle == pytest.approx(-9.0, abs=0.02)
        assert m.rel_error == pytest.approx(theta, rel=0.03)
        assert m.norm_ratio == pytest.approx(1.0, abs=1e-15)
    # both tensors rotated by theta in orthogonal planes of equal weight: global angle theta
    assert cmp.summary.angle == pytest.approx(theta, rel=0.03)


def test_compare_zero_reference():
    r = {("b", "x"): np.zeros(3), ("b", "y"): np.ones(2)}
    same = dyadsim.compare({("b", "x"): np.zeros(3), ("b", "y"): np.ones(2)}, r)
    m = same.tensors[("b", "x")]
    assert m.rel_error == 0.0 and m.norm_ratio == 1.0 and m.angle == 0.0
    off = dyadsim.compare({("b", "x"): np.array([0.0, 1e-20, 0.0]), ("b", "y"): np.ones(2)}, r)
    m = off.tensors[("b", "x")]
    assert m.rel_error == math.inf and m.norm_ratio == math.inf
    assert m.angle == pytest.approx(math.pi / 2)
    assert off.max_rel_error == math.inf
    d = json.loads(off.to_json())  # inf is not JSON: it must come out as null
    assert d["max_rel_error"] is None
    assert d["tensors"][0]["rel_error"] is None
    str(off)  # the table prints with inf in it


def test_compare_accepts_results_and_is_one_sided():
    c = make_case("dag", "tanh", "xent", "soft", seed=1)
    ref = dyadsim.backprop(c.net, c.x, c.y)
    res = dyadsim.relax(c.net, c.x, c.y, steps=2 * c.net.depth - 1)
    a = dyadsim.compare(res, ref)  # a RelaxResult is read through .grads
    b = dyadsim.compare(res.grads, ref)
    assert a.max_rel_error == b.max_rel_error and a.summary == b.summary
    assert a.label.startswith("euler") and a.reference_label == "backprop"
    # the reference is the denominator: swapping changes rel error and inverts the norm ratio
    s = dyadsim.compare(ref, res.grads)
    assert s.summary.norm_ratio == pytest.approx(1 / a.summary.norm_ratio, rel=1e-12)
    assert s.summary.angle == pytest.approx(a.summary.angle, rel=1e-12)
    assert dyadsim.compare(ref, ref).max_rel_error == 0.0


def test_compare_summary_is_over_all_parameters():
    rng = np.random.default_rng(5)
    r = _ref(rng)
    g = {k: v + 0.01 * rng.standard_normal(v.shape) for k, v in r.items()}
    cmp = dyadsim.compare(g, r)
    fg = np.concatenate([np.ravel(g[k]) for k in r])
    fr = np.concatenate([np.ravel(r[k]) for k in r])
    assert cmp.summary.rel_error == pytest.approx(np.linalg.norm(fg - fr) / np.linalg.norm(fr),
                                                  rel=1e-12)
    assert cmp.summary.norm_ratio == pytest.approx(np.linalg.norm(fg) / np.linalg.norm(fr),
                                                   rel=1e-12)
    cos = fg @ fr / np.linalg.norm(fg) / np.linalg.norm(fr)
    assert cmp.summary.angle == pytest.approx(np.arccos(cos), rel=1e-6)
    assert cmp.max_rel_error == max(m.rel_error for m in cmp.tensors.values())


def test_compare_json_and_table():
    c = make_case("mlp", "tanh", "mse", seed=2)
    ref = dyadsim.backprop(c.net, c.x, c.y)
    res = dyadsim.relax(c.net, c.x, c.y, steps=2 * c.net.depth - 1)
    cmp = dyadsim.compare(res.grads, ref, label="early", reference_label="bp")
    d = json.loads(cmp.to_json())
    assert d["method"] == "early" and d["reference"] == "bp"
    assert d["max_rel_error"] == pytest.approx(cmp.max_rel_error)
    assert set(d["summary"]) >= {"name", "size", "rel_error", "norm_ratio", "angle",
                                 "log10_angle"}
    assert len(d["tensors"]) == len(ref)
    for t, (k, m) in zip(d["tensors"], cmp.tensors.items()):
        assert set(t) >= {"name", "size", "rel_error", "norm_ratio", "angle", "log10_angle"}
        assert t["rel_error"] == pytest.approx(m.rel_error)
        assert t["size"] == np.size(ref[k])
    assert json.loads(json.dumps(cmp.to_dict())) == d
    table = cmp.table()
    assert str(cmp) == table
    assert table.splitlines()[0] == "early vs bp"
    for name in ("W[input->h1]", "b[output]", "(all parameters)", "rel.error", "norm ratio",
                 "log10 angle"):
        assert name in table
    # title, head, rule, worst, pooled, rule, one row per tensor
    lines = table.splitlines()
    assert len(lines) == 6 + len(ref)
    assert lines[3].startswith(f"worst: {cmp.worst.name}") and lines[4].startswith("(all parameters)")
    assert d["worst"]["name"] == cmp.worst.name
    assert d["worst"]["rel_error"] == pytest.approx(cmp.max_rel_error)


def test_compare_leads_with_the_worst_tensor():
    """A small tensor off by 1e-3 next to a large exact one: the pooled row hides it
    (~1e-7), the worst row and max_rel_error show it, and the table prints it first."""
    rng = np.random.default_rng(11)
    big = rng.standard_normal((100, 100))
    small = rng.standard_normal(4)
    r = {("W", "a", "b"): big, ("b", "b"): small}
    g = {("W", "a", "b"): big.copy(), ("b", "b"): small * (1 + 1e-3)}
    cmp = dyadsim.compare(g, r)
    assert cmp.worst.name == "b[b]" and cmp.worst is cmp.tensors[("b", "b")]
    assert cmp.worst.rel_error == pytest.approx(1e-3, rel=1e-9)
    assert cmp.max_rel_error == cmp.worst.rel_error
    # the pooled error is the small tensor's share of the whole norm
    want = 1e-3 * np.linalg.norm(small) / np.sqrt(np.sum(big ** 2) + np.sum(small ** 2))
    assert cmp.summary.rel_error == pytest.approx(want, rel=1e-6)
    assert cmp.summary.rel_error < 1e-4 < cmp.worst.rel_error
    lines = cmp.table().splitlines()
    first_data = lines[3]
    assert first_data.startswith("worst: b[b]") and "1.000e-03" in first_data
    assert lines.index(first_data) < next(i for i, l in enumerate(lines) if l.startswith("(all"))
    d = json.loads(cmp.to_json())
    assert list(d)[:3] == ["method", "reference", "worst"]
    assert d["worst"]["name"] == "b[b]"


def test_compare_worst_of_nothing():
    cmp = dyadsim.compare({}, {})
    assert cmp.worst is None and cmp.max_rel_error == 0.0
    assert json.loads(cmp.to_json())["worst"] is None
    assert "worst" not in cmp.table()


def test_compare_exact_json_null_angle():
    c = make_case("mlp", "tanh", "mse", seed=2)
    ref = dyadsim.backprop(c.net, c.x, c.y)
    d = json.loads(dyadsim.compare(ref, ref).to_json())
    assert d["summary"]["log10_angle"] is None and d["summary"]["angle"] == 0.0


# ----------------------------------------------------------------------------- bad input
def test_compare_mismatched_keys():
    r = _ref(np.random.default_rng(6))
    g = dict(r)
    del g[("b", "b")]
    with user_error(r"different parameters: missing \['b\[b\]'\]"):
        dyadsim.compare(g, r)
    g = dict(r)
    g[("W", "x", "y")] = np.zeros(2)
    with user_error(r"unexpected \['W\[x->y\]'\]"):
        dyadsim.compare(g, r)


def test_compare_mismatched_shapes():
    r = _ref(np.random.default_rng(7))
    g = dict(r)
    g[("W", "a", "b")] = r[("W", "a", "b")].T
    with user_error(r"gradient W\[a->b\] has shape \(4, 3\), reference has \(3, 4\)"):
        dyadsim.compare(g, r)


def test_compare_non_finite_gradient():
    r = _ref(np.random.default_rng(8))
    g = dict(r)
    g[("b", "b")] = np.array([1.0, np.nan, 0.0])
    with user_error(r"gradient b\[b\] contains NaN"):
        dyadsim.compare(g, r)


def test_compare_across_networks_raises():
    c1 = make_case("mlp", "tanh", "mse", seed=1, depth=2)
    c2 = make_case("mlp", "tanh", "mse", seed=1, depth=3)
    with user_error("different parameters"):
        dyadsim.compare(dyadsim.backprop(c1.net, c1.x, c1.y), dyadsim.backprop(c2.net, c2.x, c2.y))


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
@pytest.mark.parametrize("scale", [1e-170, 1e170])
def test_metrics_are_scale_invariant(scale):
    u = np.array([1.0, 0.0, 0.0])
    theta = 1e-3
    b = np.array([np.cos(theta), np.sin(theta), 0.0])
    assert dyadsim.angle(scale * u, scale * b) == pytest.approx(theta, rel=1e-6)
    m = dyadsim.compare({"g": scale * b}, {"g": scale * u}).tensors["g"]
    assert m.rel_error == pytest.approx(2 * np.sin(theta / 2), rel=1e-6)
    assert m.norm_ratio == pytest.approx(1.0, rel=1e-12)
    assert m.angle == pytest.approx(theta, rel=1e-6)
