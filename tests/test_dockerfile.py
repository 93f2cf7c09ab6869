"""The Dockerfile's install steps, run in a fresh virtual environment.

Docker itself cannot run here, so this test replays what the image build
does: copy the files the Dockerfile copies, run its ``pip install`` steps with
a new venv's pip, and check that the entry command works, that the serving
path scores a model, and that torch, Optuna and scikit-learn are absent.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def dockerfile_steps() -> tuple[list[str], list[str], dict]:
    """COPY sources, RUN commands and ENV settings, continuation lines joined."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    copies, runs, env = [], [], {}
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("COPY "):
            copies.extend(shlex.split(line)[1:-1])
        elif line.startswith("RUN "):
            runs.append(line[4:].strip())
        elif line.startswith("ENV "):
            for item in shlex.split(line)[1:]:
                key, _, value = item.partition("=")
                env[key] = value
    return copies, runs, env


def test_dockerfile_is_what_the_test_reads():
    copies, runs, env = dockerfile_steps()
    assert {"pyproject.toml", "constraints.txt", "anomtune", "registry", "cli"} <= set(copies)
    assert any(r.startswith("pip install --no-deps") for r in runs)
    assert env["ANOMTUNE_HOST"] == "0.0.0.0"


@pytest.mark.slow
def test_install_steps_work_in_a_fresh_venv(tmp_path):
    copies, runs, _ = dockerfile_steps()
    context = tmp_path / "context"
    context.mkdir()
    for name in copies:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, context / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, context / name)
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    bin_dir = env_dir / "bin"
    for command in runs:
        if not command.startswith("pip "):
            continue  # user creation and the like need root inside an image
        done = subprocess.run(
            f"{bin_dir / 'python'} -m {command}",
            shell=True,
            cwd=context,
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert done.returncode == 0, done.stderr[-2000:]
    anomtune = str(bin_dir / "anomtune")
    for args in (["--help"], ["serve", "--help"], ["score", "--help"]):
        done = subprocess.run([anomtune, *args], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
    probe = (
        "import importlib.util as u\n"
        "print([m for m in ('torch', 'optuna', 'sklearn') if u.find_spec(m)])\n"
    )
    done = subprocess.run([str(bin_dir / "python"), "-c", probe], capture_output=True, text=True)
    assert done.stdout.strip() == "[]", done.stdout
    # The image's install scores a model exported by a full install.
    model, data = _model_and_data(tmp_path)
    done = subprocess.run(
        [anomtune, "score", str(model), str(data), "-o", str(tmp_path / "s.csv"), "--quiet"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert len((tmp_path / "s.csv").read_text().splitlines()) == 201


def _model_and_data(folder: Path) -> tuple[Path, Path]:
    import numpy as np
    import pandas as pd

    from anomtune.data import table_from_frame
    from anomtune.export import export_model
    from anomtune.pipeline import fit_detector, prepare

    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(200, 3)), columns=["a", "b", "c"])
    frame["y"] = (rng.random(200) < 0.1).astype(int)
    frame.loc[frame["y"] == 1, "a"] += 4
    table = table_from_frame(frame, label="y")
    prepared = prepare(table, seed=0)
    detector = fit_detector(prepared, {"epochs": 3}, seed=0)
    model = folder / "m.onnx"
    export_model(prepared.model(detector), table.features.iloc[prepared.split.val], model)
    data = folder / "d.csv"
    frame.to_csv(data, index=False)
    return model, data
