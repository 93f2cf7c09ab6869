"""`anomtune score` and `anomtune.load`: chunked onnxruntime scoring of files."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

import anomtune
from anomtune import batch
from anomtune.cli import main
from anomtune.data import table_from_frame
from anomtune.export import export_model
from anomtune.metrics import auc_pr, auc_roc
from anomtune.pipeline import fit_detector, prepare


def make_frame(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 2))
    frame = pd.DataFrame(
        {
            "id": [f"r{i}" for i in range(n)],
            "a": z[:, 0],
            "b": z[:, 0] + 0.1 * rng.normal(size=n),
            "c": z[:, 1],
            "kind": rng.choice(["x", "y"], size=n),
        }
    )
    y = (rng.random(n) < 0.1).astype(int)
    frame.loc[y == 1, "b"] += rng.normal(scale=3.0, size=int(y.sum()))
    frame["label"] = y
    return frame


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    folder = tmp_path_factory.mktemp("model")
    frame = make_frame(500, 0)
    table = table_from_frame(frame, label="label", id_column="id")
    prepared = prepare(table, seed=0)
    detector = fit_detector(prepared, {"epochs": 5}, seed=0)
    path = folder / "m.onnx"
    export_model(prepared.model(detector), table.features.iloc[prepared.split.val], path)
    return path


def run(args, capsys):
    with pytest.raises(SystemExit) as exc:
        main(args)
    out, err = capsys.readouterr()
    return exc.value.code, out, err


def test_csv_scores_match_the_python_api(model_path, tmp_path, capsys):
    frame = make_frame(300, 1)
    # Columns in another order, plus a column the model does not use.
    frame = frame[["label", "kind", "c", "id", "b", "a"]].assign(extra="ignored")
    frame.to_csv(tmp_path / "in.csv", index=False)
    code, _, err = run(
        [
            "score",
            str(model_path),
            str(tmp_path / "in.csv"),
            "-o",
            str(tmp_path / "out.csv"),
            "--id-column",
            "id",
            "--quiet",
        ],
        capsys,
    )
    assert code == 0, err
    out = pd.read_csv(tmp_path / "out.csv")
    assert list(out.columns) == ["id", "score", "is_anomaly"]
    assert out["id"].tolist() == frame["id"].tolist()
    scorer = anomtune.load(str(model_path))
    expected = scorer.score(frame)
    np.testing.assert_allclose(out["score"], expected.score, rtol=1e-6)
    np.testing.assert_array_equal(out["is_anomaly"], expected.is_anomaly.astype(int))
    assert scorer.metadata["feature_names"] == ["a", "b", "c", "kind"]


def test_many_chunks_give_the_same_answers(model_path, tmp_path, capsys, monkeypatch):
    frame = make_frame(20_000, 2)
    frame.to_csv(tmp_path / "big.csv", index=False)
    monkeypatch.setattr(batch, "CHUNK_BYTES", 64 * 1024)
    code, _, err = run(
        [
            "score",
            str(model_path),
            str(tmp_path / "big.csv"),
            "-o",
            str(tmp_path / "o.csv"),
            "--quiet",
        ],
        capsys,
    )
    assert code == 0, err
    out = pd.read_csv(tmp_path / "o.csv")
    assert out["id"].tolist() == frame["id"].tolist()  # the model remembers its id column
    expected = anomtune.load(str(model_path)).score(frame)
    np.testing.assert_allclose(out["score"], expected.score, rtol=1e-6)


def test_parquet_in_and_out_and_explain(model_path, tmp_path, capsys):
    frame = make_frame(200, 3)
    frame.to_parquet(tmp_path / "in.parquet")
    code, _, err = run(
        [
            "score",
            str(model_path),
            str(tmp_path / "in.parquet"),
            "-o",
            str(tmp_path / "out.parquet"),
            "--explain",
            "2",
            "--quiet",
        ],
        capsys,
    )
    assert code == 0, err
    out = pd.read_parquet(tmp_path / "out.parquet")
    assert list(out.columns) == [
        "id",  # the model's id column, remembered from training
        "score",
        "is_anomaly",
        "feature_1",
        "share_1",
        "feature_2",
        "share_2",
    ]
    errors = anomtune.load(str(model_path)).score(frame).feature_errors
    top = np.argsort(-errors, axis=1)[:, 0]
    assert out["feature_1"].tolist() == [["a", "b", "c", "kind"][i] for i in top]
    assert (
        (out["share_1"] >= out["share_2"]) & (out["share_1"] + out["share_2"] <= 1 + 1e-6)
    ).all()


def test_threshold_override_fpr_and_evaluate(model_path, tmp_path, capsys):
    frame = make_frame(2_000, 4)
    frame.to_csv(tmp_path / "lab.csv", index=False)
    scorer = anomtune.load(str(model_path))
    scores = scorer.score(frame).score
    code, _, err = run(
        [
            "score",
            str(model_path),
            str(tmp_path / "lab.csv"),
            "-o",
            str(tmp_path / "o.csv"),
            "--threshold",
            "0.5",
        ],
        capsys,
    )
    assert code == 0, err
    out = pd.read_csv(tmp_path / "o.csv")
    np.testing.assert_array_equal(out["is_anomaly"], (scores > 0.5).astype(int))
    code, _, err = run(
        [
            "score",
            str(model_path),
            str(tmp_path / "lab.csv"),
            "-o",
            str(tmp_path / "o.csv"),
            "--threshold-at-fpr",
            "0.02",
            "--label",
            "label",
            "--evaluate",
            "--json",
        ],
        capsys,
    )
    assert code == 0, err
    summary = json.loads(err)
    out = pd.read_csv(tmp_path / "o.csv")
    normal = frame["label"].to_numpy() == 0
    flagged_normal = out["is_anomaly"].to_numpy()[normal].mean()
    assert 0.0 < flagged_normal <= 0.02
    m = summary["metrics"]
    assert m["auc_roc"] == pytest.approx(auc_roc(frame["label"], scores), abs=1e-6)
    assert m["auc_pr"] == pytest.approx(auc_pr(frame["label"], scores), abs=1e-6)


def test_stdin_to_stdout_without_torch(model_path, tmp_path):
    frame = make_frame(100, 5)
    code = (
        "import sys\n"
        "from anomtune.cli import main\n"
        "try:\n"
        f"    main(['score', {str(model_path)!r}, '-', '--quiet'])\n"
        "except SystemExit as exc:\n"
        "    assert exc.code == 0, exc.code\n"
        "loaded = [m for m in ('torch', 'optuna', 'sklearn') if m in sys.modules]\n"
        "sys.stderr.write('LOADED=' + ','.join(loaded))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        input=frame.to_csv(index=False),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip().endswith("LOADED="), done.stderr
    lines = done.stdout.strip().splitlines()
    assert lines[0] == '"id","score","is_anomaly"' and len(lines) == 101


@pytest.mark.parametrize(
    ("mutate", "needle"),
    [
        (lambda f: f.drop(columns=["b"]), "missing column 'b'"),
        (
            lambda f: f.assign(a=f["a"].astype(object).where(f.index != 7, "oops")),
            "non-numeric value 'oops' at line 9",
        ),
        (
            lambda f: f.assign(c=f["c"].where(f.index != 3, np.inf)),
            "infinite value at line 5",
        ),
        (lambda f: f.iloc[:0], "no data rows"),
    ],
)
def test_bad_input_writes_nothing(model_path, tmp_path, capsys, mutate, needle):
    mutate(make_frame(50, 6)).to_csv(tmp_path / "bad.csv", index=False)
    target = tmp_path / "out.csv"
    code, _, err = run(
        ["score", str(model_path), str(tmp_path / "bad.csv"), "-o", str(target)], capsys
    )
    assert code == 2
    assert needle in err and len(err.strip().splitlines()) == 1
    assert not target.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["bad.csv"]


def test_unknown_model_file_is_one_line(tmp_path, capsys):
    (tmp_path / "x.csv").write_text("a\n1\n")
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    for ref, needle in [
        (tmp_path / "none.onnx", "no such model file"),
        (tmp_path / "junk.onnx", "not a loadable ONNX model"),
    ]:
        code, _, err = run(["score", str(ref), str(tmp_path / "x.csv")], capsys)
        assert code == 2 and needle in err
        assert len(err.strip().splitlines()) == 1


def test_values_beyond_float32_are_rejected_not_scored_as_nan(model_path):
    frame = make_frame(5, 7)
    frame.loc[2, "a"] = 1e39
    scorer = anomtune.load(str(model_path))
    with pytest.raises(anomtune.DataError, match=r"too large for float32 .* at row 3"):
        scorer.score(frame)


def test_chunks_and_session_slices_give_the_same_answers(model_path, tmp_path, monkeypatch):
    # Small CSV blocks gathered into chunks of 1,500 rows, each scored in
    # session calls of 100 rows: every boundary falls inside the data.
    monkeypatch.setattr(batch, "CHUNK_BYTES", 16 * 1024)
    monkeypatch.setattr(batch, "MAX_CHUNK_ROWS", 1500)
    frame = make_frame(5_000, 8)
    frame.to_csv(tmp_path / "in.csv", index=False)
    scorer = anomtune.load(str(model_path))
    scorer.slice_rows = 100
    result = batch.score_file(
        scorer,
        str(tmp_path / "in.csv"),
        str(tmp_path / "out.csv"),
        id_column="id",
        label="label",
        evaluate=True,
        explain=1,
    )
    out = pd.read_csv(tmp_path / "out.csv")
    expected = scorer.score(frame)
    assert result.rows == 5_000 and out["id"].tolist() == frame["id"].tolist()
    np.testing.assert_allclose(out["score"], expected.score, rtol=1e-6)
    assert result.anomalies == int((expected.score > scorer.threshold).sum())
    top = np.argsort(-expected.feature_errors, axis=1, kind="stable")[:, 0]
    assert out["feature_1"].tolist() == [scorer.feature_names[i] for i in top]
    assert result.metrics["auc_roc"] == pytest.approx(
        auc_roc(frame["label"], expected.score), abs=1e-6
    )


def test_memory_is_bounded_by_the_block_size_not_the_file(model_path, tmp_path, monkeypatch):
    import pyarrow as pa

    monkeypatch.setattr(batch, "CHUNK_BYTES", 16 * 1024)
    monkeypatch.setattr(batch, "MAX_CHUNK_ROWS", 2048)
    path = tmp_path / "big.csv"
    make_frame(100_000, 9).to_csv(path, index=False)
    assert path.stat().st_size > 6 << 20
    held = []
    baseline = pa.total_allocated_bytes()
    batch.score_file(
        anomtune.load(str(model_path)),
        str(path),
        str(tmp_path / "out.csv"),
        on_progress=lambda rows, seconds: held.append(pa.total_allocated_bytes() - baseline),
    )
    # Arrow holds the blocks read ahead and the rows of one chunk or two,
    # never a large part of the file.
    assert len(held) >= 40
    assert max(held) < 3 << 20, max(held)


def test_threshold_at_fpr_pass_names_the_file_row_of_a_bad_value(
    model_path, tmp_path, capsys, monkeypatch
):
    # The first pass (to pick the threshold) reads the file in chunks too; a
    # bad value far into the file is reported at its row, and nothing is written.
    monkeypatch.setattr(batch, "CHUNK_BYTES", 16 * 1024)
    monkeypatch.setattr(batch, "MAX_CHUNK_ROWS", 1024)
    frame = make_frame(3_000, 10)
    frame.loc[2_500, "c"] = np.inf
    frame.to_csv(tmp_path / "lab.csv", index=False)
    args = ["--label", "label", "--threshold-at-fpr", "0.05"]
    code, _, err = run(
        ["score", str(model_path), str(tmp_path / "lab.csv"), "-o", str(tmp_path / "o.csv"), *args],
        capsys,
    )
    assert code == 2
    assert "column 'c' has an infinite value at line 2502" in err, err
    assert not (tmp_path / "o.csv").exists()
