"""``anomtune report``: one self-contained HTML page about a tuning run."""

from __future__ import annotations

from pathlib import Path

import click

from anomtune.cli.options import file_option, output_option, storage_option

__all__ = ["report_command"]


@click.command("report")
@click.argument("run_dir", type=click.Path(file_okay=False))
@output_option("Where to write the HTML file (default: RUN_DIR/report.html).")
@file_option(
    "--data",
    help="The run's data file, if it has moved (its fingerprint must match the run's).",
)
@storage_option("The study's storage, if it has moved (default: the one the run recorded).")
@click.option(
    "--top", type=int, default=10, show_default=True, help="How many top-scoring rows to list."
)
@file_option(
    "--screenshot",
    "png",
    help="Also save a PNG of the whole page, taken with headless Chromium.",
)
def report_command(run_dir, output, data, storage, top, png):
    """Write an HTML report of the tuning run in RUN_DIR.

    One file that opens without a network: the optimisation history and the
    values reported to the pruner, fANOVA hyperparameter importances and a
    slice view of the top parameters, the best model's ROC and
    precision-recall curves, score histograms and confusion matrices on the
    validation and test rows, the highest-scoring rows with the columns that
    drive their scores, and the run's data, split, budget, versions, timings
    and command. The best model's scores are recomputed from the run's data
    file, which must be the data the run was tuned on.

    \b
    Examples:
      anomtune report runs/cardio -o cardio.html
      anomtune report runs/cardio --data /new/place/cardio.csv --screenshot cardio.png
    """
    from anomtune.report import screenshot, write_report

    target = Path(output) if output else Path(run_dir) / "report.html"
    path = write_report(run_dir, target, data=data, storage=storage, top_rows=top)
    click.echo(f"wrote {path}")
    if png:
        click.echo(f"wrote {screenshot(path, png)}")
