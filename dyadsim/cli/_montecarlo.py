"""CLI: ``dyadsim montecarlo`` -- gradient precision under device non-idealities, on Dask."""

from __future__ import annotations

import json
import sys

import click

from .._io import atomic_write, to_jsonable
from ._main import build_network, check_output_file, cli, net_options, random_batch


_json_safe = to_jsonable


@cli.command()
@net_options
@click.option("--mismatch", default=0.0, show_default=True, type=float,
              help="Lognormal sigma of every conductance/transconductance (0: none).")
@click.option("--bits", default=None, type=int, help="Quantize weights to 2**bits levels.")
@click.option("--wire", "wire_ohms", default=0.0, show_default=True, type=float,
              help="Series wire resistance in every weight path (ohms).")
@click.option("--amp-gain", default=None, type=float, help="Finite op-amp open-loop gain (device dialect).")
@click.option("--amp-offset", default=0.0, show_default=True, type=float,
              help="Std of random op-amp input offsets in volts (device dialect).")
@click.option("--noise-temperature", default=0.0, show_default=True, type=float,
              help="Johnson noise of every resistor at this temperature in K (needs --analysis tran).")
@click.option("--runs", default=200, show_default=True, type=int, help="Monte Carlo runs.")
@click.option("--dialect", type=click.Choice(["behavioral", "device"]), default="behavioral",
              show_default=True, help="Behavioural netlist or device-level (crossbar, op-amps, BJTs).")
@click.option("--analysis", type=click.Choice(["op", "tran"]), default="op", show_default=True)
@click.option("--scheduler", default=None,
              help="Dask scheduler address (tcp://host:port), or local (a LocalCluster, the "
                   "default), processes, threads or synchronous.")
@click.option("--workers", default=None, type=int, help="Local cluster workers (default: one per core).")
@click.option("--timeout", default=120.0, show_default=True, type=float, help="Seconds per ngspice run.")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Progress bar on stderr.")
@click.option("--csv", "csv_path", default=None, type=click.Path(dir_okay=False),
              help="Also write the per-run table as CSV.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option("--engine", type=click.Choice(["spice", "dynamics"]), default="spice",
              show_default=True,
              help="spice: ngspice runs (circuit non-idealities, or sampled chips with --chip); "
                   "dynamics: sampled chips (dyadsim.Chip) on the chip dynamics engine.")
@click.option("--chip", "chip_mode", is_flag=True,
              help="Sample chips (dyadsim.Chip.sample) also on --engine spice: run r is the "
                   "same chip on both engines.  --mismatch and --bits are then chip options.")
@click.option("--crossbar", type=click.Choice(["separate", "shared"]), default="separate",
              show_default=True, help="Chip: forward and backward weights on separate or one shared crossbar.")
@click.option("--activation-mismatch", default=0.0, show_default=True, type=float,
              help="Chip: lognormal sigma of the activation units' gains.")
@click.option("--derivative-mismatch", default=0.0, show_default=True, type=float,
              help="Chip: lognormal sigma of the derivative (sigma') units' gains.")
@click.option("--offset", default=0.0, show_default=True, type=float,
              help="Chip: std of the x and z node offsets (volts).")
@click.option("--tau-spread", default=0.0, show_default=True, type=float,
              help="Chip: lognormal sigma of the per-neuron time constants.")
@click.option("--w-max", default=None, type=float, help="Chip: largest representable weight (clips).")
@click.option("--g-range", default=None, type=float, help="Chip: on/off conductance ratio.")
@click.option("--noise", default=0.0, show_default=True, type=float,
              help="Chip: RMS thermal noise of every state node (volts; dynamics engine).")
@click.option("--adc-bits", default=None, type=int, help="Chip: readout converter bits.")
@click.option("--gain", default=1.0, show_default=True, type=float, help="Chip: cost-current gain.")
@click.option("--reference", type=click.Choice(["network", "chip"]), default="network",
              show_default=True,
              help="Chips: compare with backprop of the nominal network or of the chip's own network.")
