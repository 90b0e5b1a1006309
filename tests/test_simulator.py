"""dyadsim.simulator: ngspice runs against closed forms, failures, and the raw-file parser.

Parser and diagnosis tests run on checked-in ngspice outputs (tests/fixtures/spice, see its
README) without ngspice; tests marked ``spice`` run ngspice through both backends.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from dyadsim.errors import DyadsimError, SimulatorError
from dyadsim.simulator import (
    OperatingPoint,
    Transient,
    UnknownVectorError,
    find_ngspice,
    parse_raw,
    shared_available,
    simulate,
    simulate_many,
)
from dyadsim.simulator import _shared
from dyadsim.simulator._results import diagnose_log, result_from_plot

FIXTURES = Path(__file__).parent / "fixtures" / "spice"
BACKENDS = ["shared", "subprocess"]
TAU = 1e-3  # R = 1k, C = 1u in every RC deck here

DIVIDER = """resistor divider
V1 1 0 DC 3
R1 1 2 1k
R2 2 0 2k
.op
.end
"""

TANH_CHAIN = """B-source nonlinearity: v(n) = tanh(v(a)), v(m) = tanh(v(n))
Va a 0 DC 0.7
B1 0 n I=1e-3*tanh(v(a))
R1 n 0 1k
B2 0 m I=1e-3*tanh(v(n))
R2 m 0 1k
.options reltol=1e-9 abstol=1e-15 vntol=1e-12
.op
.end
"""

RC_TRAN = """RC charging from v(out) = 0: v(out) = 1 - exp(-t/RC)
V1 in 0 DC 1
R1 in out 1k
C1 out 0 1u
.ic v(out)=0
.options reltol=1e-9 abstol=1e-15 vntol=1e-12 chgtol=1e-18
.tran 20u 2m 0 2u
.end
"""

VOLTAGE_LOOP = """two voltage sources in parallel
V1 1 0 DC 3
V2 1 0 DC 2
.op
.end
"""

FLOATING = """divider plus a resistor between two floating nodes
V1 1 0 DC 3
R1 1 2 1k
R2 2 0 2k
R3 3 4 1k
.op
.end
"""

UNKNOWN_ELEMENT = """unknown model
V1 1 0 DC 3
R1 1 0 1k
Y1 1 0 1k
.op
.end
"""

BAD_CARD = """malformed analysis card
V1 1 0 DC 3
R1 1 0 1k
.tran foo
.end
"""

LONG_TRAN = """a transient that takes minutes: 1e10 steps of 1 ns
V1 1 0 SIN(0 1 1k)
R1 1 2 1k
C1 2 0 1u
.tran 1n 10 0 1n
.end
"""

STIFF = """a cubic conductance too stiff for the tolerances: the time step collapses
V1 in 0 PULSE(0 1 0 1f 1f 1n 2n)
R1 in n 1
C1 n 0 1f
B1 0 n I=1e9*v(n)^3
.options reltol=1e-9
.tran 1p 10n
.end
"""

WARNINGS = """divider plus a resistor without value: ngspice warns and uses 1 mOhm
V1 1 0 DC 3
R1 1 2 1k
R2 2 0 2k
V9 9 0 DC 1
R9 9 0
.op
.end
"""


def rc_closed_form(t):
    return 1.0 - np.exp(-t / TAU)


# =============================================================================== parser


@pytest.fixture(scope="module", params=["rc.raw", "rc_ascii.raw"])
def rc_plots(request):
    return parse_raw((FIXTURES / request.param).read_bytes())


def test_raw_plots_and_variables(rc_plots):
    assert [p.plotname for p in rc_plots] == ["AC Analysis", "Operating Point", "Transient Analysis"]
    assert [p.analysis for p in rc_plots] == ["ac", "op", "tran"]
    assert [p.n_points for p in rc_plots] == [7, 1, 110]
    ac, op, tran = rc_plots
    assert ac.is_complex and not op.is_complex and not tran.is_complex
    assert tran.names == ("time", "v(in)", "v(out)", "i(v1)")
    assert [v.type for v in tran.variables] == ["time", "voltage", "voltage", "current"]
    assert ac.variables[0].params == ("grid=3",)
    assert op.title.startswith("rc low-pass")  # ngspice lowercases the title too
    assert tran.as_array().shape == (110, 4)


def test_raw_op_values(rc_plots):
    op = rc_plots[1]
    assert op["v(in)"][0] == 1.0
    assert op["V(OUT)"][0] == pytest.approx(1.0, abs=1e-9)  # lookup is case-insensitive
    assert op["i(v1)"][0] == pytest.approx(0.0, abs=1e-12)


def test_raw_tran_matches_closed_form(rc_plots):
    tran = rc_plots[2]
    t = tran["time"]
    assert t[0] == 0.0 and t[-1] == pytest.approx(2e-3) and np.all(np.diff(t) > 0)
    np.testing.assert_allclose(tran["v(out)"], rc_closed_form(t), atol=3e-5)
    np.testing.assert_allclose(tran["i(v1)"], -np.exp(-t / TAU) / 1e3, atol=3e-8)


def test_raw_ac_complex_matches_closed_form(rc_plots):
    ac = rc_plots[0]
    f = ac["frequency"].real  # ngspice 39 writes garbage in the scale's imaginary part
    np.testing.assert_allclose(f, 10 ** np.arange(1, 4.01, 0.5), rtol=1e-12)
    expected = 1.0 / (1.0 + 2j * np.pi * f * TAU)
    np.testing.assert_allclose(ac["v(out)"], expected, rtol=1e-9)
    np.testing.assert_allclose(ac["v(in)"], 1.0, rtol=1e-12)


def test_binary_and_ascii_raw_agree():
    binary = parse_raw((FIXTURES / "rc.raw").read_bytes())
    ascii_ = parse_raw((FIXTURES / "rc_ascii.raw").read_bytes())
    for pb, pa in zip(binary, ascii_):
        assert pb.names == pa.names
        for name in pb.names[1:]:  # skip the AC scale's garbage imaginary part
            np.testing.assert_allclose(pa[name], pb[name], rtol=1e-14, atol=1e-300)


def test_raw_failed_run_without_points_raises():
    with pytest.raises(SimulatorError, match="no points") as info:
        parse_raw((FIXTURES / "vloop.raw").read_bytes())
    assert info.value.reason == "failed"


def test_raw_binary_interp_bug_is_rejected():
    # ngspice 39, binary raw + `.options interp`: 5 points declared, 59 rows written
    with pytest.raises(SimulatorError, match="interp"):
        parse_raw((FIXTURES / "rc_interp.raw").read_bytes())


@pytest.mark.parametrize(
    "mangle, match",
    [
        (lambda d: d[: len(d) - 100], "truncated"),
        (lambda d: b"", "empty"),
        (lambda d: b"garbage without a header\n", "malformed"),
        (lambda d: d.replace(b"No. Points: 1 ", b"No. Points: x "), "No. Points"),
    ],
    ids=["truncated", "empty", "garbage", "bad-count"],
)
def test_raw_malformed(mangle, match):
    data = (FIXTURES / "rc.raw").read_bytes()
    with pytest.raises(SimulatorError, match=match):
        parse_raw(mangle(data))


def test_raw_ascii_wrong_count():
    data = (FIXTURES / "rc_ascii.raw").read_bytes()
    cut = data.rfind(b"\n", 0, len(data) - 2)
    with pytest.raises(SimulatorError, match="ASCII data"):
        parse_raw(data[:cut])


def test_parse_raw_wants_bytes():
    with pytest.raises(TypeError):
        parse_raw(str(FIXTURES / "rc.raw"))


# =============================================================================== results


def test_operating_point_lookup():
    op = result_from_plot(parse_raw((FIXTURES / "rc.raw").read_bytes())[1], "op", backend="x")
    assert isinstance(op, OperatingPoint)
    assert op.voltages == {"in": 1.0, "out": pytest.approx(1.0)}
    assert op.v("OUT") == op["out"] == op["v(out)"] == op.voltages["out"]
    assert op.i("V1") == op["i(v1)"] == op.currents["v1"]
    assert "OUT" in op and "i(v1)" in op and "nowhere" not in op
    with pytest.raises(UnknownVectorError, match="no node 'nowhere'.*have: in, out") as info:
        op.v("nowhere")
    assert isinstance(info.value, KeyError) and isinstance(info.value, DyadsimError)


def test_transient_lookup_and_final():
    tran = result_from_plot(parse_raw((FIXTURES / "rc.raw").read_bytes())[2], "tran")
    assert isinstance(tran, Transient)
    assert tran.time.shape == tran.v("out").shape == (110,)
    assert tran["time"] is tran.time and "v(out)" in tran
    with pytest.raises(ValueError):
        tran.v("out")[0] = 5.0  # results are read-only
    final = tran.final()
    assert isinstance(final, OperatingPoint)
    assert final.v("out") == tran.v("out")[-1] == pytest.approx(rc_closed_form(2e-3), abs=3e-5)
    assert final.i("v1") == tran.i("v1")[-1]


# =============================================================================== diagnosis

# lines as ngspice 39 printed them (shared-library prefixes included)
OK_LINES = [
    "stdout Note: No compatibility mode selected!",
    "stdout Circuit: divider",
    "stdout Doing analysis at TEMP = 27.000000 and TNOM = 27.000000",
    "stderr Using SPARSE 1.3 as Direct Linear Solver",
    " Reference value :  0.00000e+00\r",
    "stderr Warning: r9: resistance to low, set to 1 mOhm",
    "stdout No. of Data Rows : 1",
    "stdout Background thread stopped with timeout = 0",
    "Unsupported Ngspice version 39",
]


@pytest.mark.parametrize(
    "lines, reason",
    [
        (["Error on line 4 or its substitute:", "  y1 1 0 1k", "model name is not found"], "parse"),
        (["stderr Error: unknown subckt: x1 1 0 foo"], "parse"),
        (["stderr PTerror: syntax error, parsing stopped at", "stderr Error on line 4 or its substitute:"], "parse"),
        (["stderr Error: Could not find include file /nonexistent/foo.lib"], "parse"),
        (
            [
                "Warning: singular matrix:  check node v1#branch",
                "Warning: source stepping failed",
                "Error: Transient op failed, timestep too small",
                "doAnalyses: OP:  Timestep too small; cause unrecorded.",
                "run simulation(s) aborted",
            ],
            "singular-matrix",
        ),
        (
            [
                "doAnalyses: TRAN:  Timestep too small; time = 1.2e-05, timestep = 1.25e-20: trouble with node \"n\"",
                "run simulation(s) aborted",
            ],
            "timestep-too-small",
        ),
        (["Warning: Dynamic gmin stepping failed", "doAnalyses: iteration limit reached", "run simulation(s) aborted"], "no-convergence"),
        (["Error: something unheard of"], "failed"),
    ],
    ids=["parse-line", "parse-subckt", "parse-expr", "parse-include", "singular", "timestep", "convergence", "other"],
)
def test_diagnose_log(lines, reason):
    diagnosis = diagnose_log(OK_LINES + lines)
    assert diagnosis is not None and diagnosis.reason.value == reason
    assert diagnosis.message.startswith("ngspice: ")


def test_informational_output_is_not_an_error():
    assert diagnose_log(OK_LINES) is None
    assert diagnose_log(OK_LINES, failed=True).reason.value == "failed"


# =============================================================================== arguments


def test_bad_arguments_are_user_errors():
    with pytest.raises(DyadsimError, match="backend"):
        simulate(DIVIDER, backend="spectre")
    with pytest.raises(DyadsimError, match="analysis"):
        simulate(DIVIDER, analysis="ac")
    for bad in (0, -1, float("nan"), "10", True):
        with pytest.raises(DyadsimError, match="timeout"):
            simulate(DIVIDER, timeout=bad)
    with pytest.raises(DyadsimError, match="keep_files"):
        simulate(DIVIDER, keep_files="yes")
    with pytest.raises(DyadsimError, match="allow_control"):
        simulate(DIVIDER, allow_control=1)
    for bad in ("some", [], ["a b"], ["v(x)"], [3], ["x\n.control"]):
        with pytest.raises(DyadsimError, match="save"):
            simulate(DIVIDER, save=bad)
    with pytest.raises(DyadsimError, match="neither an existing file"):
        simulate("no/such/file.cir")
    with pytest.raises(DyadsimError, match="netlist must be"):
        simulate(42)


@pytest.mark.parametrize("analysis, deck", [("tran", DIVIDER), ("op", RC_TRAN), (None, "title only\nR1 1 0 1k\n.end\n")])
def test_missing_analysis_card(analysis, deck):
    with pytest.raises(SimulatorError, match=r"\.(op|tran)") as info:
        simulate(deck, analysis=analysis, backend="subprocess")
    assert info.value.reason == "no-analysis"


def test_options_card_is_not_an_op_card():
    deck = "only options\nR1 1 0 1k\n.options reltol=1e-6\n.end\n"
    with pytest.raises(SimulatorError) as info:
        simulate(deck, analysis="op")
    assert info.value.reason == "no-analysis"


# =============================================================================== ngspice runs


@pytest.mark.spice
@pytest.mark.parametrize("backend", BACKENDS)
def test_divider_op(backend):
    op = simulate(DIVIDER, analysis="op", backend=backend)
    assert isinstance(op, OperatingPoint) and op.backend == backend
    assert op.v("2") == pytest.approx(2.0, abs=1e-12)
    assert op.v(1) == 3.0
    assert op.i("v1") == pytest.approx(-1e-3, abs=1e-15)  # into the + terminal
    assert "Circuit: resistor divider" in op.log


@pytest.mark.spice
@pytest.mark.parametrize("backend", BACKENDS)
def test_bsource_nonlinearity_op(backend):
    op = simulate(TANH_CHAIN, backend=backend)  # analysis inferred from the one card
    assert op.v("n") == pytest.approx(np.tanh(0.7), abs=1e-9)
    assert op.v("M") == pytest.approx(np.tanh(np.tanh(0.7)), abs=1e-9)


@pytest.mark.spice
@pytest.mark.parametrize("backend", BACKENDS)
def test_rc_transient_matches_closed_form(backend):
    tran = simulate(RC_TRAN, analysis="tran", backend=backend)
    assert isinstance(tran, Transient)
    t = tran.time
    assert t[0] == 0.0 and t[-1] == pytest.approx(2e-3) and np.max(np.diff(t)) <= 2e-6 * (1 + 1e-9)
    assert tran.v("out")[0] == 0.0
    np.testing.assert_allclose(tran.v("out"), rc_closed_form(t), atol=1e-6)  # measured 1.1e-7
    assert tran.final().v("out") == pytest.approx(rc_closed_form(2e-3), abs=1e-6)


@pytest.mark.spice
def test_backends_agree():
    shared = simulate(RC_TRAN, backend="shared")
    sub = simulate(RC_TRAN, backend="subprocess")
    np.testing.assert_array_equal(shared.time, sub.time)
    np.testing.assert_allclose(shared.v("out"), sub.v("out"), rtol=1e-14, atol=1e-300)
    assert set(shared.voltages) == set(sub.voltages) and set(shared.currents) == set(sub.currents)


def _isolated(call: str) -> None:
    """Run ``call`` (an expression on this module, ``t``) in a fresh interpreter with its own
    libngspice: for decks whose options would leak into this process's later shared-backend
    runs (see test_shared_runs_do_not_inherit_options)."""
    import subprocess
    import sys

    import dyadsim

    root = str(Path(dyadsim.__file__).resolve().parents[1])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]))
    here = str(Path(__file__).parent)
    code = f"import sys; sys.path.insert(0, {here!r}); import test_simulator as t; {call}"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]


def _check_interp_deck(backend):
    tran = simulate((FIXTURES / "rc_interp.cir").read_text(), backend=backend)
    assert tran.backend == "subprocess"
    np.testing.assert_allclose(tran.time, [0, 5e-4, 1e-3, 1.5e-3, 2e-3], rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(tran.v("out"), rc_closed_form(tran.time), atol=2e-3)


def _check_tran_after_interp_deck():
    deck = (FIXTURES / "rc_interp.cir").read_text()
    try:
        simulate(deck, backend="shared")
    except DyadsimError:
        pass  # refused: it never reaches the shared engine
    assert simulate(deck, backend="auto").backend == "subprocess"
    after = simulate(RC_TRAN, analysis="tran", backend="shared")
    assert np.max(np.diff(after.time)) <= 2e-6 * (1 + 1e-9), len(after.time)  # every step


def _check_sticky_backstop(card):
    """In a fresh interpreter: a netlist that switches `card` on for good in the shared
    library (possible with allow_control=True), then transients that must not be returned."""
    before = simulate(RC_TRAN, backend="shared")
    sub = simulate(RC_TRAN, backend="subprocess")
    assert len(sub.time) > 500  # steps of at most 2 us over 2 ms, not the 20 us TSTEP grid
    np.testing.assert_array_equal(before.time, sub.time)
    deck = (FIXTURES / "rc_interp.cir").read_text() if card == "interp" else RC_TRAN.replace(".tran", ".save none\n.tran")
    simulate(deck, backend="shared", allow_control=True)
    # ngspice now resamples every transient onto the TSTEP grid (101 points), or keeps one
    # point of it: refused, never returned
    with pytest.raises(SimulatorError, match=card) as info:
        after = simulate(RC_TRAN, analysis="tran", backend="shared")
        raise AssertionError(f"the shared backend returned a {len(after.time)}-point transient")
    assert info.value.reason == "failed"
    auto = simulate(RC_TRAN)  # goes to the subprocess backend
    assert auto.backend == "subprocess"
    np.testing.assert_array_equal(auto.time, sub.time)
    np.testing.assert_array_equal(auto.v("out"), sub.v("out"))
    assert simulate(DIVIDER, backend="shared").v("2") == pytest.approx(2.0, abs=1e-12)  # .op unaffected
    if card == "interp":  # a netlist asking for `interp` gets it
        tran = simulate(deck, backend="shared", allow_control=True)
        np.testing.assert_allclose(tran.time, [0, 5e-4, 1e-3, 1.5e-3, 2e-3], rtol=1e-12, atol=1e-15)


@pytest.mark.spice
@pytest.mark.parametrize("backend", BACKENDS + ["auto"])
def test_interp_option_gives_correct_waveforms(backend):
    """subprocess switches to ASCII raw files for `interp`; `auto` sends the deck there; the
    shared backend refuses it (its `interp` would stay set for every later run)."""
    if backend == "shared":
        with pytest.raises(DyadsimError, match="interp"):
            _check_interp_deck(backend)
    else:
        _check_interp_deck(backend)


@pytest.mark.spice
def test_shared_runs_do_not_inherit_options():
    """After the `interp` deck, the next shared transient must still have every time step
    (in a fresh interpreter, so that nothing else ran in its libngspice before)."""
    _isolated("t._check_tran_after_interp_deck()")


@pytest.mark.spice
@pytest.mark.parametrize("sticky, card", [("interp", ".options interp"), ("save none", ".save none")])
def test_shared_engine_never_sees_options_that_stick(sticky, card, tmp_path):
    # ngspice 39's shared library keeps `interp` (and `.save none`) switched on for every
    # later run in the process: one such netlist would make every later transient wrong
    deck = RC_TRAN.replace(".tran", card + "\n.tran")
    with pytest.raises(DyadsimError, match=sticky):
        simulate(deck, backend="shared")
    (tmp_path / "opts.inc").write_text(card + "\n")  # also when it comes from an include
    src = tmp_path / "rc.cir"
    src.write_text(RC_TRAN.replace(".tran", ".include opts.inc\n.tran"))
    with pytest.raises(DyadsimError, match=sticky):
        simulate(src, backend="shared")
    if sticky == "interp":
        assert simulate(src, backend="auto").backend == "subprocess"
    tran = simulate(RC_TRAN, backend="shared")  # the engine is still exact
    assert np.max(np.diff(tran.time)) <= 2e-6 * (1 + 1e-9)


@pytest.mark.spice
@pytest.mark.parametrize("card", ["interp", "save none"])
def test_shared_engine_refuses_transients_after_a_sticky_setting(card):
    """Backstop behind the netlist check: with allow_control=True such a netlist does reach
    the shared library, and a later transient there is refused instead of returned wrong."""
    _isolated(f"t._check_sticky_backstop({card!r})")


@pytest.mark.spice
def test_interp_spelled_opt_gets_ascii_raw_files():
    # ngspice takes any card starting with ".opt"; with allow_control the netlist check does
    # not look, so the subprocess backend must see `interp` itself (binary raw files are wrong)
    deck = (FIXTURES / "rc_interp.cir").read_text().replace(".options interp", ".opt interp")
    tran = simulate(deck, backend="subprocess", allow_control=True)
    np.testing.assert_allclose(tran.time, [0, 5e-4, 1e-3, 1.5e-3, 2e-3], rtol=1e-12, atol=1e-15)


@pytest.mark.spice
def test_shared_run_reads_only_its_own_plots():
    engine = _shared.get_engine()
    with _shared._RUN_LOCK:  # other code using the library leaves a circuit and its .op plot
        engine.load(DIVIDER)
        engine.command("run")
        assert len(engine.plot_names) == 2
    try:
        plots, _ = _shared.run_shared(RC_TRAN, timeout=60)
        assert [p.analysis for p in plots] == ["tran"]
        sub = simulate(RC_TRAN, backend="subprocess")
        np.testing.assert_array_equal(plots[0].columns[0], sub.time)
    finally:
        with _shared._RUN_LOCK:
            engine.command("remcirc")
            engine.command("destroy all")


@pytest.mark.spice
def test_auto_backend_and_find_ngspice():
    assert Path(find_ngspice()).name == "ngspice"
    assert shared_available()
    assert simulate(DIVIDER).backend == "shared"


@pytest.mark.spice
@pytest.mark.parametrize("backend", BACKENDS)
def test_netlist_input_forms(backend, tmp_path):
    path = tmp_path / "divider.cir"
    path.write_text(DIVIDER)
    for netlist in (path, str(path), SimpleNamespace(text=DIVIDER, path=path)):
        op = simulate(netlist, backend=backend)
        assert op.v("2") == pytest.approx(2.0) and op.netlist_path == str(path)
    op = simulate(DIVIDER.replace(".end\n", ""), backend=backend)  # .end is added
    assert op.v("2") == pytest.approx(2.0) and op.netlist_path is None
    op = simulate("\n" + DIVIDER.split("\n", 1)[1], backend=backend)  # blank title line
    assert op.v("2") == pytest.approx(2.0)


# ------------------------------------------------------------------------------ failures


@pytest.mark.spice
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("deck", [VOLTAGE_LOOP, FLOATING], ids=["voltage-loop", "floating-node"])
def test_singular_matrix(backend, deck, tmp_path):
    with pytest.raises(SimulatorError, match="singular matrix") as info:
        simulate(deck, backend=backend, workdir=tmp_path)
    err = info.value
    assert err.reason == "singular-matrix"
    assert "singular matrix" in err.log
    assert err.netlist_path is None and "keep_files=True" in str(err)
    assert list(tmp_path.iterdir()) == []  # a failed run leaves nothing behind by default
    with pytest.raises(SimulatorError, match="singular matrix") as info:
        simulate(deck, backend=backend, workdir=tmp_path, keep_files=True)
    kept = Path(info.value.netlist_path)  # kept for debugging, on request
    assert kept.parent.parent == tmp_path and kept.read_text().startswith(deck.splitlines()[0])
    assert "keep_files=True" not in str(info.value)


@pytest.mark.spice
@pytest.mark.parametrize("backend", BACKENDS)
def test_floating_node_accepted_on_request(backend):
    # ngspice 39 recovers (gmin/source stepping, transient-op fallback); the connected nodes
    # come out less accurate (measured 1.3e-9 off), the floating ones arbitrary
    op = simulate(FLOATING, backend=backend, allow_singular=True)
    assert op.v("2") == pytest.approx(2.0, abs=1e-6)
    assert "singular matrix" in op.log


@pytest.mark.spice
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "deck, said",
    [(UNKNOWN_ELEMENT, "model name is not found"), (BAD_CARD, "TSTEP is invalid")],
    ids=["unknown-element", "bad-card"],
)
def test_parse_error(backend, deck, said, tmp_path):
    with pytest.raises(SimulatorError, match=said) as info:
        simulate(deck, backend=backend, workdir=tmp_path)
    assert info.value.reason == "parse"
    assert "Error on line" in str(info.value)


@pytest.mark.spice
@pytest.mark.parametrize("backend", BACKENDS)
def test_timestep_too_small(backend, tmp_path):
    with pytest.raises(SimulatorError, match="Timestep too small") as info:
        simulate(STIFF, backend=backend, workdir=tmp_path)
    assert info.value.reason == "timestep-too-small"


def _processes_in(directory: Path) -> list[int]:
    """PIDs of processes whose working directory is ``directory``."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if Path(os.readlink(proc / "cwd")) == directory:
                    found.append(int(proc.name))
            except OSError:
                pass
    return found


