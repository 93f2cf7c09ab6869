"""``anomtune tune``: search autoencoders with Optuna against labeled validation data."""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path

import click

from anomtune.cli.columns import print_roles
from anomtune.cli.options import (
    check_output_file,
    choice_option,
    data_options,
    debug_requested,
    file_option,
    json_option,
    quiet_option,
    registry_options,
    split_names,
    storage_options,
    train_on_option,
)
from anomtune.cli.output import (
    Progress,
    metric_text,
    param_text,
    print_fields,
    print_json,
    print_metrics,
    threshold_text,
)
from anomtune.cli.registry import model_name

__all__ = ["tune_command"]


def _enqueue_sources(values: tuple[str, ...]) -> list[dict]:
    """Parameters from a run folder (its best trial) or a JSON file (a dict or a list)."""
    from anomtune.errors import ConfigError
    from anomtune.run import RunFolder

    out: list[dict] = []
    for value in values:
        path = Path(value)
        if path.is_dir():
            out.append(RunFolder.open(path).best_params())
            continue
        try:
            doc = json.loads(path.read_text())
        except FileNotFoundError as exc:
            raise ConfigError(f"--enqueue {value}: no such file or run folder") from exc
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"--enqueue {value}: not a readable JSON file: {exc}") from exc
        items = doc if isinstance(doc, list) else [doc]
        if not all(isinstance(i, dict) for i in items):
            raise ConfigError(f"--enqueue {value}: expected an object of parameters or a list")
        out.extend(items)
    return out


def _trial_rows(ctx: click.Context, param: click.Parameter, value: str | None):
    """``--trial-rows``: a row count, ``all`` (no sample), or unset (the library's default)."""
    if value is None:
        return {}
    if value.strip().lower() == "all":
        return {"trial_rows": None}
    try:
        return {"trial_rows": int(value)}
    except ValueError:
        raise click.BadParameter(f"expected a number of rows or 'all', not {value!r}") from None


def _trial_progress(hidden: bool) -> Progress:
    def describe(snap: dict) -> str:
        best = metric_text(snap["best"])
        return (
            f"best {best}  pruned {snap['pruned']}  failed {snap['failed']}  "
            f"elapsed {snap['elapsed']:.0f}s"
        )

    return Progress("trials", describe=describe, hidden=hidden, log=True)


