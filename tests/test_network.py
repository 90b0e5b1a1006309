"""The network model: the stacked global system (W nilpotent, beta, depth), forward pass,
save/load, and validation of bad graphs and bad inputs (DyadsimError + ValueError)."""

from __future__ import annotations

import networkx as nx
import numpy as np
import pytest
from hypothesis import given

import dyadsim
from conftest import ACTIVATIONS, LOSSES, cases, make_batch, make_net, preacts, user_error


def _chain_graph(sizes=(3, 4, 5, 2), acts=("tanh", "sigmoid", "identity"), seed=0):
    """input -> h1 -> h2 -> output as a plain networkx graph in dyadsim's format."""
    rng = np.random.default_rng(seed)
    names = ["input"] + [f"h{i}" for i in range(1, len(sizes) - 1)] + ["output"]
    G = nx.DiGraph()
    G.add_node(names[0], size=sizes[0])
    for i in range(1, len(sizes)):
        G.add_node(names[i], size=sizes[i], activation=acts[i - 1],
                   bias=rng.standard_normal(sizes[i]))
        G.add_edge(names[i - 1], names[i], weight=rng.standard_normal((sizes[i], sizes[i - 1])))
    return G


def _unweighted(net) -> nx.DiGraph:
    H = nx.DiGraph()
    H.add_edges_from(net.to_graph().edges())
    return H


# ----------------------------------------------------------------------------- global system
def _check_nilpotent(net):
    W = net.W.toarray()
    L = net.depth
    assert W.shape == (net.n, net.n)
    # strictly lower triangular in the topological stacking order
    assert np.all(np.triu(W) == 0)
    assert np.all(np.linalg.matrix_power(W, L) == 0), "W^L must vanish"
    assert np.any(np.linalg.matrix_power(W, L - 1) != 0), "W^(L-1) must not vanish"


def test_W_nilpotent_seeded(case):
    _check_nilpotent(case.net)


@given(cases(depth=(1, 6)))
def test_W_nilpotent_random(c):
    _check_nilpotent(c.net)


def test_W_blocks_are_the_weights(case):
    net = case.net
    W = net.W.toarray()
    seen = np.zeros_like(W, dtype=bool)
    for (src, dst) in net.edges:
        if src == net.input:
            continue
        blk = W[net.slice(dst), net.slice(src)]
        np.testing.assert_array_equal(blk, net.weight(src, dst))
        seen[net.slice(dst), net.slice(src)] = True
    assert np.all(W[~seen] == 0)


def test_beta(case):
    net = case.net
    X = case.x
    B = net.beta(X)
    assert B.shape == (X.shape[0], net.n)
    for v in net.nodes:
        want = np.tile(net.bias(v), (X.shape[0], 1))
        if net.input in net.preds[v]:
            want = want + X @ net.weight(net.input, v).T
        np.testing.assert_allclose(B[:, net.slice(v)], want, rtol=1e-14, atol=1e-14)
    # one sample: 1-D in, 1-D out, same numbers
    b0 = net.beta(X[0])
    assert b0.shape == (net.n,)
    np.testing.assert_allclose(b0, B[0], rtol=1e-14, atol=1e-15)
    assert net.beta(X, dtype=np.float32).dtype == np.float32


def test_fixed_point_equation(case):
    """a = sigma(W a + beta(x0)) holds for the stacked forward activations."""
    net = case.net
    acts = net.forward(case.x)
    a = np.concatenate([acts[v] for v in net.nodes], axis=1)
    u = a @ net.W.toarray().T + net.beta(case.x)
    sig = np.concatenate([net.activations[v].f(u[:, net.slice(v)]) for v in net.nodes], axis=1)
    np.testing.assert_allclose(sig, a, rtol=1e-12, atol=1e-13)


# ----------------------------------------------------------------------------- depth
@given(cases(depth=(1, 6), kinds=("dag",)))
def test_depth_is_longest_path_dag(c):
    net = c.net
    H = _unweighted(net)
    assert net.depth == nx.dag_longest_path_length(H)
    # per-node depth / distance to the output are longest paths too
    for v in net.nodes:
        blk = net.block(v)
        up = max(len(p) - 1 for p in nx.all_simple_paths(H, net.input, v)) if v != net.input else 0
        assert blk.depth == up
        down = (max(len(p) - 1 for p in nx.all_simple_paths(H, v, net.output))
                if v != net.output else 0)
        assert blk.rdepth == down


