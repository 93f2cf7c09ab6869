"""Names, aliases, tags and model references.

A model name or alias is 1 to 64 characters of lowercase letters, digits,
``-`` and ``_``, starting with a letter or digit. That rules out path
separators, ``.`` and ``..``, so a name can never leave the registry's
folders. Aliases follow the same rule but cannot be all digits (``name/3``
is a version) or ``latest`` (``name@latest`` means the newest active version).

A reference names one model version:

``name``            the newest active version
``name/3``          version 3
``name@champion``   the version the alias points to
``path/model.onnx`` a model file outside the registry (any path ending in ``.onnx``)

The MLflow spelling ``models:/name@champion`` is accepted too. :func:`parse_ref`
is the one place that decides what a reference means: scoring, serving and the
registry commands all call it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from anomtune.registry._errors import InvalidNameError

__all__ = ["ModelRef", "parse_ref", "validate_alias", "validate_name", "validate_tag"]

MAX_NAME = 64
MAX_TAG_VALUE = 500
LATEST = "latest"
_NAME = re.compile(r"[a-z0-9][a-z0-9_-]*")
_TAG_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]*")
_REF_FORMS = "NAME, NAME/VERSION, NAME@ALIAS or a path to an .onnx file"


def validate_name(name: str, what: str = "model name") -> str:
    """Return ``name`` if it is a valid model name, else raise :class:`InvalidNameError`."""
    if not isinstance(name, str) or not name:
        raise InvalidNameError(f"a {what} cannot be empty")
    if len(name) > MAX_NAME:
        raise InvalidNameError(f"{what} {name!r} is longer than {MAX_NAME} characters")
    if "/" in name or "\\" in name or ".." in name:
        raise InvalidNameError(
            f"{what} {name!r} must not contain path separators or '..' "
            "(use lowercase letters, digits, '-' and '_')"
        )
    if _NAME.fullmatch(name) is None:
        hint = f"; try {name.lower()!r}" if _NAME.fullmatch(name.lower()) else ""
        raise InvalidNameError(
            f"{what} {name!r} may hold only lowercase letters, digits, '-' and '_', "
            f"starting with a letter or digit{hint}"
        )
    return name


def validate_alias(alias: str) -> str:
    """Return ``alias`` if it is a valid alias name, else raise :class:`InvalidNameError`."""
    validate_name(alias, "alias")
    if alias.isdigit():
        raise InvalidNameError(f"alias {alias!r} cannot be all digits (NAME/{alias} is a version)")
    if alias == LATEST:
        raise InvalidNameError("'latest' is reserved: NAME@latest is the newest active version")
    return alias


def validate_tag(key: str, value: str) -> tuple[str, str]:
    """Check one tag: a key of letters, digits, ``_.:-`` and a value of at most 500 characters."""
    if not key or len(key) > MAX_NAME or _TAG_KEY.fullmatch(key) is None:
        raise InvalidNameError(
            f"tag key {key!r} must be 1 to {MAX_NAME} letters, digits or '_.:-', "
            "starting with a letter or digit"
        )
    value = str(value)
    if len(value) > MAX_TAG_VALUE:
        raise InvalidNameError(f"tag {key!r}: the value is longer than {MAX_TAG_VALUE} characters")
    return key, value


@dataclass(frozen=True)
class ModelRef:
    """A parsed reference: exactly one of ``path``, or ``name`` with a version or alias."""

    name: str | None = None
    version: int | None = None
    alias: str | None = None
    path: Path | None = None

    @property
    def is_file(self) -> bool:
        return self.path is not None

    @property
    def moves(self) -> bool:
        """Whether the reference can name another version later: a bare name (the newest
        active version) or an alias. A version number or a file always names the same model."""
        return self.path is None and self.version is None

    def __str__(self) -> str:
        if self.path is not None:
            return str(self.path)
        if self.version is not None:
            return f"{self.name}/{self.version}"
        if self.alias is not None:
            return f"{self.name}@{self.alias}"
        return str(self.name)


def parse_ref(ref: str | ModelRef) -> ModelRef:
    """Parse a model reference (see the module documentation for the forms)."""
    if isinstance(ref, ModelRef):
        return ref
    if isinstance(ref, Path):
        return ModelRef(path=ref)
    text = str(ref).strip()
    if not text:
        raise InvalidNameError(f"empty model reference (use {_REF_FORMS})")
    if text.lower().endswith(".onnx"):
        return ModelRef(path=Path(text))
    try:
        return _parse_registry_ref(text)
    except InvalidNameError as exc:
        if Path(text).is_file():
            raise InvalidNameError(
                f"{exc}; {text!r} is a file, and a model file's name ends in .onnx"
            ) from None
        raise


def _parse_registry_ref(text: str) -> ModelRef:
    if text.startswith("models:/"):
        text = text[len("models:/") :]
    if "@" in text:
        name, _, alias = text.partition("@")
        validate_name(name)
        if alias == LATEST:
            return ModelRef(name=name)
        return ModelRef(name=name, alias=validate_alias(alias))
    if "/" in text:
        name, _, version = text.partition("/")
        if not version.isdigit() or int(version) < 1:
            raise InvalidNameError(f"not a model reference: {text!r} (use {_REF_FORMS})")
        validate_name(name)
        return ModelRef(name=name, version=int(version))
    return ModelRef(name=validate_name(text))
