"""Across processes: tuning processes sharing one study, and concurrent alias promotions.

Everything runs in real processes against a real journal file, a real SQLite
registry or a real PostgreSQL server (see the ``postgres_url`` fixture in
conftest.py: each test gets a fresh database of its own).
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from conftest import write_planted as planted

TINY_SPACE = """
epochs = 2
[n_layers]
low = 1
high = 1
[width]
low = 4
high = 8
[batch_size]
choices = [128]
"""

# Waits for the go file, then runs the real command line in this process.
_START_TOGETHER = """
import os, sys, time
from anomtune.cli import main
go = sys.argv[1]
while not os.path.exists(go):
    time.sleep(0.005)
main(sys.argv[2:])
"""


def write_planted(path: Path, n: int = 240, seed: int = 0) -> Path:
    return planted(path, n=n, seed=seed)


def child_env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANOMTUNE_")}
    env["OMP_NUM_THREADS"] = "1"
    return env


def start_together(go: Path, commands: list[list[str]], cwd: Path) -> list[subprocess.Popen]:
    """Start one process per command line; each waits for ``go`` before running."""
    return [
        subprocess.Popen(
            [sys.executable, "-c", _START_TOGETHER, str(go), *map(str, args)],
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=child_env(),
        )
        for args in commands
    ]


def release(go: Path, procs: list[subprocess.Popen], timeout: float = 240) -> list[tuple]:
    """Let the processes go once they are waiting; their (stdout, stderr); each must exit 0."""
    time.sleep(1.5)  # imports finish and every process polls for the go file
    go.touch()
    outputs = [proc.communicate(timeout=timeout) for proc in procs]
    for proc, (_, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err
    return outputs


# ---------------------------------------------------------------- tuning


@pytest.mark.parametrize("backend", ["journal", "postgresql"])
def test_tuning_processes_share_one_study_exactly(tmp_path, request, backend):
    """Two commands started at once on one study: one with two worker processes and
    four trials, one with three trials in its own process. Seven trials in all,
    numbered 0..6 once each, all finished, each process running its share."""
    import optuna
    from optuna.trial import TrialState

    from anomtune.tuning import open_storage

    if backend == "journal":
        storage = str(tmp_path / "studies.journal")
    else:
        storage = request.getfixturevalue("postgres_url")
    write_planted(tmp_path / "planted.csv")
    (tmp_path / "space.toml").write_text(TINY_SPACE)
    common = ["tune", "planted.csv", "--label", "label", "--space", "space.toml"]
    common += ["--study", "shared", "--storage", storage, "--pruner", "none", "--json"]
    procs = start_together(
        tmp_path / "go",
        [
            [*common, "--workers", "2", "--trials", "4", "--out", "runs/a"],
            [*common, "--trials", "3", "--out", "runs/b"],
        ],
        tmp_path,
    )
    outputs = release(tmp_path / "go", procs)
    summaries = [json.loads(out) for out, _ in outputs]
    stderr = "\n".join(err for _, err in outputs)
    assert sorted(s["study"]["resumed"] for s in summaries) == [False, True]

    study = optuna.load_study(study_name="shared", storage=open_storage(storage)[0])
    trials = study.get_trials(deepcopy=False)
    assert sorted(t.number for t in trials) == list(range(7)), stderr
    assert len({t._trial_id for t in trials}) == 7
    assert {t.state for t in trials} <= {TrialState.COMPLETE, TrialState.PRUNED}
    # The two workers of the first command run two trials each, the second command three.
    per_process = Counter(t.user_attrs["worker"] for t in trials)
    assert sorted(per_process.values()) == [2, 2, 3], (per_process, stderr)
    for name in ("a", "b"):
        assert (tmp_path / "runs" / name / "summary.json").is_file()


# ---------------------------------------------------------------- registry


@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory) -> Path:
    """A small exported anomtune model."""
    from anomtune.data import read_table
    from anomtune.export import export_model
    from anomtune.pipeline import fit_detector, prepare

    base = tmp_path_factory.mktemp("promotions")
    table = read_table(write_planted(base / "planted.csv"), label="label")
    prepared = prepare(table, seed=0)
    detector = fit_detector(prepared, {"epochs": 2, "width": 4, "n_layers": 1}, seed=0)
    path = base / "model.onnx"
    export_model(prepared.model(detector), table.features.iloc[prepared.split.val], path)
    return path


_PROMOTER = """
import contextlib, io, json, os, sys, time
from anomtune.cli import main
go, worker, location, versions = sys.argv[1], sys.argv[2], sys.argv[3:-1], sys.argv[-1]
while not os.path.exists(go):
    time.sleep(0.005)
