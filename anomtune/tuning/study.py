"""The study lifecycle: create or resume it, queue trials, run workers, refit, write the run.

After the study the best trial is refitted with its recorded seed for its
best epoch count, its threshold is set to the one that maximises F1 on the
validation rows, the test rows are scored once and the run folder
(:mod:`anomtune.run`) is written.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from anomtune import __version__
from anomtune.data import Table
from anomtune.errors import AnomtuneError, ConfigError
from anomtune.model import AnomalyModel
from anomtune.pipeline import Prepared, prepare
from anomtune.run import RunFolder, RunSummary
from anomtune.space import SearchSpace, default_space, load_space
from anomtune.tuning.anytime import anytime
from anomtune.tuning.config import SPACE_HEADER, TuneConfig
from anomtune.tuning.factories import (
    make_pruner,
    make_sampler,
    max_epochs,
    pruner_settings,
    startup_trials,
)
from anomtune.tuning.objective import Interrupt, Objective
from anomtune.tuning.refit import Refit, refit_best, select_best, select_members
from anomtune.tuning.storage import count_states, fail_orphaned_trials, fail_reason, open_storage

__all__ = ["TuneResult", "run_study", "trial_rows", "versions"]

logger = logging.getLogger(__name__)


@dataclass
class TuneResult:
    """What a finished (or interrupted) run produced: its summary, model and run folder."""

    summary: RunSummary
    out: Path
    model: AnomalyModel | None = None
    interrupted: bool = False
    worker_failures: list[dict] = field(default_factory=list)

    @property
    def best_params(self) -> dict | None:
        """The refitted best trial's detector parameters (None if no trial completed)."""
        return dict(self.summary.best["params"]) if self.summary.best else None

    @property
    def metrics(self) -> dict | None:
        """The best model's validation and test metrics at its threshold."""
        return self.summary.metrics

    def export(self, path: str | Path) -> Path:
        """Write the best model as one parity-checked ONNX graph (see :mod:`anomtune.export`)."""
        from anomtune.export import export_run

        export_run(self.out, path)
        return Path(path)

    def register(
        self,
        name: str,
        *,
        registry: str | None = None,
        files: str | None = None,
        description: str = "registered by anomtune tune",
    ) -> dict:
        """Export the best model and register it as the next version of ``name``.

        The registration is recorded in the run's summary; returns its reference,
        version, hash and registry.
        """
        from anomtune.registry import Registry, register_run

        with Registry.open(registry, files=files, create=True) as reg:
            info = register_run(reg, self.out, name=name, description=description)
            where = reg.location.display
        registered = {
            "ref": info.ref,
            "name": name,
            "version": info.version,
            "sha256": info.sha256,
            "registry": where,
        }
        run = RunFolder(self.out, self.summary)
        run.record_registration(registered)
        return registered

    def report(self, path: str | Path, **options) -> Path:
        """Write the run's HTML report (options as :func:`anomtune.report.write_report`)."""
        from anomtune.report import write_report

        return write_report(self.out, path, **options)


