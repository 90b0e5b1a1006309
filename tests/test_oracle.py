"""The oracle of the gradient harness (tests/oracle.py) checked on its own: its reverse pass
against its finite differences, closed forms written out by hand, and torch autograd where
torch is installed.  Nothing here compares with dyadsim's gradients."""

from __future__ import annotations

import networkx as nx
import numpy as np
import pytest

from conftest import MIXED_SPECS, SEEDED_SPECS, make_targets, seeded_case
from oracle import ACTIVATION_FUNCS, Oracle, closed_form_111, closed_form_12_xent, tensor_errors
from test_methods import _CNN_TARGETS, cnn_graph

FD_TOL = 1e-6  # central differences, step 1e-6 relative: measured worst 1.7e-7 on these cases


def _chain(w1, b1, w2, b2, act1, act2):
    G = nx.DiGraph()
    G.add_node("x", size=1)
    G.add_node("h", size=1, activation=act1, bias=np.array([b1]))
    G.add_node("o", size=1, activation=act2, bias=np.array([b2]))
    G.add_edge("x", "h", weight=np.array([[w1]]))
    G.add_edge("h", "o", weight=np.array([[w2]]))
    return G


@pytest.mark.parametrize("act2", ["identity", "tanh"])
@pytest.mark.parametrize("act1", ["identity", "tanh"])
@pytest.mark.parametrize("w1,b1,w2,b2,x,y", [(0.7, -0.2, 1.3, 0.1, 0.9, -0.4),
                                             (-1.5, 0.4, 0.6, -0.3, -0.8, 1.1)])
def test_closed_form_1_1_1(act1, act2, w1, b1, w2, b2, x, y):
    o = Oracle.from_graph(_chain(w1, b1, w2, b2, act1, act2), "mse")
    cf = closed_form_111(act1, act2, w1, b1, w2, b2, x, y)
    want = {("W", "x", "h"): cf["w1"], ("b", "h"): cf["b1"], ("W", "h", "o"): cf["w2"],
            ("b", "o"): cf["b2"]}
    X, Y = np.array([[x]]), np.array([[y]])
    assert o.loss(X, Y) == pytest.approx(cf["loss"], rel=1e-14)
    rev = o.grads(X, Y)
    fd = o.fd_grads(X, Y)
    for k, v in want.items():
        assert rev[k].item() == pytest.approx(v, rel=1e-13, abs=1e-15), k
        assert fd[k].item() == pytest.approx(v, rel=1e-7, abs=1e-10), k


@pytest.mark.parametrize("y", [(1.0, 0.0), (0.0, 1.0), (0.3, 0.7), (0.5, 0.25)])
def test_closed_form_softmax_xent(y):
    """Soft and unnormalised targets too (the gradient is p * sum(y) - y)."""
    w, b, x = np.array([[0.8], [-0.5]]), np.array([0.2, -0.1]), 1.3
    G = nx.DiGraph()
    G.add_node("in", size=1)
    G.add_node("out", size=2, activation="identity", bias=b)
    G.add_edge("in", "out", weight=w)
    o = Oracle.from_graph(G, "xent")
    cf = closed_form_12_xent(w, b, x, np.array(y))
    X, Y = np.array([[x]]), np.array([y])
    assert o.loss(X, Y) == pytest.approx(cf["loss"], rel=1e-13)
    rev = o.grads(X, Y)
    np.testing.assert_allclose(rev[("W", "in", "out")], cf["w"], rtol=1e-13, atol=1e-16)
    np.testing.assert_allclose(rev[("b", "out")], cf["b"], rtol=1e-13, atol=1e-16)
    fd = o.fd_grads(X, Y)
    np.testing.assert_allclose(fd[("b", "out")], cf["b"], rtol=1e-7, atol=1e-10)


