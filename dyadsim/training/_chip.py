"""Hardware-aware training: the gradients of every step come from one sampled chip's
relaxation (its devices fixed for the whole run, reprogrammed with the current weights,
fresh thermal noise every step), and the chip is evaluated as it would infer."""

from __future__ import annotations

import itertools

import numpy as np

from ..dynamics import Chip
from ..errors import DyadsimError

__all__ = ["make_chip", "chip_gradient_source", "evaluate_chip"]


def make_chip(chip, net, seed) -> Chip:
    """A Chip for ``net``: ``chip`` is a Chip (sampled for a network of the same
    architecture; it is reprogrammed with ``net``'s weights) or a dict of
    :meth:`Chip.sample` options (sampled with ``seed``)."""
    if isinstance(chip, Chip):
        return chip if chip.net is net else chip.with_network(net)
    if isinstance(chip, dict):
        opts = dict(chip)
        s = opts.pop("seed", seed)
        return Chip.sample(net, seed=s, **opts)
    raise DyadsimError(f"chip must be a dyadsim.Chip or a dict of Chip.sample options, got "
                       f"{type(chip).__name__}")


def chip_gradient_source(chip, method):
    """``fn(net, x, y) -> (Gradients, loss, effort)`` running ``method`` (a Method object:
    Euler, ODE or Spice; backprop means the chip's Euler relaxation at eta = 1) on the
    chip, with a fresh noise seed every call."""
    from ..readout import get_method

    if method.name == "backprop":
        method = get_method("euler", dtype=method.options.get("dtype", np.float64))
    counter = itertools.count()

    def fn(net, x, y):
        if chip.net is not net:
            raise DyadsimError("the chip is programmed with another network object")
        step = next(counter)
        m = method.replace(seed=step) if method.name in ("euler", "ode") and chip.noise > 0 else method
        r = m(chip, x, y)
        return r.grads, r.loss, m.effort(r)

    fn.method = method
    return fn


def evaluate_chip(chip, x, labels, y, seed=None) -> tuple[float, float]:
    """``(mean loss, accuracy)`` of the chip's inference: its forward pass with every
    gain and offset (:meth:`Chip.predict`), plus a static sample of its thermal noise
    when it has any (``seed``)."""
    out = chip.predict(x, noise_seed=seed) if chip.noise > 0 else chip.predict(x)
    loss = float(np.mean(chip.net.loss.value(out, np.asarray(y, dtype=out.dtype))))
    acc = float(np.mean(np.argmax(out, axis=1) == np.asarray(labels)))
    return loss, acc
