"""The model registry end to end: real SQLite files, real ONNX models, real processes."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import TINY_SPACE as FAST_SPACE
from conftest import ok, run, write_planted

import anomtune.registry as registry_pkg
from anomtune.cli import cli
from anomtune.registry import (
    IntegrityError,
    InvalidNameError,
    ModelNotFoundError,
    ModelRef,
    Registry,
    RegistryError,
    locate_registry,
    parse_ref,
    resolve,
)
from anomtune.registry._registry import PAUSE_POINTS, TEST_PAUSE_ENV
from anomtune.scoring import load_scorer


def refused(*args: str) -> tuple[str, str]:
    """Run a command that must fail cleanly: exit 2, one line on stderr, no traceback."""
    code, out, err = run(*args)
    assert code == 2, (out, err)
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err
    return out, err


def subprocess_env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANOMTUNE_")}
    env.update(extra)
    return env


def kill_paused(args: list[str], point: str) -> None:
    """Run ``anomtune ARGS`` until it pauses at ``point``, then kill -9 it."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "anomtune", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=subprocess_env(**{TEST_PAUSE_ENV: point}),
    )
    watchdog = threading.Timer(120, proc.kill)
    watchdog.start()
    try:
        seen = []
        for line in proc.stderr:
            seen.append(line)
            if f"paused at {point}" in line:
                os.kill(proc.pid, signal.SIGKILL)
                break
        proc.wait(timeout=30)
    finally:
        watchdog.cancel()
        proc.stdout.close()
        proc.stderr.close()
    assert any(f"paused at {point}" in s for s in seen), "".join(seen)
    assert proc.returncode == -signal.SIGKILL


@pytest.fixture(autouse=True)
def _no_registry_env(monkeypatch):
    monkeypatch.delenv("ANOMTUNE_REGISTRY", raising=False)
    monkeypatch.delenv("ANOMTUNE_REGISTRY_FILES", raising=False)
    monkeypatch.delenv(TEST_PAUSE_ENV, raising=False)


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict:
    """One tuned run registered from its folder, plus two .onnx files that score differently."""
    base = tmp_path_factory.mktemp("registry-models")
    data = write_planted(base / "planted.csv")
    (base / "space.toml").write_text(FAST_SPACE)
    run_dir = base / "runs" / "tiny"
    ok(
        "tune", data, "--label", "label", "--space", base / "space.toml", "--trials", "1",
        "--study", "tiny", "--storage", base / "studies.journal", "--out", run_dir, "--quiet",
    )  # fmt: skip
    seed_registry = base / "seed-registry"
    out = ok(
        "registry", "register", run_dir, "--name", "tiny", "--registry", seed_registry,
        "--description", "from a run folder", "--tag", "source=tune", "--json",
    )  # fmt: skip
    registered = json.loads(out)
    a_onnx = base / "a.onnx"
    a_onnx.write_bytes(Path(registered["file"]).read_bytes())

    from anomtune.data import read_table
    from anomtune.export import export_model
    from anomtune.pipeline import fit_detector, prepare

    table = read_table(data, label="label")
    prepared = prepare(table, seed=0)
    detector = fit_detector(prepared, {"epochs": 2, "width": 4, "n_layers": 1}, seed=0)
    b_onnx = base / "b.onnx"
    export_model(prepared.model(detector), table.features.iloc[prepared.split.val], b_onnx)

    frame = pd.read_csv(data)
    labels = frame.pop("label").to_numpy()
    from anomtune.metrics import auc_pr

    quality = {
        path: auc_pr(labels, load_scorer(path.read_bytes()).score(frame).score)
        for path in (a_onnx, b_onnx)
    }
    better, worse = sorted(quality, key=quality.get, reverse=True)
    assert quality[better] - quality[worse] > 0.01, quality
    return {
        "data": data,
        "run_dir": run_dir,
        "registered": registered,
        "seed_registry": seed_registry,
        "a": a_onnx,
        "b": b_onnx,
        "better": better,
        "worse": worse,
        "quality": quality,
    }


@pytest.fixture()
def reg_path(tmp_path) -> Path:
    return tmp_path / "registry"


def register(reg: Path, onnx: Path, name: str = "m", *extra: str) -> dict:
    out = ok(
        "registry", "register", "--onnx", onnx, "--name", name, "--registry", reg, "--json", *extra
    )
    return json.loads(out)


# ---------------------------------------------------------------- registering