@pytest.mark.spice
@pytest.mark.parametrize("backend", BACKENDS)
def test_timeout(backend, tmp_path):
    with pytest.raises(SimulatorError, match=r"0\.5 s timeout") as info:
        simulate(LONG_TRAN, backend=backend, timeout=0.5, workdir=tmp_path, keep_files=True)
    err = info.value
    assert err.reason == "timeout"
    run_dir = Path(err.netlist_path).parent
    assert run_dir.parent == tmp_path and Path(err.netlist_path).exists()
    assert _processes_in(run_dir) == []  # ngspice was killed and reaped
    assert simulate(DIVIDER, backend=backend).v("2") == pytest.approx(2.0)  # engine reusable


@pytest.mark.spice
@pytest.mark.parametrize("backend", BACKENDS)
def test_timed_out_run_leaves_nothing_behind(backend, tmp_path, monkeypatch):
    # the partial raw file of a long transient grows by ~20 MB/s: it must go with the run
    import tempfile

    root = tmp_path / "tmp"
    root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(root))  # the default temp root
    before = sorted(root.iterdir())
    with pytest.raises(SimulatorError) as info:
        simulate(LONG_TRAN, backend=backend, timeout=0.3)
    assert info.value.reason == "timeout" and info.value.netlist_path is None
    assert sorted(root.iterdir()) == before == []
    src = tmp_path / "long.cir"
    src.write_text(LONG_TRAN)
    with pytest.raises(SimulatorError) as info:
        simulate(src, backend=backend, timeout=0.3, workdir=tmp_path / "runs")
    assert info.value.netlist_path == str(src)  # the user's own file, not a deleted copy
    assert not (tmp_path / "runs").exists() or list((tmp_path / "runs").iterdir()) == []
    assert simulate(DIVIDER, backend=backend, timeout=float("inf")).v("2") == pytest.approx(2.0)


