"""GPU benchmark: dyadsim's torch backend against torch autograd, side by side.

Two models, on one device and one dtype:

* ``mlp``    -- ``dyadsim.mlp("784-1024x8-10", activation="tanh", loss="xent")``, batch 4096;
* ``lenet5`` -- LeNet-5 (conv 6@5x5 pad 2, tanh, avgpool 2, conv 16@5x5, tanh, avgpool 2,
  dense 120-84-10 with tanh), imported with ``dyadsim.from_torch``, batch 1024.

Each model is timed in two groups, each against its own torch-autograd reference (ratio 1.00):

``api``     dyadsim's public functions as a user calls them: numpy network and batch in,
            numpy gradients out (``backprop``, ``relax(eta=1, schedule="wavefront")``,
            ``relax(eta=1, schedule="parallel")``, ``relax_continuous``), all with
            ``backend="torch", device=DEVICE``; the reference loads the same numpy
            parameters and batch into the torch model, runs forward + ``autograd.grad``
            and copies the gradients back to numpy (the same host traffic).
``engine``  the same computations on tensors already on the device, gradients left there
            (the torch engine's cores); the reference is forward + ``autograd.grad`` on
            the device.

Every timing is ``torch.cuda.synchronize()``-bracketed (on a GPU), after warm-up calls; the
methods run round robin (each repeat times every method once, the reference first), and a
row reports the median time, the ratio of medians to its reference and the range of the
per-repeat ratios.  ``max_rel_error`` is the largest per-tensor ``||g - g_ref|| / ||g_ref||``
against float64 autograd on the same device.  The Monte Carlo row times 10,000 sampled
chips of 784-100-10 (batch 8) through dyadsim's chip engine (``relax_chips``), once with the
numpy engine on the host and once with the torch engine on the device (all chips of a chunk
x the batch as one tensor), against 10,000 autograd gradient evaluations of the nominal
network on the device.

    python benchmarks/bench_gpu.py --device cuda --json bench_gpu.json   # full sizes
    python benchmarks/bench_gpu.py --device cpu --quick                  # small, < 1 minute
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time

import numpy as np

FULL = {"mlp": ("784-1024x8-10", 4096), "lenet5": (None, 1024), "repeats": 7, "ode_repeats": 3,
        "warmup": 3, "mc_chips": 10_000}
QUICK = {"mlp": ("784-256x4-10", 256), "lenet5": (None, 64), "repeats": 5, "ode_repeats": 2,
         "warmup": 1, "mc_chips": 100}


def _lenet5(torch):
    nn = torch.nn
    return nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2), nn.Tanh(), nn.AvgPool2d(2),
        nn.Conv2d(6, 16, 5), nn.Tanh(), nn.AvgPool2d(2), nn.Flatten(),
        nn.Linear(400, 120), nn.Tanh(), nn.Linear(120, 84), nn.Tanh(), nn.Linear(84, 10))


def _pairs(net, model, torch):
    """[(dyadsim key, torch parameter)] matching the chain's layers in order."""
    mods = [m for m in model.modules()
            if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d, torch.nn.AvgPool2d))]
    out = []
    prev = net.input
    for v, m in zip(net.nodes, mods):
        if ("W", prev, v) in net.params:
            out.append((("W", prev, v), m.weight))
        if ("b", v) in net.params:
            out.append((("b", v), m.bias))
        prev = v
    return out


def _rel(g, ref) -> float:
    worst = 0.0
    for k, r in ref.items():
        a = np.asarray(g[k], dtype=np.float64)
        nr = np.linalg.norm(r)
        worst = max(worst, float(np.linalg.norm(a - r) / (nr if nr > 0 else 1.0)))
    return worst


