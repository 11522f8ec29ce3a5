"""One WebSocket carrying many turns (`/v1/ws`): the client sends JSON frames to start a turn, cancel
one or resume one after a dropped socket; the server sends each turn's events as frames that mirror
the SSE events, tagged with the turn.

Client frames:
  {"type": "turn", "ref": "...", "conversation_id": "...", "content": "...", "idempotency_key": "...",
   "max_tokens", "temperature", "model", "latency_budget_ms"}   (the POST's body and semantics)
  {"type": "cancel", "turn_id": "..."}
  {"type": "resume", "turn_id": "...", "last_event_id": "..."}  (exactly what came after it, then live)
Server frames:
  {"type": "accepted", "ref", "turn_id"}; then per event {"type": turn|token|reset|done|error|
  moderated|redact, "turn_id", "id", "data"}; {"type": "error", "ref", "code", "message"} for a frame
  it refused (the socket stays open).

Backpressure: frames go out through a bounded outbox. A client that stops reading fills it, then the
turns' followers wait rather than read on; what the API holds for it stays under OUTBOX frames and
the socket's buffers, however long the replies. The turns themselves run on (they are durable) and
the client can resume them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import uuid
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import HTTPException, WebSocket
from pydantic import BaseModel, Field, ValidationError
from starlette.websockets import WebSocketDisconnect, WebSocketState
from temporalio.client import WorkflowHandle

from activities.adapters.rate_limits import RateLimited
from activities.contracts.turn import ChatTurnResult
from api.core.audit import write_audit_event
from api.core.drain import Drain
from api.core.text_fields import StorableStr
from api.services.turn_starter import TurnRequest, start_turn, tenant_of_turn
from api.services.turn_stream import follow
from db.access import Principal
from infra.runtime.resources import Resources

log = logging.getLogger("turnflow.api.ws")
# Frames held for a client that reads slowly, and turns one socket may follow at once.
OUTBOX = 256
MAX_TURNS = 16
MAX_FRAME_BYTES = 64 * 1024
EVENT_ID = re.compile(r"^\d{1,19}(-\d{1,19})?$")
# Close codes: the client's key or ticket (4401), its scope (4403), this server leaving (1012:
# reconnect and resume), a frame too large to read (1009).
UNAUTHENTICATED, FORBIDDEN, SERVICE_RESTART, TOO_BIG = 4401, 4403, 1012, 1009
# The sockets open in this process (what a drain closes, and what tests and metrics look at).
LIVE: weakref.WeakSet[ChatSocket] = weakref.WeakSet()


class TurnFrame(BaseModel):
    type: str
    ref: str | None = Field(default=None, max_length=200)
    conversation_id: uuid.UUID
    content: StorableStr = Field(min_length=1)
    idempotency_key: str | None = Field(default=None, max_length=200)
    max_tokens: int | None = Field(default=None, ge=1, le=4096)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    model: StorableStr | None = Field(default=None, max_length=200)
    latency_budget_ms: int | None = Field(default=None, ge=1, le=600_000)


class FrameRefused(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


# 404 unless the tenant has the conversation (the routes' own check, handed in by the route).
ConversationCheck = Callable[[Resources, uuid.UUID, uuid.UUID], Awaitable[None]]


class ChatSocket:
    def __init__(
        self, ws: WebSocket, res: Resources, principal: Principal, drain: Drain, check: ConversationCheck
    ) -> None:
        self.ws, self.res, self.principal, self.drain = ws, res, principal, drain
        self.require_conversation = check
        self.outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=OUTBOX)
        self.following: dict[str, asyncio.Task[None]] = {}
        # Turn events taken from the event log for this client (a slow reader stops this growing).
        self.relayed = 0
        LIVE.add(self)

    async def run(self) -> None:
        """Read frames until the client leaves or this server drains; then stop following."""
        writer = asyncio.create_task(self._write())
        reader = asyncio.create_task(self._read())
        drained = asyncio.create_task(self.drain.started.wait())
        try:
            done, _ = await asyncio.wait({writer, reader, drained}, return_when=asyncio.FIRST_COMPLETED)
            if drained in done:
                await self._close(SERVICE_RESTART, "this server is leaving: reconnect and resume")
            elif reader in done and (exc := reader.exception()) is not None and not _gone(exc):
                raise exc
        finally:
            for task in (writer, reader, drained, *self.following.values()):
                task.cancel()
            await asyncio.gather(writer, reader, drained, *self.following.values(), return_exceptions=True)

    async def _close(self, code: int, reason: str) -> None:
        if self.ws.application_state == WebSocketState.CONNECTED:
            with contextlib.suppress(Exception):
                await self.ws.close(code=code, reason=reason)

    async def _write(self) -> None:
        while True:
            frame = await self.outbox.get()
            await self.ws.send_text(json.dumps(frame))

    async def _read(self) -> None:
        while True:
            raw = await self.ws.receive_text()
            if len(raw) > MAX_FRAME_BYTES:
                await self._close(TOO_BIG, f"a frame is at most {MAX_FRAME_BYTES} bytes")
                return
            ref: str | None = None
            try:
                frame = json.loads(raw)
                if not isinstance(frame, dict):
                    raise FrameRefused("bad_frame", "a frame is a JSON object")
                ref = frame.get("ref") if isinstance(frame.get("ref"), str) else None
                await self._handle(frame)
            except json.JSONDecodeError as exc:
                await self._refuse(ref, "bad_frame", f"not JSON: {exc.msg}")
            except FrameRefused as exc:
                await self._refuse(ref, exc.code, str(exc))
            except ValidationError as exc:
                first = exc.errors()[0]
                where = ".".join(str(p) for p in first["loc"])
                await self._refuse(ref, "validation_error", f"{where}: {first['msg']}")
            except HTTPException as exc:  # what the HTTP routes would answer (404, 429, 503, ...)
                await self._refuse(ref, getattr(exc, "code", None) or str(exc.status_code), str(exc.detail))

    async def _refuse(self, ref: str | None, code: str, message: str) -> None:
        await self.outbox.put(
            {"type": "error", "ref": ref, "turn_id": None, "code": code, "message": message}
        )

    async def _handle(self, frame: dict[str, Any]) -> None:
        kind = frame.get("type")
        await self._count_request()
        if kind == "turn":
            await self._start(TurnFrame.model_validate(frame))
        elif kind == "cancel":
            await self._cancel(str(frame.get("turn_id") or ""))
        elif kind == "resume":
            after = frame.get("last_event_id")
            if after is not None and not (isinstance(after, str) and EVENT_ID.match(after)):
                raise FrameRefused("validation_error", "last_event_id: not an event id")
            turn_id = str(frame.get("turn_id") or "")
            self._follow(turn_id, await self._handle_of(turn_id), after)
        else:
            raise FrameRefused("bad_frame", f"unknown frame type {kind!r}: turn, cancel or resume")

    async def _count_request(self) -> None:
        """Each frame counts against the tenant's request limit, as an HTTP request would."""
        limit = self.principal.requests_per_min or self.res.settings.rate_limit_requests_per_min
        try:
            await self.res.rate_limits.request(str(self.principal.tenant_id), limit)
        except RateLimited as exc:
            raise FrameRefused("rate_limited", f"{exc}; retry in {max(1, exc.retry_ms // 1000)} s") from exc

    async def _start(self, frame: TurnFrame) -> None:
        if len(self.following) >= MAX_TURNS:
            raise FrameRefused("too_many_turns", f"at most {MAX_TURNS} turns at once on one socket")
        if self.drain.draining:
            raise FrameRefused("draining", "this server is shutting down; reconnect")
        tenant = self.principal.tenant_id
        limit = self.principal.tokens_per_min or self.res.settings.rate_limit_tokens_per_min
        try:
            await self.res.rate_limits.tokens_allow(str(tenant), limit)
        except RateLimited as exc:
            raise FrameRefused("rate_limited", str(exc)) from exc
        await self.require_conversation(self.res, tenant, frame.conversation_id)
        audit: dict[str, object] = {}
        request_id = f"ws-{uuid.uuid4()}"
        try:
            turn_id, handle = await start_turn(
                self.res,
                TurnRequest(
                    tenant_id=tenant,
                    conversation_id=frame.conversation_id,
                    text=frame.content,
                    request_id=request_id,
                    idempotency_key=frame.idempotency_key,
                    pii_policy=self.principal.pii,
                    answer_when_shed=self.principal.answer_when_shed,
                    model=frame.model,
                    max_tokens=frame.max_tokens,
                    temperature=frame.temperature,
                    latency_budget_ms=frame.latency_budget_ms,
                ),
                audit,
            )
        except HTTPException as exc:
            audit["status"] = exc.status_code
            raise
        finally:
            audit.setdefault("status", 200)
            await self._audit(frame.conversation_id, audit, request_id)
        await self.outbox.put({"type": "accepted", "ref": frame.ref, "turn_id": turn_id})
        self._follow(turn_id, handle, None)

    async def _audit(self, conversation_id: uuid.UUID, details: dict[str, object], request_id: str) -> None:
        """The row the HTTP route's POST writes (api/core/audit.py), for a turn frame."""
        await write_audit_event(
            self.res.sessions,
            {
                "tenant_id": self.principal.tenant_id,
                "actor": f"key:{self.principal.key_prefix}",
                "action": "WS /v1/ws turn",
                "object_type": "conversation",
                "object_id": str(conversation_id),
                "request_id": request_id,
                "details": details,
            },
        )

    async def _handle_of(self, turn_id: str) -> WorkflowHandle[Any, ChatTurnResult]:
        if tenant_of_turn(turn_id) != str(self.principal.tenant_id):
            raise FrameRefused("404", f"turn {turn_id} not found")
        return self.res.temporal.get_workflow_handle(turn_id, result_type=ChatTurnResult)

    async def _cancel(self, turn_id: str) -> None:
        await self._handle_of(turn_id)
        await self.res.cancels.request(turn_id)

    def _follow(self, turn_id: str, handle: WorkflowHandle[Any, ChatTurnResult], after: str | None) -> None:
        previous = self.following.pop(turn_id, None)
        if previous is not None:
            previous.cancel()  # resumed again: the newer position wins
        task = asyncio.create_task(self._relay(turn_id, handle, after))
        self.following[turn_id] = task
        task.add_done_callback(
            lambda t: self.following.pop(turn_id, None) if self.following.get(turn_id) is t else None
        )

    async def _relay(
        self, turn_id: str, handle: WorkflowHandle[Any, ChatTurnResult], after: str | None
    ) -> None:
        async for event in follow(self.res.events, handle, turn_id, after, feed=self.res.event_feed):
            # Waits while the outbox is full: a slow reader slows its followers, not the API's memory.
            self.relayed += 1
            await self.outbox.put(
                {"type": event.type, "turn_id": turn_id, "id": event.id, "data": event.data}
            )


def _gone(exc: BaseException) -> bool:
    return isinstance(exc, WebSocketDisconnect | ConnectionError)
