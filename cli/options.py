"""Options shared by several commands, defined once."""

from __future__ import annotations

import json
import math
from collections.abc import Callable

import click

from anomtune.data import Table, read_table
from anomtune.errors import ConfigError

__all__ = [
    "data_options",
    "load_table",
    "parse_params",
    "print_json",
    "read_kwargs",
    "split_names",
    "train_on_option",
]


def split_names(value: tuple[str, ...]) -> list[str]:
    """Column names from repeated and/or comma-separated option values."""
    return [name.strip() for item in value for name in item.split(",") if name.strip()]


def data_options(func: Callable) -> Callable:
    """``DATA`` argument plus the options that say how to read it."""
    options = [
        click.argument("data", type=click.Path(dir_okay=False)),
        click.option(
            "--label",
            metavar="COLUMN",
            help="Label column (1/true = anomaly, or see --positive).",
        ),
        click.option(
            "--positive",
            metavar="VALUE",
            help="Label value that marks an anomaly, when it is not 1 or true.",
        ),
        click.option(
            "--features",
            multiple=True,
            metavar="COLS",
            help="Feature columns to use (comma-separated or repeated). Default: all others.",
        ),
        click.option("--exclude", multiple=True, metavar="COLS", help="Columns to leave out."),
        click.option(
            "--id-column", metavar="COLUMN", help="Row id kept for output, never a feature."
        ),
        click.option(
            "--categorical",
            multiple=True,
            metavar="COLS",
            help="Columns to one-hot encode even if they look numeric.",
        ),
        click.option(
            "--sep",
            default=",",
            show_default=True,
            help="CSV field separator (one character; '\\t' or 'tab' for a tab).",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def load_table(
    data: str,
    label: str | None,
    positive: str | None,
    features: tuple[str, ...],
    exclude: tuple[str, ...],
    id_column: str | None,
    categorical: tuple[str, ...],
    sep: str,
) -> Table:
    return read_table(
        data,
        **read_kwargs(label, positive, features, exclude, id_column, categorical, sep),
    )


def read_kwargs(label, positive, features, exclude, id_column, categorical, sep) -> dict:
    """The keyword arguments of ``read_table`` from the data options' values."""
    return {
        "label": label,
        "positive": positive,
        "features": split_names(features) or None,
        "exclude": split_names(exclude),
        "id_column": id_column,
        "categorical": split_names(categorical),
        "sep": sep,
    }


train_on_option = click.option(
    "--train-on",
    type=click.Choice(["normal", "all"]),
    default="normal",
    show_default=True,
    help="Train on the normal training rows, or on all of them (labels unused).",
)


# Python spellings people type for JSON's true/false/null.
_PYTHON_WORDS = {"True": True, "False": False, "None": None}


def parse_params(items: tuple[str, ...]) -> dict:
    """``key=value`` pairs; values are read as JSON when they parse, else as text.

    ``True``, ``False`` and ``None`` are read like JSON's ``true``, ``false``
    and ``null``.
    """
    params = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--param takes KEY=VALUE, not {item!r}")
        if key.strip() in params:
            raise ConfigError(f"--param {key.strip()} is given more than once")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = _PYTHON_WORDS.get(raw.strip(), raw)
        if isinstance(value, list):
            value = tuple(value)
        params[key.strip()] = value
    return params


def _finite_or_none(value: object) -> object:
    """JSON has no NaN or infinity: write them as null. NumPy scalars become numbers."""
    if hasattr(value, "item") and getattr(value, "shape", None) == ():
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_none(v) for v in value]
    return value


def print_json(payload: object, *, err: bool = False) -> None:
    """Print ``payload`` as standard JSON (non-finite numbers become null)."""
    text = json.dumps(_finite_or_none(payload), indent=2, sort_keys=True, default=str)
    click.echo(text, err=err)
