"""The tuned ensemble: its residual score, its members, their choice, and its graph."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pandas as pd
import pytest
import torch
from conftest import ok, planted_folder, refused, tune_planted, write_planted
from sklearn.neighbors import NearestNeighbors

from anomtune.ensemble import (
    REFERENCE_ROWS,
    Ensemble,
    Member,
    nearest_distance,
    reference_positions,
    residual_scores,
)


@pytest.fixture()
def workdir(tmp_path, monkeypatch):
    return planted_folder(tmp_path, monkeypatch, n=600)


def tune(*extra: str) -> dict:
    return tune_planted("--trials", "6", *extra)


def _fitted(seed: int, n: int = 400):
    from anomtune.data import read_table
    from anomtune.pipeline import fit_detector, prepare

    prepared = prepare(read_table(write_planted(f"p{seed}.csv", n=n, seed=seed), label="label"))
    params = {"variant": "ae", "epochs": 5, "learning_rate": 0.01, "latent_dim": 2}
    return prepared, [fit_detector(prepared, {**params, "width": w}, seed=w) for w in (8, 12)]


# -- the residual score ---------------------------------------------------------------


def test_nearest_distance_is_the_exact_nearest_neighbour_distance():
    rng = np.random.default_rng(0)
    ref, q = rng.normal(size=(300, 7)), rng.normal(size=(50, 7))
    q[:5] = ref[10:15]  # rows equal to reference rows: exactly 0, not rounding noise
    tr, tq = torch.from_numpy(ref), torch.from_numpy(q)
    got = nearest_distance(tq, tr, (tr * tr).sum(dim=1)).numpy()
    want = NearestNeighbors(n_neighbors=1).fit(ref).kneighbors(q)[0][:, 0]
    assert np.allclose(got, want, atol=1e-12)
    assert np.all(got[:5] == 0.0)
    # Leaving each reference row out gives its distance to the nearest other row.
    own = nearest_distance(tr, tr, (tr * tr).sum(dim=1), torch.arange(300)).numpy()
    want = NearestNeighbors(n_neighbors=2).fit(ref).kneighbors(ref)[0][:, 1]
    assert np.allclose(own, want, atol=1e-12)


def test_reference_rows_are_every_training_row_up_to_the_cap_then_a_seeded_sample():
    assert np.array_equal(reference_positions(500, seed=0), np.arange(500))
    big = reference_positions(REFERENCE_ROWS + 1000, seed=3)
    assert len(big) == REFERENCE_ROWS and np.all(np.diff(big) > 0)
    assert np.array_equal(big, reference_positions(REFERENCE_ROWS + 1000, seed=3))
    assert not np.array_equal(big, reference_positions(REFERENCE_ROWS + 1000, seed=4))


def test_the_residual_score_ranks_the_planted_anomalies_first(tmp_path, monkeypatch):
    from anomtune.metrics import auc_roc

    monkeypatch.chdir(tmp_path)
    prepared, (detector, _) = _fitted(0, n=600)
    X_train, _ = prepared.rows("train")
    X_val, y_val = prepared.rows("val")
    scores = residual_scores(detector, X_train, X_val)
    assert scores.shape == (len(X_val),) and np.all(scores >= 0)
    assert auc_roc(y_val, scores) > 0.9
    # A training row's own residual is in the reference: distance 0.
    assert np.all(residual_scores(detector, X_train, X_train[:20]) == 0.0)


# -- the ensemble ------------------------------------------------------------------


def test_each_member_is_scaled_by_its_spread_on_the_reference_rows(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    prepared, detectors = _fitted(1)
    X_train, _ = prepared.rows("train")
    members = [Member(0, "reconstruction"), Member(1, "residual"), Member(1, "reconstruction")]
    ensemble = Ensemble.fit(detectors, members, X_train, seed=0)
    # The reconstruction member: interquartile range 1 on the training rows.
    s = detectors[0].anomaly_score(X_train) / ensemble.scale[0]
    q1, q3 = np.percentile(s, [25, 75])
    assert q3 - q1 == pytest.approx(1, abs=1e-9)
    # The residual member: its training rows' distances leave each row out.
    own = NearestNeighbors(n_neighbors=2).fit(_residuals(detectors[1], X_train))
    d = own.kneighbors(_residuals(detectors[1], X_train))[0][:, 1]
    q1, q3 = np.percentile(d, [25, 75])
    assert ensemble.scale[1] == pytest.approx(q3 - q1, rel=1e-4)
    # The score is the mean of the members' scaled scores, and never below 0.
    X_val, _ = prepared.rows("val")
    res = residual_scores(detectors[1], X_train, X_val)
    parts = [
        detectors[0].anomaly_score(X_val) / ensemble.scale[0],
        res / ensemble.scale[1],
        detectors[1].anomaly_score(X_val) / ensemble.scale[2],
    ]
    scores = ensemble.anomaly_score(X_val)
    assert np.allclose(scores, np.mean(parts, axis=0), atol=1e-5)
    assert np.all(scores >= 0)
    # The highest training score: what an unseen categorical value adds.
    train = ensemble.anomaly_score(X_train)
    assert 0 < train.max() <= ensemble.max_train_score_
    # The per-feature errors are the networks' mean.
    mean_errors = (detectors[0].feature_errors(X_val) + detectors[1].feature_errors(X_val)) / 2
    assert np.allclose(ensemble.feature_errors(X_val), mean_errors, atol=1e-9)
    assert ensemble.max_train_score_ > 0 and ensemble.max_train_error_ > 0
    with pytest.raises(ValueError, match="features"):
        ensemble.anomaly_score(X_val[:, :3])


def test_select_members_takes_the_best_pairs_with_ties_kept_in_trial_order():
    import optuna

    from anomtune.tuning.refit import select_members

    study = optuna.create_study(direction="maximize")
    for value, residual in ((0.80, 0.95), (0.90, None), (0.90, 0.70), (0.85, 0.90)):
        study.add_trial(
            optuna.trial.create_trial(
                value=value, user_attrs={"residual_value": residual} if residual else {}
            )
        )
    study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.PRUNED))
    picked = [(t.number, kind, v) for t, kind, v in select_members(study, 4)]
    assert picked == [
        (0, "residual", 0.95),
        (1, "reconstruction", 0.90),
        (2, "reconstruction", 0.90),
        (3, "residual", 0.90),
    ]
    assert len(select_members(study, 20)) == 7


# -- through the command line -----------------------------------------------------------


def test_tune_ships_the_ensemble_and_records_its_members(workdir):
    summary = tune("--out", "run")
    ensemble = summary["ensemble"]
    members = ensemble["members"]
    assert ensemble["size"] == len(members) == 5
    trials = {t["number"]: t for t in _trials(workdir / "run")}
    offered = sorted(
        [(float(t["value"]), n) for n, t in trials.items() if t["value"]]
        + [(float(t["residual_value"]), n) for n, t in trials.items() if t["residual_value"]],
        reverse=True,
    )
    # The members are the five best pairs on validation.
    assert sorted((m["value"] for m in members), reverse=True) == [v for v, _ in offered[:5]]
    assert {m["score"] for m in members} <= {"reconstruction", "residual"}
    # The threshold maximises F1 on validation; the metrics are the ensemble's.
    assert summary["threshold_rule"] == "maximises F1 on the validation split"
    assert summary["metrics"]["val"]["auc_roc"] == pytest.approx(ensemble["val_value"])
    assert summary["refit"]["matches"] is True  # the best trial's network is the trial's own
    doc = json.loads((workdir / "run" / "model" / "model.json").read_text())
    assert doc["format"] == "anomtune-ensemble/1" and len(doc["members"]) == 5


def test_ensemble_1_ships_the_best_trial_alone(workdir):
    summary = tune("--out", "run", "--ensemble", "1")
    assert "ensemble" not in summary
    doc = json.loads((workdir / "run" / "model" / "model.json").read_text())
    assert doc["format"] == "anomtune-model/1"


@pytest.mark.parametrize("value", ["0", "21", "two"])
def test_bad_ensemble_sizes_are_refused(workdir, value):
    err = refused("tune", "planted.csv", "--label", "label", "--ensemble", value)
    assert "--ensemble" in err


def test_the_ensemble_scores_the_same_in_python_onnx_and_after_loading(workdir):
    from anomtune.model import AnomalyModel
    from anomtune.run import RunFolder

    frame = pd.read_csv("planted.csv")
    frame["kind"] = np.where(np.arange(len(frame)) % 2, "a", "b")
    frame.to_csv("cat.csv", index=False)
    ok(
        "tune", "cat.csv", "--label", "label", "--space", "space.toml", "--trials", "4",
        "--quiet", "--out", "run",
    )  # fmt: skip
    model = RunFolder.open("run").model()
    assert isinstance(model.detector, Ensemble)
    ok("export", "run", "-o", "m.onnx")
    rows = frame.drop(columns="label").iloc[:50].copy()
    rows.loc[rows.index[:3], "kind"] = "never seen"
    python = model.anomaly_score(rows)
    again = AnomalyModel.load("run/model").anomaly_score(rows)
    assert np.array_equal(python, again)
    session = ort.InferenceSession("m.onnx", providers=["CPUExecutionProvider"])
    feeds = {
        "numeric": rows[[f"x{i}" for i in range(6)]].to_numpy(np.float32),
        "categorical": rows[["kind"]].to_numpy(object),
    }
    score, errors, label = session.run(None, feeds)
    assert np.allclose(score, python, atol=1e-4 * np.maximum(1, np.abs(python)))
    assert np.array_equal(label, python > model.threshold)
    # An unseen value ranks its row above every training row, and --explain names it.
    assert np.all(python[:3] > model.detector.max_train_score_)
    assert np.all(errors[:3].argmax(axis=1) == rows.columns.get_loc("kind"))
    # The score command gives the graph's scores for every row of the file.
    ok("score", "m.onnx", "cat.csv", "-o", "scores.csv")
    scored = pd.read_csv("scores.csv")
    assert len(scored) == len(frame)
    whole = model.anomaly_score(frame.drop(columns="label"))
    assert np.allclose(scored["score"], whole, atol=1e-4 * np.maximum(1, np.abs(whole)))


def _residuals(detector, X):
    from anomtune.ensemble import _double, _residuals

    return _residuals(_double(detector.module_), X)


def _trials(run) -> list[dict]:
    import csv

    with open(run / "trials.csv") as f:
        rows = list(csv.DictReader(f))
    return [
        {
            "number": int(r["number"]),
            "value": r["value"] if r["state"] == "complete" else "",
            "residual_value": r.get("residual_value", "") if r["state"] == "complete" else "",
        }
        for r in rows
    ]
