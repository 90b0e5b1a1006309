"""Tests for dyadsim.training: train(), History, optimizers, experiments and the CLI."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest

import dyadsim
import dyadsim.datasets as ds
from dyadsim.errors import ConvergenceError, DyadsimError
from dyadsim.training import (
    EPOCH_FIELDS, SGD, Adam, History, TrainingDiverged, make_optimizer, train,
)



# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def digits_small():
    return ds.digits(seed=0).subset(256, 128)


@pytest.fixture(scope="module")
def digits_full():
    return ds.digits(seed=0)


def small_net(seed=0, spec="64-16x3-10"):
    return dyadsim.mlp(spec, activation="tanh", loss="xent", seed=seed)


def unbounded_net(seed=0):
    """Linear output with mse: an absurd step sends the loss to inf (softmax
    cross-entropy with saturated tanh layers stays finite, if huge)."""
    return dyadsim.mlp("64-16x3-10", activation="tanh", output_activation="identity",
                       loss="mse", seed=seed)


def params_of(net):
    return {k: v.copy() for k, v in net.params.items()}


def max_rel_param_diff(a, b):
    return max(np.linalg.norm(a[k] - b[k]) / max(np.linalg.norm(b[k]), 1e-300) for k in b)


def run(data, method="backprop", seed=0, net_seed=0, **kw):
    net = small_net(net_seed)
    kw.setdefault("optimizer", "adam")
    kw.setdefault("lr", 3e-3)
    kw.setdefault("epochs", 2)
    kw.setdefault("batch_size", 32)
    h = train(net, data, method=method, seed=seed, progress=False, **kw)
    return net, h


# ----------------------------------------------------------------------------- exactness
def test_euler_eta1_training_reproduces_backprop(digits_small):
    """The exactness claim seen through learning: eta = 1 relaxes exactly 2L steps and
    the whole training run equals backprop's to rounding error."""
    net_b, hb = run(digits_small, "backprop")
    net_e, he = run(digits_small, "euler", eta=1.0)
    assert len(hb) == len(he) == 2
    for f in ("train_loss", "test_loss", "batch_loss"):
        np.testing.assert_allclose(getattr(he, f), getattr(hb, f), rtol=1e-10, atol=0)
    assert he.test_accuracy == hb.test_accuracy
    assert he.train_accuracy == hb.train_accuracy
    assert max_rel_param_diff(params_of(net_e), params_of(net_b)) < 1e-10
    # the relaxation took exactly 2L steps on every minibatch
    L = net_e.depth
    assert he.relax_unit == "steps"
    assert he.relax_mean == [2 * L] * 2 and he.relax_max == [2 * L] * 2
    assert hb.relax_unit is None and hb.relax_mean == [None, None]


@pytest.mark.slow
def test_euler_eta1_depth9_full_epoch_equals_backprop(digits_full):
    """The article's network (depth 9) on all of digits, one full epoch with SGD."""
    nets, hists = [], []
    for method in ("backprop", "euler"):
        net = dyadsim.mlp("64-64x8-10", loss="xent", seed=0)
        hists.append(train(net, digits_full, method=method, eta=1.0, optimizer="sgd",
                           lr=0.05, epochs=1, batch_size=32, progress=False))
        nets.append(params_of(net))
    hb, he = hists
    np.testing.assert_allclose(he.train_loss, hb.train_loss, rtol=1e-10)
    assert max_rel_param_diff(nets[1], nets[0]) < 1e-10
    assert he.relax_max == [18]


def test_same_seed_identical_different_seeds_differ(digits_small):
    net1, h1 = run(digits_small, "backprop", seed=3, epochs=1)
    net2, h2 = run(digits_small, "backprop", seed=3, epochs=1)
    assert h1.train_loss == h2.train_loss and h1.test_accuracy == h2.test_accuracy
    for k in net1.params:
        assert np.array_equal(net1.params[k], net2.params[k])
    net3, h3 = run(digits_small, "backprop", seed=4, epochs=1)  # other batch order
    assert h3.train_loss != h1.train_loss
    assert any(not np.array_equal(net1.params[k], net3.params[k]) for k in net1.params)


def test_same_seed_identical_for_euler(digits_small):
    _, h1 = run(digits_small, "euler", eta=1.0, seed=1, epochs=1)
    _, h2 = run(digits_small, "euler", eta=1.0, seed=1, epochs=1)
    assert h1.train_loss == h2.train_loss


