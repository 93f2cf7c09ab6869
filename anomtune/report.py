"""One self-contained HTML page about a tuning run.

The page shows how the search went (every trial's value, the best so far,
pruned trials, the validation value after every epoch), which parameters
mattered (Optuna's fANOVA importances and a slice view of the top ones), how
the best model does on the validation and test rows (ROC and precision-recall
curves, the score histogram with the threshold, the confusion matrix), the
rows it finds most anomalous with the columns that make them so, and what the
run depended on.

Plots are drawn with matplotlib and embedded as inline SVG, so the page needs
no network and no JavaScript. The best model's scores are recomputed from the
run's data file (checked against the recorded fingerprint) with the saved
model and the recorded seeded split, so they are the scores the summary's
metrics came from.
"""

from __future__ import annotations

import html
import io
import logging
import math
import re
import shlex
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from anomtune.errors import ConfigError, DataError

__all__ = [
    "BROWSER_FLAGS",
    "build_report",
    "find_browser",
    "run_browser",
    "screenshot",
    "write_report",
]

logger = logging.getLogger(__name__)

TOP_ROWS = 10
TOP_FEATURES = 3
TOP_PARAMS = 4
# fANOVA fits a random forest on the completed trials; below this many its
# importances say nothing.
MIN_TRIALS_FOR_IMPORTANCE = 4
# Recomputed metrics may differ from the recorded ones by rounding only.
METRIC_TOLERANCE = 1e-6
# Flags for a headless browser that touches no network and no profile.
BROWSER_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
)

_NORMAL = "#4C72B0"
_ANOMALY = "#C44E52"
_PRUNED = "#999999"
_BEST = "#DD8452"


# -- the run -------------------------------------------------------------------


@dataclass
class _Trial:
    number: int
    state: str
    value: float | None
    params: dict
    intermediate: dict[int, float] = field(default_factory=dict)


@dataclass
class _Part:
    """The best model's scores on one part of the split."""

    name: str
    rows: np.ndarray
    labels: np.ndarray | None
    scores: np.ndarray
    shares: np.ndarray  # each table column's share of the squared error


@dataclass
class _Run:
    folder: Path
    summary: dict
    trials: list[_Trial]
    study_note: str | None
    study: object | None  # an in-memory optuna study holding the run's trials
    parts: list[_Part]
    columns: list[str]
    features: object | None  # the table's feature frame
    ids: object | None
    threshold: float | None


def _trials_from_csv(run) -> list[_Trial]:
    return [_Trial(t.number, t.state, t.value, dict(t.params)) for t in run.trials()]


def _load_study(summary: dict, storage: str | None, numbers: set[int]):
    """An in-memory copy of the run's trials from the study's storage, or a note why not."""
    import optuna

    from anomtune.tuning import open_existing_storage

    info = summary["study"]
    where = storage or info.get("storage")
    if not where:
        return None, "the summary names no study storage"
    if "://" not in where and not Path(where).is_file():
        return None, f"the study storage {where} is not there (give --storage)"
    try:
        source, _ = open_existing_storage(where)
        stored = optuna.load_study(study_name=info["name"], storage=source)
    except ConfigError as exc:
        return None, f"{exc} (give --storage)"
    except KeyError:
        return None, f"no study {info['name']!r} in {where}"
    except Exception as exc:  # storages raise many kinds for a bad URL or file
        return None, f"cannot open the study storage {where}: {str(exc).splitlines()[0]}"
    trials = [t for t in stored.get_trials(deepcopy=False) if not numbers or t.number in numbers]
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        copy = optuna.create_study(directions=stored.directions)
    finally:
        optuna.logging.set_verbosity(verbosity)
    copy.add_trials(trials)
    return copy, None


def _trials_from_study(study) -> list[_Trial]:
    out = []
    for t in study.get_trials(deepcopy=False):
        out.append(
            _Trial(
                t.number,
                t.state.name.lower(),
                t.values[0] if t.values else None,
                dict(t.params),
                {int(k): float(v) for k, v in t.intermediate_values.items()},
            )
        )
    return out


def _score_parts(run, table) -> tuple[list[_Part], list[str], float]:
    model = run.model()
    split = run.split(table)
    columns = list(table.schema.feature_names)
    out = []
    for name, rows in (("val", split.val), ("test", split.test)):
        frame = table.features.iloc[rows]
        scores = model.anomaly_score(frame)
        per_column = model.column_errors(frame).astype(np.float64)
        total = per_column.sum(axis=1, keepdims=True)
        shares = np.divide(per_column, total, out=np.zeros_like(per_column), where=total > 0)
        labels = table.labels[rows] if table.labels is not None else None
        out.append(_Part(name, np.asarray(rows), labels, scores, shares))
    return out, columns, model.threshold


