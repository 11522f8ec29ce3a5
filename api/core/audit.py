"""The API's audit trail: every write (POST, PUT, PATCH, DELETE) and every refusal (401, 403, 404,
429) lands in `audit_events` with who (the key's prefix), which tenant, what (method and route),
on what (the path's ids, or the turn a POST started), the outcome and the request id.

Written before the response leaves, so an acknowledged write is never missing from the trail; the
table is append-only for the app role (migration 0002).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, cast

from fastapi import Request
from sqlalchemy import Table, insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from db.access import Principal
from db.models import AuditEvent

log = logging.getLogger("turnflow.audit")

WRITES = {"POST", "PUT", "PATCH", "DELETE"}
REFUSALS = {401, 403, 404, 429}
AUDIT_EVENTS = cast(Table, AuditEvent.__table__)
# Reads that are not writes but change state elsewhere, or are costly: none today.


def _object(request: Request, headers: Headers) -> tuple[str | None, str | None]:
    params = request.path_params
    for name in ("turn_id", "message_id", "document_id", "conversation_id"):
        if name in params:
            return name.removesuffix("_id"), str(params[name])
    if turn := headers.get("X-Turn-ID"):
        return "turn", turn
    return None, None


def audit_event(request: Request, status: int, headers: Headers) -> dict[str, Any] | None:
    """The row this request leaves in the trail (its columns), or None when it is a read that
    succeeded."""
    if request.method not in WRITES and status not in REFUSALS:
        return None
    route = request.scope.get("route")
    template = getattr(route, "path", request.url.path)
    principal: Principal | None = getattr(request.state, "principal", None)
    object_type, object_id = _object(request, headers)
    details: dict[str, Any] = {"status": status, **getattr(request.state, "audit", {})}
    return {
        "tenant_id": principal.tenant_id if principal else None,
        "actor": f"key:{principal.key_prefix}" if principal else "anonymous",
        "action": f"{request.method} {template}",
        "object_type": object_type,
        "object_id": object_id,
        "request_id": str(getattr(request.state, "request_id", "")) or None,
        "details": details,
    }


class AuditMiddleware:
    """Holds each response's start until its audit row is written. Plain ASGI rather than an
    ``@app.middleware`` function: that one runs every SSE event of a stream through extra tasks and
    memory streams, which cost the API more CPU per token than sending the token does."""

    def __init__(self, app: ASGIApp, sessions: Callable[[], async_sessionmaker[AsyncSession]]) -> None:
        self.app = app
        self.sessions = sessions

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def audited_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                # The router has filled the scope in by now: its route, path parameters and state.
                request = Request(scope)
                event = audit_event(request, message["status"], Headers(raw=message.get("headers", [])))
                if event is not None:
                    await self._write(event)
            await send(message)

        await self.app(scope, receive, audited_send)

    async def _write(self, event: dict[str, Any]) -> None:
        await write_audit_event(self.sessions(), event)


async def write_audit_event(sessions: async_sessionmaker[AsyncSession], event: dict[str, Any]) -> None:
    """One row (the columns `audit_event` makes), for HTTP requests and WebSocket frames alike."""
    try:
        async with sessions.begin() as session:
            # A Core INSERT: one row per write request, and the ORM's unit of work cost several
            # times the statement (bench/REPORT.md, issue 17).
            await session.execute(insert(AUDIT_EVENTS).values(event))
    except Exception:  # the database is down: the request's own outcome already says so
        log.exception("audit event lost: %s %s", event["action"], event["object_id"])
