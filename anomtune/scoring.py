"""Score rows with an exported model, using onnxruntime alone.

This module is on the serving path: it imports onnxruntime, numpy and pandas
and nothing of torch, Optuna or scikit-learn.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from anomtune.errors import DataError
from anomtune.errors import first_line as _first_line
from anomtune.inputs import InputSpec, category_text, features_feeds

__all__ = [
    "ScoreResult",
    "Scorer",
    "category_text",
    "encode_frame",
    "flag_rate_warning",
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
        # Requests served on several threads share one pool.
        self._pool_lock = threading.Lock()
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
        spec = (self.metadata.get("schema") or {}).get("inputs")
        #: How the raw columns become the graph's inputs (anomtune.inputs).
        self.spec: InputSpec = (
            InputSpec.from_dict(spec)
            if spec
            else InputSpec.plain(self.numeric, self.categorical, self.feature_names)
        )
        architecture = self.metadata.get("architecture", {})
        width = int(architecture.get("n_encoded_features") or len(self.feature_names))
        # An ensemble's residual score holds a row's distance to every reference
        # row (anomtune.ensemble): as many values per row, in slices as small.
        width += int(architecture.get("reference_rows") or 0)
        #: Rows per session call when scoring a large input (see :meth:`run`).
        self.slice_rows: int = slice_rows(width)

    @property
    def columns(self) -> list[str]:
        """The raw columns the model reads."""
        return self.spec.sources

    @property
    def validation_flag_rate(self) -> float | None:
        """The share of the validation rows the model flagged at its threshold."""
        val = (self.metadata.get("metrics") or {}).get("val") or {}
        rate = val.get("flagged")
        return float(rate) if rate is not None else None

    def flag_rate_warning(self, flagged: int, rows: int) -> str | None:
        """A one-line warning when far more rows were flagged than on validation."""
        return flag_rate_warning(flagged, rows, self.validation_flag_rate)

    def check_columns(self, columns) -> None:
        """Raise naming the first column the model reads that ``columns`` lacks."""
        self.spec.check_columns(columns)

    def feeds(self, frame) -> dict:
        """The graph's inputs from raw columns (a DataFrame or a mapping of columns;
        by name, any order, extras ignored), converted by :mod:`anomtune.inputs`."""
        return self.spec.feeds(frame)

    def score(self, data) -> ScoreResult:
        """Score a DataFrame of raw columns (by name), or a 2-d numeric array of the
        model's features in schema order."""
        if not isinstance(data, pd.DataFrame):
            array = np.asarray(data)
            if array.ndim != 2 or array.shape[1] != len(self.feature_names):
                raise DataError(
                    f"expected a 2-d array with {len(self.feature_names)} columns, "
                    f"got shape {array.shape}"
                )
            frame = pd.DataFrame(array, columns=self.feature_names, copy=False)
            feeds = features_feeds(frame, self.numeric, self.categorical)
        else:
            if len(data) == 0:
                self.check_columns(data.columns)
            feeds = self.feeds(data) if len(data) else None
        if feeds is None or len(feeds["numeric"]) == 0:
            empty = np.zeros(0, dtype=np.float32)
            return ScoreResult(
                empty,
                empty.astype(bool),
                np.zeros((0, len(self.feature_names)), np.float32),
                self.feature_names,
            )
        score, errors, label = self.run(feeds)
        return ScoreResult(score, label, errors, self.feature_names)

    def run(self, feeds: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(score, feature_errors, is_anomaly)`` for prepared feeds.

        More than :attr:`slice_rows` rows are run in slices of that many,
        written into arrays for the whole input: a slice's activations stay
        in the CPU cache, which makes a large input up to 1.6x faster per row
        than one call over all of it. ``slice_rows`` is 4,096 for up to 64
        encoded features and smaller for wider models (2,048 at 100, 512 at
        500; an ensemble counts its reference rows as features too). With
        :attr:`threads` above one and at least ``PARALLEL_SLICES`` slices, the
        threads score the slices side by side
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
        with self._pool_lock:
            if self._pool is None:
                from concurrent.futures import ThreadPoolExecutor

                self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="anomtune-score")
            return self._pool


def slice_rows(width: int) -> int:
    """Rows per session call for a model reading ``width`` encoded features."""
    rows = SLICE_VALUES // max(1, width)
    return min(SLICE_ROWS, 1 << max(8, rows.bit_length() - 1))


def encode_frame(frame: pd.DataFrame, numeric: list[str], categorical: list[str]) -> dict:
    """Graph inputs from a frame of already converted features (a :class:`Table`'s)."""
    return features_feeds(frame, numeric, categorical)


# Far more flags than on validation: at least this share of the rows, and this many
# times the validation rate (and this many rows scored) before a warning.
FLAG_RATE_MARGIN = 0.05
FLAG_RATE_FACTOR = 2.0
FLAG_RATE_ROWS = 100


def flag_rate_warning(flagged: int, rows: int, expected: float | None) -> str | None:
    """Why the flagged share of ``rows`` looks wrong, or None when it does not.

    A share above ``FLAG_RATE_FACTOR`` times the validation rate plus
    ``FLAG_RATE_MARGIN`` usually means drift or a broken column, not a wave of
    anomalies.
    """
    if expected is None or rows < FLAG_RATE_ROWS:
        return None
    share = flagged / rows
    if share <= FLAG_RATE_FACTOR * expected + FLAG_RATE_MARGIN:
        return None
    return (
        f"{share:.1%} of the rows were flagged, against {expected:.1%} of the validation rows: "
        "the data may have drifted or a column may be broken (check with score --explain)"
    )


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
