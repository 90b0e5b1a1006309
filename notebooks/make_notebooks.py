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

TORCH_MODELS = [
    ("md", """# A PyTorch residual CNN: import, DBP against autograd, training, and its circuit

`dyadsim.from_torch` traces any `torch.fx`-traceable model: here a small residual CNN with
BatchNorm and MaxPool (written below, no torchvision).  BatchNorm runs in eval mode (its
running statistics fixed, its weight and bias trainable); max pooling becomes a general
node (docs/theory.md, section 8).  This notebook checks DBP (relax at eta = 1) against torch
autograd, trains the model on the 8x8 digits with DBP, and compiles a smaller one into an
ngspice netlist whose operating point gives backprop's gradients."""),
    ("code", """import numpy as np
import torch
import torch.nn as nn
import dyadsim
from dyadsim.datasets import digits

torch.manual_seed(0)


class ResCNN(nn.Module):
    def __init__(self, c=4, n_out=10):
        super().__init__()
        self.conv1 = nn.Conv2d(1, c, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(c)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(c * 4 * 4, n_out)

    def forward(self, x):
        h = torch.relu(self.bn1(self.conv1(x)))
        h = torch.relu(h + self.bn2(self.conv2(h)))  # the residual sum
        return self.fc(torch.flatten(self.pool(h), 1))


data = digits(seed=0)


def with_statistics(model):
    \"\"\"Fill the BatchNorm running statistics from one pass over training images, then eval.\"\"\"
    model.double().train()
    with torch.no_grad():
        model(torch.tensor(data.x_train[:512]).reshape(-1, 1, 8, 8))
    return model.eval()


model = with_statistics(ResCNN())
net = dyadsim.from_torch(model, (1, 8, 8), loss="xent")
print(net.summary())"""),
    ("md", """## DBP against torch autograd

`relax(eta=1)` is exact at step 2L (L = the longest path), and not before;
`dyadsim.torch_gradients` gives its gradients under the model's parameter names and shapes."""),
    ("code", """x, y = data.x_train[:16], data.y_train[:16]
L = net.depth
ref = dyadsim.backprop(net, x, y)
for k in (2 * L - 1, 2 * L):
    r = dyadsim.relax(net, x, y, eta=1.0, steps=k)
    print(f"step {k}: max relative error vs backprop {dyadsim.compare(r.grads, ref).max_rel_error:.1e}")

tg = dyadsim.torch_gradients(net, r)
model.zero_grad()
out = model(torch.tensor(x).reshape(-1, 1, 8, 8))
nn.functional.cross_entropy(out, torch.tensor(data.labels_train[:16])).backward()
worst = 0.0
for name, p in model.named_parameters():
    g = p.grad.numpy()
    err = np.max(np.abs(tg[name] - g)) / np.max(np.abs(g))
    worst = max(worst, err)
    print(f"{name:13s} {str(tuple(p.shape)):14s} relative error {err:.1e}")
assert worst < 1e-12"""),
    ("md", """## Training on digits with DBP

Every gradient comes from the relaxation (Euler, eta = 1, 2L steps).  The same run with
backprop follows the same trajectory, and `to_torch` writes the trained parameters back
into the torch model."""),
    ("code", """start = {k: v.copy() for k, v in net.params.items()}
hist = dyadsim.train(net, data, method="euler", eta=1.0, optimizer="adam", lr=0.01, epochs=3,
                     batch_size=32, progress=False)
print("DBP      test accuracy per epoch:", [f"{a:.3f}" for a in hist.test_accuracy])

twin = dyadsim.from_torch(model, (1, 8, 8), loss="xent")
twin.params.update({k: v.copy() for k, v in start.items()})
hbp = dyadsim.train(twin, data, method="backprop", optimizer="adam", lr=0.01, epochs=3,
                    batch_size=32, progress=False)
print("backprop test accuracy per epoch:", [f"{a:.3f}" for a in hbp.test_accuracy])
print("largest parameter difference after training:",
      max(float(np.max(np.abs(net.params[k] - twin.params[k]))) for k in net.params))

dyadsim.to_torch(net, model)
with torch.no_grad():
    pred = model(torch.tensor(data.x_test).reshape(-1, 1, 8, 8)).argmax(1).numpy()
acc = float(np.mean(pred == data.labels_test))
print(f"the torch model with the DBP-trained parameters: test accuracy {acc:.3f}")
assert abs(acc - hist.test_accuracy[-1]) < 1e-12 and acc > 0.8"""),
    ("md", """## A smaller one as a circuit

Every part of this model has a circuit (`compile_netlist`): the residual sum is a summing
node of G elements with a fixed 0/1 matrix, each BatchNorm is folded into the edge
conductances (a diagonal of G elements, its constant in the bias current) and each max
pooling neuron is a behavioural `max` over its window, its error routed back to the
window's winner.  The `.op` of one sample gives backprop's gradients."""),
    ("code", """small = with_statistics(ResCNN(c=2))
snet = dyadsim.from_torch(small, (1, 8, 8), loss="xent")
xs, ys = data.x_train[:1], data.y_train[:1]
nl = dyadsim.compile_netlist(snet, xs, ys)
print(nl.stats)
lines = nl.text.splitlines()
for prefix in ("Gu_bn1_0_conv1_0 ", "Bu_pool_0 ", "Br_add_0_w0 "):
    print(next(ln for ln in lines if ln.startswith(prefix)))"""),
    ("code", """sg = dyadsim.spice_gradients(snet, xs, ys)
cmp = dyadsim.compare(sg.grads, dyadsim.backprop(snet, xs, ys))
print(cmp)
assert cmp.max_rel_error < 1e-9"""),
]


def build(cells, stem="nb"):
    nb = new_notebook()
    nb.cells = [new_markdown_cell(src) if kind == "md" else new_code_cell(src) for kind, src in cells]
    for i, cell in enumerate(nb.cells):  # fixed cell ids: a rebuild changes no line it need not
        cell["id"] = f"{stem}-{i}"
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nb


def main():
    for name, cells in (("quickstart.ipynb", QUICKSTART), ("experiments.ipynb", EXPERIMENTS),
                        ("torch_models.ipynb", TORCH_MODELS)):
        nbformat.write(build(cells, Path(name).stem.replace("_", "-")), HERE / name)
        print(f"wrote notebooks/{name}")


if __name__ == "__main__":
    main()
