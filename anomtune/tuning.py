"""The Optuna study: search autoencoders against labeled validation data.

Each trial samples detector parameters from a :class:`~anomtune.space.SearchSpace`,
trains on the normal training rows and, after every epoch, scores the
validation rows. The trial's value is the best validation metric over its
epochs (the epoch count is chosen on validation too); that running best is
reported to the pruner, which stops weak trials early. Trials whose
validation metric has not improved for ``patience`` epochs stop by
themselves.

With ``cv=K`` the train and validation rows are pooled into K stratified
folds; a trial's value is the mean over folds of the best held-out metric,
and each finished fold is one step for Optuna's Wilcoxon pruner, which stops
a trial once its folds are significantly worse than the best trial's.

After the study the best trial is refitted with its recorded seed for its
best epoch count, its threshold is set to the one that maximises F1 on the
validation rows, and the test rows are scored once.
"""

from __future__ import annotations

import contextlib
import csv
import logging
import multiprocessing
import os
import platform
import signal
import socket
import statistics
import tempfile
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from anomtune import __version__
from anomtune.data import Table, read_table, stratified_folds, training_rows
from anomtune.errors import AnomtuneError, ConfigError, TrainingError
from anomtune.errors import first_line as _first_line
from anomtune.metrics import auc_pr, auc_roc, best_f1_threshold, evaluate
from anomtune.persist import replace_dir, save_model, write_json_atomic
from anomtune.pipeline import Prepared, check_param_names, prepare
from anomtune.preprocess import Preprocessor
from anomtune.space import SearchSpace, default_space, load_space

__all__ = [
    "METRICS",
    "PRUNERS",
    "SAMPLERS",
    "SPACE_HEADER",
    "TuneConfig",
    "TuneResult",
    "open_storage",
    "refine_trials",
    "run_study",
]

logger = logging.getLogger(__name__)

SAMPLERS = ("grid", "random", "tpe", "gp", "cmaes", "qmc")
PRUNERS = ("none", "median", "sha", "hyperband")
DEFAULT_PRUNER = "median"
METRICS = ("auc-roc", "auc-pr", "f1")
SECONDARY = ("latency", "size")
PATIENCE = 20
SPACE_HEADER = (
    "# anomtune search space. Each [table] is a detector parameter: 'choices' for a\n"
    "# categorical one, 'low'/'high' (and 'log') for a range, 'value' to fix it.\n"
    "# 'when' makes it exist only for some values of an earlier parameter; 'grid'\n"
    "# lists the values grid search tries. A top-level 'variants = [...]' restricts\n"
    "# the variants. Use with: anomtune tune DATA --space THIS_FILE\n"
)


@dataclass
class TuneConfig:
    """Everything a tuning run depends on; recorded with its results."""

    data: str
    label: str | None = None
    positive: str | None = None
    features: list[str] | None = None
    exclude: list[str] = field(default_factory=list)
    id_column: str | None = None
    categorical: list[str] = field(default_factory=list)
    sep: str = ","
    metric: str = "auc-roc"
    objectives: list[str] | None = None
    tolerance: float = 0.005
    sampler: str = "tpe"
    pruner: str = DEFAULT_PRUNER
    trials: int = 30
    timeout: float | None = None
    seed: int = 0
    workers: int = 1
    cv: int | None = None
    train_on: str = "normal"
    space: str | None = None
    enqueue: list[dict] = field(default_factory=list)
    study: str | None = None
    storage: str | None = None
    workspace: str = ".anomtune"
    out: str | None = None
    patience: int = PATIENCE

    def read(self) -> Table:
        return read_table(
            self.data,
            label=self.label,
            positive=self.positive,
            features=self.features,
            exclude=self.exclude,
            id_column=self.id_column,
            categorical=self.categorical,
            sep=self.sep,
        )

    def check(self) -> None:
        if self.sampler not in SAMPLERS:
            raise ConfigError(f"sampler must be one of {', '.join(SAMPLERS)}, not {self.sampler!r}")
        if self.pruner not in PRUNERS:
            raise ConfigError(f"pruner must be one of {', '.join(PRUNERS)}, not {self.pruner!r}")
        if self.metric not in METRICS:
            raise ConfigError(f"metric must be one of {', '.join(METRICS)}, not {self.metric!r}")
        if self.trials < 1:
            raise ConfigError(f"--trials must be at least 1, not {self.trials}")
        if self.workers < 1:
            raise ConfigError(f"--workers must be at least 1, not {self.workers}")
        if self.timeout is not None and self.timeout <= 0:
            raise ConfigError(f"--timeout must be positive, not {self.timeout}")
        if self.cv is not None and self.cv < 2:
            raise ConfigError(f"--cv needs at least 2 folds, not {self.cv}")
        if self.train_on not in ("normal", "all"):
            raise ConfigError(f"train_on must be 'normal' or 'all', not {self.train_on!r}")
        if self.objectives is not None:
            objs = list(self.objectives)
            if len(objs) != 2 or objs[0] not in METRICS or objs[1] not in SECONDARY:
                raise ConfigError(
                    "--objectives takes a quality metric and a cost, e.g. auc-pr,latency "
                    f"(metrics: {', '.join(METRICS)}; costs: {', '.join(SECONDARY)})"
                )
            if self.sampler in ("cmaes", "gp"):
                raise ConfigError(
                    f"the {self.sampler} sampler optimises one objective; "
                    "use tpe, random, qmc or grid with --objectives"
                )
            if self.cv is not None:
                raise ConfigError("--objectives cannot be combined with --cv")


