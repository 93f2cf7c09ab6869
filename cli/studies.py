"""``anomtune studies`` and ``anomtune trials``: what a study storage holds.

Both read the storage ``anomtune tune`` writes (resolved by the same
function, :func:`anomtune.tuning.open_existing_storage`) and change nothing in it.
"""

from __future__ import annotations

import difflib

import click

from anomtune.cli.options import json_option, storage_options
from anomtune.cli.output import metric_text, param_text, print_json, print_table

__all__ = ["studies_command", "trials_command"]

STATES = {
    "complete": "complete",
    "pruned": "pruned",
    "failed": "fail",
    "running": "running",
    "waiting": "waiting",
}


def _open_existing(storage: str | None, workspace: str):
    """The storage and its label, or ``(None, label)`` when the default one does not exist yet."""
    from anomtune.tuning import open_existing_storage

    return open_existing_storage(storage, workspace)


def _summaries(storage) -> list:
    import optuna

    return sorted(
        optuna.get_all_study_summaries(storage, include_best_trial=False),
        key=lambda s: s.study_name,
    )


def _study_row(storage, summary) -> dict:
    from optuna.trial import TrialState

    from anomtune.tuning import count_states

    study_id = storage.get_study_id_from_name(summary.study_name)
    trials = storage.get_all_trials(study_id, deepcopy=False)
    counts = count_states(trials)
    directions = [d.name.lower() for d in summary.directions]
    objectives = summary.user_attrs.get("anomtune.objectives") or directions
    complete = [t for t in trials if t.state == TrialState.COMPLETE and t.values]
    best = None
    if complete:
        pick = max if directions[0] == "maximize" else min
        best = pick(complete, key=lambda t: t.values[0])
    finished = [t.datetime_complete for t in trials if t.datetime_complete is not None]
    if counts["running"]:
        state = "running"
    elif not trials:
        state = "empty"
    elif counts["waiting"]:
        state = "queued"
    else:
        state = "finished"
    return {
        "name": summary.study_name,
        "trials": len(trials),
        "complete": counts["complete"],
        "pruned": counts["pruned"],
        "failed": counts["fail"],
        "running": counts["running"],
        "waiting": counts["waiting"],
        "state": state,
        "objectives": list(objectives),
        "directions": directions,
        "best_value": best.values[0] if best is not None else None,
        "best_trial": best.number if best is not None else None,
        "started": summary.datetime_start.isoformat() if summary.datetime_start else None,
        "last_finished": max(finished).isoformat() if finished else None,
    }


@click.command("studies")
@storage_options
@json_option("the studies")
def studies_command(storage, workspace, as_json):
    """List the studies in a storage: trials, best value and state.

    Reads the storage 'anomtune tune' writes (the same --storage and
    --workspace) and changes nothing. STATE is running (a trial is running
    now, or was left running by a killed process), queued (trials wait to
    run), finished, or empty. BEST is the best value of the first objective
    among the completed trials.

    \b
    Examples:
      anomtune studies
      anomtune studies --storage runs/demo.journal
      anomtune studies --storage sqlite:///studies.db --json
    """
    handle, label = _open_existing(storage, workspace)
    rows = [] if handle is None else [_study_row(handle, s) for s in _summaries(handle)]
    if as_json:
        print_json({"storage": label, "studies": rows})
        return
    if not rows:
        click.echo(f"no studies in {label} (anomtune tune creates them)", err=True)
        return
    head = ["study", "trials", "complete", "pruned", "failed", "best", "objective", "state"]
    body = [
        [
            r["name"],
            str(r["trials"]),
            str(r["complete"]),
            str(r["pruned"]),
            str(r["failed"]),
            metric_text(r["best_value"]),
            f"{r['objectives'][0]} ({'max' if r['directions'][0] == 'maximize' else 'min'})",
            r["state"],
        ]
        for r in rows
    ]
    print_table(head, body, right={1, 2, 3, 4, 5})
    click.echo(f"storage: {label}")


