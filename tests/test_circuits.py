"""The circuit compiler (network -> IR -> ngspice netlist): structure, parseability, safety.

* structure: one (x, z) pair per stacked neuron and sample (``node_map`` has n x B
  entries), exact element and node counts in ``netlist.stats`` for both summing modes,
  unique element names, deterministic text;
* every network Hypothesis can generate -- random DAGs with skip connections whose layer
  nodes carry arbitrary names (any unicode text, ints) -- compiles to a netlist that
  ngspice parses and solves (``.op``), with gradients equal to backprop;
* security: no user text (layer names, options, the title) can add a line, a card or a
  ``.control`` command; hostile networks are compiled, checked line by line against the
  grammar of what the compiler may emit, and RUN in ngspice with both backends;
* input errors are :class:`dyadsim.DyadsimError`.

Gradient accuracy (all activations/losses, batches, gains, ``.tran``) lives in
``test_spice_readout.py``.
"""

from __future__ import annotations

import re
from collections import Counter

import networkx as nx
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import dyadsim
from dyadsim.circuits import safe_identifier
from conftest import ACTIVATIONS, make_batch, make_case, user_error

TOL = 1e-6

# ----------------------------------------------------------------------------- grammar
# Everything the ngspice writer may emit.  A line that matches none of these fails the
# security tests: there is no way for user text to reach a netlist except as a name or a
# number in one of these slots.
_NAME = r"[a-z][a-z0-9_]*"
_NODE = rf"(?:0|{_NAME})"
_NUM = r"-?(?:\d+\.?\d*|\.\d+)(?:e[+-]?\d+)?"
_INNER = r"[a-z0-9_().+\-*/, ]*"  # a behavioural expression: names, numbers, v(), calls
_VALUE = rf"(?:\{{{_INNER}\}}|{_NUM})"
_ELEMENT_FORMS = [
    rf"[RC]{_NAME} {_NODE} {_NODE} {_VALUE}",
    rf"[VI]{_NAME} {_NODE} {_NODE} DC {_VALUE}",
    rf"G{_NAME} {_NODE} {_NODE} {_NODE} {_NODE} {_VALUE}",
    rf"B{_NAME} {_NODE} {_NODE} [IV]={_INNER}",
]
_CARD_FORMS = [
    rf"\.param {_NAME}={_VALUE}",
    rf"\.options(?: {_NAME}(?:=[a-z0-9_.+\-]+)?)+",
    r"\.op",
    rf"\.tran {_NUM} {_NUM} 0 {_NUM}",
    rf"\.ic(?: v\({_NAME}\)={_NUM})+",
    r"\.end",
]
_LINE = re.compile("|".join(f"(?:{f})" for f in _ELEMENT_FORMS + _CARD_FORMS))
_FUNCTIONS = {"v", "tanh", "exp", "ln", "abs", "sqrt", "u", "uramp", "max", "min"}
_ALLOWED_CARDS = {".param", ".options", ".op", ".tran", ".ic", ".end"}
_FORBIDDEN_STARTS = (".control", ".endc", ".include", ".inc", ".lib", ".subckt", ".func",
                     "shell", "source", "*ng_script")


