"""ngspice relaxes to backprop: gradients, steady-state voltages, transients, plots, errors.

* ``.op`` gradients equal :func:`dyadsim.backprop` to <= 1e-6 relative error on random MLPs
  and DAGs with skip connections, for all five activations and both losses, on both
  backends; whole batches in one netlist and ``per_sample=True``; ``gain`` 1e3 and 1e-2;
  B-source summing.
* The steady-state node voltages ARE the forward pass and the backprop errors:
  ``(V(x)+V(z))/2 = a_l``, ``(V(x)-V(z))/gain = dC/da_l`` for every layer (computed here
  independently), ``V(u) = W a + b``.
* ``.tran`` starts at x = z = 0, ends at the ``.op`` state with the same gradients, and
  settles later the deeper the network.
* :func:`dyadsim.plot_relaxation` writes a PNG; a broken netlist gives a SimulatorError
  that names the netlist and carries ngspice's message.
"""

from __future__ import annotations

import numpy as np
import pytest

import dyadsim
from dyadsim.readout import settling_time
from conftest import ACTIVATIONS, LOSSES, make_batch, make_case, preacts

pytestmark = pytest.mark.spice

TOL = 1e-6
BACKENDS = ("shared", "subprocess")


def max_rel(grads, net, x, y) -> float:
    return dyadsim.compare(grads, dyadsim.backprop(net, x, y)).max_rel_error


def case_for(kind, act, loss, seed, depth=3, batch=3):
    """A small network (2-5 neurons per layer) with n_out = 3 (xent needs >= 2)."""
    return make_case(kind, act, loss, seed=seed, depth=depth, batch=batch, width=(2, 5),
                     n_in=3, n_out=3)


# ----------------------------------------------------------------------------- .op grid
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("act", ACTIVATIONS)
@pytest.mark.parametrize("kind", ["mlp", "dag"])
def test_op_gradients_match_backprop(kind, act, loss, backend):
    c = case_for(kind, act, loss, seed=ACTIVATIONS.index(act) + 10 * LOSSES.index(loss))
    r = dyadsim.spice_gradients(c.net, c.x, c.y, backend=backend)
    assert r.result.backend == backend
    assert r.info["netlists"] == 1 and r.netlist.n_samples == c.x.shape[0]
    assert max_rel(r.grads, c.net, c.x, c.y) <= TOL
    assert r.grads.loss == pytest.approx(c.net.loss_value(c.x, c.y), rel=1e-9)


@pytest.mark.parametrize("loss,target", [("mse", "real"), ("xent", "soft")])
def test_op_mixed_activation_dag(loss, target):
    """A DAG whose nodes mix all five activations, skip edges everywhere."""
    c = make_case("dag", "mixed", loss, target, seed=101, depth=5, batch=3, n_out=3,
                  skip_prob=0.7)
    assert len({a.name for a in c.net.activations.values()}) >= 3
    r = dyadsim.spice_gradients(c.net, c.x, c.y)
    assert max_rel(r.grads, c.net, c.x, c.y) <= TOL


@pytest.mark.parametrize("kind,loss", [("mlp", "mse"), ("mlp", "xent"), ("dag", "mse"),
                                       ("dag", "xent")])
def test_per_sample_netlists_match(kind, loss):
    c = case_for(kind, "tanh" if kind == "mlp" else "softplus", loss, seed=3, batch=4)
    r = dyadsim.spice_gradients(c.net, c.x, c.y, per_sample=True, processes=2)
    assert r.info["netlists"] == 4 and len(r.results) == 4
    assert all(nl.n_samples == 1 for nl in r.netlists)
    assert all(res.backend == "subprocess" for res in r.results)
    assert max_rel(r.grads, c.net, c.x, c.y) <= TOL
    # one netlist per sample and one netlist for the batch read out the same gradients
    whole = dyadsim.spice_gradients(c.net, c.x, c.y)
    assert dyadsim.compare(r.grads, whole.grads).max_rel_error <= 1e-8
    assert r.grads.loss == pytest.approx(whole.grads.loss, rel=1e-9)