@pytest.mark.spice
def test_ngspice_not_installed(monkeypatch, tmp_path):
    monkeypatch.setenv("DYADSIM_NGSPICE", str(tmp_path / "nowhere" / "ngspice"))
    with pytest.raises(SimulatorError, match="apt-get install -y ngspice libngspice0-dev") as info:
        find_ngspice()
    assert info.value.reason == "not-installed"
    monkeypatch.delenv("DYADSIM_NGSPICE")
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(SimulatorError, match="not installed") as info:
        simulate(DIVIDER, backend="subprocess", workdir=tmp_path / "runs")
    assert info.value.reason == "not-installed"
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


@pytest.mark.spice
def test_shared_library_missing_falls_back(monkeypatch):
    def no_library():
        raise SimulatorError("no libngspice", reason="not-installed")

    monkeypatch.setattr(_shared, "get_engine", no_library)
    assert not shared_available()
    with pytest.raises(SimulatorError) as info:
        simulate(DIVIDER, backend="shared")
    assert info.value.reason == "not-installed"
    assert simulate(DIVIDER, backend="auto").backend == "subprocess"


@pytest.mark.spice
@pytest.mark.parametrize("backend", BACKENDS)
def test_informational_output_does_not_fail_a_run(backend):
    op = simulate(WARNINGS, backend=backend)
    assert op.v("2") == pytest.approx(2.0)
    assert "Warning: r9: resistance to low" in op.log and "Note:" in op.log


