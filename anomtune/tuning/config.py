"""The settings of a tuning run (:class:`TuneConfig`) and the names they accept."""

from __future__ import annotations

from dataclasses import dataclass, field

from anomtune.data import ReadOptions, Table, read_table
from anomtune.ensemble import ENSEMBLE_SIZE
from anomtune.errors import ConfigError

__all__ = [
    "DEFAULT_PRUNER",
    "METRICS",
    "PATIENCE",
    "PRUNERS",
    "SAMPLERS",
    "SECONDARY",
    "SPACE_HEADER",
    "TRIAL_ROWS",
    "TuneConfig",
]

SAMPLERS = ("grid", "random", "tpe", "gp", "cmaes", "qmc")
PRUNERS = ("none", "median", "sha", "hyperband")
DEFAULT_PRUNER = "median"
METRICS = ("auc-roc", "auc-pr", "f1")
SECONDARY = ("latency", "size")
PATIENCE = 20
#: Most training rows, and most validation rows, one trial sees (see
#: :meth:`anomtune.pipeline.Prepared.sampled`); the best trial is refitted on all.
TRIAL_ROWS = 16_384
#: The fewest rows a trial sample may hold.
MIN_TRIAL_ROWS = 100
#: The most (trial, score) pairs an ensemble may hold.
MAX_ENSEMBLE = 20
SPACE_HEADER = (
    "# anomtune search space. Each [table] is a detector parameter: 'choices' for a\n"
    "# categorical one, 'low'/'high' (and 'log') for a range, 'value' to fix it.\n"
    "# 'when' makes it exist only for some values of an earlier parameter; 'grid'\n"
    "# lists the values grid search tries. A top-level 'variants = [...]' restricts\n"
    "# the variants. Use with: anomtune tune DATA --space THIS_FILE\n"
)


@dataclass(kw_only=True)
class TuneConfig(ReadOptions):
    """Everything a tuning run depends on; recorded with its results.

    How the data is read are the :class:`~anomtune.data.ReadOptions` it
    extends; the rest says how the study runs.
    """

    data: str
    metric: str = "auc-roc"
    objectives: list[str] | None = None
    tolerance: float = 0.005
    sampler: str = "tpe"
    startup_trials: int | None = None
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
    trial_rows: int | None = TRIAL_ROWS
    ensemble: int = ENSEMBLE_SIZE

    def __post_init__(self):
        super().__post_init__()
        self.data = str(self.data)
        for name in ("space", "workspace", "out"):
            if getattr(self, name) is not None:
                setattr(self, name, str(getattr(self, name)))
        if self.objectives is not None:
            self.objectives = list(self.objectives)
        self.enqueue = list(self.enqueue)

    def read(self) -> Table:
        return read_table(self.data, self.reading())

    def directions(self, labeled: bool) -> list[str]:
        """Optuna's study directions: maximise the metric, minimise a cost or a loss."""
        if not labeled:
            return ["minimize"]
        if self.objectives:
            return ["maximize", "minimize"]
        return ["maximize"]

    def objective_names(self, labeled: bool) -> list[str]:
        if not labeled:
            return ["val_loss"]
        if self.objectives:
            return list(self.objectives)
        return [self.metric]

    def ensembles(self, labeled: bool) -> bool:
        """Whether the run ships an ensemble (:mod:`anomtune.ensemble`): its
        members are chosen on labeled validation rows, so not without labels,
        with --cv (no single validation split) or with two objectives."""
        return self.ensemble > 1 and labeled and not self.cv and not self.objectives

    def check(self) -> None:
        if self.sampler not in SAMPLERS:
            raise ConfigError(f"sampler must be one of {', '.join(SAMPLERS)}, not {self.sampler!r}")
        if self.startup_trials is not None:
            from anomtune.tuning.factories import STARTUP_TRIALS

            if self.sampler not in STARTUP_TRIALS:
                raise ConfigError(
                    f"--startup-trials applies to the samplers that model earlier trials "
                    f"({', '.join(STARTUP_TRIALS)}), not {self.sampler}; drop it"
                )
            if (
                isinstance(self.startup_trials, bool)
                or not isinstance(self.startup_trials, int)
                or self.startup_trials < 1
            ):
                raise ConfigError(
                    f"--startup-trials must be a whole number of at least 1, "
                    f"not {self.startup_trials!r}"
                )
        if self.pruner not in PRUNERS:
            raise ConfigError(f"pruner must be one of {', '.join(PRUNERS)}, not {self.pruner!r}")
        if self.metric not in METRICS:
            raise ConfigError(f"metric must be one of {', '.join(METRICS)}, not {self.metric!r}")
        if self.trial_rows is not None and (
            isinstance(self.trial_rows, bool)
            or not isinstance(self.trial_rows, int)
            or self.trial_rows < MIN_TRIAL_ROWS
        ):
            raise ConfigError(
                f"--trial-rows must be a whole number of at least {MIN_TRIAL_ROWS}, "
                f"or 'all', not {self.trial_rows!r}"
            )
        if self.trials < 1:
            raise ConfigError(f"--trials must be at least 1, not {self.trials}")
        if isinstance(self.ensemble, bool) or not isinstance(self.ensemble, int):
            raise ConfigError(f"--ensemble must be a whole number, not {self.ensemble!r}")
        if not 1 <= self.ensemble <= MAX_ENSEMBLE:
            raise ConfigError(
                f"--ensemble must be between 1 (the best trial alone) and {MAX_ENSEMBLE}, "
                f"not {self.ensemble}"
            )
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