@dataclass
class TuneResult:
    """What a finished (or interrupted) run produced."""

    summary: dict
    out: Path | None
    interrupted: bool = False
    worker_failures: list[dict] = field(default_factory=list)


# -- storage and study ------------------------------------------------------


def open_storage(storage: str | None, workspace: str | Path = ".anomtune"):
    """An Optuna storage from a URL or a file path (``None``: the workspace journal).

    Database URLs (``sqlite:///``, ``postgresql://``, ...) get an
    ``RDBStorage`` with heartbeats, so trials of a killed worker are marked
    failed. Any other value is a journal file, which is safe for several
    processes on one machine.
    """
    import optuna
    from optuna.storages.journal import JournalFileBackend

    if storage is None:
        Path(workspace).mkdir(parents=True, exist_ok=True)
        storage = str(Path(workspace) / "studies.journal")
    if "://" in storage:
        return _rdb_storage(storage), storage
    path = Path(storage)
    if path.is_dir():
        raise ConfigError(f"storage {storage!r} is a folder; give a journal file path or a URL")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # An absolute path: the lock is a symlink to the journal, and with a
        # relative target a lock left by a killed process would resolve to
        # nothing, so it would never be taken over after its grace period.
        backend = JournalFileBackend(str(path.resolve()))
        return optuna.storages.JournalStorage(backend), str(path)
    except OSError as exc:
        raise ConfigError(f"cannot open journal storage {storage!r}: {exc.strerror}") from exc


def _rdb_storage(url: str, attempts: int = 8):
    """An Optuna ``RDBStorage`` with heartbeats; its tables are created if missing.

    Processes that open a new database at the same moment all create the
    tables; PostgreSQL lets one of them win and fails the others with a
    unique-key or "already exists" error, so those try again (and find the
    tables made).
    """
    import optuna
    from sqlalchemy import exc as sa_exc

    for attempt in range(attempts):
        try:
            # Heartbeats are marked experimental; the warning is not the user's business.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(url, heartbeat_interval=30, grace_period=120)
        except (sa_exc.IntegrityError, sa_exc.ProgrammingError) as exc:
            if attempt == attempts - 1:
                raise ConfigError(f"cannot open storage {url!r}: {_first_line(exc)}") from exc
            time.sleep(0.05 * (attempt + 1))
        except Exception as exc:  # SQLAlchemy raises many kinds for a bad URL
            raise ConfigError(f"cannot open storage {url!r}: {_first_line(exc)}") from exc
    raise AssertionError("unreachable")


def _directions(config: TuneConfig, labeled: bool) -> list[str]:
    if not labeled:
        return ["minimize"]
    if config.objectives:
        return ["maximize", "minimize"]
    return ["maximize"]


def _objective_names(config: TuneConfig, labeled: bool) -> list[str]:
    if not labeled:
        return ["val_loss"]
    if config.objectives:
        return list(config.objectives)
    return [config.metric]


