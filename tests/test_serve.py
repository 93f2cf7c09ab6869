"""anomtune serve: the real server (uvicorn) on a free local port, real HTTP requests."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import running

from anomtune.cli import main
from anomtune.errors import DataError
from anomtune.scoring import load_scorer
from anomtune.serving import ModelInfo, create_app

FEATURES = ["a", "b", "c", "d", "color", "size"]
TOKEN = "s3cret-token"


def mixed_rows(n: int = 12, seed: int = 7) -> pd.DataFrame:
    """Rows with the columns of test_export's mixed frame, missing values included."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "a": rng.normal(size=n),
            "b": rng.normal(size=n),
            "c": rng.normal(size=n),
            "d": rng.normal(size=n),
            "color": rng.choice(["red", "green", "blue", "purple"], size=n).astype(object),
            "size": rng.choice(["s", "m"], size=n).astype(object),
        }
    )
    frame.loc[1, "a"] = np.nan
    frame.loc[2, "color"] = None
    return frame


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Two exports of one tiny fit: v1 as trained, v2 with threshold 0 (everything anomalous)."""
    from test_export import mixed_frame

    from anomtune.data import table_from_frame
    from anomtune.export import export_model
    from anomtune.pipeline import fit_detector, prepare

    folder = tmp_path_factory.mktemp("serve")
    prepared = prepare(table_from_frame(mixed_frame(), label="y"), seed=0)
    detector = fit_detector(prepared, {"epochs": 3}, seed=0)
    val = prepared.table.features.iloc[prepared.split.val]
    first = folder / "mixed.onnx"
    export_model(prepared.model(detector), val, first)
    detector.threshold_ = 0.0
    second = folder / "mixed-v2.onnx"
    export_model(prepared.model(detector), val, second)
    return first, second


def call(url, path, body=None, *, method=None, content_type="application/json", headers=()):
    """(status, headers, parsed JSON body) of one request; 4xx/5xx do not raise."""
    data = body if body is None or isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(url + path, data=data, method=method)
    if data is not None and content_type:
        request.add_header("Content-Type", content_type)
    for key, value in dict(headers).items():
        request.add_header(key, value)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            status, head, raw = response.status, response.headers, response.read()
    except urllib.error.HTTPError as exc:
        status, head, raw = exc.code, exc.headers, exc.read()
    return status, head, json.loads(raw)


def jsonable(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.astype(object).where(frame.notna(), None)


@pytest.fixture(scope="module")
def server(models):
    with running(create_app(models[0])) as url:
        yield url


@pytest.fixture(scope="module")
def expected(models):
    rows = mixed_rows()
    return rows, load_scorer(models[0]).score(rows)


def payloads(rows: pd.DataFrame) -> dict:
    plain = jsonable(rows)
    shuffled = jsonable(rows[rows.columns[::-1]].assign(extra="ignored"))
    records = shuffled.to_dict(orient="records")
    lists = plain[FEATURES].values.tolist()
    return {
        "dataframe_split": {
            "dataframe_split": {
                "columns": list(shuffled.columns),
                "data": shuffled.values.tolist(),
            }
        },
        "dataframe_records": {"dataframe_records": records},
        "instances-records": {"instances": records},
        "instances-lists": {"instances": lists},
        "inputs-columns": {"inputs": {c: list(plain[c]) for c in FEATURES}},
        "inputs-records": {"inputs": records},
        "inputs-lists": {"inputs": lists},
    }


FORMATS = [
    "dataframe_split",
    "dataframe_records",
    "instances-records",
    "instances-lists",
    "inputs-columns",
    "inputs-records",
    "inputs-lists",
    "csv",
]


@pytest.mark.parametrize("form", FORMATS)
def test_every_input_format_scores_like_the_scorer(server, expected, form):
    rows, result = expected
    if form == "csv":
        body = rows[rows.columns[::-1]].to_csv(index=False).encode()
        status, head, answer = call(server, "/invocations", body, content_type="text/csv")
    else:
        status, head, answer = call(server, "/invocations", payloads(rows)[form])
    assert status == 200, answer
    predictions = answer["predictions"]
    assert [set(p) for p in predictions] == [{"score", "is_anomaly"}] * len(rows)
    np.testing.assert_allclose([p["score"] for p in predictions], result.score, rtol=1e-6)
    assert [p["is_anomaly"] for p in predictions] == result.is_anomaly.tolist()
    assert answer["model"]["name"] == "mixed" and answer["model"]["version"] is None
    assert head["X-Anomtune-Model"] == "mixed"
    assert head["X-Anomtune-Model-Sha256"] == answer["model"]["sha256"]
    assert head["Content-Type"] == "application/json"


def test_explain_by_query_or_params(server, expected):
    rows, result = expected
    body = payloads(rows)["dataframe_split"]
    for path, payload in [
        ("/invocations?explain=true", body),
        ("/invocations?explain=1", body),
        ("/invocations", {**body, "params": {"explain": True}}),
    ]:
        status, _, answer = call(server, path, payload)
        assert status == 200, answer
        errors = [[p["feature_errors"][c] for c in FEATURES] for p in answer["predictions"]]
        assert list(answer["predictions"][0]["feature_errors"]) == FEATURES
        np.testing.assert_allclose(errors, result.feature_errors, rtol=1e-6)
    _, _, answer = call(server, "/invocations?explain=false", body)
    assert "feature_errors" not in answer["predictions"][0]


def test_missing_values_are_imputed_unless_refused(models, server):
    row = {"a": None, "b": 1.0, "c": "0.5", "d": 0, "color": None, "size": "m"}
    status, _, answer = call(server, "/invocations", {"dataframe_records": [row]})
    assert status == 200 and np.isfinite(answer["predictions"][0]["score"])
    # A column left out of some records is missing in those records.
    status, _, _ = call(server, "/invocations", {"dataframe_records": [row, {"b": 2.0} | row]})
    assert status == 200
    with running(create_app(models[0], reject_missing=True)) as strict:
        status, _, answer = call(strict, "/invocations", {"dataframe_records": [row]})
        assert status == 400
        assert answer["message"] == (
            "column 'a' has a missing value at row 1, and this server refuses missing values"
        )
        full = {**row, "a": 0.1, "color": "red"}
        assert call(strict, "/invocations", {"dataframe_records": [full]})[0] == 200


# Bodies exactly as MLflow 3.17.2 (pandas 3.1.1, NumPy 2.4.6) writes them for the rows of
# MLFLOW_ROWS: a missing value is a bare NaN token, which MLflow's own server reads.
MLFLOW_BODIES = {
    # mlflow.pyfunc.scoring_server.client.ScoringServerClient.invoke(frame)
    "client-invoke-dataframe": (
        b'{"dataframe_split": {"index": [0, 1], "columns": ["a", "b", "c", "d", "color", "size"],'
        b' "data": [[0.1, 0.2, 1.0, 0.0, "red", "s"], [NaN, 0.3, 2.0, 1.0, NaN, NaN]]}}'
    ),
    # mlflow.models.convert_input_example_to_serving_input(frame)
    "serving-input-example": (
        b'{\n  "dataframe_split": {\n    "columns": [\n      "a",\n      "b",\n      "c",\n'
        b'      "d",\n      "color",\n      "size"\n    ],\n    "data": [\n      [\n'
        b'        0.1,\n        0.2,\n        1.0,\n        0.0,\n        "red",\n'
        b'        "s"\n      ],\n      [\n        NaN,\n        0.3,\n        2.0,\n'
        b"        1.0,\n        NaN,\n        NaN\n      ]\n    ]\n  }\n}"
    ),
    # MLflow's recipe for records: json.dumps({"dataframe_records": frame.to_dict("records")})
    "dataframe-records": (
        b'{"dataframe_records": [{"a": 0.1, "b": 0.2, "c": 1.0, "d": 0.0, "color": "red", '
        b'"size": "s"}, {"a": NaN, "b": 0.3, "c": 2.0, "d": 1.0, "color": NaN, "size": NaN}]}'
    ),
    # ScoringServerClient.invoke(frame.to_numpy()): NumPy rows as inputs
    "client-invoke-numpy": (
        b'{"inputs": [[0.1, 0.2, 1.0, 0.0, "red", "s"], [NaN, 0.3, 2.0, 1.0, NaN, NaN]]}'
    ),
    # convert_input_example_to_serving_input({column: frame[column].to_numpy()})
    "serving-input-columns": (
        b'{\n  "inputs": {\n    "a": [\n      0.1,\n      null\n    ],\n    "b": [\n'
        b'      0.2,\n      0.3\n    ],\n    "c": [\n      1.0,\n      2.0\n    ],\n'
        b'    "d": [\n      0.0,\n      1.0\n    ],\n    "color": [\n      "red",\n'
        b'      NaN\n    ],\n    "size": [\n      "s",\n      NaN\n    ]\n  }\n}'
    ),
}
MLFLOW_ROWS = pd.DataFrame(
    {
        "a": [0.1, np.nan],
        "b": [0.2, 0.3],
        "c": [1.0, 2.0],
        "d": [0.0, 1.0],
        "color": ["red", None],
        "size": ["s", None],
    }
)


@pytest.mark.parametrize("form", list(MLFLOW_BODIES))
def test_mlflow_bodies_with_bare_nan_are_scored_as_missing_values(server, models, form):
    status, _, answer = call(server, "/invocations", MLFLOW_BODIES[form])
    assert status == 200, answer
    result = load_scorer(models[0]).score(MLFLOW_ROWS)
    scores = [p["score"] for p in answer["predictions"]]
    np.testing.assert_allclose(scores, result.score, rtol=1e-6)
    assert [p["is_anomaly"] for p in answer["predictions"]] == result.is_anomaly.tolist()


def test_a_bare_nan_is_refused_as_missing_when_missing_values_are(models):
    with running(create_app(models[0], reject_missing=True)) as strict:
        status, _, answer = call(strict, "/invocations", MLFLOW_BODIES["client-invoke-dataframe"])
        assert status == 400
        assert answer["message"] == (
            "column 'a' has a missing value at row 2, and this server refuses missing values"
        )


def test_params_other_than_explain_are_ignored_as_mlflow_does(server, expected):
    rows, result = expected
    body = payloads(rows)["dataframe_split"]
    # ScoringServerClient.invoke(frame, params={"explain": True, "temperature": 0.5})
    mlflow_body = MLFLOW_BODIES["client-invoke-dataframe"][:-1] + (
        b', "params": {"explain": true, "temperature": 0.5}}'
    )
    status, _, answer = call(server, "/invocations", mlflow_body)
    assert status == 200, answer
    assert list(answer["predictions"][0]["feature_errors"]) == FEATURES
    status, _, answer = call(server, "/invocations", {**body, "params": {"limit": 3}})
    assert status == 200, answer
    assert "feature_errors" not in answer["predictions"][0]
    np.testing.assert_allclose([p["score"] for p in answer["predictions"]], result.score, rtol=1e-6)


def split(data, columns=FEATURES):
    return {"dataframe_split": {"columns": columns, "data": data}}


ROW = [0.1, 0.2, 0.3, 0.4, "red", "s"]
BAD_REQUESTS = [
    ("malformed-json", b'{"dataframe_split": ', 400, "malformed JSON at line 1"),
    ("empty-body", b"", 400, "the body is empty"),
    ("not-utf8", b'{"inputs": ["\xff"]}', 400, "not UTF-8"),
    ("infinity-token", b'{"inputs": [[Infinity, 1, 1, 1, "a", "s"]]}', 400, "Infinity"),
    ("minus-infinity", b'{"inputs": [[1, -Infinity, 1, 1, "a", "s"]]}', 400, "-Infinity"),
    ("not-an-object", [ROW], 400, "must be a JSON object"),
    ("no-format-key", {"rows": [ROW]}, 400, "unknown key 'rows'"),
    ("two-format-keys", {"inputs": [ROW], "instances": [ROW]}, 400, "exactly one of"),
    ("missing-column", split([ROW[:5]], FEATURES[:5]), 400, "missing feature column 'size'"),
    ("wrong-columns", {"dataframe_records": [{"x": 1}]}, 400, "missing feature column 'a'"),
    ("short-row", split([ROW[:4]]), 400, "row 1 of dataframe_split holds 4 values"),
    ("ragged-lists", {"instances": [ROW, ROW[:3]]}, 400, "row 2 of instances holds 3 values"),
    ("duplicate-column", split([[*ROW, 1]], [*FEATURES, "a"]), 400, "names column 'a' twice"),
    (
        "text-in-number",
        split([["abc", *ROW[1:]]]),
        400,
        "column 'a' is numeric but has the non-numeric value 'abc' at row 1",
    ),
    ("list-in-number", split([ROW, [[1], *ROW[1:]]]), 400, "non-numeric value a list at row 2"),
    ("object-in-category", split([[*ROW[:4], {"x": 1}, "s"]]), 400, "categorical values"),
    ("infinite-string", split([["inf", *ROW[1:]]]), 400, "infinite value at row 1"),
    (
        "huge-integer",
        split([ROW, [10**400, *ROW[1:]]]),
        400,
        "too large for float32 (1.8e+308) at row 2",
    ),
    ("float32-overflow", split([[*ROW[:3], 1e39, *ROW[4:]]]), 400, "column 'd' has a value too"),
    ("json-overflow", b'{"inputs": [[1e999, 1, 1, 1, "a", "s"]]}', 400, "infinite value"),
    ("too-many-digits", b'{"inputs": [[' + b"9" * 5000 + b"]]}", 400, "malformed JSON"),
    ("empty-batch", split([]), 400, "no rows"),
    ("empty-records", {"dataframe_records": []}, 400, "no rows"),
    ("empty-columns", {"inputs": {}}, 400, "no rows"),
    ("uneven-columns", {"inputs": {"a": [1, 2], "b": [1]}}, 400, "same length"),
    ("scalar-instances", {"instances": [1, 2]}, 400, "must be a list of rows"),
    ("params-not-object", {"inputs": [ROW], "params": [1]}, 400, "params must be an object"),
    ("bad-explain", {"inputs": [ROW], "params": {"explain": "yes"}}, 400, "true or false"),
    ("mixed-rows", {"instances": [{"a": 1}, ROW]}, 400, "row 2 is a list"),
    (
        "split-extra-key",
        {"dataframe_split": {**split([ROW])["dataframe_split"], "x": 1}},
        400,
        "'x'",
    ),
    ("split-no-data", {"dataframe_split": {"columns": FEATURES}}, 400, "needs data"),
    ("records-not-list", {"dataframe_records": {"a": 1}}, 400, "a list of objects"),
    ("bad-split", {"dataframe_split": [ROW]}, 400, "dataframe_split must be an object"),
    ("csv-bad-number", ("a,b,c,d,color,size\nx,1,1,1,red,s\n", "text/csv"), 400, "column 'a'"),
    ("csv-inf", ("a,b,c,d,color,size\ninf,1,1,1,red,s\n", "text/csv"), 400, "infinite"),
    ("csv-header-only", ("a,b,c,d,color,size\n", "text/csv"), 400, "no rows"),
    ("csv-missing-column", ("a,b\n1,2\n", "text/csv"), 400, "missing feature column 'c'"),
    ("csv-ragged", ("a,b,c,d,color,size\n1,2,3,4,red,s,9,9\n", "text/csv"), 400, "CSV"),
    ("form-content-type", (b"a=1", "application/x-www-form-urlencoded"), 415, "not supported"),
]


@pytest.mark.parametrize(
    ("body", "status", "fragment"), [b[1:] for b in BAD_REQUESTS], ids=[b[0] for b in BAD_REQUESTS]
)
def test_bad_requests_get_a_clear_4xx(server, models, body, status, fragment):
    content_type = "application/json"
    if isinstance(body, tuple):
        body, content_type = body
        body = body.encode() if isinstance(body, str) else body
    got, head, answer = call(server, "/invocations", body, content_type=content_type)
    assert got == status, answer
    assert set(answer) == {"error_code", "message"}
    assert fragment in answer["message"]
    assert "Traceback" not in answer["message"] and str(models[0].parent) not in answer["message"]
    assert head["Content-Type"] == "application/json"


def test_other_bad_requests(server):
    status, _, answer = call(server, "/invocations?explain=perhaps", split([ROW]))
    assert status == 400 and "explain" in answer["message"]
    status, _, answer = call(server, "/nowhere")
    assert (status, answer["error_code"]) == (404, "NOT_FOUND")
    status, _, answer = call(server, "/invocations")
    assert (status, answer["error_code"]) == (405, "METHOD_NOT_ALLOWED")
    # Deep nesting is refused by the parser, not by a crash.
    deep = b'{"inputs": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    status, _, answer = call(server, "/invocations", deep)
    assert status == 400, answer


def test_body_size_and_row_limits(models):
    app = create_app(models[0], max_body_bytes=2_000, max_rows=5)
    with running(app) as url:
        status, _, answer = call(url, "/invocations", split([ROW] * 5))
        assert status == 200 and len(answer["predictions"]) == 5
        status, _, answer = call(url, "/invocations", split([ROW] * 6))
        assert (status, answer["error_code"]) == (413, "TOO_MANY_ROWS")
        assert "at most 5 per request" in answer["message"]
        csv = "a,b,c,d,color,size\n" + "1,2,3,4,red,s\n" * 6
        status, _, answer = call(url, "/invocations", csv.encode(), content_type="text/csv")
        assert status == 413
        status, _, answer = call(url, "/invocations", split([ROW] * 100))
        assert (status, answer["error_code"]) == (413, "BODY_TOO_LARGE")
        assert "2000 bytes" in answer["message"]


class RecordedSession:
    """A served model's onnxruntime session, recording which thread runs each call.

    With ``meet=2`` the first two calls wait for each other (a barrier) before they
    run: a request then succeeds only if two slices are in flight at the same time.
    """

    def __init__(self, session, meet: int = 0):
        self.session = session
        self.threads: list[int] = []
        self.lock = threading.Lock()
        self.meet = threading.Barrier(meet, timeout=30) if meet else None

    def run(self, outputs, feeds):
        with self.lock:
            self.threads.append(threading.get_ident())
            k = len(self.threads)
        if self.meet is not None and k <= self.meet.parties:
            self.meet.wait()
        return self.session.run(outputs, feeds)


@pytest.mark.parametrize("threads", [1, 2])
def test_threads_score_the_slices_of_a_large_request_side_by_side(models, threads):
    app = create_app(models[0], threads=threads, max_rows=20_000)
    scorer = app.state.holder.current.scorer
    n = 4 * scorer.slice_rows  # four slices: enough for the scorer to use its threads
    rows = mixed_rows(n, seed=3)
    recorded = RecordedSession(scorer.session, meet=2 if threads == 2 else 0)
    scorer.session = recorded
    body = json.dumps(split(jsonable(rows).values.tolist(), list(rows.columns))).encode()
    with running(app) as url:
        request = urllib.request.Request(
            url + "/invocations", body, {"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            answer = json.loads(response.read())
    assert len(recorded.threads) == 4  # one session call per slice
    # threads=2: the barrier was passed, so two slices ran at once, on two threads.
    assert len(set(recorded.threads)) == threads
    result = load_scorer(models[0]).score(rows)
    np.testing.assert_allclose([p["score"] for p in answer["predictions"]], result.score, rtol=1e-6)
    assert [p["is_anomaly"] for p in answer["predictions"]] == result.is_anomaly.tolist()


def test_body_limit_holds_without_content_length(models):
    app = create_app(models[0], max_body_bytes=2_000)
    with running(app) as url:
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
            head = (
                "POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                "Transfer-Encoding: chunked\r\n\r\n"
            )
            chunk = b" " * 1500
            conn.sendall(head.encode() + b"%x\r\n%s\r\n" % (len(chunk), chunk) * 2 + b"0\r\n\r\n")
            reply = b""
            while b"BODY_TOO_LARGE" not in reply and (chunk := conn.recv(65536)):
                reply += chunk
            reply = reply.decode()
        assert reply.startswith("HTTP/1.1 413") and "BODY_TOO_LARGE" in reply


def test_token_guards_scoring_but_not_health(models):
    with running(create_app(models[0], token=TOKEN)) as url:
        for path in ("/ping", "/health", "/version", "/openapi.json"):
            assert call(url, path)[0] == 200
        status, head, answer = call(url, "/invocations", split([ROW]))
        assert (status, answer["error_code"]) == (401, "UNAUTHORIZED")
        assert head["WWW-Authenticate"] == "Bearer"
        for auth in (f"Bearer {TOKEN}x", f"Basic {TOKEN}", "Bearer", TOKEN):
            assert (
                call(url, "/invocations", split([ROW]), headers={"Authorization": auth})[0] == 401
            )
        good = {"Authorization": f"Bearer {TOKEN}"}
        assert call(url, "/invocations", split([ROW]), headers=good)[0] == 200
        assert call(url, "/metadata")[0] == 401
        assert call(url, "/metadata", headers=good)[0] == 200
        assert call(url, "/reload", b"", method="POST")[0] == 401
        # The token is checked before the body is read.
        status, _, _ = call(url, "/invocations", b"not json")
        assert status == 401


def test_metadata_version_and_health(server, models):
    scorer = load_scorer(models[0])
    status, _, meta = call(server, "/metadata")
    assert status == 200
    assert meta["name"] == "mixed" and meta["version"] is None and meta["ref"] == "mixed.onnx"
    assert meta["threshold"] == pytest.approx(scorer.threshold)
    assert meta["feature_names"] == FEATURES
    assert meta["inputs"] == {"numeric": ["a", "b", "c", "d"], "categorical": ["color", "size"]}
    kinds = {c["name"]: c["kind"] for c in meta["columns"]}
    assert kinds["a"] == "numeric" and kinds["color"] == "categorical"
    assert meta["params"]["epochs"] == 3 and meta["threshold_rule"]
    assert str(models[0].parent) not in json.dumps(meta)
    status, _, version = call(server, "/version")
    assert status == 200 and version["model"]["sha256"] == meta["sha256"]
    assert call(server, "/ping")[2] == {"status": "ok"}
    assert call(server, "/health")[2] == {"status": "ok"}


def test_openapi_describes_the_api(server):
    status, _, doc = call(server, "/openapi.json")
    assert status == 200
    assert {"/invocations", "/ping", "/health", "/version", "/metadata", "/reload"} <= set(
        doc["paths"]
    )
    post = doc["paths"]["/invocations"]["post"]
    content = post["requestBody"]["content"]
    assert set(content) == {"application/json", "text/csv"}
    forms = [f["title"] for f in content["application/json"]["schema"]["oneOf"]]
    assert forms == ["dataframe_split", "dataframe_records", "instances", "inputs"]
    assert {"200", "400", "401", "413", "415"} <= set(post["responses"])
    assert [p["name"] for p in post["parameters"]] == ["explain"]
    assert "HTTPBearer" in doc["components"]["securitySchemes"]
    assert "Prediction" in doc["components"]["schemas"]


def test_openapi_names_the_model_columns(server, models):
    status, _, doc = call(server, "/openapi.json")
    assert status == 200
    body = doc["paths"]["/invocations"]["post"]["requestBody"]
    forms = {f["title"]: f for f in body["content"]["application/json"]["schema"]["oneOf"]}
    record = forms["dataframe_records"]["properties"]["dataframe_records"]["items"]
    assert record["required"] == FEATURES
    assert record["properties"]["a"]["type"] == ["number", "null"]
    assert record["properties"]["color"]["type"] == ["string", "null"]
    assert set(record["properties"]["color"]["examples"]) <= {"red", "green", "blue"}
    rows = forms["instances"]["properties"]["instances"]["anyOf"][1]
    assert rows["maxItems"] == 10_000 and rows["items"]["minItems"] == len(FEATURES)
    # The documented example is a request the served model scores.
    example = body["content"]["application/json"]["example"]
    assert example["dataframe_split"]["columns"] == FEATURES
    status, _, answer = call(server, "/invocations", example)
    assert status == 200 and len(answer["predictions"]) == 1
    csv = body["content"]["text/csv"]["example"].encode()
    assert call(server, "/invocations", csv, content_type="text/csv")[0] == 200


class Promotions:
    """A resolver standing in for the registry: ``name@champion`` and what it points at."""

    def __init__(self, models):
        self.files = {1: models[0], 2: models[1]}
        self.version = 1
        self.broken = False

    def __call__(self):
        if self.broken:
            raise DataError("registry unavailable")
        return self.files[self.version].read_bytes(), {"name": "mixed", "version": self.version}


def test_reload_picks_up_a_promotion_live(models):
    champion = Promotions(models)
    with running(create_app(champion, token=TOKEN)) as url:
        auth = {"Authorization": f"Bearer {TOKEN}"}
        body = split([ROW, ROW])
        status, head, answer = call(url, "/invocations", body, headers=auth)
        assert head["X-Anomtune-Model-Version"] == "1" and answer["model"]["version"] == 1
        status, _, answer = call(url, "/reload", b"", method="POST", headers=auth)
        assert status == 200 and answer["changed"] is False
        champion.version = 2
        status, _, answer = call(url, "/reload", b"", method="POST", headers=auth)
        assert status == 200 and answer["changed"] is True
        assert (answer["previous"]["version"], answer["model"]["version"]) == (1, 2)
        status, head, answer = call(url, "/invocations", body, headers=auth)
        assert head["X-Anomtune-Model-Version"] == "2" and answer["model"]["version"] == 2
        assert all(p["is_anomaly"] for p in answer["predictions"])  # v2's threshold is 0
        assert call(url, "/metadata", headers=auth)[2]["version"] == 2
        # A failed reload keeps the old model serving.
        champion.broken = True
        status, _, answer = call(url, "/reload", b"", method="POST", headers=auth)
        assert status == 503 and answer["message"] == (
            "still serving the old model: registry unavailable"
        )
        assert call(url, "/invocations", body, headers=auth)[1]["X-Anomtune-Model-Version"] == "2"


def test_a_failed_reload_names_no_server_location(models, tmp_path):
    class Failing(Promotions):
        def __call__(self):
            if self.broken:
                raise DataError(
                    f"mixed@champion: no registry at {tmp_path}/reg.db and none at "
                    "postgresql+psycopg://anomtune:pw@db.internal/models"
                )
            return super().__call__()

    champion = Failing(models)
    with running(create_app(champion)) as url:
        champion.broken = True
        status, _, answer = call(url, "/reload", b"", method="POST")
        assert status == 503
        assert answer["message"] == (
            "still serving the old model: mixed@champion: no registry at reg.db and none at "
            "postgresql+psycopg://..."
        )
        assert call(url, "/invocations", split([ROW]))[0] == 200


def test_reload_on_an_interval_and_under_load(models):
    champion = Promotions(models)
    with running(create_app(champion, reload_interval=0.2)) as url:
        seen = []
        errors = []

        def hammer():
            for _ in range(40):
                status, head, answer = call(url, "/invocations", split([ROW] * 3))
                if status != 200:
                    errors.append(answer)
                    continue
                version = int(head["X-Anomtune-Model-Version"])
                flags = [p["is_anomaly"] for p in answer["predictions"]]
                # Each answer comes wholly from the version it names.
                seen.append((version, answer["model"]["version"], all(flags)))

        workers = [threading.Thread(target=hammer) for _ in range(3)]
        for worker in workers:
            worker.start()
        time.sleep(0.1)
        champion.version = 2
        for worker in workers:
            worker.join()
        deadline = time.monotonic() + 5
        while call(url, "/version")[2]["model"]["version"] != 2:
            assert time.monotonic() < deadline, "the promotion was not picked up"
            time.sleep(0.05)
        assert not errors
        assert all(v == body_v for v, body_v, _ in seen)
        assert all(everything for v, _, everything in seen if v == 2)


def test_serving_path_imports_no_torch_optuna_or_sklearn(models):
    script = textwrap.dedent(
        f"""
        import json, socket, sys, threading, time, urllib.request
        import uvicorn
        import anomtune.cli
        from anomtune.serving import create_app

        app = create_app({str(models[0])!r})
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.bind(("127.0.0.1", 0))
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
        threading.Thread(target=server.run, kwargs={{"sockets": [sock]}}, daemon=True).start()
        while not server.started:
            time.sleep(0.01)
        body = json.dumps({{"inputs": {{"a": [1], "b": [2], "c": [3], "d": [4],
                                      "color": ["red"], "size": ["s"]}}}}).encode()
        url = "http://127.0.0.1:%d/invocations" % sock.getsockname()[1]
        request = urllib.request.Request(url, body, {{"Content-Type": "application/json"}})
        answer = json.loads(urllib.request.urlopen(request).read())
        assert len(answer["predictions"]) == 1
        server.should_exit = True
        heavy = sorted(m for m in ("torch", "optuna", "sklearn") if m in sys.modules)
        print(json.dumps(heavy))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []


