"""Hostile input: netlists that try to run commands or read files, crafted network files.

Every netlist attack here was first seen to work on ngspice 39.3 (batch mode and the shared
library) without the check: the tests that pass ``allow_control=True`` show the canary file
appearing, so a refusal is a real refusal and not an attack that never worked.
"""

from __future__ import annotations

import json
import os
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest

import dyadsim
from dyadsim.cli import main
from dyadsim.errors import DyadsimError
from dyadsim.simulator import UnsafeNetlistError, check_netlist, simulate

BACKENDS = ["shared", "subprocess"]
BODY = "V1 1 0 DC 3\nR1 1 2 1k\nR2 2 0 2k\n"


def deck(*lines, title="attack"):
    return "\n".join([title, BODY.rstrip("\n"), *lines, ".op", ".end"]) + "\n"


def attacks(canary: Path, secret: Path) -> dict:
    """name -> (netlist text, line number the refusal must name)."""
    sh = f"shell touch {canary}"
    return {
        "control": (deck(".control", sh, ".endc"), 5),
        "control-indented": (deck("   .control", sh, ".endc"), 5),
        "control-prefix-case": (deck(".CONTROLX", sh, ".endc"), 5),
        "star-hash": (deck(f"*# {sh}"), 5),
        "ng-script": (f"*ng_script\n{sh}\n", 1),
        "endc-only": (deck(".endc"), 5),
        "shell-line": (deck(sh), 5),
        "cr-separated": (deck().replace(".op", f".control\r{sh}\r.endc\r.op"), 5),
        "fs-separated": (deck().replace(".op", f"*# {sh}\x1c.op"), 5),
        "u2028-separated": (deck().replace(".op", f"*# {sh}\u2028.op"), 5),
        "include-absolute": (deck(f".include {secret}"), 5),
        "include-prefix": (deck(f".incxyz {secret}"), 5),
        "include-quoted": (deck(f'.include "{secret}"'), 5),
        "include-first-line": (f".include {secret}\n{BODY}.op\n.end\n", 1),
        "lib-absolute": (deck(f".lib {secret} sec"), 5),
        "include-home": (deck(".include ~/.bashrc"), 5),
        "include-variable": (deck(".include $HOME/x"), 5),
        "filesource": (deck("a1 %v([n9]) src",
                            f'.model src filesource (file="{secret}" amploffset=[0] amplscale=[1])',
                            "R9 n9 0 1k"), 6),
        "filesource-continued": (deck("a1 %v([n9]) src", ".model src filesource",
                                      f'+ (file="{secret}")', "R9 n9 0 1k"), 6),
        "d-source": (deck(".model d1 d_source (input_file = \"x.txt\")"), 5),
        "unknown-card": (deck(".exec", sh, ".endc"), 5),
        "nul-byte": (deck("* \x00"), 5),
    }


@pytest.fixture
def files(tmp_path):
    canary = tmp_path / "outside" / "pwned"
    canary.parent.mkdir()
    secret = tmp_path / "outside" / "secret.cir"
    secret.write_text(f"R8 1 0 1k\n*# shell touch {canary}\n")
    return canary, secret


def test_every_attack_is_refused_naming_its_line(files, tmp_path):
    canary, secret = files
    folder = tmp_path / "netlists"  # the secret lies outside it
    folder.mkdir()
    for name, (text, line) in attacks(canary, secret).items():
        with pytest.raises(UnsafeNetlistError) as info:
            check_netlist(text, folder)
        err = info.value
        assert isinstance(err, DyadsimError), name
        assert err.line_number == line, (name, str(err))
        assert f"line {line}" in str(err), name
        assert name == "nul-byte" or "allow_control=True" in str(err), name  # NUL: never


@pytest.mark.spice
@pytest.mark.parametrize("backend", BACKENDS)
def test_attacks_do_not_run_on_either_backend(backend, files, tmp_path):
    canary, secret = files
    folder = tmp_path / "netlists"
    folder.mkdir()
    for name, (text, line) in attacks(canary, secret).items():
        src = folder / f"{name}.cir"
        src.write_text(text, encoding="utf-8")
        for netlist in (text, src):
            with pytest.raises(UnsafeNetlistError, match=f"line {line}"):
                simulate(netlist, backend=backend, workdir=tmp_path / "runs")
        assert not canary.exists(), name


