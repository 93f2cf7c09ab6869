"""Atomic writes: every file and folder anomtune writes has the usual modes, and a
write that fails or is interrupted leaves nothing behind."""

from __future__ import annotations

import contextlib
import io
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import TINY_SPACE as SPACE
from conftest import ok as run

from anomtune.cli import main
from anomtune.files import (
    FILE_MODE,
    FOLDER_MODE,
    AtomicFile,
    make_dirs,
    replace_dir,
    staging_folder,
    write_bytes,
)
from anomtune.registry._store import BLOB_MODE
from tests.test_tuning import write_planted


@contextlib.contextmanager
def umask(value: int):
    old = os.umask(value)
    try:
        yield value
    finally:
        os.umask(old)


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


@pytest.fixture(autouse=True)
def _no_registry_env(monkeypatch):
    monkeypatch.delenv("ANOMTUNE_REGISTRY", raising=False)
    monkeypatch.delenv("ANOMTUNE_REGISTRY_FILES", raising=False)


# -- every file anomtune writes ---------------------------------------------------


@pytest.mark.parametrize("mask", [0o022, 0o027], ids=lambda m: f"umask-{m:03o}")
def test_every_file_and_folder_written_has_the_usual_mode(tmp_path, monkeypatch, mask):
    monkeypatch.chdir(tmp_path)
    write_planted(tmp_path / "planted.csv")
    (tmp_path / "space.toml").write_text(SPACE)
    pd.read_csv("planted.csv").to_parquet("planted.parquet")
    inputs = {tmp_path / n for n in ("planted.csv", "space.toml", "planted.parquet")}
    with umask(mask):
        # tune (with --register, which writes summary.json a second time), export,
        # register a run folder and a file, score to CSV and Parquet in new
        # folders, report.
        run(
            "tune", "planted.csv", "--label", "label", "--space", "space.toml", "--trials", 2,
            "--study", "tiny", "--out", "runs/tiny", "--register", "tiny",
            "--registry", "registry", "--quiet",
        )  # fmt: skip
        run("export", "runs/tiny", "-o", "tiny.onnx")
        run("registry", "register", "runs/tiny", "--name", "again", "--registry", "registry")
        run("registry", "register", "--onnx", "tiny.onnx", "--name", "file", "--registry", "reg2")
        run("score", "tiny.onnx", "planted.csv", "-o", "scores/csv/s.csv", "--quiet")
        run("score", "tiny.onnx", "planted.parquet", "-o", "scores/pq/s.parquet", "--quiet")
        run("score", "tiny/1", "planted.csv", "-o", "s2.csv", "--registry", "registry",
            "--quiet")  # fmt: skip
        run("report", "runs/tiny", "-o", "report.html")
    written = sorted(p for p in tmp_path.rglob("*") if p not in inputs)
    names = {str(p.relative_to(tmp_path)) for p in written}
    expected = {
        "runs/tiny", "runs/tiny/summary.json", "runs/tiny/trials.csv", "runs/tiny/space.toml",
        "runs/tiny/model", "runs/tiny/model/model.json", "runs/tiny/model/weights.npz",
        "tiny.onnx", "registry/registry.db", "reg2/registry.db", "scores/csv/s.csv",
        "scores/pq/s.parquet", "s2.csv", "report.html",
    }  # fmt: skip
    assert expected <= names, expected - names
    blobs = [p for p in written if p.suffix == ".onnx" and "sha256" in p.parts]
    assert {p.parts[len(tmp_path.parts)] for p in blobs} == {"registry", "reg2"}
    # Nothing temporary is left behind.
    temporary = [n for n in names if n.endswith(".tmp") or ".tmp-" in n or ".old-" in n]
    assert not temporary
    assert ".anomtune/studies.journal" in names  # the default study storage
    wrong = {}
    for path in written:
        if path.is_dir():
            want = FOLDER_MODE & ~mask
        elif path in blobs:
            want = BLOB_MODE & ~mask  # published model files are read-only
        else:
            want = FILE_MODE & ~mask
        if mode_of(path) != want:
            wrong[str(path.relative_to(tmp_path))] = f"{mode_of(path):o}, not {want:o}"
    assert not wrong
    # The scores are there, readable by the group as the umask allows.
    assert len(pd.read_parquet("scores/pq/s.parquet")) == len(pd.read_csv("planted.csv"))


