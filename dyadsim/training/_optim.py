"""First-order optimizers in plain numpy: SGD (with optional momentum) and Adam.

An optimizer keeps its state per parameter key (``("W", src, dst)`` / ``("b", node)``)
and updates the network's parameter arrays *in place*, so every gradient source
(backprop, Euler, ODE, ngspice) drives exactly the same update rule.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from ..errors import DyadsimError

__all__ = ["Optimizer", "SGD", "Adam", "OPTIMIZERS", "make_optimizer"]


def _check_real(name, value, *, low=None, high=None, low_open=False, high_open=False):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise DyadsimError(f"{name} must be a finite number, got {value!r}")
    value = float(value)
    if low is not None and (value < low or (low_open and value == low)):
        raise DyadsimError(f"{name} must be {'>' if low_open else '>='} {low}, got {value}")
    if high is not None and (value > high or (high_open and value == high)):
        raise DyadsimError(f"{name} must be {'<' if high_open else '<='} {high}, got {value}")
    return value


class Optimizer:
    """Base class: ``step(params, grads)`` updates ``params`` (a dict of arrays) in place.

    Parameters
    ----------
    lr : float or None, optional
        Learning rate (``None``: the subclass's ``default_lr``).
    weight_decay : float, optional
        L2 penalty added to the gradient.
    """

    name = "optimizer"
    default_lr = 0.01

    def __init__(self, lr=None, weight_decay=0.0):
        self.lr = _check_real("lr", self.default_lr if lr is None else lr, low=0.0, low_open=True)
        self.weight_decay = _check_real("weight_decay", weight_decay, low=0.0)
        self.t = 0  # number of steps taken

    def _grad(self, p, g):
        g = np.asarray(g, dtype=p.dtype)
        if self.weight_decay:
            g = g + self.weight_decay * p
        return g

    def step(self, params: dict, grads: dict) -> None:
        missing = [k for k in params if k not in grads]
        if missing:
            raise DyadsimError(f"gradients are missing parameter(s) {missing}")
        self.t += 1
        for key, p in params.items():
            g = self._grad(p, grads[key])
            if g.shape != p.shape:
                raise DyadsimError(
                    f"gradient for {key} has shape {g.shape}, parameter has shape {p.shape}"
                )
            self._update(key, p, g)

    def _update(self, key, p, g):  # pragma: no cover - abstract
        raise NotImplementedError

    def config(self) -> dict:
        return {"name": self.name, "lr": self.lr, "weight_decay": self.weight_decay}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items() if k != "name")
        return f"{type(self).__name__}({args})"


class SGD(Optimizer):
    """``v = momentum*v + g``, ``p -= lr*v`` (plain SGD for ``momentum=0``;
    ``nesterov=True`` uses ``p -= lr*(g + momentum*v)``).

    Parameters
    ----------
    lr : float or None, optional
        Learning rate (default 0.05).
    momentum : float, optional
        In [0, 1).
    nesterov : bool, optional
        Nesterov momentum.
    weight_decay : float, optional
        L2 penalty added to the gradient.
    """

    name = "sgd"
    default_lr = 0.05

    def __init__(self, lr=None, momentum=0.0, nesterov=False, weight_decay=0.0):
        super().__init__(lr, weight_decay)
        self.momentum = _check_real("momentum", momentum, low=0.0, high=1.0, high_open=True)
        self.nesterov = bool(nesterov)
        if self.nesterov and self.momentum == 0:
            raise DyadsimError("nesterov=True needs momentum > 0")
        self.velocity: dict = {}

    def _update(self, key, p, g):
        if self.momentum == 0:
            p -= self.lr * g
            return
        v = self.velocity.get(key)
        if v is None:
            v = self.velocity[key] = np.zeros_like(p)
        v *= self.momentum
        v += g
        if self.nesterov:
            p -= self.lr * (g + self.momentum * v)
        else:
            p -= self.lr * v

    def config(self) -> dict:
        return dict(super().config(), momentum=self.momentum, nesterov=self.nesterov)


class Adam(Optimizer):
    """Adam (Kingma & Ba) with bias correction.

    Parameters
    ----------
    lr : float or None, optional
        Learning rate (default 1e-3).
    beta1, beta2 : float, optional
        Decay rates of the first and second moment estimates, in [0, 1).
    eps : float, optional
        Added to the denominator.
    weight_decay : float, optional
        L2 penalty added to the gradient.
    """

    name = "adam"
    default_lr = 1e-3

    def __init__(self, lr=None, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0):
        super().__init__(lr, weight_decay)
        self.beta1 = _check_real("beta1", beta1, low=0.0, high=1.0, high_open=True)
        self.beta2 = _check_real("beta2", beta2, low=0.0, high=1.0, high_open=True)
        self.eps = _check_real("eps", eps, low=0.0, low_open=True)
        self.m: dict = {}
        self.v: dict = {}

    def _update(self, key, p, g):
        m = self.m.get(key)
        if m is None:
            m = self.m[key] = np.zeros_like(p)
            self.v[key] = np.zeros_like(p)
        v = self.v[key]
        m *= self.beta1
        m += (1.0 - self.beta1) * g
        v *= self.beta2
        v += (1.0 - self.beta2) * (g * g)
        mhat = m / (1.0 - self.beta1 ** self.t)
        vhat = v / (1.0 - self.beta2 ** self.t)
        p -= self.lr * mhat / (np.sqrt(vhat) + self.eps)

    def config(self) -> dict:
        return dict(super().config(), beta1=self.beta1, beta2=self.beta2, eps=self.eps)


OPTIMIZERS = {"sgd": SGD, "adam": Adam}


def make_optimizer(optimizer="sgd", lr=None, **options) -> Optimizer:
    """An optimizer from a name or an instance.

    Parameters
    ----------
    optimizer : str or Optimizer, optional
        ``"sgd"``, ``"adam"`` or an :class:`Optimizer` instance.
    lr : float or None, optional
        ``None`` uses the optimizer's default (SGD 0.05, Adam 1e-3).
    **options
        Go to its constructor (``momentum``, ``nesterov``, ``beta1``, ``beta2``, ``eps``,
        ``weight_decay``).

    Returns
    -------
    Optimizer
    """
    if isinstance(optimizer, Optimizer):
        if options:
            raise DyadsimError("optimizer options cannot be given with an Optimizer instance")
        if lr is not None:
            optimizer.lr = _check_real("lr", lr, low=0.0, low_open=True)
        return optimizer
    if not isinstance(optimizer, str) or optimizer.strip().lower() not in OPTIMIZERS:
        raise DyadsimError(
            f"unknown optimizer {optimizer!r}; valid optimizers: {', '.join(OPTIMIZERS)}"
        )
    cls = OPTIMIZERS[optimizer.strip().lower()]
    try:
        return cls(lr=lr, **options)
    except TypeError as exc:
        import inspect

        valid = [p for p in inspect.signature(cls).parameters if p != "lr"]
        raise DyadsimError(
            f"bad option for optimizer {cls.name!r} ({exc}); it takes: {', '.join(valid)}"
        ) from None