def _load_run(folder: Path, *, data: str | None, storage: str | None) -> _Run:
    from anomtune.run import RunFolder

    run = RunFolder.open(folder)
    summary = run.summary.to_dict()
    csv_trials = _trials_from_csv(run)
    numbers = {t.number for t in csv_trials}
    study, note = _load_study(summary, storage, numbers)
    trials = _trials_from_study(study) if study is not None else csv_trials
    parts, columns, features, ids, threshold = [], [], None, None, None
    if run.summary.best:
        if not (folder / "model").is_dir():
            raise DataError(f"{folder}: the run has a best trial but no model/ folder")
        table = run.table(data)
        parts, columns, threshold = _score_parts(run, table)
        features, ids = table.features, table.ids
    return _Run(folder, summary, trials, note, study, parts, columns, features, ids, threshold)


# -- plots ---------------------------------------------------------------------


def _figure(width: float, height: float, ncols: int = 1, nrows: int = 1):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


def _svg(fig) -> str:
    """The figure as an inline ``<svg>`` element: text as paths, no date, stable ids."""
    import matplotlib

    buf = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "path", "svg.hashsalt": "anomtune-report"}):
        fig.savefig(buf, format="svg", metadata={"Date": None})
    text = buf.getvalue()
    return text[text.index("<svg") :]


def _direction(summary: dict) -> str:
    directions = summary["study"].get("directions") or ["maximize"]
    return directions[0]


def _objective_label(summary: dict) -> str:
    objectives = summary["study"].get("objectives") or ["value"]
    return str(objectives[0])


def _plot_history(run: _Run) -> str:
    summary = run.summary
    maximize = _direction(summary) == "maximize"
    fig, axes = _figure(9, 3.6)
    ax = axes[0, 0]
    done = [t for t in run.trials if t.state == "complete" and t.value is not None]
    pruned = [t for t in run.trials if t.state == "pruned"]
    if done:
        ax.scatter(
            [t.number for t in done], [t.value for t in done], s=22, color=_NORMAL, label="complete"
        )
        best, xs, ys = None, [], []
        for t in sorted(done, key=lambda t: t.number):
            if best is None or (t.value > best if maximize else t.value < best):
                best = t.value
            xs.append(t.number)
            ys.append(best)
        ax.step(xs, ys, where="post", color=_BEST, linewidth=1.5, label="best so far")
    shown = [t for t in pruned if t.intermediate]
    if shown:
        ax.scatter(
            [t.number for t in shown],
            [t.intermediate[max(t.intermediate)] for t in shown],
            marker="x",
            s=28,
            color=_PRUNED,
            label="pruned (value at its last epoch)",
        )
    failed = [t.number for t in run.trials if t.state == "fail"]
    for number in failed:
        ax.axvline(number, color=_ANOMALY, alpha=0.25, linewidth=1)
    if failed:
        ax.plot([], [], color=_ANOMALY, alpha=0.4, label="failed")
    ax.set_xlabel("trial")
    ax.set_ylabel(f"validation {_objective_label(summary)}")
    ax.set_title("Optimisation history")
    ax.grid(alpha=0.3)
    if done or shown or failed:
        ax.legend(loc="best", fontsize=8)
    return _svg(fig)


def _anytime(run: _Run) -> dict | None:
    """The run's anytime record: from summary.json, else from the study's trials."""
    if run.summary.get("anytime"):
        return run.summary["anytime"]
    if run.study is not None:
        from anomtune.tuning.anytime import anytime

        return anytime(
            run.study.get_trials(deepcopy=False), maximize=_direction(run.summary) == "maximize"
        )
    return None


def _plot_anytime(record: dict, summary: dict) -> str | None:
    """The best validation value so far, against finished trials and against seconds."""
    # (finished trials so far, point) from the first point with a best value
    counted = [(i + 1, p) for i, p in enumerate(record["points"]) if p["best"] is not None]
    if not counted:
        return None
    points = [p for _, p in counted]
    fig, axes = _figure(9, 3.2, ncols=2)
    best = [p["best"] for p in points]
    label = f"best validation {_objective_label(summary)}"
    left, right = axes[0, 0], axes[0, 1]
    left.step([n for n, _ in counted], best, where="post", color=_BEST, linewidth=1.5)
    left.set_xlabel("finished trials")
    cut = record["last_third"]["last_third_from"]
    if record["last_third"]["improved"] is not None:
        left.axvspan(cut - 0.5, len(record["points"]) + 0.5, color=_NORMAL, alpha=0.08)
        left.text(
            cut,
            0.03,
            " last third",
            fontsize=8,
            color=_NORMAL,
            transform=left.get_xaxis_transform(),
        )
    timed = [p for p in points if p["seconds"] is not None]
    if timed:
        right.step([p["seconds"] for p in timed], [p["best"] for p in timed], where="post",
                   color=_BEST, linewidth=1.5)  # fmt: skip
    right.set_xlabel("seconds since the first trial started")
    for ax in (left, right):
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    left.set_title("Best so far, by trials")
    right.set_title("Best so far, by time")
    return _svg(fig)


