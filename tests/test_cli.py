"""``anomtune fit`` through the real command line: results, and one-line errors."""

from __future__ import annotations

import json
import logging
import re
import shutil
import subprocess
import sys
from pathlib import Path

import click
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from conftest import TINY_SPACE

from anomtune import __version__
from anomtune.cli import cli, main
from anomtune.cli.options import parse_params, split_names
from anomtune.cli.output import print_json
from anomtune.data import read_table
from anomtune.errors import ConfigError, DataError

CARDIO = Path(__file__).resolve().parents[1] / "datasets" / "cardio.csv"
FAST = ["--param", "epochs=3", "--param", "width=16"]


def planted(path: Path, n_normal: int = 180, n_anomaly: int = 20, seed: int = 0) -> Path:
    """Normal rows near a line in 4-d space, anomalies off it."""
    rng = np.random.default_rng(seed)
    t = rng.normal(size=n_normal)
    normal = np.c_[t, 2 * t, -t, 0.5 * t] + rng.normal(scale=0.05, size=(n_normal, 4))
    anomalies = rng.normal(scale=2.0, size=(n_anomaly, 4))
    frame = pd.DataFrame(np.r_[normal, anomalies], columns=["f0", "f1", "f2", "f3"])
    frame["is_anomaly"] = [0] * n_normal + [1] * n_anomaly
    frame = frame.sample(frac=1.0, random_state=seed).reset_index(drop=True)
    frame.to_csv(path, index=False)
    return path


def strict_json(text: str) -> dict:
    def refuse(name):
        raise ValueError(f"not standard JSON: {name}")

    return json.loads(text, parse_constant=refuse)


# -- working runs, in-process with CliRunner -------------------------------------------


def test_fit_json_result(tmp_path):
    path = planted(tmp_path / "d.csv")
    result = CliRunner().invoke(
        cli, ["fit", str(path), "--label", "is_anomaly", "--seed", "1", "--json", *FAST]
    )
    assert result.exit_code == 0, result.output
    out = strict_json(result.stdout)
    assert out["data"]["rows"] == 200
    assert out["data"]["anomalies"] == 20
    assert out["data"]["features"] == 4
    assert out["data"]["fingerprint"] == read_table(path, label="is_anomaly").fingerprint
    assert out["split"]["rows"] == {"train": 120, "val": 40, "test": 40}
    assert out["split"]["seed"] == 1
    assert out["seed"] == 1
    assert out["train_on"] == "normal"
    assert out["params"]["epochs"] == 3
    assert out["params"]["width"] == 16
    assert out["epochs"] == 3
    assert out["threshold_rule"] == "maximises F1 on the validation split"
    assert np.isfinite(out["threshold"])
    for part, rows in (("val", 40), ("test", 40)):
        metrics = out["metrics"][part]
        assert metrics["rows"] == rows
        for key in ("auc_roc", "auc_pr", "f1", "precision", "recall"):
            assert 0.0 <= metrics[key] <= 1.0


def test_fit_text_result(tmp_path):
    path = planted(tmp_path / "d.csv")
    result = CliRunner().invoke(cli, ["fit", str(path), "--label", "is_anomaly", *FAST])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"{path}: 200 rows, 4 features, 20 anomalies; trained 3 epochs")
    assert lines[1].split() == ["split", "AUC-ROC", "AUC-PR", "F1", "prec", "recall"]
    assert lines[2].split()[0] == "val"
    assert lines[3].split()[0] == "test"
    assert lines[4].startswith("threshold ")


