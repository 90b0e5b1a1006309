"""The ``accuracy`` experiment: test accuracy per epoch, backprop vs DBP-Euler at several eta."""

from __future__ import annotations

import os
import time

import numpy as np

from ..datasets import digits
from ..dynamics import backprop, relax
from ..network import mlp
from ..training import train
from ._common import DEPTH9, _figure, _label, _out_dir, _rel_errors, _save_fig, _seed_list, _write_csv, _write_json

#: Fixed Euler step budgets used to train at eta < 1 in the ``accuracy`` experiment: the
#: steps the full ``steps`` experiment measured for the readout of the initial depth-9
#: network to stay within a relative gradient error of 1e-12 (100, 291, 606), rounded up
#: to a multiple of 10; eta = 1 needs exactly 2L = 18.  See docs/experiments.md.
EULER_STEP_BUDGET = {1.0: 18, 0.5: 100, 0.2: 300, 0.1: 610}

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
    data = digits(seed=0)
    if job["data_subset"]:
        data = data.subset(*job["data_subset"])
    net = mlp(job["net"], activation="tanh", loss="xent", seed=job["seed"])
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
        ref = backprop(net, x, y)
        r = relax(net, x, y, eta=job["eta"], **(relax_options or {}))
        out["final_grad_rel_error"] = float(np.max(_rel_errors(r.grads, ref)))
    return out


def accuracy(out_dir, quick=False, seeds=None, progress=True, jobs=None):
    """Test accuracy per epoch: backprop vs DBP-Euler at several eta, on the same batches.

    Every run of one seed starts from the same weights (``mlp(..., seed)``) and sees the
    same minibatches (``data.batches(batch_size, seed, epoch)``); only the gradient source
    differs.  Training at eta < 1 relaxes for a fixed step budget
    (:data:`EULER_STEP_BUDGET`), at eta = 1 for exactly 2L steps.  ``jobs`` worker
    processes run the (method, seed) pairs (default: the CPU count; 1 in quick mode).

    Parameters
    ----------
    out_dir : str or path-like
        The folder the CSV, JSON and PNG files go to (created if missing).
    quick : bool, optional
        Small settings for a fast check (default False: the full experiment).
    seeds : int, sequence of int or None, optional
        A count (seeds 0 .. n-1) or a list of seeds; None: the settings' default.
    progress : bool, optional
        Show progress bars (default True).
    jobs : int or None, optional
        Worker processes for the (method, seed) pairs; default the CPU count (1 in quick
        mode).

    Returns
    -------
    dict
        The summary (settings, seeds, wall time and the results), also written to
        ``accuracy.json`` next to ``accuracy.csv`` and ``accuracy.png``.
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