@pytest.mark.spice
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", ["control", "star-hash", "include-absolute"])
def test_allow_control_runs_them(backend, name, files, tmp_path):
    # the opt-in works, and proves that the refused netlists were real attacks
    canary, secret = files
    text, _ = attacks(canary, secret)[name]
    op = simulate(text, backend=backend, allow_control=True, analysis="op")
    assert canary.exists()
    assert op.v("2") == pytest.approx(2.0)


@pytest.mark.spice
@pytest.mark.parametrize("backend", BACKENDS)
def test_includes_inside_the_folder_work_and_are_checked(backend, files, tmp_path):
    canary, _ = files
    folder = tmp_path / "project"
    (folder / "models").mkdir(parents=True)
    (folder / "models" / "r2.inc").write_text("R2 2 0 2k\n")
    (folder / "models" / "nested.inc").write_text(".include r2.inc\n")  # relative to its own folder
    src = folder / "top.cir"
    src.write_text("divider with an include\nV1 1 0 DC 3\nR1 1 2 1k\n.include models/nested.inc\n.op\n.end\n")
    assert simulate(src, backend=backend).v("2") == pytest.approx(2.0)
    # an included file is checked like the netlist itself
    (folder / "models" / "r2.inc").write_text(f"R2 2 0 2k\n.control\nshell touch {canary}\n.endc\n")
    with pytest.raises(UnsafeNetlistError, match=r"r2\.inc, line 2") as info:
        simulate(src, backend=backend)
    assert info.value.file.endswith("r2.inc") and not canary.exists()
    # a link inside the folder that points outside is outside
    (folder / "models" / "r2.inc").write_text("R2 2 0 2k\n")
    (folder / "link.inc").symlink_to(files[1])
    src.write_text(src.read_text().replace("models/nested.inc", "link.inc"))
    with pytest.raises(UnsafeNetlistError, match="outside the netlist's folder"):
        simulate(src, backend=backend)
    # climbing out, and a file that includes itself
    src.write_text(src.read_text().replace("link.inc", "../outside/secret.cir"))
    with pytest.raises(UnsafeNetlistError, match="outside"):
        simulate(src, backend=backend)
    (folder / "loop.inc").write_text(".include loop.inc\n")
    src.write_text(src.read_text().replace("../outside/secret.cir", "loop.inc"))
    with pytest.raises(UnsafeNetlistError, match="includes itself"):
        simulate(src, backend=backend)
    assert not canary.exists()


def test_netlist_text_may_not_include_files(tmp_path):
    (tmp_path / "r.inc").write_text("R2 2 0 2k\n")
    with pytest.raises(UnsafeNetlistError, match="no folder"):
        check_netlist(deck(f".include {tmp_path / 'r.inc'}"))
    assert check_netlist(deck(".lib mos")) == deck(".lib mos")  # a library section marker


@pytest.mark.spice
def test_dyadsims_own_netlists_pass_unchanged(tmp_path):
    net = dyadsim.mlp("3-4-4-2", activation="sigmoid", loss="xent", seed=0)
    rng = np.random.default_rng(0)
    x, y = rng.random((2, 3)), np.eye(2)[[0, 1]]
    from dyadsim.circuits import compile_device_netlist

    texts = [dyadsim.compile_netlist(net, x, y, analysis=a, summing=s).text
             for a in ("op", "tran") for s in ("G", "B")]
    texts.append(compile_device_netlist(dyadsim.mlp("3-4-2", seed=0), x, rng.random((2, 2))).text)
    for text in texts:
        assert check_netlist(text) == text
    # and the analysis-card handling still works on them, with the control commands of
    # the shared backend (bg_run, remcirc, destroy all) around them
    nl = dyadsim.compile_netlist(net, x, y, analysis="tran")
    for backend in BACKENDS:
        assert isinstance(simulate(nl, backend=backend), dyadsim.Transient)


