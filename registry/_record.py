"""The registry's records: dataclasses that read from database rows and print as JSON."""

from __future__ import annotations

from dataclasses import fields
from typing import Self

__all__ = ["Record"]


class Record:
    """A dataclass whose fields are its JSON keys and, where it has a table, its columns."""

    def to_dict(self) -> dict:
        """The fields by name, in order; records inside (alone or in lists) as their dicts."""
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_row(cls, row) -> Self:
        """The record whose fields are the same-named columns of a database row."""
        return cls(**{f.name: getattr(row, f.name) for f in fields(cls)})


def _plain(value: object) -> object:
    if isinstance(value, Record):
        return value.to_dict()
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value
