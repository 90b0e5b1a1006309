"""The ngspice side of the command line: ``dyadsim netlist``, ``dyadsim simulate`` and
``dyadsim compare --methods ...,spice`` (through :func:`dyadsim.cli.main`)."""

from __future__ import annotations

import json

import pytest

import dyadsim
from dyadsim.cli import main

TOL = 1e-6


def run_json(capsys, argv) -> dict:
    capsys.readouterr()
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


@pytest.fixture
def op_files(tmp_path, capsys):
    p, q = tmp_path / "net.cir", tmp_path / "net.npz"
    rc = main(["netlist", "--net", "4-3-2", "--out", str(p), "--save-network", str(q),
               "--batch", "3", "--seed", "2"])
    assert rc == 0
    out = capsys.readouterr().out
    assert f"wrote {p}" in out and "3 sample(s)" in out
    return p, q


def test_netlist_writes_a_netlist_and_the_network(op_files):
    p, q = op_files
    text = p.read_text()
    assert text.splitlines()[-1] == ".end" and ".op" in text.splitlines()
    net = dyadsim.load(q)
    assert [net.sizes[v] for v in (net.input,) + net.nodes] == [4, 3, 2]
    # the file is exactly what the library compiles for the same network and batch
    from dyadsim.cli._main import random_batch

    x, y = random_batch(net, 3, 2)
    assert dyadsim.compile_netlist(net, x, y).text == text


@pytest.mark.spice
def test_simulate_json_compares_with_backprop(op_files, capsys):
    p, q = op_files
    out = run_json(capsys, ["simulate", str(p), "--net", str(q), "--json"])
    assert out["analysis"] == "op" and out["backend"] == "subprocess"
    cmp = out["comparison"]
    assert cmp["reference"] == "backprop"
    assert cmp["max_rel_error"] <= TOL
    assert {t["name"] for t in cmp["tensors"]} == {"W[input->h1]", "W[h1->output]", "b[h1]",
                                                    "b[output]"}


@pytest.mark.spice
def test_simulate_without_net_reports_nodes(op_files, capsys):
    p, _ = op_files
    out = run_json(capsys, ["simulate", str(p), "--json", "--backend", "shared"])
    assert out["backend"] == "shared" and out["nodes"] > 0 and "comparison" not in out


@pytest.mark.spice
def test_simulate_tran_with_plot(tmp_path, capsys):
    p, q, png = tmp_path / "t.cir", tmp_path / "t.npz", tmp_path / "relax.png"
    assert main(["netlist", "--net", "3-3-2", "--out", str(p), "--save-network", str(q),
                 "--batch", "1", "--analysis", "tran", "--gain", "100", "--tau", "1e-3"]) == 0
    assert any(l.startswith(".tran") for l in p.read_text().splitlines())
    out = run_json(capsys, ["simulate", str(p), "--net", str(q), "--analysis", "tran",
                            "--plot", str(png), "--json"])
    assert out["analysis"] == "tran" and out["points"] > 100
    assert out["t_stop_s"] == pytest.approx((6 * 2 + 30) * 1e-3)
    assert out["comparison"]["max_rel_error"] <= TOL
    assert 10 < out["t_settle_tau"] < 42
    assert out["plot"] == str(png) and png.stat().st_size > 10_000
    # text output too (analysis read from the netlist's card)
    capsys.readouterr()
    assert main(["simulate", str(p), "--net", str(q)]) == 0
    text = capsys.readouterr().out
    assert "spice[tran] vs backprop" in text and "t_settle_tau" in text


@pytest.mark.spice
def test_compare_all_methods(capsys):
    out = run_json(capsys, ["compare", "--net", "4-3-2", "--methods", "backprop,euler,ode,spice",
                            "--batch", "2", "--json"])
    assert out["reference"] == "backprop"
    by = {c["method"]: c for c in out["comparisons"]}
    assert set(by) == {"euler", "ode", "spice"}
    for m in by.values():
        assert m["max_rel_error"] <= TOL, m["method"]
    assert by["spice"]["info"]["analysis"] == "op" and by["spice"]["info"]["elements"] > 0


@pytest.mark.parametrize("cmd", [[], ["netlist"], ["simulate"], ["compare"]])
def test_help(cmd, capsys):
    assert main(cmd + ["--help"]) == 0
    out = capsys.readouterr().out
    assert "Usage:" in out
    if cmd == ["netlist"]:
        assert "--save-network" in out and "--analysis" in out and "--gain" in out
    if cmd == ["simulate"]:
        assert "--net" in out and "--plot" in out and "--backend" in out


def test_unknown_method_is_a_clear_error(capsys):
    rc = main(["compare", "--net", "4-3-2", "--methods", "backprop,spcie"])
    assert rc != 0
    err = capsys.readouterr().err
    assert "spcie" in err and "backprop, euler, ode, spice" in err


def test_plot_needs_net_and_tran(op_files, tmp_path, capsys):
    p, q = op_files
    assert main(["simulate", str(p), "--plot", str(tmp_path / "x.png")]) != 0
    assert "--plot needs --net" in capsys.readouterr().err
    assert main(["simulate", str(p), "--net", str(q), "--plot", str(tmp_path / "x.png")]) != 0
    assert "--plot needs a transient" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()


def test_bad_arguments_exit_nonzero(tmp_path, capsys):
    assert main(["netlist", "--net", "4-3-2", "--out", str(tmp_path / "a.cir"),
                 "--analysis", "ac"]) != 0
    assert "ac" in capsys.readouterr().err
    assert main(["netlist", "--net", "4-3-2", "--out", str(tmp_path / "a.cir"),
                 "--gain", "0"]) != 0
    assert "gain must be a positive" in capsys.readouterr().err
    assert not (tmp_path / "a.cir").exists()
    assert main(["simulate", str(tmp_path / "missing.cir")]) != 0


@pytest.mark.spice
def test_simulate_broken_netlist_is_one_clear_line(tmp_path, capsys):
    p = tmp_path / "bad.cir"
    p.write_text("broken\nR1 a 0 1k\nBx a 0 I=nosuchfn(v(a))\n.op\n.end\n")
    rc = main(["simulate", str(p)])
    assert rc == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "nosuchfn" in err and "Traceback" not in err
