"""Request columns to graph feeds: the server's side of the one input door.

:func:`feeds_from_columns` turns a request's ``{column: values}`` (from JSON or
CSV) into the graph's ``numeric`` and ``categorical`` inputs with the model's
:class:`~anomtune.inputs.InputSpec`, under the same rules as ``anomtune
score`` and :func:`anomtune.load`: booleans, numbers given as text and
categories read the same in every door. A request whose features are all
plain numbers is converted in one NumPy call without building a Series:
for one-row requests the conversion is most of the server's time, and the
result is what the spec's rule gives (NaN and ``None`` missing, everything
else a finite float32), which the tests check door against door.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from anomtune.errors import DataError
from anomtune.inputs import InputSpec

__all__ = ["feeds_from_columns", "show_value"]


def feeds_from_columns(
    columns: Mapping[str, Any],
    n: int,
    *,
    spec: InputSpec,
    reject_missing: bool,
) -> dict[str, np.ndarray]:
    """The graph's inputs from ``{column: n values}`` holding every column the model reads.

    Raises :class:`~anomtune.errors.DataError` naming the column and row of the
    first value that cannot be used (or that is missing, with ``reject_missing``).
    """
    feeds = _plain_numbers(columns, spec, n)
    if feeds is None:
        feeds = spec.feeds(columns)
    if reject_missing:
        missing = np.isnan(feeds["numeric"])
        if missing.any():
            row, col = np.argwhere(missing)[0]
            raise _missing_error(spec.numeric[col], int(row))
        if spec.categorical:
            empty = feeds["categorical"] == ""
            if empty.any():
                row, col = np.argwhere(empty)[0]
                raise _missing_error(spec.categorical[col], int(row))
    return feeds


def _plain_numbers(columns, spec: InputSpec, n: int) -> dict | None:
    """The feeds in one conversion when every feature is a plain number column and every
    value a finite number or missing; else None (the spec's rules then look closer)."""
    if spec.categorical or any(f.convert != "number" for f in spec.features):
        return None
    numeric = spec.numeric
    if not numeric:
        return {"numeric": np.empty((n, 0), dtype=np.float32)}
    try:
        values = [columns[name] for name in numeric]
        if any(isinstance(v, str) for column in values for v in column):
            return None
        array = np.array(values, dtype=np.float64)
    except (TypeError, ValueError, OverflowError, KeyError):
        return None
    if array.shape != (len(numeric), n):
        return None
    with np.errstate(over="ignore"):
        block = array.T.astype(np.float32, order="C")
    if np.isinf(block).any():
        return None
    return {"numeric": block}


def _missing_error(name: str, pos: int) -> DataError:
    return DataError(
        f"column {name!r} has a missing value at row {pos + 1}, and this server refuses "
        "missing values"
    )


def show_value(value) -> str:
    """A short text for a value a client sent, for error messages."""
    if isinstance(value, (list, dict)):
        return "a list" if isinstance(value, list) else "an object"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