def test_fit_with_data_options(tmp_path):
    rng = np.random.default_rng(0)
    n = 120
    frame = pd.DataFrame(
        {
            "txn_id": [f"t{i}" for i in range(n)],
            "amount": rng.normal(size=n),
            "junk": rng.normal(size=n),
            "shop": rng.choice(["a", "b", "c"], n),
            "hour": rng.integers(0, 3, n),
            "kind": np.where(np.arange(n) % 8 == 0, "fraud", "ok"),
        }
    )
    path = tmp_path / "t.csv"
    frame.to_csv(path, sep=";", index=False)
    args = ["fit", str(path), "--label", "kind", "--positive", "fraud", "--sep", ";"]
    args += ["--id-column", "txn_id", "--exclude", "junk", "--categorical", "hour"]
    args += ["--train-on", "all", "--json", *FAST]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    out = strict_json(result.stdout)
    assert out["data"]["anomalies"] == 15
    assert out["data"]["numeric"] == 1
    assert out["data"]["categorical"] == 2
    assert out["train_on"] == "all"
    # Selecting the same columns with --features gives the same data.
    args2 = ["fit", str(path), "--label", "kind", "--positive", "fraud", "--sep", ";"]
    args2 += ["--features", "amount,shop", "--features", "hour", "--categorical", "hour"]
    args2 += ["--json", *FAST]
    again = strict_json(CliRunner().invoke(cli, args2).stdout)
    assert again["data"]["fingerprint"] == out["data"]["fingerprint"]


def test_fit_on_bundled_cardio_reaches_the_auc_floor():
    result = CliRunner().invoke(
        cli,
        ["fit", str(CARDIO), "--label", "is_anomaly", "--seed", "0", "--json"],
    )
    assert result.exit_code == 0, result.output
    out = strict_json(result.stdout)
    assert out["data"]["rows"] == 1831
    assert out["split"]["rows"] == {"train": 1098, "val": 366, "test": 367}
    assert out["epochs"] > 0
    assert out["metrics"]["test"]["auc_roc"] >= 0.90


def test_help_lists_fit():
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    assert "fit" in result.stdout
    result = CliRunner().invoke(cli, ["fit", "--help"])
    assert result.exit_code == 0
    for option in ("--label", "--positive", "--features", "--exclude", "--id-column", "--sep"):
        assert option in result.stdout


# -- bad input: exit code 2, one line on stderr, no traceback ------------------------------


def good_csv(tmp_path: Path) -> Path:
    return planted(tmp_path / "good.csv")


def text_file(content: str | bytes):
    def make(tmp_path: Path) -> Path:
        path = tmp_path / "bad.csv"
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
        return path

    return make


def numeric_rows(n: int = 40, anomaly_every: int = 5) -> list[str]:
    return [f"{i * 0.5},{i % 7},{int(i % anomaly_every == 0)}" for i in range(n)]


def with_row(index: int, row: str):
    rows = numeric_rows()
    rows[index] = row
    return "a,b,is_anomaly\n" + "\n".join(rows) + "\n"


GOOD_HEADER = "a,b,is_anomaly\n"

BAD_DATA = {
    "missing file": (lambda tmp: tmp / "nope.csv", [], "nope.csv: no such file"),
    "folder": (lambda tmp: tmp, [], "is a directory"),
    "empty file": (text_file(""), [], "the file is empty"),
    "header only": (text_file(GOOD_HEADER), [], "header but no data rows"),
    "ragged rows": (
        text_file(GOOD_HEADER + "1,2,0\n1,2,3,1\n"),
        [],
        "the header has 3 columns but the row at line 3 has 4",
    ),
    "binary junk": (text_file(bytes(range(256)) * 8), [], "NUL bytes"),
    "not utf-8": (
        text_file(b"a,b,is_anomaly\n\xff\xfe,1,0\n"),
        ["--encoding", "utf-8"],
        "not a utf-8 text file; give its encoding with --encoding",
    ),
    "duplicate columns": (
        text_file("a,b,a,is_anomaly\n1,2,3,0\n"),
        [],
        "duplicate column names: 'a'",
    ),
    "label missing": (good_csv, ["--label", "is_anomali"], "did you mean 'is_anomaly'?"),
    "wrong delimiter": (
        text_file("a;b;is_anomaly\n" + "\n".join(r.replace(",", ";") for r in numeric_rows())),
        ["--sep", ","],
        "pass --sep ';'",
    ),
    "one class": (
        text_file(GOOD_HEADER + "".join(f"{i},{i % 7},0\n" for i in range(40))),
        [],
        "only one class",
    ),
    "unknown label values": (
        text_file("a,is_anomaly\n1,normal\n2,attack\n3,normal\n"),
        [],
        "(values found: 'attack', 'normal'); pass the anomaly value with --positive",
    ),
    "positive not present": (
        text_file("a,is_anomaly\n1,normal\n2,attack\n3,normal\n"),
        ["--positive", "fraud"],
        "positive label 'fraud' does not occur",
    ),
    "no usable column": (
        text_file("a,b,is_anomaly\n" + "\n".join(f"{i},,{i % 2}" for i in range(10)) + "\n"),
        [],
        "no feature columns left (a: id (0, 1, 2, ... in order); b: empty (all missing)",
    ),
    "inf value": (
        text_file(with_row(6, "inf,1,0")),
        [],
        "column 'a' has an infinite value at line 8",
    ),
    "junk in numeric column": (
        text_file(with_row(9, "1.5,oops,0")),
        [],
        "column 'b' is numeric but has the non-numeric value 'oops' at line 11",
    ),
    "tiny data": (
        text_file(GOOD_HEADER + "\n".join(numeric_rows(n=40, anomaly_every=20)) + "\n"),
        [],
        "too few rows to split: 2 anomalies and 38 normal rows",
    ),
    "unknown feature": (good_csv, ["--features", "f0,f9"], "feature column 'f9' not found"),
    "bad separator": (good_csv, ["--sep", ";;"], "separator must be one character"),
}