def make_sampler(name: str, seed: int, space: SearchSpace, n_objectives: int):
    """The Optuna sampler called ``name``, seeded."""
    import optuna

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    if name in ("random", "grid"):
        # Grid combinations are enqueued; random sampling only fills any gap.
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "tpe":
        return optuna.samplers.TPESampler(
            seed=seed,
            multivariate=True,
            group=True,
            n_startup_trials=10,
        )
    if name == "gp":
        return optuna.samplers.GPSampler(
            seed=seed, n_startup_trials=10, warn_independent_sampling=False
        )
    if name == "cmaes":
        return optuna.samplers.CmaEsSampler(
            seed=seed,
            n_startup_trials=5,
            warn_independent_sampling=False,
            independent_sampler=optuna.samplers.TPESampler(seed=seed),
        )
    return optuna.samplers.QMCSampler(seed=seed, scramble=True, warn_independent_sampling=False)


def pruner_settings(name: str, *, cv: bool, epochs: int) -> dict:
    """The Optuna pruner class and arguments that ``--pruner name`` stands for."""
    if name == "none":
        return {"class": "NopPruner"}
    if cv:
        return {"class": "WilcoxonPruner", "p_threshold": 0.1, "n_startup_steps": 2}
    if name == "median":
        return {"class": "MedianPruner", "n_startup_trials": 5, "n_warmup_steps": 5}
    if name == "sha":
        return {
            "class": "SuccessiveHalvingPruner",
            "min_resource": 4,
            "reduction_factor": 4,
            "min_early_stopping_rate": 0,
        }
    return {
        "class": "HyperbandPruner",
        "min_resource": 10,
        "max_resource": max(epochs, 11),
        "reduction_factor": 3,
    }


def make_pruner(name: str, *, cv: bool, epochs: int):
    """The Optuna pruner called ``name`` (Wilcoxon over folds with ``cv``)."""
    import optuna

    settings = dict(pruner_settings(name, cv=cv, epochs=epochs))
    return getattr(optuna.pruners, settings.pop("class"))(**settings)


# -- the objective ----------------------------------------------------------


def _metric_fn(name: str) -> Callable[[np.ndarray, np.ndarray], float]:
    if name == "auc-roc":
        return auc_roc
    if name == "auc-pr":
        return auc_pr
    return lambda y, s: best_f1_threshold(y, s)[1]


def trial_seed(seed: int, number: int) -> int:
    """The distinct, reproducible training seed of trial ``number``."""
    return (seed * 1_000_003 + number * 7919 + 17) % (2**31 - 1)


class _Interrupt:
    """Ctrl-C during a study, acted on between epochs and trials.

    A KeyboardInterrupt raised at an arbitrary point can land inside the
    storage's lock handling (Optuna's journal lock then fails with an
    error of its own); instead the first SIGINT only sets a flag, which the
    objective turns into KeyboardInterrupt at its next epoch or trial. A
    second SIGINT interrupts at once.
    """

    requested = False

    @classmethod
    @contextlib.contextmanager
    def deferred(cls):
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum, frame):
            if cls.requested:
                raise KeyboardInterrupt
            cls.requested = True

        cls.requested = False
        previous = signal.signal(signal.SIGINT, handler)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)
            requested, cls.requested = cls.requested, False
        if requested:  # after the last epoch of the last trial
            raise KeyboardInterrupt

    @classmethod
    def check(cls) -> None:
        if cls.requested:
            raise KeyboardInterrupt


class _EpochTracker:
    """Per-epoch validation: keeps the best value and epoch, reports, prunes."""

    def __init__(self, evaluate, trial, *, maximize, patience, report=True):
        self.evaluate = evaluate
        self.trial, self.maximize, self.patience, self.report = trial, maximize, patience, report
        self.best: float | None = None
        self.best_epoch = 0
        self.epochs = 0

    def __call__(self, epoch: int, detector) -> bool:
        import optuna

        _Interrupt.check()
        self.epochs = epoch
        value = self.evaluate(detector)
        if value is not None and (
            self.best is None or (value > self.best if self.maximize else value < self.best)
        ):
            self.best, self.best_epoch = value, epoch
        if self.report and self.best is not None:
            self.trial.report(self.best, epoch)
            if self.trial.should_prune():
                self.trial.set_user_attr("epochs", epoch)
                self.trial.set_user_attr("best_epoch", self.best_epoch)
                raise optuna.TrialPruned(f"pruned at epoch {epoch}")
        return epoch - self.best_epoch >= self.patience


