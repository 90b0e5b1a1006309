"""Relaxation without a global clock: neurons update one at a time, in random order.

Each update takes one neuron j and moves its own pair (x_j, z_j) by one Euler step of
size ``eta`` computed from the current state of the whole network (the others keep
theirs): ``m_j += eta (sigma(u_j) - m_j)``, ``d_j += eta ([W^T s]_j + g_j - d_j)``.  The
neuron is drawn uniformly at random for every update (no rounds, no shared step).  The
pre-activations are kept up to date incrementally (a change of m_j moves the u of its
successors), so an update costs the neuron's fan-in plus fan-out.

The flow's Jacobian is block-triangular, so a neuron whose inputs are final is final
after one update at ``eta = 1``: with probability one the state reaches the fixed point,
backprop, after finitely many updates (about n log n per layer of depth).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from .._validate import check_eta, check_int
from ..errors import ConvergenceError, DyadsimError
from ._system import System

__all__ = ["relax_async"]


def relax_async(net, x, y, *, eta=1.0, dtype=np.float64, seed=None, tol=None,
                max_sweeps=100_000):
    """Relax by random single-neuron updates (``relax(..., schedule="async")``).

    Parameters
    ----------
    net : Network
    x, y : array_like
    eta : float
        Each update's Euler step for the chosen neuron, in (0, 2).
    dtype : float64 or float32
    seed : int or None
        Seed of the update order (``None``: 0).
    tol : float or None
        Stop when the flow's largest relative rate, per layer as in :func:`dyadsim.relax`,
        is below it after a sweep of n updates (default 1e-12 in float64, float32's eps).
    max_sweeps : int
        Give up (ConvergenceError) after this many sweeps of n updates.

    Returns
    -------
    RelaxResult
        ``steps`` are sweeps of n updates; ``info["updates"]`` the number of updates.
    """
    from ._euler import RelaxResult, _blockwise_residual

    eta = check_eta(eta)
    seed = 0 if seed is None else check_int("seed", seed, 0)
    max_sweeps = check_int("max_sweeps", max_sweeps, 1)
    sysm = System(net, x, y, dtype)
    dt = sysm.dtype
    if tol is None:
        tol = 1e-12 if dt == np.float64 else float(np.finfo(np.float32).eps)
    n, B = sysm.n, sysm.B
    if n == 0:
        raise DyadsimError("the network has no neurons to relax")
    W = sp.csr_matrix(net.W, dtype=dt)
    Wc = W.tocsc()
    act_of = np.empty(n, dtype=object)
    for v, sl in sysm.slices.items():
        act_of[sl] = sysm.acts[v]
    out = sysm.out
    out_lo = out.start
    m = np.zeros((B, n), dtype=dt)
    d = np.zeros((B, n), dtype=dt)
    u = sysm.beta.copy()  # W m + beta with m = 0
    rng = np.random.default_rng([seed, 61])
    updates = 0
    sweeps = 0
    residual = np.inf
    converged = False
    while sweeps < max_sweeps:
        for j in rng.integers(0, n, size=n):
            act = act_of[j]
            uj = u[:, j]
            dm = eta * (act.f(uj) - m[:, j])
            # the backward sum at j: its successors' s = sigma'(u_c) d_c
            lo, hi = Wc.indptr[j], Wc.indptr[j + 1]
            rows, vals = Wc.indices[lo:hi], Wc.data[lo:hi]
            r = np.zeros(B, dtype=dt)
            for c, w in zip(rows.tolist(), vals.tolist()):
                r += w * act_of[c].df(u[:, c]) * d[:, c]
            if out_lo <= j < out.stop:
                r += net.loss.grad(m[:, out], sysm.Y)[:, j - out_lo]
            dd = eta * (r - d[:, j])
            m[:, j] += dm
            d[:, j] += dd
            if rows.size:
                u[:, rows] += dm[:, None] * vals[None, :]
            updates += 1
        sweeps += 1
        if not (np.all(np.isfinite(m)) and np.all(np.isfinite(d))):
            raise ConvergenceError(f"asynchronous relaxation produced NaN/inf after {sweeps} sweeps")
        fm, fd, _ = sysm.flow_md(m, d)
        residual = _blockwise_residual(sysm, m, d, eta * fm, eta * fd)
        if residual <= tol:
            converged = True
            break
    if not converged:
        raise ConvergenceError(f"asynchronous relaxation did not reach tol={tol:g} in {max_sweeps} "
                               f"sweeps (last relative rate {residual:.3g})")
    grads = sysm.readout(m, d, method=f"euler[async, eta={eta:g}, seed={seed}]")
    if sysm.single:
        m, d = m[0], d[0]
    res = RelaxResult(grads, sweeps, None, None, eta, "async", True, residual, net.depth,
                      m=m, d=d, state="md")
    res.info["updates"] = updates
    return res