def run_study(
    config: TuneConfig,
    *,
    table: Table | None = None,
    on_progress: Callable[[dict], None] | None = None,
    on_table: Callable[[Table], None] | None = None,
    argv: list[str] | None = None,
) -> TuneResult:
    """Run (or resume) a study, refit the best trial and write the run folder.

    ``table``: the data already read (otherwise ``config.data`` is read).
    ``on_table`` receives the table once it is read and the settings are
    checked (its roles table and notes, to show before the search);
    ``on_progress`` receives a dict (trials done of total, pruned, failed,
    best value, elapsed seconds) after every trial.
    """
    import optuna

    config.check()
    if table is not None and config.workers > 1:
        raise ConfigError("parallel workers read the data from a file; give a path, not a table")
    # Optuna's records go through the standard logging tree, where the caller
    # decides what is shown.
    optuna.logging.disable_default_handler()
    optuna.logging.enable_propagation()
    started = time.perf_counter()
    table, prepared, space = _build(config, table)
    trial_data, fidelity = trial_view(config, prepared)
    if config.study is None:
        config.study = Path(config.data).stem or "study"
    out = Path(config.out) if config.out else Path("runs") / config.study
    _check_out_folder(out)
    storage, storage_label = open_storage(config.storage, config.workspace)
    study, resumed = _create_or_resume(config, storage, table, space, config.study, fidelity)
    if on_table is not None:  # every setting is checked and the study is open
        on_table(table)
    orphaned = fail_orphaned_trials(study)
    if orphaned:
        logger.warning("marked %d trial(s) of a killed run as failed", orphaned)
    before = len(study.trials)
    queued = _enqueue(study, space, config)
    n_trials = config.trials
    if config.sampler == "grid":
        n_trials = min(n_trials, queued)
        if n_trials == 0:
            logger.warning("every grid combination has already run")
    objective = Objective(config, trial_data, space)
    interrupted = False
    worker_failures: list[dict] = []
    progress = _Progress(study, before, n_trials, started, on_progress)
    try:
        if config.workers == 1 or n_trials <= 1:
            if n_trials:
                study.sampler = make_sampler(config.sampler, config.seed, config.startup_trials)
                study.pruner = make_pruner(
                    config.pruner, cv=bool(config.cv), epochs=max_epochs(space)
                )
                with Interrupt.deferred():
                    study.optimize(
                        objective,
                        n_trials=n_trials,
                        timeout=config.timeout,
                        catch=(AnomtuneError,),
                        callbacks=[progress.callback],
                        gc_after_trial=False,
                    )
        else:
            worker_failures = _run_workers(config, n_trials, progress)
            if worker_failures:
                # Their running trials would stay RUNNING in a journal file.
                fail_orphaned_trials(study)
    except KeyboardInterrupt:
        interrupted = True
        logger.warning("interrupted: finishing with the trials completed so far")
        with contextlib.suppress(Exception):
            fail_orphaned_trials(study)
    tuned = time.perf_counter()
    summary = _summary(config, study, table, prepared, space, storage_label, resumed, argv)
    summary.interrupted = interrupted
    best = select_best(study, config.tolerance)
    refit = None
    if best is not None:
        members = None
        if config.ensembles(table.labels is not None):
            members = select_members(study, config.ensemble)
        refit = refit_best(best, config, prepared, space, objective, members)
        _record_refit(summary, refit, study, config)
    summary.fidelity = _fidelity(fidelity, summary.study["epochs_trained"], refit)
    summary.timings = {"tuning_seconds": round(tuned - started, 3)}
    if refit is not None:
        summary.timings.update(
            refit_seconds=round(refit.seconds, 3),
            total_seconds=round(time.perf_counter() - started, 3),
        )
    if config.workers > 1:
        summary.workers = {"count": config.workers, "failed": worker_failures}
    try:
        RunFolder.write(
            out,
            summary,
            trial_rows=trial_rows(study),
            space_toml=space.to_toml(SPACE_HEADER),
            model=refit.model if refit is not None else None,
        )
    except OSError as exc:
        raise ConfigError(f"cannot write the run folder {out}: {exc.strerror or exc}") from exc
    model = refit.model if refit is not None else None
    return TuneResult(summary, out, model, interrupted, worker_failures)


