"""The main demo: network -> netlist -> ngspice -> gradients, next to backprop, Euler, ODE.

    python -m dyadsim.demo [--out out/demo]

Writes the netlist, the network, a comparison (JSON) and a plot of the circuit's
relaxation into the output folder, and prints the comparison tables.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from ._io import write_json
from .network import mlp
from .readout import compare, get_method, plot_relaxation


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="dyadsim demo: compile, simulate, compare")
    ap.add_argument("--out", default="out/demo", help="output folder (default out/demo)")
    ap.add_argument("--net", default="8-6-6-4", help="layer sizes (default 8-6-6-4)")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    net = mlp(args.net, activation="tanh", loss="xent", seed=0)
    rng = np.random.default_rng(1)
    x = rng.random((4, net.n_in))
    y = np.eye(net.n_out)[rng.integers(0, net.n_out, 4)]
    print(net.summary(), "\n")

    # every method comes from the one registry (dyadsim.METHODS), called the same way
    ref = get_method("backprop")(net, x, y).grads
    euler = get_method("euler", eta=1.0)(net, x, y)
    ode = get_method("ode")(net, x, y)
    op = get_method("spice", analysis="op")(net, x, y)
    tran = get_method("spice", analysis="tran")(net, x, y)
    op.netlist.write(out / "demo_op.cir")
    tran.netlist.write(out / "demo_tran.cir")
    net.save(out / "demo_net.npz")
    plot_relaxation(net, tran.result, path=out / "relaxation.png")

    rows = [
        (f"Euler eta=1 ({euler.steps} steps = 2L)", compare(euler.grads, ref)),
        (f"ODE ({ode.method}, settles in {ode.t_settle:.1f} tau)", compare(ode.grads, ref)),
        (f"ngspice .op ({op.info['elements']} elements)", compare(op.grads, ref)),
        (f"ngspice .tran (settles in {tran.info['t_settle_tau']:.1f} tau)", compare(tran.grads, ref)),
    ]
    print(f"{'method':<44} {'max rel. error':>15} {'log10 angle':>12}")
    for name, c in rows:
        print(f"{name:<44} {c.max_rel_error:>15.3e} {c.summary.log10_angle:>12.2f}")
    print()
    print(rows[2][1].table())
    write_json(out / "comparison.json", {n: c.to_dict() for n, c in rows})
    print(f"\nwrote {out}/: demo_op.cir, demo_tran.cir, demo_net.npz, comparison.json, relaxation.png")
    worst = max(c.max_rel_error for _, c in rows)
    if worst > 1e-6:
        print(f"FAILED: a method is off by {worst:.3g} relative", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
