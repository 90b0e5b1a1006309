"""The record of one training run: per-epoch metrics, relaxation effort, wall time."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path

from .._io import to_jsonable, write_text
from ..errors import DyadsimError

__all__ = ["History", "EPOCH_FIELDS"]

#: Per-epoch columns of a :class:`History` (one list each, one entry per epoch).
EPOCH_FIELDS = (
    "epoch",            # 1, 2, ...
    "train_loss",       # mean loss over the whole training set after the epoch
    "train_accuracy",   # fraction in [0, 1], argmax of the output vs the label
    "test_loss",
    "test_accuracy",
    "batch_loss",       # mean of the minibatch losses seen while training (before each update)
    "relax_mean",       # mean relaxation effort per minibatch (see History.relax_unit)
    "relax_max",        # max relaxation effort over the epoch's minibatches
    "wall_time",        # seconds for the epoch (gradients, updates, evaluation, checkpoint)
)

_FORMAT = "dyadsim-history"


_clean = _jsonable = to_jsonable  # the package's one JSON cleaner


@dataclass
class History:
    """Per-epoch metrics of a :func:`dyadsim.training.train` run.

    Every name in :data:`EPOCH_FIELDS` is a list with one entry per finished epoch:
    ``train_loss``/``train_accuracy``/``test_loss``/``test_accuracy`` (evaluated on the
    full splits after the epoch, accuracies as fractions), ``batch_loss`` (mean minibatch
    loss seen during the epoch), ``relax_mean``/``relax_max`` (relaxation effort per
    minibatch: Euler steps for ``method="euler"``, settling time in units of tau for
    ``"ode"`` and for ``"spice"`` with a transient analysis, ``None`` otherwise; see
    ``relax_unit``) and ``wall_time`` (s).

    ``initial`` holds the same evaluation before the first update; ``config`` the run's
    settings; ``stopped`` why training ended early (``None`` when it ran all epochs).

    Attributes
    ----------
    config : dict
        The run's settings.
    relax_unit : str or None
        Unit of ``relax_mean``/``relax_max``: ``"steps"`` (Euler), ``"tau"`` (ODE, or a
        transient SPICE analysis), ``None`` when no effort is recorded.
    initial : dict
        The evaluation before the first update (``train_loss``, ``train_accuracy``,
        ``test_loss``, ``test_accuracy``).
    stopped : str or None
        Why training ended early; ``None`` when it ran all epochs.
    epoch : list of int
        1, 2, ... for the finished epochs.
    train_loss, train_accuracy, test_loss, test_accuracy : list of float
        The full splits evaluated after each epoch (accuracies as fractions in [0, 1]).
    batch_loss : list of float
        Mean of the minibatch losses seen during each epoch (before each update).
    relax_mean, relax_max : list
        Mean and maximum relaxation effort per minibatch, in ``relax_unit`` (``None``
        entries where not measured).
    wall_time : list of float
        Seconds per epoch (gradients, updates, evaluation, checkpoint).
    chip : dict
        Hardware-aware training (``train(chip=...)``) only: the chip's own evaluation,
        ``initial`` and per-epoch lists ``train_loss``, ``train_accuracy``, ``test_loss``,
        ``test_accuracy``; empty otherwise.
    """

    config: dict = field(default_factory=dict)
    relax_unit: str | None = None
    initial: dict = field(default_factory=dict)
    stopped: str | None = None
    epoch: list = field(default_factory=list)
    train_loss: list = field(default_factory=list)
    train_accuracy: list = field(default_factory=list)
    test_loss: list = field(default_factory=list)
    test_accuracy: list = field(default_factory=list)
    batch_loss: list = field(default_factory=list)
    relax_mean: list = field(default_factory=list)
    relax_max: list = field(default_factory=list)
    wall_time: list = field(default_factory=list)
    #: hardware-aware training (``train(chip=...)``): the chip's own evaluation, ``initial``
    #: and per-epoch lists ``train_loss``, ``train_accuracy``, ``test_loss``, ``test_accuracy``
    chip: dict = field(default_factory=dict)

    # ------------------------------------------------------------------ conveniences
    def __len__(self) -> int:
        return len(self.epoch)

    def append(self, **row) -> None:
        """Add one epoch (every name in :data:`EPOCH_FIELDS` must be given)."""
        missing = [f for f in EPOCH_FIELDS if f not in row]
        extra = [f for f in row if f not in EPOCH_FIELDS]
        if missing or extra:
            raise DyadsimError(f"History.append: missing {missing}, unexpected {extra}")
        for f in EPOCH_FIELDS:
            getattr(self, f).append(_clean(row[f]))

    def rows(self) -> list[dict]:
        """One dict per epoch."""
        return [{f: getattr(self, f)[i] for f in EPOCH_FIELDS} for i in range(len(self))]

    @property
    def best_epoch(self) -> int | None:
        """The epoch (1-based) with the highest test accuracy (the first one on ties)."""
        if not self.test_accuracy:
            return None
        best = max(range(len(self)), key=lambda i: (self.test_accuracy[i], -i))
        return self.epoch[best]

    @property
    def best_test_accuracy(self) -> float | None:
        return max(self.test_accuracy) if self.test_accuracy else None

    @property
    def final_test_accuracy(self) -> float | None:
        return self.test_accuracy[-1] if self.test_accuracy else None

    def __repr__(self) -> str:
        m = self.config.get("method", "?")
        if not len(self):
            return f"<History method={m} epochs=0>"
        return (f"<History method={m} epochs={len(self)} final test acc "
                f"{100 * self.test_accuracy[-1]:.2f}% (best {100 * self.best_test_accuracy:.2f}% "
                f"at epoch {self.best_epoch})>")

    def summary(self) -> str:
        """A text table, one line per epoch."""
        unit = self.relax_unit or "-"
        head = (f"{'epoch':>5} {'train loss':>11} {'train acc':>9} {'test loss':>10} "
                f"{'test acc':>8} {'relax mean':>10} {'relax max':>9} {'time s':>7}")
        lines = [f"method={self.config.get('method')} relax unit: {unit}", head]
        for r in self.rows():
            rm = "-" if r["relax_mean"] is None else f"{r['relax_mean']:.4g}"
            rx = "-" if r["relax_max"] is None else f"{r['relax_max']:.4g}"
            lines.append(
                f"{r['epoch']:>5d} {r['train_loss']:>11.5f} {100 * r['train_accuracy']:>8.2f}% "
                f"{r['test_loss']:>10.5f} {100 * r['test_accuracy']:>7.2f}% {rm:>10} {rx:>9} "
                f"{r['wall_time']:>7.2f}"
            )
        if self.stopped:
            lines.append(f"stopped: {self.stopped}")
        return "\n".join(lines)

    # ------------------------------------------------------------------ serialisation
    def to_dict(self) -> dict:
        d = {"format": _FORMAT, "version": 1, "config": _jsonable(self.config),
             "relax_unit": self.relax_unit, "initial": _jsonable(self.initial),
             "stopped": self.stopped}
        for f in EPOCH_FIELDS:
            d[f] = [_clean(v) for v in getattr(self, f)]
        if self.chip:
            d["chip"] = _jsonable(self.chip)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "History":
        if not isinstance(d, dict) or d.get("format") != _FORMAT:
            raise DyadsimError("not a dyadsim training history (missing format 'dyadsim-history')")
        h = cls(config=dict(d.get("config") or {}), relax_unit=d.get("relax_unit"),
                initial=dict(d.get("initial") or {}), stopped=d.get("stopped"))
        n = len(d.get("epoch", []))
        for f in EPOCH_FIELDS:
            vals = list(d.get(f, [None] * n))
            if len(vals) != n:
                raise DyadsimError(f"history field {f!r} has {len(vals)} entries, expected {n}")
            setattr(h, f, vals)
        h.chip = dict(d.get("chip") or {})
        return h

    def to_json(self, path: str | PathLike | None = None, indent: int = 2) -> str:
        """The history as JSON; also written to ``path`` when given."""
        text = json.dumps(to_jsonable(self.to_dict()), indent=indent, allow_nan=False)
        if path is not None:
            path = Path(path)
            path.parent.mkdir(parents=True, exist_ok=True)
            write_text(path, text + "\n")
        return text

    @classmethod
    def from_json(cls, source) -> "History":
        """Read a history from a JSON file path or a JSON string."""
        text = None
        if isinstance(source, (str, PathLike)):
            s = str(source)
            if s.lstrip().startswith("{"):
                text = s
            else:
                p = Path(source)
                if not p.exists():
                    raise DyadsimError(f"history file not found: {p}")
                text = p.read_text()
        else:
            raise DyadsimError(f"from_json takes a path or a JSON string, got {type(source).__name__}")
        try:
            d = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DyadsimError(f"history is not valid JSON: {exc}") from None
        return cls.from_dict(d)

    def to_csv(self, path: str | PathLike | None = None) -> str:
        """One row per epoch (columns :data:`EPOCH_FIELDS`; empty cell = None), after one
        ``# {json}`` comment line carrying ``config``, ``relax_unit``, ``initial`` and
        ``stopped`` (``pandas.read_csv(path, comment="#")`` skips it).  Returns the text
        and writes it to ``path`` when given."""
        meta = {"format": _FORMAT, "config": _jsonable(self.config), "relax_unit": self.relax_unit,
                "initial": _jsonable(self.initial), "stopped": self.stopped}
        buf = io.StringIO()
        buf.write("# " + json.dumps(meta) + "\n")
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(EPOCH_FIELDS)
        for r in self.rows():
            w.writerow(["" if r[f] is None else repr(r[f]) if isinstance(r[f], float) else r[f]
                        for f in EPOCH_FIELDS])
        text = buf.getvalue()
        if path is not None:
            path = Path(path)
            path.parent.mkdir(parents=True, exist_ok=True)
            write_text(path, text)
        return text

    @classmethod
    def from_csv(cls, path: str | PathLike) -> "History":
        """Read a history written by :meth:`to_csv`."""
        p = Path(path)
        if not p.exists():
            raise DyadsimError(f"history file not found: {p}")
        lines = p.read_text().splitlines()
        meta = {}
        if lines and lines[0].startswith("#"):
            try:
                meta = json.loads(lines[0][1:].strip())
            except json.JSONDecodeError:
                meta = {}
            lines = lines[1:]
        reader = csv.DictReader(lines)
        if reader.fieldnames is None or "epoch" not in reader.fieldnames:
            raise DyadsimError(f"{p} is not a dyadsim history CSV (no 'epoch' column)")
        h = cls(config=dict(meta.get("config") or {}), relax_unit=meta.get("relax_unit"),
                initial=dict(meta.get("initial") or {}), stopped=meta.get("stopped"))
        for row in reader:
            for f in EPOCH_FIELDS:
                cell = row.get(f, "")
                if cell in ("", None):
                    val = None
                elif f == "epoch":
                    val = int(cell)
                else:
                    val = float(cell)
                getattr(h, f).append(val)
        return h
