"""Monte Carlo on Dask (dyadsim/montecarlo) and ``dyadsim montecarlo``."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pytest

import dyadsim
from dyadsim.circuits import Element, Kind
from dyadsim.circuits import Nonideality, map_elements
from dyadsim.cli import main
from dyadsim.errors import DyadsimError
from dyadsim.montecarlo import (
    ALL_TENSORS, Mismatch, Quantization, monte_carlo, plot_sweep, simulate_robust, sweep,
)

SUMMARY_FIELDS = {"angle_mean", "angle_std", "norm_ratio_mean", "norm_ratio_std"}


def problem(spec="3-4-2", seed=0, batch=2):
    net = dyadsim.mlp(spec, activation="tanh", loss="mse", seed=seed)
    rng = np.random.default_rng(seed + 1)
    return net, rng.random((batch, net.n_in)), rng.uniform(-0.5, 0.5, (batch, net.n_out))


@dataclass(frozen=True)
class BreakSome(Nonideality):
    """A deliberately broken sample: with probability ``p`` (drawn from the run's rng) a
    capacitor to a new node leaves that node floating in ``.op`` (singular matrix)."""

    p: float = 0.5

    @property
    def is_zero(self):
        return self.p == 0

    def apply(self, circuit, rng):
        if rng.random() >= self.p:
            return circuit
        out = map_elements(circuit, lambda el: [el])
        out.sections[0].elements.append(Element(Kind.C, "floating", ("floating_node", "0"), 1e-12))
        return out


# ----------------------------------------------------------------------------- exactness
@pytest.mark.spice
@pytest.mark.parametrize("dialect", ["behavioral", "device"])
def test_identical_circuits_have_zero_spread(dialect):
    net, x, y = problem()
    mc = monte_carlo(net, x, y, nonidealities=[Mismatch(0.0), Quantization(None)], runs=3,
                     dialect=dialect, scheduler="synchronous", progress=False)
    s = mc.summary()
    assert s["runs"] == 3 and s["failed"] == 0
    tol = 1e-6 if dialect == "behavioral" else 1e-6  # device: measured ~1e-8
    for name, d in s["tensors"].items():
        assert d["n"] == 3
        assert d["angle_std"] == 0.0 and d["norm_ratio_std"] == 0.0 and d["rel_error_std"] == 0.0
        assert d["rel_error_mean"] < tol and abs(d["norm_ratio_mean"] - 1) < tol
    t = mc.table
    assert len(t) == 3 * (len(net.params) + 1)
    assert set(t["tensor"]) == {*(m for m in s["tensors"])} and ALL_TENSORS in set(t["tensor"])


@pytest.fixture(scope="module")
def mismatch_sweep():
    net, x, y = problem("4-6-3")
    return sweep(net, x, y, factory=lambda s: [Mismatch(s)], values=[0.01, 0.05, 0.2], runs=6,
                 label="mismatch sigma", scheduler="synchronous", progress=False, seed=0)


@pytest.mark.spice
def test_misalignment_grows_with_mismatch(mismatch_sweep):
    st = mismatch_sweep.summary_table()
    for name in set(st["tensor"]):
        rows = st[st["tensor"] == name].sort_values("value")
        angles = rows["angle_mean"].to_numpy()
        assert np.all(np.diff(angles) > 0), (name, angles)
        assert np.all(rows["failed"] == 0)
    # the error is roughly proportional to sigma at small sigma
    all_ = st[st["tensor"] == ALL_TENSORS].sort_values("value")["angle_mean"].to_numpy()
    assert 2 < all_[1] / all_[0] < 10


@pytest.mark.spice
def test_plot_sweep_writes_a_png(mismatch_sweep, tmp_path):
    path = tmp_path / "sweep.png"
    fig = plot_sweep(mismatch_sweep, path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(fig.axes) == 2
    table = mismatch_sweep.table
    assert {"value", "run", "tensor", "angle", "norm_ratio", "failed"} <= set(table.columns)


@pytest.mark.spice
def test_mismatch_monte_carlo_is_reproducible():
    net, x, y = problem()
    a = monte_carlo(net, x, y, nonidealities=[Mismatch(0.05)], runs=3, seed=5,
                    scheduler="synchronous", progress=False)
    b = monte_carlo(net, x, y, nonidealities=[Mismatch(0.05)], runs=3, seed=5,
                    scheduler="threads", workers=2, progress=False)
    assert a.table["angle"].tolist() == b.table["angle"].tolist()
    assert len(set(a.table.loc[a.table["tensor"] == ALL_TENSORS, "angle"])) == 3


# ----------------------------------------------------------------------------- failures
@pytest.mark.spice
def test_a_failing_run_is_counted_reported_and_not_fatal():
    net, x, y = problem()
    mc = monte_carlo(net, x, y, nonidealities=[Mismatch(0.01), BreakSome(0.5)], runs=6, seed=1,
                     scheduler="synchronous", progress=False, timeout=30)
    s = mc.summary()
    assert s["runs"] == 6 and sorted(set(mc.table["run"])) == list(range(6))
    assert 0 < s["failed"] < 6
    assert len(s["failures"]) == s["failed"]
    for f in s["failures"]:
        assert "SimulatorError[singular-matrix]" in f["error"] and "floating_node" in f["error"]
    failed_rows = mc.table[mc.table["failed"]]
    assert failed_rows["angle"].isna().all() and (failed_rows["error"] != "").all()
    ok = s["tensors"][ALL_TENSORS]
    assert ok["n"] == 6 - s["failed"] and ok["angle_mean"] > 0


@pytest.mark.spice
def test_a_sweep_with_a_hopeless_value_still_finishes():
    net, x, y = problem()
    res = sweep(net, x, y, factory=lambda p: [BreakSome(p)], values=[0.0, 1.0], runs=2,
                scheduler="synchronous", progress=False)
    s0, s1 = (r.summary() for r in res.results)
    assert (s0["failed"], s1["failed"]) == (0, 2)
    assert s1["tensors"][ALL_TENSORS]["angle_mean"] is None


# ----------------------------------------------------------------------------- the .op rescue
class FirstFails:
    """``dyadsim.simulator.simulate`` whose first ``fails`` calls raise a rescuable failure;
    later calls run ngspice.  Records every netlist text it was given."""

    def __init__(self, real, fails=1, reason="no-convergence"):
        self.real, self.fails, self.reason, self.texts = real, fails, reason, []

    def __call__(self, text, *args, **kwargs):
        self.texts.append(text)
        if len(self.texts) <= self.fails:
            raise dyadsim.SimulatorError("planted failure", reason=self.reason)
        return self.real(text, *args, **kwargs)


@pytest.mark.spice
@pytest.mark.parametrize("dialect", ["behavioral", "device"])
def test_rescue_retries_through_the_circuit_ir(dialect, monkeypatch):
    """A failed strict .op is retried with gmin = 1e-12 (an option of the circuit), and the
    rough answer goes back as .nodeset first guesses of the original circuit."""
    import dyadsim.simulator as simulator
    from dyadsim.circuits import compile_device_netlist

    net, x, y = problem()
    compile_ = dyadsim.compile_netlist if dialect == "behavioral" else compile_device_netlist
    nl = compile_(net, x, y)
    fake = FirstFails(simulator.simulate)
    monkeypatch.setattr(simulator, "simulate", fake)
    res, rescued = simulate_robust(nl, "op", 60)
    assert rescued is True and len(fake.texts) == 3
    strict, gmin, final = fake.texts
    options = [ln for ln in gmin.splitlines() if ln.startswith(".options")]
    assert len(options) == 1 and options[0].endswith(" gmin=1e-12")
    assert options[0].count("gmin=") == 1
    assert [ln for ln in strict.splitlines() if not ln.startswith(".options")] == \
        [ln for ln in gmin.splitlines() if not ln.startswith(".options")]
    nodesets = dict(item.split("=") for ln in final.splitlines() if ln.startswith(".nodeset")
                    for item in ln.split()[1:])
    rough = fake.real(gmin, "op", backend="subprocess")
    assert set(nodesets) == {f"v({n})" for n in rough.voltages if "#" not in n}
    assert all(float(nodesets[f"v({n})"]) == v for n, v in rough.voltages.items() if "#" not in n)
    # the strict run with first guesses is the operating point of the original circuit
    cmp = dyadsim.compare(dyadsim.readout(net, res), dyadsim.backprop(net, x, y))
    assert cmp.max_rel_error < 1e-6
    # the input was not changed
    assert nl.circuit.options.get("gmin") != 1e-12 and nl.text == strict


@pytest.mark.spice
def test_rescue_falls_back_to_allow_singular(monkeypatch):
    import dyadsim.simulator as simulator

    net, x, y = problem()
    nl = dyadsim.compile_netlist(net, x, y)
    calls = []
    real = simulator.simulate

    def fake(text, *args, allow_singular=False, **kwargs):
        calls.append(allow_singular)
        if len(calls) <= 2:  # the strict run and the gmin retry
            raise dyadsim.SimulatorError("planted", reason="singular-matrix")
        return real(text, *args, allow_singular=allow_singular, **kwargs)

    monkeypatch.setattr(simulator, "simulate", fake)
    res, rescued = simulate_robust(nl.circuit, "op", 60)
    assert rescued is True and calls == [False, False, True, False]


@pytest.mark.spice
def test_what_the_rescue_does_not_touch(monkeypatch):
    import dyadsim.simulator as simulator

    net, x, y = problem()
    with pytest.raises(DyadsimError, match="circuit IR"):
        simulate_robust(dyadsim.compile_netlist(net, x, y).text, "op", 60)
    # a transient, or a failure that is not a convergence problem, is raised as it is
    tran = dyadsim.compile_netlist(net, x, y, analysis="tran")
    fake = FirstFails(simulator.simulate)
    monkeypatch.setattr(simulator, "simulate", fake)
    with pytest.raises(dyadsim.SimulatorError, match="planted"):
        simulate_robust(tran, "tran", 60)
    assert len(fake.texts) == 1
    fake = FirstFails(None, reason="timeout")
    monkeypatch.setattr(simulator, "simulate", fake)
    with pytest.raises(dyadsim.SimulatorError, match="planted"):
        simulate_robust(dyadsim.compile_netlist(net, x, y), "op", 60)
    assert len(fake.texts) == 1


# ----------------------------------------------------------------------------- Dask cluster, CLI
@pytest.mark.spice
def test_local_cluster_with_two_worker_processes():
    net, x, y = problem()
    mc = monte_carlo(net, x, y, nonidealities=[Mismatch(0.02)], runs=6, scheduler=None,
                     workers=2, progress=False)
    s = mc.summary()
    assert mc.info["engine"] == "LocalCluster(2 workers)" and mc.info["workers"] == 2
    assert s["runs"] == 6 and s["failed"] == 0
    assert sorted(set(mc.table["run"])) == list(range(6))
    ref = monte_carlo(net, x, y, nonidealities=[Mismatch(0.02)], runs=6, scheduler="synchronous",
                      progress=False)
    assert np.allclose(mc.table["angle"], ref.table["angle"], rtol=0, atol=0)


@pytest.mark.spice
def test_cli_json_summary(capsys):
    capsys.readouterr()
    rc = main(["montecarlo", "--net", "4-4-2", "--mismatch", "0.05", "--bits", "6", "--runs", "3",
               "--batch", "2", "--scheduler", "synchronous", "--no-progress", "--json"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["runs"] == 3 and out["failed"] == 0
    assert out["nonidealities"] == ["mismatch sigma=0.05", "quantization 6 bits"]
    assert set(out["tensors"]) == {"W[input->h1]", "b[h1]", "W[h1->output]", "b[output]", ALL_TENSORS}
    for d in out["tensors"].values():
        assert SUMMARY_FIELDS <= set(d) and d["angle_mean"] > 0


def test_cli_rejects_bad_numbers(capsys):
    for argv in (["--mismatch", "nan"], ["--bits", "0"], ["--runs", "0"], ["--wire", "-3"],
                 ["--noise-temperature", "inf", "--analysis", "tran"]):
        rc = main(["montecarlo", "--net", "3-2", "--scheduler", "synchronous", "--no-progress",
                   *argv])
        assert rc == 2, argv
        assert "error:" in capsys.readouterr().err


@pytest.mark.parametrize("kwargs", [
    dict(runs=0), dict(runs="5"), dict(runs=2.5), dict(seed=-1), dict(dialect="spectre"),
    dict(scheduler="tcp://host; rm -rf /"), dict(scheduler=42), dict(nonidealities=["Mismatch"]),
    dict(analysis="ac"), dict(timeout=-1), dict(workers=0, scheduler="processes"),
    dict(nonidealities=[dyadsim.montecarlo.ThermalNoise(300.0)]),  # noise needs tran
])
def test_monte_carlo_validates_its_arguments(kwargs):
    net, x, y = problem()
    with pytest.raises(DyadsimError):
        monte_carlo(net, x, y, progress=False, **kwargs)
