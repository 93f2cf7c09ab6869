"""``anomtune.tune()``: a tuning run from Python, with the options of ``anomtune tune``."""

from __future__ import annotations

import difflib
import hashlib
import inspect
from collections.abc import Callable
from dataclasses import MISSING, fields
from pathlib import Path

from anomtune.errors import ConfigError, DataError
from anomtune.tuning.config import TuneConfig
from anomtune.tuning.study import TuneResult, run_study

__all__ = ["tune"]


def tune(
    data,
    *,
    on_progress: Callable[[dict], None] | None = None,
    on_table: Callable | None = None,
    argv: list[str] | None = None,
    **options,
) -> TuneResult:
    """Find the best autoencoder for ``data``, judged on labeled validation rows.

    ``data`` is a CSV or Parquet path, or a pandas DataFrame (written once to
    ``WORKSPACE/data/`` as Parquet, so that workers, the export and the report
    read the same rows again). The options are those of ``anomtune tune``:
    the attributes of :class:`~anomtune.tuning.TuneConfig` (``label``,
    ``trials``, ``sampler``, ``seed``, ...; how to read the data is its
    :class:`~anomtune.data.ReadOptions` part). Returns a
    :class:`~anomtune.tuning.TuneResult`: ``best_params``, ``metrics``,
    ``model`` (an :class:`~anomtune.model.AnomalyModel`), ``export(path)``,
    ``register(name)`` and ``report(path)``. ``on_progress`` and ``on_table``
    are :func:`~anomtune.tuning.run_study`'s; ``argv`` is the command
    recorded in the summary.

    Examples
    --------
    >>> import anomtune
    >>> result = anomtune.tune("cardio.csv", label="is_anomaly", trials=5)  # doctest: +SKIP
    >>> result.export("cardio.onnx")  # doctest: +SKIP
    """
    known = [f.name for f in fields(TuneConfig) if f.name != "data"]
    for name in options:
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"tune() has no option {name!r}{hint}")
    if not isinstance(data, (str, Path)):
        # The default study name is the file's, so named by the frame's content.
        data = _frame_file(data, Path(options.get("workspace", ".anomtune")))
    config = TuneConfig(data=data, **options)
    return run_study(config, on_progress=on_progress, on_table=on_table, argv=argv)


def _signature() -> inspect.Signature:
    """``tune``'s signature as help() and editors show it: every config option."""
    keyword = inspect.Parameter.KEYWORD_ONLY
    params = [inspect.Parameter("data", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    for f in fields(TuneConfig):
        if f.name == "data":
            continue
        default = f.default if f.default is not MISSING else f.default_factory()
        params.append(inspect.Parameter(f.name, keyword, default=default, annotation=f.type))
    for name in ("on_progress", "on_table", "argv"):
        params.append(inspect.Parameter(name, keyword, default=None))
    return inspect.Signature(params, return_annotation="TuneResult")


tune.__signature__ = _signature()


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