def labeled_value(metric, X, y):
    """Validation metric of a detector on labeled rows (None if scores are not finite)."""

    def evaluate(detector) -> float | None:
        scores = detector.anomaly_score(X)
        return float(metric(y, scores)) if np.isfinite(scores).all() else None

    return evaluate


def unlabeled_value(X, X_train):
    """Mean squared reconstruction error in units of each column's training spread.

    Used when there are no labels. Measured in the same units whatever the
    variant and scaler, so that trials compare (a min-max scaled model's raw
    errors are smaller than a standardised one's for the same fit).
    """
    spread = X_train.std(axis=0).astype(np.float64)
    spread[~(spread > 1e-12)] = 1.0

    def evaluate(detector) -> float | None:
        errors = detector.feature_errors(X).astype(np.float64)
        ratio = (detector.scaler_.scale_.astype(np.float64) / spread) ** 2
        value = float((errors * ratio).mean())
        return value if np.isfinite(value) else None

    return evaluate


class Objective:
    """The function each trial runs; built from a config in every worker."""

    def __init__(self, config: TuneConfig, prepared: Prepared, space: SearchSpace):
        self.config = config
        self.prepared = prepared
        self.space = space
        self.labeled = prepared.y is not None
        self.metric = _metric_fn(config.objectives[0] if config.objectives else config.metric)
        X_val, y_val = prepared.rows("val")
        if self.labeled:
            self.validation = labeled_value(self.metric, X_val, y_val)
        else:
            self.validation = unlabeled_value(X_val, prepared.rows("train")[0])
        self.folds = None
        if config.cv:
            pool = np.concatenate([prepared.split.train, prepared.split.val])
            self.folds = stratified_folds(prepared.y, pool, k=config.cv, seed=config.seed)

    def __call__(self, trial) -> float | tuple[float, float]:
        _Interrupt.check()
        started = time.perf_counter()
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        params = self.space.sample(trial)
        check_param_names(params)
        seed = trial_seed(self.config.seed, trial.number)
        trial.set_user_attr("seed", seed)
        try:
            if self.folds is not None:
                value, best_epoch, epochs = self._cross_validate(trial, params, seed)
                values: float | tuple = value
            else:
                value, best_epoch, epochs, detector = self._single(trial, params, seed)
                values = value
                if self.config.objectives:
                    values = (value, self._cost(detector))
        except AnomtuneError as exc:
            trial.set_user_attr("fail_reason", str(exc))
            raise
        except ValueError as exc:
            # The detector rejects parameter combinations it cannot build.
            trial.set_user_attr("fail_reason", str(exc))
            raise TrainingError(str(exc)) from exc
        trial.set_user_attr("epochs", epochs)
        trial.set_user_attr("best_epoch", best_epoch)
        trial.set_user_attr("duration_s", round(time.perf_counter() - started, 3))
        return values

    def _detector(self, params: dict, seed: int):
        from anomtune.detector import AutoencoderDetector

        return AutoencoderDetector(**params, random_state=seed)

    def _single(self, trial, params, seed):
        X_train, _ = self.prepared.rows("train")
        tracker = _EpochTracker(
            self.validation,
            trial,
            maximize=self.labeled,
            patience=self.config.patience,
            report=not self.config.objectives,
        )
        detector = self._detector(params, seed)
        detector.fit(X_train, epoch_callback=tracker)
        trial.set_user_attr("training_status", detector.training_status_)
        if tracker.best is None:
            raise TrainingError(
                f"training produced no finite validation score ({detector.training_status_})"
            )
        return tracker.best, tracker.best_epoch, tracker.epochs, detector

    def _cross_validate(self, trial, params, seed):
        import optuna

        table = self.prepared.table
        y = self.prepared.y
        values, best_epochs, epochs = [], [], 0
        for k, (fit_rows, held_rows) in enumerate(self.folds):
            fit_rows = training_rows(fit_rows, y, self.config.train_on)
            pre = Preprocessor(table.schema).fit(table.features.iloc[fit_rows])
            X_fit = pre.transform(table.features.iloc[fit_rows])
            X_held = pre.transform(table.features.iloc[held_rows])
            tracker = _EpochTracker(
                labeled_value(self.metric, X_held, y[held_rows]),
                trial,
                maximize=True,
                patience=self.config.patience,
                report=False,
            )
            self._detector(params, seed + k).fit(X_fit, epoch_callback=tracker)
            if tracker.best is None:
                raise TrainingError(f"fold {k + 1}: no finite validation score")
            values.append(tracker.best)
            best_epochs.append(tracker.best_epoch)
            epochs += tracker.epochs
            trial.report(tracker.best, k)
            if k + 1 < len(self.folds) and trial.should_prune():
                trial.set_user_attr("epochs", epochs)
                trial.set_user_attr("fold_values", values)
                raise optuna.TrialPruned(f"pruned after fold {k + 1}")
        trial.set_user_attr("fold_values", values)
        return float(np.mean(values)), int(statistics.median_low(best_epochs)), epochs

    def _cost(self, detector) -> float:
        if self.config.objectives[1] == "size":
            return float(sum(p.numel() for p in detector.net_.parameters()))
        X_val, _ = self.prepared.rows("val")
        timings = []
        for _ in range(5):
            start = time.perf_counter()
            detector.anomaly_score(X_val)
            timings.append(time.perf_counter() - start)
        return 1000.0 * statistics.median(timings) * 1000.0 / max(len(X_val), 1)


