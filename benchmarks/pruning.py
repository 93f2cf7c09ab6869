"""Pruning: the same tuning study with each pruner, and without pruning.

For each data set, seed and pruner (none, median, sha, hyperband) the data
set is written as CSV into a temporary folder and the real command line is
run with the same seed and trial budget::

    anomtune tune DATA.csv --label is_anomaly --seed S --trials T --pruner P \
        --json --quiet --study NAME --storage JOURNAL --out RUN_DIR

The test AUC-ROC of the selected model, the epochs trained by the whole study
(``study.epochs_trained``) and the wall time are read from the JSON summary.
The table compares every pruner with ``none`` on the same data set and seed:
the mean AUC-ROC lost and the epochs trained as a share of those of ``none``.

    python benchmarks/pruning.py ../shared/datasets
    python benchmarks/pruning.py ../shared/datasets --datasets cardio,thyroid --workers 2
    python benchmarks/pruning.py ../shared/datasets --report-only

Rows already in the output CSV (same data set, seed, pruner and pruner
settings) are skipped; the tables use only rows run with the current settings
of each pruner (``study.pruner_settings`` of the summary).
A ``--timeout`` would give each pruner a different number of trials, so the
comparison uses the trial budget only.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import shlex
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from adbench import load, to_frame
from quality import (
    VERSIONED,
    Results,
    log,
    markdown,
    parse_ints,
    run_tune,
    select_datasets,
    shown_command,
    versions,
)

from anomtune.space import default_space
from anomtune.tuning import pruner_settings
from anomtune.tuning.config import DEFAULT_PRUNER, PRUNERS

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "results" / "pruning.csv"
DATASETS = "cardio,thyroid,satellite"
ORDER = ("none", *(p for p in PRUNERS if p != "none"))
#: Epochs a trial may train in the default search space (Hyperband's maximum).
EPOCHS = int(default_space(1)["epochs"].value)
COLUMNS = [
    "dataset",
    "seed",
    "pruner",
    "pruner_settings",
    "auc_roc",
    "auc_pr",
    "val_value",
    "epochs",
    "trials_budget",
    "trials_complete",
    "trials_pruned",
    "trials_failed",
    "tune_seconds",
    "total_seconds",
    "process_seconds",
    "workers",
    "rows",
    "features",
    "error",
    *VERSIONED,
    "date",
    "command",
    "bench_command",
]


def current_settings(pruner: str) -> str:
    """The pruner's Optuna class and arguments as recorded in a row (default space)."""
    return json.dumps(pruner_settings(pruner, cv=False, epochs=EPOCHS), sort_keys=True)


