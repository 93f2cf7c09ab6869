"""HTTP scoring of an exported model with onnxruntime, over FastAPI.

:func:`create_app` builds the application; ``anomtune serve`` runs it under
uvicorn. The scoring endpoint speaks MLflow's scoring protocol:

``POST /invocations``
    ``application/json`` with exactly one of ``dataframe_split``
    (``{"columns": [...], "data": [[...], ...]}``), ``dataframe_records``
    (``[{column: value}, ...]``), ``instances`` (rows: objects keyed by column,
    or lists in the model's column order) or ``inputs`` (the same rows, or an
    object of columns ``{column: [values]}``), plus optional ``params``
    (``{"explain": true}``); or ``text/csv`` with a header line. Columns are
    matched by name, in any order; extra columns are ignored. ``null`` (an
    empty CSV cell) is a missing value, imputed inside the graph.
    The answer is ``{"predictions": [{"score": s, "is_anomaly": b}, ...],
    "model": {"name", "version", "sha256"}}``; with ``?explain=true`` (or
    ``params.explain``) each prediction also carries ``feature_errors``, each
    column's squared reconstruction error (not a share: for the reconstruction
    score a row's values sum to the number of encoded features times its
    score). The headers
    ``X-Anomtune-Model``, ``X-Anomtune-Model-Version`` and
    ``X-Anomtune-Model-Sha256`` name the model that scored the request.
``GET /ping``, ``GET /health``
    Liveness, always open.
``GET /version``
    anomtune's and onnxruntime's versions and the model being served.
``GET /metadata``
    The model's schema, threshold, name, version and training summary.
``POST /reload``
    Resolve the model reference again and swap in the new model if its bytes
    changed (a promoted alias, say). Also done every ``reload_interval``
    seconds.

Errors are JSON ``{"error_code": ..., "message": ...}`` with a 4xx status for
anything the client can fix; the message never holds a traceback or a path.
With a token set, ``/invocations``, ``/metadata`` and ``/reload`` need
``Authorization: Bearer TOKEN``.

This module is on the serving path: it imports onnxruntime, numpy, pandas,
FastAPI and uvicorn's dependencies, never torch, Optuna or scikit-learn.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import io
import json
import logging
import math
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import anyio.to_thread
import numpy as np
import onnxruntime
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from anomtune import __version__
from anomtune.errors import AnomtuneError, ConfigError, DataError
from anomtune.scoring import Scorer, category_text

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_MAX_ROWS",
    "DEFAULT_RELOAD_INTERVAL",
    "ModelHolder",
    "ModelInfo",
    "RequestError",
    "create_app",
    "resolver_for",
]

logger = logging.getLogger(__name__)

DEFAULT_MAX_BODY_BYTES = 10 * 1024 * 1024
DEFAULT_MAX_ROWS = 10_000
# How often a reference that can move (a bare name or an alias) is resolved again.
DEFAULT_RELOAD_INTERVAL = 30.0
# Bodies up to this size are parsed and scored on the event loop; larger ones
# in a worker thread so that they do not hold up other requests.
INLINE_BODY_BYTES = 64 * 1024

FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")
PARAMS = ("explain",)
_VERSION_REF = re.compile(r".+/\d+")


# --------------------------------------------------------------------------- models


@dataclass(frozen=True)
class ModelInfo:
    """Which model is served: registry name and version (``None`` for a file), ref, hash."""

    name: str
    version: int | None
    ref: str
    sha256: str = ""

    def to_dict(self) -> dict:
        return {"name": self.name, "version": self.version, "sha256": self.sha256}


Resolver = Callable[[], tuple[bytes, Any]]
"""Returns the model's bytes and an object or mapping with ``name`` and ``version``."""


def _resolve(
    ref: str, *, registry: str | None = None, files: str | None = None
) -> tuple[bytes, Any]:
    """The bytes and identity of the model a reference names.

    A path to a model file (ending in ``.onnx``, or any existing file) is read
    here; registry references (``name``, ``name/3``, ``name@alias``) go to
    ``anomtune.registry.resolve``, which returns the bytes and an info object
    with ``name`` and ``version``.
    """
    text = str(ref).strip()
    if not text:
        raise ConfigError("empty model reference")
    path = Path(text)
    if text.lower().endswith(".onnx") or path.is_file():
        try:
            data = path.read_bytes()
        except FileNotFoundError as exc:
            raise DataError(f"{path}: no such model file") from exc
        except IsADirectoryError as exc:
            raise DataError(f"{path}: is a folder, not a model file") from exc
        except OSError as exc:
            raise DataError(f"{path}: cannot read: {exc.strerror}") from exc
        return data, ModelInfo(name=path.stem, version=None, ref=path.name)
    try:
        from anomtune.registry import resolve
    except ImportError:
        raise ConfigError(
            f"{text!r} is a registry reference, and this installation's registry cannot "
            "resolve references yet; give the path of an .onnx file"
        ) from None
    data, info = resolve(text, registry=registry, files=files)
    return data, _with_ref(info, text)


