"""The gradients container and the readout from a relaxed state (docs/theory.md, section 3)."""

from __future__ import annotations

import numpy as np

__all__ = ["Gradients"]


class Gradients(dict):
    """``{("W", src, dst): dC/dW, ("b", node): dC/db}``, shaped like the parameters.

    A plain ``dict`` with a few conveniences.

    Parameters
    ----------
    *args
        What ``dict`` takes (a mapping or an iterable of key-value pairs).
    loss : float or None, optional
        The batch loss where the method that produced the gradients knows it.
    method : str or None, optional
        Names that method.
    **kwargs
        More items, as for ``dict``.
    """

    def __init__(self, *args, loss=None, method=None, **kw):
        super().__init__(*args, **kw)
        self.loss = loss
        self.method = method

    def flat(self) -> np.ndarray:
        """All gradients concatenated into one vector (in key order)."""
        if not self:
            return np.zeros(0)
        return np.concatenate([np.ravel(v) for v in self.values()])

    def norm(self) -> float:
        return float(np.linalg.norm(self.flat()))

    def astype(self, dtype) -> "Gradients":
        return Gradients({k: np.asarray(v, dtype=dtype) for k, v in self.items()},
                         loss=self.loss, method=self.method)

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}: {tuple(np.shape(v))}" for k, v in self.items())
        return f"Gradients(method={self.method!r}, loss={self.loss!r}, {{{inner}}})"