def test_batch_loss_is_mean_of_samples_and_grads_add_up():
    """The batch loss is the mean of per-sample losses; so is the gradient."""
    o, x, y = _oracle_of(("dag", "softplus", "xent", "soft"))
    whole = o.grads(x, y)
    parts = [o.grads(x[b:b + 1], y[b:b + 1]) for b in range(3)]
    assert o.loss(x, y) == pytest.approx(np.mean([o.loss(x[b:b + 1], y[b:b + 1])
                                                  for b in range(3)]), rel=1e-14)
    for k in whole:
        np.testing.assert_allclose(whole[k], np.mean([p[k] for p in parts], axis=0),
                                   rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("name", sorted(ACTIVATION_FUNCS))
def test_activations_and_their_slopes(name):
    u = np.array([-40.0, -3.0, -0.5, -1e-3, 1e-3, 0.5, 3.0, 40.0])
    f, df = ACTIVATION_FUNCS[name]
    textbook = {"tanh": np.tanh, "identity": lambda t: t,
                "sigmoid": lambda t: 1.0 / (1.0 + np.exp(-t)),
                "relu": lambda t: np.maximum(t, 0.0),
                "softplus": lambda t: np.log1p(np.exp(t))}[name]
    np.testing.assert_allclose(f(u), textbook(u), rtol=1e-14, atol=1e-300)
    h = 1e-6
    np.testing.assert_allclose(df(u), (f(u + h) - f(u - h)) / (2 * h), rtol=1e-6, atol=1e-9)
    big = np.array([-800.0, 800.0])
    assert np.all(np.isfinite(f(big))) and np.all(np.isfinite(df(big)))


# ----------------------------------------------------------------------------- FD vs reverse
def _oracle_of(spec):
    c = seeded_case(spec, depth=3, batch=3)
    return Oracle.from_net(c.net), c.x, c.y


def _cnn_oracle(seed, loss, target):
    G = cnn_graph(seed, loss)
    rng = np.random.default_rng([seed, 43])
    x = rng.random((2,) + tuple(G.nodes["img"]["shape"]))
    return Oracle.from_graph(G, loss), x, make_targets(rng, loss, target, 2, 3)


FD_CASES = ([pytest.param(lambda s=s: _oracle_of(s), id="-".join(s))
             for s in SEEDED_SPECS + MIXED_SPECS]
            + [pytest.param(lambda k=k: _cnn_oracle(k, *_CNN_TARGETS[k % 3]), id=f"cnn{k}")
               for k in range(6)])


@pytest.mark.parametrize("make", FD_CASES)
def test_reverse_pass_equals_finite_differences(make):
    o, x, y = make()
    if o.relu_margin(x) < 1e-4:  # a step of 1e-6 must not cross a relu kink
        pytest.skip("a relu pre-activation within 1e-4 of the kink")
    errs = tensor_errors(o.fd_grads(x, y), o.grads(x, y))
    assert max(errs.values()) <= FD_TOL, errs


def test_finite_differences_see_a_wrong_reverse_pass():
    """The FD check has teeth: a reverse pass off by 1e-4 in one tensor fails it."""
    o, x, y = _oracle_of(("mlp", "tanh", "mse", "real"))
    rev = o.grads(x, y)
    k = next(iter(rev))
    rev[k] = rev[k] * (1 + 1e-4)
    assert tensor_errors(o.fd_grads(x, y), rev)[k] > 10 * FD_TOL


def test_network_description_and_own_graph_agree():
    """A CNN read from the graph the test built, and from ``net.to_graph()``: same numbers."""
    import dyadsim

    G = cnn_graph(4, "xent")
    o1 = Oracle.from_graph(G, "xent")
    o2 = Oracle.from_net(dyadsim.Network.from_graph(G, loss="xent"))
    x = np.random.default_rng(0).random((2,) + tuple(G.nodes["img"]["shape"]))
    y = np.eye(3)[[0, 2]]
    assert o1.loss(x, y) == o2.loss(x, y)
    g1, g2 = o1.grads(x, y), o2.grads(x, y)
    assert set(g1) == set(g2)
    assert max(tensor_errors(g2, g1).values()) <= 1e-14


def test_bad_conv_shape_is_refused():
    G = cnn_graph(0, "mse")
    G.edges["img", "c1"]["stride"] = (7, 7)
    with pytest.raises(ValueError, match="img->c1"):
        Oracle.from_graph(G, "mse")


# ----------------------------------------------------------------------------- torch autograd
def _torch_grads(torch, o: Oracle, x, y):
    """The same network evaluated by torch (matmul, F.conv2d, F.avg_pool2d) from the
    oracle's plain data, differentiated by autograd."""
    F = torch.nn.functional
    P = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in o.params.items()}
    acts = {"tanh": torch.tanh, "sigmoid": torch.sigmoid, "relu": torch.relu,
            "softplus": F.softplus, "identity": lambda t: t}
    X = torch.tensor(np.asarray(x, dtype=np.float64).reshape(-1, o.sizes[o.input]))
    B = X.shape[0]
    a = {o.input: X}
    for v in o.order[1:]:
        u = torch.zeros((B, o.sizes[v]), dtype=torch.float64)
        if ("b", v) in P:
            b = P[("b", v)]
            C = o.bias_channels[v]
            u = u + (b if C is None else b.repeat_interleave(o.sizes[v] // C))
        for e in o.edges:
            if e.dst != v:
                continue
            src = a[e.src]
            if e.op == "dense":
                u = u + src @ P[("W", e.src, v)].T
            else:
                img = src.reshape((B,) + tuple(e.in_shape))
                if e.op == "conv2d":
                    out = F.conv2d(img, P[("W", e.src, v)], stride=e.stride, padding=e.padding)
                else:
                    out = F.avg_pool2d(img, e.kernel, stride=e.stride, padding=e.padding,
                                       count_include_pad=True)
                u = u + out.reshape(B, -1)
        a[v] = acts[o.acts[v]](u)
    out = a[o.output]
    Y = torch.tensor(np.asarray(y, dtype=np.float64))
    if o.loss_name == "mse":
        loss = 0.5 * ((out - Y) ** 2).sum(dim=1).mean()
    else:
        loss = -(Y * torch.log_softmax(out, dim=1)).sum(dim=1).mean()
    loss.backward()
    return {k: p.grad.numpy() for k, p in P.items()}, loss.item()


@pytest.mark.parametrize("make", FD_CASES)
def test_reverse_pass_equals_torch_autograd(make):
    torch = pytest.importorskip("torch")
    o, x, y = make()
    tg, tl = _torch_grads(torch, o, x, y)
    assert o.loss(x, y) == pytest.approx(tl, rel=1e-13)
    errs = tensor_errors(o.grads(x, y), tg)
    assert max(errs.values()) <= 1e-12, errs