def _with_ref(info: Any, ref: str) -> Any:
    # The reference served (``name@champion``), not the version it resolved
    # to today: that is in ``version``.
    if isinstance(info, Mapping):
        return {**info, "ref": ref}
    return {
        "name": getattr(info, "name", None),
        "version": getattr(info, "version", None),
        "ref": ref,
    }


def resolver_for(ref: str, *, registry: str | None = None, files: str | None = None) -> Resolver:
    """A resolver callable for a model reference (see :func:`_resolve`)."""
    return lambda: _resolve(ref, registry=registry, files=files)


def reference_can_move(ref: str) -> bool:
    """Whether a reference may name another model later (a bare name or an alias)."""
    text = str(ref).strip()
    fixed = text.lower().endswith(".onnx") or _VERSION_REF.fullmatch(text) or Path(text).is_file()
    return not fixed


def _info_from(raw: Any, sha256: str) -> ModelInfo:
    """A :class:`ModelInfo` from what a resolver returned (an object or a mapping)."""

    def get(key, default=None):
        if isinstance(raw, Mapping):
            return raw.get(key, default)
        return getattr(raw, key, default)

    name = get("name")
    if not name:
        raise ConfigError("the model resolver returned no model name")
    version = get("version")
    return ModelInfo(
        name=str(name),
        version=int(version) if version is not None else None,
        ref=str(get("ref") or name),
        sha256=sha256,
    )


class LoadedModel:
    """One warm onnxruntime session with everything a request needs precomputed."""

    def __init__(self, data: bytes, info: ModelInfo, *, threads: int = 1):
        self.scorer = Scorer(data, threads=threads, source=info.ref)
        self.info = info
        self.loaded_at = time.time()
        self.session = self.scorer.session
        self.numeric = self.scorer.numeric
        self.categorical = self.scorer.categorical
        self.feature_names = self.scorer.feature_names
        self.headers = {"X-Anomtune-Model": info.name, "X-Anomtune-Model-Sha256": info.sha256}
        if info.version is not None:
            self.headers["X-Anomtune-Model-Version"] = str(info.version)
        self.model_json = json.dumps(info.to_dict()).encode()
        # The first run of a session allocates; do it now, not on a request.
        self.run({name: [None] for name in self.feature_names}, 1, reject_missing=False)

    def check_columns(self, present) -> None:
        try:
            self.scorer.check_columns(present)
        except DataError as exc:
            raise RequestError(
                400, "BAD_REQUEST", f"{exc}; the model takes {self._names()}"
            ) from exc

    def _names(self) -> str:
        names = self.feature_names
        shown = ", ".join(map(repr, names[:20]))
        return f"{len(names)} columns: {shown}" + (", ..." if len(names) > 20 else "")

    def feeds(self, columns: Mapping[str, Any], n: int, *, reject_missing: bool) -> dict:
        """Graph inputs from ``{column: values}`` with the semantics of ``encode_frame``."""
        block = self._numeric_block(columns, n, reject_missing=reject_missing)
        if block is None:
            block = self._numeric_by_column(columns, n, reject_missing=reject_missing)
        feeds = {"numeric": block}
        if self.categorical:
            cats = np.empty((n, len(self.categorical)), dtype=object)
            for j, name in enumerate(self.categorical):
                cats[:, j] = _categorical_column(name, columns[name], reject_missing)
            feeds["categorical"] = cats
        return feeds

    def _numeric_block(self, columns, n: int, *, reject_missing: bool) -> np.ndarray | None:
        """All numeric columns in one conversion, or ``None`` when a value needs a closer
        look (not a number, infinite, beyond float32, or missing when refused)."""
        if not self.numeric:
            return np.empty((n, 0), dtype=np.float32)
        try:
            values = np.array([columns[name] for name in self.numeric], dtype=np.float64)
        except (TypeError, ValueError, OverflowError):
            return None
        if values.shape != (len(self.numeric), n):
            return None
        with np.errstate(over="ignore"):
            block = values.T.astype(np.float32, order="C")
        finite = np.isfinite(block)
        if not finite.all() and (reject_missing or np.isinf(block[~finite]).any()):
            return None
        return block

    def _numeric_by_column(self, columns, n: int, *, reject_missing: bool) -> np.ndarray:
        block = np.empty((n, len(self.numeric)), dtype=np.float32)
        for j, name in enumerate(self.numeric):
            values = _numeric_column(name, columns[name], n)
            with np.errstate(over="ignore"):
                block[:, j] = values
            bad = ~np.isfinite(block[:, j])
            if bad.any():
                pos = int(np.flatnonzero(bad)[0])
                if np.isinf(values[pos]):
                    raise _bad(f"column {name!r} has an infinite value at row {pos + 1}")
                if np.isinf(block[pos, j]):
                    raise _bad(
                        f"column {name!r} has a value too large for float32 at row {pos + 1}"
                    )
                if reject_missing:
                    raise _missing_error(name, pos)
        return block

    def run(self, columns: Mapping[str, Any], n: int, *, reject_missing: bool):
        score, errors, label = self.session.run(
            None, self.feeds(columns, n, reject_missing=reject_missing)
        )
        return score, errors, label

    def metadata(self) -> dict:
        meta = self.scorer.metadata
        return {
            **self.info.to_dict(),
            "ref": self.info.ref,
            "loaded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.loaded_at)),
            "threshold": self.scorer.threshold,
            "threshold_rule": meta.get("threshold_rule"),
            "score": meta.get("score"),
            "feature_names": self.feature_names,
            "columns": meta.get("schema", {}).get("columns", []),
            "inputs": {"numeric": self.numeric, "categorical": self.categorical},
            "outputs": ["score", "is_anomaly", "feature_errors"],
            "metrics": meta.get("metrics"),
            "params": meta.get("params"),
            "architecture": meta.get("architecture"),
            "data_fingerprint": meta.get("data_fingerprint"),
            "format": meta.get("format"),
            "anomtune_version": meta.get("anomtune_version"),
        }


