"""Experiments that regenerate the source article's claims as figures plus numbers.

Each experiment writes ``NAME.png`` (matplotlib, Agg canvas), ``NAME.csv`` and
``NAME.json`` into an output folder and returns the JSON summary as a dict:

* ``accuracy``  -- test accuracy per epoch, backprop vs DBP-Euler at eta = 1, 0.5, 0.2, 0.1
  (depth-9 tanh MLP 64-64x8-10 on digits, softmax cross-entropy, Adam), mean and spread
  over seeds.
* ``steps``     -- Euler steps needed for the readout to reach a gradient tolerance, against
  eta, with the 2L bound (2L = 18 for depth 9).
* ``precision`` -- layer-wise misalignment angle, relative error and norm ratio of the
  relaxed gradients in float32 and float64, split into norm and direction error.
* ``analog``    -- a small network trained with ngspice gradients (``method="spice"``)
  next to backprop on the same minibatches.

``quick=True`` shrinks every setting so that a run takes seconds (for tests); the full
settings are the ones documented in ``docs/experiments.md``.

>>> from dyadsim.training.experiments import run_experiment
>>> summary = run_experiment("steps", "out/", quick=True)
"""

from __future__ import annotations

import csv
import json
import math
import os
import time
from pathlib import Path

import numpy as np

from ..errors import DyadsimError

__all__ = ["EXPERIMENTS", "run_experiment", "accuracy", "steps", "precision", "analog",
           "DEPTH9", "EULER_STEP_BUDGET"]

#: The article's network: a depth-9 tanh MLP on 8x8 digits (64 inputs, 8 hidden layers
#: of 64, 10 outputs), softmax cross-entropy.
DEPTH9 = "64-64x8-10"

#: Fixed Euler step budgets used to train at eta < 1 in the ``accuracy`` experiment: the
#: steps the full ``steps`` experiment measured for the readout of the initial depth-9
#: network to stay within a relative gradient error of 1e-12 (100, 291, 606), rounded up
#: to a multiple of 10; eta = 1 needs exactly 2L = 18.  See docs/experiments.md.
EULER_STEP_BUDGET = {1.0: 18, 0.5: 100, 0.2: 300, 0.1: 610}


# ------------------------------------------------------------------------------ helpers
def _figure(nrows=1, ncols=1, size=(6.4, 4.0)):
    """A matplotlib Figure on an Agg canvas (no pyplot, no global backend switch)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


def _save_fig(fig, path, dpi=100):
    fig.savefig(path, dpi=dpi)
    return Path(path)


def _out_dir(out_dir) -> Path:
    if out_dir is None:
        raise DyadsimError("out_dir is required: the folder the figures and numbers go to")
    p = Path(out_dir)
    p.mkdir(parents=True, exist_ok=True)
    return p


def _write_csv(path, header, rows, comments=()):
    with open(path, "w", newline="") as fh:
        for c in comments:
            fh.write(f"# {c}\n")
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(header)
        for r in rows:
            w.writerow(["" if v is None else (repr(float(v)) if isinstance(v, (float, np.floating))
                                              else v) for v in r])
    return Path(path)


def _finite(v):
    if v is None:
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def _write_json(path, obj):
    def clean(o):
        if isinstance(o, dict):
            return {str(k): clean(v) for k, v in o.items()}
        if isinstance(o, (list, tuple)):
            return [clean(v) for v in o]
        if isinstance(o, (np.integer,)):
            return int(o)
        if isinstance(o, (float, np.floating)):
            return _finite(o)
        if isinstance(o, (np.bool_,)):
            return bool(o)
        if isinstance(o, Path):
            return str(o)
        return o

    Path(path).write_text(json.dumps(clean(obj), indent=2) + "\n")
    return Path(path)


def _seed_list(seeds, default):
    if seeds is None:
        seeds = default
    if isinstance(seeds, (int, np.integer)) and not isinstance(seeds, bool):
        if seeds < 1:
            raise DyadsimError(f"seeds must be >= 1 (a count) or a list of seeds, got {seeds}")
        return list(range(int(seeds)))
    try:
        out = [int(s) for s in seeds]
    except (TypeError, ValueError):
        raise DyadsimError(f"seeds must be a count or a list of integers, got {seeds!r}") from None
    if not out or any(s < 0 for s in out):
        raise DyadsimError(f"seeds must be non-negative integers, got {seeds!r}")
    return out


def _label(method, eta):
    return "backprop" if method == "backprop" else f"DBP Euler eta={eta:g}"


def _rel_errors(grads, ref):
    """Per-tensor relative errors ||g - r|| / ||r|| (float64)."""
    out = []
    for k, r in ref.items():
        nr = np.linalg.norm(r)
        diff = np.linalg.norm(np.asarray(grads[k], dtype=np.float64) - r)
        out.append(diff / nr if nr > 0 else (0.0 if diff == 0 else math.inf))
    return np.array(out)


# ------------------------------------------------------------------------------ accuracy
def _accuracy_settings(quick):
    if quick:
        return dict(net="64-16x2-10", data_subset=(160, 80), epochs=2, batch_size=32,
                    optimizer="adam", lr=1e-2, etas=(1.0, 0.5), budgets={1.0: None, 0.5: 40},
                    seeds=1)
    return dict(net=DEPTH9, data_subset=None, epochs=5, batch_size=32, optimizer="adam",
                lr=1e-3, etas=(1.0, 0.5, 0.2, 0.1), budgets=dict(EULER_STEP_BUDGET), seeds=3)


def _blas_single_thread():
    """One BLAS thread per worker process: several processes each running a multithreaded
    BLAS on small matrices oversubscribe the cores (and get many times slower)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        return None
    return threadpool_limits(1)


