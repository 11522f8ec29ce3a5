"""Follow a turn's events for SSE: replay what came after Last-Event-ID, then follow live, never hang."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

from temporalio.client import WorkflowExecutionStatus, WorkflowHandle
from temporalio.service import RPCError

from activities.adapters.event_feed import EventFeed, Follower
from activities.adapters.outages import REDIS_UNAVAILABLE, degraded, temporal_unavailable
from activities.adapters.turn_events import TERMINAL, TurnEvent, TurnEvents
from activities.contracts.turn import ChatTurnResult

# How long one blocking read waits before checking that the turn is still running.
IDLE_CHECK_MS = 1000
# After `done`, how long the stream stays open for the out-of-band moderation verdict: a model-based
# moderator (temporal.yaml `moderation:`) takes a model call, and one with no verdict its retries.
MODERATION_WAIT_MS = 10_000
# Once the turn has ended, how often reading what is left may fail before the turn's own result
# ends the stream instead (a connection that broke while Redis was away fails once, then reconnects).
DRAIN_TRIES = 3
DRAIN_RETRY_S = 0.3


def as_sse(event: TurnEvent) -> dict[str, Any]:
    return {"id": event.id, "event": event.type, "data": json.dumps(event.data)}


async def follow(
    events: TurnEvents,
    handle: WorkflowHandle[Any, ChatTurnResult],
    turn_id: str,
    after: str | None,
    *,
    moderation: bool = True,
    feed: EventFeed | None = None,
) -> AsyncIterator[TurnEvent]:
    """Events after ``after`` until the turn's terminal event; if the turn ended without one
    (timed out, terminated, or its events were lost), a final event is made from the workflow itself.
    While Redis is unreachable the client waits (SSE pings keep it connected) and the stream goes on
    from where it was when Redis is back; if the turn ends first, the final event carries the reply.
    With ``moderation``, a `done` whose verdict is pending is followed by `moderated` or `redact`.
    With a ``feed``, live events come through the process's one reader (activities/adapters/event_feed.py)."""
    async with contextlib.AsyncExitStack() as stack:
        follower = await stack.enter_async_context(feed.follow(turn_id, after or "0-0")) if feed else None
        async for event in _follow(events, handle, turn_id, after, moderation, follower):
            yield event


async def _follow(
    events: TurnEvents,
    handle: WorkflowHandle[Any, ChatTurnResult],
    turn_id: str,
    after: str | None,
    moderation: bool,
    follower: Follower | None,
) -> AsyncIterator[TurnEvent]:
    async def wait_for(last: str, wait_ms: int, count: int = 512) -> list[TurnEvent]:
        if follower is None:
            return await events.read(turn_id, last, block_ms=wait_ms, count=count)
        return await follower.take(wait_ms / 1000)

    last = after or "0-0"
    closed: WorkflowExecutionStatus | None = None
    drain_failures = 0
    while True:
        try:
            # Once the workflow has closed, drain what is left without waiting.
            batch = await events.read(turn_id, last) if closed else await wait_for(last, IDLE_CHECK_MS)
        except REDIS_UNAVAILABLE as exc:
            degraded("streams wait, then end with the turn's result", exc)
            batch = []
            if not closed:
                await asyncio.sleep(IDLE_CHECK_MS / 1000)
            elif (drain_failures := drain_failures + 1) < DRAIN_TRIES:
                await asyncio.sleep(DRAIN_RETRY_S)
                continue
        for i, event in enumerate(batch):
            yield event
            last = event.id
            if event.type == "done" and moderation and event.data.get("moderation") == "pending":
                try:
                    # The verdict may have come in the same read as `done`.
                    verdict = batch[i + 1 :] or await wait_for(last, MODERATION_WAIT_MS, count=1)
                except REDIS_UNAVAILABLE as exc:
                    degraded("moderation verdicts not streamed (see the message's record)", exc)
                    return
                for found in verdict[:1]:
                    if found.type in ("redact", "moderated"):
                        yield found
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
