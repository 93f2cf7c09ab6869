"""The ``anomtune`` command line: thin commands over the library.

Each command parses its options, calls one library function and prints.
:func:`main` turns anomtune's errors and bad options into one line on stderr
and exit code 2 (a traceback only with ``--debug``).
"""

from __future__ import annotations

import logging
import sys

import click

from anomtune import __version__
from anomtune.cli.columns import columns_command
from anomtune.cli.datasets import datasets_command
from anomtune.cli.export import export_command
from anomtune.cli.fit import fit_command
from anomtune.cli.options import add_debug_option
from anomtune.cli.registry import registry_group
from anomtune.cli.report import report_command
from anomtune.cli.score import score_command
from anomtune.cli.serve import serve_command
from anomtune.cli.space import space_command
from anomtune.cli.studies import studies_command, trials_command
from anomtune.cli.tune import tune_command
from anomtune.errors import AnomtuneError

__all__ = ["cli", "main"]

EXIT_USAGE = 2


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "--version", prog_name="anomtune")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """Tune, export, version and serve autoencoder anomaly detectors.

    \b
    Quick start:
      anomtune tune datasets/cardio.csv --label is_anomaly --trials 30
    """
    ctx.ensure_object(dict)
    # --debug, when given before the command name, has set up debug logging already.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


cli.add_command(columns_command)
cli.add_command(fit_command)
cli.add_command(registry_group)
cli.add_command(tune_command)
cli.add_command(space_command)
cli.add_command(export_command)
cli.add_command(score_command)
cli.add_command(serve_command)
cli.add_command(studies_command)
cli.add_command(trials_command)
cli.add_command(datasets_command)
cli.add_command(report_command)
# --debug is taken before the command name and after it: anomtune --debug tune ...
# and anomtune tune ... --debug.
add_debug_option(cli)


def main(argv: list[str] | None = None) -> None:
    """Console entry point."""
    args = sys.argv[1:] if argv is None else argv
    # Read from the words, not from click: a usage error stops click before
    # it has seen every option.
    words = args[: args.index("--")] if "--" in args else args
    debug = "--debug" in words
    try:
        code = cli.main(args=args, prog_name="anomtune", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except (click.exceptions.Abort, KeyboardInterrupt):
        click.echo("anomtune: interrupted", err=True)
        sys.exit(130)
    except (click.ClickException, AnomtuneError) as exc:
        if debug:
            raise
        click.echo(f"anomtune: error: {_message(exc)}", err=True)
        sys.exit(EXIT_USAGE)
    sys.exit(code if isinstance(code, int) else 0)


def _message(exc: click.ClickException | AnomtuneError) -> str:
    if not isinstance(exc, click.ClickException):
        return str(exc)
    if isinstance(exc, click.UsageError) and exc.ctx is not None:
        return f"{exc.format_message()} (see '{exc.ctx.command_path} --help')"
    return exc.format_message()