@click.command("tune")
@data_options
@choice_option(
    "--metric",
    "anomtune.tuning.config:METRICS",
    default="auc-roc",
    help="Validation metric to maximise (F1 at its best threshold).",
)
@click.option(
    "--objectives",
    metavar="METRIC,COST",
    help="Two objectives for a Pareto front, e.g. auc-pr,latency or auc-roc,size.",
)
@click.option(
    "--tolerance",
    type=float,
    default=0.005,
    show_default=True,
    help="With --objectives: the cheapest trial within this much of the best metric wins.",
)
@choice_option(
    "--sampler",
    "anomtune.tuning.config:SAMPLERS",
    default="tpe",
    help="Search strategy: TPE, random, grid, Gaussian-process BO, CMA-ES or quasi-Monte Carlo.",
)
@click.option(
    "--startup-trials",
    type=click.IntRange(min=1),
    metavar="N",
    help="Random trials that tpe, gp or cmaes run before they model the results.  "
    "[default: 10 for tpe and gp, 5 for cmaes]",
)
@choice_option(
    "--pruner",
    "anomtune.tuning.config:PRUNERS",
    default="median",
    help="Stop weak trials early: median (below the median of earlier trials at the "
    "same epoch, from epoch 5 and trial 6 on); sha, successive halving (at epochs 4, "
    "16 and 64 a trial goes on only if it is in the best quarter of the trials that "
    "got there; about a third of the unpruned epochs, about 0.01 lower AUC); Hyperband; or none.",
)
@click.option("--trials", type=int, default=30, show_default=True, help="Trials to add.")
@click.option("--timeout", type=float, help="Stop starting new trials after this many seconds.")
@click.option(
    "--seed", type=int, default=0, show_default=True, help="Seed of the split and the sampler."
)
@click.option(
    "--workers", type=int, default=1, show_default=True, help="Worker processes sharing the study."
)
@click.option("--cv", type=int, help="Select with K-fold cross-validation on train+validation.")
@click.option(
    "--trial-rows",
    callback=_trial_rows,
    metavar="N|all",
    help="Each trial trains on at most N training rows and is scored on at most N "
    "validation rows (seeded samples that keep the anomalies' share); the best trial "
    "is then refitted on every training row, keeping its best epoch on every validation "
    "row, or its own network if that is better there. Tables whose parts fit are not "
    "sampled; 'all' trains every trial on every row (on celeba, 202,599 x 39, 0.012 "
    "higher test AUC-ROC at about 5x the time).  [default: 16384]",
)
@click.option(
    "--ensemble",
    type=click.IntRange(1, 20),
    default=5,
    show_default=True,
    metavar="K",
    help="Ship the mean of the K best (trial, score) pairs on validation: each trial "
    "offers its reconstruction error and the distance of a row's residual to the nearest "
    "training row's, each divided by its spread on the training rows. On the 24 ADBench sets "
    "K=5 was 0.016 test AUC-ROC above the best trial alone (benchmarks/README.md). "
    "1: the best trial alone. Needs labels; with --cv or --objectives the best trial "
    "is shipped alone.",
)
@train_on_option
@file_option(
    "--space",
    "space_file",
    help="TOML file overriding the search space (see 'anomtune space').",
)
@click.option(
    "--enqueue",
    multiple=True,
    metavar="RUN_DIR|FILE",
    help="Try these parameters first: a run folder's best trial or a JSON file.",
)
@click.option("--study", help="Study name (default: the data file's name). Reusing it resumes.")
@storage_options
@click.option("--out", type=click.Path(file_okay=False), help="Run folder (default: runs/STUDY).")
@click.option(
    "--register",
    "register_name",
    is_flag=False,
    flag_value="",
    default=None,
    metavar="[NAME]",
    help="Register the best model in the model registry as the next version of NAME "
    "(--register alone: a name made from DATA's file name).",
)
@registry_options("for --register")
@file_option(
    "--report",
    "report_path",
    help="Write the run's HTML report here at the end (see 'anomtune report').",
)
@quiet_option
@json_option("the summary")
def tune_command(
    data,
    read_options,
    metric,
    objectives,
    tolerance,
    sampler,
    startup_trials,
    pruner,
    trials,
    timeout,
    seed,
    workers,
    cv,
    trial_rows,
    ensemble,
    train_on,
    space_file,
    enqueue,
    study,
    storage,
    workspace,
    out,
    register_name,
    registry,
    registry_files,
    report_path,
    quiet,
    as_json,
):
    """Find the best autoencoder for DATA, judged on labeled validation rows.

    DATA is split 60/20/20 (stratified, --seed). Each trial trains on the
    normal training rows and is scored on the validation rows after every
    epoch; the pruner stops weak trials. The best trial is refitted, and
    with labels so are the trials of the best (trial, score) pairs, whose
    mean score is the model (--ensemble); its threshold is set to maximise
    validation F1, and the test rows are scored once. The run folder gets
    the model, trials.csv and summary.json.

    \b
    Examples:
      anomtune tune datasets/cardio.csv --label is_anomaly --trials 30
      anomtune tune data.csv --label fraud --metric auc-pr --workers 2
      anomtune tune data.csv --label y --sampler grid --space my-space.toml
      anomtune tune data.csv --label fraud --register fraud
    """
    import optuna

    from anomtune.tuning import tune

    # Failed and pruned trials are recorded in the study and trials.csv; Optuna's
    # own per-trial messages (with tracebacks) show only with --debug.
    debug = debug_requested()
    optuna.logging.set_verbosity(optuna.logging.DEBUG if debug else optuna.logging.ERROR)
    if register_name is not None:
        # Checked before the search, not after an hour of it.
        register_name = model_name(register_name, data)
    if report_path is not None:
        _check_report_path(Path(report_path), data)
    queued = _enqueue_sources(enqueue)
    if read_options["label"] is None:
        click.echo(
            "anomtune: note: no --label given, so trials are compared on the validation "
            "reconstruction error and the threshold is the training-score quantile",
            err=True,
        )

    def show_columns(table) -> None:
        if not (quiet or as_json):
            print_roles(table, err=True)

    with _trial_progress(hidden=quiet or as_json) as progress:
        result = tune(
            data,
            **read_options,
            metric=metric,
            objectives=split_names((objectives,)) if objectives else None,
            tolerance=tolerance,
            sampler=sampler,
            startup_trials=startup_trials,
            pruner=pruner,
            trials=trials,
            timeout=timeout,
            seed=seed,
            workers=workers,
            cv=cv,
            **trial_rows,
            ensemble=ensemble,
            train_on=train_on,
            space=space_file,
            enqueue=queued,
            study=study,
            storage=storage,
            workspace=workspace,
            out=out,
            on_progress=lambda snap: progress.update(snap["done"], snap, snap["total"]),
            on_table=show_columns,
            argv=["anomtune", *sys.argv[1:]],
        )
    registered = None
    if register_name is not None and not result.interrupted and result.summary.best:
        registered = result.register(register_name, registry=registry, files=registry_files)
    report = None
    if report_path is not None and not result.interrupted:
        report = result.report(report_path)
    summary = result.summary.to_dict()
    if as_json:
        print_json(summary)
    else:
        _print_summary(summary, result.out)
        if registered is not None:
            click.echo(f"registered {registered['ref']} in {registered['registry']}")
        if report is not None:
            click.echo(f"report: {report}")
    if result.interrupted:
        raise click.exceptions.Exit(130)
    if result.worker_failures:
        died = ", ".join(
            f"worker {f['worker'] + 1} ({_exit_text(f['exit_code'])})"
            for f in result.worker_failures
        )
        click.echo(
            f"anomtune: error: {died} of {workers} ended early, so fewer than "
            f"{trials} trials ran; the run folder holds the best finished trial, "
            "and the same command again resumes the study",
            err=True,
        )
        raise click.exceptions.Exit(1)


