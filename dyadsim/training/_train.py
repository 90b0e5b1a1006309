"""Minibatch training where only the gradient source changes.

``method`` picks where the gradients of each minibatch come from: exact digital
``"backprop"``, the DBP saddle flow relaxed with explicit Euler (``"euler"``), the
continuous-time flow integrated to steady state (``"ode"``), or the analog circuit's DC
operating point in ngspice (``"spice"``).  Everything else (network, batches, optimizer,
evaluation) is shared, so two runs with the same seed see the same minibatches in the
same order and differ only by their gradients.
"""

from __future__ import annotations

import inspect
import math
import numbers
import time
from pathlib import Path

import numpy as np

from .._validate import check_bool, check_dtype, check_eta, checked_call
from ..errors import ConvergenceError, DyadsimError
from ..dynamics import Method
from ..readout import METHODS, get_method
from ._history import History
from ._optim import Optimizer, make_optimizer

__all__ = ["train", "METHODS", "TrainingDiverged", "evaluate", "gradient_source", "resolve_method"]

_DATASETS_BY_NAME = ("digits", "xor", "moons", "mnist", "fashion_mnist")


class TrainingDiverged(ConvergenceError):
    """Training produced a non-finite loss or gradient.

    The network has been restored to its last good parameters (the end of the last
    finished epoch, or the initial ones).

    Parameters
    ----------
    message : str
        What diverged.
    epoch, batch : int
        Where it happened (1-based).
    checkpoint : str or None, optional
        The last good checkpoint file (``None`` without a ``checkpoint_dir``).
    history : History or None, optional
        The epochs that did finish.
    """

    def __init__(self, message, *, epoch, batch, checkpoint=None, history=None):
        super().__init__(message)
        self.epoch = epoch
        self.batch = batch
        self.checkpoint = checkpoint
        self.history = history