def _summary(config, study, table, prepared, space, storage_label, resumed, argv) -> RunSummary:
    labeled = table.labels is not None
    trials = study.get_trials(deepcopy=False)
    epochs_total = sum(int(t.user_attrs.get("epochs", 0) or 0) for t in trials)
    return RunSummary(
        anomtune_version=__version__,
        command=argv,
        config={k: v for k, v in asdict(config).items() if k != "enqueue"},
        data=table.describe(),
        columns=[r.to_dict() for r in table.roles],
        notes=list(table.notes),
        split=prepared.split.describe(),
        train_on=config.train_on,
        cv=config.cv,
        seed=config.seed,
        space={"fingerprint": space.fingerprint(), "params": space.to_dict()},
        study={
            "name": study.study_name,
            "storage": storage_label,
            "sampler": config.sampler,
            "startup_trials": startup_trials(config.sampler, config.startup_trials),
            "pruner": "wilcoxon (folds)"
            if config.cv and config.pruner != "none"
            else config.pruner,
            "pruner_settings": pruner_settings(
                config.pruner, cv=bool(config.cv), epochs=max_epochs(space)
            ),
            "objectives": config.objective_names(labeled),
            "directions": [d.name.lower() for d in study.directions],
            "resumed": resumed,
            "trials": count_states(trials),
            "epochs_trained": epochs_total,
        },
        versions=versions(),
        anytime=anytime(trials, maximize=study.directions[0].name == "MAXIMIZE"),
    )


def _record_refit(summary: RunSummary, refit: Refit, study, config: TuneConfig) -> None:
    best = refit.trial
    summary.best = {
        "number": best.number,
        "params": refit.params,
        "tuned_params": dict(best.params),
        "values": list(best.values),
        "value": float(best.values[0]),
        "seed": refit.seed,
        "epochs": refit.epochs,
    }
    summary.metrics = refit.metrics
    summary.threshold = refit.model.threshold
    summary.threshold_rule = refit.model.threshold_rule
    summary.refit = refit.check
    summary.note = refit.note
    summary.ensemble = refit.ensemble
    if len(study.directions) > 1:
        summary.pareto_front = [
            {"number": t.number, "values": list(t.values)} for t in study.best_trials
        ]
        summary.best_rule = (
            f"Pareto-optimal trial with the lowest {config.objectives[1]} among those within "
            f"{config.tolerance} of the best {config.objectives[0]}"
        )


def _fidelity(trials: dict, epochs_trained: int, refit: Refit | None) -> dict:
    """What summary.json records of the rows the trials and the refit trained on."""
    out = {
        "trials": trials,
        "rule": "each trial trains on at most trial_rows training rows and is scored on at "
        "most trial_rows validation rows (seeded samples keeping the anomalies' share); "
        "the best trial is refitted on every training row for at most its best epoch "
        "count, scored on every validation row after each epoch, keeping its best epoch; "
        "the trial's own network is kept instead when it is better on every validation row",
        # Trials that stop early count their epochs; cross-validated trials count
        # passes over each fold's rows as passes over the trial rows.
        "rows_trained": epochs_trained * trials["train_rows"],
    }
    if refit is not None:
        rows_seen = refit.epochs_run * refit.train_rows
        out["refit"] = {
            "train_rows": refit.train_rows,
            "epochs": refit.epochs,
            "epochs_run": refit.epochs_run,
            "rows_seen": rows_seen,
        }
        out["rows_trained"] += rows_seen
        if refit.ensemble is not None:
            # The refits of the ensemble's other trials, on every training row.
            out["refit"]["member_epochs_run"] = refit.member_epochs_run
            out["rows_trained"] += refit.member_epochs_run * refit.train_rows
        if refit.sample_epochs_run:
            # The trials' own networks, rebuilt on their samples to compare with the refits.
            out["refit"]["sample_epochs_run"] = refit.sample_epochs_run
            out["rows_trained"] += refit.sample_epochs_run * refit.trial_rows
    return out


def trial_view(config: TuneConfig, prepared: Prepared) -> tuple[Prepared, dict]:
    """The rows the trials train and are scored on (``--trial-rows``), and their record.

    Seeded by the study's seed, so every worker and every resumed run samples
    the same rows.
    """
    return prepared.sampled(config.trial_rows, seed=config.seed)


