"""Import any ``torch.fx``-traceable model (internal; see :func:`from_torch`)."""

from __future__ import annotations

import operator

import networkx as nx
import numpy as np

from ..errors import DyadsimError

SUPPORTED = ("Linear, Conv1d, Conv2d (stride, padding incl. 'same'/'valid', dilation, groups), "
             "AvgPool2d, MaxPool2d, AdaptiveAvgPool2d, BatchNorm1d/2d (eval), Dropout (eval), "
             "Flatten, Identity, ReLU, LeakyReLU, ELU, GELU, SiLU, Softplus, Tanh, Sigmoid, Hardtanh, "
             "LogSoftmax (last, with loss='nll'); functions: x + y, torch.add, torch.cat(dim=1), "
             "torch.flatten / x.flatten(1) / x.view(B, -1), F.relu/gelu/silu/elu/leaky_relu/softplus/"
             "hardtanh/log_softmax, torch.tanh/sigmoid/relu")


def _np(t):
    return t.detach().cpu().double().numpy().copy()


def _act_of_module(m, where):
    kind = type(m).__name__
    simple = {"ReLU": "relu", "Tanh": "tanh", "Sigmoid": "sigmoid", "SiLU": "silu"}
    if kind in simple:
        return simple[kind]
    if kind == "GELU":
        if getattr(m, "approximate", "none") != "none":
            raise DyadsimError(f"{where}: only the exact GELU (approximate='none') is supported")
        return "gelu"
    if kind == "LeakyReLU":
        return f"leaky_relu({float(m.negative_slope)!r})"
    if kind == "ELU":
        return f"elu({float(m.alpha)!r})"
    if kind == "Softplus":
        if m.threshold < 20 / m.beta:
            raise DyadsimError(f"{where}: Softplus with threshold {m.threshold} < 20/beta is not supported "
                               "(torch switches to the identity there)")
        return f"softplus({float(m.beta)!r})"
    if kind == "Hardtanh":  # ReLU6 is a Hardtanh too
        return f"hardtanh({float(m.min_val)!r},{float(m.max_val)!r})"
    return None


def _act_of_function(node, where):
    import torch
    import torch.nn.functional as F

    t, args, kw = node.target, node.args, node.kwargs

    def arg(i, name, default):
        return kw.get(name, args[i] if len(args) > i else default)

    if t in (F.relu, torch.relu) or t == "relu":
        return "relu"
    if t in (torch.tanh, F.tanh) or t == "tanh":
        return "tanh"
    if t in (torch.sigmoid, F.sigmoid) or t == "sigmoid":
        return "sigmoid"
    if t is F.silu:
        return "silu"
    if t is F.gelu:
        if kw.get("approximate", "none") != "none":
            raise DyadsimError(f"{where}: only the exact GELU (approximate='none') is supported")
        return "gelu"
    if t is F.leaky_relu:
        return f"leaky_relu({float(arg(1, 'negative_slope', 0.01))!r})"
    if t is F.elu:
        return f"elu({float(arg(1, 'alpha', 1.0))!r})"
    if t is F.softplus:
        beta, thr = float(arg(1, "beta", 1.0)), float(arg(2, "threshold", 20.0))
        if thr < 20 / beta:
            raise DyadsimError(f"{where}: softplus with threshold {thr} < 20/beta is not supported")
        return f"softplus({beta!r})"
    if t is F.hardtanh:
        return f"hardtanh({float(arg(1, 'min_val', -1.0))!r},{float(arg(2, 'max_val', 1.0))!r})"
    return None


def _dshape(shape):
    """A torch per-sample shape as a dyadsim node shape ((C, L) becomes (C, 1, L))."""
    shape = tuple(int(d) for d in shape)
    if len(shape) == 2:
        return (shape[0], 1, shape[1])
    return shape


