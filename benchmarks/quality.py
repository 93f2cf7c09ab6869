"""Detection quality: tuned anomtune against a validation-selected zoo and five baselines.

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
seed and ``verbose=0`` for the two networks.

The zoo is what a user with labels could do instead of tuning: 47 settings of
classical detectors (PyOD KNN, LOF, ECOD, COPOD, HBOS, PCA, OCSVM and
scikit-learn's IsolationForest; see ``_zoo_specs``), each fitted on the normal
TRAIN rows (raw, or standardised on those rows), and the one with the best VAL
AUC-ROC is scored on TEST (a tie goes to the earlier member). ``zoo_hindsight``
is the member with the best TEST figure: a bound, not a method. Every member's
VAL and TEST figures go to ``results/zoo_members.csv``.

The networks are fitted in this
process with one torch thread by default (``--baseline-threads``): with more
threads than free cores, PyOD's small batches spend most of their time
waiting on each other.

    python benchmarks/quality.py ../shared/datasets
    python benchmarks/quality.py ../shared/datasets --seeds 0 --workers 2 --timeout 240
    python benchmarks/quality.py ../shared/datasets --datasets cardio,thyroid --trials 10
    python benchmarks/quality.py ../shared/datasets --report-only --seeds 0
    python benchmarks/quality.py ../shared/datasets --methods zoo   # the zoo alone

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
import warnings
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
ZOO = "zoo"
ZOO_HINDSIGHT = "zoo_hindsight"
BASELINES = ("iforest", "pyod_ae", "pyod_vae", "ecod", "knn")
# Methods in the tables; zoo_hindsight (the zoo member best on TEST) is a bound,
# not a method a user could run, so it is left out of the ranks.
METHODS = (ANOMTUNE, ZOO, ZOO_HINDSIGHT, *BASELINES)
RANKED = (ANOMTUNE, ZOO, *BASELINES)
RUNNABLE = (ANOMTUNE, ZOO, *BASELINES)
DEFAULT_MEMBERS = HERE / "results" / "zoo_members.csv"
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
    "member",
    "val_auc_roc",
    *VERSIONED,
    "date",
    "command",
    "bench_command",
]
# One row per data set, seed and zoo member (results/zoo_members.csv).
MEMBER_COLUMNS = [
    "dataset",
    "seed",
    "member",
    "val_auc_roc",
    "auc_roc",
    "auc_pr",
    "seconds",
    "train_rows",
    "error",
    *VERSIONED,
    "date",
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


def protocol_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments every benchmark of the protocol's small sets takes."""
    parser.add_argument("datasets_root", type=Path, help="the shared datasets folder")
    parser.add_argument("--datasets", help="comma-separated names (default: all small enough)")
    parser.add_argument("--max-rows", type=int, default=12_000, help="default: 12000")
    parser.add_argument("--seeds", default="0,1,2", help="default: 0,1,2")


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
        self.add_many([row])

    def add_many(self, rows: list[dict]) -> None:
        new = [{c: _text(row.get(c)) for c in self.columns} for row in rows]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_name(f".{self.path.name}.lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            merged = {self._key(r): r for r in self._read()}
            for r in self.rows:
                merged.setdefault(self._key(r), r)
            for r in new:
                merged[self._key(r)] = r
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
) -> tuple[dict, list[str], float, float]:
    """Run ``anomtune tune ... --json``: its summary, argv, wall seconds and peak MB."""
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
    stdout, stderr, code, wall, peak_mb = run_measured(cmd)
    if code != 0:
        tail = (stderr or stdout).strip().splitlines()[-5:]
        raise RuntimeError(f"exit code {code}: " + " | ".join(tail))
    try:
        summary = json.loads(stdout)
    except json.JSONDecodeError as exc:
        raise RuntimeError(f"output is not JSON: {stdout[:200]!r}") from exc
    if not summary.get("best"):
        raise RuntimeError("no trial completed")
    return summary, cmd, wall, peak_mb


