"""ONNX export: one graph from raw columns to answers, checked against torch."""

from __future__ import annotations

import json
import shutil
import tempfile
import threading
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pandas as pd
import pytest

from anomtune.cli import main
from anomtune.data import table_from_frame
from anomtune.errors import DataError
from anomtune.export import OPSET, check_parity, export_model
from anomtune.model import AnomalyModel
from anomtune.pipeline import fit_detector, prepare
from anomtune.scoring import load_scorer, slice_rows


def mixed_frame(n: int = 400, seed: int = 0) -> pd.DataFrame:
    """Numeric and categorical columns with missing values and planted anomalies."""
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(n, 2))
    frame = pd.DataFrame(
        {
            "a": base[:, 0],
            "b": base[:, 0] * 2 + 0.1 * rng.normal(size=n),
            "c": base[:, 1],
            "d": base[:, 1] - base[:, 0] + 0.1 * rng.normal(size=n),
            "color": rng.choice(["red", "green", "blue"], size=n),
            "size": rng.choice(["s", "m"], size=n),
        }
    )
    frame.loc[rng.choice(n, 25, replace=False), "a"] = np.nan
    frame.loc[rng.choice(n, 20, replace=False), "color"] = None
    y = np.zeros(n, dtype=int)
    y[:40] = 1
    frame.loc[:39, ["b", "d"]] += rng.normal(scale=3.0, size=(40, 2))
    frame["y"] = y
    return frame


@pytest.fixture(scope="module")
def mixed_prepared():
    table = table_from_frame(mixed_frame(), label="y")
    return prepare(table, seed=0)


VARIANTS = [
    {"variant": "ae"},
    {"variant": "sparse", "sparsity": "kl"},
    {"variant": "denoising", "noise": "mask", "noise_level": 0.2},
    {"variant": "contractive", "batch_norm": False},
    {"variant": "vae", "vae_score": "reconstruction"},
    {"variant": "vae", "vae_score": "elbo", "beta": 0.5},
    {"variant": "ae", "scaler": "minmax", "output_activation": "sigmoid", "activation": "tanh"},
]


