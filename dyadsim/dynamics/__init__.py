"""Dynamics stage: exact backprop, the DBP energy and flows, Euler and continuous relaxation."""

from ._backprop import backprop, error_signal, param_grads
from ._euler import SCHEDULES, RelaxResult, relax
from ._precision import (STATES, LayerPrecision, PrecisionReport, check_finite_grads,
                         check_finite_layers, check_representable, default_accuracy,
                         dynamic_range, rounding_floor, warn_if_imprecise)
from ._flows import energy, flow, flow_jacobian, flow_md
from ._gradients import Gradients
from ._result import GradientResult
from ._system import System
from ._ode import ODE_METHODS, ContinuousResult, relax_continuous
from ._methods import ODE, Backprop, Euler, Method
from ._chip import CHIP_OPTIONS, CROSSBARS, Chip
from ._chip_engine import CHIP_METHODS, ChipBatchResult, chip_readout, relax_chips

__all__ = [
    "backprop", "relax", "RelaxResult", "SCHEDULES", "relax_continuous", "ContinuousResult",
    "ODE_METHODS", "energy", "flow", "flow_md", "flow_jacobian", "Gradients", "GradientResult",
    "Method", "Backprop", "Euler", "ODE", "System",
    "Chip", "CHIP_OPTIONS", "CROSSBARS", "relax_chips", "ChipBatchResult", "CHIP_METHODS",
    "chip_readout",
    "STATES", "LayerPrecision", "PrecisionReport", "dynamic_range", "rounding_floor",
    "default_accuracy", "warn_if_imprecise", "check_finite_layers", "check_finite_grads",
    "check_representable", "error_signal", "param_grads",
]
