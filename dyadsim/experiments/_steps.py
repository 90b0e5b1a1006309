"""The ``steps`` experiment: Euler steps for the readout to reach a tolerance, against eta."""

from __future__ import annotations

import math
import time

import numpy as np

from ..dynamics import System, backprop, relax
from ..errors import ConvergenceError
from ._common import DEPTH9, _digits_case, _figure, _out_dir, _rel_errors, _save_fig, _seed_list, _write_csv, _write_json

def _steps_settings(quick):
    if quick:
        return dict(net="64-16x2-10", batch=4, etas=[0.5, 1.0, 1.5], tols=[1e-4, 1e-8])
    etas = [round(0.05 * k, 2) for k in range(1, 39)]  # 0.05 ... 1.9
    return dict(net=DEPTH9, batch=16, etas=etas, tols=[1e-4, 1e-8, 1e-12])


def _record_errors(net, x, y, eta, K, ref):
    """Max per-tensor relative readout error vs backprop after every Euler step 0..K."""
    r = relax(net, x, y, eta=eta, steps=K, record=True)
    sysm = System(net, x, y)
    hx, hz = r.history_x, r.history_z
    if hx.ndim == 2:  # one sample
        hx, hz = hx[:, None, :], hz[:, None, :]
    errs = np.empty(K + 1)
    with np.errstate(all="ignore"):
        for k in range(K + 1):
            g = sysm.readout(0.5 * (hx[k] + hz[k]), hx[k] - hz[k])
            e = np.max(_rel_errors(g, ref))
            errs[k] = e if np.isfinite(e) else np.inf
    return errs


def _steps_needed(errs, tol):
    """Smallest k with errs[j] <= tol for every recorded j >= k (None if never)."""
    ok = errs <= tol
    if not ok[-1]:
        return None
    bad = np.flatnonzero(~ok)
    return int(bad[-1] + 1) if bad.size else 0


