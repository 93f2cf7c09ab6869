"""The exceptions anomtune raises.

Every error a user can cause is an :class:`AnomtuneError` whose message says
what is wrong and where, in one line. The command line prints that line on
stderr and exits with code 2.
"""

from __future__ import annotations

__all__ = [
    "AnomtuneError",
    "ConfigError",
    "DataError",
    "TrainingError",
    "first_line",
]


class AnomtuneError(Exception):
    """Base class of every error anomtune raises on purpose."""


class DataError(AnomtuneError, ValueError):
    """The input data cannot be used: unreadable file, bad column, bad value."""


class ConfigError(AnomtuneError, ValueError):
    """An option, parameter or search-space entry is invalid."""


class TrainingError(AnomtuneError, RuntimeError):
    """Training could not produce a usable model."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type's name when it has none)."""
    return (str(exc).strip() or type(exc).__name__).splitlines()[0]
