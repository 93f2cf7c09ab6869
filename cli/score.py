"""``anomtune score``: score a CSV or Parquet file with onnxruntime alone."""

from __future__ import annotations

from collections.abc import Callable

import click

from anomtune.cli.options import (
    json_option,
    output_option,
    quiet_option,
    registry_options,
    with_csv_options,
)
from anomtune.cli.output import Progress, print_json, print_metrics, threshold_text

__all__ = ["score_command"]


def _with_rate(quiet: bool, score: Callable, *args, **kwargs):
    """``score(*args, **kwargs)`` (one file or a Dask data set), its rows/s shown on stderr."""

    def describe(item: tuple[int, float]) -> str:
        rows, seconds = item
        return f"{rows:,} rows  {rows / max(seconds, 1e-9):,.0f} rows/s"

    # Redrawn at most twice a second: a chunk can take a millisecond.
    with Progress("scoring", describe=describe, hidden=quiet, interval=0.5) as rate:
        return score(
            *args, on_progress=lambda rows, seconds: rate.update(rows, (rows, seconds)), **kwargs
        )


@click.command("score")
@click.argument("model")
@click.argument("data")
@output_option(
    "Output CSV or .parquet file; - writes CSV to stdout.",
    # Text, not a file path: '-' for stdout, and a folder with --dask (checked by the command).
    type=click.STRING,
    default="-",
    show_default=True,
)
@click.option(
    "--id-column",
    metavar="COLUMN",
    help="Column to copy into the output as row id (default: the model's id column "
    "when the file has it, else the row number).",
)
@click.option(
    "--explain",
    type=int,
    default=0,
    metavar="K",
    help="Add the K columns with the largest errors and their share of the row's error.",
)
@click.option("--threshold", type=float, help="Replace the model's threshold.")
@click.option(
    "--threshold-at-fpr",
    "fpr",
    type=float,
    metavar="RATE",
    help="Pick the threshold flagging at most RATE of the rows labeled normal.",
)
@click.option("--label", metavar="COLUMN", help="Label column for --evaluate/--threshold-at-fpr.")
@click.option("--evaluate", is_flag=True, help="Report AUC-ROC, AUC-PR and F1 against --label.")
@with_csv_options
@click.option(
    "--threads",
    type=int,
    default=2,
    show_default=True,
    help="Threads that score slices of the input side by side.",
)
@registry_options("that holds MODEL")
@click.option(
    "--dask",
    "scheduler",
    metavar="SCHEDULER",
    help="Score each file DATA names (a quoted glob pattern or a folder) as a task on a Dask "
    "cluster (its address, 'local' or 'local:N'); one output per file in the folder -o. "
    "Needs anomtune[dask].",
)
@quiet_option
@json_option("the run summary", " (on stderr, since stdout may carry the scores)")
def score_command(
    model,
    data,
    output,
    id_column,
    explain,
    threshold,
    fpr,
    label,
    evaluate,
    sep,
    decimal,
    encoding,
    threads,
    registry,
    registry_files,
    scheduler,
    quiet,
    as_json,
):
    """Score DATA (CSV or Parquet; - for stdin) with MODEL.

    MODEL is name@alias, name/VERSION, name (latest) or a path to an .onnx
    file. Columns are matched by name (any order; extra columns are ignored).
    The file is read and scored in chunks, so memory stays flat. Output
    columns: the id column (the model's own when the file has it, else row,
    from 1), score, is_anomaly and, with
    --explain K, the K most anomalous columns of each row.

    \b
    Examples:
      anomtune score cardio.onnx new.csv -o scores.csv
      anomtune score fraud@champion today.parquet -o flagged.parquet --explain 3
      cat new.csv | anomtune score fraud/3 - > scores.csv
      anomtune score fraud@champion labeled.csv --label y --evaluate -o /dev/null
      anomtune score fraud@champion 'data/*.parquet' --dask tcp://host:8786 -o scores/
    """
    # How the rows are read and scored, the same on one file and on a Dask cluster.
    options = {
        "id_column": id_column,
        "explain": explain,
        "threshold": threshold,
        "sep": sep,
        "decimal": decimal,
        "encoding": encoding,
    }
    if scheduler is not None:
        if evaluate or fpr is not None:
            raise click.UsageError("--evaluate and --threshold-at-fpr score one file, not --dask")
        _score_on_dask(
            model, data, output, scheduler, registry, registry_files, options, quiet, as_json
        )
        return
    from anomtune.batch import score_file
    from anomtune.scoring import open_model

    scorer = open_model(model, registry=registry, registry_files=registry_files, threads=threads)
    result = _with_rate(
        quiet, score_file, scorer, data, output, label=label, evaluate=evaluate, fpr=fpr, **options
    )
    summary = result.to_dict()
    if result.flag_rate_warning:
        click.echo(f"anomtune: warning: {result.flag_rate_warning}", err=True)
    if as_json:
        print_json(summary, err=True)
        return
    if not quiet or result.metrics:
        click.echo(
            f"scored {result.rows:,} rows in {result.seconds:.2f}s; {result.anomalies:,} above "
            f"threshold {threshold_text(result.threshold, result.threshold_rule)}",
            err=True,
        )
    if result.metrics:
        print_metrics({"scored": result.metrics}, first="rows", err=True)


def _score_on_dask(
    model, data, output, scheduler, registry, registry_files, options, quiet, as_json
):
    """``--dask``: every file DATA matches, one task each, outputs in the folder -o."""
    from anomtune.distributed import score_dataset

    if output == "-":
        raise click.UsageError("--dask writes one file per input file: give a folder with -o")
    result = _with_rate(
        quiet,
        score_dataset,
        model,
        data,
        output,
        scheduler=scheduler,
        registry=registry,
        registry_files=registry_files,
        **options,
    )
    if as_json:
        print_json(result.to_dict(), err=True)
    elif not quiet:
        click.echo(
            f"scored {result.rows:,} rows of {len(result.files)} files on "
            f"{len(result.workers)} Dask workers in {result.seconds:.2f}s; "
            f"{result.anomalies:,} above threshold {result.threshold:.6g}; "
            f"outputs in {result.output}",
            err=True,
        )