@pytest.mark.parametrize("gain", [1e3, 1e-2])
@pytest.mark.parametrize("kind,act,loss,backend", [
    ("mlp", "tanh", "mse", "shared"), ("dag", "sigmoid", "xent", "subprocess"),
])
def test_gain_is_divided_out(kind, act, loss, backend, gain):
    c = case_for(kind, act, loss, seed=4)
    r = dyadsim.spice_gradients(c.net, c.x, c.y, gain=gain, backend=backend)
    assert max_rel(r.grads, c.net, c.x, c.y) <= TOL
    # ... and it really scales the error voltages: V(x) - V(z) = gain * dC/da at the output
    a_L = c.net.predict(c.x)
    dC = c.net.loss.grad(a_L, c.y)
    op, nl = r.result, r.netlist
    for b in range(c.x.shape[0]):
        for i in range(c.net.n_out):
            xn, zn = nl.node_map[(b, c.net.output, i)]
            assert op.v(xn) - op.v(zn) == pytest.approx(gain * dC[b, i], rel=1e-6, abs=1e-9 * gain)
    assert op.v("gain_ref") == pytest.approx(gain)


@pytest.mark.parametrize("kind,act,loss,gain", [
    ("mlp", "tanh", "mse", 1.0), ("dag", "relu", "xent", 1e3), ("dag", "softplus", "mse", 1e-2),
])
def test_b_source_summing_matches(kind, act, loss, gain):
    c = case_for(kind, act, loss, seed=6)
    rb = dyadsim.spice_gradients(c.net, c.x, c.y, summing="B", gain=gain)
    assert "G" not in rb.netlist.stats["by_kind"]
    assert max_rel(rb.grads, c.net, c.x, c.y) <= TOL
    rg = dyadsim.spice_gradients(c.net, c.x, c.y, summing="G", gain=gain)
    assert rg.netlist.stats["by_kind"]["G"] > 0
    for xn, zn in rg.netlist.node_map.values():  # same node names, same voltages
        assert rb.result.v(xn) == pytest.approx(rg.result.v(xn), rel=1e-7, abs=1e-10)
        assert rb.result.v(zn) == pytest.approx(rg.result.v(zn), rel=1e-7, abs=1e-10)


# ----------------------------------------------------------------------------- steady state
def independent_errors(net, x, y) -> dict:
    """dC/da_l per sample for every layer, by a plain backward pass (not dyadsim's)."""
    u = preacts(net, x)
    a = net.forward(x)
    d = {v: np.zeros_like(a[v]) for v in net.nodes}
    d[net.output] = net.loss.grad(a[net.output], np.atleast_2d(y))
    for v in reversed(net.nodes):
        delta = net.activations[v].df(u[v]) * d[v]
        for p in net.preds[v]:
            if p != net.input:
                d[p] += delta @ net.params[("W", p, v)]
    return d


@pytest.mark.parametrize("kind,act,loss,gain", [
    ("mlp", "tanh", "mse", 1.0), ("mlp", "sigmoid", "xent", 1e3),
    ("dag", "softplus", "xent", 1.0), ("dag", "identity", "mse", 1e-2),
])
def test_steady_state_is_forward_pass_and_errors(kind, act, loss, gain):
    c = case_for(kind, act, loss, seed=8, depth=4, batch=2)
    net = c.net
    r = dyadsim.spice_gradients(net, c.x, c.y, gain=gain)
    op, nl = r.result, r.netlist
    acts = net.forward(c.x)
    u = preacts(net, c.x)
    errs = independent_errors(net, c.x, c.y)
    assert set(nl.node_map) == {(b, v, i) for b in range(2) for v in net.nodes
                                for i in range(net.sizes[v])}
    scale_a = max(np.max(np.abs(acts[v])) for v in net.nodes)
    scale_d = max(np.max(np.abs(errs[v])) for v in net.nodes)
    for (b, v, i), (xn, zn) in nl.node_map.items():
        vx, vz = op.v(xn), op.v(zn)
        assert 0.5 * (vx + vz) == pytest.approx(acts[v][b, i], abs=1e-9 * scale_a), (v, i)
        assert (vx - vz) / gain == pytest.approx(errs[v][b, i], abs=1e-8 * scale_d), (v, i)
        assert op.v(nl.aux_map[(b, v, i)]["u"]) == pytest.approx(u[v][b, i], abs=1e-9 * scale_a)
    for (b, i), n in nl.input_nodes.items():  # ngspice parses numbers to within an ulp or so
        assert op.v(n) == pytest.approx(c.x[b, i], rel=1e-14, abs=1e-300)
    for (b, i), n in nl.target_nodes.items():
        assert op.v(n) == pytest.approx(c.y[b, i], rel=1e-14, abs=1e-300)


