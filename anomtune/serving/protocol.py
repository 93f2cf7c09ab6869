"""MLflow's scoring protocol, declared once: the request forms of POST /invocations, the answers.

The JSON body holds exactly one of four forms, plus optional ``params``:

``dataframe_split``
    ``{"columns": [...], "data": [[...], ...]}`` (pandas' "split" orientation;
    an ``index`` is accepted and ignored).
``dataframe_records``
    ``[{column: value}, ...]``, one object per row.
``instances``
    rows: objects keyed by column, or lists in the model's column order.
``inputs``
    the same rows, or an object of columns ``{column: [values]}``.

The forms are pydantic models, generic in how a row is typed. The server
validates bodies against them with lax rows (:func:`request_forms`: any
values, checked later by the conversion to graph inputs) and the OpenAPI
document is generated from the same models with rows typed by the served
model's columns (:func:`request_body`). ``params`` takes ``explain``
(``true`` adds each column's squared reconstruction error); other parameters are
ignored, as MLflow's server ignores parameters a model does not declare, so
that an MLflow client sending its own parameters is still served.

JSON has no NaN, but MLflow's clients write a bare ``NaN`` token for a
missing value (``ScoringServerClient.invoke`` on any DataFrame with one), and
MLflow's server reads it: so does this one, as a missing value. ``Infinity``
is refused with a clear message. A ``text/csv`` body (with a header line) is
read with pandas.
"""

from __future__ import annotations

import io
import json
from typing import Annotated, Any, Generic, TypeVar

import numpy as np
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    InstanceOf,
    StrictBool,
    StrictStr,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)
from pydantic.json_schema import GenerateJsonSchema

from anomtune.serving.feeds import show_value

__all__ = [
    "EXPLAIN_PARAMETER",
    "FORMATS",
    "ErrorOut",
    "InvocationsOut",
    "MetadataOut",
    "ReloadOut",
    "RequestError",
    "StatusOut",
    "VersionOut",
    "columns_from_csv",
    "columns_from_json",
    "parse_json",
    "query_flag",
    "request_body",
    "request_forms",
]

FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")
# The largest float32: numbers beyond it are refused (400).
FLOAT32_MAX = float(np.finfo(np.float32).max)


