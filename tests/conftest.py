"""Shared fixtures and generators for the dyadsim test-suite.

Generators (plain functions, importable as ``from conftest import ...``):

* :func:`make_net` -- a seeded random MLP (``dyadsim.mlp``) or random DAG with skip
  connections (``dyadsim.random_dag``) of a given depth, activation and loss;
* :func:`make_targets` / :func:`make_case` -- inputs and targets: real targets for ``mse``,
  one-hot *and* soft probability targets for ``xent``;
* :func:`fd_grads` -- central finite differences of ``net.loss_value`` over every parameter;
* :func:`preacts` -- pre-activations u of the forward pass (to keep relu off its kink);
* Hypothesis strategy :func:`cases`.

Hypothesis profiles: ``ci`` (default: ``deadline=None``, 25 examples, derandomized so
CI is reproducible) and ``dev`` (more examples, random).  Select with
``HYPOTHESIS_PROFILE=dev`` or ``pytest --hypothesis-profile=dev``.

``--without=MODULE`` (repeatable, e.g. ``--without=torch``) runs the suite as if an
optional extra were not installed: ``import MODULE`` raises ImportError, so only the tests
that need it skip.  Random order: ``-p randomly`` (pytest-randomly, off by default).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

import dyadsim

# ----------------------------------------------------------------------------- options
def pytest_addoption(parser):
    parser.addoption("--without", action="append", default=[], metavar="MODULE",
                     help="run as if MODULE (an optional extra, e.g. torch) were not installed")


class _Hide:
    """A meta-path finder that makes ``import name`` (and its submodules) fail as if the
    package were not installed.  (Putting ``None`` in ``sys.modules`` instead confuses
    libraries that probe ``sys.modules`` for optional packages, scipy's array API layer.)"""

    def __init__(self, names):
        self.names = tuple(names)

    def find_spec(self, fullname, path=None, target=None):
        if fullname.split(".")[0] in self.names:
            raise ModuleNotFoundError(f"No module named {fullname!r} (hidden by --without)",
                                      name=fullname)
        return None


def pytest_configure(config):
    names = config.getoption("without")
    if not names:
        return
    loaded = [n for n in names if n in sys.modules]
    if loaded:
        raise pytest.UsageError(f"--without: {', '.join(loaded)} was imported before the tests "
                                "started and cannot be hidden")
    sys.meta_path.insert(0, _Hide(names))


def pytest_report_header(config):
    hidden = config.getoption("without")
    return f"hidden optional modules: {', '.join(hidden)}" if hidden else None


# ----------------------------------------------------------------------------- hypothesis
settings.register_profile(
    "ci",
    deadline=None,
    max_examples=25,
    derandomize=True,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.register_profile(
    "dev",
    deadline=None,
    max_examples=300,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

# ----------------------------------------------------------------------------- constants
ACTIVATIONS = tuple(dyadsim.ACTIVATIONS)  # tanh, sigmoid, relu, softplus, identity
LOSSES = tuple(dyadsim.LOSSES)  # mse, xent
TARGETS = {"mse": ("real",), "xent": ("onehot", "soft")}
KINDS = ("mlp", "dag")


@dataclass
class Case:
    """One network with one batch: what most tests run on."""

    net: dyadsim.Network
    x: np.ndarray
    y: np.ndarray
    kind: str
    activation: str
    loss: str
    target: str
    seed: int

    @property
    def label(self) -> str:
        return (f"{self.kind}-{self.activation}-{self.loss}-{self.target}-seed{self.seed}"
                f"-L{self.net.depth}-B{self.x.shape[0]}")

    def __repr__(self) -> str:  # shows up in Hypothesis' falsifying examples
        return f"Case({self.label})"


# ----------------------------------------------------------------------------- generators
def make_net(kind="mlp", activation="tanh", loss="mse", seed=0, *, depth=3, width=(2, 5),
             n_in=3, n_out=3, skip_prob=0.5, output_activation=None) -> dyadsim.Network:
    """A seeded random network of the given depth (longest input->output path in edges).

    ``kind="mlp"``: ``dyadsim.mlp`` with random hidden widths in ``width``;
    ``kind="dag"``: ``dyadsim.random_dag`` (chain of ``depth-1`` hidden layers plus skip
    edges with probability ``skip_prob``); ``activation="mixed"`` draws every node's
    activation from all five.
    """
    rng = np.random.default_rng([seed, 17])
    if kind == "mlp":
        hidden = [int(w) for w in rng.integers(width[0], width[1] + 1, size=depth - 1)]
        act = "tanh" if activation == "mixed" else activation
        return dyadsim.mlp([n_in, *hidden, n_out], activation=act, loss=loss, seed=seed,
                           output_activation=output_activation)
    if kind == "dag":
        acts = None if activation == "mixed" else activation
        return dyadsim.random_dag(n_hidden=depth - 1, sizes=width, n_in=n_in, n_out=n_out,
                                  skip_prob=skip_prob, activations=acts, loss=loss, seed=seed)
    raise ValueError(f"unknown kind {kind!r}")


def make_targets(rng, loss, target, batch, n_out) -> np.ndarray:
    """Targets for a loss: ``real`` (mse), ``onehot`` or ``soft`` probabilities (xent)."""
    if target == "real":
        return rng.standard_normal((batch, n_out))
    if target == "onehot":
        return np.eye(n_out)[rng.integers(0, n_out, size=batch)]
    if target == "soft":
        return rng.dirichlet(np.ones(n_out), size=batch)
    raise ValueError(f"unknown target kind {target!r}")


def make_batch(net, seed, batch=4, target=None):
    """Random inputs (standard normal) and targets fitting ``net``."""
    rng = np.random.default_rng([seed, 29])
    if target is None:
        target = TARGETS[net.loss.name][0]
    x = rng.standard_normal((batch, net.n_in))
    y = make_targets(rng, net.loss.name, target, batch, net.n_out)
    return x, y


def make_case(kind="mlp", activation="tanh", loss="mse", target=None, seed=0, *, depth=3,
              batch=4, width=(2, 5), n_in=3, n_out=3, skip_prob=0.5) -> Case:
    if target is None:
        target = TARGETS[loss][0]
    net = make_net(kind, activation, loss, seed, depth=depth, width=width, n_in=n_in,
                   n_out=n_out, skip_prob=skip_prob)
    x, y = make_batch(net, seed, batch, target)
    return Case(net, x, y, kind, activation, loss, target, seed)


def preacts(net, x) -> dict:
    """Pre-activations ``{node: (B, size)}`` of the forward pass, computed independently."""
    X = np.atleast_2d(np.asarray(x, dtype=np.float64))
    a = {net.input: X}
    u = {}
    for v in net.nodes:
        uv = np.tile(net.params[("b", v)], (X.shape[0], 1))
        for p in net.preds[v]:
            uv = uv + a[p] @ net.params[("W", p, v)].T
        u[v] = uv
        a[v] = net.activations[v].f(uv)
    return u


def relu_margin(net, x) -> float:
    """Smallest |u| over relu neurons (inf when the net has none): how far from the kink."""
    u = preacts(net, x)
    margins = [np.min(np.abs(u[v])) for v in net.nodes if net.activations[v].name == "relu"]
    return float(min(margins)) if margins else float("inf")


def has_dead_layer(net, x) -> bool:
    """Some layer's activations are all exactly zero for the whole batch (a dead relu layer)."""
    acts = net.forward(x)
    return any(not np.any(acts[v]) for v in net.nodes)


def fd_grads(net, x, y, h=1e-6) -> dict:
    """Central finite differences of ``net.loss_value(x, y)`` w.r.t. every parameter.

    Perturbs ``net.params[key]`` in place and restores it after each evaluation.
    """
    out = {}
    for key, p in net.params.items():
        g = np.zeros_like(p)
        for idx in np.ndindex(p.shape):
            old = p[idx]
            p[idx] = old + h
            fp = net.loss_value(x, y)
            p[idx] = old - h
            fm = net.loss_value(x, y)
            p[idx] = old
            g[idx] = (fp - fm) / (2.0 * h)
        out[key] = g
    return out


# ----------------------------------------------------------------------------- seeded cases
#: every kind x activation x loss x target kind, one seeded network each (30 cases)
SEEDED_SPECS = [(kind, act, loss, target)
                for kind in KINDS for act in ACTIVATIONS for loss in LOSSES
                for target in TARGETS[loss]]
SEEDED_IDS = ["-".join(s) for s in SEEDED_SPECS]
#: a few DAGs whose nodes mix all five activations
MIXED_SPECS = [("dag", "mixed", loss, target) for loss in LOSSES for target in TARGETS[loss]]


def all_grads_nonzero(net, x, y) -> bool:
    """Every parameter tensor has a nonzero backprop gradient (no dead relu path cuts a
    layer off, so every layer's error signal actually arrives)."""
    g = dyadsim.backprop(net, x, y)
    return all(np.any(v != 0) for v in g.values())


def seeded_case(spec, seed=None, depth=4, batch=4) -> Case:
    """The seeded case of ``spec`` = (kind, activation, loss, target).

    The seed is ``index`` (or ``index + 1000 k`` for the first k that works): cases are
    generic, i.e. no layer is dead for the whole batch and every tensor has a nonzero
    gradient.  (A relu net whose every input->output path is switched off has exactly zero
    first-layer gradients, and then even the finite-time claim is vacuous.)
    """
    kind, act, loss, target = spec
    if seed is None:
        base = SEEDED_SPECS.index(spec) if spec in SEEDED_SPECS else 100 + MIXED_SPECS.index(spec)
        for k in range(50):
            c = make_case(kind, act, loss, target, base + 1000 * k, depth=depth, batch=batch,
                          width=(2, 5))
            if not has_dead_layer(c.net, c.x) and all_grads_nonzero(c.net, c.x, c.y):
                return c
        raise RuntimeError(f"no generic seeded case for {spec}")
    return make_case(kind, act, loss, target, seed, depth=depth, batch=batch, width=(2, 5))


@pytest.fixture(params=SEEDED_SPECS + MIXED_SPECS,
                ids=SEEDED_IDS + ["-".join(s) for s in MIXED_SPECS])
def case(request) -> Case:
    """A seeded network + batch for every kind x activation x loss x target kind."""
    return seeded_case(request.param)


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


# ----------------------------------------------------------------------------- strategies
@st.composite
def cases(draw, kinds=KINDS, activations=ACTIVATIONS + ("mixed",), losses=LOSSES,
          depth=(1, 5), batch=(1, 4), width=(2, 5), n_out=(2, 4)):
    """A random :class:`Case`: kind, activation, loss, target kind, depth, batch, seed."""
    kind = draw(st.sampled_from(kinds))
    act = draw(st.sampled_from(activations))
    if act == "mixed" and kind != "dag":  # only random DAGs mix activations per node
        act = draw(st.sampled_from(ACTIVATIONS))
    loss = draw(st.sampled_from(losses))
    target = draw(st.sampled_from(TARGETS[loss]))
    L = draw(st.integers(*depth))
    B = draw(st.integers(*batch))
    no = draw(st.integers(*n_out))  # >= 2: xent with one output has zero gradients
    ni = draw(st.integers(1, 4))
    skip = draw(st.sampled_from([0.0, 0.3, 0.7, 1.0]))
    seed = draw(st.integers(0, 2**31 - 1))
    return make_case(kind, act, loss, target, seed, depth=L, batch=B, width=width,
                     n_in=ni, n_out=no, skip_prob=skip)


# ----------------------------------------------------------------------------- error helper
class user_error:
    """``with user_error("message regex"):`` -- the block must raise an error that is a
    :class:`dyadsim.DyadsimError` *and* a ``ValueError`` whose message matches."""

    def __init__(self, match):
        self._raises = pytest.raises(dyadsim.DyadsimError, match=match)

    def __enter__(self):
        self.excinfo = self._raises.__enter__()
        return self.excinfo

    def __exit__(self, *exc):
        out = self._raises.__exit__(*exc)
        if not out:  # some other exception: let it propagate unchanged
            return out
        assert isinstance(self.excinfo.value, ValueError), type(self.excinfo.value).__mro__
        assert isinstance(self.excinfo.value, dyadsim.DyadsimException)
        return out
