"""Detection quality: tuned anomtune against five baselines on ADBench data.

Follows ``PROTOCOL.md`` of the shared folder. For each data set and seed the
data set is written as CSV into a temporary folder and the real command line
is run on it::

    anomtune tune DATA.csv --label is_anomaly --seed S --trials T --json --quiet \
        --study NAME --storage JOURNAL --out RUN_DIR

Its test AUC-ROC and AUC-PR, wall time and epochs trained are read from the
JSON summary. In the same run, on the same split (the protocol's two
``train_test_split`` calls with ``random_state=S``) and the same training
rows (the normal rows of TRAIN), five baselines are fitted on the raw
features: scikit-learn ``IsolationForest`` (scored by ``-score_samples``),
PyOD ``AutoEncoder``, ``VAE`` (both standardise internally), ``ECOD`` and
``KNN`` (scored by ``decision_function``), all at their defaults except the
seed and ``verbose=0`` for the two networks. The networks are fitted in this
process with one torch thread by default (``--baseline-threads``): with more
threads than free cores, PyOD's small batches spend most of their time
waiting on each other.

    python benchmarks/quality.py ../shared/datasets
    python benchmarks/quality.py ../shared/datasets --seeds 0 --workers 2 --timeout 240
    python benchmarks/quality.py ../shared/datasets --datasets cardio,thyroid --trials 10
    python benchmarks/quality.py ../shared/datasets --report-only --seeds 0

Rows already in the output CSV (same data set, seed and method) are skipped,
so an interrupted run continues where it stopped; ``--report-only`` prints
the tables from the CSV (rows of ``--seeds`` only) without running anything.
Progress goes to stderr, tables (Markdown) to stdout.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import fcntl
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score
from sklearn.model_selection import train_test_split

sys.path.insert(0, str(Path(__file__).resolve().parent))

from adbench import LABEL, index, load, to_frame

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "results" / "quality.csv"
REFERENCE = "reference/baselines_protocol.csv"
ANOMTUNE = "anomtune"
BASELINES = ("iforest", "pyod_ae", "pyod_vae", "ecod", "knn")
METHODS = (ANOMTUNE, *BASELINES)
VERSIONED = {
    "anomtune": "anomtune",
    "torch": "torch",
    "optuna": "optuna",
    "pyod": "pyod",
    "sklearn": "scikit-learn",
}
COLUMNS = [
    "dataset",
    "seed",
    "method",
    "auc_roc",
    "auc_pr",
    "seconds",
    "process_seconds",
    "epochs",
    "trials_budget",
    "trials_complete",
    "trials_pruned",
    "trials_failed",
    "pruner",
    "pruner_settings",
    "workers",
    "timeout",
    "threads",
    "rows",
    "features",
    "train_rows",
    "error",
    *VERSIONED,
    "date",
    "command",
    "bench_command",
]


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def versions() -> dict[str, str]:
    out = {}
    for key, dist in VERSIONED.items():
        try:
            out[key] = version(dist)
        except PackageNotFoundError:
            out[key] = ""
    return out


def anomtune_executable() -> str:
    """The ``anomtune`` script next to this interpreter, else the one on PATH."""
    local = Path(sys.executable).parent / "anomtune"
    if local.exists():
        return str(local)
    found = shutil.which("anomtune")
    if found is None:
        raise SystemExit("cannot find the anomtune command; install the project first")
    return found


def protocol_split(y: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row positions of TRAIN, VAL and TEST, with the protocol's two calls."""
    positions = np.arange(len(y))
    rest, test = train_test_split(positions, test_size=0.2, stratify=y, random_state=seed)
    train, val = train_test_split(rest, test_size=0.25, stratify=y[rest], random_state=seed)
    return train, val, test


def select_datasets(root: str | Path, names: str | None, max_rows: int) -> list[dict]:
    """INDEX rows of the chosen data sets, smallest first."""
    rows = index(root)
    if names:
        wanted = [n.strip().lower() for n in names.split(",") if n.strip()]
        by_name = {r["name"].lower(): r for r in rows}
        missing = [n for n in wanted if n not in by_name]
        if missing:
            raise SystemExit(f"unknown data set(s): {', '.join(missing)}")
        chosen = [by_name[n] for n in wanted]
    else:
        chosen = [r for r in rows if int(r["rows"]) <= max_rows]
    return sorted(chosen, key=lambda r: int(r["rows"]))


