"""The search advice of the literature, measured: log scales, and "start broad, then refine".

For each data set (the ADBench sets of at most ``--max-rows`` rows) and seed,
three searches of the same trial budget (``--trials``, default 30), each
through the real command line with the default sampler and pruner and
``--ensemble 1`` (the model is the best trial alone, so what differs is the
search):

- ``default``: one study in the default space.
- ``linear``: one study in the default space with the learning rate, the
  weight decay and the penalty weights (sparsity, contractive, KL) on linear
  ranges, from a space file that sets ``log = false`` on each (:data:`LINEAR`).
- ``refine``: half the trials in the default space, then
  ``anomtune space --refine`` on that run, then the other half in the refined
  space; the model is the better of the two studies' best trials on
  validation (its test AUC-ROC is the one its own ``tune`` reported).

Rows go to ``results/advice.csv`` (one per data set, seed and method; a run
cut short resumes), and the report prints the mean test AUC-ROC, the average
rank, wins and losses against ``default`` and the median seconds.

    python benchmarks/advice.py ../shared/datasets --seeds 0,1,2
    python benchmarks/advice.py ../shared/datasets --report-only --seeds 0,1,2
"""

from __future__ import annotations

import argparse
import datetime as dt
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from adbench import load, to_frame
from quality import (
    Results,
    anomtune_executable,
    average_ranks,
    log,
    markdown,
    parse_ints,
    per_dataset_means,
    protocol_arguments,
    run_tune,
    select_datasets,
    shown_command,
    versions,
    wins_losses,
)

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "results" / "advice.csv"
METHODS = ("default", "linear", "refine")
#: The default space's log-scaled rates and weights, made linear.
LINEAR = "".join(
    f"[{name}]\nlog = false\n\n"
    for name in ("learning_rate", "weight_decay", "sparsity_weight", "contractive_weight", "beta")
)
COLUMNS = [
    "dataset",
    "seed",
    "method",
    "trials",
    "auc_roc",
    "auc_pr",
    "val_value",
    "chosen_study",
    "seconds",
    "rows",
    "features",
    "error",
    "anomtune",
    "torch",
    "optuna",
    "sklearn",
    "date",
    "command",
    "bench_command",
]


def _outcome(summary: dict) -> tuple[float, dict]:
    """A tune's best validation value and its test metrics."""
    return float(summary["best"]["value"]), summary["metrics"]["test"]


def run_method(info, seed, method, args, results, tmp, base) -> None:
    name = info["name"]
    if results.done(name, seed, method):
        return
    X, y = load(args.datasets_root, name)
    csv_path = tmp / f"{name}.csv"
    if not csv_path.exists():
        to_frame(X, y).to_csv(csv_path, index=False)
    row = {
        **base,
        "dataset": name,
        "seed": seed,
        "method": method,
        "trials": args.trials,
        "rows": len(y),
        "features": X.shape[1],
        "date": dt.datetime.now().isoformat(timespec="seconds"),
    }
    study = f"{name}-s{seed}-{method}"
    extra = ["--ensemble", "1"]
    commands = []
    try:
        if method == "refine":
            half = args.trials // 2
            broad, cmd, wall, _ = run_tune(
                csv_path, seed=seed, trials=half, workdir=tmp, study=f"{study}-broad", extra=extra
            )
            commands.append(shown_command(cmd, tmp))
            finer = tmp / f"{study}-finer.toml"
            refine = [
                anomtune_executable(),
                "space",
                "--refine",
                str(tmp / f"run-{study}-broad"),
                "-o",
                str(finer),
            ]
            done = subprocess.run(refine, capture_output=True, text=True)
            if done.returncode != 0:
                raise RuntimeError(f"space --refine: {done.stderr.strip()[-300:]}")
            commands.append(shown_command(refine, tmp))
            second, cmd, wall2, _ = run_tune(
                csv_path,
                seed=seed,
                trials=args.trials - half,
                workdir=tmp,
                study=f"{study}-fine",
                extra=[*extra, "--space", str(finer)],
            )
            commands.append(shown_command(cmd, tmp))
            (v1, t1), (v2, t2) = _outcome(broad), _outcome(second)
            # Ties go to the refined study: it is the one the advice says to ship.
            value, test, chosen = (v2, t2, "fine") if v2 >= v1 else (v1, t1, "broad")
            seconds = wall + wall2
        else:
            if method == "linear":
                space = tmp / "linear.toml"
                space.write_text(LINEAR)
                extra += ["--space", str(space)]
            summary, cmd, seconds, _ = run_tune(
                csv_path, seed=seed, trials=args.trials, workdir=tmp, study=study, extra=extra
            )
            commands.append(shown_command(cmd, tmp))
            (value, test), chosen = _outcome(summary), ""
    except (RuntimeError, OSError) as exc:
        results.add({**row, "error": str(exc)[:500]})
        log(f"{name} seed {seed} {method}: FAILED {exc}")
        return
    finally:
        for run in tmp.glob(f"run-{study}*"):
            shutil.rmtree(run, ignore_errors=True)
    results.add(
        {
            **row,
            "auc_roc": test["auc_roc"],
            "auc_pr": test["auc_pr"],
            "val_value": value,
            "chosen_study": chosen,
            "seconds": round(seconds, 3),
            "command": " && ".join(commands),
        }
    )
    log(f"{name} seed {seed} {method}: test AUC-ROC {test['auc_roc']:.4f}")


def report(results: Results, seeds: list[int]) -> None:
    rows = [r for r in results.valid() if int(r["seed"]) in seeds]
    if not rows:
        print("no rows yet")
        return
    means = per_dataset_means(rows, METHODS, "auc_roc")
    names = sorted(means, key=str.lower)
    if not names:
        print("no data set has every method yet")
        return
    ranks = average_ranks({n: {m: means[n][m] for m in METHODS} for n in names}, METHODS)
    table = []
    for m in METHODS:
        wlt = "" if m == "default" else "/".join(map(str, wins_losses(means, names, m, "default")))
        secs = [float(r["seconds"]) for r in rows if r["method"] == m and r["dataset"] in means]
        table.append(
            [
                m,
                f"{statistics.fmean(means[n][m] for n in names):.4f}",
                f"{ranks[m]:.2f}",
                wlt,
                f"{statistics.median(secs):.1f}",
            ]
        )
    print(f"### Search advice: seeds {','.join(map(str, seeds))}, {len(names)} data sets\n")
    print(
        markdown(
            [
                "method",
                "mean test AUC-ROC",
                "average rank",
                "wins/losses/ties vs default",
                "median seconds",
            ],
            table,
        )
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    protocol_arguments(parser)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args(argv)
    results = Results(args.out, COLUMNS, ("dataset", "seed", "method"))
    seeds = parse_ints(args.seeds)
    if not args.report_only:
        methods = [m for m in args.methods.split(",") if m]
        unknown = set(methods) - set(METHODS)
        if unknown:
            raise SystemExit(f"unknown method(s): {', '.join(sorted(unknown))}")
        chosen = select_datasets(args.datasets_root, args.datasets, args.max_rows)
        base = {**versions(), "bench_command": shlex.join(["python", *sys.argv])}
        with tempfile.TemporaryDirectory(prefix="anomtune-advice-") as tmpdir:
            tmp = Path(tmpdir)
            for seed in seeds:
                for info in chosen:
                    for method in methods:
                        run_method(info, seed, method, args, results, tmp, base)
    report(results, seeds)


if __name__ == "__main__":
    main()
