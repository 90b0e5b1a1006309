"""Command line: ``dyadsim grad|compare|netlist|simulate|train|experiment ...``.

Each subcommand lives in its own module and imports heavy machinery only when it runs.
"""

from __future__ import annotations

import sys

import click

from ._main import cli
from . import _train  # noqa: F401  (registers train, experiment)
from . import _spice  # noqa: F401  (registers netlist, simulate)
from . import _montecarlo  # noqa: F401  (registers montecarlo)

__all__ = ["cli", "main"]


def main(argv=None) -> int:
    """Entry point of the ``dyadsim`` console script; returns the exit status."""
    try:
        cli.main(args=argv, prog_name="dyadsim", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Abort:
        click.echo("Aborted!", err=True)
        return 1
    except Exception as exc:  # dyadsim's own errors: one clear line, no traceback
        from ..errors import DyadsimException

        if isinstance(exc, DyadsimException):
            click.echo(f"error: {exc}", err=True)
            return 2
        raise
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