def check_grammar(text: str) -> dict:
    """Assert that ``text`` is a well-formed dyadsim netlist; return {kind letter: count}.

    * printable ASCII only, ``\\n`` line ends (no ``\\r``, tab, NUL or other control char);
    * the title line (line 1) cannot be read as a card or a script marker;
    * comments start with ``*``; every other line is one of the element/card forms above,
      and calls only ``v()`` and the math functions the writer uses;
    * only ``.param .options .op/.tran .ic .end`` cards appear, ``.end`` last, once;
    * element names are unique (ngspice is case-insensitive).
    """
    assert re.fullmatch(r"[\x20-\x7e\n]*", text), "non-printable character in netlist"
    lines = text.split("\n")
    assert lines[-1] == "", "netlist must end with a newline"
    lines = lines[:-1]
    title = lines[0]
    assert title.strip(), "empty title line"
    assert not title.lstrip().startswith((".", "*")), f"title line reads as a card: {title!r}"
    cards, names, kinds = [], [], Counter()
    for no, line in enumerate(lines[1:], start=2):
        low = line.strip().lower()
        assert not low.startswith(_FORBIDDEN_STARTS), f"line {no}: {line!r}"
        if line == "" or line.startswith("*"):
            continue
        assert _LINE.fullmatch(line), f"line {no} is not a known element/card form: {line!r}"
        calls = set(re.findall(r"([a-z_][a-z0-9_]*)\(", line))
        assert calls <= _FUNCTIONS, f"line {no} calls {calls - _FUNCTIONS}: {line!r}"
        if line.startswith("."):
            cards.append(line.split()[0])
        else:
            names.append(line.split()[0].lower())
            kinds[line[0]] += 1
    assert set(cards) <= _ALLOWED_CARDS, set(cards) - _ALLOWED_CARDS
    assert cards[-1] == ".end" and cards.count(".end") == 1
    assert sum(c in (".op", ".tran") for c in cards) == 1
    dup = [n for n, k in Counter(names).items() if k > 1]
    assert not dup, f"duplicate element names: {dup[:5]}"
    return dict(kinds)


@pytest.mark.parametrize("injected", [
    ".control", "shell touch /tmp/x", ".endc", ".include /etc/passwd", ".lib x y",
    ".subckt foo a b", "Xfoo a b foo", "+ 1", "Ra a 0 1k ; comment", "Ra a 0 1k\r",
    "Va a 0 DC 1 AC 1", "Ba a 0 V=shell(1)", "Ba a 0 V=v(a)*system(1)", "Rb b 0 {source(1)}", ".param g={1}\t", ".op", ".end",
])
def test_grammar_check_bites(injected):
    """The line checker used by the security tests rejects anything it was not built for."""
    net = dyadsim.mlp("2-2-2", seed=0)
    x, y = make_batch(net, 0, batch=1)
    lines = dyadsim.compile_netlist(net, x, y).text.split("\n")
    check_grammar("\n".join(lines))
    lines.insert(5, injected)
    with pytest.raises(AssertionError):
        check_grammar("\n".join(lines))


def _max_rel(net, x, y, **kw) -> float:
    r = dyadsim.spice_gradients(net, x, y, **kw)
    return dyadsim.compare(r.grads, dyadsim.backprop(net, x, y)).max_rel_error


def _rename(net, names, loss=None) -> dyadsim.Network:
    """The same network with its layer nodes renamed (input first, then net.nodes)."""
    mapping = dict(zip((net.input,) + tuple(net.nodes), names))
    return dyadsim.Network.from_graph(nx.relabel_nodes(net.to_graph(), mapping),
                                      loss=loss or net.loss.name)


def _chain(names, sizes, seed=0, act="tanh", loss="mse") -> dyadsim.Network:
    """A chain network whose layers are called ``names`` (first = input)."""
    rng = np.random.default_rng(seed)
    G = nx.DiGraph()
    G.add_node(names[0], size=sizes[0])
    for i in range(1, len(names)):
        G.add_node(names[i], size=sizes[i], activation=act,
                   bias=rng.standard_normal(sizes[i]) * 0.2)
        G.add_edge(names[i - 1], names[i],
                   weight=rng.standard_normal((sizes[i], sizes[i - 1])) / np.sqrt(sizes[i - 1]))
    return dyadsim.Network.from_graph(G, loss=loss)


