"""How the commands print: JSON, tables, metrics, numbers and progress.

Every command prints through these, so a metric, a parameter or a threshold
reads the same wherever it appears.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence

import click

__all__ = [
    "METRIC_COLUMNS",
    "Progress",
    "metric_text",
    "param_text",
    "print_fields",
    "print_json",
    "print_listing",
    "print_metrics",
    "print_result",
    "print_table",
    "threshold_text",
]

# Metric key in the library's results, and its column heading.
METRIC_COLUMNS = (
    ("auc_roc", "AUC-ROC"),
    ("auc_pr", "AUC-PR"),
    ("f1", "F1"),
    ("precision", "prec"),
    ("recall", "recall"),
)

# Significant digits of a parameter value: enough to tell 0.001234 from
# 0.001235, not the 17 digits of a float's repr.
PARAM_DIGITS = 4


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


def print_result(payload: object, text: str, *, as_json: bool) -> None:
    """A command's result: ``payload`` as JSON with --json, else the one line ``text``."""
    if as_json:
        print_json(payload)
    else:
        click.echo(text)


def metric_text(value: object) -> str:
    """A metric or objective value: four decimals (four significant digits from 1000 up)."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 1000 else f"{value:.4g}"
    return str(value)


def param_text(value: object) -> str:
    """A parameter value: floats to four significant digits, lists item by item."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{PARAM_DIGITS}g}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(param_text(v) for v in value) + "]"
    return str(value)


def threshold_text(threshold: float, rule: str | None = None) -> str:
    """The score threshold, with the rule that chose it."""
    return f"{threshold:.6g}" + (f" ({rule})" if rule else "")


def print_table(
    head: Sequence[str],
    rows: Iterable[Sequence[object]],
    *,
    right: Iterable[int] = (),
    indent: str = "",
    err: bool = False,
) -> None:
    """Columns padded to their widest cell; the columns in ``right`` right-aligned."""
    lines = [[str(cell) for cell in row] for row in [head, *rows]]
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    align = set(right)
    for line in lines:
        cells = [
            cell.rjust(width) if i in align else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(line, widths, strict=True))
        ]
        click.echo((indent + "  ".join(cells)).rstrip(), err=err)


def print_listing(
    items: Sequence,
    head: Sequence[str],
    row: Callable[[object], Sequence[object]],
    *,
    as_json: bool,
    empty: str | None = None,
    right: Iterable[int] = (),
) -> None:
    """Results one by one: their ``to_dict()`` as a JSON list with --json, else a table
    of one ``row(item)`` each, or the line ``empty`` when there are none."""
    if as_json:
        print_json([item.to_dict() for item in items])
    elif not items and empty is not None:
        click.echo(empty)
    else:
        print_table(head, [row(item) for item in items], right=right)


def print_metrics(
    metrics: Mapping[str, Mapping[str, object] | None],
    *,
    first: str = "split",
    indent: str = "",
    err: bool = False,
) -> None:
    """One row per entry of ``metrics`` (e.g. val, test): AUC-ROC, AUC-PR, F1, precision, recall."""
    rows = [
        [name, *(metric_text(values.get(key)) for key, _ in METRIC_COLUMNS)]
        for name, values in metrics.items()
        if isinstance(values, Mapping)
    ]
    head = [first, *(title for _, title in METRIC_COLUMNS)]
    print_table(head, rows, right=range(1, len(head)), indent=indent, err=err)


def print_fields(
    fields: Mapping[str, object] | Iterable[tuple[str, object]],
    *,
    indent: str = "  ",
    format: Callable[[object], str] = str,
) -> None:
    """``key  value`` lines, the values lined up."""
    pairs = list(fields.items() if isinstance(fields, Mapping) else fields)
    width = max((len(key) for key, _ in pairs), default=0)
    for key, value in pairs:
        click.echo(f"{indent}{key:<{width}}  {format(value)}".rstrip())


class Progress:
    """Progress on stderr: click's progress bar on a terminal.

    click draws nothing but its label when stderr is not a terminal; with
    ``log=True`` each step is then one line instead, so a log file shows
    how a long run went. ``describe`` turns the latest update into the text
    beside the bar. The bar appears at the first update, which may give the
    total (without one the bar only shows that work goes on).
    """

    def __init__(
        self,
        label: str,
        *,
        describe: Callable[[object], str],
        hidden: bool = False,
        log: bool = False,
        interval: float = 0.0,
    ):
        self.label, self.describe, self.interval = label, describe, interval
        self.terminal = not hidden and sys.stderr.isatty()
        self.log = log and not hidden and not self.terminal
        self.bar = None
        self.last_shown = -math.inf
        self.logged: int | None = None  # a log gets a line only when the position moves

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc_info) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc_info)

    def update(self, position: int, item: object, total: int | None = None) -> None:
        """Move to ``position`` (steps done so far, of ``total``) and show ``item``."""
        now = time.monotonic()
        if now - self.last_shown < self.interval and not (total and position >= total):
            return
        self.last_shown = now
        if self.terminal:
            if self.bar is None:
                self.bar = click.progressbar(
                    iter(int, 1) if total is None else None,
                    length=total,
                    label=self.label,
                    show_pos=total is not None,
                    show_percent=False,
                    item_show_func=lambda shown: None if shown is None else self.describe(shown),
                    width=20,
                    file=sys.stderr,
                )
                self.bar.__enter__()
            self.bar.update(max(0, position - self.bar.pos), item)
        elif self.log and position != self.logged:
            self.logged = position
            where = f" {position}/{total}" if total is not None else ""
            click.echo(f"{self.label}{where}  {self.describe(item)}", err=True)
