"""The settings of a tuning run (:class:`TuneConfig`) and the names they accept."""

from __future__ import annotations

from dataclasses import dataclass, field

from anomtune.data import Table, read_table
from anomtune.errors import ConfigError
from anomtune.inputs import MAX_LEVELS

__all__ = [
    "DEFAULT_PRUNER",
    "METRICS",
    "PATIENCE",
    "PRUNERS",
    "READ_OPTIONS",
    "SAMPLERS",
    "SECONDARY",
    "SPACE_HEADER",
    "TuneConfig",
    "read_options",
]

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
    include: list[str] = field(default_factory=list)
    roles: dict[str, str] = field(default_factory=dict)
    max_levels: int = MAX_LEVELS
    time_features: bool = False
    drop_unlabeled: bool = False
    dedupe: bool = False
    sep: str | None = None
    decimal: str | None = None
    encoding: str | None = None
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
        return read_table(self.data, **read_options(vars(self)))

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


#: The config keys that say how the data is read: ``read_table``'s arguments.
READ_OPTIONS = (
    "label",
    "positive",
    "features",
    "exclude",
    "id_column",
    "categorical",
    "include",
    "roles",
    "max_levels",
    "time_features",
    "drop_unlabeled",
    "dedupe",
    "sep",
    "decimal",
    "encoding",
)


def read_options(config: dict) -> dict:
    """The :func:`~anomtune.data.read_table` arguments recorded in a config dict.

    Also reads the ``config`` section of a run summary, whose keys are
    :class:`TuneConfig`'s; keys a summary does not have keep their defaults
    (a run recorded before a reading option existed reads as it did then).
    """
    out = {k: config[k] for k in READ_OPTIONS if config.get(k) is not None}
    for key in ("exclude", "categorical", "include"):
        out[key] = out.get(key) or ()
    return out