def _model_case(name, spec, batch, torch, dyadsim, seed=0):
    """(net, torch model (float64, CPU), x (numpy, shaped), y one-hot)."""
    rng = np.random.default_rng(seed)
    if name == "mlp":
        net = dyadsim.mlp(spec, activation="tanh", loss="xent", seed=seed)
        model = dyadsim.to_torch(net)
        x = rng.standard_normal((batch, net.n_in))
    else:
        torch.manual_seed(seed)
        model = _lenet5(torch).double()
        net = dyadsim.from_torch(model, (1, 28, 28), loss="xent")
        x = rng.random((batch, 1, 28, 28))
    y = np.eye(net.n_out)[rng.integers(0, net.n_out, batch)]
    return net, model, x, y


def _bench_model(name, spec, batch, cfg, dev, dtype, torch, dyadsim, log):
    from dyadsim.dynamics._torch import TorchSystem
    from dyadsim.dynamics._torch._backprop import backprop_core
    from dyadsim.dynamics._torch._euler import parallel_core, wavefront_core

    F = torch.nn.functional
    tdt = {"float32": torch.float32, "float64": torch.float64}[dtype]
    net, model64, x, y = _model_case(name, spec, batch, torch, dyadsim)
    L = net.depth
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)

    # the float64 reference gradients, autograd on the device
    ref_model = model64.to(device=dev)
    X64 = torch.as_tensor(x, device=dev)
    Y64 = torch.as_tensor(y, device=dev)
    pairs64 = _pairs(net, ref_model, torch)
    loss = F.cross_entropy(ref_model(X64), Y64)
    g64 = torch.autograd.grad(loss, [p for _, p in pairs64])
    ref = {k: g.detach().cpu().numpy() for (k, _), g in zip(pairs64, g64)}

    model = _model_case(name, spec, batch, torch, dyadsim)[1].to(device=dev, dtype=tdt)
    pairs = _pairs(net, model, torch)
    params = [p for _, p in pairs]
    npd = np.float32 if dtype == "float32" else np.float64
    xs = x.astype(npd)
    ys = y.astype(npd)
    Xd = torch.as_tensor(xs, device=dev)
    Yd = torch.as_tensor(ys, device=dev)
    Xflat = Xd.reshape(batch, -1)
    weights = {k[1:]: p.detach() for k, p in pairs if k[0] == "W"}
    bparams = {k[1]: p.detach() for k, p in pairs if k[0] == "b"}
    biases = {}
    for v in net.nodes:  # the full bias vector of every node (per-channel ones repeated)
        if v not in bparams:
            biases[v] = torch.zeros(net.sizes[v], dtype=tdt, device=dev)
        elif net.bias_mode[v] == "channel":
            biases[v] = bparams[v].repeat_interleave(net.sizes[v] // net.shapes[v][0])
        else:
            biases[v] = bparams[v]
    host_params = [(p, net.params[k]) for k, p in pairs]  # float64, as the network holds them

    def autograd_api():
        with torch.no_grad():
            for p, a in host_params:
                p.copy_(torch.from_numpy(a))
        X = torch.as_tensor(xs, device=dev)
        Y = torch.as_tensor(ys, device=dev)
        gs = torch.autograd.grad(F.cross_entropy(model(X), Y), params)
        return {k: g.cpu().numpy() for (k, _), g in zip(pairs, gs)}

    def autograd_engine():
        gs = torch.autograd.grad(F.cross_entropy(model(Xd), Yd), params)
        return {k: g for (k, _), g in zip(pairs, gs)}

    kw = dict(backend="torch", device=dev, dtype=npd)
    ode_bytes = cfg["ode_bytes"]
    api = {
        "backprop": lambda: dyadsim.backprop(net, xs, ys, **kw),
        "relax wavefront": lambda: dyadsim.relax(net, xs, ys, eta=1.0, schedule="wavefront", **kw).grads,
        "relax parallel": lambda: dyadsim.relax(net, xs, ys, eta=1.0, schedule="parallel", **kw).grads,
    }

    def system():
        return TorchSystem.on_device(net, Xflat, Yd, weights, biases)

    def eng_backprop():
        with torch.no_grad():
            s = system()
            return s.readout_tensors(*backprop_core(s))[0]

    def eng_wavefront():
        with torch.no_grad():
            s = system()
            _, _, ms, sd, _ = wavefront_core(s, 2 * L, "md")
            return s.readout_tensors(ms, sd)[0]

    def eng_parallel():
        with torch.no_grad():
            s = system()
            P, Q = parallel_core(s, 1.0, 2 * L, "md")
            m, d = s.split(P), s.split(Q)
            return s.readout_tensors(m, s.delta_from(m, d))[0]

    engine = {"backprop": eng_backprop, "relax wavefront": eng_wavefront, "relax parallel": eng_parallel}
    ode_info = {}

    def ode():
        r = dyadsim.relax_continuous(net, xs, ys, max_record_bytes=ode_bytes, **kw)
        ode_info.update(steps=r.n_steps, nfev=r.nfev, t_settle=r.t_settle, t_final=r.t_final,
                        nfev_settle=r.info.get("nfev_settle"))
        return r.grads

    def timed(fn):
        sync()
        t0 = time.perf_counter()
        out = fn()
        sync()
        return time.perf_counter() - t0, out

    def host(g):
        return {k: (v.detach().cpu().numpy() if hasattr(v, "detach") else v) for k, v in g.items()}

    groups = {"api": (autograd_api, api), "engine": (autograd_engine, engine)}
    rows = []
    for mode, (reference, methods) in groups.items():
        log(f"  {name} [{mode}]: warm-up")
        outs = {}
        for _ in range(cfg["warmup"]):
            outs["torch autograd"] = reference()
            for m, fn in methods.items():
                outs[m] = fn()
        times = {m: [] for m in ["torch autograd", *methods]}
        for r in range(cfg["repeats"]):
            log(f"  {name} [{mode}]: repeat {r + 1}/{cfg['repeats']}")
            times["torch autograd"].append(timed(reference)[0])
            for m, fn in methods.items():
                times[m].append(timed(fn)[0])
        if mode == "api":  # the continuous relaxation: timed here only (host traffic is negligible)
            if cfg["warmup"] > 1:  # the other methods have warmed up the same kernels
                ode()
            times["relax_continuous"] = []
            ode_ref = []
            for r in range(cfg["ode_repeats"]):
                log(f"  {name} [{mode}]: relax_continuous {r + 1}/{cfg['ode_repeats']}")
                ode_ref.append(timed(reference)[0])
                t, outs["relax_continuous"] = timed(ode)
                times["relax_continuous"].append(t)
        for m, ts in times.items():
            refs = ode_ref if m == "relax_continuous" else times["torch autograd"]
            per = [t / b for t, b in zip(ts, refs)]
            note = {"torch autograd": "reference" + (" (params/batch in, grads out through the host)"
                                                     if mode == "api" else " (all on the device)"),
                    "backprop": "explicit reverse mode, no autograd",
                    "relax wavefront": f"Euler eta=1, {2 * L} steps, wavefront",
                    "relax parallel": f"Euler eta=1, {2 * L} steps, every layer every step",
                    "relax_continuous": "ETD3 exponential solver, steps={steps}, nfev={nfev}, "
                                        "t_settle={t_settle:.2f} tau".format(**ode_info) if ode_info else ""}[m]
            rows.append({
                "model": name, "mode": mode, "method": m,
                "median_s": statistics.median(ts),
                "ratio": 1.0 if m == "torch autograd" else statistics.median(ts) / statistics.median(refs),
                "ratio_min": min(per), "ratio_max": max(per),
                "max_rel_error": _rel(host(outs[m]), ref),
                "note": note,
            })
    info = {"depth": L, "n": net.n, "params": net.n_params, "batch": batch, "spec": spec or "lenet5",
            "ode": ode_info}
    return rows, info


def _monte_carlo(cfg, dev, dtype, torch, dyadsim, log):
    """N sampled chips of 784-100-10 (batch 8) through dyadsim's chip engine
    (``dyadsim.relax_chips``, the steady state of every chip at once), with the numpy engine
    on the host and with the torch engine on the device, in chunks of at most 1000 chips; the reference is N autograd gradient evaluations of
    the nominal network on the device (N times the median of single calls)."""
    method = f"{cfg['mc_chips']} Monte Carlo chips"
    row = {"model": "mc 784-100-10", "mode": "api", "method": method, "median_s": None,
           "ratio": None, "ratio_min": None, "ratio_max": None, "max_rel_error": None}
    if not hasattr(dyadsim, "relax_chips") or not hasattr(dyadsim, "Chip"):
        return dict(row, note="n/a: needs the chip engine")
    F = torch.nn.functional
    tdt = {"float32": torch.float32, "float64": torch.float64}[dtype]
    net = dyadsim.mlp("784-100-10", activation="tanh", loss="xent", seed=0)
    rng = np.random.default_rng(0)
    x = rng.random((8, net.n_in))
    y = np.eye(10)[rng.integers(0, 10, 8)]
    model = dyadsim.to_torch(net).to(device=dev, dtype=tdt)
    params = list(model.parameters())
    X = torch.as_tensor(x, dtype=tdt, device=dev)
    Y = torch.as_tensor(y, dtype=tdt, device=dev)
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)
    npd = np.float32 if dtype == "float32" else np.float64

    def one_autograd():
        return torch.autograd.grad(F.cross_entropy(model(X), Y), params)

    for _ in range(cfg["warmup"]):
        one_autograd()
    ts = []
    for _ in range(max(cfg["repeats"], 5)):
        sync()
        t0 = time.perf_counter()
        one_autograd()
        sync()
        ts.append(time.perf_counter() - t0)
    ref = cfg["mc_chips"] * statistics.median(ts)
    opts = dict(mismatch=0.05, derivative_mismatch=0.05, offset=1e-3)
    nominal = dyadsim.backprop(net, x, y)
    engines = {"numpy": dict(dtype=npd), "torch": dict(dtype=npd, backend="torch", device=dev)}
    for kw in engines.values():  # warm-up
        dyadsim.relax_chips([dyadsim.Chip.sample(net, seed=[0, 0], **opts)], x, y, **kw)
    rows, first = [], {}
    for eng, kw in engines.items():
        total, done, worst = 0.0, 0, 0.0
        while done < cfg["mc_chips"]:
            k = min(1000, cfg["mc_chips"] - done)
            log(f"  mc [{eng}]: chips {done}..{done + k - 1}")
            sync()
            t0 = time.perf_counter()
            chips = [dyadsim.Chip.sample(net, seed=[0, done + r], **opts) for r in range(k)]
            res = dyadsim.relax_chips(chips, x, y, **kw)
            sync()
            total += time.perf_counter() - t0
            worst = max(worst, _rel(res[0].grads, nominal))
            if done == 0:
                first[eng] = res.flat()
            done += k
            del chips, res
        agree = ""
        if eng == "torch":
            diff = float(np.max(np.abs(first["torch"] - first["numpy"])))
            agree = f"; chunk 0 agrees with the numpy engine to {diff:.1e} (max abs)"
        where = "numpy on the host" if eng == "numpy" else f"torch on {dev}, K x B as one tensor"
        rows.append(dict(row, method=f"{method} [{eng}]", median_s=total, ratio=total / ref,
                         ratio_min=total / ref, ratio_max=total / ref, max_rel_error=worst,
                         note=(f"chip engine, {where} (sampling + steady state, one run, chunks of "
                               f"1000); reference: {cfg['mc_chips']} x one autograd call on the "
                               f"device; error: chip 0 vs the nominal network (the mismatch, not a "
                               f"bug){agree}")))
    return rows


