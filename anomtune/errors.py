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
]


class AnomtuneError(Exception):
    """Base class of every error anomtune raises on purpose."""


class DataError(AnomtuneError, ValueError):
    """The input data cannot be used: unreadable file, bad column, bad value."""


class ConfigError(AnomtuneError, ValueError):
    """An option, parameter or search-space entry is invalid."""


class TrainingError(AnomtuneError, RuntimeError):
    """Training could not produce a usable model."""