def _load_study(storage: str | None, workspace: str, name: str):
    from anomtune.errors import ConfigError

    handle, label = _open_existing(storage, workspace)
    names = [] if handle is None else [s.study_name for s in _summaries(handle)]
    if name not in names:
        if not names:
            raise ConfigError(
                f"no study named {name!r}: {label} holds no studies (anomtune tune creates them)"
            )
        close = difflib.get_close_matches(name, names, n=1, cutoff=0.5)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        shown = ", ".join(names[:20]) + (f" and {len(names) - 20} more" if len(names) > 20 else "")
        raise ConfigError(f"no study named {name!r} in {label}{hint} (studies: {shown})")
    import optuna

    return optuna.load_study(study_name=name, storage=handle), label


_SORT_KEYS = {
    "number": lambda r: r["number"],
    "value": lambda r: r["value"],
    "duration": lambda r: r["duration_s"],
    "state": lambda r: r["state"],
}


def _complete_study(ctx, param, incomplete: str) -> list[str]:
    """Shell completion of STUDY: the studies in the storage named so far on the line."""
    try:
        handle, _ = _open_existing(
            ctx.params.get("storage"), ctx.params.get("workspace") or ".anomtune"
        )
        names = [] if handle is None else [s.study_name for s in _summaries(handle)]
    except Exception:  # completion must never fail the shell
        return []
    return [n for n in names if n.startswith(incomplete)]


@click.command("trials")
@click.argument("study", shell_complete=_complete_study)
@storage_options
@click.option(
    "--sort",
    "sort_key",
    type=click.Choice(sorted(_SORT_KEYS)),
    default="number",
    show_default=True,
    help="Order the rows by this column (trials without one come last).",
)
@click.option("--desc", is_flag=True, help="Sort in descending order.")
@click.option(
    "--state",
    "states",
    callback=lambda _ctx, _param, names: {STATES[n] for n in names},
    multiple=True,
    type=click.Choice(list(STATES)),
    help="Only trials in this state (repeatable).",
)
@click.option("--params", "show_params", is_flag=True, help="Add a column per parameter.")
@json_option("the trials")
def trials_command(study, storage, workspace, sort_key, desc, states, show_params, as_json):
    """List the trials of STUDY: state, value, epochs, duration and parameters.

    The rows are those of the run folder's trials.csv, read live from the
    storage, so a study still being tuned shows its progress.

    \b
    Examples:
      anomtune trials cardio
      anomtune trials cardio --sort value --desc --state complete
      anomtune trials demo --storage runs/demo.journal --params
      anomtune trials cardio --json
    """
    from anomtune.tuning import trial_rows

    loaded, label = _load_study(storage, workspace, study)
    rows = trial_rows(loaded)
    if states:  # as the storage names them
        rows = [r for r in rows if r["state"] in states]
    key = _SORT_KEYS[sort_key]
    present = [r for r in rows if key(r) is not None]
    absent = [r for r in rows if key(r) is None]
    rows = sorted(present, key=key, reverse=desc) + absent
    objectives = loaded.user_attrs.get("anomtune.objectives") or [
        d.name.lower() for d in loaded.directions
    ]
    if as_json:
        print_json({"study": study, "storage": label, "objectives": objectives, "trials": rows})
        return
    if not rows:
        click.echo(f"study {study!r} has no trials{' in that state' if states else ''}", err=True)
        return
    multi = any("value_2" in r for r in rows)
    head = ["#", "state", objectives[0]]
    if multi:
        head.append(objectives[1] if len(objectives) > 1 else "value_2")
    head += ["epochs", "best_epoch", "seconds"]
    params = sorted({k for r in rows for k in r if k.startswith("params_")})
    shown = params if show_params else [p for p in params if p == "params_variant"]
    head += [p.removeprefix("params_") for p in shown]
    failed = any(r["fail_reason"] for r in rows)
    if failed:
        head.append("reason")
    body = []
    for r in rows:
        line = [str(r["number"]), r["state"], metric_text(r["value"])]
        if multi:
            line.append(metric_text(r.get("value_2")))
        line += [
            metric_text(r["epochs"]),
            metric_text(r["best_epoch"]),
            f"{r['duration_s']:.1f}" if r["duration_s"] is not None else "-",
        ]
        line += [param_text(r.get(p)) for p in shown]
        if failed:
            line.append(r["fail_reason"] or "")
        body.append(line)
    numeric = {0, 2, 3, 4, 5, 6} if multi else {0, 2, 3, 4, 5}
    print_table(head, body, right=numeric)
