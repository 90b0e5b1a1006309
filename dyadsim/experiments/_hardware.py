"""The ``hardware`` experiment: which imperfection of an analog chip breaks DBP first.

For every axis (one non-ideality) and value, and every seed: one chip is sampled
(``Chip.sample(net, seed=seed, **options)``) and the depth-9 tanh MLP is trained on
digits with that chip's gradients (:func:`dyadsim.train` with ``chip=``), from the same
initial weights and on the same minibatches as the backprop reference of that seed.
Recorded: the final test accuracy of the ideal network and of the chip's own inference,
and, at the initial weights on a fixed batch of 256 test images, the misalignment of the
chip's gradient against backprop of the nominal network and against backprop of the
network the chip computes (``chip.network``: the part DBP itself adds).
"""

from __future__ import annotations

import time

import numpy as np

from ..datasets import digits
from ..dynamics import Chip, backprop, relax_chips
from ..network import mlp
from ..readout import compare
from ..training import train
from ._common import DEPTH9, _figure, _out_dir, _save_fig, _seed_list, _write_csv, _write_json

__all__ = ["hardware", "HARDWARE_AXES"]

#: axis name -> (fixed chip options, the option varied, its values); the first value of
#: every axis without fixed non-idealities is the ideal chip (it trains exactly like
#: backprop); the last axis asks whether the cost gain rescues a chip with offsets
HARDWARE_AXES = {
    "mismatch (separate)": ({"crossbar": "separate"}, "mismatch", (0.0, 0.05, 0.1, 0.2)),
    "mismatch (shared)": ({"crossbar": "shared"}, "mismatch", (0.0, 0.05, 0.1, 0.2)),
    "derivative mismatch": ({}, "derivative_mismatch", (0.0, 0.05, 0.1, 0.2)),
    "activation mismatch": ({}, "activation_mismatch", (0.0, 0.05, 0.1, 0.2)),
    "offset (V)": ({}, "offset", (0.0, 1e-3, 1e-2, 3e-2)),
    "noise (V rms)": ({}, "noise", (0.0, 1e-3, 1e-2, 3e-2)),
    "weight bits": ({}, "bits", (None, 8, 6, 4, 2)),
    "ADC bits": ({}, "adc_bits", (None, 12, 8, 6, 4)),
    "on/off ratio (mismatch 0.05)": ({"mismatch": 0.05}, "g_range", (None, 100.0, 10.0, 3.0)),
    "cost gain (offset 0.01 V)": ({"offset": 0.01}, "gain", (1.0, 10.0, 100.0)),
}


def _settings(quick):
    if quick:
        return dict(net="64-16x2-10", data_subset=(160, 80), epochs=1, batch_size=32,
                    optimizer="adam", lr=1e-2, seeds=1, values=2, grad_batch=32)
    return dict(net=DEPTH9, data_subset=None, epochs=5, batch_size=32, optimizer="adam",
                lr=1e-3, seeds=3, values=None, grad_batch=256)


def _axes(cfg):
    if cfg["values"] is None:
        return HARDWARE_AXES
    return {k: (f, o, v[:1] + v[-cfg["values"] + 1:]) for k, (f, o, v) in HARDWARE_AXES.items()}


