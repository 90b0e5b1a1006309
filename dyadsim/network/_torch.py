"""Import from and export to PyTorch (optional: ``pip install dyadsim[torch]``).

Supported: ``torch.nn.Sequential`` (nested Sequentials are flattened) of Linear, Conv2d,
AvgPool2d, Flatten and the activations Tanh, Sigmoid, ReLU, Softplus, Identity.  Each
Linear/Conv2d/AvgPool2d becomes a layer node (named after its module path, e.g. ``"0"``)
whose activation is the activation module that follows it (identity if none); Flatten is
free because dyadsim stores activations flattened in PyTorch's (C, H, W) order.
"""

from __future__ import annotations

import networkx as nx
import numpy as np

from .._validate import checked_call
from ..errors import DyadsimError
from ._network import Network

__all__ = ["from_torch", "to_torch", "torch_gradients"]

_ACT_MODULES = {"Tanh": "tanh", "Sigmoid": "sigmoid", "ReLU": "relu", "Softplus": "softplus",
                "Identity": "identity"}
_SUPPORTED = ("Linear", "Conv2d", "AvgPool2d", "Flatten", *_ACT_MODULES)


def _torch():
    try:
        import torch
    except ImportError:  # pragma: no cover - depends on the machine
        raise DyadsimError(
            "PyTorch is not installed; it is an optional extra: pip install 'dyadsim[torch]' "
            "(or pip install torch)"
        ) from None
    return torch


def _leaves(module, prefix=""):
    torch = _torch()
    if isinstance(module, torch.nn.Sequential):
        for name, child in module.named_children():
            yield from _leaves(child, f"{prefix}{name}" if not prefix else f"{prefix}.{name}")
    else:
        yield (prefix or type(module).__name__.lower()), module


def _np(t):
    return t.detach().cpu().double().numpy().copy()


def _walk(module, input_shape):
    """Yield (kind, name, module, attrs) for each layer-creating module, with activations."""
    torch = _torch()
    if not isinstance(module, torch.nn.Module):
        raise DyadsimError(f"from_torch needs a torch.nn.Module, got {type(module).__name__}")
    if not isinstance(module, torch.nn.Sequential):
        raise DyadsimError(
            f"from_torch supports torch.nn.Sequential models; got {type(module).__name__} "
            "(wrap your layers in nn.Sequential)"
        )
    return list(_leaves(module))


def _sequential_ok(module) -> bool:
    """Whether the historical nn.Sequential importer takes this model."""
    torch = _torch()
    if not isinstance(module, torch.nn.Sequential):
        return False
    for _, m in _leaves(module):
        kind = type(m).__name__
        if kind not in _SUPPORTED:
            return False
        if kind == "Softplus" and (m.beta != 1 or m.threshold < 20):
            return False
        if kind == "Conv2d" and (m.groups != 1 or tuple(m.dilation) != (1, 1) or isinstance(m.padding, str)):
            return False
    acts = [type(m).__name__ in _ACT_MODULES for _, m in _leaves(module)]
    return not any(a and b for a, b in zip(acts, acts[1:])) and not (acts and acts[0])


_LOSS_ALIASES = {"cross_entropy": "xent", "crossentropy": "xent", "mse_sum": "mse"}


@checked_call
def from_torch(module, input_shape, loss="mse") -> Network:
    """Build a :class:`Network` from a PyTorch model.

    An ``nn.Sequential`` of Linear, Conv2d, AvgPool2d, Flatten and Tanh/Sigmoid/ReLU/
    Softplus/Identity is imported as it always was (one layer node per Linear/Conv2d/
    AvgPool2d, named after its index).  Any other model is traced with ``torch.fx``:
    branches, residual additions (``x + y``), ``torch.cat(dim=1)``, flattening, functional
    activations and the modules Linear, Conv1d/Conv2d (stride, padding incl. 'same',
    dilation, groups), AvgPool2d, MaxPool2d, AdaptiveAvgPool2d, BatchNorm1d/2d (eval mode:
    running statistics fixed, weight and bias trainable), Dropout (eval), Flatten,
    Identity, ReLU, LeakyReLU, ELU, GELU, SiLU, Softplus(any beta), Tanh, Sigmoid,
    Hardtanh; node names are the fx node names.  Anything else is a
    :class:`~dyadsim.errors.DyadsimError` naming the fx node, its op and target.

    Parameters
    ----------
    module : torch.nn.Module
        In eval mode when it holds BatchNorm or Dropout (training mode is refused).
    input_shape : int or tuple
        One sample's shape without the batch axis: ``(C, H, W)``, ``(C, L)`` (Conv1d; the
        network's input is then the flattened (C * L) vector) or ``(n,)``.
    loss : str
        ``"mse"`` (0.5 * sum over outputs per sample, batch mean: n_out / 2 times
        ``nn.MSELoss``), ``"mse_mean"`` (exactly ``nn.MSELoss()``), ``"xent"`` /
        ``"cross_entropy"`` (``nn.CrossEntropyLoss`` with one-hot targets) or ``"nll"``
        (the model ends in LogSoftmax; ``nn.NLLLoss`` of it, folded into cross-entropy).

    Returns
    -------
    Network
        Weights copied (float64).  :func:`torch_gradients` gives its gradients under the
        model's parameter names and shapes; :func:`to_torch` writes parameters back.
    """
    if isinstance(input_shape, (int, np.integer)):
        input_shape = (int(input_shape),)
    input_shape = tuple(int(d) for d in input_shape)
    loss = _LOSS_ALIASES.get(str(loss).lower(), loss) if isinstance(loss, str) else loss
    torch = _torch()
    if not isinstance(module, torch.nn.Module):
        raise DyadsimError(f"from_torch needs a torch.nn.Module, got {type(module).__name__}")
    if not _sequential_ok(module) or loss == "nll":
        from ._fx import trace

        G, out, loss_name, tmap, buffers = trace(module, input_shape, loss)
        net = Network.from_graph(G, loss=loss_name)
        if net.output != out:  # pragma: no cover - a single sink is the output
            raise DyadsimError(f"the model's output {out!r} is not the graph's sink {net.output!r}")
        net.torch_map = tmap
        net.torch_buffers = buffers
        return net
    net = _from_sequential(module, input_shape, loss)
    tmap = {}
    for name, m in _leaves(module):
        v = str(name)
        if v in net.sizes and v != net.input:
            (p,) = net.preds[v]
            if ("W", p, v) in net.params:
                tmap[f"{name}.weight"] = (("W", p, v), tuple(m.weight.shape))
            if ("b", v) in net.params:
                tmap[f"{name}.bias"] = (("b", v), tuple(m.bias.shape))
    net.torch_map = tmap
    return net


