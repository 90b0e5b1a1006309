"""One harness for every gradient method: the same cases, one independent oracle.

Every method in :data:`METHODS_TABLE` runs on every case its predicate accepts (random MLPs
and random DAGs with skip connections, every activation, both losses with one-hot and soft
cross-entropy targets, CNNs with strided / padded convolutions, average pooling and skip
edges) and is compared, tensor by tensor, with the reverse pass of ``tests/oracle.py``,
which shares no code with dyadsim (it is itself checked against finite differences, closed
forms and torch autograd in ``tests/test_oracle.py``).  The batch loss the method reports
is checked too, and that the network's parameters were left as they were.

To add a method, add one line to :data:`METHODS_TABLE`: ``Method(id, run, tol, applies)``
with ``run(net, x, y)`` (a function or a method object such as ``dyadsim.Euler(eta=0.5)``)
returning a gradients dict or a result with ``.grads``.  Every method registered in
``dyadsim.METHODS`` also runs, with its default options, on the core subset of the cases.

The mutation tests at the end plant bugs in dyadsim's shared code (every edge op's
``weight_grad`` doubled; an activation's slope bent by 0.1 %) and check that the harness
reports every method that goes through that code as wrong.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Callable

import networkx as nx
import numpy as np
import pytest
from hypothesis import assume, given

import dyadsim
import dyadsim.network
from conftest import (ACTIVATIONS, MIXED_SPECS, SEEDED_SPECS, cases, make_case, make_targets,
                      seeded_case)
from oracle import Oracle, tensor_errors


# ============================================================================ cases
@dataclass
class Case:
    """One network, one batch, and the oracle built from the same plain data."""

    id: str
    net: dyadsim.Network
    x: np.ndarray
    y: np.ndarray
    oracle: Oracle

    def reference(self):
        """(oracle gradients, oracle loss)."""
        return self.oracle.grads(self.x, self.y), self.oracle.loss(self.x, self.y)


@dataclass(frozen=True)
class CaseSpec:
    """How to build a case, and what a method's predicate may ask about it beforehand."""

    id: str
    build: Callable[[], Case] = field(repr=False, compare=False)
    kind: str  # "mlp", "dag", "cnn"
    activations: frozenset  # the activations the net uses ({"mixed"} when drawn per node)
    loss: str
    small: bool = False  # small enough for ngspice (few and quick)
    core: bool = False  # the subset registry methods run on (every kind, activation, loss)

    def __repr__(self) -> str:
        return self.id


def _seeded(spec):
    c = seeded_case(spec)  # conftest's generic seeded case: depth 4, batch 4
    return Case("-".join(spec), c.net, c.x, c.y, Oracle.from_net(c.net))


def _small(kind, act, loss, target, seed, depth=2, batch=2):
    def build():
        if kind == "dag" and act == "tanh+identity":  # what the device dialect can build
            net = dyadsim.random_dag(n_hidden=depth - 1, sizes=(2, 3), n_in=2, n_out=2,
                                     skip_prob=1.0, activations=["tanh", "identity"],
                                     loss=loss, seed=seed)
            rng = np.random.default_rng([seed, 3])
            x = rng.standard_normal((batch, net.n_in))
            y = make_targets(rng, loss, target, batch, net.n_out)
        else:
            c = make_case(kind, act, loss, target, seed, depth=depth, batch=batch, width=(2, 3),
                          n_in=2, n_out=3 if loss == "xent" else 2)
            net, x, y = c.net, c.x, c.y
        return Case(f"small-{kind}-{act}-{loss}-{target}", net, x, y, Oracle.from_net(net))
    acts = frozenset(act.split("+"))
    return CaseSpec(f"small-{kind}-{act}-{loss}-{target}", build, kind, acts, loss, small=True)


def _out(n, k, s, p):
    return (n + 2 * p - k) // s + 1