def _numeric_column(name: str, values, n: int) -> np.ndarray:
    try:
        array = np.asarray(values, dtype=np.float64)
        if array.shape == (n,):
            return array
    except (TypeError, ValueError, OverflowError):
        pass
    # Slow path: find the value numpy refused, or convert one by one.
    out = np.empty(n, dtype=np.float64)
    for i, value in enumerate(values):
        if value is None:
            out[i] = math.nan
            continue
        if isinstance(value, (bool, int, float, np.number)):
            try:
                out[i] = float(value)
                continue
            except OverflowError:
                raise _bad(
                    f"column {name!r} has a value too large for float32 at row {i + 1}"
                ) from None
        if isinstance(value, str):
            try:
                out[i] = float(value.strip())
                continue
            except ValueError:
                pass
        raise RequestError(
            400,
            "BAD_REQUEST",
            f"column {name!r} is numeric but row {i + 1} holds {_show(value)}",
        )
    return out


def _categorical_column(name: str, values, reject_missing: bool) -> list[str]:
    out = []
    for i, value in enumerate(values):
        if value is None or (isinstance(value, float) and math.isnan(value)):
            if reject_missing:
                raise _missing_error(name, i)
            out.append("")
        elif isinstance(value, str):
            out.append(value)
        elif isinstance(value, (bool, int, float, np.generic)):
            out.append(category_text(value))
        else:
            raise RequestError(
                400,
                "BAD_REQUEST",
                f"column {name!r} holds {_show(value)} at row {i + 1}; "
                "categorical values are strings or numbers",
            )
    return out


def _missing_error(name: str, pos: int) -> RequestError:
    return RequestError(
        400,
        "BAD_REQUEST",
        f"column {name!r} has a missing value at row {pos + 1}, and this server refuses "
        "missing values",
    )


def _show(value) -> str:
    if isinstance(value, (list, dict)):
        return "a list" if isinstance(value, list) else "an object"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


class ModelHolder:
    """The model being served, swapped atomically when the resolver's answer changes."""

    def __init__(self, resolver: Resolver, *, threads: int = 1):
        self.resolver = resolver
        self.threads = threads
        self._lock = threading.Lock()
        self.current: LoadedModel = self._load(*self._fetch())

    def _fetch(self) -> tuple[bytes, ModelInfo]:
        data, raw = self.resolver()
        return data, _info_from(raw, hashlib.sha256(data).hexdigest())

    def _load(self, data: bytes, info: ModelInfo) -> LoadedModel:
        return LoadedModel(data, info, threads=self.threads)

    def reload(self) -> dict:
        """Resolve again; load and swap in the model if it changed. Returns what happened."""
        with self._lock:
            previous = self.current
            data, info = self._fetch()
            old = previous.info
            changed = (info.sha256, info.version, info.name) != (old.sha256, old.version, old.name)
            if changed:
                fresh = self._load(data, info)
                if fresh.feature_names != previous.feature_names:
                    logger.warning(
                        "the new model %s takes other columns than %s", _label(info), _label(old)
                    )
                self.current = fresh  # one reference assignment: requests see old or new
                logger.info("now serving %s (was %s)", _label(info), _label(old))
        return {
            "changed": changed,
            "model": self.current.info.to_dict(),
            "previous": previous.info.to_dict(),
        }


def _label(info: ModelInfo) -> str:
    return f"{info.name}/{info.version}" if info.version is not None else info.name


# --------------------------------------------------------------------------- requests


