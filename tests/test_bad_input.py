"""The bad-input catalogue: everything a user can type or send, done wrong.

One table of cases over the command line (CSV files, options, search-space
files, model references, registry names) and one over HTTP bodies. Every
command case checks the console behaviour: exit code 2, exactly one line on
stderr that says what is wrong and where, no traceback, and nothing written
or changed in the case's folder (the data, the run folder, the study storage,
the registry database and its model files are all snapshotted before and
after). Every HTTP case checks a 4xx with one clear line and a server that
still serves the same model.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from anomtune.cli import cli, main

FEATURES = ["f0", "f1", "f2", "f3"]
HEADER = "f0,f1,f2,f3,is_anomaly\n"


def planted_frame(n_normal: int = 120, n_anomaly: int = 20, seed: int = 0) -> pd.DataFrame:
    """Normal rows near a line in 4-d space, anomalies off it, shuffled."""
    rng = np.random.default_rng(seed)
    t = rng.normal(size=n_normal)
    normal = np.c_[t, 2 * t, -t, 0.5 * t] + rng.normal(scale=0.05, size=(n_normal, 4))
    anomalies = rng.normal(scale=2.0, size=(n_anomaly, 4))
    frame = pd.DataFrame(np.r_[normal, anomalies], columns=FEATURES)
    frame["is_anomaly"] = [0] * n_normal + [1] * n_anomaly
    return frame.sample(frac=1.0, random_state=seed).reset_index(drop=True)


def rows_text(n: int = 40, *, replace: dict[int, str] | None = None, label=None) -> str:
    """A small labeled CSV body (no header); ``replace`` swaps whole data rows."""
    lines = []
    for i in range(n):
        y = int(i % 5 == 0) if label is None else label
        lines.append(f"{i * 0.5},{i % 7},{(i * 3) % 11},{i % 4},{y}")
    for index, row in (replace or {}).items():
        lines[index] = row
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Assets:
    """Made once per module: data, a finished run, its ONNX export and a registry."""

    data: Path
    run: Path
    onnx: Path
    registry: Path


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> Assets:
    folder = tmp_path_factory.mktemp("bad-input-assets")
    data = folder / "planted.csv"
    planted_frame().to_csv(data, index=False)
    space = folder / "tiny.toml"
    space.write_text('variants = ["ae"]\nepochs = 2\nwidth = 8\nn_layers = 1\n')
    run, onnx, registry = folder / "run", folder / "model.onnx", folder / "registry"
    runner = CliRunner()
    reg = ["--registry", str(registry)]
    for args in (
        [
            *["tune", str(data), "--label", "is_anomaly", "--trials", "1"],
            *["--space", str(space), "--storage", str(folder / "study.journal")],
            *["--out", str(run), "--quiet"],
        ],
        ["export", str(run), "-o", str(onnx)],
        ["registry", "register", "--onnx", str(onnx), "--name", "good", *reg],
        ["registry", "promote", "good", "1", "--alias", "champion", *reg],
    ):
        result = runner.invoke(cli, args, catch_exceptions=False)
        assert result.exit_code == 0, result.output
    return Assets(data, run, onnx, registry)


class Env:
    """A case's folder (also the working directory) and ways to put inputs in it."""

    def __init__(self, tmp: Path, assets: Assets):
        self.tmp = tmp
        self.assets = assets

    def file(self, name: str, content: str | bytes) -> str:
        path = self.tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
        return str(path)

    def csv(self, content: str | bytes, name: str = "bad.csv") -> str:
        return self.file(name, content)

    def good(self) -> str:
        """A copy of the module's good data in this folder."""
        return self.file("good.csv", self.assets.data.read_bytes())

    def model(self) -> str:
        return self.file("model.onnx", self.assets.onnx.read_bytes())

    def run(self) -> str:
        target = self.tmp / "run"
        shutil.copytree(self.assets.run, target)
        return str(target)

    def registry(self) -> list[str]:
        """A copy of the module's registry here: ``good`` v1, alias ``champion``."""
        target = self.tmp / "registry"
        shutil.copytree(self.assets.registry, target)
        return ["--registry", str(target)]

    def tampered_registry(self) -> list[str]:
        """The registry copy with one byte of the stored model file flipped."""
        args = self.registry()
        (stored,) = (self.tmp / "registry" / "files").rglob("*.onnx")
        stored.chmod(stored.stat().st_mode | stat.S_IWUSR)
        data = bytearray(stored.read_bytes())
        data[len(data) // 2] ^= 0xFF
        stored.write_bytes(bytes(data))
        return args

    def under_a_file(self, name: str) -> str:
        """A path whose parent is a regular file: unwritable, even for root."""
        blocker = self.tmp / "blocker"
        blocker.write_text("a file, not a folder\n")
        return str(blocker / name)

    def space(self, text: str) -> str:
        return self.file("space.toml", text)


@dataclass(frozen=True)
class Case:
    """One bad input: how to build it and the command, and the line it must give."""

    id: str
    build: Callable[[Env], list[str]]
    message: str  # a regex the single stderr line must match
    how: str = "main"  # "main": anomtune.cli.main in-process; "process": the console script
    stdin: bytes | None = None


def tune(*extra: str, data: Callable[[Env], str] | None = None) -> Callable[[Env], list[str]]:
    def build(env: Env) -> list[str]:
        path = data(env) if data else env.good()
        return ["tune", path, "--label", "is_anomaly", "--trials", "1", "--quiet", *extra]

    return build


def tune_csv(content: str | bytes, *extra: str) -> Callable[[Env], list[str]]:
    return tune(*extra, data=lambda env: env.csv(content))


def tune_space(text: str) -> Callable[[Env], list[str]]:
    def build(env: Env) -> list[str]:
        return tune("--space", env.space(text))(env)

    return build


def score(
    ref: Callable[[Env], list[str]],
    data: Callable[[Env], str] | None = None,
    *extra: str,
    out: str = "out.csv",
) -> Callable[[Env], list[str]]:
    """``score REF DATA -o OUT``; ``ref`` returns the reference and its options."""

    def build(env: Env) -> list[str]:
        ref_args = ref(env)
        path = data(env) if data else env.good()
        return ["score", ref_args[0], path, "-o", str(env.tmp / out), *ref_args[1:], *extra]

    return build


def in_registry(ref: str, tampered: bool = False) -> Callable[[Env], list[str]]:
    def build(env: Env) -> list[str]:
        return [ref, *(env.tampered_registry() if tampered else env.registry())]

    return build


def model_file(env: Env) -> list[str]:
    return [env.model()]


def registry_cmd(*args: str, tampered: bool = False) -> Callable[[Env], list[str]]:
    def build(env: Env) -> list[str]:
        where = env.tampered_registry() if tampered else env.registry()
        return ["registry", *[a.format(model=env.model()) for a in args], *where]

    return build


def identity_onnx() -> bytes:
    """A valid ONNX model that is not an anomtune model (no metadata)."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 4])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


MILLION_EMPTY = ("," * 999_999 + "\n") * 3
NOT_A_NAME = "../../etc/passwd"

CASES = [
    # -- CSV files ---------------------------------------------------------------------------
    Case("csv-empty", tune_csv(""), r"bad\.csv: the file is empty"),
    Case("csv-blank-lines", tune_csv("\n\n  \n"), r"bad\.csv: the file is empty"),
    Case("csv-header-only", tune_csv(HEADER), r"bad\.csv: the file has a header but no data rows"),
    Case(
        "csv-ragged",
        tune_csv(HEADER + rows_text(replace={6: "1,2,3,4,0,9"})),
        r"bad\.csv: the header has 5 columns but the row at line 8 has 6; fix that row",
    ),
    Case(
        "csv-wrong-delimiter",
        tune_csv(HEADER.replace(",", ";") + rows_text().replace(",", ";"), "--sep", ","),
        r"bad\.csv: label column 'is_anomaly' not found .*pass --sep ';'",
    ),
    Case("csv-binary-junk", tune_csv(bytes(range(256)) * 64), r"bad\.csv: .*NUL bytes"),
    Case(
        "csv-not-utf8",
        tune_csv(b"f0,is_anomaly\n\xff\xfe,0\n", "--encoding", "utf-8"),
        r"bad\.csv: not a utf-8 text file; give its encoding with --encoding",
    ),
    Case(
        "csv-decimal-comma-with-comma-separator",
        tune_csv(HEADER + rows_text(), "--decimal", ","),
        r"the decimal mark and the field separator cannot both be ','",
    ),
    Case(
        "csv-boolean-junk",
        tune_csv(HEADER + rows_text(), "--role", "f3=boolean"),
        r"bad\.csv: column 'f3' is boolean but has the value '2' at line 4 .*--role f3=categorical",
    ),
    Case(
        "opt-role-unknown",
        tune("--role", "f0=colour"),
        r"--role f0: 'colour' is not a role \(choose from numeric, boolean",
    ),
    Case("opt-role-no-equals", tune("--role", "f0"), r"--role takes COLUMN=ROLE, not 'f0'"),
    Case("opt-role-unknown-column", tune("--role", "f9=id"), r"column given with --role 'f9'"),
    Case(
        "opt-encoding-unknown",
        tune("--encoding", "klingon"),
        r"unknown text encoding 'klingon' \(try utf-8, latin-1 or cp1252\)",
    ),
    Case("opt-max-levels-zero", tune("--max-levels", "0"), r"--max-levels must be at least 1"),
    Case(
        "csv-duplicate-columns",
        tune_csv("f0,f1,f0,f3,is_anomaly\n" + rows_text()),
        r"bad\.csv: duplicate column names: 'f0'",
    ),
    Case(
        "csv-label-missing",
        tune_csv("f0,f1,f2,f3,label\n" + rows_text()),
        r"bad\.csv: label column 'is_anomaly' not found \(columns: 'f0', .*'label'\)",
    ),
    Case(
        "csv-label-typo",
        lambda env: ["tune", env.good(), "--label", "is_anomally", "--trials", "1"],
        r"good\.csv: label column 'is_anomally' not found .*did you mean 'is_anomaly'\?",
    ),
    Case(
        "csv-one-class",
        tune_csv(HEADER + rows_text(label=0)),
        r"label column 'is_anomaly' of .*bad\.csv has only one class \(40 normal rows\)",
    ),
    Case(
        "csv-label-missing-value",
        tune_csv(HEADER + rows_text(replace={3: "1,2,3,4,"})),
        r"bad\.csv: label column 'is_anomaly' has 1 missing value\(s\) \(at line 5\); "
        r"drop those rows with --drop-unlabeled",
    ),
    Case(
        "csv-label-values-unclear",
        tune_csv(HEADER + rows_text().replace(",1\n", ",attack\n").replace(",0\n", ",ok\n")),
        r"bad\.csv: cannot tell which value of label column 'is_anomaly' .*--positive",
    ),
    Case(
        "csv-no-usable-column",
        tune_csv(HEADER + re.sub(r"^[^,]*,[^,]*,[^,]*,[^,]*,", ",,,,", rows_text(), flags=re.M)),
        r"bad\.csv: no feature columns left \(f0: empty \(all missing\); .*--include COLUMN",
    ),
    Case(
        "csv-infinity",
        tune_csv(HEADER + rows_text(replace={6: "inf,1,2,3,0"})),
        r"bad\.csv: column 'f0' has an infinite value at line 8",
    ),
    Case(
        "csv-minus-infinity",
        tune_csv(HEADER + rows_text(replace={12: "1,2,-Infinity,3,0"})),
        r"bad\.csv: column 'f2' has an infinite value at line 14",
    ),
    Case(
        "csv-string-in-numeric",
        tune_csv(HEADER + rows_text(replace={9: "1.5,oops,2,3,0"})),
        r"bad\.csv: column 'f1' is numeric but has the non-numeric value 'oops' at line 11",
    ),
    Case(
        "csv-huge-number",
        tune_csv(HEADER + rows_text(replace={20: "1,2,3,1e300,0"})),
        r"bad\.csv: column 'f3' has a value too large .*at line 22",
    ),
    Case(
        "csv-overflowing-number",
        tune_csv(HEADER + rows_text(replace={4: "1e999,2,3,4,0"})),
        r"bad\.csv: column 'f0' has an infinite value at line 6",
    ),
    Case(
        "csv-huge-integer",
        tune_csv(HEADER + rows_text(replace={30: "1," + "9" * 60 + ",3,4,0"})),
        r"bad\.csv: column 'f1' has a value too large .*at line 32",
    ),
    Case(
        "csv-million-empty-columns",
        tune_csv(MILLION_EMPTY),
        r"bad\.csv: the header has 1,000,000 columns, more than .*100,000",
    ),
    Case("csv-no-such-file", tune(data=lambda env: str(env.tmp / "nope.csv")), r"nope\.csv: no"),
    Case("csv-is-a-folder", tune(data=lambda env: str(env.tmp)), r"is a (folder|directory)"),
    Case(
        "fit-csv-one-class",
        lambda env: ["fit", env.csv(HEADER + rows_text(label=1)), "--label", "is_anomaly"],
        r"only one class \(40 anomalies\)",
        how="process",
    ),
    Case(
        "space-data-duplicate-columns",
        lambda env: ["space", "--data", env.csv("a,a\n1,2\n"), "-o", str(env.tmp / "s.toml")],
        r"bad\.csv: duplicate column names: 'a'",
    ),
    # -- options -------------------------------------------------------------------------------
    Case("opt-negative-trials", tune("--trials", "-3"), r"--trials must be at least 1, not -3"),
    Case(
        "opt-unknown-sampler",
        tune("--sampler", "annealing"),
        r"Invalid value for '--sampler': 'annealing' is not one of .*'tpe'",
    ),
    Case("opt-zero-workers", tune("--workers", "0"), r"--workers must be at least 1, not 0"),
    Case("opt-negative-timeout", tune("--timeout", "-5"), r"--timeout must be positive, not -5"),
    Case("opt-one-fold", tune("--cv", "1"), r"--cv needs at least 2 folds, not 1"),
    Case("opt-bad-objectives", tune("--objectives", "auc-pr,speed"), r"--objectives takes"),
    Case(
        "opt-unknown-storage-scheme",
        tune("--storage", "nosuchdb://somewhere/x"),
        r"cannot open storage 'nosuchdb://somewhere/x'",
        how="process",  # no library warning on the console either
    ),
    Case(
        "opt-storage-in-a-file",
        lambda env: tune("--storage", f"sqlite:///{env.under_a_file('s.db')}")(env),
        r"cannot open storage 'sqlite:///.*blocker/s\.db'",
    ),
    Case(
        "opt-storage-is-a-folder",
        lambda env: tune("--storage", str(env.tmp))(env),
        r"storage '.*' is a folder",
    ),
    Case(
        "opt-unwritable-out",
        lambda env: tune("--out", env.under_a_file("run"))(env),
        r"--out .*blocker/run: .*blocker is a file",
        how="process",
    ),
    Case(
        "opt-register-path-name",
        tune("--register", NOT_A_NAME),
        r"model name '\.\./\.\./etc/passwd' must not contain path separators",
    ),
    Case(
        "opt-fit-unknown-param",
        lambda env: ["fit", env.good(), "--label", "is_anomaly", "--param", "nosuch=1"],
        r"nosuch",
    ),
    Case(
        "opt-fit-negative-epochs",
        lambda env: ["fit", env.good(), "--label", "is_anomaly", "--param", "epochs=-2"],
        r"epochs.*-2",
    ),
    Case("opt-fit-no-label", lambda env: ["fit", env.good()], r"fit needs --label"),
    Case(
        "opt-score-unwritable-output",
        lambda env: ["score", env.model(), env.good(), "-o", env.under_a_file("out.csv")],
        r"blocker/out\.csv",
    ),
    Case(
        "opt-score-negative-explain",
        score(model_file, None, "--explain", "-1"),
        r"--explain",
    ),
    Case(
        "opt-score-fpr-out-of-range",
        score(model_file, None, "--label", "is_anomaly", "--threshold-at-fpr", "2"),
        r"--threshold-at-fpr.*2",
    ),
    Case(
        "opt-export-unwritable-output",
        lambda env: ["export", env.run(), "-o", env.under_a_file("m.onnx")],
        r"blocker/m\.onnx",
    ),
    Case(
        "opt-export-not-a-run",
        lambda env: ["export", str(env.tmp / "nowhere")],
        r"nowhere: not a run folder",
    ),
    Case(
        "opt-export-broken-summary",
        lambda env: ["export", env.file("broken/summary.json", '{"best": ').rsplit("/", 1)[0]],
        r"broken/summary\.json: not valid JSON",
    ),
    Case(
        "opt-space-unwritable-output",
        lambda env: ["space", "-o", env.under_a_file("space.toml")],
        r"blocker/space\.toml",
    ),
    Case("opt-space-zero-features", lambda env: ["space", "--features", "0"], r"--features"),
    Case(
        "opt-space-refine-not-a-run",
        lambda env: ["space", "--refine", str(env.tmp)],
        r"not a run folder \(no summary\.json\)",
    ),
    # -- search-space files ----------------------------------------------------------------------
    Case(
        "space-unknown-key",
        tune_space("[learning_rate]\nlow = 0.001\nhigh = 0.01\nlogg = true\n"),
        r"space\.toml: .*\[learning_rate\]: unknown key 'logg'; did you mean 'log'\?",
    ),
    Case(
        "space-low-above-high",
        tune_space("[learning_rate]\nlow = 0.1\nhigh = 0.01\n"),
        r"space\.toml: .*\[learning_rate\]: low \(0\.1\) is greater than high \(0\.01\)",
    ),
    Case(
        "space-log-with-zero",
        tune_space("[weight_decay]\nlow = 0.0\nhigh = 0.01\nlog = true\n"),
        r"space\.toml: .*\[weight_decay\]: a log scale needs low > 0 \(got 0\.0\)",
    ),
    Case(
        "space-unknown-parameter",
        tune_space("[learning_rat]\nlow = 0.001\nhigh = 0.01\n"),
        r"space\.toml: .*\[learning_rat\]: not a detector parameter; did you mean 'learning_rate'",
    ),
    Case(
        "space-not-toml",
        tune_space("[learning_rate\nlow = 1\n"),
        r"space\.toml: not valid TOML",
    ),
    Case(
        "space-unknown-variant",
        tune_space('variants = ["ae", "gan"]\n'),
        r"space\.toml: variant: gan not among ae, ",
    ),
    Case(
        "space-no-such-file",
        lambda env: tune("--space", str(env.tmp / "absent.toml"))(env),
        r"absent\.toml: no such space file",
    ),
    # -- model references ------------------------------------------------------------------------
    Case(
        "ref-unknown-name",
        score(in_registry("nosuch")),
        r"no model named 'nosuch' \(models: good\)",
    ),
    Case(
        "ref-unknown-alias",
        score(in_registry("good@staging")),
        r"good@staging|alias 'staging'",
    ),
    Case("ref-unknown-version", score(in_registry("good/7")), r"good/7|version 7"),
    Case(
        "ref-path-traversal",
        score(in_registry(NOT_A_NAME)),
        r"'\.\./\.\./etc/passwd'",
        how="process",
    ),
    Case(
        "ref-not-onnx",
        score(lambda env: [env.file("junk.onnx", "this is not a model\n")]),
        r"junk\.onnx: not a loadable ONNX model",
    ),
    Case(
        "ref-csv-named-onnx",
        score(lambda env: [env.file("plain.csv.onnx", env.assets.data.read_bytes())]),
        r"plain\.csv\.onnx: not a loadable ONNX model",
    ),
    Case(
        "ref-not-an-anomtune-model",
        score(lambda env: [env.file("identity.onnx", identity_onnx())]),
        r"identity\.onnx: not an anomtune model \(no 'anomtune' metadata\)",
    ),
    Case(
        "ref-missing-file",
        score(lambda env: [str(env.tmp / "gone.onnx")]),
        r"gone\.onnx: no such model file",
    ),
    Case(
        "ref-tampered-file",
        score(in_registry("good@champion", tampered=True)),
        r"good/1.*sha256|sha256.*good",
    ),
    Case(
        "ref-no-registry",
        score(lambda env: ["good", "--registry", str(env.tmp / "absent-registry")]),
        r"absent-registry",
    ),
    Case(
        "score-csv-missing-column",
        score(model_file, lambda env: env.csv("f0,f1,f3\n1,2,3\n")),
        r"bad\.csv: missing column 'f2'",
    ),
    Case(
        "score-csv-non-numeric",
        score(model_file, lambda env: env.csv("f0,f1,f2,f3\n1,2,3,4\n1,x,3,4\n")),
        r"bad\.csv: column 'f1' is numeric but has the non-numeric value 'x' at line 3",
    ),
    Case(
        "score-bad-id-column-new-folder",
        score(model_file, None, "--id-column", "row_id", out="new/sub/out.csv"),
        r"good\.csv: missing column 'row_id'",
    ),
    Case(
        "score-csv-empty",
        score(model_file, lambda env: env.csv("")),
        r"bad\.csv: the input is empty",
    ),
    Case(
        "score-csv-binary",
        score(model_file, lambda env: env.csv(bytes(range(256)) * 8)),
        r"bad\.csv: .*NUL bytes",
    ),
    Case(
        "score-stdin-infinity",
        score(model_file, lambda env: "-"),
        r"-: column 'f0' has an infinite value at row 2",
        how="process",  # the real stdin
        stdin=b"f0,f1,f2,f3\n1,2,3,4\ninf,2,3,4\n",
    ),
    # -- registry commands -----------------------------------------------------------------------
    Case("reg-show-unknown", registry_cmd("show", "nosuch"), r"nosuch"),
    Case(
        "reg-show-path-traversal",
        registry_cmd("show", NOT_A_NAME),
        r"'\.\./\.\./etc/passwd'",
    ),
    Case(
        "reg-versions-path-traversal",
        registry_cmd("versions", NOT_A_NAME),
        r"'\.\./\.\./etc/passwd'",
    ),
    Case(
        "reg-register-path-name",
        registry_cmd("register", "--onnx", "{model}", "--name", NOT_A_NAME),
        r"model name '\.\./\.\./etc/passwd' must not contain path separators",
    ),
    Case(
        "reg-register-uppercase-name",
        registry_cmd("register", "--onnx", "{model}", "--name", "Good"),
        r"model name 'Good' may hold only .*try 'good'",
    ),
    Case(
        "reg-register-not-onnx",
        lambda env: registry_cmd(
            "register", "--onnx", env.file("junk.onnx", b"\x08\x01junk"), "--name", "other"
        )(env),
        r"junk\.onnx",
    ),
    Case(
        "reg-promote-unknown-version",
        registry_cmd("promote", "good", "9", "--alias", "champion"),
        r"good/9|version 9",
    ),
    Case(
        "reg-promote-digit-alias",
        registry_cmd("promote", "good", "1", "--alias", "123"),
        r"alias '123' cannot be all digits",
    ),
    Case("reg-delete-unknown", registry_cmd("delete", "nosuch/1"), r"nosuch"),
    Case(
        "reg-tag-bad-key",
        registry_cmd("tag", "good/1", "bad key=1"),
        r"tag key 'bad key' must be",
    ),
    Case(
        "reg-rollback-unknown-alias",
        registry_cmd("rollback", "good", "--alias", "staging"),
        r"staging",
    ),
    Case(
        "reg-verify-tampered",
        registry_cmd("verify", tampered=True),
        r"verify found 1 problem\(s\); first: good/1: sha256 mismatch",
    ),
    Case(
        "serve-tampered",
        lambda env: ["serve", "good@champion", *env.tampered_registry(), "--port", "1"],
        r"good/1: the model file .* does not match its recorded sha256",
    ),
    Case(
        "reg-no-registry",
        lambda env: ["registry", "list", "--registry", str(env.tmp / "absent-registry")],
        r"absent-registry",
    ),
    Case(
        "serve-path-traversal",
        lambda env: ["serve", NOT_A_NAME, *env.registry(), "--port", "1"],
        r"'\.\./\.\./etc/passwd'",
    ),
]


def snapshot(folder: Path) -> dict[str, str]:
    """Every file and folder under ``folder``: content hashes and permission bits."""
    out = {}
    for path in sorted(folder.rglob("*")):
        key = str(path.relative_to(folder))
        mode = stat.S_IMODE(path.lstat().st_mode)
        if path.is_file():
            out[key] = f"{mode:o} {hashlib.sha256(path.read_bytes()).hexdigest()}"
        else:
            out[key] = f"{mode:o} folder"
    return out


def run_in_process(args: list[str], stdin: bytes | None) -> tuple[int, str, str]:
    """``anomtune ARGS`` through :func:`anomtune.cli.main`, the console entry point."""
    with CliRunner().isolation(input=stdin) as (out, err, _):
        try:
            main(args)
        except SystemExit as exc:
            code = exc.code
        else:  # main always exits
            code = None
        return code, out.getvalue().decode(), err.getvalue().decode()


def console_script() -> str:
    found = Path(sys.executable).with_name("anomtune")
    return str(found) if found.exists() else shutil.which("anomtune")


def run_process(args: list[str], stdin: bytes | None, cwd: Path) -> tuple[int, str, str]:
    done = subprocess.run(
        [console_script(), *args],
        input=stdin or b"",
        capture_output=True,
        cwd=cwd,
        timeout=120,
    )
    return done.returncode, done.stdout.decode(), done.stderr.decode()


@pytest.fixture
def env(tmp_path, assets, monkeypatch) -> Env:
    folder = tmp_path / "case"
    folder.mkdir()
    monkeypatch.chdir(folder)
    for name in ("ANOMTUNE_REGISTRY", "ANOMTUNE_REGISTRY_FILES", "ANOMTUNE_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    return Env(folder, assets)


def test_the_catalogue_is_big_and_covers_every_kind():
    ids = [case.id for case in CASES]
    assert len(ids) == len(set(ids))
    assert len(CASES) >= 40
    kinds = {case.id.split("-")[0] for case in CASES}
    assert {"csv", "opt", "space", "ref", "reg", "score"} <= kinds


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input_gives_one_line_exit_2_and_changes_nothing(env, case):
    args = case.build(env)
    before = snapshot(env.tmp)
    started = time.monotonic()
    if case.how == "process":
        code, _, err = run_process(args, case.stdin, env.tmp)
    else:
        code, _, err = run_in_process(args, case.stdin)
    seconds = time.monotonic() - started
    assert code == 2, err
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("anomtune: error: "), err
    assert re.search(case.message, lines[0]), lines[0]
    assert snapshot(env.tmp) == before, "the command wrote or changed something"
    # Not a timing test: a generous bound that only a hang or a runaway read would break.
    assert seconds < 60


# -- HTTP bodies -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(assets):
    from test_serve import running

    from anomtune.serving import create_app

    app = create_app(str(assets.onnx), max_body_bytes=4096, max_rows=20)
    with running(app) as url:
        yield url


def split(data, columns=FEATURES):
    return {"dataframe_split": {"columns": columns, "data": data}}


ROW = [0.1, 0.2, 0.3, 0.4]


@dataclass(frozen=True)
class Request:
    id: str
    body: bytes | dict | list
    status: int
    message: str  # a regex the error message must match
    content_type: str = "application/json"


HTTP_CASES = [
    Request("malformed-json", b'{"inputs": [[1, 2', 400, r"malformed JSON at line 1"),
    Request("not-json", b"hello there", 400, r"malformed JSON"),
    Request("empty-body", b"", 400, r"the body is empty"),
    Request("not-an-object", [ROW], 400, r"must be a JSON object"),
    Request("unknown-format-key", {"rows": [ROW]}, 400, r"unknown key 'rows'"),
    Request(
        "wrong-columns", {"dataframe_records": [{"x": 1}]}, 400, r"missing feature column 'f0'"
    ),
    Request("missing-column", split([ROW[:3]], FEATURES[:3]), 400, r"feature column 'f3'"),
    Request("non-numeric", split([ROW, ["abc", 1, 2, 3]]), 400, r"column 'f0' .*row 2"),
    Request("infinity-token", b'{"inputs": [[Infinity, 1, 2, 3]]}', 400, r"Infinity"),
    Request("infinity-string", split([[1, "inf", 2, 3]]), 400, r"column 'f1' .*infinite"),
    Request("float32-overflow", split([[1, 2, 1e39, 3]]), 400, r"column 'f2' .*too large"),
    Request("empty-batch", split([]), 400, r"no rows"),
    Request("ragged-rows", {"instances": [ROW, ROW[:2]]}, 400, r"row 2 of instances holds 2"),
    Request("over-size-body", split([ROW] * 400), 413, r"4096 bytes"),
    Request("too-many-rows", split([ROW] * 21), 413, r"at most 20"),
    Request("wrong-content-type", b"f0=1", 415, r"not supported", "text/plain"),
    Request("csv-ragged", b"f0,f1,f2,f3\n1,2,3,4,5,6\n", 400, r"CSV", "text/csv"),
    Request("csv-text", b"f0,f1,f2,f3\n1,2,x,4\n", 400, r"column 'f2'", "text/csv"),
]


@pytest.mark.parametrize("req", HTTP_CASES, ids=[r.id for r in HTTP_CASES])
def test_bad_http_body_gets_a_clear_4xx_and_changes_nothing(server, assets, req):
    from test_serve import call

    _, _, before = call(server, "/version")
    status, head, answer = call(server, "/invocations", req.body, content_type=req.content_type)
    assert status == req.status, answer
    assert head["Content-Type"] == "application/json"
    assert set(answer) == {"error_code", "message"}
    message = answer["message"]
    assert re.search(req.message, message), message
    assert "\n" not in message and "Traceback" not in message
    assert str(assets.onnx.parent) not in message and 'File "' not in message
    # The same model still answers, unchanged.
    assert call(server, "/version")[2] == before
    status, _, answer = call(server, "/invocations", split([ROW]))
    assert status == 200 and len(answer["predictions"]) == 1


def test_a_wide_header_beyond_the_first_read_is_still_read(tmp_path):
    """A legal header longer than the 64 KiB read up front is read whole, not refused."""
    from anomtune.data import read_table

    names = [f"a_fairly_long_column_name_{i:04d}" for i in range(2_500)]  # about 77 KiB
    rows = [",".join(str((i + j) % 7) for j in range(len(names))) + f",{i % 2}" for i in range(6)]
    path = tmp_path / "wide.csv"
    path.write_text(",".join([*names, "y"]) + "\n" + "\n".join(rows) + "\n")
    table = read_table(path, label="y")
    assert table.schema.feature_names == names
    assert table.n_rows == 6 and table.n_anomalies == 3
