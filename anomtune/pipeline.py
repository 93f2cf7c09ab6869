"""One labeled table to a fitted, thresholded, evaluated detector.

:func:`prepare` and :func:`fit_detector` are shared by ``anomtune fit``,
every tuning trial on the train/validation split and the refit of the best
trial, so that all of them prepare data, train and threshold the same way
(cross-validated trials encode each fold with its own encoder).
"""

from __future__ import annotations

import difflib
import time
from dataclasses import dataclass, replace

import numpy as np

from anomtune.data import Split, Table, split_rows, split_unlabeled, subsample, training_rows
from anomtune.detector import AutoencoderDetector
from anomtune.errors import ConfigError
from anomtune.metrics import best_f1_threshold, evaluate
from anomtune.model import AnomalyModel, unseen_penalty
from anomtune.preprocess import InputEncoder, unseen_counts

__all__ = [
    "Prepared",
    "check_param_names",
    "fit_detector",
    "new_detector",
    "prepare",
    "report",
    "split_table",
    "validation_threshold",
]


@dataclass
class Prepared:
    """A table encoded once: the matrix of all rows, labels and the split.

    ``unseen`` counts, per row, the categorical values the training rows never
    held; :meth:`scores` adds their penalty (:func:`anomtune.model.unseen_penalty`).
    """

    table: Table
    encoder: InputEncoder
    X: np.ndarray
    y: np.ndarray | None
    split: Split
    train: np.ndarray
    train_on: str
    unseen: np.ndarray

    def _index(self, part: str) -> np.ndarray:
        return {"train": self.train, "val": self.split.val, "test": self.split.test}[part]

    def rows(self, part: str) -> tuple[np.ndarray, np.ndarray]:
        idx = self._index(part)
        return self.X[idx], (self.y[idx] if self.y is not None else None)

    def scores(self, detector: AutoencoderDetector, part: str) -> np.ndarray:
        """The anomaly scores of ``part``'s rows, as the fitted model gives them."""
        idx = self._index(part)
        return detector.anomaly_score(self.X[idx]) + unseen_penalty(detector, self.unseen[idx])

    def sampled(self, rows: int | None, *, seed: int) -> tuple[Prepared, dict]:
        """These rows as a tuning trial sees them, and what was sampled.

        The training and the validation part each keep at most ``rows`` rows,
        a seeded random sample with the anomalies' share kept
        (:func:`~anomtune.data.subsample`); the encoder, fitted on every
        training row, stays. A table whose parts fit (or ``rows=None``)
        comes back as it is.
        """
        fidelity = {
            "rows_limit": rows,
            "train_rows": len(self.train),
            "val_rows": len(self.split.val),
            "of_train_rows": len(self.train),
            "of_val_rows": len(self.split.val),
            "sampled": False,
        }
        if rows is None or (len(self.split.train) <= rows and len(self.split.val) <= rows):
            return self, fidelity
        split = replace(
            self.split,
            train=subsample(self.split.train, self.y, rows, seed=seed),
            val=subsample(self.split.val, self.y, rows, seed=seed + 1),
        )
        train = training_rows(split.train, self.y, self.train_on)
        fidelity.update(train_rows=len(train), val_rows=len(split.val), sampled=True, seed=seed)
        return replace(self, split=split, train=train), fidelity

    def model(self, detector: AutoencoderDetector) -> AnomalyModel:
        """``detector`` (fitted on these rows) with this table's encoder."""
        return AnomalyModel(self.encoder, detector)


def split_table(
    table: Table, *, seed: int = 0, val_size: float = 0.2, test_size: float = 0.2
) -> Split:
    """The seeded train/validation/test split of ``table`` (stratified when labeled)."""
    if table.labels is None:
        return split_unlabeled(table.n_rows, seed=seed, val_size=val_size, test_size=test_size)
    what = f"label column {table.schema.label!r}"
    if table.source:
        what += f" of {table.source}"
    return split_rows(table.labels, seed=seed, val_size=val_size, test_size=test_size, what=what)


def prepare(
    table: Table,
    *,
    seed: int = 0,
    train_on: str = "normal",
    val_size: float = 0.2,
    test_size: float = 0.2,
    max_categories: int = 50,
) -> Prepared:
    """Split ``table``, fit the column encoder on the training rows, encode all rows.

    Without labels the split is random and every training row is used.
    """
    split = split_table(table, seed=seed, val_size=val_size, test_size=test_size)
    train = training_rows(split.train, table.labels, train_on)
    encoder = InputEncoder(table.schema, max_categories=max_categories)
    encoder.fit(table.features.iloc[train])
    numeric, codes = encoder.split_inputs(table.features)
    X = encoder.encode_inputs(numeric, codes)
    labels = np.asarray(table.labels) if table.labels is not None else None
    return Prepared(table, encoder, X, labels, split, train, train_on, unseen_counts(codes))


def new_detector(params: dict, *, seed: int) -> AutoencoderDetector:
    """An unfitted detector with ``params``, refused if a name is unknown."""
    check_param_names(params)
    return AutoencoderDetector(**params, random_state=seed)


def fit_detector(
    prepared: Prepared, params: dict, *, seed: int, epoch_callback=None, keep_best=None
) -> AutoencoderDetector:
    """Fit a detector with ``params`` on the training rows and, for labeled
    data, set its threshold to the one that maximises F1 on the validation
    rows (unlabeled: the training-score quantile stays).

    ``keep_best``: an :class:`~anomtune.tuning.objective.EpochTracker`-like
    callable ``(epoch, detector) -> stop``, with ``best_epoch``; the detector
    then ends with the weights of that epoch, not of its last one.
    """
    detector = new_detector(params, seed=seed)
    X_train, _ = prepared.rows("train")
    kept: dict = {}
    if keep_best is not None:

        def epoch_callback(epoch, fitted):
            stop = keep_best(epoch, fitted)
            if keep_best.best_epoch == epoch:
                kept.update(epoch=epoch, state=_copy_state(fitted.net_))
            return stop

    detector.fit(X_train, epoch_callback=epoch_callback)
    if kept and kept["epoch"] != detector.n_epochs_:
        detector.restore(kept["state"], X_train, epoch=kept["epoch"])
    return validation_threshold(detector, prepared)


def validation_threshold(detector: AutoencoderDetector, prepared: Prepared):
    """With labels, set ``detector``'s threshold to the one that maximises F1 on
    ``prepared``'s validation rows; without, it stays the training-score quantile."""
    _, y_val = prepared.rows("val")
    if y_val is not None:
        scores = prepared.scores(detector, "val")
        if np.isfinite(scores).all():
            threshold, _ = best_f1_threshold(y_val, scores)
            detector.set_threshold(threshold, rule="maximises F1 on the validation split")
    return detector


def _copy_state(net) -> dict:
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def check_param_names(params: dict) -> None:
    """Reject detector parameters that do not exist, suggesting the closest name."""
    known = set(AutoencoderDetector().get_params()) - {"random_state"}
    for name in params:
        if name not in known:
            close = difflib.get_close_matches(name, sorted(known), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"unknown detector parameter {name!r}{hint}")


def report(detector: AutoencoderDetector, prepared: Prepared, parts=("val", "test")) -> dict:
    """Metrics of ``detector`` on the given parts, at its threshold."""
    out = {}
    for part in parts:
        _, y = prepared.rows(part)
        start = time.perf_counter()
        scores = prepared.scores(detector, part)
        elapsed = time.perf_counter() - start
        metrics = evaluate(y, scores, detector.threshold_)
        metrics["rows"] = len(y)
        metrics["score_seconds"] = round(elapsed, 6)
        out[part] = metrics
    return out