# ----------------------------------------------------------------------------- structure
def _expected_stats(net, B, summing):
    """Element and node counts the compiler must produce (see _compiler's docstring)."""
    n = net.n
    nodes = B * (6 * n + net.n_in + net.n_out) + 2  # x z m u s r per neuron; in; y; refs
    kinds = {"V": 2 + B * (net.n_in + net.n_out), "C": 2 * n * B}
    if summing == "G":
        def nnz(k):
            return int(np.count_nonzero(net.params[k]))

        fwd = sum(nnz(k) for k in net.params if k[0] == "W")  # one VCCS per weight into u
        bwd = sum(nnz(k) for k in net.params if k[0] == "W" and k[1] != net.input)  # into r
        biases = sum(nnz(("b", v)) for v in net.nodes)
        kinds.update(R=4 * n * B, G=(fwd + bwd) * B, I=biases * B, B=4 * n * B)
    else:
        kinds.update(R=2 * n * B, B=6 * n * B)
    return nodes, kinds


@pytest.mark.parametrize("summing", ["G", "B"])
@pytest.mark.parametrize("kind,batch", [("mlp", 1), ("mlp", 3), ("dag", 1), ("dag", 4)])
def test_structure_node_map_and_counts(kind, batch, summing):
    c = make_case(kind, "tanh", "xent", seed=7, depth=4, batch=batch, n_out=3)
    nl = dyadsim.compile_netlist(c.net, c.x, c.y, summing=summing)
    net = c.net
    # one (x, z) pair per stacked neuron and sample, no more, no less
    assert len(nl.node_map) == net.n * batch
    assert set(nl.node_map) == {(b, v, i) for b in range(batch) for v in net.nodes
                                for i in range(net.sizes[v])}
    pairs = [n for pair in nl.node_map.values() for n in pair]
    assert len(set(pairs)) == 2 * net.n * batch
    assert set(nl.aux_map) == set(nl.node_map)
    assert len(nl.input_nodes) == net.n_in * batch and len(nl.target_nodes) == net.n_out * batch
    assert nl.n_samples == batch
    # exact element and node counts, in stats and in the text itself
    nodes, kinds = _expected_stats(net, batch, summing)
    assert nl.stats["nodes"] == nodes
    assert nl.stats["elements"] == sum(kinds.values())
    by_letter = Counter()
    for k, cnt in nl.stats["by_kind"].items():
        by_letter[k[0]] += cnt
    assert dict(by_letter) == kinds
    assert check_grammar(nl.text) == kinds
    # every state node is a capacitor node in the text
    for xn, zn in list(nl.node_map.values())[:5]:
        assert re.search(rf"^C{xn} {xn} 0 ", nl.text, re.M)
        assert re.search(rf"^C{zn} {zn} 0 ", nl.text, re.M)


def test_netlist_is_deterministic_and_writes(tmp_path):
    c = make_case("dag", "sigmoid", "mse", seed=3, depth=3, batch=2)
    a = dyadsim.compile_netlist(c.net, c.x, c.y)
    b = dyadsim.compile_netlist(c.net.copy(), c.x.copy(), c.y.copy())
    assert a.text == b.text
    p = a.write(tmp_path / "sub" / "net.cir")
    assert p.read_text() == a.text and a.path == p
    assert str(tmp_path) not in a.text  # the file name never enters the netlist


def test_tran_netlist_has_initial_conditions_and_card():
    c = make_case("mlp", "tanh", "mse", seed=1, depth=3, batch=2)
    nl = dyadsim.compile_netlist(c.net, c.x, c.y, analysis="tran", t_stop=40, t_step=0.1,
                                 max_step=0.2, tau=2e-6)
    kinds = check_grammar(nl.text)
    assert kinds["C"] == 2 * c.net.n * 2
    tran = [l for l in nl.text.splitlines() if l.startswith(".tran")]
    assert len(tran) == 1
    tstep, tstop, tstart, tmax = map(float, tran[0].split()[1:])
    assert (tstep, tstart, tmax) == (2e-7, 0.0, 4e-7) and tstop == pytest.approx(8e-5, rel=1e-12)
    ic = " ".join(l for l in nl.text.splitlines() if l.startswith(".ic"))
    for xn, zn in nl.node_map.values():  # x = z = 0 at the start, every state node
        assert f"v({xn})=0 " in ic + " " and f"v({zn})=0 " in ic + " "
    assert "uic" not in tran[0].lower()  # uic would drop the t = 0 row
    assert ".op" not in [l.strip() for l in nl.text.splitlines()]


