"""``anomtune columns``: the role of every column of a table, as tuning would see it."""

from __future__ import annotations

import click

from anomtune.cli.options import data_options, json_option
from anomtune.cli.output import print_json

__all__ = ["columns_command", "print_roles", "roles_rows"]


def roles_rows(table) -> list[dict]:
    """The roles table: one dict per column (name, role, reason, missing, levels)."""
    return [r.to_dict() for r in table.roles]


def print_roles(table, *, err: bool = False) -> None:
    """The roles table and the notes of a table, as a user reads them before tuning."""
    rows = roles_rows(table)
    width = max([len("column")] + [len(r["name"]) for r in rows])
    role_width = max([len("role")] + [len(r["role"]) for r in rows])
    click.echo(
        f"{'column':<{width}}  {'role':<{role_width}}  {'missing':>7}  {'levels':>6}  why",
        err=err,
    )
    for r in rows:
        click.echo(
            f"{r['name']:<{width}}  {r['role']:<{role_width}}  {r['missing']:>7.1%}  "
            f"{r['levels']:>6,}  {r['reason']}",
            err=err,
        )
    features = len(table.schema.columns)
    click.echo(
        f"{table.n_rows:,} rows, {features} feature{'s' if features != 1 else ''}"
        + (f", {table.n_anomalies:,} anomalies" if table.labels is not None else ""),
        err=err,
    )
    for note in table.notes:
        click.echo(f"note: {note}", err=err)


@click.command("columns")
@data_options
@json_option("the roles table")
def columns_command(data, read_options, as_json):
    """Show how anomtune reads DATA: each column's role and why, without tuning.

    Roles: numeric, boolean and categorical columns are features; ids are
    kept for output (unique per row, or 1, 2, 3, ... in order); timestamps
    are left out unless --time-features; text with more than --max-levels
    values, constant and all-missing columns are left out. Override any
    inference with --include, --exclude, --id-column or --role COLUMN=ROLE;
    tune, fit and the model read the data the same way.

    \b
    Examples:
      anomtune columns transactions.csv --label is_fraud
      anomtune columns export.csv --label y --role zip=categorical --json
    """
    from anomtune.data import read_table

    table = read_table(data, **read_options)
    if as_json:
        print_json(
            {
                "source": table.source,
                "rows": table.n_rows,
                "dialect": table.dialect.to_dict() if table.dialect else None,
                "columns": roles_rows(table),
                "features": table.schema.feature_names,
                "id_column": table.schema.id_column,
                "notes": table.notes,
                "counts": table.counts,
            }
        )
        return
    print_roles(table)
