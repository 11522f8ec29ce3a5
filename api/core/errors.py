"""Every error leaves the API as {"error": {"message", "type", "code"}} (the OpenAI wire shape)."""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException
from starlette.routing import Match, Route
from temporalio.service import RPCError

from activities.adapters.outages import REDIS_UNAVAILABLE, temporal_unavailable

log = logging.getLogger("turnflow.api")


class ErrorDetail(BaseModel):
    # Some errors say more: `details` (which fields were invalid), `retryable`, `turn_id`.
    model_config = ConfigDict(extra="allow")

    message: str
    type: str
    code: str | None


class ErrorResponse(BaseModel):
    error: ErrorDetail


_WHEN = {
    400: "The body could not be read, or the turn was refused (see `error.code`)",
    401: "No API key, or one that is unknown, revoked or expired",
    403: "The key lacks the scope this route needs",
    404: "Not found (another tenant's objects are not found either)",
    409: "The object is not in a state that allows this",
    410: "Gone for good (e.g. payloads whose tenant key was destroyed)",
    415: "Unsupported content type",
    422: "The request is invalid (`error.details` lists the fields)",
    429: "Over the tenant's rate limit or token budget: retry after `Retry-After` seconds",
    502: "The model's reply did not satisfy the request (e.g. its `response_format`)",
    503: "A dependency failed; retrying may help (`error.retryable`)",
}

# What every route behind an API key may answer besides its own outcomes.
KEYED = (401, 403, 422, 429)


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for these error statuses, all in the one documented shape."""
    return {s: {"model": ErrorResponse, "description": _WHEN[s]} for s in statuses}


class ApiError(HTTPException):
    """An HTTP error with its own `error.code` (a plain HTTPException's code is its status)."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str,
        headers: dict[str, str] | None = None,
        retryable: bool | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(status, message, headers=headers)
        self.code = code
        self.retryable = retryable
        # Which request field it is about (OpenAI's `error.param`).
        self.param = param


def error_body(message: str, type_: str, code: str | None = None, **extra: object) -> dict[str, object]:
    return {"error": {"message": message, "type": type_, "code": code, **extra}}


def turn_error_response(error: dict[str, object], turn_id: str) -> JSONResponse:
    """A turn that ended in an error, as JSON: 429 over a quota, 503 when retrying may help, else 400."""
    retryable = bool(error.get("retryable"))
    status = 429 if error.get("code") == "token_budget_exceeded" else 503 if retryable else 400
    return JSONResponse(
        error_body(
            str(error.get("message")),
            "server_error" if retryable else "invalid_request_error",
            str(error.get("code")),
            retryable=retryable,
            turn_id=turn_id,
        ),
        status_code=status,
    )


def _allowed_methods(request: Request) -> str:
    """Every method some route serves on this path: Starlette's 405 names only the first route's."""
    methods: set[str] = set()
    for route in request.app.routes:
        if isinstance(route, Route) and route.methods and route.matches(request.scope)[0] != Match.NONE:
            methods |= route.methods
    return ", ".join(sorted(methods))


async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
    type_ = "invalid_request_error" if exc.status_code < 500 else "server_error"
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        headers["Allow"] = _allowed_methods(request)
    retryable, param = getattr(exc, "retryable", None), getattr(exc, "param", None)
    extra = {k: v for k, v in (("retryable", retryable), ("param", param)) if v is not None}
    return JSONResponse(
        error_body(str(exc.detail), type_, getattr(exc, "code", None) or str(exc.status_code), **extra),
        status_code=exc.status_code,
        headers=headers,
    )


async def _validation_error(_: Request, exc: RequestValidationError) -> Response:
    # Inputs are echoed back; bytes that are not UTF-8 (a garbled body) as replacement characters.
    details = jsonable_encoder(exc.errors(), custom_encoder={bytes: lambda b: b.decode("utf-8", "replace")})
    first = details[0] if details else {}
    where = ".".join(str(p) for p in first.get("loc", []))
    message = f"{where}: {first.get('msg', 'invalid request')}" if where else "invalid request"
    # ASCII-escaped: the details echo the input, which may hold a lone surrogate UTF-8 cannot carry.
    body = error_body(message, "invalid_request_error", "validation_error", details=details)
    return Response(json.dumps(body), status_code=422, media_type="application/json")


# A dependency down or restarting: the request can be retried as it is, in a moment.
RETRY_AFTER_OUTAGE_S = 2


def _unavailable(dependency: str, exc: Exception) -> JSONResponse:
    log.warning("%s unavailable: %s: %s", dependency, exc.__class__.__name__, exc)
    return JSONResponse(
        error_body(
            f"{dependency} is unreachable right now; retry in a moment",
            "server_error",
            "dependency_unavailable",
            retryable=True,
            dependency=dependency.lower(),
        ),
        status_code=503,
        headers={"Retry-After": str(RETRY_AFTER_OUTAGE_S)},
    )


async def _redis_unavailable(_: Request, exc: Exception) -> JSONResponse:
    return _unavailable("Redis", exc)


async def _postgres_unavailable(_: Request, exc: Exception) -> JSONResponse:
    return _unavailable("Postgres", exc)


async def _temporal_error(_: Request, exc: RPCError) -> JSONResponse:
    if temporal_unavailable(exc):
        return _unavailable("Temporal", exc)
    log.error("Temporal refused a call: %s", exc, exc_info=exc)
    return JSONResponse(error_body("internal error", "server_error", "internal_error"), status_code=500)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(HTTPException, _http_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _validation_error)  # type: ignore[arg-type]
    # A dependency's outage is a 503 the client may retry, never a bare 500.
    for redis_error in REDIS_UNAVAILABLE:
        app.add_exception_handler(redis_error, _redis_unavailable)
    # A connection that failed or broke (Postgres down or restarting), not a bad statement.
    app.add_exception_handler(OperationalError, _postgres_unavailable)
    app.add_exception_handler(RPCError, _temporal_error)  # type: ignore[arg-type]