def report(results: Results) -> None:
    valid = results.valid()
    rows = [r for r in valid if r.get("pruner_settings") == current_settings(r["pruner"])]
    if not rows:
        print("no results yet")
        return
    by = {(r["dataset"], r["seed"], r["pruner"]): r for r in rows}
    present = [p for p in ORDER if any(r["pruner"] == p for r in rows)]
    pairs = sorted({(r["dataset"], r["seed"]) for r in rows})
    detail = []
    for d, s in pairs:
        for p in ORDER:
            r = by.get((d, s, p))
            if r is not None:
                detail.append(
                    [
                        d,
                        s,
                        p,
                        float(r["auc_roc"]),
                        int(r["epochs"]),
                        f"{r['trials_complete']}/{r['trials_pruned']}/{r['trials_failed']}",
                        f"{float(r['total_seconds']):.0f}",
                    ]
                )
    print("### Per run\n")
    print(
        markdown(
            [
                "dataset",
                "seed",
                "pruner",
                "test AUC-ROC",
                "epochs trained",
                "trials complete/pruned/failed",
                "wall s",
            ],
            detail,
        ),
        end="\n\n",
    )
    table, figures = [], {}
    for p in present if "none" in present else []:
        # Each pruner against no pruning on the data set and seed pairs both have run.
        shared = [(d, s) for d, s in pairs if (d, s, p) in by and (d, s, "none") in by]
        mine = [by[(d, s, p)] for d, s in shared]
        none = [by[(d, s, "none")] for d, s in shared]
        if not mine:
            continue
        losses = [
            float(n["auc_roc"]) - float(r["auc_roc"]) for n, r in zip(none, mine, strict=True)
        ]
        loss = statistics.fmean(losses)
        error = statistics.stdev(losses) / math.sqrt(len(losses)) if len(losses) > 1 else 0.0
        share = sum(int(r["epochs"]) for r in mine) / sum(int(n["epochs"]) for n in none)
        wall = statistics.median(float(r["total_seconds"]) for r in mine)
        figures[p] = (loss, share, len(mine))
        table.append(
            [
                p + (" (default)" if p == DEFAULT_PRUNER else ""),
                len(mine),
                statistics.fmean(float(r["auc_roc"]) for r in mine),
                f"{loss:+.4f} ± {error:.4f}",
                f"{sum(x > 0 for x in losses)}/{sum(x < 0 for x in losses)}",
                f"{100 * share:.0f}%",
                f"{wall:.0f}",
            ]
        )
    print("### By pruner (each against no pruning on the runs both have)\n")
    print(
        markdown(
            [
                "pruner",
                "runs",
                "mean test AUC-ROC",
                "mean AUC-ROC loss vs none (± standard error)",
                "runs lost/gained",
                "epochs vs none",
                "median wall s",
            ],
            table,
        ),
        end="\n\n",
    )
    print("Settings: " + "; ".join(f"{p}: {current_settings(p)}" for p in present), end="\n\n")
    if DEFAULT_PRUNER in figures:
        loss, share, n = figures[DEFAULT_PRUNER]
        ok_epochs, ok_loss = share <= 0.40, loss <= 0.005
        print(f"### Target (default pruner: {DEFAULT_PRUNER}, {n} runs)\n")
        print(
            f"- {'MET' if ok_epochs else 'NOT MET'}: at most 40% of the epochs of no pruning "
            f"({100 * share:.0f}%)"
        )
        print(
            f"- {'MET' if ok_loss else 'NOT MET'}: loses at most 0.005 test AUC-ROC on average "
            f"({loss:+.4f})"
        )
    stale = len(valid) - len(rows)
    if stale:
        print(
            f"\n{stale} row(s) run with other pruner settings than the current ones are left out."
        )
    errors = [r for r in results.rows if r.get("error")]
    if errors:
        print("\n### Runs that failed\n")
        for r in errors:
            print(f"- {r['dataset']} seed {r['seed']} {r['pruner']}: {r['error']}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("datasets_root", type=Path, help="the shared datasets folder")
    parser.add_argument("--datasets", default=DATASETS, help=f"default: {DATASETS}")
    parser.add_argument("--seeds", default="0", help="default: 0")
    parser.add_argument("--trials", type=int, default=30, help="trials per run (default 30)")
    parser.add_argument("--pruners", default=",".join(ORDER), help=f"default: {','.join(ORDER)}")
    parser.add_argument("--workers", type=int, help="passed to anomtune tune")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="results CSV")
    parser.add_argument(
        "--keep-studies",
        type=Path,
        metavar="DIR",
        help="copy each run's study journal (every trial's per-epoch values) into DIR",
    )
    parser.add_argument("--report-only", action="store_true", help="print tables from --out")
    args = parser.parse_args(argv)

    results = Results(args.out, COLUMNS, ("dataset", "seed", "pruner", "pruner_settings"))
    if not args.report_only:
        pruners = [p.strip() for p in args.pruners.split(",") if p.strip()]
        unknown = set(pruners) - set(PRUNERS)
        if unknown:
            raise SystemExit(f"unknown pruner(s): {', '.join(sorted(unknown))}")
        seeds = parse_ints(args.seeds)
        chosen = select_datasets(args.datasets_root, args.datasets, 0)
        base = {**versions(), "bench_command": shlex.join(["python", *sys.argv])}
        extra = ["--workers", str(args.workers)] if args.workers else []
        log(f"{len(chosen)} data set(s), seeds {seeds}, pruners {pruners}, {args.trials} trials")
        with tempfile.TemporaryDirectory(prefix="anomtune-pruning-") as tmpdir:
            tmp = Path(tmpdir)
            for seed in seeds:
                for info in chosen:
                    name = info["name"]
                    csv_path = tmp / f"{name}.csv"
                    for pruner in pruners:
                        if results.done(name, seed, pruner, current_settings(pruner)):
                            log(f"{name} seed {seed} {pruner}: done, skipped")
                            continue
                        if not csv_path.exists():
                            X, y = load(args.datasets_root, name)
                            to_frame(X, y).to_csv(csv_path, index=False)
                        study = f"{name}-s{seed}-{pruner}-{os.getpid()}"
                        row = {
                            **base,
                            "dataset": name,
                            "seed": seed,
                            "pruner": pruner,
                            "pruner_settings": current_settings(pruner),
                            "trials_budget": args.trials,
                            "workers": args.workers or 1,
                            "rows": info["rows"],
                            "features": info["cols"],
                            "date": dt.datetime.now().isoformat(timespec="seconds"),
                        }
                        try:
                            summary, cmd, wall, _ = run_tune(
                                csv_path,
                                seed=seed,
                                trials=args.trials,
                                workdir=tmp,
                                study=study,
                                extra=["--pruner", pruner, *extra],
                            )
                        except (RuntimeError, OSError) as exc:
                            row["error"] = str(exc)[:500]
                            results.add(row)
                            log(f"{name} seed {seed} {pruner}: FAILED {row['error']}")
                            continue
                        shutil.rmtree(tmp / f"run-{study}", ignore_errors=True)
                        if args.keep_studies:
                            args.keep_studies.mkdir(parents=True, exist_ok=True)
                            shutil.copyfile(
                                tmp / f"{study}.journal",
                                args.keep_studies / f"{name}-s{seed}-{pruner}.journal",
                            )
                        st = summary["study"]
                        counts = st["trials"]
                        row.update(
                            auc_roc=summary["metrics"]["test"]["auc_roc"],
                            auc_pr=summary["metrics"]["test"]["auc_pr"],
                            pruner_settings=json.dumps(
                                summary["study"]["pruner_settings"], sort_keys=True
                            ),
                            val_value=summary["best"]["value"],
                            epochs=st["epochs_trained"],
                            trials_complete=counts.get("complete", 0),
                            trials_pruned=counts.get("pruned", 0),
                            trials_failed=counts.get("fail", 0),
                            tune_seconds=summary["timings"]["tuning_seconds"],
                            total_seconds=summary["timings"]["total_seconds"],
                            process_seconds=round(wall, 3),
                            command=shown_command(cmd, tmp),
                        )
                        results.add(row)
                        log(
                            f"{name} seed {seed} {pruner}: test AUC-ROC {row['auc_roc']:.4f}, "
                            f"{row['epochs']} epochs, {row['trials_pruned']} pruned, "
                            f"{row['total_seconds']:.0f}s"
                        )
    report(results)


if __name__ == "__main__":
    main()
