"""LeNet-5: dyadsim's backprop and relax(eta=1) against torch autograd, and the global W.

    python benchmarks/bench_cnn.py [--batch 64] [--repeats 20] [--threads 1] [--json out.json]

The model is a PyTorch LeNet-5 on 1x28x28 (conv 6@5x5 pad 2, tanh, avgpool 2, conv 16@5x5,
tanh, avgpool 2, flatten, dense 120 tanh, 84 tanh, 10; cross-entropy), imported with
``dyadsim.from_torch``.  Timed side by side, in float64, one thread each (``--threads``
pins numpy's BLAS with threadpoolctl and sets ``torch.set_num_threads``; the OMP/BLAS
environment variables are set before numpy loads): torch autograd's forward + backward
(``zero_grad``, ``cross_entropy(model(x), labels).backward()``: the reference), dyadsim's
``backprop`` and ``relax(eta=1)`` with the wavefront schedule.  Every repeat runs the three
in turn; the ratios are best over best, and the range is the per-repeat ratio (a row's
time in one repeat over torch's in the same repeat).  Then the size of the global
nilpotent W stored dense (n x n) and sparse, and one global sweep u = W m + beta both ways
(relax and backprop never form W: each edge is applied as a structured operator).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time


def _pin_env(threads):
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, str(threads))


def lenet_torch(torch, seed=0):
    """The PyTorch LeNet-5 (float64)."""
    nn = torch.nn
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2), nn.Tanh(), nn.AvgPool2d(2),
        nn.Conv2d(6, 16, 5), nn.Tanh(), nn.AvgPool2d(2), nn.Flatten(),
        nn.Linear(400, 120), nn.Tanh(), nn.Linear(120, 84), nn.Tanh(), nn.Linear(84, 10),
    ).double()


def run(batch=64, repeats=20, seed=0, dense_sweep=True, log=print) -> dict:
    """Run the benchmark; a JSON-able dict of the numbers."""
    import numpy as np
    import torch

    import dyadsim

    model = lenet_torch(torch, seed)
    net = dyadsim.from_torch(model, (1, 28, 28), loss="xent")
    rng = np.random.default_rng(seed + 1)
    x = rng.random((batch, 1, 28, 28))
    labels = rng.integers(0, 10, batch)
    y = np.eye(10)[labels]
    xt, lt = torch.tensor(x), torch.tensor(labels)

    def torch_step():
        model.zero_grad()
        torch.nn.functional.cross_entropy(model(xt), lt).backward()

    rows = {
        "torch autograd": torch_step,
        "backprop": lambda: dyadsim.backprop(net, x, y),
        "relax wavefront": lambda: dyadsim.relax(net, x, y, schedule="wavefront"),
    }
    for f in rows.values():  # warm-up, not timed
        f()
    times = {k: [] for k in rows}
    for r in range(repeats):
        for k, f in rows.items():
            t = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t)
    log(f"timed {repeats} repeats")

    # exactness, side by side: dyadsim against torch's own gradients
    torch_step()
    tg = {name: p.grad.numpy().copy() for name, p in model.named_parameters()}
    ref = dyadsim.backprop(net, x, y)
    rel = dyadsim.relax(net, x, y, schedule="wavefront")
    err_bp = max(np.linalg.norm(g - tg[k]) / np.linalg.norm(tg[k])
                 for k, g in dyadsim.torch_gradients(net, ref).items())
    err_relax = dyadsim.compare(rel.grads, ref).max_rel_error

    base = np.array(times["torch autograd"])
    table = []
    for k, ts in times.items():
        ts = np.array(ts)
        per = ts / base
        table.append({"row": k, "best_ms": 1e3 * ts.min(), "x_torch": ts.min() / base.min(),
                      "range": [float(per.min()), float(per.max())], "median_x_torch": float(np.median(per))})
    res = {"batch": batch, "repeats": repeats, "neurons": net.n, "depth": net.depth,
           "parameters": net.n_params, "rows": table,
           "backprop_vs_torch_max_rel_error": float(err_bp),
           "relax_vs_backprop_max_rel_error": float(err_relax),
           "torch_threads": torch.get_num_threads()}

    W = net.W
    m = rng.random((batch, net.n))
    beta = net.beta(x)
    sparse = []
    for _ in range(3):
        t = time.perf_counter()
        np.asarray((W @ m.T).T) + beta
        sparse.append(time.perf_counter() - t)
    res.update(connections=int(W.nnz), sparse_W_MB=(W.data.nbytes + W.indices.nbytes + W.indptr.nbytes) / 2**20,
               dense_W_MB=net.n * net.n * 8 / 2**20, sweep_sparse_s=min(sparse))
    if dense_sweep:
        Wd = W.toarray()
        dense = []
        for _ in range(3):
            t = time.perf_counter()
            m @ Wd.T + beta
            dense.append(time.perf_counter() - t)
        res["sweep_dense_s"] = min(dense)
    return res


def format_report(res) -> str:
    lines = [f"LeNet-5 from torch: {res['neurons']} neurons, depth {res['depth']}, {res['parameters']} parameters, "
             f"batch {res['batch']}, float64, {res['repeats']} repeats, torch threads {res['torch_threads']}",
             f"{'row':<18}{'best [ms]':>10}{'x torch':>9}{'range':>14}{'median':>8}",
             "-" * 59]
    for r in res["rows"]:
        lo, hi = r["range"]
        lines.append(f"{r['row']:<18}{r['best_ms']:>10.2f}{r['x_torch']:>9.2f}{lo:>8.2f}-{hi:<5.2f}"
                     f"{r['median_x_torch']:>8.2f}")
    lines.append(f"backprop vs torch autograd max rel. error {res['backprop_vs_torch_max_rel_error']:.1e}; "
                 f"relax vs backprop {res['relax_vs_backprop_max_rel_error']:.1e}")
    rows = {r["row"]: r["x_torch"] for r in res["rows"]}
    lines.append(f"targets: backprop <= 2x torch: {rows['backprop']:.2f}x; "
                 f"relax wavefront <= 2.5x torch: {rows['relax wavefront']:.2f}x")
    line = (f"global W: {res['connections']} connections, sparse {res['sparse_W_MB']:.1f} MB "
            f"(dense would be {res['dense_W_MB']:.1f} MB); one sweep sparse {res['sweep_sparse_s'] * 1e3:.2f} ms")
    if "sweep_dense_s" in res:
        line += (f", dense {res['sweep_dense_s'] * 1e3:.2f} ms "
                 f"({res['sweep_dense_s'] / res['sweep_sparse_s']:.1f}x)")
    lines.append(line)
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1, help="BLAS and torch threads (default 1)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-dense", action="store_true", help="skip the dense global W (500 MB)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    if min(args.batch, args.repeats, args.threads) < 1:
        ap.error("--batch, --repeats and --threads must be positive")
    _pin_env(args.threads)
    import torch
    from threadpoolctl import threadpool_limits

    import dyadsim  # noqa: F401  (loads every BLAS library first, so all are limited)

    torch.set_num_threads(args.threads)
    with threadpool_limits(limits=args.threads, user_api="blas"):
        res = run(args.batch, args.repeats, args.seed, not args.skip_dense,
                  log=lambda s: print(s, file=sys.stderr, flush=True))
    print(format_report(res))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(res, fh, indent=2)


if __name__ == "__main__":
    main()
