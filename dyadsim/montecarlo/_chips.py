"""Monte Carlo over sampled chips, on either engine.

Run r is the chip ``Chip.sample(net, seed=[seed, r], **chip)``, the same chip on both
engines, so their per-run results agree (to the engines' agreement, ~1e-10):

* ``engine="dynamics"``: the chip dynamics engine (:func:`dyadsim.relax_chips`), many chips
  per Dask task, vectorized over the chips and the batch;
* ``engine="spice"``: one ngspice ``.op`` of the chip's netlist per run (a Dask task), read
  out through the chip's converters.

Each run's gradients are compared tensor by tensor with exact backprop of the nominal
network (``reference="network"``) or of the network the chip computes
(``reference="chip"``: the misalignment DBP itself adds on that chip).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from ..errors import DyadsimError
from ._engine import _Engine
from ._result import ALL_TENSORS, COLUMNS, MonteCarloResult

__all__ = ["chip_monte_carlo", "ENGINES", "REFERENCES", "ChipSpec"]

ENGINES = ("dynamics", "spice")
REFERENCES = ("network", "chip")


@dataclass(frozen=True)
class ChipSpec:
    """The chip options of a Monte Carlo, where the circuit Monte Carlo lists its
    non-idealities (``label`` names them).

    Parameters
    ----------
    options : tuple
        The :meth:`dyadsim.Chip.sample` options as sorted ``(name, value)`` pairs.
    """

    options: tuple

    @property
    def label(self) -> str:
        return "chip " + " ".join(f"{k}={v}" for k, v in self.options)

    @property
    def is_zero(self) -> bool:
        return False


def _network_from(spec):
    from ..network import Network

    graph, loss = spec
    return Network.from_graph(graph, loss=loss)


def _rows(run, cmp, seconds, rescued=False):
    rows = []
    for m in list(cmp.tensors.values()) + [cmp.summary]:
        rows.append({"run": run, "tensor": ALL_TENSORS if m is cmp.summary else m.name,
                     "rel_error": m.rel_error, "norm_ratio": m.norm_ratio, "angle": m.angle,
                     "log10_angle": m.log10_angle, "failed": False, "error": "",
                     "rescued": rescued, "seconds": seconds})
    return rows


def _fail(run, names, exc, seconds):
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    reason = getattr(exc, "reason", None)
    msg = f"{type(exc).__name__}" + (f"[{reason}]" if reason else "") + f": {first}"
    return [{"run": run, "tensor": nm, "rel_error": math.nan, "norm_ratio": math.nan,
             "angle": math.nan, "log10_angle": math.nan, "failed": True, "error": msg,
             "rescued": False, "seconds": seconds} for nm in names]


def _reference(chip, X, Y, nominal, mode):
    from ..dynamics import backprop

    return nominal if mode == "network" else backprop(chip.network, X, Y)


def _batch_metrics(G, R):
    """:func:`dyadsim.compare`'s metrics of K gradients at once: G (K, size) against
    R (size,) or (K, size); returns (rel_error, norm_ratio, angle), each (K,)."""
    R = np.broadcast_to(R, G.shape)
    scale = np.maximum(np.max(np.abs(G), axis=1), np.max(np.abs(R), axis=1))
    ok = (scale > 0) & np.isfinite(scale)
    s = np.where(ok, scale, 1.0)[:, None]
    g, r = G / s, R / s
    nr, ng = np.linalg.norm(r, axis=1), np.linalg.norm(g, axis=1)
    diff = np.linalg.norm(g - r, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(nr == 0, np.where(diff == 0, 0.0, np.inf), diff / nr)
        ratio = np.where(nr == 0, np.where(ng == 0, 1.0, np.inf), ng / nr)
        ua = g / np.where(ng == 0, 1.0, ng)[:, None]
        ub = r / np.where(nr == 0, 1.0, nr)[:, None]
        th = 2.0 * np.arctan2(np.linalg.norm(ua - ub, axis=1), np.linalg.norm(ua + ub, axis=1))
    th = np.where((ng == 0) | (nr == 0), np.where(ng == nr, 0.0, math.pi / 2), th)
    return rel, ratio, th


def run_chip_chunk(runs, net_spec, options, seed, X, Y, nominal, mode, names):
    """Dask task of the dynamics engine: the chips of ``runs``, relaxed together, their
    metrics computed for all of them at once."""
    from ..dynamics import Chip, relax_chips

    t0 = time.perf_counter()
    try:
        net = _network_from(net_spec)
        chips = [Chip.sample(net, seed=[seed, r], **options) for r in runs]
        res = relax_chips(chips, X, Y, method="steady")
        refs = [_reference(c, X, Y, nominal, mode) for c in chips] if mode == "chip" else None
        cols = []
        for key in nominal:
            G = np.stack([np.ravel(g[key]) for g in res.grads])
            R = np.ravel(nominal[key]) if refs is None else np.stack([np.ravel(f[key]) for f in refs])
            cols.append((G, R))
        G_all = np.concatenate([c[0] for c in cols], axis=1)
        R_all = np.concatenate([np.broadcast_to(c[1], c[0].shape) for c in cols], axis=1)
        metrics = [_batch_metrics(G, R) for G, R in cols] + [_batch_metrics(G_all, R_all)]
    except Exception as exc:  # noqa: BLE001 -- a failed run is data
        return [row for r in runs for row in _fail(r, names, exc, math.nan)]
    per = (time.perf_counter() - t0) / len(runs)
    out = []
    for k, r in enumerate(runs):
        for name, (rel, ratio, th) in zip(names, metrics):
            t = float(th[k])
            out.append({"run": r, "tensor": name, "rel_error": float(rel[k]),
                        "norm_ratio": float(ratio[k]), "angle": t,
                        "log10_angle": math.log10(t) if t > 0 else -math.inf, "failed": False,
                        "error": "", "rescued": False, "seconds": per})
    return out


def run_chip_spice(run, net_spec, options, seed, X, Y, nominal, mode, names, timeout,
                   compile_options):
    """Dask task of the spice engine: one chip's netlist, one ngspice ``.op``."""
    from ..circuits import compile_chip_netlist
    from ..dynamics import Chip, chip_readout
    from ..readout import circuit_states, compare
    from ._run import simulate_robust

    t0 = time.perf_counter()
    try:
        net = _network_from(net_spec)
        chip = Chip.sample(net, seed=[seed, run], **options)
        nl = compile_chip_netlist(net, chip.values(), X, Y, analysis="op", **compile_options)
        result, rescued = simulate_robust(nl, "op", timeout)
        st = circuit_states(net, result)
        g = chip_readout(chip, st.x0, st.y, 0.5 * (st.x + st.z), st.x - st.z, st.u)
        cmp = compare(g, _reference(chip, X, Y, nominal, mode))
    except Exception as exc:  # noqa: BLE001 -- a failed run is data
        return _fail(run, names, exc, time.perf_counter() - t0)
    return _rows(run, cmp, time.perf_counter() - t0, rescued)


