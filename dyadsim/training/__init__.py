"""Training with relaxed gradients.

:func:`train` runs minibatch gradient descent where only the gradient source changes
(``"backprop"``, ``"euler"``, ``"ode"``, ``"spice"``); :class:`History` records it.
The experiments that regenerate the figures live in :mod:`dyadsim.experiments`;
``dyadsim.training.run_experiment``, ``EXPERIMENTS`` and ``dyadsim.training.experiments``
are kept for old code.
"""

from ._history import EPOCH_FIELDS, History
from ._optim import OPTIMIZERS, SGD, Adam, Optimizer, make_optimizer
from ._train import METHODS, TrainingDiverged, evaluate, gradient_source, train

__all__ = [
    "train", "History", "EPOCH_FIELDS", "METHODS", "TrainingDiverged", "evaluate",
    "gradient_source", "Optimizer", "SGD", "Adam", "OPTIMIZERS", "make_optimizer",
    "EXPERIMENTS", "run_experiment",
]


def __getattr__(name):
    # the old names of the experiments, resolved on first use (dyadsim.experiments sits
    # above training).  No `from . import experiments` here: it looks the name up on this
    # package first, which re-enters this __getattr__ (RecursionError).
    if name in ("EXPERIMENTS", "run_experiment"):
        from ..experiments import EXPERIMENTS, run_experiment

        return EXPERIMENTS if name == "EXPERIMENTS" else run_experiment
    if name == "experiments":
        import importlib

        return importlib.import_module(__name__ + ".experiments")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