def cnn_graph(seed, loss="xent", *, small=False):
    """A random CNN as a plain networkx graph: image -> conv (random kernel, stride,
    padding; per-channel bias) -> [avg pool, no bias] -> conv (full per-neuron bias or
    none) -> dense output, plus skip edges (image -> output, conv1 -> output, image -> a
    dense edge into conv2's shaped node).  Shapes are worked out here, not by dyadsim."""
    rng = np.random.default_rng([seed, 41])
    acts = list(ACTIVATIONS)
    C0 = int(rng.integers(1, 3))
    H, Wd = (4, 4) if small else (int(rng.integers(5, 8)), int(rng.integers(5, 8)))
    G = nx.DiGraph()
    G.add_node("img", shape=(C0, H, Wd))
    kh, kw = (2, 2) if small else (int(rng.integers(2, 4)), int(rng.integers(2, 4)))
    sh, sw = (1, 1) if small else (int(rng.integers(1, 3)), int(rng.integers(1, 3)))
    p = 0 if small else int(rng.integers(0, 2))
    C1 = int(rng.integers(1, 3))
    s1 = (C1, _out(H, kh, sh, p), _out(Wd, kw, sw, p))
    G.add_node("c1", shape=s1, activation=str(rng.choice(acts)), bias=rng.normal(0, 0.3, C1))
    G.add_edge("img", "c1", op="conv2d", weight=rng.normal(0, 0.5, (C1, C0, kh, kw)),
               stride=(sh, sw), padding=p)
    prev, shape = "c1", s1
    if not small and min(shape[1:]) >= 2 and rng.random() < 0.7:
        k = 2
        st = int(rng.integers(1, 3))
        pp = int(rng.integers(0, 2)) if st == 2 else 0
        shape = (shape[0], _out(shape[1], k, st, pp), _out(shape[2], k, st, pp))
        G.add_node("pool", shape=shape, activation="identity", bias=False)
        G.add_edge(prev, "pool", op="avgpool2d", kernel_size=k, stride=st, padding=pp)
        prev = "pool"
    k2 = min(2, shape[1], shape[2])
    s2 = (2, _out(shape[1], k2, 1, 0), _out(shape[2], k2, 1, 0))
    n2 = int(np.prod(s2))
    full_bias = rng.random() < 0.5
    G.add_node("c2", shape=s2, activation=str(rng.choice(acts)),
               bias=rng.normal(0, 0.3, n2) if full_bias else False)
    G.add_edge(prev, "c2", op="conv2d", weight=rng.normal(0, 0.5, (2, shape[0], k2, k2)))
    n_out = 3
    out_act = "identity" if loss == "xent" else str(rng.choice(acts))
    G.add_node("out", size=n_out, activation=out_act, bias=rng.normal(0, 0.3, n_out))
    G.add_edge("c2", "out", weight=rng.normal(0, 0.5, (n_out, n2)))
    n_img, n1 = C0 * H * Wd, int(np.prod(s1))
    G.add_edge("img", "out", weight=rng.normal(0, 0.3, (n_out, n_img)))
    if not small:
        G.add_edge("c1", "out", weight=rng.normal(0, 0.3, (n_out, n1)))
        if rng.random() < 0.5:
            G.add_edge("img", "c2", weight=rng.normal(0, 0.2, (n2, n_img)))
    return G


def _cnn(seed, loss, target, small=False, batch=3):
    def build():
        G = cnn_graph(seed, loss, small=small)
        net = dyadsim.Network.from_graph(G, loss=loss)
        rng = np.random.default_rng([seed, 43])
        x = rng.random((batch,) + tuple(G.nodes["img"]["shape"]))  # shaped (B, C, H, W)
        y = make_targets(rng, loss, target, batch, 3)
        # the oracle reads the graph built here, not the network's own description
        return Case(cid, net, x, y, Oracle.from_graph(G, loss))
    cid = f"{'small-' if small else ''}cnn{seed}-{loss}-{target}"
    return CaseSpec(cid, build, "cnn", frozenset({"mixed"}), loss, small=small,
                    core=seed % 3 == 0)


def _seeded_spec(spec):
    kind, act, loss, target = spec
    core = (kind == "mlp" and loss == "mse") or (kind == "dag" and target == "soft")
    return CaseSpec("-".join(spec), lambda: _seeded(spec), kind,
                    frozenset({act}), loss, core=core)


_CNN_TARGETS = [("mse", "real"), ("xent", "onehot"), ("xent", "soft")]

