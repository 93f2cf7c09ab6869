"""After the study: pick the best trial, refit it, set its threshold, score the test rows once."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from anomtune.errors import TrainingError
from anomtune.metrics import evaluate
from anomtune.model import AnomalyModel
from anomtune.pipeline import Prepared, fit_detector
from anomtune.space import SearchSpace
from anomtune.tuning.config import TuneConfig
from anomtune.tuning.objective import EpochTracker, Objective, unlabeled_value

__all__ = ["Refit", "refit_best", "select_best"]

UNLABELED_NOTE = (
    "no label column: trials were compared on the validation reconstruction error "
    "(in units of each column's training spread) and the threshold is the "
    "training-score quantile"
)


def select_best(study, tolerance: float):
    """The best trial, or None when no trial completed.

    With two objectives (quality, cost) the candidates are the Pareto-optimal
    trials whose quality is within ``tolerance`` of the best quality among
    them; of those, the one with the lowest cost wins (ties: higher quality).
    """
    from optuna.trial import TrialState

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        return None
    if len(study.directions) == 1:
        return study.best_trial
    front = study.best_trials
    top = max(t.values[0] for t in front)
    near = [t for t in front if t.values[0] >= top - tolerance]
    return min(near, key=lambda t: (t.values[1], -t.values[0]))


@dataclass
class Refit:
    """The refitted best trial: its model and what the run summary records of it."""

    model: AnomalyModel
    trial: object  # the optuna FrozenTrial
    params: dict  # as refitted: the trial's parameters with its best epoch count
    seed: int
    epochs: int
    metrics: dict
    check: dict  # the refit's validation value against the trial's
    seconds: float
    note: str | None = None
    train_rows: int = 0
    epochs_run: int = 0  # epochs trained, the kept one and any after it


def refit_best(
    best, config: TuneConfig, prepared: Prepared, space: SearchSpace, objective: Objective
) -> Refit:
    """Refit trial ``best`` with its recorded seed on every training row.

    Without a sample it trains for the trial's best epoch count and gives the
    trial's own model. After sampled trials it trains for at most that many
    epochs, scored on every validation row after each, and keeps its best
    epoch. The threshold maximises F1 on the validation rows (labeled data) or
    stays the training-score quantile; the test rows are scored once.
    """
    import optuna

    params = space.sample(optuna.trial.FixedTrial(best.params))
    best_epoch = int(best.user_attrs.get("best_epoch") or params.get("epochs", 50))
    seed = int(best.user_attrs["seed"])
    trial_rows = len(objective.prepared.train)
    sampled = objective.prepared is not prepared
    refit_params = {**params, "epochs": max(1, best_epoch)}
    started = time.perf_counter()
    keep_best = None
    if sampled:
        # On every row the best epoch count differs from the sample's: the
        # refit is scored on the validation rows after each epoch, up to the
        # trial's best epoch count, and keeps its best epoch.
        keep_best = EpochTracker(
            objective.validation_on(prepared),
            None,
            maximize=objective.labeled,
            patience=config.patience,
            report=False,
        )
    detector = fit_detector(prepared, refit_params, seed=seed, keep_best=keep_best)
    epochs = int(detector.n_epochs_) if sampled else refit_params["epochs"]
    refit_params["epochs"] = epochs
    _, y_val = prepared.rows("val")
    X_test, y_test = prepared.rows("test")
    val_scores = prepared.scores(detector, "val")
    if not np.isfinite(val_scores).all():
        raise TrainingError("the refitted best model gives non-finite validation scores")
    test_scores = prepared.scores(detector, "test")
    threshold = detector.threshold_
    note = None
    if objective.labeled:
        metrics = {
            "val": evaluate(y_val, val_scores, threshold),
            "test": evaluate(y_test, test_scores, threshold),
        }
        # The trials compared the autoencoders alone, so the check does too;
        # the metrics are the model's, unseen categorical values included.
        value = float(objective.metric(y_val, detector.anomaly_score(prepared.rows("val")[0])))
    else:
        value = objective.validation(detector)
        test_value = unlabeled_value(X_test, prepared.rows("train")[0])(detector)
        metrics = {
            "val": {
                "reconstruction_error": value,
                "flagged": float(np.mean(val_scores > threshold)),
            },
            "test": {
                "reconstruction_error": test_value,
                "flagged": float(np.mean(test_scores > threshold)),
            },
        }
        note = UNLABELED_NOTE
    check = {
        "seed": seed,
        "epochs": epochs,
        "val_value": value,
        "trial_value": float(best.values[0]),
    }
    if sampled:
        check["trial_best_epoch"] = best_epoch
        check["note"] = (
            f"the trials trained on {trial_rows:,} sampled training rows and were scored on "
            f"{len(objective.prepared.split.val):,} sampled validation rows; the refit trains "
            f"on all {len(prepared.train):,} training rows for at most the trial's "
            f"{best_epoch} epochs, keeps the epoch with the best value on every validation "
            "row, and is checked there"
        )
    elif config.cv:
        check["note"] = (
            "the trial value is a cross-validation mean; the refit trains on the train "
            "split and is checked on the validation split"
        )
    else:
        check["matches"] = bool(abs(value - best.values[0]) <= 1e-9)
    return Refit(
        model=prepared.model(detector),
        trial=best,
        params=refit_params,
        seed=seed,
        epochs=epochs,
        metrics=metrics,
        check=check,
        seconds=time.perf_counter() - started,
        note=note,
        train_rows=len(prepared.train),
        epochs_run=int(detector.training_.epochs),
    )
