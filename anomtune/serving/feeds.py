"""Request columns to graph feeds: how the server turns a request's values into model inputs.

:func:`feeds_from_columns` is the one place the serving path converts values
(a request's ``{column: values}``, from JSON or CSV) into the graph's
``numeric`` and ``categorical`` inputs, with the semantics of
:func:`anomtune.scoring.encode_frame`: numbers and numeric strings are read,
``None`` and NaN are missing values (imputed inside the graph, or refused),
infinite values and values beyond float32 are errors naming the column and
row. It works on plain lists, without building a DataFrame: for one-row
requests that is most of the server's time.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from anomtune.errors import DataError
from anomtune.scoring import category_text

__all__ = ["feeds_from_columns", "show_value"]


def feeds_from_columns(
    columns: Mapping[str, Any],
    n: int,
    *,
    numeric: list[str],
    categorical: list[str],
    reject_missing: bool,
) -> dict[str, np.ndarray]:
    """The graph's inputs from ``{column: n values}`` holding every model column.

    Raises :class:`~anomtune.errors.DataError` naming the column and row of the
    first value that cannot be used.
    """
    block = _numeric_block(columns, numeric, n, reject_missing=reject_missing)
    if block is None:
        block = _numeric_by_column(columns, numeric, n, reject_missing=reject_missing)
    feeds = {"numeric": block}
    if categorical:
        cats = np.empty((n, len(categorical)), dtype=object)
        for j, name in enumerate(categorical):
            cats[:, j] = _categorical_column(name, columns[name], reject_missing)
        feeds["categorical"] = cats
    return feeds


def _numeric_block(columns, numeric, n: int, *, reject_missing: bool) -> np.ndarray | None:
    """All numeric columns in one conversion, or ``None`` when a value needs a closer
    look (not a number, infinite, beyond float32, or missing when refused)."""
    if not numeric:
        return np.empty((n, 0), dtype=np.float32)
    try:
        values = np.array([columns[name] for name in numeric], dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        return None
    if values.shape != (len(numeric), n):
        return None
    with np.errstate(over="ignore"):
        block = values.T.astype(np.float32, order="C")
    finite = np.isfinite(block)
    if not finite.all() and (reject_missing or np.isinf(block[~finite]).any()):
        return None
    return block


def _numeric_by_column(columns, numeric, n: int, *, reject_missing: bool) -> np.ndarray:
    block = np.empty((n, len(numeric)), dtype=np.float32)
    for j, name in enumerate(numeric):
        values = _numeric_column(name, columns[name], n)
        with np.errstate(over="ignore"):
            block[:, j] = values
        bad = ~np.isfinite(block[:, j])
        if bad.any():
            pos = int(np.flatnonzero(bad)[0])
            if np.isinf(values[pos]):
                raise DataError(f"column {name!r} has an infinite value at row {pos + 1}")
            if np.isinf(block[pos, j]):
                raise DataError(
                    f"column {name!r} has a value too large for float32 at row {pos + 1}"
                )
            if reject_missing:
                raise _missing_error(name, pos)
    return block


def _numeric_column(name: str, values, n: int) -> np.ndarray:
    try:
        array = np.asarray(values, dtype=np.float64)
        if array.shape == (n,):
            return array
    except (TypeError, ValueError, OverflowError):
        pass
    # Slow path: find the value numpy refused, or convert one by one.
    out = np.empty(n, dtype=np.float64)
    for i, value in enumerate(values):
        if value is None:
            out[i] = math.nan
            continue
        if isinstance(value, (bool, int, float, np.number)):
            try:
                out[i] = float(value)
                continue
            except OverflowError:
                raise DataError(
                    f"column {name!r} has a value too large for float32 at row {i + 1}"
                ) from None
        if isinstance(value, str):
            try:
                out[i] = float(value.strip())
                continue
            except ValueError:
                pass
        raise DataError(f"column {name!r} is numeric but row {i + 1} holds {show_value(value)}")
    return out


def _categorical_column(name: str, values, reject_missing: bool) -> list[str]:
    out = []
    for i, value in enumerate(values):
        if value is None or (isinstance(value, float) and math.isnan(value)):
            if reject_missing:
                raise _missing_error(name, i)
            out.append("")
        elif isinstance(value, str):
            out.append(value)
        elif isinstance(value, (bool, int, float, np.generic)):
            out.append(category_text(value))
        else:
            raise DataError(
                f"column {name!r} holds {show_value(value)} at row {i + 1}; "
                "categorical values are strings or numbers"
            )
    return out


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