# -- running ------------------------------------------------------------------


def _study_attrs(config: TuneConfig, table: Table, space: SearchSpace) -> dict:
    return {
        "anomtune.data_fingerprint": table.fingerprint,
        "anomtune.space_fingerprint": space.fingerprint(),
        "anomtune.objectives": _objective_names(config, table.labels is not None),
        "anomtune.seed": config.seed,
        "anomtune.train_on": config.train_on,
        "anomtune.cv": config.cv,
    }


def _create_or_resume(config: TuneConfig, storage, table: Table, space: SearchSpace, name: str):
    import optuna

    labeled = table.labels is not None
    attrs = _study_attrs(config, table, space)
    directions = _directions(config, labeled)
    existing = {s.study_name: s for s in optuna.get_all_study_summaries(storage)}
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


def _fail_reason(trial) -> str:
    """Why a trial failed; empty for the others."""
    from optuna.trial import TrialState

    if trial.state != TrialState.FAIL:
        return ""
    return trial.user_attrs.get("fail_reason") or (
        "no reason recorded: its worker process ended or lost the storage "
        "(a database storage fails such a trial when its heartbeat stops)"
    )


def fail_orphaned_trials(study) -> int:
    """Mark as failed the running trials whose worker process on this host is gone.

    Database storages do this with heartbeats; a journal file has none, so a
    trial left ``RUNNING`` by a killed process is recognised by its recorded
    host and process id.
    """
    from optuna.trial import TrialState

    host = socket.gethostname()
    failed = 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = t.user_attrs.get("worker", "")
        w_host, _, pid = worker.rpartition(":")
        if w_host != host or not pid.isdigit() or _alive(int(pid)):
            continue
        study._storage.set_trial_user_attr(
            t._trial_id, "fail_reason", "worker process ended while the trial ran"
        )
        study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
        failed += 1
    return failed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _enqueue(study, space: SearchSpace, config: TuneConfig, resumed: bool) -> int:
    """Queue grid combinations not yet run, and the user's warm-start parameters."""
    from optuna.trial import TrialState

    queued = 0
    for params in config.enqueue:
        study.enqueue_trial(space.tunable(params), skip_if_exists=True)
        queued += 1
    if config.sampler != "grid":
        return queued
    done = {
        _key(space.tunable(t.params))
        for t in study.get_trials(deepcopy=False)
        if t.state
        in (
            TrialState.COMPLETE,
            TrialState.PRUNED,
            TrialState.FAIL,
            TrialState.RUNNING,
            TrialState.WAITING,
        )
    }
    for combo in space.grid():
        tunable = space.tunable(combo)
        if _key(tunable) not in done:
            study.enqueue_trial(tunable)
            queued += 1
    return queued


def _key(params: dict) -> str:
    return repr(sorted(params.items()))


def _build(config: TuneConfig):
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


