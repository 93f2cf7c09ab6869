"""HTTP scoring of an exported model with onnxruntime, over FastAPI.

:func:`create_app` builds the application; ``anomtune serve`` runs it under
uvicorn. The scoring endpoint speaks MLflow's scoring protocol:

``POST /invocations``
    ``application/json`` with exactly one of ``dataframe_split``,
    ``dataframe_records``, ``instances`` or ``inputs``, plus optional
    ``params`` (``{"explain": true}``; other parameters are ignored); or
    ``text/csv`` with a header line (see :mod:`anomtune.serving.protocol`).
    Columns are matched by name, in any order; extra columns are ignored.
    ``null``, a bare ``NaN`` (as MLflow's clients write it) or an empty CSV
    cell is a missing value, imputed inside the graph. The answer is
    ``{"predictions": [{"score": s, "is_anomaly": b}, ...], "model": {"name",
    "version", "sha256"}}``; with ``?explain=true`` (or ``params.explain``)
    each prediction also carries ``feature_errors``, each column's squared
    reconstruction error (not a share). The headers ``X-Anomtune-Model``,
    ``X-Anomtune-Model-Version`` and ``X-Anomtune-Model-Sha256`` name the
    model that scored the request.
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

The modules: :mod:`~anomtune.serving.references` (what a model reference
names), :mod:`~anomtune.serving.protocol` (the request forms and answers),
:mod:`~anomtune.serving.feeds` (request values to graph inputs),
:mod:`~anomtune.serving.served` (the warm model and its swaps) and
:mod:`~anomtune.serving.app` (the FastAPI wiring).

This package is on the serving path: it imports onnxruntime, numpy, pandas,
FastAPI, pydantic and the registry's read side, never torch, Optuna or
scikit-learn.
"""

from anomtune.serving.app import (
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_ROWS,
    DEFAULT_RELOAD_INTERVAL,
    create_app,
    without_locations,
)
from anomtune.serving.feeds import feeds_from_columns
from anomtune.serving.protocol import RequestError
from anomtune.serving.references import ModelInfo, reference_can_move, resolver_for
from anomtune.serving.served import LoadedModel, ModelHolder

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_MAX_ROWS",
    "DEFAULT_RELOAD_INTERVAL",
    "LoadedModel",
    "ModelHolder",
    "ModelInfo",
    "RequestError",
    "create_app",
    "feeds_from_columns",
    "reference_can_move",
    "resolver_for",
    "without_locations",
]
