"""General differentiable nodes: residual sums and concatenations (identity edges), eval-mode
batch normalisation (batchnorm edges), max pooling (a node op) and the new activations.

Oracles: torch autograd on a forward pass written here with torch.nn.functional, and central
finite differences of an independent numpy forward pass (also written here)."""

import networkx as nx
import numpy as np
import pytest
from scipy.special import erf

import dyadsim
from dyadsim.errors import DyadsimError

torch = pytest.importorskip("torch")
F = torch.nn.functional


def _params(seed, pool_act="tanh"):
    rng = np.random.default_rng(seed)
    return dict(
        Wc=rng.normal(size=(3, 2, 3, 3)) * 0.4, bc=rng.normal(size=3) * 0.1,
        gamma=rng.normal(size=3), beta=rng.normal(size=3) * 0.2,
        mean=rng.normal(size=3) * 0.1, var=rng.uniform(0.5, 2.0, size=3),
        Ws=rng.normal(size=(4, 72)) * 0.2, bs=rng.normal(size=4) * 0.1,
        Wo=rng.normal(size=(3, 31)) * 0.3, bo=rng.normal(size=3) * 0.1, pool_act=pool_act,
    )


EPS = 1e-5


def _net(P, loss="xent"):
    G = nx.DiGraph()
    G.add_node("in", shape=(2, 6, 6))
    G.add_node("c1", shape=(3, 6, 6), activation=P["pool_act"], bias=P["bc"])
    G.add_edge("in", "c1", op="conv2d", weight=P["Wc"], padding=1)
    G.add_node("bn", shape=(3, 6, 6), activation="identity", bias=P["beta"])
    G.add_edge("c1", "bn", op="batchnorm", weight=P["gamma"], mean=P["mean"], var=P["var"], eps=EPS)
    G.add_node("res", shape=(3, 6, 6), activation="gelu", bias=False)  # gelu(bn(c1) + c1)
    G.add_edge("bn", "res", op="identity")
    G.add_edge("c1", "res", op="identity")
    G.add_node("pool", op="maxpool2d", kernel_size=2)
    G.add_edge("res", "pool")
    G.add_node("side", size=4, activation="silu", bias=P["bs"])
    G.add_edge("in", "side", weight=P["Ws"])
    G.add_node("cat", size=31, activation="elu(0.5)", bias=False)  # elu(cat(pool, side))
    G.add_edge("pool", "cat", op="identity")
    G.add_edge("side", "cat", op="identity", offset=27)
    G.add_node("out", size=3, activation="leaky_relu(0.1)", bias=P["bo"])
    G.add_edge("cat", "out", weight=P["Wo"])
    return dyadsim.Network.from_graph(G, loss=loss)


KEYS = {"Wc": ("W", "in", "c1"), "bc": ("b", "c1"), "gamma": ("W", "c1", "bn"), "beta": ("b", "bn"),
        "Ws": ("W", "in", "side"), "bs": ("b", "side"), "Wo": ("W", "cat", "out"), "bo": ("b", "out")}


def _torch_grads(P, X, Y):
    T = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in P.items()
         if isinstance(v, np.ndarray) and k not in ("mean", "var")}
    x = torch.tensor(X, dtype=torch.float64).reshape(-1, 2, 6, 6)
    act = {"tanh": torch.tanh, "relu": torch.relu}[P["pool_act"]]
    c1 = act(F.conv2d(x, T["Wc"], T["bc"], padding=1))
    bn = F.batch_norm(c1, torch.tensor(P["mean"]), torch.tensor(P["var"]), T["gamma"], T["beta"],
                      training=False, eps=EPS)
    res = F.gelu(bn + c1)
    pool = F.max_pool2d(res, 2).flatten(1)
    side = F.silu(x.flatten(1) @ T["Ws"].T + T["bs"])
    cat = F.elu(torch.cat([pool, side], dim=1), alpha=0.5)
    out = F.leaky_relu(cat @ T["Wo"].T + T["bo"], 0.1)
    loss = F.cross_entropy(out, torch.tensor(Y.argmax(1)))
    loss.backward()
    return {k: T[k].grad.numpy() for k in KEYS}, float(loss.detach())


def _np_loss(P, X, Y):
    """An independent numpy forward pass of the same model (no dyadsim code)."""
    B = X.shape[0]
    x = X.reshape(B, 2, 6, 6)
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    c1 = np.zeros((B, 3, 6, 6))
    for i in range(6):
        for j in range(6):
            c1[:, :, i, j] = np.einsum("bckl,ockl->bo", xp[:, :, i:i + 3, j:j + 3], P["Wc"])
    c1 = np.tanh(c1 + P["bc"][None, :, None, None])
    sh = (None, slice(None), None, None)
    bn = P["gamma"][sh] * (c1 - P["mean"][sh]) / np.sqrt(P["var"][sh] + EPS) + P["beta"][sh]
    r = bn + c1
    res = 0.5 * r * (1 + erf(r / np.sqrt(2)))
    pool = res.reshape(B, 3, 3, 2, 3, 2).max(axis=(3, 5)).reshape(B, -1)
    s = X @ P["Ws"].T + P["bs"]
    side = s / (1 + np.exp(-s))
    c = np.concatenate([pool, side], axis=1)
    cat = np.where(c > 0, c, 0.5 * np.expm1(np.minimum(c, 0)))
    o = cat @ P["Wo"].T + P["bo"]
    out = np.where(o > 0, o, 0.1 * o)
    lse = np.log(np.sum(np.exp(out - out.max(1, keepdims=True)), 1)) + out.max(1)
    return float(np.mean(lse - np.sum(Y * out, 1)))


