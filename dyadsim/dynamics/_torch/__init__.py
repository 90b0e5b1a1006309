"""The torch engine behind ``backend="torch"`` (optional extra; imports torch).

:func:`backprop`, :func:`relax` and :func:`relax_continuous` take the numpy functions'
arguments plus ``device`` and return the same result types holding numpy arrays.
Importing this package without torch installed raises a :class:`~dyadsim.DyadsimError`
that says how to install it.
"""

from ._system import TorchSystem, resolve  # first: raises the clear error without torch
from ._backprop import backprop
from ._euler import STATES, relax
from ._etd import TORCH_ODE_METHODS, phi, relax_continuous
from ._chips import relax_chips

__all__ = ["backprop", "relax", "relax_continuous", "STATES", "TORCH_ODE_METHODS", "phi",
           "TorchSystem", "resolve", "relax_chips"]