def steps(out_dir, quick=False, seeds=None, progress=True):
    """Euler steps needed for the gradient readout to reach a tolerance, against eta.

    For each eta one relaxation of K steps is recorded (``relax(..., steps=K,
    record=True)``); the readout of every intermediate state is compared with float64
    backprop (maximum over parameter tensors of ||g_k - g|| / ||g||).  "Steps needed" for
    a tolerance is the first step after which the error stays below it up to K.  Next to
    it: what :func:`dyadsim.relax` itself does with its default update-size stopping rule.
    ``seeds`` picks the network seed (the first one is used; default 0).

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
        ``steps.json`` next to ``steps.csv`` and ``steps.png``.
    """
    out = _out_dir(out_dir)
    cfg = _steps_settings(quick)
    seed = _seed_list(seeds, 1)[0]
    net, x, y = _digits_case(cfg, seed)
    ref = backprop(net, x, y)
    L = net.depth
    rows, curves = [], {}
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(cfg["etas"]), desc="steps vs eta", unit="eta")
    t0 = time.perf_counter()
    for eta in cfg["etas"]:
        K = int(math.ceil(70.0 / min(eta, 2.0 - eta))) + 4 * L
        errs = _record_errors(net, x, y, eta, K, ref)
        needed = {t: _steps_needed(errs, t) for t in cfg["tols"]}
        if needed[min(cfg["tols"])] is None:  # not there yet: record twice as long once
            K *= 2
            errs = _record_errors(net, x, y, eta, K, ref)
            needed = {t: _steps_needed(errs, t) for t in cfg["tols"]}
        auto = {"steps": None, "error": None, "stalled": None, "converged": None}
        try:
            ra = relax(net, x, y, eta=eta, max_steps=4 * K)  # bounded: K x 4
            auto = {"steps": ra.steps, "error": float(np.max(_rel_errors(ra.grads, ref))),
                    "stalled": bool(ra.stalled), "converged": bool(ra.converged)}
        except ConvergenceError as exc:  # reported, not fatal
            auto["error"] = None
            auto["note"] = str(exc)
        curves[eta] = errs
        rows.append([eta, *[needed[t] for t in cfg["tols"]],
                     errs[2 * L - 1] if 2 * L - 1 <= K else None,
                     errs[2 * L] if 2 * L <= K else None, float(errs[-1]), K,
                     auto["steps"], auto["error"], auto["stalled"]])
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    tcols = [f"steps_to_{t:.0e}" for t in cfg["tols"]]
    _write_csv(out / "steps.csv",
               ["eta", *tcols, "error_at_2L_minus_1", "error_at_2L", "error_at_K", "K_recorded",
                "relax_auto_steps", "relax_auto_error", "relax_auto_stalled"],
               rows,
               comments=[
                   f"dyadsim steps experiment ({'quick' if quick else 'full'}): {cfg['net']} tanh "
                   f"MLP (depth L={L}, 2L={2 * L}), xent, seed {seed}, {cfg['batch']} digits samples, float64",
                   "steps_to_TOL: measured from ONE recorded relaxation of K_recorded steps per eta "
                   "(relax(..., steps=K, record=True)): the first step k after which the readout's "
                   "max-over-tensors relative error vs float64 backprop stays <= TOL up to K; "
                   "empty = not reached within K",
                   "relax_auto_*: dyadsim.relax(net, x, y, eta, max_steps=4K) with its own default stopping rule "
                   "(update size <= 1e-12, or 'stalled'); its step count, readout error, stalled flag",
               ])
    at1 = next((r for r in rows if r[0] == 1.0), None)
    main_tol = 1e-8 if 1e-8 in cfg["tols"] else cfg["tols"][-1]
    summary = {
        "experiment": "steps", "quick": bool(quick), "network": cfg["net"], "depth": L,
        "two_L": 2 * L, "batch": cfg["batch"], "seed": seed, "dtype": "float64",
        "definition": ("steps needed = first Euler step after which the readout's max per-tensor "
                       "relative error vs float64 backprop stays <= tol, from one recorded run"),
        "tolerances": cfg["tols"], "wall_s": time.perf_counter() - t0,
        "rows": [dict(zip(["eta", *tcols, "error_at_2L_minus_1", "error_at_2L", "error_at_K",
                           "K_recorded", "relax_auto_steps", "relax_auto_error",
                           "relax_auto_stalled"], r)) for r in rows],
    }
    if at1 is not None:
        i = cfg["tols"].index(main_tol)
        summary["steps_at_eta_1"] = at1[1 + i]
        summary["eta_1_equals_2L"] = at1[1 + i] == 2 * L
    valid = [(r[0], r[1 + cfg["tols"].index(main_tol)]) for r in rows
             if r[1 + cfg["tols"].index(main_tol)] is not None]
    if valid:
        e_best, s_best = min(valid, key=lambda t: (t[1], abs(t[0] - 1)))
        summary["fewest_steps"] = {"eta": e_best, "steps": s_best, "tol": main_tol}
    _write_json(out / "steps.json", summary)

    # ---- figure
    fig, axes = _figure(1, 2, size=(10.0, 4.0))
    ax, ax2 = axes[0]
    etas = np.array([r[0] for r in rows])
    markers = ["o", "s", "^", "D"]
    for j, t in enumerate(cfg["tols"]):
        vals = np.array([np.nan if r[1 + j] is None else r[1 + j] for r in rows], dtype=float)
        ax.semilogy(etas, vals, marker=markers[j % 4], ms=4, lw=1.2, label=f"error <= {t:.0e}")
    ax.axhline(2 * L, color="k", ls="--", lw=1)
    ax.text(etas.min(), 2 * L * 0.8, f"2L = {2 * L}", va="top", fontsize=8)
    ax.axvline(1.0, color="gray", ls=":", lw=0.8)
    ax.set_xlabel("Euler step eta (units of tau)")
    ax.set_ylabel("steps until the readout stays within tol")
    ax.set_title(f"steps vs eta (depth {L}, float64; no marker: not reached)", fontsize=9)
    ax.legend(fontsize=8)
    show = [e for e in (1.0, 0.5, 0.2, 0.1, 1.5) if e in curves]
    for e in show:
        errs = curves[e]
        kmax = min(len(errs) - 1, 200)
        k = np.arange(kmax + 1)
        with np.errstate(divide="ignore"):
            ax2.semilogy(k, np.maximum(errs[:kmax + 1], 1e-17), lw=1.2, label=f"eta={e:g}")
    ax2.axvline(2 * L, color="k", ls="--", lw=1)
    ax2.set_xlabel("Euler step k")
    ax2.set_ylabel("max relative gradient error vs backprop")
    ax2.set_title("readout error during relaxation", fontsize=9)
    ax2.legend(fontsize=8)
    fig.suptitle("Relaxation steps: exact at 2L when eta = 1", fontsize=10)
    _save_fig(fig, out / "steps.png")
    return summary