# ------------------------------------------------------------------------------ repetition, files


@pytest.mark.spice
def test_shared_runs_repeat_identically(tmp_path):
    first = simulate(RC_TRAN, backend="shared")
    for i in range(19):
        if i == 5:  # a failure in between leaves the engine clean
            with pytest.raises(SimulatorError):
                simulate(UNKNOWN_ELEMENT, backend="shared", workdir=tmp_path)
        again = simulate(RC_TRAN, backend="shared")
        np.testing.assert_array_equal(again.time, first.time)
        np.testing.assert_array_equal(again.v("out"), first.v("out"))


@pytest.mark.spice
@pytest.mark.parametrize("backend", BACKENDS)
def test_run_directories(backend, tmp_path):
    simulate(DIVIDER, backend=backend, workdir=tmp_path)
    assert list(tmp_path.iterdir()) == []  # removed after success
    op = simulate(DIVIDER, backend=backend, workdir=tmp_path, keep_files=True)
    kept = Path(op.netlist_path)
    assert kept.parent.parent == tmp_path and kept.read_text() == DIVIDER
    assert "Circuit: resistor divider" in (kept.parent / "out.log").read_text()
    if backend == "subprocess":
        assert parse_raw((kept.parent / "out.raw").read_bytes())[0].analysis == "op"