class RequestError(Exception):
    """A request the server refuses: HTTP status, error code and a message for the client."""

    def __init__(self, status: int, code: str, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers


def bad_request(message: str) -> RequestError:
    return RequestError(400, "BAD_REQUEST", message)


def malformed(message: str) -> RequestError:
    return RequestError(400, "MALFORMED_REQUEST", message)


def too_many_rows(n: int, max_rows: int) -> RequestError:
    return RequestError(
        413,
        "TOO_MANY_ROWS",
        f"the request holds {n} rows; this server takes at most {max_rows} per request",
    )


# --------------------------------------------------------------------------- the forms

Rows = TypeVar("Rows")
"""A list of rows given as lists (``dataframe_split``'s ``data``)."""
Records = TypeVar("Records")
"""A list of rows given as objects keyed by column."""
RowLists = TypeVar("RowLists")
"""A list of rows given as lists in the model's column order."""
Columns = TypeVar("Columns")
"""An object of columns ``{column: [values]}``."""


class Params(BaseModel):
    """Options of one request. Other parameters are ignored, as MLflow's server does."""

    model_config = ConfigDict(extra="ignore", title="params")

    explain: StrictBool = Field(
        False,
        description=(
            "true or false: add each column's squared reconstruction error to every prediction"
        ),
    )


class DataframeSplit(BaseModel, Generic[Rows]):
    model_config = ConfigDict(extra="forbid", title="dataframe_split body")

    columns: list[StrictStr] = Field(
        description="a list of column names", json_schema_extra={"uniqueItems": True}
    )
    data: Rows = Field(description="a list of rows, each a list of values")
    index: list[Any] | None = Field(None, description="a list (ignored)")

    @field_validator("columns")
    @classmethod
    def _unique(cls, names: list[str]) -> list[str]:
        if len(set(names)) != len(names):
            dup = next(c for c in names if names.count(c) > 1)
            raise ValueError(f"dataframe_split names column {dup!r} twice")
        return names

    @model_validator(mode="after")
    def _rows_match_columns(self):
        width = len(self.columns)
        for i, row in enumerate(self.data):
            if len(row) != width:
                raise ValueError(
                    f"row {i + 1} of dataframe_split holds {len(row)} values; "
                    f"there are {width} columns"
                )
        return self


_PARAMS = Field(None, description='an object, such as {"explain": true}')


class SplitForm(BaseModel, Generic[Rows]):
    model_config = ConfigDict(
        extra="forbid",
        title="dataframe_split",
        json_schema_extra={"description": "pandas 'split' orientation."},
    )

    dataframe_split: DataframeSplit[Rows] = Field(
        description='an object {"columns": [...], "data": [[...], ...]}'
    )
    params: Params | None = _PARAMS


class RecordsForm(BaseModel, Generic[Records]):
    model_config = ConfigDict(
        extra="forbid",
        title="dataframe_records",
        json_schema_extra={"description": "One object per row."},
    )

    dataframe_records: Records = Field(description="a list of objects, one per row")
    params: Params | None = _PARAMS


class InstancesForm(BaseModel, Generic[Records, RowLists]):
    model_config = ConfigDict(
        extra="forbid",
        title="instances",
        json_schema_extra={"description": "Rows: objects, or lists in the model's column order."},
    )

    instances: Records | RowLists = Field(
        description="a list of rows: objects keyed by column, or lists in the model's column order"
    )
    params: Params | None = _PARAMS


class InputsForm(BaseModel, Generic[Columns, Records, RowLists]):
    model_config = ConfigDict(
        extra="forbid",
        title="inputs",
        json_schema_extra={"description": "Columns {name: [values]}, or rows as for instances."},
    )

    inputs: Columns | Records | RowLists = Field(
        description="an object of columns {column: [values]}, or a list of rows as for instances"
    )
    params: Params | None = _PARAMS


_FORM_CLASSES = (SplitForm, RecordsForm, InstancesForm, InputsForm)
# What each field must be, from the declarations: the error messages say it.
_EXPECTED = {
    name: field.description
    for model in (*_FORM_CLASSES, DataframeSplit, Params)
    for name, field in model.model_fields.items()
}


def _row_list(item: Any, max_rows: int | None) -> Any:
    return Annotated[list[item], Field(min_length=1, max_length=max_rows)]


def _same_lengths(columns: dict) -> dict:
    if not columns:
        raise ValueError("the request holds no rows")
    lists = [isinstance(v, list) for v in columns.values()]
    if any(lists) and (not all(lists) or len({len(v) for v in columns.values()}) != 1):
        raise ValueError(
            "inputs given as columns must map every column to a list of the same length"
        )
    return columns


def request_forms(max_rows: int) -> dict[str, type[BaseModel]]:
    """The forms the server validates bodies against, by key: rows of any values.

    Rows are checked for their shape only (objects or lists); their values are
    checked when they become graph inputs. More than ``max_rows`` rows is a 413.
    """
    records = _row_list(InstanceOf[dict], max_rows)
    row_lists = _row_list(InstanceOf[list], max_rows)
    # {column: [values]}, or one row as {column: value}
    columns = Annotated[InstanceOf[dict], AfterValidator(_same_lengths)]
    return {
        "dataframe_split": SplitForm[row_lists],
        "dataframe_records": RecordsForm[records],
        "instances": InstancesForm[records, row_lists],
        "inputs": InputsForm[columns, records, row_lists],
    }


# --------------------------------------------------------------------------- reading bodies


def _refuse_constant(token: str) -> float:
    if token == "NaN":
        return float("nan")
    raise malformed(
        f"the body holds {token}, which is not JSON and not a value this server scores; "
        "send a finite number, or null (or NaN) for a missing value"
    )


def parse_json(body: bytes) -> Any:
    """The JSON document of a body; a bare ``NaN`` token reads as a missing value."""
    if not body.strip():
        raise malformed('the body is empty; send a JSON object such as {"dataframe_split": ...}')
    try:
        return json.loads(body, parse_constant=_refuse_constant)
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno} column {exc.colno}"
        raise malformed(f"malformed JSON at {where}: {exc.msg}") from None
    except UnicodeDecodeError:
        raise malformed("the body is not UTF-8 text") from None
    except RecursionError:
        raise malformed("the JSON is nested too deeply") from None
    except ValueError as exc:  # such as an integer with too many digits
        if "digits" in str(exc):
            raise malformed("malformed JSON: a number has too many digits") from None
        raise malformed("malformed JSON: unreadable") from None


