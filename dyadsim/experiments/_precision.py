"""The ``precision`` experiment: layer-wise agreement of relaxed gradients with backprop."""

from __future__ import annotations

import math
import time

import numpy as np

from ..dynamics import backprop, relax
from ..readout import compare
from ._common import DEPTH9, _digits_case, _figure, _out_dir, _save_fig, _seed_list, _write_csv, _write_json

def _precision_settings(quick):
    if quick:
        return dict(net="64-16x2-10", batch=8, configs=[(1.0, None), (0.5, 60)])
    return dict(net=DEPTH9, batch=64, configs=[(1.0, None), (0.5, 200)])


def precision(out_dir, quick=False, seeds=None, progress=True):
    """Layer-wise agreement of relaxed gradients with backprop in float32 and float64.

    For each dtype: DBP-Euler at eta = 1 (2L steps) and at eta = 0.5 (a fixed number of
    steps, well past convergence), plus digital backprop in float32.  Each is compared
    with float64 backprop per parameter tensor: relative error, norm ratio, misalignment
    angle (log10 of radians), and the split of the squared relative error into its norm
    part (ratio - 1)^2 and its direction part 2*ratio*(1 - cos theta).
    ``seeds`` picks the network seed (first entry; default 0).

    Parameters
    ----------
    out_dir : str or path-like
        The folder the CSV, JSON and PNG files go to (created if missing).
    quick : bool, optional
        Small settings for a fast check (default False: the full experiment).
    seeds : int, sequence of int or None, optional
        A count or a list of seeds; only the first (0 for a count) seeds the network.
        None: seed 0.
    progress : bool, optional
        Show progress bars (default True).

    Returns
    -------
    dict
        The summary (settings, seeds, wall time and the results), also written to
        ``precision.json`` next to ``precision.csv`` and ``precision.png``.
    """
    out = _out_dir(out_dir)
    cfg = _precision_settings(quick)
    seed = _seed_list(seeds, 1)[0]
    net, x, y = _digits_case(cfg, seed)
    L = net.depth
    ref64 = backprop(net, x, y, dtype=np.float64)
    t0 = time.perf_counter()
    results = {}
    for dtype in (np.float32, np.float64):
        dn = np.dtype(dtype).name
        ref_same = backprop(net, x, y, dtype=dtype)
        if dtype is not np.float64:  # float64 backprop is the reference itself
            results[(f"backprop {dn}", dn)] = (ref_same, None, "backprop", None)
        for eta, n in cfg["configs"]:
            r = relax(net, x, y, eta=eta, steps=n, dtype=dtype)
            results[(f"DBP eta={eta:g} {dn}", dn)] = (r.grads, ref_same, "euler", (eta, r.steps))
    rows = []
    table = {}
    for (label, dn), (g, ref_same, method, extra) in results.items():
        cmp64 = compare(g, ref64)
        cmps = compare(g, ref_same) if ref_same is not None else None
        per = []
        for key, m in cmp64.tensors.items():
            ratio, th, rel = m.norm_ratio, m.angle, m.rel_error
            dir_part = 4.0 * ratio * math.sin(0.5 * th) ** 2  # = 2r(1 - cos th), no cancellation
            norm_part = (ratio - 1.0) ** 2
            tot = norm_part + dir_part
            frac = norm_part / tot if tot > 0 else None
            ms = cmps.tensors[key] if cmps is not None else None
            row = [label, method, "" if extra is None else extra[0],
                   "" if extra is None else extra[1], dn, m.name, key[0],
                   net.block(key[-1]).depth, m.size, rel, ratio, ratio - 1.0, th, m.log10_angle,
                   frac, None if ms is None else ms.rel_error,
                   None if ms is None else ms.log10_angle]
            rows.append(row)
            per.append(row)
        w = [r for r in per if r[6] == "W"]
        la = [r[13] for r in w if math.isfinite(r[13])]
        table[label] = {
            "dtype": dn, "method": method,
            "eta": None if extra is None else extra[0], "steps": None if extra is None else extra[1],
            "summary_vs_float64_backprop": cmp64.summary.to_dict(),
            "weights_log10_angle_range": [min(la), max(la)] if la else None,
            "weights_rel_error_range": [min(r[9] for r in w), max(r[9] for r in w)],
            "weights_abs_norm_ratio_minus_1_range": [min(abs(r[11]) for r in w),
                                                     max(abs(r[11]) for r in w)],
            "weights_norm_fraction_of_sq_error_mean": float(np.mean([r[14] for r in w
                                                                     if r[14] is not None]))
            if any(r[14] is not None for r in w) else None,
            "summary_vs_same_dtype_backprop": None if cmps is None else cmps.summary.to_dict(),
        }
    header = ["config", "method", "eta", "steps", "dtype", "tensor", "kind", "layer", "size",
              "rel_error", "norm_ratio", "norm_ratio_minus_1", "angle_rad", "log10_angle",
              "norm_fraction_of_sq_error", "rel_error_vs_same_dtype_backprop",
              "log10_angle_vs_same_dtype_backprop"]
    _write_csv(out / "precision.csv", header, rows, comments=[
        f"dyadsim precision experiment ({'quick' if quick else 'full'}): {cfg['net']} tanh MLP "
        f"(depth {L}), xent, seed {seed}, initial weights, {cfg['batch']} digits samples",
        "every config is compared with float64 backprop; angle = 2*atan2(|a^-b^|,|a^+b^|) in "
        "radians, log10_angle = log10 of it (not of 1-cos)",
        "norm_fraction_of_sq_error = (r-1)^2 / ((r-1)^2 + 2r(1-cos theta)), r = norm ratio: "
        "the share of the squared relative error due to norm mismatch (rest: direction)",
    ])
    summary = {"experiment": "precision", "quick": bool(quick), "network": cfg["net"],
               "depth": L, "batch": cfg["batch"], "seed": seed, "reference": "backprop float64",
               "wall_s": time.perf_counter() - t0, "configs": table}
    f32 = [lab for lab in table if lab.startswith("DBP") and table[lab]["dtype"] == "float32"]
    if f32:
        lo = min(table[lab]["weights_log10_angle_range"][0] for lab in f32)
        hi = max(table[lab]["weights_log10_angle_range"][1] for lab in f32)
        summary["float32_dbp_weight_log10_angle_range"] = [lo, hi]
        summary["float32_within_1e-8_to_1e-6"] = bool(lo >= -8.0 and hi <= -6.0)
    _write_json(out / "precision.json", summary)

    # ---- figure
    fig, axes = _figure(1, 3, size=(12.0, 4.0))
    a1, a2, a3 = axes[0]
    colors = {"float32": ["tab:red", "tab:orange", "tab:brown"],
              "float64": ["tab:blue", "tab:cyan", "tab:purple"]}
    idx = {"float32": 0, "float64": 0}
    for label in table:
        w = [r for r in rows if r[0] == label and r[6] == "W"]
        layers = [r[7] for r in w]
        dn = table[label]["dtype"]
        c = colors[dn][idx[dn] % 3]
        idx[dn] += 1
        ls = "-" if label.startswith("DBP") else ":"
        mk = "o" if dn == "float32" else "s"
        with np.errstate(divide="ignore"):
            la = [r[13] if math.isfinite(r[13]) else np.nan for r in w]
            lre = [math.log10(r[9]) if r[9] > 0 else np.nan for r in w]
            lnr = [math.log10(max(abs(r[11]), 1e-17)) for r in w]  # exactly 1 -> floor
        a1.plot(layers, la, ls=ls, marker=mk, ms=4, color=c, label=label)
        a2.plot(layers, lnr, ls=ls, marker=mk, ms=4, color=c, label=label)
        a3.plot(layers, lre, ls=ls, marker=mk, ms=4, color=c, label=label)
    a1.axhspan(-8, -6, color="tab:red", alpha=0.08, lw=0)
    a1.set_title("direction: log10 misalignment angle (rad)", fontsize=9)
    a2.set_title("norm: log10 |norm ratio - 1|  (ratio exactly 1 drawn at -17)", fontsize=9)
    a3.set_title("log10 relative error", fontsize=9)
    for a in (a1, a2, a3):
        a.set_xlabel("layer (weight matrix W_l)")
        a.set_xticks(sorted({r[7] for r in rows}))
    a1.set_ylabel("log10 (vs float64 backprop)")
    a1.legend(fontsize=7)
    fig.suptitle(f"Layer-wise gradient precision, {cfg['net']} tanh (depth {L}); shaded: "
                 "1e-8..1e-6 rad", fontsize=10)
    _save_fig(fig, out / "precision.png")
    return summary
