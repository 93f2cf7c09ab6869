"""Registering models: from a ``tune`` run folder or an exported ``.onnx`` file.

This is the write side: it may import onnx (for its checker) and, to export
a run, torch through :mod:`anomtune.export`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TypedDict, Unpack

from anomtune.errors import first_line
from anomtune.registry._errors import RegistryError
from anomtune.registry._names import validate_name, validate_tag
from anomtune.registry._registry import ModelVersion, Registry, graph_metadata
from anomtune.registry._store import read_model_file

__all__ = ["FORMAT", "VersionNotes", "check_model_bytes", "register_onnx", "register_run"]

FORMAT = "anomtune-onnx/1"


def _lineage(metadata: dict, **extra) -> dict:
    lineage = dict(metadata.get("lineage") or {})
    if metadata.get("data_fingerprint"):
        lineage.setdefault("data_fingerprint", metadata["data_fingerprint"])
    lineage.update({k: v for k, v in extra.items() if v is not None})
    return lineage


def check_model_bytes(data: bytes, source: str) -> dict:
    """Refuse bytes that are not a valid, parity-checked anomtune graph; return its metadata."""
    try:
        import onnx
    except ImportError as exc:
        raise RegistryError(
            "registering a model needs the onnx package (a full install: pip install anomtune)"
        ) from exc
    try:
        model = onnx.load_from_string(data)
        onnx.checker.check_model(model, full_check=True)
    except Exception as exc:  # onnx raises several exception types
        raise RegistryError(f"{source}: not a valid ONNX model: {first_line(exc)}") from exc
    metadata = graph_metadata(data, source)
    if metadata.get("format") != FORMAT:
        raise RegistryError(
            f"{source}: unknown anomtune model format {metadata.get('format')!r} "
            f"(expected {FORMAT!r})"
        )
    parity = metadata.get("parity")
    if isinstance(parity, dict) and parity.get("passed") is False:
        raise RegistryError(f"{source}: the export's parity check failed; not registering it")
    return metadata


class VersionNotes(TypedDict, total=False):
    """What a registration records with the new version besides the model and its lineage."""

    description: str
    tags: dict[str, str] | None


def register_onnx(
    registry: Registry, path: str | Path, *, name: str, **notes: Unpack[VersionNotes]
) -> ModelVersion:
    """Register an already exported anomtune ``.onnx`` file."""
    path = Path(path)
    data = read_model_file(path)
    return _publish(registry, data, str(path), {"source_file": str(path.resolve())}, name, notes)


def register_run(
    registry: Registry, run_dir: str | Path, *, name: str, **notes: Unpack[VersionNotes]
) -> ModelVersion:
    """Export the best model of a run folder (parity-checked) and register it."""
    from anomtune.export import export_run

    # Names, notes and tags are checked before the (slow) export.
    unknown = sorted(set(notes) - set(VersionNotes.__annotations__))
    if unknown:
        raise TypeError(f"register_run() got unknown keyword(s): {', '.join(unknown)}")
    validate_name(name)
    for key, value in (notes.get("tags") or {}).items():
        validate_tag(key, value)
    data, extra = export_run(run_dir)
    lineage = dict(extra.get("lineage") or {})
    if extra.get("data_fingerprint"):
        lineage["data_fingerprint"] = extra["data_fingerprint"]
    return _publish(registry, data, str(run_dir), lineage, name, notes)


def _publish(
    registry: Registry, data: bytes, source: str, lineage: dict, name: str, notes: VersionNotes
) -> ModelVersion:
    """Check the bytes, then register them with the graph's lineage and ``lineage`` over it."""
    metadata = check_model_bytes(data, source)
    return registry.register(
        data, name=name, metadata=metadata, lineage=_lineage(metadata, **lineage), **notes
    )
