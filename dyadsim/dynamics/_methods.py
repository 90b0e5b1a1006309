"""Gradient methods as small strategy objects (the digital and dynamical ones).

A method object holds its options; calling it on ``(net, x, y)`` returns a
:class:`~dyadsim.GradientResult`.  The circuit method (:class:`~dyadsim.Spice`) and the
registry :data:`~dyadsim.METHODS` live in the readout stage, which sits above the circuits.
"""

from __future__ import annotations

import inspect
import time
from typing import Any, Callable, ClassVar

import numpy as np

from .._validate import check_choice, check_dtype, check_eta
from ..errors import DyadsimError
from ._backprop import backprop
from ._euler import SCHEDULES, relax
from ._ode import relax_continuous
from ._result import GradientResult

__all__ = ["Method", "Backprop", "Euler", "ODE"]


class Method:
    """Base class of the gradient methods.

    A subclass sets :attr:`name` (its key in :data:`dyadsim.METHODS`), stores its options
    in ``__init__`` (validated there, once) and implements :meth:`run`.  Calling the object
    times the run and fills ``info["wall_s"]``.

    Parameters
    ----------
    **options
        The method's options (what its subclass documents).

    Attributes
    ----------
    name : str
        The method's registry name (``"backprop"``, ``"euler"``, ``"ode"``, ``"spice"``).
    effort_unit : str or None
        Unit of :meth:`effort` (``"steps"``, ``"tau"``) or ``None`` when it has none.
    """

    name: ClassVar[str] = ""
    effort_unit: ClassVar[str | None] = None
    #: the thin function this method wraps, and its arguments a user may not override
    _function: ClassVar[Callable | None] = None
    _reserved: ClassVar[tuple] = ("net", "x", "y")

    def __init__(self, **options: Any):
        self.options = self._check_options(options)

    # ------------------------------------------------------------------ options
    @classmethod
    def _check_options(cls, options: dict) -> dict:
        fn = cls._function
        if fn is None:
            if options:
                raise DyadsimError(f"{cls.__name__} takes no options, got {', '.join(options)}")
            return {}
        params = inspect.signature(fn).parameters
        taken = set(cls._reserved)
        valid = [p for p, par in params.items() if p not in taken and par.kind not in (
            inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)]
        open_ended = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
        bad = [k for k in options if k in taken or (not open_ended and k not in valid)]
        if bad:
            raise DyadsimError(
                f"{cls.__name__}: unknown or reserved option(s) {', '.join(map(repr, bad))}; "
                f"valid: {', '.join(valid)}")
        return dict(options)

    def config(self) -> dict:
        """The method's name and options as JSON-friendly values."""
        out = {"method": self.name}
        for k, v in self.options.items():
            if isinstance(v, (bool, int, float, str)) or v is None:
                out[k] = v
            elif isinstance(v, type) and issubclass(v, np.generic):
                out[k] = np.dtype(v).name
            else:
                out[k] = repr(v)
        return out

    def replace(self, **changes) -> "Method":
        """A copy with some options changed."""
        opts = dict(self.options)
        opts.update(changes)
        return type(self)(**opts)

    # ------------------------------------------------------------------ running
    def __call__(self, net, x, y) -> GradientResult:
        """Gradients of the mean batch loss of ``net`` on ``(x, y)``.

        Parameters
        ----------
        net : Network
        x : array_like, (n_in,) or (B, n_in)
        y : array_like, (n_out,) or (B, n_out)

        Returns
        -------
        GradientResult
        """
        t0 = time.perf_counter()
        res = self.run(net, x, y)
        res.info.setdefault("method", self.name)
        res.info["wall_s"] = time.perf_counter() - t0
        return res

    def run(self, net, x, y) -> GradientResult:  # pragma: no cover - abstract
        """Compute the gradients (subclasses implement this)."""
        raise NotImplementedError

    def effort(self, result) -> float | None:
        """How much relaxation the run took, in :attr:`effort_unit` (``None`` if not known)."""
        return None

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.options.items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other) -> bool:
        return type(self) is type(other) and self.options == other.options

    def __hash__(self) -> int:
        return hash((type(self).__name__, tuple(sorted(map(str, self.options.items())))))


