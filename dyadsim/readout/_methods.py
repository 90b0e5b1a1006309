"""The circuit method and the registry of every gradient method."""

from __future__ import annotations

import inspect

from .._validate import check_choice
from ..dynamics import ODE, Backprop, Euler, Method
from ..errors import DyadsimError
from ._spice import DIALECTS, spice_gradients

__all__ = ["Spice", "METHODS", "get_method"]


class Spice(Method):
    """The analog path: compile a netlist, simulate it in ngspice, read the gradients out
    of the node voltages (:func:`dyadsim.spice_gradients`).

    Parameters
    ----------
    analysis : ``"op"`` or ``"tran"``
        The steady state directly (``.op``), or the relaxation from x = z = 0 (``.tran``,
        reports the settling time).
    dialect : ``"behavioral"`` or ``"device"``
        Behavioural sources, or op-amps, conductance crossbars and BJT pairs.
    backend : ``"auto"``, ``"shared"`` or ``"subprocess"``
    **options
        Any other keyword argument of :func:`dyadsim.spice_gradients` (``gain``,
        ``timeout``, ``per_sample``, compiler options such as ``tau``).
    """

    name = "spice"
    effort_unit = "tau"
    _function = spice_gradients
    _reserved = ("net", "x", "y", "analysis", "dialect", "backend")

    def __init__(self, analysis="op", dialect="behavioral", backend="auto", **options):
        analysis = check_choice("analysis", analysis, ("op", "tran"))
        dialect = check_choice("dialect", dialect, DIALECTS)
        backend = check_choice("backend", backend, ("auto", "shared", "subprocess"))
        opts = self._check_options(options)
        self.options = {"analysis": analysis, "dialect": dialect, "backend": backend, **opts}


    def run(self, net, x, y):
        return spice_gradients(net, x, y, **self.options)

    def effort(self, result):
        return result.info.get("t_settle_tau")


#: every gradient method by name; the CLI, ``train``, Monte Carlo, the experiments and the
#: demo look methods up here, so a new method registered here is available everywhere.
METHODS = {"backprop": Backprop, "euler": Euler, "ode": ODE, "spice": Spice}


def get_method(spec="backprop", **options) -> Method:
    """A method object from a name, a class or an instance.

    Parameters
    ----------
    spec : str, Method subclass or Method
        ``"backprop"``, ``"euler"``, ``"ode"``, ``"spice"`` (case-insensitive), one of
        :data:`METHODS`' classes, or an instance (returned as is, or with ``options``
        changed).
    **options
        Options of the method (e.g. ``eta=0.5`` for ``"euler"``).

    Returns
    -------
    Method

    Raises
    ------
    DyadsimError
        An unknown name or option.
    """
    if isinstance(spec, Method):
        return spec.replace(**options) if options else spec
    if inspect.isclass(spec) and issubclass(spec, Method):
        return spec(**options)
    if isinstance(spec, str):
        key = spec.strip().lower()
        if key not in METHODS:
            raise DyadsimError(f"unknown method {spec!r}; valid methods: {', '.join(METHODS)}")
        return METHODS[key](**options)
    raise DyadsimError(
        f"a method is a name ({', '.join(METHODS)}), a Method class or a Method object, "
        f"got {type(spec).__name__}")