def test_readout_checks_its_input():
    c = case_for("mlp", "tanh", "mse", seed=1)
    r = dyadsim.spice_gradients(c.net, c.x, c.y)
    other = dyadsim.random_dag(n_hidden=1, sizes=(2, 3), n_in=3, n_out=3, seed=1)
    with pytest.raises(dyadsim.DyadsimError, match="holds no node of this network"):
        dyadsim.readout(other, r.result)
    with pytest.raises(dyadsim.DyadsimError):
        dyadsim.readout(c.net, {"x": 1.0})
    # the readout reads x and y back from the circuit's own sources
    g = dyadsim.readout(c.net, r.result)
    assert dyadsim.compare(g, r.grads).max_rel_error == 0.0


def test_readout_rejects_a_result_of_another_network_with_the_same_names():
    a, b = dyadsim.mlp("3-5-3", seed=1), dyadsim.mlp("3-4-3", seed=2)
    x, y = make_batch(a, 0, batch=1)
    r = dyadsim.spice_gradients(a, x, y)
    with pytest.raises(dyadsim.DyadsimError):
        dyadsim.readout(b, r.result)


# ----------------------------------------------------------------------------- transient
@pytest.mark.parametrize("kind,act,loss,batch,backend", [
    ("mlp", "tanh", "mse", 2, "subprocess"),
    ("dag", "mixed", "xent", 1, "shared"),
])
def test_tran_reaches_op_steady_state_from_zero(kind, act, loss, batch, backend):
    c = make_case(kind, act, loss, seed=12, depth=3, batch=batch, width=(2, 4), n_out=2,
                  skip_prob=1.0)
    net = c.net
    tr = dyadsim.spice_gradients(net, c.x, c.y, analysis="tran", backend=backend,
                                 max_step=0.2, t_step=0.1)
    op = dyadsim.spice_gradients(net, c.x, c.y, analysis="op", backend=backend)
    res, nl = tr.result, tr.netlist
    assert isinstance(res, dyadsim.Transient) and res.backend == backend
    assert max_rel(tr.grads, net, c.x, c.y) <= TOL
    # starts at x = z = 0 (t = 0 row kept), ends at the .op state
    assert res.time[0] == 0.0
    assert res.time[-1] == pytest.approx((6 * net.depth + 30) * nl.tau, rel=1e-9)
    scale = max(abs(op.result.v(n)) for pair in nl.node_map.values() for n in pair)
    assert scale > 0.05
    for key, (xn, zn) in nl.node_map.items():
        assert res.v(xn)[0] == 0.0 and res.v(zn)[0] == 0.0, key
        assert res.v(xn)[-1] == pytest.approx(op.result.v(xn), abs=1e-7 * scale), key
        assert res.v(zn)[-1] == pytest.approx(op.result.v(zn), abs=1e-7 * scale), key
    # the readout of a transient is the readout of its last point
    g_last = dyadsim.readout(net, res.final())
    assert dyadsim.compare(g_last, tr.grads).max_rel_error == 0.0
    t_settle = tr.info["t_settle_tau"]
    assert 10.0 < t_settle < 6 * net.depth + 30


def _settle(L, seed=3, width=3):
    net = dyadsim.mlp([3] + [width] * (L - 1) + [2], activation="tanh", seed=seed)
    x, y = make_batch(net, seed, batch=1)
    r = dyadsim.spice_gradients(net, x, y, analysis="tran", backend="subprocess",
                                max_step=0.2, t_step=0.1)
    assert max_rel(r.grads, net, x, y) <= TOL
    return r.info["t_settle_tau"], dyadsim.relax_continuous(net, x, y).t_settle


def test_settling_time_grows_with_depth():
    shallow, shallow_ode = _settle(2)
    deep, deep_ode = _settle(6)
    assert np.isfinite(shallow) and np.isfinite(deep)
    assert deep > shallow + 3.0, (shallow, deep)
    # the circuit is the continuous saddle flow: same time scale as the ODE's settling
    for spice, ode in ((shallow, shallow_ode), (deep, deep_ode)):
        assert 0.7 < spice / ode < 1.4, (spice, ode)


