"""Options shared by several commands, defined once."""

from __future__ import annotations

import functools
import importlib
import json
import logging
from collections.abc import Callable
from pathlib import Path

import click

from anomtune.errors import ConfigError
from anomtune.inputs import MAX_LEVELS

__all__ = [
    "CSV_OPTIONS",
    "LibraryChoice",
    "add_debug_option",
    "apply_options",
    "check_output_file",
    "choice_option",
    "data_options",
    "debug_requested",
    "file_option",
    "json_option",
    "output_option",
    "parse_params",
    "quiet_option",
    "read_kwargs",
    "registry_options",
    "split_names",
    "storage_option",
    "storage_options",
    "train_on_option",
    "with_csv_options",
]


def split_names(value: tuple[str, ...]) -> list[str]:
    """Column names from repeated and/or comma-separated option values."""
    return [name.strip() for item in value for name in item.split(",") if name.strip()]


class LibraryChoice(click.Choice):
    """A choice among a tuple the library defines, e.g. ``anomtune.tuning.config:SAMPLERS``.

    The module is imported only when click needs the choices (to check a
    value or to write --help), so the commands that do not take the option
    never load it: ``anomtune score`` must not import torch for the
    samplers of ``anomtune tune``.
    """

    def __init__(self, where: str, case_sensitive: bool = True):
        self.where = where
        self.case_sensitive = case_sensitive

    @functools.cached_property
    def choices(self) -> tuple:  # type: ignore[override]
        module, _, name = self.where.partition(":")
        return tuple(getattr(importlib.import_module(module), name))


def choice_option(name: str, where: str, *, default: str, help: str) -> Callable:
    """An option that picks one of the library's tuple ``where`` (see LibraryChoice).

    Its default is shown in --help, since the choice is the library's.
    """
    return click.option(
        name, type=LibraryChoice(where), default=default, show_default=True, help=help
    )


def apply_options(options: list[Callable]) -> Callable:
    """A decorator that gives a command each of ``options``, in --help in that order."""

    def decorate(func: Callable) -> Callable:
        for option in reversed(options):
            func = option(func)
        return func

    return decorate


# -- the data a command reads: DATA and how to read it ---------------------------------

# Every option here becomes a keyword argument of ``read_table`` (see
# ``read_kwargs``); a command decorated with ``data_options`` receives them
# together as ``read_options``.
_DATA_READING = [
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
    click.option("--id-column", metavar="COLUMN", help="Row id kept for output, never a feature."),
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
        help="Force a column's role: numeric, boolean, categorical, timestamp, id or "
        "excluded (repeatable). 'anomtune columns' shows the inferred roles.",
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
]

