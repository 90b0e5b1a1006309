"""Subcommands ``train`` (minibatch training with a chosen gradient source) and
``experiment`` (regenerate one of the article's figures)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ._main import METHODS, check_output_dir, cli

TRAIN_METHODS = METHODS
#: kept in step with dyadsim.experiments.EXPERIMENTS (a test checks it); listed
#: here so that ``dyadsim --help`` does not import matplotlib
EXPERIMENT_NAMES = ("accuracy", "steps", "precision", "analog", "hardware", "dynamic-range")


@cli.command()
@click.option("--net", "net_spec", default="64-64x8-10", show_default=True,
              help="Layer sizes like 64-64x8-10 (64x8 repeats), or a saved .npz network.")
@click.option("--data", default="digits", show_default=True,
              help="Data set: digits, xor or moons.")
@click.option("--method", type=click.Choice(TRAIN_METHODS), default="backprop", show_default=True,
              help="Gradient source.")
@click.option("--eta", default=1.0, show_default=True, type=float,
              help="Euler step in units of tau (method euler).")
@click.option("--schedule", type=click.Choice(["auto", "parallel", "wavefront"]), default="auto",
              show_default=True,
              help="Euler schedule (method euler; auto: the wavefront at eta=1, else parallel).")
@click.option("--steps", "relax_steps", default=None, type=click.IntRange(min=0),
              help="Fixed number of Euler steps per minibatch (method euler; default: 2L at "
                   "eta=1, else relax's own stopping rule).")
@click.option("--optimizer", type=click.Choice(["sgd", "adam"]), default="adam", show_default=True)
@click.option("--lr", default=None, type=float,
              help="Learning rate (default: sgd 0.05, adam 1e-3).")
@click.option("--momentum", default=0.0, show_default=True, type=float, help="SGD momentum.")
@click.option("--epochs", default=10, show_default=True, type=int)
@click.option("--batch-size", default=32, show_default=True, type=int)
@click.option("--seed", default=0, show_default=True, type=int,
              help="Seed of the weights (for a size spec) and of the minibatch order.")
@click.option("--activation", default="tanh", show_default=True, help="Hidden activation.")
@click.option("--loss", default="xent", show_default=True, help="xent or mse.")
@click.option("--dtype", type=click.Choice(["float64", "float32"]), default="float64",
              show_default=True, help="Precision of the gradient computation.")
@click.option("--out", "out_dir", default=None, type=click.Path(file_okay=False),
              help="Folder for history.json, history.csv and checkpoints (best.npz, last.npz, "
                   "epoch_NNN.npz).")
@click.option("--json", "as_json", is_flag=True, help="Print the history as JSON.")
@click.option("--progress/--no-progress", default=True, show_default=True,
              help="Show a progress bar (on stderr).")
def train(net_spec, data, method, eta, schedule, relax_steps, optimizer, lr, momentum, epochs, batch_size,
          seed, activation, loss, dtype, out_dir, as_json, progress):
    """Train a network where only the gradient source changes (backprop, DBP Euler, ODE, spice).

    \b
    Example:
      dyadsim train --net 64-64x8-10 --data digits --method euler --eta 0.5 \\
                    --optimizer adam --lr 1e-3 --epochs 20 --batch-size 32 --seed 0
    """
    import numpy as np

    from ..training import train as train_fn
    from ._main import build_network

    net = build_network(net_spec, activation, None, loss, seed)
    relax_options = {}
    if method == "euler":
        relax_options["schedule"] = schedule
    elif schedule != "auto":
        raise click.BadParameter("--schedule only applies to --method euler", param_hint="--schedule")
    if relax_steps is not None:
        if method != "euler":
            raise click.BadParameter("--steps only applies to --method euler", param_hint="--steps")
        relax_options["steps"] = relax_steps
    opt_options = {"momentum": momentum} if optimizer == "sgd" and momentum else None
    ckpt = None
    if out_dir is not None:
        ckpt = check_output_dir(out_dir)
    hist = train_fn(net, data, method=method, eta=eta, optimizer=optimizer, lr=lr,
                    epochs=epochs, batch_size=batch_size, seed=seed,
                    dtype=np.float64 if dtype == "float64" else np.float32,
                    checkpoint_dir=ckpt, progress=progress and not as_json,
                    relax_options=relax_options or None, optimizer_options=opt_options)
    if ckpt is not None:
        hist.to_json(ckpt / "history.json")
        hist.to_csv(ckpt / "history.csv")
    if as_json:
        click.echo(hist.to_json())
        return
    click.echo(net.summary())
    click.echo(hist.summary())
    if hist.best_epoch is not None:
        click.echo(f"best test accuracy {100 * hist.best_test_accuracy:.2f}% at epoch "
                   f"{hist.best_epoch}; final {100 * hist.final_test_accuracy:.2f}%")
    if ckpt is not None:
        click.echo(f"wrote {ckpt / 'history.json'}, {ckpt / 'history.csv'} and checkpoints to {ckpt}")


@cli.command()
@click.argument("name", type=click.Choice(EXPERIMENT_NAMES))
@click.option("--out", "out_dir", default="figures", show_default=True,
              type=click.Path(file_okay=False), help="Folder for NAME.png, NAME.csv, NAME.json.")
@click.option("--quick", is_flag=True, help="Tiny settings (seconds), e.g. to smoke-test.")
@click.option("--seeds", default=None, type=int,
              help="Number of seeds (accuracy: runs per method; default 3, 1 with --quick).")
@click.option("--jobs", default=None, type=int,
              help="Worker processes for the accuracy runs (default: CPU count; 1 with --quick).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option("--progress/--no-progress", default=True, show_default=True)
def experiment(name, out_dir, quick, seeds, jobs, as_json, progress):
    """Regenerate one of the article's figures: accuracy, steps, precision, analog, hardware
    or dynamic-range.

    Writes NAME.png plus the numbers as NAME.csv and NAME.json into --out (dynamic-range:
    dynamic_range.png, .csv, .json).

    \b
    Example:
      dyadsim experiment accuracy --out docs/figures
      dyadsim experiment steps --out /tmp/figs --quick
    """
    from ..experiments import run_experiment

    check_output_dir(out_dir)
    options = {}
    if jobs is not None:
        if name != "accuracy":
            raise click.BadParameter("--jobs only applies to the accuracy experiment",
                                     param_hint="--jobs")
        options["jobs"] = jobs
    summary = run_experiment(name, out_dir, quick=quick, seeds=seeds,
                             progress=progress and not as_json, **options)
    if as_json:
        click.echo(json.dumps(summary, indent=2, default=str))
        return
    out = Path(out_dir)
    stem = name.replace("-", "_")
    click.echo(f"{name}: wrote {out / (stem + '.png')}, {out / (stem + '.csv')}, "
               f"{out / (stem + '.json')}  ({summary.get('wall_s', 0):.1f} s)")
    for line in _headline(name, summary):
        click.echo("  " + line)


def _headline(name, s):
    """A few lines of the most important numbers."""
    try:
        if name == "accuracy":
            out = []
            for lab, r in s["runs"].items():
                f = r["final_test_accuracy_pct"]
                out.append(f"{lab:<24} final test acc {f['mean']:.2f}% (min {f['min']:.2f}, "
                           f"max {f['max']:.2f}); diff vs backprop "
                           f"{r['mean_final_diff_vs_backprop_pp']:+.2f} pp")
            return out
        if name == "steps":
            out = [f"2L = {s['two_L']}; steps at eta=1: {s.get('steps_at_eta_1')}"]
            if "fewest_steps" in s:
                f = s["fewest_steps"]
                out.append(f"fewest steps to {f['tol']:g}: {f['steps']} at eta={f['eta']:g}")
            return out
        if name == "precision":
            return [f"{lab:<22} log10 angle (weights) {v['weights_log10_angle_range'][0]:.2f} .. "
                    f"{v['weights_log10_angle_range'][1]:.2f}"
                    for lab, v in s["configs"].items() if v["weights_log10_angle_range"]]
        if name == "dynamic-range":
            out = []
            for lab, per in s["limits_at_1e-7"].items():
                parts = [f"{act}: {v['deepest_within_1e-7']}" for act, v in per.items()]
                out.append(f"{lab:<24} deepest L within 1e-7: " + ", ".join(parts))
            return out
        if name == "hardware":
            out = [f"backprop {100 * s['backprop_test_accuracy_mean']:.2f}%"]
            for axis, d in s["axes"].items():
                worst = d["points"][-1]
                acc = worst["test_accuracy_mean"]
                out.append(f"{axis:<30} at {worst['value']}: "
                           f"{'diverged' if acc is None else f'{100 * acc:.2f}%'}")
            return out
        if name == "analog":
            return [f"backprop {s['runs']['backprop']['mean']:.2f}%  spice "
                    f"{s['runs']['spice']['mean']:.2f}%  diff {s['final_diff_pp']:+.2f} pp"]
    except (KeyError, TypeError, IndexError):
        pass
    return []
