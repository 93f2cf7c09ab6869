"""The one input door: CSV dialects, column roles and the value rules."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from messy_tables import sensors, transactions, write_variants

from anomtune import inputs
from anomtune.data import read_table, table_from_frame
from anomtune.errors import ConfigError, DataError
from anomtune.inputs import InputSpec, category_text


def write(tmp_path, data: bytes | str, name: str = "data.csv"):
    path = tmp_path / name
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return path


def roles_of(table) -> dict[str, str]:
    return {r.name: r.role for r in table.roles}


# -- dialects ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "sep", "decimal"),
    [
        ("a,b,y\n1.5,2,0\n3.25,4,1\n", ",", "."),
        ("a;b;y\n1,5;2;0\n3,25;4;1\n", ";", ","),
        ("a;b;y\n1.5;2;0\n3.25;4;1\n", ";", "."),
        ("a\tb\ty\n1,5\t2\t0\n3\t4\t1\n", "\t", ","),
        ("a|b|y\n1.5|2|0\n3|4|1\n", "|", "."),
    ],
)
def test_separator_and_decimal_mark_are_sniffed(tmp_path, text, sep, decimal):
    path = write(tmp_path, text)
    dialect = inputs.sniff_dialect(path)
    assert (dialect.sep, dialect.decimal) == (sep, decimal)
    table = read_table(path, label="y")
    assert table.schema.feature_names == ["a", "b"]
    assert table.features["a"].iloc[0] == 1.5


def test_encoding_is_sniffed_bom_and_crlf_are_read(tmp_path):
    latin = write(tmp_path, "city,x,y\nZürich,1,0\nMálaga,2,1\nZürich,3,0\n".encode("latin-1"))
    assert inputs.sniff_dialect(latin).encoding == "cp1252"
    assert read_table(latin, label="y").features["city"].tolist() == ["Zürich", "Málaga", "Zürich"]
    bom = write(tmp_path, "\ufeffa;b;y\r\n1,5;x;0\r\n2;y;1\r\n".encode(), "bom.csv")
    table = read_table(bom, label="y")
    assert table.schema.feature_names == ["a", "b"]
    assert table.features["a"].tolist() == [1.5, 2.0]
    utf16 = write(tmp_path, "a\tb\ty\n1\tx\t0\n2\ty\t1\n".encode("utf-16"), "u16.csv")
    assert read_table(utf16, label="y").features["b"].tolist() == ["x", "y"]


def test_a_given_encoding_that_does_not_fit_names_the_option(tmp_path):
    path = write(tmp_path, "city,y\nZürich,0\nBern,1\n".encode("latin-1"))
    with pytest.raises(
        DataError, match=r"not a utf-8 text file; give its encoding with --encoding"
    ):
        read_table(path, label="y", encoding="utf-8")
    with pytest.raises(ConfigError, match="unknown text encoding 'klingon'"):
        read_table(path, label="y", encoding="klingon")


def test_decimal_commas_given_with_a_comma_separator_is_refused(tmp_path):
    path = write(tmp_path, "a,y\n1,0\n2,1\n")
    with pytest.raises(ConfigError, match="cannot both be ','"):
        read_table(path, label="y", decimal=",")


def test_header_and_rows_that_disagree_name_the_separator_to_try(tmp_path):
    path = write(tmp_path, "a;b;y\n1,5;2;0\n3,25;4;1\n")
    with pytest.raises(DataError) as err:
        read_table(path, label="y", sep="\t")
    assert "(pass --sep ';')" in str(err.value)


# -- value rules --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (True, "true"),
        ("True", "true"),
        ("TRUE", "true"),
        (" red", "red"),
        (1.0, "1"),
        ("1", "1"),
        ("1.0", "1"),
        (np.int64(3), "3"),
        (2.5, "2.5"),
        ("2.50", "2.5"),
        (None, ""),
        (float("nan"), ""),
        ("Yes", "Yes"),
    ],
)
def test_category_text(value, text):
    assert category_text(value) == text


def test_vectorised_category_text_agrees_with_the_scalar_rule():
    values = ["True", " red", "1.0", "2.50", None, "", "Yes", "x1", "-3", "1e3"]
    expected = [category_text(v) for v in values]
    assert inputs.to_categories(pd.Series(values, dtype="str")).tolist() == expected
    assert inputs.to_categories(pd.Series(values, dtype=object)).tolist() == expected
    assert inputs.to_categories(values).tolist() == expected


BOOLEANS = [True, False, "True", "false", "YES", "no", "y", "N", "t", "F", "1", "0", 1, 0, None]


def test_booleans_read_the_same_whatever_their_spelling():
    column = inputs._Located("flag", inputs.row_locator)
    got = inputs.to_booleans(pd.Series(BOOLEANS, dtype=object), column=column)
    expected = [1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0]
    np.testing.assert_array_equal(got[:-1], expected)
    assert np.isnan(got[-1])
    as_text = pd.Series([str(v) if v is not None else None for v in BOOLEANS], dtype="str")
    np.testing.assert_array_equal(inputs.to_booleans(as_text, column=column)[:-1], expected)
    with pytest.raises(
        DataError, match=r"column 'flag' is boolean but has the value 'maybe' at row 2"
    ):
        inputs.to_booleans(["yes", "maybe"], column=column)


def test_numbers_from_text_json_values_and_decimal_commas():
    column = inputs._Located("x", inputs.row_locator)
    text = pd.Series([" 1.5", "2", "", None, "NaN", "-3e2"], dtype="str")
    np.testing.assert_array_equal(
        inputs.to_numbers(text, column=column), [1.5, 2.0, np.nan, np.nan, np.nan, -300.0]
    )
    mixed = [1, "2.5", None, True, " 4 "]
    np.testing.assert_array_equal(inputs.to_numbers(mixed, column=column), [1, 2.5, np.nan, 1, 4])
    comma = pd.Series(["1,5", "-2,25"], dtype="str")
    np.testing.assert_array_equal(
        inputs.to_numbers(comma, decimal=",", column=column), [1.5, -2.25]
    )
    with pytest.raises(
        DataError, match=r"column 'x' is numeric but has the non-numeric value 'abc' at row 2"
    ):
        inputs.to_numbers(pd.Series(["1", "abc"], dtype="str"), column=column)
    with pytest.raises(DataError, match="infinite value at row 1"):
        inputs.to_numbers(["inf"], column=column)


# -- roles ----------------------------------------------------------------------------------


def test_transactions_roles_are_what_a_practitioner_would_choose():
    table = table_from_frame(transactions(600, seed=1), label="is_fraud")
    assert roles_of(table) == {
        "txn_id": "id",
        "row": "excluded",
        "ts": "timestamp",
        "card_present": "boolean",
        "online": "boolean",
        "merchant": "excluded",
        "amount": "numeric",
        "n_items": "numeric",
        "country": "categorical",
        "channel": "categorical",
        "currency": "constant",
        "note": "empty",
        "is_fraud": "label",
    }
    reasons = {r.name: r.reason for r in table.roles}
    assert reasons["txn_id"] == "text, unique per row"
    assert reasons["row"].startswith("id-like (1, 2, 3, ... in order)")
    assert reasons["merchant"].endswith("values, cap 50")
    assert table.schema.id_column == "txn_id"
    assert table.schema.feature_names == [
        "card_present",
        "online",
        "amount",
        "n_items",
        "country",
        "channel",
    ]
    assert table.features["card_present"].isin([0.0, 1.0]).all()
    notes = "\n".join(table.notes)
    assert "timestamps, left out" in notes
    assert "constant (dropped): 'currency'" in notes
    assert "all missing (dropped): 'note'" in notes


def test_every_inference_can_be_overridden():
    frame = transactions(300, seed=2)
    table = table_from_frame(
        frame,
        label="is_fraud",
        id_column="row",
        include=["merchant"],
        exclude=["channel"],
        roles={"n_items": "categorical"},
        time_features=True,
    )
    roles = roles_of(table)
    assert roles["row"] == "id"
    assert roles["txn_id"] == "excluded"  # id-like, but not the output id
    assert table.schema.id_column == "row"
    assert roles["merchant"] == "categorical"
    assert roles["channel"] == "excluded"
    assert roles["n_items"] == "categorical"
    names = table.schema.feature_names
    assert {"ts.hour", "ts.weekday", "ts.day", "ts.month"} <= set(names)
    first = pd.Timestamp(frame["ts"].iloc[0])
    assert table.features["ts.hour"].iloc[0] == first.hour + first.minute / 60
    assert table.features["ts.weekday"].iloc[0] == first.weekday()
    with pytest.raises(ConfigError, match="'colour' is not a role"):
        inputs.parse_role_overrides(["amount=colour"])


def test_sensors_dead_and_constant_columns_are_dropped_in_one_note():
    table = table_from_frame(sensors(200), label="fault")
    roles = roles_of(table)
    assert roles == {
        "sensor_id": "id",
        "temp": "numeric",
        "pressure": "numeric",
        "humidity": "numeric",
        "dead": "empty",
        "stuck": "constant",
        "fault": "label",
    }
    humidity = next(r for r in table.roles if r.name == "humidity")
    assert 0.05 < humidity.missing < 0.15


def test_tiny_tables_infer_no_ids():
    frame = pd.DataFrame({"n": [1, 2, 3, 4], "t": ["a", "b", "c", "d"], "y": [0, 1, 0, 0]})
    assert roles_of(table_from_frame(frame, label="y"))["n"] == "numeric"


def test_duplicates_are_reported_and_dropped_on_request():
    frame = sensors(100).drop(columns="sensor_id")
    doubled = pd.concat([frame, frame.iloc[:30]], ignore_index=True)
    table = table_from_frame(doubled, label="fault")
    assert table.counts["duplicate_rows"] == 30
    assert any(
        "30 row(s) repeat an earlier row's features and label exactly" in n for n in table.notes
    )
    deduped = table_from_frame(doubled, label="fault", dedupe=True)
    assert deduped.n_rows == 100
    assert deduped.fingerprint == table_from_frame(frame, label="fault").fingerprint


def test_the_spec_round_trips_and_reads_every_variant_the_same(tmp_path):
    frame = transactions(400, seed=3)
    variants = write_variants(frame, tmp_path, "tx")
    tables = {name: read_table(v["path"], label="is_fraud") for name, v in variants.items()}
    reference = tables["plain"]
    spec = InputSpec.from_dict(reference.schema.inputs.to_dict())
    assert spec == reference.schema.inputs
    for name, table in tables.items():
        assert roles_of(table) == roles_of(reference), name
        assert table.fingerprint == reference.fingerprint, name
    excel = tables["excel"]
    assert (excel.dialect.sep, excel.dialect.decimal) == (";", ",")


def test_a_frame_of_numbers_is_read_in_one_block_with_the_same_checks():
    from anomtune.inputs import Feature, InputSpec

    rng = np.random.default_rng(3)
    frame = pd.DataFrame(rng.normal(size=(50, 3)).astype(np.float32), columns=["a", "b", "c"])
    frame["n"] = np.arange(50)
    frame["k"] = rng.choice(["x", "y"], size=50)
    frame.loc[4, "a"] = np.nan
    features = [Feature(c, "numeric", c, "number") for c in ("c", "a", "n")]
    spec = InputSpec(features=[*features, Feature("k", "categorical", "k", "category")])
    assert spec._number_block(frame) is not None  # the one-block path
    fast = spec.feeds(frame)
    # The column-by-column path on the same values as text: the same feeds.
    slow = spec.feeds(frame.astype(str).replace("nan", ""))
    np.testing.assert_array_equal(fast["numeric"], slow["numeric"])
    np.testing.assert_array_equal(fast["categorical"], slow["categorical"])
    assert fast["numeric"].flags.writeable
    np.testing.assert_array_equal(fast["numeric"][:, 2], np.arange(50, dtype=np.float32))
    # Infinite and float32-overflowing values are still named with their row.
    for bad, words in ((np.inf, "infinite value at row 8"), (1e300, "too large for float32")):
        broken = frame.assign(a=frame["a"].astype("float64"))
        broken.loc[7, "a"] = bad
        with pytest.raises(DataError, match=words):
            spec.feeds(broken)
