"""Regenerate the example netlists in this folder (golden files).

    python netlists/regenerate.py          # rewrite them
    python netlists/regenerate.py --check  # exit 1 if any differs (what the test does)

Each example is fully determined by the seeds below, so the text is reproducible.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import networkx as nx
import numpy as np

import dyadsim
import dyadsim.circuits

HERE = Path(__file__).resolve().parent


def _batch(net, n, seed):
    rng = np.random.default_rng(seed)
    x = np.round(rng.random((n, net.n_in)), 3)
    if net.loss.name == "xent":
        y = np.eye(net.n_out)[rng.integers(0, net.n_out, n)]
    else:
        y = np.round(rng.uniform(-0.5, 0.5, (n, net.n_out)), 3)
    return x, y


def _skip_dag():
    rng = np.random.default_rng(7)
    G = nx.DiGraph()
    G.add_node("pixels", size=3)
    G.add_node("hidden", size=3, activation="tanh", bias=np.round(rng.normal(0, 0.2, 3), 3))
    G.add_node("logits", size=2, activation="identity", bias=np.zeros(2))
    G.add_edge("pixels", "hidden", weight=np.round(rng.normal(0, 0.8, (3, 3)), 3))
    G.add_edge("hidden", "logits", weight=np.round(rng.normal(0, 0.8, (2, 3)), 3))
    G.add_edge("pixels", "logits", weight=np.round(rng.normal(0, 0.8, (2, 3)), 3))  # skip
    return dyadsim.Network.from_graph(G, loss="xent")


def examples():
    """name -> (network, x, y, compile options); ``dialect="device"`` in the options picks
    the device-level compiler (:func:`dyadsim.circuits.compile_device_netlist`)."""
    small = dyadsim.mlp("3-4-2", activation="tanh", loss="mse", seed=1)
    deep = dyadsim.mlp("4-4-4-4-3", activation="sigmoid", loss="xent", seed=2)
    dag = _skip_dag()
    lin = dyadsim.mlp("3-4-3-2", activation="tanh", loss="mse", seed=3,
                      output_activation="identity")
    return {
        "mlp_3-4-2_op.cir": (small, *_batch(small, 1, 11), dict(analysis="op")),
        "mlp_3-4-2_tran.cir": (small, *_batch(small, 1, 11), dict(analysis="tran")),
        "mlp_4-4-4-4-3_xent_op.cir": (deep, *_batch(deep, 2, 12), dict(analysis="op")),
        "dag_skip_xent_op.cir": (dag, *_batch(dag, 1, 13), dict(analysis="op")),
        "device_mlp_3-4-2_op.cir": (small, *_batch(small, 1, 11),
                                    dict(analysis="op", dialect="device")),
        "device_mlp_3-4-2_tran.cir": (small, *_batch(small, 1, 11),
                                      dict(analysis="tran", dialect="device", t_step=0.1,
                                           max_step=0.2)),
        "device_mlp_3-4-3-2_pairs_op.cir": (lin, *_batch(lin, 2, 14),
                                            dict(analysis="op", dialect="device", g_offset=0.5)),
    }


def render(name, net, x, y, opts) -> str:
    opts = dict(opts)
    if opts.pop("dialect", "behavioral") == "device":
        return dyadsim.circuits.compile_device_netlist(net, x, y, **opts).text
    return dyadsim.compile_netlist(net, x, y, **opts).text


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="compare instead of writing")
    args = ap.parse_args(argv)
    bad = []
    for name, (net, x, y, opts) in examples().items():
        text = render(name, net, x, y, opts)
        path = HERE / name
        if args.check:
            if not path.exists() or path.read_text() != text:
                bad.append(name)
        else:
            path.write_text(text)
            print(f"wrote {path.relative_to(HERE.parent)}")
    if bad:
        print("out of date (run python netlists/regenerate.py): " + ", ".join(bad))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
