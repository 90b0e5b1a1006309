"""The one result type every gradient method returns."""

from __future__ import annotations

import numpy as np

from ._gradients import Gradients

__all__ = ["GradientResult"]


class GradientResult:
    """What a gradient method returns: the gradients and what is known about the run.

    Every method object (:class:`~dyadsim.Backprop`, :class:`~dyadsim.Euler`,
    :class:`~dyadsim.ODE`, :class:`~dyadsim.Spice`) returns an instance of this class or of
    a subclass (:class:`~dyadsim.RelaxResult`, :class:`~dyadsim.ContinuousResult`,
    :class:`~dyadsim.SpiceGradients`) that adds the method's own fields.

    Parameters
    ----------
    grads : Gradients
        ``{("W", src, dst): dC/dW, ("b", node): dC/db}``, shaped like the parameters.
    info : dict, optional
        Facts about the run: timings, steps, settling time, netlist size, ...

    Attributes
    ----------
    grads : Gradients
    loss : float or None
        The batch loss where the method knows it.
    label : str
        Names the method and its main options (e.g. ``"euler[wavefront, eta=1, steps=6]"``).
    info : dict
    """

    def __init__(self, grads: Gradients, info: dict | None = None):
        if not isinstance(grads, Gradients):
            grads = Gradients(grads)
        self.grads = grads
        self.info = {} if info is None else dict(info)

    @property
    def loss(self):
        """The batch loss (mean over samples), or ``None`` where the method does not know it."""
        return self.grads.loss

    @property
    def label(self) -> str:
        """The label of the method that produced the gradients."""
        return self.grads.method or ""

    def __repr__(self) -> str:
        keys = ", ".join(sorted(self.info))
        return f"{type(self).__name__}(label={self.label!r}, loss={self.loss!r}, info=[{keys}])"

    def flat(self) -> np.ndarray:
        """All gradients concatenated into one vector (in parameter order)."""
        return self.grads.flat()