class RequestError(Exception):
    """A request the server refuses: HTTP status, error code and a message for the client."""

    def __init__(self, status: int, code: str, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers


def _bad(message: str) -> RequestError:
    return RequestError(400, "BAD_REQUEST", message)


def _malformed(message: str) -> RequestError:
    return RequestError(400, "MALFORMED_REQUEST", message)


def _no_constants(token: str):
    raise _malformed(f"the body holds {token}, which is not JSON; send null for a missing value")


def parse_json(body: bytes) -> Any:
    if not body.strip():
        raise _malformed('the body is empty; send a JSON object such as {"dataframe_split": ...}')
    try:
        return json.loads(body, parse_constant=_no_constants)
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno} column {exc.colno}"
        raise _malformed(f"malformed JSON at {where}: {exc.msg}") from None
    except UnicodeDecodeError:
        raise _malformed("the body is not UTF-8 text") from None
    except RecursionError:
        raise _malformed("the JSON is nested too deeply") from None
    except ValueError as exc:  # such as an integer with too many digits
        if "digits" in str(exc):
            raise _malformed("malformed JSON: a number has too many digits") from None
        raise _malformed("malformed JSON: unreadable") from None


def columns_from_json(
    doc: Any, feature_names: list[str], max_rows: int
) -> tuple[dict[str, list], int, dict]:
    """``({column: values}, rows, params)`` from one of MLflow's JSON request forms."""
    if not isinstance(doc, dict):
        raise _bad(f"the body must be a JSON object with one of the keys {', '.join(FORMATS)}")
    keys = [k for k in doc if k in FORMATS]
    unknown = [k for k in doc if k not in FORMATS and k != "params"]
    if unknown:
        raise _bad(
            f"unknown key {unknown[0]!r}; the body takes one of {', '.join(FORMATS)} "
            "and optionally params"
        )
    if len(keys) != 1:
        found = f"got {', '.join(keys)}" if keys else "got none"
        raise _bad(f"the body must hold exactly one of {', '.join(FORMATS)} ({found})")
    params = _params(doc.get("params"))
    kind = keys[0]
    value = doc[kind]
    if kind == "dataframe_split":
        columns, n = _from_split(value, max_rows)
    elif kind == "dataframe_records":
        if not isinstance(value, list):
            raise _bad("dataframe_records must be a list of objects, one per row")
        columns, n = _from_rows(value, kind, feature_names, max_rows, lists=False)
    elif kind == "inputs" and isinstance(value, dict):
        columns, n = _from_columnar(value, max_rows)
    else:
        if not isinstance(value, list):
            raise _bad(f"{kind} must be a list of rows or an object of columns")
        columns, n = _from_rows(value, kind, feature_names, max_rows, lists=True)
    return columns, n, params


def _params(raw) -> dict:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise _bad('params must be an object, such as {"explain": true}')
    for key, value in raw.items():
        if key not in PARAMS:
            raise _bad(f"unknown parameter {key!r}; the model takes: {', '.join(PARAMS)}")
        if not isinstance(value, bool):
            raise _bad(f"parameter {key!r} must be true or false")
    return raw


def _check_count(n: int, max_rows: int) -> None:
    if n == 0:
        raise _bad("the request holds no rows")
    if n > max_rows:
        raise RequestError(
            413,
            "TOO_MANY_ROWS",
            f"the request holds {n} rows; this server takes at most {max_rows} per request",
        )


def _from_split(value, max_rows: int) -> tuple[dict[str, list], int]:
    if not isinstance(value, dict):
        raise _bad('dataframe_split must be an object {"columns": [...], "data": [[...], ...]}')
    extra = [k for k in value if k not in ("columns", "data", "index")]
    if extra:
        raise _bad(f"dataframe_split has an unknown key {extra[0]!r} (it takes columns and data)")
    names = value.get("columns")
    data = value.get("data")
    if not isinstance(names, list) or not all(isinstance(c, str) for c in names):
        raise _bad("dataframe_split needs columns: a list of column names")
    if len(set(names)) != len(names):
        dup = next(c for c in names if names.count(c) > 1)
        raise _bad(f"dataframe_split names column {dup!r} twice")
    if not isinstance(data, list):
        raise _bad("dataframe_split needs data: a list of rows")
    n = len(data)
    _check_count(n, max_rows)
    width = len(names)
    for i, row in enumerate(data):
        if not isinstance(row, list) or len(row) != width:
            got = f"{len(row)} values" if isinstance(row, list) else _show(row)
            raise _bad(f"row {i + 1} of dataframe_split holds {got}; there are {width} columns")
    return {name: [row[j] for row in data] for j, name in enumerate(names)}, n


def _from_rows(
    rows: list, kind: str, feature_names: list[str], max_rows: int, *, lists: bool
) -> tuple[dict[str, list], int]:
    n = len(rows)
    _check_count(n, max_rows)
    first = rows[0]
    if isinstance(first, dict):
        for i, row in enumerate(rows):
            if not isinstance(row, dict):
                raise _bad(f"row {i + 1} of {kind} is {_show(row)}, not an object")
        present = set().union(*rows) if n > 1 else set(first)
        # A column some rows leave out is missing in those rows (as in a DataFrame).
        return {name: [row.get(name) for row in rows] for name in present}, n
    if lists and isinstance(first, list):
        width = len(feature_names)
        for i, row in enumerate(rows):
            if not isinstance(row, list) or len(row) != width:
                got = f"{len(row)} values" if isinstance(row, list) else _show(row)
                raise _bad(
                    f"row {i + 1} of {kind} holds {got}; a row given as a list holds the "
                    f"model's {width} columns in order ({', '.join(feature_names)})"
                )
        return {name: [row[j] for row in rows] for j, name in enumerate(feature_names)}, n
    shapes = "objects keyed by column or lists in the model's column order" if lists else "objects"
    raise _bad(f"{kind} must be a list of rows ({shapes}); row 1 is {_show(first)}")