def test_register_run_folder_records_metadata_lineage_and_file(built):
    info = built["registered"]
    assert info["ref"] == "tiny/1"
    assert info["description"] == "from a run folder"
    assert info["tags"] == {"source": "tune"}
    assert info["status"] == "active"
    assert "@" in info["created_by"]
    lineage = info["lineage"]
    assert lineage["study"] == "tiny"
    assert lineage["trial"] == 0
    assert lineage["storage"].endswith("studies.journal")
    assert Path(lineage["run_dir"]) == built["run_dir"].resolve()
    assert lineage["data_fingerprint"].startswith("sha256:")
    meta = info["metadata"]
    assert meta["format"] == "anomtune-onnx/1"
    assert meta["parity"]["passed"] is True
    assert {"val", "test"} <= set(meta["metrics"])
    assert meta["feature_names"] == [f"x{i}" for i in range(6)]
    # Content-addressed: files/sha256/<first two>/<sha256>.onnx, read-only.
    path = Path(info["file"])
    digest = info["sha256"]
    assert path == built["seed_registry"] / "files" / "sha256" / digest[:2] / f"{digest}.onnx"
    assert not path.stat().st_mode & stat.S_IWUSR
    assert (built["seed_registry"] / "registry.db").is_file()
    import hashlib

    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest


def test_register_onnx_list_versions_show(built, reg_path):
    first = register(reg_path, built["a"], "m", "--tag", "team=fraud", "--tag", "data=june")
    second = register(reg_path, built["b"], "m", "--description", "smaller")
    other = register(reg_path, built["a"], "other")
    assert (first["version"], second["version"], other["version"]) == (1, 2, 1)
    assert first["tags"] == {"data": "june", "team": "fraud"}
    assert first["lineage"]["source_file"] == str(built["a"].resolve())
    # Identical bytes share one file.
    assert first["file"] == other["file"]

    listed = json.loads(ok("registry", "list", "--registry", reg_path, "--json"))
    assert [(m["name"], m["latest"], m["versions"]) for m in listed] == [
        ("m", 2, 2),
        ("other", 1, 1),
    ]
    text = ok("registry", "list", "--registry", reg_path)
    assert text.splitlines()[0].split()[:3] == ["NAME", "LATEST", "ACTIVE/ALL"]

    versions = json.loads(ok("registry", "versions", "m", "--registry", reg_path, "--json"))
    assert [v["version"] for v in versions] == [1, 2]
    text = ok("registry", "versions", "m", "--registry", reg_path)
    assert "team=fraud" in text and "VERSION" in text

    shown = json.loads(ok("registry", "show", "m/2", "--registry", reg_path, "--json"))
    assert shown["description"] == "smaller"
    text = ok("registry", "show", "m/1", "--registry", reg_path)
    for needle in ("sha256", "threshold", "metrics", "params", "lineage", "data_fingerprint"):
        assert needle in text
    # A plain file shows its embedded metadata.
    text = ok("registry", "show", built["a"])
    assert "threshold" in text


def test_register_needs_exactly_one_source(built, reg_path):
    _, err = refused("registry", "register", "--name", "m", "--registry", reg_path)
    assert "exactly one" in err
    _, err = refused(
        "registry", "register", built["run_dir"], "--onnx", built["a"], "--name", "m",
        "--registry", reg_path,
    )  # fmt: skip
    assert "exactly one" in err


def test_register_refuses_files_that_are_not_anomtune_models(tmp_path, reg_path):
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    _, err = refused("registry", "register", "--onnx", junk, "--name", "m", "--registry", reg_path)
    assert "not a valid ONNX model" in err
    _, err = refused(
        "registry", "register", "--onnx", tmp_path / "none.onnx", "--name", "m",
        "--registry", reg_path,
    )  # fmt: skip
    assert "no such model file" in err


# ---------------------------------------------------------------- names and references


@pytest.mark.parametrize("name", ["../x", "a/b", "..", "Name", "", "x" * 65, "-lead", "a.b", "a b"])
def test_bad_model_names_are_refused(built, reg_path, name):
    _, err = refused(
        "registry", "register", "--onnx", built["a"], "--name", name, "--registry", reg_path
    )
    assert "name" in err
    # Nothing was created, not even the registry.
    assert not reg_path.exists()