@pytest.mark.parametrize("params", VARIANTS, ids=lambda p: "-".join(map(str, p.values())))
def test_every_variant_exports_with_parity(mixed_prepared, params, tmp_path):
    detector = fit_detector(mixed_prepared, {**params, "epochs": 8}, seed=1)
    table = mixed_prepared.table
    val = table.features.iloc[mixed_prepared.split.val]
    path = tmp_path / "model.onnx"
    _, report = export_model(mixed_prepared.model(detector), val, path)
    assert report.passed and report.label_flips == 0
    assert report.max_relative_error <= 1e-4
    # The check rows, and one row per categorical column with an unseen value.
    assert report.batch_sizes == [1, 2, len(val) + 2]
    # The graph reproduces torch on raw columns given in another order, with extras.
    test = table.features.iloc[mixed_prepared.split.test]
    shuffled = test[test.columns[::-1]].assign(unused=1.0)
    result = load_scorer(path).score(shuffled)
    X_test, _ = mixed_prepared.rows("test")
    expected = detector.anomaly_score(X_test)
    np.testing.assert_allclose(result.score, expected, rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(result.is_anomaly, expected > detector.threshold_)
    # Per-column errors: one-hot blocks are summed back to their column.
    assert result.feature_errors.shape == (len(test), 6)
    if params.get("vae_score") != "elbo":
        np.testing.assert_allclose(
            result.feature_errors.sum(axis=1) / X_test.shape[1], result.score, rtol=1e-4
        )


def test_graph_shape_opset_checker_and_metadata(mixed_prepared, tmp_path):
    detector = fit_detector(mixed_prepared, {"epochs": 4}, seed=0)
    val = mixed_prepared.table.features.iloc[mixed_prepared.split.val]
    data, _ = export_model(
        mixed_prepared.model(detector), val, metadata={"metrics": {"val": {"x": 1}}}
    )
    model = onnx.load_from_string(data)
    onnx.checker.check_model(model, full_check=True)
    opsets = {o.domain: o.version for o in model.opset_import}
    assert opsets[""] == OPSET and opsets["ai.onnx.ml"] >= 2
    session = ort.InferenceSession(data)
    inputs = {i.name: i for i in session.get_inputs()}
    assert inputs["numeric"].type == "tensor(float)" and inputs["numeric"].shape[1] == 4
    assert inputs["categorical"].type == "tensor(string)" and inputs["categorical"].shape[1] == 2
    assert isinstance(inputs["numeric"].shape[0], str)  # dynamic batch
    assert [o.name for o in session.get_outputs()] == ["score", "feature_errors", "is_anomaly"]
    meta = json.loads(session.get_modelmeta().custom_metadata_map["anomtune"])
    assert meta["threshold"] == pytest.approx(detector.threshold_)
    assert meta["feature_names"] == ["a", "b", "c", "d", "color", "size"]
    vocab = meta["schema"]["columns"][4]["categories"]
    assert sorted(vocab) == ["blue", "green", "red"]
    assert vocab == list(mixed_prepared.encoder.schema_.columns[4].categories)
    assert meta["metrics"] == {"val": {"x": 1}}
    assert meta["parity"]["passed"] is True
    for key in ("params", "threshold_rule", "anomtune_version", "architecture"):
        assert key in meta


def test_missing_and_unseen_values_are_handled_inside_the_graph(mixed_prepared, tmp_path):
    detector = fit_detector(mixed_prepared, {"epochs": 4}, seed=0)
    pre = mixed_prepared.encoder
    model = AnomalyModel(pre, detector)
    val = mixed_prepared.table.features.iloc[mixed_prepared.split.val]
    data, _ = export_model(model, val)
    rows = pd.DataFrame(
        {
            "a": [np.nan, 0.5, 0.5, 0.5],
            "b": [1.0, np.nan, np.nan, np.nan],
            "c": [0.0, 0.0, 0.0, 0.0],
            "d": [0.0, 0.0, 0.0, 0.0],
            "color": ["purple", None, None, " Purple"],
            "size": ["m", "xl", "m", "xl"],
        }
    )
    result = load_scorer(data).score(rows)
    penalty = detector.max_train_score_
    assert penalty > 0
    unseen = np.array([1, 1, 0, 2])  # "purple", "xl"; a missing value is not unseen
    # The autoencoder's own score, then the unseen-value rule on top.
    plain = detector.anomaly_score(pre.encode(rows))
    np.testing.assert_allclose(result.score, plain + penalty * unseen, rtol=1e-5)
    np.testing.assert_allclose(model.anomaly_score(rows), result.score, rtol=1e-5)
    assert result.score[1] > result.score[2]  # the same row but for the unseen size
    assert result.is_anomaly[[0, 1, 3]].all()
    # The added error sits in the unseen value's column, so --explain names it.
    errors = result.feature_errors
    np.testing.assert_allclose(errors, model.column_errors(rows), rtol=1e-4, atol=1e-6)
    assert errors[0].argmax() == 4 and errors[1].argmax() == 5
    np.testing.assert_allclose(
        errors.sum(axis=1) / detector.n_features_in_, result.score, rtol=1e-4
    )
    meta = json.loads(ort.InferenceSession(data).get_modelmeta().custom_metadata_map["anomtune"])
    assert meta["unseen_categories"]["added_score"] == pytest.approx(penalty)


def test_values_outside_the_vocabulary_seen_in_training_add_nothing():
    frame = mixed_frame()
    table = table_from_frame(frame, label="y")
    prepared = prepare(table, seed=0, max_categories=2)
    (color_rare,) = prepared.encoder.rare_["color"]
    detector = fit_detector(prepared, {"epochs": 3}, seed=0)
    model = prepared.model(detector)
    data, _ = export_model(model, table.features.iloc[prepared.split.val])
    row = table.features.iloc[[0]].assign(color=color_rare)
    plain = detector.anomaly_score(prepared.encoder.encode(row))
    np.testing.assert_allclose(load_scorer(data).score(row).score, plain, rtol=1e-5)
    # An old model file, without the recorded weight, scores as before.
    saved = model.save(Path(tmp := tempfile.mkdtemp()) / "m")
    doc = json.loads((saved / "model.json").read_text())
    del doc["max_train_score"]
    (saved / "model.json").write_text(json.dumps(doc))
    old = AnomalyModel.load(saved)
    unseen = row.assign(color="never")
    np.testing.assert_allclose(
        old.anomaly_score(unseen), detector.anomaly_score(old.encode(unseen)), rtol=1e-6
    )
    shutil.rmtree(tmp)


def test_parity_check_catches_a_different_model(mixed_prepared):
    from anomtune.export import _graph_module
    from anomtune.scoring import encode_frame

    first = fit_detector(mixed_prepared, {"epochs": 4}, seed=0)
    other = fit_detector(mixed_prepared, {"epochs": 4}, seed=5)
    pre = mixed_prepared.encoder
    val = mixed_prepared.table.features.iloc[mixed_prepared.split.val]
    data, _ = export_model(AnomalyModel(pre, first), val)
    module, _ = _graph_module(AnomalyModel(pre, other))
    feeds = encode_frame(val, pre.schema_.numeric, pre.schema_.categorical)
    report = check_parity(data, module, feeds, pre.split_inputs(val)[1])
    assert not report.passed
    assert report.max_relative_error > 1e-3


def test_export_command_on_a_run_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    mixed_frame().to_csv("mixed.csv", index=False)
    (tmp_path / "space.toml").write_text('epochs = 4\nvariants = ["ae"]\n')
    with pytest.raises(SystemExit) as exc:
        main(
            [
                "tune",
                "mixed.csv",
                "--label",
                "y",
                "--trials",
                "1",
                "--space",
                "space.toml",
                "--quiet",
            ]
        )
    assert exc.value.code == 0
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main(["export", "runs/mixed", "-o", "m.onnx", "--json"])
    out, err = capsys.readouterr()
    assert exc.value.code == 0, err
    info = json.loads(out)
    assert info["parity"]["passed"] and info["lineage"]["study"] == "mixed"
    scorer = load_scorer(tmp_path / "m.onnx")
    scores = scorer.score(pd.read_csv("mixed.csv")).score
    summary = json.loads((tmp_path / "runs" / "mixed" / "summary.json").read_text())
    assert scorer.threshold == pytest.approx(summary["threshold"])
    assert len(scores) == 400 and np.isfinite(scores).all()
    # A run folder whose data changed since is refused, and nothing is written.
    mixed_frame(seed=3).to_csv("mixed.csv", index=False)
    with pytest.raises(SystemExit) as exc:
        main(["export", "runs/mixed", "-o", "again.onnx"])
    _, err = capsys.readouterr()
    assert exc.value.code == 2 and "fingerprint differs" in err
    assert not (tmp_path / "again.onnx").exists()


def _fitted(frame: pd.DataFrame, categorical=(), epochs: int = 2):
    from anomtune import AutoencoderDetector
    from anomtune.preprocess import InputEncoder

    table = table_from_frame(frame, categorical=list(categorical))
    pre = InputEncoder(table.schema).fit(table.features)
    detector = AutoencoderDetector(epochs=epochs, random_state=0).fit(pre.encode(table.features))
    return detector, pre, table.features


def _interleaved(n_numeric: int, n: int = 300, seed: int = 0) -> pd.DataFrame:
    """Numeric columns with categorical ones between them, and missing values in both."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        rng.normal(size=(n, n_numeric)), columns=[f"x{i}" for i in range(n_numeric)]
    )
    frame.insert(1, "color", rng.choice(["red", "green", "blue"], size=n))
    frame.insert(3, "size", rng.choice(["s", "m", "l", "xl"], size=n))
    frame.loc[rng.choice(n, 30, replace=False), "x0"] = np.nan
    frame.loc[rng.choice(n, 20, replace=False), "color"] = None
    return frame


def _op_counts(data: bytes) -> dict:
    from collections import Counter

    return dict(Counter(node.op_type for node in onnx.load_from_string(data).graph.node))


@pytest.fixture(scope="module")
def interleaved_model():
    detector, pre, features = _fitted(_interleaved(5), ["color", "size"])
    data, report = export_model(AnomalyModel(pre, detector), features.iloc[:120])
    assert report.passed
    return detector, pre, features, data


def test_interleaved_columns_match_the_preprocessor_column_by_column(interleaved_model):
    detector, pre, features, data = interleaved_model
    # Unseen and missing categories, a missing number, columns in another order.
    rows = features.iloc[:40].copy()
    rows.loc[rows.index[:5], "size"] = "xxl"
    rows.loc[rows.index[5:9], "x3"] = np.nan
    result = load_scorer(data).score(rows[rows.columns[::-1]])
    X = pre.encode(rows)
    unseen = (rows["size"] == "xxl").to_numpy()
    penalty = detector.max_train_score_ * unseen
    np.testing.assert_allclose(
        result.score, detector.anomaly_score(X) + penalty, rtol=1e-4, atol=1e-6
    )
    # The reference regrouping: each encoded column's error added to its table
    # column; an unseen value's weight in its own column.
    encoded_errors = detector.feature_errors(X)
    expected = np.zeros((len(rows), len(pre.schema_.columns)))
    np.add.at(expected.T, pre.output_groups, encoded_errors.T)
    expected[:, 3] += penalty * X.shape[1]
    assert result.feature_names == ["x0", "color", "x1", "size", "x2", "x3", "x4"]
    np.testing.assert_allclose(result.feature_errors, expected, rtol=1e-4, atol=1e-6)


def test_graph_size_does_not_grow_with_the_number_of_columns():
    rng = np.random.default_rng(1)
    numeric = {}
    for width in (4, 40):
        frame = pd.DataFrame(rng.normal(size=(200, width)), columns=[f"f{i}" for i in range(width)])
        detector, pre, features = _fitted(frame, epochs=1)
        data, _ = export_model(AnomalyModel(pre, detector), features.iloc[:50])
        numeric[width] = _op_counts(data)
        # Every column numeric: the autoencoder's own errors are the per-column errors.
        result = load_scorer(data).score(features.iloc[:50])
        errors = detector.feature_errors(pre.encode(features.iloc[:50]))
        np.testing.assert_allclose(result.feature_errors, errors, rtol=1e-4, atol=1e-6)
    assert numeric[4] == numeric[40]
    assert not {"Split", "Concat", "Slice", "MatMul", "Gather"} & set(numeric[40])
    mixed = {}
    for width in (3, 30):
        detector, pre, features = _fitted(_interleaved(width, n=200), ["color", "size"], epochs=1)
        data, _ = export_model(AnomalyModel(pre, detector), features.iloc[:50])
        mixed[width] = _op_counts(data)
    assert mixed[3] == mixed[30]
    assert "Split" not in mixed[30] and mixed[30]["LabelEncoder"] == 2


def test_scorer_runs_large_inputs_in_slices_with_the_same_answers(interleaved_model):
    features, data = interleaved_model[2][:250], interleaved_model[3]
    scorer = load_scorer(data)
    # Slices of at most 4,096 rows, fewer for wide models.
    assert scorer.slice_rows == 4096
    assert [slice_rows(w) for w in (32, 100, 500, 10_000)] == [4096, 2048, 512, 256]
    whole = scorer.session.run(None, scorer.feeds(features))
    for rows in (1, 7, 100, 250, 1000):
        scorer.slice_rows = rows
        result = scorer.score(features)
        np.testing.assert_allclose(result.score, whole[0], rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(result.feature_errors, whole[1], rtol=1e-6, atol=1e-9)
        np.testing.assert_array_equal(result.is_anomaly, whole[2])
        assert result.is_anomaly.dtype == bool and result.score.shape == (250,)
    # More than one thread: the slices scored side by side, each session call on
    # one thread, with the same answers.
    two = load_scorer(data, threads=2)
    assert two.threads == 2
    assert two.session.get_session_options().intra_op_num_threads == 1
    big = pd.concat([features] * 8, ignore_index=True)  # 2,000 rows
    expected = scorer.session.run(None, scorer.feeds(big))
    for rows in (4096, 1000, 300, 7):
        two.slice_rows = rows
        result = two.score(big)
        np.testing.assert_allclose(result.score, expected[0], rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(result.feature_errors, expected[1], rtol=1e-6, atol=1e-9)
        np.testing.assert_array_equal(result.is_anomaly, expected[2])
    assert {t.name.split("_")[0] for t in threading.enumerate()} >= {"anomtune-score"}


def _column_by_column(frame: pd.DataFrame, names: list[str]) -> np.ndarray:
    return np.stack(
        [frame[n].to_numpy(dtype=np.float64, na_value=np.nan).astype(np.float32) for n in names],
        axis=1,
    )


def test_encode_frame_reads_numeric_dtypes_in_one_block():
    from anomtune.scoring import encode_frame

    rng = np.random.default_rng(3)
    n = 1000  # more rows than one transposition step
    frame = pd.DataFrame(
        {
            "extra": rng.normal(size=n),
            "f64": rng.normal(size=n),
            "i64": rng.integers(-5, 5, size=n),
            "f32": rng.normal(size=n).astype(np.float32),
            "flag": rng.random(n) > 0.5,
            "nullable": pd.array(rng.integers(0, 9, size=n), dtype="Int64"),
        }
    )
    frame.loc[[3, 500], "f64"] = np.nan
    frame.loc[[7, 999], "nullable"] = pd.NA
    names = ["nullable", "f64", "i64", "f32", "flag"]
    for source in (frame, frame[names], frame.iloc[:1], frame.iloc[::-1]):
        block = encode_frame(source, names, [])["numeric"]
        assert block.dtype == np.float32 and block.flags.c_contiguous
        np.testing.assert_array_equal(block, _column_by_column(source, names))
    # A float32 matrix in schema order is used as it is.
    matrix = rng.normal(size=(n, 3)).astype(np.float32)
    block = encode_frame(pd.DataFrame(matrix, columns=list("abc"), copy=False), list("abc"), [])
    np.testing.assert_array_equal(block["numeric"], matrix)
    # Text columns still parse; bad values are still named by column and row.
    text = frame[names].astype({"i64": str})
    np.testing.assert_array_equal(
        encode_frame(text, names, [])["numeric"], _column_by_column(frame, names)
    )
    with pytest.raises(DataError, match=r"column 'f32' has an infinite .* at row 11"):
        encode_frame(frame.assign(f32=frame["f32"].where(frame.index != 10, np.inf)), names, [])
    with pytest.raises(DataError, match=r"column 'f64' has a value too large for float32 .* row 2"):
        encode_frame(frame.assign(f64=frame["f64"].where(frame.index != 1, 1e300)), names, [])


def test_all_categorical_data_with_tied_scores_exports_without_label_flips():
    # Few distinct rows, so many training scores tie at the contamination quantile.
    rng = np.random.default_rng(4)
    frame = pd.DataFrame(
        {
            "color": rng.choice(["red", "green", "blue"], size=400),
            "size": rng.choice(["s", "m"], size=400),
        }
    )
    detector, pre, features = _fitted(frame, ["color", "size"], epochs=3)
    train_scores = detector.anomaly_score(pre.encode(features))
    assert len(np.unique(train_scores)) <= 6
    assert not np.any(train_scores == detector.threshold_)
    data, report = export_model(AnomalyModel(pre, detector), features)
    assert report.passed and report.label_flips == 0
    labels = load_scorer(data).score(features).is_anomaly
    np.testing.assert_array_equal(labels.astype(bool), train_scores > detector.threshold_)


# -- the parity rule: each output on its own scale ----------------------------------


def _cancelling_model(offset: float = 40.0, miss: float = 0.02):
    """A detector that reconstructs two columns almost exactly, through sums that cancel.

    Columns ``a`` and ``b`` go through the network as ``w * z + offset`` in
    eight hidden units each, summed back with weights that cancel the offset,
    and come out ``miss`` off (an error of about 4e-4, far below the 1e-3
    where a column's error used to be compared in absolute terms); the four
    noise columns are not reconstructed at all (errors about 1). Sums of terms
    near ``offset`` round differently in torch's and onnxruntime's kernels,
    which moves the near-zero errors by a few 1e-7: the shape of a sound
    model's answers that the old per-entry rule refused.
    """
    import torch

    from anomtune import AutoencoderDetector
    from anomtune.metrics import quantile_threshold
    from anomtune.model import AnomalyModel
    from anomtune.preprocess import InputEncoder

    rng = np.random.default_rng(0)
    n = 300
    frame = pd.DataFrame(
        {"a": rng.normal(size=n), "b": rng.normal(size=n)}
        | {f"noise{i}": rng.normal(size=n) for i in range(4)}
    )
    table = table_from_frame(frame)
    pre = InputEncoder(table.schema).fit(table.features)
    X = pre.encode(table.features)
    detector = AutoencoderDetector(
        hidden_sizes=(16,), latent_dim=2, epochs=1, batch_norm=False, dropout=0.0, random_state=0
    ).fit(X)
    shapes = {k: tuple(v.shape) for k, v in detector.module_.state_dict().items()}
    w = {k: np.zeros(s) for k, s in shapes.items() if k.startswith("net.")}
    for j in range(2):  # latent j carries column j
        units = np.arange(8 * j, 8 * j + 8)
        for first, second, bias in (
            ("net.encoder.0", "net.encoder.2", 0.0),
            ("net.decoder.0", "net.decoder.2", miss),
        ):
            gain, shift = rng.uniform(0.5, 1.5, 8), rng.uniform(0.5, 1.5, 8) * offset
            back = 1.0 / (8 * gain)
            w[f"{first}.weight"][units, j] = gain
            w[f"{first}.bias"][units] = shift
            w[f"{second}.weight"][j, units] = back
            w[f"{second}.bias"][j] = bias - np.sum(back * shift)
    state = detector.module_.state_dict()
    state.update({k: torch.tensor(v, dtype=torch.float32) for k, v in w.items()})
    detector.module_.load_state_dict(state)
    detector.set_threshold(quantile_threshold(detector.anomaly_score(X), 0.1), rule="test")
    return AnomalyModel(pre, detector), table.features


def test_a_model_with_near_zero_column_errors_exports(tmp_path):
    from anomtune.export import ATOL, RTOL, _graph_module, _torch_outputs

    model, features = _cancelling_model()
    feeds = {"numeric": features.to_numpy(np.float32)}
    module, _ = _graph_module(model)
    ref_score, ref_errors, _ = _torch_outputs(module, feeds["numeric"], None)
    _, errors, _ = ort.InferenceSession(
        export_model(model, features)[0], providers=["CPUExecutionProvider"]
    ).run(None, feeds)
    # The reported shape: columns a and b have errors near zero, and onnxruntime's
    # differ from torch's by more than ATOL in absolute terms and more than RTOL
    # relative to themselves ...
    assert np.all(ref_errors[:, :2] < 1e-3)
    diff = np.abs(errors - ref_errors)
    off = (diff > ATOL) & (diff > RTOL * ref_errors)
    assert off[:, :2].sum() > 10 and not off[:, 2:].any()
    # ... while every difference is tiny next to the row's error, and the score agrees.
    path = tmp_path / "m.onnx"
    _, report = export_model(model, features, path)
    assert report.passed and report.label_flips == 0
    assert report.score_error <= RTOL and report.feature_error <= RTOL
    parity = json.loads(
        ort.InferenceSession(path.read_bytes()).get_modelmeta().custom_metadata_map["anomtune"]
    )["parity"]
    assert parity["passed"] is True
    assert parity["tolerance"] == RTOL and parity["absolute_floor"] == ATOL
    assert "row's total squared error" in parity["rule"]
    assert parity["feature_errors_relative_error"] == report.feature_error
    np.testing.assert_allclose(load_scorer(path).score(features).score, ref_score, rtol=1e-4)


def _initializer(model, suffix: str):
    from onnx import numpy_helper

    (found,) = [t for t in model.graph.initializer if t.name.endswith(suffix)]
    return found, numpy_helper.to_array(found).copy()


def test_parity_refuses_a_graph_with_one_weight_changed(mixed_prepared):
    from onnx import numpy_helper

    from anomtune.export import RTOL, _graph_module
    from anomtune.scoring import encode_frame

    detector = fit_detector(mixed_prepared, {"epochs": 4}, seed=0)
    model = mixed_prepared.model(detector)
    pre = model.encoder
    val = mixed_prepared.table.features.iloc[mixed_prepared.split.val]
    data, report = export_model(model, val)
    assert report.passed
    graph = onnx.load_from_string(data)
    names = [t.name for t in graph.graph.initializer]
    last = [n for n in names if "decoder" in n and n.endswith("bias")][-1]
    tensor, bias = _initializer(graph, last)
    bias[0] += 0.05  # one output of the last layer moves by 0.05 scaled units
    tensor.CopyFrom(numpy_helper.from_array(bias, tensor.name))
    module, _ = _graph_module(model)
    feeds = encode_frame(val, pre.schema_.numeric, pre.schema_.categorical)
    wrong = check_parity(graph.SerializeToString(), module, feeds, pre.split_inputs(val)[1])
    assert not wrong.passed
    assert wrong.feature_error > RTOL and wrong.max_relative_error > RTOL


def test_parity_refuses_per_column_errors_in_the_wrong_columns(mixed_prepared):
    import torch

    from anomtune.export import RTOL, _graph_module
    from anomtune.scoring import encode_frame

    detector = fit_detector(mixed_prepared, {"epochs": 4}, seed=0)
    model = mixed_prepared.model(detector)
    pre = model.encoder
    val = mixed_prepared.table.features.iloc[mixed_prepared.split.val]
    data, _ = export_model(model, val)
    module, _ = _graph_module(model)

    class Swapped(torch.nn.Module):
        """The same scores and labels, with columns a and b's errors exchanged."""

        def __init__(self):
            super().__init__()
            self.inner = module

        def forward(self, numeric, codes=None):
            score, errors, label = self.inner(numeric, codes)
            return score, errors[:, [1, 0, 2, 3, 4, 5]], label

    feeds = encode_frame(val, pre.schema_.numeric, pre.schema_.categorical)
    report = check_parity(data, Swapped().eval(), feeds, pre.split_inputs(val)[1])
    # Only feature_errors are wrong, and the rule still sees it.
    assert report.score_error <= RTOL and report.label_flips == 0
    assert report.feature_error > RTOL and not report.passed
