"""The public names other stages read a network and its circuit by.

* :func:`dyadsim.network.param_name` gives ``W[src->dst]`` / ``b[node]`` (written out here
  by hand), and the comparison tables and Monte Carlo use it;
* the node-naming helpers of :mod:`dyadsim.circuits` name the nodes a compiled netlist
  really has;
* :func:`dyadsim.readout.circuit_states` reads back the clamped inputs and targets exactly,
  and at the operating point ``(V(x)+V(z))/2`` is the forward pass and ``V(u)`` its
  pre-activations (both computed here independently, by ``conftest.preacts``).
"""

from __future__ import annotations

import numpy as np
import pytest

import dyadsim
from dyadsim.circuits import (
    GAIN_NODE, TAU_NODE, compile_netlist, layer_identifiers, node_name, safe_identifier,
    target_node,
)
from dyadsim.errors import DyadsimError
from dyadsim.network import param_name
from dyadsim.readout import CircuitStates, circuit_states
from conftest import make_batch, preacts


@pytest.mark.parametrize("key,name", [
    (("W", "in", "h1"), "W[in->h1]"),
    (("b", "out"), "b[out]"),
    (("W", 0, 1), "W[0->1]"),
    (("x", "y", "z"), "x/y/z"),
    ("plain", "plain"),
    (7, "7"),
])
def test_param_name(key, name):
    assert param_name(key) == name


def test_param_name_is_what_compare_prints():
    net = dyadsim.mlp("3-4-2", activation="tanh", loss="mse", seed=0)
    x, y = make_batch(net, 0, batch=2)
    g = dyadsim.backprop(net, x, y)
    cmp = dyadsim.compare(g, g)
    assert sorted(m.name for m in cmp.tensors.values()) == \
        ["W[h1->output]", "W[input->h1]", "b[h1]", "b[output]"]


def test_old_private_name_still_works():
    from dyadsim.readout._compare import _key_name

    assert _key_name(("W", "a", "b")) == "W[a->b]"


@pytest.mark.parametrize("batch", [1, 3])
def test_node_names_are_the_netlists_nodes(batch):
    net = dyadsim.mlp("3-4-2", activation="tanh", loss="mse", seed=1)
    x, y = make_batch(net, 1, batch=batch)
    nl = compile_netlist(net, x, y)
    ids = layer_identifiers(net)
    assert set(ids) == {net.input, *net.nodes}
    assert all(safe_identifier(i) == i for i in ids.values())
    nodes = {n for e in nl.circuit.elements() for n in e.nodes}
    for b in range(batch):
        for v in net.nodes:
            for i in range(net.sizes[v]):
                for kind in ("x", "z", "u", "m"):
                    assert node_name(kind, ids[v], i, b, batch) in nodes
                assert nl.nodes_of(v, i, b) == (node_name("x", ids[v], i, b, batch),
                                                node_name("z", ids[v], i, b, batch))
        for i in range(net.n_out):
            assert target_node(i, b, batch) in nodes
    assert {GAIN_NODE, TAU_NODE} <= nodes


@pytest.mark.spice
@pytest.mark.parametrize("batch", [1, 3])
def test_circuit_states_at_the_operating_point(batch):
    net = dyadsim.mlp("3-5-2", activation="tanh", loss="mse", seed=2)
    x, y = make_batch(net, 2, batch=batch)
    op = dyadsim.simulate(compile_netlist(net, x, y), analysis="op", backend="subprocess")
    st = circuit_states(net, op)
    assert isinstance(st, CircuitStates) and st.batch == batch
    assert st.x.shape == st.z.shape == st.u.shape == (batch, net.n)
    np.testing.assert_allclose(st.x0, np.atleast_2d(x), rtol=0, atol=1e-12)
    np.testing.assert_allclose(st.y, np.atleast_2d(y), rtol=0, atol=1e-12)
    u = preacts(net, x)
    for v in net.nodes:
        sl = net.slice(v)
        a = net.activations[v].f(u[v])
        np.testing.assert_allclose(0.5 * (st.x + st.z)[:, sl], a, atol=1e-7)
        np.testing.assert_allclose(st.u[:, sl], u[v], atol=1e-7)


@pytest.mark.spice
def test_circuit_states_along_a_transient():
    net = dyadsim.mlp("2-3-2", activation="tanh", loss="mse", seed=3)
    x, y = make_batch(net, 3, batch=2)
    tran = dyadsim.simulate(compile_netlist(net, x, y, analysis="tran"), analysis="tran",
                            backend="subprocess")
    T = len(tran.time)
    idx = [0, T // 2, T - 1]
    st = circuit_states(net, tran, times=idx)
    assert st.x.shape == (3, 2, net.n) and st.x0.shape == (3, 2, net.n_in)
    np.testing.assert_allclose(st.x[0], 0.0, atol=1e-9)  # the relaxation starts at x = z = 0
    np.testing.assert_allclose(st.z[0], 0.0, atol=1e-9)
    last = circuit_states(net, tran)  # default: the final point
    for a, b in zip(st[:5], last[:5]):
        np.testing.assert_array_equal(a[-1], b)
    with pytest.raises(DyadsimError, match="indices"):
        circuit_states(net, tran, times=[T])
    with pytest.raises(DyadsimError, match="transient"):
        circuit_states(net, tran.final(), times=[0])


@pytest.mark.spice
def test_circuit_states_of_another_network_is_refused():
    import networkx as nx

    net = dyadsim.mlp("3-4-2", activation="tanh", loss="mse", seed=1)
    x, y = make_batch(net, 1)
    op = dyadsim.simulate(compile_netlist(net, x, y), analysis="op", backend="subprocess")
    assert circuit_states(net, op).batch == 4
    G = nx.relabel_nodes(net.to_graph(), {"input": "pixels", "h1": "hidden", "output": "logits"})
    renamed = dyadsim.Network.from_graph(G, loss="mse")
    with pytest.raises(DyadsimError, match="holds no node"):
        circuit_states(renamed, op)
    with pytest.raises(DyadsimError, match="node voltages"):
        circuit_states(net, {"x": 1.0})
