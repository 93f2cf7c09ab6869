"""The FastAPI application: routes, the bearer token, error answers and the reload loop."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hmac
import json
import logging
import math
import re
from pathlib import Path
from typing import Annotated

import anyio.to_thread
import numpy as np
import onnxruntime
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException

from anomtune import __version__
from anomtune.errors import AnomtuneError, ConfigError
from anomtune.serving.protocol import (
    EXPLAIN_PARAMETER,
    ErrorOut,
    InvocationsOut,
    MetadataOut,
    ReloadOut,
    RequestError,
    StatusOut,
    VersionOut,
    columns_from_csv,
    columns_from_json,
    malformed,
    parse_json,
    query_flag,
    request_body,
    request_forms,
)
from anomtune.serving.references import Resolver, reference_can_move, resolver_for
from anomtune.serving.served import LoadedModel, ModelHolder

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_MAX_ROWS",
    "DEFAULT_RELOAD_INTERVAL",
    "create_app",
    "without_locations",
]

logger = logging.getLogger("anomtune.serving")

DEFAULT_MAX_BODY_BYTES = 10 * 1024 * 1024
DEFAULT_MAX_ROWS = 10_000
# How often a reference that can move (a bare name or an alias) is resolved again.
DEFAULT_RELOAD_INTERVAL = 30.0
# Bodies up to this size are parsed and scored on the event loop; larger ones
# in a worker thread so that they do not hold up other requests.
INLINE_BODY_BYTES = 64 * 1024

_DESCRIPTION = (
    "Scores rows with an anomtune model (onnxruntime). `POST /invocations` speaks "
    "MLflow's scoring protocol. Limits: bodies up to {max_body} bytes (413 beyond), "
    "at most {max_rows} rows per request (413 beyond). Errors are JSON "
    "`{{error_code, message}}`. With a token set, /invocations, /metadata and /reload "
    "need `Authorization: Bearer TOKEN`; /ping, /health and /version stay open."
)
_BEARER = HTTPBearer(auto_error=False, description="The server's token, when it has one.")
_ERROR_RESPONSES = {
    status: {"model": ErrorOut, "description": text}
    for status, text in {
        400: "Malformed body, wrong or missing columns, bad values, no rows.",
        401: "Missing or wrong bearer token (when the server has one).",
        413: "Body over the size limit, or more rows than the row limit.",
        415: "A content type other than application/json or text/csv.",
    }.items()
}


def create_app(
    model: str | Path | Resolver,
    *,
    threads: int = 1,
    token: str | None = None,
    reload_interval: float | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    max_rows: int = DEFAULT_MAX_ROWS,
    reject_missing: bool = False,
    registry: str | None = None,
    registry_files: str | None = None,
) -> FastAPI:
    """The FastAPI application serving one model.

    ``model`` is a reference (a path to an ``.onnx`` file, or a registry
    reference: ``name``, ``name/3``, ``name@alias``) or a callable returning
    ``(model_bytes, info)`` where ``info`` has ``name`` and ``version`` (an
    object or a mapping). The model is loaded now: a reference that does not
    resolve raises an :class:`~anomtune.errors.AnomtuneError` here, not on the
    first request. ``threads`` threads score the slices of a large request side
    by side (:meth:`anomtune.scoring.Scorer.run`). ``reload_interval`` (seconds,
    0 = never) defaults to :data:`DEFAULT_RELOAD_INTERVAL` for references that
    can move (a bare name or an alias) and to never otherwise.
    """
    if threads < 1:
        raise ConfigError(f"threads must be at least 1, got {threads}")
    if max_body_bytes < 1 or max_rows < 1:
        raise ConfigError("the body-size and row limits must be positive")
    if callable(model):
        resolver = model
        default_interval = 0.0
    else:
        resolver = resolver_for(model, registry=registry, files=registry_files)
        default_interval = DEFAULT_RELOAD_INTERVAL if reference_can_move(model) else 0.0
    interval = default_interval if reload_interval is None else float(reload_interval)
    if interval < 0:
        raise ConfigError(f"reload interval must be 0 (never) or positive, got {interval}")
    holder = ModelHolder(resolver, threads=threads)
    limits = _Limits(int(max_body_bytes), int(max_rows), reject_missing)
    app = FastAPI(
        title="anomtune scoring server",
        version=__version__,
        description=_DESCRIPTION.format(max_body=limits.max_body, max_rows=limits.max_rows),
        lifespan=_lifespan(holder, interval),
    )
    app.state.holder = holder
    _add_error_answers(app)
    _add_routes(app, holder, _authorizer(token or None), limits)
    app.openapi = _openapi(app, holder, limits)
    return app


@dataclasses.dataclass
class _Limits:
    """What the server takes: body bytes, rows, and whether missing values are refused."""

    max_body: int
    max_rows: int
    reject_missing: bool

    def __post_init__(self):
        self.forms = request_forms(self.max_rows)


def _lifespan(holder: ModelHolder, interval: float):
    @contextlib.asynccontextmanager
    async def lifespan(app):
        task = asyncio.create_task(_reload_loop(holder, interval)) if interval > 0 else None
        try:
            yield
        finally:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    return lifespan


def _openapi(app: FastAPI, holder: ModelHolder, limits: _Limits):
    described: list = [None]  # the model the cached document describes

    def openapi() -> dict:
        # The document names the served model's columns, so it is rebuilt after a swap.
        served = holder.current
        if app.openapi_schema is None or described[0] is not served:
            app.openapi_schema = None
            doc = FastAPI.openapi(app)
            doc["paths"]["/invocations"]["post"]["requestBody"] = request_body(
                served.feature_names,
                served.categorical,
                served.categories(),
                limits.max_body,
                limits.max_rows,
            )
            described[0] = served
        return app.openapi_schema

    return openapi


def _authorizer(token: str | None):
    expected = token.encode() if token else None

    # async: a plain ``def`` dependency would be run in a worker thread on every request.
    async def authorize(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_BEARER)],
    ) -> None:
        if expected is None:
            return
        given = credentials.credentials.encode() if credentials is not None else b""
        if credentials is None or not hmac.compare_digest(given, expected):
            raise RequestError(
                401,
                "UNAUTHORIZED",
                "a valid bearer token is required (Authorization: Bearer TOKEN)",
                {"WWW-Authenticate": "Bearer"},
            )

    return authorize


def _error(status: int, code: str, message: str, headers=None) -> JSONResponse:
    return JSONResponse(
        {"error_code": code, "message": message}, status_code=status, headers=headers
    )


def _add_error_answers(app: FastAPI) -> None:
    """Every error is JSON ``{error_code, message}``, never a traceback or a path."""

    @app.exception_handler(RequestError)
    async def _request_error(request, exc: RequestError):
        return _error(exc.status, exc.code, exc.message, exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request, exc: StarletteHTTPException):
        code = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED"}.get(exc.status_code, "BAD_REQUEST")
        message = {404: "no such endpoint", 405: "method not allowed on this endpoint"}.get(
            exc.status_code, str(exc.detail)
        )
        return _error(exc.status_code, code, message, getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        where = " ".join(str(p) for p in first.get("loc", ()) if p != "query")
        return _error(400, "BAD_REQUEST", f"{where}: {first.get('msg', 'invalid value')}".strip())

    @app.exception_handler(Exception)
    async def _unexpected(request, exc: Exception):
        logger.error("unexpected error on %s", request.url.path, exc_info=exc)
        return _error(500, "INTERNAL_ERROR", "internal error; the server log has the details")


def _add_routes(app: FastAPI, holder: ModelHolder, authorize, limits: _Limits) -> None:
    @app.get("/ping", response_model=StatusOut, tags=["health"])
    async def ping():
        """Liveness: 200 while the server runs with a model loaded. No token needed."""
        return {"status": "ok"}

    @app.get("/health", response_model=StatusOut, tags=["health"])
    async def health():
        """Same as /ping. No token needed."""
        return {"status": "ok"}

    @app.get("/version", response_model=VersionOut, tags=["health"])
    async def version():
        """anomtune's and onnxruntime's versions and the model being served."""
        return {
            "anomtune": __version__,
            "onnxruntime": onnxruntime.__version__,
            "model": holder.current.info.to_dict(),
        }

    @app.get(
        "/metadata",
        response_model=MetadataOut,
        dependencies=[Depends(authorize)],
        responses={401: {"model": ErrorOut}},
        tags=["model"],
    )
    async def metadata():
        """The served model: name, version, columns, threshold and training summary."""
        return holder.current.metadata()

    @app.post(
        "/invocations",
        response_model=InvocationsOut,
        dependencies=[Depends(authorize)],
        responses=_ERROR_RESPONSES,
        # The request body is declared per served model (see _openapi).
        openapi_extra={"parameters": [EXPLAIN_PARAMETER]},
        tags=["scoring"],
    )
    async def invocations(request: Request):
        """Score rows (MLflow's scoring protocol). See the request body for the forms."""
        explain = query_flag(request.query_params.get("explain"), "explain")
        content_type = request.headers.get("content-type", "application/json")
        media = content_type.split(";", 1)[0].strip().lower()
        if media not in ("application/json", "text/csv"):
            raise RequestError(
                415,
                "UNSUPPORTED_MEDIA_TYPE",
                f"content type {media or '(none)'!r} is not supported; "
                "send application/json or text/csv",
            )
        body = await _read_body(request, limits.max_body)
        served = holder.current
        if len(body) <= INLINE_BODY_BYTES:
            content = _score(served, body, media, explain, limits)
        else:
            content = await anyio.to_thread.run_sync(_score, served, body, media, explain, limits)
        return Response(content, media_type="application/json", headers=served.headers)

    @app.post(
        "/reload",
        response_model=ReloadOut,
        dependencies=[Depends(authorize)],
        responses={401: {"model": ErrorOut}, 503: {"model": ErrorOut}},
        tags=["model"],
    )
    async def reload():
        """Resolve the model reference again and serve the new model if it changed."""
        try:
            return await anyio.to_thread.run_sync(holder.reload)
        except AnomtuneError as exc:
            logger.warning("reload failed: %s", exc)
            raise RequestError(
                503, "RELOAD_FAILED", f"still serving the old model: {without_locations(exc)}"
            ) from exc
        except Exception as exc:
            logger.error("reload failed", exc_info=exc)
            raise RequestError(
                503, "RELOAD_FAILED", "still serving the old model; the server log has the details"
            ) from exc


_URL = re.compile(r"\b([a-zA-Z][a-zA-Z0-9+.-]*)://\S+")
_ABSOLUTE_PATH = re.compile(r"(?<![\w.@:/~-])(?:[A-Za-z]:)?[/\\][^\s'\",;]+")


def without_locations(error: BaseException | str) -> str:
    """An error message for clients: URLs and absolute paths shortened to what they name.

    Registry and file errors name where things live on the server (a database URL,
    which can hold a password, or a folder); a client needs neither. A path keeps its
    last part (``models.db``), a URL its scheme (``postgresql+psycopg://...``).
    """
    text = str(error)
    text = _URL.sub(lambda m: f"{m.group(1)}://...", text)
    return _ABSOLUTE_PATH.sub(lambda m: re.split(r"[/\\]", m.group(0).rstrip("/\\"))[-1], text)


async def _read_body(request, limit: int) -> bytes:
    too_large = RequestError(
        413, "BODY_TOO_LARGE", f"the body is larger than this server's limit of {limit} bytes"
    )
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > limit:
                raise too_large
        except ValueError:
            raise malformed("the Content-Length header is not a number") from None
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


def _score(served: LoadedModel, body: bytes, media: str, explain: bool, limits: _Limits) -> bytes:
    if media == "text/csv":
        columns, n = columns_from_csv(body, limits.max_rows)
    else:
        doc = parse_json(body)
        columns, n, asked = columns_from_json(
            doc, served.feature_names, limits.forms, limits.max_rows
        )
        explain = explain or asked
    served.check_columns(columns)
    score, errors, label = served.run(columns, n, reject_missing=limits.reject_missing)
    scores = _finite_list(score)
    flags = label.tolist()
    if explain:
        names = served.feature_names
        rows = [dict(zip(names, _finite_list(row), strict=True)) for row in errors]
        predictions = [
            {"score": s, "is_anomaly": a, "feature_errors": e}
            for s, a, e in zip(scores, flags, rows, strict=True)
        ]
    else:
        predictions = [{"score": s, "is_anomaly": a} for s, a in zip(scores, flags, strict=True)]
    return b'{"predictions":%s,"model":%s}' % (json.dumps(predictions).encode(), served.model_json)


def _finite_list(values: np.ndarray) -> list:
    out = values.tolist()
    if not np.isfinite(values).all():
        out = [v if math.isfinite(v) else None for v in out]
    return out


async def _reload_loop(holder: ModelHolder, interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        try:
            await anyio.to_thread.run_sync(holder.reload)
        except AnomtuneError as exc:
            logger.warning("reload failed; still serving %s: %s", holder.current.info.label, exc)
        except Exception:
            logger.exception("reload failed; still serving %s", holder.current.info.label)
