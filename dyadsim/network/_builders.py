"""Ready-made networks: MLPs and random DAGs with skip connections."""

from __future__ import annotations

from typing import Sequence

import networkx as nx
import numpy as np

from .._validate import check_int, check_real, checked_call
from ..errors import DyadsimError
from ._activations import ACTIVATIONS, get_activation
from ._losses import get_loss
from ._network import Network

__all__ = ["mlp", "random_dag", "parse_sizes", "MAX_PARAMS"]

#: the largest network :func:`mlp` builds (parameters): 1e9 float64 weights are 8 GB
MAX_PARAMS = 500_000_000


def parse_sizes(sizes) -> list[int]:
    """``"784-128-10"`` or ``[784, 128, 10]`` -> ``[784, 128, 10]`` (validated).

    Parameters
    ----------
    sizes : str or sequence of int
        Layer sizes, as a dash-separated string (``"784-256x8-10"`` repeats) or a list.

    Returns
    -------
    list of int
        The layer sizes.
    """
    if isinstance(sizes, str):
        parts = sizes.replace("x", "*").split("-")
        out = []
        for part in parts:
            part = part.strip()
            try:
                if "*" in part:  # "256x8" = eight layers of 256
                    width, rep = part.split("*")
                    out += [int(width)] * int(rep)
                else:
                    out.append(int(part))
            except ValueError:
                raise DyadsimError(
                    f"cannot read layer sizes {sizes!r}: use e.g. '784-128-10' or '784-256x8-10'"
                ) from None
        sizes = out
    try:
        sizes = [int(s) for s in sizes]
    except (TypeError, ValueError):
        raise DyadsimError(f"layer sizes must be integers, got {sizes!r}") from None
    if len(sizes) < 2:
        raise DyadsimError(f"an MLP needs at least an input and an output size, got {sizes!r}")
    if any(s < 1 for s in sizes):
        raise DyadsimError(f"layer sizes must be positive, got {sizes!r}")
    if len(sizes) > 10_000:
        raise DyadsimError(f"{len(sizes)} layers is more than the 10000 dyadsim builds")
    return sizes


def _init_weight(rng, n_out, n_in, activation):
    gain = 1.0 if activation in ("tanh", "identity", "sigmoid") else np.sqrt(2.0)
    return rng.standard_normal((n_out, n_in)) * gain / np.sqrt(n_in)


@checked_call
def mlp(sizes, activation="tanh", output_activation=None, loss="mse", seed=0,
        bias_scale=0.1) -> Network:
    """A fully connected feedforward network.

    Layer nodes are named ``"input"``, ``"h1"`` ... ``"h{L-1}"``, ``"output"``.

    Parameters
    ----------
    sizes : list of int or str
        ``[n0, n1, ..., nL]`` or a string ``"784-128-10"`` (``"784-256x8-10"`` repeats).
    activation : str, optional
        Hidden activation (tanh, sigmoid, relu, softplus, identity).
    output_activation : str or None, optional
        Activation of the output layer.  ``None`` means ``"identity"`` for ``loss="xent"``
        (the softmax lives in the loss) and ``activation`` otherwise.
    loss : str, optional
        ``"mse"`` or ``"xent"``.
    seed : int, optional
        Weights are ``N(0, gain^2/fan_in)``, biases ``N(0, bias_scale^2)``, from this seed.
    bias_scale : float, optional
        Standard deviation of the initial biases.

    Returns
    -------
    Network
        The new network.
    """
    sizes = parse_sizes(sizes)
    seed = check_int("seed", seed, 0)
    bias_scale = check_real("bias_scale", bias_scale, low=0)
    n_params = sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))
    if n_params > MAX_PARAMS:
        raise DyadsimError(
            f"an MLP {'-'.join(map(str, sizes))} has {n_params:.3g} parameters "
            f"({8 * n_params / 2**30:.3g} GiB in float64), more than dyadsim.network.MAX_PARAMS "
            f"= {MAX_PARAMS:.3g}; refusing before allocating it")
    get_activation(activation)
    loss_obj = get_loss(loss)
    if output_activation is None:
        output_activation = "identity" if loss_obj.name == "xent" else activation
    get_activation(output_activation)
    rng = np.random.default_rng(seed)
    L = len(sizes) - 1
    names = ["input"] + [f"h{i}" for i in range(1, L)] + ["output"]
    G = nx.DiGraph()
    G.add_node(names[0], size=sizes[0])
    for i in range(1, L + 1):
        act = output_activation if i == L else activation
        G.add_node(names[i], size=sizes[i], activation=act,
                   bias=rng.standard_normal(sizes[i]) * bias_scale)
        G.add_edge(names[i - 1], names[i], weight=_init_weight(rng, sizes[i], sizes[i - 1], act))
    return Network.from_graph(G, loss=loss_obj.name)


@checked_call
def random_dag(n_hidden=3, sizes=(1, 5), n_in=None, n_out=None, skip_prob=0.4,
               activations: Sequence[str] | str | None = None, loss="mse", seed=0,
               weight_scale=1.0) -> Network:
    """A random feedforward DAG: a chain of ``n_hidden`` hidden layers plus random skip edges.

    Every hidden node lies on the input->output chain (so there is one source and one sink)
    and every forward pair (i, j>i+1) gets a skip edge with probability ``skip_prob``.

    Parameters
    ----------
    n_hidden : int, optional
        Number of hidden layer nodes.
    sizes : (int, int), optional
        Layer sizes are drawn from ``[sizes[0], sizes[1]]``.
    n_in, n_out : int or None, optional
        Sizes of the input and output layers (``None``: drawn like the others).
    skip_prob : float, optional
        Probability of each skip edge.
    activations : str or sequence of str or None, optional
        Activations are drawn from these (all five by default), the output's included.
    loss : str, optional
        ``"mse"`` or ``"xent"``.
    seed : int, optional
        Seed of the structure and the parameters.
    weight_scale : float, optional
        Scale of the initial weights.

    Returns
    -------
    Network
        The new network.
    """
    rng = np.random.default_rng(seed)
    if activations is None:
        activations = list(ACTIVATIONS)
    elif isinstance(activations, str):
        activations = [activations]
    for a in activations:
        get_activation(a)
    lo, hi = sizes
    k = n_hidden + 2
    widths = list(rng.integers(lo, hi + 1, size=k))
    if n_in is not None:
        widths[0] = n_in
    if n_out is not None:
        widths[-1] = n_out
    names = ["input"] + [f"n{i}" for i in range(1, k - 1)] + ["output"]
    G = nx.DiGraph()
    G.add_node(names[0], size=int(widths[0]))
    for i in range(1, k):
        act = str(rng.choice(activations))
        G.add_node(names[i], size=int(widths[i]), activation=act,
                   bias=rng.standard_normal(widths[i]) * 0.3)
    for j in range(1, k):
        for i in range(j):
            if i == j - 1 or rng.random() < skip_prob:
                G.add_edge(names[i], names[j], weight=rng.standard_normal((widths[j], widths[i]))
                           * weight_scale / np.sqrt(widths[i]))
    return Network.from_graph(G, loss=loss)