def _from_columnar(value: dict, max_rows: int) -> tuple[dict[str, list], int]:
    if not value:
        raise _bad("the request holds no rows")
    lengths = {len(v) if isinstance(v, list) else None for v in value.values()}
    if lengths == {None}:  # one row given as {column: value}
        return {k: [v] for k, v in value.items()}, 1
    if None in lengths or len(lengths) != 1:
        raise _bad("inputs given as columns must map every column to a list of the same length")
    n = lengths.pop()
    _check_count(n, max_rows)
    return value, n


def columns_from_csv(body: bytes, max_rows: int) -> tuple[dict[str, Any], int]:
    import pandas as pd

    if not body.strip():
        raise _malformed("the body is empty; send a CSV header line and rows")
    try:
        frame = pd.read_csv(io.BytesIO(body))
    except UnicodeDecodeError:
        raise _malformed("the CSV body is not UTF-8 text") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else "unreadable"
        reason = reason.replace("Error tokenizing data. C error: ", "")
        raise _malformed(f"malformed CSV: {reason}") from None
    if not isinstance(frame.index, pd.RangeIndex):
        # pandas reads a first row longer than the header as an index: refuse it.
        raise _malformed("malformed CSV: row 1 has more fields than the header")
    if frame.columns.duplicated().any():
        raise _bad(
            f"the CSV header names column {frame.columns[frame.columns.duplicated()][0]!r} twice"
        )
    n = len(frame)
    _check_count(n, max_rows)
    return {str(c): frame[c].to_numpy() for c in frame.columns}, n


# --------------------------------------------------------------------------- OpenAPI


_DESCRIPTION = (
    "Scores rows with an anomtune model (onnxruntime). `POST /invocations` speaks "
    "MLflow's scoring protocol. Limits: bodies up to {max_body} bytes (413 beyond), "
    "at most {max_rows} rows per request (413 beyond). Errors are JSON "
    "`{{error_code, message}}`. With a token set, /invocations, /metadata and /reload "
    "need `Authorization: Bearer TOKEN`; /ping, /health and /version stay open."
)


class StatusOut(BaseModel):
    status: str = "ok"


class ModelOut(BaseModel):
    name: str
    version: int | None = Field(None, description="Registry version; null for a file.")
    sha256: str


class VersionOut(BaseModel):
    anomtune: str
    onnxruntime: str
    model: ModelOut


class Prediction(BaseModel):
    score: float | None = Field(description="Reconstruction error: higher is more anomalous.")
    is_anomaly: bool = Field(description="score > the model's threshold.")
    feature_errors: dict[str, float | None] | None = Field(
        None,
        description=(
            "Each column's squared reconstruction error, not a share: for the reconstruction "
            "score a row's values sum to the number of encoded features times the score "
            "(with explain only)."
        ),
    )


class InvocationsOut(BaseModel):
    predictions: list[Prediction]
    model: ModelOut


class ErrorOut(BaseModel):
    error_code: str
    message: str


class ReloadOut(BaseModel):
    changed: bool
    model: ModelOut
    previous: ModelOut


class MetadataOut(BaseModel):
    name: str
    version: int | None
    sha256: str
    ref: str
    loaded_at: str
    threshold: float
    threshold_rule: Any = None
    score: str | None = None
    feature_names: list[str]
    columns: list[dict[str, Any]]
    inputs: dict[str, list[str]]
    outputs: list[str]
    metrics: dict[str, Any] | None = None
    params: dict[str, Any] | None = None
    architecture: dict[str, Any] | None = None
    data_fingerprint: str | None = None
    format: str | None = None
    anomtune_version: str | None = None


# The largest float32: numbers beyond it are refused (400).
FLOAT32_MAX = float(np.finfo(np.float32).max)


