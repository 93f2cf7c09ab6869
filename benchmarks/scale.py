"""Tuning cost on large tables: the default tune against the previous default.

For each large ADBench set (cover, http, celeba) and each size (stratified
samples of 10,000, 20,000, 50,000 and 200,000 rows, and the whole table) this
runs ``anomtune tune FILE --label is_anomaly --seed S --trials 30`` through
the real command line, once as it is (``default``: trials train on a sample
of the training rows, the best is refitted on all of them) and once as
before (``previous``: ``--trial-rows all``, every trial trains on every
row). Each run records its wall time, the epochs and rows trained, the
child process's peak resident memory and the test AUC-ROC / AUC-PR of the
tune's own split.

    python benchmarks/scale.py ../shared/datasets
    python benchmarks/scale.py ../shared/datasets --datasets cover --sizes 20000,all
    python benchmarks/scale.py ../shared/datasets --datasets planted-600000 --sizes all \
        --methods default        # the peak memory of a 600,000 x 10 table
    python benchmarks/scale.py ../shared/datasets --report-only

Rows go to ``results/scale.csv`` (a run cut short resumes where it stopped).
The goal it checks: on the whole table the default costs at most 4x what it
costs on the 20,000-row sample, its test AUC-ROC is within 0.005 of the
previous default's on the whole table, and its peak memory stays under 1 GB.
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from sklearn.model_selection import train_test_split

sys.path.insert(0, str(Path(__file__).resolve().parent))

from adbench import load, to_frame
from machine import machine_info, machine_line
from quality import Results, log, markdown, run_tune, shown_command, versions

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "results" / "scale.csv"
DATASETS = ("cover", "http", "celeba")
SIZES = "10000,20000,50000,200000,all"
#: Extra ``anomtune tune`` options of each method.
METHODS = {"default": [], "previous": ["--trial-rows", "all"]}


def method_options(method: str) -> list[str]:
    """The tune options of ``method``: one of :data:`METHODS`, or ``rows-N``
    (``--trial-rows N``)."""
    if method in METHODS:
        return METHODS[method]
    if method.startswith("rows-") and method[5:].isdigit():
        return ["--trial-rows", method[5:]]
    raise SystemExit(f"unknown method: {method} (one of {', '.join(METHODS)}, or rows-N)")


REFERENCE_SIZE = 20_000
COLUMNS = [
    "dataset",
    "size",
    "method",
    "seed",
    "rows",
    "features",
    "anomalies",
    "trials",
    "auc_roc",
    "auc_pr",
    "seconds",
    "tune_seconds",
    "refit_seconds",
    "peak_mb",
    "epochs_trained",
    "rows_trained",
    "trial_train_rows",
    "trial_val_rows",
    "refit_epochs",
    "trials_complete",
    "trials_pruned",
    "error",
    "command",
    "bench_command",
    "commit",
    "anomtune",
    "torch",
    "optuna",
    "python",
    "cpu_count",
    "cpu",
    "date",
    "load",
]


def commit() -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(HERE), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        )
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def planted(rows: int, features: int = 10, rate: float = 0.059, seed: int = 1):
    """A generated table of ``rows`` x ``features``: Gaussian normal rows, and
    ``rate`` of rows shifted by Gaussian noise (the shape of the 619,326 x 10
    table the memory goal was set on)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(rows, features))
    y = (rng.random(rows) < rate).astype(int)
    X[y == 1] += rng.normal(scale=1.5, size=(int(y.sum()), features))
    return X, y


def sample_csv(root: Path, name: str, size: str, cache: Path, seed: int = 0) -> tuple[Path, dict]:
    """The CSV of ``name`` (whole, or a stratified sample of ``size`` rows), written once.

    ``planted-N`` is :func:`planted`'s table of N rows."""
    path = cache / f"{name}-{size}.csv"
    if name.startswith("planted-"):
        X, y = planted(int(name.split("-", 1)[1]))
    else:
        X, y = load(root, name)
    if size != "all" and int(size) < len(y):
        keep, _ = train_test_split(
            np.arange(len(y)), train_size=int(size), stratify=y, random_state=seed
        )
        keep.sort()
        X, y = X[keep], y[keep]
    if not path.exists():
        staged = path.with_suffix(".tmp")
        to_frame(X, y).to_csv(staged, index=False)
        staged.replace(path)
    return path, {"rows": len(y), "features": X.shape[1], "anomalies": int(y.sum())}


def fidelity_row(summary: dict) -> dict:
    """What the run's summary records of the rows its trials and its refit trained on."""
    fidelity = summary.get("fidelity") or {}
    trials = fidelity.get("trials") or {}
    refit = fidelity.get("refit") or {}
    return {
        "trial_train_rows": trials.get("train_rows", ""),
        "trial_val_rows": trials.get("val_rows", ""),
        "refit_epochs": refit.get("epochs", summary.get("best", {}).get("epochs", "")),
        "rows_trained": fidelity.get("rows_trained", ""),
    }


