"""anomtune: tune, export, version and serve autoencoder anomaly detectors.

Heavy parts (torch, Optuna, scikit-learn) load only when first used, so that
``import anomtune`` stays cheap for the scoring path.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

__all__ = [
    "AnomtuneError",
    "AutoencoderDetector",
    "ConfigError",
    "DataError",
    "Table",
    "TrainingError",
    "__version__",
    "load",
    "read_table",
    "split_rows",
    "tune",
]

_LAZY = {
    "AutoencoderDetector": "anomtune.detector",
    "Table": "anomtune.data",
    "read_table": "anomtune.data",
    "split_rows": "anomtune.data",
    "AnomtuneError": "anomtune.errors",
    "ConfigError": "anomtune.errors",
    "DataError": "anomtune.errors",
    "TrainingError": "anomtune.errors",
    "tune": "anomtune.tuning",
}


def load(
    ref: str,
    *,
    registry: str | None = None,
    registry_files: str | None = None,
    threads: int = 1,
):
    """A scorer for a model reference, with onnxruntime only.

    ``ref`` is ``name@alias``, ``name/3``, ``name`` (latest) or a path to an
    ``.onnx`` file. The scorer's ``score(frame_or_array)`` returns scores,
    labels and per-feature errors; ``metadata`` holds the schema, threshold
    and metrics.

    >>> import anomtune
    >>> scorer = anomtune.load("fraud@champion")  # doctest: +SKIP
    """
    from anomtune.scoring import open_model

    return open_model(ref, registry=registry, registry_files=registry_files, threads=threads)


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'anomtune' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