def test_net_spec_string_uses_seed(digits_small):
    h1 = train("64-8-10", digits_small, epochs=1, seed=2, progress=False)
    h2 = train("64-8-10", digits_small, epochs=1, seed=2, progress=False)
    assert h1.train_loss == h2.train_loss
    assert h1.config["layers"] == [64, 8, 10]


def test_eta_half_tracks_backprop(digits_small):
    net_b, hb = run(digits_small, "backprop")
    net_e, he = run(digits_small, "euler", eta=0.5)
    np.testing.assert_allclose(he.train_loss, hb.train_loss, rtol=1e-6)
    assert max(abs(a - b) for a, b in zip(he.test_accuracy, hb.test_accuracy)) <= 1 / 128
    assert max_rel_param_diff(params_of(net_e), params_of(net_b)) < 1e-6
    assert he.relax_mean[0] > 2 * net_e.depth  # eta < 1 needs more than 2L steps


def test_eta_half_with_fixed_step_budget(digits_small):
    _, hb = run(digits_small, "backprop", epochs=1)
    _, he = run(digits_small, "euler", eta=0.5, epochs=1, relax_options={"steps": 80})
    np.testing.assert_allclose(he.train_loss, hb.train_loss, rtol=1e-8)
    assert he.relax_max == [80]


@pytest.mark.parametrize("method, rtol", [
    ("ode", 1e-6),
    pytest.param("spice", 1e-4, marks=pytest.mark.spice),
])
def test_analog_and_ode_training_track_backprop(method, rtol):
    data = ds.xor(n=64 if method == "ode" else 48, seed=0)
    hists = {}
    for m in ("backprop", method):
        net = dyadsim.mlp("2-4-2", loss="xent", seed=0)
        hists[m] = train(net, data, method=m, optimizer="adam", lr=0.05, epochs=1,
                         batch_size=16, progress=False)
    hb, hm = hists["backprop"], hists[method]
    np.testing.assert_allclose(hm.train_loss, hb.train_loss, rtol=rtol)
    if method == "ode":
        assert hm.relax_unit == "tau" and hm.relax_mean[0] > 0
    else:
        assert hm.test_accuracy == hb.test_accuracy


def test_float32_gradients_train_close_to_float64(digits_small):
    _, h64 = run(digits_small, "backprop", epochs=1)
    _, h32 = run(digits_small, "euler", eta=1.0, epochs=1, dtype=np.float32)
    assert h32.config["dtype"] == "float32"
    np.testing.assert_allclose(h32.train_loss, h64.train_loss, rtol=1e-3)


# ----------------------------------------------------------------------------- learning
@pytest.mark.parametrize("optimizer,lr,options", [
    ("sgd", 0.1, {"momentum": 0.9}),
    ("adam", 3e-3, None),
])
def test_small_net_learns_digits(digits_small, optimizer, lr, options):
    net = small_net(0, "64-32-10")
    h = train(net, digits_small, optimizer=optimizer, lr=lr, epochs=6, batch_size=16,
              optimizer_options=options, progress=False)
    assert h.initial["test_accuracy"] < 0.35
    assert h.test_accuracy[-1] > 0.7  # chance is 0.1
    assert h.train_loss[-1] < h.initial["train_loss"]


def test_small_net_learns_moons_with_sgd():
    data = ds.moons(n=200, noise=0.1, seed=0)
    net = dyadsim.mlp("2-16-2", loss="xent", seed=0)
    h = train(net, data, method="euler", optimizer="sgd", lr=0.2, epochs=15, batch_size=16,
              progress=False)
    assert h.test_accuracy[-1] >= 0.8  # chance is 0.5


def test_data_by_name_and_non_one_hot_labels():
    h = train(dyadsim.mlp("2-4-2", loss="xent", seed=0), "xor", epochs=1, progress=False)
    assert h.config["data"] == "xor"
    data = ds.xor(n=40, seed=0, one_hot=False)
    h = train(dyadsim.mlp("2-4-2", loss="xent", seed=0), data, epochs=1, progress=False)
    assert 0 <= h.test_accuracy[0] <= 1


# ----------------------------------------------------------------------------- optimizers
def test_sgd_and_adam_updates():
    p = {"a": np.array([1.0, -2.0])}
    g = {"a": np.array([0.5, 0.5])}
    SGD(lr=0.1).step(p, g)
    np.testing.assert_allclose(p["a"], [0.95, -2.05])
    opt = SGD(lr=0.1, momentum=0.5)
    p = {"a": np.zeros(1)}
    opt.step(p, {"a": np.ones(1)})
    opt.step(p, {"a": np.ones(1)})
    np.testing.assert_allclose(p["a"], [-0.1 - 0.15])
    adam = Adam(lr=0.01)
    p = {"a": np.zeros(3)}
    adam.step(p, {"a": np.array([1.0, -3.0, 1e-3])})
    np.testing.assert_allclose(p["a"], [-0.01, 0.01, -0.01], rtol=1e-4)  # first step = lr*sign


