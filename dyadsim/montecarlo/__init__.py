"""Monte Carlo stage: perturbed circuits (mismatch, quantization, noise, ...) run on Dask,
their gradients compared with backprop.

>>> from dyadsim.montecarlo import Mismatch, monte_carlo
>>> mc = monte_carlo(net, x, y, nonidealities=[Mismatch(0.05)], runs=200)   # doctest: +SKIP
>>> mc.summary()["tensors"]["(all parameters)"]["angle_mean"]              # doctest: +SKIP

One run = one draw of the non-idealities applied to the compiled circuit IR, one ngspice
process (the subprocess backend), one gradient readout, compared tensor by tensor with
exact backprop of the *nominal* network.

Layout: ``_run`` (the front :func:`monte_carlo` and one run on a worker: perturb, simulate
with :func:`simulate_robust`, read out, compare), ``_engine`` (Dask schedulers and
clusters), ``_result`` (:class:`MonteCarloResult`), ``_sweep`` (:func:`sweep`,
:func:`plot_sweep`).
"""

from ..circuits import (
    AmplifierNonideal, BJTModel, Mismatch, Nonideality, OpAmp, Quantization, ThermalNoise,
    WireResistance, compile_device_netlist, perturbed_netlist,
)
from ._engine import SCHEDULERS
from ._result import ALL_TENSORS, COLUMNS, MonteCarloResult
from ._run import DIALECTS, RESCUABLE, monte_carlo, readout_perturbed, simulate_robust
from ._sweep import SweepResult, plot_sweep, sweep
from ._chips import ENGINES, REFERENCES, ChipSpec, chip_monte_carlo

__all__ = ["Mismatch", "Quantization", "AmplifierNonideal", "ThermalNoise", "WireResistance",
           "Nonideality", "perturbed_netlist", "compile_device_netlist", "OpAmp", "BJTModel",
           "monte_carlo", "MonteCarloResult", "sweep", "SweepResult", "plot_sweep",
           "simulate_robust", "readout_perturbed", "ALL_TENSORS", "COLUMNS", "DIALECTS",
           "SCHEDULERS", "RESCUABLE", "chip_monte_carlo", "ChipSpec", "ENGINES", "REFERENCES"]
