"""Sweeps: a Monte Carlo per non-ideality size on one Dask engine, and their plot."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .._validate import checked_call
from .._io import save_figure
from ..errors import DyadsimError
from ._engine import _Engine
from ._result import ALL_TENSORS
from ._run import monte_carlo

__all__ = ["sweep", "SweepResult", "plot_sweep"]


@dataclass
class SweepResult:
    """A Monte Carlo per non-ideality size: ``values``, ``results`` (MonteCarloResult each)
    and ``table`` (all runs, with a ``value`` column).

    Parameters
    ----------
    values : list
        The sizes swept.
    results : list of MonteCarloResult
        One per value, in order.
    label : str, optional
        What the values are (the plots' x label); :func:`sweep` defaults it to
        ``"non-ideality size"``.
    """

    values: list
    results: list
    label: str = "size"

    @property
    def table(self):
        import pandas as pd

        parts = []
        for v, r in zip(self.values, self.results):
            t = r.table.copy()
            t.insert(0, "value", v)
            parts.append(t)
        return pd.concat(parts, ignore_index=True)

    def summary_table(self):
        """One row per (value, tensor): mean/std of angle, log10 angle and norm ratio."""
        import pandas as pd

        rows = []
        for v, r in zip(self.values, self.results):
            s = r.summary()
            for name, d in s["tensors"].items():
                rows.append({"value": v, "tensor": name, "runs": s["runs"], "failed": s["failed"], **d})
        return pd.DataFrame(rows)


@checked_call
def sweep(net, x, y, *, factory, values, runs=50, label=None, scheduler=None, workers=None,
          progress=True, **mc_kwargs) -> SweepResult:
    """A Monte Carlo per value: ``factory(value)`` gives the non-idealities, e.g.
    ``factory=lambda s: [Mismatch(s)]``.  One Dask cluster serves all of them.

    Parameters
    ----------
    net : Network
        The network.
    x, y : array_like
        The batch.
    factory : callable
        ``value -> list of non-idealities``.
    values : iterable
        The sizes to sweep (at least one).
    runs : int, optional
        Runs per value (default 50).
    label : str or None, optional
        What the values are; default ``"non-ideality size"``.
    scheduler, workers, progress : optional
        As for :func:`~dyadsim.montecarlo.monte_carlo`.
    **mc_kwargs
        Further :func:`~dyadsim.montecarlo.monte_carlo` keywords (``dialect``, ``seed``,
        ``analysis``, ...).

    Returns
    -------
    SweepResult
        One :class:`MonteCarloResult` per value.
    """
    values = list(values)
    if not values:
        raise DyadsimError("sweep needs at least one value")
    if not callable(factory):
        raise DyadsimError("factory must be a callable value -> list of non-idealities")
    results = []
    with _Engine(scheduler, workers, progress) as engine:
        for v in values:
            results.append(monte_carlo(net, x, y, nonidealities=factory(v), runs=runs,
                                       progress=progress, _engine=engine, **mc_kwargs))
    return SweepResult(values, results, label or "non-ideality size")


def plot_sweep(result: SweepResult, path=None, *, title=None, logx=None):
    """Gradient misalignment angle and norm ratio against the non-ideality's size, one line
    per parameter tensor (mean over runs, bars: one standard deviation).

    Parameters
    ----------
    result : SweepResult
        The sweep to plot.
    path : str or path-like, optional
        Where to save a PNG; nothing is saved when None.
    title : str or None, optional
        The figure's title (default: the label, runs per point and failures).
    logx : bool or None, optional
        Logarithmic x axis; None (default) chooses it when the values are all positive and
        span a factor of at least 20.

    Returns
    -------
    matplotlib.figure.Figure
        The figure.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    st = result.summary_table()
    vals = np.asarray(result.values, dtype=float)
    if logx is None:
        pos = vals[vals > 0]
        logx = pos.size >= 2 and pos.max() / pos.min() >= 20 and np.all(vals > 0)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    tensors = list(dict.fromkeys(st["tensor"]))
    for k, name in enumerate(tensors):
        rows = st[st["tensor"] == name]
        style = dict(color="k", lw=2.2, marker="s") if name == ALL_TENSORS else dict(color=f"C{k}", lw=1.3, marker="o")
        x = rows["value"].to_numpy(float)
        am = rows["angle_mean"].to_numpy(float)
        asd = rows["angle_std"].to_numpy(float)
        ax1.errorbar(x, am, yerr=asd, capsize=3, label=name, ms=4, **style)
        nm_ = rows["norm_ratio_mean"].to_numpy(float)
        nsd = rows["norm_ratio_std"].to_numpy(float)
        ax2.errorbar(x, nm_, yerr=nsd, capsize=3, label=name, ms=4, **style)
    ax1.set_yscale("log")
    ax1.set_ylabel("misalignment angle vs backprop (rad)")
    ax2.axhline(1.0, color="0.6", lw=0.8, ls="--")
    ax2.set_ylabel("norm ratio ||g~|| / ||g||")
    for ax in (ax1, ax2):
        ax.set_xlabel(result.label)
        if logx:
            ax.set_xscale("log")
        ax.grid(alpha=0.3, which="both")
    ax1.legend(fontsize=7)
    runs = result.results[0].runs if result.results else 0
    failed = sum(r.summary()["failed"] for r in result.results)
    fig.suptitle(title or f"DBP circuit gradient vs {result.label} ({runs} runs per point, "
                          f"{failed} failed; mean +- 1 std)", fontsize=10)
    fig.tight_layout()
    if path is not None:
        save_figure(fig, path, dpi=120)
    return fig