def chip_monte_carlo(net, x, y, *, chip, runs=200, engine="dynamics", seed=0, scheduler=None,
                     workers=None, progress=True, timeout=120.0, reference="network",
                     chunk=None, compile_options=None, _engine=None) -> MonteCarloResult:
    """Monte Carlo over sampled chips (see the module docstring); the front is
    :func:`dyadsim.montecarlo.monte_carlo` with ``chip=``.

    Parameters
    ----------
    net, x, y : Network and batch
    chip : dict
        Options of :meth:`dyadsim.Chip.sample` (``mismatch``, ``crossbar``, ...).
    runs : int
        Chips; run r is ``Chip.sample(net, seed=[seed, r], **chip)``.
    engine : ``"dynamics"`` or ``"spice"``
    seed : int
    scheduler, workers, progress, timeout
        As for :func:`~dyadsim.montecarlo.monte_carlo` (``timeout``: per ngspice run).
    reference : ``"network"`` or ``"chip"``
        Compare with backprop of the nominal network, or of ``chip.network``.
    chunk : int or None
        Chips per Dask task (dynamics engine; default: ``runs`` spread over about four
        tasks per worker, at most 1024).
    compile_options : dict or None
        Compiler options (spice engine), e.g. ``{"tau": 1e-6}``.

    Returns
    -------
    MonteCarloResult
        ``nonidealities`` holds one :class:`ChipSpec`; ``info["engine_kind"]`` the engine.
    """
    from .._validate import check_choice, check_int
    from ..dynamics import Chip, backprop
    from ..network import param_name

    if not isinstance(chip, dict):
        raise DyadsimError(f"chip must be a dict of Chip.sample options, got {type(chip).__name__}")
    engine = check_choice("engine", engine, ENGINES)
    reference = check_choice("reference", reference, REFERENCES)
    runs = check_int("runs", runs, 1, 10_000_000)
    seed = check_int("seed", seed, 0, 2**63 - 1)
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float))
                                or not timeout > 0 or not math.isfinite(timeout)):
        raise DyadsimError(f"timeout must be a positive number of seconds, got {timeout!r}")
    probe = Chip.sample(net, seed=[seed, 0], **chip)  # validates the options and the network
    if engine == "spice" and probe.noise > 0:
        raise DyadsimError("engine='spice' cannot run a chip's thermal noise (ngspice's noise "
                           "is not seeded reproducibly); use engine='dynamics'")
    t0 = time.perf_counter()
    X, Y, _ = net.check_xy(x, y)
    nominal = backprop(net, X, Y)
    names = [param_name(k) for k in nominal] + [ALL_TENSORS]
    net_spec = (net.to_graph(), net.loss.name)
    spec = ChipSpec(tuple(sorted(chip.items())))
    eng = _engine or _Engine(scheduler, workers, progress)

    def go(e):
        if engine == "dynamics":
            size = chunk
            if size is None:
                size = max(1, min(1024, math.ceil(runs / (4 * max(1, e.n_workers)))))
            size = check_int("chunk", size, 1)
            groups = [list(range(i, min(runs, i + size))) for i in range(0, runs, size)]
            shared = (net_spec, dict(chip), seed, X, Y, nominal, reference, names)
            return e.map(run_chip_chunk, [(g,) for g in groups], shared,
                         lambda i, exc: [row for r in groups[i] for row in _fail(r, names, exc, math.nan)])
        shared = (net_spec, dict(chip), seed, X, Y, nominal, reference, names, timeout,
                  dict(compile_options or {}))
        return e.map(run_chip_spice, [(r,) for r in range(runs)], shared,
                     lambda i, exc: _fail(i, names, exc, math.nan))

    t1 = time.perf_counter()
    if _engine is None:
        with eng:
            chunks = go(eng)
            n_workers = eng.n_workers
    else:
        chunks = go(eng)
        n_workers = eng.n_workers
    t2 = time.perf_counter()
    import pandas as pd

    table = pd.DataFrame([row for part in chunks for row in part], columns=COLUMNS)
    table = table.sort_values(["run"], kind="stable").reset_index(drop=True)
    info = {"compile_s": t1 - t0, "runs_s": t2 - t1, "engine": eng.kind, "workers": n_workers,
            "engine_kind": engine, "reference": reference, "analysis": "op", "seed": seed,
            "batch": int(X.shape[0]), "chip": dict(chip)}
    return MonteCarloResult(table, runs, [spec], f"chip/{engine}", names[:-1], info)
