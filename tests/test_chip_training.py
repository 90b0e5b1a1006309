"""Hardware-aware training: train(..., chip=...) takes its gradients from one sampled chip.

Oracles: an ideal chip trains exactly like backprop (same batches, same updates); the
gradient of every step equals the chip engine's gradient for the chip programmed with the
weights of that step (recomputed here from a copy of the network); fresh noise per step."""

from __future__ import annotations

import numpy as np
import pytest

import dyadsim
from dyadsim.training import History, train
from dyadsim.training._chip import chip_gradient_source

TRAIN = dict(data="xor", epochs=2, batch_size=16, lr=0.2, progress=False, seed=1)


def _net():
    return dyadsim.mlp("2-6-2", activation="tanh", loss="xent", seed=3)


def test_ideal_chip_trains_like_backprop():
    a, b = _net(), _net()
    ha = train(a, **TRAIN)
    hb = train(b, chip={}, **TRAIN)
    for k in a.params:
        np.testing.assert_allclose(b.params[k], a.params[k], rtol=1e-10, atol=1e-13)
    assert hb.test_accuracy == ha.test_accuracy
    assert hb.chip["test_accuracy"] == ha.test_accuracy  # the ideal chip infers like the net
    assert hb.config["method"] == "euler" and hb.config["chip"]["mismatch"] == 0.0


def test_every_step_uses_the_chip_programmed_with_the_current_weights():
    net = _net()
    chip = dyadsim.Chip.sample(net, seed=4, mismatch=0.1, derivative_mismatch=0.1, offset=0.01)
    seen = []

    def spy(epoch, hist, n):
        seen.append({k: v.copy() for k, v in n.params.items()})

    h = train(net, chip=chip, callback=spy, **TRAIN)
    assert len(seen) == 2 and h.chip["test_accuracy"][-1] is not None
    # the chip's gradient at the final weights is the engine's for that chip
    copy = net.copy()
    x = np.random.default_rng(0).standard_normal((5, 2))
    y = np.eye(2)[[0, 1, 1, 0, 1]]
    fn = chip_gradient_source(chip, dyadsim.Euler())
    g, loss, _ = fn(net, x, y)
    want = dyadsim.relax_chips(chip.with_network(copy), x, y).grads[0]
    for k in want:
        np.testing.assert_allclose(g[k], want[k], rtol=1e-12, atol=1e-15)
    # and it is not the network's own gradient
    assert dyadsim.compare(g, dyadsim.backprop(net, x, y)).summary.angle > 1e-3


def test_fresh_noise_every_step_reproducible_per_run():
    net = _net()
    chip = dyadsim.Chip.sample(net, seed=0, noise=0.01)
    x = np.random.default_rng(1).standard_normal((4, 2))
    y = np.eye(2)[[0, 1, 0, 1]]
    f1 = chip_gradient_source(chip, dyadsim.Euler())
    f2 = chip_gradient_source(chip, dyadsim.Euler())
    a1, a2 = f1(net, x, y)[0].flat(), f1(net, x, y)[0].flat()
    b1, b2 = f2(net, x, y)[0].flat(), f2(net, x, y)[0].flat()
    assert not np.array_equal(a1, a2)
    assert np.array_equal(a1, b1) and np.array_equal(a2, b2)
    h1 = train(_net(), chip={"noise": 0.01, "mismatch": 0.05}, **TRAIN)
    h2 = train(_net(), chip={"noise": 0.01, "mismatch": 0.05}, **TRAIN)
    assert h1.test_accuracy == h2.test_accuracy and h1.chip == h2.chip


def test_chip_inference_noise_sample():
    net = _net()
    chip = dyadsim.Chip.sample(net, seed=0, noise=0.05)
    x = np.random.default_rng(2).standard_normal((200, 2))
    clean = chip.predict(x)
    a = chip.predict(x, noise_seed=1)
    assert np.array_equal(a, chip.predict(x, noise_seed=1))
    assert not np.array_equal(a, chip.predict(x, noise_seed=2))
    assert 0.3 * 0.05 < np.std(a - clean) < 3 * 0.05


def test_history_keeps_the_chip_metrics(tmp_path):
    h = train(_net(), chip={"mismatch": 0.1}, checkpoint_dir=tmp_path, **TRAIN)
    back = History.from_json(tmp_path / "history.json")
    assert back.chip["test_accuracy"] == h.chip["test_accuracy"]
    assert set(back.chip) == {"initial", "train_loss", "train_accuracy", "test_loss", "test_accuracy"}


def test_bad_chip_arguments():
    net = _net()
    with pytest.raises(dyadsim.DyadsimError, match="another network"):
        train(net, chip=dyadsim.Chip.sample(dyadsim.mlp("2-5-2", loss="xent"), seed=0), **TRAIN)
    with pytest.raises(dyadsim.DyadsimError, match="chip must be"):
        train(net, chip="pcm", **TRAIN)
    with pytest.raises(dyadsim.DyadsimError, match="unknown option"):
        train(net, chip={"sigma": 0.1}, **TRAIN)
    with pytest.raises(dyadsim.DyadsimError, match="bits"):
        train(net, chip={"bits": 0}, **TRAIN)
