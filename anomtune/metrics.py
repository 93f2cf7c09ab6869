"""Detection metrics on the anomaly-score scale (higher = more anomalous).

Plain NumPy, so that scoring and serving can evaluate without scikit-learn;
the values equal scikit-learn's ``roc_auc_score`` and
``average_precision_score`` (ties included).
"""

from __future__ import annotations

import numpy as np

from anomtune.errors import DataError

__all__ = ["auc_pr", "auc_roc", "best_f1_threshold", "evaluate", "f1_at", "quantile_threshold"]


def _pair(labels, scores) -> tuple[np.ndarray, np.ndarray]:
    raw = np.asarray(labels).ravel()
    scores = np.asarray(scores, dtype=np.float64).ravel()
    if raw.shape != scores.shape:
        raise DataError(f"{raw.size} labels but {scores.size} scores")
    if raw.size and not np.isin(raw, (0, 1)).all():
        raise DataError("labels must be 0 (normal) or 1 (anomaly)")
    return raw.astype(np.int8), scores


def _check(labels, scores) -> tuple[np.ndarray, np.ndarray]:
    labels, scores = _pair(labels, scores)
    if not np.isfinite(scores).all():
        raise DataError("scores contain NaN or infinite values")
    n_pos = int(labels.sum())
    if n_pos == 0 or n_pos == labels.size:
        raise DataError("metrics need both anomalies and normal rows among the labels")
    return labels, scores


def auc_roc(labels, scores) -> float:
    """Area under the ROC curve of ``scores`` against 0/1 ``labels``.

    The Mann-Whitney statistic with tied scores given their average rank.
    """
    labels, scores = _check(labels, scores)
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    # Average 1-based rank of each distinct score.
    ranks = np.cumsum(counts) - (counts - 1) / 2.0
    n_pos = int(labels.sum())
    n_neg = labels.size - n_pos
    rank_sum = float(ranks[inverse][labels == 1].sum())
    return (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


def auc_pr(labels, scores) -> float:
    """Area under the precision-recall curve as average precision.

    The sum over distinct score cut-offs (highest first) of the recall gained
    at the cut-off times the precision there.
    """
    labels, scores = _check(labels, scores)
    order = np.argsort(-scores, kind="stable")
    s = scores[order]
    y = labels[order]
    last = np.r_[s[1:] != s[:-1], True]
    tp = np.cumsum(y)[last].astype(np.float64)
    fp = np.cumsum(1 - y)[last].astype(np.float64)
    precision = tp / (tp + fp)
    recall = tp / tp[-1]
    gained = np.diff(np.r_[0.0, recall])
    return float(np.sum(gained * precision))


def f1_at(labels, scores, threshold: float) -> dict:
    """Precision, recall and F1 when rows scoring above ``threshold`` are anomalies."""
    labels, scores = _pair(labels, scores)
    pred = scores > threshold
    tp = int(np.sum(pred & (labels == 1)))
    fp = int(np.sum(pred & (labels == 0)))
    fn = int(np.sum(~pred & (labels == 1)))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "tp": tp, "fp": fp, "fn": fn}


def best_f1_threshold(labels, scores) -> tuple[float, float]:
    """The threshold that maximises F1 on labeled rows, and that F1.

    Candidates are the distinct scores; the returned threshold lies halfway
    between the lowest score flagged and the next lower score, so rows
    scoring above it are anomalies and a small shift in scores does not
    flip the boundary rows. ``f1_at(labels, scores, threshold)`` gives
    exactly the returned F1.
    """
    labels, scores = _check(labels, scores)
    order = np.argsort(-scores, kind="stable")
    s = scores[order]
    y = labels[order]
    tp = np.cumsum(y)
    fp = np.cumsum(1 - y)
    # Only the last position of each run of equal scores is a valid cut.
    last = np.r_[s[1:] != s[:-1], True]
    tp, fp, idx = tp[last], fp[last], np.flatnonzero(last)
    n_pos = labels.sum()
    f1 = 2 * tp / (tp + fp + n_pos)
    k = int(np.argmax(f1))
    cut = idx[k]
    lowest_flagged = s[cut]
    below = s[cut + 1] if cut + 1 < len(s) else lowest_flagged - max(abs(lowest_flagged), 1.0)
    return _midway(below, lowest_flagged), float(f1[k])


def quantile_threshold(scores, contamination: float) -> float:
    """The threshold that flags the ``contamination`` share of ``scores`` above it.

    Rows scoring above the ``1 - contamination`` quantile are the flagged
    ones; the returned threshold flags the same rows but lies halfway between
    the highest score not flagged and the lowest flagged, never on a score,
    so tied scores and small shifts in scores (another runtime, float32) do
    not flip the boundary rows.
    """
    scores = np.asarray(scores, dtype=np.float64).ravel()
    if scores.size == 0 or not np.isfinite(scores).all():
        raise DataError("a threshold needs finite scores")
    q = float(np.quantile(scores, 1.0 - contamination))
    distinct = np.unique(scores)
    i = int(np.searchsorted(distinct, q, side="right"))
    below = float(distinct[i - 1]) if i > 0 else q
    above = float(distinct[i]) if i < distinct.size else below + max(abs(below), 1.0)
    return _midway(below, above)


def _midway(below: float, above: float) -> float:
    """A float with ``below <= t < above``, halfway between them where one exists."""
    # Halving first cannot overflow; between two adjacent floats the midpoint
    # rounds onto one of them, and only ``below`` keeps "score > threshold"
    # flagging exactly the rows at or above ``above``.
    t = below / 2.0 + above / 2.0
    return float(t) if below <= t < above else float(below)


def evaluate(labels, scores, threshold: float | None = None) -> dict:
    """AUC-ROC, AUC-PR and, with a threshold, precision/recall/F1 at it."""
    out = {"auc_roc": auc_roc(labels, scores), "auc_pr": auc_pr(labels, scores)}
    if threshold is not None:
        at = f1_at(labels, scores, threshold)
        out.update(f1=at["f1"], precision=at["precision"], recall=at["recall"])
        out["flagged"] = float(np.mean(np.asarray(scores) > threshold)) if len(scores) else 0.0
    return out