def form_of(doc: Any) -> str:
    """Which of :data:`FORMATS` a JSON document holds; anything else is refused."""
    if not isinstance(doc, dict):
        raise bad_request(
            f"the body must be a JSON object with one of the keys {', '.join(FORMATS)}"
        )
    unknown = [k for k in doc if k not in FORMATS and k != "params"]
    if unknown:
        raise bad_request(
            f"unknown key {unknown[0]!r}; the body takes one of {', '.join(FORMATS)} "
            "and optionally params"
        )
    keys = [k for k in doc if k in FORMATS]
    if len(keys) != 1:
        found = f"got {', '.join(keys)}" if keys else "got none"
        raise bad_request(f"the body must hold exactly one of {', '.join(FORMATS)} ({found})")
    return keys[0]


def columns_from_json(
    doc: Any, feature_names: list[str], forms: dict[str, type[BaseModel]], max_rows: int
) -> tuple[dict[str, list], int, bool]:
    """``({column: values}, rows, explain)`` from a JSON document, checked against ``forms``."""
    kind = form_of(doc)
    try:
        form = forms[kind].model_validate(doc)
    except ValidationError as exc:
        raise _refusal(exc, max_rows) from None
    explain = form.params is not None and form.params.explain
    value = getattr(form, kind)
    if kind == "dataframe_split":
        names, data = value.columns, value.data
        return {name: [row[j] for row in data] for j, name in enumerate(names)}, len(data), explain
    if isinstance(value, dict):
        return (*_from_columnar(value, max_rows), explain)
    n = len(value)
    if isinstance(value[0], dict):
        present = set().union(*value) if n > 1 else set(value[0])
        # A column some rows leave out is missing in those rows (as in a DataFrame).
        return {name: [row.get(name) for row in value] for name in present}, n, explain
    width = len(feature_names)
    for i, row in enumerate(value):
        if len(row) != width:
            raise bad_request(
                f"row {i + 1} of {kind} holds {len(row)} values; a row given as a list holds "
                f"the model's {width} columns in order ({', '.join(feature_names)})"
            )
    return {name: [row[j] for row in value] for j, name in enumerate(feature_names)}, n, explain


def _from_columnar(value: dict, max_rows: int) -> tuple[dict[str, list], int]:
    first = next(iter(value.values()))
    if not isinstance(first, list):  # one row given as {column: value}
        return {k: [v] for k, v in value.items()}, 1
    n = len(first)
    if n == 0:
        raise bad_request("the request holds no rows")
    if n > max_rows:
        raise too_many_rows(n, max_rows)
    return value, n


def _refusal(exc: ValidationError, max_rows: int) -> RequestError:
    """The one-line refusal of a body that does not fit its form."""
    errors = exc.errors(include_url=False)
    for error in errors:
        if error["type"] == "too_long":
            return too_many_rows(error["ctx"]["actual_length"], max_rows)
    if any(error["type"] == "too_short" for error in errors):
        return bad_request("the request holds no rows")
    # The first error of each alternative of a union (pydantic names the alternative
    # in the location); the alternative that got furthest into the rows tells most.
    firsts: dict = {}
    for error in errors:
        branch = tuple(p for p in error["loc"] if isinstance(p, str) and p not in _EXPECTED)
        firsts.setdefault(branch[:1], error)
    error = max(firsts.values(), key=lambda e: [p for p in e["loc"] if isinstance(p, int)])
    return bad_request(_message(error))


def _message(error: dict) -> str:
    loc = error["loc"]
    # The declared fields on the way (not a union's alternative or a column name).
    names = [p for p in loc if isinstance(p, str) and p in _EXPECTED]
    rows = [p for p in loc if isinstance(p, int)]
    kind = error["type"]
    if kind == "value_error":
        return str(error["ctx"]["error"])
    if kind == "missing":
        parent = ".".join(names[:-1]) or "the body"
        return f"{parent} needs {names[-1]}: {_EXPECTED[names[-1]]}"
    if kind == "extra_forbidden":
        parent = [p for p in loc[:-1] if isinstance(p, str) and p in _EXPECTED]
        return f"{'.'.join(parent) or 'the body'} has an unknown key {loc[-1]!r}"
    if not names:
        return f"the body does not fit its form: {error['msg']}"
    text = f"{'.'.join(names)} must be {_EXPECTED[names[-1]]}"
    if rows:
        return f"{text}; row {rows[0] + 1} is {show_value(error['input'])}"
    return f"{text}, not {show_value(error['input'])}"


