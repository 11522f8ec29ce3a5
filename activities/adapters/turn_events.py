"""Each turn's events in a Redis Stream: written by activities as they happen, read by the SSE API.

Entry ids are the SSE ``id:`` values, so ``Last-Event-ID`` resumes exactly after what a client saw.
Each event's data is sealed with its tenant's key (the tenant is in the turn id; ids made elsewhere,
by tests and tools, name none and stay clear); its type is not.
The stream is capped (approximately) so a runaway turn cannot grow memory without bound, and it
expires a retention window after the turn ends.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from opentelemetry.instrumentation.utils import suppress_instrumentation
from redis.asyncio import Redis

from activities.adapters.outages import REDIS_UNAVAILABLE, degraded
from activities.adapters.sealed_text import SealedText
from activities.adapters.tenant_keys import tenant_of_workflow

EVENT_TYPES = ("turn", "token", "reset", "done", "error", "redact", "moderated")
TERMINAL = ("done", "error")
MAX_EVENTS = 20_000


def stream_key(turn_id: str) -> str:
    return f"turnflow:turn:{turn_id}:events"


@dataclass(frozen=True)
class TurnEvent:
    id: str
    type: str
    data: dict[str, Any]


class TurnEvents:
    def __init__(self, redis: Redis, retention_s: int, sealer: SealedText) -> None:
        self.redis = redis
        self.retention_s = retention_s
        self.sealer = sealer

    async def publish(self, turn_id: str, type_: str, data: dict[str, Any]) -> str:
        assert type_ in EVENT_TYPES, type_
        key = stream_key(turn_id)
        raw = json.dumps(data, separators=(",", ":"))
        tenant = tenant_of_workflow(turn_id)
        fields = {"type": type_, "data": await self.sealer.seal(tenant, raw) if tenant else raw}
        if type_ in (*TERMINAL, "redact", "moderated"):
            # Terminal events also (re)start the retention clock; one round trip for both.
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.xadd(key, fields, maxlen=MAX_EVENTS, approximate=True)  # type: ignore[arg-type]
                pipe.expire(key, self.retention_s)
                entry_id, _ = await pipe.execute()
        else:
            # One span per token would drown the turn's trace: token timing is in the metrics instead.
            with suppress_instrumentation():
                entry_id = await self.redis.xadd(key, fields, maxlen=MAX_EVENTS, approximate=True)  # type: ignore[arg-type]
        return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)

    async def read(
        self, turn_id: str, after: str = "0-0", block_ms: int | None = None, count: int = 512
    ) -> list[TurnEvent]:
        """Up to ``count`` events after ``after``; with block_ms, waits that long for the first new one."""
        with suppress_instrumentation():  # a live follower reads once per token or so: no span each
            result: Any = await self.redis.xread({stream_key(turn_id): after}, block=block_ms, count=count)
        tenant = tenant_of_workflow(turn_id)
        events = []
        for _key, entries in result or []:
            for entry_id, fields in entries:
                eid = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
                type_ = fields[b"type"].decode() if b"type" in fields else fields["type"]
                raw = fields[b"data"] if b"data" in fields else fields["data"]
                raw = raw.decode() if isinstance(raw, bytes) else raw
                events.append(
                    TurnEvent(eid, type_, json.loads(await self.sealer.open(tenant, raw) if tenant else raw))
                )
        return events

    async def began(self, turn_id: str) -> bool:
        """Whether an attempt already began streaming this turn (its ``turn`` event is out): a
        local inference run again after its worker died starts at attempt 1, so its count cannot say."""
        with suppress_instrumentation():
            first: Any = await self.redis.xrange(stream_key(turn_id), count=1)  # `turn` is always first
        return bool(first)

    async def streamed_reply(self, turn_id: str) -> tuple[str, int, str] | None:
        """The reply an earlier run of the turn streamed to its end (text, tokens, finish reason), or
        None. A turn whose workflow task could not be completed (Temporal away) runs again from its
        start: its inference gives back what the client already got, rather than another reply."""
        events = await self.read_all(turn_id)
        done = next((e for e in reversed(events) if e.type == "done"), None)
        if done is None:
            return None
        starts = [i for i, e in enumerate(events) if e.type in ("turn", "reset")]
        tokens = [e.data["text"] for e in events[starts[-1] if starts else 0 :] if e.type == "token"]
        return "".join(tokens), len(tokens), str(done.data.get("finish_reason") or "stop")

    async def read_all(self, turn_id: str) -> list[TurnEvent]:
        events: list[TurnEvent] = []
        while batch := await self.read(turn_id, events[-1].id if events else "0-0"):
            events.extend(batch)
        return events


class TurnPublisher:
    """One turn's events, published in order by the step that makes them. While Redis is unreachable
    they wait here (the model keeps generating; the worker never blocks on the bus) and go out, in
    order, once it is back; clients following the stream see a pause, not a gap."""

    RETRY_EVERY_S = 0.25

    def __init__(self, events: TurnEvents, turn_id: str) -> None:
        self.events = events
        self.turn_id = turn_id
        self.pending: deque[tuple[str, dict[str, Any]]] = deque()
        self._next_try = 0.0

    async def publish(self, type_: str, data: dict[str, Any]) -> None:
        self.pending.append((type_, data))
        if time.monotonic() >= self._next_try:
            await self._drain()

    async def _drain(self) -> bool:
        while self.pending:
            type_, data = self.pending[0]
            try:
                await self.events.publish(self.turn_id, type_, data)
            except REDIS_UNAVAILABLE as exc:
                degraded("turn events held in the worker until Redis is back", exc)
                self._next_try = time.monotonic() + self.RETRY_EVERY_S
                return False
            self.pending.popleft()
        return True

    async def flush(self, grace_s: float) -> bool:
        """Publish what is still held, retrying for up to ``grace_s``. False if some could not go:
        clients then get the reply from the turn's result instead of the stream."""
        deadline = time.monotonic() + grace_s
        while not await self._drain():
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(self.RETRY_EVERY_S)
        return True