# ---------------------------------------------------------------------- validation
def _check_int(name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise DyadsimError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _resolve_data(data):
    from ..datasets import Dataset, load

    if data is None:
        data = "digits"
    if isinstance(data, Dataset):
        return data
    if isinstance(data, str):
        return load(data)  # unknown names raise a DyadsimError listing the valid ones
    raise DyadsimError(
        f"data must be a dyadsim.datasets.Dataset or a dataset name "
        f"({', '.join(_DATASETS_BY_NAME)}), got {type(data).__name__}"
    )


def _resolve_net(net, seed):
    from ..network import Network, mlp

    if isinstance(net, Network):
        return net
    if isinstance(net, (str, list, tuple)):
        spec = net
        if isinstance(spec, str) and spec.strip().lower().endswith(".npz"):
            from ..network import load

            return load(spec)
        return mlp(spec, activation="tanh", loss="xent", seed=seed)
    raise DyadsimError(
        f"net must be a dyadsim Network or a layer-size spec like '64-64x8-10', got "
        f"{type(net).__name__}"
    )


def _check_widths(net, data):
    if data.n_features != net.n_in:
        raise DyadsimError(
            f"data set {data.name!r} has {data.n_features} input features but the network's "
            f"input layer {net.input!r} has width {net.n_in}"
        )
    width = data.y_train.shape[1] if data.one_hot else data.n_classes
    if width != net.n_out:
        raise DyadsimError(
            f"the labels of data set {data.name!r} have width {width} ({data.n_classes} classes) "
            f"but the network's output layer {net.output!r} has width {net.n_out}; "
            "they must match"
        )


def _check_options(name, options, fn, taken):
    if options is None:
        return {}
    if not isinstance(options, dict):
        raise DyadsimError(f"{name} must be a dict of keyword arguments, got {type(options).__name__}")
    params = inspect.signature(fn).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        valid = None
    else:
        valid = [p for p in params if p not in taken]
    bad = [k for k in options if k in taken or (valid is not None and k not in valid)]
    if bad:
        listed = ", ".join(valid) if valid is not None else "(any but " + ", ".join(taken) + ")"
        raise DyadsimError(
            f"{name}: unknown or reserved option(s) {', '.join(map(repr, bad))}; valid: {listed}"
        )
    return dict(options)


def _targets(data, y):
    """One-hot float targets for a batch (data sets loaded with ``one_hot=False``)."""
    if data.one_hot:
        return y
    out = np.zeros((len(y), data.n_classes))
    out[np.arange(len(y)), y] = 1.0
    return out


# ---------------------------------------------------------------------- gradient sources
def resolve_method(method="backprop", eta=1.0, dtype=np.float64, relax_options=None,
                   spice_options=None) -> Method:
    """The method object ``train`` uses: ``method`` is a name of :data:`dyadsim.METHODS`,
    a Method class or a Method object; ``eta``, ``dtype``, ``relax_options`` and
    ``spice_options`` fill in the options of a method given by name (they must not be
    given with a method object, which carries its own options).

    Returns
    -------
    Method
    """
    dtype = check_dtype(dtype)
    if isinstance(method, Method):
        if relax_options or spice_options:
            raise DyadsimError("relax_options/spice_options cannot be combined with a method "
                               "object: give the options to the object itself")
        return method
    name = method.name if isinstance(method, type) and issubclass(method, Method) else method
    if not isinstance(name, str) or name.strip().lower() not in METHODS:
        raise DyadsimError(f"unknown method {method!r}; valid methods: {', '.join(METHODS)}")
    name = name.strip().lower()
    for label, opts, wanted in (("relax_options", relax_options, ("euler", "ode")),
                                ("spice_options", spice_options, ("spice",))):
        if opts is not None and not isinstance(opts, dict):
            raise DyadsimError(f"{label} must be a dict of keyword arguments, got {type(opts).__name__}")
        if opts and name not in wanted:
            raise DyadsimError(f"{label} only apply to method={' or '.join(map(repr, wanted))}, "
                               f"not {name!r}")
    if name == "backprop":
        return get_method("backprop", dtype=dtype)
    if name == "euler":
        opts = dict(relax_options or {})
        for k in ("net", "x", "y", "eta", "dtype", "record"):
            if k in opts:
                raise DyadsimError(f"relax_options: reserved option {k!r} (set by train)")
        eta = check_eta(eta)
        if opts.get("schedule", "auto") == "auto":
            opts.pop("schedule", None)
        return _with_label("relax_options", lambda: get_method("euler", eta=eta, dtype=dtype, **opts))
    if name == "ode":
        opts = dict(relax_options or {})
        for k in ("net", "x", "y", "dtype", "record"):
            if k in opts:
                raise DyadsimError(f"relax_options: reserved option {k!r} (set by train)")
        if "method" in opts:
            opts["solver"] = opts.pop("method")
        return _with_label("relax_options", lambda: get_method("ode", dtype=dtype, **opts))
    return _with_label("spice_options", lambda: get_method("spice", **dict(spice_options or {})))


def _with_label(label, make):
    try:
        return make()
    except DyadsimError as exc:
        raise DyadsimError(f"{label}: {exc}") from None


def gradient_source(method="backprop", eta=1.0, dtype=np.float64, relax_options=None,
                    spice_options=None):
    """A function ``(net, x, y) -> (Gradients, loss, effort)`` for one method.

    Arguments are validated here, once (see :func:`resolve_method`, which takes the
    same arguments).

    Parameters
    ----------
    method : str, Method class or Method, optional
        A name of :data:`dyadsim.METHODS` or a method.
    eta : float, optional
        Euler step (``"euler"``).
    dtype : numpy float dtype, optional
        ``float64`` or ``float32``.
    relax_options, spice_options : dict or None, optional
        Options of a relaxation or ngspice method given by name.

    Returns
    -------
    callable
        ``fn(net, x, y)``; ``effort`` is the Euler step count (``"euler"``), the settling
        time in units of tau (``"ode"``, and ``"spice"`` with a transient analysis) or
        ``None``.
    """
    m = resolve_method(method, eta, dtype, relax_options, spice_options)

    def fn(net, x, y):
        r = m(net, x, y)
        return r.grads, r.loss, m.effort(r)
    fn.method = m
    return fn


# ---------------------------------------------------------------------- evaluation
def evaluate(net, x, labels, y=None) -> tuple[float, float]:
    """Mean loss and accuracy of ``net`` (float64 forward pass).

    Parameters
    ----------
    net : Network
        The network.
    x : array_like, shape (N, n_in)
        Inputs.
    labels : array_like of int, shape (N,)
        Class labels; accuracy is the fraction with argmax of the output == label.
    y : array_like, shape (N, n_out), optional
        Targets of the loss (default: one-hot ``labels``).

    Returns
    -------
    loss, accuracy : float
    """
    labels = np.asarray(labels)
    out = net.predict(x)
    if y is None:
        y = np.zeros((len(labels), net.n_out))
        y[np.arange(len(labels)), labels] = 1.0
    loss = float(np.mean(net.loss.value(out, np.asarray(y, dtype=out.dtype))))
    acc = float(np.mean(np.argmax(out, axis=1) == labels))
    return loss, acc


def _eval_all(net, data):
    with np.errstate(all="ignore"):
        tr_l, tr_a = evaluate(net, data.x_train, data.labels_train, _targets(data, data.y_train))
        te_l, te_a = evaluate(net, data.x_test, data.labels_test, _targets(data, data.y_test))
    return {"train_loss": tr_l, "train_accuracy": tr_a, "test_loss": te_l, "test_accuracy": te_a}


def _eval_chip(chip, data, epoch):
    """The chip's inference on both splits (noise sample ``epoch`` where it has noise)."""
    from ._chip import evaluate_chip

    with np.errstate(all="ignore"):
        tr = evaluate_chip(chip, data.x_train, data.labels_train, _targets(data, data.y_train), 2 * epoch)
        te = evaluate_chip(chip, data.x_test, data.labels_test, _targets(data, data.y_test), 2 * epoch + 1)
    return {"train_loss": tr[0], "train_accuracy": tr[1], "test_loss": te[0], "test_accuracy": te[1]}


def _snapshot(net):
    return {k: v.copy() for k, v in net.params.items()}


def _restore(net, snap):
    for k, v in snap.items():
        net.params[k][...] = v


def _finite_grads(grads, keys):
    for k in keys:
        if k not in grads:
            raise DyadsimError(f"the gradient source returned no gradient for parameter {k}")
        if not np.all(np.isfinite(grads[k])):
            return k
    return None


# ---------------------------------------------------------------------- train
@checked_call
def train(net, data="digits", method="backprop", eta=1.0, optimizer="sgd", lr=None, epochs=10,
          batch_size=32, seed=0, dtype=np.float64, checkpoint_dir=None, progress=True,
          spice_options=None, relax_options=None, callback=None,
          optimizer_options=None, chip=None) -> History:
    """Train ``net`` by minibatch gradient descent; only the gradient source depends on ``method``.

    Parameters
    ----------
    net : a :class:`~dyadsim.Network` (its ``params`` arrays are updated in place), or a
        layer-size spec such as ``"64-64x8-10"`` (a tanh MLP with softmax cross-entropy,
        weights from ``seed``), or a saved ``.npz`` network.
    data : a :class:`dyadsim.datasets.Dataset` or a name (``"digits"``, ``"xor"``,
        ``"moons"``; loaded with its defaults).
    method : a name of :data:`dyadsim.METHODS` -- ``"backprop"`` (exact), ``"euler"``
        (:class:`dyadsim.Euler`: explicit Euler with step ``eta``), ``"ode"``
        (:class:`dyadsim.ODE`) or ``"spice"`` (:class:`dyadsim.Spice`, the ngspice
        circuit) -- or a method object such as ``dyadsim.Euler(eta=0.5, state="xz")``,
        which carries its own options.
    eta : Euler step (``method="euler"`` by name only).  At ``eta=1`` relax stops at
        exactly 2L steps, with the fastest exact schedule (the wavefront) unless
        ``relax_options={"schedule": "parallel"}``; the schedule used is in
        ``History.config["schedule"]``.  Otherwise relax runs to its tolerance
        (``relax_options={"tol": ...}``).
    optimizer : ``"sgd"``, ``"adam"`` or an :class:`~dyadsim.training.Optimizer`.
    lr : learning rate (default: SGD 0.05, Adam 1e-3).
    epochs, batch_size : minibatches are ``data.batches(batch_size, seed, epoch)``, the
        same for every method.
    seed : batch order (and the weights when ``net`` is a spec).  Same seed, same run.
    dtype : precision of the gradient computation (float64 or float32); the parameters
        and the optimizer stay float64.
    checkpoint_dir : when given, ``net.save`` writes ``epoch_000.npz`` (initial),
        ``epoch_NNN.npz`` after every epoch, ``last.npz`` (latest good), ``best.npz``
        (highest test accuracy) and ``history.json`` there.
    progress : show a tqdm progress bar.
    spice_options, relax_options : keyword arguments for ``spice_gradients`` or for
        ``relax``/``relax_continuous``.
    callback : ``callback(epoch, history, net)`` after every epoch (1-based); return
        ``False`` to stop training early.
    optimizer_options : e.g. ``{"momentum": 0.9}`` for SGD, ``{"beta1": 0.9}`` for Adam.
    chip : a :class:`dyadsim.Chip` or a dict of :meth:`dyadsim.Chip.sample` options
        (sampled with ``seed`` unless the dict has its own ``"seed"``): hardware-aware
        training.  Every gradient comes from that chip's relaxation (its devices fixed,
        programmed with the current weights, fresh thermal noise every step) by
        ``method`` (``"backprop"`` means the chip's steady state, ``"euler"`` at eta = 1;
        ``"euler"``, ``"ode"``, ``"spice"`` as named).  ``History.chip`` holds the
        chip's own accuracy and loss after every epoch (inference through the chip: its
        weights, gains and offsets, and a sample of its noise), beside the ideal
        network's in the usual fields.

    Returns
    -------
    :class:`History`.  A non-finite loss or gradient raises :class:`TrainingDiverged`
    (a :class:`~dyadsim.ConvergenceError`) naming the epoch and batch; the network is
    restored to its last good parameters and ``last.npz`` still holds them.
    """
    grad_fn = gradient_source(method, eta, dtype, relax_options, spice_options)
    method_obj = grad_fn.method
    method_name = method_obj.name
    opt = make_optimizer(optimizer, lr, **(optimizer_options or {}))
    if not isinstance(opt, Optimizer):  # pragma: no cover - make_optimizer guarantees it
        raise DyadsimError("optimizer must be 'sgd', 'adam' or an Optimizer")
    epochs = _check_int("epochs", epochs, 0)
    batch_size = _check_int("batch_size", batch_size, 1)
    seed = _check_int("seed", seed, 0)
    progress = check_bool("progress", progress)
    if callback is not None and not callable(callback):
        raise DyadsimError(f"callback must be callable, got {type(callback).__name__}")
    data = _resolve_data(data)
    net = _resolve_net(net, seed)
    _check_widths(net, data)
    chip_obj = None
    if chip is not None:  # hardware-aware: the gradients come from the chip
        from ._chip import chip_gradient_source, make_chip

        chip_obj = make_chip(chip, net, seed)
        grad_fn = chip_gradient_source(chip_obj, method_obj)
        method_obj = grad_fn.method
        method_name = method_obj.name
    ckpt = None
    if checkpoint_dir is not None:
        ckpt = Path(checkpoint_dir)
        try:
            ckpt.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DyadsimError(f"cannot create checkpoint_dir {str(ckpt)!r}: "
                               f"{exc.strerror or exc}") from None

    n_batches = data.n_batches(batch_size)
    keys = list(net.params)
    hist = History(
        config={
            "method": method_name,
            "eta": float(method_obj.options["eta"]) if method_name == "euler" else None,
            "schedule": method_obj.resolved_schedule if method_name == "euler" else None,
            "method_options": method_obj.config(),
            "optimizer": opt.config(), "lr": opt.lr, "epochs": epochs, "batch_size": batch_size,
            "seed": seed, "dtype": np.dtype(dtype).name, "data": data.name,
            "n_train": data.n_train, "n_test": data.n_test, "depth": net.depth,
            "layers": [net.sizes[v] for v in (net.input,) + tuple(net.nodes)],
            "loss": net.loss.name, "n_params": net.n_params,
            "relax_options": _jsonable_opts(relax_options),
            "spice_options": _jsonable_opts(spice_options),
            "chip": None if chip_obj is None else dict(chip_obj.config),
        },
        relax_unit=None if method_name == "spice" else method_obj.effort_unit,
    )
    hist.initial = _eval_all(net, data)
    if chip_obj is not None:
        hist.chip = {"initial": _eval_chip(chip_obj, data, 0)}
    good = _snapshot(net)  # last good parameters (end of the last finished epoch)
    last_good_file = None
    best_acc = -math.inf
    if ckpt is not None:
        net.save(ckpt / "epoch_000.npz")
        last_good_file = net.save(ckpt / "last.npz")

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=epochs * n_batches, desc=f"train[{method_name}]", unit="batch",
                   dynamic_ncols=True)
    try:
        for epoch in range(1, epochs + 1):
            t0 = time.perf_counter()
            losses, efforts = [], []
            for b, (x, y) in enumerate(data.batches(batch_size, seed, epoch - 1), start=1):
                y = _targets(data, y)
                where = f"epoch {epoch}/{epochs}, batch {b}/{n_batches}"
                try:
                    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                        grads, loss, effort = grad_fn(net, x, y)
                except ConvergenceError as exc:
                    _diverged(net, good, hist, ckpt, last_good_file, epoch, b, where,
                              f"the {method_name} gradient computation failed: {exc}", exc)
                except DyadsimError as exc:
                    # the relaxation validates its inputs; non-finite parameters show up here
                    if not all(np.all(np.isfinite(p)) for p in net.params.values()):
                        _diverged(net, good, hist, ckpt, last_good_file, epoch, b, where,
                                  f"the parameters became non-finite ({exc})", exc)
                    raise
                if loss is None:
                    with np.errstate(all="ignore"):
                        loss = net.loss_value(x, y) if all(
                            np.all(np.isfinite(p)) for p in net.params.values()) else math.nan
                if not math.isfinite(loss):
                    _diverged(net, good, hist, ckpt, last_good_file, epoch, b, where,
                              f"the minibatch loss is {loss}", None)
                bad = _finite_grads(grads, keys)
                if bad is not None:
                    _diverged(net, good, hist, ckpt, last_good_file, epoch, b, where,
                              f"the gradient of {bad} contains NaN or inf", None)
                with np.errstate(over="ignore", invalid="ignore"):
                    opt.step(net.params, grads)
                losses.append(float(loss))
                if effort is not None:
                    efforts.append(float(effort))
                if bar is not None:
                    bar.update(1)
            bad_param = next((k for k, p in net.params.items() if not np.all(np.isfinite(p))), None)
            if bad_param is not None:
                _diverged(net, good, hist, ckpt, last_good_file, epoch, n_batches,
                          f"epoch {epoch}/{epochs}, after the last batch",
                          f"parameter {bad_param} became non-finite", None)
            metrics = _eval_all(net, data)
            if chip_obj is not None:
                for k, v in _eval_chip(chip_obj, data, epoch).items():
                    hist.chip.setdefault(k, []).append(v)
            if not (math.isfinite(metrics["train_loss"]) and math.isfinite(metrics["test_loss"])):
                _diverged(net, good, hist, ckpt, last_good_file, epoch, n_batches,
                          f"epoch {epoch}/{epochs}, evaluation after the epoch",
                          f"the training-set loss is {metrics['train_loss']}", None)
            good = _snapshot(net)
            if ckpt is not None:
                net.save(ckpt / f"epoch_{epoch:03d}.npz")
                last_good_file = net.save(ckpt / "last.npz")
                if metrics["test_accuracy"] > best_acc:
                    net.save(ckpt / "best.npz")
            best_acc = max(best_acc, metrics["test_accuracy"])
            relax_mean = float(np.mean(efforts)) if efforts else None
            relax_max = (max(efforts) if efforts else None)
            if relax_max is not None and method_name == "euler":
                relax_max = int(relax_max)
            hist.append(epoch=epoch, batch_loss=float(np.mean(losses)), relax_mean=relax_mean,
                        relax_max=relax_max, wall_time=time.perf_counter() - t0, **metrics)
            if ckpt is not None:
                _write_history(hist, ckpt)
            if bar is not None:
                bar.set_postfix(loss=f"{metrics['train_loss']:.4f}",
                                test_acc=f"{100 * metrics['test_accuracy']:.1f}%")
            if method_name == "spice":
                hist.relax_unit = "tau" if relax_mean is not None else None
            if callback is not None and callback(epoch, hist, net) is False:
                hist.stopped = f"callback stopped training after epoch {epoch}"
                break
    except KeyboardInterrupt:
        hist.stopped = f"interrupted during epoch {len(hist) + 1} (KeyboardInterrupt)"
        if ckpt is not None:
            _write_history(hist, ckpt)
        raise
    finally:
        if bar is not None:
            bar.close()
    return hist


def _write_history(hist, ckpt):
    """history.json and history.csv of the epochs finished so far."""
    hist.to_json(Path(ckpt) / "history.json")
    hist.to_csv(Path(ckpt) / "history.csv")


def _jsonable_opts(opts):
    if not opts:
        return None
    return {str(k): (v if isinstance(v, (int, float, str, bool)) or v is None else repr(v))
            for k, v in opts.items()}


def _diverged(net, good, hist, ckpt, last_good_file, epoch, batch, where, what, cause):
    _restore(net, good)
    done = len(hist)
    msg = (f"training diverged at {where}: {what}. Lower the learning rate (lr={hist.config.get('lr')}). "
           f"The network was restored to its parameters "
           f"{'after epoch ' + str(done) if done else 'before training'}")
    if last_good_file is not None:
        msg += f"; the last good checkpoint is {last_good_file}"
    hist.stopped = f"diverged at {where}: {what}"
    if ckpt is not None:
        _write_history(hist, ckpt)
    exc = TrainingDiverged(msg, epoch=epoch, batch=batch,
                           checkpoint=None if last_good_file is None else Path(last_good_file),
                           history=hist)
    if cause is not None:
        raise exc from cause
    raise exc