def test_cli_serves_a_model_file(models, tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    exe = Path(sys.executable).with_name("anomtune")
    env = {**os.environ, "ANOMTUNE_TOKEN": TOKEN}
    process = subprocess.Popen(
        [str(exe), "serve", str(models[0]), "--port", str(port), "--max-rows", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, process.stderr.read()
            with contextlib.suppress(OSError):
                if call(url, "/ping")[0] == 200:
                    break
            assert time.monotonic() < deadline, "anomtune serve did not start"
            time.sleep(0.1)
        auth = {"Authorization": f"Bearer {TOKEN}"}
        assert call(url, "/invocations", split([ROW]))[0] == 401
        status, _, answer = call(url, "/invocations", split([ROW]), headers=auth)
        assert status == 200 and answer["model"]["name"] == "mixed"
        assert call(url, "/invocations", split([ROW] * 3), headers=auth)[0] == 413
    finally:
        process.terminate()
        _, err = process.communicate(timeout=15)
    assert f"serving mixed on http://127.0.0.1:{port}" in err


def test_cli_errors_are_one_line(tmp_path, capsys):
    for args, fragment in [
        ([str(tmp_path / "absent.onnx")], "absent.onnx: no such model file"),
        (["champion@best"], "registry reference"),
        ([str(tmp_path / "absent.onnx"), "--threads", "0"], "--threads"),
    ]:
        with pytest.raises(SystemExit) as exc:
            main(["serve", *args])
        _, err = capsys.readouterr()
        assert exc.value.code == 2
        assert err.startswith("anomtune: error:") and fragment in err
        assert len(err.strip().splitlines()) == 1


def test_create_app_checks_its_arguments(models):
    from anomtune.errors import ConfigError

    for kwargs in ({"threads": 0}, {"max_rows": 0}, {"max_body_bytes": 0}, {"reload_interval": -1}):
        with pytest.raises(ConfigError):
            create_app(models[0], **kwargs)
    with pytest.raises(DataError, match="not a loadable ONNX model"):
        create_app(lambda: (b"not onnx", ModelInfo("x", 1, "x")))


def test_an_alias_promotion_in_a_real_registry_is_served_live(models, tmp_path):
    from anomtune.registry import Registry, register_onnx

    where, files = str(tmp_path / "reg.db"), str(tmp_path / "model-files")
    with Registry.open(where, files=files, create=True) as reg:
        for path in models:
            register_onnx(reg, path, name="mixed")
        reg.set_alias("mixed", "champion", 1, reason="first")
    app = create_app("mixed@champion", registry=where, registry_files=files, reload_interval=0.2)
    with running(app) as url:
        status, head, answer = call(url, "/invocations", split([ROW]))
        assert status == 200 and head["X-Anomtune-Model-Version"] == "1"
        assert not answer["predictions"][0]["is_anomaly"]
        with Registry.open(where, files=files) as reg:
            reg.set_alias("mixed", "champion", 2, reason="better")
        # No restart and no POST /reload: the interval picks the promotion up.
        deadline = time.monotonic() + 10
        while head["X-Anomtune-Model-Version"] != "2":
            assert time.monotonic() < deadline, "the promotion was not picked up"
            time.sleep(0.05)
            status, head, answer = call(url, "/invocations", split([ROW]))
        assert status == 200 and answer["model"]["version"] == 2
        assert answer["predictions"][0]["is_anomaly"]  # v2's threshold is 0
        assert call(url, "/metadata")[2]["ref"] == "mixed@champion"
        with Registry.open(where, files=files) as reg:
            reg.rollback("mixed", "champion", reason="back")
        status, _, answer = call(url, "/reload", b"", method="POST")
        # The 0.2 s reload loop may have swapped version 1 back in first ("changed" is
        # then false); either way POST /reload answers with the rolled-back version.
        assert status == 200 and answer["model"]["version"] == 1
        assert call(url, "/invocations", split([ROW]))[1]["X-Anomtune-Model-Version"] == "1"


def test_concurrent_clients_get_the_scorers_answers(server, models):
    """500 requests from 8 threads on keep-alive connections: every answer is 200 and
    holds exactly the scores of direct Scorer scoring of its rows."""
    import http.client

    rows = mixed_rows(64, seed=11)
    result = load_scorer(models[0]).score(rows)
    records = jsonable(rows).to_dict(orient="records")
    port = int(server.rsplit(":", 1)[1])
    failures, answered = [], []

    def client(k: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        picks = np.random.default_rng(k).integers(0, len(rows), size=(63, 8))
        try:
            for i, pick in enumerate(picks[: 62 + (k < 4)]):
                take = pick[: 1 + i % 8].tolist()  # 1 to 8 rows
                body = json.dumps({"dataframe_records": [records[j] for j in take]})
                conn.request("POST", "/invocations", body, {"Content-Type": "application/json"})
                response = conn.getresponse()
                answer = json.loads(response.read())
                answered.append(response.status)
                if response.status != 200:
                    failures.append((response.status, answer))
                    continue
                got = answer["predictions"]
                scores = [p["score"] for p in got]
                if (
                    not np.allclose(scores, result.score[take], rtol=1e-6)
                    or [p["is_anomaly"] for p in got] != result.is_anomaly[take].tolist()
                ):
                    failures.append(("wrong answer", take, got))
        except Exception as exc:  # a dropped connection is a failure too
            failures.append(("error", repr(exc)))
        finally:
            conn.close()

    threads = [threading.Thread(target=client, args=(k,)) for k in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not failures, failures[:3]
    assert len(answered) == 500


def test_metadata_reports_the_flag_rate_since_loading(models, tmp_path, caplog):
    from test_export import mixed_frame

    from anomtune.data import table_from_frame
    from anomtune.export import export_model
    from anomtune.pipeline import fit_detector, prepare

    prepared = prepare(table_from_frame(mixed_frame(), label="y"), seed=0)
    detector = fit_detector(prepared, {"epochs": 3}, seed=0)
    val = prepared.table.features.iloc[prepared.split.val]
    # A model that flags every row, though validation flagged 10%: a broken column.
    detector.threshold_ = -1.0
    path = tmp_path / "drifting.onnx"
    export_model(
        prepared.model(detector), val, path, metadata={"metrics": {"val": {"flagged": 0.1}}}
    )
    rows = jsonable(mixed_rows(60))
    with running(create_app(path)) as url:
        status, _, meta = call(url, "/metadata")
        assert status == 200
        assert meta["flag_rate"] == {
            "rows": 0,
            "flagged": 0,
            "share": None,
            "validation_share": 0.1,
            "warning": None,
        }
        for _ in range(2):
            body = {"dataframe_records": rows.to_dict(orient="records")}
            assert call(url, "/invocations", body)[0] == 200
        rate = call(url, "/metadata")[2]["flag_rate"]
    assert rate["rows"] == 120 and rate["flagged"] == 120 and rate["share"] == 1.0
    assert "100.0% of the rows were flagged, against 10.0%" in rate["warning"]
    assert "may have drifted" in caplog.text
