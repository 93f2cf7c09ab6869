"""Faults: ``kill -9`` in the middle of tune, register and promote; a full or read-only disk.

Every test here uses real processes, a real journal and real SQLite files.
The full and read-only disks are real filesystems: a small tmpfs mounted
for the test (``mount -t tmpfs``, which needs root; the read-only case
remounts it ``ro``). Where mounting is not allowed, a full disk is made
with ``RLIMIT_FSIZE`` in the child process (the kernel then refuses writes
past the limit with EFBIG, as a full disk refuses them with ENOSPC), and a
read-only folder with file permissions when not running as root.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import resource
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
from conftest import TINY_SPACE as FAST_SPACE
from conftest import ok, refused, run, write_planted

from anomtune.registry import Registry
from anomtune.registry._registry import ALIAS_PAUSE_POINTS, TEST_PAUSE_ENV
from anomtune.tuning import open_storage
from anomtune.tuning.config import PATIENCE
from tests.test_registry import kill_paused, subprocess_env

# Trials long enough to be caught running: small batches, many epochs, no pruner
# (each still ends after 20 epochs without improvement).
SLOW_SPACE = """
epochs = 400
[n_layers]
low = 1
high = 1
[width]
low = 8
high = 8
[batch_size]
choices = [16]
"""
WAIT_S = 300


def tree(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` and the sha256 of its bytes."""
    if not folder.exists():
        return {}
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


# ---------------------------------------------------------------- tune


def _study(spec: str, storage=None):
    storage = storage or open_storage(spec)[0]
    try:
        return optuna.load_study(study_name="planted", storage=storage)
    except KeyError:
        return None


def _kill_mid_trial(proc: subprocess.Popen, spec: str, complete: int, log: Path) -> None:
    """SIGKILL ``proc`` once ``complete`` trials are done and another is mid-training."""
    deadline = time.monotonic() + WAIT_S
    storage = open_storage(spec)[0]  # one object: a journal is read on from where it left off
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"tune ended early: {log.read_text()}"
        study = _study(spec, storage)
        if study is not None:
            trials = study.get_trials(deepcopy=False)
            done = sum(t.state.name == "COMPLETE" for t in trials)
            running = [t for t in trials if t.state.name == "RUNNING"]
            # A trial ends only after PATIENCE epochs without improvement (there is
            # no pruner), so one seen at an earlier epoch is surely still training
            # when the signal lands.
            epochs = running[0].intermediate_values if running else {}
            if done >= complete and epochs and max(epochs) < PATIENCE - 5:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=60)
                return
        time.sleep(0.2)
    proc.kill()
    proc.wait()
    pytest.fail(f"tune did not reach {complete} complete trials in {WAIT_S} s")