def test_name_rules_and_aliases():
    for good in ("cardio", "fraud-v2", "a_b", "9lives", "x" * 64):
        assert registry_pkg.validate_name(good) == good
    with pytest.raises(InvalidNameError, match="try 'cardio'"):
        registry_pkg.validate_name("Cardio")
    for bad in ("12", "latest", "Champ", "a/b", ""):
        with pytest.raises(InvalidNameError):
            registry_pkg.validate_alias(bad)


def test_parse_ref_forms():
    assert parse_ref("cardio") == ModelRef(name="cardio")
    assert parse_ref("cardio/3") == ModelRef(name="cardio", version=3)
    assert parse_ref("cardio@champion") == ModelRef(name="cardio", alias="champion")
    assert parse_ref("models:/cardio@champion") == ModelRef(name="cardio", alias="champion")
    assert parse_ref("cardio@latest") == ModelRef(name="cardio")
    assert parse_ref("dir/model.onnx") == ModelRef(path=Path("dir/model.onnx"))
    assert str(parse_ref("cardio/3")) == "cardio/3"
    for bad in ("../x", "a/b", "..", "Name", "", "cardio/0", "cardio/x", "../3", "a@B"):
        with pytest.raises(InvalidNameError):
            parse_ref(bad)


def test_resolve_every_reference_form(built, reg_path):
    register(reg_path, built["a"])
    register(reg_path, built["b"])
    ok("registry", "promote", "m", "1", "--alias", "champion", "--registry", reg_path)
    a, b = built["a"].read_bytes(), built["b"].read_bytes()

    data, info = resolve("m", registry=reg_path)
    assert (data, info.ref) == (b, "m/2")
    data, info = resolve("m/1", registry=reg_path)
    assert (data, info.version) == (a, 1)
    data, info = resolve("m@champion", registry=reg_path)
    assert (data, info.ref, info.aliases) == (a, "m/1", ["champion"])
    data, info = resolve(str(built["b"]))
    assert data == b and info.name is None and info.metadata["format"] == "anomtune-onnx/1"
    # The environment variable names the registry when no argument does.
    os.environ["ANOMTUNE_REGISTRY"] = str(reg_path)
    try:
        assert resolve("m@champion")[1].ref == "m/1"
    finally:
        del os.environ["ANOMTUNE_REGISTRY"]
    # A bare name skips archived versions; explicit ones still resolve.
    ok("registry", "archive", "m/2", "--registry", reg_path)
    assert resolve("m", registry=reg_path)[1].ref == "m/1"
    assert resolve("m/2", registry=reg_path)[1].status == "archived"
    # The resolved bytes score with onnxruntime alone.
    frame = pd.read_csv(built["data"]).drop(columns="label")
    assert len(load_scorer(data).score(frame).score) == len(frame)

    with pytest.raises(ModelNotFoundError, match="no version 9"):
        resolve("m/9", registry=reg_path)
    with pytest.raises(ModelNotFoundError, match="no alias 'gold'"):
        resolve("m@gold", registry=reg_path)
    with pytest.raises(ModelNotFoundError, match="no model named 'nope'"):
        resolve("nope", registry=reg_path)
    with pytest.raises(ModelNotFoundError, match="no such model file"):
        resolve(str(reg_path / "missing.onnx"))


