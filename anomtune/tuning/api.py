"""``anomtune.tune()``: a tuning run from Python, with the options of ``anomtune tune``."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path

from anomtune.errors import DataError
from anomtune.inputs import MAX_LEVELS
from anomtune.tuning.config import DEFAULT_PRUNER, PATIENCE, TuneConfig
from anomtune.tuning.study import TuneResult, run_study

__all__ = ["tune"]


def tune(
    data,
    *,
    label: str | None = None,
    positive: object = None,
    features: Sequence[str] | None = None,
    exclude: Sequence[str] = (),
    id_column: str | None = None,
    categorical: Sequence[str] = (),
    include: Sequence[str] = (),
    roles: dict[str, str] | None = None,
    max_levels: int = MAX_LEVELS,
    time_features: bool = False,
    drop_unlabeled: bool = False,
    dedupe: bool = False,
    sep: str | None = None,
    decimal: str | None = None,
    encoding: str | None = None,
    metric: str = "auc-roc",
    objectives: Sequence[str] | None = None,
    tolerance: float = 0.005,
    sampler: str = "tpe",
    pruner: str = DEFAULT_PRUNER,
    trials: int = 30,
    timeout: float | None = None,
    seed: int = 0,
    workers: int = 1,
    cv: int | None = None,
    train_on: str = "normal",
    space: str | Path | None = None,
    enqueue: Sequence[dict] = (),
    study: str | None = None,
    storage: str | None = None,
    workspace: str | Path = ".anomtune",
    out: str | Path | None = None,
    patience: int = PATIENCE,
    on_progress: Callable[[dict], None] | None = None,
    on_table: Callable | None = None,
    argv: list[str] | None = None,
) -> TuneResult:
    """Find the best autoencoder for ``data``, judged on labeled validation rows.

    ``data`` is a CSV or Parquet path, or a pandas DataFrame (written once to
    ``WORKSPACE/data/`` as Parquet, so that workers, the export and the report
    read the same rows again). The options are those of ``anomtune tune``;
    those that say how to read the data are :func:`anomtune.data.read_table`'s.
    Returns a :class:`~anomtune.tuning.TuneResult`: ``best_params``,
    ``metrics``, ``model`` (an :class:`~anomtune.model.AnomalyModel`),
    ``export(path)``, ``register(name)`` and ``report(path)``. ``on_progress``
    and ``on_table`` are :func:`~anomtune.tuning.run_study`'s; ``argv`` is the
    command recorded in the summary.

    Examples
    --------
    >>> import anomtune
    >>> result = anomtune.tune("cardio.csv", label="is_anomaly", trials=5)  # doctest: +SKIP
    >>> result.export("cardio.onnx")  # doctest: +SKIP
    """
    if not isinstance(data, (str, Path)):
        # The default study name is the file's, so named by the frame's content.
        data = _frame_file(data, Path(workspace))
    config = TuneConfig(
        data=str(data),
        label=label,
        positive=positive,
        features=list(features) if features is not None else None,
        exclude=list(exclude),
        id_column=id_column,
        categorical=list(categorical),
        include=list(include),
        roles=dict(roles or {}),
        max_levels=max_levels,
        time_features=time_features,
        drop_unlabeled=drop_unlabeled,
        dedupe=dedupe,
        sep=sep,
        decimal=decimal,
        encoding=encoding,
        metric=metric,
        objectives=list(objectives) if objectives is not None else None,
        tolerance=tolerance,
        sampler=sampler,
        pruner=pruner,
        trials=trials,
        timeout=timeout,
        seed=seed,
        workers=workers,
        cv=cv,
        train_on=train_on,
        space=str(space) if space is not None else None,
        enqueue=list(enqueue),
        study=study,
        storage=storage,
        workspace=str(workspace),
        out=str(out) if out is not None else None,
        patience=patience,
    )
    return run_study(config, on_progress=on_progress, on_table=on_table, argv=argv)


def _frame_file(frame, workspace: Path) -> Path:
    """``frame`` as a Parquet file named by its content, written once."""
    import pandas as pd

    from anomtune.persist import write_bytes_atomic

    if not isinstance(frame, pd.DataFrame):
        raise DataError(
            f"data must be a file path or a pandas DataFrame, not {type(frame).__name__}"
        )
    try:
        hashed = pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes()
        columns = "\x1f".join(f"{c}:{frame[c].dtype}" for c in frame.columns).encode()
        name = hashlib.sha256(columns + hashed).hexdigest()[:16]
        path = workspace / "data" / f"{name}.parquet"
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            write_bytes_atomic(path, frame.to_parquet(index=False))
    except (TypeError, ValueError) as exc:  # columns Parquet cannot hold
        raise DataError(f"the DataFrame cannot be stored as Parquet: {exc}") from exc
    return path