def test_optimizer_errors():
    with pytest.raises(DyadsimError, match="unknown optimizer 'rmsprop'.*sgd, adam"):
        make_optimizer("rmsprop")
    with pytest.raises(DyadsimError, match="lr"):
        make_optimizer("sgd", lr=-1)
    with pytest.raises(DyadsimError, match="momentum"):
        make_optimizer("sgd", momentum=1.5)
    with pytest.raises(DyadsimError, match="bad option.*takes"):
        make_optimizer("adam", momentum=0.9)


# ----------------------------------------------------------------------------- bad input
def test_unknown_method_optimizer_dataset(digits_small):
    net = small_net()
    with pytest.raises(DyadsimError, match=r"unknown method 'adjoint'.*backprop, euler, ode, spice"):
        train(net, digits_small, method="adjoint", progress=False)
    with pytest.raises(DyadsimError, match=r"unknown optimizer 'lbfgs'.*sgd, adam"):
        train(net, digits_small, optimizer="lbfgs", progress=False)
    with pytest.raises(DyadsimError, match=r"unknown dataset 'cifar'.*digits.*xor.*moons"):
        train(net, "cifar", progress=False)
    with pytest.raises(DyadsimError, match="eta"):
        train(net, digits_small, method="euler", eta=2.5, progress=False)
    with pytest.raises(DyadsimError, match="epochs"):
        train(net, digits_small, epochs=-1, progress=False)
    with pytest.raises(DyadsimError, match="relax_options.*'bogus'"):
        train(net, digits_small, method="euler", relax_options={"bogus": 1}, progress=False)
    with pytest.raises(DyadsimError, match="net must be"):
        train(3.5, digits_small, progress=False)


def test_label_width_mismatch_names_both_widths(digits_small):
    net = dyadsim.mlp("64-8-3", loss="xent", seed=0)
    with pytest.raises(DyadsimError, match=r"width 10.*width 3"):
        train(net, digits_small, progress=False)
    net = dyadsim.mlp("2-8-10", loss="xent", seed=0)
    with pytest.raises(DyadsimError, match=r"64 input features.*width 2"):
        train(net, digits_small, progress=False)


def test_nan_loss_stops_restores_and_keeps_last_good_checkpoint(digits_small, tmp_path):
    """Epoch 1 trains normally; then the learning rate is made absurd and epoch 2
    diverges: the error names epoch 2 and a batch, the network is restored to its
    epoch-1 parameters and last.npz (which loads) holds exactly those."""
    net = unbounded_net()
    opt = SGD(lr=0.05)
    after_epoch1 = {}

    def sabotage(epoch, hist, net_):
        if epoch == 1:
            after_epoch1.update(params_of(net_))
            opt.lr = 1e300

    with pytest.raises(TrainingDiverged) as info:
        train(net, digits_small, optimizer=opt, epochs=3, checkpoint_dir=tmp_path,
              callback=sabotage, progress=False)
    err = info.value
    assert isinstance(err, ConvergenceError)
    msg = str(err)
    assert "epoch 2/3" in msg and "batch" in msg and "last.npz" in msg
    assert err.epoch == 2 and err.batch >= 1
    for k, v in after_epoch1.items():
        np.testing.assert_array_equal(net.params[k], v)
    saved = dyadsim.load(tmp_path / "last.npz")
    for k, v in after_epoch1.items():
        np.testing.assert_array_equal(saved.params[k], v)
    assert (tmp_path / "epoch_001.npz").exists() and not (tmp_path / "epoch_002.npz").exists()
    assert err.history is not None and len(err.history) == 1 and "diverged" in err.history.stopped
    assert History.from_json(tmp_path / "history.json").stopped.startswith("diverged")
    # the CSV is written on divergence too, with the finished epoch and the reason
    csv_text = (tmp_path / "history.csv").read_text()
    assert "diverged" in csv_text.splitlines()[0] and len(csv_text.strip().splitlines()) == 3