def _data(seed, B=5):
    rng = np.random.default_rng(seed + 100)
    return rng.normal(size=(B, 72)), np.eye(3)[rng.integers(0, 3, B)]


def _rel(a, b):
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


@pytest.mark.parametrize("seed", [0, 1])
def test_backprop_matches_torch_autograd(seed):
    P = _params(seed)
    X, Y = _data(seed)
    net = _net(P)
    g = dyadsim.backprop(net, X, Y)
    ref, loss = _torch_grads(P, X, Y)
    assert abs(g.loss - loss) < 1e-12
    for k, key in KEYS.items():
        assert g[key].shape == ref[k].shape
        assert _rel(g[key], ref[k]) < 1e-12, k


def test_backprop_matches_finite_differences_of_an_independent_forward_pass():
    P = _params(3)
    X, Y = _data(3)
    g = dyadsim.backprop(_net(P), X, Y)
    assert abs(g.loss - _np_loss(P, X, Y)) < 1e-12
    rng = np.random.default_rng(0)
    h = 1e-6
    for k, key in KEYS.items():
        for _ in range(3):
            idx = tuple(rng.integers(0, n) for n in P[k].shape)
            Pp = {**P, k: P[k].copy()}
            Pm = {**P, k: P[k].copy()}
            Pp[k][idx] += h
            Pm[k][idx] -= h
            fd = (_np_loss(Pp, X, Y) - _np_loss(Pm, X, Y)) / (2 * h)
            assert abs(fd - g[key][idx]) < 1e-7 * max(1.0, abs(fd)), (k, idx)


@pytest.mark.parametrize("schedule", ["parallel", "wavefront"])
@pytest.mark.parametrize("state", ["md", "xz"])
@pytest.mark.parametrize("pool_act", ["tanh", "relu"])  # relu: ties in the max pooling windows
def test_euler_eta1_exact_at_2L_and_not_before(schedule, state, pool_act):
    P = _params(4, pool_act)
    X, Y = _data(4)
    net = _net(P)
    L = net.depth
    assert L == 6
    ref, _ = _torch_grads(P, X, Y)
    r = dyadsim.relax(net, X, Y, eta=1.0, schedule=schedule, state=state)
    assert r.steps == 2 * L and r.converged
    for k, key in KEYS.items():
        assert _rel(r.grads[key], ref[k]) < 1e-12, k
    early = dyadsim.relax(net, X, Y, eta=1.0, steps=2 * L - 1, schedule=schedule, state=state)
    assert max(_rel(early.grads[key], ref[k]) for k, key in KEYS.items()) > 1e-2


def test_parallel_euler_small_eta_and_continuous_flow_converge_to_torch():
    P = _params(5)
    X, Y = _data(5, B=3)
    net = _net(P)
    ref, _ = _torch_grads(P, X, Y)
    r = dyadsim.relax(net, X, Y, eta=0.5)
    rc = dyadsim.relax_continuous(net, X, Y)
    for k, key in KEYS.items():
        assert _rel(r.grads[key], ref[k]) < 1e-8, k
        assert _rel(rc.grads[key], ref[k]) < 1e-8, k


def test_engines_without_support_name_the_node(tmp_path):
    P = _params(6)
    X, Y = _data(6, B=2)
    net = _net(P)
    with pytest.raises(DyadsimError, match="'pool'.*maxpool2d"):
        dyadsim.relax_continuous(net, X, Y, method="Radau")
    with pytest.raises(DyadsimError, match="'pool'"):
        dyadsim.flow_jacobian(net, np.zeros(net.n), np.zeros(net.n), X[0], Y[0])
    with pytest.raises(DyadsimError, match="compile_netlist: layer 'res' has activation 'gelu'"):
        dyadsim.compile_netlist(net, X, Y)  # max pooling has a circuit; gelu has none
    with pytest.raises(DyadsimError, match="compile_device_netlist: node 'pool' is a maxpool2d node"):
        dyadsim.circuits.compile_device_netlist(net.copy(), X, Y)
    with pytest.raises(DyadsimError, match="save: node 'pool' is a maxpool2d node"):
        net.save(tmp_path / "n.npz")
    with pytest.raises(DyadsimError, match="'pool'"):
        net.require_standard("the chip engine")


def test_copy_keeps_every_node_and_edge():
    P = _params(7)
    X, Y = _data(7)
    net = _net(P)
    g1, g2 = dyadsim.backprop(net, X, Y), dyadsim.backprop(net.copy(), X, Y)
    assert all(np.array_equal(g1[k], g2[k]) for k in g1)


def test_bad_general_nodes_are_refused():
    G = nx.DiGraph()
    G.add_node("in", shape=(1, 4, 4))
    G.add_node("p", op="maxpool2d", kernel_size=2, activation="tanh")
    G.add_edge("in", "p")
    with pytest.raises(DyadsimError, match="takes no activation"):
        dyadsim.Network.from_graph(G)
    G.nodes["p"].pop("activation")
    G.nodes["p"]["op"] = "minpool"
    with pytest.raises(DyadsimError, match="unknown node op 'minpool'"):
        dyadsim.Network.from_graph(G)
    G.nodes["p"]["op"] = "maxpool2d"
    G.edges["in", "p"]["weight"] = np.ones(3)
    with pytest.raises(DyadsimError, match="carry no weight"):
        dyadsim.Network.from_graph(G)
    with pytest.raises(DyadsimError, match="unknown activation 'leaky'"):
        dyadsim.network.get_activation("leaky")