# ----------------------------------------------------------------------------- property
_names = st.one_of(
    st.text(max_size=24),
    st.text(alphabet="aAbB_0123 .{}=*+;\n\r\t$", max_size=12),
    st.integers(-3, 10**6),
)


@st.composite
def named_dags(draw):
    """A random DAG with skip connections whose layer nodes have arbitrary names."""
    n_hidden = draw(st.integers(0, 3))
    loss = draw(st.sampled_from(["mse", "xent"]))
    n_out = draw(st.integers(2 if loss == "xent" else 1, 3))
    acts = draw(st.lists(st.sampled_from(ACTIVATIONS), min_size=1, max_size=5, unique=True))
    net = dyadsim.random_dag(n_hidden=n_hidden, sizes=(1, 4), n_in=draw(st.integers(1, 3)),
                             n_out=n_out, skip_prob=draw(st.sampled_from([0.0, 0.5, 1.0])),
                             activations=acts, loss=loss, seed=draw(st.integers(0, 2**20)))
    names = draw(st.lists(_names, min_size=n_hidden + 2, max_size=n_hidden + 2, unique=True))
    return _rename(net, names)


# ~15 examples in CI (each runs ngspice); a profile with more (HYPOTHESIS_PROFILE=dev) keeps its own
_EXAMPLES = 15 if settings.default.max_examples <= 20 else settings.default.max_examples


@pytest.mark.spice
@settings(max_examples=_EXAMPLES)
@given(net=named_dags(), batch=st.integers(1, 3), backend=st.sampled_from(["shared", "subprocess"]),
       seed=st.integers(0, 1000))
def test_every_generated_network_parses_and_solves(net, batch, backend, seed):
    x, y = make_batch(net, seed, batch)
    nl = dyadsim.compile_netlist(net, x, y)
    check_grammar(nl.text)
    assert len(nl.node_map) == net.n * batch
    assert set(nl.layer_ids) == {net.input, *net.nodes}
    ids = list(nl.layer_ids.values())
    assert len(set(ids)) == len(ids) and all(safe_identifier(i) == i for i in ids)
    op = dyadsim.simulate(nl, backend=backend)  # raises SimulatorError if ngspice rejects it
    for xn, zn in nl.node_map.values():
        assert np.isfinite(op.v(xn)) and np.isfinite(op.v(zn))
    got = dyadsim.readout(net, op)
    assert grad_error(got, dyadsim.backprop(net, x, y)) <= TOL


def grad_error(got, ref) -> float:
    """``compare(...).max_rel_error``, except that a tensor whose reference is exactly zero
    (a dead relu layer: Hypothesis finds those) is measured against the norm of the whole
    gradient, or absolutely when that is zero too (a dead relu output) -- ngspice leaves
    ~1e-17 there, and ``x / 0`` is inf."""
    cmp = dyadsim.compare(got, ref)
    total = np.sqrt(sum(float(np.sum(np.square(ref[k]))) for k in ref)) or 1.0
    errs = []
    for k, m in cmp.tensors.items():
        nr = float(np.linalg.norm(ref[k]))
        errs.append(m.rel_error if nr > 0 else float(np.linalg.norm(got[k])) / total)
    return max(errs)


# ----------------------------------------------------------------------------- security
def _hostile_names(tmp):
    return [
        f"a\n.control\nshell touch {tmp}/pwned\n.endc",  # the input layer
        "x\r\n.include /etc/passwd",
        "{gain}", "}", "=", ";", "*", "+c", ".end", ".param g=0",
        "\u00fcn\u00efc\u00f8d\u00e9 \u2603 \u6f22\u5b57",
        "L" * 5000,
        "A", "a",  # differ only in case
        "a b", "a_b",  # sanitize to the same identifier
        "y", "gain_ref", "0", 0,
        f"\n.control\nshell touch {tmp}/pwned\n.endc\n",  # the output layer
    ]


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hostile")
    names = _hostile_names(tmp)
    net = _chain(names, [2] + [2] * (len(names) - 1), seed=5, act="tanh", loss="xent")
    x, y = make_batch(net, 0, batch=2)
    return tmp, net, x, y