@pytest.mark.parametrize("case", list(BAD_DATA))
def test_bad_data_gives_one_line_and_exit_2(tmp_path, capsys, case):
    make, extra, expected = BAD_DATA[case]
    path = make(tmp_path)
    args = ["fit", str(path)]
    if "--label" not in extra:
        args += ["--label", "is_anomaly"]
    assert_usage_error(capsys, [*args, *extra], expected)


BAD_OPTIONS = {
    "--label missing": ([], "fit needs --label"),
    "unknown --param name": (
        ["--label", "is_anomaly", "--param", "varient=vae"],
        "did you mean 'variant'?",
    ),
    "bad --param value": (
        ["--label", "is_anomaly", "--param", "variant=foo"],
        "variant must be one of ae, sparse, denoising, contractive, vae, not 'foo'",
    ),
    "bad --param number": (
        ["--label", "is_anomaly", "--param", "epochs=many"],
        "epochs must be an integer",
    ),
    "--param without value": (["--label", "is_anomaly", "--param", "epochs"], "KEY=VALUE"),
    "--param twice": (
        ["--label", "is_anomaly", "--param", "epochs=2", "--param", "epochs=3"],
        "--param epochs is given more than once",
    ),
    "negative seed": (["--label", "is_anomaly", "--seed", "-1"], "Invalid value for '--seed'"),
    "bad --train-on": (["--label", "is_anomaly", "--train-on", "some"], "'--train-on'"),
    "unknown option": (["--labl", "is_anomaly"], "No such option '--labl'"),
}


@pytest.mark.parametrize("case", list(BAD_OPTIONS))
def test_bad_options_give_one_line_and_exit_2(tmp_path, capsys, case):
    extra, expected = BAD_OPTIONS[case]
    assert_usage_error(capsys, ["fit", str(good_csv(tmp_path)), *extra], expected)


def assert_usage_error(capsys, args: list[str], expected: str) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    captured = capsys.readouterr()
    assert exit_info.value.code == 2, captured.err
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("anomtune: error: ")
    assert expected in lines[0]
    assert "Traceback" not in captured.err
    assert captured.out == ""