def run_measured(cmd: list[str]) -> tuple[str, str, int, float, float]:
    """Run ``cmd``: its stdout, stderr, exit code, wall seconds and peak resident MB.

    The peak is the child's own (``wait4``), not the largest of every child so far.
    """
    start = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    return stdout, stderr, proc.returncode, wall, usage.ru_maxrss / 1024.0


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


# -- the validation-selected zoo --------------------------------------------------
#
# What a user with labels would do instead of tuning an autoencoder: fit a fixed
# set of classical detectors on the normal TRAIN rows and keep the one with the
# best VAL AUC-ROC. The order of ZOO is the tie-break order.


def _zoo_specs() -> list[tuple[str, str, Callable[[int, int, int], object]]]:
    """``(name, scaling, factory(seed, n_rows, n_features))`` of every zoo member, in order.

    A factory returns the detector, or None when it cannot be fitted on that
    many rows or features (k at least the number of rows, more components than
    rows or features).
    """
    from pyod.models.copod import COPOD
    from pyod.models.ecod import ECOD
    from pyod.models.hbos import HBOS
    from pyod.models.knn import KNN
    from pyod.models.lof import LOF
    from pyod.models.ocsvm import OCSVM
    from pyod.models.pca import PCA

    specs: list = []
    for k in (1, 3, 5, 10, 20, 50):
        for how in ("largest", "mean"):
            for scaling in ("raw", "std"):
                specs.append(
                    (
                        f"knn_k{k}_{how}_{scaling}",
                        scaling,
                        lambda seed, n, d, k=k, how=how: (
                            KNN(n_neighbors=k, method=how) if k < n else None
                        ),
                    )
                )
    for k in (5, 10, 20, 50):
        for scaling in ("raw", "std"):
            specs.append(
                (
                    f"lof_k{k}_{scaling}",
                    scaling,
                    lambda seed, n, d, k=k: LOF(n_neighbors=k) if k < n else None,
                )
            )
    for samples in (64, 256, 1024):
        for features in (0.5, 1.0):
            specs.append(
                (
                    f"iforest_s{samples}_f{features}",
                    "raw",
                    lambda seed, n, d, s=samples, f=features: _IForest(
                        n_estimators=200, max_samples=s, max_features=f, random_state=seed
                    ),
                )
            )
    specs.append(("ecod", "raw", lambda seed, n, d: ECOD()))
    specs.append(("copod", "raw", lambda seed, n, d: COPOD()))
    for bins in (10, 20, 50):
        specs.append((f"hbos_b{bins}", "raw", lambda seed, n, d, b=bins: HBOS(n_bins=b)))
    for share in (0.5, 0.9):

        def pca(seed, n, d, share=share):
            c = max(1, round(share * d))
            return PCA(n_components=c) if c <= min(n, d) else None

        specs.append((f"pca_{int(share * 100)}_std", "std", pca))
    for nu in (0.1, 0.5):
        specs.append((f"ocsvm_nu{nu}_std", "std", lambda seed, n, d, nu=nu: OCSVM(nu=nu)))
    return specs


class _IForest:
    """scikit-learn's IsolationForest with PyOD's ``decision_function`` (higher = worse)."""

    def __init__(self, **params):
        from sklearn.ensemble import IsolationForest

        self.model = IsolationForest(**params)

    def fit(self, X):
        self.model.fit(X)
        return self

    def decision_function(self, X):
        return -self.model.score_samples(X)