def test_hostile_names_compile_to_safe_text(hostile):
    tmp, net, x, y = hostile
    for analysis in ("op", "tran"):
        nl = dyadsim.compile_netlist(net, x, y, analysis=analysis)
        check_grammar(nl.text)
        assert "/pwned" not in nl.text and "/etc/passwd" not in nl.text
        assert "\r" not in nl.text
        ids = list(nl.layer_ids.values())
        assert len(set(ids)) == len(ids)  # "A"/"a", "a b"/"a_b", 0/"0" all stay apart
        assert all(safe_identifier(i) == i and len(i) <= 60 for i in ids)


@pytest.mark.spice
@pytest.mark.parametrize("backend", ["shared", "subprocess"])
def test_hostile_names_run_in_ngspice(hostile, backend):
    tmp, net, x, y = hostile
    assert _max_rel(net, x, y, backend=backend) <= TOL
    assert not (tmp / "pwned").exists()


@pytest.mark.spice
@pytest.mark.parametrize("backend", ["shared", "subprocess"])
def test_int_and_case_colliding_names_run(backend):
    net = _chain(["In", 0, "0", "H", "h", "h b", "h_b", "OUT"], [3, 2, 3, 2, 3, 2, 2, 2], seed=2)
    x, y = make_batch(net, 1, batch=2)
    nl = dyadsim.compile_netlist(net, x, y)
    check_grammar(nl.text)
    assert _max_rel(net, x, y, backend=backend) <= TOL


@pytest.mark.spice
def test_element_names_unique_for_underscore_layer_names():
    rng = np.random.default_rng(0)
    S = {"inp": 2, "c_2_d": 4, "a": 2, "d": 4, "a_1_c": 3, "out": 2}
    G = nx.DiGraph()
    for v, s in S.items():
        if v == "inp":
            G.add_node(v, size=s)
        else:
            G.add_node(v, size=s, activation="tanh", bias=rng.standard_normal(s) * 0.1)
    for p, v in [("inp", "c_2_d"), ("c_2_d", "a"), ("a", "out"), ("inp", "d"), ("d", "a_1_c"),
                 ("a_1_c", "out")]:
        G.add_edge(p, v, weight=rng.standard_normal((S[v], S[p])) / 2)
    net = dyadsim.Network.from_graph(G)
    x, y = make_batch(net, 0, batch=1)
    check_grammar(dyadsim.compile_netlist(net, x, y).text)
    assert _max_rel(net, x, y, backend="subprocess") <= TOL


@pytest.mark.parametrize("title", [".include /etc/passwd", "*ng_script", ".control",
                                   ".lib /etc/passwd x"])
def test_title_cannot_become_a_card(title):
    net = dyadsim.mlp("2-2-2", seed=0)
    x, y = make_batch(net, 0, batch=1)
    try:
        nl = dyadsim.compile_netlist(net, x, y, title=title)
    except dyadsim.DyadsimError:
        return  # rejecting such a title is fine too
    check_grammar(nl.text)  # the title line must not read as a card / script marker


@pytest.mark.spice
def test_title_with_newlines_stays_one_line(tmp_path):
    net = dyadsim.mlp("2-2-2", seed=0)
    x, y = make_batch(net, 0, batch=1)
    nl = dyadsim.compile_netlist(net, x, y,
                                 title=f"my run\n.control\nshell touch {tmp_path}/pwned\n.endc")
    check_grammar(nl.text)
    op = dyadsim.simulate(nl, backend="subprocess", workdir=tmp_path)
    assert dyadsim.compare(dyadsim.readout(net, op), dyadsim.backprop(net, x, y)).max_rel_error <= TOL
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("bad", ["", "A", "1a", "_a", "a b", "a\n.control", "a.b", "a{", "a=1",
                                 "a;b", "a*", "v(a)", "\u00e9", "a" * 201, None, 5, b"a",
                                 "a\n", "gain\n"])