def _accuracy_job(job):
    """One training run (module-level so that worker processes can run it)."""
    import dyadsim
    from ..datasets import digits
    from ._train import train

    data = digits(seed=0)
    if job["data_subset"]:
        data = data.subset(*job["data_subset"])
    net = dyadsim.mlp(job["net"], activation="tanh", loss="xent", seed=job["seed"])
    relax_options = None
    if job["method"] == "euler" and job["steps"] is not None:
        relax_options = {"steps": job["steps"]}
    t0, c0 = time.perf_counter(), time.process_time()
    limit = _blas_single_thread() if job.get("single_thread") else None
    try:
        hist = train(net, data, method=job["method"], eta=job["eta"], optimizer=job["optimizer"],
                     lr=job["lr"], epochs=job["epochs"], batch_size=job["batch_size"],
                     seed=job["seed"], relax_options=relax_options, progress=job["progress"])
    finally:
        if limit is not None:
            limit.restore_original_limits()
    out = {"job": job, "history": hist.to_dict(), "wall_s": time.perf_counter() - t0,
           "cpu_s": time.process_time() - c0}
    # how exact the fixed step budget still is on the trained network
    if job["method"] == "euler":
        x, y = data.x_test[:64], data.y_test[:64]
        ref = dyadsim.backprop(net, x, y)
        r = dyadsim.relax(net, x, y, eta=job["eta"], **(relax_options or {}))
        out["final_grad_rel_error"] = float(np.max(_rel_errors(r.grads, ref)))
    return out


