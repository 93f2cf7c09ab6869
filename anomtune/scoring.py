"""Score rows with an exported model, using onnxruntime alone.

This module is on the serving path: it imports onnxruntime, numpy and pandas
and nothing of torch, Optuna or scikit-learn.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from anomtune.errors import DataError

__all__ = [
    "ScoreResult",
    "Scorer",
    "category_text",
    "encode_frame",
    "load_scorer",
    "open_model",
    "read_model_file",
]

# Large inputs run in slices of about SLICE_VALUES encoded values (rows times
# encoded features, rounded down to a power of two of rows, at most
# SLICE_ROWS rows): a slice's activations stay in the CPU cache.
# benchmarks/scoring.py measures the gain.
SLICE_VALUES = 1 << 18
SLICE_ROWS = 4096
# Inputs of at least this many slices are scored on several threads at once.
PARALLEL_SLICES = 4
# Rows per step when a column-major matrix is copied to row-major.
_TRANSPOSE_ROWS = 256


@dataclass
class ScoreResult:
    """Per-row answers of a model."""

    score: np.ndarray
    is_anomaly: np.ndarray
    feature_errors: np.ndarray
    feature_names: list[str]

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame({"score": self.score, "is_anomaly": self.is_anomaly.astype(int)})


class Scorer:
    """An onnxruntime session over an anomtune graph, with its schema and metadata."""

    def __init__(self, model: bytes, *, threads: int = 1, source: str = "<bytes>"):
        import onnxruntime as ort

        self.source = source
        self.info: dict = {}
        #: Threads that score slices of a large input at the same time.
        self.threads = max(1, int(threads))
        self._pool = None
        # Each session call runs on its calling thread: with several threads,
        # large inputs are cut into slices scored side by side (onnxruntime
        # sessions are safe to run concurrently), which for these small
        # networks is about twice as fast on two threads as splitting each
        # operator across threads (benchmarks/scoring.py).
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types
            raise DataError(f"{source}: not a loadable ONNX model: {_first_line(exc)}") from exc
        raw = self.session.get_modelmeta().custom_metadata_map.get("anomtune")
        if raw is None:
            raise DataError(f"{source}: not an anomtune model (no 'anomtune' metadata)")
        self.metadata = json.loads(raw)
        self.numeric: list[str] = list(self.metadata["inputs"]["numeric"])
        self.categorical: list[str] = list(self.metadata["inputs"]["categorical"])
        self.feature_names: list[str] = list(self.metadata["feature_names"])
        self.threshold: float = float(self.metadata["threshold"])
        width = self.metadata.get("architecture", {}).get("n_encoded_features")
        #: Rows per session call when scoring a large input (see :meth:`run`).
        self.slice_rows: int = slice_rows(int(width or len(self.feature_names)))

    def check_columns(self, columns) -> None:
        """Raise naming the first feature column that ``columns`` lacks."""
        present = set(map(str, columns))
        missing = [c for c in self.feature_names if c not in present]
        if missing:
            import difflib

            more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
            unused = [c for c in map(str, columns) if c not in set(self.feature_names)]
            close = difflib.get_close_matches(missing[0], unused, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise DataError(f"missing feature column {missing[0]!r}{more}{hint}")

    def feeds(self, frame: pd.DataFrame) -> dict:
        """The graph's inputs from a DataFrame (columns by name, any order, extras ignored)."""
        self.check_columns(frame.columns)
        return encode_frame(frame, self.numeric, self.categorical)

    def score(self, data) -> ScoreResult:
        """Score a DataFrame (columns by name) or a 2-d numeric array in schema order."""
        if not isinstance(data, pd.DataFrame):
            array = np.asarray(data)
            if array.ndim != 2 or array.shape[1] != len(self.feature_names):
                raise DataError(
                    f"expected a 2-d array with {len(self.feature_names)} columns, "
                    f"got shape {array.shape}"
                )
            data = pd.DataFrame(array, columns=self.feature_names, copy=False)
        if len(data) == 0:
            empty = np.zeros(0, dtype=np.float32)
            return ScoreResult(
                empty,
                empty.astype(bool),
                np.zeros((0, len(self.feature_names)), np.float32),
                self.feature_names,
            )
        score, errors, label = self.run(self.feeds(data))
        return ScoreResult(score, label, errors, self.feature_names)

    def run(self, feeds: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(score, feature_errors, is_anomaly)`` for prepared feeds.

        More than :attr:`slice_rows` rows are run in slices of that many,
        written into arrays for the whole input: a slice's activations stay
        in the CPU cache, which makes a large input up to 1.6x faster per row
        than one call over all of it. ``slice_rows`` is 4,096 for up to 64
        encoded features and smaller for wider models (2,048 at 100, 512 at
        500). With :attr:`threads` above one and at least
        ``PARALLEL_SLICES`` slices, the threads score the slices side by side
        (with fewer, handing them out cost more than it saved, and cutting
        an input of one slice smaller was slower than one call:
        benchmarks/scoring.py).
        """
        n = len(feeds["numeric"])
        step = max(1, int(self.slice_rows))
        if n <= step:
            score, errors, label = self.session.run(None, feeds)
            return score, errors, label.astype(bool, copy=False)
        score = np.empty(n, dtype=np.float32)
        errors = np.empty((n, len(self.feature_names)), dtype=np.float32)
        label = np.empty(n, dtype=bool)

        def run_slice(start: int) -> None:
            stop = start + step
            part = {name: value[start:stop] for name, value in feeds.items()}
            score[start:stop], errors[start:stop], label[start:stop] = self.session.run(None, part)

        starts = range(0, n, step)
        if self.threads == 1 or len(starts) < PARALLEL_SLICES:
            for start in starts:
                run_slice(start)
        else:
            # list() waits for every slice and re-raises the first error.
            list(self._slice_pool().map(run_slice, starts))
        return score, errors, label

    def _slice_pool(self):
        if self._pool is None:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="anomtune-score")
        return self._pool


def slice_rows(width: int) -> int:
    """Rows per session call for a model reading ``width`` encoded features."""
    rows = SLICE_VALUES // max(1, width)
    return min(SLICE_ROWS, 1 << max(8, rows.bit_length() - 1))


def encode_frame(frame: pd.DataFrame, numeric: list[str], categorical: list[str]) -> dict:
    """Graph inputs: ``numeric`` float32 (NaN for missing) and ``categorical`` strings.

    Numeric columns read as text are parsed; a value that is not a number, or
    an infinite one, is an error naming the column and row.
    """
    block = _numeric_block(frame, numeric)
    if block is None:
        block = np.empty((len(frame), len(numeric)), dtype=np.float32)
        for j, name in enumerate(numeric):
            block[:, j] = _numeric_column(frame[name], name)
    feeds = {"numeric": block}
    if categorical:
        cats = frame[categorical].astype("object")
        cats = cats.where(cats.notna(), "")
        feeds["categorical"] = cats.map(category_text).to_numpy(dtype=object).astype(str)
    return feeds


def _numeric_column(column: pd.Series, name: str) -> np.ndarray:
    """One numeric column as float32, text parsed; raises naming the first bad row."""
    if not (pd.api.types.is_numeric_dtype(column) or pd.api.types.is_bool_dtype(column)):
        parsed = pd.to_numeric(column, errors="coerce")
        bad = parsed.isna() & column.notna()
        if bad.any():
            pos = int(np.flatnonzero(bad.to_numpy())[0])
            raise DataError(
                f"column {name!r} is numeric but row {pos + 1} holds {str(column.iloc[pos])!r}"
            )
        column = parsed
    with np.errstate(over="ignore"):
        values = column.to_numpy(dtype=np.float64, na_value=np.nan).astype(np.float32)
    # Checked after the cast: a value beyond float32's range becomes infinite.
    bad = np.isinf(values)
    if bad.any():
        pos = int(np.flatnonzero(bad)[0])
        raise DataError(f"column {name!r} has an infinite or out-of-range value at row {pos + 1}")
    return values


def _numeric_block(frame: pd.DataFrame, numeric: list[str]) -> np.ndarray | None:
    """The numeric columns as one C-ordered float32 matrix, when every one of them
    has a numeric dtype and no value is infinite; else None (the caller then
    goes column by column, which parses text and names a bad value)."""
    if not numeric or frame.columns.has_duplicates:
        return None
    source = frame if list(frame.columns) == numeric else frame[numeric]
    if not all(
        pd.api.types.is_numeric_dtype(t) or pd.api.types.is_bool_dtype(t) for t in source.dtypes
    ):
        return None
    with np.errstate(over="ignore", invalid="ignore"):
        values = source.to_numpy(dtype=np.float32, na_value=np.nan)
    block = _c_ordered(values)
    if np.isinf(block).any():
        return None
    return block


def _c_ordered(values: np.ndarray) -> np.ndarray:
    """``values`` in C order. pandas hands a frame's matrix over column-major;
    transposing it in slices of :data:`_TRANSPOSE_ROWS` rows, each copied to a
    compact buffer first, keeps the reads in the cache."""
    if values.flags.c_contiguous:
        return values
    if not values.flags.f_contiguous or len(values) <= _TRANSPOSE_ROWS:
        return np.ascontiguousarray(values)
    out = np.empty(values.shape, dtype=values.dtype)
    columns = values.T  # C-contiguous [n_columns, n_rows]
    for start in range(0, len(values), _TRANSPOSE_ROWS):
        stop = start + _TRANSPOSE_ROWS
        out[start:stop] = columns[:, start:stop].copy().T
    return out


def category_text(value) -> str:
    """The text a categorical value is looked up by (``1.0`` reads as ``"1"``)."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip() or type(exc).__name__).splitlines()[0]


def open_model(
    ref: str | Path,
    *,
    registry: str | None = None,
    registry_files: str | None = None,
    threads: int = 1,
) -> Scorer:
    """A :class:`Scorer` for a model reference.

    ``ref`` is a path to an ``.onnx`` file, or a registry reference:
    ``name@alias``, ``name/3`` or ``name`` (the latest version); the
    registry's :func:`~anomtune.registry.parse_ref` decides which. The
    registry is ``registry`` (a folder or database URL), else the
    ``ANOMTUNE_REGISTRY`` environment variable, else the workspace default;
    ``registry_files`` is its folder of model files when that is elsewhere.
    """
    from anomtune.registry import parse_ref, resolve

    parsed = parse_ref(ref)
    if parsed.is_file:
        return load_scorer(parsed.path, threads=threads)
    data, info = resolve(parsed, registry=registry, files=registry_files)
    scorer = Scorer(data, threads=threads, source=str(ref).strip())
    scorer.info = info
    return scorer


def load_scorer(source: str | Path | bytes, *, threads: int = 1) -> Scorer:
    """A :class:`Scorer` for an ``.onnx`` file path or the model's bytes."""
    if isinstance(source, bytes):
        return Scorer(source, threads=threads)
    return Scorer(read_model_file(source), threads=threads, source=str(source))


def read_model_file(path: str | Path) -> bytes:
    """The bytes of a model file; a missing or unreadable file is a :class:`DataError`."""
    path = Path(path)
    try:
        return path.read_bytes()
    except FileNotFoundError as exc:
        raise DataError(f"{path}: no such model file") from exc
    except IsADirectoryError as exc:
        raise DataError(f"{path}: is a folder, not a model file") from exc
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc.strerror}") from exc