@pytest.mark.parametrize("backend", ["journal", "sqlite"])
def test_tune_killed_mid_study_resumes_keeping_every_finished_trial(tmp_path, backend):
    """A complete run, then the same study killed mid-trial, then resumed.

    The runs before and after the kill are in-process (the same entry point,
    without a second interpreter start); the killed one is a real process.
    The default journal file and a database storage (SQLite, with Optuna's
    heartbeat) both recognise the killed trial.
    """
    data = write_planted(tmp_path / "planted.csv")
    (tmp_path / "space.toml").write_text(SLOW_SPACE)
    if backend == "journal":
        spec = str(tmp_path / "studies.journal")
    else:
        spec = f"sqlite:///{tmp_path / 'studies.db'}"
    run_dir = tmp_path / "runs" / "planted"
    log = tmp_path / "tune.log"

    def command(trials: int) -> list[str]:
        return [
            "tune", str(data), "--label", "label", "--space", str(tmp_path / "space.toml"),
            "--pruner", "none", "--trials", str(trials), "--storage", spec,
            "--out", str(run_dir), "--json",
        ]  # fmt: skip

    ok(*command(1))
    complete_run = tree(run_dir)
    assert "summary.json" in complete_run and "model/weights.npz" in complete_run

    with open(log, "w") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "anomtune", *command(50)],
            cwd=tmp_path,
            stdout=fh,
            stderr=subprocess.STDOUT,
            env=subprocess_env(),
        )
        _kill_mid_trial(proc, spec, complete=2, log=log)
    assert proc.returncode == -signal.SIGKILL

    # The run folder is the earlier complete one, byte for byte; no staged copy.
    assert tree(run_dir) == complete_run
    assert [p.name for p in (tmp_path / "runs").iterdir()] == ["planted"]
    study = _study(spec)
    finished = {
        t.number: (t.state, t.values, t.params) for t in study.trials if t.state.is_finished()
    }
    running = [t for t in study.trials if t.state.name == "RUNNING"]
    assert len(running) == 1, [t.state for t in study.trials]
    killed = running[0]
    assert len(finished) >= 2 and killed.number == max(finished) + 1

    # The same command, with a small extra budget, resumes the study.
    summary = json.loads(ok(*command(1)))
    assert summary["study"]["resumed"] is True
    study = _study(spec)
    trials = {t.number: t for t in study.trials}
    assert len(trials) == len(finished) + 2
    for number, (state, values, params) in finished.items():
        assert (trials[number].state, trials[number].values, trials[number].params) == (
            state,
            values,
            params,
        ), number
    after = trials[killed.number]
    assert after.state.name == "FAIL"
    assert "ended while the trial ran" in after.user_attrs["fail_reason"]
    assert after.intermediate_values == killed.intermediate_values
    assert all(t.state.is_finished() for t in study.trials)

    # The new run folder is whole and describes the whole study.
    on_disk = json.loads((run_dir / "summary.json").read_text())
    assert on_disk["study"]["trials"]["running"] == 0
    assert on_disk["study"]["trials"]["fail"] >= 1
    assert sum(on_disk["study"]["trials"].values()) == len(trials)
    rows = pd.read_csv(run_dir / "trials.csv", keep_default_na=False)
    assert len(rows) == len(trials)
    row = rows[rows["number"] == killed.number].iloc[0]
    assert row["state"] == "fail" and "ended while the trial ran" in row["fail_reason"]
    with np.load(run_dir / "model" / "weights.npz", allow_pickle=False) as weights:
        assert weights.files
    assert [p.name for p in (tmp_path / "runs").iterdir()] == ["planted"]


# ---------------------------------------------------------------- registry


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    """Two exported anomtune models ("a", "b") with different bytes.

    "b" is "a" with one more lineage entry in its embedded metadata: another
    valid model file at the cost of one export.
    """
    import onnx

    from anomtune.data import read_table
    from anomtune.export import export_model
    from anomtune.pipeline import fit_detector, prepare

    base = tmp_path_factory.mktemp("fault-models")
    data = write_planted(base / "planted.csv")
    table = read_table(data, label="label")
    prepared = prepare(table, seed=0)
    detector = fit_detector(prepared, {"epochs": 2, "width": 4, "n_layers": 1}, seed=0)
    a = base / "a.onnx"
    export_model(prepared.model(detector), table.features.iloc[prepared.split.val], a)
    graph = onnx.load(a)
    entry = next(e for e in graph.metadata_props if e.key == "anomtune")
    meta = json.loads(entry.value)
    meta.setdefault("lineage", {})["copy"] = "b"
    entry.value = json.dumps(meta)
    b = base / "b.onnx"
    onnx.save(graph, b)
    assert a.read_bytes() != b.read_bytes()
    return {"a": a, "b": b}


@pytest.fixture(autouse=True)
def _no_registry_env(monkeypatch):
    for name in ("ANOMTUNE_REGISTRY", "ANOMTUNE_REGISTRY_FILES", TEST_PAUSE_ENV):
        monkeypatch.delenv(name, raising=False)


def register(reg: Path, onnx: Path, name: str = "m") -> dict:
    out = ok("registry", "register", "--onnx", onnx, "--name", name, "--registry", reg, "--json")
    return json.loads(out)


def state(reg: Path) -> dict:
    """What the registry says: versions with hashes, aliases, alias history."""
    with Registry.open(reg) as opened:
        return {
            "versions": [(v.version, v.sha256) for v in opened.versions("m")],
            "aliases": opened.aliases("m"),
            "history": [
                (h.alias, h.action, h.from_version, h.to_version) for h in opened.history("m")
            ],
        }


def blobs(reg: Path) -> list[str]:
    """Every file in the registry's files folder (staged temporaries included)."""
    return sorted(str(p.relative_to(reg)) for p in (reg / "files").rglob("*") if p.is_file())