def _plot_intermediate(run: _Run) -> str | None:
    with_values = [t for t in run.trials if t.intermediate]
    if not with_values:
        return None
    fig, axes = _figure(9, 3.6)
    ax = axes[0, 0]
    for t in with_values:
        steps = sorted(t.intermediate)
        values = [t.intermediate[s] for s in steps]
        if t.state == "pruned":
            ax.plot(steps, values, color=_PRUNED, linewidth=0.8, alpha=0.8)
            ax.scatter([steps[-1]], [values[-1]], marker="x", s=18, color=_PRUNED)
        else:
            ax.plot(steps, values, color=_NORMAL, linewidth=1.0, alpha=0.9)
    ax.plot([], [], color=_NORMAL, label="complete")
    ax.plot([], [], color=_PRUNED, marker="x", label="pruned (x: where it stopped)")
    ax.set_xlabel("fold" if run.summary.get("cv") else "epoch")
    ax.set_ylabel(f"validation {_objective_label(run.summary)}")
    ax.set_title("Intermediate values reported to the pruner")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    return _svg(fig)


def _importances(run: _Run) -> tuple[dict[str, float] | None, str | None]:
    import optuna
    from optuna.importance import FanovaImportanceEvaluator

    if run.study is None:
        return None, f"Importances need the study: {run.study_note}."
    complete = [t for t in run.trials if t.state == "complete"]
    if len(complete) < MIN_TRIALS_FOR_IMPORTANCE:
        return None, (
            f"fANOVA importances need at least {MIN_TRIALS_FOR_IMPORTANCE} complete trials; "
            f"this run has {len(complete)}."
        )
    try:
        importances = optuna.importance.get_param_importances(
            run.study,
            evaluator=FanovaImportanceEvaluator(seed=int(run.summary.get("seed") or 0)),
            target=lambda t: t.values[0],
        )
    except (RuntimeError, ValueError) as exc:
        return None, f"fANOVA importances could not be computed: {exc}"
    if not importances:
        return None, "No parameter was searched in every complete trial."
    return dict(importances), None


def _plot_importances(importances: dict[str, float]) -> str:
    names = list(importances)[::-1]
    fig, axes = _figure(7, 0.35 * len(names) + 1.2)
    ax = axes[0, 0]
    ax.barh(names, [importances[n] for n in names], color=_NORMAL)
    for i, name in enumerate(names):
        ax.text(importances[name], i, f" {importances[name]:.2f}", va="center", fontsize=8)
    ax.set_xlabel("share of the variance of the objective (fANOVA)")
    ax.set_title("Hyperparameter importances")
    ax.set_xlim(0, max(importances.values()) * 1.15 or 1)
    return _svg(fig)


def _plot_slices(run: _Run, names: list[str]) -> str | None:
    done = [t for t in run.trials if t.state == "complete" and t.value is not None]
    names = [n for n in names if any(n in t.params for t in done)][:TOP_PARAMS]
    if not names or not done:
        return None
    distributions = {}
    if run.study is not None:
        for t in run.study.get_trials(deepcopy=False):
            distributions.update(t.distributions)
    best_number = (run.summary.get("best") or {}).get("number")
    fig, axes = _figure(3.2 * len(names), 3.2, ncols=len(names))
    for ax, name in zip(axes[0], names, strict=True):
        have = [t for t in done if name in t.params]
        values = [t.params[name] for t in have]
        dist = distributions.get(name)
        categorical = dist is not None and hasattr(dist, "choices")
        if dist is None:
            categorical = not all(_is_number(v) for v in values)
        if categorical:
            choices = list(dist.choices) if dist is not None else sorted({str(v) for v in values})
            keys = [str(c) for c in choices]
            xs = [keys.index(str(v)) for v in values]
            ax.set_xticks(range(len(keys)), keys, rotation=30, ha="right", fontsize=7)
        else:
            xs = [float(v) for v in values]
            if getattr(dist, "log", False):
                ax.set_xscale("log")
        ys = [t.value for t in have]
        points = ax.scatter(xs, ys, c=[t.number for t in have], cmap="viridis", s=22)
        best = [(x, y) for x, y, t in zip(xs, ys, have, strict=True) if t.number == best_number]
        if best:
            ax.scatter(*zip(*best, strict=True), marker="*", s=160, color=_BEST, zorder=3)
        ax.set_xlabel(name)
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel(f"validation {_objective_label(run.summary)}")
    fig.colorbar(points, ax=axes[0, -1], label="trial")
    fig.suptitle("Slice view of the top parameters (star: best trial)")
    return _svg(fig)


def _is_number(value) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, (int, float)):
        return True
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


