"""Command line: ``dyadsim grad|compare|netlist|simulate|train|experiment ...``.

Each subcommand lives in its own module and imports heavy machinery only when it runs.
:func:`main` is the one place where errors become exit codes: every expected failure
prints one ``error: ...`` line on stderr (a SimulatorError adds ngspice's own words) and
exits with status 2, an interrupt exits with 130; only a bug shows a traceback.
"""

from __future__ import annotations

import sys

import click

from ._main import cli
from . import _train  # noqa: F401  (registers train, experiment)
from . import _spice  # noqa: F401  (registers netlist, simulate)
from . import _montecarlo  # noqa: F401  (registers montecarlo)

__all__ = ["cli", "main", "EXIT_ERROR", "EXIT_INTERRUPTED"]

#: Exit status of every expected failure (bad input, file or simulator errors).
EXIT_ERROR = 2
#: Exit status after Ctrl-C (128 + SIGINT, as shells report it).
EXIT_INTERRUPTED = 130


def _say(message: str) -> None:
    click.echo(f"error: {message}", err=True)


def _os_error(exc: OSError) -> str:
    what = exc.strerror or str(exc) or type(exc).__name__
    names = [n for n in (exc.filename, getattr(exc, "filename2", None)) if n]
    return f"{what}: {' -> '.join(map(str, names))}" if names else what


def main(argv=None) -> int:
    """Entry point of the ``dyadsim`` console script.

    Parameters
    ----------
    argv
        The arguments (default: ``sys.argv[1:]``).

    Returns
    -------
    int
        The exit status: 0 on success, :data:`EXIT_ERROR` (2) for every expected failure
        (a usage error, a :class:`~dyadsim.errors.DyadsimException`, an OS error such as an
        unwritable output path, out of memory), :data:`EXIT_INTERRUPTED` (130) on Ctrl-C.
        Each failure prints one line (``error: ...``) on stderr, no traceback.
    """
    import warnings

    from ..errors import DyadsimException, SimulatorError

    def show_warning(message, category, filename, lineno, file=None, line=None):
        # dyadsim's own warnings (PrecisionWarning, ...) as one line, not a source location
        if issubclass(category, UserWarning) and type(message).__module__.startswith("dyadsim"):
            click.echo(f"warning: {message}", err=True)
        else:
            original(message, category, filename, lineno, file, line)

    original = warnings.showwarning
    warnings.showwarning = show_warning
    try:
        return _run(argv, DyadsimException, SimulatorError)
    finally:
        warnings.showwarning = original


def _run(argv, DyadsimException, SimulatorError) -> int:
    try:
        status = cli.main(args=argv, prog_name="dyadsim", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.exceptions.Abort as exc:  # click turns Ctrl-C (and EOF at a prompt) into Abort
        if isinstance(exc.__cause__, KeyboardInterrupt) or isinstance(exc.__context__, KeyboardInterrupt):
            click.echo("dyadsim: interrupted", err=True)
            return EXIT_INTERRUPTED
        _say("aborted")
        return EXIT_ERROR
    except KeyboardInterrupt:
        click.echo("dyadsim: interrupted", err=True)
        return EXIT_INTERRUPTED
    except click.ClickException as exc:
        message = exc.format_message()
        ctx = getattr(exc, "ctx", None)
        if isinstance(exc, click.UsageError) and ctx is not None:
            message += f" (see '{ctx.command_path} --help')"
        _say(" ".join(message.split()))
        return EXIT_ERROR
    except SimulatorError as exc:  # the summary, then ngspice's own words (indented)
        _say(str(exc))
        return EXIT_ERROR
    except DyadsimException as exc:
        _say(" ".join(str(exc).split()))
        return EXIT_ERROR
    except OSError as exc:
        _say(_os_error(exc))
        return EXIT_ERROR
    except MemoryError:
        _say("out of memory (the network or batch is too large for this machine)")
        return EXIT_ERROR
    return status if isinstance(status, int) and not isinstance(status, bool) else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