def _request_body(served: LoadedModel | None, max_body: int, max_rows: int) -> dict:
    """The OpenAPI request body of ``/invocations``, naming the served model's columns.

    Rows and columns are described with the model's feature names and kinds, so a
    client (or a schema-driven fuzzer) sees exactly which keys a request needs.
    """
    any_value = {"description": "A value: number, string or null (missing)."}
    numeric = {
        "type": ["number", "null"],
        "minimum": -FLOAT32_MAX,
        "maximum": FLOAT32_MAX,
        "description": "A number (float32 range; numeric strings are read too) or null.",
    }
    names: list[str] = []
    kinds: dict[str, dict] = {}
    example_row: list = []
    if served is not None:
        names = list(served.feature_names)
        categories = {
            c.get("name"): c.get("categories") or []
            for c in served.scorer.metadata.get("schema", {}).get("columns", [])
        }
        for name in names:
            if name in served.categorical:
                seen = [str(v) for v in categories.get(name, [])]
                kinds[name] = {
                    "type": ["string", "null"],
                    "description": "A category (numbers are read as text); unknown values "
                    "are allowed; null is missing.",
                    **({"examples": seen[:5]} if seen else {}),
                }
                example_row.append(seen[0] if seen else "")
            else:
                kinds[name] = numeric
                example_row.append(0.0)
    rows = {"minItems": 1, "maxItems": max_rows}
    record = {"type": "object", "properties": kinds, "additionalProperties": any_value}
    if names:
        record["required"] = names
    records = {"type": "array", "items": record, **rows}
    if names:
        row_list = {
            "type": "array",
            "items": {
                "type": "array",
                "prefixItems": [kinds[n] for n in names],
                "items": False,
                "minItems": len(names),
                "maxItems": len(names),
            },
            **rows,
        }
        columnar = {
            "type": "object",
            "properties": {n: {"type": "array", "items": kinds[n], **rows} for n in names},
            "required": names,
            "additionalProperties": {"type": "array", "items": any_value},
        }
    else:
        row_list = {"type": "array", "items": {"type": "array", "items": any_value}, **rows}
        columnar = {"type": "object", "additionalProperties": {"type": "array", "items": any_value}}
    params = {
        "type": "object",
        "properties": {"explain": {"type": "boolean"}},
        "additionalProperties": False,
    }

    def form(key: str, schema: dict, text: str) -> dict:
        return {
            "type": "object",
            "title": key,
            "description": text,
            "properties": {key: schema, "params": params},
            "required": [key],
            "additionalProperties": False,
        }

    split = {
        "type": "object",
        "properties": {
            "columns": {"type": "array", "items": {"type": "string"}, "uniqueItems": True},
            "data": {"type": "array", "items": {"type": "array", "items": any_value}, **rows},
            "index": {"type": "array"},
        },
        "required": ["columns", "data"],
        "additionalProperties": False,
    }
    shown = names or ["a", "b"]
    row = example_row or [0.5, "red"]
    csv_example = ",".join(shown) + "\n" + ",".join(map(str, row)) + "\n"
    return {
        "required": True,
        "description": (
            f"Up to {max_rows} rows and {max_body} bytes. Columns are matched by name in "
            "any order and extra columns are ignored; rows given as lists follow the "
            "model's column order (feature_names in /metadata"
            + (f": {', '.join(names)}" if names else "")
            + "). null or an empty CSV cell is a missing value, imputed by the model."
        ),
        "content": {
            "application/json": {
                "schema": {
                    "oneOf": [
                        form("dataframe_split", split, "pandas 'split' orientation."),
                        form("dataframe_records", records, "One object per row."),
                        form(
                            "instances",
                            {"anyOf": [records, row_list]},
                            "Rows: objects, or lists in the model's column order.",
                        ),
                        form(
                            "inputs",
                            {"anyOf": [columnar, records, row_list]},
                            "Columns {name: [values]}, or rows as for instances.",
                        ),
                    ]
                },
                "example": {"dataframe_split": {"columns": shown, "data": [row]}},
            },
            "text/csv": {
                "schema": {"type": "string"},
                "example": csv_example,
            },
        },
    }


_EXPLAIN_PARAMETER = {
    "name": "explain",
    "in": "query",
    "required": False,
    "description": (
        "Add each column's squared reconstruction error to every prediction (not a share: "
        "for the reconstruction score a row's values sum to the number of encoded features "
        "times the score)."
    ),
    "schema": {"type": "boolean", "default": False},
}
_TRUE = frozenset(("true", "1", "yes", "on", "t", "y"))
_FALSE = frozenset(("false", "0", "no", "off", "f", "n"))


def _query_flag(value: str | None, name: str) -> bool:
    if value is None:
        return False
    text = value.strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise _bad(f"{name}: must be true or false, got {_show(value)}")


_BEARER = HTTPBearer(auto_error=False, description="The server's token, when it has one.")

_ERROR_RESPONSES = {
    status: {"model": ErrorOut, "description": text}
    for status, text in {
        400: "Malformed body, wrong or missing columns, bad values, no rows.",
        401: "Missing or wrong bearer token (when the server has one).",
        413: "Body over the size limit, or more rows than the row limit.",
        415: "A content type other than application/json or text/csv.",
    }.items()
}

# --------------------------------------------------------------------------- the app


