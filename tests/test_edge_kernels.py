"""The strided BLAS kernels of the structured edges (conv2d, avgpool2d, adaptive_avgpool2d).

forward, backward and weight_grad run on im2col / col2im / pooling kernels; ``matrix(W)``
(the block of the sparse global W) is still built from the index maps.  Oracles: the
index-map matrix (products ``a M^T``, ``s M``, and the weight gradient assembled from the
matrices of unit weights), a direct loop-over-taps convolution written here, the adjoint
identities it implies, and torch.nn.functional where torch is installed.
"""

import networkx as nx
import numpy as np
import pytest

import dyadsim
from dyadsim.network import AvgPool2d, Conv2d


def AdaptiveAvgPool2d(in_shape, output_size):
    """The adaptive pooling edge op, as a network built from a graph holds it."""
    G = nx.DiGraph()
    G.add_node("in", shape=in_shape)
    G.add_node("p", shape=(in_shape[0], *output_size), activation="identity", bias=False)
    G.add_edge("in", "p", op="adaptive_avgpool2d", output_size=output_size)
    return dyadsim.Network.from_graph(G).edge_ops[("in", "p")]


def _naive_conv(x, W, stride, pad4, dilation, groups):
    """Direct cross-correlation (B, C, H, W) -> (B, Co, Ho, Wo), one output pixel at a time."""
    B, C, H, Wd = x.shape
    Co, cg, kh, kw = W.shape
    pt, pb, pl, pr = pad4
    xp = np.zeros((B, C, H + pt + pb, Wd + pl + pr))
    xp[:, :, pt:pt + H, pl:pl + Wd] = x
    (sh, sw), (dh, dw) = stride, dilation
    Ho = (H + pt + pb - dh * (kh - 1) - 1) // sh + 1
    Wo = (Wd + pl + pr - dw * (kw - 1) - 1) // sw + 1
    og = Co // groups
    out = np.zeros((B, Co, Ho, Wo))
    for o in range(Co):
        c0 = (o // og) * cg
        for i in range(Ho):
            for j in range(Wo):
                patch = xp[:, c0:c0 + cg, i * sh:i * sh + dh * (kh - 1) + 1:dh, j * sw:j * sw + dw * (kw - 1) + 1:dw]
                out[:, o, i, j] = np.tensordot(patch, W[o], axes=3)
    return out


def _random_conv(rng):
    """A random valid geometry: groups, stride, asymmetric padding, dilation, H = 1 sometimes."""
    while True:
        g = int(rng.choice([1, 2, 3]))
        C, Co = g * int(rng.integers(1, 3)), g * int(rng.integers(1, 3))
        H = 1 if rng.random() < 0.2 else int(rng.integers(2, 9))
        Wd = int(rng.integers(3, 10))
        kh = 1 if H == 1 else int(rng.integers(1, 4))
        kw = int(rng.integers(1, 4))
        stride = (int(rng.integers(1, 3)), int(rng.integers(1, 4)))
        dilation = (1 if kh == 1 else int(rng.integers(1, 3)), int(rng.integers(1, 3)))
        pad4 = (0, 0) if H == 1 else tuple(int(v) for v in rng.integers(0, 3, 2))
        pad4 = pad4 + tuple(int(v) for v in rng.integers(0, 3, 2))
        Ho = (H + pad4[0] + pad4[1] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
        Wo = (Wd + pad4[2] + pad4[3] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
        if Ho >= 1 and Wo >= 1:
            return dict(in_shape=(C, H, Wd), out_channels=Co, kernel_size=(kh, kw), stride=stride,
                        padding=pad4, dilation=dilation, groups=g)


def _unit_weight_grad(op, s, a):
    """sum_b s_b^T M(e_j) a_b for every weight j, from the index-map matrices."""
    n = int(np.prod(op.weight_shape))
    g = np.empty(n)
    for j in range(n):
        e = np.zeros(n)
        e[j] = 1.0
        M = op.matrix(e.reshape(op.weight_shape))
        g[j] = np.sum(s * (M @ a.T).T)
    return g.reshape(op.weight_shape)


@pytest.mark.parametrize("seed", range(40))
def test_conv_kernels_match_index_map_matrix_and_a_direct_convolution(seed):
    rng = np.random.default_rng(seed)
    geo = _random_conv(rng)
    op = Conv2d(**geo)
    B = 3
    W = rng.normal(size=op.weight_shape)
    a = rng.normal(size=(B, op.n_src))
    s = rng.normal(size=(B, op.n_dst))
    out = op.forward(W, a)
    assert "_maps_cache" not in op.__dict__  # the kernels never build the index maps
    direct = _naive_conv(a.reshape((B,) + op.in_shape), W, op.stride, op.padding4, op.dilation, op.groups)
    assert direct.shape[1:] == op.out_shape
    np.testing.assert_allclose(out, direct.reshape(B, -1), rtol=0, atol=1e-12)
    back = op.backward(W, s)
    gw = op.weight_grad(W, s, a)
    assert "_maps_cache" not in op.__dict__
    # adjoint identities of the direct convolution: <s, conv(a)> = <back, a> = <gw, W>
    V = rng.normal(size=W.shape)
    lhs = np.sum(s * _naive_conv(a.reshape((B,) + op.in_shape), V, op.stride, op.padding4,
                                 op.dilation, op.groups).reshape(B, -1))
    assert np.sum(gw * V) == pytest.approx(lhs, rel=1e-12, abs=1e-12)
    assert np.sum(back * a) == pytest.approx(np.sum(s * out), rel=1e-12, abs=1e-12)
    # the sparse block of the global W (index maps) gives the same numbers
    M = op.matrix(W)
    np.testing.assert_allclose(out, (M @ a.T).T, rtol=0, atol=1e-12)
    np.testing.assert_allclose(back, (M.T @ s.T).T, rtol=0, atol=1e-12)
    np.testing.assert_allclose(gw, _unit_weight_grad(op, s, a), rtol=0, atol=1e-12)


@pytest.mark.parametrize("seed", range(30))
def test_pooling_kernels_match_index_map_matrix(seed):
    rng = np.random.default_rng(seed)
    C, H, Wd = int(rng.integers(1, 3)), int(rng.integers(2, 9)), int(rng.integers(2, 9))
    if seed % 3 == 0:
        op = AdaptiveAvgPool2d((C, H, Wd), (int(rng.integers(1, H + 2)), int(rng.integers(1, Wd + 2))))
    else:
        k = (int(rng.integers(1, min(H, 3) + 1)), int(rng.integers(1, min(Wd, 3) + 1)))
        stride = None if seed % 3 == 1 else (int(rng.integers(1, 3)), int(rng.integers(1, 3)))
        pad = (0, 0) if stride is None else (int(rng.integers(0, k[0] // 2 + 1)), int(rng.integers(0, k[1] // 2 + 1)))
        op = AvgPool2d((C, H, Wd), k, stride, pad)
    B = 2
    a = rng.normal(size=(B, op.n_src))
    s = rng.normal(size=(B, op.n_dst))
    out, back = op.forward(None, a), op.backward(None, s)
    assert op.weight_grad(None, s, a) is None
    M = op.matrix(None)
    np.testing.assert_allclose(out, (M @ a.T).T, rtol=0, atol=1e-14)
    np.testing.assert_allclose(back, (M.T @ s.T).T, rtol=0, atol=1e-14)
    # every input's weights sum to what its windows give it: an independent count
    if op.kind == "avgpool2d":
        (kh, kw), (sh, sw), (ph, pw) = op.kernel_size, op.stride, op.padding
        x = a.reshape(B, C, H, Wd)
        xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
        _, Ho, Wo = op.out_shape
        ref = np.array([[[[xp[b, c, i * sh:i * sh + kh, j * sw:j * sw + kw].mean() for j in range(Wo)]
                          for i in range(Ho)] for c in range(C)] for b in range(B)])
        np.testing.assert_allclose(out, ref.reshape(B, -1), rtol=0, atol=1e-14)


def test_results_are_fresh_writable_arrays_in_the_input_dtype():
    rng = np.random.default_rng(0)
    ops = [Conv2d((2, 6, 6), 4, 3, 1, 1), Conv2d((2, 6, 6), 2, 1), AvgPool2d((2, 6, 6), 2),
           AvgPool2d((2, 7, 7), 2), AvgPool2d((2, 6, 6), 3, 1, 1), AdaptiveAvgPool2d((2, 6, 6), (3, 3)),
           AdaptiveAvgPool2d((2, 7, 5), (3, 2))]
    for op in ops:
        W = rng.normal(size=op.weight_shape) if op.has_weight else None
        for dtype in (np.float32, np.float64):
            a = rng.normal(size=(3, op.n_src)).astype(dtype)
            s = rng.normal(size=(3, op.n_dst)).astype(dtype)
            a0, s0 = a.copy(), s.copy()
            out, back = op.forward(W, a), op.backward(W, s)
            assert out.dtype == dtype and back.dtype == dtype
            assert out.shape == (3, op.n_dst) and back.shape == (3, op.n_src)
            out += 1.0  # callers accumulate in place
            back += 1.0
            np.testing.assert_array_equal(a, a0)
            np.testing.assert_array_equal(s, s0)
            if op.has_weight:
                assert op.weight_grad(W, s, a).dtype == dtype


def test_kernels_accept_column_views_of_a_stacked_state():
    """System passes m[:, slice] views (not contiguous): same numbers as a contiguous copy."""
    rng = np.random.default_rng(1)
    op = Conv2d((2, 5, 5), 3, 2, 2, 1)
    m = rng.normal(size=(4, op.n_src + 7))
    view = m[:, 3:3 + op.n_src]
    W = rng.normal(size=op.weight_shape)
    s = rng.normal(size=(4, op.n_dst))
    np.testing.assert_array_equal(op.forward(W, view), op.forward(W, view.copy()))
    np.testing.assert_array_equal(op.weight_grad(W, s, view), op.weight_grad(W, s, view.copy()))


# ---------------------------------------------------------------- PyTorch (optional extra)
@pytest.mark.parametrize("seed", range(25))
def test_conv_kernels_match_torch_autograd(seed):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    rng = np.random.default_rng(1000 + seed)
    geo = _random_conv(rng)
    op = Conv2d(**geo)
    B = 4
    W = rng.normal(size=op.weight_shape)
    a = rng.normal(size=(B, op.n_src))
    s = rng.normal(size=(B, op.n_dst))
    xt = torch.tensor(a.reshape((B,) + op.in_shape), requires_grad=True)
    Wt = torch.tensor(W, requires_grad=True)
    pt, pb, pl, pr = op.padding4
    if op.in_shape[1] == 1:  # a Conv1d: the H = 1 case
        out = F.conv1d(F.pad(xt[:, :, 0], (pl, pr)), Wt[:, :, 0], stride=op.stride[1],
                       dilation=op.dilation[1], groups=op.groups)[:, :, None]
    else:
        out = F.conv2d(F.pad(xt, (pl, pr, pt, pb)), Wt, stride=op.stride, dilation=op.dilation, groups=op.groups)
    assert tuple(out.shape[1:]) == op.out_shape
    (out.reshape(B, -1) * torch.tensor(s)).sum().backward()
    np.testing.assert_allclose(op.forward(W, a), out.detach().numpy().reshape(B, -1), rtol=0, atol=1e-12)
    np.testing.assert_allclose(op.backward(W, s), xt.grad.numpy().reshape(B, -1), rtol=0, atol=1e-12)
    np.testing.assert_allclose(op.weight_grad(W, s, a), Wt.grad.numpy(), rtol=0, atol=1e-12)


@pytest.mark.parametrize("seed", range(15))
def test_pooling_kernels_match_torch_autograd(seed):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    rng = np.random.default_rng(2000 + seed)
    C, H, Wd = int(rng.integers(1, 4)), int(rng.integers(2, 10)), int(rng.integers(2, 10))
    B = 3
    if seed % 2:
        osz = (int(rng.integers(1, H + 1)), int(rng.integers(1, Wd + 1)))
        op = AdaptiveAvgPool2d((C, H, Wd), osz)
        fn = lambda t: F.adaptive_avg_pool2d(t, osz)  # noqa: E731
    else:
        k = (int(rng.integers(1, min(H, 3) + 1)), int(rng.integers(1, min(Wd, 3) + 1)))
        st = (int(rng.integers(1, 3)), int(rng.integers(1, 3)))
        pad = (int(rng.integers(0, k[0] // 2 + 1)), int(rng.integers(0, k[1] // 2 + 1)))
        op = AvgPool2d((C, H, Wd), k, st, pad)
        fn = lambda t: F.avg_pool2d(t, k, st, pad, count_include_pad=True)  # noqa: E731
    a = rng.normal(size=(B, op.n_src))
    s = rng.normal(size=(B, op.n_dst))
    xt = torch.tensor(a.reshape(B, C, H, Wd), requires_grad=True)
    out = fn(xt)
    (out.reshape(B, -1) * torch.tensor(s)).sum().backward()
    np.testing.assert_allclose(op.forward(None, a), out.detach().numpy().reshape(B, -1), rtol=0, atol=1e-14)
    np.testing.assert_allclose(op.backward(None, s), xt.grad.numpy().reshape(B, -1), rtol=0, atol=1e-14)