def parse_ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


# -- the results file ---------------------------------------------------------


def _text(value) -> str:
    """A value as the CSV holds it, so rows read back and rows just added compare alike."""
    return "" if value is None else str(value)


class Results:
    """Rows of a results CSV keyed by some columns; rewritten whole after each addition.

    Rows with a non-empty ``error`` do not count as done, so a later run retries them.
    Each addition re-reads the file under a lock and merges, so two runs writing
    the same file (different seeds, say) keep each other's rows.
    """

    def __init__(self, path: str | Path, columns: list[str], key: tuple[str, ...]):
        self.path = Path(path)
        self.columns = columns
        self.key = key
        self.rows: list[dict] = self._read()

    def _read(self) -> list[dict]:
        if not self.path.exists():
            return []
        with self.path.open(newline="") as fh:
            return list(csv.DictReader(fh))

    def _key(self, row: dict) -> tuple[str, ...]:
        return tuple(str(row[k]) for k in self.key)

    def done(self, *values) -> bool:
        wanted = tuple(str(v) for v in values)
        return any(self._key(r) == wanted and not r.get("error") for r in self.rows)

    def add(self, row: dict) -> None:
        new = {c: _text(row.get(c)) for c in self.columns}
        key = self._key(new)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_name(f".{self.path.name}.lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            merged = {self._key(r): r for r in self._read()}
            for r in self.rows:
                merged.setdefault(self._key(r), r)
            merged[key] = new
            self.rows = list(merged.values())
            staged = self.path.with_name(f".{self.path.name}.tmp")
            with staged.open("w", newline="") as fh:
                writer = csv.DictWriter(fh, fieldnames=self.columns, extrasaction="ignore")
                writer.writeheader()
                writer.writerows(self.rows)
            os.replace(staged, self.path)

    def valid(self) -> list[dict]:
        return [r for r in self.rows if not r.get("error") and r.get("auc_roc") not in ("", None)]


# -- running the command line ---------------------------------------------------


def run_tune(
    csv_path: Path,
    *,
    seed: int,
    trials: int,
    workdir: Path,
    study: str,
    extra: Iterable[str] = (),
) -> tuple[dict, list[str], float]:
    """Run ``anomtune tune ... --json`` and return its summary, argv and wall seconds."""
    cmd = [
        anomtune_executable(),
        "tune",
        str(csv_path),
        "--label",
        LABEL,
        "--seed",
        str(seed),
        "--trials",
        str(trials),
        "--json",
        "--quiet",
        "--study",
        study,
        "--storage",
        str(workdir / f"{study}.journal"),
        "--out",
        str(workdir / f"run-{study}"),
        *extra,
    ]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        raise RuntimeError(f"exit code {proc.returncode}: " + " | ".join(tail))
    try:
        summary = json.loads(proc.stdout)
    except json.JSONDecodeError as exc:
        raise RuntimeError(f"output is not JSON: {proc.stdout[:200]!r}") from exc
    if not summary.get("best"):
        raise RuntimeError("no trial completed")
    return summary, cmd, wall


def shown_command(cmd: list[str], tmp: Path) -> str:
    """The command as a user would type it, with the temporary folder as ``$TMP``."""
    text = shlex.join(["anomtune", *cmd[1:]])
    return text.replace(str(tmp), "$TMP")


def tune_row(summary: dict) -> dict:
    study = summary["study"]
    counts = study["trials"]
    test = summary["metrics"]["test"]
    return {
        "auc_roc": test["auc_roc"],
        "auc_pr": test["auc_pr"],
        "seconds": summary["timings"]["total_seconds"],
        "epochs": study["epochs_trained"],
        "trials_complete": counts.get("complete", 0),
        "trials_pruned": counts.get("pruned", 0),
        "trials_failed": counts.get("fail", 0),
        "pruner": study["pruner"],
        "pruner_settings": json.dumps(study.get("pruner_settings"), sort_keys=True),
    }


# -- baselines ------------------------------------------------------------------


def make_baseline(method: str, seed: int):
    """The baseline detector and a function giving its anomaly scores (higher = worse)."""
    if method == "iforest":
        from sklearn.ensemble import IsolationForest

        model = IsolationForest(random_state=seed)
        return model, lambda X: -model.score_samples(X)
    if method == "pyod_ae":
        from pyod.models.auto_encoder import AutoEncoder

        model = AutoEncoder(random_state=seed, verbose=0)
    elif method == "pyod_vae":
        from pyod.models.vae import VAE

        model = VAE(random_state=seed, verbose=0)
    elif method == "ecod":
        from pyod.models.ecod import ECOD

        model = ECOD()
    elif method == "knn":
        from pyod.models.knn import KNN

        model = KNN()
    else:
        raise ValueError(method)
    return model, model.decision_function


def fit_baseline(method: str, seed: int, X_train, X_test, y_test) -> dict:
    model, score = make_baseline(method, seed)
    start = time.perf_counter()
    model.fit(X_train)
    seconds = time.perf_counter() - start
    scores = np.asarray(score(X_test), dtype=float)
    if not np.isfinite(scores).all():
        raise RuntimeError("non-finite test scores")
    return {
        "auc_roc": roc_auc_score(y_test, scores),
        "auc_pr": average_precision_score(y_test, scores),
        "seconds": round(seconds, 4),
        "epochs": getattr(model, "epoch_num", ""),
    }


# -- tables -----------------------------------------------------------------------


def markdown(header: list[str], rows: list[list]) -> str:
    def cell(v) -> str:
        if isinstance(v, float):
            return "-" if np.isnan(v) else f"{v:.4f}"
        return str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def per_dataset_means(rows: list[dict], methods: tuple[str, ...], metric: str) -> dict:
    """``{dataset: {method: mean over seeds}}`` over the seeds every method has."""
    by: dict[str, dict[str, dict[int, float]]] = {}
    for r in rows:
        by.setdefault(r["dataset"], {}).setdefault(r["method"], {})[int(r["seed"])] = float(
            r[metric]
        )
    out = {}
    for name, per_method in by.items():
        if not all(m in per_method for m in methods):
            continue
        seeds = set.intersection(*(set(per_method[m]) for m in methods))
        if not seeds:
            continue
        out[name] = {m: statistics.fmean(per_method[m][s] for s in seeds) for m in methods}
        out[name]["_seeds"] = sorted(seeds)
    return out


def average_ranks(means: dict, methods: tuple[str, ...]) -> dict[str, float]:
    """Mean over data sets of each method's rank (1 = best; ties share the mean rank)."""
    totals = dict.fromkeys(methods, 0.0)
    for values in means.values():
        for m in methods:
            better = sum(values[o] > values[m] for o in methods)
            equal = sum(values[o] == values[m] for o in methods)
            totals[m] += better + (equal + 1) / 2
    return {m: totals[m] / len(means) for m in methods}


def summarize(rows: list[dict], metric: str, label: str) -> tuple[str, dict]:
    """Markdown tables for one metric and the figures the targets are judged on."""
    means = per_dataset_means(rows, METHODS, metric)
    if not means:
        return f"no data set has results for every method ({label})", {}
    names = sorted(means, key=str.lower)
    table = markdown(
        ["dataset", "seeds", *METHODS],
        [
            [n, ",".join(map(str, means[n]["_seeds"])), *(means[n][m] for m in METHODS)]
            for n in names
        ],
    )
    overall = {m: statistics.fmean(means[n][m] for n in names) for m in METHODS}
    ranks = average_ranks(means, METHODS)
    hindsight = statistics.fmean(max(means[n][b] for b in BASELINES) for n in names)
    wl = {}
    for b in BASELINES:
        wins = sum(means[n][ANOMTUNE] > means[n][b] for n in names)
        losses = sum(means[n][ANOMTUNE] < means[n][b] for n in names)
        wl[b] = (wins, losses, len(names) - wins - losses)
    summary_table = markdown(
        ["method", f"mean {label}", "average rank", "anomtune wins/losses/ties"],
        [
            [
                m,
                overall[m],
                f"{ranks[m]:.2f}",
                "" if m == ANOMTUNE else "{}/{}/{}".format(*wl[m]),
            ]
            for m in METHODS
        ]
        + [["hindsight best of the 5 baselines", hindsight, "", ""]],
    )
    best_single = max(BASELINES, key=lambda b: overall[b])
    figures = {
        "datasets": len(names),
        "overall": overall,
        "ranks": ranks,
        "hindsight": hindsight,
        "wins_losses": wl,
        "best_single": best_single,
    }
    text = (
        f"### Test {label} per data set (mean over seeds)\n\n{table}\n\n"
        f"### Test {label} across {len(names)} data sets\n\n{summary_table}"
    )
    return text, figures


def targets(fig: dict) -> str:
    best = fig["best_single"]
    ours = fig["overall"][ANOMTUNE]
    margin = ours - fig["overall"][best]
    checks = [
        (
            f"mean test AUC-ROC at least 0.03 above the best single baseline ({best}, "
            f"{fig['overall'][best]:.4f}): anomtune {ours:.4f}, margin {margin:+.4f}",
            margin >= 0.03,
        ),
        (
            f"mean test AUC-ROC at least the hindsight best ({fig['hindsight']:.4f}): "
            f"anomtune {ours:.4f}",
            ours >= fig["hindsight"],
        ),
    ]
    for b, (w, losses, t) in fig["wins_losses"].items():
        checks.append((f"more wins than losses against {b}: {w}/{losses}/{t}", w > losses))
    return "\n".join(f"- {'MET' if ok else 'NOT MET'}: {text}" for text, ok in checks)


def timing_table(rows: list[dict]) -> str:
    out = []
    for m in METHODS:
        mine = [r for r in rows if r["method"] == m]
        if not mine:
            continue
        secs = [float(r["seconds"]) for r in mine]
        epochs = [float(r["epochs"]) for r in mine if r.get("epochs") not in ("", None)]
        out.append(
            [
                m,
                len(mine),
                f"{statistics.median(secs):.2f}",
                f"{sum(secs):.0f}",
                f"{statistics.median(epochs):.0f}" if epochs else "-",
            ]
        )
    return markdown(
        ["method", "runs", "median seconds per run", "total seconds", "median epochs per run"],
        out,
    )


def reference_check(rows: list[dict], reference: Path) -> str:
    """Mean absolute difference of each baseline's test AUC-ROC from the reference file."""
    if not reference.exists():
        return f"(no reference file at {reference})"
    with reference.open(newline="") as fh:
        ref = {(r["dataset"], int(r["seed"]), r["method"]): r for r in csv.DictReader(fh)}
    out = []
    for m in BASELINES:
        roc, pr = [], []
        for r in rows:
            key = (r["dataset"], int(r["seed"]), m)
            if r["method"] == m and key in ref:
                roc.append(abs(float(r["auc_roc"]) - float(ref[key]["auc_roc"])))
                pr.append(abs(float(r["auc_pr"]) - float(ref[key]["auc_pr"])))
        if roc:
            out.append([m, len(roc), statistics.fmean(roc), max(roc), statistics.fmean(pr)])
        else:
            out.append([m, 0, float("nan"), float("nan"), float("nan")])
    return markdown(
        [
            "baseline",
            "matched runs",
            "mean abs diff AUC-ROC",
            "max abs diff AUC-ROC",
            "mean abs diff AUC-PR",
        ],
        out,
    )


def report(results: Results, datasets_root: Path, seeds: list[int]) -> None:
    rows = [r for r in results.valid() if int(r["seed"]) in seeds]
    errors = [r for r in results.rows if r.get("error") and int(r["seed"]) in seeds]
    if not rows:
        print("no results yet")
        return
    roc_text, fig = summarize(rows, "auc_roc", "AUC-ROC")
    pr_text, _ = summarize(rows, "auc_pr", "AUC-PR")
    print(roc_text, end="\n\n")
    print(pr_text, end="\n\n")
    if fig:
        print("### Targets (test AUC-ROC)\n")
        print(targets(fig), end="\n\n")
    print("### Wall time (seconds: tuning run for anomtune, fit for the baselines)\n")
    print(timing_table(rows), end="\n\n")
    print("### Baselines against the reference file (same data set, seed and method)\n")
    print(reference_check(rows, datasets_root.parent / REFERENCE))
    if errors:
        print("\n### Runs that failed\n")
        for r in errors:
            print(f"- {r['dataset']} seed {r['seed']} {r['method']}: {r['error']}")


# -- main -------------------------------------------------------------------------


def tune_options(args) -> list[str]:
    extra = []
    if args.workers:
        extra += ["--workers", str(args.workers)]
    if args.timeout:
        extra += ["--timeout", str(args.timeout)]
    return extra


def run_dataset(
    info: dict,
    seeds: list[int],
    args,
    results: Results,
    tmp: Path,
    base: dict,
    methods: tuple[str, ...],
    fit: Callable[..., dict] = fit_baseline,
) -> None:
    name = info["name"]
    todo = [(s, m) for s in seeds for m in methods if not results.done(name, s, m)]
    if not todo:
        log(f"{name}: all done, skipped")
        return
    X, y = load(args.datasets_root, name)
    csv_path = tmp / f"{name}.csv"
    if not csv_path.exists():
        to_frame(X, y).to_csv(csv_path, index=False)
    for seed, method in todo:
        train, _, test = protocol_split(y, seed)
        normal = train[y[train] == 0]
        row = {
            **base,
            "dataset": name,
            "seed": seed,
            "method": method,
            "rows": len(y),
            "features": X.shape[1],
            "train_rows": len(normal),
            "date": dt.datetime.now().isoformat(timespec="seconds"),
        }
        if method == ANOMTUNE:
            study = f"{name}-s{seed}-{os.getpid()}"
            row.update(trials_budget=args.trials, workers=args.workers or 1, timeout=args.timeout)
            try:
                summary, cmd, wall = run_tune(
                    csv_path,
                    seed=seed,
                    trials=args.trials,
                    workdir=tmp,
                    study=study,
                    extra=tune_options(args),
                )
                row.update(tune_row(summary), process_seconds=round(wall, 3))
                row["command"] = shown_command(cmd, tmp)
                shutil.rmtree(tmp / f"run-{study}", ignore_errors=True)
            except (RuntimeError, OSError) as exc:
                row["error"] = str(exc)[:500]
        else:
            row["command"] = method
            row["threads"] = args.baseline_threads
            try:
                row.update(fit(method, seed, X[normal], X[test], y[test]))
            except Exception as exc:  # a baseline that breaks is recorded, not fatal
                row["error"] = f"{type(exc).__name__}: {exc}"[:500]
        results.add(row)
        if row.get("error"):
            log(f"{name} seed {seed} {method}: FAILED {row['error']}")
        else:
            extra = ""
            if method == ANOMTUNE:
                extra = (
                    f", {row['trials_complete']} complete / {row['trials_pruned']} pruned / "
                    f"{row['trials_failed']} failed, {row['epochs']} epochs"
                )
            log(
                f"{name} seed {seed} {method}: AUC-ROC {row['auc_roc']:.4f} "
                f"AUC-PR {row['auc_pr']:.4f} in {row['seconds']:.1f}s{extra}"
            )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("datasets_root", type=Path, help="the shared datasets folder")
    parser.add_argument("--datasets", help="comma-separated names (default: all small enough)")
    parser.add_argument("--max-rows", type=int, default=12_000, help="default: 12000")
    parser.add_argument("--seeds", default="0,1,2", help="default: 0,1,2")
    parser.add_argument("--trials", type=int, default=30, help="trials per tuning run")
    parser.add_argument("--workers", type=int, help="passed to anomtune tune")
    parser.add_argument("--timeout", type=float, help="passed to anomtune tune (seconds)")
    parser.add_argument(
        "--methods", default=",".join(METHODS), help=f"subset of {','.join(METHODS)}"
    )
    parser.add_argument(
        "--baseline-threads",
        type=int,
        default=1,
        help="torch threads for the PyOD networks fitted in this process (default 1)",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="results CSV")
    parser.add_argument("--report-only", action="store_true", help="print tables from --out")
    args = parser.parse_args(argv)

    results = Results(args.out, COLUMNS, ("dataset", "seed", "method"))
    if not args.report_only:
        import torch

        torch.set_num_threads(args.baseline_threads)
        methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
        unknown = set(methods) - set(METHODS)
        if unknown:
            raise SystemExit(f"unknown method(s): {', '.join(sorted(unknown))}")
        seeds = parse_ints(args.seeds)
        chosen = select_datasets(args.datasets_root, args.datasets, args.max_rows)
        base = {**versions(), "bench_command": shlex.join(["python", *sys.argv])}
        log(
            f"{len(chosen)} data set(s), seeds {seeds}, {args.trials} trials, "
            f"workers {args.workers or 1}, timeout {args.timeout}; results in {args.out}"
        )
        with tempfile.TemporaryDirectory(prefix="anomtune-quality-") as tmpdir:
            tmp = Path(tmpdir)
            # Seeds outermost: a run cut short still has whole seeds across data sets.
            for seed in seeds:
                for info in chosen:
                    run_dataset(info, [seed], args, results, tmp, base, methods)
    report(results, args.datasets_root, parse_ints(args.seeds))


if __name__ == "__main__":
    main()