def create_app(
    model: str | Path | Resolver,
    *,
    threads: int = 1,
    token: str | None = None,
    reload_interval: float | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    max_rows: int = DEFAULT_MAX_ROWS,
    reject_missing: bool = False,
    registry: str | None = None,
    registry_files: str | None = None,
):
    """The FastAPI application serving one model.

    ``model`` is a reference (a path to an ``.onnx`` file, or a registry
    reference once the registry resolves them) or a callable returning
    ``(model_bytes, info)`` where ``info`` has ``name`` and ``version`` (an
    object or a mapping). The model is loaded now: a reference that does not
    resolve raises an :class:`~anomtune.errors.AnomtuneError` here, not on the
    first request. ``reload_interval`` (seconds, 0 = never) defaults to
    :data:`DEFAULT_RELOAD_INTERVAL` for references that can move (a bare name
    or an alias) and to never otherwise.
    """
    if threads < 1:
        raise ConfigError(f"threads must be at least 1, got {threads}")
    if max_body_bytes < 1 or max_rows < 1:
        raise ConfigError("the body-size and row limits must be positive")
    if callable(model):
        resolver = model
        default_interval = 0.0
    else:
        resolver = resolver_for(str(model), registry=registry, files=registry_files)
        default_interval = DEFAULT_RELOAD_INTERVAL if reference_can_move(str(model)) else 0.0
    interval = default_interval if reload_interval is None else float(reload_interval)
    if interval < 0:
        raise ConfigError(f"reload interval must be 0 (never) or positive, got {interval}")
    holder = ModelHolder(resolver, threads=threads)
    return _build_app(
        holder,
        token=token or None,
        interval=interval,
        max_body_bytes=int(max_body_bytes),
        max_rows=int(max_rows),
        reject_missing=reject_missing,
    )