def _plot_part(part: _Part, threshold: float, auc_roc: float, auc_pr: float) -> str:
    from sklearn.metrics import precision_recall_curve, roc_curve

    labels, scores = part.labels, part.scores
    fig, axes = _figure(12, 3.3, ncols=4)
    roc, pr, hist, matrix = axes[0]
    fpr, tpr, _ = roc_curve(labels, scores)
    roc.plot(fpr, tpr, color=_NORMAL, label=f"AUC-ROC {auc_roc:.4f}")
    roc.plot([0, 1], [0, 1], color=_PRUNED, linestyle="--", linewidth=0.8)
    flagged = scores > threshold
    at_fpr = float(np.mean(flagged[labels == 0]))
    at_tpr = float(np.mean(flagged[labels == 1]))
    roc.scatter([at_fpr], [at_tpr], color=_BEST, zorder=3, label="at the threshold")
    roc.set_xlabel("false positive rate")
    roc.set_ylabel("true positive rate")
    roc.set_title("ROC")
    roc.legend(loc="lower right", fontsize=8)

    precision, recall, _ = precision_recall_curve(labels, scores)
    pr.step(recall, precision, where="post", color=_NORMAL, label=f"AUC-PR {auc_pr:.4f}")
    pr.axhline(float(np.mean(labels)), color=_PRUNED, linestyle="--", linewidth=0.8)
    tp = int(np.sum(flagged & (labels == 1)))
    if flagged.any():
        pr.scatter([at_tpr], [tp / int(flagged.sum())], color=_BEST, zorder=3, label="threshold")
    pr.set_xlabel("recall")
    pr.set_ylabel("precision")
    pr.set_title("Precision-recall")
    pr.legend(loc="lower left", fontsize=8)

    _histogram(hist, scores, labels, threshold)

    cm = _confusion(labels, scores, threshold)
    matrix.imshow(cm, cmap="Blues")
    for (i, j), count in np.ndenumerate(cm):
        color = "white" if count > cm.max() / 2 else "black"
        matrix.text(j, i, str(count), ha="center", va="center", color=color, fontsize=12)
    matrix.set_xticks([0, 1], ["normal", "anomaly"])
    matrix.set_yticks([0, 1], ["normal", "anomaly"])
    matrix.set_xlabel("predicted")
    matrix.set_ylabel("actual")
    matrix.set_title("Confusion matrix")
    return _svg(fig)


def _histogram(ax, scores, labels, threshold: float) -> None:
    positive = scores[scores > 0]
    logscale = positive.size == scores.size and scores.max() / max(scores.min(), 1e-300) > 100
    if logscale:
        bins = np.geomspace(scores.min(), scores.max(), 40)
        ax.set_xscale("log")
    else:
        bins = np.linspace(scores.min(), scores.max(), 40)
    if labels is None:
        ax.hist(scores, bins=bins, color=_NORMAL, alpha=0.7, label="rows")
    else:
        ax.hist(scores[labels == 0], bins=bins, color=_NORMAL, alpha=0.6, label="normal")
        ax.hist(scores[labels == 1], bins=bins, color=_ANOMALY, alpha=0.6, label="anomaly")
    ax.axvline(threshold, color="black", linestyle="--", linewidth=1, label="threshold")
    ax.set_xlabel("anomaly score")
    ax.set_ylabel("rows")
    ax.set_title("Score histogram")
    ax.legend(loc="upper right", fontsize=8)


def _plot_unlabeled_part(part: _Part, threshold: float) -> str:
    fig, axes = _figure(6, 3.3)
    _histogram(axes[0, 0], part.scores, None, threshold)
    return _svg(fig)


def _confusion(labels, scores, threshold: float) -> np.ndarray:
    flagged = scores > threshold
    actual = labels == 1
    return np.array(
        [
            [int(np.sum(~actual & ~flagged)), int(np.sum(~actual & flagged))],
            [int(np.sum(actual & ~flagged)), int(np.sum(actual & flagged))],
        ]
    )


def _plot_top_rows(top: list[tuple[_Part, int]], columns: list[str]) -> str:
    chosen: list[int] = []
    for part, i in top:
        for j in np.argsort(-part.shares[i], kind="stable")[:TOP_FEATURES]:
            if j not in chosen:
                chosen.append(int(j))
    chosen = chosen[:12]
    grid = np.array([[part.shares[i][j] for j in chosen] for part, i in top])
    labels = [f"{part.name} row {int(part.rows[i]) + 1}" for part, i in top]
    fig, axes = _figure(1.0 + 0.6 * len(chosen) + 2.0, 0.32 * len(top) + 1.8)
    ax = axes[0, 0]
    image = ax.imshow(grid, cmap="Reds", vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(len(chosen)), [columns[j] for j in chosen], rotation=40, ha="right")
    ax.set_yticks(range(len(top)), labels, fontsize=8)
    ax.set_title("Share of each row's reconstruction error")
    fig.colorbar(image, ax=ax, label="share")
    return _svg(fig)


# -- the page ------------------------------------------------------------------


def _esc(value) -> str:
    return html.escape(str(value), quote=True)