@pytest.mark.parametrize("sizes", ["3-2", "3-4-2", "3-4x5-2", [2, 3, 3, 3, 3, 3, 1]])
def test_depth_mlp(sizes):
    net = dyadsim.mlp(sizes)
    L = len(dyadsim.network.parse_sizes(sizes)) - 1
    assert net.depth == L
    assert nx.dag_longest_path_length(_unweighted(net)) == L


def test_depth_ignores_weight_values():
    """Edge attribute 'weight' holds arrays (our format), never path lengths: a long chain of
    tiny 1x1 weights and one huge skip weight must still give depth = longest path in edges."""
    G = nx.DiGraph()
    G.add_node("in", size=1)
    for v in ("a", "b", "out"):
        G.add_node(v, size=1, activation="tanh", bias=np.zeros(1))
    G.add_edge("in", "a", weight=np.array([[1e-3]]))
    G.add_edge("a", "b", weight=np.array([[1e-3]]))
    G.add_edge("b", "out", weight=np.array([[-5.0]]))
    G.add_edge("in", "out", weight=np.array([[1e6]]))
    net = dyadsim.Network.from_graph(G)
    assert net.depth == 3
    assert net.block("a").depth == 1 and net.block("a").rdepth == 2


# ----------------------------------------------------------------------------- graph format
def test_weight_attribute_holding_arrays_works():
    G = _chain_graph()
    net = dyadsim.Network.from_graph(G, loss="mse")
    for (s, d) in G.edges:
        np.testing.assert_array_equal(net.weight(s, d), G.edges[s, d]["weight"])
        assert net.weight(s, d).dtype == np.float64
    for v in ("h1", "h2", "output"):
        np.testing.assert_array_equal(net.bias(v), G.nodes[v]["bias"])
    assert net.input == "input" and net.output == "output"
    assert net.nodes == ("h1", "h2", "output")
    assert net.n == 4 + 5 + 2 and net.n_in == 3 and net.n_out == 2
    # nested lists are accepted as arrays too
    G.edges["input", "h1"]["weight"] = G.edges["input", "h1"]["weight"].tolist()
    net2 = dyadsim.Network.from_graph(G)
    np.testing.assert_array_equal(net2.weight("input", "h1"), net.weight("input", "h1"))


def test_missing_bias_is_zero():
    G = _chain_graph()
    del G.nodes["h1"]["bias"]
    net = dyadsim.Network.from_graph(G)
    np.testing.assert_array_equal(net.bias("h1"), np.zeros(4))


def test_to_graph_round_trip_and_copy_is_independent(case):
    net = case.net
    net2 = dyadsim.Network.from_graph(net.to_graph(), loss=net.loss.name)
    assert net2.nodes == net.nodes and net2.edges == net.edges
    for k in net.params:
        np.testing.assert_array_equal(net2.params[k], net.params[k])
    cp = net.copy()
    key = next(iter(cp.params))
    cp.params[key][...] += 1.0
    assert not np.array_equal(cp.params[key], net.params[key])


