"""The ``dynamic-range`` experiment (quick mode): files, CLI, and what it must show."""

from __future__ import annotations

import csv
import json

import pytest
from click.testing import CliRunner

from dyadsim.cli import cli
from dyadsim.experiments import DYNAMIC_RANGE_CONFIGS, run_experiment


@pytest.mark.spice
def test_dynamic_range_quick(tmp_path):
    s = run_experiment("dynamic-range", tmp_path, quick=True, progress=False)
    for ext in ("png", "csv", "json"):
        assert (tmp_path / f"dynamic_range.{ext}").stat().st_size > 0
    assert json.loads((tmp_path / "dynamic_range.json").read_text())["experiment"] == "dynamic-range"
    assert set(s["worst_rel_error"]) == set(DYNAMIC_RANGE_CONFIGS)
    w = s["worst_rel_error"]
    # the exact encoding and the staged circuit stay at the float64 floor; float32 xz does not
    for act in ("sigmoid", "tanh"):
        for L, e in w["relax md float64"][act].items():
            assert e <= 1e-12, (act, L, e)
        for L, e in w["ngspice .op gain auto"][act].items():
            assert e <= 1e-9, (act, L, e)
        assert max(w["relax xz float32"][act].values()) > 1e-8
    with open(tmp_path / "dynamic_range.csv") as fh:
        rows = [r for r in csv.reader(ln for ln in fh if not ln.startswith("#"))]
    head, body = rows[0], rows[1:]
    i_err, i_d, i_off = (head.index(k) for k in ("rel_error", "max_d", "offset_equiv_V"))
    for r in body:  # offset = error * max|d|, by definition
        assert float(r[i_off]) == pytest.approx(float(r[i_err]) * float(r[i_d]), rel=1e-12)


@pytest.mark.spice
def test_dynamic_range_cli(tmp_path):
    res = CliRunner().invoke(cli, ["experiment", "dynamic-range", "--out", str(tmp_path),
                                   "--quick", "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "dynamic_range.png" in res.output and "deepest L within 1e-7" in res.output
