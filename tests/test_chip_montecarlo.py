"""Monte Carlo over sampled chips on either engine (dyadsim.montecarlo.monte_carlo(chip=...))
and ``dyadsim montecarlo --engine dynamics``.

Oracles: run r is ``Chip.sample(net, seed=[seed, r], **chip)``, so the table is checked
against chips sampled here and compared with :func:`dyadsim.compare` one by one, and the
two engines' tables are checked against each other run by run."""

from __future__ import annotations

import json

import numpy as np
import pytest

import dyadsim
from dyadsim.montecarlo import ALL_TENSORS, Mismatch, monte_carlo
from dyadsim.network import param_name
from conftest import make_batch, make_net

MC = dict(scheduler="synchronous", progress=False)


def _problem(seed=0):
    net = make_net("dag", "tanh", "mse", seed, depth=3, width=(3, 5))
    x, y = make_batch(net, seed, 4)
    return net, x, y


def test_dynamics_table_is_the_sampled_chips_compared_one_by_one():
    net, x, y = _problem(1)
    chip = {"mismatch": 0.1, "offset": 0.005, "adc_bits": 9}
    for reference in ("network", "chip"):
        res = monte_carlo(net, x, y, chip=chip, runs=7, seed=3, reference=reference, chunk=3, **MC)
        t = res.table
        assert not t["failed"].any() and len(t) == 7 * (len(net.params) + 1)
        for r in range(7):
            c = dyadsim.Chip.sample(net, seed=[3, r], **chip)
            g = dyadsim.relax_chips(c, x, y).grads[0]
            ref = dyadsim.backprop(net if reference == "network" else c.network, x, y)
            cmp = dyadsim.compare(g, ref)
            rows = t[t["run"] == r].set_index("tensor")
            for key, m in cmp.tensors.items():
                row = rows.loc[param_name(key)]
                assert row["rel_error"] == pytest.approx(m.rel_error, rel=1e-10)
                assert row["angle"] == pytest.approx(m.angle, rel=1e-8, abs=1e-15)
                assert row["norm_ratio"] == pytest.approx(m.norm_ratio, rel=1e-12)
            assert rows.loc[ALL_TENSORS, "angle"] == pytest.approx(cmp.summary.angle, rel=1e-8)
    assert res.info["engine_kind"] == "dynamics" and res.summary()["runs"] == 7


@pytest.mark.spice
@pytest.mark.parametrize("crossbar", ["separate", "shared"])
def test_both_engines_give_the_same_runs(crossbar):
    net, x, y = _problem(2)
    chip = {"crossbar": crossbar, "mismatch": 0.1, "derivative_mismatch": 0.05, "offset": 0.005,
            "bits": 6, "tau_spread": 0.3}
    a = monte_carlo(net, x, y, chip=chip, runs=4, seed=5, engine="dynamics", **MC).table
    b = monte_carlo(net, x, y, chip=chip, runs=4, seed=5, engine="spice", **MC).table
    assert not b["failed"].any()
    assert list(a["run"]) == list(b["run"]) and list(a["tensor"]) == list(b["tensor"])
    for col in ("rel_error", "norm_ratio", "angle"):
        assert np.max(np.abs(a[col].to_numpy() - b[col].to_numpy())) <= 1e-6, col


def test_shared_crossbar_has_no_dbp_misalignment_on_its_own_network():
    net, x, y = _problem(3)
    res = monte_carlo(net, x, y, chip={"crossbar": "shared", "mismatch": 0.2}, runs=5,
                      reference="chip", **MC)
    assert res.summary()["tensors"][ALL_TENSORS]["angle_mean"] < 1e-7
    sep = monte_carlo(net, x, y, chip={"mismatch": 0.2}, runs=5, reference="chip", **MC)
    assert sep.summary()["tensors"][ALL_TENSORS]["angle_mean"] > 1e-3


def test_seeds_and_chunks():
    net, x, y = _problem(4)
    chip = {"mismatch": 0.05, "noise": 1e-3}
    a = monte_carlo(net, x, y, chip=chip, runs=6, seed=1, chunk=6, **MC).table
    b = monte_carlo(net, x, y, chip=chip, runs=6, seed=1, chunk=1, **MC).table
    c = monte_carlo(net, x, y, chip=chip, runs=6, seed=2, chunk=6, **MC).table
    # chips per task change only the rounding of the stacked products
    np.testing.assert_allclose(a["angle"].to_numpy(), b["angle"].to_numpy(), rtol=1e-10)
    assert np.max(np.abs(a["angle"].to_numpy() - c["angle"].to_numpy())) > 1e-3
    d = monte_carlo(net, x, y, chip=chip, runs=6, seed=1, scheduler="threads", workers=2,
                    progress=False).table
    np.testing.assert_allclose(a["angle"].to_numpy(), d["angle"].to_numpy(), rtol=1e-10)


def test_bad_chip_monte_carlo_arguments():
    net, x, y = _problem(5)
    with pytest.raises(dyadsim.DyadsimError, match="chip="):
        monte_carlo(net, x, y, engine="dynamics", **MC)
    with pytest.raises(dyadsim.DyadsimError, match="combine"):
        monte_carlo(net, x, y, chip={"mismatch": 0.1}, nonidealities=[Mismatch(0.1)], **MC)
    with pytest.raises(dyadsim.DyadsimError, match="engine"):
        monte_carlo(net, x, y, chip={}, engine="gpu", **MC)
    with pytest.raises(dyadsim.DyadsimError, match="noise"):
        monte_carlo(net, x, y, chip={"noise": 1e-3}, engine="spice", **MC)
    with pytest.raises(dyadsim.DyadsimError, match="unknown option"):
        monte_carlo(net, x, y, chip={"sigma": 0.1}, **MC)
    with pytest.raises(dyadsim.DyadsimError, match="dict"):
        monte_carlo(net, x, y, chip=dyadsim.Chip.sample(net, seed=0), **MC)
    with pytest.raises(dyadsim.DyadsimError, match="reference"):
        monte_carlo(net, x, y, chip={}, reference="ideal", **MC)


def test_cli_engine_dynamics(capsys):
    from dyadsim.cli import main

    args = ["montecarlo", "--net", "6-5-3", "--runs", "20", "--scheduler", "synchronous",
            "--no-progress"]
    assert main(args + ["--engine", "dynamics", "--mismatch", "0.05", "--crossbar", "shared",
                        "--adc-bits", "8", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["runs"] == 20 and out["failed"] == 0
    assert out["info"]["engine_kind"] == "dynamics" and out["info"]["chip"]["crossbar"] == "shared"
    assert out["tensors"][ALL_TENSORS]["angle_mean"] > 0
    assert main(args + ["--offset", "0.01"]) == 2
    assert "add --chip" in capsys.readouterr().err
    assert main(args + ["--engine", "dynamics", "--wire", "1"]) == 2
    assert "circuit-only" in capsys.readouterr().err
    assert main(args + ["--engine", "dynamics", "--bits", "0"]) == 2
    assert "bits" in capsys.readouterr().err
