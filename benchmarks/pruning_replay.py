"""Replay pruner settings on the learning curves of studies run without pruning.

``benchmarks/pruning.py --pruners none --keep-studies DIR`` keeps the journal
of every unpruned study: each trial's validation value after every epoch. This
script feeds those curves, trial by trial in their original order, to a fresh
Optuna pruner in an in-memory study and stops a trial where the pruner says so.
For each setting it prints the epochs trained as a share of the unpruned
study's, and the validation value lost: the best unpruned trial's value minus
the best value among the trials the pruner let finish.

    python benchmarks/pruning_replay.py /tmp/journals
    python benchmarks/pruning_replay.py /tmp/journals \\
        --settings "median(n_startup_trials=3,n_warmup_steps=5)" "sha(min_resource=5)"

A setting is an Optuna pruner (median, percentile, sha, hyperband) with its
keyword arguments; ``default`` is anomtune's default pruner. A replay keeps
every trial's parameters as they were, whereas in a real pruned study the
sampler learns from the pruned trials and proposes other ones, so the replay
measures what pruning itself costs, without the noise of a different search
path; ``benchmarks/pruning.py`` then measures the chosen setting for real.
"""

from __future__ import annotations

import argparse
import ast
import csv
import datetime as dt
import shlex
import statistics
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from pruning import EPOCHS
from quality import markdown

from anomtune.tuning import make_pruner
from anomtune.tuning.config import DEFAULT_PRUNER

SETTINGS = (
    "default",
    *(
        f"median(n_startup_trials={trials},n_warmup_steps={warmup})"
        for trials in (2, 3, 5)
        for warmup in (2, 3, 4, 5)
    ),
    *(
        f"sha(min_resource={low},reduction_factor={factor})"
        for low in (2, 3, 4, 5, 10)
        for factor in (2, 3, 4)
    ),
    *(
        f"hyperband(min_resource={low},max_resource=100,reduction_factor={factor})"
        for low in (2, 3, 5, 10)
        for factor in (3, 4)
    ),
)


@dataclass
class Curve:
    """One trial of an unpruned study: its state, per-epoch values and epochs."""

    state: str
    values: list[float]
    epochs: int


@dataclass
class Replayed:
    epochs: int
    best: float | None
    pruned: int


def read_study(path: Path) -> tuple[bool, list[Curve]]:
    """The direction (True = maximize) and trial curves of a journal's one study."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    storage = JournalStorage(JournalFileBackend(str(path)))
    (name,) = optuna.get_all_study_names(storage)
    study = optuna.load_study(study_name=name, storage=storage)
    curves = []
    for t in sorted(study.trials, key=lambda t: t.number):
        values = [t.intermediate_values[k] for k in sorted(t.intermediate_values)]
        epochs = int(t.user_attrs.get("epochs") or len(values))
        curves.append(Curve(t.state.name, values, epochs))
    return study.direction == optuna.study.StudyDirection.MAXIMIZE, curves


def build_pruner(setting: str):
    """An Optuna pruner from ``name(key=value,...)`` or ``default``."""
    import optuna

    if setting == "default":
        return make_pruner(DEFAULT_PRUNER, cv=False, epochs=EPOCHS)
    kinds = {
        "median": optuna.pruners.MedianPruner,
        "percentile": optuna.pruners.PercentilePruner,
        "sha": optuna.pruners.SuccessiveHalvingPruner,
        "hyperband": optuna.pruners.HyperbandPruner,
    }
    call = ast.parse(setting, mode="eval").body
    if not isinstance(call, ast.Call) or not isinstance(call.func, ast.Name):
        raise SystemExit(f"setting {setting!r}: expected name(key=value, ...)")
    if call.func.id not in kinds or call.args:
        raise SystemExit(f"setting {setting!r}: name one of {', '.join(kinds)}, keywords only")
    options = {kw.arg: ast.literal_eval(kw.value) for kw in call.keywords}
    return kinds[call.func.id](**options)


def replay(curves: list[Curve], maximize: bool, setting: str, *, name: str, seed: int) -> Replayed:
    """Run ``curves`` through a fresh pruner built from ``setting``.

    The study is named ``name``, since Hyperband assigns trials to brackets by
    a hash of the study name and trial number.
    """
    import optuna

    study = optuna.create_study(
        study_name=name,
        direction="maximize" if maximize else "minimize",
        pruner=build_pruner(setting),
        sampler=optuna.samplers.RandomSampler(seed=seed),
    )
    epochs, pruned, finished = 0, 0, []
    for curve in curves:
        trial = study.ask()
        if curve.state != "COMPLETE" or not curve.values:
            epochs += curve.epochs
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            continue
        stopped = None
        for epoch, value in enumerate(curve.values, start=1):
            trial.report(value, epoch)
            if trial.should_prune():
                stopped = epoch
                break
        if stopped is None:
            epochs += curve.epochs
            finished.append(curve.values[-1])
            study.tell(trial, curve.values[-1])
        else:
            epochs += stopped
            pruned += 1
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    return Replayed(epochs, _best(finished, maximize), pruned)


def _best(values: list[float], maximize: bool) -> float | None:
    if not values:
        return None
    return max(values) if maximize else min(values)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("journals", type=Path, help="folder of *-none.journal files")
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), help="pruner settings")
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).resolve().parent / "results" / "pruning_replay.csv",
        help="per-study rows (default: results/pruning_replay.csv)",
    )
    args = parser.parse_args(argv)

    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    paths = sorted(args.journals.glob("*-none.journal"))
    if not paths:
        raise SystemExit(f"no *-none.journal files in {args.journals}")
    studies = [(p.name.removesuffix("-none.journal"), *read_study(p)) for p in paths]
    rows, table = [], []
    for setting in args.settings:
        losses, shares, used, total = [], [], 0, 0
        for i, (study, maximize, curves) in enumerate(studies):
            r = replay(curves, maximize, setting, name=study, seed=i)
            full = sum(c.epochs for c in curves)
            best = _best([c.values[-1] for c in curves if c.state == "COMPLETE"], maximize)
            known = best is not None and r.best is not None
            loss = (best - r.best) * (1 if maximize else -1) if known else None
            rows.append([setting, study, r.epochs, full, r.pruned, loss])
            if loss is not None:
                losses.append(loss)
            shares.append(r.epochs / full)
            used, total = used + r.epochs, total + full
        table.append(
            [
                setting,
                len(studies),
                f"{100 * used / total:.0f}%",
                f"{100 * statistics.fmean(shares):.0f}%",
                f"{statistics.fmean(losses):.4f}",
                f"{max(losses):.4f}",
                sum(loss > 0 for loss in losses),
            ]
        )
    print(
        markdown(
            [
                "setting",
                "studies",
                "epochs vs none",
                "mean per-study share",
                "mean validation loss",
                "worst loss",
                "studies with a loss",
            ],
            table,
        )
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    stamp = {
        "optuna": optuna.__version__,
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "command": shlex.join(["python", *sys.argv]),
    }
    with args.out.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["setting", "study", "epochs", "epochs_none", "pruned", "val_loss", *stamp])
        writer.writerows(row + list(stamp.values()) for row in rows)


if __name__ == "__main__":
    main()
