"""Trials on a sample of the rows (--trial-rows), the refit on all of them, and the record."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import planted_folder, refused, tune_planted, write_planted

from anomtune.data import subsample
from anomtune.tuning.config import TRIAL_ROWS, TuneConfig


@pytest.fixture()
def workdir(tmp_path, monkeypatch):
    return planted_folder(tmp_path, monkeypatch, n=2000)


def tune(*extra: str) -> dict:
    return tune_planted("--trials", "3", *extra)


# -- the parts ------------------------------------------------------------------------


def test_subsample_keeps_each_labels_share_in_order_and_is_seeded():
    labels = np.r_[np.zeros(900, int), np.ones(100, int)]
    positions = np.arange(0, 2000, 2)  # a part of a larger table
    table_labels = np.zeros(2000, int)
    table_labels[positions] = labels
    picked = subsample(positions, table_labels, 200, seed=3)
    assert len(picked) == 200
    assert int(table_labels[picked].sum()) == 20  # 10% anomalies, as in the part
    assert set(picked) <= set(positions) and np.all(np.diff(picked) > 0)
    assert np.array_equal(picked, subsample(positions, table_labels, 200, seed=3))
    assert not np.array_equal(picked, subsample(positions, table_labels, 200, seed=4))
    # A part that fits comes back whole; a rare label keeps at least one row.
    assert np.array_equal(subsample(positions, table_labels, 5000, seed=0), positions)
    rare = np.r_[np.zeros(999, int), 1]
    assert rare[subsample(np.arange(1000), rare, 10, seed=0)].sum() == 1
    assert len(subsample(np.arange(1000), None, 10, seed=0)) == 10


def test_fit_detector_keeps_the_weights_of_its_best_epoch(tmp_path):
    from anomtune.data import read_table
    from anomtune.metrics import auc_roc
    from anomtune.pipeline import fit_detector, prepare
    from anomtune.tuning.objective import EpochTracker, labeled_value

    prepared = prepare(read_table(write_planted(tmp_path / "p.csv", n=600), label="label"))
    X_train, _ = prepared.rows("train")
    X_val, y_val = prepared.rows("val")
    values = []

    def evaluate(detector):
        values.append(labeled_value(auc_roc, X_val, y_val)(detector))
        # A value that falls after epoch 3, so the kept epoch is not the last one.
        return values[-1] - 0.01 * max(0, len(values) - 3)

    tracker = EpochTracker(evaluate, None, maximize=True, patience=50, report=False)
    params = {"variant": "ae", "epochs": 8, "learning_rate": 0.01, "latent_dim": 2}
    detector = fit_detector(prepared, params, seed=0, keep_best=tracker)
    assert detector.training_.epochs == 8 and 1 <= tracker.best_epoch < 8
    assert detector.n_epochs_ == tracker.best_epoch
    kept = values[tracker.best_epoch - 1]
    assert auc_roc(y_val, detector.anomaly_score(X_val)) == pytest.approx(kept, abs=1e-12)
    # What fit derives from the training scores belongs to the kept weights.
    assert detector.max_train_score_ == pytest.approx(float(detector.anomaly_score(X_train).max()))
    again = fit_detector(prepared, {**params, "epochs": tracker.best_epoch}, seed=0)
    assert np.allclose(again.anomaly_score(X_val), detector.anomaly_score(X_val), rtol=1e-5)


def test_the_model_keeps_the_refit_or_the_trials_network_whichever_is_better():
    """After sampled trials, each network is the refit on every row or the trial's own
    (rebuilt on its sample), whichever has the better value on every validation row."""
    import optuna

    from anomtune.metrics import auc_roc
    from anomtune.pipeline import fit_detector
    from anomtune.tuning.objective import EpochTracker, Objective
    from anomtune.tuning.refit import _refit_trial
    from anomtune.tuning.study import _build, trial_view

    cardio = Path(__file__).resolve().parents[1] / "datasets" / "cardio.csv"
    config = TuneConfig(data=str(cardio), label="is_anomaly", trial_rows=200)
    _, prepared, space = _build(config)
    view, record = trial_view(config, prepared)
    assert record["sampled"]
    objective = Objective(config, view, space)
    X_train, _ = prepared.rows("train")
    X_val, y_val = prepared.rows("val")
    fixed = {
        "variant": "ae", "n_layers": 1, "width": 32, "shrink": 0.5, "latent_dim": 2,
        "activation": "relu", "dropout": 0.0, "batch_norm": False, "scaler": "standard",
        "optimizer": "adam", "weight_decay": 1e-5, "batch_size": 64, "epochs": 6,
    }  # fmt: skip
    # On cardio, with these parameters, more optimiser steps help at a high learning
    # rate and hurt at a low one: one network of each kind.
    kept = []
    for rate in (0.03, 0.0003):
        params = {**fixed, "learning_rate": rate}
        trial_space = space.with_overrides({k: {"value": v} for k, v in params.items()})
        trial = optuna.trial.create_trial(
            params={}, distributions={}, value=0.0, user_attrs={"seed": 7, "best_epoch": 6}
        )
        fit = _refit_trial(trial, config, prepared, trial_space, objective)
        full = trial_space.sample(optuna.trial.FixedTrial({}))
        tracker = EpochTracker(
            objective.validation_on(prepared), None, maximize=True, patience=10, report=False
        )
        fit_detector(prepared, full, seed=7, keep_best=tracker)
        own = fit_detector(view, full, seed=7)
        own_value = auc_roc(y_val, own.anomaly_score(X_val))
        chosen = auc_roc(y_val, fit.detector.anomaly_score(X_val))
        assert chosen == pytest.approx(max(tracker.best, own_value), abs=1e-9), rate
        assert fit.kept == ("trial" if own_value > tracker.best else "refit")
        kept.append(fit.kept)
        assert fit.epochs_run == 6 and fit.sample_epochs == 6
        # Its training figures are those of every training row.
        scores = fit.detector.anomaly_score(X_train)
        assert fit.detector.max_train_score_ == pytest.approx(float(scores.max()))
    assert kept == ["refit", "trial"]


def test_prepared_sampled_leaves_a_small_table_alone_and_samples_a_large_one(tmp_path):
    from anomtune.data import read_table
    from anomtune.pipeline import prepare

    table = read_table(write_planted(tmp_path / "p.csv", n=2000), label="label")
    prepared = prepare(table, seed=0)
    same, record = prepared.sampled(5000, seed=0)
    assert same is prepared and record["sampled"] is False
    assert prepared.sampled(None, seed=0)[0] is prepared
    small, record = prepared.sampled(200, seed=0)
    assert record["sampled"] and record["of_train_rows"] == len(prepared.train)
    assert len(small.split.val) == record["val_rows"] <= 200
    assert len(small.train) == record["train_rows"] <= 200
    assert set(small.train) <= set(prepared.train)
    assert set(small.split.val) <= set(prepared.split.val)
    # The anomalies' share of the validation rows is kept; the test rows are untouched.
    share = prepared.y[prepared.split.val].mean()
    assert abs(prepared.y[small.split.val].mean() - share) < 0.02
    assert np.array_equal(small.split.test, prepared.split.test)
    assert small.encoder is prepared.encoder and small.X is prepared.X


def test_the_default_is_the_documented_one():
    from anomtune.cli.tune import tune_command

    assert TuneConfig(data="x.csv").trial_rows == TRIAL_ROWS
    (option,) = [p for p in tune_command.params if p.name == "trial_rows"]
    assert f"[default: {TRIAL_ROWS}]" in option.help


# -- through the command line ------------------------------------------------------------


def test_trials_train_on_the_sample_and_the_refit_on_every_row(workdir):
    summary = tune("--trial-rows", "300", "--study", "sampled", "--report", "sampled.html")
    fidelity = summary["fidelity"]
    trials, refit = fidelity["trials"], fidelity["refit"]
    assert trials["sampled"] is True and trials["rows_limit"] == 300
    assert trials["train_rows"] <= 300 and trials["val_rows"] <= 300
    # 2,000 rows: 1,200 training rows, 1,080 of them normal; 400 validation rows.
    assert trials["of_train_rows"] == refit["train_rows"] == 1080
    assert trials["of_val_rows"] == summary["split"]["rows"]["val"] == 400
    # The refit trains on every row for at most the trial's best epoch count
    # and keeps its best epoch on every validation row, or the trial's own
    # network (its best epoch count) is kept.
    best_epoch = summary["refit"]["trial_best_epoch"]
    assert 1 <= refit["epochs_run"] <= best_epoch
    kept = summary["refit"]["kept"]
    assert kept in ("refit", "trial")
    if kept == "refit":
        assert 1 <= refit["epochs"] <= refit["epochs_run"]
    else:
        assert refit["epochs"] == best_epoch
    assert refit["rows_seen"] == refit["epochs_run"] * refit["train_rows"]
    assert summary["best"]["params"]["epochs"] == refit["epochs"]
    assert {m["kept"] for m in summary["ensemble"]["members"]} <= {"refit", "trial"}
    # The report says which rows each member's network trained on.
    html = (workdir / "sampled.html").read_text()
    members_table = html[html.index('id="ensemble"') :].split("</table>")[0]
    assert "network trained on" in members_table
    labels = {"refit": "every training row", "trial": "the trial&#x27;s sample"}
    for member in summary["ensemble"]["members"]:
        assert labels[member["kept"]] in members_table
    assert members_table.count("<tr>") - 1 == len(summary["ensemble"]["members"])
    # The refits of the ensemble's other trials count too, and so do the trials'
    # networks rebuilt on the sample to compare with them.
    members = refit.get("member_epochs_run", 0) * refit["train_rows"]
    rebuilt = refit["sample_epochs_run"] * trials["train_rows"]
    assert refit["sample_epochs_run"] >= best_epoch
    assert fidelity["rows_trained"] == (
        summary["study"]["epochs_trained"] * trials["train_rows"]
        + refit["rows_seen"]
        + members
        + rebuilt
    )
    # The refit is checked on every validation row, and says why it differs.
    assert "sampled" in summary["refit"]["note"] and "matches" not in summary["refit"]
    assert summary["metrics"]["test"]["auc_roc"] > 0.8
    # The trials' rows are recorded with the study: resuming with another sample is refused.
    err = refused(
        "tune", "planted.csv", "--label", "label", "--space", "space.toml", "--trials", "1",
        "--quiet", "--study", "sampled", "--trial-rows", "500",
    )  # fmt: skip
    assert "trial rows" in err and "--study" in err


def test_a_table_that_fits_the_sample_gives_the_same_result_as_no_sample(workdir):
    default = tune("--study", "fits")
    everything = tune("--study", "all-rows", "--trial-rows", "all")
    assert default["fidelity"]["trials"]["sampled"] is False
    assert everything["fidelity"]["trials"]["rows_limit"] is None
    for key in ("best", "metrics", "threshold"):
        assert default[key] == everything[key], key
    assert default["refit"]["matches"] is True
    rows = json.loads((workdir / "runs" / "fits" / "summary.json").read_text())
    assert rows["fidelity"] == default["fidelity"]


@pytest.mark.parametrize(
    ("value", "needle"),
    [("12", "at least 100"), ("lots", "'all'"), ("-5", "at least 100"), ("1.5", "'all'")],
)
def test_bad_trial_rows_is_one_line_that_names_the_fix(workdir, value, needle):
    err = refused("tune", "planted.csv", "--label", "label", "--trial-rows", value)
    assert "--trial-rows" in err and needle in err
    assert not (workdir / "runs").exists()


def test_the_library_takes_trial_rows_too(workdir):
    import anomtune

    result = anomtune.tune(
        "planted.csv", label="label", space="space.toml", trials=2, trial_rows=300, out="lib"
    )
    assert result.summary.fidelity["trials"]["sampled"] is True
    with pytest.raises(anomtune.ConfigError, match="trial-rows"):
        anomtune.tune("planted.csv", label="label", trial_rows=True)


def test_worker_processes_tune_on_the_sample_too(workdir):
    """Each worker draws the sample from the study's seed; the study records its sizes."""
    summary = tune("--trial-rows", "300", "--workers", "2", "--study", "two")
    assert summary["fidelity"]["trials"]["sampled"] is True
    counts = summary["study"]["trials"]
    assert counts.get("complete", 0) + counts.get("pruned", 0) == 3
    import optuna

    from anomtune.tuning import open_storage

    storage, _ = open_storage(None, ".anomtune")
    study = optuna.load_study(study_name="two", storage=storage)
    assert study.user_attrs["anomtune.trial_rows"] == [
        summary["fidelity"]["trials"]["train_rows"],
        summary["fidelity"]["trials"]["val_rows"],
    ]
    assert len({t.user_attrs["worker"] for t in study.trials}) == 2
