"""Circuits for the general nodes (docs/theory.md, sections 6 and 8): residual sums and
concatenations (identity edges: G elements of a fixed 0/1 matrix), eval-mode batch
normalisation folded into the edge conductances (a diagonal of G elements, its constant in
the bias current) and max pooling (a behavioural max over each window forward, the error
routed to each window's first maximum backward).

Oracles: the ``.op`` gradients are compared per tensor with backprop (<= 1e-9 relative) and,
where torch is installed, with torch autograd on a forward pass written here with
torch.nn.functional (no dyadsim code); on both simulator backends and both summing modes.
"""

import networkx as nx
import numpy as np
import pytest

import dyadsim
from dyadsim.errors import DyadsimError

pytestmark = pytest.mark.spice

TOL = 1e-9
EPS = 1e-5


def _params(seed):
    rng = np.random.default_rng(seed)
    return dict(
        Wc=rng.normal(size=(2, 1, 3, 3)) * 0.5, bc=rng.normal(size=2) * 0.1,
        gamma=rng.normal(size=2), beta=rng.normal(size=2) * 0.2,
        mean=rng.normal(size=2) * 0.1, var=rng.uniform(0.5, 2.0, size=2),
        Wo=rng.normal(size=(3, 12)) * 0.5, bo=rng.normal(size=3) * 0.1,
    )


def _net(P, loss="xent"):
    """in(1,4,4) -conv3x3 pad1-> c1 tanh -bn-> bn -> res = relu(bn + c1) -> maxpool 3x3 stride 2
    pad 1 (overlapping windows) -> cat(pool (8), inpool (4): a maxpool of the input itself) ->
    out (dense, identity)."""
    G = nx.DiGraph()
    G.add_node("in", shape=(1, 4, 4))
    G.add_node("c1", shape=(2, 4, 4), activation="tanh", bias=P["bc"])
    G.add_edge("in", "c1", op="conv2d", weight=P["Wc"], padding=1)
    G.add_node("bn", shape=(2, 4, 4), activation="identity", bias=P["beta"])
    G.add_edge("c1", "bn", op="batchnorm", weight=P["gamma"], mean=P["mean"], var=P["var"], eps=EPS)
    G.add_node("res", shape=(2, 4, 4), activation="relu", bias=False)
    G.add_edge("bn", "res", op="identity")
    G.add_edge("c1", "res", op="identity")
    G.add_node("pool", op="maxpool2d", kernel_size=3, stride=2, padding=1)
    G.add_edge("res", "pool")
    G.add_node("inpool", op="maxpool2d", kernel_size=2)
    G.add_edge("in", "inpool")
    G.add_node("cat", size=12, activation="tanh", bias=False)
    G.add_edge("pool", "cat", op="identity")
    G.add_edge("inpool", "cat", op="identity", offset=8)
    G.add_node("out", size=3, activation="identity", bias=P["bo"])
    G.add_edge("cat", "out", weight=P["Wo"])
    return dyadsim.Network.from_graph(G, loss=loss)


KEYS = {"Wc": ("W", "in", "c1"), "bc": ("b", "c1"), "gamma": ("W", "c1", "bn"), "beta": ("b", "bn"),
        "Wo": ("W", "cat", "out"), "bo": ("b", "out")}


def _data(seed, B=2):
    rng = np.random.default_rng(seed + 50)
    return rng.normal(size=(B, 16)), np.eye(3)[rng.integers(0, 3, B)]


def _rel(a, b):
    return float(np.max(np.abs(np.asarray(a) - b)) / max(float(np.max(np.abs(b))), 1e-300))


@pytest.mark.parametrize("backend", ["subprocess", "shared"])
@pytest.mark.parametrize("summing", ["G", "B"])
def test_op_matches_backprop_per_tensor(backend, summing):
    P = _params(0)
    net = _net(P)
    X, Y = _data(0)
    ref = dyadsim.backprop(net, X, Y)
    r = dyadsim.spice_gradients(net, X, Y, backend=backend, summing=summing)
    assert r.result.backend == backend
    assert set(r.grads) == set(ref)
    for k in ref:
        assert _rel(r.grads[k], ref[k]) <= TOL, (k, _rel(r.grads[k], ref[k]))
    assert abs(r.grads.loss - ref.loss) <= TOL * abs(ref.loss)


@pytest.mark.parametrize("summing", ["G", "B"])
@pytest.mark.parametrize("gain", [1e3, "auto", "per-layer"])
def test_op_with_gains_matches_backprop(gain, summing):
    """A scalar gain and gain staging (one gain per layer: the backward couplings, the max
    pooling routing included, carry the ratio of neighbouring gains; "per-layer" gives the
    max pooling node and its parent different gains)."""
    P = _params(7)
    P["Wo"] = P["Wo"] * 0.02  # small output weights: the hidden errors are ~50x smaller
    net = _net(P)
    X, Y = _data(7)
    ref = dyadsim.backprop(net, X, Y)
    if gain == "per-layer":
        gain = {"c1": 100.0, "bn": 30.0, "inpool": 10.0, "res": 300.0, "pool": 3.0, "cat": 10.0, "out": 1.0}
    r = dyadsim.spice_gradients(net, X, Y, gain=gain, summing=summing)
    if gain == "auto":
        staged = {n: v for n, v in r.netlist.circuit.params.items() if n.startswith("gain_")}
        assert len(set(staged.values())) > 1  # the layers do get different gains
    for k in ref:
        assert _rel(r.grads[k], ref[k]) <= TOL, (k, _rel(r.grads[k], ref[k]))