@checked_call
def torch_gradients(net: Network, grads) -> dict:
    """Gradients under the imported model's parameter names, in torch's shapes.

    Parameters
    ----------
    net : Network
        Made by :func:`from_torch` (it remembers which parameter is which).
    grads : Gradients or GradientResult
        Any method's gradients of ``net``.

    Returns
    -------
    dict
        ``{name: ndarray}`` for every name of ``model.named_parameters()``.
    """
    tmap = getattr(net, "torch_map", None)
    if tmap is None:
        raise DyadsimError("torch_gradients needs a network made by from_torch (it maps the model's "
                           "parameter names); this one was not, or is a copy")
    g = getattr(grads, "grads", grads)
    out = {}
    for name, (key, shape) in tmap.items():
        if key not in g:
            raise DyadsimError(f"the gradients have no entry for {key} (torch parameter {name!r})")
        out[name] = np.asarray(g[key]).reshape(shape)
    return out


def _from_sequential(module, input_shape, loss):
    G = nx.DiGraph()
    G.add_node("input", **({"shape": input_shape} if len(input_shape) > 1 else {"size": input_shape[0]}))
    cur, cur_shape = "input", input_shape
    has_act = True  # the input takes no activation
    for name, m in _walk(module, input_shape):
        kind = type(m).__name__
        where = f"module {name!r} ({kind})"
        if kind in _ACT_MODULES:
            if has_act:
                raise DyadsimError(
                    f"{where}: an activation must follow a Linear, Conv2d or AvgPool2d layer "
                    "(two activations in a row, or one on the input, are not supported)"
                )
            if kind == "Softplus" and (m.beta != 1 or m.threshold < 20):
                raise DyadsimError(f"{where}: only Softplus(beta=1, threshold>=20) is supported")
            G.nodes[cur]["activation"] = _ACT_MODULES[kind]
            has_act = True
            continue
        if kind == "Flatten":
            if m.start_dim != 1 or m.end_dim != -1:
                raise DyadsimError(f"{where}: only Flatten(start_dim=1, end_dim=-1) is supported")
            cur_shape = (int(np.prod(cur_shape)),)
            continue
        node = str(name)
        if kind == "Linear":
            n_in = int(np.prod(cur_shape))
            if len(cur_shape) != 1:
                raise DyadsimError(f"{where}: a Linear layer needs a flat input; add nn.Flatten() before it")
            if m.in_features != n_in:
                raise DyadsimError(f"{where}: in_features={m.in_features} but the previous layer has {n_in} outputs")
            G.add_node(node, size=m.out_features, activation="identity",
                       bias=_np(m.bias) if m.bias is not None else False)
            G.add_edge(cur, node, weight=_np(m.weight))
            cur_shape = (m.out_features,)
        elif kind == "Conv2d":
            if len(cur_shape) != 3:
                raise DyadsimError(f"{where}: Conv2d needs a (C, H, W) input, the previous layer gives {cur_shape}")
            if m.groups != 1 or tuple(m.dilation) != (1, 1) or m.padding_mode != "zeros" or isinstance(m.padding, str):
                raise DyadsimError(f"{where}: only groups=1, dilation=1, numeric zero padding are supported")
            from ._edges import Conv2d as ConvOp

            op = ConvOp(cur_shape, m.out_channels, m.kernel_size, m.stride, m.padding)
            G.add_node(node, shape=op.out_shape, activation="identity",
                       bias=_np(m.bias) if m.bias is not None else False)
            G.add_edge(cur, node, op="conv2d", weight=_np(m.weight), stride=tuple(m.stride),
                       padding=tuple(m.padding))
            cur_shape = op.out_shape
        elif kind == "AvgPool2d":
            if len(cur_shape) != 3:
                raise DyadsimError(f"{where}: AvgPool2d needs a (C, H, W) input, the previous layer gives {cur_shape}")
            if m.ceil_mode or not m.count_include_pad or m.divisor_override is not None:
                raise DyadsimError(f"{where}: only ceil_mode=False, count_include_pad=True, no divisor_override")
            from ._edges import AvgPool2d as PoolOp

            op = PoolOp(cur_shape, m.kernel_size, m.stride, m.padding)
            G.add_node(node, shape=op.out_shape, activation="identity", bias=False)
            G.add_edge(cur, node, op="avgpool2d", kernel_size=op.kernel_size, stride=op.stride,
                       padding=op.padding)
            cur_shape = op.out_shape
        else:
            raise DyadsimError(
                f"{where} is not supported by from_torch; supported layers: {', '.join(_SUPPORTED)}"
            )
        cur = node
        has_act = False
    if cur == "input":
        raise DyadsimError("the model has no Linear, Conv2d or AvgPool2d layer")
    return Network.from_graph(G, loss=loss)


