"""Every request has an id: the caller's ``X-Request-ID`` (cut to 100 characters) or a new UUID. It is
on the request's state, on its trace's server span, in its audit row and in the response's headers."""

from __future__ import annotations

import uuid

from opentelemetry import trace
from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from infra.telemetry.span_store import REQUEST_ID


class RequestIdMiddleware:
    """Plain ASGI (see api/core/audit.py for why not an ``@app.middleware`` function)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = (Headers(scope=scope).get("X-Request-ID") or str(uuid.uuid4()))[:100]
        scope.setdefault("state", {})["request_id"] = rid
        trace.get_current_span().set_attribute(REQUEST_ID, rid)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)["X-Request-ID"] = rid
            await send(message)

        await self.app(scope, receive, send_with_id)