def test_promotion_killed_mid_transaction_moves_nothing(models, tmp_path):
    reg = tmp_path / "registry"
    register(reg, models["a"])
    register(reg, models["b"])
    ok("registry", "promote", "m", "1", "--alias", "champion", "--registry", reg)
    before = state(reg)
    assert before["aliases"] == {"champion": 1}
    promote = ["registry", "promote", "m", "2", "--alias", "champion", "--registry", reg]
    rollback = ["registry", "rollback", "m", "--alias", "champion", "--registry", reg]
    for point in ALIAS_PAUSE_POINTS:
        kill_paused(promote, point)
        assert state(reg) == before, point
        out = ok("registry", "verify", "--registry", reg)
        assert "checked 2 version(s)" in out and "0 problem(s)" in out
    # The same promotion, not killed, then a rollback killed halfway.
    ok(*promote)
    moved = state(reg)
    assert moved["aliases"] == {"champion": 2}
    assert moved["history"][-1] == ("champion", "promote", 1, 2)
    kill_paused(rollback, "alias-recorded")
    assert state(reg) == moved
    assert "0 problem(s)" in ok("registry", "verify", "--registry", reg)
    assert "-> version 1" in ok(*rollback)


def test_verify_reports_an_alias_that_points_nowhere_or_disagrees_with_history(models, tmp_path):
    reg = tmp_path / "registry"
    register(reg, models["a"])
    register(reg, models["b"])
    ok("registry", "promote", "m", "1", "--alias", "champion", "--registry", reg)
    ok("registry", "promote", "m", "2", "--alias", "staging", "--registry", reg)
    assert "0 problem(s)" in ok("registry", "verify", "--registry", reg)
    # Damage done behind the registry's back, as a half-applied change would leave it.
    with contextlib.closing(sqlite3.connect(reg / "registry.db")) as db, db:
        db.execute("UPDATE registry_aliases SET version = 9 WHERE alias = 'champion'")
        db.execute("DELETE FROM registry_alias_history WHERE alias = 'staging'")
    err = refused("registry", "verify", "--registry", reg)
    assert "2 problem(s)" in err
    report = json.loads(run("registry", "verify", "--registry", reg, "--json")[1])
    found = {p["ref"]: p["problem"] for p in report["problems"]}
    assert "version 9, which is gone" in found["m@champion"]
    assert "history does not end at version 2" in found["m@staging"]


# ---------------------------------------------------------------- full and read-only disks


@contextlib.contextmanager
def tmpfs(folder: Path, size: str):
    """A fresh tmpfs of ``size`` mounted at ``folder``; skips where mounting is not allowed."""
    folder.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root and mount(8)")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def fill(folder: Path) -> Path:
    """Write a file into ``folder`` until its filesystem has no byte left."""
    filler = folder / "filler"
    with open(filler, "wb", buffering=0) as fh:
        for size in (1 << 16, 1 << 12, 1):
            while True:
                try:
                    fh.write(b"\0" * size)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC, exc
                    break
    return filler


def test_full_disk_refuses_a_registration_and_a_promotion_cleanly(models, tmp_path):
    with tmpfs(tmp_path / "disk", "2m") as disk:
        reg = disk / "registry"
        register(reg, models["a"])
        before, files = state(reg), blobs(reg)
        filler = fill(disk)
        err = refused(
            "registry", "register", "--onnx", models["b"], "--name", "m", "--registry", reg
        )
        assert "No space left on device" in err and "nothing was registered" in err
        err = refused("registry", "promote", "m", "1", "--registry", reg)
        assert "full" in err
        assert state(reg) == before and blobs(reg) == files
        assert "0 problem(s)" in ok("registry", "verify", "--registry", reg)
        # Space again: the next registration takes the next number, with no gap.
        filler.unlink()
        assert register(reg, models["b"])["version"] == 2
        ok("registry", "promote", "m", "2", "--registry", reg)
        out = ok("registry", "verify", "--registry", reg)
        assert "0 problem(s)" in out and "note" not in out