def versions() -> dict:
    """Versions of Python and every library a result depends on."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version(), "anomtune": __version__}
    for dist in ("torch", "optuna", "scikit-learn", "numpy", "pandas", "onnx", "onnxruntime"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = None
    return out


def trial_rows(study) -> list[dict]:
    """One flat dict per trial: number, state, value(s), params, epochs, duration."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        row = {
            "number": t.number,
            "state": t.state.name.lower(),
            "value": t.values[0] if t.values else None,
        }
        if t.values and len(t.values) > 1:
            row["value_2"] = t.values[1]
        if "residual_value" in t.user_attrs:  # the residual score's (anomtune.ensemble)
            row["residual_value"] = t.user_attrs["residual_value"]
        duration = t.duration.total_seconds() if t.duration is not None else None
        row.update(
            epochs=t.user_attrs.get("epochs"),
            best_epoch=t.user_attrs.get("best_epoch"),
            duration_s=round(duration, 3) if duration is not None else None,
            seed=t.user_attrs.get("seed"),
            fail_reason=fail_reason(t),
        )
        for name, value in sorted(t.params.items()):
            row[f"params_{name}"] = value
        rows.append(row)
    return rows


# -- creating and resuming ---------------------------------------------------------


def _build(config: TuneConfig, table: Table | None = None):
    if table is None:
        table = config.read()
    if table.labels is None:
        if config.cv or config.objectives:
            raise ConfigError("--cv and --objectives need labeled data (--label)")
        logger.warning(
            "no label column: trials are compared on the validation reconstruction error, "
            "and the threshold is the training-score quantile"
        )
    prepared = prepare(table, seed=config.seed, train_on=config.train_on)
    space = default_space(prepared.X.shape[1])
    if config.space:
        space = load_space(config.space, base=space)
    return table, prepared, space


def _study_attrs(config: TuneConfig, table: Table, space: SearchSpace, fidelity: dict) -> dict:
    return {
        "anomtune.trial_rows": [fidelity["train_rows"], fidelity["val_rows"]],
        "anomtune.data_fingerprint": table.fingerprint,
        "anomtune.space_fingerprint": space.fingerprint(),
        "anomtune.objectives": config.objective_names(table.labels is not None),
        "anomtune.seed": config.seed,
        "anomtune.train_on": config.train_on,
        "anomtune.cv": config.cv,
    }


def _create_or_resume(
    config: TuneConfig, storage, table: Table, space: SearchSpace, name: str, fidelity: dict
):
    import optuna

    attrs = _study_attrs(config, table, space, fidelity)
    directions = config.directions(table.labels is not None)
    existing = {s.study_name for s in optuna.get_all_study_summaries(storage)}
    if name in existing:
        return _load_checked(storage, name, attrs, directions), True
    try:
        study = optuna.create_study(study_name=name, storage=storage, directions=directions)
    except optuna.exceptions.DuplicatedStudyError:
        # Another process created it a moment ago: join it like a resumed study.
        return _load_checked(storage, name, attrs, directions), True
    for key, value in attrs.items():
        study.set_user_attr(key, value)
    return study, False


def _load_checked(storage, name: str, attrs: dict, directions: list[str]):
    """The existing study ``name``, refused if it was made for other data or settings."""
    import optuna

    study = optuna.load_study(study_name=name, storage=storage)
    recorded = study.user_attrs
    for key, value in attrs.items():
        if key in recorded and recorded[key] != value:
            what = key.split(".", 1)[1].replace("_", " ")
            raise ConfigError(
                f"study {name!r} was created with another {what} "
                f"({recorded[key]!r}, now {value!r}); pick a new name with --study"
            )
    if [d.name.lower() for d in study.directions] != directions:
        raise ConfigError(f"study {name!r} optimises other objectives; use --study NEW")
    return study