def test_interrupt_writes_history_and_keeps_checkpoints(digits_small, tmp_path):
    """Ctrl-C during epoch 2: history.json/csv hold epoch 1 and say so; last.npz loads."""
    net = small_net()

    def interrupt(epoch, hist, net_):
        if epoch == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(net, digits_small, epochs=3, checkpoint_dir=tmp_path, callback=interrupt,
              progress=False)
    h = History.from_json(tmp_path / "history.json")
    assert len(h) == 1 and "interrupted" in h.stopped
    assert "interrupted" in (tmp_path / "history.csv").read_text().splitlines()[0]
    dyadsim.load(tmp_path / "last.npz")


def test_nan_in_first_epoch_keeps_initial_checkpoint(digits_small, tmp_path):
    net = unbounded_net()
    init = params_of(net)
    with pytest.raises(TrainingDiverged, match=r"epoch 1/2, batch \d+/8"):
        train(net, digits_small, method="euler", optimizer="sgd", lr=1e300, epochs=2,
              checkpoint_dir=tmp_path, progress=False)
    assert max_rel_param_diff(params_of(net), init) == 0
    saved = dyadsim.load(tmp_path / "last.npz")
    assert max_rel_param_diff(params_of(saved), init) == 0


# ----------------------------------------------------------------------------- history, checkpoints
def test_history_json_csv_round_trip(digits_small, tmp_path):
    _, h = run(digits_small, "euler", eta=1.0, epochs=2)
    assert set(EPOCH_FIELDS) <= set(h.to_dict())
    p = tmp_path / "h.json"
    text = h.to_json(p)
    h2 = History.from_json(p)
    assert h2.to_dict() == h.to_dict()
    assert History.from_json(text).to_dict() == h.to_dict()
    c = tmp_path / "h.csv"
    h.to_csv(c)
    h3 = History.from_csv(c)
    for f in EPOCH_FIELDS:
        assert getattr(h3, f) == getattr(h, f), f
    assert h3.config == json.loads(json.dumps(h.config))
    assert h3.relax_unit == "steps" and h3.initial == h.initial
    assert len(h3) == 2 and h3.best_epoch == h.best_epoch
    assert "epoch" in h.summary() and repr(h).startswith("<History")
    with pytest.raises(DyadsimError):
        History.from_json(tmp_path / "missing.json")


def test_history_wall_time_and_fields(digits_small):
    _, h = run(digits_small, "backprop", epochs=1)
    assert h.wall_time[0] > 0
    assert 0 <= h.train_accuracy[0] <= 1 and math.isfinite(h.test_loss[0])
    assert h.config["method"] == "backprop" and h.config["optimizer"]["name"] == "adam"


def test_checkpoints_written_each_epoch(digits_small, tmp_path):
    net = small_net()
    h = train(net, digits_small, optimizer="adam", lr=3e-3, epochs=2, checkpoint_dir=tmp_path,
              progress=False)
    for name in ("epoch_000.npz", "epoch_001.npz", "epoch_002.npz", "last.npz", "best.npz",
                 "history.json"):
        assert (tmp_path / name).exists(), name
    last = dyadsim.load(tmp_path / "last.npz")
    assert max_rel_param_diff(params_of(last), params_of(net)) == 0
    best = dyadsim.load(tmp_path / "best.npz")
    acc = float(np.mean(best.predict(digits_small.x_test).argmax(1) == digits_small.labels_test))
    assert acc == pytest.approx(h.best_test_accuracy)


def test_callback_can_stop(digits_small):
    seen = []

    def cb(epoch, hist, net):
        seen.append(epoch)
        return False if epoch == 2 else None

    _, h = run(digits_small, "backprop", epochs=5, callback=cb)
    assert seen == [1, 2] and len(h) == 2 and "callback" in h.stopped


def test_progress_bar_runs(digits_small, capsys):
    train(small_net(), digits_small.subset(64, 32), epochs=1, progress=True)
    assert "train[backprop]" in capsys.readouterr().err


# ----------------------------------------------------------------------------- experiments
@pytest.mark.parametrize("name", ["accuracy", "steps", "precision",
                                  pytest.param("analog", marks=[pytest.mark.spice])])