def fit_zoo(seed: int, X_train, X_val, y_val, X_test, y_test) -> tuple[list[dict], float]:
    """Fit every zoo member on ``X_train``; one dict per member and the total seconds.

    Each dict has the member's name, VAL AUC-ROC, TEST AUC-ROC and AUC-PR,
    seconds (fit and scoring) and an error text for a member that failed.
    """
    from sklearn.preprocessing import StandardScaler

    start = time.perf_counter()
    scaler = StandardScaler().fit(X_train)
    data = {
        "raw": (X_train, X_val, X_test),
        "std": tuple(scaler.transform(a) for a in (X_train, X_val, X_test)),
    }
    out = []
    n, d = X_train.shape
    warnings.simplefilter("ignore")  # IsolationForest on fewer rows than max_samples, etc.
    for name, scaling, factory in _zoo_specs():
        tr, va, te = data[scaling]
        row = {"member": name}
        t0 = time.perf_counter()
        try:
            model = factory(seed, n, d)
            if model is None:
                row["error"] = "cannot fit on this many rows or features"
            else:
                model.fit(tr)
                val_scores = np.asarray(model.decision_function(va), dtype=float)
                test_scores = np.asarray(model.decision_function(te), dtype=float)
                if not (np.isfinite(val_scores).all() and np.isfinite(test_scores).all()):
                    raise RuntimeError("non-finite scores")
                row.update(
                    val_auc_roc=roc_auc_score(y_val, val_scores),
                    auc_roc=roc_auc_score(y_test, test_scores),
                    auc_pr=average_precision_score(y_test, test_scores),
                )
        except Exception as exc:  # a member that breaks drops out
            row["error"] = f"{type(exc).__name__}: {exc}"[:300]
        row["seconds"] = round(time.perf_counter() - t0, 4)
        out.append(row)
    return out, time.perf_counter() - start


def zoo_choice(members: list[dict]) -> tuple[dict, dict, dict]:
    """The VAL-selected member (first of the best on a tie) and the hindsight bests
    by test AUC-ROC and by test AUC-PR."""
    fitted = [m for m in members if not m.get("error")]
    if not fitted:
        raise RuntimeError("no zoo member could be fitted")
    chosen = fitted[0]
    for m in fitted[1:]:
        if m["val_auc_roc"] > chosen["val_auc_roc"]:
            chosen = m
    best_roc = max(fitted, key=lambda m: m["auc_roc"])
    best_pr = max(fitted, key=lambda m: m["auc_pr"])
    return chosen, best_roc, best_pr


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


def wins_losses(means: dict, names: list[str], a: str, b: str) -> tuple[int, int, int]:
    wins = sum(means[n][a] > means[n][b] for n in names)
    losses = sum(means[n][a] < means[n][b] for n in names)
    return wins, losses, len(names) - wins - losses


def summarize(rows: list[dict], metric: str, label: str) -> tuple[str, dict]:
    """Markdown tables for one metric and the figures the targets are judged on.

    Only the methods with results are shown; a data set counts when every
    shown method has it.
    """
    present = {r["method"] for r in rows}
    methods = tuple(m for m in METHODS if m in present)
    ranked = tuple(m for m in RANKED if m in methods)
    means = per_dataset_means(rows, methods, metric)
    if not means:
        return f"no data set has results for every method ({label})", {}
    names = sorted(means, key=str.lower)
    table = markdown(
        ["dataset", "seeds", *methods],
        [
            [n, ",".join(map(str, means[n]["_seeds"])), *(means[n][m] for m in methods)]
            for n in names
        ],
    )
    overall = {m: statistics.fmean(means[n][m] for n in names) for m in methods}
    ranks = average_ranks(means, ranked)
    baselines = [b for b in BASELINES if b in methods]
    hindsight = (
        statistics.fmean(max(means[n][b] for b in baselines) for n in names)
        if baselines
        else float("nan")
    )
    heads = [m for m in (ANOMTUNE, ZOO) if m in methods]
    wl = {h: {m: wins_losses(means, names, h, m) for m in methods if m != h} for h in heads}
    summary_table = markdown(
        ["method", f"mean {label}", "average rank"] + [f"{h} wins/losses/ties" for h in heads],
        [
            [m, overall[m], f"{ranks[m]:.2f}" if m in ranks else ""]
            + ["" if m == h else "{}/{}/{}".format(*wl[h][m]) for h in heads]
            for m in methods
        ]
        + [
            [f"hindsight best of the {len(baselines)} baselines", hindsight, ""] + [""] * len(heads)
            for _ in baselines[:1]
        ],
    )
    best_single = max(baselines, key=lambda b: overall[b]) if baselines else None
    figures = {
        "datasets": len(names),
        "methods": methods,
        "overall": overall,
        "ranks": ranks,
        "hindsight": hindsight,
        "wins_losses": wl,
        "best_single": best_single,
    }
    text = (
        f"### Test {label} per data set (mean over seeds)\n\n{table}\n\n"
        f"### Test {label} across {len(names)} data sets (rank among {len(ranked)} methods; "
        f"{ZOO_HINDSIGHT} is not ranked)\n\n{summary_table}"
    )
    return text, figures