def test_debug_shows_the_exception(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        main(["--debug", "fit", str(tmp_path / "nope.csv"), "--label", "y"])


# -- the installed entry points ---------------------------------------------------------


def console_script() -> str:
    beside = Path(sys.executable).with_name("anomtune")
    found = str(beside) if beside.exists() else shutil.which("anomtune")
    assert found, "the anomtune console script is not installed"
    return found


def test_installed_console_script_and_python_m(tmp_path):
    done = subprocess.run(
        [console_script(), "--version"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"anomtune, version {__version__}"

    done = subprocess.run(
        [sys.executable, "-m", "anomtune", "--help"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "Usage:" in done.stdout
    assert "fit" in done.stdout

    done = subprocess.run(
        [console_script(), "fit", str(tmp_path / "nope.csv"), "--label", "y"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert done.stderr.splitlines() == [f"anomtune: error: {tmp_path / 'nope.csv'}: no such file"]


# -- option helpers ---------------------------------------------------------------------


def test_parse_params_reads_json_values_and_falls_back_to_text():
    params = parse_params(
        ("epochs=5", "learning_rate=1e-3", "variant=vae", "hidden_sizes=[32, 8]", "latent_dim=null")
    )
    assert params == {
        "epochs": 5,
        "learning_rate": 1e-3,
        "variant": "vae",
        "hidden_sizes": (32, 8),
        "latent_dim": None,
    }
    assert parse_params((" batch_norm = false",)) == {"batch_norm": False}
    assert parse_params(("a=True", "b=False", "c=None", "d=none")) == {
        "a": True,
        "b": False,
        "c": None,
        "d": "none",
    }


@pytest.mark.parametrize("item", ["epochs", "=5", " =5"])
def test_parse_params_needs_key_and_value(item):
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_params((item,))


def test_print_json_writes_standard_json(capsys):
    payload = {"threshold": float("inf"), "values": [np.float32("nan"), 1.5], "n": np.int64(3)}
    print_json(payload)
    assert strict_json(capsys.readouterr().out) == {
        "threshold": None,
        "values": [None, 1.5],
        "n": 3,
    }


def test_split_names():
    assert split_names(("a,b", " c ", "", "d,,e")) == ["a", "b", "c", "d", "e"]


# -- --debug before and after the command name -------------------------------------------


@pytest.fixture(autouse=True)
def _logging_level_restored():
    """--debug in-process turns on debug logging for the rest of the process."""
    root = logging.getLogger()
    level = root.level
    yield
    root.setLevel(level)


@pytest.mark.parametrize(
    "args",
    [
        ["--debug", "tune", "{missing}", "--label", "y"],
        ["tune", "{missing}", "--label", "y", "--debug"],
        ["--debug", "fit", "{missing}", "--label", "y"],
        ["fit", "{missing}", "--debug", "--label", "y"],
    ],
)
def test_debug_before_or_after_the_command_shows_the_exception(tmp_path, args):
    missing = str(tmp_path / "nope.csv")
    with pytest.raises(DataError, match="no such file"):
        main([a.format(missing=missing) for a in args])


def test_without_debug_a_word_after_double_dash_is_not_the_flag(tmp_path, capsys):
    assert_usage_error(
        capsys, ["fit", str(tmp_path / "nope.csv"), "--label", "y", "--", "--debug"], "Got"
    )


def test_debug_reaches_the_command_from_either_place(tmp_path, monkeypatch):
    import optuna

    path = planted(tmp_path / "d.csv", n_normal=90, n_anomaly=10)
    (tmp_path / "space.toml").write_text(TINY_SPACE)
    common = ["--label", "is_anomaly", "--space", str(tmp_path / "space.toml"), "--trials", "1"]
    common += ["--storage", str(tmp_path / "s.journal"), "--quiet", "--json"]
    monkeypatch.chdir(tmp_path)
    before = optuna.logging.get_verbosity()
    try:
        for i, args in enumerate(
            (
                ["tune", str(path), *common, "--study", "a"],
                ["--debug", "tune", str(path), *common, "--study", "b"],
                ["tune", str(path), *common, "--study", "c", "--debug"],
            )
        ):
            result = CliRunner().invoke(cli, [*args, "--out", str(tmp_path / f"run{i}")])
            assert result.exit_code == 0, result.output
            wanted = optuna.logging.ERROR if i == 0 else optuna.logging.DEBUG
            assert optuna.logging.get_verbosity() == wanted, args
    finally:
        optuna.logging.set_verbosity(before)


def test_every_command_takes_debug_after_its_name():
    for path, command in all_commands():
        flags = {opt for p in command.params for opt in getattr(p, "opts", [])}
        assert "--debug" in flags, path
    result = CliRunner().invoke(cli, ["registry", "list", "--registry", "nowhere", "--debug"])
    assert "No such option" not in result.output


def all_commands(group: click.Group | None = None, prefix: tuple[str, ...] = ()):
    group = cli if group is None else group
    for name, command in sorted(group.commands.items()):
        yield (*prefix, name), command
        if isinstance(command, click.Group):
            yield from all_commands(command, (*prefix, name))


def test_help_explains_every_option():
    # serve --port is left to the serving code's own change.
    undocumented = {(("serve",), "--port")}
    for path, command in all_commands():
        result = CliRunner().invoke(cli, [*path, "--help"])
        assert result.exit_code == 0, path
        for param in command.params:
            if not isinstance(param, click.Option) or (path, param.opts[0]) in undocumented:
                continue
            assert param.help, f"anomtune {' '.join(path)} {param.opts[0]} has no help"
            assert param.opts[-1] in result.stdout, (path, param.opts)


# -- choices and defaults come from the library ---------------------------------------------


def option(path: tuple[str, ...], name: str) -> click.Option:
    command = dict(all_commands())[path]
    return next(p for p in command.params if name in getattr(p, "opts", []))


def test_choice_lists_are_the_librarys():
    from anomtune.registry import _gate
    from anomtune.tuning import config as tuning

    assert option(("tune",), "--sampler").type.choices == tuning.SAMPLERS
    assert option(("tune",), "--pruner").type.choices == tuning.PRUNERS
    assert option(("tune",), "--metric").type.choices == tuning.METRICS
    assert option(("registry", "promote"), "--metric").type.choices == _gate.METRICS
    result = CliRunner().invoke(cli, ["tune", "--help"])
    assert "[" + "|".join(tuning.SAMPLERS) + "]" in result.stdout


def test_tune_defaults_are_the_librarys():
    from dataclasses import fields

    from anomtune.tuning import TuneConfig

    defaults = {f.name: f.default for f in fields(TuneConfig)}
    for name in ("metric", "sampler", "pruner", "trials", "seed", "workers", "tolerance"):
        assert option(("tune",), f"--{name}").default == defaults[name], name
    assert option(("tune",), "--workspace").default == defaults["workspace"]
    assert option(("tune",), "--train-on").default == defaults["train_on"]
    assert option(("tune",), "--sep").default == defaults["sep"]


def test_an_unknown_choice_names_the_librarys_choices(tmp_path, capsys):
    from anomtune.tuning.config import SAMPLERS

    path = good_csv(tmp_path)
    with pytest.raises(SystemExit):
        main(["tune", str(path), "--sampler", "annealing"])
    err = capsys.readouterr().err
    assert err.startswith("anomtune: error: Invalid value for '--sampler'")
    assert all(repr(s) in err for s in SAMPLERS)


# -- output: numbers, tables, progress ---------------------------------------------------------


def test_numbers_are_printed_with_few_digits():
    from anomtune.cli.output import metric_text, param_text, threshold_text

    assert param_text(0.0012345678901234567) == "0.001235"
    assert param_text(123456.7) == "1.235e+05"
    assert param_text(64) == "64"
    assert param_text(True) == "True"
    assert param_text([64, 0.123456]) == "[64, 0.1235]"
    assert param_text(None) == "-"
    assert metric_text(0.987654321) == "0.9877"
    assert metric_text(None) == "-"
    assert threshold_text(0.123456789, "maximises F1") == "0.123457 (maximises F1)"


def test_tables_line_up(capsys):
    from anomtune.cli.output import print_metrics, print_table

    print_table(["name", "rows"], [["a", "1,000"], ["long-name", "7"]], right={1})
    assert capsys.readouterr().out.splitlines() == [
        "name        rows",
        "a          1,000",
        "long-name      7",
    ]
    print_metrics(
        {"val": {"auc_roc": 0.91, "auc_pr": 0.5, "f1": 0.25, "precision": 1.0, "recall": 1 / 7}}
    )
    head, row = capsys.readouterr().out.splitlines()
    assert head.split() == ["split", "AUC-ROC", "AUC-PR", "F1", "prec", "recall"]
    assert row.split() == ["val", "0.9100", "0.5000", "0.2500", "1.0000", "0.1429"]
    assert len(head) == len(row)


def test_progress_draws_clicks_bar_on_a_terminal(monkeypatch):
    import os
    import select

    from anomtune.cli.output import Progress

    master, slave = os.openpty()
    terminal = open(slave, "w", encoding="utf-8")  # noqa: SIM115 - closed below
    try:
        monkeypatch.setattr(sys, "stderr", terminal)
        with Progress("trials", describe=lambda n: f"best {n}") as progress:
            for done in range(1, 5):
                progress.update(done, done, total=4)
        terminal.flush()
        shown = b""
        while select.select([master], [], [], 0.5)[0]:
            shown += os.read(master, 65536)
    finally:
        terminal.close()
        os.close(master)
    shown = shown.decode()
    assert "\r" in shown
    assert "trials  [" in shown and "4/4" in shown and "best 4" in shown


def test_progress_in_a_log_writes_a_line_per_step(capsys):
    from anomtune.cli.output import Progress

    with Progress("trials", describe=lambda n: f"best {n}", log=True) as progress:
        for done, best in ((0, 1), (1, 2), (1, 3), (2, 4)):
            progress.update(done, best, total=2)
    assert capsys.readouterr().err.splitlines() == [
        "trials 0/2  best 1",
        "trials 1/2  best 2",
        "trials 2/2  best 4",
    ]
    with Progress("scoring", describe=str) as progress:  # no log: nothing off a terminal
        progress.update(5, "5 rows")
    assert capsys.readouterr().err == ""


FLOAT = re.compile(r"-?(\d+\.\d*|\d*\.\d+|\d+(\.\d*)?e[-+]\d+)")


def floats_with_few_digits(texts) -> list[str]:
    """The texts that are floats, each checked to have at most four significant digits."""
    floats = [t for t in texts if FLOAT.fullmatch(t)]
    for text in floats:
        mantissa = text.lstrip("-").split("e")[0]
        assert len(mantissa.replace(".", "").lstrip("0")) <= 4, text
    return floats


def test_tune_progress_in_a_log_is_one_line_per_trial(tmp_path, monkeypatch):
    path = planted(tmp_path / "d.csv", n_normal=90, n_anomaly=10)
    (tmp_path / "space.toml").write_text(TINY_SPACE)
    monkeypatch.chdir(tmp_path)
    args = ["tune", str(path), "--label", "is_anomaly", "--space", "space.toml", "--trials", "3"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stderr.splitlines() if line.startswith("trials ")]
    assert [line.split()[1] for line in lines] == ["1/3", "2/3", "3/3"]
    assert all(" best " in line and " pruned " in line for line in lines)
    # The parameters of the best trial, with at most four significant digits.
    out = result.stdout.splitlines()
    start = next(i for i, line in enumerate(out) if line.startswith("best trial #"))
    params = dict(line.split(maxsplit=1) for line in out[start + 1 :] if line.startswith("  "))
    assert params["learning_rate"] in floats_with_few_digits(params.values())
    assert any(line.split()[:2] == ["split", "AUC-ROC"] for line in out)


# -- registry: the default name, and the settings that apply -----------------------------------


@pytest.fixture()
def no_registry_env(monkeypatch):
    monkeypatch.delenv("ANOMTUNE_REGISTRY", raising=False)
    monkeypatch.delenv("ANOMTUNE_REGISTRY_FILES", raising=False)


def tiny_run(tmp_path: Path, data: Path, study: str, *more: str, space: str = "") -> Path:
    """A one-trial run of ``data``; ``space`` holds top-level keys, then extra tables."""
    top, _, tables = space.partition("\n[")
    space_file = tmp_path / f"{study}.toml"
    space_file.write_text(top + "\n" + TINY_SPACE + (f"[{tables}" if tables else ""))
    out = tmp_path / "runs" / study
    args = ["tune", str(data), "--label", "is_anomaly", "--space", str(space_file)]
    args += ["--trials", "1", "--study", study, "--storage", str(tmp_path / "s.journal")]
    result = CliRunner().invoke(cli, [*args, "--out", str(out), "--quiet", *more])
    assert result.exit_code == 0, result.output
    return out


def test_registry_register_names_a_run_as_tune_register_does(tmp_path, no_registry_env):
    data = planted(tmp_path / "Sensor Data.v2.csv", n_normal=90, n_anomaly=10)
    reg = str(tmp_path / "reg")
    run_dir = tiny_run(tmp_path, data, "one")
    result = CliRunner().invoke(cli, ["registry", "register", str(run_dir), "--registry", reg])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("registered sensor-data/1 ")
    # tune --register alone picks the same name: the next version of it.
    tiny_run(tmp_path, data, "two", "--register", "--registry", reg)
    listed = CliRunner().invoke(cli, ["registry", "versions", "sensor-data", "--registry", reg])
    assert [line.split()[0] for line in listed.stdout.splitlines()[1:]] == ["1", "2"]
    # --name still wins; an .onnx file has no data file to be named after.
    result = CliRunner().invoke(
        cli, ["registry", "register", str(run_dir), "--name", "other", "--registry", reg]
    )
    assert result.exit_code == 0 and "registered other/1 " in result.stdout


def test_registry_register_onnx_needs_a_name(tmp_path, capsys):
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(b"not used")
    args = ["registry", "register", "--onnx", str(onnx), "--registry", str(tmp_path / "r")]
    assert_usage_error(capsys, args, "--onnx FILE needs --name NAME")


def shown_params(text: str) -> dict[str, str]:
    lines = text.splitlines()
    start = lines.index("params")
    end = lines.index("lineage")
    return dict(line.split(maxsplit=1) for line in lines[start + 1 : end])


def test_registry_show_lists_the_settings_of_the_models_variant(tmp_path, no_registry_env):
    data = planted(tmp_path / "d.csv", n_normal=90, n_anomaly=10)
    reg = str(tmp_path / "reg")
    spaces = {
        "vae": 'variants = ["vae"]\n[optimizer]\nvalue = "adam"\n',
        "sparse": 'variants = ["sparse"]\n[sparsity]\nvalue = "kl"\n[optimizer]\nvalue = "sgd"\n',
    }
    for name, space in spaces.items():
        tiny_run(tmp_path, data, name, "--register", name, "--registry", reg, space=space)
    vae = CliRunner().invoke(cli, ["registry", "show", "vae", "--registry", reg])
    assert vae.exit_code == 0, vae.output
    params = shown_params(vae.stdout)
    assert params["variant"] == "vae"
    assert {"beta", "vae_score", "learning_rate", "width"} <= set(params)
    assert not {"sparsity", "sparsity_weight", "noise", "noise_level", "momentum"} & set(params)
    assert params["learning_rate"] in floats_with_few_digits(params.values())

    sparse = shown_params(
        CliRunner().invoke(cli, ["registry", "show", "sparse", "--registry", reg]).stdout
    )
    assert sparse["variant"] == "sparse" and sparse["sparsity"] == "kl"
    assert {"sparsity_weight", "sparsity_target", "momentum"} <= set(sparse)
    assert not {"beta", "vae_score", "noise", "contractive_weight"} & set(sparse)

    # The JSON keeps every setting the model was built with.
    doc = strict_json(
        CliRunner().invoke(cli, ["registry", "show", "vae", "--registry", reg, "--json"]).stdout
    )
    assert {"sparsity", "noise", "momentum", "beta"} <= set(doc["metadata"]["params"])
    compared = CliRunner().invoke(cli, ["registry", "compare", "vae", "1", "1", "--registry", reg])
    keys = {line.split()[0] for line in compared.stdout.splitlines()[1:]}
    assert "params.beta" in keys and "params.sparsity" not in keys