@pytest.mark.spice
def test_simulate_many(tmp_path):
    decks = [DIVIDER, RC_TRAN.replace(".tran 20u 2m 0 2u", ".op"), UNKNOWN_ELEMENT, DIVIDER.replace("DC 3", "DC 6")]
    results = simulate_many(decks, analysis="op", processes=2, return_exceptions=True, workdir=tmp_path)
    assert [type(r).__name__ for r in results] == ["OperatingPoint", "OperatingPoint", "SimulatorError", "OperatingPoint"]
    assert results[0].v("2") == pytest.approx(2.0) and results[3].v("2") == pytest.approx(4.0)
    assert results[1].v("out") == pytest.approx(1.0)
    assert results[2].reason == "parse" and all(r.backend == "subprocess" for r in results if isinstance(r, OperatingPoint))
    with pytest.raises(SimulatorError, match="model name is not found"):
        simulate_many(decks, analysis="op", processes=2, workdir=tmp_path)
    assert simulate_many([], analysis="op") == []


# ------------------------------------------------------------------------------ hardening


@pytest.mark.parametrize("sig", ["SIGKILL", "SIGTERM", "SIGSEGV"])
def test_killed_ngspice_names_the_signal(sig, tmp_path, monkeypatch):
    fake = tmp_path / "ngspice"
    fake.write_text(f"#!/bin/sh\necho 'Note: starting' > out.log\nkill -{sig[3:]} $$\n")
    fake.chmod(0o755)
    monkeypatch.setenv("DYADSIM_NGSPICE", str(fake))
    with pytest.raises(SimulatorError, match=f"killed by signal {sig}") as info:
        simulate(DIVIDER, backend="subprocess", workdir=tmp_path / "runs")
    assert ("crashed" in str(info.value)) == (sig == "SIGSEGV")
    assert list((tmp_path / "runs").iterdir()) == []


