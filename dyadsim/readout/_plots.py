"""Figures of a relaxation: the x/z pairs layer by layer, and the readout error in time."""

from __future__ import annotations

import numpy as np

from .._io import save_figure
from ._spice import relaxation_trace

__all__ = ["plot_relaxation"]


def plot_relaxation(net, tran, *, tau=None, gain=None, path=None, max_neurons=4, sample=0):
    """Plot an ngspice transient of a DBP circuit.

    One panel per layer with V(x) (solid) and V(z) (dashed) of up to ``max_neurons``
    neurons against t/tau, and a last panel with the relative error of the gradient readout
    against its final value (log scale).

    Parameters
    ----------
    net : Network
        The network the netlist was compiled from.
    tran : Transient
        The ngspice transient.
    tau, gain : optional
        As for :func:`~dyadsim.readout.relaxation_trace`.
    path : str or path-like, optional
        Where to save the figure; nothing is saved when None.
    max_neurons : int, optional
        Neurons drawn per layer (default 4).
    sample : int, optional
        The batch sample drawn (default 0).

    Returns
    -------
    matplotlib.figure.Figure
        The figure.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    tr = relaxation_trace(net, tran, tau=tau, gain=gain)
    t, m, d = tr["t"], tr["m"], tr["d"]
    g = gain if gain is not None else (float(tran.v("gain_ref")[-1]) if "gain_ref" in tran.voltages else 1.0)
    x = m + 0.5 * g * d
    z = m - 0.5 * g * d
    layers = list(net.nodes)
    fig, axes = plt.subplots(len(layers) + 1, 1, figsize=(7, 1.9 * (len(layers) + 1)), sharex=True)
    for ax, v in zip(axes, layers):
        sl = net.slice(v)
        for k, j in enumerate(range(sl.start, min(sl.stop, sl.start + max_neurons))):
            color = f"C{k}"
            ax.plot(t, x[:, sample, j], color=color, lw=1.2, label=f"x[{j - sl.start}]")
            ax.plot(t, z[:, sample, j], color=color, lw=1.2, ls="--", label=f"z[{j - sl.start}]")
        ax.set_ylabel(f"{v}\nV")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, ncol=4, loc="upper right")
    axes[0].set_title(f"DBP circuit relaxation (depth L={net.depth}; solid x, dashed z)")
    err = np.maximum(tr["grad_error"], 1e-17)
    axes[-1].semilogy(t, err, color="k")
    axes[-1].set_ylabel("readout rel. error\nvs final")
    axes[-1].set_xlabel("t / tau")
    axes[-1].grid(alpha=0.3, which="both")
    fig.tight_layout()
    if path is not None:
        save_figure(fig, path, dpi=110)
    return fig
