"""Detection metrics against scikit-learn and against brute force."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, f1_score, roc_auc_score

from anomtune.errors import DataError
from anomtune.metrics import (
    auc_pr,
    auc_roc,
    best_f1_threshold,
    evaluate,
    f1_at,
    quantile_threshold,
)


def random_case(seed: int, n: int = 300, levels: int | None = 25):
    """Labels and scores where anomalies score higher on average; with
    ``levels`` the scores are rounded so that many of them tie."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < rng.uniform(0.05, 0.5)).astype(int)
    y[:2] = [0, 1]
    scores = rng.normal(size=n) + 1.2 * y
    if levels is not None:
        scores = np.round(scores * levels / 6) / (levels / 6)
    return y, scores


def brute_force_best_f1(y, scores) -> float:
    """The best F1 over every rule "score >= cut" with a cut at each distinct score."""
    best = 0.0
    for cut in np.unique(scores):
        pred = scores >= cut
        tp = np.sum(pred & (y == 1))
        fp = np.sum(pred & (y == 0))
        fn = np.sum(~pred & (y == 1))
        best = max(best, 2 * tp / (2 * tp + fp + fn))
    return float(best)


@pytest.mark.parametrize("seed", range(6))
def test_aucs_match_sklearn(seed):
    y, scores = random_case(seed)
    assert auc_roc(y, scores) == pytest.approx(roc_auc_score(y, scores), abs=1e-12)
    assert auc_pr(y, scores) == pytest.approx(average_precision_score(y, scores), abs=1e-12)


def test_auc_of_a_perfect_and_a_reversed_score():
    y = np.array([0, 0, 1, 1])
    assert auc_roc(y, [0.1, 0.2, 0.8, 0.9]) == 1.0
    assert auc_roc(y, [0.9, 0.8, 0.2, 0.1]) == 0.0
    assert auc_pr(y, [0.1, 0.2, 0.8, 0.9]) == 1.0


@pytest.mark.parametrize("levels", [None, 4, 25])
@pytest.mark.parametrize("seed", range(10))
def test_best_f1_threshold_really_maximises_f1(seed, levels):
    y, scores = random_case(seed, n=200, levels=levels)
    threshold, f1 = best_f1_threshold(y, scores)
    assert f1 == pytest.approx(brute_force_best_f1(y, scores), abs=1e-12)
    # The returned threshold gives that F1 with "score > threshold is an anomaly".
    assert f1_at(y, scores, threshold)["f1"] == pytest.approx(f1, abs=1e-12)
    assert f1_score(y, scores > threshold) == pytest.approx(f1, abs=1e-12)
    # It lies strictly between two observed scores, so no row sits on it.
    assert not np.any(scores == threshold)


def test_best_f1_threshold_between_adjacent_floats():
    top = 1.0
    below = np.nextafter(top, 0.0)
    y = np.array([1, 0, 0, 0])
    scores = np.array([top, below, 0.0, 0.5])
    threshold, f1 = best_f1_threshold(y, scores)
    assert f1 == 1.0
    assert below <= threshold < top
    assert f1_at(y, scores, threshold)["f1"] == 1.0


def test_best_f1_threshold_with_huge_scores():
    y = np.array([1, 1, 0, 0])
    scores = np.array([1.7e308, 1.6e308, 1e308, -1.7e308])
    threshold, f1 = best_f1_threshold(y, scores)
    assert np.isfinite(threshold)
    assert f1 == 1.0
    assert f1_at(y, scores, threshold)["f1"] == 1.0


def test_best_f1_when_flagging_everything_is_best():
    y = np.array([1, 1, 1, 0])
    scores = np.array([0.5, 0.5, 0.5, 0.5])
    threshold, f1 = best_f1_threshold(y, scores)
    assert f1 == pytest.approx(2 * 3 / (2 * 3 + 1))
    assert threshold < 0.5
    assert f1_at(y, scores, threshold)["tp"] == 3