def test_safe_identifier_rejects(bad):
    with user_error("unsafe netlist identifier"):
        safe_identifier(bad)


@pytest.mark.parametrize("good", ["a", "a_1", "x_h1_0_b3", "gain_ref", "a" * 200])
def test_safe_identifier_accepts(good):
    assert safe_identifier(good) == good


def test_layer_identifiers_are_safe_and_unique():
    from dyadsim.circuits import layer_identifier

    taken: set = set()
    raw = ["A", "a", "a b", "a_b", "a-b", "", " ", "{", "\n.end", "1", 1, "\u2603", "x" * 100]
    ids = [layer_identifier(r, taken) for r in raw]
    assert len(set(ids)) == len(ids)
    for i in ids:
        assert safe_identifier(i) == i
    assert ids[0] == "a" and ids[1] != "a"


# ----------------------------------------------------------------------------- errors
@pytest.fixture(scope="module")
def small():
    c = make_case("mlp", "tanh", "mse", seed=0, depth=2, batch=2)
    return c.net, c.x, c.y


def test_unknown_analysis(small):
    net, x, y = small
    with user_error("unknown analysis 'ac'"):
        dyadsim.compile_netlist(net, x, y, analysis="ac")


@pytest.mark.parametrize("gain", [0, 0.0, -1.0, float("nan"), float("inf"), "1"])
def test_bad_gain(small, gain):
    net, x, y = small
    with user_error("gain must be a positive finite number"):
        dyadsim.compile_netlist(net, x, y, gain=gain)


@pytest.mark.parametrize("arg", [dict(tau=0), dict(tau=-1e-6), dict(g=float("nan")), dict(g=0)])
def test_bad_tau_or_g(small, arg):
    net, x, y = small
    with user_error("must be a positive finite number"):
        dyadsim.compile_netlist(net, x, y, **arg)


@pytest.mark.parametrize("arg", [dict(t_stop=-1), dict(t_step=0), dict(max_step=float("inf"))])
def test_bad_transient_settings(small, arg):
    net, x, y = small
    with user_error("positive number of tau"):
        dyadsim.compile_netlist(net, x, y, analysis="tran", **arg)


def test_nan_input_and_target(small):
    net, x, y = small
    xb = x.copy()
    xb[0, 0] = np.nan
    with pytest.raises(dyadsim.DyadsimError):
        dyadsim.compile_netlist(net, xb, y)
    yb = y.copy()
    yb[1, 0] = np.inf
    with pytest.raises(dyadsim.DyadsimError):
        dyadsim.compile_netlist(net, x, yb)
    with pytest.raises(dyadsim.DyadsimError):
        dyadsim.compile_netlist(net, x[:, :1], y)  # wrong width


@pytest.mark.parametrize("options", [
    {"reltol": "1e-9\n.control"},
    {"reltol": "1e-9 .include /etc/passwd"},
    {"reltol": "1e-9\r\nshell ls"},
    {"reltol\n.control": 1e-9},
    {"Reltol": 1e-9},
    {"reltol=1 x": 1},
    {"reltol": "{1}"},
    {"reltol": None},
])
def test_bad_option_text(small, options):
    net, x, y = small
    with user_error("invalid simulator option"):
        dyadsim.compile_netlist(net, x, y, options=options)


def test_good_options_are_written(small):
    net, x, y = small
    nl = dyadsim.compile_netlist(net, x, y, options={"reltol": 1e-10, "gmin": "1e-15",
                                                     "noopiter": True})
    opts = [l for l in nl.text.splitlines() if l.startswith(".options")]
    assert len(opts) == 1
    assert " reltol=1e-10" in opts[0] and " gmin=1e-15" in opts[0] and " noopiter" in opts[0]
    check_grammar(nl.text)


def test_unknown_summing(small):
    net, x, y = small
    with user_error("unknown summing"):
        dyadsim.compile_netlist(net, x, y, summing="C")