# How a CSV file is written; each is sniffed from the file when not given. Shared
# by every command that reads a data file (``with_csv_options`` outside data_options).
CSV_OPTIONS = [
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
_DATA_READING += CSV_OPTIONS


def with_csv_options(func: Callable) -> Callable:
    """``--sep``, ``--decimal`` and ``--encoding`` for a command that reads a CSV file."""
    return apply_options(CSV_OPTIONS)(func)


def _declared(options: list[Callable]) -> list[click.Parameter]:
    def probe() -> None: ...

    for option in options:
        probe = option(probe)
    return probe.__click_params__


_READING_PARAMS = _declared(_DATA_READING)
_LIST_OPTIONS = {
    p.name for p in _READING_PARAMS if getattr(p, "multiple", False) and p.name != "roles"
}


def data_options(func: Callable) -> Callable:
    """``DATA`` argument plus the options that say how to read it, passed as ``read_options``."""
    names = [p.name for p in _READING_PARAMS]

    @functools.wraps(func)
    def command(*args, **kwargs):
        values = {name: kwargs.pop(name) for name in names}
        return func(*args, read_options=read_kwargs(**values), **kwargs)

    # wraps() shares func's list of click parameters; this command gets its own.
    command.__click_params__ = list(getattr(func, "__click_params__", []))
    data = click.argument("data", type=click.Path(dir_okay=False))
    return apply_options([data, *_DATA_READING])(command)


def read_kwargs(**values) -> dict:
    """The keyword arguments of ``read_table`` from the data options' values."""
    kwargs = dict(values)
    for name in _LIST_OPTIONS:
        kwargs[name] = split_names(values[name])
    kwargs["features"] = kwargs["features"] or None
    if "roles" in kwargs:
        from anomtune.inputs import parse_role_overrides

        kwargs["roles"] = parse_role_overrides(values["roles"])
    return kwargs


# -- --debug, before or after the command name -----------------------------------------


def _enable_debug(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if not value:
        return
    ctx.find_root().ensure_object(dict)["debug"] = True
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger().setLevel(logging.DEBUG)


def add_debug_option(command: click.Command) -> None:
    """Give ``command`` (and, for a group, every command in it) the --debug flag."""
    command.params.append(
        click.Option(
            ["--debug"],
            is_flag=True,
            expose_value=False,
            is_eager=True,
            callback=_enable_debug,
            help="Show tracebacks and debug logging.",
        )
    )
    for sub in getattr(command, "commands", {}).values():
        add_debug_option(sub)


def debug_requested(ctx: click.Context | None = None) -> bool:
    """Whether --debug was given, before or after the command name."""
    ctx = ctx or click.get_current_context()
    return bool((ctx.find_root().obj or {}).get("debug"))


def json_option(what: str = "the result", detail: str = "") -> Callable:
    """``--json``: print ``what`` as JSON instead of text; ``detail`` ends the help line."""
    return click.option("--json", "as_json", is_flag=True, help=f"Print {what} as JSON{detail}.")


quiet_option = click.option("--quiet", is_flag=True, help="No progress bar.")


def file_option(*names: str, help: str, **kwargs) -> Callable:
    """An option that names a file (not a folder), unless ``type`` says otherwise."""
    return click.option(*names, **{"type": click.Path(dir_okay=False), **kwargs}, help=help)


def output_option(help: str, **kwargs) -> Callable:
    """``-o``/``--output``: the file a command writes."""
    return file_option("-o", "--output", help=help, **kwargs)


def check_output_file(option: str, path: Path) -> None:
    """Refuse a file ``option`` names that could not be written, before the work that fills it."""
    if path.is_dir():
        raise ConfigError(f"{option} {path}: is a folder; give a file name")
    if not path.parent.is_dir():
        raise ConfigError(f"{option} {path}: no folder {path.parent} to write it in")


def registry_options(
    purpose: str = "", *, registry_help: str | None = None, files_help: str | None = None
) -> Callable:
    """``--registry`` and ``--registry-files``; ``purpose`` says what the registry is for.

    ``registry_help`` and ``files_help`` replace the help texts where a command
    reads the registry in its own way (``serve`` resolves references in it).
    """
    if registry_help is None:
        registry_help = (
            f"Model registry{' ' + purpose if purpose else ''}: a folder, SQLite file or "
            "database URL [env: ANOMTUNE_REGISTRY; default: .anomtune/registry]."
        )
    if files_help is None:
        files_help = (
            "Folder of model files; required with a server database URL "
            "[env: ANOMTUNE_REGISTRY_FILES; default: 'files' beside the SQLite database]."
        )
    return apply_options(
        [
            click.option("--registry", metavar="PATH|URL", help=registry_help),
            click.option("--registry-files", "registry_files", metavar="DIR", help=files_help),
        ]
    )


def storage_option(help: str) -> Callable:
    """``--storage``: an Optuna storage, a journal file or a database URL."""
    return click.option("--storage", metavar="PATH|URL", help=help)


def storage_options(func: Callable) -> Callable:
    """``--storage`` and ``--workspace``: where the Optuna studies are."""
    storage = storage_option(
        "Optuna storage: a journal file path or a database URL "
        "(default: WORKSPACE/studies.journal)."
    )
    workspace = click.option(
        "--workspace",
        default=".anomtune",
        show_default=True,
        help="Folder of the default storage.",
    )
    return apply_options([storage, workspace])(func)


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
