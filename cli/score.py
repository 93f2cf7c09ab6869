"""``anomtune score``: score a CSV or Parquet file with onnxruntime alone."""

from __future__ import annotations

import sys

import click

from anomtune.cli.options import print_json

__all__ = ["score_command"]


class _Rate:
    """Rows-per-second line on stderr, redrawn in place on a terminal."""

    def __init__(self, quiet: bool):
        self.quiet = quiet or not sys.stderr.isatty()
        self.last = 0.0

    def __call__(self, rows: int, seconds: float) -> None:
        if self.quiet or seconds - self.last < 0.5:
            return
        self.last = seconds
        click.echo(f"\r{rows:,} rows  {rows / max(seconds, 1e-9):,.0f} rows/s", nl=False, err=True)

    def close(self) -> None:
        if not self.quiet and self.last:
            click.echo("", err=True)


@click.command("score")
@click.argument("model")
@click.argument("data")
@click.option(
    "-o",
    "--output",
    default="-",
    show_default=True,
    help="Output CSV or .parquet file; - writes CSV to stdout.",
)
@click.option("--id-column", metavar="COLUMN", help="Column to copy into the output as row id.")
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
@click.option("--sep", default=",", show_default=True, help="CSV field separator.")
@click.option(
    "--threads",
    type=int,
    default=2,
    show_default=True,
    help="Threads that score slices of the input side by side.",
)
@click.option("--registry", metavar="PATH|URL", help="Model registry (default: ANOMTUNE_REGISTRY).")
@click.option(
    "--registry-files",
    "registry_files",
    metavar="DIR",
    help="Folder of model files for a database --registry [env: ANOMTUNE_REGISTRY_FILES].",
)
@click.option(
    "--dask",
    "scheduler",
    metavar="SCHEDULER",
    help="Score each file DATA names (a quoted glob pattern or a folder) as a task on a Dask "
    "cluster (its address, 'local' or 'local:N'); one output per file in the folder -o. "
    "Needs anomtune[dask].",
)
@click.option("--quiet", is_flag=True, help="No progress line.")
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print the run summary as JSON (on stderr, since stdout may carry the scores).",
)
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
    columns: the id column (or row, from 1), score, is_anomaly and, with
    --explain K, the K most anomalous columns of each row.

    \b
    Examples:
      anomtune score cardio.onnx new.csv -o scores.csv
      anomtune score fraud@champion today.parquet -o flagged.parquet --explain 3
      cat new.csv | anomtune score fraud/3 - > scores.csv
      anomtune score fraud@champion labeled.csv --label y --evaluate -o /dev/null
      anomtune score fraud@champion 'data/*.parquet' --dask tcp://host:8786 -o scores/
    """
    if scheduler is not None:
        if evaluate or fpr is not None:
            raise click.UsageError("--evaluate and --threshold-at-fpr score one file, not --dask")
        options = {"id_column": id_column, "explain": explain, "threshold": threshold, "sep": sep}
        _score_on_dask(
            model, data, output, scheduler, registry, registry_files, options, quiet, as_json
        )
        return
    from anomtune.batch import score_file
    from anomtune.scoring import open_model

    scorer = open_model(model, registry=registry, registry_files=registry_files, threads=threads)
    rate = _Rate(quiet)
    try:
        result = score_file(
            scorer,
            data,
            output,
            id_column=id_column,
            label=label,
            evaluate=evaluate,
            explain=explain,
            threshold=threshold,
            fpr=fpr,
            sep=sep,
            on_progress=rate,
        )
    finally:
        rate.close()
    summary = result.to_dict()
    if as_json:
        print_json(summary, err=True)
        return
    if not quiet or result.metrics:
        click.echo(
            f"scored {result.rows:,} rows in {result.seconds:.2f}s; {result.anomalies:,} above "
            f"threshold {result.threshold:.6g} ({result.threshold_rule})",
            err=True,
        )
    if result.metrics:
        m = result.metrics
        click.echo(
            f"AUC-ROC {m['auc_roc']:.4f}  AUC-PR {m['auc_pr']:.4f}  F1 {m['f1']:.3f}  "
            f"precision {m['precision']:.3f}  recall {m['recall']:.3f}",
            err=True,
        )


def _score_on_dask(
    model, data, output, scheduler, registry, registry_files, options, quiet, as_json
):
    """``--dask``: every file DATA matches, one task each, outputs in the folder -o."""
    from anomtune.distributed import score_dataset

    if output == "-":
        raise click.UsageError("--dask writes one file per input file: give a folder with -o")
    rate = _Rate(quiet)
    try:
        result = score_dataset(
            model,
            data,
            output,
            scheduler=scheduler,
            registry=registry,
            registry_files=registry_files,
            on_progress=rate,
            **options,
        )
    finally:
        rate.close()
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
