"""from_torch on any torch.fx-traceable model; torch_gradients and to_torch.  Oracle: torch
autograd of the model itself."""

import numpy as np
import pytest

import dyadsim
from dyadsim.errors import DyadsimError

torch = pytest.importorskip("torch")
nn = torch.nn
F = nn.functional


class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding="same", bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(c)

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(y)) + x)


class ResNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.act = nn.GELU()
        self.pool = nn.MaxPool2d(2)
        self.b1 = Block(4)
        self.side = nn.Conv2d(4, 2, 1)
        self.gap = nn.AdaptiveAvgPool2d(2)
        self.drop = nn.Dropout(0.3)
        self.fc = nn.Linear(24, 5)

    def forward(self, x):
        x = self.b1(self.pool(self.act(self.bn(self.stem(x)))))
        y = torch.cat([self.gap(x), self.gap(F.silu(self.side(x)))], dim=1)
        return self.fc(self.drop(torch.flatten(y, 1)))


class Conv1dNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv1d(2, 4, 3, padding="same", dilation=2)
        self.bn = nn.BatchNorm1d(4)
        self.c2 = nn.Conv1d(4, 4, 2, stride=2, groups=2)
        self.acts = nn.ModuleList([nn.LeakyReLU(0.2), nn.ELU(0.7), nn.Softplus(beta=2.0), nn.Hardtanh(-0.5, 1.5),
                                   nn.Tanh(), nn.Sigmoid()])
        self.fc = nn.Linear(20, 6)
        self.fc2 = nn.Linear(6, 3)

    def forward(self, x):
        x = self.acts[0](self.bn(self.c1(x)))
        x = self.acts[1](self.c2(x))
        x = nn.Identity()(x) if False else x
        x = self.acts[3](self.acts[2](x.flatten(1)))
        return self.fc2(self.acts[5](self.acts[4](self.fc(x))))


def _randomise_bn(m, seed):
    g = torch.Generator().manual_seed(seed)
    for mod in m.modules():
        if isinstance(mod, (nn.BatchNorm1d, nn.BatchNorm2d)):
            with torch.no_grad():
                mod.running_mean.copy_(torch.randn(mod.num_features, generator=g) * 0.2)
                mod.running_var.copy_(torch.rand(mod.num_features, generator=g) * 1.5 + 0.5)
                mod.weight.copy_(1 + 0.3 * torch.randn(mod.num_features, generator=g))
                mod.bias.copy_(0.2 * torch.randn(mod.num_features, generator=g))
    return m.eval()


def _check(model, shape, loss_fn, loss, B=6, classes=None, seed=0):
    torch.manual_seed(seed)
    X = torch.randn(B, *shape, dtype=torch.float64)
    out = model(X)
    if classes:
        yl = torch.randint(0, out.shape[1], (B,))
        Y = np.eye(out.shape[1])[yl.numpy()]
        target = yl
    else:
        target = torch.randn_like(out)
        Y = target.numpy()
    model.zero_grad()
    loss_fn(model(X), target).backward()
    net = dyadsim.from_torch(model, shape, loss=loss)
    Xn = X.numpy().reshape(B, -1)
    ref = {k: p.grad.numpy() for k, p in model.named_parameters()}
    worst = {}
    for label, g in [("backprop", dyadsim.backprop(net, Xn, Y)),
                     ("parallel", dyadsim.relax(net, Xn, Y).grads),
                     ("wavefront", dyadsim.relax(net, Xn, Y, schedule="wavefront").grads)]:
        tg = dyadsim.torch_gradients(net, g)
        assert sorted(tg) == sorted(ref)
        for k in ref:
            assert tg[k].shape == ref[k].shape, k
        worst[label] = max(float(np.max(np.abs(tg[k] - ref[k]))) for k in ref)
        assert abs(g.loss - float(loss_fn(model(X), target).detach())) < 1e-12
    assert max(worst.values()) <= 1e-9, worst
    early = dyadsim.relax(net, Xn, Y, steps=2 * net.depth - 1).grads
    te = dyadsim.torch_gradients(net, early)
    assert max(float(np.max(np.abs(te[k] - ref[k])) / np.max(np.abs(ref[k]))) for k in ref) > 1e-6
    return net


def test_residual_cnn_with_batchnorm_and_maxpool_matches_autograd():
    model = _randomise_bn(ResNet().double(), 1)
    net = _check(model, (1, 8, 8), F.cross_entropy, "cross_entropy", classes=True)
    assert "pool" in net.general_nodes


def test_conv1d_same_dilation_groups_batchnorm1d_and_activations_match_autograd():
    model = _randomise_bn(Conv1dNet().double(), 2)
    _check(model, (2, 10), F.mse_loss, "mse_mean")


def test_mse_is_n_out_over_2_times_torch_mse():
    model = Conv1dNet().double().eval()
    X = np.random.default_rng(0).normal(size=(4, 20))
    Y = np.random.default_rng(1).normal(size=(4, 3))
    a = dyadsim.backprop(dyadsim.from_torch(model, (2, 10), loss="mse"), X, Y)
    b = dyadsim.backprop(dyadsim.from_torch(model, (2, 10), loss="mse_mean"), X, Y)
    for k in a:
        np.testing.assert_allclose(a[k], 1.5 * b[k], rtol=1e-12, atol=1e-15)


def test_nll_after_log_softmax():
    model = nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 3), nn.LogSoftmax(dim=1)).double()
    _check(model, (5,), F.nll_loss, "nll", classes=True)
    with pytest.raises(DyadsimError, match="LogSoftmax"):
        dyadsim.from_torch(model, (5,), loss="xent")


def test_to_torch_writes_parameters_back():
    model = _randomise_bn(ResNet().double(), 3)
    net = dyadsim.from_torch(model, (1, 8, 8), loss="xent")
    for v in net.params.values():
        v += 0.01
    fresh = _randomise_bn(ResNet().double(), 4)
    dyadsim.to_torch(net, fresh)
    X = np.random.default_rng(0).normal(size=(3, 64))
    out = fresh(torch.tensor(X).reshape(3, 1, 8, 8)).detach().numpy()
    np.testing.assert_allclose(out, net.predict(X), rtol=1e-12, atol=1e-12)


def test_sequential_import_is_unchanged():
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 2)).double()
    net = dyadsim.from_torch(model, 4)
    assert net.nodes == ("0", "2")
    assert sorted(dyadsim.torch_gradients(net, dyadsim.backprop(net, np.ones((1, 4)), np.ones((1, 2))))) == [
        "0.bias", "0.weight", "2.bias", "2.weight"]


class _Bad(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        return torch.sin(self.fc(x))


def test_unsupported_and_training_mode_are_refused_naming_the_node():
    with pytest.raises(DyadsimError, match="fx node 'sin'.*call_function.*supported"):
        dyadsim.from_torch(_Bad().double(), 4)
    with pytest.raises(DyadsimError, match="'bn'.*training mode.*model.eval"):
        dyadsim.from_torch(ResNet().double().train(), (1, 8, 8))
