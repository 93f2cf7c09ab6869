"""Messy tables end to end: tune, export, then the same scores through every door.

Each table of the corpus (transactions with ids, timestamps, booleans and wide
text; sensors with dead and constant columns) is written the ways people's
files come (plain CSV, an Excel-style ';' file with decimal commas, a BOM and
CRLF, Latin-1, Parquet). A model is tuned on the plain CSV through the command
line and exported; then ``anomtune score`` on every variant, including the
training file, ``anomtune.load().score`` on the DataFrame a user's own pandas
code reads, and ``anomtune serve`` (records, split frame and CSV body) must
give the same scores for the same rows.
"""

from __future__ import annotations

import json
import urllib.request

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from conftest import running
from messy_tables import read_back, sensors, transactions, write_variants

import anomtune
from anomtune.cli import cli

TINY_SPACE = 'variants = ["ae"]\nepochs = 3\nwidth = 16\nn_layers = 1\n'
TABLES = {
    "transactions": (lambda: transactions(800, seed=5), "is_fraud", "txn_id"),
    "sensors": (lambda: sensors(400, seed=5), "fault", "sensor_id"),
}


def invoke(*args: str) -> str:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture(scope="module", params=sorted(TABLES))
def tuned(request, tmp_path_factory):
    """A table's variants and the model tuned (1 trial) on its plain CSV, exported."""
    name = request.param
    make, label, id_column = TABLES[name]
    folder = tmp_path_factory.mktemp(name)
    frame = make()
    variants = write_variants(frame, folder, name)
    space = folder / "tiny.toml"
    space.write_text(TINY_SPACE)
    run, onnx = folder / "run", folder / "model.onnx"
    invoke(
        *["tune", str(variants["plain"]["path"]), "--label", label, "--trials", "1"],
        *["--space", str(space), "--storage", str(folder / "s.journal"), "--out", str(run)],
        "--quiet",
    )
    invoke("export", str(run), "-o", str(onnx))
    return {"frame": frame, "variants": variants, "label": label, "id": id_column, "onnx": onnx}


def cli_scores(tuned, variant: str, tmp_path) -> pd.DataFrame:
    out = tmp_path / f"{variant}.csv"
    invoke("score", str(tuned["onnx"]), str(tuned["variants"][variant]["path"]), "-o", str(out))
    return pd.read_csv(out)


def test_the_model_remembers_its_roles_and_id_column(tuned):
    scorer = anomtune.load(str(tuned["onnx"]))
    spec = scorer.spec
    assert spec.id_column == tuned["id"]
    roles = {r.name: r.role for r in spec.roles}
    assert roles[tuned["label"]] == "label"
    assert tuned["id"] not in scorer.feature_names
    summary = json.loads((tuned["onnx"].parent / "run" / "summary.json").read_text())
    assert [c["name"] for c in summary["columns"]] == list(tuned["frame"].columns)


@pytest.mark.parametrize("variant", ["plain", "excel", "latin1", "parquet"])
def test_score_gives_the_same_scores_for_every_way_the_file_comes(tuned, variant, tmp_path):
    reference = cli_scores(tuned, "plain", tmp_path)
    got = cli_scores(tuned, variant, tmp_path)
    assert list(got.columns) == [tuned["id"], "score", "is_anomaly"]
    assert got[tuned["id"]].tolist() == tuned["frame"][tuned["id"]].tolist()
    np.testing.assert_array_equal(got["score"], reference["score"])
    np.testing.assert_array_equal(got["is_anomaly"], reference["is_anomaly"])


@pytest.mark.parametrize("variant", ["plain", "excel", "latin1", "parquet"])
def test_load_score_on_a_users_own_dataframe_matches_the_command(tuned, variant, tmp_path):
    reference = cli_scores(tuned, "plain", tmp_path)
    frame = read_back(tuned["variants"][variant])
    result = anomtune.load(str(tuned["onnx"])).score(frame)
    np.testing.assert_allclose(result.score, reference["score"], rtol=1e-6, atol=0)
    np.testing.assert_array_equal(result.is_anomaly.astype(int), reference["is_anomaly"])


def post(url: str, body: bytes, content_type: str) -> list[dict]:
    request = urllib.request.Request(
        url + "/invocations", data=body, headers={"Content-Type": content_type}
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())["predictions"]


def test_serve_gives_the_same_scores_as_the_command_for_every_request_form(tuned, tmp_path):
    from anomtune.serving import create_app

    reference = cli_scores(tuned, "plain", tmp_path)
    frame = read_back(tuned["variants"]["plain"]).drop(columns=[tuned["label"]])
    # JSON as a client writes it from the user's frame: NaN as null, booleans as JSON.
    records = json.loads(frame.to_json(orient="records"))
    split = json.loads(frame.to_json(orient="split", index=False))
    csv_body = tuned["variants"]["plain"]["path"].read_bytes()
    with running(create_app(str(tuned["onnx"]))) as url:
        answers = {
            "records": post(
                url, json.dumps({"dataframe_records": records}).encode(), "application/json"
            ),
            "split": post(url, json.dumps({"dataframe_split": split}).encode(), "application/json"),
            "csv": post(url, csv_body, "text/csv"),
        }
    for form, predictions in answers.items():
        scores = np.array([p["score"] for p in predictions])
        np.testing.assert_allclose(scores, reference["score"], rtol=1e-6, err_msg=form)
        flags = [int(p["is_anomaly"]) for p in predictions]
        assert flags == reference["is_anomaly"].tolist(), form


def test_serve_reads_json_booleans_and_their_text_the_same(tuned):
    from anomtune.serving import create_app

    frame = read_back(tuned["variants"]["plain"]).drop(columns=[tuned["label"]]).head(5)
    if "card_present" not in frame:
        pytest.skip("the table has no boolean column")
    records = json.loads(frame.to_json(orient="records"))
    as_text = [{**r, "card_present": str(r["card_present"])} for r in records]
    with running(create_app(str(tuned["onnx"]))) as url:
        first = post(url, json.dumps({"dataframe_records": records}).encode(), "application/json")
        second = post(url, json.dumps({"dataframe_records": as_text}).encode(), "application/json")
    assert [p["score"] for p in first] == [p["score"] for p in second]