def columns_from_csv(body: bytes, max_rows: int) -> tuple[dict[str, Any], int]:
    """``({column: values}, rows)`` from a CSV body with a header line."""
    import pandas as pd

    if not body.strip():
        raise malformed("the body is empty; send a CSV header line and rows")
    try:
        frame = pd.read_csv(io.BytesIO(body))
    except UnicodeDecodeError:
        raise malformed("the CSV body is not UTF-8 text") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else "unreadable"
        reason = reason.replace("Error tokenizing data. C error: ", "")
        raise malformed(f"malformed CSV: {reason}") from None
    if not isinstance(frame.index, pd.RangeIndex):
        # pandas reads a first row longer than the header as an index: refuse it.
        raise malformed("malformed CSV: row 1 has more fields than the header")
    if frame.columns.duplicated().any():
        raise bad_request(
            f"the CSV header names column {frame.columns[frame.columns.duplicated()][0]!r} twice"
        )
    n = len(frame)
    if n == 0:
        raise bad_request("the request holds no rows")
    if n > max_rows:
        raise too_many_rows(n, max_rows)
    return {str(c): frame[c].to_numpy() for c in frame.columns}, n


_TRUE = frozenset(("true", "1", "yes", "on", "t", "y"))
_FALSE = frozenset(("false", "0", "no", "off", "f", "n"))


def query_flag(value: str | None, name: str) -> bool:
    """A boolean query parameter (``?explain=true``); absent is false."""
    if value is None:
        return False
    text = value.strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise bad_request(f"{name}: must be true or false, got {show_value(value)}")


# The query parameter is read from the request directly (FastAPI's parameter
# handling costs more than scoring a row), so the document declares it here.
EXPLAIN_PARAMETER = {
    "name": "explain",
    "in": "query",
    "required": False,
    "description": (
        "Add each column's squared reconstruction error to every prediction (not a share: "
        "for the reconstruction score a row's values sum to the number of encoded features "
        "times the score)."
    ),
    "schema": {"type": "boolean", "default": False},
}


# --------------------------------------------------------------------------- the document


class _JsonSchema(GenerateJsonSchema):
    """pydantic's JSON Schema, with ``X | None`` of a simple type written as a type list
    (``{"type": ["number", "null"]}``), the compact form for a nullable cell."""

    def nullable_schema(self, schema):
        inner = self.generate_inner(schema["schema"])
        if isinstance(inner.get("type"), str) and "$ref" not in inner:
            return {**inner, "type": [inner["type"], "null"]}
        return super().nullable_schema(schema)