def _threads_per_worker(workers: int) -> int:
    return max(1, (os.cpu_count() or 1) // workers)


def _worker_main(config_dict: dict, n_trials: int, worker_index: int, threads: int) -> None:
    """Entry point of a worker process: load the study and run its share of trials."""
    import optuna
    import torch

    torch.set_num_threads(threads)
    # A worker's failed trials are recorded in the study; the parent reports them.
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    config = TuneConfig(**config_dict)
    _, prepared, space = _build(config)
    storage, _ = open_storage(config.storage, config.workspace)
    study = optuna.load_study(
        study_name=config.study,
        storage=storage,
        sampler=make_sampler(
            config.sampler, config.seed + worker_index, space, len(_directions(config, True))
        ),
        pruner=make_pruner(config.pruner, cv=bool(config.cv), epochs=_max_epochs(space)),
    )
    with contextlib.suppress(KeyboardInterrupt), _Interrupt.deferred():
        study.optimize(
            Objective(config, prepared, space),
            n_trials=n_trials,
            timeout=config.timeout,
            catch=(AnomtuneError,),
            gc_after_trial=False,
        )


def _max_epochs(space: SearchSpace) -> int:
    try:
        p = space["epochs"]
    except KeyError:
        return 50
    return int(p.value if p.type == "fixed" else p.high)


def run_study(
    config: TuneConfig,
    *,
    on_progress: Callable[[dict], None] | None = None,
    argv: list[str] | None = None,
) -> TuneResult:
    """Run (or resume) a study, refit the best trial and write the run folder.

    ``on_progress`` receives a dict (trials done of total, pruned, failed,
    best value, elapsed seconds) after every trial.
    """
    import optuna

    config.check()
    # Optuna's records go through the standard logging tree, where the caller
    # decides what is shown.
    optuna.logging.disable_default_handler()
    optuna.logging.enable_propagation()
    started = time.perf_counter()
    table, prepared, space = _build(config)
    if config.study is None:
        config.study = Path(config.data).stem or "study"
    out = Path(config.out) if config.out else Path("runs") / config.study
    _check_out_folder(out)
    storage, storage_label = open_storage(config.storage, config.workspace)
    study, resumed = _create_or_resume(config, storage, table, space, config.study)
    orphaned = fail_orphaned_trials(study)
    if orphaned:
        logger.warning("marked %d trial(s) of a killed run as failed", orphaned)
    before = len(study.trials)
    queued = _enqueue(study, space, config, resumed)
    n_trials = config.trials
    if config.sampler == "grid":
        n_trials = min(n_trials, queued)
        if n_trials == 0:
            logger.warning("every grid combination has already run")
    objective = Objective(config, prepared, space)
    interrupted = False
    worker_failures: list[dict] = []
    progress = _Progress(study, before, n_trials, started, on_progress)
    try:
        if config.workers == 1 or n_trials <= 1:
            if n_trials:
                study.sampler = make_sampler(
                    config.sampler, config.seed, space, len(study.directions)
                )
                study.pruner = make_pruner(
                    config.pruner, cv=bool(config.cv), epochs=_max_epochs(space)
                )
                with _Interrupt.deferred():
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
    summary = _finish(
        config,
        study,
        objective,
        table,
        prepared,
        space,
        storage_label,
        started,
        tuned,
        resumed,
        interrupted,
        argv,
    )
    if config.workers > 1:
        summary["workers"] = {"count": config.workers, "failed": worker_failures}
    try:
        _write_run(out, study, summary, objective)
    except OSError as exc:
        raise ConfigError(f"cannot write the run folder {out}: {exc.strerror or exc}") from exc
    return TuneResult(summary, out, interrupted, worker_failures)


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


def _run_workers(config: TuneConfig, n_trials: int, progress: _Progress) -> list[dict]:
    """Run the worker processes; the ones that exited with an error, with their codes."""
    ctx = multiprocessing.get_context("spawn")
    share = [
        n_trials // config.workers + (i < n_trials % config.workers) for i in range(config.workers)
    ]
    threads = _threads_per_worker(config.workers)
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


class _Progress:
    """Counts this run's trials and hands a snapshot to the caller."""

    def __init__(self, study, before: int, total: int, started: float, sink):
        self.study, self.before, self.total, self.started, self.sink = (
            study,
            before,
            total,
            started,
            sink,
        )

    def snapshot(self) -> dict:
        from optuna.trial import TrialState

        trials = self.study.get_trials(deepcopy=False)[self.before :]
        finished = [t for t in trials if t.state.is_finished()]
        best = None
        if len(self.study.directions) == 1:
            with contextlib.suppress(ValueError):
                best = self.study.best_value
        return {
            "done": len(finished),
            "total": self.total,
            "complete": sum(t.state == TrialState.COMPLETE for t in finished),
            "pruned": sum(t.state == TrialState.PRUNED for t in finished),
            "failed": sum(t.state == TrialState.FAIL for t in finished),
            "best": best,
            "elapsed": time.perf_counter() - self.started,
        }

    def callback(self, study, trial) -> None:
        self.poll()

    def poll(self) -> None:
        if self.sink is not None:
            self.sink(self.snapshot())


def select_best(study, config: TuneConfig):
    """The best trial; for two objectives, the documented trade-off rule.

    With ``--objectives quality,cost`` the candidates are the Pareto-optimal
    trials whose quality is within ``tolerance`` of the best quality among
    them; of those, the one with the lowest cost wins (ties: higher quality).
    """
    from optuna.trial import TrialState

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        return None
    if len(study.directions) == 1:
        return study.best_trial
    front = study.best_trials
    top = max(t.values[0] for t in front)
    near = [t for t in front if t.values[0] >= top - config.tolerance]
    return min(near, key=lambda t: (t.values[1], -t.values[0]))


def _finish(
    config,
    study,
    objective,
    table,
    prepared,
    space,
    storage_label,
    started,
    tuned,
    resumed,
    interrupted,
    argv,
) -> dict:
    import optuna
    from optuna.trial import TrialState

    best = select_best(study, config)
    counts = {
        s.name.lower(): 0
        for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING)
    }
    epochs_total = 0
    for t in study.get_trials(deepcopy=False):
        key = t.state.name.lower()
        counts[key] = counts.get(key, 0) + 1
        epochs_total += int(t.user_attrs.get("epochs", 0) or 0)
    summary: dict = {
        "anomtune_version": __version__,
        "command": argv,
        "config": {k: v for k, v in asdict(config).items() if k != "enqueue"},
        "data": table.describe(),
        "split": prepared.split.describe(),
        "train_on": config.train_on,
        "cv": config.cv,
        "seed": config.seed,
        "space": {"fingerprint": space.fingerprint(), "params": space.to_dict()},
        "study": {
            "name": study.study_name,
            "storage": storage_label,
            "sampler": config.sampler,
            "pruner": "wilcoxon (folds)"
            if config.cv and config.pruner != "none"
            else config.pruner,
            "pruner_settings": pruner_settings(
                config.pruner, cv=bool(config.cv), epochs=_max_epochs(space)
            ),
            "objectives": _objective_names(config, objective.labeled),
            "directions": [d.name.lower() for d in study.directions],
            "resumed": resumed,
            "trials": counts,
            "epochs_trained": epochs_total,
        },
        "versions": versions(),
        "interrupted": interrupted,
    }
    if best is None:
        summary["best"] = None
        summary["timings"] = {"tuning_seconds": round(tuned - started, 3)}
        return summary
    params = space.sample(optuna.trial.FixedTrial(best.params))
    best_epoch = int(best.user_attrs.get("best_epoch") or params.get("epochs", 50))
    seed = int(best.user_attrs["seed"])
    refit_params = {**params, "epochs": max(1, best_epoch)}
    detector = objective._detector(refit_params, seed)
    X_train, _ = prepared.rows("train")
    refit_start = time.perf_counter()
    detector.fit(X_train)
    X_val, y_val = prepared.rows("val")
    X_test, y_test = prepared.rows("test")
    val_scores = detector.anomaly_score(X_val)
    if not np.isfinite(val_scores).all():
        raise TrainingError("the refitted best model gives non-finite validation scores")
    test_scores = detector.anomaly_score(X_test)
    if objective.labeled:
        threshold, _ = best_f1_threshold(y_val, val_scores)
        rule = "maximises F1 on the validation split"
        detector.set_threshold(threshold, rule=rule)
        metrics = {
            "val": evaluate(y_val, val_scores, threshold),
            "test": evaluate(y_test, test_scores, threshold),
        }
        refit_value = float(objective.metric(y_val, val_scores))
    else:
        threshold, rule = detector.threshold_, detector.threshold_rule_
        test_value = unlabeled_value(X_test, X_train)(detector)
        refit_value = objective.validation(detector)
        metrics = {
            "val": {
                "reconstruction_error": refit_value,
                "flagged": float(np.mean(val_scores > threshold)),
            },
            "test": {
                "reconstruction_error": test_value,
                "flagged": float(np.mean(test_scores > threshold)),
            },
        }
        summary["note"] = (
            "no label column: trials were compared on the validation reconstruction error "
            "(in units of each column's training spread) and the threshold is the "
            "training-score quantile"
        )
    refit = {
        "seed": seed,
        "epochs": best_epoch,
        "val_value": refit_value,
        "trial_value": float(best.values[0]),
    }
    if config.cv:
        refit["note"] = (
            "the trial value is a cross-validation mean; the refit trains on the train "
            "split and is checked on the validation split"
        )
    else:
        refit["matches"] = bool(abs(refit_value - best.values[0]) <= 1e-9)
    summary.update(
        best={
            "number": best.number,
            "params": refit_params,
            "tuned_params": dict(best.params),
            "values": list(best.values),
            "value": float(best.values[0]),
            "seed": seed,
            "epochs": best_epoch,
        },
        metrics=metrics,
        threshold=threshold,
        threshold_rule=rule,
        refit=refit,
    )
    if len(study.directions) > 1:
        summary["pareto_front"] = [
            {"number": t.number, "values": list(t.values)} for t in study.best_trials
        ]
        summary["best_rule"] = (
            f"Pareto-optimal trial with the lowest {config.objectives[1]} among those within "
            f"{config.tolerance} of the best {config.objectives[0]}"
        )
    summary["timings"] = {
        "tuning_seconds": round(tuned - started, 3),
        "refit_seconds": round(time.perf_counter() - refit_start, 3),
        "total_seconds": round(time.perf_counter() - started, 3),
    }
    summary["_detector"] = detector
    summary["_preprocessor"] = prepared.preprocessor
    return summary


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
        duration = t.duration.total_seconds() if t.duration is not None else None
        row.update(
            epochs=t.user_attrs.get("epochs"),
            best_epoch=t.user_attrs.get("best_epoch"),
            duration_s=round(duration, 3) if duration is not None else None,
            seed=t.user_attrs.get("seed"),
            fail_reason=_fail_reason(t),
        )
        for name, value in sorted(t.params.items()):
            row[f"params_{name}"] = value
        rows.append(row)
    return rows


