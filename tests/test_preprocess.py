"""The input encoder (imputation, one-hot encoding) and the scaler, as torch modules."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from anomtune.data import read_table, table_from_frame
from anomtune.errors import ConfigError, DataError
from anomtune.preprocess import MISSING, RARE, SCALERS, UNSEEN, InputEncoder, Scaler


def mixed_table(n: int = 60, seed: int = 0):
    """Numeric columns with gaps and two categorical columns, labels 0/1."""
    rng = np.random.default_rng(seed)
    a = rng.normal(10, 2, n)
    a[rng.random(n) < 0.2] = np.nan
    b = rng.integers(0, 5, n).astype(float)
    colour = rng.choice(["red", "green", "blue", "teal"], n, p=[0.4, 0.3, 0.2, 0.1]).astype(object)
    colour[rng.random(n) < 0.1] = None
    shape = rng.choice(["o", "x"], n).astype(object)
    frame = pd.DataFrame(
        {"a": a, "colour": colour, "b": b, "shape": shape, "y": (rng.random(n) < 0.2).astype(int)}
    )
    return table_from_frame(frame, label="y")


def test_fit_learns_medians_and_vocabulary_from_training_rows_only():
    table = mixed_table()
    features = table.features.copy()
    train = np.arange(40)
    # Rows outside the training rows must not influence what is learned.
    features.loc[45:, "a"] = 1e6
    features.loc[45:, "colour"] = "violet"
    pre = InputEncoder(table.schema).fit(features.iloc[train])
    expected = float(np.nanmedian(table.features["a"].iloc[train]))
    assert pre.medians_["a"] == pytest.approx(expected)
    vocab = dict((c.name, c.categories) for c in pre.schema_.columns)
    assert "violet" not in vocab["colour"]
    counts = features["colour"].iloc[train].value_counts()
    assert list(vocab["colour"]) == sorted(counts.index, key=lambda v: (-counts[v], v))
    assert vocab["a"] is None


def test_transform_imputes_and_one_hot_encodes():
    frame = pd.DataFrame(
        {
            "n": [1.0, np.nan, 3.0, 10.0],
            "c": ["u", "v", "u", None],
            "y": [0, 0, 0, 1],
        }
    )
    table = table_from_frame(frame, label="y")
    pre = InputEncoder(table.schema).fit(table.features.iloc[:3])
    assert pre.output_names == ["n", "c=u", "c=v"]
    assert pre.output_groups.tolist() == [0, 1, 1]
    X = pre.encode(table.features.iloc[:3])
    assert X.dtype == np.float32
    np.testing.assert_array_equal(X, [[1, 1, 0], [2, 0, 1], [3, 1, 0]])
    scoring = pd.DataFrame({"n": [np.nan, 7.0, 2.0], "c": ["w", None, "v"]})
    np.testing.assert_array_equal(pre.encode(scoring), [[2, 0, 0], [7, 0, 0], [2, 0, 1]])


def test_unseen_categories_encode_as_zeros_and_never_crash():
    table = mixed_table()
    pre = InputEncoder(table.schema).fit(table.features)
    scoring = table.features.iloc[:5].copy()
    scoring["colour"] = ["mauve", None, np.nan, "", 3.5]
    scoring["shape"] = ["o", "triangle", "x", "o", "o"]
    X = pre.encode(scoring)
    colour = [i for i, n in enumerate(pre.output_names) if n.startswith("colour=")]
    shape = [i for i, n in enumerate(pre.output_names) if n.startswith("shape=")]
    assert (X[:, colour] == 0).all()
    assert X[:, shape].sum(axis=1).tolist() == [1, 0, 1, 1, 1]
    numeric, codes = pre.split_inputs(scoring)
    # Unseen values are told apart from missing ones (they add to the score).
    assert codes[:, 0].tolist() == [UNSEEN, MISSING, MISSING, MISSING, UNSEEN]
    assert codes[:, 1].tolist()[1] == UNSEEN
    np.testing.assert_array_equal(pre.unseen(scoring), [1, 1, 0, 0, 1])
    assert numeric.dtype == np.float32 and codes.dtype == np.int64


def test_values_past_the_cap_are_rare_not_unseen_and_survive_a_round_trip():
    frame = pd.DataFrame({"c": list("aaabbc"), "n": range(6), "y": [0] * 6})
    table = table_from_frame(frame, label="y")
    pre = InputEncoder(table.schema, max_categories=2).fit(table.features)
    assert pre.rare_ == {"c": ("c",)}
    again = InputEncoder.from_dict(json.loads(json.dumps(pre.to_dict())))
    scoring = pd.DataFrame({"c": ["a", "c", "z", None], "n": [0.0] * 4})
    for encoder in (pre, again):
        assert encoder.split_inputs(scoring)[1][:, 0].tolist() == [0, RARE, UNSEEN, MISSING]


def test_cardinality_cap_keeps_the_most_frequent_values():
    values = ["a"] * 5 + ["b"] * 4 + ["d"] * 3 + ["c"] * 3 + ["e"]
    frame = pd.DataFrame({"c": values, "y": [0] * (len(values) - 1) + [1]})
    table = table_from_frame(frame, label="y")
    pre = InputEncoder(table.schema, max_categories=3).fit(table.features)
    # Ties ("c" and "d" three times each) are broken by value.
    assert pre.output_names == ["c=a", "c=b", "c=c"]
    X = pre.encode(pd.DataFrame({"c": ["d", "e", "a"]}))
    np.testing.assert_array_equal(X, [[0, 0, 0], [0, 0, 0], [1, 0, 0]])
    with pytest.raises(ConfigError, match="max_categories"):
        InputEncoder(table.schema, max_categories=0).fit(table.features)


def test_category_read_as_number_at_scoring_matches_its_training_text():
    frame = pd.DataFrame({"code": [1, 2, 2, 3], "y": [0, 0, 1, 0]})
    table = table_from_frame(frame, label="y", categorical=["code"])
    pre = InputEncoder(table.schema).fit(table.features)
    assert pre.output_names == ["code=2", "code=1", "code=3"]
    scoring = pd.DataFrame({"code": [2.0, 1.0, np.nan, 4.0]})
    np.testing.assert_array_equal(pre.encode(scoring), [[1, 0, 0], [0, 1, 0], [0, 0, 0], [0, 0, 0]])


def test_categorical_column_without_training_values_is_an_error():
    frame = pd.DataFrame({"n": [1.0, 2, 3, 4], "c": [None, None, "x", "y"], "y": [0, 0, 1, 1]})
    table = table_from_frame(frame, label="y")
    with pytest.raises(DataError, match="categorical column 'c' has no values in the training"):
        InputEncoder(table.schema).fit(table.features.iloc[:2])


def test_numeric_column_without_training_values_imputes_zero():
    frame = pd.DataFrame({"n": [np.nan, np.nan, 3.0], "y": [0, 0, 1]})
    table = table_from_frame(frame, label="y", roles={"n": "numeric"})
    pre = InputEncoder(table.schema).fit(table.features.iloc[:2])
    assert pre.encode(table.features).tolist() == [[0.0], [0.0], [3.0]]


def test_missing_or_non_numeric_columns_at_transform():
    table = mixed_table()
    pre = InputEncoder(table.schema).fit(table.features)
    with pytest.raises(DataError, match=r"missing feature column.*'b'"):
        pre.encode(table.features.drop(columns="b"))
    bad = table.features.copy()
    bad["a"] = bad["a"].astype(object)
    bad.loc[3, "a"] = "abc"
    with pytest.raises(
        DataError, match="column 'a' is numeric but has the non-numeric value 'abc'"
    ):
        pre.encode(bad)


def test_round_trip_through_json():
    table = mixed_table()
    pre = InputEncoder(table.schema, max_categories=3).fit(table.features.iloc[:40])
    again = InputEncoder.from_dict(json.loads(json.dumps(pre.to_dict())))
    assert again.output_names == pre.output_names
    np.testing.assert_array_equal(again.encode(table.features), pre.encode(table.features))


def reference_encoding(encoder: InputEncoder, frame: pd.DataFrame) -> np.ndarray:
    """Column by column: the median for a missing number, a one-hot block per category."""
    blocks = []
    for col in encoder.schema_.columns:
        values = frame[col.name]
        if col.categories is None:
            numbers = values.to_numpy(dtype="float64", na_value=np.nan)
            blocks.append(np.where(np.isnan(numbers), encoder.medians_[col.name], numbers)[:, None])
        else:
            text = values.map(lambda v: None if pd.isna(v) else str(v))
            blocks.append(np.stack([(text == c).to_numpy() for c in col.categories], axis=1))
    return np.concatenate(blocks, axis=1).astype(np.float32)


def test_encoder_module_matches_a_column_by_column_reference():
    table = mixed_table(n=200, seed=3)
    encoder = InputEncoder(table.schema, max_categories=2).fit(table.features.iloc[:120])
    scoring = table.features.copy()
    scoring.loc[:9, "colour"] = "never seen"
    scoring.loc[10:14, "a"] = np.nan
    numeric, codes = encoder.split_inputs(scoring)
    assert np.isnan(numeric).any()
    assert (codes == -1).any()
    with torch.no_grad():
        out = encoder.module()(torch.from_numpy(numeric), torch.from_numpy(codes)).numpy()
    expected = reference_encoding(encoder, scoring)
    assert out.shape == expected.shape == (200, len(encoder.output_names))
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(encoder.encode(scoring), expected)


def test_encoder_module_with_categorical_columns_first():
    frame = pd.DataFrame(
        {"c": ["p", "q", None, "r"], "n": [1.0, np.nan, 5.0, 2.0], "y": [0, 0, 0, 1]}
    )
    table = table_from_frame(frame, label="y")
    encoder = InputEncoder(table.schema).fit(table.features)
    np.testing.assert_array_equal(
        encoder.encode(table.features), reference_encoding(encoder, table.features)
    )


def test_encoder_sums_encoded_errors_back_to_table_columns():
    table = mixed_table(n=50, seed=2)
    encoder = InputEncoder(table.schema).fit(table.features)
    errors = np.random.default_rng(0).random((7, len(encoder.output_names))).astype(np.float32)
    expected = np.zeros((7, len(encoder.schema_.columns)), dtype=np.float32)
    np.add.at(expected.T, encoder.output_groups, errors.T)
    with torch.no_grad():
        out = encoder.module().columns(torch.from_numpy(errors)).numpy()
    np.testing.assert_allclose(out, expected, rtol=1e-6)


def test_end_to_end_from_a_csv(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("id,n,c,y\nr1,1,a,0\nr2,,b,0\nr3,3,a,1\nr4,4,z,0\n")
    table = read_table(path, label="y", id_column="id")
    pre = InputEncoder(table.schema).fit(table.features.iloc[[0, 1, 3]])
    assert pre.output_names == ["n", "c=a", "c=b", "c=z"]
    np.testing.assert_array_equal(
        pre.encode(table.features),
        [[1, 1, 0, 0], [2.5, 0, 1, 0], [3, 1, 0, 0], [4, 0, 0, 1]],
    )


# -- scaler -----------------------------------------------------------------------------


def training_matrix(seed: int = 0):
    rng = np.random.default_rng(seed)
    X = np.c_[
        rng.normal(5, 3, 300),
        rng.exponential(2, 300),
        np.full(300, 7.0),  # constant
        rng.integers(0, 2, 300),
    ].astype(np.float32)
    return X


def test_standard_scaler():
    X = training_matrix()
    Z = Scaler("standard").fit_transform(X)
    np.testing.assert_allclose(Z[:, [0, 1, 3]].mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(Z[:, [0, 1, 3]].std(axis=0), 1, atol=1e-5)
    np.testing.assert_array_equal(Z[:, 2], 0)


def test_robust_scaler():
    X = training_matrix()
    scaler = Scaler("robust").fit(X)
    q1, med, q3 = np.percentile(X.astype(np.float64), [25, 50, 75], axis=0)
    np.testing.assert_allclose(scaler.center_, med, rtol=1e-6)
    np.testing.assert_allclose(scaler.scale_[[0, 1, 3]], (q3 - q1)[[0, 1, 3]], rtol=1e-6)
    assert scaler.scale_[2] == 1.0


def test_minmax_scaler_maps_the_training_range_to_unit_interval():
    X = training_matrix()
    scaler = Scaler("minmax").fit(X)
    Z = scaler.transform(X)
    np.testing.assert_allclose(Z[:, [0, 1, 3]].min(axis=0), 0, atol=1e-6)
    np.testing.assert_allclose(Z[:, [0, 1, 3]].max(axis=0), 1, atol=1e-6)
    outside = scaler.transform(X.max(axis=0, keepdims=True) + 1)
    assert (outside[0, [0, 1, 3]] > 1).all()


def test_none_scaler_is_the_identity():
    X = training_matrix()
    np.testing.assert_array_equal(Scaler("none").fit_transform(X), X)


def test_scaler_is_fitted_on_the_rows_it_is_given_only():
    X = training_matrix()
    train, other = X[:200], X[200:] * 100
    scaler = Scaler("standard").fit(train)
    np.testing.assert_allclose(scaler.center_, train.astype(np.float64).mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(
        scaler.transform(other), (other - scaler.center_) / scaler.scale_, rtol=1e-6
    )


def test_scaler_errors():
    with pytest.raises(ConfigError, match="scaler must be one of"):
        Scaler("zscore").fit(training_matrix())
    with pytest.raises(DataError, match="NaN or infinite"):
        Scaler("standard").fit(np.array([[1.0], [np.nan]]))
    with pytest.raises(DataError, match="with rows"):
        Scaler("standard").fit(np.empty((0, 3)))


@pytest.mark.parametrize("kind", SCALERS)
def test_scaler_module_matches_numpy(kind):
    X = training_matrix(seed=1)
    scaler = Scaler(kind).fit(X[:200])
    new = X * 1.5 - 2
    with torch.no_grad():
        out = scaler.as_module()(torch.from_numpy(new)).numpy()
    np.testing.assert_allclose(out, scaler.transform(new), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("kind", SCALERS)
def test_encoder_then_scaler_modules_match_the_numpy_scaler(kind):
    table = mixed_table(n=150, seed=5)
    encoder = InputEncoder(table.schema).fit(table.features.iloc[:100])
    scaler = Scaler(kind).fit(encoder.encode(table.features.iloc[:100]))
    numeric, codes = encoder.split_inputs(table.features)
    encode, scale = encoder.module(), scaler.as_module()
    with torch.no_grad():
        out = scale(encode(torch.from_numpy(numeric), torch.from_numpy(codes))).numpy()
    np.testing.assert_allclose(
        out, scaler.transform(encoder.encode(table.features)), rtol=1e-6, atol=1e-6
    )
