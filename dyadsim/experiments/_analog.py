"""The ``analog`` experiment: a small network trained with ngspice gradients, next to backprop."""

from __future__ import annotations

import time

import numpy as np

from ..datasets import xor
from ..dynamics import backprop
from ..network import mlp
from ..readout import compare, spice_gradients
from ..training import train
from ._common import _figure, _out_dir, _save_fig, _seed_list, _write_csv, _write_json

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
    spice_options : dict or None, optional
        Keywords of :func:`dyadsim.spice_gradients` for the spice run.

    Returns
    -------
    dict
        The summary (settings, seeds, wall time and the results), also written to
        ``analog.json`` next to ``analog.csv`` and ``analog.png``.
    """
    out = _out_dir(out_dir)
    cfg = _analog_settings(quick)
    seed_list = _seed_list(seeds, cfg["seeds"])
    data = xor(seed=0, **cfg["data"])
    t0 = time.perf_counter()
    hists = {}
    first_batch = {}
    for s in seed_list:
        for method in ("backprop", "spice"):
            net = mlp(cfg["net"], activation="tanh", loss="xent", seed=s)
            if method == "spice" and s == seed_list[0]:
                xb, yb = next(iter(data.batches(cfg["batch_size"], s, 0)))
                cmp = compare(spice_gradients(net, xb, yb, **(spice_options or {})),
                                      backprop(net, xb, yb))
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