#: every case of the harness
CASES = (
    [_seeded_spec(s) for s in SEEDED_SPECS + MIXED_SPECS]  # 30 + 3 mixed-activation DAGs
    + [_cnn(seed, *_CNN_TARGETS[seed % 3]) for seed in range(6)]
    + [  # small: these also go through ngspice
        _small("mlp", "tanh", "mse", "real", seed=1),
        _small("mlp", "identity", "mse", "real", seed=2, depth=3),
        _small("dag", "tanh+identity", "mse", "real", seed=3, depth=3),
        _small("dag", "mixed", "xent", "soft", seed=4, depth=3),
        _small("mlp", "relu", "xent", "onehot", seed=5),
        _small("mlp", "sigmoid", "mse", "real", seed=6),
        _small("dag", "softplus", "xent", "onehot", seed=7),
        _cnn(8, "xent", "soft", small=True, batch=2),
    ]
)


# ============================================================================ methods
def _grads(out):
    """Gradients of whatever a method returns (a dict, or a result with ``.grads``)."""
    return out.grads if hasattr(out, "grads") else out


def every(spec):
    return True


def small(spec):
    return spec.small


def device_ok(spec):
    """The device dialect builds tanh / identity neurons with the mse loss only."""
    return spec.small and spec.loss == "mse" and spec.activations <= {"tanh", "identity"}


def ode_ok(spec):
    """The ODE is the slow one: every MLP / DAG, and the CNNs of the core subset."""
    return spec.kind != "cnn" or spec.core or spec.small


def tran_ok(spec):
    return spec.small and spec.id in ("small-mlp-tanh-mse-real", "small-dag-mixed-xent-soft")


@dataclass(frozen=True)
class Method:
    """One gradient method of the harness.

    ``run(net, x, y)`` returns gradients (or a result with ``.grads`` and ``.loss``);
    ``tol`` bounds the relative error of every tensor and of the loss; ``applies(spec)``
    says which cases it runs on; ``cheap`` methods also run on Hypothesis' random cases.
    """

    id: str
    run: Callable
    tol: float
    applies: Callable = every
    cheap: bool = False
    marks: tuple = ()

    def __repr__(self) -> str:
        return self.id


SPICE = (pytest.mark.spice,)

#: every method, one line each: (id, run(net, x, y), tolerance, applicability)
METHODS_TABLE = [
    Method("backprop", dyadsim.backprop, 1e-9, every, cheap=True),
    Method("relax-parallel-eta1", lambda n, x, y: dyadsim.relax(n, x, y), 1e-9, every, cheap=True),
    Method("relax-parallel-eta0.5", lambda n, x, y: dyadsim.relax(n, x, y, eta=0.5), 1e-9, every,
           cheap=True),
    Method("relax-wavefront", lambda n, x, y: dyadsim.relax(n, x, y, schedule="wavefront"), 1e-9,
           every, cheap=True),
    Method("ode", dyadsim.relax_continuous, 1e-6, ode_ok),
    Method("spice-op-shared", lambda n, x, y: dyadsim.spice_gradients(n, x, y, backend="shared"),
           1e-9, small, marks=SPICE),
    Method("spice-op-subprocess",
           lambda n, x, y: dyadsim.spice_gradients(n, x, y, backend="subprocess"), 1e-9, small,
           marks=SPICE),
    Method("spice-tran", lambda n, x, y: dyadsim.spice_gradients(n, x, y, analysis="tran"), 1e-5,
           tran_ok, marks=SPICE),
    Method("device-op", dyadsim.Spice(dialect="device", backend="subprocess"), 1e-6, device_ok,
           marks=SPICE),  # a method object is a run(net, x, y) too
]

#: default tolerance and cases of a registered method (``dyadsim.METHODS``) by name
REGISTRY_DEFAULTS = {
    "backprop": (1e-9, lambda s: s.core),
    "euler": (1e-9, lambda s: s.core),
    "ode": (1e-6, lambda s: s.core and ode_ok(s)),
    "spice": (1e-9, lambda s: s.small and s.kind != "cnn"),
}


def _registry_methods():
    """Every registered method with default options (``dyadsim.METHODS[name]()``)."""
    out = []
    for name, cls in getattr(dyadsim, "METHODS", {}).items():
        tol, applies = REGISTRY_DEFAULTS.get(name, (1e-6, lambda s: s.core))
        marks = SPICE if name == "spice" else ()
        out.append(Method(f"METHODS[{name}]", lambda n, x, y, cls=cls: cls()(n, x, y), tol,
                          applies, marks=marks))
    return out


