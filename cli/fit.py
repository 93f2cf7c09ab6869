"""``anomtune fit``: train one detector with given parameters and evaluate it."""

from __future__ import annotations

import time

import click

from anomtune.cli.options import (
    data_options,
    load_table,
    parse_params,
    print_json,
    read_kwargs,
    train_on_option,
)

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
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def fit_command(data, seed, train_on, params, as_json, **data_opts):
    """Fit one autoencoder on DATA and report validation and test metrics.

    The data are split 60/20/20 (stratified, seeded); the detector trains on
    the training rows, its threshold maximises F1 on the validation rows,
    and the test rows are scored once.

    \b
    Example:
      anomtune fit datasets/cardio.csv --label is_anomaly --param variant=vae
    """
    from anomtune.errors import ConfigError
    from anomtune.pipeline import fit_detector, prepare, report

    if data_opts["label"] is None:
        raise ConfigError("fit needs --label: metrics are computed against labeled anomalies")
    table = load_table(data, **read_kwargs(**data_opts))
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
    click.echo(f"{'split':<6} {'AUC-ROC':>8} {'AUC-PR':>8} {'F1':>6} {'prec':>6} {'recall':>6}")
    for part in ("val", "test"):
        m = metrics[part]
        click.echo(
            f"{part:<6} {m['auc_roc']:>8.4f} {m['auc_pr']:>8.4f} {m['f1']:>6.3f} "
            f"{m['precision']:>6.3f} {m['recall']:>6.3f}"
        )
    click.echo(f"threshold {detector.threshold_:.6g} ({detector.threshold_rule_})")