@pytest.mark.parametrize("mask", [0o022, 0o027, 0o077], ids=lambda m: f"umask-{m:03o}")
def test_atomic_files_and_folders_follow_the_umask(tmp_path, mask):
    with umask(mask):
        write_bytes(tmp_path / "b.bin", b"x")
        created = make_dirs(tmp_path / "new" / "deeper")
        staged = staging_folder(tmp_path / "out" / "run")
        (tmp_path / "ro").write_bytes(b"")
        with AtomicFile(tmp_path / "ro", mode=0o444) as out:
            out.write(b"y")
    assert mode_of(tmp_path / "b.bin") == 0o644 & ~mask
    assert created == [tmp_path / "new", tmp_path / "new" / "deeper"]
    assert all(mode_of(p) == 0o755 & ~mask for p in created)
    assert mode_of(tmp_path / "out") == 0o755 & ~mask
    assert staged.parent == tmp_path / "out" and staged.name.startswith(".run.")
    assert mode_of(staged) == 0o755 & ~mask
    assert mode_of(tmp_path / "ro") == 0o444 & ~mask
    assert (tmp_path / "ro").read_bytes() == b"y"


# -- nothing half-written ------------------------------------------------------------


@pytest.mark.parametrize("error", [ValueError, KeyboardInterrupt])
def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path, error):
    target = tmp_path / "summary.json"
    target.write_text("old")
    with pytest.raises(error), AtomicFile(target) as out:
        out.write(b"half of the new")
        assert len(list(tmp_path.iterdir())) == 2  # the old file and the temporary one
        raise error
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]
    # Without an old file there is nothing at all.
    with pytest.raises(error), AtomicFile(tmp_path / "new.json") as out:
        out.write(b"half")
        raise error
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]


def test_a_staged_folder_appears_whole_or_not_at_all(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "summary.json").write_text("old")
    staged = staging_folder(tmp_path / "run")
    write_bytes(staged / "summary.json", b"new")
    assert (tmp_path / "run" / "summary.json").read_text() == "old"
    replace_dir(staged, tmp_path / "run")
    assert (tmp_path / "run" / "summary.json").read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["run"]


def _feed_until(proc, path_glob: Path, lines: list[bytes]) -> None:
    proc.stdin.write(b"".join(lines))
    proc.stdin.flush()
    deadline = time.monotonic() + 60
    while not list(path_glob.parent.glob(path_glob.name)):
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    """An exported model of a one-trial run on the planted data."""
    base = tmp_path_factory.mktemp("files-model")
    write_planted(base / "planted.csv")
    (base / "space.toml").write_text(SPACE)
    run(
        "tune", base / "planted.csv", "--label", "label", "--space", base / "space.toml",
        "--trials", 1, "--out", base / "run", "--storage", base / "s.journal", "--quiet",
    )  # fmt: skip
    run("export", base / "run", "-o", base / "m.onnx")
    return base / "m.onnx"


def test_ctrl_c_while_scoring_leaves_no_output_and_no_folders(model, tmp_path):
    """A real SIGINT to ``anomtune score`` while it is still reading its input."""
    lines = (model.parent / "planted.csv").read_bytes().splitlines(keepends=True)
    cases = ((tmp_path / "out" / "deep" / "s.csv", None), (tmp_path / "kept.csv", "old"))
    for target, old in cases:
        if old is not None:
            target.write_text(old)
        before = sorted(tmp_path.rglob("*"))
        proc = subprocess.Popen(
            [sys.executable, "-m", "anomtune", "score", model, "-", "-o", target, "--quiet"],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
        try:
            # The output is open (its temporary file exists), the input not finished.
            proc.stdin.write(b"".join(lines[:50]))
            proc.stdin.flush()
            deadline = time.monotonic() + 60
            while not list(target.parent.glob(f".{target.name}.*.tmp")):
                assert proc.poll() is None and time.monotonic() < deadline
                time.sleep(0.02)
            proc.send_signal(signal.SIGINT)
            time.sleep(0.5)
            proc.stdin.close()  # lets the reading thread end, as a closed terminal would
            err = proc.stderr.read().decode()
            proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.stderr.close()
        assert proc.returncode == 130, err
        assert "interrupted" in err
        assert sorted(tmp_path.rglob("*")) == before
        if old is not None:
            assert target.read_text() == old


def test_failed_scoring_removes_the_folders_it_made(model, tmp_path):
    bad = tmp_path / "bad.csv"
    frame = pd.read_csv(model.parent / "planted.csv")
    frame.astype({"x2": object}).assign(x2=lambda f: f["x2"].where(f.index != 250, "oops")).to_csv(
        bad, index=False
    )
    code, err = _exit_of("score", model, bad, "-o", tmp_path / "new" / "deeper" / "s.csv")
    assert code == 2 and "non-numeric value 'oops'" in err
    (tmp_path / "blocker").write_text("a file, not a folder")
    code, err = _exit_of("score", model, bad, "-o", tmp_path / "blocker" / "sub" / "s.csv")
    assert code == 2 and "is not a folder" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.csv", "blocker"]


def _exit_of(*args) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as exc:
            code = exc.code
    return code, err.getvalue()