@pytest.mark.spice
def test_cli_simulate_refuses_and_allows(files, tmp_path, capsys):
    canary, secret = files
    src = tmp_path / "attack.cir"
    src.write_text(attacks(canary, secret)["control"][0])
    assert main(["simulate", str(src)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "line 5" in err and "--allow-control" in err
    assert "Traceback" not in err and not canary.exists()
    assert main(["simulate", str(src), "--allow-control"]) == 0
    assert canary.exists()


# ----------------------------------------------------------------------------- network files


def craft(path: Path, desc, arrays=None, compressed=False) -> Path:
    members = {"__graph__": np.array(json.dumps(desc))}
    members.update(arrays or {})
    (np.savez_compressed if compressed else np.savez)(path, **members)
    return path


def conv_desc(padding, out_hw=None, stride=1, op="conv2d"):
    H = 8
    Ho = (H + 2 * padding - 3) // stride + 1 if out_hw is None else out_hw
    attrs = {"op": op, "stride": [stride, stride], "padding": [padding, padding]}
    if op == "avgpool2d":
        attrs["kernel_size"] = [3, 3]
    return {"format": "dyadsim-network", "version": 1, "loss": "mse",
            "nodes": [{"name": "in", "size": 64, "shape": [1, 8, 8], "activation": None, "bias": False},
                      {"name": "out", "size": Ho * Ho, "shape": [1, Ho, Ho], "activation": "tanh",
                       "bias": False}],
            "edges": [[0, 1, attrs]]}


def refused(path, match="not a dyadsim network file", **kwargs):
    """load() must refuse ``path`` with a DyadsimError naming it, allocating almost nothing."""
    tracemalloc.start()
    try:
        with pytest.raises(DyadsimError, match=match) as info:
            dyadsim.load(path, **kwargs)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert str(path) in str(info.value)
    assert peak < 5 * 2**20, peak  # nothing was decompressed or allocated
    return info.value


def test_crafted_conv_padding_is_refused_before_allocating(tmp_path):
    good = craft(tmp_path / "good.npz", conv_desc(1), {"W0": np.ones((1, 1, 3, 3))})
    net = dyadsim.load(good)
    assert net.sizes["out"] == 64
    for padding in (3000, 10**6):
        path = craft(tmp_path / f"pad{padding}.npz", conv_desc(padding), {"W0": np.ones((1, 1, 3, 3))})
        assert path.stat().st_size < 3000
        refused(path, match="neurons")
        path = craft(tmp_path / f"pad{padding}-small.npz", conv_desc(padding, out_hw=8), {"W0": np.ones((1, 1, 3, 3))})
        refused(path, match="padding")
    # within the padding limit but inconsistent with the declared size: refused from the headers
    path = craft(tmp_path / "mismatch.npz", conv_desc(500, out_hw=8), {"W0": np.ones((1, 1, 3, 3))})
    refused(path, match="destination has size 64")
    # a user who really wants a bigger network raises the limit
    path = craft(tmp_path / "big.npz", conv_desc(1), {"W0": np.ones((1, 1, 3, 3))})
    refused(path, match="neurons=100", limits={"neurons": 100})


@pytest.mark.parametrize("op", ["conv2d", "avgpool2d"])
@pytest.mark.parametrize("setting", ["stride", "kernel"])
def test_zero_stride_or_kernel(op, setting, tmp_path):
    desc = conv_desc(0, out_hw=6, op=op)
    weight = np.ones((1, 1, 3, 3))
    if setting == "stride":
        desc["edges"][0][2]["stride"] = [0, 0]
    elif op == "avgpool2d":
        desc["edges"][0][2]["kernel_size"] = [0, 0]
    else:
        weight = np.ones((1, 1, 0, 3))
    arrays = {"W0": weight} if op == "conv2d" else {}
    refused(craft(tmp_path / "zero.npz", desc, arrays))
    # and the same in a graph built in Python (today a ZeroDivisionError)
    import networkx as nx

    G = nx.DiGraph()
    G.add_node("in", size=64, shape=(1, 8, 8))
    G.add_node("out", size=36, shape=(1, 6, 6), activation="tanh")
    attrs = dict(desc["edges"][0][2])
    attrs = {k: tuple(v) if isinstance(v, list) else v for k, v in attrs.items()}
    if op == "conv2d":
        attrs["weight"] = weight
    G.add_edge("in", "out", **attrs)
    with pytest.raises(DyadsimError, match="must be >= 1"):
        dyadsim.Network.from_graph(G)


def test_members_are_checked_before_they_are_read(tmp_path):
    net = dyadsim.mlp("3-4-2", seed=0)
    path = net.save(tmp_path / "net.npz")
    # an unused, highly compressed member: refused from the zip directory alone
    bomb = tmp_path / "bomb.npz"
    bomb.write_bytes(path.read_bytes())
    with zipfile.ZipFile(bomb, "a", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("extra.npy", b"\x93NUMPY" + bytes(30_000_000))
    assert bomb.stat().st_size < 200_000
    refused(bomb, match="unexpected member 'extra.npy'")
    # a weight whose header declares another shape, or a pickled object
    for bad, match in ((np.zeros((5, 3)), r"shape \(5, 3\)"), (np.zeros((4, 3), dtype=complex), "dtype"),
                       (np.zeros((4, 3), dtype="<U3"), "dtype")):
        desc = json.loads(str(np.load(path)["__graph__"]))
        arrays = {k: np.load(path)[k] for k in np.load(path).files if k != "__graph__"}
        arrays["W0"] = bad
        refused(craft(tmp_path / "bad.npz", desc, arrays), match=match)
    desc = json.loads(str(np.load(path)["__graph__"]))
    arrays = {k: np.load(path)[k] for k in np.load(path).files if k != "__graph__"}
    np.savez(tmp_path / "pickle.npz", __graph__=np.array(json.dumps(desc)),
             **{**arrays, "W0": np.array([{"a": 1}], dtype=object)})
    refused(tmp_path / "pickle.npz", match="dtype")
    # a missing member
    del arrays["b1"]
    refused(craft(tmp_path / "missing.npz", desc, arrays), match="'b1.npy' is missing")
    # a compressed weight that expands far beyond its stored size (a zip bomb of the right shape)
    big = dyadsim.mlp("1500-1500-1", seed=0).to_graph()
    big.edges["input", "h1"]["weight"][:] = 0.0  # node names: input, h1, output
    bombed = tmp_path / "zeros.npz"
    desc = json.loads(str(np.load(dyadsim.Network.from_graph(big).save(tmp_path / "z.npz"))["__graph__"]))
    craft(bombed, desc, {"W0": np.zeros((1500, 1500)), "W1": np.zeros((1, 1500)), "b1": np.zeros(1500),
                         "b2": np.zeros(1)}, compressed=True)
    assert bombed.stat().st_size < 100_000
    refused(bombed, match="compression_ratio")
    assert dyadsim.load(bombed, limits={"compression_ratio": 10**6}).n == 1501


@pytest.mark.parametrize("mutate, match", [
    (lambda d: d.update(version=2), "newer dyadsim"),
    (lambda d: d.update(format="something"), "format"),
    (lambda d: d.update(extra=1), "unexpected"),
    (lambda d: d["nodes"][1].update(name=d["nodes"][0]["name"]), "duplicate layer name"),
    (lambda d: d["nodes"][1].update(size=True), "size"),
    (lambda d: d["nodes"][1].update(size=-4), "size"),
    (lambda d: d["nodes"][1].update(size=10**30), "size"),
    (lambda d: d["nodes"][1].update(name="x" * 5000), "name of 5000 characters"),
    (lambda d: d["nodes"][1].update(activation=["tanh"]), "activation"),
    (lambda d: d["edges"][0].__setitem__(1, 99), "out of range"),
    (lambda d: d["edges"].append(list(d["edges"][0])), "duplicate edge"),
    (lambda d: d["edges"][0].__setitem__(2, {"op": "conv2d"}), "conv2d needs a"),
    (lambda d: d["edges"][0].__setitem__(2, {"op": "gemm"}), "unknown op"),
    (lambda d: d.update(nodes={}), "lists"),
])
def test_malformed_descriptions(mutate, match, tmp_path):
    net = dyadsim.mlp("3-4-2", seed=0)
    path = net.save(tmp_path / "net.npz")
    with np.load(path) as data:
        desc = json.loads(str(data["__graph__"]))
        arrays = {k: data[k] for k in data.files if k != "__graph__"}
    mutate(desc)
    refused(craft(tmp_path / "bad.npz", desc, arrays), match=match)


def test_broken_files_name_the_file(tmp_path):
    net = dyadsim.mlp("3-4-2", seed=0)
    good = net.save(tmp_path / "net.npz").read_bytes()
    cases = {
        "empty.npz": b"",
        "truncated.npz": good[: len(good) // 2],
        "tail-cut.npz": good[:-10],
        "random.npz": bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8)),
        "text.npz": b"dyadsim: a netlist\nR1 1 0 1k\n.end\n",
        "png.npz": b"\x89PNG\r\n\x1a\n" + bytes(100),
    }
    flipped = bytearray(good)
    flipped[len(good) // 3] ^= 0xFF  # inside the weight data: the CRC check catches it
    cases["bitflip.npz"] = bytes(flipped)
    for name, data in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        refused(path)
    refused(tmp_path, match="not a regular file")
    with pytest.raises(DyadsimError, match="not found"):
        dyadsim.load(tmp_path / "nothing.npz")
    renamed = tmp_path / "renamed.npz"
    with zipfile.ZipFile(tmp_path / "net.npz") as src, zipfile.ZipFile(renamed, "w") as dst:
        for info in src.infolist():
            dst.writestr(info.filename.replace("W0", "X0"), src.read(info))
    refused(renamed, match="unexpected member 'X0.npy'")


def test_limits_are_validated():
    with pytest.raises(DyadsimError, match="unknown load limit"):
        dyadsim.load("x.npz", limits={"bytes": 1})
    with pytest.raises(DyadsimError, match="positive int"):
        dyadsim.load("x.npz", limits={"neurons": 0})
    assert set(dyadsim.network.LOAD_LIMITS) >= {"neurons", "params", "padding", "connections"}


def test_cli_reports_a_crafted_file_in_one_line(tmp_path, capsys):
    path = craft(tmp_path / "pad.npz", conv_desc(3000), {"W0": np.ones((1, 1, 3, 3))})
    assert main(["grad", "--net", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(path) in err and "Traceback" not in err
    empty = tmp_path / "empty.npz"
    empty.write_bytes(b"")
    assert main(["grad", "--net", str(empty)]) == 2
    assert "empty" in capsys.readouterr().err


# ----------------------------------------------------------------------------- the command line
def test_cli_errors_are_one_line_exit_2(tmp_path, capsys, monkeypatch):
    (tmp_path / "file").write_text("x")
    out = tmp_path / "file" / "net.cir"  # a path under a file
    assert main(["netlist", "--net", "3-4-2", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is a file, not a folder" in err
    assert main(["netlist", "--net", "3-4-2", "--out", str(tmp_path / "ok.cir"),
                 "--save-network", str(out)]) == 2
    assert "--save-network" in capsys.readouterr().err and not (tmp_path / "ok.cir").exists()
    latin1 = tmp_path / "latin1.cir"
    latin1.write_bytes(b"r\xe9sistance\nR1 1 0 1k\nV1 1 0 1\n.op\n.end\n")
    assert main(["simulate", str(latin1)]) == 2
    assert "not UTF-8" in capsys.readouterr().err
    assert main(["import-torch", str(latin1), "--input-shape", "", "--out", str(tmp_path / "m.npz")]) == 2
    assert "--input-shape" in capsys.readouterr().err

    import dyadsim.cli._main as cli_main

    def raiser(exc):
        def build(*args, **kwargs):
            raise exc
        return build

    for exc, status, said in ((PermissionError(13, "Permission denied", "/data/x.npz"), 2,
                               "error: Permission denied: /data/x.npz"),
                              (KeyboardInterrupt(), 130, "interrupted"),
                              (MemoryError(), 2, "out of memory")):
        monkeypatch.setattr(cli_main, "build_network", raiser(exc))
        assert main(["grad", "--net", "3-4-2"]) == status
        err = capsys.readouterr().err
        assert said in err and "Traceback" not in err and err.strip().count("\n") == 0, err


@pytest.mark.spice
def test_cli_plot_misuse_is_reported_before_simulating(tmp_path, capsys, monkeypatch):
    src = tmp_path / "d.cir"
    src.write_text(deck())
    import dyadsim.simulator as simulator_pkg

    def never(*args, **kwargs):  # pragma: no cover - must not be reached
        raise AssertionError("simulated before checking --plot")

    monkeypatch.setattr(simulator_pkg, "simulate", never)
    assert main(["simulate", str(src), "--plot", str(tmp_path / "p.png")]) == 2
    assert "--plot needs --net" in capsys.readouterr().err
    net = dyadsim.mlp("3-4-2").save(tmp_path / "n.npz")
    assert main(["simulate", str(src), "--net", str(net), "--plot", str(tmp_path / "p.png")]) == 2
    assert "--plot needs a transient" in capsys.readouterr().err