def test_registry_location_rules(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    default = locate_registry()
    assert default.sqlite_path == tmp_path / ".anomtune" / "registry" / "registry.db"
    assert default.files == tmp_path / ".anomtune" / "registry" / "files"
    monkeypatch.setenv("ANOMTUNE_REGISTRY", str(tmp_path / "team"))
    assert locate_registry().sqlite_path == tmp_path / "team" / "registry.db"
    # An explicit value wins over the environment.
    assert locate_registry("other").sqlite_path == tmp_path / "other" / "registry.db"
    db_file = locate_registry(str(tmp_path / "meta.db"))
    assert (db_file.sqlite_path, db_file.files) == (tmp_path / "meta.db", tmp_path / "files")
    url = locate_registry(f"sqlite:///{tmp_path}/x/reg.db", files=str(tmp_path / "shared"))
    assert url.files == tmp_path / "shared"
    with pytest.raises(RegistryError, match="--registry-files"):
        locate_registry("postgresql://anomtune:secret@db.example/registry")
    monkeypatch.setenv("ANOMTUNE_REGISTRY_FILES", str(tmp_path / "mnt"))
    pg = locate_registry("postgresql://anomtune:secret@db.example/registry")
    assert pg.files == tmp_path / "mnt" and "secret" not in pg.display


def test_sqlite_url_and_files_option(built, tmp_path):
    url = f"sqlite:///{tmp_path}/meta/registry.db"
    files = tmp_path / "shared-files"
    out = ok(
        "registry", "register", "--onnx", built["a"], "--name", "m", "--registry", url,
        "--registry-files", files, "--json",
    )  # fmt: skip
    assert Path(json.loads(out)["file"]).is_relative_to(files)
    assert (tmp_path / "meta" / "registry.db").is_file()
    data, _ = resolve("m/1", registry=url, files=files)
    assert data == built["a"].read_bytes()


# ---------------------------------------------------------------- promotion, history, rollback


def test_promotion_gate_refuses_worse_and_accepts_better(built, reg_path):
    worse = register(reg_path, built["worse"])["version"]
    better = register(reg_path, built["better"])["version"]
    gate = ["--data", built["data"], "--label", "label", "--registry", reg_path]
    ok("registry", "promote", "m", better, "--alias", "champion", "--registry", reg_path)

    out, err = refused(
        "registry", "promote", "m", worse, "--alias", "champion", "--if-better", *gate
    )
    assert "promotion refused" in err and "does not beat" in err
    assert "auc-pr" in out and f"m/{better}" in out and f"m/{worse}" in out
    assert f"{built['quality'][built['worse']]:.4f}" in out
    assert f"{built['quality'][built['better']]:.4f}" in out
    assert Registry.open(reg_path).aliases("m") == {"champion": better}
    assert len(Registry.open(reg_path).history("m")) == 1  # the refusal changed nothing

    # Floors: unreachable refuses, reachable accepts.
    out, err = refused(
        "registry", "promote", "m", worse, "--alias", "challenger", "--min", "auc-pr=0.999", *gate
    )
    assert "below the floor" in err and ">= 0.9990: FAIL" in out
    with Registry.open(reg_path) as reg:
        assert "challenger" not in reg.aliases("m")

    # The worse model holds the alias; the better one beats it.
    ok("registry", "promote", "m", worse, "--alias", "staging", "--registry", reg_path)
    out = ok(
        "registry", "promote", "m", better, "--alias", "staging", "--if-better",
        "--metric", "auc-pr", "--min", "auc-roc=0.0", "--reason", "weekly retrain", *gate,
    )  # fmt: skip
    assert f"m@staging -> version {better} (was version {worse})" in out
    assert "must beat @staging: pass" in out
    moves = Registry.open(reg_path).history("m", "staging")
    assert (moves[-1].from_version, moves[-1].to_version) == (worse, better)
    assert moves[-1].reason.startswith("weekly retrain; gate passed")

    result = json.loads(
        ok(
            "registry",
            "promote",
            "m",
            better,
            "--alias",
            "staging",
            "--registry",
            reg_path,
            "--json",
        )
    )
    assert result["moved"] is False


def test_promotion_needs_gate_data_and_refuses_archived(built, reg_path):
    register(reg_path, built["a"])
    _, err = refused("registry", "promote", "m", "1", "--if-better", "--registry", reg_path)
    assert "--data" in err
    _, err = refused(
        "registry", "promote", "m", "1", "--min", "auc-pr", "--data", built["data"],
        "--label", "label", "--registry", reg_path,
    )  # fmt: skip
    assert "METRIC=VALUE" in err
    ok("registry", "archive", "m/1", "--registry", reg_path)
    _, err = refused("registry", "promote", "m", "1", "--registry", reg_path)
    assert "archived" in err
    _, err = refused("registry", "promote", "m", "1", "--alias", "Champ", "--registry", reg_path)
    assert "alias" in err


def test_history_and_rollback(built, reg_path):
    for _ in range(3):
        register(reg_path, built["a"])
    for version in (1, 2, 3):
        ok("registry", "promote", "m", version, "--alias", "champion", "--registry", reg_path)

    out = ok("registry", "rollback", "m", "--alias", "champion", "--registry", reg_path)
    assert "m@champion -> version 2 (was 3)" in out
    out = ok("registry", "rollback", "m", "--registry", reg_path, "--reason", "still bad")
    assert "-> version 1 (was 2)" in out
    _, err = refused("registry", "rollback", "m", "--registry", reg_path)
    assert "no earlier holder" in err

    moves = json.loads(ok("registry", "history", "m", "--registry", reg_path, "--json"))
    assert [(m["action"], m["from_version"], m["to_version"]) for m in moves] == [
        ("promote", None, 1),
        ("promote", 1, 2),
        ("promote", 2, 3),
        ("rollback", 3, 2),
        ("rollback", 2, 1),
    ]
    assert moves[-1]["reason"] == "still bad"
    assert all("@" in m["who"] and m["at"].endswith("Z") for m in moves)
    text = ok("registry", "history", "m", "--alias", "champion", "--registry", reg_path)
    assert "rollback" in text and "still bad" in text


def test_delete_with_alias_needs_force(built, reg_path):
    register(reg_path, built["a"])
    register(reg_path, built["b"])
    register(reg_path, built["a"], "other")
    ok("registry", "promote", "m", "1", "--registry", reg_path)
    ok("registry", "promote", "m", "2", "--registry", reg_path)

    _, err = refused("registry", "delete", "m/2", "--registry", reg_path)
    assert "@champion" in err and "--force" in err
    assert [v.version for v in Registry.open(reg_path).versions("m")] == [1, 2]
    _, err = refused("registry", "delete", "m", "--registry", reg_path)
    assert "m/VERSION" in err

    b_file = Path(resolve("m/2", registry=reg_path)[1].file)
    out = ok("registry", "delete", "m@champion", "--force", "--registry", reg_path)
    assert "deleted m/2 (removed @champion)" in out
    assert not b_file.exists()  # no other version shared it
    with Registry.open(reg_path) as reg:
        assert [v.version for v in reg.versions("m")] == [1]
        assert reg.history("m")[-1].action == "remove"
        # Rollback restores the holder before the deleted version.
        assert reg.rollback("m", "champion").to_version == 1

    # m/1 shares its file with other/1: deleting it keeps the file.
    ok("registry", "promote", "m", "1", "--alias", "old", "--registry", reg_path)
    ok("registry", "delete", "m/1", "--force", "--registry", reg_path)
    data, _ = resolve("other/1", registry=reg_path)
    assert data == built["a"].read_bytes()
    # Version numbers are never reused.
    assert register(reg_path, built["b"])["version"] == 3
    ok("registry", "verify", "--registry", reg_path)


def test_tag_archive_and_compare(built, reg_path):
    register(reg_path, built["a"], "m", "--tag", "owner=ann")
    register(reg_path, built["b"])
    out = ok("registry", "tag", "m/1", "reviewed=yes", "owner=bob", "--registry", reg_path)
    assert out.strip() == "m/1: owner=bob reviewed=yes"
    info = json.loads(
        ok("registry", "tag", "m/1", "--remove", "owner", "--registry", reg_path, "--json")
    )
    assert info["tags"] == {"reviewed": "yes"}
    refused("registry", "tag", "m/1", "no-equals-sign", "--registry", reg_path)
    refused("registry", "tag", "m/1", "bad key=1", "--registry", reg_path)

    assert "m/2 is archived" in ok("registry", "archive", "m", "--registry", reg_path)
    assert "m/2 is active" in ok("registry", "archive", "m/2", "--restore", "--registry", reg_path)

    ok("registry", "promote", "m", "1", "--alias", "champion", "--registry", reg_path)
    cmp = json.loads(
        ok("registry", "compare", "m", "champion", "2", "--registry", reg_path, "--json")
    )
    assert (cmp["a"], cmp["b"]) == ("m/1", "m/2")
    rows = {r["key"]: r for r in cmp["rows"]}
    assert rows["threshold"]["differs"] is True
    assert "params.width" in rows and "params.learning_rate" in rows
    assert rows["test.auc_roc"]["a"] is not None
    text = ok("registry", "compare", "m", "1", "2", "--registry", reg_path)
    assert "params.width" in text and "m/1" in text.splitlines()[0]


# ---------------------------------------------------------------- integrity


def test_tampered_file_is_refused_and_reported(built, reg_path):
    register(reg_path, built["a"])
    register(reg_path, built["b"], "n")
    path = resolve("m/1", registry=reg_path)[1].file
    path.chmod(0o644)
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))

    with pytest.raises(IntegrityError, match="does not match its recorded sha256"):
        resolve("m/1", registry=reg_path)
    assert resolve("n/1", registry=reg_path)[0] == built["b"].read_bytes()
    out, err = refused("registry", "verify", "--registry", reg_path)
    assert "PROBLEM m/1: sha256 mismatch" in out
    assert "n/1" not in out
    assert "1 problem" in err
    # No alias moves to a tampered model, gate or no gate.
    out, err = refused(
        "registry", "promote", "m", "1", "--alias", "champion", "--registry", reg_path
    )
    assert "does not match its recorded sha256" in err
    history = json.loads(ok("registry", "history", "m", "--registry", reg_path, "--json"))
    assert history == []

    path.unlink()
    with pytest.raises(IntegrityError, match="is missing"):
        resolve("m/1", registry=reg_path)
    report = json.loads(run("registry", "verify", "--registry", reg_path, "--json")[1])
    assert report["ok"] is False
    assert report["problems"][0]["problem"] == "the model file is missing"


