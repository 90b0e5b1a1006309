"""Golden netlists: regenerated text must equal the checked-in files, and each runs in
ngspice to gradients that match backprop."""

import importlib.util
from pathlib import Path

import pytest

import dyadsim

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("regenerate", ROOT / "netlists" / "regenerate.py")
regen = importlib.util.module_from_spec(spec)
spec.loader.exec_module(regen)
EXAMPLES = regen.examples()


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_golden_netlist_is_current(name):
    net, x, y, opts = EXAMPLES[name]
    text = regen.render(name, net, x, y, opts)
    golden = (ROOT / "netlists" / name).read_text()
    assert text == golden, f"netlists/{name} is out of date: run python netlists/regenerate.py"


@pytest.mark.spice
@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_golden_netlist_runs_to_backprop(name):
    net, x, y, opts = EXAMPLES[name]
    path = ROOT / "netlists" / name
    res = dyadsim.simulate(path, analysis=opts["analysis"], backend="subprocess")
    grads = dyadsim.readout(net, res)
    cmp = dyadsim.compare(grads, dyadsim.backprop(net, x, y))
    assert cmp.max_rel_error <= 1e-6, cmp.table()


def test_both_dialects_have_golden_files():
    device = {n for n, (*_, opts) in EXAMPLES.items() if opts.get("dialect") == "device"}
    assert device and len(device) < len(EXAMPLES)
    for name in EXAMPLES:
        text = (ROOT / "netlists" / name).read_text()
        # transistors and their .model cards in the device dialect only
        assert (".model qn npn(" in text) == (name in device), name
        assert any(ln.startswith("Q") for ln in text.splitlines()) == (name in device), name
    analyses = {opts["analysis"] for n, (*_, opts) in EXAMPLES.items() if n in device}
    assert analyses == {"op", "tran"}


def test_check_mode_detects_a_stale_file(tmp_path, monkeypatch):
    monkeypatch.setattr(regen, "HERE", tmp_path)
    assert regen.main(["--check"]) == 1  # nothing there yet
    assert regen.main([]) == 0
    assert regen.main(["--check"]) == 0
    victim = sorted(EXAMPLES)[0]
    (tmp_path / victim).write_text((tmp_path / victim).read_text().replace("0.5*", "0.6*", 1))
    assert regen.main(["--check"]) == 1