def _torch_grads(P, X, Y):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    T = {k: torch.tensor(P[k], dtype=torch.float64, requires_grad=True) for k in KEYS}
    x = torch.tensor(X, dtype=torch.float64).reshape(-1, 1, 4, 4)
    c1 = torch.tanh(F.conv2d(x, T["Wc"], T["bc"], padding=1))
    bn = F.batch_norm(c1, torch.tensor(P["mean"]), torch.tensor(P["var"]), T["gamma"], T["beta"],
                      training=False, eps=EPS)
    res = torch.relu(bn + c1)
    pool = F.max_pool2d(res, 3, stride=2, padding=1).flatten(1)
    inpool = F.max_pool2d(x, 2).flatten(1)
    cat = torch.tanh(torch.cat([pool, inpool], dim=1))
    out = cat @ T["Wo"].T + T["bo"]
    F.cross_entropy(out, torch.tensor(Y.argmax(1))).backward()
    return {k: T[k].grad.numpy() for k in KEYS}


@pytest.mark.parametrize("seed", [1, 2])
def test_op_matches_torch_autograd(seed):
    P = _params(seed)
    X, Y = _data(seed, B=3)
    ref = _torch_grads(P, X, Y)
    r = dyadsim.spice_gradients(_net(P), X, Y)
    for k, key in KEYS.items():
        assert _rel(r.grads[key], ref[k]) <= TOL, (k, _rel(r.grads[key], ref[k]))


def test_netlist_structure():
    """The batchnorm edge is one G element per neuron (a diagonal matrix), its constant
    -gamma mean / sqrt(var + eps) + beta the bias current of each neuron; every max pooling
    neuron's u is a max() expression and its window members' r get winner-routed currents."""
    P = _params(3)
    net = _net(P)
    X, Y = _data(3, B=1)
    nl = dyadsim.compile_netlist(net, X, Y)
    els = list(nl.circuit.elements())
    ids = nl.layer_ids
    bn_g = [e for e in els if e.kind.name == "G" and e.name.startswith(f"u_{ids['bn']}_")]
    assert len(bn_g) == 32  # diagonal: one per neuron
    assert all(f"_{ids['c1']}_" in e.name for e in bn_g)
    # the bias current of bn[0] carries beta - gamma mean / sqrt(var + eps) (channel 0)
    (cur,) = [e for e in els if e.kind.name == "I" and e.name == f"b_u_{ids['bn']}_0"]
    expect = P["beta"][0] - P["gamma"][0] * P["mean"][0] / np.sqrt(P["var"][0] + EPS)
    text = nl.text
    assert cur.value.left.name == "g" and abs(cur.value.right.value - expect) <= 1e-15 * abs(expect)
    pool_u = [e for e in els if e.kind.name == "BV" and e.name.startswith(f"u_{ids['pool']}_")]
    assert len(pool_u) == 8 and all("max(" in text.split(f"Bu_{ids['pool']}_{i} ")[1].split("\n")[0]
                                    for i in range(8))
    routed = [e for e in els if e.kind.name == "BI" and e.name.startswith(f"r_{ids['res']}_")]
    # 3x3 windows, stride 2, pad 1 on 4x4: each of 2 channels has 4 windows of 4, 6, 6, 9 members
    assert len(routed) == 2 * (4 + 6 + 6 + 9)
    lines = {ln.split()[0]: ln for ln in text.splitlines() if ln and not ln.startswith(("*", "."))}
    # a window of 9 members: its winner indicator compares the member with the other 8
    assert max(lines["B" + e.name].count("u(") for e in routed) == 8


def test_tran_relaxes_to_backprop():
    P = _params(4)
    net = _net(P)
    X, Y = _data(4, B=1)
    ref = dyadsim.backprop(net, X, Y)
    r = dyadsim.spice_gradients(net, X, Y, analysis="tran")
    for k in ref:
        assert _rel(r.grads[k], ref[k]) <= 1e-6, k


def test_device_dialect_names_what_it_cannot_build():
    P = _params(5)
    X, Y = _data(5, B=1)
    with pytest.raises(DyadsimError, match="'inpool'.*maxpool2d"):
        dyadsim.circuits.compile_device_netlist(_net(P, loss="mse"), X, np.zeros((1, 3)))
    G = nx.DiGraph()  # tanh and identity only, so the batchnorm edge is what is refused
    G.add_node("in", shape=(2, 2, 2))
    G.add_node("h", shape=(2, 2, 2), activation="tanh", bias=P["beta"])
    G.add_edge("in", "h", op="batchnorm", weight=P["gamma"], mean=P["mean"], var=P["var"])
    G.add_node("out", size=3, activation="identity")
    G.add_edge("h", "out", weight=np.ones((3, 8)))
    net = dyadsim.Network.from_graph(G, loss="mse")
    with pytest.raises(DyadsimError, match="compile_device_netlist: edge 'in' -> 'h' is a batchnorm edge"):
        dyadsim.circuits.compile_device_netlist(net, X[:, :8], np.zeros((1, 3)))
    # the behavioural dialect builds it (an input batchnorm edge: G elements from the inputs)
    ref = dyadsim.backprop(net, X[:, :8], np.zeros((1, 3)))
    r = dyadsim.spice_gradients(net, X[:, :8], np.zeros((1, 3)))
    for k in ref:
        assert _rel(r.grads[k], ref[k]) <= TOL, k
