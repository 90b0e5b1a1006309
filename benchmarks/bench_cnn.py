"""Global system of a LeNet-sized CNN: dense vs sparse, memory and time, side by side.

    python benchmarks/bench_cnn.py [--batch 32] [--repeats 3] [--json out.json]

LeNet-5-like on 1x28x28: conv 6@5x5 pad 2 (tanh) -> avgpool 2 -> conv 16@5x5 (tanh) ->
avgpool 2 -> dense 120 (tanh) -> 84 (tanh) -> 10 (xent).  Prints the size of the global
nilpotent W stored dense (n x n) and sparse (one entry per connection), the time of one
global sweep u = W m + beta both ways, and of backprop and relax(eta=1) (which never form W:
they apply each edge as a structured operator).
"""

from __future__ import annotations

import argparse
import json
import time

import networkx as nx
import numpy as np

import dyadsim


def lenet(seed=0):
    rng = np.random.default_rng(seed)
    G = nx.DiGraph()
    G.add_node("img", shape=(1, 28, 28))
    c1 = dyadsim.Conv2d((1, 28, 28), 6, 5, 1, 2)
    p1 = dyadsim.AvgPool2d(c1.out_shape, 2)
    c2 = dyadsim.Conv2d(p1.out_shape, 16, 5)
    p2 = dyadsim.AvgPool2d(c2.out_shape, 2)
    G.add_node("c1", shape=c1.out_shape, activation="tanh", bias=np.zeros(6))
    G.add_edge("img", "c1", op="conv2d", padding=2, weight=rng.normal(0, 1 / 5, c1.weight_shape))
    G.add_node("p1", shape=p1.out_shape, activation="identity", bias=False)
    G.add_edge("c1", "p1", op="avgpool2d", kernel_size=2)
    G.add_node("c2", shape=c2.out_shape, activation="tanh", bias=np.zeros(16))
    G.add_edge("p1", "c2", op="conv2d", weight=rng.normal(0, 1 / np.sqrt(150), c2.weight_shape))
    G.add_node("p2", shape=p2.out_shape, activation="identity", bias=False)
    G.add_edge("c2", "p2", op="avgpool2d", kernel_size=2)
    prev, n_prev = "p2", int(np.prod(p2.out_shape))
    for name, width, act in (("f1", 120, "tanh"), ("f2", 84, "tanh"), ("out", 10, "identity")):
        G.add_node(name, size=width, activation=act, bias=np.zeros(width))
        G.add_edge(prev, name, weight=rng.normal(0, 1 / np.sqrt(n_prev), (width, n_prev)))
        prev, n_prev = name, width
    return dyadsim.Network.from_graph(G, loss="xent")


def best(f, repeats):
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        f()
        ts.append(time.perf_counter() - t)
    return min(ts)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    net = lenet()
    rng = np.random.default_rng(1)
    x = rng.random((args.batch, 1, 28, 28))
    y = np.eye(10)[rng.integers(0, 10, args.batch)]
    t_build = best(lambda: net.W, 1)
    W = net.W
    n = net.n
    sparse_bytes = W.data.nbytes + W.indices.nbytes + W.indptr.nbytes
    dense_bytes = n * n * 8
    m = rng.random((args.batch, n))
    beta = net.beta(x)
    t_sparse = best(lambda: np.asarray((W @ m.T).T) + beta, args.repeats)
    Wd = W.toarray()
    t_dense = best(lambda: m @ Wd.T + beta, args.repeats)
    Wd = None  # release the 500 MB
    t_bp = best(lambda: dyadsim.backprop(net, x, y), args.repeats)
    t_relax = best(lambda: dyadsim.relax(net, x, y, schedule="wavefront"), args.repeats)
    t_par = best(lambda: dyadsim.relax(net, x, y), 1)
    err = dyadsim.compare(dyadsim.relax(net, x, y).grads, dyadsim.backprop(net, x, y)).max_rel_error
    res = {
        "neurons": n, "depth": net.depth, "parameters": net.n_params, "connections": int(W.nnz),
        "dense_W_MB": dense_bytes / 2**20, "sparse_W_MB": sparse_bytes / 2**20,
        "memory_ratio_dense_over_sparse": dense_bytes / sparse_bytes,
        "build_sparse_W_s": t_build, "sweep_sparse_s": t_sparse, "sweep_dense_s": t_dense,
        "sweep_time_ratio_dense_over_sparse": t_dense / t_sparse,
        "backprop_s": t_bp, "relax_wavefront_s": t_relax, "relax_parallel_s": t_par,
        "wavefront_over_backprop": t_relax / t_bp, "parallel_over_backprop": t_par / t_bp,
        "relax_max_rel_error": err, "batch": args.batch,
    }
    print(f"LeNet-like CNN: {n} neurons, depth {net.depth}, {net.n_params} parameters, "
          f"{W.nnz} connections, batch {args.batch}")
    print(f"  global W dense : {res['dense_W_MB']:9.1f} MB   one sweep {t_dense * 1e3:8.2f} ms")
    print(f"  global W sparse: {res['sparse_W_MB']:9.1f} MB   one sweep {t_sparse * 1e3:8.2f} ms"
          f"   (dense/sparse: memory {res['memory_ratio_dense_over_sparse']:.0f}x, time {res['sweep_time_ratio_dense_over_sparse']:.1f}x)")
    print(f"  backprop {t_bp * 1e3:.1f} ms; relax eta=1 wavefront {t_relax * 1e3:.1f} ms "
          f"({res['wavefront_over_backprop']:.2f}x), parallel {t_par * 1e3:.1f} ms "
          f"({res['parallel_over_backprop']:.2f}x); relax vs backprop max rel. error {err:.1e}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(res, fh, indent=2)


if __name__ == "__main__":
    main()
