"""What every experiment shares: the output folder, CSV/JSON writers, figures, seeds.

Internal to :mod:`dyadsim.experiments`.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np

from .._io import atomic_write, save_figure, write_json
from ..errors import DyadsimError

#: The article's network: a depth-9 tanh MLP on 8x8 digits (64 inputs, 8 hidden layers
#: of 64, 10 outputs), softmax cross-entropy.
DEPTH9 = "64-64x8-10"

def _figure(nrows=1, ncols=1, size=(6.4, 4.0)):
    """A matplotlib Figure on an Agg canvas (no pyplot, no global backend switch)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


def _save_fig(fig, path, dpi=100):
    return save_figure(fig, path, dpi=dpi)


def _out_dir(out_dir) -> Path:
    if out_dir is None:
        raise DyadsimError("out_dir is required: the folder the figures and numbers go to")
    p = Path(out_dir)
    p.mkdir(parents=True, exist_ok=True)
    return p


def _write_csv(path, header, rows, comments=()):
    with atomic_write(path, "w", newline="") as fh:
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
    return write_json(path, obj)


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


def _digits_case(cfg, seed):
    """The tanh/xent MLP ``cfg["net"]`` (weights from ``seed``) and the first
    ``cfg["batch"]`` training digits: the case of the steps and precision experiments."""
    from ..datasets import digits
    from ..network import mlp

    net = mlp(cfg["net"], activation="tanh", loss="xent", seed=seed)
    data = digits(seed=0)
    return net, data.x_train[:cfg["batch"]], data.y_train[:cfg["batch"]]