def hardware(out_dir, quick=False, seeds=None, progress=True):
    """Final accuracy and gradient misalignment against the size of each non-ideality.

    Parameters
    ----------
    out_dir : str or path-like
        Folder for ``hardware.png``, ``hardware.csv``, ``hardware.json``.
    quick : bool
        A small network, one epoch, two values per axis, one seed (seconds).
    seeds : int or sequence of int, optional
        Default 3 (1 with ``quick``).
    progress : bool

    Returns
    -------
    dict
        The summary written to ``hardware.json``.
    """
    out = _out_dir(out_dir)
    cfg = _settings(quick)
    seed_list = _seed_list(seeds, cfg["seeds"])
    data = digits(seed=0)
    if cfg["data_subset"]:
        data = data.subset(*cfg["data_subset"])
    xg = data.x_test[:cfg["grad_batch"]]
    yg = data.y_test[:cfg["grad_batch"]]
    t0 = time.perf_counter()
    common = dict(optimizer=cfg["optimizer"], lr=cfg["lr"], epochs=cfg["epochs"],
                  batch_size=cfg["batch_size"], progress=False)
    ref_acc = {}
    for s in seed_list:
        h = train(mlp(cfg["net"], activation="tanh", loss="xent", seed=s), data, seed=s, **common)
        ref_acc[s] = h.test_accuracy[-1]
    rows = []
    axes = _axes(cfg)
    for axis, (fixed, option, values) in axes.items():
        for val in values:
            for s in seed_list:
                opts = dict(fixed)
                opts[option] = val
                net = mlp(cfg["net"], activation="tanh", loss="xent", seed=s)
                chip = Chip.sample(net, seed=s, **opts)
                g = relax_chips(chip, xg, yg).grads[0]
                ang_net = compare(g, backprop(net, xg, yg)).summary.angle
                ang_chip = compare(g, backprop(chip.network, xg, yg)).summary.angle
                tt = time.perf_counter()
                try:
                    h = train(net, data, seed=s, chip=chip, **common)
                    acc, chip_acc, stop = h.test_accuracy[-1], h.chip["test_accuracy"][-1], ""
                except Exception as exc:  # noqa: BLE001 -- a diverged run is a result
                    acc, chip_acc, stop = float("nan"), float("nan"), type(exc).__name__
                rows.append([axis, option, "" if val is None else val, s, acc, chip_acc,
                             ref_acc[s], ang_net, ang_chip, time.perf_counter() - tt, stop])
                if progress:
                    import sys

                    print(f"hardware: {axis} = {val}, seed {s}: test acc {acc:.4f} (chip "
                          f"{chip_acc:.4f}, backprop {ref_acc[s]:.4f}), angle {ang_chip:.3g}",
                          file=sys.stderr, flush=True)
    header = ["axis", "option", "value", "seed", "test_accuracy", "chip_test_accuracy",
              "backprop_test_accuracy", "angle_vs_network", "angle_vs_chip_network",
              "train_s", "failed"]
    _write_csv(out / "hardware.csv", header, rows, comments=[
        f"dyadsim hardware experiment ({'quick' if quick else 'full'}): {cfg['net']} tanh MLP, "
        f"xent, digits, {cfg['optimizer']} lr={cfg['lr']}, {cfg['epochs']} epochs, batch "
        f"{cfg['batch_size']}; chip = Chip.sample(net, seed=seed, **options); angles at the "
        f"initial weights on the first {cfg['grad_batch']} test images"])
    per_axis = {}
    for axis, (fixed, option, values) in axes.items():
        pts = []
        for val in values:
            sel = [r for r in rows if r[0] == axis and (r[2] == ("" if val is None else val))]
            acc = np.array([r[4] for r in sel], dtype=float)
            pts.append({"value": val, "test_accuracy_mean": float(np.nanmean(acc)) if np.any(np.isfinite(acc)) else None,
                        "test_accuracy_min": float(np.nanmin(acc)) if np.any(np.isfinite(acc)) else None,
                        "chip_test_accuracy_mean": float(np.nanmean([r[5] for r in sel])),
                        "angle_vs_network_mean": float(np.mean([r[7] for r in sel])),
                        "angle_vs_chip_network_mean": float(np.mean([r[8] for r in sel])),
                        "failed": int(sum(1 for r in sel if r[10]))})
        per_axis[axis] = {"option": option, "fixed": fixed, "points": pts}
    ref_mean = float(np.mean(list(ref_acc.values())))
    summary = {"experiment": "hardware", "quick": bool(quick), "settings": cfg,
               "seeds": seed_list, "backprop_test_accuracy": ref_acc,
               "backprop_test_accuracy_mean": ref_mean, "axes": per_axis,
               "wall_s": time.perf_counter() - t0}
    _write_json(out / "hardware.json", summary)
    _plot(out / "hardware.png", per_axis, ref_mean)
    return summary


def _plot(path, per_axis, ref_mean):
    n = len(per_axis)
    ncols = 3
    nrows = -(-n // ncols)
    fig, axes = _figure(nrows, ncols, size=(4.0 * ncols, 3.0 * nrows))
    for k, (axis, d) in enumerate(per_axis.items()):
        ax = axes[k // ncols][k % ncols]
        pts = d["points"]
        xs = np.arange(len(pts))
        acc = [p["test_accuracy_mean"] if p["test_accuracy_mean"] is not None else np.nan for p in pts]
        ax.plot(xs, np.array(acc) * 100, "o-", label="DBP on the chip (ideal-net accuracy)")
        ax.plot(xs, np.array([p["chip_test_accuracy_mean"] for p in pts]) * 100, "s--",
                label="chip inference")
        ax.axhline(ref_mean * 100, color="k", lw=0.8, label="backprop")
        ax.set_xticks(xs)
        ax.set_xticklabels(["ideal" if p["value"] is None or p["value"] == 0 else f"{p['value']:g}"
                            for p in pts])
        ax.set_title(axis, fontsize=9)
        ax.set_ylabel("test accuracy (%)")
        a2 = ax.twinx()
        a2.semilogy(xs, [max(p["angle_vs_chip_network_mean"], 1e-17) for p in pts], "^:",
                    color="tab:red")
        a2.set_ylim(1e-17, 10.0)  # one scale for every panel: 1e-16 is rounding
        a2.set_ylabel("DBP angle vs chip.network (rad)", color="tab:red", fontsize=7)
        if k == 0:
            ax.legend(fontsize=7, loc="lower left")
    for k in range(n, nrows * ncols):
        axes[k // ncols][k % ncols].set_visible(False)
    _save_fig(fig, path)
