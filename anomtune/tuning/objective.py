"""What one trial runs: sample parameters, train, score validation rows every epoch.

A trial's value is the best validation metric over its epochs (the epoch
count is chosen on validation too); that running best is reported to the
pruner, which stops weak trials early. Trials whose validation metric has not
improved for ``patience`` epochs stop by themselves. With ``cv=K`` the value
is the mean over K stratified folds of the best held-out metric, and each
finished fold is one step for the Wilcoxon pruner. Without labels the value
is the validation reconstruction error (lower is better).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import statistics
import threading
import time
from collections.abc import Callable

import numpy as np

from anomtune.data import training_rows
from anomtune.ensemble import reference_positions, residual_scores
from anomtune.errors import AnomtuneError, TrainingError
from anomtune.metrics import auc_pr, auc_roc, best_f1_threshold
from anomtune.pipeline import Prepared, fit_detector, new_detector
from anomtune.preprocess import InputEncoder
from anomtune.space import SearchSpace
from anomtune.tuning.config import TuneConfig

__all__ = [
    "EpochTracker",
    "Interrupt",
    "Objective",
    "labeled_value",
    "metric_fn",
    "trial_seed",
    "unlabeled_value",
]


def metric_fn(name: str) -> Callable[[np.ndarray, np.ndarray], float]:
    """The validation metric called ``name``: labels and scores to a number."""
    if name == "auc-roc":
        return auc_roc
    if name == "auc-pr":
        return auc_pr
    return lambda y, s: best_f1_threshold(y, s)[1]


def trial_seed(seed: int, number: int) -> int:
    """The distinct, reproducible training seed of trial ``number``."""
    return (seed * 1_000_003 + number * 7919 + 17) % (2**31 - 1)


class Interrupt:
    """Ctrl-C during a study, acted on between epochs and trials.

    A KeyboardInterrupt raised at an arbitrary point can land inside the
    storage's lock handling (Optuna's journal lock then fails with an
    error of its own); instead the first SIGINT only sets a flag, which the
    objective turns into KeyboardInterrupt at its next epoch or trial. A
    second SIGINT interrupts at once.
    """

    requested = False

    @classmethod
    @contextlib.contextmanager
    def deferred(cls):
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum, frame):
            if cls.requested:
                raise KeyboardInterrupt
            cls.requested = True

        cls.requested = False
        previous = signal.signal(signal.SIGINT, handler)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)
            requested, cls.requested = cls.requested, False
        if requested:  # after the last epoch of the last trial
            raise KeyboardInterrupt

    @classmethod
    def check(cls) -> None:
        if cls.requested:
            raise KeyboardInterrupt


class EpochTracker:
    """Per-epoch validation: keeps the best value and epoch, reports, prunes.

    Called by the detector after every epoch; returns True to stop training
    once the value has not improved for ``patience`` epochs.
    """

    def __init__(self, evaluate, trial, *, maximize, patience, report=True):
        self.evaluate = evaluate
        self.trial, self.maximize, self.patience, self.report = trial, maximize, patience, report
        self.best: float | None = None
        self.best_epoch = 0
        self.epochs = 0

    def __call__(self, epoch: int, detector) -> bool:
        import optuna

        Interrupt.check()
        self.epochs = epoch
        value = self.evaluate(detector)
        if value is not None and (
            self.best is None or (value > self.best if self.maximize else value < self.best)
        ):
            self.best, self.best_epoch = value, epoch
        if self.report and self.best is not None:
            self.trial.report(self.best, epoch)
            if self.trial.should_prune():
                self.trial.set_user_attr("epochs", epoch)
                self.trial.set_user_attr("best_epoch", self.best_epoch)
                raise optuna.TrialPruned(f"pruned at epoch {epoch}")
        return epoch - self.best_epoch >= self.patience


def labeled_value(metric, X, y):
    """Validation metric of a detector on labeled rows (None if scores are not finite)."""

    def evaluate(detector) -> float | None:
        scores = detector.anomaly_score(X)
        return float(metric(y, scores)) if np.isfinite(scores).all() else None

    return evaluate


def unlabeled_value(X, X_train):
    """Mean squared reconstruction error in units of each column's training spread.

    Used when there are no labels. Measured in the same units whatever the
    variant and scaler, so that trials compare (a min-max scaled model's raw
    errors are smaller than a standardised one's for the same fit).
    """
    spread = X_train.std(axis=0).astype(np.float64)
    spread[~(spread > 1e-12)] = 1.0

    def evaluate(detector) -> float | None:
        errors = detector.feature_errors(X).astype(np.float64)
        ratio = (detector.scaler_.scale_.astype(np.float64) / spread) ** 2
        value = float((errors * ratio).mean())
        return value if np.isfinite(value) else None

    return evaluate


class Objective:
    """The function each trial runs; built from a config in every worker."""

    def __init__(self, config: TuneConfig, prepared: Prepared, space: SearchSpace):
        self.config = config
        self.prepared = prepared
        self.space = space
        self.labeled = prepared.y is not None
        self.metric = metric_fn(config.objectives[0] if config.objectives else config.metric)
        self.validation = self.validation_on(prepared)
        self.folds = None
        if config.cv:
            from anomtune.data import stratified_folds

            pool = np.concatenate([prepared.split.train, prepared.split.val])
            self.folds = stratified_folds(prepared.y, pool, k=config.cv, seed=config.seed)

    def validation_on(self, prepared: Prepared):
        """The per-epoch validation value on ``prepared``'s validation rows."""
        X_val, y_val = prepared.rows("val")
        if self.labeled:
            return labeled_value(self.metric, X_val, y_val)
        return unlabeled_value(X_val, prepared.rows("train")[0])

    def __call__(self, trial) -> float | tuple[float, float]:
        Interrupt.check()
        started = time.perf_counter()
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        params = self.space.sample(trial)
        seed = trial_seed(self.config.seed, trial.number)
        trial.set_user_attr("seed", seed)
        try:
            if self.folds is not None:
                value, best_epoch, epochs = self._cross_validate(trial, params, seed)
                values: float | tuple = value
            else:
                value, best_epoch, epochs, detector = self._single(trial, params, seed)
                values = value
                if self.config.objectives:
                    values = (value, self._cost(detector))
        except AnomtuneError as exc:
            trial.set_user_attr("fail_reason", str(exc))
            raise
        except ValueError as exc:
            # The detector rejects parameter combinations it cannot build.
            trial.set_user_attr("fail_reason", str(exc))
            raise TrainingError(str(exc)) from exc
        trial.set_user_attr("epochs", epochs)
        trial.set_user_attr("best_epoch", best_epoch)
        trial.set_user_attr("duration_s", round(time.perf_counter() - started, 3))
        return values

    def _single(self, trial, params, seed):
        tracker = EpochTracker(
            self.validation,
            trial,
            maximize=self.labeled,
            patience=self.config.patience,
            report=not self.config.objectives,
        )
        ensembles = self.config.ensembles(self.labeled)
        # For an ensemble the trial's network ends at its best epoch, where its
        # residual score is valued too (anomtune.ensemble).
        detector = fit_detector(
            self.prepared,
            params,
            seed=seed,
            epoch_callback=None if ensembles else tracker,
            keep_best=tracker if ensembles else None,
        )
        trial.set_user_attr("training_status", detector.training_status_)
        if tracker.best is None:
            raise TrainingError(
                f"training produced no finite validation score ({detector.training_status_})"
            )
        if ensembles:
            trial.set_user_attr("residual_value", self.residual_value(detector))
        return tracker.best, tracker.best_epoch, tracker.epochs, detector

    def residual_value(self, detector) -> float | None:
        """The validation metric of ``detector``'s residual score (None if not finite)."""
        X_train, _ = self.prepared.rows("train")
        X_val, y_val = self.prepared.rows("val")
        reference = X_train[reference_positions(len(X_train), seed=self.config.seed)]
        with np.errstate(all="ignore"):
            scores = residual_scores(detector, reference, X_val)
        return float(self.metric(y_val, scores)) if np.isfinite(scores).all() else None

    def _cross_validate(self, trial, params, seed):
        import optuna

        table = self.prepared.table
        y = self.prepared.y
        values, best_epochs, epochs = [], [], 0
        for k, (fit_rows, held_rows) in enumerate(self.folds):
            fit_rows = training_rows(fit_rows, y, self.config.train_on)
            encoder = InputEncoder(table.schema).fit(table.features.iloc[fit_rows])
            X_fit = encoder.encode(table.features.iloc[fit_rows])
            X_held = encoder.encode(table.features.iloc[held_rows])
            tracker = EpochTracker(
                labeled_value(self.metric, X_held, y[held_rows]),
                trial,
                maximize=True,
                patience=self.config.patience,
                report=False,
            )
            new_detector(params, seed=seed + k).fit(X_fit, epoch_callback=tracker)
            if tracker.best is None:
                raise TrainingError(f"fold {k + 1}: no finite validation score")
            values.append(tracker.best)
            best_epochs.append(tracker.best_epoch)
            epochs += tracker.epochs
            trial.report(tracker.best, k)
            if k + 1 < len(self.folds) and trial.should_prune():
                trial.set_user_attr("epochs", epochs)
                trial.set_user_attr("fold_values", values)
                raise optuna.TrialPruned(f"pruned after fold {k + 1}")
        trial.set_user_attr("fold_values", values)
        return float(np.mean(values)), int(statistics.median_low(best_epochs)), epochs

    def _cost(self, detector) -> float:
        if self.config.objectives[1] == "size":
            return float(sum(p.numel() for p in detector.net_.parameters()))
        X_val, _ = self.prepared.rows("val")
        timings = []
        for _ in range(5):
            start = time.perf_counter()
            detector.anomaly_score(X_val)
            timings.append(time.perf_counter() - start)
        return 1000.0 * statistics.median(timings) * 1000.0 / max(len(X_val), 1)
