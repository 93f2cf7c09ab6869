"""The path a new user takes: tune and register in one command, promote, then
score by registry reference from the command line and from Python."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from conftest import FAST_SPACE, run_cli, write_planted

import anomtune
from anomtune.cli import main
from anomtune.registry import Registry


@pytest.fixture()
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ("ANOMTUNE_REGISTRY", "ANOMTUNE_REGISTRY_FILES"):
        monkeypatch.delenv(name, raising=False)
    write_planted(tmp_path / "Sensor_Readings.v2.csv")
    (tmp_path / "space.toml").write_text(FAST_SPACE)
    return tmp_path


def tune(*extra: str) -> list[str]:
    return [
        "tune",
        "Sensor_Readings.v2.csv",
        "--label",
        "label",
        "--space",
        "space.toml",
        "--trials",
        "2",
        "--quiet",
        *extra,
    ]


def test_tune_registers_its_best_model_and_scoring_finds_it(workdir, capsys):
    where = ["--registry", "team.db", "--registry-files", "shared-files"]
    code, out, err = run_cli(tune("--study", "a", "--register", *where), capsys)
    assert code == 0, err
    # The default name comes from the data file's name.
    assert "registered sensor_readings/1 in team.db" in out
    code, out, err = run_cli(
        tune("--study", "b", "--register", "sensors", "--json", *where), capsys
    )
    assert code == 0, err
    summary = json.loads(out)
    assert summary["registered"]["ref"] == "sensors/1"
    on_disk = json.loads((workdir / "runs" / "b" / "summary.json").read_text())
    assert on_disk["registered"] == summary["registered"]

    with Registry.open("team.db", files="shared-files") as reg:
        version = reg.get("sensors/1")
        assert version.sha256 == summary["registered"]["sha256"]
        assert version.lineage["study"] == "b"
        assert reg.verify().ok
    assert any((workdir / "shared-files").rglob("*"))

    assert (
        run_cli(["registry", "promote", "sensors", "1", "--alias", "champion", *where], capsys)[0]
        == 0
    )
    code, out, err = run_cli(
        ["score", "sensors@champion", "Sensor_Readings.v2.csv", "-o", "out.csv", "--quiet", *where],
        capsys,
    )
    assert code == 0, err
    scores = pd.read_csv(workdir / "out.csv")
    data = pd.read_csv(workdir / "Sensor_Readings.v2.csv")
    assert len(scores) == len(data) and np.isfinite(scores["score"]).all()

    scorer = anomtune.load("sensors@champion", registry="team.db", registry_files="shared-files")
    result = scorer.score(data.drop(columns="label"))
    np.testing.assert_allclose(result.score, scores["score"], rtol=1e-6)


def test_a_bad_register_name_is_refused_before_any_trial_runs(workdir, capsys):
    code, _, err = run_cli(tune("--register", "../etc"), capsys)
    assert code == 2
    assert err.count("\n") == 1 and "path separators" in err
    assert not (workdir / "runs").exists() and not (workdir / ".anomtune").exists()


def test_the_console_script_maps_register_errors(workdir, capsys):
    with pytest.raises(SystemExit) as exc:
        main(tune("--register", "Upper Case"))
    assert exc.value.code == 2
    assert "lowercase" in capsys.readouterr().err
