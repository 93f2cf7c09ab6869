"""Model references for the server: what a reference names, decided by the registry's parser.

A reference (``model.onnx``, ``name``, ``name/3``, ``name@alias``,
``models:/name@alias``) means what :func:`anomtune.registry.parse_ref` says it
means, here as everywhere else; registry references are fetched with
:func:`anomtune.registry.resolve`. A *resolver* is a callable returning the
model's bytes and its identity; the server calls it at start and on every
reload.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from anomtune.errors import ConfigError
from anomtune.scoring import read_model_file

__all__ = ["ModelInfo", "Resolver", "info_from", "reference_can_move", "resolver_for"]


@dataclass(frozen=True)
class ModelInfo:
    """Which model is served: registry name and version (``None`` for a file), ref, hash."""

    name: str
    version: int | None
    ref: str
    sha256: str = ""

    def to_dict(self) -> dict:
        return {"name": self.name, "version": self.version, "sha256": self.sha256}

    @property
    def label(self) -> str:
        return f"{self.name}/{self.version}" if self.version is not None else self.name


Resolver = Callable[[], tuple[bytes, Any]]
"""Returns the model's bytes and an object or mapping with ``name`` and ``version``."""


def resolver_for(
    ref: str | Path, *, registry: str | None = None, files: str | None = None
) -> Resolver:
    """A resolver for a model reference; a reference that does not parse raises here.

    A model file is read as it is; its name is the file's stem and its ``ref``
    the file's name (never the server's folders). A registry reference goes to
    the registry (``registry``, else ``ANOMTUNE_REGISTRY``, else the workspace
    default) and keeps the reference as given (``name@champion``) as its
    ``ref``: the version it resolves to today is in ``version``.
    """
    from anomtune.registry import parse_ref

    parsed = parse_ref(ref)
    if parsed.is_file:
        path = parsed.path

        def read_file() -> tuple[bytes, ModelInfo]:
            return read_model_file(path), ModelInfo(name=path.stem, version=None, ref=path.name)

        return read_file

    served_as = str(ref).strip()

    def from_registry() -> tuple[bytes, dict]:
        from anomtune.registry import resolve

        data, version = resolve(parsed, registry=registry, files=files)
        return data, {"name": version.name, "version": version.version, "ref": served_as}

    return from_registry


def reference_can_move(ref: str | Path) -> bool:
    """Whether a reference may name another model later (a bare name or an alias)."""
    from anomtune.registry import parse_ref

    return parse_ref(ref).moves


def info_from(raw: Any, sha256: str) -> ModelInfo:
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
