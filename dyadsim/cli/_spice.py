"""CLI: ``dyadsim netlist`` and ``dyadsim simulate``."""

from __future__ import annotations

import json
from pathlib import Path

import click

from .._io import check_output_path, read_text
from ._main import build_network, cli, net_options, random_batch

#: The largest input a converted model may take (neurons of one sample).
MAX_INPUT_SIZE = 10_000_000


def _npz_path(path: Path) -> Path:
    """Where ``Network.save(path)`` writes (it appends ``.npz`` to any other suffix)."""
    path = Path(path)
    if path.suffix == ".npz":
        return path
    return path.with_suffix(path.suffix + ".npz") if path.suffix else path.with_suffix(".npz")


def _input_shape(text: str) -> tuple:
    """``"1,8,8"``, ``"1x8x8"`` or ``"64"`` -> a tuple of positive ints."""
    parts = [p.strip() for p in text.replace("x", ",").split(",")]
    if not text.strip() or any(not p for p in parts):
        raise click.BadParameter(f"cannot read {text!r}; give the shape of one sample, e.g. 1,8,8 or 64",
                                 param_hint="--input-shape")
    try:
        shape = tuple(int(p) for p in parts)
    except ValueError:
        raise click.BadParameter(f"cannot read {text!r}; use e.g. 1,8,8", param_hint="--input-shape") from None
    if min(shape) < 1 or len(shape) > 3:
        raise click.BadParameter(f"{text!r}: one to three positive sizes (C,H,W or N), e.g. 1,8,8",
                                 param_hint="--input-shape")
    size = 1
    for d in shape:
        size *= d
    if size > MAX_INPUT_SIZE:
        raise click.BadParameter(f"{text!r} is {size} inputs, more than {MAX_INPUT_SIZE}",
                                 param_hint="--input-shape")
    return shape


@cli.command()
@net_options
@click.option("--out", "out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Netlist file to write (.cir).")
@click.option("--analysis", type=click.Choice(["op", "tran"]), default="op", show_default=True)
@click.option("--gain", default=1.0, show_default=True, type=float, help="Cost current gain.")
@click.option("--tau", default=1e-6, show_default=True, type=float, help="Time constant C/g in seconds.")
@click.option("--save-network", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also save the network (.npz), so that `simulate --net` can read the gradients out.")
def netlist(net_spec, activation, output_activation, loss, seed, batch, out, analysis, gain, tau,
            save_network):
    """Compile a network and a random batch into an ngspice netlist."""
    from ..circuits import compile_netlist

    check_output_path(out, "--out")
    if save_network:
        check_output_path(_npz_path(save_network), "--save-network")
    net = build_network(net_spec, activation, output_activation, loss, seed)
    x, y = random_batch(net, batch, seed)
    nl = compile_netlist(net, x, y, analysis=analysis, gain=gain, tau=tau)
    nl.write(out)
    if save_network:
        net.save(save_network)
    s = nl.stats
    click.echo(f"wrote {out}: {s['elements']} elements, {s['nodes']} nodes, {batch} sample(s), "
               f"analysis {analysis}, compiled in {nl.compile_time:.3f} s")


@cli.command()
@click.argument("netlist_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--analysis", type=click.Choice(["op", "tran"]), default=None,
              help="Which analysis to read (default: the one in the netlist).")
@click.option("--backend", type=click.Choice(["auto", "shared", "subprocess"]), default="subprocess",
              show_default=True)
@click.option("--timeout", default=600.0, show_default=True, type=float, help="Seconds before giving up.")
@click.option("--net", "net_file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="The network (.npz) the netlist was compiled from: read out and compare gradients.")
@click.option("--plot", "plot", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="PNG of the relaxation (tran) -- needs --net.")
@click.option("--json", "as_json", is_flag=True, help="Print results as JSON.")
@click.option("--allow-control", is_flag=True,
              help="Run netlists that make ngspice run commands or touch files (.control blocks, "
                   "'*#' lines, shell, includes from outside the netlist's folder, XSPICE models "
                   "that read files), which are refused by default.  ngspice can then do anything "
                   "you can: only for netlists you trust.")
def simulate(netlist_file, analysis, backend, timeout, net_file, plot, as_json, allow_control):
    """Run a netlist in ngspice; with --net, read out gradients and compare with backprop."""
    from ..dynamics import backprop
    from ..network import load
    from ..readout import circuit_states, compare, plot_relaxation, readout, relaxation_trace
    from ..readout import settling_time
    from ..simulator import simulate as run_ngspice

    text = read_text(netlist_file, "netlist file")
    if analysis is None:
        analysis = "tran" if any(l.strip().lower().startswith(".tran") for l in text.splitlines()) else "op"
    if plot is not None:  # misuse is reported before the simulation runs
        if net_file is None:
            raise click.UsageError("--plot needs --net (the network the netlist came from)")
        if analysis != "tran":
            raise click.UsageError("--plot needs a transient (--analysis tran)")
        check_output_path(plot, "--plot")
    net = load(net_file) if net_file is not None else None
    res = run_ngspice(netlist_file, analysis=analysis, backend=backend, timeout=timeout,
                      allow_control=allow_control)
    out = {"netlist": str(netlist_file), "analysis": analysis, "backend": res.backend}
    if analysis == "tran":
        out["points"] = int(len(res.time))
        out["t_stop_s"] = float(res.time[-1])
    else:
        out["nodes"] = len(res.voltages)
    if net is not None:
        grads = readout(net, res)
        final = res.final() if analysis == "tran" else res
        states = circuit_states(net, final)
        cmp = compare(grads, backprop(net, states.x0, states.y), label=f"spice[{analysis}]",
                              reference_label="backprop")
        out["comparison"] = cmp.to_dict()
        if analysis == "tran":
            tr = relaxation_trace(net, res)
            out["t_settle_tau"] = settling_time(tr["t"], tr["grad_error"], 1e-6)
        if plot is not None:
            plot_relaxation(net, res, path=plot)
            out["plot"] = str(plot)
    if as_json:
        click.echo(json.dumps(out, indent=2))
        return
    for k, v in out.items():
        if k != "comparison":
            click.echo(f"{k}: {v}")
    if "comparison" in out:
        click.echo(cmp.table())


@cli.command("import-torch")
@click.argument("model_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--input-shape", required=True, help="Shape of one sample, e.g. 1,8,8 or 64.")
@click.option("--loss", default="mse", show_default=True, help="mse or xent.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Network file to write (.npz); then: dyadsim netlist --net OUT ...")
def import_torch(model_file, input_shape, loss, out):
    """Convert a saved PyTorch nn.Sequential (torch.save(model, FILE)) into a dyadsim network.

    Loading a pickled module runs code from the file: only use files you trust.
    """
    from ..errors import DyadsimError
    from ..network import from_torch

    shape = _input_shape(input_shape)
    check_output_path(_npz_path(out), "--out")
    try:
        import torch
    except ImportError:
        raise DyadsimError("PyTorch is not installed: pip install 'dyadsim[torch]'") from None
    try:
        model = torch.load(model_file, weights_only=False, map_location="cpu")
    except Exception as exc:  # noqa: BLE001 - report any unpickling failure clearly
        raise DyadsimError(f"cannot load a PyTorch model from {model_file}: {exc}") from None
    net = from_torch(model, shape, loss=loss)
    path = net.save(out)
    click.echo(f"wrote {path}: depth L={net.depth}, {net.n} neurons, {net.n_params} parameters")
    click.echo(f"next: dyadsim netlist --net {path} --out model.cir")
