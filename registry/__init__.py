"""The model registry, imported as ``anomtune.registry``.

Versioned anomtune ONNX models with metadata, lineage, tags, aliases
(``name@champion``) and an append-only alias history, in a database
(SQLite by default, PostgreSQL by URL) plus a content-addressed folder of
model files checked by hash on every load.

The read side (:func:`resolve`, :meth:`Registry.get`, :meth:`Registry.load`)
imports only the standard library, SQLAlchemy and onnxruntime; registering
from a run folder and the promotion gate load more, when called.

Examples
--------
>>> from anomtune.registry import resolve
>>> data, info = resolve("cardio@champion")  # doctest: +SKIP
>>> info.ref, info.metadata["threshold"]  # doctest: +SKIP
('cardio/3', 0.0123)
"""

from anomtune.registry._errors import (
    IntegrityError,
    InvalidNameError,
    ModelNotFoundError,
    PromotionRefused,
    RegistryError,
    RegistryNotFoundError,
)
from anomtune.registry._gate import Gate, GateResult, Promotion, promote
from anomtune.registry._location import RegistryLocation, locate_registry
from anomtune.registry._names import ModelRef, parse_ref, validate_alias, validate_name
from anomtune.registry._register import register_onnx, register_run
from anomtune.registry._registry import (
    AliasMove,
    ModelSummary,
    ModelVersion,
    Registry,
    VerifyReport,
    graph_metadata,
    resolve,
)

__all__ = [
    "AliasMove",
    "Gate",
    "GateResult",
    "IntegrityError",
    "InvalidNameError",
    "ModelNotFoundError",
    "ModelRef",
    "ModelSummary",
    "ModelVersion",
    "Promotion",
    "PromotionRefused",
    "Registry",
    "RegistryError",
    "RegistryLocation",
    "RegistryNotFoundError",
    "VerifyReport",
    "graph_metadata",
    "locate_registry",
    "parse_ref",
    "promote",
    "register_onnx",
    "register_run",
    "resolve",
    "validate_alias",
    "validate_name",
]