def run_one(task: dict, results: Results, workdir: Path, base: dict) -> None:
    name, size, method, seed = task["dataset"], task["size"], task["method"], task["seed"]
    study = f"{name}-{size}-{method}-s{seed}"
    row = {**base, **task["info"], "dataset": name, "size": size, "method": method}
    row.update(seed=seed, trials=task["trials"], load=round(os.getloadavg()[0], 2))
    log(f"{study}: start")
    try:
        summary, cmd, wall, peak = run_tune(
            task["csv"],
            seed=seed,
            trials=task["trials"],
            workdir=workdir,
            study=study,
            extra=method_options(method),
        )
    except RuntimeError as exc:
        log(f"{study}: {exc}")
        results.add({**row, "error": str(exc)})
        return
    test = summary["metrics"]["test"]
    counts = summary["study"]["trials"]
    timings = summary["timings"]
    row.update(
        auc_roc=test["auc_roc"],
        auc_pr=test["auc_pr"],
        seconds=round(wall, 2),
        tune_seconds=timings.get("tuning_seconds"),
        refit_seconds=timings.get("refit_seconds"),
        peak_mb=round(peak, 1),
        epochs_trained=summary["study"]["epochs_trained"],
        trials_complete=counts.get("complete", 0),
        trials_pruned=counts.get("pruned", 0),
        command=shown_command(cmd, workdir),
        **fidelity_row(summary),
    )
    results.add(row)
    log(f"{study}: {wall:.0f} s, test AUC-ROC {test['auc_roc']:.4f}, peak {peak:.0f} MB")


def report(results: Results, seed: int) -> None:
    rows = [r for r in results.valid() if int(r["seed"]) == seed]
    if not rows:
        print("no results yet")
        return
    by = {(r["dataset"], r["size"], r["method"]): r for r in rows}
    names = [d for d in dict.fromkeys(r["dataset"] for r in rows)]
    sizes = sorted({r["size"] for r in rows}, key=lambda s: float("inf") if s == "all" else int(s))
    table = []
    for name in names:
        for size in sizes:
            for method in dict.fromkeys([*METHODS, *(r["method"] for r in rows)]):
                r = by.get((name, size, method))
                if r is None:
                    continue
                table.append(
                    [
                        name,
                        size,
                        f"{int(r['rows']):,}",
                        method,
                        f"{float(r['seconds']):.0f}",
                        int(float(r["epochs_trained"])),
                        f"{int(r['trial_train_rows']):,}" if r["trial_train_rows"] else "all",
                        f"{float(r['peak_mb']):.0f}",
                        float(r["auc_roc"]),
                        float(r["auc_pr"]),
                    ]
                )
    print(
        markdown(
            [
                "data set",
                "size",
                "rows",
                "method",
                "wall s",
                "epochs (trials)",
                "trial train rows",
                "peak MB",
                "test AUC-ROC",
                "test AUC-PR",
            ],
            table,
        )
    )
    print()
    goal = []
    for name in names:
        whole, ref = (
            by.get((name, "all", "default")),
            by.get((name, str(REFERENCE_SIZE), "default")),
        )
        prev = by.get((name, "all", "previous"))
        if whole is None:
            continue
        ratio = float(whole["seconds"]) / float(ref["seconds"]) if ref else float("nan")
        gap = float(whole["auc_roc"]) - float(prev["auc_roc"]) if prev else float("nan")
        speed = float(prev["seconds"]) / float(whole["seconds"]) if prev else float("nan")
        goal.append(
            [
                name,
                f"{ratio:.2f}",
                f"{speed:.2f}" if prev else "-",
                gap,
                f"{float(whole['peak_mb']):.0f}",
                f"{float(prev['peak_mb']):.0f}" if prev else "-",
            ]
        )
    if goal:
        print(
            markdown(
                [
                    "data set (whole)",
                    f"default wall / default at {REFERENCE_SIZE:,} rows (goal <= 4)",
                    "previous wall / default wall",
                    "test AUC-ROC, default - previous (goal >= -0.005)",
                    "default peak MB (goal < 1024)",
                    "previous peak MB",
                ],
                goal,
            )
        )
        ratios = [float(g[1]) for g in goal if g[1] != "nan"]
        if ratios:
            print(
                f"\nmedian cost ratio whole / {REFERENCE_SIZE:,}: {statistics.median(ratios):.2f}"
            )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("datasets_root", type=Path, help="the shared datasets folder")
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--sizes", default=SIZES, help="rows of each sample; 'all' = whole")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--jobs", type=int, default=1, help="tunes run at once")
    parser.add_argument(
        "--cache", type=Path, default=Path(tempfile.gettempdir()) / "anomtune-scale"
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args(argv)
    results = Results(args.out, COLUMNS, ("dataset", "size", "method", "seed"))
    info = machine_info(versions())
    print(machine_line(info, ("anomtune", "torch", "optuna")))
    if not args.report_only:
        methods = [m for m in args.methods.split(",") if m]
        for method in methods:
            method_options(method)
        args.cache.mkdir(parents=True, exist_ok=True)
        base = {**info, "commit": commit(), "bench_command": shlex.join(["python", *sys.argv])}
        tasks = []
        sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
        for size in sizes:
            for name in args.datasets.split(","):
                for method in methods:
                    if results.done(name, size, method, args.seed):
                        continue
                    csv_path, data = sample_csv(args.datasets_root, name, size, args.cache)
                    tasks.append(
                        {
                            "dataset": name,
                            "size": size,
                            "method": method,
                            "seed": args.seed,
                            "trials": args.trials,
                            "csv": csv_path,
                            "info": data,
                        }
                    )
        with (
            tempfile.TemporaryDirectory(prefix="anomtune-scale-") as tmp,
            ThreadPoolExecutor(max_workers=args.jobs) as pool,
        ):
            futures = [pool.submit(run_one, t, results, Path(tmp), base) for t in tasks]
            for future in futures:
                future.result()
    report(results, args.seed)


if __name__ == "__main__":
    main()
