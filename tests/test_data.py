"""Reading labeled CSVs, typing columns, schema, fingerprint, split and folds."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.model_selection import StratifiedKFold, train_test_split

from anomtune.data import (
    CATEGORICAL,
    NUMERIC,
    Schema,
    read_table,
    split_rows,
    stratified_folds,
    table_from_frame,
    training_rows,
)
from anomtune.errors import AnomtuneError, ConfigError, DataError


def write(tmp_path, text: str, name: str = "data.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


def labeled_csv(tmp_path, values: list[str], name: str = "data.csv"):
    """A two-feature CSV whose label column ``y`` has the given values."""
    lines = ["a,b,y"] + [f"{(i * 7) % 11},{i % 3},{v}" for i, v in enumerate(values)]
    return write(tmp_path, "\n".join(lines) + "\n", name)


# -- labels -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("normal", "anomaly"),
    [("0", "1"), ("0.0", "1.0"), ("false", "true"), ("False", "True"), ("no", "yes"), ("N", "Y")],
)
def test_recognised_label_values(tmp_path, normal, anomaly):
    path = labeled_csv(tmp_path, [normal, anomaly, normal, normal, anomaly])
    table = read_table(path, label="y")
    assert table.labels.tolist() == [0, 1, 0, 0, 1]
    assert table.labels.dtype == np.int8
    assert table.n_anomalies == 2
    assert "y" not in table.features.columns


def test_word_labels_match_in_any_case(tmp_path):
    path = labeled_csv(tmp_path, ["Yes", "yes", "no", "No", "YES"])
    assert read_table(path, label="y").labels.tolist() == [1, 1, 0, 0, 1]


def test_other_label_values_need_positive(tmp_path):
    path = labeled_csv(tmp_path, ["normal", "attack", "normal", "scan"])
    with pytest.raises(DataError) as err:
        read_table(path, label="y")
    message = str(err.value)
    assert "'attack', 'normal', 'scan'" in message
    assert "--positive" in message
    table = read_table(path, label="y", positive="attack")
    assert table.labels.tolist() == [0, 1, 0, 0]
    assert table.schema.positive == "attack"


def test_minus_one_plus_one_labels_need_positive(tmp_path):
    path = labeled_csv(tmp_path, ["1", "-1", "1", "1"])
    with pytest.raises(DataError, match="'-1', '1'"):
        read_table(path, label="y")
    assert read_table(path, label="y", positive="-1").labels.tolist() == [0, 1, 0, 0]


def test_positive_value_not_present_lists_values(tmp_path):
    path = labeled_csv(tmp_path, ["normal", "attack", "normal"])
    with pytest.raises(DataError, match=r"'fraud' does not occur.*'attack', 'normal'"):
        read_table(path, label="y", positive="fraud")


def test_positive_written_as_float_matches_integer_labels(tmp_path):
    path = labeled_csv(tmp_path, ["0", "1", "0"])
    assert read_table(path, label="y", positive="1.0").labels.tolist() == [0, 1, 0]
    assert read_table(path, label="y", positive=0).labels.tolist() == [1, 0, 1]


def test_missing_labels_are_counted_with_their_lines_or_dropped(tmp_path):
    rows = ["1,0", "2,", "3,1", "", "4,", "5,0", "6,1"]
    path = write(tmp_path, "a,y\n" + "\n".join(rows) + "\n")
    with pytest.raises(DataError) as err:
        read_table(path, label="y")
    message = str(err.value)
    assert "label column 'y' has 2 missing value(s) (at line 3, line 6)" in message
    assert message.endswith("drop those rows with --drop-unlabeled")
    table = read_table(path, label="y", drop_unlabeled=True)
    assert table.n_rows == 4
    assert table.features["a"].tolist() == [1.0, 3.0, 5.0, 6.0]
    assert table.labels.tolist() == [0, 1, 0, 1]
    assert table.counts["unlabeled_dropped"] == 2
    assert any("dropped 2 row(s) without a label" in n for n in table.notes)


def test_without_label_the_table_has_no_labels(tmp_path):
    table = read_table(labeled_csv(tmp_path, ["0", "1"]))
    assert table.labels is None
    assert table.schema.feature_names == ["a", "b", "y"]


# -- column selection -----------------------------------------------------------


def selection_csv(tmp_path):
    return write(tmp_path, "id,a,b,c,y\nr1,1,2,3,0\nr2,4,5,6,1\nr3,7,8,9,0\n")


def test_default_features_are_all_other_columns_and_id_is_kept(tmp_path):
    table = read_table(selection_csv(tmp_path), label="y", id_column="id")
    assert table.schema.feature_names == ["a", "b", "c"]
    assert table.ids.tolist() == ["r1", "r2", "r3"]
    assert table.schema.id_column == "id"
    assert "id" not in table.features.columns


def test_feature_include_list_sets_columns_and_order(tmp_path):
    table = read_table(selection_csv(tmp_path), label="y", features=["c", "a"], id_column="id")
    assert table.schema.feature_names == ["c", "a"]
    assert table.features["c"].tolist() == [3.0, 6.0, 9.0]


def test_exclude_list(tmp_path):
    table = read_table(selection_csv(tmp_path), label="y", exclude=["b", "id"])
    assert table.schema.feature_names == ["a", "c"]
    table = read_table(selection_csv(tmp_path), label="y", features=["a", "b"], exclude=["b"])
    assert table.schema.feature_names == ["a"]


def test_label_or_id_cannot_be_a_feature(tmp_path):
    with pytest.raises(DataError, match="both a feature and the label"):
        read_table(selection_csv(tmp_path), label="y", features=["a", "y"])
    with pytest.raises(DataError, match="both a feature and the label"):
        read_table(selection_csv(tmp_path), label="y", id_column="id", features=["id"])


def test_feature_listed_twice_is_an_error(tmp_path):
    with pytest.raises(DataError, match="listed twice: 'a'"):
        read_table(selection_csv(tmp_path), label="y", features=["a", "b", "a"])


def test_no_features_left_is_an_error(tmp_path):
    with pytest.raises(DataError, match="no feature columns left"):
        read_table(selection_csv(tmp_path), label="y", id_column="id", exclude=["a", "b", "c"])


@pytest.mark.parametrize(
    ("option", "value", "what"),
    [
        ("label", "Y", "label column 'Y'"),
        ("id_column", "idd", "id column 'idd'"),
        ("features", ["a", "bb"], "feature column 'bb'"),
        ("exclude", ["cc"], "excluded column 'cc'"),
        ("categorical", ["aa"], "categorical column 'aa'"),
    ],
)
def test_unknown_column_suggests_the_closest_name(tmp_path, option, value, what):
    kwargs = {"label": "y", option: value}
    with pytest.raises(DataError) as err:
        read_table(selection_csv(tmp_path), **kwargs)
    message = str(err.value)
    assert what in message
    assert "did you mean" in message
    closest = {"Y": "y", "idd": "id", "bb": "b", "cc": "c", "aa": "a"}
    wanted = value if isinstance(value, str) else value[-1]
    assert message.endswith(f"did you mean {closest[wanted]!r}?")


def test_unknown_column_without_close_name_lists_columns(tmp_path):
    with pytest.raises(DataError) as err:
        read_table(selection_csv(tmp_path), label="zzzzzz")
    assert "did you mean" not in str(err.value)
    assert "'id', 'a', 'b', 'c', 'y'" in str(err.value)


@pytest.mark.parametrize("sep", [";", "\t", "|"])
def test_wrong_separator_gets_a_separator_hint(tmp_path, sep):
    path = write(tmp_path, f"a{sep}b{sep}is_anomaly\n1{sep}2{sep}0\n3{sep}4{sep}1\n")
    # Sniffed when not given; a wrong one given by hand names the right one.
    assert read_table(path, label="is_anomaly").schema.feature_names == ["a", "b"]
    with pytest.raises(DataError) as err:
        read_table(path, label="is_anomaly", sep=",")
    assert f"seems to use {sep!r} as the separator" in str(err.value)
    assert "did you mean" not in str(err.value)
    assert read_table(path, label="is_anomaly", sep=sep).schema.feature_names == ["a", "b"]


def test_tab_separator_spellings(tmp_path):
    path = write(tmp_path, "a\tb\ty\n1\t2\t0\n3\t4\t1\n")
    for sep in ("\t", "\\t", "tab"):
        assert read_table(path, label="y", sep=sep).schema.feature_names == ["a", "b"]


@pytest.mark.parametrize("sep", ["", ";;", '"'])
def test_bad_separator_is_a_data_error(tmp_path, sep):
    path = labeled_csv(tmp_path, ["0", "1"])
    with pytest.raises(DataError, match="separator"):
        read_table(path, label="y", sep=sep)


# -- column types and values ------------------------------------------------------


def test_numeric_and_categorical_columns(tmp_path):
    path = write(
        tmp_path,
        "num,cat,flag,code,y\n1.5,red,true,1,0\n2,blue,false,2,1\n,red,true,1,0\n4,,false,3,0\n",
    )
    table = read_table(path, label="y", categorical=["code"])
    kinds = {c.name: c.kind for c in table.schema.columns}
    assert kinds == {"num": NUMERIC, "cat": CATEGORICAL, "flag": NUMERIC, "code": CATEGORICAL}
    assert table.schema.numeric == ["num", "flag"]
    assert table.schema.categorical == ["cat", "code"]
    assert table.features["num"].isna().tolist() == [False, False, True, False]
    assert table.features["flag"].tolist() == [1.0, 0.0, 1.0, 0.0]
    assert table.features["cat"].tolist()[:3] == ["red", "blue", "red"]
    assert table.features["cat"].isna().tolist() == [False, False, False, True]
    assert table.features["code"].tolist() == ["1", "2", "1", "3"]


def test_all_missing_and_constant_columns_are_dropped_and_named_in_one_note(tmp_path):
    path = write(tmp_path, "a,b,c,d,y\n1,,7,,0\n5,,7,,1\n3,,7,,0\n")
    table = read_table(path, label="y")
    assert table.schema.feature_names == ["a"]
    roles = {r.name: r.role for r in table.roles}
    assert roles == {"a": "numeric", "b": "empty", "c": "constant", "d": "empty", "y": "label"}
    assert "all missing (dropped): 'b', 'd'" in table.notes
    assert "constant (dropped): 'c'" in table.notes


@pytest.mark.parametrize("spelling", ["inf", "-inf", "Infinity", "-Infinity", "1e999"])
def test_infinite_value_names_column_and_line(tmp_path, spelling):
    path = write(tmp_path, f"a,b,y\n1,2,0\n3,4,1\n5,{spelling},0\n")
    with pytest.raises(DataError, match=r"column 'b' has an infinite value at line 4"):
        read_table(path, label="y")


def test_line_numbers_count_blank_lines_and_multiline_fields(tmp_path):
    path = write(tmp_path, 'a,note,y\n1,"two\nlines",0\n\n2,x,1\ninf,y,0\n')
    with pytest.raises(DataError, match=r"column 'a' has an infinite value at line 6"):
        read_table(path, label="y")


def test_non_numeric_junk_in_numeric_column_names_value_and_line(tmp_path):
    rows = [f"{i},{i % 2}" for i in range(20)]
    rows[13] = "?,1"
    path = write(tmp_path, "a,y\n" + "\n".join(rows) + "\n")
    with pytest.raises(DataError, match=r"column 'a' is numeric but has .*'\?' at line 15"):
        read_table(path, label="y")


def test_mostly_text_column_is_categorical(tmp_path):
    rows = [f"{'abc'[i % 3] if i % 4 else i},{i % 2}" for i in range(12)]
    path = write(tmp_path, "a,y\n" + "\n".join(rows) + "\n")
    assert read_table(path, label="y").schema.categorical == ["a"]


def test_table_from_frame_uses_row_positions_not_the_index():
    frame = pd.DataFrame(
        {"a": [1.0, 3.0, 2.0], "c": ["x", "y", "x"], "y": [0, 1, 0]}, index=[10, 20, 5]
    )
    table = table_from_frame(frame, label="y")
    assert table.features["a"].tolist() == [1.0, 3.0, 2.0]
    assert table.features["c"].tolist() == ["x", "y", "x"]
    assert table.labels.tolist() == [0, 1, 0]
    frame.loc[20, "a"] = np.inf
    with pytest.raises(DataError, match="infinite value at row 2"):
        table_from_frame(frame, label="y")


def test_first_64k_ending_inside_a_multibyte_character(tmp_path):
    header = b"name,x,y\n"
    body = b"".join(f"a{i},{i},{i % 2}\n".encode() for i in range(4000))
    filler = 65535 - len(header) - len(body)
    assert filler > 0
    # "é" is two bytes; its first byte is the last of the first 65536.
    tail = ("b" * filler + "é,1,0\n" + "c,2,1\n").encode()
    data = header + body + tail
    assert data[65535:65537] == "é".encode()
    path = tmp_path / "big.csv"
    path.write_bytes(data)
    table = read_table(path, label="y")
    assert table.n_rows == 4002
    assert table.schema.id_column == "name"  # unique text per row
    assert table.ids.iloc[-2].endswith("é")


# -- unreadable files -------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "the file is empty"),
        (b"  \n\n", "the file is empty"),
        (b"a,b,y\n", "header but no data rows"),
        (b"a,b,y", "header but no data rows"),
        (b"a,b,y\n1,2,0\n1,2,3,1\n", "the header has 3 columns but the row at line 3 has 4"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "NUL bytes"),
        (b"\xff\xfe\xfa junk \xc3\x28", "header but no data rows"),
        (b"a,b,a,y\n1,2,3,0\n", "duplicate column names: 'a'"),
    ],
)
def test_unreadable_files(tmp_path, content, message):
    path = tmp_path / "bad.csv"
    path.write_bytes(content)
    with pytest.raises(DataError, match=message):
        read_table(path, label="y")


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        read_table(tmp_path / "nope.csv")
    with pytest.raises(DataError, match="is a folder"):
        read_table(tmp_path)


def test_errors_are_anomtune_errors():
    assert issubclass(DataError, AnomtuneError)
    assert issubclass(ConfigError, AnomtuneError)


# -- schema and fingerprint -----------------------------------------------------------


def test_schema_is_ordered_and_round_trips_through_json(tmp_path):
    path = write(tmp_path, "z,cat,a,id,y\n1,u,2,r1,0\n2,v,3,r2,1\n")
    table = read_table(path, label="y", id_column="id")
    schema = table.schema
    assert schema.feature_names == ["z", "cat", "a"]
    assert [c.kind for c in schema.columns] == [NUMERIC, CATEGORICAL, NUMERIC]
    assert (schema.label, schema.positive, schema.id_column) == ("y", "1", "id")
    assert Schema.from_dict(json.loads(json.dumps(schema.to_dict()))) == schema


def fingerprint_of(tmp_path, text: str, name: str) -> str:
    return read_table(write(tmp_path, text, name), label="y").fingerprint


def test_fingerprint_ignores_number_spelling_quoting_and_line_endings(tmp_path):
    plain = "a,b,c,y\n1.5,2,x,0\n3,-0.25,y,1\n"
    variants = [
        "a,b,c,y\n1.50,2.0,x,0\n3.0,-.25,y,1\n",
        'a,b,c,y\n"1.5","2","x",0\n"3",-2.5e-1,"y",1\n',
        "a,b,c,y\r\n1.5,2,x,0\r\n3,-0.25,y,1\r\n",
        '"a","b","c","y"\n15e-1,2,x,"0"\n3,-0.250,y,"1"\n',
        "a,b,c,y\n1.5,2,x,false\n3,-0.25,y,true\n",
    ]
    reference = fingerprint_of(tmp_path, plain, "plain.csv")
    assert reference.startswith("sha256:")
    for i, text in enumerate(variants):
        assert fingerprint_of(tmp_path, text, f"v{i}.csv") == reference, text


def test_fingerprint_changes_with_content(tmp_path):
    plain = "a,b,c,y\n1.5,2,x,0\n3,-0.25,y,1\n"
    changed = [
        "a,b,c,y\n1.5,2,x,0\n3,-0.26,y,1\n",  # a value
        "a,b,c,y\n1.5,2,x,1\n3,-0.25,y,0\n",  # the labels
        "a,B,c,y\n1.5,2,x,0\n3,-0.25,y,1\n",  # a column name
        "a,b,c,y\n3,-0.25,y,1\n1.5,2,x,0\n",  # the row order
        "b,a,c,y\n2,1.5,x,0\n-0.25,3,y,1\n",  # the column order
        "a,b,c,y\n1.5,2,x,0\n3,-0.25,z,1\n",  # a category
        "a,b,c,y\n1.5,2,x,0\n3,-0.25,y,1\n4,4,x,0\n",  # a row more
        "a,b,c,y\n1.5,,x,0\n3,-0.25,y,1\n",  # a missing value
    ]
    seen = {fingerprint_of(tmp_path, plain, "plain.csv")}
    for i, text in enumerate(changed):
        seen.add(fingerprint_of(tmp_path, text, f"c{i}.csv"))
    assert len(seen) == len(changed) + 1


def test_fingerprint_depends_on_column_kind(tmp_path):
    path = write(tmp_path, "a,y\n1,0\n2,1\n")
    numeric = read_table(path, label="y").fingerprint
    assert read_table(path, label="y", categorical=["a"]).fingerprint != numeric


# -- split --------------------------------------------------------------------------


def synthetic(n_normal: int, n_anomaly: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = np.r_[np.zeros(n_normal, int), np.ones(n_anomaly, int)]
    rng.shuffle(y)
    # The first column numbers the rows so that every row is distinct.
    X = np.c_[np.arange(len(y)), rng.normal(size=(len(y), 2))]
    return X, y


@pytest.mark.parametrize(("n_normal", "n_anomaly"), [(1655, 176), (213, 10), (90, 30)])
@pytest.mark.parametrize("seed", [0, 1, 2, 7])
def test_split_is_exactly_the_protocol_train_test_split_calls(n_normal, n_anomaly, seed):
    X, y = synthetic(n_normal, n_anomaly, seed=n_normal)
    X_rest, X_test, y_rest, _ = train_test_split(X, y, test_size=0.2, stratify=y, random_state=seed)
    X_train, X_val, _, y_val = train_test_split(
        X_rest, y_rest, test_size=0.25, stratify=y_rest, random_state=seed
    )
    split = split_rows(y, seed=seed)
    np.testing.assert_array_equal(X[split.test], X_test)
    np.testing.assert_array_equal(X[split.train], X_train)
    np.testing.assert_array_equal(X[split.val], X_val)
    np.testing.assert_array_equal(y[split.val], y_val)
    assert (split.val_size, split.test_size, split.seed) == (0.2, 0.2, seed)


def test_split_from_a_csv_matches_the_protocol_on_the_same_file(tmp_path):
    X, y = synthetic(300, 40)
    frame = pd.DataFrame(X, columns=["f0", "f1", "f2"])
    frame["is_anomaly"] = y
    path = tmp_path / "d.csv"
    frame.to_csv(path, index=False)
    table = read_table(path, label="is_anomaly", include=["f0"])
    raw = pd.read_csv(path)
    Xr, yr = raw.drop(columns="is_anomaly").to_numpy(), raw["is_anomaly"].to_numpy()
    X_rest, X_test, y_rest, _ = train_test_split(Xr, yr, test_size=0.2, stratify=yr, random_state=3)
    X_train, X_val, _, _ = train_test_split(
        X_rest, y_rest, test_size=0.25, stratify=y_rest, random_state=3
    )
    split = split_rows(table.labels, seed=3)
    features = table.features.to_numpy()
    np.testing.assert_array_equal(features[split.train], X_train)
    np.testing.assert_array_equal(features[split.val], X_val)
    np.testing.assert_array_equal(features[split.test], X_test)


def test_split_is_60_20_20_stratified_disjoint_and_complete():
    _, y = synthetic(1655, 176)
    split = split_rows(y, seed=0)
    assert split.describe()["rows"] == {"train": 1098, "val": 366, "test": 367}
    everything = np.concatenate([split.train, split.val, split.test])
    assert sorted(everything.tolist()) == list(range(len(y)))
    for part in (split.train, split.val, split.test):
        assert abs(y[part].mean() - y.mean()) < 0.01


def test_split_seeds():
    _, y = synthetic(500, 50)
    a, b, c = split_rows(y, seed=4), split_rows(y, seed=4), split_rows(y, seed=5)
    np.testing.assert_array_equal(a.test, b.test)
    np.testing.assert_array_equal(a.val, b.val)
    assert not np.array_equal(a.test, c.test)


def test_split_other_sizes():
    _, y = synthetic(800, 200)
    split = split_rows(y, seed=0, val_size=0.1, test_size=0.3)
    assert split.describe()["rows"] == {"train": 600, "val": 100, "test": 300}


@pytest.mark.parametrize(("val_size", "test_size"), [(0.0, 0.2), (0.5, 0.5), (0.2, 1.0)])
def test_split_rejects_bad_sizes(val_size, test_size):
    _, y = synthetic(100, 20)
    with pytest.raises(DataError, match="val_size and test_size"):
        split_rows(y, val_size=val_size, test_size=test_size)


@pytest.mark.parametrize("seed", [-1, 2**32, 1.5])
def test_split_rejects_bad_seeds(seed):
    _, y = synthetic(100, 20)
    with pytest.raises(ConfigError, match="seed"):
        split_rows(y, seed=seed)


@pytest.mark.parametrize("n_anomaly", [0, 120])
def test_split_needs_both_classes(n_anomaly):
    y = np.r_[np.zeros(120 - n_anomaly, int), np.ones(n_anomaly, int)]
    with pytest.raises(DataError, match="only one class"):
        split_rows(y)


@pytest.mark.parametrize(("n_normal", "n_anomaly"), [(100, 2), (100, 1), (2, 100)])
def test_split_too_few_of_a_class(n_normal, n_anomaly):
    _, y = synthetic(n_normal, n_anomaly)
    with pytest.raises(DataError, match="too few rows to split"):
        split_rows(y)


def test_split_refuses_a_validation_part_without_anomalies():
    # Three anomalies among seven normal rows: with seed 0 rounding puts two
    # anomalies in training, one in test and none in validation.
    y = np.r_[np.zeros(7, int), np.ones(3, int)]
    with pytest.raises(DataError, match="validation part gets 0 anomalies"):
        split_rows(y, seed=0)


def test_every_successful_small_split_has_both_classes_in_val_and_test():
    for n_anomaly in range(3, 12):
        for n_normal in range(3, 40, 3):
            y = np.r_[np.zeros(n_normal, int), np.ones(n_anomaly, int)]
            try:
                split = split_rows(y, seed=1)
            except DataError:
                continue
            for part in (split.val, split.test):
                assert 0 < y[part].sum() < len(part)


# -- training rows and folds ----------------------------------------------------------


def test_training_rows_normal_or_all():
    y = np.array([0, 1, 0, 0, 1, 0])
    positions = np.array([0, 1, 2, 4])
    assert training_rows(positions, y, "normal").tolist() == [0, 2]
    assert training_rows(positions, y).tolist() == [0, 2]
    assert training_rows(positions, y, "all").tolist() == [0, 1, 2, 4]
    assert training_rows(positions, None, "normal").tolist() == [0, 1, 2, 4]
    with pytest.raises(DataError, match="train_on"):
        training_rows(positions, y, "anomalies")
    with pytest.raises(DataError, match="no normal rows"):
        training_rows(np.array([1, 4]), y, "normal")


def test_stratified_folds_match_sklearn_and_partition_the_rows():
    _, y = synthetic(200, 25)
    positions = np.arange(10, len(y))
    folds = stratified_folds(y, positions, k=5, seed=3)
    reference = StratifiedKFold(n_splits=5, shuffle=True, random_state=3)
    assert len(folds) == 5
    held = []
    for (fit_rows, out_rows), (a, b) in zip(
        folds, reference.split(positions, y[positions]), strict=True
    ):
        np.testing.assert_array_equal(fit_rows, positions[a])
        np.testing.assert_array_equal(out_rows, positions[b])
        assert not set(fit_rows) & set(out_rows)
        assert 0 < y[out_rows].sum() < len(out_rows)
        held.extend(out_rows.tolist())
    assert sorted(held) == positions.tolist()


def test_stratified_folds_errors():
    _, y = synthetic(50, 4)
    with pytest.raises(DataError, match="at least 2 folds"):
        stratified_folds(y, np.arange(len(y)), k=1, seed=0)
    with pytest.raises(DataError, match="cannot make 5 stratified folds from 4 anomalies"):
        stratified_folds(y, np.arange(len(y)), k=5, seed=0)


def test_describe(tmp_path):
    table = read_table(labeled_csv(tmp_path, ["0", "1", "0", "0"]), label="y")
    info = table.describe()
    assert info["rows"] == 4
    assert info["features"] == 2
    assert info["anomalies"] == 1
    assert info["anomaly_rate"] == 0.25
    assert info["fingerprint"] == table.fingerprint


@pytest.mark.parametrize(
    ("name", "rows", "features", "anomalies"),
    [("cardio", 1831, 21, 176), ("thyroid", 3772, 6, 93), ("wbc", 223, 9, 10)],
)
def test_bundled_datasets_match_their_readme(name, rows, features, anomalies):
    path = Path(__file__).resolve().parents[1] / "datasets" / f"{name}.csv"
    table = read_table(path, label="is_anomaly")
    assert table.n_rows == rows
    assert len(table.schema.columns) == features
    assert table.n_anomalies == anomalies
    assert table.schema.feature_names == [f"f{i}" for i in range(features)]
    assert table.schema.numeric == table.schema.feature_names
    assert not table.features.isna().any().any()