def refine_trials(trials_csv: str | Path, space: SearchSpace, *, maximize: bool) -> list[dict]:
    """Parameters of the best quarter of the completed trials in a run's ``trials.csv``."""
    import pandas as pd

    from anomtune.space import top_quartile

    try:
        frame = pd.read_csv(trials_csv, dtype=str, keep_default_na=False)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{trials_csv}: cannot read: {exc}") from exc
    frame = frame[frame["state"] == "complete"]
    if frame.empty:
        raise ConfigError(f"{trials_csv}: no completed trials to refine around")
    values = frame["value"].astype(float).tolist()
    rows = [frame.iloc[i] for i in top_quartile(values, maximize=maximize)]
    out = []
    for row in rows:
        params = {}
        for p in space.params:
            raw = row.get(f"params_{p.name}", "")
            if raw == "":
                continue
            if p.type == "categorical":
                match = [c for c in p.choices if str(c) == raw]
                if match:
                    params[p.name] = match[0]
            elif p.type == "int":
                params[p.name] = int(float(raw))
            elif p.type == "float":
                params[p.name] = float(raw)
        out.append(params)
    return out


def _write_run(out: Path, study, summary: dict, objective: Objective) -> None:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staged = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        detector = summary.pop("_detector", None)
        preprocessor = summary.pop("_preprocessor", None)
        if detector is not None:
            save_model(
                detector,
                preprocessor,
                staged / "model",
                meta={
                    "data_fingerprint": summary["data"]["fingerprint"],
                    "study": summary["study"]["name"],
                    "trial": summary["best"]["number"],
                    "metrics": summary["metrics"],
                },
            )
        rows = trial_rows(study)
        columns: list[str] = []
        for row in rows:
            columns.extend(k for k in row if k not in columns)
        with open(staged / "trials.csv", "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)
        (staged / "space.toml").write_text(objective.space.to_toml(SPACE_HEADER))
        write_json_atomic(staged / "summary.json", summary)
        replace_dir(staged, out)
    except BaseException:
        import shutil

        shutil.rmtree(staged, ignore_errors=True)
        raise
