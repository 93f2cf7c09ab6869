"""``anomtune fit`` through the real command line: results, and one-line errors."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from anomtune import __version__
from anomtune.cli import cli, main
from anomtune.cli.options import parse_params, print_json, split_names
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
