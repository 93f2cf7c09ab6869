"""``anomtune registry``: register, list, inspect, promote and check model versions."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import click

from anomtune.cli.options import choice_option, file_option, json_option, registry_options
from anomtune.cli.output import (
    metric_text,
    param_text,
    print_fields,
    print_json,
    print_listing,
    print_metrics,
    print_result,
    print_table,
    threshold_text,
)

__all__ = ["model_name", "registry_group"]


def model_name(name: str | None, data: str | None) -> str:
    """``name`` or, when it is empty, one made from the data file's name; validated.

    ``tune --register`` and ``registry register RUN_DIR`` without ``--name``
    both name the model after the file it was tuned on: ``Cardio.v2.csv``
    becomes ``cardio``; data from standard input gives ``model``.
    """
    from anomtune.registry import validate_name

    if not name:
        stem = Path(data).name.split(".")[0] if data and data != "-" else ""
        name = re.sub(r"[^a-z0-9_-]+", "-", stem.lower()).strip("-_") or "model"
    return validate_name(name)


def _run_data(run_dir: str) -> str | None:
    """The data file a run was tuned on, from its summary (None if it cannot be read)."""
    try:
        return json.loads((Path(run_dir) / "summary.json").read_text())["config"]["data"]
    except (OSError, ValueError, LookupError, TypeError):
        return None  # register_run reports what is wrong with the folder


def _open(registry: str | None, files: str | None, *, create: bool = False):
    from anomtune.registry import Registry

    return Registry.open(registry, files=files, create=create)


def _parse_tags(items: tuple[str, ...], option: str = "--tag") -> dict[str, str]:
    from anomtune.errors import ConfigError

    tags: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{option} takes KEY=VALUE, not {item!r}")
        tags[key.strip()] = value
    return tags


def _size(n: int) -> str:
    return f"{n / 1000:.1f} kB" if n < 1_000_000 else f"{n / 1e6:.1f} MB"


def _clip(text: str, width: int) -> str:
    return text[: width - 1] + "…" if len(text) > width else text


def _alias_option(help: str) -> Callable:
    """``--alias``: the alias a command moves, @champion unless told."""
    return click.option("--alias", default="champion", show_default=True, help=help)


def _reason_option(help: str = "Why, for the alias history.") -> Callable:
    """``--reason``: the text the alias history keeps with a move."""
    return click.option("--reason", default="", help=help)


def _test_metric(info, key: str):
    metrics = info.metadata.get("metrics") or {}
    return (metrics.get("test") or {}).get(key)


@click.group("registry")
def registry_group() -> None:
    """Versioned models with aliases, history and hash-checked files.

    Models live in .anomtune/registry by default (registry.db plus files/);
    --registry or ANOMTUNE_REGISTRY points elsewhere: another folder, a
    shared folder, or a database URL with --registry-files for the files.

    \b
    References (REF):
      NAME            the newest active version
      NAME/3          version 3
      NAME@champion   the version an alias points to
      model.onnx      a model file outside the registry (show only)

    \b
    Examples:
      anomtune registry register runs/cardio
      anomtune registry promote cardio 1 --alias champion
      anomtune registry show cardio@champion
    """


@registry_group.command("register")
@click.argument("run_dir", required=False, type=click.Path(file_okay=False))
@click.option(
    "--name",
    help="Model name: lowercase letters, digits, '-', '_' (default for RUN_DIR: made from "
    "the name of the data file it was tuned on, as 'tune --register' does).",
)
@file_option(
    "--onnx",
    "onnx_file",
    help="Register this exported anomtune .onnx file instead of a run folder.",
)
@click.option("--description", default="", help="What this version is.")
@click.option("--tag", "tags", multiple=True, metavar="KEY=VALUE", help="A tag (repeatable).")
@registry_options()
@json_option()
def register_command(
    run_dir, name, onnx_file, description, tags, registry, registry_files, as_json
):
    """Publish the best model of RUN_DIR (or --onnx FILE) as the next version of NAME.

    A run folder is exported to ONNX and checked against torch first; a
    model that fails the parity check is not registered. The version number
    is the model's next integer; the version never changes afterwards.
    Without --name a run folder's model is named after the data file it was
    tuned on (runs/cardio tuned on cardio.csv: cardio).

    \b
    Examples:
      anomtune registry register runs/cardio --tag data=2024-06
      anomtune registry register --onnx cardio.onnx --name cardio
    """
    from anomtune.errors import ConfigError
    from anomtune.registry import register_onnx, register_run

    if (run_dir is None) == (onnx_file is None):
        raise ConfigError("give either RUN_DIR or --onnx FILE (exactly one)")
    if onnx_file is not None and not name:
        raise ConfigError("--onnx FILE needs --name NAME (only a run folder has a default name)")
    name = model_name(name, _run_data(run_dir) if run_dir is not None else None)
    tag_map = _parse_tags(tags)
    with _open(registry, registry_files, create=True) as reg:
        if onnx_file is not None:
            info = register_onnx(reg, onnx_file, name=name, description=description, tags=tag_map)
        else:
            info = register_run(reg, run_dir, name=name, description=description, tags=tag_map)
        where = reg.location.display
    text = f"registered {info.ref} (sha256 {info.sha256[:12]}…, {_size(info.size)}) in {where}"
    print_result(info.to_dict(), text, as_json=as_json)


@registry_group.command("list")
@registry_options()
@json_option()
def list_command(registry, registry_files, as_json):
    """List the models: newest active version, version counts and aliases.

    \b
    Example:
      anomtune registry list --registry /mnt/team/anomtune-registry
    """
    with _open(registry, registry_files) as reg:
        models = reg.models()
        where = reg.location.display
    print_listing(
        models,
        ["NAME", "LATEST", "ACTIVE/ALL", "ALIASES", "UPDATED"],
        lambda m: [
            m.name,
            param_text(m.latest),
            f"{m.active}/{m.versions}",
            ", ".join(f"@{a}={v}" for a, v in m.aliases.items()) or "-",
            m.updated_at,
        ],
        as_json=as_json,
        empty=f"no models in {where}",
    )


@registry_group.command("show")
@click.argument("ref")
@registry_options()
@json_option()
def show_command(ref, registry, registry_files, as_json):
    """Show one version: file, hash, aliases, tags, metrics, parameters and lineage.

    REF is NAME (newest active version), NAME/VERSION, NAME@ALIAS or a
    path to an .onnx file (its embedded metadata).

    \b
    Examples:
      anomtune registry show cardio@champion
      anomtune registry show cardio/3 --json
    """
    from anomtune.registry import parse_ref, resolve

    parsed = parse_ref(ref)
    if parsed.is_file:
        _, info = resolve(parsed)
    else:
        with _open(registry, registry_files) as reg:
            info = reg.get(parsed)
    if as_json:
        print_json(info.to_dict())
        return
    meta = info.metadata
    click.echo(f"{info.ref}" + (f"  ({info.status})" if info.name else ""))
    fields = [
        ("sha256", info.sha256),
        ("file", f"{info.file} ({_size(info.size)})"),
    ]
    if info.name:
        fields += [
            ("created", f"{info.created_at} by {info.created_by}"),
            ("description", info.description or "-"),
            ("aliases", " ".join("@" + a for a in info.aliases) or "-"),
            ("tags", " ".join(f"{k}={v}" for k, v in info.tags.items()) or "-"),
        ]
    if "threshold" in meta:
        fields.append(("threshold", threshold_text(meta["threshold"], meta.get("threshold_rule"))))
    if meta.get("feature_names") is not None:
        fields.append(("features", len(meta["feature_names"])))
    print_fields(fields)
    metrics = meta.get("metrics") or {}
    if any(isinstance(metrics.get(p), dict) for p in ("val", "test")):
        click.echo("metrics")
        print_metrics({p: metrics.get(p) for p in ("val", "test")}, indent="  ")
    params = applying_params(meta.get("params") or {})
    for title, section in (("params", params), ("lineage", info.lineage)):
        if section:
            click.echo(title)
            print_fields(dict(sorted(section.items())), format=param_text)


def applying_params(params: dict) -> dict:
    """The parameters that take effect with the others' values.

    A parameter the default search space makes conditional (``when``) is
    left out where its condition fails: the sparsity settings except for the
    sparse variant, the noise for denoising, beta and vae_score for the VAE,
    momentum except with sgd and rmsprop.
    """
    from anomtune.space import default_space

    conditional = {p.name: p for p in default_space(1).params if p.when}
    return {
        k: v for k, v in params.items() if k not in conditional or conditional[k].active(params)
    }


@registry_group.command("versions")
@click.argument("name")
@registry_options()
@json_option()
def versions_command(name, registry, registry_files, as_json):
    """List every version of NAME with status, aliases, tags and test metrics.

    \b
    Example:
      anomtune registry versions cardio
    """
    with _open(registry, registry_files) as reg:
        infos = reg.versions(name)
    print_listing(
        infos,
        ["VERSION", "STATUS", "CREATED", "SHA256", "AUC-ROC", "AUC-PR", "ALIASES", "TAGS"],
        lambda i: [
            str(i.version),
            i.status,
            i.created_at or "-",
            i.sha256[:12],
            metric_text(_test_metric(i, "auc_roc")),
            metric_text(_test_metric(i, "auc_pr")),
            " ".join("@" + a for a in i.aliases) or "-",
            " ".join(f"{k}={v}" for k, v in i.tags.items()) or "-",
        ],
        as_json=as_json,
        right={0, 4, 5},
    )


def _version_ref(name: str, text: str) -> str:
    return f"{name}/{text}" if text.isdigit() else f"{name}@{text.lstrip('@')}"


@registry_group.command("compare")
@click.argument("name")
@click.argument("a")
@click.argument("b")
@registry_options()
@json_option()
def compare_command(name, a, b, registry, registry_files, as_json):
    """Show two versions of NAME side by side: metrics, threshold and parameters.

    A and B are version numbers or aliases. Rows that differ are marked '*'.

    \b
    Examples:
      anomtune registry compare cardio 2 3
      anomtune registry compare cardio champion challenger
    """
    with _open(registry, registry_files) as reg:
        left = reg.get(_version_ref(name, a))
        right = reg.get(_version_ref(name, b))
    rows: list[tuple[str, object, object]] = []
    for side in ("val", "test"):
        lm = (left.metadata.get("metrics") or {}).get(side) or {}
        rm = (right.metadata.get("metrics") or {}).get(side) or {}
        for key in sorted(set(lm) | set(rm)):
            rows.append((f"{side}.{key}", lm.get(key), rm.get(key)))
    rows.append(("threshold", left.metadata.get("threshold"), right.metadata.get("threshold")))
    n_metrics = len(rows)
    lp = left.metadata.get("params") or {}
    rp = right.metadata.get("params") or {}
    # Only the parameters that take effect in at least one of the two.
    for key in sorted(set(applying_params(lp)) | set(applying_params(rp))):
        rows.append((f"params.{key}", lp.get(key), rp.get(key)))
    rows.append(
        (
            "data_fingerprint",
            left.lineage.get("data_fingerprint"),
            right.lineage.get("data_fingerprint"),
        )
    )
    if as_json:
        print_json(
            {
                "a": left.ref,
                "b": right.ref,
                "rows": [{"key": k, "a": x, "b": y, "differs": x != y} for k, x, y in rows],
            }
        )
        return
    shown = [
        (metric_text if i < n_metrics else param_text, k, x, y) for i, (k, x, y) in enumerate(rows)
    ]
    print_table(
        ["", "KEY", left.ref, right.ref],
        [["*" if x != y else "", k, _clip(f(x), 28), _clip(f(y), 28)] for f, k, x, y in shown],
    )


@registry_group.command("promote")
@click.argument("name")
@click.argument("version", type=click.IntRange(min=1))
@_alias_option("The alias to move.")
@click.option(
    "--if-better",
    is_flag=True,
    help="Require the candidate to beat the alias's current holder on --data (by --metric).",
)
@choice_option(
    "--metric",
    "anomtune.registry._gate:METRICS",
    default="auc-pr",
    help="Metric --if-better compares (F1 at each model's own threshold).",
)
@click.option(
    "--min",
    "floors",
    multiple=True,
    metavar="METRIC=VALUE",
    help="A floor the candidate must reach on --data, e.g. auc-pr=0.8 (repeatable).",
)
@file_option("--data", help="Labeled CSV for the gate.")
@click.option("--label", metavar="COLUMN", help="Label column of --data.")
@click.option("--positive", metavar="VALUE", help="Label value that marks an anomaly.")
@click.option("--sep", default=None, help="CSV field separator of --data (default: sniffed).")
@_reason_option()
@registry_options()
@json_option()
def promote_command(
    name,
    version,
    alias,
    if_better,
    metric,
    floors,
    data,
    label,
    positive,
    sep,
    reason,
    registry,
    registry_files,
    as_json,
):
    """Point NAME@ALIAS at VERSION, optionally only if it passes a gate.

    With --if-better and/or --min, both the candidate and the current holder
    are scored with onnxruntime on the same rows of --data, and the
    comparison is printed. A refused promotion changes nothing and exits
    with code 2. Every move is kept in the alias history.

    \b
    Examples:
      anomtune registry promote cardio 3 --alias champion
      anomtune registry promote cardio 4 --alias champion --if-better \\
          --data eval.csv --label is_anomaly --metric auc-pr --min auc-roc=0.9
    """
    from anomtune.errors import ConfigError
    from anomtune.registry import Gate, PromotionRefused, promote
    from anomtune.registry._gate import parse_floor

    floor_map = dict(parse_floor(f) for f in floors)
    gate = None
    if if_better or floor_map or data:
        if not data or not label:
            raise ConfigError("a promotion gate needs --data FILE and --label COLUMN")
        gate = Gate(
            data=data,
            label=label,
            positive=positive,
            sep=sep,
            if_better=if_better,
            metric=metric,
            floors=floor_map,
        )
    with _open(registry, registry_files) as reg:
        try:
            result = promote(reg, name, version, alias, gate=gate, reason=reason)
        except PromotionRefused as refused:
            if refused.result is not None:
                if as_json:
                    print_json({"moved": False, "gate": refused.result.to_dict()})
                else:
                    click.echo(refused.result.table())
            raise
    if as_json:
        print_json(result.to_dict())
        return
    if result.gate is not None:
        click.echo(result.gate.table())
    if not result.moved:
        click.echo(f"{name}/{version} already holds @{alias}; nothing changed")
        return
    before = f"version {result.previous}" if result.previous is not None else "no version"
    click.echo(f"{name}@{alias} -> version {version} (was {before})")


@registry_group.command("history")
@click.argument("name")
@click.option("--alias", help="Only this alias.")
@registry_options()
@json_option()
def history_command(name, alias, registry, registry_files, as_json):
    """Show every alias move of NAME: when, who, from which version to which, why.

    \b
    Example:
      anomtune registry history cardio --alias champion
    """
    with _open(registry, registry_files) as reg:
        moves = reg.history(name, alias)
    print_listing(
        moves,
        ["WHEN", "ALIAS", "ACTION", "FROM -> TO", "WHO", "REASON"],
        lambda m: [
            m.at,
            "@" + m.alias,
            m.action,
            f"{param_text(m.from_version)} -> {param_text(m.to_version)}",
            m.who,
            m.reason or "-",
        ],
        as_json=as_json,
        empty=f"no alias moves for {name}",
    )


@registry_group.command("rollback")
@click.argument("name")
@_alias_option("The alias to move back.")
@_reason_option()
@registry_options()
@json_option()
def rollback_command(name, alias, reason, registry, registry_files, as_json):
    """Move NAME@ALIAS back to the version that held it before.

    The rollback is a new history row; rolling back again goes one holder
    further back. Deleted versions are skipped.

    \b
    Example:
      anomtune registry rollback cardio --alias champion --reason "drift alarm"
    """
    with _open(registry, registry_files) as reg:
        move = reg.rollback(name, alias, reason=reason)
    text = f"{name}@{alias} -> version {move.to_version} (was {move.from_version})"
    print_result(move.to_dict(), text, as_json=as_json)


@registry_group.command("tag")
@click.argument("ref")
@click.argument("tags", nargs=-1, metavar="KEY=VALUE...")
@click.option("--remove", multiple=True, metavar="KEY", help="Remove this tag (repeatable).")
@registry_options()
@json_option()
def tag_command(ref, tags, remove, registry, registry_files, as_json):
    """Set (or --remove) tags of a version. REF as in 'registry show'.

    \b
    Examples:
      anomtune registry tag cardio/3 reviewed=yes owner=fraud-team
      anomtune registry tag cardio/3 --remove owner
    """
    from anomtune.errors import ConfigError

    if not tags and not remove:
        raise ConfigError("give at least one KEY=VALUE or --remove KEY")
    tag_map = _parse_tags(tags, "tag")
    with _open(registry, registry_files) as reg:
        info = reg.set_tags(ref, tag_map, remove)
    shown = " ".join(f"{k}={v}" for k, v in info.tags.items()) or "(no tags)"
    print_result(info.to_dict(), f"{info.ref}: {shown}", as_json=as_json)


@registry_group.command("archive")
@click.argument("ref")
@click.option("--restore", is_flag=True, help="Make an archived version active again.")
@registry_options()
@json_option()
def archive_command(ref, restore, registry, registry_files, as_json):
    """Archive a version: a bare NAME then resolves to the newest active one.

    Archived versions stay loadable as NAME/VERSION and keep their aliases.

    \b
    Examples:
      anomtune registry archive cardio/2
      anomtune registry archive cardio/2 --restore
    """
    with _open(registry, registry_files) as reg:
        info = reg.set_status(ref, "active" if restore else "archived")
    print_result(info.to_dict(), f"{info.ref} is {info.status}", as_json=as_json)


@registry_group.command("delete")
@click.argument("ref")
@click.option("--force", is_flag=True, help="Delete even if the version holds aliases.")
@_reason_option("Why, for the alias history (with --force).")
@registry_options()
@json_option()
def delete_command(ref, force, reason, registry, registry_files, as_json):
    """Delete one version (REF is NAME/VERSION or NAME@ALIAS).

    A version that holds an alias is refused unless --force, which also
    removes those aliases (recorded in the history). The model file goes
    when no other version shares it. Version numbers are never reused.

    \b
    Example:
      anomtune registry delete cardio/2
    """
    with _open(registry, registry_files) as reg:
        info = reg.delete(ref, force=force, reason=reason)
    removed = f" (removed {' '.join('@' + a for a in info.aliases)})" if info.aliases else ""
    payload = {"deleted": info.ref, "aliases_removed": info.aliases}
    print_result(payload, f"deleted {info.ref}{removed}", as_json=as_json)


@registry_group.command("verify")
@registry_options()
@json_option()
def verify_command(registry, registry_files, as_json):
    """Check every version's file: present, sha256, onnx.checker, metadata.

    Each problem is printed; the exit code is 2 if there is any. Files no
    version references (left by an interrupted registration) are noted but
    are not problems.

    \b
    Example:
      anomtune registry verify
    """
    from anomtune.registry import RegistryError

    with _open(registry, registry_files) as reg:
        report = reg.verify()
        where = reg.location.display
    if as_json:
        print_json(report.to_dict())
    else:
        for p in report.problems:
            click.echo(f"PROBLEM {p.ref}: {p.problem} ({p.file})")
        for n in report.notes:
            click.echo(f"note {n.file}: {n.problem}")
        click.echo(
            f"checked {report.versions} version(s), {report.files} file(s) in {where}: "
            f"{len(report.problems)} problem(s)"
        )
    if not report.ok:
        first = report.problems[0]
        raise RegistryError(
            f"verify found {len(report.problems)} problem(s); first: {first.ref}: {first.problem}"
        )
