"""Training with relaxed gradients, and the experiments that reproduce the article's claims.

:func:`train` runs minibatch gradient descent where only the gradient source changes
(``"backprop"``, ``"euler"``, ``"ode"``, ``"spice"``); :class:`History` records it.
:mod:`dyadsim.training.experiments` regenerates the figures (``run_experiment``).
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
    # the experiments pull in matplotlib: load them only when asked for
    if name in ("EXPERIMENTS", "run_experiment", "experiments"):
        import importlib

        # import_module, not "from . import experiments": the latter looks the name up on
        # this package first, which re-enters this __getattr__ (RecursionError)
        experiments = importlib.import_module(f"{__name__}.experiments")
        return experiments if name == "experiments" else getattr(experiments, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
