"""Every error leaves the API as {"error": {"message", "type", "code"}} (the OpenAI wire shape)."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException


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


async def _http_error(_: Request, exc: HTTPException) -> JSONResponse:
    type_ = "invalid_request_error" if exc.status_code < 500 else "server_error"
    return JSONResponse(
        error_body(str(exc.detail), type_, str(exc.status_code)),
        status_code=exc.status_code,
        headers=exc.headers,
    )


async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
    details = jsonable_encoder(exc.errors())
    first = details[0] if details else {}
    where = ".".join(str(p) for p in first.get("loc", []))
    message = f"{where}: {first.get('msg', 'invalid request')}" if where else "invalid request"
    return JSONResponse(
        error_body(message, "invalid_request_error", "validation_error", details=details),
        status_code=422,
    )


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(HTTPException, _http_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _validation_error)  # type: ignore[arg-type]
