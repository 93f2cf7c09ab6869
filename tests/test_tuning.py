"""End-to-end tuning: samplers, pruners, resume, workers, determinism, run folder."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
from conftest import FAST_SPACE, run_cli, write_planted

from anomtune.tuning import open_storage


@pytest.fixture()
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_planted(tmp_path / "planted.csv")
    (tmp_path / "space.toml").write_text(FAST_SPACE)
    return tmp_path


def tune_args(*extra: str) -> list[str]:
    return ["tune", "planted.csv", "--label", "label", "--space", "space.toml", "--quiet", *extra]


@pytest.mark.parametrize("sampler", ["tpe", "random", "gp", "cmaes", "qmc"])
def test_every_sampler_runs_end_to_end(workdir, capsys, sampler):
    code, out, err = run_cli(
        tune_args("--sampler", sampler, "--trials", "3", "--study", sampler, "--json"), capsys
    )
    assert code == 0, err
    summary = json.loads(out)
    assert summary["study"]["sampler"] == sampler
    assert summary["study"]["trials"]["complete"] + summary["study"]["trials"]["pruned"] == 3
    assert summary["metrics"]["test"]["auc_roc"] > 0.6
    assert (workdir / "runs" / sampler / "model" / "weights.npz").exists()


def test_command_line_pruner_default_is_the_measured_one():
    from anomtune.cli.tune import tune_command
    from anomtune.tuning.config import DEFAULT_PRUNER, PRUNERS, TuneConfig

    (option,) = [p for p in tune_command.params if p.name == "pruner"]
    assert option.default == DEFAULT_PRUNER == TuneConfig(data="x.csv").pruner
    assert set(option.type.choices) == set(PRUNERS)


@pytest.mark.parametrize("pruner", ["median", "sha", "hyperband", "none"])
def test_every_pruner_runs_end_to_end(workdir, capsys, pruner):
    space = FAST_SPACE.replace("epochs = 6", "epochs = 15")
    (workdir / "space.toml").write_text(space)
    code, out, err = run_cli(
        tune_args(
            "--pruner", pruner, "--trials", "8", "--study", pruner, "--json", "--sampler", "random"
        ),
        capsys,
    )
    assert code == 0, err
    summary = json.loads(out)
    assert summary["study"]["pruner"] == pruner
    # The Optuna class and arguments are recorded with the result.
    settings = summary["study"]["pruner_settings"]
    expected = {"none": "NopPruner", "median": "MedianPruner", "sha": "SuccessiveHalvingPruner"}
    assert settings["class"] == expected.get(pruner, "HyperbandPruner")
    if pruner == "hyperband":
        assert settings["max_resource"] == 15
    trials = pd.read_csv(workdir / "runs" / pruner / "trials.csv")
    assert len(trials) == 8
    assert set(trials["state"]) <= {"complete", "pruned"}
    # A pruned trial records the epochs it ran, fewer than the budget.
    pruned = trials[trials["state"] == "pruned"]
    assert (pruned["epochs"] < 15).all()
    if pruner == "none":
        assert pruned.empty


def test_grid_runs_every_combination_once(workdir, capsys):
    code, out, err = run_cli(tune_args("--sampler", "grid", "--trials", "100", "--json"), capsys)
    assert code == 0, err
    summary = json.loads(out)
    trials = pd.read_csv(workdir / "runs" / "planted" / "trials.csv")
    # Two widths times: ae, contractive, sparse (l1/kl), denoising (gaussian/mask) and
    # vae (beta 0.5/1.0 times reconstruction/elbo scoring).
    expected = 2 * (1 + 1 + 2 + 2 + 4)
    assert len(trials) == expected
    combos = trials.filter(like="params_").map(repr).agg("|".join, axis=1)
    assert combos.is_unique
    assert summary["study"]["trials"]["complete"] + summary["study"]["trials"]["pruned"] == expected
    # Running again finds nothing left to try and adds no trial.
    code, out, err = run_cli(tune_args("--sampler", "grid", "--trials", "100", "--json"), capsys)
    assert code == 0, err
    assert len(pd.read_csv(workdir / "runs" / "planted" / "trials.csv")) == expected


def test_startup_trials_are_the_random_trials_of_the_same_seed(workdir, capsys):
    """TPE's startup trials are random search's trials; --startup-trials sets how many."""

    def params(sampler: str, *extra: str) -> tuple[dict, list[dict]]:
        name = f"{sampler}{''.join(extra)}"
        args = ["--sampler", sampler, "--trials", "4", "--ensemble", "1", "--study", name]
        code, out, err = run_cli(tune_args(*args, *extra, "--json"), capsys)
        assert code == 0, err
        trials = pd.read_csv(workdir / "runs" / name / "trials.csv")
        combos = trials.sort_values("number").filter(like="params_")
        # A parameter a trial does not have is empty (its column comes from another trial).
        return json.loads(out)["study"], [r.dropna().to_dict() for _, r in combos.iterrows()]

    random_study, random_trials = params("random")
    tpe_study, tpe_trials = params("tpe")
    short_study, short_trials = params("tpe", "--startup-trials", "2")
    assert random_study["startup_trials"] is None
    assert tpe_study["startup_trials"] == 10 and short_study["startup_trials"] == 2
    # All four are within TPE's 10 default startup trials.
    assert tpe_trials == random_trials
    assert short_trials[:2] == random_trials[:2]
    assert short_trials[2:] != random_trials[2:]


def test_run_folder_contents_and_refit_check(workdir, capsys):
    code, _, err = run_cli(tune_args("--trials", "4", "--seed", "3", "--json"), capsys)
    assert code == 0, err
    run = workdir / "runs" / "planted"
    summary = json.loads((run / "summary.json").read_text())
    for key in ("auc_roc", "auc_pr", "f1"):
        assert 0.0 <= summary["metrics"]["test"][key] <= 1.0
        assert key in summary["metrics"]["val"]
    assert summary["seed"] == 3
    assert summary["data"]["fingerprint"].startswith("sha256:")
    assert summary["split"]["rows"] == {"train": 180, "val": 60, "test": 60}
    for lib in ("python", "torch", "optuna", "scikit-learn", "onnx", "onnxruntime", "anomtune"):
        assert summary["versions"][lib]
    assert summary["study"]["name"] == "planted"
    assert summary["study"]["storage"].endswith("studies.journal")
    assert summary["refit"]["matches"] is True
    assert summary["refit"]["val_value"] == pytest.approx(summary["best"]["value"], abs=1e-12)
    assert summary["best"]["params"]["epochs"] == summary["best"]["epochs"]
    with open(run / "trials.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 4
    assert {"number", "state", "value", "epochs", "duration_s", "seed"} <= set(rows[0])
    assert len({r["seed"] for r in rows}) == 4
    # No pickle anywhere: the weights load with allow_pickle=False.
    with np.load(run / "model" / "weights.npz", allow_pickle=False) as data:
        assert data.files


def test_same_command_same_seed_same_best_params(workdir, capsys):
    bests = []
    for name in ("first", "second"):
        code, out, err = run_cli(
            tune_args(
                "--trials",
                "5",
                "--seed",
                "7",
                "--study",
                name,
                "--json",
                "--storage",
                f"{name}.journal",
            ),
            capsys,
        )
        assert code == 0, err
        summary = json.loads(out)
        bests.append((summary["best"]["params"], summary["best"]["value"]))
    assert bests[0] == bests[1]


def test_rerun_resumes_and_adds_trials(workdir, capsys):
    code, out, err = run_cli(tune_args("--trials", "3", "--json"), capsys)
    assert code == 0, err
    first = pd.read_csv(workdir / "runs" / "planted" / "trials.csv")
    code, out, err = run_cli(tune_args("--trials", "2", "--json"), capsys)
    assert code == 0, err
    assert json.loads(out)["study"]["resumed"] is True
    second = pd.read_csv(workdir / "runs" / "planted" / "trials.csv")
    assert len(second) == 5
    pd.testing.assert_frame_equal(
        first[["number", "state", "value"]], second.head(3)[["number", "state", "value"]]
    )


def test_resume_refuses_other_data(workdir, capsys):
    code, _, err = run_cli(tune_args("--trials", "1"), capsys)
    assert code == 0, err
    write_planted(workdir / "planted.csv", seed=1)
    code, _, err = run_cli(tune_args("--trials", "1"), capsys)
    assert code == 2
    assert "another data fingerprint" in err and "--study" in err
    assert len(err.strip().splitlines()) == 1


def test_two_workers_share_one_journal_and_finish_exactly_n(workdir, capsys):
    code, _, err = run_cli(
        tune_args("--trials", "6", "--workers", "2", "--study", "shared", "--json"), capsys
    )
    assert code == 0, err
    storage, _ = open_storage(None, workdir / ".anomtune")
    study = optuna.load_study(study_name="shared", storage=storage)
    assert len(study.trials) == 6
    assert len({t.number for t in study.trials}) == 6
    workers = {t.user_attrs["worker"] for t in study.trials}
    assert len(workers) == 2
    assert all(t.state.is_finished() for t in study.trials)


def test_interrupt_keeps_finished_trials_and_resumes(workdir):
    (workdir / "space.toml").write_text(FAST_SPACE.replace("epochs = 6", "epochs = 400"))
    cmd = [sys.executable, "-m", "anomtune", *tune_args("--trials", "50", "--pruner", "none")]
    proc = subprocess.Popen(
        cmd, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    journal = workdir / ".anomtune" / "studies.journal"
    storage = None
    deadline = time.monotonic() + 120
    complete = 0
    while time.monotonic() < deadline and complete < 2:
        time.sleep(0.5)
        if journal.exists():
            storage = storage or open_storage(str(journal))[0]
            try:
                study = optuna.load_study(study_name="planted", storage=storage)
            except KeyError:
                continue
            complete = sum(t.state.name == "COMPLETE" for t in study.get_trials())
    assert complete >= 2, "the run did not complete two trials in time"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    summary = json.loads((workdir / "runs" / "planted" / "summary.json").read_text())
    assert summary["interrupted"] is True
    kept = summary["study"]["trials"]["complete"]
    assert kept >= 2
    assert summary["study"]["trials"].get("running", 0) == 0
    # Resuming adds trials and keeps every finished one.
    env = dict(os.environ)
    cmd = [sys.executable, "-m", "anomtune", *tune_args("--trials", "1", "--json")]
    done = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    resumed = json.loads(done.stdout)
    assert resumed["study"]["resumed"] is True
    assert resumed["study"]["trials"]["complete"] >= kept


def _children(pid: int) -> list[int]:
    kids = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        kids.extend(int(k) for k in text)
    return kids


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs /proc")
def test_a_killed_worker_fails_its_trial_and_the_run_says_so(workdir):
    (workdir / "space.toml").write_text(FAST_SPACE.replace("epochs = 6", "epochs = 300"))
    cmd = [
        sys.executable,
        "-m",
        "anomtune",
        *tune_args("--trials", "12", "--workers", "2", "--pruner", "none", "--json"),
    ]
    proc = subprocess.Popen(
        cmd, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    journal = workdir / ".anomtune" / "studies.journal"
    deadline = time.monotonic() + 120
    victim = None
    while time.monotonic() < deadline and victim is None:
        time.sleep(0.3)
        if not journal.exists():
            continue
        study = optuna.load_study(study_name="planted", storage=open_storage(str(journal))[0])
        running = [t for t in study.get_trials() if t.state.name == "RUNNING"]
        if running and any(t.state.name == "COMPLETE" for t in study.get_trials()):
            victim = int(running[0].user_attrs["worker"].rpartition(":")[2])
    assert victim is not None and victim in _children(proc.pid)
    os.kill(victim, signal.SIGKILL)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 1, err
    assert "worker" in err and "SIGKILL" in err and "resumes the study" in err
    summary = json.loads(out)
    assert summary == json.loads((workdir / "runs" / "planted" / "summary.json").read_text())
    assert summary["workers"]["count"] == 2
    assert [f["exit_code"] for f in summary["workers"]["failed"]] == [-signal.SIGKILL]
    assert summary["study"]["trials"].get("running", 0) == 0
    assert summary["study"]["trials"]["fail"] >= 1
    assert summary["best"] is not None
    trials = pd.read_csv(workdir / "runs" / "planted" / "trials.csv")
    killed = trials[trials["state"] == "fail"]
    assert len(killed) >= 1
    assert killed["fail_reason"].str.contains("worker process ended").all()


def test_enqueue_runs_given_parameters_first(workdir, capsys):
    params = {"variant": "vae", "beta": 0.7, "width": 12, "n_layers": 1}
    (workdir / "warm.json").write_text(json.dumps(params))
    code, _, err = run_cli(tune_args("--trials", "2", "--enqueue", "warm.json"), capsys)
    assert code == 0, err
    trials = pd.read_csv(workdir / "runs" / "planted" / "trials.csv")
    first = trials.iloc[0]
    assert first["params_variant"] == "vae"
    assert first["params_beta"] == pytest.approx(0.7)
    assert first["params_width"] == 12


def test_multi_objective_reports_front_and_rule(workdir, capsys):
    code, out, err = run_cli(
        tune_args("--trials", "5", "--objectives", "auc-pr,size", "--sampler", "random", "--json"),
        capsys,
    )
    assert code == 0, err
    summary = json.loads(out)
    assert summary["study"]["directions"] == ["maximize", "minimize"]
    front = summary["pareto_front"]
    assert front and summary["best"]["number"] in {t["number"] for t in front}
    top = max(t["values"][0] for t in front)
    chosen = summary["best"]["values"]
    assert chosen[0] >= top - 0.005
    near = [t for t in front if t["values"][0] >= top - 0.005]
    assert chosen[1] == min(t["values"][1] for t in near)
    assert "lowest size" in summary["best_rule"]


def test_cv_uses_folds_and_records_them(workdir, capsys):
    code, out, err = run_cli(tune_args("--trials", "3", "--cv", "3", "--json"), capsys)
    assert code == 0, err
    summary = json.loads(out)
    assert summary["cv"] == 3
    assert summary["study"]["pruner"] == "wilcoxon (folds)"
    assert summary["study"]["pruner_settings"]["class"] == "WilcoxonPruner"
    storage, _ = open_storage(None, workdir / ".anomtune")
    study = optuna.load_study(study_name="planted", storage=storage)
    for t in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)):
        folds = t.user_attrs["fold_values"]
        assert len(folds) == 3
        assert t.value == pytest.approx(float(np.mean(folds)))


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("[widht]\nlow = 1\nhigh = 3\n", "did you mean 'width'"),
        ("[width]\nlow = 30\nhigh = 10\n", "low (30) is greater than high (10)"),
        ("[learning_rate]\nlow = 0.0\nhigh = 0.1\nlog = true\n", "log scale needs low > 0"),
        ("[width]\nlwo = 3\n", "unknown key 'lwo'"),
        ("[width\n", "not valid TOML"),
        ('variants = ["ae", "gan"]\n', "gan"),
        ("[dropout]\nchoices = []\n", "non-empty list"),
    ],
)
def test_space_file_errors_name_the_key(workdir, capsys, text, needle):
    (workdir / "bad.toml").write_text(text)
    code, _, err = run_cli(
        ["tune", "planted.csv", "--label", "label", "--space", "bad.toml", "--trials", "1"],
        capsys,
    )
    assert code == 2
    assert needle in err
    assert len(err.strip().splitlines()) == 1
    assert "Traceback" not in err
    assert not (workdir / "runs").exists()


def test_bad_options_are_one_line_errors(workdir, capsys):
    for args, needle in [
        (["--trials", "0"], "--trials must be at least 1"),
        (["--sampler", "annealing"], "annealing"),
        (["--objectives", "auc-pr,color"], "--objectives"),
        (["--storage", "nosuchdb://x"], "cannot open storage"),
        (["--sampler", "random", "--startup-trials", "5"], "--startup-trials applies to"),
        (["--startup-trials", "0"], "--startup-trials"),
    ]:
        code, _, err = run_cli(["tune", "planted.csv", "--label", "label", *args], capsys)
        assert code == 2, args
        assert needle in err, err
        assert len(err.strip().splitlines()) == 1


def test_space_command_prints_default_and_refines(workdir, capsys):
    code, out, err = run_cli(["space", "--features", "10"], capsys)
    assert code == 0
    assert "[variant]" in out and "[sparsity_weight]" in out and "when = " in out
    (workdir / "printed.toml").write_text(out)
    code, _, err = run_cli(tune_args("--trials", "6", "--sampler", "random"), capsys)
    assert code == 0, err
    code, out, err = run_cli(["space", "--refine", "runs/planted", "-o", "fine.toml"], capsys)
    assert code == 0, err
    from anomtune.space import load_space

    fine = load_space(workdir / "fine.toml")
    trials = pd.read_csv(workdir / "runs" / "planted" / "trials.csv")
    best = trials[trials["state"] == "complete"].sort_values("value", ascending=False).iloc[0]
    assert best["params_variant"] in fine["variant"].choices
    assert fine["width"].low <= best["params_width"] <= fine["width"].high
    assert len(fine["variant"].choices) < 5
    # The refined file is a valid space for a second study.
    code, _, err = run_cli(
        tune_args("--trials", "2", "--study", "fine", "--space", "fine.toml"), capsys
    )
    assert code == 0, err


def test_without_labels_tuning_falls_back_to_reconstruction_error(workdir, capsys):
    frame = pd.read_csv(workdir / "planted.csv").drop(columns=["label"])
    frame.to_csv(workdir / "unlabeled.csv", index=False)
    code, out, err = run_cli(
        ["tune", "unlabeled.csv", "--space", "space.toml", "--trials", "3", "--quiet", "--json"],
        capsys,
    )
    assert code == 0, err
    assert "no --label given" in err
    summary = json.loads(out)
    assert summary["study"]["directions"] == ["minimize"]
    assert summary["study"]["objectives"] == ["val_loss"]
    assert "no label column" in summary["note"]
    assert summary["refit"]["matches"] is True
    assert summary["metrics"]["val"]["reconstruction_error"] == pytest.approx(
        summary["best"]["value"]
    )
    assert "auc_roc" not in summary["metrics"]["test"]
    trials = pd.read_csv(workdir / "runs" / "unlabeled" / "trials.csv")
    best = trials[trials["state"] == "complete"]["value"].min()
    assert summary["best"]["value"] == pytest.approx(best)


def test_a_trial_failed_by_the_storage_gets_a_reason():
    from anomtune.tuning import trial_rows

    study = optuna.create_study()
    study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL))
    study.add_trial(
        optuna.trial.create_trial(
            state=optuna.trial.TrialState.FAIL, user_attrs={"fail_reason": "loss became NaN"}
        )
    )
    study.add_trial(optuna.trial.create_trial(value=0.5, params={}, distributions={}))
    reasons = [row["fail_reason"] for row in trial_rows(study)]
    assert reasons[0].startswith("no reason recorded: its worker process ended")
    assert reasons[1:] == ["loss became NaN", ""]