# ----------------------------------------------------------------------------- forward
def test_forward_predict_loss(case):
    net, X, Y = case.net, case.x, case.y
    u = preacts(net, X)
    acts = net.forward(X)
    assert set(acts) == {net.input, *net.nodes}
    np.testing.assert_array_equal(acts[net.input], X)
    for v in net.nodes:
        np.testing.assert_allclose(acts[v], net.activations[v].f(u[v]), rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(net.predict(X), acts[net.output], rtol=1e-14, atol=0)
    p0 = net.predict(X[0])
    assert p0.shape == (net.n_out,)
    np.testing.assert_allclose(p0, acts[net.output][0], rtol=1e-14, atol=1e-15)
    per_sample = [net.loss_value(X[i], Y[i]) for i in range(X.shape[0])]
    assert net.loss_value(X, Y) == pytest.approx(np.mean(per_sample), rel=1e-13, abs=1e-15)


def test_loss_values_closed_form():
    net = dyadsim.mlp("2-3", activation="identity", loss="mse", seed=1)
    x = np.array([0.5, -1.0])
    y = np.array([1.0, 2.0, 3.0])
    a = net.predict(x)
    assert net.loss_value(x, y) == pytest.approx(0.5 * np.sum((a - y) ** 2), rel=1e-14)
    net = dyadsim.mlp("2-3", loss="xent", seed=1)
    a = net.predict(x)
    for y in (np.array([0.0, 1.0, 0.0]), np.array([0.2, 0.5, 0.3])):
        logp = a - np.log(np.sum(np.exp(a)))
        assert net.loss_value(x, y) == pytest.approx(-np.sum(y * logp), rel=1e-13)


# ----------------------------------------------------------------------------- save / load
@pytest.mark.parametrize("kind", ["mlp", "dag"])
@pytest.mark.parametrize("loss", LOSSES)
def test_save_load_round_trip(tmp_path, kind, loss):
    net = make_net(kind, "mixed" if kind == "dag" else "softplus", loss, seed=7, depth=4)
    x, y = make_batch(net, 7, 3, "soft" if loss == "xent" else "real")
    path = net.save(tmp_path / "n.npz")
    assert path.exists()
    net2 = dyadsim.load(path)
    assert net2.input == net.input and net2.output == net.output
    assert net2.nodes == net.nodes and net2.edges == net.edges
    assert net2.sizes == net.sizes and net2.depth == net.depth and net2.n == net.n
    assert {v: a.name for v, a in net2.activations.items()} == \
        {v: a.name for v, a in net.activations.items()}
    assert net2.loss.name == net.loss.name
    assert list(net2.params) == list(net.params)
    for k in net.params:
        assert net2.params[k].dtype == net.params[k].dtype
        np.testing.assert_array_equal(net2.params[k], net.params[k])
    assert net2.loss_value(x, y) == net.loss_value(x, y)
    g1, g2 = dyadsim.backprop(net, x, y), dyadsim.backprop(net2, x, y)
    for k in g1:
        np.testing.assert_array_equal(g1[k], g2[k])
    r1, r2 = dyadsim.relax(net, x, y), dyadsim.relax(net2, x, y)
    for k in r1.grads:
        np.testing.assert_array_equal(r1.grads[k], r2.grads[k])


def test_save_load_int_node_names_and_suffix(tmp_path):
    G = nx.relabel_nodes(_chain_graph(), {"input": 0, "h1": 1, "h2": "two", "output": 3})
    net = dyadsim.Network.from_graph(G, loss="xent")
    path = net.save(tmp_path / "sub" / "net")  # no suffix: .npz is added
    assert path.suffix == ".npz" and path.exists()
    net2 = dyadsim.load(path)
    assert net2.input == 0 and net2.output == 3 and net2.nodes == net.nodes
    for k in net.params:
        np.testing.assert_array_equal(net2.params[k], net.params[k])


def test_load_errors(tmp_path):
    with user_error("not found"):
        dyadsim.load(tmp_path / "missing.npz")
    bad = tmp_path / "bad.npz"
    np.savez(bad, a=np.zeros(3))
    with user_error("not a dyadsim network file"):
        dyadsim.load(bad)


# ----------------------------------------------------------------------------- bad graphs
def test_cycle_names_a_node_on_it():
    G = _chain_graph((3, 4, 5, 6, 2), ("tanh",) * 4)  # input h1 h2 h3 output
    G.add_edge("h3", "h2", weight=np.zeros((5, 6)))  # h2 -> h3 -> h2
    with user_error("cycle") as ei:
        dyadsim.Network.from_graph(G)
    msg = str(ei.value)
    on_cycle = [v for v in ("h2", "h3") if repr(v) in msg]
    assert on_cycle, msg
    assert "'h1'" not in msg and "'output'" not in msg


def test_self_loop_is_a_cycle():
    G = _chain_graph()
    G.add_edge("h1", "h1", weight=np.zeros((4, 4)))
    with user_error("cycle.*'h1'"):
        dyadsim.Network.from_graph(G)


def test_several_sources():
    G = _chain_graph()
    G.add_node("extra_in", size=2)
    G.add_edge("extra_in", "h2", weight=np.zeros((5, 2)))
    with user_error("exactly one source") as ei:
        dyadsim.Network.from_graph(G)
    assert "'extra_in'" in str(ei.value) and "'input'" in str(ei.value)


def test_several_sinks():
    G = _chain_graph()
    G.add_node("extra_out", size=2, activation="tanh", bias=np.zeros(2))
    G.add_edge("h1", "extra_out", weight=np.zeros((2, 4)))
    with user_error("exactly one sink") as ei:
        dyadsim.Network.from_graph(G)
    assert "'extra_out'" in str(ei.value) and "'output'" in str(ei.value)


@pytest.mark.parametrize("edge", [("input", "h1"), ("h1", "h2"), ("h2", "output")])
def test_weight_shape_mismatch_names_the_edge(edge):
    G = _chain_graph()
    s, d = edge
    W = G.edges[s, d]["weight"]
    G.edges[s, d]["weight"] = W.T
    with user_error(f"edge '{s}' -> '{d}'.*shape"):
        dyadsim.Network.from_graph(G)


def test_bias_shape_mismatch_names_the_node():
    G = _chain_graph()
    G.nodes["h2"]["bias"] = np.zeros(4)
    with user_error("bias of node 'h2'"):
        dyadsim.Network.from_graph(G)


def test_missing_weight_names_the_edge():
    G = _chain_graph()
    del G.edges["h1", "h2"]["weight"]
    with user_error("'h1' -> 'h2'"):
        dyadsim.Network.from_graph(G)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_weight(bad):
    G = _chain_graph()
    G.edges["h1", "h2"]["weight"][1, 2] = bad
    with user_error("weight of edge 'h1' -> 'h2'.*non-finite"):
        dyadsim.Network.from_graph(G)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_bias(bad):
    G = _chain_graph()
    G.nodes["output"]["bias"][0] = bad
    with user_error("bias of node 'output'.*non-finite"):
        dyadsim.Network.from_graph(G)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_inputs_and_targets(bad):
    net = make_net("mlp", "tanh", "xent", seed=1)
    x, y = make_batch(net, 1, 3, "onehot")
    xb = x.copy()
    xb[1, 0] = bad
    yb = y.copy()
    yb[2, 1] = bad
    for call in (lambda: net.loss_value(xb, y), lambda: net.forward(xb), lambda: net.beta(xb),
                 lambda: net.predict(xb[1]), lambda: dyadsim.backprop(net, xb, y)):
        with user_error("input x.*non-finite"):
            call()
    for call in (lambda: net.loss_value(x, yb), lambda: dyadsim.backprop(net, x, yb)):
        with user_error("target y.*non-finite"):
            call()


def _assert_lists(msg, names):
    for name in names:
        assert name in msg, f"{name!r} missing from: {msg}"


@pytest.mark.parametrize("where", ["mlp", "mlp-output", "dag", "graph"])
def test_unknown_activation_lists_valid_ones(where):
    with user_error("unknown activation 'mish'") as ei:
        if where == "mlp":
            dyadsim.mlp("3-4-2", activation="mish")
        elif where == "mlp-output":
            dyadsim.mlp("3-4-2", output_activation="mish")
        elif where == "dag":
            dyadsim.random_dag(activations=["tanh", "mish"])
        else:
            G = _chain_graph()
            G.nodes["h2"]["activation"] = "mish"
            dyadsim.Network.from_graph(G)
    _assert_lists(str(ei.value), ACTIVATIONS)


@pytest.mark.parametrize("where", ["mlp", "dag", "graph"])
def test_unknown_loss_lists_valid_ones(where):
    with user_error("unknown loss 'hinge'") as ei:
        if where == "mlp":
            dyadsim.mlp("3-4-2", loss="hinge")
        elif where == "dag":
            dyadsim.random_dag(loss="hinge")
        else:
            dyadsim.Network.from_graph(_chain_graph(), loss="hinge")
    _assert_lists(str(ei.value), LOSSES)


def test_wrong_x_or_y_width():
    net = make_net("mlp", "tanh", "mse", seed=2, n_in=3, n_out=2)
    x = np.zeros((4, 3))
    y = np.zeros((4, 2))
    for bad_x in (np.zeros((4, 2)), np.zeros(5), np.zeros((4, 3, 1))):
        with user_error(r"input x has shape .*expected \(3,\) or \(batch, 3\)"):
            net.loss_value(bad_x, y)
        with user_error("input x has shape"):
            dyadsim.backprop(net, bad_x, y)
    with user_error("input x has shape"):
        net.forward(np.zeros((2, 4)))
    for bad_y in (np.zeros((4, 3)), np.zeros((4, 1))):
        with user_error(r"target y has shape .*expected \(2,\) or \(batch, 2\)"):
            net.loss_value(x, bad_y)
        with user_error("target y has shape"):
            dyadsim.backprop(net, x, bad_y)
    with user_error("different batch sizes"):
        dyadsim.backprop(net, x, y[:3])
    with user_error("empty batch"):
        net.loss_value(np.zeros((0, 3)), np.zeros((0, 2)))


def test_multidigraph_rejected():
    M = nx.MultiDiGraph(_chain_graph())
    with user_error("DiGraph.*MultiDiGraph"):
        dyadsim.Network.from_graph(M)


def test_undirected_graph_rejected():
    with user_error("DiGraph"):
        dyadsim.Network.from_graph(nx.Graph(_chain_graph()))


@pytest.mark.parametrize("name", [("h", 1), 1.5, True, frozenset({"h"})])
def test_bad_node_names_rejected(name):
    G = nx.relabel_nodes(_chain_graph(), {"h1": name})
    with user_error("node names must be str or int") as ei:
        dyadsim.Network.from_graph(G)
    assert repr(name) in str(ei.value)


@pytest.mark.parametrize("size", [0, -1, 2.0, "3", None, True])
def test_bad_size(size):
    G = _chain_graph()
    G.nodes["h1"]["size"] = size
    with user_error("node 'h1': 'size' must be a positive int"):
        dyadsim.Network.from_graph(G)


def test_input_must_not_be_a_neuron():
    G = _chain_graph()
    G.nodes["input"]["activation"] = "tanh"
    with user_error("input node 'input' must not have an activation"):
        dyadsim.Network.from_graph(G)
    G = _chain_graph()
    G.nodes["input"]["bias"] = np.zeros(3)
    with user_error("input node 'input' must not have a bias"):
        dyadsim.Network.from_graph(G)


def test_hidden_node_without_activation():
    G = _chain_graph()
    del G.nodes["h2"]["activation"]
    with user_error("node 'h2' has no 'activation'"):
        dyadsim.Network.from_graph(G)


@pytest.mark.parametrize("sizes", ["3", "3-x-2", [3], [3, 0, 2], "a-b"])
def test_bad_mlp_sizes(sizes):
    with user_error("size"):
        dyadsim.mlp(sizes)


def test_block_of_unknown_node():
    net = dyadsim.mlp("3-4-2")
    with user_error("no non-input layer node named 'nope'"):
        net.block("nope")


def test_one_d_target_with_batched_input_is_handled():
    net = dyadsim.mlp("3-4-2", seed=0)
    x = np.zeros((1, 3))
    y = np.array([0.5, -0.5])
    try:
        g = dyadsim.backprop(net, x, y)
    except dyadsim.DyadsimError as exc:
        msg = str(exc)
        assert "has shape (2,), expected (2,)" not in msg, msg
    else:
        ref = dyadsim.backprop(net, x, y[None])
        for k in ref:
            np.testing.assert_array_equal(g[k], ref[k])


# ----------------------------------------------------------------------------- atomic files
def test_interrupted_save_keeps_the_old_file(tmp_path, monkeypatch):
    old = dyadsim.mlp("3-4-2", seed=0)
    path = old.save(tmp_path / "net.npz")
    before = path.read_bytes()
    real_savez = np.savez

    def savez_then_ctrl_c(fh, **arrays):
        fh.write(b"PK\x03\x04 half a checkpoint")  # some bytes reach the file ...
        raise KeyboardInterrupt  # ... then the user presses Ctrl-C

    monkeypatch.setattr(np, "savez", savez_then_ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        dyadsim.mlp("3-4-2", seed=1).save(path)
    monkeypatch.setattr(np, "savez", real_savez)
    assert path.read_bytes() == before  # the old network, whole
    assert [p.name for p in tmp_path.iterdir()] == ["net.npz"]  # and no temporary file
    again = dyadsim.load(path)
    np.testing.assert_array_equal(again.weight("input", "h1"), old.weight("input", "h1"))
    new = dyadsim.mlp("3-4-2", seed=1)
    new.save(path)
    np.testing.assert_array_equal(dyadsim.load(path).weight("input", "h1"), new.weight("input", "h1"))


def test_atomic_write_contract(tmp_path):
    import os
    import stat

    from dyadsim._io import atomic_write

    target = tmp_path / "a.txt"
    with atomic_write(target) as fh:
        fh.write("héllo\n")
    assert target.read_bytes() == "héllo\n".encode("utf-8")
    os.chmod(target, 0o640)
    with atomic_write(target, "wb") as fh:
        fh.write(b"\x00\x01")
    assert target.read_bytes() == b"\x00\x01"
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o640  # the old file's permissions
    with pytest.raises(RuntimeError, match="midway"):
        with atomic_write(target) as fh:
            fh.write("partial")
            raise RuntimeError("midway")
    assert target.read_bytes() == b"\x00\x01" and [p.name for p in tmp_path.iterdir()] == ["a.txt"]
    with user_error("mode"):
        with atomic_write(target, "a"):
            pass
    with pytest.raises(OSError) as info:
        with atomic_write(tmp_path / "no" / "such" / "dir.txt"):
            pass
    assert info.value.filename == str(tmp_path / "no" / "such" / "dir.txt")


def test_check_output_path(tmp_path):
    from dyadsim._io import check_output_path, read_text

    assert check_output_path(tmp_path / "new" / "deeper" / "f.npz") == tmp_path / "new" / "deeper" / "f.npz"
    (tmp_path / "file").write_text("x")
    with user_error("is a file, not a folder"):
        check_output_path(tmp_path / "file" / "f.npz", "--out")
    with user_error("is a folder"):
        check_output_path(tmp_path, "--out")
    with user_error("does not exist"):
        check_output_path(tmp_path / "missing" / "f.npz", make_parents=False)
    (tmp_path / "latin1").write_bytes(b"caf\xe9\n")
    with user_error(r"not UTF-8 text: byte 0xe9 at offset 3 \(line 1\)"):
        read_text(tmp_path / "latin1", "netlist file")


# ----------------------------------------------------------------------------- edge settings
@pytest.mark.parametrize("attrs, match", [
    ({"op": "avgpool2d", "stride": 0}, "stride must be >= 1"),
    ({"op": "avgpool2d", "kernel_size": 0}, "kernel_size must be >= 1"),
    ({"op": "avgpool2d", "kernel_size": 2.5}, "int or a pair"),
    ({"op": "avgpool2d", "kernel_size": True}, "int or a pair"),
    ({"op": "avgpool2d", "kernel_size": (2, 2, 2)}, "int or a pair"),
    ({"op": "avgpool2d", "padding": -1}, "padding must be >= 0"),
    ({"op": "avgpool2d", "padding": 10**6}, "destination has size 4"),
    ({"op": "avgpool2d", "stride": "2"}, "int or a pair"),
    ({"op": "conv2d", "weight": np.ones((1, 1, 3, 3)), "padding": 3000}, "destination has size 4"),
    ({"op": "conv2d", "weight": np.ones((1, 1, 3, 3)), "stride": (1, 0)}, "stride must be >= 1"),
    ({"op": "conv2d", "weight": np.ones((1, 1, 0, 3))}, "kernel_size must be >= 1"),
    ({"op": "maxpool"}, "unknown op"),
])
def test_bad_window_settings(attrs, match):
    G = nx.DiGraph()
    G.add_node("in", size=16, shape=(1, 4, 4))
    G.add_node("out", size=4, shape=(1, 2, 2), activation="tanh")
    G.add_edge("in", "out", **attrs)
    with user_error(match):
        dyadsim.Network.from_graph(G)


def test_integral_float_window_settings_are_accepted():
    G = nx.DiGraph()
    G.add_node("in", size=16, shape=(1, 4, 4))
    G.add_node("out", size=4, shape=(1, 2, 2), activation="tanh")
    G.add_edge("in", "out", op="avgpool2d", kernel_size=2.0, stride=np.int64(2))
    net = dyadsim.Network.from_graph(G)
    x = np.arange(16.0)
    # the mean of each 2x2 block, computed here without dyadsim
    blocks = x.reshape(2, 2, 2, 2).transpose(0, 2, 1, 3).reshape(4, 4).mean(axis=1)
    np.testing.assert_allclose(net.forward(x[None])["out"][0], np.tanh(blocks))
