"""The registry's exceptions, all :class:`~anomtune.errors.AnomtuneError` subclasses."""

from __future__ import annotations

from anomtune.errors import AnomtuneError, ConfigError

__all__ = [
    "IntegrityError",
    "InvalidNameError",
    "ModelNotFoundError",
    "PromotionRefused",
    "RegistryError",
    "RegistryNotFoundError",
]


class RegistryError(AnomtuneError):
    """The registry cannot do what was asked: missing database, bad state, conflict."""


class RegistryNotFoundError(RegistryError):
    """No registry exists where one was expected (nothing registered there yet)."""


class InvalidNameError(ConfigError, RegistryError):
    """A model name, alias, tag key or reference breaks the naming rules."""


class ModelNotFoundError(RegistryError, LookupError):
    """No model, version or alias answers to a reference."""


class IntegrityError(RegistryError):
    """A stored model file is missing, or its bytes no longer match the recorded hash."""


class PromotionRefused(RegistryError):
    """A promotion gate was not passed; the alias was left where it was.

    ``result`` holds the gate's comparison, for printing.
    """

    def __init__(self, message: str, result: object = None):
        super().__init__(message)
        self.result = result