def test_netlist_that_is_not_utf8(tmp_path):
    path = tmp_path / "latin1.cir"
    path.write_bytes(DIVIDER.replace("resistor divider", "r\xe9sistance").encode("latin-1"))
    with pytest.raises(DyadsimError, match=r"not UTF-8 text: byte 0xe9 .*line 1") as info:
        simulate(path, backend="subprocess")
    assert str(path) in str(info.value)
    with pytest.raises(DyadsimError, match="not UTF-8"):
        simulate(path.read_bytes(), backend="subprocess")


def test_odd_netlist_strings_are_user_errors(tmp_path):
    for bad in ("x" * 5000, "no\x00file.cir", ""):
        with pytest.raises(DyadsimError):
            simulate(bad)
    with pytest.raises(DyadsimError, match="run directory"):
        simulate(DIVIDER, backend="subprocess", workdir=Path(__file__))  # a file, not a folder


def _small_netlist(analysis):
    import dyadsim

    net = dyadsim.mlp("3-5-2", activation="tanh", seed=0)
    rng = np.random.default_rng(0)
    x, y = rng.random((2, 3)), rng.uniform(-0.5, 0.5, (2, 2))
    return net, x, y, dyadsim.compile_netlist(net, x, y, analysis=analysis)


@pytest.mark.spice
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("analysis", ["op", "tran"])
def test_dyadsim_netlists_save_only_the_readout_nodes(backend, analysis, tmp_path):
    import dyadsim

    net, x, y, nl = _small_netlist(analysis)
    res = simulate(nl, backend=backend, keep_files=True, workdir=tmp_path)
    everything = simulate(nl, backend=backend, keep_files=True, workdir=tmp_path, save="all")
    assert set(res.voltages) == {n.lower() for n in nl.readout_nodes} and res.currents == {}
    assert set(res.voltages) < set(everything.voltages) and everything.saved is None
    assert res.saved == tuple(n.lower() for n in nl.readout_nodes)
    # the readout needs nothing else: its gradients equal those read from the full result
    g, g_all = dyadsim.readout(net, res), dyadsim.readout(net, everything)
    for k in g_all:
        np.testing.assert_array_equal(g[k], g_all[k])
    # a node that was not kept says why, and how to keep it
    m_node = nl.aux_map[(0, net.nodes[0], 0)]["m"]
    with pytest.raises(UnknownVectorError, match="save='all'"):
        res.v(m_node)
    assert everything.v(m_node) is not None
    if backend == "subprocess":  # and the raw file is smaller
        def raw(r):
            return (Path(r.netlist_path).parent / "out.raw").stat().st_size
        assert raw(res) < 0.6 * raw(everything)
    chosen = simulate(nl, backend=backend, save=[nl.input_nodes[(0, 0)]])
    assert list(chosen.voltages) == [nl.input_nodes[(0, 0)].lower()]


