"""Readout and comparison stage: gradients out of relaxed states, and how close they are."""

from ._compare import Comparison, TensorMetrics, angle, compare
from ._methods import METHODS, Spice, get_method
from ._spice import (
    DIALECTS, CircuitStates, SpiceGradients, circuit_states, readout, relaxation_trace,
    settling_time, spice_gradients,
)

__all__ = ["compare", "Comparison", "TensorMetrics", "angle", "readout", "spice_gradients",
           "SpiceGradients", "relaxation_trace", "settling_time", "Spice", "METHODS", "get_method",
           "DIALECTS", "circuit_states", "CircuitStates"]
from ._plots import plot_relaxation  # noqa: E402

__all__ += ["plot_relaxation"]
