"""The result of a Monte Carlo: one table row per run x parameter tensor, and its summary."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["MonteCarloResult", "ALL_TENSORS", "COLUMNS"]

#: name of the rows that hold every parameter concatenated
ALL_TENSORS = "(all parameters)"
#: columns of :attr:`MonteCarloResult.table`
COLUMNS = ["run", "tensor", "rel_error", "norm_ratio", "angle", "log10_angle", "failed", "error",
           "rescued", "seconds"]


def _finite(values):
    a = np.asarray(values, dtype=float)
    return a[np.isfinite(a)]


def _stats(values) -> tuple:
    """(mean, std) of the finite values; std is the sample std (ddof=1), exactly 0 when
    every value is the same; (None, None) when there is no finite value."""
    a = _finite(values)
    if a.size == 0:
        return None, None
    if np.all(a == a[0]):
        return float(a[0]), 0.0
    return float(np.mean(a)), float(np.std(a, ddof=1)) if a.size > 1 else 0.0


@dataclass
class MonteCarloResult:
    """``table``: a pandas DataFrame, one row per run x parameter tensor (columns
    :data:`COLUMNS`; the rows named :data:`ALL_TENSORS` hold all parameters together).
    ``summary()``: runs, failures and per-tensor statistics.  ``info``: timings, engine.

    Parameters
    ----------
    table : pandas.DataFrame
        One row per run x parameter tensor, columns :data:`COLUMNS`.
    runs : int
        Number of runs.
    nonidealities : list
        The non-idealities applied (a chip Monte Carlo: one :class:`ChipSpec`).
    dialect : str
        ``"behavioral"`` or ``"device"``; a chip Monte Carlo: ``"chip/dynamics"`` or
        ``"chip/spice"``.
    tensors : list of str
        The parameter tensors' names (``"W[src->dst]"``, ``"b[node]"``).
    info : dict, optional
        Timings, engine, workers, seed, batch size, ...
    """

    table: object
    runs: int
    nonidealities: list
    dialect: str
    tensors: list
    info: dict = field(default_factory=dict)

    @property
    def failed_runs(self) -> list:
        t = self.table
        return sorted(set(int(r) for r in t.loc[t["failed"], "run"]))

    def failures(self) -> list:
        """``[{"run": r, "error": message}]`` of every failed run."""
        t = self.table[self.table["failed"]]
        seen, out = set(), []
        for run, msg in zip(t["run"], t["error"]):
            if int(run) not in seen:
                seen.add(int(run))
                out.append({"run": int(run), "error": str(msg)})
        return sorted(out, key=lambda d: d["run"])

    def summary(self) -> dict:
        """``runs``, ``failed``, ``rescued`` and, per parameter tensor (and
        :data:`ALL_TENSORS`), the mean and standard deviation of the misalignment angle
        (radians and log10), of the norm ratio and of the relative error against backprop,
        over the runs that did not fail."""
        t = self.table
        ok = t[~t["failed"]]
        tensors = {}
        for name in self.tensors + [ALL_TENSORS]:
            rows = ok[ok["tensor"] == name]
            d = {"n": int(len(rows))}
            for col in ("angle", "log10_angle", "norm_ratio", "rel_error"):
                mean, std = _stats(rows[col])
                d[f"{col}_mean"], d[f"{col}_std"] = mean, std
            tensors[name] = d
        return {
            "runs": int(self.runs),
            "failed": len(self.failed_runs),
            "rescued": int(len(set(ok.loc[ok["rescued"], "run"]))) if len(ok) else 0,
            "dialect": self.dialect,
            "nonidealities": [ni.label for ni in self.nonidealities],
            "tensors": tensors,
            "failures": self.failures(),
        }
