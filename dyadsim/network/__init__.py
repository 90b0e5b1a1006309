"""Network graph stage: layer DAG -> one stacked global system."""

from ._activations import ACTIVATIONS, Activation, get_activation
from ._builders import MAX_PARAMS, mlp, parse_sizes, random_dag
from ._losses import LOSSES, Loss, get_loss
from ._names import param_name
from ._network import Network, load
from ._torch import from_torch, to_torch, torch_gradients
from ._edges import EDGE_OPS, AvgPool2d, Conv2d, Dense, EdgeOp
from ._load import LOAD_LIMITS

__all__ = [
    "ACTIVATIONS", "Activation", "get_activation", "LOSSES", "Loss", "get_loss",
    "Network", "load", "mlp", "random_dag", "parse_sizes", "MAX_PARAMS", "from_torch", "to_torch", "torch_gradients",
    "EDGE_OPS", "EdgeOp", "Dense", "Conv2d", "AvgPool2d", "param_name", "LOAD_LIMITS",
]