def test_relaxation_trace_and_settling_time():
    c = case_for("mlp", "tanh", "mse", seed=2, depth=2, batch=1)
    r = dyadsim.spice_gradients(c.net, c.x, c.y, analysis="tran", max_step=0.2, t_step=0.1)
    tr = dyadsim.relaxation_trace(c.net, r.result, max_points=120)
    t, err = tr["t"], tr["grad_error"]
    assert len(t) == len(err) <= 120 and t[0] == 0.0 and np.all(np.diff(t) > 0)
    assert t[-1] == pytest.approx(6 * c.net.depth + 30)  # in units of tau
    assert err[0] == pytest.approx(1.0)  # nothing has relaxed at t = 0: zero gradients
    assert err[-1] == 0.0
    assert tr["m"].shape == (len(t), 1, c.net.n) == tr["d"].shape
    assert np.all(tr["m"][0] == 0.0) and np.all(tr["d"][0] == 0.0)
    # settling_time on a coarser trace agrees with the full-resolution one
    assert settling_time(t, err, 1e-6) == pytest.approx(r.info["t_settle_tau"], abs=0.5)


def test_settling_time_function():
    t = np.arange(6.0)
    assert settling_time(t, [1, 1e-3, 1e-7, 1e-5, 1e-8, 0], 1e-6) == 4.0
    assert settling_time(t, [1e-9] * 6, 1e-6) == 0.0
    assert settling_time(t, [1, 1, 1, 1, 1, 1e-3], 1e-6) == float("inf")
    assert settling_time(t, [1, 1, 1, 1, 1, 1e-3], 1e-2) == 5.0


def test_plot_relaxation_writes_png(tmp_path):
    c = make_case("dag", "tanh", "xent", seed=5, depth=3, batch=1, n_out=2, width=(2, 4))
    r = dyadsim.spice_gradients(c.net, c.x, c.y, analysis="tran", max_step=0.25, t_step=0.25)
    path = tmp_path / "r.png"
    fig = dyadsim.plot_relaxation(c.net, r.result, path=path)
    assert path.is_file() and path.stat().st_size > 10_000
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(fig.axes) == len(c.net.nodes) + 1
    import matplotlib.pyplot as plt

    plt.close(fig)


# ----------------------------------------------------------------------------- errors
def test_broken_netlist_error_names_path_and_ngspice_message(tmp_path):
    c = case_for("mlp", "tanh", "mse", seed=0, depth=2, batch=1)
    nl = dyadsim.compile_netlist(c.net, c.x, c.y)
    broken = nl.text.replace("V=0.5*(", "V=0.5*nosuchfn(", 1)
    assert broken != nl.text
    src = tmp_path / "broken.cir"
    src.write_text(broken)
    with pytest.raises(dyadsim.SimulatorError) as info:
        dyadsim.simulate(src, backend="subprocess", workdir=tmp_path / "runs")
    err = info.value
    assert err.reason == "parse"
    assert err.netlist_path and err.netlist_path in str(err)
    from pathlib import Path

    kept = Path(err.netlist_path)
    assert kept.is_file() and kept.read_text().strip() == broken.strip()
    assert "nosuchfn" in err.log and "nosuchfn" in str(err)  # ngspice's own words
    assert isinstance(err, RuntimeError) and not isinstance(err, ValueError)


def test_floating_node_is_a_simulator_error(tmp_path):
    c = case_for("mlp", "tanh", "mse", seed=0, depth=2, batch=1)
    nl = dyadsim.compile_netlist(c.net, c.x, c.y)
    xn, _ = nl.node_map[(0, c.net.nodes[0], 0)]
    un = nl.aux_map[(0, c.net.nodes[0], 0)]["u"]
    text = "\n".join(l for l in nl.text.splitlines() if not l.startswith(f"R{un} "))
    with pytest.raises(dyadsim.SimulatorError) as info:
        dyadsim.simulate(text + "\n", backend="subprocess", workdir=tmp_path)
    assert info.value.reason == "singular-matrix"
    assert un in str(info.value)
