"""Listings and conveniences: ``studies``, ``trials``, ``datasets``, --json, --help,
shell completion and did-you-mean errors, against real tuning runs."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import click
import numpy as np
import optuna
import pandas as pd
import pytest
from click.testing import CliRunner

from anomtune.cli import cli, main
from anomtune.data import read_table

ROOT = Path(__file__).resolve().parents[1]
DATASETS = ROOT / "datasets"

TINY_SPACE = """
epochs = 3
variants = ["ae", "denoising"]
[n_layers]
type = "int"
low = 1
high = 1
[width]
type = "int"
low = 4
high = 8
"""


def write_tiny(path: Path, n: int = 160, seed: int = 0) -> Path:
    """Rows near a line in 4-d space, one in ten off it."""
    rng = np.random.default_rng(seed)
    n_anom = n // 10
    t = rng.normal(size=n - n_anom)
    normal = np.c_[t, 2 * t, -t, 0.5 * t] + rng.normal(scale=0.05, size=(n - n_anom, 4))
    X = np.vstack([normal, rng.normal(scale=2.0, size=(n_anom, 4))])
    y = np.r_[np.zeros(n - n_anom, int), np.ones(n_anom, int)]
    order = rng.permutation(n)
    frame = pd.DataFrame(X[order], columns=["speed", "torque", "temp", "load"])
    frame["is_fault"] = y[order]
    frame.to_csv(path, index=False)
    return path


def run(args: list[str]) -> tuple[int, str, str]:
    """The real entry point (errors as one stderr line and exit code 2), captured."""
    runner = CliRunner()
    result = runner.invoke(click.Command("x", callback=lambda: main(args)), [])
    code = result.exit_code
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return code, result.stdout, result.stderr


def one_error_line(code: int, out: str, err: str) -> str:
    assert code == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("anomtune: error: ")
    assert "Traceback" not in err
    return lines[0]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    """Two studies in the default journal of a workspace, one two-objective study in SQLite."""
    root = tmp_path_factory.mktemp("listings")
    data = write_tiny(root / "machines.csv")
    (root / "space.toml").write_text(TINY_SPACE)
    common = ["--label", "is_fault", "--space", str(root / "space.toml"), "--quiet", "--json"]
    workspace = root / "ws"
    summaries = {}
    for study, trials in (("machines", 4), ("machines-b", 2)):
        code, out, err = run(
            [
                "tune",
                str(data),
                *common,
                "--trials",
                str(trials),
                "--study",
                study,
                "--workspace",
                str(workspace),
                "--out",
                str(root / "runs" / study),
            ]
        )
        assert code == 0, err
        summaries[study] = json.loads(out)
    sqlite_url = f"sqlite:///{root / 'studies.db'}"
    code, out, err = run(
        [
            "tune",
            str(data),
            *common,
            "--trials",
            "2",
            "--study",
            "pareto",
            "--objectives",
            "auc-pr,size",
            "--storage",
            sqlite_url,
            "--out",
            str(root / "runs" / "pareto"),
        ]
    )
    assert code == 0, err
    summaries["pareto"] = json.loads(out)
    return {
        "root": root,
        "data": data,
        "workspace": workspace,
        "journal": workspace / "studies.journal",
        "sqlite": sqlite_url,
        "summaries": summaries,
    }


# -- anomtune studies ------------------------------------------------------------------


def test_studies_lists_every_study_of_the_default_journal(tuned):
    code, out, err = run(["studies", "--workspace", str(tuned["workspace"])])
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == [
        "study",
        "trials",
        "complete",
        "pruned",
        "failed",
        "best",
        "objective",
        "state",
    ]
    rows = {line.split()[0]: line.split() for line in lines[1:-1]}
    assert set(rows) == {"machines", "machines-b"}
    for name, total in (("machines", 4), ("machines-b", 2)):
        summary = tuned["summaries"][name]
        counts = summary["study"]["trials"]
        cells = rows[name]
        assert int(cells[1]) == total
        assert int(cells[2]) == counts.get("complete", 0)
        assert int(cells[3]) == counts.get("pruned", 0)
        assert int(cells[4]) == counts.get("fail", 0)
        assert cells[5] == f"{summary['best']['value']:.4f}"
        assert cells[6] == "auc-roc" and cells[-1] == "finished"
    assert lines[-1] == f"storage: {tuned['journal']}"


def test_studies_json_matches_what_tune_reported(tuned):
    code, out, err = run(["studies", "--storage", str(tuned["journal"]), "--json"])
    assert code == 0, err
    doc = json.loads(out)
    assert doc["storage"] == str(tuned["journal"])
    by_name = {s["name"]: s for s in doc["studies"]}
    assert list(by_name) == ["machines", "machines-b"]
    for name, study in by_name.items():
        summary = tuned["summaries"][name]
        assert study["trials"] == sum(summary["study"]["trials"].values())
        assert study["complete"] == summary["study"]["trials"].get("complete", 0)
        assert study["best_value"] == pytest.approx(summary["best"]["value"])
        assert study["best_trial"] == summary["best"]["number"]
        assert study["objectives"] == ["auc-roc"]
        assert study["directions"] == ["maximize"]
        assert study["state"] == "finished"
        assert study["running"] == 0


def test_studies_reads_a_database_url(tuned):
    code, out, err = run(["studies", "--storage", tuned["sqlite"], "--json"])
    assert code == 0, err
    (study,) = json.loads(out)["studies"]
    assert study["name"] == "pareto"
    assert study["objectives"] == ["auc-pr", "size"]
    assert study["directions"] == ["maximize", "minimize"]
    assert study["trials"] == 2
    code, out, err = run(["studies", "--storage", tuned["sqlite"]])
    assert code == 0, err
    assert out.splitlines()[1].split()[0] == "pareto"
    assert "auc-pr (max)" in out


def test_studies_in_the_current_folder_and_an_empty_workspace(tuned, tmp_path, monkeypatch):
    monkeypatch.chdir(tuned["root"])
    shutil.copytree(tuned["workspace"], tuned["root"] / ".anomtune", dirs_exist_ok=True)
    code, out, err = run(["studies"])
    assert code == 0, err
    assert "machines-b" in out and out.splitlines()[-1] == "storage: .anomtune/studies.journal"
    # Nothing tuned yet: an empty listing, and nothing created.
    monkeypatch.chdir(tmp_path)
    code, out, err = run(["studies"])
    assert (code, out) == (0, "")
    assert "no studies in .anomtune/studies.journal" in err
    code, out, err = run(["studies", "--json"])
    assert code == 0 and json.loads(out) == {
        "storage": ".anomtune/studies.journal",
        "studies": [],
    }
    assert list(tmp_path.iterdir()) == []


def test_a_storage_that_does_not_exist_is_an_error_and_is_not_created(tmp_path):
    for args, expected in (
        (["studies", "--storage", str(tmp_path / "typo.journal")], "no such journal file"),
        (["trials", "x", "--storage", str(tmp_path / "typo.journal")], "no such journal file"),
        (["studies", "--storage", f"sqlite:///{tmp_path / 'typo.db'}"], "no SQLite database"),
        (["trials", "x", "--workspace", str(tmp_path / "ws")], "holds no studies"),
    ):
        assert expected in one_error_line(*run(args))
    assert list(tmp_path.iterdir()) == []


def test_a_file_that_is_not_a_journal_is_refused(tuned):
    line = one_error_line(*run(["studies", "--storage", str(tuned["data"])]))
    assert "is not an Optuna journal file" in line


# -- anomtune trials -------------------------------------------------------------------


def test_trials_json_is_the_run_folders_trials_csv(tuned):
    code, out, err = run(["trials", "machines", "--storage", str(tuned["journal"]), "--json"])
    assert code == 0, err
    doc = json.loads(out)
    assert doc["study"] == "machines" and doc["objectives"] == ["auc-roc"]
    csv = pd.read_csv(tuned["root"] / "runs" / "machines" / "trials.csv")
    assert [t["number"] for t in doc["trials"]] == csv["number"].tolist()
    assert [t["state"] for t in doc["trials"]] == csv["state"].tolist()
    for trial, (_, row) in zip(doc["trials"], csv.iterrows(), strict=True):
        assert trial["params_variant"] == row["params_variant"]
        assert trial["epochs"] == row["epochs"]
        if trial["value"] is not None:
            assert trial["value"] == pytest.approx(row["value"])


def test_trials_table_sorted_and_filtered(tuned):
    base = ["trials", "machines", "--workspace", str(tuned["workspace"])]
    code, out, err = run(base)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["#", "state", "auc-roc"]
    assert "variant" in lines[0].split()
    assert [line.split()[0] for line in lines[1:]] == ["0", "1", "2", "3"]

    code, out, err = run([*base, "--sort", "value", "--desc", "--json"])
    values = [t["value"] for t in json.loads(out)["trials"] if t["value"] is not None]
    assert values == sorted(values, reverse=True) and len(values) >= 1
    code, out, err = run([*base, "--sort", "value"])
    shown = [float(line.split()[2]) for line in out.splitlines()[1:] if line.split()[2] != "-"]
    assert shown == sorted(shown)

    code, out, err = run([*base, "--sort", "duration", "--json"])
    durations = [t["duration_s"] for t in json.loads(out)["trials"]]
    assert durations == sorted(durations)

    code, out, err = run([*base, "--state", "complete", "--json"])
    states = {t["state"] for t in json.loads(out)["trials"]}
    assert states == {"complete"}
    code, out, err = run([*base, "--state", "running"])
    assert code == 0 and out == "" and "no trials in that state" in err

    code, out, err = run([*base, "--params"])
    head = out.splitlines()[0].split()
    assert {"width", "learning_rate", "variant"} <= set(head)


def test_trials_of_a_two_objective_study(tuned):
    code, out, err = run(["trials", "pareto", "--storage", tuned["sqlite"]])
    assert code == 0, err
    assert out.splitlines()[0].split()[:4] == ["#", "state", "auc-pr", "size"]
    code, out, err = run(["trials", "pareto", "--storage", tuned["sqlite"], "--json"])
    trials = json.loads(out)["trials"]
    assert all("value_2" in t for t in trials if t["state"] == "complete")


def test_unknown_study_names_the_closest_and_lists_the_others(tuned):
    line = one_error_line(*run(["trials", "machine", "--workspace", str(tuned["workspace"])]))
    assert "no study named 'machine'" in line
    assert "did you mean 'machines'?" in line
    assert "(studies: machines, machines-b)" in line
    line = one_error_line(*run(["trials", "zzz", "--workspace", str(tuned["workspace"])]))
    assert "did you mean" not in line and "machines-b" in line


def test_optuna_loads_the_storage_unchanged_and_the_listings_do_not_write(tuned):
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    journal = tuned["journal"]
    before = sha256(journal)
    for args in (["studies"], ["trials", "machines"], ["trials", "machines-b", "--json"]):
        code, _, err = run([*args, "--storage", str(journal)])
        assert code == 0, err
    assert sha256(journal) == before

    storage = JournalStorage(JournalFileBackend(str(journal)))
    names = sorted(s.study_name for s in optuna.get_all_study_summaries(storage))
    assert names == ["machines", "machines-b"]
    study = optuna.load_study(study_name="machines", storage=storage)
    summary = tuned["summaries"]["machines"]
    assert len(study.trials) == 4
    assert study.best_trial.number == summary["best"]["number"]
    assert study.best_value == pytest.approx(summary["best"]["value"])
    assert study.best_params == summary["best"]["tuned_params"]
    assert study.user_attrs["anomtune.data_fingerprint"] == summary["data"]["fingerprint"]
    assert sha256(journal) == before

    rdb = optuna.storages.RDBStorage(tuned["sqlite"])
    (pareto,) = optuna.get_all_study_summaries(rdb)
    assert pareto.study_name == "pareto" and pareto.n_trials == 2


# -- anomtune datasets -----------------------------------------------------------------


def test_datasets_lists_the_bundled_csvs():
    code, out, err = run(["datasets", "--json"])
    assert code == 0, err
    listed = {d["name"]: d for d in json.loads(out)}
    assert set(listed) == {p.stem for p in DATASETS.glob("*.csv")} >= {"cardio", "thyroid", "wbc"}
    for name, info in listed.items():
        table = read_table(DATASETS / f"{name}.csv", label="is_anomaly")
        assert info["rows"] == table.n_rows
        assert info["columns"] == len(table.schema.columns)
        assert info["anomalies"] == table.n_anomalies
        assert info["anomaly_rate"] == pytest.approx(table.n_anomalies / table.n_rows, abs=1e-6)
        assert info["fingerprint"] == table.fingerprint
        assert info["source"].startswith("ADBench ") and info["source"].endswith(".npz")
    assert listed["cardio"]["source"] == "ADBench 6_cardio.npz"

    code, out, err = run(["datasets"])
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["name", "rows", "columns", "anomalies", "rate", "source"]
    cardio = next(line for line in lines if line.startswith("cardio"))
    assert cardio.split()[:5] == ["cardio", "1,831", "21", "176", "9.61%"]


def test_datasets_writes_one_out(tmp_path):
    target = tmp_path / "mine.csv"
    code, out, err = run(["datasets", "wbc", "-o", str(target)])
    assert code == 0, err
    assert target.read_bytes() == (DATASETS / "wbc.csv").read_bytes()
    assert f"wrote {target}" in out and "anomtune tune" in out

    line = one_error_line(*run(["datasets", "wbc", "-o", str(target)]))
    assert "exists; pass --force" in line
    target.write_text("old")
    code, out, err = run(["datasets", "wbc.csv", "-o", str(target), "--force", "--json"])
    assert code == 0, err
    assert json.loads(out)["written"] == str(target)
    assert target.read_bytes() == (DATASETS / "wbc.csv").read_bytes()

    code, out, err = run(["datasets", "thyroid", "--to", str(tmp_path / "data" / "sets")])
    assert code == 0, err
    written = tmp_path / "data" / "sets" / "thyroid.csv"
    assert written.read_bytes() == (DATASETS / "thyroid.csv").read_bytes()

    done = subprocess.run(
        [sys.executable, "-m", "anomtune", "datasets", "wbc", "-o", "-"],
        capture_output=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == (DATASETS / "wbc.csv").read_bytes()

    code, out, err = run(["datasets", "cardio"])
    assert code == 0, err
    assert out.startswith("cardio: 1,831 rows, 21 feature columns, 176 anomalies")


def test_datasets_bad_requests(tmp_path):
    line = one_error_line(*run(["datasets", "cardoi"]))
    assert "no bundled data set named 'cardoi'; did you mean 'cardio'?" in line
    assert "(bundled: cardio, thyroid, wbc)" in line
    assert "need the NAME" in one_error_line(*run(["datasets", "-o", str(tmp_path / "x.csv")]))
    both = ["datasets", "wbc", "-o", str(tmp_path / "x.csv"), "--to", str(tmp_path)]
    assert "not both" in one_error_line(*run(both))
    nowhere = str(tmp_path / "missing" / "x.csv")
    assert "does not exist" in one_error_line(*run(["datasets", "wbc", "-o", nowhere]))
    assert list(tmp_path.iterdir()) == []


def test_datasets_are_in_the_wheel_and_found_by_an_installed_anomtune(tmp_path):
    """Build the wheel from the sources, unpack it, and list the data sets from there."""
    pytest.importorskip("setuptools", reason="building the wheel needs the build backend")
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    for name in ("anomtune", "registry", "cli", "datasets"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    done = subprocess.run(
        [
            *(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"),
            *("-w", str(tmp_path / "dist"), str(src)),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("anomtune-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for path in DATASETS.glob("*.csv"):
        assert f"anomtune/datasets/{path.name}" in names
    # Every module of every package, subpackages included, is in the wheel.
    for folder, package in (("anomtune", "anomtune"), ("registry", "anomtune/registry")):
        for path in (ROOT / folder).rglob("*.py"):
            if "__pycache__" not in path.parts:
                inside = path.relative_to(ROOT / folder).as_posix()
                assert f"{package}/{inside}" in names, f"{folder}/{inside} is not in the wheel"
    for path in (ROOT / "cli").glob("*.py"):
        assert f"anomtune/cli/{path.name}" in names, f"cli/{path.name} is not in the wheel"
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    # The unpacked wheel comes first on the path, before the editable install.
    env = {**os.environ, "PYTHONPATH": str(site)}
    probe = "import sys; from anomtune.cli import main; main(['datasets', '--json'])"
    done = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    listed = json.loads(done.stdout)
    assert {d["name"] for d in listed} == {p.stem for p in DATASETS.glob("*.csv")}
    for d in listed:
        assert Path(d["path"]).resolve() == (site / "anomtune" / "datasets" / d["file"]).resolve()
        assert d["source"].startswith("ADBench ")


# -- every command: --help with an example, --json where results are printed --------------


def all_commands(group: click.Group = cli, prefix: tuple[str, ...] = ()):
    for name, command in sorted(group.commands.items()):
        yield (*prefix, name), command
        if isinstance(command, click.Group):
            yield from all_commands(command, (*prefix, name))


def test_every_command_has_help_with_an_example():
    commands = list(all_commands())
    assert {("studies",), ("trials",), ("datasets",), ("tune",)} <= {p for p, _ in commands}
    for path, _ in commands:
        code, out, err = run([*path, "--help"])
        assert code == 0, (path, err)
        assert "Usage: anomtune " + " ".join(path) in out, path
        assert "Example" in out, f"anomtune {' '.join(path)} --help shows no example"


def test_every_command_that_prints_results_takes_json():
    # serve prints only where it listens and report only the path of the file it
    # writes; the registry group is not a command. Every other command prints a result.
    without = {("serve",), ("report",), ("registry",)}
    for path, command in all_commands():
        if path in without:
            continue
        flags = {opt for p in command.params for opt in getattr(p, "opts", [])}
        assert "--json" in flags, f"anomtune {' '.join(path)} has no --json"


def test_space_json_is_the_toml_space(tmp_path):
    from anomtune.space import load_space

    target = tmp_path / "space.toml"
    code, out, err = run(["space", "--features", "6", "-o", str(target), "--json"])
    assert code == 0, err
    doc = json.loads(out)
    space = load_space(target)
    assert doc["space"] == json.loads(json.dumps(space.to_dict()))
    assert doc["fingerprint"] == space.fingerprint()
    assert doc["output"] == str(target) and doc["refined_from"] is None
    code, out, err = run(["space", "--features", "6", "--json"])
    assert code == 0 and json.loads(out)["fingerprint"] == doc["fingerprint"]


def test_version_option():
    from anomtune import __version__

    code, out, _ = run(["--version"])
    assert code == 0 and out.strip() == f"anomtune, version {__version__}"


# -- shell completion --------------------------------------------------------------------


def console_script() -> str:
    beside = Path(sys.executable).with_name("anomtune")
    found = str(beside) if beside.exists() else shutil.which("anomtune")
    assert found, "the anomtune console script is not installed"
    return found


def test_shell_completion_script_and_answers(tuned):
    env = {**os.environ, "_ANOMTUNE_COMPLETE": "bash_source"}
    done = subprocess.run([console_script()], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    assert "_anomtune_completion()" in done.stdout
    assert "complete -o nosort -F _anomtune_completion anomtune" in done.stdout

    def complete(words: str) -> list[str]:
        env = {
            **os.environ,
            "_ANOMTUNE_COMPLETE": "bash_complete",
            "COMP_WORDS": words,
            "COMP_CWORD": str(len(words.split()) - 1),
        }
        done = subprocess.run(
            [console_script()],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
            cwd=tuned["root"],
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.split()

    assert complete("anomtune datasets c") == ["plain,cardio"]
    workspace = str(tuned["workspace"])
    assert complete(f"anomtune trials --workspace {workspace} machines-") == ["plain,machines-b"]


# -- did you mean ------------------------------------------------------------------------


def test_a_mistyped_column_suggests_the_closest(tuned, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = str(tuned["data"])
    for args, hint in (
        (["fit", data, "--label", "is_falt"], "did you mean 'is_fault'?"),
        (["fit", data, "--label", "is_fault", "--id-column", "sped"], "did you mean 'speed'?"),
        (["fit", data, "--label", "is_fault", "--exclude", "tork"], "did you mean 'torque'?"),
        (["fit", data, "--label", "is_fault", "--features", "temp,lod"], "did you mean 'load'?"),
        (["tune", data, "--label", "Is_Fault"], "did you mean 'is_fault'?"),
    ):
        line = one_error_line(*run(args))
        assert hint in line, (args, line)


def test_scoring_with_a_renamed_column_suggests_it(tuned, tmp_path):
    import anomtune
    from anomtune.errors import DataError

    model = tmp_path / "m.onnx"
    code, out, err = run(
        ["export", str(tuned["root"] / "runs" / "machines"), "-o", str(model), "--json"]
    )
    assert code == 0, err
    assert json.loads(out)["path"] == str(model)
    frame = pd.read_csv(tuned["data"]).drop(columns=["is_fault"])
    renamed = frame.rename(columns={"torque": "Torque"})
    with pytest.raises(DataError, match=r"missing feature column 'torque'; did you mean 'Torque'"):
        anomtune.load(model).score(renamed)
    renamed.to_csv(tmp_path / "new.csv", index=False)
    line = one_error_line(*run(["score", str(model), str(tmp_path / "new.csv"), "-o", "-"]))
    assert "'torque'" in line and "did you mean 'Torque'?" in line