for k, version in enumerate(versions.split(",")):
    reason = f"worker {worker} step {k}"
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(["registry", "promote", "m", version, "--reason", reason, "--json", *location])
            code = 0
        except SystemExit as exc:
            code = exc.code
    result = json.loads(out.getvalue()) if code == 0 else None
    print(json.dumps({"reason": reason, "code": code, "err": err.getvalue(), "result": result}))
"""


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_concurrent_promotions_keep_a_chained_history(tmp_path, request, backend, onnx_model):
    """Four processes move one alias among four versions at the same time. Every
    promotion succeeds; each one that moved the alias is one history row, each
    row's 'from' is the previous row's 'to', and the alias ends on the last 'to'."""
    from anomtune.registry import Registry

    if backend == "sqlite":
        registry, files = str(tmp_path / "registry"), None
        location = ["--registry", registry]
    else:
        registry, files = request.getfixturevalue("postgres_url"), str(tmp_path / "files")
        location = ["--registry", registry, "--registry-files", files]
    with Registry.open(registry, files=files, create=True) as reg:
        for _ in range(4):
            reg.register(onnx_model.read_bytes(), name="m")
    steps = 8
    procs = [
        subprocess.Popen(
            [
                sys.executable, "-c", _PROMOTER, str(tmp_path / "go"), str(w), *location,
                ",".join(str((w + k) % 4 + 1) for k in range(steps)),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=child_env(),
        )
        for w in range(4)
    ]  # fmt: skip
    results = [
        json.loads(line) for out, _ in release(tmp_path / "go", procs) for line in out.splitlines()
    ]
    assert len(results) == 4 * steps
    for r in results:
        assert r["code"] == 0, r["err"]
    moved = {r["reason"]: r["result"] for r in results if r["result"]["moved"]}

    with Registry.open(registry, files=files) as reg:
        history = reg.history("m", "champion")
        current = reg.aliases("m")["champion"]
        existing = {v.version for v in reg.versions("m")}
    assert [m.reason for m in history if m.reason in moved] == [m.reason for m in history]
    assert sorted(m.reason for m in history) == sorted(moved)
    assert history[0].from_version is None
    for before, after in itertools.pairwise(history):
        assert after.from_version == before.to_version != after.to_version
    for move in history:
        done = moved[move.reason]
        assert (done["previous"], done["version"]) == (move.from_version, move.to_version)
        assert done["move"] == move.to_dict()
    assert history[-1].to_version == current and current in existing
    code = subprocess.run(
        [sys.executable, "-m", "anomtune", "registry", "verify", *location],
        capture_output=True,
        text=True,
        env=child_env(),
        timeout=120,
    )
    assert code.returncode == 0, code.stdout + code.stderr


def test_postgres_url_gives_each_test_an_empty_database(postgres_url):
    import sqlalchemy as sa

    engine = sa.create_engine(postgres_url)
    try:
        with engine.connect() as conn:
            assert sa.inspect(conn).get_table_names() == []
            assert conn.exec_driver_sql("select current_database()").scalar() in postgres_url
    finally:
        engine.dispose()
