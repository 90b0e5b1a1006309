"""Property-based fuzzing of everything a user hands to dyadsim.

Network graphs, saved network files, netlist text and command lines, drawn at random with
garbage mixed in.  The only assertion is the contract: a result, or a
:class:`~dyadsim.errors.DyadsimException` subclass with a message; never another exception,
a hang, or a non-finite number reported as success.  For netlists the oracle is ngspice
itself: an accepted netlist must not have run the command it carries.

With the ``ci`` Hypothesis profile (25 examples per test) the whole file takes about
half a minute.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import tempfile
import zipfile
from pathlib import Path

import networkx as nx
import numpy as np
import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

import dyadsim
from dyadsim.cli import main
from dyadsim.errors import DyadsimException
from dyadsim.simulator import UnsafeNetlistError, check_netlist, simulate


def contract(call):
    """Run ``call``: its result, or None after a DyadsimException with a message."""
    try:
        result = call()
    except DyadsimException as exc:
        assert str(exc).strip(), f"{type(exc).__name__} without a message"
        event(f"refused: {type(exc).__name__}")
        return None
    event("accepted")
    return result


# ----------------------------------------------------------------------------- graphs

GARBAGE = st.one_of(st.none(), st.booleans(), st.text(max_size=4), st.floats(allow_nan=True),
                    st.integers(-3, 3), st.just([1, 2]), st.just({"a": 1}))
SIZES = st.one_of(st.integers(1, 5), GARBAGE, st.just(0), st.just(-1), st.just(2.0), st.just(2.5))
ACTS = st.one_of(st.sampled_from(sorted(dyadsim.ACTIVATIONS)), GARBAGE)


def _array(draw, shape, ok=False):
    kinds = ["ok"] if ok else ["ok", "nan", "inf", "complex", "object", "text"]
    kind = draw(st.sampled_from(kinds))
    a = np.random.default_rng(draw(st.integers(0, 2**16))).uniform(-3, 3, shape)
    if kind == "nan" and a.size:
        a.flat[0] = np.nan
    elif kind == "inf" and a.size:
        a.flat[-1] = -np.inf
    elif kind == "complex":
        return a + 1j
    elif kind == "object":
        return np.array([object()] * max(a.size, 1), dtype=object)
    elif kind == "text":
        return "weights"
    return a


CORRUPTIONS = ["size", "activation", "bias", "shape", "weight-shape", "weight-value", "cycle",
               "second-input", "op", "window", "loss", "name"]


@st.composite
def graphs(draw):
    """A valid random layer DAG (chain plus skip edges, sometimes a conv/pool front end),
    then up to two corruptions drawn from :data:`CORRUPTIONS`."""
    n_hidden = draw(st.integers(0, 3))
    conv = draw(st.integers(0, 3)) == 0
    names = ["in"] + [f"h{i}" for i in range(n_hidden)] + ["out"]
    sizes = {v: draw(st.integers(1, 4)) for v in names}
    G = nx.DiGraph()
    if conv:  # in (1, 4, 4) -conv 2x2-> h0 (2, 3, 3) -pool-> ... (dense from there)
        names = ["in", "c", "p"] + names[1:]
        sizes.update({"in": 16, "c": 18, "p": 2})
        G.add_node("in", size=16, shape=(1, 4, 4))
        G.add_node("c", size=18, shape=(2, 3, 3), activation="relu", bias=np.zeros(2))
        G.add_node("p", size=2, shape=(2, 1, 1), activation="identity", bias=False)
        G.add_edge("in", "c", op="conv2d", weight=_array(draw, (2, 1, 2, 2), ok=True))
        G.add_edge("c", "p", op="avgpool2d", kernel_size=3)
    else:
        G.add_node("in", size=sizes["in"])
    first = 3 if conv else 1
    for v in names[first:]:
        G.add_node(v, size=sizes[v], activation=draw(st.sampled_from(sorted(dyadsim.ACTIVATIONS))),
                   bias=_array(draw, (sizes[v],), ok=True) if draw(st.booleans()) else None)
    chain = names[first - 1:]
    for i in range(1, len(chain)):
        for j in range(i):
            if j == i - 1 or draw(st.integers(0, 2)) == 0:
                src, dst = chain[j], chain[i]
                G.add_edge(src, dst, weight=_array(draw, (sizes[dst], sizes[src]), ok=True))
    loss = draw(st.sampled_from(sorted(dyadsim.LOSSES)))
    for what in draw(st.lists(st.sampled_from(CORRUPTIONS), max_size=2)):
        v = draw(st.sampled_from(sorted(G.nodes, key=repr)))
        edge = draw(st.sampled_from(sorted(G.edges, key=repr)))
        if what == "size":
            G.nodes[v]["size"] = draw(SIZES)
        elif what == "activation":
            G.nodes[v]["activation"] = draw(ACTS)
        elif what == "bias":
            G.nodes[v]["bias"] = draw(st.one_of(GARBAGE, st.builds(lambda k: np.zeros(k), st.integers(0, 6))))
        elif what == "shape":
            G.nodes[v]["shape"] = draw(st.one_of(GARBAGE, st.just((1, 2, 2)), st.just((0, 3))))
        elif what == "weight-shape":
            G.edges[edge]["weight"] = np.zeros(draw(st.sampled_from([(1,), (2, 2), (5, 1), (1, 1, 2, 2)])))
        elif what == "weight-value":
            G.edges[edge]["weight"] = _array(draw, np.shape(G.edges[edge].get("weight", 0)))
        elif what == "cycle":
            G.add_edge(edge[1], edge[0], weight=np.zeros((sizes.get(edge[0], 1), sizes.get(edge[1], 1))))
        elif what == "second-input":
            G.add_node("in2", size=2)
            G.add_edge("in2", v, weight=np.zeros((sizes.get(v, 1), 2)))
        elif what == "op":
            G.edges[edge]["op"] = draw(st.sampled_from(["conv2d", "avgpool2d", "gemm", None, 3]))
        elif what == "window" and conv:
            key = draw(st.sampled_from(["stride", "padding", "kernel_size"]))
            G.edges["c", "p"][key] = draw(st.one_of(st.integers(-1, 3), GARBAGE, st.just((1, 0)),
                                                    st.just(10**6)))
        elif what == "loss":
            loss = draw(GARBAGE)
        elif what == "name":
            new = draw(st.sampled_from([True, 2.5, ("t",), b"x", frozenset(), "in", 0, "", "a b\n.end"]))
            G = nx.relabel_nodes(G, {v: new})
    return G, loss


@given(case=graphs(), seed=st.integers(0, 100))
def test_fuzz_network_graphs(case, seed):
    G, loss = case
    net = contract(lambda: dyadsim.Network.from_graph(G, loss=loss))
    if net is None:
        return
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, (2, net.n_in))
    y = rng.uniform(-1, 1, (2, net.n_out))
    out = net.predict(x)
    assert np.all(np.isfinite(out))  # |W| <= 3, |x| <= 1, a few layers: finite
    grads = contract(lambda: dyadsim.backprop(net, x, y))
    if grads is not None:
        assert all(np.all(np.isfinite(g)) for g in grads.values())
    path = Path(tempfile.mkdtemp()) / "net.npz"
    again = dyadsim.load(net.save(path))  # whatever from_graph accepts round-trips
    np.testing.assert_array_equal(again.predict(x), out)


# ----------------------------------------------------------------------------- saved files


def _valid_files():
    nets = [dyadsim.mlp("3-4-2", seed=0), dyadsim.random_dag(n_hidden=2, sizes=(2, 3), n_in=2, n_out=2, seed=1)]
    G = nx.DiGraph()
    G.add_node("in", size=16, shape=(1, 4, 4))
    G.add_node("c", size=18, shape=(2, 3, 3), activation="relu", bias=np.zeros(2))
    G.add_node("p", size=2, shape=(2, 1, 1), activation="identity", bias=False)
    G.add_edge("in", "c", op="conv2d", weight=np.ones((2, 1, 2, 2)) * 0.1)
    G.add_edge("c", "p", op="avgpool2d", kernel_size=3)
    nets.append(dyadsim.Network.from_graph(G))
    folder = Path(tempfile.mkdtemp())
    return [net.save(folder / f"n{i}.npz").read_bytes() for i, net in enumerate(nets)]


VALID_FILES = _valid_files()


def _load_bytes(data: bytes, name="f.npz"):
    path = Path(tempfile.mkdtemp()) / name
    path.write_bytes(data)
    net = contract(lambda: dyadsim.load(path))
    if net is not None:
        assert all(np.all(np.isfinite(p)) for p in net.params.values())
    return net


@given(st.binary(max_size=2000))
@example(b"")
@example(b"PK\x05\x06" + bytes(18))  # an empty zip archive
def test_fuzz_random_bytes(data):
    assert _load_bytes(data) is None


@given(which=st.integers(0, len(VALID_FILES) - 1),
       edits=st.lists(st.tuples(st.sampled_from(["flip", "cut", "insert", "zero"]),
                                st.floats(0, 1), st.integers(0, 255)), min_size=1, max_size=4))
def test_fuzz_mutated_files(which, edits):
    data = bytearray(VALID_FILES[which])
    for op, where, value in edits:
        pos = min(int(where * len(data)), max(len(data) - 1, 0))
        if op == "flip" and data:
            data[pos] ^= value or 1
        elif op == "cut":
            del data[pos:]
        elif op == "insert":
            data[pos:pos] = bytes([value]) * 3
        elif data:
            data[pos:pos + 8] = bytes(len(data[pos:pos + 8]))
    _load_bytes(bytes(data))


JSON_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-10**20, 10**20), st.floats(), st.text(max_size=5)),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)),
    max_leaves=6)


@given(which=st.integers(0, len(VALID_FILES) - 1), path=st.lists(st.integers(0, 5), min_size=0, max_size=3),
       key=st.sampled_from(["name", "size", "shape", "activation", "bias", "op", "stride", "padding",
                            "kernel_size", "format", "version", "loss", "nodes", "edges", 0, 1, 2]),
       value=JSON_VALUES)
def test_fuzz_mutated_descriptions(which, path, key, value):
    src = Path(tempfile.mkdtemp()) / "src.npz"
    src.write_bytes(VALID_FILES[which])
    with np.load(src) as data:
        desc = json.loads(str(data["__graph__"]))
        arrays = {k: data[k] for k in data.files if k != "__graph__"}
    node = desc
    for step in path:  # walk somewhere into the description, then overwrite one entry
        children = list(node.values()) if isinstance(node, dict) else node if isinstance(node, list) else []
        children = [c for c in children if isinstance(c, (dict, list))]
        if not children:
            break
        node = children[step % len(children)]
    if isinstance(node, dict) and isinstance(key, str):
        node[key] = value
    elif isinstance(node, list) and isinstance(key, int) and node:
        node[key % len(node)] = value
    out = Path(tempfile.mkdtemp()) / "mutated.npz"
    try:
        text = json.dumps(desc)
    except ValueError:  # pragma: no cover - json refuses nothing hypothesis draws here
        return
    np.savez(out, __graph__=np.array(text), **arrays)
    _load_bytes(out.read_bytes())


# ----------------------------------------------------------------------------- netlist text

WORDS = [".control", ".CONTROL", ".controlx", ".endc", "*#", "*ng_script", "shell", ".include",
         ".inc", ".incx", ".lib", ".exec", ".model", ".options", ".option", ".param", ".op", ".save",
         ".tran 1u 10u", "*", "+", "R5", "V5", "a5", ".func", ".ic", ".nodeset", "", ".end"]
SEPARATORS = ["\n", "\n", "\n", "\r\n", "\r", "\x1c", "\u2028", "\x0c", "\x0b"]
PADDING = ["", "", " ", "\t", "  ", "\xa0"]


@st.composite
def netlist_texts(draw, canary):
    lines = ["fuzzed netlist", "V1 1 0 DC 3", "R1 1 2 1k", "R2 2 0 2k"]
    for _ in range(draw(st.integers(0, 6))):
        word = draw(st.sampled_from(WORDS))
        if draw(st.booleans()):
            word = word.upper() if draw(st.booleans()) else word.capitalize()
        tail = draw(st.sampled_from([
            "", f" touch {canary}", f"shell touch {canary}", f" {canary.parent / 'x.cir'}",
            " filesource (file=\"/etc/hostname\")", " mod d_source(input_file=\"x\")",
            " r=1", " 1 0 1k", f" \"{canary}\"", " ~/.spiceinit", " interp"]))
        lines.append(draw(st.sampled_from(PADDING)) + word + tail)
    lines += [".op", ".end"]
    seps = [draw(st.sampled_from(SEPARATORS)) for _ in lines]
    return "".join(line + sep for line, sep in zip(lines, seps))


def _dangerous(text: str) -> bool:
    """An independent reading of what must not reach ngspice (per split line)."""
    for line in text.splitlines():
        s = line.strip().lower()
        if s.startswith(("*#", "*ng_script", ".control", ".endc", ".exec", ".inc")) or s.split()[:1] == ["shell"]:
            return True
        if s.startswith(".lib") and len(s.split()) > 2:
            return True
        if "file" in s and s.startswith(".model"):
            return True
    return False


_CANARY = Path(tempfile.mkdtemp()) / "fuzz-canary"


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(netlist_texts(_CANARY))
def test_fuzz_netlist_text_safety_check(text):
    checked = contract(lambda: check_netlist(text))
    if checked is None:
        return
    assert not _dangerous(checked), text


@pytest.mark.spice
@settings(max_examples=15, suppress_health_check=[HealthCheck.too_slow])
@given(netlist_texts(_CANARY))
def test_fuzz_netlists_through_ngspice(text):
    # the oracle is ngspice: whatever the check lets through must not run the command
    _CANARY.unlink(missing_ok=True)
    try:
        simulate(text, backend="subprocess", timeout=20, analysis="op")
        event("ran")
    except UnsafeNetlistError:
        event("refused")
    except DyadsimException as exc:  # ngspice rejected the rest: fine
        assert str(exc)
        event(f"ngspice failed: {type(exc).__name__}")
    assert not _CANARY.exists(), text


# ----------------------------------------------------------------------------- command line

NETS = ["3-4-2"] * 4 + ["2-3"] * 2 + ["2-2x2-2", "x", "", "3--2", "0-2", "3-4-2.npz", "-", "2-" + "9" * 30]


def _mostly(valid, bad):
    """Valid values three times as often as bad ones."""
    return st.one_of(st.sampled_from(valid), st.sampled_from(valid), st.sampled_from(valid), st.sampled_from(bad))


OPTION_VALUES = {
    "--activation": _mostly(["tanh", "relu", "sigmoid", "identity", "softplus"], ["gelu", "", "TANH"]),
    "--output-activation": _mostly(["identity", "tanh"], ["nope"]),
    "--loss": _mostly(["mse", "xent"], ["hinge", ""]),
    "--seed": _mostly(["0", "1", "7"], ["x", "1.5", "", "-1", "99999999999999999999999"]),
    "--batch": _mostly(["1", "3"], ["0", "-1", "x", ""]),
    "--eta": _mostly(["1", "0.5", "1.9"], ["0", "2", "-1", "nan", "inf", "x"]),
    "--method": _mostly(["backprop", "euler", "ode"], ["nope"]),
    "--schedule": _mostly(["parallel", "wavefront"], ["nope"]),
    "--methods": _mostly(["backprop,euler", "backprop,ode", "euler,backprop"], ["", ",", "nope"]),
    "--analysis": _mostly(["op", "tran"], ["ac"]),
    "--gain": _mostly(["1", "0.5"], ["0", "-1", "nan"]),
    "--tau": _mostly(["1e-6"], ["0", "-1", "inf"]),
}
COMMANDS = {
    "grad": ["--activation", "--output-activation", "--loss", "--seed", "--batch", "--eta", "--method",
             "--schedule"],
    "compare": ["--activation", "--loss", "--seed", "--batch", "--eta", "--methods"],
    "netlist": ["--activation", "--loss", "--seed", "--batch", "--analysis", "--gain", "--tau"],
}


def _strict_json(text):
    def bad(constant):
        raise ValueError(f"non-finite number {constant} in JSON output")
    return json.loads(text, parse_constant=bad)


@st.composite
def command_lines(draw):
    command = draw(st.sampled_from(sorted(COMMANDS)))
    argv = [command, "--net", draw(st.sampled_from(NETS))]
    for option in draw(st.lists(st.sampled_from(COMMANDS[command]), max_size=4, unique=True)):
        argv += [option, draw(OPTION_VALUES[option])]
    if command != "netlist" and draw(st.booleans()):
        argv.append("--json")
    if draw(st.integers(0, 19)) == 0:
        argv.append("--no-such-option")
    return argv


@given(command_lines())
def test_fuzz_cli(argv):
    folder = Path(tempfile.mkdtemp())
    if argv[0] == "netlist":
        argv = argv + ["--out", str(folder / "out.cir")]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(argv)  # any exception escaping main fails the test
    assert status in (0, 2), (argv, status, err.getvalue())
    event(f"exit {status}")
    assert "Traceback" not in err.getvalue()
    if status == 2:
        assert err.getvalue().startswith("error: "), (argv, err.getvalue())
    elif "--json" in argv:
        _strict_json(out.getvalue())
    elif argv[0] == "netlist":
        assert (folder / "out.cir").is_file()


_SIM_DIR = Path(tempfile.mkdtemp())
_NET = dyadsim.mlp("2-3-2", seed=0)
_NET_FILE = _NET.save(_SIM_DIR / "net.npz")
_CIRCUITS = {}
for _analysis in ("op", "tran"):
    _nl = dyadsim.compile_netlist(_NET, np.array([[0.2, -0.4]]), np.array([[0.1, 0.3]]), analysis=_analysis,
                                  t_stop=20)
    _CIRCUITS[_analysis] = _nl.write(_SIM_DIR / f"{_analysis}.cir")
(_SIM_DIR / "latin1.cir").write_bytes(b"r\xe9sistance\nR1 1 0 1k\nV1 1 0 1\n.op\n.end\n")
(_SIM_DIR / "empty.npz").write_bytes(b"")


@pytest.mark.spice
@settings(max_examples=15)
@given(netlist=st.sampled_from([str(_CIRCUITS["op"])] * 3 + [str(_CIRCUITS["tran"])] * 2
                               + [str(_SIM_DIR / "latin1.cir"), str(_SIM_DIR / "missing.cir")]),
       options=st.lists(st.sampled_from([
           ("--analysis", "op"), ("--analysis", "tran"), ("--backend", "subprocess"), ("--backend", "shared"),
           ("--timeout", "30"), ("--timeout", "inf"), ("--timeout", "0"), ("--timeout", "nan"),
           ("--timeout", "-1"), ("--net", str(_NET_FILE)), ("--net", str(_SIM_DIR / "empty.npz")),
           ("--plot", str(_SIM_DIR / "relax.png")), ("--plot", str(_SIM_DIR)), ("--json",), ("--allow-control",),
       ]), max_size=4, unique_by=lambda o: o[0]))
def test_fuzz_cli_simulate(netlist, options):
    argv = ["simulate", netlist] + [word for option in options for word in option]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(argv)
    event(f"exit {status}")
    assert status in (0, 2), (argv, err.getvalue())
    assert "Traceback" not in err.getvalue()
    if status == 2:
        assert err.getvalue().startswith("error: ")
    elif "--json" in argv:
        result = _strict_json(out.getvalue())
        if "--net" in argv:  # a good netlist read out with its own network agrees with backprop
            assert result["comparison"]["rel_l2"] < 1e-6, result["comparison"]


# ----------------------------------------------------------------------------- found elsewhere
# What the fuzzing found outside this suite's areas: open ones are strict xfails, so that
# the fix shows up as an XPASS (remove the marker then).


def test_found_and_fixed_overflowing_weights_give_valid_json(tmp_path):
    """issue 11 item 6: overflow was reported as success, grad --json printed Infinity."""
    net = dyadsim.mlp("3-4-2", activation="identity", seed=0)
    for value in net.params.values():
        value[...] = 1e200
    path = net.save(tmp_path / "huge.npz")
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), np.errstate(all="ignore"):
        status = main(["grad", "--net", str(path), "--json"])
    assert status == 2 or math.isfinite(_strict_json(out.getvalue())["loss"])


def test_found_and_fixed_complex_weights_are_refused():
    G = nx.DiGraph()
    G.add_node("in", size=2)
    G.add_node("out", size=1, activation="tanh")
    G.add_edge("in", "out", weight=np.ones((1, 2)) + 1j)
    with pytest.raises(DyadsimException, match="complex"):
        dyadsim.Network.from_graph(G)


@pytest.mark.parametrize("option", [["--batch", "-1"], ["--seed", "-1"], ["--net", "100000000-100000000"]])
def test_found_and_fixed_negative_batch_seed_and_huge_nets(option):
    argv = ["grad", "--net", "3-4-2", *option]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        assert main(argv) == 2
    assert err.getvalue().startswith("error: ") and err.getvalue().count("\n") == 1