def accuracy(out_dir, quick=False, seeds=None, progress=True, jobs=None):
    """Test accuracy per epoch: backprop vs DBP-Euler at several eta, on the same batches.

    Every run of one seed starts from the same weights (``mlp(..., seed)``) and sees the
    same minibatches (``data.batches(batch_size, seed, epoch)``); only the gradient source
    differs.  Training at eta < 1 relaxes for a fixed step budget
    (:data:`EULER_STEP_BUDGET`), at eta = 1 for exactly 2L steps.  ``jobs`` worker
    processes run the (method, seed) pairs (default: the CPU count; 1 in quick mode).
    """
    out = _out_dir(out_dir)
    cfg = _accuracy_settings(quick)
    seed_list = _seed_list(seeds, cfg["seeds"])
    runs = [("backprop", None)] + [("euler", float(e)) for e in cfg["etas"]]
    job_list = []
    for method, eta in runs:
        for s in seed_list:
            job_list.append(dict(
                method=method, eta=1.0 if eta is None else eta, seed=s, net=cfg["net"],
                data_subset=cfg["data_subset"], epochs=cfg["epochs"],
                batch_size=cfg["batch_size"], optimizer=cfg["optimizer"], lr=cfg["lr"],
                steps=None if eta is None else cfg["budgets"].get(eta), progress=False,
            ))
    if jobs is None:
        jobs = 1 if quick else max(1, min(os.cpu_count() or 1, len(job_list)))
    t0 = time.perf_counter()
    # the slowest runs first so that the pool finishes evenly
    order = sorted(range(len(job_list)), key=lambda i: -(job_list[i]["steps"] or 1))
    results = [None] * len(job_list)
    if jobs <= 1:
        if progress and len(job_list) == 1:
            job_list[0]["progress"] = True
        it = order
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(job_list), desc="accuracy runs", unit="run")
        for i in it:
            results[i] = _accuracy_job(job_list[i])
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()
    else:
        from concurrent.futures import ProcessPoolExecutor, as_completed

        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(job_list), desc=f"accuracy runs ({jobs} processes)", unit="run")
        for job in job_list:
            job["single_thread"] = True
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            futs = {pool.submit(_accuracy_job, job_list[i]): i for i in order}
            for f in as_completed(futs):
                results[futs[f]] = f.result()
                if bar is not None:
                    bar.update(1)
        if bar is not None:
            bar.close()
    total_wall = time.perf_counter() - t0

    # ---- numbers
    rows = []
    curves = {}  # label -> seed -> list of test acc
    for res in results:
        job, h = res["job"], res["history"]
        label = _label(job["method"], job["eta"])
        curves.setdefault(label, {})[job["seed"]] = h
        for i, ep in enumerate(h["epoch"]):
            rows.append([label, job["method"], job["eta"] if job["method"] == "euler" else "",
                         job["seed"], ep, h["train_loss"][i], h["train_accuracy"][i],
                         h["test_loss"][i], h["test_accuracy"][i], h["relax_mean"][i],
                         h["relax_max"][i], h["wall_time"][i]])
    _write_csv(out / "accuracy.csv",
               ["run", "method", "eta", "seed", "epoch", "train_loss", "train_accuracy",
                "test_loss", "test_accuracy", "relax_steps_mean", "relax_steps_max", "wall_time_s"],
               rows,
               comments=[f"dyadsim accuracy experiment ({'quick' if quick else 'full'} settings): "
                         f"{cfg['net']} tanh MLP, xent, digits, {cfg['optimizer']} lr={cfg['lr']}, "
                         f"batch {cfg['batch_size']}, {cfg['epochs']} epochs",
                         "accuracies are fractions; relax_steps = Euler steps per minibatch "
                         f"(fixed budgets {cfg['budgets']}, eta=1 -> 2L)"])
    labels = [_label(m, e) for m, e in runs]
    bp = curves["backprop"]
    summary_runs = {}
    for (method, eta), label in zip(runs, labels):
        per_seed = curves[label]
        acc = np.array([per_seed[s]["test_accuracy"] for s in seed_list]) * 100  # (S, E)
        bp_acc = np.array([bp[s]["test_accuracy"] for s in seed_list]) * 100
        loss = np.array([per_seed[s]["train_loss"] for s in seed_list])
        bp_loss = np.array([bp[s]["train_loss"] for s in seed_list])
        final = acc[:, -1]
        peak = acc.max(axis=1)
        entry = {
            "method": method, "eta": eta,
            "final_test_accuracy_pct": {"mean": final.mean(), "std": final.std(ddof=0),
                                        "min": final.min(), "max": final.max(),
                                        "per_seed": final.tolist()},
            "peak_test_accuracy_pct": {"mean": peak.mean(), "std": peak.std(ddof=0),
                                       "min": peak.min(), "max": peak.max(),
                                       "per_seed": peak.tolist()},
            "max_abs_diff_vs_backprop_pp_any_epoch": float(np.max(np.abs(acc - bp_acc))),
            "final_diff_vs_backprop_pp_per_seed": (final - bp_acc[:, -1]).tolist(),
            "mean_final_diff_vs_backprop_pp": float(final.mean() - bp_acc[:, -1].mean()),
            "max_rel_train_loss_diff_vs_backprop": float(np.max(np.abs(loss - bp_loss) / bp_loss)),
            "wall_s_per_run_mean": float(np.mean([sum(per_seed[s]["wall_time"]) for s in seed_list])),
            "cpu_s_per_run_mean": float(np.mean([r["cpu_s"] for r in results
                                                 if _label(r["job"]["method"], r["job"]["eta"]) == label])),
        }
        if method == "euler":
            rm = [v for s in seed_list for v in per_seed[s]["relax_mean"]]
            rx = [v for s in seed_list for v in per_seed[s]["relax_max"]]
            entry["euler_steps_per_batch"] = {"mean": float(np.mean(rm)), "max": float(np.max(rx))}
            errs = [r.get("final_grad_rel_error") for r in results
                    if r["job"]["method"] == "euler" and r["job"]["eta"] == eta]
            entry["final_network_grad_max_rel_error"] = max(errs) if errs else None
        summary_runs[label] = entry
    bp_peak = summary_runs["backprop"]["peak_test_accuracy_pct"]["mean"]
    summary = {
        "experiment": "accuracy", "quick": bool(quick),
        "settings": {k: (v if k != "budgets" else {str(e): b for e, b in v.items()})
                     for k, v in cfg.items() if k != "seeds"},
        "seeds": seed_list, "wall_s": total_wall, "jobs": jobs,
        "cpu_s_total": float(sum(r["cpu_s"] for r in results)),
        "runs": summary_runs,
        "claims": {
            "backprop_peak_mean_pct": bp_peak,
            "backprop_reaches_93pct": bool(bp_peak >= 93.0),
            "dbp_within_0.5pp_of_backprop_final_mean": {
                lab: bool(abs(summary_runs[lab]["mean_final_diff_vs_backprop_pp"]) <= 0.5)
                for lab in labels[1:]},
        },
    }
    _write_json(out / "accuracy.json", summary)

    # ---- figure
    fig, axes = _figure(1, 2, size=(10.0, 4.0))
    ax, ax2 = axes[0]
    colors = ["black", "tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple"]
    markers = [None, "o", "s", "^", "v", "D"]
    epochs = np.arange(1, cfg["epochs"] + 1)
    bp_acc = np.array([bp[s]["test_accuracy"] for s in seed_list]) * 100
    bp_loss = np.array([bp[s]["train_loss"] for s in seed_list])
    if len(seed_list) > 1:
        ax.fill_between(epochs, bp_acc.min(0), bp_acc.max(0), color="gray", alpha=0.25, lw=0,
                        label="backprop min..max over seeds")
    for i, label in enumerate(labels):
        acc = np.array([curves[label][s]["test_accuracy"] for s in seed_list]) * 100
        c = colors[i % len(colors)]
        if label == "backprop":
            ax.plot(epochs, acc.mean(0), color=c, lw=2.5, label="backprop (mean)")
            continue
        ax.plot(epochs, acc.mean(0), color=c, ls="none", marker=markers[i % len(markers)],
                ms=9 - 1.5 * i, mfc="none", mew=1.3, label=f"{label} (mean)")
        loss = np.array([curves[label][s]["train_loss"] for s in seed_list])
        rel = np.max(np.abs(loss - bp_loss) / bp_loss, axis=0)
        ax2.semilogy(epochs, np.maximum(rel, 1e-17), color=c, marker=markers[i % len(markers)],
                     ms=5, label=label)
    ax.axhline(93.0, color="gray", lw=0.8, ls=":")
    ax.text(epochs[0], 93.2, "93%", fontsize=8, color="gray")
    ax.set_xlabel("epoch")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"test accuracy, {len(seed_list)} seed{'s' if len(seed_list) > 1 else ''}",
                 fontsize=9)
    ax.legend(fontsize=8, loc="lower right")
    ax2.axhline(np.finfo(float).eps, color="gray", lw=0.8, ls=":")
    ax2.text(epochs[0], np.finfo(float).eps * 1.3, "float64 eps", fontsize=8, color="gray")
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("|loss_DBP - loss_backprop| / loss_backprop")
    ax2.set_title("training-set loss vs backprop (max over seeds; 0 drawn at 1e-17)", fontsize=9)
    ax2.legend(fontsize=8)
    fig.suptitle(f"Learning with DBP = learning with backprop ({cfg['net']} tanh, digits, "
                 f"{cfg['optimizer']} lr={cfg['lr']:g}, batch {cfg['batch_size']})", fontsize=10)
    _save_fig(fig, out / "accuracy.png")
    return summary


