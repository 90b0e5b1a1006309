"""The energy E(x, z) and the saddle flows, as public functions (docs/theory.md, section 2)."""

from __future__ import annotations

import numpy as np

from .._validate import checked_call
from ..errors import DyadsimError
from ._system import System

__all__ = ["energy", "flow", "flow_md", "flow_jacobian"]


def _states(sysm, a, b, names):
    A = np.asarray(a, dtype=sysm.dtype)
    Bv = np.asarray(b, dtype=sysm.dtype)
    want = (sysm.B, sysm.n)
    for arr, nm in ((A, names[0]), (Bv, names[1])):
        shape = arr.shape if arr.ndim == 2 else (1,) + arr.shape
        if shape != want:
            raise DyadsimError(
                f"state {nm} has shape {arr.shape}, expected ({sysm.n},) or {want} "
                f"(n = {sysm.n} stacked neurons, batch {sysm.B})"
            )
        if not np.all(np.isfinite(arr)):
            raise DyadsimError(f"state {nm} contains NaN or inf")
    return A.reshape(want), Bv.reshape(want)


@checked_call
def energy(net, x, z, x0, y, dtype=np.float64):
    """The energy E(x, z) = (x - z)^T F((x + z)/2) + C(m_L, y), per sample.

    Parameters
    ----------
    net : Network
        The network.
    x, z : array_like, shape (n,) or (B, n)
        The doubled states (n stacked non-input neurons, in the order of ``net.nodes``).
    x0 : array_like, shape (n_in,) or (B, n_in)
        The input (the clamped input layer).
    y : array_like, shape (n_out,) or (B, n_out)
        The target.
    dtype : numpy float dtype, optional
        ``float64`` (default) or ``float32``.

    Returns
    -------
    float or ndarray, shape (B,)
        The energy: a float for one sample, one value per sample for a batch.
    """
    s = System(net, x0, y, dtype)
    X, Z = _states(s, x, z, ("x", "z"))
    e = s.energy(X, Z)
    return float(e[0]) if s.single else e


@checked_call
def flow(net, x, z, x0, y, dtype=np.float64):
    """The saddle flow (dx/dt, dz/dt) = (+dE/dx, -dE/dz).

    Parameters
    ----------
    net : Network
        The network.
    x, z : array_like, shape (n,) or (B, n)
        The doubled states (n stacked non-input neurons, in the order of ``net.nodes``).
    x0 : array_like, shape (n_in,) or (B, n_in)
        The input (the clamped input layer).
    y : array_like, shape (n_out,) or (B, n_out)
        The target.
    dtype : numpy float dtype, optional
        ``float64`` (default) or ``float32``.

    Returns
    -------
    dx, dz : ndarray, shaped like ``x``
        The time derivatives of ``x`` and ``z``.
    """
    s = System(net, x0, y, dtype)
    X, Z = _states(s, x, z, ("x", "z"))
    dx, dz = s.flow_xz(X, Z)
    return (dx[0], dz[0]) if s.single else (dx, dz)


@checked_call
def flow_md(net, m, d, x0, y, dtype=np.float64):
    """The same flow in (m, d) = ((x+z)/2, x-z) coordinates, where it decouples.

    dm/dt = sigma(W m + beta) - m,  dd/dt = W^T (sigma'(W m + beta) * d) - d + g.

    Parameters
    ----------
    net : Network
        The network.
    m, d : array_like, shape (n,) or (B, n)
        The mean ``(x + z)/2`` and the difference ``x - z`` (n stacked non-input neurons, in the order of ``net.nodes``).
    x0 : array_like, shape (n_in,) or (B, n_in)
        The input (the clamped input layer).
    y : array_like, shape (n_out,) or (B, n_out)
        The target.
    dtype : numpy float dtype, optional
        ``float64`` (default) or ``float32``.

    Returns
    -------
    dm, dd : ndarray, shaped like ``m``
        The time derivatives of ``m`` and ``d``.
    """
    s = System(net, x0, y, dtype)
    M, D = _states(s, m, d, ("m", "d"))
    dm, dd, _ = s.flow_md(M, D)
    return (dm[0], dd[0]) if s.single else (dm, dd)


@checked_call
def flow_jacobian(net, x, z, x0, y, dtype=np.float64):
    """Sparse Jacobian of (dx/dt, dz/dt) with respect to (x, z).

    Parameters
    ----------
    net : Network
        The network.
    x, z : array_like, shape (n,) or (B, n)
        The doubled states (n stacked non-input neurons, in the order of ``net.nodes``).
    x0 : array_like, shape (n_in,) or (B, n_in)
        The input (the clamped input layer).
    y : array_like, shape (n_out,) or (B, n_out)
        The target.
    dtype : numpy float dtype, optional
        ``float64`` (default) or ``float32``.

    Returns
    -------
    scipy.sparse matrix
        For one sample: a (2n, 2n) matrix over [x, z].  For a batch: block-diagonal over
        the samples, variables ordered [x_0, z_0, x_1, z_1, ...].
    """
    s = System(net, x0, y, dtype)
    X, Z = _states(s, x, z, ("x", "z"))
    return s.jacobian(X, Z)
