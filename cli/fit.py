"""``anomtune fit``: train one detector with given parameters and evaluate it."""

from __future__ import annotations

import time

import click

from anomtune.cli.options import data_options, json_option, parse_params, train_on_option
from anomtune.cli.output import print_json, print_metrics, threshold_text

__all__ = ["fit_command"]


@click.command("fit")
@data_options
@click.option(
    "--seed",
    type=click.IntRange(0, 2**32 - 1),
    default=0,
    show_default=True,
    help="Split and training seed.",
)
@train_on_option
@click.option(
    "--param",
    "params",
    multiple=True,
    metavar="KEY=VALUE",
    help="Detector parameter, e.g. --param variant=vae --param epochs=100 (repeatable).",
)
@json_option()
def fit_command(data, read_options, seed, train_on, params, as_json):
    """Fit one autoencoder on DATA and report validation and test metrics.

    The data are split 60/20/20 (stratified, seeded); the detector trains on
    the training rows, its threshold maximises F1 on the validation rows,
    and the test rows are scored once.

    \b
    Example:
      anomtune fit datasets/cardio.csv --label is_anomaly --param variant=vae
    """
    from anomtune.data import read_table
    from anomtune.errors import ConfigError
    from anomtune.pipeline import fit_detector, prepare, report

    if read_options["label"] is None:
        raise ConfigError("fit needs --label: metrics are computed against labeled anomalies")
    table = read_table(data, **read_options)
    started = time.perf_counter()
    prepared = prepare(table, seed=seed, train_on=train_on)
    detector = fit_detector(prepared, parse_params(params), seed=seed)
    fit_seconds = time.perf_counter() - started
    metrics = report(detector, prepared)
    result = {
        "data": table.describe(),
        "split": prepared.split.describe(),
        "train_on": train_on,
        "params": {k: v for k, v in detector.get_params().items() if k != "random_state"},
        "seed": seed,
        "epochs": detector.n_epochs_,
        "training_status": detector.training_status_,
        "threshold": detector.threshold_,
        "threshold_rule": detector.threshold_rule_,
        "metrics": metrics,
        "fit_seconds": round(fit_seconds, 3),
    }
    if as_json:
        print_json(result)
        return
    click.echo(
        f"{table.source}: {table.n_rows} rows, {len(table.schema.columns)} features, "
        f"{table.n_anomalies} anomalies; trained {detector.n_epochs_} epochs "
        f"on {len(prepared.train)} rows in {fit_seconds:.1f}s ({detector.training_status_})"
    )
    print_metrics({part: metrics[part] for part in ("val", "test")})
    click.echo(f"threshold {threshold_text(detector.threshold_, detector.threshold_rule_)}")