# ------------------------------------------------------------------------------ steps
def _steps_settings(quick):
    if quick:
        return dict(net="64-16x2-10", batch=4, etas=[0.5, 1.0, 1.5], tols=[1e-4, 1e-8])
    etas = [round(0.05 * k, 2) for k in range(1, 39)]  # 0.05 ... 1.9
    return dict(net=DEPTH9, batch=16, etas=etas, tols=[1e-4, 1e-8, 1e-12])


def _record_errors(net, x, y, eta, K, ref):
    """Max per-tensor relative readout error vs backprop after every Euler step 0..K."""
    import dyadsim
    from ..dynamics import System

    r = dyadsim.relax(net, x, y, eta=eta, steps=K, record=True)
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
    """
    import dyadsim
    from ..datasets import digits

    out = _out_dir(out_dir)
    cfg = _steps_settings(quick)
    seed = _seed_list(seeds, 1)[0]
    net = dyadsim.mlp(cfg["net"], activation="tanh", loss="xent", seed=seed)
    data = digits(seed=0)
    x, y = data.x_train[:cfg["batch"]], data.y_train[:cfg["batch"]]
    ref = dyadsim.backprop(net, x, y)
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
            ra = dyadsim.relax(net, x, y, eta=eta, max_steps=4 * K)  # bounded: K x 4
            auto = {"steps": ra.steps, "error": float(np.max(_rel_errors(ra.grads, ref))),
                    "stalled": bool(ra.stalled), "converged": bool(ra.converged)}
        except dyadsim.ConvergenceError as exc:  # reported, not fatal
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


# ------------------------------------------------------------------------------ precision
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
    """
    import dyadsim
    from ..datasets import digits

    out = _out_dir(out_dir)
    cfg = _precision_settings(quick)
    seed = _seed_list(seeds, 1)[0]
    net = dyadsim.mlp(cfg["net"], activation="tanh", loss="xent", seed=seed)
    data = digits(seed=0)
    x, y = data.x_train[:cfg["batch"]], data.y_train[:cfg["batch"]]
    L = net.depth
    ref64 = dyadsim.backprop(net, x, y, dtype=np.float64)
    t0 = time.perf_counter()
    results = {}
    for dtype in (np.float32, np.float64):
        dn = np.dtype(dtype).name
        ref_same = dyadsim.backprop(net, x, y, dtype=dtype)
        if dtype is not np.float64:  # float64 backprop is the reference itself
            results[(f"backprop {dn}", dn)] = (ref_same, None, "backprop", None)
        for eta, n in cfg["configs"]:
            r = dyadsim.relax(net, x, y, eta=eta, steps=n, dtype=dtype)
            results[(f"DBP eta={eta:g} {dn}", dn)] = (r.grads, ref_same, "euler", (eta, r.steps))
    rows = []
    table = {}
    for (label, dn), (g, ref_same, method, extra) in results.items():
        cmp64 = dyadsim.compare(g, ref64)
        cmps = dyadsim.compare(g, ref_same) if ref_same is not None else None
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


