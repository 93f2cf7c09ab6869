"""The parts of tuning one at a time: the space under FixedTrial, best-trial
selection, pruner settings, the epoch tracker, refinement, the run folder
format, ``anomtune.tune`` and the package's public surface."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
from conftest import FAST_SPACE, write_planted
from optuna.distributions import FloatDistribution
from optuna.trial import FixedTrial, TrialState, create_trial

import anomtune
from anomtune.errors import ConfigError, DataError
from anomtune.pipeline import check_param_names, new_detector
from anomtune.run import FORMAT, RunFolder, RunSummary, TrialRecord
from anomtune.space import default_space
from anomtune.tuning import make_pruner, pruner_settings, refine_trials, select_best
from anomtune.tuning.config import PRUNERS
from anomtune.tuning.objective import EpochTracker

ROOT = Path(__file__).resolve().parent.parent


# -- the search space -------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["ae", "sparse", "denoising", "contractive", "vae"])
def test_fixed_trial_gives_detector_parameters_for_every_variant(variant):
    space = default_space(12)
    # Every parameter the space could ask for, at a valid value; the space
    # takes only the ones its conditions make active.
    values = {}
    for p in space.params:
        if p.type == "categorical":
            values[p.name] = variant if p.name == "variant" else p.choices[0]
        elif p.type in ("int", "float"):
            values[p.name] = p.low
    params = space.sample(FixedTrial(values))
    assert params["variant"] == variant
    check_param_names(params)
    new_detector(params, seed=0)._check_params()
    # Conditions hold: a variant's own parameters appear only for it.
    assert ("beta" in params) == (variant == "vae")
    assert ("noise_level" in params) == (variant == "denoising")


# -- best-trial selection ---------------------------------------------------------------


def _study(directions, values_list):
    study = optuna.create_study(directions=directions)
    dist = {"x": FloatDistribution(0, 1)}
    for i, values in enumerate(values_list):
        state = TrialState.COMPLETE if values is not None else TrialState.FAIL
        study.add_trial(
            create_trial(state=state, values=values, params={"x": i / 10}, distributions=dist)
        )
    return study


def test_select_best_single_objective_and_none_without_complete_trials():
    study = _study(["maximize"], [[0.5], [0.9], None, [0.7]])
    assert select_best(study, 0.01).number == 1
    assert select_best(_study(["maximize"], [None, None]), 0.01) is None
    loss = _study(["minimize"], [[3.0], [1.0], [2.0]])
    assert select_best(loss, 0.01).number == 1


def test_select_best_two_objectives_takes_the_cheapest_within_tolerance():
    # (quality, cost): #0 best quality but dear; #1 within 0.005 and cheaper;
    # #2 cheapest but 0.05 worse; #3 dominated.
    values = [[0.95, 10.0], [0.947, 4.0], [0.90, 1.0], [0.80, 20.0]]
    study = _study(["maximize", "minimize"], values)
    assert select_best(study, 0.005).number == 1
    assert select_best(study, 0.0).number == 0
    assert select_best(study, 0.1).number == 2
    # Equal cost: the higher quality wins.
    tie = _study(["maximize", "minimize"], [[0.90, 2.0], [0.93, 2.0]])
    assert select_best(tie, 0.5).number == 1


# -- pruners ------------------------------------------------------------------------------


def test_pruner_settings_name_the_optuna_pruner_and_its_arguments():
    assert pruner_settings("none", cv=True, epochs=50) == {"class": "NopPruner"}
    assert pruner_settings("median", cv=False, epochs=50) == {
        "class": "MedianPruner",
        "n_startup_trials": 5,
        "n_warmup_steps": 5,
    }
    assert pruner_settings("sha", cv=True, epochs=50)["class"] == "WilcoxonPruner"
    assert pruner_settings("hyperband", cv=False, epochs=200)["max_resource"] == 200
    assert pruner_settings("hyperband", cv=False, epochs=5)["max_resource"] == 11
    for name in PRUNERS:
        settings = pruner_settings(name, cv=False, epochs=40)
        pruner = make_pruner(name, cv=False, epochs=40)
        assert type(pruner).__name__ == settings["class"]


# -- the epoch tracker --------------------------------------------------------------------


class _RecordingTrial:
    """Records what a tracker reports; prunes from a given step on."""

    def __init__(self, prune_from: int | None = None):
        self.reported: list[tuple[float, int]] = []
        self.attrs: dict = {}
        self.prune_from = prune_from

    def report(self, value, step):
        self.reported.append((value, step))

    def should_prune(self):
        return self.prune_from is not None and self.reported[-1][1] >= self.prune_from

    def set_user_attr(self, key, value):
        self.attrs[key] = value


def test_epoch_tracker_keeps_the_running_best_and_stops_after_patience():
    values = iter([0.5, 0.7, None, 0.6, 0.65, 0.69])
    trial = _RecordingTrial()
    tracker = EpochTracker(lambda d: next(values), trial, maximize=True, patience=3)
    stops = [tracker(epoch, None) for epoch in range(1, 7)]
    assert tracker.best == 0.7 and tracker.best_epoch == 2 and tracker.epochs == 6
    # Reported values are the running best, so a pruner never sees a dip.
    assert [v for v, _ in trial.reported] == [0.5, 0.7, 0.7, 0.7, 0.7, 0.7]
    assert stops == [False, False, False, False, True, True]


def test_epoch_tracker_minimises_a_loss_and_prunes():
    values = iter([3.0, 2.0, 2.5, 1.0])
    trial = _RecordingTrial(prune_from=3)
    tracker = EpochTracker(lambda d: next(values), trial, maximize=False, patience=10)
    tracker(1, None)
    tracker(2, None)
    with pytest.raises(optuna.TrialPruned):
        tracker(3, None)
    assert tracker.best == 2.0
    assert trial.attrs == {"epochs": 3, "best_epoch": 2}


def test_epoch_tracker_without_reporting_never_prunes():
    trial = _RecordingTrial(prune_from=1)
    tracker = EpochTracker(lambda d: 1.0, trial, maximize=True, patience=5, report=False)
    assert tracker(1, None) is False and trial.reported == []


# -- the run folder -----------------------------------------------------------------------


def _summary(**changes) -> dict:
    doc = {
        "config": {"data": "d.csv", "label": "y"},
        "data": {"fingerprint": "sha256:abc"},
        "split": {"seed": 0, "val_size": 0.2, "test_size": 0.2},
        "study": {"name": "s", "storage": "j", "directions": ["maximize"]},
        "best": None,
        "seed": 0,
    }
    doc.update(changes)
    return doc


def _run_folder(tmp_path, summary: dict, trials: list[dict]):
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "summary.json").write_text(json.dumps(summary))
    pd.DataFrame(trials).to_csv(folder / "trials.csv", index=False)
    (folder / "space.toml").write_text(default_space(6).to_toml())
    return folder


def test_summary_round_trips_and_old_summaries_without_format_are_read(tmp_path):
    legacy = _summary(note="x", registered={"ref": "m/1"})
    summary = RunSummary.from_dict(legacy)
    assert summary.format == FORMAT and summary.note == "x"
    doc = summary.to_dict()
    assert doc["format"] == FORMAT and doc["best"] is None
    assert "metrics" not in doc and "pareto_front" not in doc  # absent keys stay absent
    assert RunSummary.from_dict(doc) == summary
    folder = _run_folder(tmp_path, legacy, [])
    assert RunFolder.open(folder).summary.study_name == "s"


def test_summaries_of_another_format_or_shape_are_refused(tmp_path):
    with pytest.raises(DataError, match="run format 'anomtune-run/2'"):
        RunSummary.from_dict(_summary(format="anomtune-run/2"))
    with pytest.raises(DataError, match="not an anomtune run summary"):
        RunSummary.from_dict({"best": None})
    with pytest.raises(ConfigError, match="not a run folder \\(no such folder\\)"):
        RunFolder.open(tmp_path / "nowhere")
    with pytest.raises(ConfigError, match=r"no summary\.json"):
        RunFolder.open(tmp_path)
    (tmp_path / "summary.json").write_text("{")
    with pytest.raises(DataError, match="not valid JSON"):
        RunFolder.open(tmp_path)


def test_trial_records_type_their_parameters_by_the_space():
    space = default_space(8)
    record = TrialRecord(
        0, "complete", 0.9, {"variant": "vae", "n_layers": "2.0", "beta": "0.5", "bogus": "1"}
    )
    assert record.typed_params(space) == {"variant": "vae", "n_layers": 2, "beta": 0.5}
    assert TrialRecord(1, "complete", 0.9, {"variant": "gan"}).typed_params(space) == {}


def test_refinement_takes_the_best_quarter_of_completed_trials(tmp_path):
    trials = [
        {"number": i, "state": "complete", "value": v, "params_width": w, "params_batch_size": b}
        for i, (v, w, b) in enumerate(
            [(0.5, 8, 64), (0.9, 16, 128), (0.7, 9, 64), (0.6, 10, 64), (0.8, 12, 128)]
        )
    ]
    trials.append(
        {"number": 5, "state": "pruned", "value": 0.99, "params_width": 15, "params_batch_size": 64}
    )
    run = RunFolder.open(_run_folder(tmp_path, _summary(), trials))
    # Five completed trials: the best quarter is the top two (ceil(5 / 4)).
    assert refine_trials(run, run.space()) == [
        {"width": 16, "batch_size": 128},
        {"width": 12, "batch_size": 128},
    ]


def test_refinement_of_a_loss_takes_the_lowest_values(tmp_path):
    summary = _summary(study={"name": "s", "directions": ["minimize"]})
    trials = [
        {"number": i, "state": "complete", "value": v, "params_width": w}
        for i, (v, w) in enumerate([(3.0, 8), (1.0, 16), (2.0, 12)])
    ]
    run = RunFolder.open(_run_folder(tmp_path, summary, trials))
    assert refine_trials(run, run.space()) == [{"width": 16}]


def test_refinement_needs_completed_trials(tmp_path):
    trials = [{"number": 0, "state": "fail", "value": ""}]
    run = RunFolder.open(_run_folder(tmp_path, _summary(), trials))
    with pytest.raises(ConfigError, match="no completed trials"):
        refine_trials(run, run.space())


# -- anomtune.tune and the public surface -------------------------------------------------


def test_public_surface_is_exactly_all():
    public = {
        "AnomtuneError",
        "AutoencoderDetector",
        "ConfigError",
        "DataError",
        "Table",
        "TrainingError",
        "__version__",
        "load",
        "read_table",
        "split_rows",
        "tune",
    }
    assert set(anomtune.__all__) == public
    assert len(anomtune.__all__) == len(public)
    for name in anomtune.__all__:
        assert getattr(anomtune, name) is not None
    with pytest.raises(AttributeError):
        anomtune.run_study  # noqa: B018 (internal, not exported)


def test_tune_from_a_dataframe_gives_model_metrics_export_and_report(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    frame = pd.read_csv(write_planted(tmp_path / "p.csv"))
    (tmp_path / "space.toml").write_text(FAST_SPACE)
    result = anomtune.tune(
        frame, label="label", trials=2, space="space.toml", storage="s.journal", out="run"
    )
    assert set(result.best_params) >= {"width", "batch_size", "epochs"}
    assert result.metrics["test"]["auc_roc"] > 0.7
    scores = result.model.anomaly_score(frame.drop(columns="label"))
    assert scores.shape == (len(frame),) and np.isfinite(scores).all()
    onnx_path = result.export(tmp_path / "m.onnx")
    scorer = anomtune.load(str(onnx_path))
    np.testing.assert_allclose(
        scorer.score(frame).score, scores.astype(np.float32), rtol=1e-4, atol=1e-6
    )
    assert result.report(tmp_path / "r.html").read_text().startswith("<!DOCTYPE html>")
    # The same frame again resumes the same study (named by the frame's content).
    again = anomtune.tune(
        frame, label="label", trials=1, space="space.toml", storage="s.journal", out="run"
    )
    assert again.summary.study["resumed"] and again.summary.study_name == result.summary.study_name


def test_the_readme_python_example_runs(tmp_path):
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    example = [b for b in blocks if "anomtune.tune(" in b]
    assert example, "README.md has no python block calling anomtune.tune"
    (tmp_path / "datasets").symlink_to(ROOT / "datasets")
    proc = subprocess.run(
        [sys.executable, "-c", example[0]],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    assert proc.returncode == 0, proc.stderr
