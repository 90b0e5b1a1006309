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
* ``hardware``  -- the depth-9 MLP trained with the gradients of sampled chips
  (:class:`dyadsim.Chip`): final accuracy and gradient misalignment against the size of
  each non-ideality, backprop as the reference.
* ``dynamic-range`` -- per-layer readout error against depth (sigmoid and tanh MLPs up to
  L = 30) for relax ``state="xz"`` (float64, float32), ``state="md"`` and ngspice ``.op`` at
  gain 1 and ``gain="auto"``, with the equivalent x/z offset in volts (files
  ``dynamic_range.png/.csv/.json``).

``quick=True`` shrinks every setting so that a run takes seconds (for tests); the full
settings are the ones documented in ``docs/experiments.md``.

>>> from dyadsim.experiments import run_experiment
>>> summary = run_experiment("steps", "out/", quick=True)   # doctest: +SKIP

Layout: one module per experiment (``_accuracy``, ``_steps``, ``_precision``, ``_analog``)
and ``_common`` (output folder, CSV/JSON writers, figures, seeds).  The old home
``dyadsim.training.experiments`` keeps working.
"""

from __future__ import annotations

import inspect

from ..errors import DyadsimError
from ._accuracy import EULER_STEP_BUDGET, accuracy
from ._analog import analog
from ._hardware import HARDWARE_AXES, hardware
from ._common import DEPTH9
from ._dynamic_range import DYNAMIC_RANGE_CONFIGS, dynamic_range
from ._precision import precision
from ._steps import steps

__all__ = ["EXPERIMENTS", "run_experiment", "accuracy", "steps", "precision", "analog",
           "DEPTH9", "EULER_STEP_BUDGET", "hardware", "HARDWARE_AXES", "dynamic_range",
           "DYNAMIC_RANGE_CONFIGS"]

EXPERIMENTS = {"accuracy": accuracy, "steps": steps, "precision": precision, "analog": analog,
               "hardware": hardware, "dynamic-range": dynamic_range}


def run_experiment(name, out_dir, quick=False, seeds=None, progress=True, **options):
    """Run one experiment by name into ``out_dir``; returns its JSON summary as a dict.

    Parameters
    ----------
    name : str
        One of :data:`EXPERIMENTS`: ``"accuracy"``, ``"steps"``, ``"precision"``,
        ``"analog"``, ``"hardware"``, ``"dynamic-range"`` (case and surrounding blanks
        ignored; ``"dynamic_range"`` is accepted too).
    out_dir : str or path-like
        Folder for ``NAME.png``, ``NAME.csv`` and ``NAME.json`` (created if missing).
    quick : bool
        Tiny settings (seconds), e.g. for a smoke test.
    seeds : int or sequence of int, optional
        A count (``3`` -> seeds 0, 1, 2) or a list; ``None`` uses the experiment's default.
    progress : bool
        Show progress bars (on stderr).
    **options
        Extra keyword arguments of the experiment function (e.g. ``jobs=2`` for
        ``accuracy``, ``spice_options`` for ``analog``).

    Returns
    -------
    dict
        The experiment's JSON summary (what ``NAME.json`` holds).

    Raises
    ------
    DyadsimError
        For an unknown experiment or an option the experiment does not take.
    """
    key = name.strip().lower().replace("_", "-") if isinstance(name, str) else None
    if key not in EXPERIMENTS:
        raise DyadsimError(f"unknown experiment {name!r}; valid experiments: {', '.join(EXPERIMENTS)}")
    fn = EXPERIMENTS[key]
    params = inspect.signature(fn).parameters
    bad = [k for k in options if k not in params]
    if bad:
        raise DyadsimError(
            f"experiment {name!r} does not take option(s) {', '.join(bad)}; it takes: "
            f"{', '.join(p for p in params if p not in ('out_dir',))}")
    return fn(out_dir, quick=quick, seeds=seeds, progress=progress, **options)