# ------------------------------------------------------------------------------ analog
def _analog_settings(quick):
    if quick:
        return dict(net="2-4-2", data=dict(n=48, noise=0.1), epochs=1, batch_size=16,
                    optimizer="adam", lr=0.05, seeds=1)
    return dict(net="2-8-8-2", data=dict(n=200, noise=0.1), epochs=20, batch_size=16,
                optimizer="adam", lr=0.02, seeds=1)


def analog(out_dir, quick=False, seeds=None, progress=True, spice_options=None):
    """A small tanh network on XOR trained with ngspice gradients, next to backprop.

    Both runs start from the same weights and see the same minibatches; the spice run
    takes each minibatch's gradients from the circuit's DC operating point
    (``dyadsim.spice_gradients``).  Needs ngspice.
    """
    import dyadsim
    from ..datasets import xor
    from ._train import train

    if not hasattr(dyadsim, "spice_gradients"):
        raise DyadsimError("the analog experiment needs dyadsim.spice_gradients (the ngspice path)")
    out = _out_dir(out_dir)
    cfg = _analog_settings(quick)
    seed_list = _seed_list(seeds, cfg["seeds"])
    data = xor(seed=0, **cfg["data"])
    t0 = time.perf_counter()
    hists = {}
    first_batch = {}
    for s in seed_list:
        for method in ("backprop", "spice"):
            net = dyadsim.mlp(cfg["net"], activation="tanh", loss="xent", seed=s)
            if method == "spice" and s == seed_list[0]:
                xb, yb = next(iter(data.batches(cfg["batch_size"], s, 0)))
                cmp = dyadsim.compare(dyadsim.spice_gradients(net, xb, yb, **(spice_options or {})),
                                      dyadsim.backprop(net, xb, yb))
                first_batch = cmp.summary.to_dict()
            hists[(method, s)] = train(net, data, method=method, optimizer=cfg["optimizer"],
                                       lr=cfg["lr"], epochs=cfg["epochs"],
                                       batch_size=cfg["batch_size"], seed=s,
                                       spice_options=spice_options, progress=progress)
    rows = []
    for (method, s), h in hists.items():
        for r in h.rows():
            rows.append([method, s, r["epoch"], r["train_loss"], r["train_accuracy"],
                         r["test_loss"], r["test_accuracy"], r["wall_time"]])
    _write_csv(out / "analog.csv", ["method", "seed", "epoch", "train_loss", "train_accuracy",
                                    "test_loss", "test_accuracy", "wall_time_s"], rows,
               comments=[f"dyadsim analog experiment ({'quick' if quick else 'full'}): {cfg['net']} "
                         f"tanh MLP, xent, xor {cfg['data']}, {cfg['optimizer']} lr={cfg['lr']}, "
                         f"batch {cfg['batch_size']}, same batches for both methods"])
    per = {}
    for method in ("backprop", "spice"):
        fin = np.array([hists[(method, s)].test_accuracy[-1] for s in seed_list]) * 100
        per[method] = {"final_test_accuracy_pct": fin.tolist(), "mean": float(fin.mean()),
                       "wall_s": float(sum(sum(hists[(method, s)].wall_time) for s in seed_list))}
    diff = per["spice"]["mean"] - per["backprop"]["mean"]
    max_loss_diff = max(
        float(np.max(np.abs(np.array(hists[("spice", s)].train_loss)
                            - np.array(hists[("backprop", s)].train_loss))
                     / np.array(hists[("backprop", s)].train_loss)))
        for s in seed_list)
    summary = {"experiment": "analog", "quick": bool(quick),
               "settings": {k: v for k, v in cfg.items() if k != "seeds"}, "seeds": seed_list,
               "spice_options": spice_options or {}, "wall_s": time.perf_counter() - t0,
               "first_batch_spice_vs_backprop": first_batch, "runs": per,
               "final_diff_pp": diff, "within_2pp": bool(abs(diff) <= 2.0),
               "max_rel_train_loss_diff": max_loss_diff}
    _write_json(out / "analog.json", summary)

    fig, axes = _figure(1, 2, size=(9.0, 3.6))
    ax, ax2 = axes[0]
    for method, c, ls in (("backprop", "black", "-"), ("spice", "tab:red", "--")):
        for s in seed_list:
            h = hists[(method, s)]
            lab = f"{method}" if s == seed_list[0] else None
            ax.plot(h.epoch, np.array(h.test_accuracy) * 100, color=c, ls=ls, marker="o", ms=3,
                    label=lab)
            ax2.semilogy(h.epoch, h.train_loss, color=c, ls=ls, label=lab)
    ax.set_xlabel("epoch")
    ax.set_ylabel("test accuracy (%)")
    ax.legend(fontsize=8)
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("training-set loss")
    fig.suptitle(f"Training with ngspice gradients ({cfg['net']} tanh, XOR)", fontsize=10)
    _save_fig(fig, out / "analog.png")
    return summary


# ------------------------------------------------------------------------------ registry
EXPERIMENTS = {"accuracy": accuracy, "steps": steps, "precision": precision, "analog": analog}


def run_experiment(name, out_dir, quick=False, seeds=None, progress=True, **options):
    """Run one experiment by name into ``out_dir``; returns its JSON summary as a dict.

    ``seeds`` is a count (``3`` -> seeds 0, 1, 2) or a list; ``None`` uses the
    experiment's default.  Extra ``options`` go to the experiment function (e.g.
    ``jobs=2`` for ``accuracy``).
    """
    if not isinstance(name, str) or name.strip().lower() not in EXPERIMENTS:
        raise DyadsimError(f"unknown experiment {name!r}; valid experiments: {', '.join(EXPERIMENTS)}")
    fn = EXPERIMENTS[name.strip().lower()]
    import inspect

    params = inspect.signature(fn).parameters
    bad = [k for k in options if k not in params]
    if bad:
        raise DyadsimError(
            f"experiment {name!r} does not take option(s) {', '.join(bad)}; it takes: "
            f"{', '.join(p for p in params if p not in ('out_dir',))}")
    return fn(out_dir, quick=quick, seeds=seeds, progress=progress, **options)