def test_netlist_write_is_atomic(tmp_path, monkeypatch):
    import dyadsim._io as io_mod

    _, _, _, nl = _small_netlist("op")
    path = tmp_path / "c.cir"
    path.write_text("old netlist\n")

    def fail(fd):
        raise KeyboardInterrupt  # after every byte was written, before the rename

    monkeypatch.setattr(io_mod.os, "fsync", fail)
    with pytest.raises(KeyboardInterrupt):
        nl.write(path)
    assert path.read_text() == "old netlist\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.cir"]  # no temporary file left
    monkeypatch.undo()
    assert nl.write(path) == path and path.read_text() == nl.text


def test_huge_logs_are_cut_to_head_and_tail(tmp_path):
    from dyadsim.simulator import _subprocess

    lines = [f"line {i}: Reference value" for i in range(200_000)] + ["Error: the last word"]
    (tmp_path / _subprocess.LOG_NAME).write_text("\n".join(lines) + "\n")
    log = _subprocess._read_log(tmp_path, b"", b"")
    assert log.startswith("line 0:") and log.rstrip().endswith("Error: the last word")
    assert "bytes of ngspice output left out" in log
    assert len(log) <= _subprocess.LOG_HEAD_BYTES + _subprocess.LOG_TAIL_BYTES + 100
