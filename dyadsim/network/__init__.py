"""Network graph stage: layer DAG -> one stacked global system."""

from ._activations import ACTIVATIONS, Activation, get_activation
from ._builders import mlp, parse_sizes, random_dag
from ._losses import LOSSES, Loss, get_loss
from ._network import Network, load

__all__ = [
    "ACTIVATIONS", "Activation", "get_activation", "LOSSES", "Loss", "get_loss",
    "Network", "load", "mlp", "random_dag", "parse_sizes",
]