def _limit_file_size(limit: int):
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def test_file_size_limit_refuses_a_registration_cleanly(models, tmp_path):
    """RLIMIT_FSIZE below the model's size: the kernel refuses the write (EFBIG)."""
    reg = tmp_path / "registry"
    register(reg, models["a"])
    before, files = state(reg), blobs(reg)
    limit = models["b"].stat().st_size // 2
    args = ["registry", "register", "--onnx", models["b"], "--name", "m", "--registry", reg]
    done = subprocess.run(
        [sys.executable, "-m", "anomtune", *map(str, args)],
        capture_output=True,
        text=True,
        env=subprocess_env(PYTHONDONTWRITEBYTECODE="1"),
        preexec_fn=_limit_file_size(limit),
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "File too large" in lines[0], done.stderr
    assert "nothing was registered" in lines[0]
    assert state(reg) == before and blobs(reg) == files
    assert "0 problem(s)" in ok("registry", "verify", "--registry", reg)


@contextlib.contextmanager
def read_only(folder: Path):
    """Make ``folder`` (already populated) read-only until the block ends.

    As root, where permissions do not stop writes, ``folder`` is its own tmpfs
    (the caller populated it through :func:`tmpfs`) remounted ``ro``; otherwise
    write permission is taken away from every file and folder under it.
    """
    if os.geteuid() == 0:
        done = subprocess.run(
            ["mount", "-o", "remount,ro", str(folder)], capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        try:
            yield
        finally:
            subprocess.run(["mount", "-o", "remount,rw", str(folder)], capture_output=True)
        return
    paths = [folder, *folder.rglob("*")]
    modes = {p: p.stat().st_mode for p in paths}
    for p in paths:
        p.chmod(modes[p] & ~0o222)
    try:
        yield
    finally:
        for p in reversed(paths):
            p.chmod(modes[p])


def test_read_only_registry_refuses_changes_and_still_serves_reads(models, tmp_path):
    disk = tmp_path / "disk"
    with tmpfs(disk, "4m") if os.geteuid() == 0 else contextlib.nullcontext(disk.mkdir()):
        reg = disk / "registry"
        register(reg, models["a"])
        register(reg, models["b"])
        ok("registry", "promote", "m", "2", "--registry", reg)
        ok("registry", "promote", "m", "1", "--registry", reg)
        before, files = state(reg), blobs(reg)
        with read_only(disk):
            for args in [
                ["register", "--onnx", models["a"], "--name", "other"],
                ["promote", "m", "2"],
                ["rollback", "m"],
                ["tag", "m/1", "reviewed=yes"],
                ["archive", "m/2"],
                ["delete", "m/2"],
            ]:
                err = refused("registry", *args, "--registry", reg).lower()
                assert any(w in err for w in ("read-only", "readonly", "permission")), (args, err)
            assert "@champion=1" in ok("registry", "list", "--registry", reg)
            shown = json.loads(ok("registry", "show", "m@champion", "--registry", reg, "--json"))
            assert shown["version"] == 1
            assert "0 problem(s)" in ok("registry", "verify", "--registry", reg)
            assert state(reg) == before and blobs(reg) == files
        assert register(reg, models["a"], "other")["version"] == 1


# ---------------------------------------------------------------- no pickle on load paths


class _Trap:
    """Unpickling this creates a file: proof that a pickle ran."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_pickle_in_a_run_folder_is_refused_never_run(tmp_path):
    data = write_planted(tmp_path / "planted.csv")
    (tmp_path / "space.toml").write_text(FAST_SPACE)
    run_dir = tmp_path / "run"
    ok(
        "tune", data, "--label", "label", "--space", tmp_path / "space.toml", "--trials", "1",
        "--storage", tmp_path / "studies.journal", "--out", run_dir, "--quiet",
    )  # fmt: skip
    marker = tmp_path / "pickle-ran"
    weights = run_dir / "model" / "weights.npz"
    with open(weights, "wb") as fh:
        np.savez(fh, **{"scaler.center": np.array([_Trap(marker)], dtype=object)})
    reg = tmp_path / "registry"
    err = refused("export", run_dir, "-o", tmp_path / "m.onnx")
    assert "weights.npz" in err
    err = refused("registry", "register", run_dir, "--name", "m", "--registry", reg)
    assert "weights.npz" in err
    assert not marker.exists() and not (tmp_path / "m.onnx").exists()
    assert blobs(reg) == []
    # The file is a live trap: loading it with pickles allowed runs it.
    with np.load(weights, allow_pickle=True) as trap:
        trap["scaler.center"]
    assert marker.exists()
