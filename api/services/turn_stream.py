"""Follow a turn's events for SSE: replay what came after Last-Event-ID, then follow live, never hang."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from temporalio.client import WorkflowExecutionStatus, WorkflowHandle
from temporalio.service import RPCError

from activities.adapters.outages import REDIS_UNAVAILABLE, degraded, temporal_unavailable
from activities.adapters.turn_events import TERMINAL, TurnEvent, TurnEvents
from activities.contracts.turn import ChatTurnResult

# How long one blocking read waits before checking that the turn is still running.
IDLE_CHECK_MS = 1000
# After `done`, how long the stream stays open for the out-of-band moderation verdict.
MODERATION_WAIT_MS = 3000


def as_sse(event: TurnEvent) -> dict[str, Any]:
    return {"id": event.id, "event": event.type, "data": json.dumps(event.data)}


async def follow(
    events: TurnEvents,
    handle: WorkflowHandle[Any, ChatTurnResult],
    turn_id: str,
    after: str | None,
    *,
    moderation: bool = True,
) -> AsyncIterator[TurnEvent]:
    """Events after ``after`` until the turn's terminal event; if the turn ended without one
    (timed out, terminated, or its events were lost), a final event is made from the workflow itself.
    While Redis is unreachable the client waits (SSE pings keep it connected) and the stream goes on
    from where it was when Redis is back; if the turn ends first, the final event carries the reply.
    With ``moderation``, a `done` whose verdict is pending is followed by `moderated` or `redact`."""
    last = after or "0-0"
    closed: WorkflowExecutionStatus | None = None
    while True:
        try:
            # Once the workflow has closed, drain what is left without waiting.
            batch = await events.read(turn_id, last, block_ms=None if closed else IDLE_CHECK_MS)
        except REDIS_UNAVAILABLE as exc:
            degraded("streams wait, then end with the turn's result", exc)
            batch = []
            if not closed:
                await asyncio.sleep(IDLE_CHECK_MS / 1000)
        for event in batch:
            yield event
            last = event.id
            if event.type == "done" and moderation and event.data.get("moderation") == "pending":
                async for verdict in _moderation_verdict(events, turn_id, last):
                    yield verdict
                return
            if event.type in TERMINAL or event.type in ("redact", "moderated"):
                return
        if batch:
            continue
        if closed:
            yield await _final_from_workflow(handle, closed)
            return
        try:
            status = (await handle.describe()).status
        except RPCError as exc:
            if not temporal_unavailable(exc):
                raise
            # Temporal is restarting: the turn goes on in its worker, and its events still flow.
            degraded("streams follow the turn's events without its status", exc, "temporal")
            continue
        if status != WorkflowExecutionStatus.RUNNING:
            closed = status


async def _moderation_verdict(events: TurnEvents, turn_id: str, after: str) -> AsyncIterator[TurnEvent]:
    try:
        verdict = await events.read(turn_id, after, block_ms=MODERATION_WAIT_MS, count=1)
    except REDIS_UNAVAILABLE as exc:
        degraded("moderation verdicts not streamed (see the message's record)", exc)
        return
    for event in verdict:
        if event.type in ("redact", "moderated"):
            yield event


async def _final_from_workflow(
    handle: WorkflowHandle[Any, ChatTurnResult], status: WorkflowExecutionStatus
) -> TurnEvent:
    if status == WorkflowExecutionStatus.COMPLETED:
        result = await handle.result()
        if result.status == "error":
            return TurnEvent("", "error", dict(result.error or {}))
        return TurnEvent(
            "",
            "done",
            {
                "message_id": result.message_id,
                "finish_reason": result.finish_reason,
                "usage": {"input_tokens": result.input_tokens, "output_tokens": result.output_tokens},
                "ttft_ms": result.ttft_ms,
                "model": result.model,
                "text": result.text,
                "degraded": result.degraded,
            },
        )
    name = status.name.lower()
    return TurnEvent(
        "",
        "error",
        {
            "code": f"turn_{name}",
            "message": f"the turn ended without a reply ({name})",
            "retryable": True,
        },
    )
