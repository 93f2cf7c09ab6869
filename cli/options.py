"""Options shared by several commands, defined once."""

from __future__ import annotations

import json
import math
from collections.abc import Callable

import click

from anomtune.data import Table, read_table
from anomtune.errors import ConfigError
from anomtune.inputs import MAX_LEVELS

__all__ = [
    "DATA_OPTIONS",
    "csv_options",
    "data_options",
    "load_table",
    "parse_params",
    "pop_data_options",
    "print_json",
    "read_kwargs",
    "split_names",
    "train_on_option",
    "with_csv_options",
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
            "--include",
            multiple=True,
            metavar="COLS",
            help="Keep these as features although inference would leave them out "
            "(an id, a timestamp, a text column with many values).",
        ),
        click.option(
            "--role",
            "roles",
            multiple=True,
            metavar="COLUMN=ROLE",
            help="Force a column's role: numeric, boolean, categorical, timestamp, id "
            "or excluded (repeatable). 'anomtune columns' shows the inferred roles.",
        ),
        click.option(
            "--max-levels",
            type=int,
            default=MAX_LEVELS,
            show_default=True,
            help="Leave out text columns with more distinct values than this.",
        ),
        click.option(
            "--time-features",
            is_flag=True,
            help="Turn timestamp columns into hour, weekday, day and month features "
            "(default: timestamps are left out).",
        ),
        click.option(
            "--drop-unlabeled",
            is_flag=True,
            help="Drop rows whose label is missing (counted in the summary).",
        ),
        click.option(
            "--dedupe",
            is_flag=True,
            help="Drop rows that repeat an earlier row exactly, before the split.",
        ),
        *csv_options(),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def csv_options() -> list:
    """How to read a CSV file; every one is sniffed from the file when not given."""
    return [
        click.option(
            "--sep",
            default=None,
            help="CSV field separator (one character; '\\t' or 'tab' for a tab). "
            "Default: sniffed (',', ';', tab or '|').",
        ),
        click.option(
            "--decimal",
            type=click.Choice([".", ","]),
            default=None,
            help="Decimal mark of numbers in a CSV file. Default: sniffed "
            "(',' for files like '1,5;2' from spreadsheets set to a comma locale).",
        ),
        click.option(
            "--encoding",
            default=None,
            help="Text encoding of a CSV file (utf-8, latin-1, cp1252, utf-16, ...). "
            "Default: sniffed (UTF-8, else Windows-1252).",
        ),
    ]


def with_csv_options(func: Callable) -> Callable:
    for option in reversed(csv_options()):
        func = option(func)
    return func


#: The data options' names, in the order the command functions take them.
DATA_OPTIONS = (
    "label",
    "positive",
    "features",
    "exclude",
    "id_column",
    "categorical",
    "include",
    "roles",
    "max_levels",
    "time_features",
    "drop_unlabeled",
    "dedupe",
    "sep",
    "decimal",
    "encoding",
)


def pop_data_options(params: dict) -> dict:
    """Take the data options out of a command's parameters, as ``read_table`` arguments."""
    values = {name: params.pop(name) for name in DATA_OPTIONS}
    return read_kwargs(**values)


def load_table(data: str, **read_options) -> Table:
    return read_table(data, **read_options)


def read_kwargs(
    label=None,
    positive=None,
    features=(),
    exclude=(),
    id_column=None,
    categorical=(),
    sep=None,
    include=(),
    roles=(),
    max_levels=MAX_LEVELS,
    time_features=False,
    drop_unlabeled=False,
    dedupe=False,
    decimal=None,
    encoding=None,
) -> dict:
    """The keyword arguments of ``read_table`` from the data options' values."""
    from anomtune.inputs import parse_role_overrides

    return {
        "label": label,
        "positive": positive,
        "features": split_names(features) or None,
        "exclude": split_names(exclude),
        "id_column": id_column,
        "categorical": split_names(categorical),
        "include": split_names(include),
        "roles": parse_role_overrides(roles),
        "max_levels": max_levels,
        "time_features": time_features,
        "drop_unlabeled": drop_unlabeled,
        "dedupe": dedupe,
        "sep": sep,
        "decimal": decimal,
        "encoding": encoding,
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