def run(device="cuda", quick=False, dtype="float32", threads=1, log=print) -> dict:
    """Run the benchmark; returns a JSON-able dict.  On the CPU torch is pinned to
    ``threads`` intra-op threads (``None``: torch's default)."""
    import torch

    import dyadsim

    if threads is not None and torch.device(device).type == "cpu":
        torch.set_num_threads(int(threads))

    cfg = dict(QUICK if quick else FULL)
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit("bench_gpu: CUDA is not available; use --device cpu")
        free, _ = torch.cuda.mem_get_info(dev)
        cfg["ode_bytes"] = int(free // 4)
        name = torch.cuda.get_device_name(dev)
    else:
        cfg["ode_bytes"] = 256 * 2**20
        name = platform.processor() or platform.machine()
    rows, models = [], {}
    t0 = time.perf_counter()
    for model in ("mlp", "lenet5"):
        spec, batch = cfg[model]
        r, info = _bench_model(model, spec, batch, cfg, dev, dtype, torch, dyadsim, log)
        rows += r
        models[model] = info
    mc = _monte_carlo(cfg, dev, dtype, torch, dyadsim, log)
    rows += mc if isinstance(mc, list) else [mc]
    return {"device": str(dev), "device_name": name, "dtype": dtype, "quick": quick,
            "torch": torch.__version__, "numpy": np.__version__, "python": platform.python_version(),
            "threads": torch.get_num_threads(), "models": models, "rows": rows,
            "wall_s": time.perf_counter() - t0}


def _table(res) -> str:
    lines = [f"bench_gpu: device {res['device']} ({res['device_name']}), {res['dtype']}, "
             f"torch {res['torch']}{', QUICK sizes' if res['quick'] else ''}"]
    for m, info in res["models"].items():
        lines.append(f"  {m}: {info['spec']}, batch {info['batch']}, depth L={info['depth']}, "
                     f"{info['params']} params")
    head = f"{'model':8} {'mode':6} {'method':34} {'median [ms]':>11} {'x ref':>6} {'range':>13} {'max rel err':>11}  note"
    lines += [head, "-" * len(head)]
    for r in res["rows"]:
        if r["median_s"] is None:
            lines.append(f"{r['model']:8} {r['mode']:6} {r['method']:34} {'n/a':>11} {'':>6} {'':>13} {'':>11}  {r['note']}")
            continue
        rng = f"{r['ratio_min']:.2f}-{r['ratio_max']:.2f}"
        lines.append(f"{r['model']:8} {r['mode']:6} {r['method']:34} {1e3 * r['median_s']:11.2f} "
                     f"{r['ratio']:6.2f} {rng:>13} {r['max_rel_error']:11.2e}  {r['note']}")
    return "\n".join(lines)


HOWTO = """\
To run the full benchmark on one GPU (MLP 784-1024x8-10 at batch 4096, LeNet-5 at batch 1024,
float32, 7 repeats; sized to finish within 10 minutes on one GPU):
    python benchmarks/bench_gpu.py --device cuda --json bench_gpu.json
(add --dtype float64 for double precision; --quick for the small sizes)"""


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda", help="torch device (cuda, cuda:1, cpu, ...)")
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    ap.add_argument("--quick", action="store_true", help="small sizes (CPU: under a minute)")
    ap.add_argument("--json", metavar="OUT", help="write the results as JSON")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch CPU threads when --device cpu (default 1: stable ratios on a shared machine)")
    args = ap.parse_args(argv)
    res = run(args.device, args.quick, args.dtype, args.threads,
              log=lambda s: print(s, file=sys.stderr, flush=True))
    print(_table(res))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(res, fh, indent=2)
        print(f"results written to {args.json}")
    print(HOWTO)
    return 0


if __name__ == "__main__":
    sys.exit(main())
