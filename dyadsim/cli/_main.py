"""The click group and the core subcommands (grad, compare)."""

from __future__ import annotations

import json
from pathlib import Path

import click
import numpy as np

from .._io import to_jsonable
from ..network import param_name
from ..readout import METHODS as _REGISTRY

#: the method names of :data:`dyadsim.METHODS` (the registry serves every command)
METHODS = tuple(_REGISTRY)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="dyadsim")
def cli():
    """dyadsim: Dyadic Backpropagation, simulated.

    Turn a feedforward network into a relaxing system (Euler, ODE, ngspice circuit) and
    compare the gradients it relaxes to with exact backprop.
    """


def net_options(f):
    """Options that describe a network and a random batch to differentiate."""
    opts = [
        click.option("--net", "net_spec", required=True,
                     help="Layer sizes like 784-128-10 (784-256x8-10 repeats), or a saved .npz network."),
        click.option("--activation", default="tanh", show_default=True,
                     help="Hidden activation: tanh, sigmoid, relu, softplus, identity."),
        click.option("--output-activation", default=None,
                     help="Output activation (default: identity for xent, else --activation)."),
        click.option("--loss", default="mse", show_default=True, help="mse or xent."),
        click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0),
                     help="Seed of the weights and of the random batch."),
        click.option("--batch", default=8, show_default=True, type=click.IntRange(min=1),
                     help="Batch size of the random inputs."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def check_output_dir(path, option="--out") -> Path:
    """Create the output folder now and make sure it is writable, before any work runs
    (a read-only folder, or a path under a file, fails here with one line, not after an
    hour of training)."""
    import tempfile

    p = Path(path)
    try:
        p.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=p, prefix=".dyadsim-write-test-"):
            pass
    except OSError as exc:
        raise click.BadParameter(f"cannot write to {str(p)!r}: {exc.strerror or exc}",
                                 param_hint=option) from None
    return p


def check_output_file(path, option) -> Path:
    """The folder of an output file must exist (or be creatable) and be writable."""
    p = Path(path)
    if p.is_dir():
        raise click.BadParameter(f"{str(p)!r} is a folder, not a file", param_hint=option)
    check_output_dir(p.parent if str(p.parent) else ".", option)
    return p


def build_network(net_spec, activation="tanh", output_activation=None, loss="mse", seed=0):
    """A network from a size spec or a saved file."""
    from ..network import load, mlp

    p = Path(net_spec)
    if p.suffix == ".npz" or p.exists():
        return load(p)
    return mlp(net_spec, activation=activation, output_activation=output_activation,
                       loss=loss, seed=seed)


def random_batch(net, batch, seed):
    """Inputs uniform in [0, 1); targets one-hot (xent) or uniform in [-0.5, 0.5] (mse)."""
    rng = np.random.default_rng(seed + 1)
    x = rng.random((batch, net.n_in))
    if net.loss.name == "xent":
        y = np.eye(net.n_out)[rng.integers(0, net.n_out, batch)]
    else:
        y = rng.uniform(-0.5, 0.5, (batch, net.n_out))
    return x, y


def gradients_by(method, net, x, y, *, eta=1.0, schedule="auto", ode_method=None,
                 spice_options=None):
    """Gradients of one method (a name of :data:`dyadsim.METHODS`), plus its ``info``."""
    from ..readout import get_method

    if method not in METHODS:
        raise click.BadParameter(f"unknown method {method!r}; valid: {', '.join(METHODS)}")
    options = {"euler": {"eta": eta, "schedule": schedule},
               "ode": {"solver": ode_method},
               "spice": dict(spice_options or {})}.get(method, {})
    r = get_method(method, **options)(net, x, y)
    info = {k: v for k, v in r.info.items() if k not in ("method",)}
    return r.grads, info


def _json_number(v):
    """A float for JSON: NaN and infinities become None (JSON has neither)."""
    v = float(v)
    return v if np.isfinite(v) else None


