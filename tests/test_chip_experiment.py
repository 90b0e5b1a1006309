"""The ``hardware`` experiment (quick mode): files, and its two built-in oracles: the ideal
chip of every axis trains exactly like backprop (same batches, same weights), and its
gradient has no misalignment."""

from __future__ import annotations

import json
import math

from dyadsim.experiments import HARDWARE_AXES, run_experiment


def test_hardware_quick(tmp_path):
    s = run_experiment("hardware", tmp_path, quick=True, progress=False)
    for ext in ("png", "csv", "json"):
        assert (tmp_path / f"hardware.{ext}").stat().st_size > 0
    assert json.loads((tmp_path / "hardware.json").read_text())["experiment"] == "hardware"
    assert set(s["axes"]) == set(HARDWARE_AXES)
    ref = s["backprop_test_accuracy_mean"]
    for axis, d in s["axes"].items():
        first, last = d["points"][0], d["points"][-1]
        fixed = {k for k in HARDWARE_AXES[axis][0] if k != "crossbar"}
        if not fixed:  # the ideal end of the axis is the ideal chip
            assert first["test_accuracy_mean"] == ref, axis
            assert first["angle_vs_chip_network_mean"] < 1e-12, axis
        assert len(d["points"]) == 2
    gain = s["axes"]["cost gain (offset 0.01 V)"]["points"]
    assert gain[-1]["angle_vs_chip_network_mean"] < gain[0]["angle_vs_chip_network_mean"]
    sep = s["axes"]["mismatch (separate)"]["points"][-1]
    shared = s["axes"]["mismatch (shared)"]["points"][-1]
    assert sep["angle_vs_chip_network_mean"] > 1e-2  # separate crossbars misalign
    assert shared["angle_vs_chip_network_mean"] < 1e-10  # a shared crossbar does not
    assert all(math.isfinite(p["angle_vs_network_mean"]) for d in s["axes"].values() for p in d["points"])