def _num(value, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return _esc(value)
    if isinstance(value, int):
        return f"{value:,}"
    if not math.isfinite(value):
        return str(value)
    return f"{value:.{digits}f}" if abs(value) >= 1e-3 or value == 0 else f"{value:.3g}"


def _table(rows: list[tuple], header: tuple | None = None, cls: str = "kv") -> str:
    out = [f'<table class="{cls}">']
    if header:
        out.append("<tr>" + "".join(f"<th>{_esc(h)}</th>" for h in header) + "</tr>")
    for row in rows:
        out.append("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


def _plot_block(name: str, svg: str, caption: str) -> str:
    return (
        f'<figure class="plot" data-plot="{_esc(name)}">\n{svg}\n'
        f"<figcaption>{caption}</figcaption>\n</figure>"
    )


def _note(text: str, cls: str = "note") -> str:
    return f'<p class="{cls}">{_esc(text)}</p>'


_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0 auto;
       max-width: 1180px; padding: 1rem 1.5rem 3rem; color: #222; line-height: 1.4; }
h1 { font-size: 1.6rem; margin-bottom: 0.2rem; }
h2 { font-size: 1.25rem; border-bottom: 1px solid #ddd; padding-bottom: 0.2rem;
     margin-top: 2rem; }
h3 { font-size: 1.05rem; }
table { border-collapse: collapse; margin: 0.5rem 0 1rem; font-size: 0.9rem; }
td, th { border: 1px solid #ddd; padding: 0.2rem 0.5rem; text-align: left;
         vertical-align: top; }
th { background: #f4f4f4; }
table.kv td:first-child { font-weight: 600; white-space: nowrap; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
figure.plot { margin: 0.5rem 0 1.2rem; }
figure.plot svg { max-width: 100%; height: auto; display: block; }
figcaption { font-size: 0.85rem; color: #555; }
code, pre { font-family: ui-monospace, "SFMono-Regular", Menlo, monospace; font-size: 0.85rem; }
pre { background: #f6f8fa; padding: 0.6rem; overflow-x: auto; white-space: pre-wrap;
      word-break: break-all; }
p.note { color: #555; font-style: italic; }
p.warning { color: #8a1c1c; font-weight: 600; }
nav a { margin-right: 0.8rem; }
.grid2 { display: grid; grid-template-columns: 1fr 1fr; gap: 1rem; }
"""


def _summary_section(run: _Run) -> str:
    s = run.summary
    data, split, study = s["data"], s["split"], s["study"]
    counts = study.get("trials", {})
    cfg = s["config"]
    rows_split = split.get("rows", {})
    data_rows = [
        ("source", _esc(data.get("source"))),
        ("rows", _num(data.get("rows"))),
        (
            "columns",
            f"{_num(data.get('features'))} features ({_num(data.get('numeric'))} numeric, "
            f"{_num(data.get('categorical'))} categorical)",
        ),
        ("label", _esc(data.get("label") or "none")),
    ]
    if "anomaly_rate" in data:
        data_rows.append(
            (
                "anomalies",
                f"{_num(data['anomalies'])} ({data['anomaly_rate']:.2%} of rows)",
            )
        )
    data_rows.append(("fingerprint", f"<code>{_esc(data.get('fingerprint'))}</code>"))
    split_rows = [
        ("method", _esc(split.get("method"))),
        ("seed", _num(split.get("seed"))),
        (
            "rows",
            ", ".join(f"{k} {_num(v)}" for k, v in rows_split.items()),
        ),
        ("training rows", _esc(s.get("train_on", "normal"))),
    ]
    if s.get("cv"):
        split_rows.append(("cross-validation", f"{_num(s['cv'])} folds"))
    budget_rows = [
        ("study", f"{_esc(study.get('name'))} in <code>{_esc(study.get('storage'))}</code>"),
        ("objectives", _esc(", ".join(map(str, study.get("objectives", []))))),
        ("sampler / pruner", f"{_esc(study.get('sampler'))} / {_esc(study.get('pruner'))}"),
        ("trials requested", _num(cfg.get("trials"))),
        (
            "trials",
            ", ".join(f"{_num(v)} {_esc(k)}" for k, v in counts.items() if v) or "none",
        ),
        ("epochs trained", _num(study.get("epochs_trained"))),
        ("workers", _num(cfg.get("workers"))),
        ("timeout", f"{_num(cfg['timeout'])} s" if cfg.get("timeout") else "none"),
        ("resumed", _esc(study.get("resumed"))),
    ]
    timings = s.get("timings", {})
    timing_rows = [(_esc(k.replace("_", " ")), f"{_num(v, 2)}") for k, v in timings.items()]
    version_rows = [(_esc(k), _esc(v)) for k, v in sorted(s.get("versions", {}).items())]
    command = s.get("command")
    command_text = shlex.join(command) if isinstance(command, list) else str(command or "")
    parts = [
        '<section id="summary">',
        "<h2>Summary</h2>",
        '<div class="grid2"><div>',
        "<h3>Data</h3>",
        _table(data_rows),
        "<h3>Split</h3>",
        _table(split_rows),
        "</div><div>",
        "<h3>Budget</h3>",
        _table(budget_rows),
        "<h3>Timings (seconds)</h3>",
        _table(timing_rows),
        "</div></div>",
    ]
    best = s.get("best")
    if best:
        parts += [
            f"<h3>Best trial #{_esc(best['number'])}</h3>",
            _table(
                [(_esc(k), _num(v, 6)) for k, v in sorted(best["params"].items())],
                header=("parameter", "value"),
            ),
        ]
        ensemble = s.get("ensemble")
        if ensemble:
            objective = _esc(_objective_label(s))
            # After sampled trials: whether each network is the refit or the trial's own.
            kept = {"refit": "every training row", "trial": "the trial's sample"}
            sampled = any("kept" in m for m in ensemble["members"])
            parts += [
                f'<h3 id="ensemble">The model: the mean of {len(ensemble["members"])} '
                "(trial, score) pairs</h3>",
                _table(
                    [
                        (
                            f"#{_esc(m['trial'])}",
                            _esc(m["score"]),
                            _num(m["value"]),
                            _esc(m["variant"]),
                            _num(m["scale"], 4),
                            *([_esc(kept.get(m.get("kept"), "-"))] if sampled else []),
                        )
                        for m in ensemble["members"]
                    ],
                    header=(
                        "trial",
                        "score",
                        f"validation {objective}",
                        "variant",
                        "spread",
                        *(["network trained on"] if sampled else []),
                    ),
                ),
                _note(
                    f"Validation {objective} of the ensemble: {_num(ensemble['val_value'])}. "
                    "Each pair's score is divided by its spread (interquartile range) on the "
                    f"{ensemble['reference_rows']:,} reference rows; the model's score is "
                    "their mean."
                ),
            ]
        parts.append(_metrics_table(s))
    else:
        parts.append(_note("No trial completed, so there is no best model."))
    parts += [
        "<h3>Versions</h3>",
        _table(version_rows),
        "<h3>Reproduce</h3>",
        f'<pre id="command">{_esc(command_text)}</pre>',
        "</section>",
    ]
    return "\n".join(parts)


def _metrics_table(s: dict) -> str:
    metrics = s.get("metrics", {})
    names = [k for k in ("auc_roc", "auc_pr", "f1", "precision", "recall") if k in metrics["val"]]
    names = names or sorted(metrics["val"])
    rows = [
        (_esc(part), *(f'<td class="n">{_num(metrics[part].get(n))}</td>' for n in names))
        for part in ("val", "test")
        if part in metrics
    ]
    header = "".join(f"<th>{_esc(n.replace('_', '-').upper())}</th>" for n in names)
    body = "".join(f"<tr><td>{row[0]}</td>{''.join(row[1:])}</tr>" for row in rows)
    threshold = f"{s['threshold']:.6g}" if s.get("threshold") is not None else "-"
    return (
        f'<table class="metrics"><tr><th>split</th>{header}</tr>{body}</table>'
        f"<p>Threshold <code>{threshold}</code> ({_esc(s.get('threshold_rule', ''))}).</p>"
    )


def _search_section(run: _Run) -> str:
    parts = ['<section id="search">', "<h2>Search</h2>"]
    if run.study_note:
        parts.append(_note(f"Trials read from trials.csv: {run.study_note}."))
    if not run.trials:
        parts.append(_note("The run folder lists no trials."))
        parts.append("</section>")
        return "\n".join(parts)
    n_pruned = sum(t.state == "pruned" for t in run.trials)
    parts.append(
        _plot_block(
            "history",
            _plot_history(run),
            f"Each complete trial's validation value, the best so far, and the "
            f"{n_pruned} pruned trials at the value of their last epoch.",
        )
    )
    record = _anytime(run)
    anytime_svg = _plot_anytime(record, run.summary) if record else None
    if anytime_svg is not None:
        from anomtune.tuning.anytime import last_third_sentence

        sentence = last_third_sentence(record["last_third"], _objective_label(run.summary))

        parts.append(
            _plot_block(
                "anytime",
                anytime_svg,
                "The best validation value after each finished trial, against the "
                "trials and against the seconds since the first one started.",
            )
        )
        parts.append(f'<p class="verdict" id="more-trials">{_esc(sentence)}</p>')
    else:
        parts.append(_note("No complete trial, so there is no best value to follow."))
    intermediate = _plot_intermediate(run)
    if intermediate is not None:
        parts.append(
            _plot_block(
                "intermediate",
                intermediate,
                "The value each trial reported after every epoch (fold, with --cv); "
                "the pruner stopped the grey ones.",
            )
        )
    elif run.study is not None:
        parts.append(_note("No trial reported intermediate values."))
    importances, note = _importances(run)
    parts.append('<h3 id="importance">Hyperparameter importances</h3>')
    if importances is not None:
        parts.append(
            _plot_block(
                "importance",
                _plot_importances(importances),
                "Optuna's fANOVA evaluator over the complete trials (parameters "
                "present in every one of them).",
            )
        )
        top = list(importances)
    else:
        parts.append(_note(note))
        best = (run.summary.get("best") or {}).get("tuned_params") or {}
        top = sorted(best)
    slices = _plot_slices(run, top)
    if slices is not None:
        parts.append(
            _plot_block(
                "slice",
                slices,
                "Validation value of each complete trial against the most important "
                "parameters, coloured by trial number.",
            )
        )
    parts.append("</section>")
    return "\n".join(parts)


def _evaluation_section(run: _Run) -> str:
    s = run.summary
    parts = ['<section id="evaluation">', "<h2>Best model</h2>"]
    if not run.parts:
        parts.append(_note("No best model to evaluate."))
        parts.append("</section>")
        return "\n".join(parts)
    from anomtune.metrics import auc_pr, auc_roc

    title = {"val": "Validation rows", "test": "Test rows"}
    for part in run.parts:
        parts.append(f'<h3 id="evaluation-{part.name}">{title[part.name]}</h3>')
        if part.labels is None:
            parts.append(
                _plot_block(
                    f"scores-{part.name}",
                    _plot_unlabeled_part(part, run.threshold),
                    "Scores of the rows (no labels); the dashed line is the threshold.",
                )
            )
            continue
        roc, pr = auc_roc(part.labels, part.scores), auc_pr(part.labels, part.scores)
        recorded = s.get("metrics", {}).get(part.name, {})
        for name, value in (("auc_roc", roc), ("auc_pr", pr)):
            if name in recorded and abs(recorded[name] - value) > METRIC_TOLERANCE:
                parts.append(
                    _note(
                        f"The recomputed {name.replace('_', '-').upper()} {value:.6f} differs "
                        f"from the run's {recorded[name]:.6f}: the model or data changed.",
                        "warning",
                    )
                )
        cm = _confusion(part.labels, part.scores, run.threshold)
        parts.append(
            _plot_block(
                f"evaluation-{part.name}",
                _plot_part(part, run.threshold, roc, pr),
                f"{len(part.scores):,} rows, {int(part.labels.sum()):,} anomalies. "
                f"AUC-ROC {roc:.4f}, AUC-PR {pr:.4f}; at the threshold "
                f"{cm[1, 1]} anomalies caught, {cm[1, 0]} missed, {cm[0, 1]} false alarms.",
            )
        )
        parts.append(
            _table(
                [
                    ("actual normal", f"{cm[0, 0]}", f"{cm[0, 1]}"),
                    ("actual anomaly", f"{cm[1, 0]}", f"{cm[1, 1]}"),
                ],
                header=("", "predicted normal", "predicted anomaly"),
                cls=f"confusion confusion-{part.name}",
            )
        )
    parts.append("</section>")
    return "\n".join(parts)


def _top_rows_section(run: _Run, top_n: int) -> str:
    parts = ['<section id="top-rows">', "<h2>Highest-scoring rows</h2>"]
    if not run.parts:
        parts.append(_note("No best model to score rows with."))
        parts.append("</section>")
        return "\n".join(parts)
    candidates = [(part, i) for part in run.parts for i in range(len(part.scores))]
    candidates.sort(key=lambda c: -c[0].scores[c[1]])
    top = candidates[:top_n]
    rows = []
    for part, i in top:
        position = int(part.rows[i])
        row_id = run.ids.iloc[position] if run.ids is not None else position + 1
        label = "-" if part.labels is None else ("anomaly" if part.labels[i] else "normal")
        features = []
        for j in np.argsort(-part.shares[i], kind="stable")[:TOP_FEATURES]:
            value = run.features.iloc[position, j]
            features.append(
                f"<b>{_esc(run.columns[j])}</b> = {_num(_plain(value))} ({part.shares[i][j]:.0%})"
            )
        rows.append(
            (
                _esc(part.name),
                _esc(row_id),
                f"{part.scores[i]:.5g}",
                _esc(label),
                "yes" if part.scores[i] > run.threshold else "no",
                "; ".join(features),
            )
        )
    id_name = run.summary["config"].get("id_column") or "row"
    parts.append(
        _table(
            rows,
            header=("split", id_name, "score", "label", "flagged", "largest errors (share)"),
            cls="top-rows",
        )
    )
    parts.append(
        _plot_block(
            "top-rows",
            _plot_top_rows(top, run.columns),
            f"The {len(top)} validation and test rows with the highest scores (row: 1 is the "
            f"first data row of the file), and each one's share of the reconstruction error "
            f"in the columns that dominate them.",
        )
    )
    parts.append("</section>")
    return "\n".join(parts)


def _plain(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and math.isnan(value):
        return "missing"
    return value


def build_report(
    run_dir: str | Path,
    *,
    data: str | None = None,
    storage: str | None = None,
    top_rows: int = TOP_ROWS,
) -> str:
    """The HTML report of the run in ``run_dir``.

    ``data`` is the run's data file when it has moved (its fingerprint must
    match the run's); ``storage`` the study's storage when it has moved.
    Without the study, the history comes from ``trials.csv`` and the
    intermediate values and importances are left out with a note.
    """
    if top_rows < 1:
        raise ConfigError(f"the number of top rows must be at least 1, not {top_rows}")
    run = _load_run(Path(run_dir), data=data, storage=storage)
    s = run.summary
    title = f"anomtune report: study {s['study'].get('name')}"
    best = s.get("best")
    headline = ""
    if best and "auc_roc" in s.get("metrics", {}).get("test", {}):
        test = s["metrics"]["test"]
        model = f"Best trial #{best['number']} of {len(run.trials)}"
        if s.get("ensemble"):
            model = (
                f"Ensemble of {s['ensemble']['size']} (trial, score) pairs, best trial "
                f"#{best['number']} of {len(run.trials)}"
            )
        headline = (
            f"{model}: test AUC-ROC "
            f"{test['auc_roc']:.4f}, AUC-PR {test['auc_pr']:.4f}, F1 {test['f1']:.3f}."
        )
    elif best:
        headline = f"Best trial #{best['number']} of {len(run.trials)}."
    body = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_esc(title)}</title>",
        f"<style>{_CSS}</style>",
        "</head>",
        "<body>",
        f"<h1>{_esc(title)}</h1>",
        f"<p>{_esc(headline)} Data <code>{_esc(s['data'].get('source'))}</code>, "
        f"anomtune {_esc(s.get('anomtune_version'))}.</p>",
        '<nav><a href="#summary">Summary</a><a href="#search">Search</a>'
        '<a href="#importance">Importances</a><a href="#evaluation">Best model</a>'
        '<a href="#top-rows">Highest-scoring rows</a></nav>',
        _summary_section(run),
        _search_section(run),
        _evaluation_section(run),
        _top_rows_section(run, top_rows),
        "</body>",
        "</html>",
        "",
    ]
    return "\n".join(body)


def write_report(
    run_dir: str | Path,
    path: str | Path,
    *,
    data: str | None = None,
    storage: str | None = None,
    top_rows: int = TOP_ROWS,
) -> Path:
    """Write the report of ``run_dir`` to ``path`` whole (old file or new, never half)."""
    from anomtune.files import write_bytes
    from anomtune.run import RunFolder

    RunFolder.open(run_dir)  # a missing run folder is the first thing to say
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{path}: is a folder; give a file name for the report")
    if not path.parent.is_dir():
        raise ConfigError(f"{path}: no folder {path.parent} to write the report in")
    page = build_report(run_dir, data=data, storage=storage, top_rows=top_rows)
    try:
        write_bytes(path, page.encode("utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot write: {exc.strerror or exc}") from exc
    return path


# -- a picture of the page -------------------------------------------------------


def find_browser(browser: str | None = None) -> str:
    """The path of a Chromium-family browser: ``browser``, or one on the PATH."""
    if browser:
        found = shutil.which(browser)
        if found is None:
            raise ConfigError(f"browser {browser!r}: not found")
        return found
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        found = shutil.which(name)
        if found is not None:
            return found
    raise ConfigError("no Chromium found for the screenshot (install it: apt-get install chromium)")


def run_browser(browser: str, args: list[str], *, timeout: float = 120) -> str:
    """Run the headless browser with a fresh profile; its standard output."""
    with tempfile.TemporaryDirectory(prefix="anomtune-chromium-") as profile:
        cmd = [browser, *BROWSER_FLAGS, f"--user-data-dir={profile}", *args]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise ConfigError(f"{browser}: no answer within {timeout:.0f} s") from exc
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no message"])[-1]
        raise ConfigError(f"{browser} failed (exit code {done.returncode}): {last}")
    return done.stdout


_HEIGHT_PROBE = (
    "<script>addEventListener('load', function () {"
    "var p = document.createElement('pre'); p.id = 'anomtune-page-height';"
    "p.textContent = String(document.documentElement.scrollHeight);"
    "document.body.appendChild(p);});</script>"
)


def screenshot(html_path: str | Path, png_path: str | Path, *, width: int = 1200, browser=None):
    """A PNG of the whole page at ``html_path``, taken with headless Chromium.

    The page is loaded once to measure its height (in a copy with a small
    measuring script), then photographed in a window that tall. The PNG is
    put in place atomically (0644 less the umask).
    """
    from anomtune.files import AtomicFile

    html_path, png_path = Path(html_path).resolve(), Path(png_path)
    if not html_path.is_file():
        raise ConfigError(f"{html_path}: no such report")
    if not png_path.parent.is_dir():
        raise ConfigError(f"{png_path}: no folder {png_path.parent} to write it in")
    exe = find_browser(browser)
    page = html_path.read_text(encoding="utf-8")
    with tempfile.TemporaryDirectory(prefix="anomtune-shot-") as tmp:
        probe = Path(tmp) / "probe.html"
        probe.write_text(page.replace("</body>", _HEIGHT_PROBE + "</body>", 1), encoding="utf-8")
        dom = run_browser(exe, [f"--window-size={width},900", "--dump-dom", probe.as_uri()])
        found = re.search(r'id="anomtune-page-height">(\d+)<', dom)
        if found is None:
            raise ConfigError(f"{exe}: could not measure the page")
        height = min(int(found.group(1)), 30000)
        staged = Path(tmp) / "shot.png"
        run_browser(
            exe,
            [f"--window-size={width},{height}", f"--screenshot={staged}", html_path.as_uri()],
        )
        if not staged.is_file() or staged.stat().st_size == 0:
            raise ConfigError(f"{exe}: wrote no screenshot")
        with AtomicFile(png_path) as out, open(staged, "rb") as shot:
            shutil.copyfileobj(shot, out.file)
    return png_path
