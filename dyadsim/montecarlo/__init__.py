"""Monte Carlo stage: perturbed circuits (mismatch, quantization, noise, ...) run on Dask,
their gradients compared with backprop.

>>> from dyadsim.montecarlo import Mismatch, monte_carlo
>>> mc = monte_carlo(net, x, y, nonidealities=[Mismatch(0.05)], runs=200)   # doctest: +SKIP
>>> mc.summary()["tensors"]["(all parameters)"]["angle_mean"]              # doctest: +SKIP
"""

from ..circuits import (
    AmplifierNonideal, BJTModel, Mismatch, Nonideality, OpAmp, Quantization, ThermalNoise,
    WireResistance, compile_device_netlist, perturbed_netlist,
)
from ._mc import (
    ALL_TENSORS, DIALECTS, SCHEDULERS, MonteCarloResult, SweepResult, monte_carlo, plot_sweep,
    simulate_robust, sweep,
)

__all__ = ["Mismatch", "Quantization", "AmplifierNonideal", "ThermalNoise", "WireResistance",
           "Nonideality", "perturbed_netlist", "compile_device_netlist", "OpAmp", "BJTModel",
           "monte_carlo", "MonteCarloResult", "sweep", "SweepResult", "plot_sweep",
           "simulate_robust", "ALL_TENSORS", "DIALECTS", "SCHEDULERS"]