def _inline(schema: dict) -> dict:
    """``schema`` with every ``$ref`` to its ``$defs`` replaced by the definition, so the
    request body stands alone in the document (it is rebuilt for each served model)."""
    defs = schema.pop("$defs", {})

    def walk(node):
        if isinstance(node, dict):
            if "$ref" in node:
                target = walk(defs[node["$ref"].rsplit("/", 1)[1]])
                return {**target, **{k: walk(v) for k, v in node.items() if k != "$ref"}}
            return {k: walk(v) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    return walk(schema)


_ANY_VALUE = Annotated[Any, Field(description="A value: number, string or null (missing).")]


def _cell_types(
    feature_names: list[str], categorical: list[str], categories: dict[str, list]
) -> dict[str, Any]:
    numeric = Annotated[
        float | None,
        Field(
            ge=-FLOAT32_MAX,
            le=FLOAT32_MAX,
            description="A number (float32 range; numeric strings are read too) or null.",
        ),
    ]
    cells = {}
    for name in feature_names:
        if name in categorical:
            seen = [str(v) for v in categories.get(name) or []][:5]
            cells[name] = Annotated[
                str | None,
                Field(
                    description="A category (numbers are read as text); unknown values are "
                    "allowed; null is missing.",
                    examples=seen or None,
                ),
            ]
        else:
            cells[name] = numeric
    return cells


def request_body(
    feature_names: list[str],
    categorical: list[str],
    categories: dict[str, list],
    max_body: int,
    max_rows: int,
) -> dict:
    """The OpenAPI request body of ``/invocations``: the forms, with rows typed by the
    served model's columns, so a client (or a schema-driven fuzzer) sees exactly which
    keys a request needs."""
    cells = _cell_types(feature_names, categorical, categories)
    # Field names stand for the columns, whose names need not be identifiers.
    record = create_model(
        "Row",
        __config__=ConfigDict(extra="allow", title="row"),
        **{f"c{i}": (cells[n], Field(alias=n)) for i, n in enumerate(feature_names)},
    )
    row_list = tuple.__class_getitem__(tuple(cells[n] for n in feature_names))
    columns = create_model(
        "Columns",
        __config__=ConfigDict(extra="allow", title="columns"),
        **{
            f"c{i}": (_row_list(cells[n], max_rows), Field(alias=n))
            for i, n in enumerate(feature_names)
        },
    )
    records = _row_list(record, max_rows)
    row_lists = _row_list(row_list, max_rows)
    forms = [
        SplitForm[_row_list(list[_ANY_VALUE], max_rows)],
        RecordsForm[records],
        InstancesForm[records, row_lists],
        InputsForm[columns, records, row_lists],
    ]
    schema = {
        "oneOf": [_inline(form.model_json_schema(schema_generator=_JsonSchema)) for form in forms]
    }
    row = [
        (str(categories.get(n)[0]) if categories.get(n) else "") if n in categorical else 0.0
        for n in feature_names
    ]
    csv_example = ",".join(feature_names) + "\n" + ",".join(map(str, row)) + "\n"
    return {
        "required": True,
        "description": (
            f"Up to {max_rows} rows and {max_body} bytes. Columns are matched by name in "
            "any order and extra columns are ignored; rows given as lists follow the "
            f"model's column order (feature_names in /metadata: {', '.join(feature_names)}). "
            "null, NaN or an empty CSV cell is a missing value, imputed by the model. "
            "params other than explain are ignored."
        ),
        "content": {
            "application/json": {
                "schema": schema,
                "example": {"dataframe_split": {"columns": feature_names, "data": [row]}},
            },
            "text/csv": {"schema": {"type": "string"}, "example": csv_example},
        },
    }


# --------------------------------------------------------------------------- the answers


class StatusOut(BaseModel):
    status: str = "ok"


class ModelOut(BaseModel):
    name: str
    version: int | None = Field(None, description="Registry version; null for a file.")
    sha256: str


class VersionOut(BaseModel):
    anomtune: str
    onnxruntime: str
    model: ModelOut


class Prediction(BaseModel):
    score: float | None = Field(description="Reconstruction error: higher is more anomalous.")
    is_anomaly: bool = Field(description="score > the model's threshold.")
    feature_errors: dict[str, float | None] | None = Field(
        None,
        description=(
            "Each column's squared reconstruction error, not a share: for the reconstruction "
            "score a row's values sum to the number of encoded features times the score "
            "(with explain only)."
        ),
    )


class InvocationsOut(BaseModel):
    predictions: list[Prediction]
    model: ModelOut


class ErrorOut(BaseModel):
    error_code: str
    message: str


class ReloadOut(BaseModel):
    changed: bool
    model: ModelOut
    previous: ModelOut


class FlagRateOut(BaseModel):
    """Rows scored since the model was loaded, and the share flagged, against the
    validation rows' share; ``warning`` when it is far above (drift, a broken column)."""

    rows: int
    flagged: int
    share: float | None
    validation_share: float | None
    warning: str | None


class MetadataOut(BaseModel):
    name: str
    version: int | None
    sha256: str
    ref: str
    loaded_at: str
    threshold: float
    threshold_rule: Any = None
    score: str | None = None
    feature_names: list[str]
    columns: list[dict[str, Any]]
    inputs: dict[str, list[str]]
    outputs: list[str]
    metrics: dict[str, Any] | None = None
    params: dict[str, Any] | None = None
    architecture: dict[str, Any] | None = None
    data_fingerprint: str | None = None
    flag_rate: FlagRateOut
    format: str | None = None
    anomtune_version: str | None = None
