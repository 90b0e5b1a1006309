"""The ``dynamic-range`` experiment: per-layer readout error against depth, per encoding.

Deep sigmoid networks have error signals d_v that shrink by orders of magnitude per layer
while the activations stay ~0.5: the physical encoding x = m + d/2, z = m - d/2 (and a
circuit at one gain) loses d in the rounding of x and z.  This experiment measures it.
"""

from __future__ import annotations

import math
import time
import warnings

import numpy as np

from ..dynamics import backprop, relax
from ..errors import ConvergenceError, DyadsimError, PrecisionWarning
from ..network import mlp
from ..readout import compare, spice_gradients
from ._common import _figure, _finite, _out_dir, _save_fig, _seed_list, _write_csv, _write_json

__all__ = ["dynamic_range", "DYNAMIC_RANGE_CONFIGS"]

#: the configurations compared: label -> (kind, options)
DYNAMIC_RANGE_CONFIGS = {
    "relax xz float64": ("relax", dict(state="xz", dtype=np.float64)),
    "relax xz float32": ("relax", dict(state="xz", dtype=np.float32)),
    "relax md float64": ("relax", dict(state="md", dtype=np.float64)),
    "ngspice .op gain 1": ("spice", dict(gain=1.0)),
    "ngspice .op gain auto": ("spice", dict(gain="auto")),
}


def _settings(quick):
    if quick:
        return dict(width=4, depths=[2, 6], acts=["sigmoid", "tanh"], batch=2, n_out=3)
    return dict(width=16, depths=[2, 5, 10, 15, 20, 25, 30], acts=["sigmoid", "tanh"], batch=2,
                n_out=4)


def _batch(width, n_out, B, seed):
    rng = np.random.default_rng(seed)
    return rng.random((B, width)), rng.uniform(0.0, 1.0, (B, n_out))


def _layer_extents(net, x, y):
    """{layer: (max|m_v|, max|d_v|)} of float64 backprop (from an exact relaxation)."""
    r = relax(net, x, y, state="md")
    return {v: (float(np.max(np.abs(r.m[..., net.slice(v)]))),
                float(np.max(np.abs(r.d[..., net.slice(v)])))) for v in net.nodes}


def _run(kind, opts, net, x, y):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PrecisionWarning)
        if kind == "relax":
            return relax(net, x, y, **opts).grads
        return spice_gradients(net, x, y, analysis="op", backend="auto", timeout=300, **opts).grads


