"""Convolutional and branching networks: exactness at 2L, finite differences, PyTorch
autograd, the sparse global W, ngspice, and import/export."""

import networkx as nx
import numpy as np
import pytest
import scipy.sparse as sp

import dyadsim
import dyadsim.datasets
from dyadsim import DyadsimError

from conftest import fd_grads

ACTS = ["tanh", "sigmoid", "relu", "softplus", "identity"]


def random_cnn(seed, loss="xent", skip=True):
    """input (C,H,W) -> conv -> [pool] -> conv -> dense out, plus optional skip edges."""
    rng = np.random.default_rng(seed)
    C0, H = int(rng.integers(1, 3)), int(rng.integers(5, 8))
    G = nx.DiGraph()
    G.add_node("img", shape=(C0, H, H))
    k1, s1, p1 = int(rng.integers(2, 4)), int(rng.integers(1, 3)), int(rng.integers(0, 2))
    C1 = int(rng.integers(1, 4))
    conv1 = dyadsim.Conv2d((C0, H, H), C1, k1, s1, p1)
    G.add_node("c1", shape=conv1.out_shape, activation=str(rng.choice(ACTS)), bias=rng.normal(0, 0.2, C1))
    G.add_edge("img", "c1", op="conv2d", weight=rng.normal(0, 0.5, conv1.weight_shape), stride=s1, padding=p1)
    prev, prev_shape = "c1", conv1.out_shape
    if min(prev_shape[1:]) >= 2 and rng.random() < 0.7:
        pool = dyadsim.AvgPool2d(prev_shape, 2)
        G.add_node("pool", shape=pool.out_shape, activation="identity", bias=False)
        G.add_edge(prev, "pool", op="avgpool2d", kernel_size=2)
        prev, prev_shape = "pool", pool.out_shape
    k2 = int(min(2, prev_shape[1]))
    conv2 = dyadsim.Conv2d(prev_shape, 2, k2, 1, 0)
    G.add_node("c2", shape=conv2.out_shape, activation=str(rng.choice(ACTS)), bias=rng.normal(0, 0.2, 2))
    G.add_edge(prev, "c2", op="conv2d", weight=rng.normal(0, 0.5, conv2.weight_shape))
    n2 = int(np.prod(conv2.out_shape))
    G.add_node("out", size=3, activation="identity" if loss == "xent" else str(rng.choice(ACTS)),
               bias=rng.normal(0, 0.2, 3))
    G.add_edge("c2", "out", weight=rng.normal(0, 0.5, (3, n2)))
    if skip:  # branching: the input and the first conv also feed the output directly
        G.add_edge("img", "out", weight=rng.normal(0, 0.3, (3, C0 * H * H)))
        G.add_edge("c1", "out", weight=rng.normal(0, 0.3, (3, int(np.prod(conv1.out_shape)))))
    return dyadsim.Network.from_graph(G, loss=loss)


def batch(net, B, seed, loss):
    rng = np.random.default_rng(seed + 100)
    x = rng.random((B,) + net.shapes[net.input])
    y = np.eye(net.n_out)[rng.integers(0, net.n_out, B)] if loss == "xent" else rng.normal(0, 0.5, (B, net.n_out))
    return x, y


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("loss", ["mse", "xent"])
def test_relax_exact_at_2L_and_not_before(seed, loss):
    net = random_cnn(seed, loss, skip=seed % 2 == 0)
    x, y = batch(net, 3, seed, loss)
    ref = dyadsim.backprop(net, x, y)
    L = net.depth
    for schedule in ("parallel", "wavefront"):
        r = dyadsim.relax(net, x, y, schedule=schedule)
        assert r.steps == 2 * L
        assert dyadsim.compare(r.grads, ref).max_rel_error <= 1e-10
    early = dyadsim.relax(net, x, y, steps=2 * L - 1)
    assert dyadsim.compare(early.grads, ref).max_rel_error > 1e-6


@pytest.mark.parametrize("seed", range(4))
def test_backprop_equals_finite_differences(seed):
    net = random_cnn(seed, "mse")
    x, y = batch(net, 2, seed, "mse")
    ref = dyadsim.backprop(net, x, y)
    for key, fd in fd_grads(net, x, y).items():
        assert ref[key].shape == net.params[key].shape
        scale = max(np.linalg.norm(fd), 1e-8)
        assert np.linalg.norm(fd - ref[key]) / scale < 1e-5, key