def trace(model, input_shape, loss):
    """(graph, output node, loss name, torch_map, buffers) for a traceable model."""
    import torch
    import torch.fx
    from torch.fx.passes.shape_prop import ShapeProp

    for name, m in model.named_modules():
        kind = type(m).__name__
        if m.training and (kind.startswith("BatchNorm") or (kind.startswith("Dropout") and m.p > 0)):
            raise DyadsimError(
                f"module {name!r} ({kind}) is in training mode: its output depends on the batch "
                "(batch statistics) or on chance (dropout), so it is no fixed differentiable map; "
                "call model.eval() first (running statistics are then fixed, gamma and beta trainable)")
    if not list(model.children()):  # a bare module: trace it as the one layer of a model
        G, out, loss_name, tmap, bufs = trace(torch.nn.Sequential(model), input_shape, loss)
        strip = lambda d: {k[2:]: v for k, v in d.items()}  # noqa: E731 - "0.weight" -> "weight"
        return G, out, loss_name, strip(tmap), strip(bufs)
    try:
        gm = torch.fx.symbolic_trace(model)
    except Exception as exc:  # noqa: BLE001 - torch raises many kinds
        raise DyadsimError(f"torch.fx could not trace {type(model).__name__}: {exc}") from None
    try:
        dtype = next(model.parameters()).dtype
    except StopIteration:
        dtype = torch.float64
    try:
        ShapeProp(gm).propagate(torch.zeros((2, *input_shape), dtype=dtype))
    except Exception as exc:  # noqa: BLE001
        raise DyadsimError(f"the model does not run on an input of shape (batch, *{input_shape}): {exc}") from None
    mods = dict(gm.named_modules())
    G = nx.DiGraph()
    alias = {}  # fx node -> dyadsim node
    owner = {}  # dyadsim node -> the fx node that made it (for fusing activations)
    torch_map = {}
    buffers = {}  # BatchNorm running statistics: {name: ((src, dst), "mean" | "var")}
    loss_name = loss
    out_node = None

    def shape_of(n):
        return tuple(n.meta["tensor_meta"].shape[1:])

    def src(n, where):
        if not isinstance(n, torch.fx.Node) or n not in alias:
            raise DyadsimError(f"{where}: an input that is not a tensor of the model ({n!r}) is not supported")
        return alias[n]

    def add_node(n, **attrs):
        G.add_node(n.name, **attrs)
        alias[n] = n.name
        owner[n.name] = n
        return n.name

    def activation(n, where, act, x):
        s = alias[x]
        if (s in owner and owner[s] is x and len(x.users) == 1 and G.nodes[s].get("op") is None
                and G.nodes[s].get("activation") == "identity" and G.in_degree(s) > 0):
            G.nodes[s]["activation"] = act
            alias[n] = s
            return
        v = add_node(n, shape=_dshape(shape_of(n)), activation=act, bias=False)
        G.add_edge(s, v, op="identity")

    for n in gm.graph.nodes:
        where = f"fx node {n.name!r} (op={n.op}, target={getattr(n.target, '__name__', n.target)!r})"
        if n.op == "placeholder":
            if alias:
                raise DyadsimError(f"{where}: models with more than one input are not supported")
            add_node(n, shape=_dshape(input_shape)) if len(input_shape) > 1 else add_node(n, size=int(input_shape[0]))
            continue
        if n.op == "output":
            out_node = n.args[0]
            if not isinstance(out_node, torch.fx.Node):
                raise DyadsimError(f"{where}: the model must return one tensor")
            continue
        if n.op == "get_attr":
            raise DyadsimError(f"{where}: parameters used outside their modules are not supported; supported: {SUPPORTED}")
        x = n.args[0] if n.args else None
        if n.op == "call_module":
            m = mods[n.target]
            kind = type(m).__name__
            pre = f"{n.target}."
            act = _act_of_module(m, where)
            if act is not None:
                activation(n, where, act, x)
                continue
            s = src(x, where)
            if kind in ("Identity", "Flatten") or kind.startswith("Dropout"):
                alias[n] = s
                continue
            if kind == "Linear":
                if len(shape_of(x)) != 1:
                    raise DyadsimError(f"{where}: Linear needs a flat input (got {shape_of(x)}); flatten first")
                v = add_node(n, size=m.out_features, activation="identity",
                             bias=_np(m.bias) if m.bias is not None else False)
                G.add_edge(s, v, weight=_np(m.weight))
                torch_map[pre + "weight"] = (("W", s, v), tuple(m.weight.shape))
            elif kind in ("Conv1d", "Conv2d"):
                if m.padding_mode != "zeros":
                    raise DyadsimError(f"{where}: only padding_mode='zeros' is supported")
                one = kind == "Conv1d"
                k = (1, m.kernel_size[0]) if one else tuple(m.kernel_size)
                st = (1, m.stride[0]) if one else tuple(m.stride)
                dil = (1, m.dilation[0]) if one else tuple(m.dilation)
                if isinstance(m.padding, str):
                    if m.padding == "valid":
                        pad = (0, 0, 0, 0)
                    else:
                        tot = [d * (kk - 1) for d, kk in zip(dil, k)]
                        pad = (tot[0] // 2, tot[0] - tot[0] // 2, tot[1] // 2, tot[1] - tot[1] // 2)
                else:
                    p = (0, m.padding[0]) if one else tuple(m.padding)
                    pad = (p[0], p[0], p[1], p[1])
                W = _np(m.weight).reshape(m.out_channels, -1, *k)
                v = add_node(n, shape=_dshape(shape_of(n)), activation="identity",
                             bias=_np(m.bias) if m.bias is not None else False)
                G.add_edge(s, v, op="conv2d", weight=W, stride=st, padding=pad, dilation=dil, groups=m.groups)
                torch_map[pre + "weight"] = (("W", s, v), tuple(m.weight.shape))
            elif kind in ("BatchNorm1d", "BatchNorm2d"):
                if not m.affine or not m.track_running_stats:
                    raise DyadsimError(f"{where}: BatchNorm needs affine=True and track_running_stats=True")
                v = add_node(n, shape=_dshape(shape_of(n)), activation="identity", bias=_np(m.bias))
                G.add_edge(s, v, op="batchnorm", weight=_np(m.weight), mean=_np(m.running_mean),
                           var=_np(m.running_var), eps=float(m.eps))
                torch_map[pre + "weight"] = (("W", s, v), tuple(m.weight.shape))
                torch_map[pre + "bias"] = (("b", v), tuple(m.bias.shape))
                buffers[pre + "running_mean"] = ((s, v), "mean")
                buffers[pre + "running_var"] = ((s, v), "var")
                continue
            elif kind == "AvgPool2d":
                if m.ceil_mode or not m.count_include_pad or m.divisor_override is not None:
                    raise DyadsimError(f"{where}: only ceil_mode=False, count_include_pad=True, no divisor_override")
                v = add_node(n, shape=_dshape(shape_of(n)), activation="identity", bias=False)
                G.add_edge(s, v, op="avgpool2d", kernel_size=m.kernel_size, stride=m.stride, padding=m.padding)
            elif kind == "AdaptiveAvgPool2d":
                v = add_node(n, shape=_dshape(shape_of(n)), activation="identity", bias=False)
                G.add_edge(s, v, op="adaptive_avgpool2d", output_size=tuple(shape_of(n)[1:]))
            elif kind == "MaxPool2d":
                if m.ceil_mode or m.return_indices:
                    raise DyadsimError(f"{where}: only ceil_mode=False without return_indices is supported")
                v = add_node(n, op="maxpool2d", kernel_size=m.kernel_size, stride=m.stride,
                             padding=m.padding, dilation=m.dilation)
                G.add_edge(s, v)
                continue
            elif kind == "LogSoftmax":
                if loss_name != "nll" or len(n.users) != 1 or next(iter(n.users)).op != "output":
                    raise DyadsimError(f"{where}: LogSoftmax is supported as the last layer with loss='nll' "
                                       "(it is then folded into the cross-entropy)")
                alias[n] = s
                loss_name = "xent"
                continue
            else:
                raise DyadsimError(f"{where}: module {kind} is not supported; supported: {SUPPORTED}")
            if getattr(m, "bias", None) is not None and kind in ("Linear", "Conv1d", "Conv2d"):
                torch_map[pre + "bias"] = (("b", alias[n]), tuple(m.bias.shape))
            continue
        # call_function / call_method
        if n.op == "call_function" and n.target in (operator.add, torch.add) or (
                n.op == "call_method" and n.target == "add"):
            a, b = n.args[0], n.args[1]
            if not (isinstance(a, torch.fx.Node) and isinstance(b, torch.fx.Node)) or n.kwargs:
                raise DyadsimError(f"{where}: only the sum of two tensors is supported")
            sa, sb = src(a, where), src(b, where)
            if sa == sb:
                raise DyadsimError(f"{where}: x + x (the same tensor twice) is not supported")
            v = add_node(n, shape=_dshape(shape_of(n)), activation="identity", bias=False)
            G.add_edge(sa, v, op="identity")
            G.add_edge(sb, v, op="identity")
            continue
        if n.op == "call_function" and n.target is torch.cat:
            parts = n.args[0]
            dim = n.kwargs.get("dim", n.args[1] if len(n.args) > 1 else 0)
            if not isinstance(dim, int) or dim % (len(shape_of(n)) + 1) != 1:
                raise DyadsimError(f"{where}: torch.cat is supported along dim=1 (channels/features), got dim={dim}")
            v = add_node(n, shape=_dshape(shape_of(n)), activation="identity", bias=False)
            off = 0
            for p in parts:
                sp_ = src(p, where)
                if G.has_edge(sp_, v):
                    raise DyadsimError(f"{where}: the same tensor twice in one torch.cat is not supported")
                G.add_edge(sp_, v, op="identity", offset=off)
                off += int(np.prod(shape_of(p)))
            continue
        if (n.op == "call_function" and n.target is torch.flatten) or (
                n.op == "call_method" and n.target in ("flatten", "view", "reshape")):
            ok = len(shape_of(n)) == 1
            if n.target in ("flatten",) or n.target is torch.flatten:
                start = n.kwargs.get("start_dim", n.args[1] if len(n.args) > 1 else 0)
                ok = ok and start == 1
            if not ok:
                raise DyadsimError(f"{where}: only flattening every axis but the batch is supported")
            alias[n] = src(x, where)
            continue
        if n.op == "call_method" and n.target in ("relu", "tanh", "sigmoid"):
            activation(n, where, n.target, x)
            continue
        if n.op == "call_function":
            import torch.nn.functional as F

            act = _act_of_function(n, where)
            if act is not None:
                activation(n, where, act, x)
                continue
            if n.target is F.log_softmax:
                if loss_name != "nll" or len(n.users) != 1 or next(iter(n.users)).op != "output":
                    raise DyadsimError(f"{where}: log_softmax is supported as the last step with loss='nll'")
                alias[n] = src(x, where)
                loss_name = "xent"
                continue
        raise DyadsimError(f"{where} is not supported; supported: {SUPPORTED}")
    if loss_name == "nll":
        raise DyadsimError("loss='nll' needs a LogSoftmax as the model's last step")
    out = alias[out_node]
    if out == alias.get(next(iter(gm.graph.nodes))):
        raise DyadsimError("the model has no layer")
    names = set(dict(model.named_parameters()))
    missing = sorted(names - set(torch_map))
    if missing:  # pragma: no cover - every supported module maps its parameters
        raise DyadsimError(f"parameters {missing} are not used by a supported module")
    return G, out, loss_name, torch_map, buffers