@checked_call
def to_torch(net: Network, module=None):
    """Export a network's parameters to PyTorch.

    With ``module`` (e.g. the one it was imported from: any model :func:`from_torch`
    took), copy the weights into it in place and return it.  Without, build an
    ``nn.Sequential`` (chain-shaped networks only).

    Parameters
    ----------
    net : Network
    module : torch.nn.Module, optional

    Returns
    -------
    torch.nn.Module
    """
    torch = _torch()
    tmap = getattr(net, "torch_map", None)
    if module is not None and tmap is not None and not isinstance(module, torch.nn.Sequential) or (
            module is not None and tmap is not None and set(tmap) == set(dict(module.named_parameters()))):
        params = dict(module.named_parameters())
        missing = sorted(set(tmap) - set(params))
        if missing:
            raise DyadsimError(f"the module has no parameters named {missing} to receive them")
        with torch.no_grad():
            for name, (key, shape) in tmap.items():
                t = params[name]
                if tuple(t.shape) != tuple(shape):
                    raise DyadsimError(f"parameter {name!r} has shape {tuple(t.shape)}, the network's is {shape}")
                t.copy_(torch.as_tensor(net.params[key].reshape(shape), dtype=t.dtype))
            bufs = dict(module.named_buffers())
            for name, (edge, which) in getattr(net, "torch_buffers", {}).items():
                if name in bufs:  # the fixed running statistics of BatchNorm
                    bufs[name].copy_(torch.as_tensor(getattr(net.edge_ops[edge], which), dtype=bufs[name].dtype))
        return module
    if module is not None:
        leaves = dict(_walk(module, None))
        for v in net.nodes:
            m = leaves.get(str(v))
            if m is None:
                raise DyadsimError(f"the module has no layer named {v!r} to receive its parameters")
            (p,) = net.preds[v] if len(net.preds[v]) == 1 else (None,)
            with torch.no_grad():
                if ("W", p, v) in net.params:
                    m.weight.copy_(torch.as_tensor(net.params[("W", p, v)], dtype=m.weight.dtype))
                if ("b", v) in net.params and getattr(m, "bias", None) is not None:
                    m.bias.copy_(torch.as_tensor(net.params[("b", v)], dtype=m.bias.dtype))
        return module
    layers = []
    prev = net.input
    for v in net.nodes:
        if net.preds[v] != (prev,):
            raise DyadsimError(
                f"to_torch without a module builds an nn.Sequential and needs a chain; layer {v!r} "
                f"has inputs {list(net.preds[v])} (pass module=... to copy weights into your own model)"
            )
        op = net.edge_ops[(prev, v)]
        bias = ("b", v) in net.params
        if op.kind == "dense":
            if len(net.shapes[prev]) > 1:
                layers.append(torch.nn.Flatten())
            lin = torch.nn.Linear(net.sizes[prev], net.sizes[v], bias=bias, dtype=torch.float64)
            layers.append(lin)
        elif op.kind == "conv2d":
            lin = torch.nn.Conv2d(op.in_shape[0], op.out_shape[0], op.kernel_size, op.stride, op.padding,
                                  bias=bias, dtype=torch.float64)
            layers.append(lin)
        else:
            lin = torch.nn.AvgPool2d(op.kernel_size, op.stride, op.padding)
            layers.append(lin)
        with torch.no_grad():
            if ("W", prev, v) in net.params:
                lin.weight.copy_(torch.as_tensor(net.params[("W", prev, v)]))
            if bias:
                lin.bias.copy_(torch.as_tensor(net.params[("b", v)]))
        act = net.activations[v].name
        if act != "identity":
            layers.append({"tanh": torch.nn.Tanh, "sigmoid": torch.nn.Sigmoid, "relu": torch.nn.ReLU,
                           "softplus": torch.nn.Softplus}[act]())
        prev = v
    return torch.nn.Sequential(*layers)