def test_read_side_imports_no_torch_optuna_or_sklearn(built, reg_path):
    register(reg_path, built["a"])
    ok("registry", "promote", "m", "1", "--registry", reg_path)
    script = f"""
import json, sys
from anomtune.registry import resolve
from anomtune.scoring import load_scorer
import numpy as np
data, info = resolve("m@champion", registry={str(reg_path)!r})
result = load_scorer(data).score(np.zeros((4, 6), dtype=np.float32))
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "optuna", "sklearn"))
print(json.dumps({{"ref": info.ref, "rows": len(result.score), "heavy": heavy}}))
"""
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report == {"ref": "m/1", "rows": 4, "heavy": []}


_WORKER = """
import os, sys, time
from anomtune.cli import main
go = sys.argv[1]
while not os.path.exists(go):
    time.sleep(0.005)
main(sys.argv[2:])
"""


def race_register(built, go: Path, location: list[str], n: int = 8) -> list[dict]:
    """``n`` processes register into one registry at the same moment; their JSON results."""

    def worker(i: int) -> subprocess.Popen:
        model = built["a"] if i % 2 else built["b"]
        args = ["registry", "register", "--onnx", model, "--name", "shared", *location]
        args += ["--description", f"worker {i}", "--json"]
        return subprocess.Popen(
            [sys.executable, "-c", _WORKER, str(go), *map(str, args)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=subprocess_env(),
        )

    procs = [worker(i) for i in range(n)]
    time.sleep(1.0)  # let every worker finish importing and wait at the line
    go.touch()
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err
        results.append(json.loads(out))
    return results


def check_race(built, results: list[dict], reg: Registry) -> None:
    assert sorted(r["version"] for r in results) == list(range(1, 9))
    assert sorted(r["description"] for r in results) == [f"worker {i}" for i in range(8)]
    versions = reg.versions("shared")
    assert [v.version for v in versions] == list(range(1, 9))
    for v in versions:
        expected = built["a"] if int(v.description.split()[1]) % 2 else built["b"]
        assert reg.load(v.ref)[0] == expected.read_bytes()
    report = reg.verify()
    assert report.ok and report.versions == 8 and report.files == 2 and not report.notes


def test_eight_processes_register_at_once(built, tmp_path):
    reg = tmp_path / "fresh-registry"  # created by the racing processes themselves
    results = race_register(built, tmp_path / "go", ["--registry", reg])
    with Registry.open(reg) as opened:
        check_race(built, results, opened)


def test_postgresql_registry(built, tmp_path, postgres_url):
    # A fresh database (see conftest.py): the racing processes create the tables.
    files = tmp_path / "team-files"
    location = ["--registry", postgres_url, "--registry-files", files]
    results = race_register(built, tmp_path / "go", location)
    with Registry.open(postgres_url, files=files) as reg:
        check_race(built, results, reg)
    assert "0 problem(s)" in ok("registry", "verify", *location)
    gate = ["--data", built["data"], "--label", "label", *location]
    worker_model = {
        r["version"]: built["a"] if int(r["description"].split()[1]) % 2 else built["b"]
        for r in results
    }
    better = min(v for v, m in worker_model.items() if m == built["better"])
    worse = min(v for v, m in worker_model.items() if m == built["worse"])
    ok("registry", "promote", "shared", better, *location)
    _, err = refused("registry", "promote", "shared", worse, "--if-better", *gate)
    assert "does not beat" in err
    ok("registry", "promote", "shared", worse, "--alias", "staging", *location)
    ok("registry", "promote", "shared", better, "--alias", "staging", "--if-better", *gate)
    assert f"-> version {worse}" in ok(
        "registry", "rollback", "shared", "--alias", "staging", *location
    )
    moves = json.loads(ok("registry", "history", "shared", "--json", *location))
    assert [m["action"] for m in moves] == ["promote", "promote", "promote", "rollback"]
    refused("registry", "delete", f"shared/{better}", *location)
    ok("registry", "delete", f"shared/{better}", "--force", *location)
    ok("registry", "tag", f"shared/{worse}", "db=postgres", *location)
    assert "0 problem(s)" in ok("registry", "verify", *location)


def test_killed_registration_leaves_no_half_version(built, reg_path):
    def kill_at(name: str, point: str) -> None:
        """Start a registration, wait until it pauses at ``point``, kill -9 it."""
        args = ["registry", "register", "--onnx", built["b"], "--name", name]
        kill_paused([*args, "--registry", reg_path], point)

    register(reg_path, built["a"])
    for point in PAUSE_POINTS:
        kill_at("m", point)
        with Registry.open(reg_path) as reg:
            assert [v.version for v in reg.versions("m")] == [1], point
            assert reg.verify().ok, point
        out = ok("registry", "verify", "--registry", reg_path)
        assert "0 problem(s)" in out
    # A killed first registration of a new name leaves no model behind either.
    kill_at("fresh", "inserted")
    with Registry.open(reg_path) as reg:
        assert [m.name for m in reg.models()] == ["m"]
    _, err = refused("registry", "versions", "fresh", "--registry", reg_path)
    assert "no model named 'fresh'" in err
    # The staged file or the placed-but-unreferenced file is only a note.
    assert "note" in ok("registry", "verify", "--registry", reg_path)
    # The counter was rolled back with each killed transaction: no gap.
    assert register(reg_path, built["b"])["version"] == 2
    assert resolve("m/2", registry=reg_path)[0] == built["b"].read_bytes()


# ---------------------------------------------------------------- errors and help


def test_errors_are_one_line(built, tmp_path, reg_path):
    _, err = refused("registry", "list", "--registry", tmp_path / "nowhere")
    assert "there is no model registry at" in err
    assert not (tmp_path / "nowhere").exists()
    with pytest.raises(registry_pkg.RegistryNotFoundError, match="m@champion is a registry ref"):
        resolve("m@champion", registry=tmp_path / "nowhere")
    register(reg_path, built["a"])
    for args, needle in [
        (["show", "nope"], "no model named 'nope'"),
        (["show", "m/7"], "no version 7"),
        (["show", "m@gold"], "no alias 'gold'"),
        (["show", "../etc"], "not a model reference"),
        (["versions", "Nope"], "lowercase"),
        (["history", "nope"], "no model named"),
        (["tag", "x.onnx", "a=b"], "not a registry reference"),
        (["compare", "m", "1", "5"], "no version 5"),
    ]:
        _, err = refused("registry", *args, "--registry", reg_path)
        assert needle in err, (args, err)
    _, err = refused("registry", "list", "--registry", "postgresql://u@h/db")
    assert "--registry-files" in err
    (tmp_path / "plain.db").write_bytes(b"")
    _, err = refused("registry", "list", "--registry", tmp_path / "plain.db")
    assert "no model registry in" in err and "no registry tables" in err


def test_every_command_has_help_with_an_example():
    group = cli.commands["registry"]
    assert set(group.commands) == {
        "register", "list", "show", "versions", "compare", "promote", "history",
        "rollback", "tag", "archive", "delete", "verify",
    }  # fmt: skip
    for name in group.commands:
        code, out, _ = run("registry", name, "--help")
        assert code == 0
        assert "Example" in out and f"anomtune registry {name}" in out, name
        assert "--registry" in out


def test_public_surface():
    assert sorted(registry_pkg.__all__) == sorted(
        [
            "AliasMove", "Gate", "GateResult", "IntegrityError", "InvalidNameError",
            "ModelNotFoundError", "ModelRef", "ModelSummary", "ModelVersion", "Promotion",
            "PromotionRefused", "Registry", "RegistryError", "RegistryLocation",
            "RegistryNotFoundError", "VerifyReport",
            "graph_metadata", "locate_registry", "parse_ref", "promote", "register_onnx",
            "register_run", "resolve", "validate_alias", "validate_name",
        ]
    )  # fmt: skip
    for name in registry_pkg.__all__:
        assert hasattr(registry_pkg, name)
    from anomtune.errors import AnomtuneError

    assert issubclass(RegistryError, AnomtuneError)