ALL_METHODS = METHODS_TABLE + _registry_methods()


# ============================================================================ the check
@dataclass
class Report:
    """How one method did on one case."""

    method: str
    case: str
    tol: float
    errors: dict  # key -> relative error of that tensor
    loss: float | None
    loss_ref: float
    params_untouched: bool

    @property
    def worst(self):
        k = max(self.errors, key=lambda q: self.errors[q])
        return k, self.errors[k]

    @property
    def loss_error(self) -> float:
        if self.loss is None:
            return 0.0
        return abs(self.loss - self.loss_ref) / max(abs(self.loss_ref), 1e-300)

    @property
    def ok(self) -> bool:
        return (self.worst[1] <= self.tol and self.loss_error <= self.tol
                and self.params_untouched)

    def table(self) -> str:
        lines = [f"{self.method} on {self.case} (tolerance {self.tol:.0e} per tensor):"]
        for k, e in sorted(self.errors.items(), key=lambda kv: -kv[1]):
            lines.append(f"  {str(k):40s} {e:.3e}")
        lines.append(f"  loss {self.loss!r} vs oracle {self.loss_ref!r} ({self.loss_error:.3e})")
        if not self.params_untouched:
            lines.append("  the method changed the network's parameters")
        return "\n".join(lines)


def check(method: Method, case: Case) -> Report:
    """Run ``method`` on ``case`` and compare every tensor with the oracle."""
    before = {k: v.copy() for k, v in case.net.params.items()}
    out = method.run(case.net, case.x, case.y)
    grads = _grads(out)
    loss = getattr(out, "loss", None)
    ref, ref_loss = case.reference()
    untouched = (set(before) == set(case.net.params)
                 and all(np.array_equal(before[k], case.net.params[k]) for k in before))
    return Report(method.id, case.id, method.tol, tensor_errors(grads, ref),
                  None if loss is None else float(loss), ref_loss, untouched)


def _params(methods, specs):
    return [pytest.param(m, s, id=f"{m.id}/{s.id}", marks=m.marks)
            for m in methods for s in specs if m.applies(s)]


@pytest.mark.parametrize("method,spec", _params(ALL_METHODS, CASES))
def test_method_matches_oracle(method, spec):
    case = spec.build()
    rep = check(method, case)
    assert rep.ok, rep.table()


@pytest.mark.parametrize("method", [m for m in ALL_METHODS if m.cheap], ids=repr)
@given(c=cases(depth=(1, 4)))
def test_cheap_method_matches_oracle_on_random_nets(method, c):
    """Hypothesis' random MLPs / DAGs (depth 1-4, batch 1-4, every activation, mixed)."""
    case = Case(c.label, c.net, c.x, c.y, Oracle.from_net(c.net))
    ref, _ = case.reference()
    total = np.sqrt(sum(np.sum(g ** 2) for g in ref.values()))
    # gradients that are pure rounding noise (a confident, correct softmax gives p - y ~
    # 1e-12) have a relative error of eps / 1e-12 in any method, the oracle's included
    assume(total > 1e-3)
    rep = check(method, case)
    assert rep.ok, rep.table()


def test_the_harness_covers_every_case_kind():
    """Every method runs somewhere; the cheap ones everywhere; every activation, both losses,
    soft targets and CNNs are among the cases; ngspice sees a CNN."""
    for m in ALL_METHODS:
        assert any(m.applies(s) for s in CASES), m.id
    ids = {s.id for s in CASES}
    assert {s.kind for s in CASES} == {"mlp", "dag", "cnn"}
    assert {a for s in CASES for a in s.activations} >= set(ACTIVATIONS) | {"mixed"}
    assert any(i.endswith("xent-soft") for i in ids) and any(i.endswith("xent-onehot") for i in ids)
    assert any(s.kind == "cnn" and s.small for s in CASES)
    for name, (_, applies) in REGISTRY_DEFAULTS.items():
        assert any(applies(s) for s in CASES), name


# ============================================================================ mutations
def _edge_op_classes():
    """Every concrete edge op class (subclasses of dyadsim.network.EdgeOp)."""
    seen, todo = [], [dyadsim.network.EdgeOp]
    while todo:
        c = todo.pop()
        for sub in c.__subclasses__():
            if sub not in seen:
                seen.append(sub)
                todo.append(sub)
    return seen