def test_global_W_is_sparse_nilpotent_and_matches_ops():
    net = random_cnn(3, "xent")
    W = net.W
    assert sp.issparse(W)
    conns = sum(sp.coo_matrix(net.edge_matrix(s, d)).nnz for s, d in net.edges if s != net.input)
    assert W.nnz == conns  # memory grows with connections, not n^2
    P = sp.identity(net.n, format="csr")
    for _ in range(net.depth):
        P = P @ W
    assert abs(P).sum() == 0
    # W m + beta equals the forward pass's pre-activations
    x, _ = batch(net, 2, 3, "xent")
    acts = net.forward(x)
    m = np.concatenate([acts[v] for v in net.nodes], axis=1)
    for v in net.nodes:
        sl = net.slice(v)
        u = (m @ W.T + net.beta(x))[:, sl]
        np.testing.assert_allclose(net.activations[v].f(u), acts[v], atol=1e-12)


def test_shaped_and_flat_inputs_agree_and_shapes_are_checked():
    net = random_cnn(1, "xent")
    x, y = batch(net, 3, 1, "xent")
    a = dyadsim.backprop(net, x, y)
    b = dyadsim.backprop(net, x.reshape(3, -1), y)
    assert dyadsim.compare(a, b).max_rel_error == 0
    r1 = dyadsim.relax(net, x[0], y[0])
    assert r1.x.shape == (net.n,)
    with pytest.raises(DyadsimError, match="expected"):
        dyadsim.backprop(net, x[:, :, :-1], y)


def test_save_load_round_trip(tmp_path):
    net = random_cnn(5, "xent")
    x, y = batch(net, 2, 5, "xent")
    back = dyadsim.load(net.save(tmp_path / "cnn.npz"))
    assert back.shapes == net.shapes and back.bias_mode == net.bias_mode
    assert {k: v.shape for k, v in back.params.items()} == {k: v.shape for k, v in net.params.items()}
    assert dyadsim.compare(dyadsim.backprop(back, x, y), dyadsim.backprop(net, x, y)).max_rel_error == 0


def test_bad_structured_edges_are_named():
    G = nx.DiGraph()
    G.add_node("img", shape=(1, 5, 5))
    G.add_node("c", shape=(2, 3, 3), activation="tanh")
    G.add_edge("img", "c", op="conv2d", weight=np.zeros((2, 1, 2, 2)))  # gives 2x4x4
    with pytest.raises(DyadsimError, match="'img' -> 'c'"):
        dyadsim.Network.from_graph(G)
    G.edges["img", "c"]["weight"] = np.zeros((2, 3))
    with pytest.raises(DyadsimError, match="C_out, C_in, kh, kw"):
        dyadsim.Network.from_graph(G)
    H = nx.DiGraph()
    H.add_node("flat", size=9)
    H.add_node("c", size=4, activation="tanh")
    H.add_edge("flat", "c", op="conv2d", weight=np.zeros((1, 1, 2, 2)))
    with pytest.raises(DyadsimError, match="shape"):
        dyadsim.Network.from_graph(H)
    H.edges["flat", "c"]["op"] = "maxpool"
    H.nodes["flat"]["shape"] = (1, 3, 3)
    with pytest.raises(DyadsimError, match="unknown op 'maxpool'"):
        dyadsim.Network.from_graph(H)


@pytest.mark.spice
def test_small_cnn_in_ngspice_matches_backprop():
    rng = np.random.default_rng(0)
    G = nx.DiGraph()
    G.add_node("img", shape=(1, 8, 8))
    G.add_node("conv", shape=(4, 6, 6), activation="tanh", bias=rng.normal(0, 0.1, 4))
    G.add_node("out", size=10, activation="identity", bias=rng.normal(0, 0.1, 10))
    G.add_edge("img", "conv", op="conv2d", weight=rng.normal(0, 0.3, (4, 1, 3, 3)))
    G.add_edge("conv", "out", weight=rng.normal(0, 0.2, (10, 144)))
    net = dyadsim.Network.from_graph(G, loss="xent")
    x = rng.random((1, 1, 8, 8))
    y = np.eye(10)[[4]]
    res = dyadsim.spice_gradients(net, x, y)
    cmp = dyadsim.compare(res.grads, dyadsim.backprop(net, x, y))
    assert cmp.max_rel_error <= 1e-6, cmp.table()
    # one transconductance per connection: the shared kernel is repeated
    n_conv = sp.coo_matrix(net.edge_matrix("img", "conv")).nnz
    text = res.netlist.text
    assert sum(1 for line in text.splitlines() if line.startswith("Gu_conv_")) == n_conv


def _digits_cnn(seed=0):
    rng = np.random.default_rng(seed)
    G = nx.DiGraph()
    G.add_node("img", shape=(1, 8, 8))
    G.add_node("conv", shape=(4, 6, 6), activation="tanh", bias=np.zeros(4))
    G.add_node("pool", shape=(4, 3, 3), activation="identity", bias=False)
    G.add_node("out", size=10, activation="identity", bias=np.zeros(10))
    G.add_edge("img", "conv", op="conv2d", weight=rng.normal(0, 1 / 3, (4, 1, 3, 3)))
    G.add_edge("conv", "pool", op="avgpool2d", kernel_size=2)
    G.add_edge("pool", "out", weight=rng.normal(0, 1 / 6, (10, 36)))
    return dyadsim.Network.from_graph(G, loss="xent")