def targets(fig: dict) -> str:
    if ANOMTUNE not in fig["methods"]:
        return "(no anomtune rows)"
    ours = fig["overall"][ANOMTUNE]
    checks = []
    best = fig["best_single"]
    if best is not None:
        margin = ours - fig["overall"][best]
        checks += [
            (
                f"mean test AUC-ROC at least 0.03 above the best single baseline ({best}, "
                f"{fig['overall'][best]:.4f}): anomtune {ours:.4f}, margin {margin:+.4f}",
                margin >= 0.03,
            ),
            (
                f"mean test AUC-ROC at least the hindsight best of the baselines "
                f"({fig['hindsight']:.4f}): anomtune {ours:.4f}",
                ours >= fig["hindsight"],
            ),
        ]
    if ZOO in fig["methods"]:
        zoo = fig["overall"][ZOO]
        w, losses, t = fig["wins_losses"][ANOMTUNE][ZOO]
        checks += [
            (
                f"mean test AUC-ROC at least the zoo's + 0.01 ({zoo:.4f} + 0.01): "
                f"anomtune {ours:.4f}, margin {ours - zoo:+.4f}",
                ours >= zoo + 0.01,
            ),
            (f"more wins than losses against the zoo: {w}/{losses}/{t}", w > losses),
        ]
    for b in BASELINES:
        if b in fig["wins_losses"][ANOMTUNE]:
            w, losses, t = fig["wins_losses"][ANOMTUNE][b]
            checks.append((f"more wins than losses against {b}: {w}/{losses}/{t}", w > losses))
    return "\n".join(f"- {'MET' if ok else 'NOT MET'}: {text}" for text, ok in checks)


def timing_table(rows: list[dict]) -> str:
    out = []
    for m in RUNNABLE:
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
    if any(r["method"] == ZOO for r in rows):
        print("### Zoo members chosen on VAL\n")
        print(member_table(rows), end="\n\n")
    print(
        "### Wall time (seconds: tuning run for anomtune, fitting and scoring all members "
        "for the zoo, fit for the baselines)\n"
    )
    print(timing_table(rows), end="\n\n")
    print("### Baselines against the reference file (same data set, seed and method)\n")
    print(reference_check(rows, datasets_root.parent / REFERENCE))
    if errors:
        print("\n### Runs that failed\n")
        for r in errors:
            print(f"- {r['dataset']} seed {r['seed']} {r['method']}: {r['error']}")