class Backprop(Method):
    """Exact digital backpropagation, the reference.

    Parameters
    ----------
    dtype : float64 or float32
    **options
        Any other keyword argument of :func:`dyadsim.backprop` (``backend``, ``device``).
    """

    name = "backprop"
    _function = backprop

    def __init__(self, dtype=np.float64, **options):
        opts = self._check_options(options)
        self.options = {"dtype": check_dtype(dtype), **opts}

    def run(self, net, x, y) -> GradientResult:
        g = backprop(net, x, y, **self.options)
        info = {"dtype": np.dtype(self.options["dtype"]).name}
        if self.options.get("backend", "numpy") != "numpy":
            info.update(backend=self.options["backend"], device=str(self.options.get("device") or "cpu"))
        return GradientResult(g, info)


class Euler(Method):
    """DBP's discrete relaxation: explicit Euler on the saddle flow (:func:`dyadsim.relax`).

    Parameters
    ----------
    eta : float
        Euler step in units of tau, in (0, 2); at ``eta=1`` the gradients are exact at step 2L.
    schedule : ``"auto"``, ``"parallel"``, ``"wavefront"`` or ``"async"``
        ``"auto"`` takes the fastest exact schedule: the wavefront at ``eta=1``, the
        parallel one otherwise (the resolved schedule is in ``result.schedule``).
    **options
        Any other keyword argument of :func:`dyadsim.relax` (``steps``, ``dtype``, ``tol``,
        ``max_steps``, ``state``, ...).
    """

    name = "euler"
    effort_unit = "steps"
    _function = relax
    _reserved = ("net", "x", "y", "eta", "schedule")

    def __init__(self, eta=1.0, schedule="auto", **options):
        eta = check_eta(eta)
        schedule = check_choice("schedule", schedule, ("auto",) + tuple(SCHEDULES))
        if schedule == "wavefront" and eta != 1.0:
            raise DyadsimError(f"the wavefront schedule needs eta = 1 (got {eta})")
        opts = self._check_options(options)
        self.options = {"eta": eta, "schedule": schedule, **opts}

    @property
    def resolved_schedule(self) -> str:
        """The schedule :meth:`run` uses (``"auto"`` resolved)."""
        s = self.options["schedule"]
        if s == "auto":
            return "wavefront" if self.options["eta"] == 1.0 else "parallel"
        return s


    def run(self, net, x, y) -> GradientResult:
        opts = dict(self.options)
        opts["schedule"] = self.resolved_schedule
        r = relax(net, x, y, **opts)
        r.info.update({"steps": r.steps, "eta": r.eta, "schedule": r.schedule,
                       "converged": r.converged})
        return r

    def effort(self, result) -> float | None:
        return result.steps


class ODE(Method):
    """The continuous-time saddle flow integrated to steady state
    (:func:`dyadsim.relax_continuous`).

    Parameters
    ----------
    solver : str, optional
        The integrator (``relax_continuous``'s ``method``); ``None`` takes its default.
    **options
        Any other keyword argument of :func:`dyadsim.relax_continuous` (``rtol``, ``atol``,
        ``tol``, ``t_max``, ``dtype``, ...).
    """

    name = "ode"
    effort_unit = "tau"
    _function = relax_continuous
    _reserved = ("net", "x", "y", "method")

    def __init__(self, solver=None, **options):
        opts = self._check_options(options)
        if solver is not None:
            from ._backend import TORCH_ODE_METHODS, use_torch
            from ._ode import ODE_METHODS

            torch_backend = use_torch(opts.get("backend", "numpy"), opts.get("device"))
            check_choice("ODE solver", solver, TORCH_ODE_METHODS if torch_backend else tuple(ODE_METHODS))
        self.options = {"solver": solver, **opts}


    def run(self, net, x, y) -> GradientResult:
        opts = dict(self.options)
        solver = opts.pop("solver")
        if solver is not None:
            opts["method"] = solver
        r = relax_continuous(net, x, y, **opts)
        r.info.update({"solver": r.method, "t_settle_tau": r.t_settle, "t_final_tau": r.t_final,
                       "nfev": r.nfev, "n_steps": r.n_steps})
        return r

    def effort(self, result) -> float | None:
        return result.t_settle
