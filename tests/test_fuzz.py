"""Schema-driven fuzzing of the real server: no request that the OpenAPI document allows,
or that breaks it, makes the server answer 5xx.

schemathesis reads ``/openapi.json`` from a real uvicorn server on 127.0.0.1 and, for
every operation, Hypothesis sends a bounded, reproducible set of generated requests
(``derandomize``): bodies that follow the schema (which names the served model's columns,
so they reach the scoring code with odd values) and bodies that break it. Responses must
be below 500, match the documented response schemas and content types, and an error's
JSON must hold no traceback or path.
"""

from __future__ import annotations

import pytest

schemathesis = pytest.importorskip("schemathesis")

from hypothesis import HealthCheck, given, settings  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    response_schema_conformance,
)

TOKEN = "fuzz-token"
OPERATIONS = [
    "GET /ping",
    "GET /health",
    "GET /version",
    "GET /metadata",
    "POST /invocations",
    "POST /reload",
]
EXAMPLES = {"POST /invocations": 50}  # per generation mode; 15 for the others
CHECKS = [not_a_server_error, response_schema_conformance, content_type_conformance]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(schema, model folder) of a real server on a free loopback port."""
    from test_export import mixed_frame
    from test_serve import running

    from anomtune.data import table_from_frame
    from anomtune.export import export_model
    from anomtune.pipeline import fit_detector, prepare
    from anomtune.serving import create_app

    prepared = prepare(table_from_frame(mixed_frame(), label="y"), seed=0)
    detector = fit_detector(prepared, {"epochs": 2}, seed=0)
    val = prepared.table.features.iloc[prepared.split.val]
    folder = tmp_path_factory.mktemp("fuzz")
    export_model(prepared.model(detector), val, folder / "mixed.onnx")
    # Small limits, so that generated bodies reach them too.
    app = create_app(folder / "mixed.onnx", token=TOKEN, max_rows=50, max_body_bytes=32_768)
    with running(app) as url:
        yield schemathesis.openapi.from_url(f"{url}/openapi.json"), folder


def test_every_operation_is_fuzzed(served):
    schema, _ = served
    found = sorted(
        f"{op.method.upper()} {op.path}" for op in (r.ok() for r in schema.get_all_operations())
    )
    assert found == sorted(OPERATIONS)


# Only /invocations takes input (a body and a query parameter) that can break the schema.
CASES = [(op, GenerationMode.POSITIVE) for op in OPERATIONS] + [
    ("POST /invocations", GenerationMode.NEGATIVE)
]


@pytest.mark.parametrize(("operation", "mode"), CASES, ids=[f"{o}-{m.value}" for o, m in CASES])
def test_no_request_gets_a_server_error(served, operation, mode):
    schema, folder = served
    method, path = operation.split()
    strategy = schema[path][method].as_strategy(generation_mode=mode)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    seen = {"statuses": set()}

    @settings(
        max_examples=EXAMPLES.get(operation, 15),
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy)
    def fuzz(case):
        # The token goes with every case, so requests get past the guard to the
        # handlers (the 401 path is covered in test_serve).
        response = case.call(headers=auth, timeout=10)
        seen["statuses"].add(response.status_code)
        assert response.status_code < 500, response.text
        case.validate_response(response, checks=CHECKS, headers=auth)
        if response.status_code >= 400:
            body = response.json()
            assert set(body) == {"error_code", "message"}
            assert "Traceback" not in body["message"]
            assert str(folder) not in body["message"] and ".py" not in body["message"]

    fuzz()
    if operation == "POST /invocations" and mode is GenerationMode.POSITIVE:
        # Bodies that follow the schema get scored, not only refused.
        assert 200 in seen["statuses"], seen
