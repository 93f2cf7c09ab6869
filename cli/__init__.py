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
@click.option("--debug", is_flag=True, help="Show tracebacks and debug logging.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Tune, export, version and serve autoencoder anomaly detectors.

    \b
    Quick start:
      anomtune tune datasets/cardio.csv --label is_anomaly --trials 30
    """
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )


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


def main(argv: list[str] | None = None) -> None:
    """Console entry point."""
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args
    try:
        code = cli.main(args=args, prog_name="anomtune", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("anomtune: interrupted", err=True)
        sys.exit(130)
    except click.UsageError as exc:
        if debug:
            raise
        hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
        click.echo(f"anomtune: error: {exc.format_message()}{hint}", err=True)
        sys.exit(EXIT_USAGE)
    except click.ClickException as exc:
        if debug:
            raise
        click.echo(f"anomtune: error: {exc.format_message()}", err=True)
        sys.exit(EXIT_USAGE)
    except AnomtuneError as exc:
        if debug:
            raise
        click.echo(f"anomtune: error: {exc}", err=True)
        sys.exit(EXIT_USAGE)
    except KeyboardInterrupt:
        click.echo("anomtune: interrupted", err=True)
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)
