"""Build the notebooks in this folder from the cell sources below (keeps them diff-able).

    python notebooks/make_notebooks.py

The test suite executes every notebook (tests/test_notebooks.py), so none can rot.
"""

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent

QUICKSTART = [
    ("md", """# dyadsim quickstart: network -> netlist -> ngspice -> gradients vs backprop

Dyadic Backpropagation (DBP) computes backprop by letting a doubled-state system relax.
This notebook builds a small network, compiles it into an ngspice circuit, simulates the
circuit's operating point and transient, and compares the gradients read out of the node
voltages with exact backprop."""),
    ("code", """import numpy as np
import dyadsim

net = dyadsim.mlp("6-5-5-3", activation="tanh", loss="xent", seed=0)
rng = np.random.default_rng(0)
x = rng.random((4, net.n_in))
y = np.eye(net.n_out)[rng.integers(0, net.n_out, 4)]
print(net.summary())"""),
    ("md", "## The digital reference and the discrete relaxation (exact at step 2L)"),
    ("code", """ref = dyadsim.backprop(net, x, y)
L = net.depth
for k in (2 * L - 1, 2 * L):
    r = dyadsim.relax(net, x, y, eta=1.0, steps=k)
    print(f"step {k}: max relative error {dyadsim.compare(r.grads, ref).max_rel_error:.2e}")"""),
    ("md", "## The circuit: compile, look at the netlist, simulate the operating point"),
    ("code", """nl = dyadsim.compile_netlist(net, x, y, analysis="op")
print(nl.stats)
print("\\n".join(nl.text.splitlines()[:30]))"""),
    ("code", """op = dyadsim.simulate(nl)
grads = dyadsim.readout(net, op)
cmp = dyadsim.compare(grads, ref)
print(cmp)
assert cmp.max_rel_error < 1e-6"""),
    ("md", "## The physical relaxation: `.tran` from x = z = 0"),
    ("code", """sg = dyadsim.spice_gradients(net, x[:1], y[:1], analysis="tran")
print(f"settled (readout within 1e-6) after {sg.info['t_settle_tau']:.1f} tau")
fig = dyadsim.plot_relaxation(net, sg.result)"""),
]

EXPERIMENTS = [
    ("md", """# The article's claims, reproduced

Each experiment is one command (`dyadsim experiment NAME --out DIR`); here they run with
small settings (`quick=True`).  Full-size results and the commands that made them are in
`docs/experiments.md`."""),
    ("code", """import tempfile, pathlib
from dyadsim.experiments import EXPERIMENTS, run_experiment
out = pathlib.Path(tempfile.mkdtemp())
print(sorted(EXPERIMENTS))"""),
    ("md", "## Relaxation steps against the Euler step eta (collapse to 2L at eta = 1)"),
    ("code", """res = run_experiment("steps", out / "steps", quick=True, progress=False)
sorted(p.name for p in (out / "steps").iterdir())"""),
    ("md", "## Float32 vs float64 precision, layer by layer"),
    ("code", """res = run_experiment("precision", out / "precision", quick=True, progress=False)
sorted(p.name for p in (out / "precision").iterdir())"""),
    ("md", "## Learning with DBP is learning with backprop"),
    ("code", """res = run_experiment("accuracy", out / "accuracy", quick=True, progress=False)
sorted(p.name for p in (out / "accuracy").iterdir())"""),
]


def build(cells):
    nb = new_notebook()
    nb.cells = [new_markdown_cell(src) if kind == "md" else new_code_cell(src) for kind, src in cells]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nb


def main():
    for name, cells in (("quickstart.ipynb", QUICKSTART), ("experiments.ipynb", EXPERIMENTS)):
        nbformat.write(build(cells), HERE / name)
        print(f"wrote notebooks/{name}")


if __name__ == "__main__":
    main()
