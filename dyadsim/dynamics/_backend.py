"""Which engine runs a gradient method: numpy (the default) or torch (optional extra).

Only the choice is validated here; the torch engine itself lives in :mod:`._torch` and is
imported (with torch) only when ``backend="torch"`` is asked for.
"""

from __future__ import annotations

from ..errors import DyadsimError

__all__ = ["BACKENDS", "TORCH_ODE_METHODS", "use_torch"]

#: the engines behind ``backprop``, ``relax`` and ``relax_continuous``
BACKENDS = ("numpy", "torch")
#: the solvers ``relax_continuous(backend="torch")`` knows (its default first)
TORCH_ODE_METHODS = ("ETD3",)


def use_torch(backend, device) -> bool:
    """Validate ``backend``/``device``; ``True`` when the torch engine is to run.

    Parameters
    ----------
    backend : str
        ``"numpy"`` or ``"torch"``.
    device : str, torch.device or None
        Only with ``backend="torch"`` (``None``: the CPU).  The numpy backend accepts
        ``None`` or ``"cpu"``.

    Returns
    -------
    bool
    """
    if not isinstance(backend, str) or backend.lower() not in BACKENDS:
        raise DyadsimError(f"unknown backend {backend!r}; valid backends: {', '.join(BACKENDS)}")
    if backend.lower() == "torch":
        return True
    if device is not None and str(device) != "cpu":
        raise DyadsimError(
            f"device={str(device)!r} needs backend='torch' (the numpy backend runs on the CPU)")
    return False
