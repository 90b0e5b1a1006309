"""dyadsim: Dyadic Backpropagation, simulated.

Backprop computed by the physical relaxation of a circuit: build a network, relax its
doubled-state saddle flow (Euler, continuous-time, or in ngspice), read the gradients out
of the steady state, and compare them with exact backprop.

>>> import dyadsim
>>> net = dyadsim.mlp("4-8-3", activation="tanh", loss="xent", seed=0)
>>> x, y = ...  # (B, 4) inputs, (B, 3) one-hot targets
>>> dyadsim.compare(dyadsim.relax(net, x, y).grads, dyadsim.backprop(net, x, y))
"""

from .errors import ConvergenceError, DyadsimError, DyadsimException, PrecisionWarning, SimulatorError
from .network import (
    ACTIVATIONS, LOSSES, AvgPool2d, Conv2d, Dense, Network, from_torch, load, mlp, random_dag, to_torch,
    torch_gradients,
)
from .dynamics import Chip, ChipBatchResult, relax_chips
from .dynamics import (
    ODE, Backprop, ContinuousResult, Euler, GradientResult, Gradients, Method, RelaxResult, backprop, energy, flow, flow_jacobian, flow_md,
    relax, relax_continuous,
)
from .readout import (
    METHODS, Comparison, Spice, get_method, SpiceGradients, angle, compare, plot_relaxation, readout, relaxation_trace,
    spice_gradients,
)
from .circuits import Netlist, compile_netlist
from .simulator import OperatingPoint, Transient, simulate, simulate_many
from .training import History, TrainingDiverged, train

__version__ = "0.1.0"

__all__ = [
    "ConvergenceError", "DyadsimError", "DyadsimException", "SimulatorError", "PrecisionWarning",
    "ACTIVATIONS", "LOSSES", "Network", "load", "mlp", "random_dag", "from_torch", "to_torch", "torch_gradients",
    "Conv2d", "AvgPool2d", "Dense",
    "GradientResult", "Method", "Backprop", "Euler", "ODE", "Spice", "METHODS", "get_method",
    "ContinuousResult", "Gradients", "RelaxResult", "backprop", "energy", "flow",
    "flow_jacobian", "flow_md", "relax", "relax_continuous",
    "Comparison", "angle", "compare",
    "readout", "spice_gradients", "SpiceGradients", "relaxation_trace", "plot_relaxation",
    "Netlist", "compile_netlist", "OperatingPoint", "Transient", "simulate", "simulate_many",
    "train", "History", "TrainingDiverged",
    "Chip", "ChipBatchResult", "relax_chips",
]