def _build_app(holder, *, token, interval, max_body_bytes, max_rows, reject_missing):
    @contextlib.asynccontextmanager
    async def lifespan(app):
        task = asyncio.create_task(_reload_loop(holder, interval)) if interval > 0 else None
        try:
            yield
        finally:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    app = FastAPI(
        title="anomtune scoring server",
        version=__version__,
        description=_DESCRIPTION.format(max_body=max_body_bytes, max_rows=max_rows),
        lifespan=lifespan,
    )
    app.state.holder = holder
    expected = token.encode() if token else None
    described: list = [None]  # the model the cached OpenAPI document describes

    def openapi() -> dict:
        # The document names the served model's columns, so it is rebuilt after a swap.
        served = holder.current
        if app.openapi_schema is None or described[0] is not served:
            app.openapi_schema = None
            doc = FastAPI.openapi(app)
            post = doc["paths"]["/invocations"]["post"]
            post["requestBody"] = _request_body(served, max_body_bytes, max_rows)
            described[0] = served
        return app.openapi_schema

    app.openapi = openapi

    # async: a plain ``def`` dependency would be run in a worker thread on every request.
    async def authorize(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_BEARER)],
    ) -> None:
        if expected is None:
            return
        given = credentials.credentials.encode() if credentials is not None else b""
        if credentials is None or not hmac.compare_digest(given, expected):
            raise RequestError(
                401,
                "UNAUTHORIZED",
                "a valid bearer token is required (Authorization: Bearer TOKEN)",
                {"WWW-Authenticate": "Bearer"},
            )

    def error(status: int, code: str, message: str, headers=None) -> JSONResponse:
        return JSONResponse(
            {"error_code": code, "message": message}, status_code=status, headers=headers
        )

    @app.exception_handler(RequestError)
    async def _request_error(request, exc: RequestError):
        return error(exc.status, exc.code, exc.message, exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request, exc: StarletteHTTPException):
        code = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED"}.get(exc.status_code, "BAD_REQUEST")
        message = {404: "no such endpoint", 405: "method not allowed on this endpoint"}.get(
            exc.status_code, str(exc.detail)
        )
        return error(exc.status_code, code, message, getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        where = " ".join(str(p) for p in first.get("loc", ()) if p != "query")
        return error(400, "BAD_REQUEST", f"{where}: {first.get('msg', 'invalid value')}".strip())

    @app.exception_handler(Exception)
    async def _unexpected(request, exc: Exception):
        logger.error("unexpected error on %s", request.url.path, exc_info=exc)
        return error(500, "INTERNAL_ERROR", "internal error; the server log has the details")

    @app.get("/ping", response_model=StatusOut, tags=["health"])
    async def ping():
        """Liveness: 200 while the server runs with a model loaded. No token needed."""
        return {"status": "ok"}

    @app.get("/health", response_model=StatusOut, tags=["health"])
    async def health():
        """Same as /ping. No token needed."""
        return {"status": "ok"}

    @app.get("/version", response_model=VersionOut, tags=["health"])
    async def version():
        """anomtune's and onnxruntime's versions and the model being served."""
        return {
            "anomtune": __version__,
            "onnxruntime": onnxruntime.__version__,
            "model": holder.current.info.to_dict(),
        }

    @app.get(
        "/metadata",
        response_model=MetadataOut,
        dependencies=[Depends(authorize)],
        responses={401: {"model": ErrorOut}},
        tags=["model"],
    )
    async def metadata():
        """The served model: name, version, columns, threshold and training summary."""
        return holder.current.metadata()

    @app.post(
        "/invocations",
        response_model=InvocationsOut,
        dependencies=[Depends(authorize)],
        responses=_ERROR_RESPONSES,
        openapi_extra={
            "requestBody": _request_body(None, max_body_bytes, max_rows),
            "parameters": [_EXPLAIN_PARAMETER],
        },
        tags=["scoring"],
    )
    async def invocations(request: Request):
        """Score rows (MLflow's scoring protocol). See the request body for the forms."""
        # Read here rather than declared as a parameter: FastAPI's parameter handling
        # costs more than scoring a row. The document lists it (_EXPLAIN_PARAMETER).
        explain = _query_flag(request.query_params.get("explain"), "explain")
        content_type = request.headers.get("content-type", "application/json")
        media = content_type.split(";", 1)[0].strip().lower()
        if media not in ("application/json", "text/csv"):
            raise RequestError(
                415,
                "UNSUPPORTED_MEDIA_TYPE",
                f"content type {media or '(none)'!r} is not supported; "
                "send application/json or text/csv",
            )
        body = await _read_body(request, max_body_bytes)
        served = holder.current
        if len(body) <= INLINE_BODY_BYTES:
            content = _score(served, body, media, explain, max_rows, reject_missing)
        else:
            content = await anyio.to_thread.run_sync(
                _score, served, body, media, explain, max_rows, reject_missing
            )
        return Response(content, media_type="application/json", headers=served.headers)

    @app.post(
        "/reload",
        response_model=ReloadOut,
        dependencies=[Depends(authorize)],
        responses={401: {"model": ErrorOut}, 503: {"model": ErrorOut}},
        tags=["model"],
    )
    async def reload():
        """Resolve the model reference again and serve the new model if it changed."""
        try:
            return await anyio.to_thread.run_sync(holder.reload)
        except AnomtuneError as exc:
            logger.warning("reload failed: %s", exc)
            raise RequestError(
                503, "RELOAD_FAILED", f"still serving the old model: {without_locations(exc)}"
            ) from exc
        except Exception as exc:
            logger.error("reload failed", exc_info=exc)
            raise RequestError(
                503, "RELOAD_FAILED", "still serving the old model; the server log has the details"
            ) from exc

    return app


_URL = re.compile(r"\b([a-zA-Z][a-zA-Z0-9+.-]*)://\S+")
_ABSOLUTE_PATH = re.compile(r"(?<![\w.@:/~-])(?:[A-Za-z]:)?[/\\][^\s'\",;]+")


def without_locations(error: BaseException | str) -> str:
    """An error message for clients: URLs and absolute paths shortened to what they name.

    Registry and file errors name where things live on the server (a database URL,
    which can hold a password, or a folder); a client needs neither. A path keeps its
    last part (``models.db``), a URL its scheme (``postgresql+psycopg://...``).
    """
    text = str(error)
    text = _URL.sub(lambda m: f"{m.group(1)}://...", text)
    return _ABSOLUTE_PATH.sub(lambda m: re.split(r"[/\\]", m.group(0).rstrip("/\\"))[-1], text)


async def _read_body(request, limit: int) -> bytes:
    too_large = RequestError(
        413, "BODY_TOO_LARGE", f"the body is larger than this server's limit of {limit} bytes"
    )
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > limit:
                raise too_large
        except ValueError:
            raise _malformed("the Content-Length header is not a number") from None
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


def _score(
    served: LoadedModel, body: bytes, media: str, explain: bool, max_rows: int, reject_missing: bool
) -> bytes:
    if media == "text/csv":
        columns, n = columns_from_csv(body, max_rows)
    else:
        columns, n, params = columns_from_json(parse_json(body), served.feature_names, max_rows)
        explain = explain or params.get("explain", False)
    served.check_columns(columns)
    score, errors, label = served.run(columns, n, reject_missing=reject_missing)
    scores = _finite_list(score)
    flags = label.astype(bool).tolist()
    if explain:
        names = served.feature_names
        rows = [dict(zip(names, _finite_list(row), strict=True)) for row in errors]
        predictions = [
            {"score": s, "is_anomaly": a, "feature_errors": e}
            for s, a, e in zip(scores, flags, rows, strict=True)
        ]
    else:
        predictions = [{"score": s, "is_anomaly": a} for s, a in zip(scores, flags, strict=True)]
    return b'{"predictions":%s,"model":%s}' % (json.dumps(predictions).encode(), served.model_json)


def _finite_list(values: np.ndarray) -> list:
    out = values.tolist()
    if not np.isfinite(values).all():
        out = [v if math.isfinite(v) else None for v in out]
    return out


async def _reload_loop(holder: ModelHolder, interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        try:
            await anyio.to_thread.run_sync(holder.reload)
        except AnomtuneError as exc:
            logger.warning("reload failed; still serving %s: %s", _label(holder.current.info), exc)
        except Exception:
            logger.exception("reload failed; still serving %s", _label(holder.current.info))
