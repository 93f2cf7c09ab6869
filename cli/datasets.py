"""``anomtune datasets``: the labeled CSVs bundled with anomtune, listed or written out."""

from __future__ import annotations

import difflib
import re
import sys
from pathlib import Path

import click

from anomtune.cli.options import json_option, output_option
from anomtune.cli.output import print_json, print_table

__all__ = ["bundled_datasets", "datasets_command", "datasets_folder"]

# Every bundled CSV marks anomalies in this column (see datasets/README.md).
LABEL = "is_anomaly"


def datasets_folder() -> Path:
    """The folder of the bundled CSVs, in an installed package or a source checkout.

    An installed anomtune carries them as package data in ``anomtune/datasets``;
    a source checkout (an editable install) has them in ``datasets/`` beside
    the ``anomtune`` package.
    """
    import anomtune

    package = Path(anomtune.__file__).resolve().parent
    installed = package / "datasets"
    if any(installed.glob("*.csv")):
        return installed
    checkout = package.parent / "datasets"
    if (package.parent / "pyproject.toml").is_file() and any(checkout.glob("*.csv")):
        return checkout
    from anomtune.errors import ConfigError

    raise ConfigError(f"the bundled data sets are missing from this installation ({installed})")


def _sources(folder: Path) -> dict[str, str]:
    """Where each CSV comes from, read from the provenance table of the folder's README."""
    try:
        text = (folder / "README.md").read_text(encoding="utf-8")
    except OSError:
        return {}
    out = {}
    for line in text.splitlines():
        cells = [c.strip().strip("`").strip() for c in line.strip().strip("|").split("|")]
        if (
            len(cells) > 1
            and re.fullmatch(r"[\w.-]+\.csv", cells[0])
            and cells[-1].endswith(".npz")
        ):
            out[cells[0].removesuffix(".csv")] = f"ADBench {cells[-1]}"
    return out


def bundled_datasets() -> dict[str, Path]:
    """Name (the file name without ``.csv``) to path of every bundled data set."""
    return {p.stem: p for p in sorted(datasets_folder().glob("*.csv"))}


def _describe(name: str, path: Path, sources: dict[str, str]) -> dict:
    from anomtune.data import read_table

    table = read_table(path, label=LABEL)
    info = table.describe()
    return {
        "name": name,
        "file": path.name,
        "path": str(path),
        "rows": info["rows"],
        "columns": info["features"],
        "label": LABEL,
        "anomalies": info["anomalies"],
        "anomaly_rate": info["anomaly_rate"],
        "fingerprint": info["fingerprint"],
        "source": sources.get(name, ""),
    }


def _lookup(name: str, available: dict[str, Path]) -> str:
    from anomtune.errors import ConfigError

    key = name.removesuffix(".csv")
    if key in available:
        return key
    folded = {k.casefold(): k for k in available}
    if key.casefold() in folded:
        return folded[key.casefold()]
    close = difflib.get_close_matches(key, list(available), n=1, cutoff=0.5)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise ConfigError(f"no bundled data set named {name!r}{hint} (bundled: {', '.join(available)})")


def _complete_name(ctx, param, incomplete: str) -> list[str]:
    """Shell completion of NAME: the bundled data sets."""
    try:
        return [n for n in bundled_datasets() if n.startswith(incomplete)]
    except Exception:  # completion must never fail the shell
        return []


@click.command("datasets")
@click.argument("name", required=False, shell_complete=_complete_name)
@output_option(
    "Write data set NAME to this file (- for stdout).",
    type=click.Path(dir_okay=False, allow_dash=True),
)
@click.option(
    "--to",
    "to_dir",
    type=click.Path(file_okay=False),
    help="Write data set NAME into this folder as NAME.csv (created if needed).",
)
@click.option("--force", is_flag=True, help="Replace an existing file.")
@json_option("the listing (or what was written)")
def datasets_command(name, output, to_dir, force, as_json):
    """List the labeled CSVs bundled with anomtune, or write one out.

    Without NAME: each data set's name, rows, feature columns, anomaly rate
    and source. With NAME: that data set's details, or with -o FILE / --to
    DIR a copy of it to tune, score and serve, so every command can be
    tried without data of your own. The label column is always is_anomaly
    (1 = anomaly).

    \b
    Examples:
      anomtune datasets
      anomtune datasets cardio -o cardio.csv
      anomtune datasets wbc --to data/
      anomtune tune cardio.csv --label is_anomaly --trials 10
    """
    from anomtune.errors import ConfigError

    folder = datasets_folder()
    available = bundled_datasets()
    sources = _sources(folder)
    if name is None:
        if output or to_dir or force:
            raise ConfigError("-o/--to/--force need the NAME of the data set to write")
        rows = [_describe(n, p, sources) for n, p in available.items()]
        if as_json:
            print_json(rows)
            return
        _print_listing(rows)
        return
    key = _lookup(name, available)
    path = available[key]
    if output and to_dir:
        raise ConfigError("give either -o FILE or --to DIR, not both")
    if output == "-":
        sys.stdout.flush()
        sys.stdout.buffer.write(path.read_bytes())
        return
    info = _describe(key, path, sources)
    if not output and not to_dir:
        if as_json:
            print_json(info)
            return
        _print_details(info)
        return
    target = Path(output) if output else Path(to_dir) / path.name
    _write_copy(path, target, force=force, make_parent=bool(to_dir))
    written = {**info, "written": str(target)}
    if as_json:
        print_json(written)
        return
    click.echo(
        f"wrote {target} ({info['rows']:,} rows, {info['columns']} feature columns, "
        f"{info['anomalies']} anomalies in column {LABEL!r})"
    )
    click.echo(f"try: anomtune tune {target} --label {LABEL} --trials 10")


def _write_copy(source: Path, target: Path, *, force: bool, make_parent: bool) -> None:
    from anomtune.errors import ConfigError
    from anomtune.persist import write_bytes_atomic

    if target.is_dir():
        raise ConfigError(f"{target} is a folder; use --to {target} to write into it")
    if target.exists() and not force:
        raise ConfigError(f"{target} exists; pass --force to replace it")
    if make_parent:
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create folder {target.parent}: {exc.strerror}") from exc
    elif not target.parent.is_dir():
        raise ConfigError(f"cannot write {target}: folder {target.parent} does not exist")
    try:
        write_bytes_atomic(target, source.read_bytes())
    except OSError as exc:
        raise ConfigError(f"cannot write {target}: {exc.strerror}") from exc


def _print_listing(rows: list[dict]) -> None:
    head = ["name", "rows", "columns", "anomalies", "rate", "source"]
    body = [
        [
            r["name"],
            f"{r['rows']:,}",
            str(r["columns"]),
            str(r["anomalies"]),
            f"{r['anomaly_rate']:.2%}",
            r["source"] or "-",
        ]
        for r in rows
    ]
    print_table(head, body, right={1, 2, 3, 4})
    click.echo(
        f"label column: {LABEL} (1 = anomaly); write one out: anomtune datasets NAME -o FILE"
    )


def _print_details(info: dict) -> None:
    click.echo(
        f"{info['name']}: {info['rows']:,} rows, {info['columns']} feature columns, "
        f"{info['anomalies']} anomalies ({info['anomaly_rate']:.2%}) in column {LABEL!r}"
    )
    if info["source"]:
        click.echo(f"source: {info['source']}")
    click.echo(f"file: {info['path']}")
    click.echo(f"write it out: anomtune datasets {info['name']} -o {info['file']}")
