"""The core CLI: `dyadsim grad` and `dyadsim compare` against the library's own results."""

import json

import numpy as np
import pytest

import dyadsim
from dyadsim.cli import main
from dyadsim.cli._main import random_batch


def _run(capsys, argv):
    rc = main(argv)
    out = capsys.readouterr()
    return rc, out.out, out.err


@pytest.mark.parametrize("method", ["backprop", "euler", "ode"])
def test_grad_json_equals_backprop_of_the_same_network(capsys, method):
    rc, out, _ = _run(capsys, ["grad", "--net", "5-4-3", "--loss", "xent", "--method", method,
                               "--seed", "3", "--batch", "4", "--json"])
    assert rc == 0
    res = json.loads(out)
    net = dyadsim.mlp("5-4-3", loss="xent", seed=3)
    x, y = random_batch(net, 4, 3)
    ref = dyadsim.backprop(net, x, y)
    got = np.concatenate([np.ravel(v) for v in res["gradients"].values()])
    want = np.concatenate([np.ravel(v) for v in ref.values()])
    assert np.linalg.norm(got - want) <= 1e-6 * np.linalg.norm(want)
    assert res["loss"] == pytest.approx(ref.loss, rel=1e-9)
    if method == "euler":
        assert res["info"]["steps"] == 2 * net.depth


def test_grad_eta_and_saved_network(capsys, tmp_path):
    net = dyadsim.random_dag(n_hidden=2, n_in=3, n_out=2, seed=4)
    path = net.save(tmp_path / "dag.npz")
    rc, out, _ = _run(capsys, ["grad", "--net", str(path), "--method", "euler", "--eta", "0.5", "--json"])
    assert rc == 0
    res = json.loads(out)
    assert res["info"]["steps"] > 2 * net.depth  # eta < 1 needs more than 2L steps


def test_compare_table_and_json(capsys):
    rc, out, _ = _run(capsys, ["compare", "--net", "4-3-2", "--methods", "backprop,euler,ode", "--json"])
    assert rc == 0
    res = json.loads(out)
    assert [c["method"] for c in res["comparisons"]] == ["euler", "ode"]
    assert all(c["max_rel_error"] <= 1e-6 for c in res["comparisons"])
    rc, out, _ = _run(capsys, ["compare", "--net", "4-3-2", "--methods", "backprop,euler"])
    assert rc == 0 and "euler vs backprop" in out and "(all parameters)" in out


@pytest.mark.parametrize("argv, text", [
    (["grad", "--net", "4-3-2", "--activation", "swish"], "valid activations"),
    (["grad", "--net", "4-3-2", "--loss", "hinge"], "valid losses"),
    (["grad", "--net", "4-3-2", "--method", "euler", "--eta", "2.5"], "eta must be in (0, 2)"),
    (["grad", "--net", "4-x-2"], "cannot read layer sizes"),
])
def test_bad_input_is_one_clear_line(capsys, argv, text):
    rc, out, err = _run(capsys, argv)
    assert rc == 2
    assert text in err and "Traceback" not in err


@pytest.mark.parametrize("cmd", ["grad", "compare", "netlist", "simulate", "train", "experiment",
                                 "montecarlo", "import-torch"])
def test_every_command_has_help(capsys, cmd):
    rc, out, _ = _run(capsys, [cmd, "--help"])
    assert rc == 0 and "Usage" in out