def _enqueue(study, space: SearchSpace, config: TuneConfig) -> int:
    """Queue grid combinations not yet run, and the user's warm-start parameters."""
    queued = 0
    for params in config.enqueue:
        study.enqueue_trial(space.tunable(params), skip_if_exists=True)
        queued += 1
    if config.sampler != "grid":
        return queued
    # Every trial counts as tried, whatever its state: finished, running or queued.
    done = {_key(space.tunable(t.params)) for t in study.get_trials(deepcopy=False)}
    for combo in space.grid():
        tunable = space.tunable(combo)
        if _key(tunable) not in done:
            study.enqueue_trial(tunable)
            queued += 1
    return queued


def _key(params: dict) -> str:
    return repr(sorted(params.items()))


def _check_out_folder(out: Path) -> None:
    """Refuse a run folder that cannot be written, before the study is touched."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: exists and is not a folder")
    parent = out.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise ConfigError(f"--out {out}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"--out {out}: cannot write in {parent}")


# -- workers and progress ----------------------------------------------------------


def _run_workers(config: TuneConfig, n_trials: int, progress: _Progress) -> list[dict]:
    """Run the worker processes; the ones that exited with an error, with their codes."""
    ctx = multiprocessing.get_context("spawn")
    share = [
        n_trials // config.workers + (i < n_trials % config.workers) for i in range(config.workers)
    ]
    threads = max(1, (os.cpu_count() or 1) // config.workers)
    config_dict = asdict(config)
    config_dict["enqueue"] = []  # queued once, by this process
    procs = [
        ctx.Process(target=_worker_main, args=(config_dict, n, i, threads), daemon=False)
        for i, n in enumerate(share)
        if n > 0
    ]
    for p in procs:
        p.start()
    try:
        while any(p.is_alive() for p in procs):
            for p in procs:
                p.join(timeout=1.0)
            progress.poll()
    except KeyboardInterrupt:
        for p in procs:
            p.join(timeout=30)
        raise
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
                p.join()
    progress.poll()
    return [
        {"worker": index, "exit_code": p.exitcode}
        for index, p in enumerate(procs)
        if p.exitcode not in (0, None)
    ]


def _worker_main(config_dict: dict, n_trials: int, worker_index: int, threads: int) -> None:
    """Entry point of a worker process: load the study and run its share of trials."""
    import optuna
    import torch

    torch.set_num_threads(threads)
    # A worker's failed trials are recorded in the study; the parent reports them.
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    config = TuneConfig(**config_dict)
    _, prepared, space = _build(config)
    trial_data, _ = trial_view(config, prepared)
    storage, _ = open_storage(config.storage, config.workspace)
    study = optuna.load_study(
        study_name=config.study,
        storage=storage,
        sampler=make_sampler(config.sampler, config.seed + worker_index, config.startup_trials),
        pruner=make_pruner(config.pruner, cv=bool(config.cv), epochs=max_epochs(space)),
    )
    with contextlib.suppress(KeyboardInterrupt), Interrupt.deferred():
        study.optimize(
            Objective(config, trial_data, space),
            n_trials=n_trials,
            timeout=config.timeout,
            catch=(AnomtuneError,),
            gc_after_trial=False,
        )


class _Progress:
    """Counts this run's trials and hands a snapshot to the caller."""

    def __init__(self, study, before: int, total: int, started: float, sink):
        self.study, self.before, self.total = study, before, total
        self.started, self.sink = started, sink

    def snapshot(self) -> dict:
        trials = self.study.get_trials(deepcopy=False)[self.before :]
        finished = [t for t in trials if t.state.is_finished()]
        counts = count_states(finished)
        best = None
        if len(self.study.directions) == 1:
            with contextlib.suppress(ValueError):
                best = self.study.best_value
        return {
            "done": len(finished),
            "total": self.total,
            "complete": counts["complete"],
            "pruned": counts["pruned"],
            "failed": counts["fail"],
            "best": best,
            "elapsed": time.perf_counter() - self.started,
        }

    def callback(self, study, trial) -> None:
        self.poll()

    def poll(self) -> None:
        if self.sink is not None:
            self.sink(self.snapshot())