def _grads_to_json(grads):
    out = {}
    for k, v in grads.items():
        a = np.asarray(v, dtype=float)
        if np.all(np.isfinite(a)):
            out[param_name(k)] = a.tolist()
        else:
            out[param_name(k)] = np.where(np.isfinite(a), a, np.nan).astype(object).tolist()
            out[param_name(k)] = _nan_to_none(out[param_name(k)])
    return out


def _nan_to_none(x):
    if isinstance(x, list):
        return [_nan_to_none(e) for e in x]
    return None if (isinstance(x, float) and not np.isfinite(x)) else x


_jsonable = to_jsonable


@cli.command()
@net_options
@click.option("--method", type=click.Choice(METHODS), default="backprop", show_default=True)
@click.option("--eta", default=1.0, show_default=True, type=float, help="Euler step (euler).")
@click.option("--schedule", type=click.Choice(["auto", "parallel", "wavefront"]), default="auto",
              show_default=True,
              help="Euler schedule (auto: the wavefront at eta=1, else parallel).")
@click.option("--json", "as_json", is_flag=True, help="Print the gradients as JSON.")
def grad(net_spec, activation, output_activation, loss, seed, batch, method, eta, schedule, as_json):
    """Gradients of a network on a random batch, by one method."""
    net = build_network(net_spec, activation, output_activation, loss, seed)
    x, y = random_batch(net, batch, seed)
    grads, info = gradients_by(method, net, x, y, eta=eta, schedule=schedule)
    if as_json:
        click.echo(json.dumps({"method": method, "loss": _jsonable(grads.loss), "info": _jsonable(info),
                               "gradients": _grads_to_json(grads)}, allow_nan=False))
        return
    click.echo(net.summary())
    click.echo(f"method: {method}  loss: {grads.loss}  {info}")
    for k, v in grads.items():
        click.echo(f"  {param_name(k):<28} shape {str(np.shape(v)):<12} norm {np.linalg.norm(v):.6e}")


@cli.command()
@net_options
@click.option("--methods", default="backprop,euler,ode", show_default=True,
              help="Comma-separated methods; the first is the reference.")
@click.option("--eta", default=1.0, show_default=True, type=float, help="Euler step.")
@click.option("--json", "as_json", is_flag=True, help="Print the comparison as JSON.")
def compare(net_spec, activation, output_activation, loss, seed, batch, methods, eta, as_json):
    """Compare the gradients of several methods against the first one."""
    from ..readout import compare as compare_fn

    names = [m.strip() for m in methods.split(",") if m.strip()]
    bad = [m for m in names if m not in METHODS]
    if bad or not names:
        raise click.BadParameter(f"unknown method(s) {bad}; valid: {', '.join(METHODS)}",
                                 param_hint="--methods")
    if len(names) < 2:
        raise click.BadParameter(
            f"give at least two methods (the first is the reference), got {names}",
            param_hint="--methods")
    net = build_network(net_spec, activation, output_activation, loss, seed)
    x, y = random_batch(net, batch, seed)
    results = {m: gradients_by(m, net, x, y, eta=eta) for m in names}
    ref_name = names[0]
    ref = results[ref_name][0]
    out = []
    for m in names[1:]:
        c = compare_fn(results[m][0], ref, label=m, reference_label=ref_name)
        out.append((m, c, results[m][1]))
    if as_json:
        click.echo(json.dumps({
            "network": {"sizes": [net.sizes[v] for v in (net.input,) + net.nodes], "depth": net.depth,
                        "loss": net.loss.name},
            "reference": ref_name,
            "comparisons": [dict(c.to_dict(), info=_jsonable(info)) for m, c, info in out],
        }, indent=2, allow_nan=False))
        return
    click.echo(net.summary())
    for m, c, info in out:
        click.echo("")
        click.echo(c.table())
        if info:
            click.echo("  " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                        for k, v in info.items()))