def _exit_text(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def _check_report_path(path: Path, data: str) -> None:
    """Refuse a report that could not be written, before the search starts."""
    from anomtune.errors import ConfigError

    if data == "-":
        raise ConfigError(
            "--report needs the data in a file, not standard input "
            "(write the report later with 'anomtune report RUN_DIR --data FILE')"
        )
    check_output_file("--report", path)


def _print_summary(summary: dict, out) -> None:
    study = summary["study"]
    counts = study["trials"]
    click.echo(
        f"study {study['name']!r} ({study['storage']}): {counts.get('complete', 0)} complete, "
        f"{counts.get('pruned', 0)} pruned, {counts.get('fail', 0)} failed; "
        f"{study['epochs_trained']} epochs trained in {summary['timings']['tuning_seconds']:.0f}s"
    )
    if summary.get("anytime"):
        from anomtune.tuning.anytime import last_third_sentence

        click.echo(last_third_sentence(summary["anytime"]["last_third"], study["objectives"][0]))
    trials = (summary.get("fidelity") or {}).get("trials") or {}
    if trials.get("sampled"):
        click.echo(
            f"trials trained on {trials['train_rows']:,} of {trials['of_train_rows']:,} training "
            f"rows and were scored on {trials['val_rows']:,} of {trials['of_val_rows']:,} "
            "validation rows (--trial-rows)"
        )
    best = summary.get("best")
    if not best:
        click.echo("no trial completed; nothing to report")
        return
    refit = (summary.get("fidelity") or {}).get("refit")
    if trials.get("sampled") and refit:
        refitted = f"the best trial was refitted on all {refit['train_rows']:,} training rows"
        if (summary.get("refit") or {}).get("kept") == "trial":
            click.echo(
                f"{refitted}, but its own network (on the sample, {refit['epochs']} epochs) "
                "is better on every validation row and is kept"
            )
        else:
            click.echo(
                f"{refitted} (kept epoch {refit['epochs']} of {refit['epochs_run']} "
                "on every validation row)"
            )
    objective = study["objectives"][0]
    click.echo(f"best trial #{best['number']} ({objective} {metric_text(best['value'])}):")
    print_fields(dict(sorted(best["params"].items())), format=param_text)
    ensemble = summary.get("ensemble")
    if ensemble:
        pairs = ", ".join(
            f"#{m['trial']} {m['score']} {metric_text(m['value'])}" for m in ensemble["members"]
        )
        click.echo(
            f"model: the mean of {ensemble['size']} (trial, score) pairs ({pairs}); "
            f"validation {objective} {metric_text(ensemble['val_value'])} (--ensemble)"
        )
    metrics = summary["metrics"]
    if "auc_roc" in metrics["val"]:
        print_metrics({part: metrics[part] for part in ("val", "test")})
    else:
        for part in ("val", "test"):
            m = metrics[part]
            click.echo(
                f"{part:<6} reconstruction error {m['reconstruction_error']:.4g}, "
                f"{m['flagged']:.1%} of rows above the threshold"
            )
    click.echo(f"threshold {threshold_text(summary['threshold'], summary['threshold_rule'])}")
    if "auc_roc" not in metrics["val"]:
        click.echo(f"note: {summary['note']}")
    click.echo(f"run folder: {out}")