def test_cnn_trained_with_dbp_follows_backprop_on_digits():
    data = dyadsim.datasets.digits(seed=0).subset(n_train=320, n_test=200)
    runs = {}
    for method in ("backprop", "euler"):
        net = _digits_cnn()
        runs[method] = (dyadsim.train(net, data, method=method, optimizer="adam", lr=1e-2, epochs=3,
                                      batch_size=32, seed=0, progress=False), net)
    hb, nb = runs["backprop"]
    he, ne = runs["euler"]
    np.testing.assert_allclose(he.train_loss, hb.train_loss, rtol=1e-10)
    assert he.test_accuracy == hb.test_accuracy
    assert hb.test_accuracy[-1] > 0.5  # it learned (chance is 0.1)
    for k in nb.params:
        np.testing.assert_allclose(ne.params[k], nb.params[k], rtol=1e-9, atol=1e-12)


# ---------------------------------------------------------------- PyTorch (optional extra)
@pytest.fixture
def torch():
    """PyTorch, or a skip of only the test that asks for it (``--without=torch`` hides it)."""
    return pytest.importorskip("torch")


def _torch_model(torch, seed):
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 3, 3, padding=1), torch.nn.Tanh(), torch.nn.AvgPool2d(2),
        torch.nn.Conv2d(3, 2, 2, stride=2), torch.nn.Softplus(),
        torch.nn.Flatten(), torch.nn.Linear(8, 6), torch.nn.Sigmoid(), torch.nn.Linear(6, 4),
    ).double()


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("loss", ["mse", "xent"])
def test_import_matches_autograd_and_relax(torch, seed, loss):
    model = _torch_model(torch, seed)
    net = dyadsim.from_torch(model, (1, 8, 8), loss=loss)
    rng = np.random.default_rng(seed)
    x = rng.random((5, 1, 8, 8))
    labels = rng.integers(0, 4, 5)
    y = np.eye(4)[labels] if loss == "xent" else rng.normal(0, 0.5, (5, 4))
    out = model(torch.tensor(x))
    if loss == "xent":
        t_loss = torch.nn.functional.cross_entropy(out, torch.tensor(labels))
    else:
        t_loss = 0.5 * ((out - torch.tensor(y)) ** 2).sum(dim=1).mean()
    model.zero_grad()
    t_loss.backward()
    ref = dyadsim.backprop(net, x, y)
    assert ref.loss == pytest.approx(t_loss.item(), rel=1e-12)
    params = dict(model.named_parameters())
    for key, g in ref.items():
        name = f"{key[2]}.weight" if key[0] == "W" else f"{key[1]}.bias"
        tg = params[name].grad.numpy()
        assert g.shape == tg.shape  # PyTorch's parameter shapes
        assert np.linalg.norm(g - tg) <= 1e-10 * np.linalg.norm(tg)
    r = dyadsim.relax(net, x, y)
    assert r.steps == 2 * net.depth
    assert dyadsim.compare(r.grads, ref).max_rel_error <= 1e-10


def test_export_round_trip(torch):
    model = _torch_model(torch, 0)
    net = dyadsim.from_torch(model, (1, 8, 8), loss="xent")
    x = torch.tensor(np.random.default_rng(1).random((3, 1, 8, 8)))
    built = dyadsim.to_torch(net)
    assert torch.allclose(built(x), model(x), atol=1e-14)
    for P in net.params.values():
        P *= 0.5  # "training"
    dyadsim.to_torch(net, model)  # write back into the original module
    np.testing.assert_allclose(model(x).detach().numpy(), net.predict(x.numpy()), atol=1e-13)


def test_formerly_refused_layers_import_and_missing_flatten_is_named(torch):
    """MaxPool2d, a bare module and two activations in a row go through torch.fx now."""
    nn = torch.nn
    net = dyadsim.from_torch(nn.Sequential(nn.Conv2d(1, 2, 3), nn.MaxPool2d(2)), (1, 8, 8))
    assert net.node_ops[net.output].kind == "maxpool2d"
    assert len(dyadsim.from_torch(nn.Linear(3, 2), (3,)).nodes) == 1
    x = np.random.default_rng(0).normal(size=(4, 3))
    model = nn.Sequential(nn.Linear(3, 2), nn.Tanh(), nn.ReLU()).double()
    two = dyadsim.from_torch(model, (3,))
    np.testing.assert_allclose(two.predict(x), model(torch.tensor(x)).detach().numpy(), atol=1e-14)
    with pytest.raises(DyadsimError, match="needs a flat input"):
        dyadsim.from_torch(nn.Sequential(nn.Conv2d(1, 2, 3), nn.Linear(72, 3)), (1, 8, 8))
