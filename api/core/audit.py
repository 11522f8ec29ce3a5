"""The API's audit trail: every write (POST, PUT, PATCH, DELETE) and every refusal (401, 403, 404,
429) lands in `audit_events` with who (the key's prefix), which tenant, what (method and route),
on what (the path's ids, or the turn a POST started), the outcome and the request id.

Written before the response leaves, so an acknowledged write is never missing from the trail; the
table is append-only for the app role (migration 0002).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import Request, Response
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from db.access import Principal
from db.models import AuditEvent

log = logging.getLogger("turnflow.audit")

WRITES = {"POST", "PUT", "PATCH", "DELETE"}
REFUSALS = {401, 403, 404, 429}
# Reads that are not writes but change state elsewhere, or are costly: none today.


def _object(request: Request, response: Response) -> tuple[str | None, str | None]:
    params = request.path_params
    for name in ("turn_id", "document_id", "conversation_id"):
        if name in params:
            return name.removesuffix("_id"), str(params[name])
    if turn := response.headers.get("X-Turn-ID"):
        return "turn", turn
    return None, None


def audit_event(request: Request, response: Response) -> AuditEvent | None:
    """The row this request leaves in the trail, or None when it is a read that succeeded."""
    if request.method not in WRITES and response.status_code not in REFUSALS:
        return None
    route = request.scope.get("route")
    template = getattr(route, "path", request.url.path)
    principal: Principal | None = getattr(request.state, "principal", None)
    object_type, object_id = _object(request, response)
    details: dict[str, Any] = {"status": response.status_code, **getattr(request.state, "audit", {})}
    return AuditEvent(
        tenant_id=principal.tenant_id if principal else None,
        actor=f"key:{principal.key_prefix}" if principal else "anonymous",
        action=f"{request.method} {template}",
        object_type=object_type,
        object_id=object_id,
        request_id=str(getattr(request.state, "request_id", "")) or None,
        details=details,
    )


def audit_middleware(
    sessions: Callable[[], async_sessionmaker[AsyncSession]],
) -> Callable[[Request, Callable[[Request], Awaitable[Response]]], Awaitable[Response]]:
    async def middleware(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        response = await call_next(request)
        if (event := audit_event(request, response)) is not None:
            try:
                async with sessions().begin() as session:
                    session.add(event)
            except Exception:  # the database is down: the request's own outcome already says so
                log.exception("audit event lost: %s %s", event.action, event.object_id)
        return response

    return middleware