def dynamic_range(out_dir, quick=False, seeds=None, progress=True):
    """Per-layer readout error against depth for the exact and physical encodings and circuits.

    Sigmoid and tanh MLPs (width 16, mse, depth L up to 30; weights ``N(0, 1/fan_in)``),
    a batch of 2, each compared per parameter tensor with float64 backprop.  Configurations
    (:data:`DYNAMIC_RANGE_CONFIGS`): ``relax`` with ``state="xz"`` in float64 and float32,
    ``state="md"`` in float64, and ngspice ``.op`` with gain 1 and with ``gain="auto"``.
    Per layer v the error is the worst relative error of the tensors feeding v (W into v
    and b_v); the *equivalent analog offset* is ``error * max|d_v|`` volts: the offset on
    x (or z) at gain 1 that would shift d_v by the same relative amount
    (docs/experiments.md, section 6).

    Parameters
    ----------
    out_dir : path-like
        Folder for ``dynamic_range.png``, ``.csv`` and ``.json``.
    quick : bool
        Width 4, depths 2 and 6 (seconds).
    seeds : int or list, optional
        The network and batch seed (first entry; default 0).
    progress : bool
        Print one line per network (stderr).

    Returns
    -------
    dict
        The JSON summary.
    """
    import sys

    out = _out_dir(out_dir)
    cfg = _settings(quick)
    seed = _seed_list(seeds, 1)[0]
    t0 = time.perf_counter()
    rows, table = [], {}
    for act in cfg["acts"]:
        for L in cfg["depths"]:
            sizes = f"{cfg['width']}-" + (f"{cfg['width']}x{L - 1}-" if L > 1 else "") + str(cfg["n_out"])
            net = mlp(sizes, activation=act, loss="mse", seed=seed)
            x, y = _batch(cfg["width"], cfg["n_out"], cfg["batch"], seed)
            ref = backprop(net, x, y)
            ext = _layer_extents(net, x, y)
            for label, (kind, opts) in DYNAMIC_RANGE_CONFIGS.items():
                try:
                    g = _run(kind, opts, net, x, y)
                    tensors = compare(g, ref).tensors
                    note = ""
                except (ConvergenceError, DyadsimError) as e:
                    tensors, note = None, f"{type(e).__name__}: {str(e)[:120]}"
                per_layer = {}
                for v in net.nodes:
                    keys = [k for k in ref if (k[0] == "W" and k[2] == v) or (k[0] == "b" and k[1] == v)]
                    if tensors is None:
                        err, name = math.nan, ""
                    else:
                        errs = {k: tensors[k].rel_error for k in keys}
                        kw = max(errs, key=lambda k: errs[k] if math.isfinite(errs[k]) else math.inf)
                        err, name = float(errs[kw]), tensors[kw].name
                    mm, md = ext[v]
                    per_layer[v] = err
                    rows.append([label, act, L, str(v), net.block(v).depth, name, err, mm, md,
                                 err * md, note])
                worst = max((e for e in per_layer.values()), default=math.nan,
                            key=lambda e: e if math.isfinite(e) else math.inf)
                table.setdefault(label, {}).setdefault(act, {})[str(L)] = _finite(worst)
            if progress:
                print(f"dynamic-range: {act} L={L} done ({time.perf_counter() - t0:.1f} s)",
                      file=sys.stderr)
    header = ["config", "activation", "depth", "layer", "layer_index", "worst_tensor",
              "rel_error", "max_m", "max_d", "offset_equiv_V", "note"]
    _write_csv(out / "dynamic_range.csv", header, rows, comments=[
        f"dyadsim dynamic-range experiment ({'quick' if quick else 'full'}): width {cfg['width']} "
        f"MLPs, mse, seed {seed}, batch {cfg['batch']}; reference float64 backprop",
        "rel_error: the worst relative error of the tensors feeding the layer (W into it, its b); "
        "max_m, max_d: its largest activation and error signal (float64 backprop)",
        "offset_equiv_V = rel_error * max_d: the x/z offset (volts, at gain 1) that would cause "
        "the same relative error of d",
    ])
    limits = {}
    for label, per_act in table.items():
        limits[label] = {}
        for act, by_depth in per_act.items():
            ok = [int(L) for L, e in by_depth.items() if e is not None and e <= 1e-7]
            bad = [int(L) for L, e in by_depth.items() if e is None or e > 1e-7]
            limits[label][act] = {"deepest_within_1e-7": max(ok) if ok else None,
                                  "shallowest_over_1e-7": min(bad) if bad else None}
    summary = {"experiment": "dynamic-range", "quick": bool(quick), "width": cfg["width"],
               "depths": cfg["depths"], "activations": cfg["acts"], "loss": "mse",
               "batch": cfg["batch"], "seed": seed, "reference": "backprop float64",
               "worst_rel_error": table, "limits_at_1e-7": limits,
               "wall_s": time.perf_counter() - t0}
    _write_json(out / "dynamic_range.json", summary)

    # ---- figure: worst error vs depth (left), per-layer error and offset at the largest L
    fig, axes = _figure(len(cfg["acts"]), 3, size=(14.0, 4.0 * len(cfg["acts"])))
    colors = dict(zip(DYNAMIC_RANGE_CONFIGS, ["tab:red", "tab:orange", "tab:blue", "tab:gray",
                                                "tab:green"]))
    Lmax = max(cfg["depths"])

    def lg(v):
        return math.log10(max(v, 1e-17)) if v is not None and math.isfinite(v) else np.nan

    for r_i, act in enumerate(cfg["acts"]):
        a1, a2, a3 = axes[r_i]
        for label in DYNAMIC_RANGE_CONFIGS:
            d = table[label][act]
            a1.plot([int(L) for L in d], [lg(e) for e in d.values()], marker="o", ms=4,
                    color=colors[label], label=label)
            sel = [r for r in rows if r[0] == label and r[1] == act and r[2] == Lmax]
            a2.plot([r[4] for r in sel], [lg(r[6]) for r in sel], marker="o", ms=3,
                    color=colors[label], label=label)
            a3.plot([r[4] for r in sel], [lg(r[9]) for r in sel], marker="o", ms=3,
                    color=colors[label], label=label)
        a1.axhline(-7, color="k", lw=0.6, ls=":")
        a1.set_xlabel("depth L")
        a1.set_ylabel(f"{act}: log10 worst rel. error")
        a1.set_title("worst tensor over all layers vs depth", fontsize=9)
        a2.set_xlabel(f"layer (L = {Lmax})")
        a2.set_title("per-layer error (worst tensor feeding the layer)", fontsize=9)
        a3.set_xlabel(f"layer (L = {Lmax})")
        a3.set_title("equivalent x/z offset = error * max|d| (V, gain 1)", fontsize=9)
        a1.legend(fontsize=7)
    fig.suptitle(f"Dynamic range of the dyadic encoding: width-{cfg['width']} MLPs, mse, vs "
                 "float64 backprop (values below 1e-17 drawn at -17)", fontsize=10)
    _save_fig(fig, out / "dynamic_range.png")
    return summary
