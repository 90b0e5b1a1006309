"""The click group and the core subcommands (grad, compare)."""

from __future__ import annotations

import json
from pathlib import Path

import click
import numpy as np

METHODS = ("backprop", "euler", "ode", "spice")


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
        click.option("--seed", default=0, show_default=True, type=int,
                     help="Seed of the weights and of the random batch."),
        click.option("--batch", default=8, show_default=True, type=int, help="Batch size of the random inputs."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def build_network(net_spec, activation="tanh", output_activation=None, loss="mse", seed=0):
    """A network from a size spec or a saved file."""
    import dyadsim

    p = Path(net_spec)
    if p.suffix == ".npz" or p.exists():
        return dyadsim.load(p)
    return dyadsim.mlp(net_spec, activation=activation, output_activation=output_activation,
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


def gradients_by(method, net, x, y, *, eta=1.0, schedule="parallel", ode_method="DOP853",
                 spice_options=None):
    """Gradients of one method, plus a dict of facts about the run."""
    import dyadsim

    if method == "backprop":
        return dyadsim.backprop(net, x, y), {}
    if method == "euler":
        r = dyadsim.relax(net, x, y, eta=eta, schedule=schedule)
        return r.grads, {"steps": r.steps, "eta": eta, "schedule": schedule}
    if method == "ode":
        r = dyadsim.relax_continuous(net, x, y, method=ode_method)
        return r.grads, {"t_settle_tau": r.t_settle, "t_final_tau": r.t_final, "nfev": r.nfev}
    if method == "spice":
        r = dyadsim.spice_gradients(net, x, y, **(spice_options or {}))
        return r.grads, {k: v for k, v in r.info.items()}
    raise click.BadParameter(f"unknown method {method!r}; valid: {', '.join(METHODS)}")


def _grads_to_json(grads):
    from ..readout._compare import _key_name

    return {_key_name(k): np.asarray(v).tolist() for k, v in grads.items()}


@cli.command()
@net_options
@click.option("--method", type=click.Choice(METHODS), default="backprop", show_default=True)
@click.option("--eta", default=1.0, show_default=True, type=float, help="Euler step (euler).")
@click.option("--schedule", type=click.Choice(["parallel", "wavefront"]), default="parallel",
              show_default=True, help="Euler schedule.")
@click.option("--json", "as_json", is_flag=True, help="Print the gradients as JSON.")
def grad(net_spec, activation, output_activation, loss, seed, batch, method, eta, schedule, as_json):
    """Gradients of a network on a random batch, by one method."""
    net = build_network(net_spec, activation, output_activation, loss, seed)
    x, y = random_batch(net, batch, seed)
    grads, info = gradients_by(method, net, x, y, eta=eta, schedule=schedule)
    if as_json:
        click.echo(json.dumps({"method": method, "loss": grads.loss, "info": info,
                               "gradients": _grads_to_json(grads)}))
        return
    click.echo(net.summary())
    click.echo(f"method: {method}  loss: {grads.loss}  {info}")
    for k, v in grads.items():
        from ..readout._compare import _key_name

        click.echo(f"  {_key_name(k):<28} shape {str(np.shape(v)):<12} norm {np.linalg.norm(v):.6e}")


@cli.command()
@net_options
@click.option("--methods", default="backprop,euler,ode", show_default=True,
              help="Comma-separated methods; the first is the reference.")
@click.option("--eta", default=1.0, show_default=True, type=float, help="Euler step.")
@click.option("--json", "as_json", is_flag=True, help="Print the comparison as JSON.")
def compare(net_spec, activation, output_activation, loss, seed, batch, methods, eta, as_json):
    """Compare the gradients of several methods against the first one."""
    import dyadsim

    names = [m.strip() for m in methods.split(",") if m.strip()]
    bad = [m for m in names if m not in METHODS]
    if bad or not names:
        raise click.BadParameter(f"unknown method(s) {bad}; valid: {', '.join(METHODS)}",
                                 param_hint="--methods")
    net = build_network(net_spec, activation, output_activation, loss, seed)
    x, y = random_batch(net, batch, seed)
    results = {m: gradients_by(m, net, x, y, eta=eta) for m in names}
    ref_name = names[0]
    ref = results[ref_name][0]
    out = []
    for m in names[1:]:
        c = dyadsim.compare(results[m][0], ref, label=m, reference_label=ref_name)
        out.append((m, c, results[m][1]))
    if as_json:
        click.echo(json.dumps({
            "network": {"sizes": [net.sizes[v] for v in (net.input,) + net.nodes], "depth": net.depth,
                        "loss": net.loss.name},
            "reference": ref_name,
            "comparisons": [dict(c.to_dict(), info=info) for m, c, info in out],
        }, indent=2))
        return
    click.echo(net.summary())
    for m, c, info in out:
        click.echo("")
        click.echo(c.table())
        if info:
            click.echo("  " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                        for k, v in info.items()))
