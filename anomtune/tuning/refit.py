"""After the study: pick the best trial (and ensemble members), refit them, set the
threshold, score the test rows once."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from anomtune.errors import TrainingError
from anomtune.metrics import best_f1_threshold, evaluate
from anomtune.model import AnomalyModel
from anomtune.pipeline import Prepared, fit_detector, validation_threshold
from anomtune.space import SearchSpace
from anomtune.tuning.config import TuneConfig
from anomtune.tuning.objective import EpochTracker, Objective, unlabeled_value

__all__ = ["Refit", "refit_best", "select_best", "select_members"]

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


def select_members(study, size: int) -> list[tuple]:
    """The ``size`` best (trial, score kind, validation value) of the complete trials.

    Every complete trial offers its reconstruction score (the trial's value)
    and its residual score (its ``residual_value``); the pairs are ranked by
    value, a tie keeping the better trial first and, within a trial, the
    reconstruction score first.
    """
    from optuna.trial import TrialState

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    ranked = sorted((t for t in complete if np.isfinite(t.values[0])), key=lambda t: -t.values[0])
    pairs = []
    for t in ranked:
        pairs.append((t, "reconstruction", float(t.values[0])))
        value = t.user_attrs.get("residual_value")
        if value is not None and np.isfinite(value):
            pairs.append((t, "residual", float(value)))
    pairs.sort(key=lambda p: -p[2])  # stable: the order above breaks ties
    return pairs[:size]


@dataclass
class Refit:
    """The refitted best trial (and ensemble): its model and what the run summary records."""

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
    ensemble: dict | None = None  # the members and the ensemble's validation value
    member_epochs_run: int = 0  # epochs trained by the refits of the other members' trials
    trial_rows: int = 0  # training rows of a sampled trial
    sample_epochs_run: int = 0  # epochs on those rows, rebuilding the trials' own networks


@dataclass
class _Fit:
    """One trial's network for the model, and what making it cost."""

    detector: object  # the AutoencoderDetector
    params: dict  # the trial's parameters with the epoch count of this network
    epochs: int
    epochs_run: int  # epochs trained on every training row
    sample_epochs: int = 0  # epochs trained on the trial's sample, to rebuild its network
    kept: str = "refit"  # "refit" (every training row) or "trial" (its sample)


def _refit_trial(trial, config, prepared, space, objective) -> _Fit:
    """Trial ``trial``'s network for the model, with its recorded seed.

    Without a sample it trains for the trial's best epoch count and gives the
    trial's own network. After sampled trials it trains on every training row
    for at most that many epochs, scored on every validation row after each,
    and keeps its best epoch; the trial's own network (rebuilt on its sample,
    with its training figures taken on every training row) is kept instead
    when its value on every validation row is better. More rows per epoch
    are more optimiser steps, which for some parameters (a high learning
    rate) fit the anomalies too: on the whole celeba table the refit of the
    best trial scored 0.82 validation AUC-ROC where the trial's network
    scored 0.86 (benchmarks/README.md, "Large tables").
    """
    import optuna

    params = space.sample(optuna.trial.FixedTrial(trial.params))
    best_epoch = int(trial.user_attrs.get("best_epoch") or params.get("epochs", 50))
    seed = int(trial.user_attrs["seed"])
    refit_params = {**params, "epochs": max(1, best_epoch)}
    if objective.prepared is prepared:
        detector = fit_detector(prepared, refit_params, seed=seed)
        return _Fit(detector, refit_params, refit_params["epochs"], detector.training_.epochs)
    evaluate = objective.validation_on(prepared)
    keep_best = EpochTracker(
        evaluate, None, maximize=objective.labeled, patience=config.patience, report=False
    )
    detector = fit_detector(prepared, refit_params, seed=seed, keep_best=keep_best)
    fit = _Fit(
        detector,
        {**refit_params, "epochs": int(detector.n_epochs_)},
        int(detector.n_epochs_),
        int(detector.training_.epochs),
    )
    own = fit_detector(objective.prepared, refit_params, seed=seed)
    fit.sample_epochs = int(own.training_.epochs)
    # The value reads the network alone, so the training figures and the
    # threshold of every row are taken only for the network that is kept.
    refit_value, own_value = keep_best.best, evaluate(own)
    if own_value is not None and (
        refit_value is None
        or (own_value > refit_value if objective.labeled else own_value < refit_value)
    ):
        own.settle(prepared.rows("train")[0])
        validation_threshold(own, prepared)
        fit.detector, fit.kept = own, "trial"
        fit.params, fit.epochs = {**refit_params, "epochs": int(own.n_epochs_)}, int(own.n_epochs_)
    return fit


def refit_best(
    best,
    config: TuneConfig,
    prepared: Prepared,
    space: SearchSpace,
    objective: Objective,
    members: list[tuple] | None = None,
) -> Refit:
    """Refit trial ``best`` (and the trials of ``members``) on every training row.

    ``members``: the (trial, score kind, value) pairs of :func:`select_members`;
    with more than one, or a residual score, the model is their
    :class:`~anomtune.ensemble.Ensemble`, otherwise trial ``best`` alone. The
    threshold maximises F1 on the validation rows (labeled data) or stays the
    training-score quantile; the test rows are scored once.
    """
    started = time.perf_counter()
    best_epoch = int(best.user_attrs.get("best_epoch") or 0)
    trial_rows = len(objective.prepared.train)
    sampled = objective.prepared is not prepared
    fit = _refit_trial(best, config, prepared, space, objective)
    detector, refit_params, epochs = fit.detector, fit.params, fit.epochs
    seed = int(best.user_attrs["seed"])
    scorer, ensemble_record, more, sample_epochs = detector, None, 0, fit.sample_epochs
    if members and (len(members) > 1 or members[0][1] != "reconstruction"):
        scorer, ensemble_record, more, member_sample_epochs = _ensemble(
            members, best, fit, config, prepared, space, objective
        )
        sample_epochs += member_sample_epochs
    _, y_val = prepared.rows("val")
    X_test, y_test = prepared.rows("test")
    val_scores = prepared.scores(scorer, "val")
    if not np.isfinite(val_scores).all():
        raise TrainingError("the refitted best model gives non-finite validation scores")
    test_scores = prepared.scores(scorer, "test")
    threshold = scorer.threshold_
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
        check["kept"] = fit.kept
        check["note"] = (
            f"the trials trained on {trial_rows:,} sampled training rows and were scored on "
            f"{len(objective.prepared.split.val):,} sampled validation rows; the refit trains "
            f"on all {len(prepared.train):,} training rows for at most the trial's "
            f"{best_epoch} epochs and keeps the epoch with the best value on every validation "
            "row, unless the trial's own network is better there (kept: "
            + ("the trial's network" if fit.kept == "trial" else "the refit")
            + ")"
        )
    elif config.cv:
        check["note"] = (
            "the trial value is a cross-validation mean; the refit trains on the train "
            "split and is checked on the validation split"
        )
    else:
        check["matches"] = bool(abs(value - best.values[0]) <= 1e-9)
    if ensemble_record is not None:
        ensemble_record["val_value"] = float(objective.metric(y_val, val_scores))
    return Refit(
        model=prepared.model(scorer),
        trial=best,
        params=refit_params,
        seed=seed,
        epochs=epochs,
        metrics=metrics,
        check=check,
        seconds=time.perf_counter() - started,
        note=note,
        train_rows=len(prepared.train),
        epochs_run=fit.epochs_run,
        ensemble=ensemble_record,
        member_epochs_run=more,
        trial_rows=trial_rows if sampled else 0,
        sample_epochs_run=sample_epochs,
    )


def _ensemble(members, best, fit: _Fit, config, prepared, space, objective):
    """The :class:`~anomtune.ensemble.Ensemble` of ``members`` (``best``'s
    network already made: ``fit``), thresholded on validation: (ensemble,
    record, epochs the other members trained on every training row, and on
    their samples)."""
    from anomtune.ensemble import Ensemble, Member

    fits = {best.number: fit}
    order: list[int] = []
    more = sample_epochs = 0
    for trial, _, _ in members:
        if trial.number not in fits:
            fits[trial.number] = _refit_trial(trial, config, prepared, space, objective)
            more += fits[trial.number].epochs_run
            sample_epochs += fits[trial.number].sample_epochs
        if trial.number not in order:
            order.append(trial.number)
    networks = {n: f.detector for n, f in fits.items()}
    chosen = [
        Member(order.index(trial.number), kind, trial.number, value)
        for trial, kind, value in members
    ]
    X_train, _ = prepared.rows("train")
    ensemble = Ensemble.fit([networks[n] for n in order], chosen, X_train, seed=config.seed)
    _, y_val = prepared.rows("val")
    threshold, _ = best_f1_threshold(y_val, prepared.scores(ensemble, "val"))
    ensemble.set_threshold(threshold, rule="maximises F1 on the validation split")
    record = {
        "size": len(chosen),
        "rule": (
            f"the {config.ensemble} best (trial, score) pairs on validation, each trial offering "
            "its reconstruction error and its residual's distance to the nearest reference "
            "row's; the score is the mean of the pairs' scores, each divided by the "
            "interquartile range of its reference-row scores"
        ),
        "reference_rows": ensemble.reference_rows,
        "members": ensemble.describe(),
    }
    if objective.prepared is not prepared:
        # Which network each member is: its trial's refit or the trial's own.
        for member in record["members"]:
            member["kept"] = fits[member["trial"]].kept
    return ensemble, record, more, sample_epochs