def montecarlo(net_spec, activation, output_activation, loss, seed, batch, mismatch, bits, wire_ohms,
               amp_gain, amp_offset, noise_temperature, runs, dialect, analysis, scheduler, workers,
               timeout, progress, csv_path, as_json, engine, chip_mode, crossbar,
               activation_mismatch, derivative_mismatch, offset, tau_spread, w_max, g_range,
               noise, adc_bits, gain, reference):
    """Monte Carlo of the circuit's gradient under mismatch, quantization, noise ...

    Every run perturbs the compiled circuit, runs ngspice in its own process on a Dask
    worker and compares the gradient read out with exact backprop.  A failed run is
    counted, never fatal.  With ``--engine dynamics`` (or ``--chip``) every run is a
    sampled chip (``dyadsim.Chip``), relaxed by the chip dynamics engine (or ngspice).
    """
    from ..errors import DyadsimError
    from ..montecarlo import (
        AmplifierNonideal, Mismatch, Quantization, ThermalNoise, WireResistance, monte_carlo,
    )

    if csv_path:
        check_output_file(csv_path, "--csv")  # before the runs, not after them
    net = build_network(net_spec, activation, output_activation, loss, seed)
    x, y = random_batch(net, batch, seed)
    chip_mode = chip_mode or engine == "dynamics"
    if chip_mode:
        circuit_only = [name for name, on in (("--wire", wire_ohms != 0), ("--amp-gain", amp_gain is not None),
                                              ("--amp-offset", amp_offset != 0),
                                              ("--noise-temperature", noise_temperature != 0),
                                              ("--dialect device", dialect != "behavioral"),
                                              ("--analysis tran", analysis != "op")) if on]
        if circuit_only:
            raise DyadsimError(f"{', '.join(circuit_only)}: circuit-only options, not for sampled "
                               "chips (drop --chip / --engine dynamics)")
        chip = {"crossbar": crossbar, "mismatch": mismatch, "bits": bits,
                "activation_mismatch": activation_mismatch,
                "derivative_mismatch": derivative_mismatch, "offset": offset,
                "tau_spread": tau_spread, "w_max": w_max, "g_range": g_range, "noise": noise,
                "adc_bits": adc_bits, "gain": gain}
        res = monte_carlo(net, x, y, chip=chip, engine=engine, runs=runs, scheduler=scheduler,
                          workers=workers, seed=seed, progress=progress, timeout=timeout,
                          reference=reference)
    else:
        chip_only = [name for name, on in (("--crossbar", crossbar != "separate"),
                                           ("--activation-mismatch", activation_mismatch != 0),
                                           ("--derivative-mismatch", derivative_mismatch != 0),
                                           ("--offset", offset != 0), ("--tau-spread", tau_spread != 0),
                                           ("--w-max", w_max is not None), ("--g-range", g_range is not None),
                                           ("--noise", noise != 0), ("--adc-bits", adc_bits is not None),
                                           ("--gain", gain != 1.0), ("--reference", reference != "network"))
                     if on]
        if chip_only:
            raise DyadsimError(f"{', '.join(chip_only)}: options of sampled chips; add --chip or "
                               "--engine dynamics")
        nonidealities = [Mismatch(mismatch), Quantization(bits), WireResistance(wire_ohms),
                         AmplifierNonideal(amp_gain, amp_offset), ThermalNoise(noise_temperature)]
        nonidealities = [ni for ni in nonidealities if not ni.is_zero]
        res = monte_carlo(net, x, y, nonidealities=nonidealities, runs=runs, dialect=dialect,
                          scheduler=scheduler, workers=workers, seed=seed, progress=progress,
                          timeout=timeout, analysis=analysis)
    if csv_path:
        with atomic_write(csv_path, "w", newline="") as fh:
            res.table.to_csv(fh, index=False)
    summary = res.summary()
    summary["network"] = {"sizes": [net.sizes[v] for v in (net.input,) + net.nodes],
                          "activation": activation, "loss": net.loss.name, "batch": batch}
    summary["info"] = {k: v for k, v in res.info.items()}
    if as_json:
        click.echo(json.dumps(_json_safe(summary), indent=2, allow_nan=False))
        _exit_if_nothing_succeeded(summary)
        return
    click.echo(net.summary())
    if chip_mode:
        click.echo(f"sampled chips on the {engine} engine, reference {reference}: "
                   f"{', '.join(summary['nonidealities'])}")
    else:
        click.echo(f"dialect {dialect}, analysis {analysis}, non-idealities: "
                   f"{', '.join(summary['nonidealities']) or 'none'}")
    click.echo(f"runs {summary['runs']}, failed {summary['failed']}, engine {res.info['engine']}, "
               f"{res.info['runs_s']:.1f} s")
    head = f"{'tensor':<24} {'angle mean (rad)':>17} {'angle std':>11} {'norm ratio':>11} {'ratio std':>10}"
    click.echo(head)
    click.echo("-" * len(head))

    def fmt(v, spec):
        if v is None:  # as wide as the number it stands for, so the columns stay aligned
            width = int("".join(ch for ch in spec.split(".")[0] if ch.isdigit()) or 0)
            return "n/a".rjust(width)
        return format(v, spec)

    for name, d in summary["tensors"].items():
        click.echo(f"{name[:24]:<24} {fmt(d['angle_mean'], '17.4e')} {fmt(d['angle_std'], '11.3e')} "
                   f"{fmt(d['norm_ratio_mean'], '11.5f')} {fmt(d['norm_ratio_std'], '10.3e')}")
    for f in summary["failures"][:10]:
        click.echo(f"  run {f['run']} failed: {f['error']}", err=True)
    if len(summary["failures"]) > 10:
        click.echo(f"  ... and {len(summary['failures']) - 10} more failed runs", err=True)
    sys.stdout.flush()
    _exit_if_nothing_succeeded(summary)


def _exit_if_nothing_succeeded(summary):
    if summary["runs"] and summary["failed"] >= summary["runs"]:
        first = summary["failures"][0]["error"] if summary["failures"] else "unknown"
        raise click.ClickException(
            f"all {summary['runs']} Monte Carlo runs failed; the first: {first}")