def test_experiment_quick_writes_outputs(name, tmp_path):
    from dyadsim.training.experiments import run_experiment

    summary = run_experiment(name, tmp_path, quick=True, progress=False)
    assert summary["experiment"] == name and summary["quick"] is True
    for ext in ("png", "csv", "json"):
        f = tmp_path / f"{name}.{ext}"
        assert f.exists() and f.stat().st_size > 0, f
    assert (tmp_path / f"{name}.png").stat().st_size < 200_000
    assert json.loads((tmp_path / f"{name}.json").read_text())["experiment"] == name
    if name == "steps":
        rows = {r["eta"]: r for r in summary["rows"]}
        assert rows[1.0]["steps_to_1e-08"] == 2 * summary["depth"]  # exactly 2L at eta = 1
        assert summary["eta_1_equals_2L"] is True
    if name == "accuracy":
        dbp = summary["runs"]["DBP Euler eta=1"]
        assert dbp["max_rel_train_loss_diff_vs_backprop"] < 1e-10
    if name == "precision":
        cfg = summary["configs"]
        assert cfg["DBP eta=1 float64"]["summary_vs_float64_backprop"]["rel_error"] < 1e-12
        assert cfg["DBP eta=1 float32"]["summary_vs_float64_backprop"]["rel_error"] < 1e-5


def test_run_experiment_errors(tmp_path):
    from dyadsim.training.experiments import EXPERIMENTS, run_experiment

    assert set(EXPERIMENTS) == {"accuracy", "steps", "precision", "analog", "hardware",
                                "dynamic-range"}
    with pytest.raises(DyadsimError, match="unknown experiment 'loss'.*accuracy, steps"):
        run_experiment("loss", tmp_path)
    with pytest.raises(DyadsimError, match="does not take option"):
        run_experiment("steps", tmp_path, quick=True, jobs=2)
    with pytest.raises(DyadsimError, match="seeds"):
        run_experiment("steps", tmp_path, quick=True, seeds=0)


def test_lazy_experiment_exports():
    """In a fresh interpreter: in this one an earlier test may have imported the
    experiments submodule already, which hid a lazy ``__getattr__`` that re-entered itself
    (RecursionError)."""
    import subprocess
    import sys
    from pathlib import Path

    code = ("import dyadsim.training as tr\n"
            "assert callable(tr.run_experiment)\n"
            "assert tr.EXPERIMENTS is tr.experiments.EXPERIMENTS\n"
            "ns = {}\n"
            "exec('from dyadsim.training import *', ns)\n"
            "assert callable(ns['run_experiment'])\n")
    root = str(Path(dyadsim.__file__).resolve().parents[1])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]))
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]


# ----------------------------------------------------------------------------- CLI
def test_cli_train_writes_history(tmp_path, capsys):
    from dyadsim.cli import main

    out = tmp_path / "run"
    rc = main(["train", "--net", "64-8-10", "--data", "digits", "--method", "euler",
               "--eta", "1", "--optimizer", "adam", "--lr", "1e-3", "--epochs", "1",
               "--batch-size", "64", "--seed", "0", "--out", str(out), "--no-progress"])
    assert rc == 0
    assert (out / "history.json").exists() and (out / "history.csv").exists()
    assert (out / "last.npz").exists() and (out / "best.npz").exists()
    text = capsys.readouterr().out
    assert "test acc" in text
    h = History.from_json(out / "history.json")
    assert h.config["method"] == "euler" and len(h) == 1


def test_cli_train_json(capsys):
    from dyadsim.cli import main

    rc = main(["train", "--net", "2-4-2", "--data", "xor", "--epochs", "1", "--json"])
    assert rc == 0
    d = json.loads(capsys.readouterr().out)
    assert d["format"] == "dyadsim-history" and len(d["epoch"]) == 1


def test_cli_train_bad_input(capsys):
    from dyadsim.cli import main

    assert main(["train", "--net", "64-8-3", "--epochs", "1", "--no-progress"]) == 2
    assert "width 10" in capsys.readouterr().err
    assert main(["train", "--method", "nope"]) != 0


def test_cli_experiment_quick(tmp_path, capsys):
    from dyadsim.cli import main

    rc = main(["experiment", "steps", "--out", str(tmp_path), "--quick", "--no-progress"])
    assert rc == 0
    assert (tmp_path / "steps.png").exists() and (tmp_path / "steps.csv").exists()
    assert "steps at eta=1: 6" in capsys.readouterr().out
    rc = main(["experiment", "accuracy", "--out", str(tmp_path), "--quick", "--seeds", "1",
               "--json", "--no-progress"])
    assert rc == 0
    assert json.loads(capsys.readouterr().out)["experiment"] == "accuracy"


def test_cli_help():
    from dyadsim.cli import main
    from dyadsim.cli._train import EXPERIMENT_NAMES
    from dyadsim.training.experiments import EXPERIMENTS

    assert tuple(EXPERIMENTS) == EXPERIMENT_NAMES
    assert main(["train", "--help"]) == 0
    assert main(["experiment", "--help"]) == 0
    assert main(["--help"]) == 0
