"""Options shared by several commands, defined once."""

from __future__ import annotations

import json
from collections.abc import Callable

import click

from anomtune.data import Table, read_table
from anomtune.errors import ConfigError

__all__ = ["data_options", "load_table", "parse_params", "print_json"]


def _split_names(value: tuple[str, ...]) -> list[str]:
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
        click.option("--sep", default=",", show_default=True, help="CSV field separator."),
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
        label=label,
        positive=positive,
        features=_split_names(features) or None,
        exclude=_split_names(exclude),
        id_column=id_column,
        categorical=_split_names(categorical),
        sep=sep,
    )


def parse_params(items: tuple[str, ...]) -> dict:
    """``key=value`` pairs; values are read as JSON when they parse, else as text."""
    params = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--param takes KEY=VALUE, not {item!r}")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        if isinstance(value, list):
            value = tuple(value)
        params[key.strip()] = value
    return params


def print_json(payload: object) -> None:
    click.echo(json.dumps(payload, indent=2, sort_keys=True, default=str))