def _double_weight_grads(monkeypatch):
    """Plant the bug: every edge op's weight_grad returns twice its value (patched where
    each class defines it, so an inherited one is doubled once)."""
    classes = _edge_op_classes()
    for cls in classes:
        if "weight_grad" in vars(cls):
            orig = vars(cls)["weight_grad"]

            def doubled(self, W, delta, a, _orig=orig):
                g = _orig(self, W, delta, a)
                return None if g is None else 2.0 * g
            doubled.planted = True
            monkeypatch.setattr(cls, "weight_grad", doubled)
    reached = {c.__name__ for c in classes if getattr(c.weight_grad, "planted", False)}
    assert {"Dense", "Conv2d"} <= reached, reached


def _bend_slope(monkeypatch, name, factor):
    """Plant the bug: activation ``name``'s slope sigma' (however it is asked for) is off by
    ``factor``; sigma itself stays right.  Networks built afterwards get the bent one."""
    good = dyadsim.network.get_activation(name)
    bent = dataclasses.replace(good, df=lambda u: factor * good.df(u))
    if hasattr(good, "value_and_slope"):  # the fused (sigma, sigma') some callers use
        object.__setattr__(bent, "value_and_slope", lambda u: (good.f(u), factor * good.df(u)))
    monkeypatch.setitem(dyadsim.network.ACTIVATIONS, name, bent)


_BY_ID = {m.id: m for m in METHODS_TABLE}
_DIGITAL = ["backprop", "relax-parallel-eta1", "relax-parallel-eta0.5", "relax-wavefront", "ode"]
_ANALOG = ["spice-op-shared", "spice-op-subprocess", "device-op"]
_SPEC = {s.id: s for s in CASES}


def _mutation_params(ids):
    return [pytest.param(_BY_ID[i], id=i, marks=_BY_ID[i].marks) for i in ids]


@pytest.mark.parametrize("method", _mutation_params(_DIGITAL + _ANALOG))
def test_doubled_weight_grad_is_caught(method, monkeypatch):
    """Every edge op's weight_grad returns 2x: every method reads its gradients through it,
    and the harness must report each one wrong, by exactly 100 % on the weights."""
    specs = ([_SPEC["small-mlp-tanh-mse-real"]] if method.id in _ANALOG
             else [_SPEC["dag-tanh-xent-soft"], _SPEC["cnn1-xent-onehot"]])
    for spec in specs:
        case = spec.build()
        assert check(method, case).ok  # sound before the bug is planted
        with monkeypatch.context() as mp:
            _double_weight_grads(mp)
            rep = check(method, case)
        assert not rep.ok, rep.table()
        for k, e in rep.errors.items():  # weights 100 % off, biases untouched
            assert e == pytest.approx(1.0 if k[0] == "W" else 0.0, abs=max(10 * method.tol, 1e-12)), \
                rep.table()


@pytest.mark.parametrize("method,act", [
    pytest.param(_BY_ID[i], act, id=f"{i}-{act}", marks=_BY_ID[i].marks)
    for act in ("tanh", "softplus") for i in _DIGITAL + _ANALOG
    if not (i == "device-op" and act != "tanh")])  # the device dialect: tanh, identity only
def test_bent_activation_slope_is_caught(method, act, monkeypatch):
    """sigma' off by 0.1 % (sigma right): the dynamics' error signals and the readout go
    through it, and the harness must report the method wrong."""
    rng = np.random.default_rng(5)
    x, y = rng.standard_normal((2, 2)), rng.standard_normal((2, 2))

    def case():
        net = dyadsim.mlp([2, 3, 2], activation=act, loss="mse", seed=11)
        return Case(f"mlp-2-3-2-{act}", net, x, y, Oracle.from_net(net))  # oracle reads names

    assert check(method, case()).ok  # sound before the bug is planted
    good = dyadsim.network.get_activation(act)
    _bend_slope(monkeypatch, act, 1.001)
    bent = case()
    u = np.array([-0.7, 0.3])
    for v in bent.net.nodes:  # the bug is planted in the net under test
        assert np.all(bent.net.activations[v].df(u) == 1.001 * good.df(u))
    rep = check(method, bent)
    assert not rep.ok, rep.table()
    assert rep.worst[1] > 1e-4, rep.table()  # about the size of the planted 1e-3