def run_zoo(row: dict, seed: int, X, y, normal, val, test, results, members) -> None:
    """Fit the zoo; add its member rows, the ``zoo`` row and the ``zoo_hindsight`` row."""
    row = {**row, "command": "zoo of classical detectors, selected on VAL AUC-ROC"}
    try:
        fitted, seconds = fit_zoo(seed, X[normal], X[val], y[val], X[test], y[test])
        chosen, best_roc, best_pr = zoo_choice(fitted)
    except Exception as exc:
        row["error"] = f"{type(exc).__name__}: {exc}"[:500]
        results.add(row)
        log(f"{row['dataset']} seed {seed} zoo: FAILED {row['error']}")
        return
    if members is not None:
        keep = {k: row[k] for k in ("dataset", "seed", "train_rows", "date", *VERSIONED)}
        members.add_many([{**keep, **m} for m in fitted])
    seconds = round(seconds, 4)
    results.add_many(
        [
            {
                **row,
                "auc_roc": chosen["auc_roc"],
                "auc_pr": chosen["auc_pr"],
                "seconds": seconds,
                "member": chosen["member"],
                "val_auc_roc": chosen["val_auc_roc"],
            },
            {
                **row,
                "method": ZOO_HINDSIGHT,
                "command": "zoo member with the best TEST AUC-ROC (AUC-PR: best TEST AUC-PR)",
                "auc_roc": best_roc["auc_roc"],
                "auc_pr": best_pr["auc_pr"],
                "seconds": seconds,
                "member": best_roc["member"],
                "val_auc_roc": best_roc["val_auc_roc"],
            },
        ]
    )
    dropped = sum(bool(m.get("error")) for m in fitted)
    log(
        f"{row['dataset']} seed {seed} zoo: {chosen['member']} (VAL {chosen['val_auc_roc']:.4f}) "
        f"AUC-ROC {chosen['auc_roc']:.4f}, hindsight {best_roc['auc_roc']:.4f} "
        f"({best_roc['member']}), {len(fitted) - dropped} members fitted in {seconds:.1f}s"
    )


def member_table(rows: list[dict]) -> str:
    """How often each zoo member was chosen on VAL, and its test AUC-ROC then."""
    chosen: dict[str, list[float]] = {}
    for r in rows:
        if r["method"] == ZOO and r.get("member"):
            chosen.setdefault(r["member"], []).append(float(r["auc_roc"]))
    order = sorted(chosen, key=lambda m: (-len(chosen[m]), m))
    return markdown(
        ["member", "times chosen", "mean test AUC-ROC when chosen"],
        [[m, len(chosen[m]), statistics.fmean(chosen[m])] for m in order],
    )


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
    members: Results | None = None,
    fit: Callable[..., dict] = fit_baseline,
) -> None:
    name = info["name"]
    todo = [(s, m) for s in seeds for m in methods if not results.done(name, s, m)]
    if not todo:
        log(f"{name}: all done, skipped")
        return
    X, y = load(args.datasets_root, name)
    csv_path = tmp / f"{name}.csv"
    if not csv_path.exists() and any(m == ANOMTUNE for _, m in todo):
        to_frame(X, y).to_csv(csv_path, index=False)
    for seed, method in todo:
        train, val, test = protocol_split(y, seed)
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
                summary, cmd, wall, _ = run_tune(
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
        elif method == ZOO:
            run_zoo(row, seed, X, y, normal, val, test, results, members)
            continue
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
    protocol_arguments(parser)
    parser.add_argument("--trials", type=int, default=30, help="trials per tuning run")
    parser.add_argument("--workers", type=int, help="passed to anomtune tune")
    parser.add_argument("--timeout", type=float, help="passed to anomtune tune (seconds)")
    parser.add_argument(
        "--methods", default=",".join(RUNNABLE), help=f"subset of {','.join(RUNNABLE)}"
    )
    parser.add_argument(
        "--baseline-threads",
        type=int,
        default=1,
        help="torch threads for the PyOD networks fitted in this process (default 1)",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="results CSV")
    parser.add_argument(
        "--members",
        type=Path,
        default=DEFAULT_MEMBERS,
        help="CSV of every zoo member's VAL and TEST figures",
    )
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="print tables from --out (reuses every row there, e.g. the anomtune runs)",
    )
    args = parser.parse_args(argv)

    results = Results(args.out, COLUMNS, ("dataset", "seed", "method"))
    members = Results(args.members, MEMBER_COLUMNS, ("dataset", "seed", "member"))
    if not args.report_only:
        import torch

        torch.set_num_threads(args.baseline_threads)
        methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
        unknown = set(methods) - set(RUNNABLE)
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
                    run_dataset(info, [seed], args, results, tmp, base, methods, members)
    report(results, args.datasets_root, parse_ints(args.seeds))


if __name__ == "__main__":
    main()