def test_best_f1_prefers_the_higher_threshold_on_ties_in_f1():
    # Cutting after the first or after the last row both give F1 = 2/3.
    y = np.array([1, 0, 0, 1])
    scores = np.array([4.0, 3.0, 2.0, 1.0])
    threshold, f1 = best_f1_threshold(y, scores)
    assert f1 == pytest.approx(2 / 3)
    assert 3.0 < threshold < 4.0


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("levels", [None, 3, 25])
@pytest.mark.parametrize("contamination", [0.01, 0.1, 0.25, 0.5])
def test_quantile_threshold_flags_the_rows_above_the_quantile(seed, levels, contamination):
    _, scores = random_case(seed, levels=levels)
    threshold = quantile_threshold(scores, contamination)
    q = np.quantile(scores, 1 - contamination)
    np.testing.assert_array_equal(scores > threshold, scores > q)
    # Never on a score: a tie at the quantile cannot flip under a small shift.
    gap = np.min(np.abs(scores - threshold))
    assert gap > 0
    if levels is not None:
        assert gap >= 0.5 * np.min(np.diff(np.unique(scores))) * (1 - 1e-12)


def test_quantile_threshold_on_all_equal_and_adjacent_scores():
    equal = np.full(10, 2.5)
    t = quantile_threshold(equal, 0.1)
    assert t > 2.5 and not np.any(equal > t)
    below = np.nextafter(1.0, 0.0)
    for contamination in (0.2, 0.4, 0.5):
        scores = np.array([0.0, below, below, 1.0, 1.0])
        t = quantile_threshold(scores, contamination)
        np.testing.assert_array_equal(scores > t, scores > np.quantile(scores, 1 - contamination))
        assert t not in scores or t == below
    with pytest.raises(DataError, match="finite"):
        quantile_threshold(np.array([1.0, np.nan]), 0.1)


def test_f1_at_counts():
    y = np.array([1, 1, 0, 0, 1, 0])
    scores = np.array([0.9, 0.4, 0.8, 0.1, 0.6, 0.5])
    out = f1_at(y, scores, 0.5)
    assert (out["tp"], out["fp"], out["fn"]) == (2, 1, 1)
    assert out["precision"] == pytest.approx(2 / 3)
    assert out["recall"] == pytest.approx(2 / 3)
    assert out["f1"] == pytest.approx(2 / 3)
    # A row exactly at the threshold is not an anomaly.
    assert f1_at(y, scores, 0.6)["tp"] == 1
    nothing = f1_at(y, scores, 10.0)
    assert (nothing["precision"], nothing["recall"], nothing["f1"]) == (0.0, 0.0, 0.0)


def test_evaluate():
    y, scores = random_case(0)
    threshold, f1 = best_f1_threshold(y, scores)
    out = evaluate(y, scores, threshold)
    assert set(out) == {"auc_roc", "auc_pr", "f1", "precision", "recall", "flagged"}
    assert out["flagged"] == pytest.approx(float(np.mean(scores > threshold)))
    assert out["f1"] == pytest.approx(f1)
    assert set(evaluate(y, scores)) == {"auc_roc", "auc_pr"}


@pytest.mark.parametrize(
    ("labels", "scores", "message"),
    [
        ([0, 0, 0], [0.1, 0.2, 0.3], "both anomalies and normal rows"),
        ([1, 1], [0.1, 0.2], "both anomalies and normal rows"),
        ([0, 1, 0], [0.1, np.nan, 0.3], "NaN or infinite"),
        ([0, 1, 0], [0.1, np.inf, 0.3], "NaN or infinite"),
        ([0, 1], [0.1, 0.2, 0.3], "2 labels but 3 scores"),
        ([0, 2, 0], [0.1, 0.2, 0.3], "labels must be 0"),
    ],
)
@pytest.mark.parametrize("metric", [auc_roc, auc_pr, best_f1_threshold])
def test_bad_inputs(metric, labels, scores, message):
    with pytest.raises(DataError, match=message):
        metric(labels, scores)


def test_f1_at_checks_shapes_and_labels():
    with pytest.raises(DataError, match="2 labels but 3 scores"):
        f1_at([0, 1], [0.1, 0.2, 0.3], 0.0)
    with pytest.raises(DataError, match="labels must be 0"):
        f1_at([0, -1], [0.1, 0.2], 0.0)
