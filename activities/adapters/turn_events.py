"""Each turn's events in a Redis Stream: written by activities as they happen, read by the SSE API.

Entry ids are the SSE ``id:`` values, so ``Last-Event-ID`` resumes exactly after what a client saw.
Each event's data is sealed with its tenant's key (the tenant is in the turn id; ids made elsewhere,
by tests and tools, name none and stay clear); its type is not.
The stream is capped (approximately) so a runaway turn cannot grow memory without bound, and it
expires a retention window after the turn ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import zlib
from collections import deque
from dataclasses import dataclass
from typing import Any, NamedTuple

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from activities.adapters.outages import REDIS_UNAVAILABLE, degraded
from activities.adapters.sealed_text import SealedText
from activities.adapters.tenant_keys import tenant_of_workflow

log = logging.getLogger("turnflow.events")

EVENT_TYPES = ("turn", "token", "tool_call", "reset", "done", "error", "redact", "moderated")
TERMINAL = ("done", "error")
_WORD_PIECE = re.compile(r"\s*\S+|\s+$")
MAX_EVENTS = 20_000
# Redis's answer to an explicit entry id at or below the stream's last one.
_ALREADY_ADDED = "equal or smaller than the target stream top item"


# A turn's stream carries the hash tag of its feed group ({g0} to {g15}): in a Redis Cluster one group's
# streams share a slot, so an API process reads all it follows of a group with one XREAD (event_feed.py).
FEED_GROUPS = 16


def feed_group(turn_id: str) -> int:
    return zlib.crc32(turn_id.encode()) % FEED_GROUPS


def stream_key(turn_id: str) -> str:
    return f"turnflow:turn:{{g{feed_group(turn_id)}}}:{turn_id}:events"


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
        return (await self.publish_many(turn_id, [(type_, data)]))[-1]

    async def publish_many(
        self, turn_id: str, batch: list[tuple[str, dict[str, Any]]], ids: list[str] | None = None
    ) -> list[str]:
        """Append events in order, in one round trip; all or none of them (MULTI/EXEC) when several.
        With ``ids`` (explicit entry ids, one per event), an event already in the stream under its id
        is not added again: a batch sent again after an answer was lost adds nothing twice."""
        key = stream_key(turn_id)
        tenant = tenant_of_workflow(turn_id)
        terminal = False
        async with self.redis.pipeline(transaction=len(batch) > 1) as pipe:
            for i, (type_, data) in enumerate(batch):
                assert type_ in EVENT_TYPES, type_
                raw = json.dumps(data, separators=(",", ":"))
                fields = {"type": type_, "data": await self.sealer.seal(tenant, raw) if tenant else raw}
                entry_id = ids[i] if ids else "*"
                pipe.xadd(key, fields, id=entry_id, maxlen=MAX_EVENTS, approximate=True)  # type: ignore[arg-type]
                terminal = terminal or type_ in (*TERMINAL, "redact", "moderated")
            if terminal:
                pipe.expire(key, self.retention_s)  # terminal events also (re)start the retention clock
            replies = await pipe.execute(raise_on_error=False)
        added = []
        for i, reply in enumerate(replies[: len(batch)]):
            if isinstance(reply, ResponseError):
                if not (ids and _ALREADY_ADDED in str(reply)):
                    raise reply
                reply = ids[i]  # in the stream already, from the send whose answer was lost
            added.append(reply.decode() if isinstance(reply, bytes) else str(reply))
        for reply in replies[len(batch) :]:
            if isinstance(reply, Exception):
                raise reply
        return added

    async def read(
        self, turn_id: str, after: str = "0-0", block_ms: int | None = None, count: int = 512
    ) -> list[TurnEvent]:
        """Up to ``count`` events after ``after``; with block_ms, waits that long for the first new one."""
        result: Any = await self.redis.xread({stream_key(turn_id): after}, block=block_ms, count=count)
        return [e for _key, entries in result or [] for e in await self.decode(turn_id, entries)]

    async def decode(self, turn_id: str, entries: list[Any]) -> list[TurnEvent]:
        """Entries of the turn's stream, as Redis gives them, opened with the tenant's key."""
        tenant = tenant_of_workflow(turn_id)
        events = []
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
        first: Any = await self.redis.xrange(stream_key(turn_id), count=1)  # `turn` is always first
        return bool(first)

    async def streamed_reply(self, turn_id: str) -> StreamedReply | None:
        """The reply an earlier run of the turn streamed to its end, or None. A turn whose workflow
        task could not be completed (Temporal away) runs again from its start: its inference gives
        back what the client already got, rather than another reply."""
        events = await self.read_all(turn_id)
        done = next((e for e in reversed(events) if e.type == "done"), None)
        if done is None:
            return None
        starts = [i for i, e in enumerate(events) if e.type in ("turn", "reset")]
        tokens = [e.data["text"] for e in events[starts[-1] if starts else 0 :] if e.type == "token"]
        return StreamedReply(
            "".join(tokens),
            len(tokens),
            str(done.data.get("finish_reason") or "stop"),
            list(done.data.get("tool_calls") or []),
        )

    async def publish_reply(self, turn_id: str, meta: dict[str, Any], text: str) -> None:
        """A reply no model streams (a cached one, an answer from the sources), in one transaction:
        `turn` (or `reset`, after an earlier attempt's or a model's events), then its words as tokens
        (whitespace kept with the word after it, so a client's text is the reply exactly)."""
        first = "reset" if await self.began(turn_id) else "turn"
        words = _WORD_PIECE.findall(text)
        await self.publish_many(
            turn_id, [(first, meta), *(("token", {"text": w, "index": i}) for i, w in enumerate(words))]
        )

    async def read_all(self, turn_id: str) -> list[TurnEvent]:
        events: list[TurnEvent] = []
        while batch := await self.read(turn_id, events[-1].id if events else "0-0"):
            events.extend(batch)
        return events


def turn_meta(
    turn_id: str,
    conversation_id: str,
    request_id: str,
    *,
    model: str | None,
    attempt: int,
    model_version: str | None = None,
    route: str | None = None,
    degraded: bool | str = False,
    **extra: Any,
) -> dict[str, Any]:
    """What a `turn` (or `reset`) event says: whose turn, which model answers (None: no model),
    whether it is degraded (`extractive`: from the sources), and which attempt this is."""
    return {
        "turn_id": turn_id,
        "conversation_id": conversation_id,
        "request_id": request_id,
        "model": model,
        "model_version": model_version,
        "route": route,
        "degraded": degraded,
        "attempt": attempt,
        **extra,
    }


class StreamedReply(NamedTuple):
    text: str
    tokens: int
    finish_reason: str
    # OpenAI's shape, as the `done` event carries them.
    tool_calls: list[dict[str, Any]]


class TurnPublisher:
    """One turn's events, in order, from the step that makes them, sent by a task of their own: the
    model's stream never waits for Redis. Events that come while a send is on its way go out
    together in the next one, so a busy worker makes one round trip for several tokens (an idle one
    sends each at once). While Redis is unreachable they wait here (the model keeps generating) and
    go out, in order, once it is back; clients following the stream see a pause, not a gap.

    Events after the attempt's first take explicit, consecutive entry ids after the one Redis gave
    it (only this attempt writes to the turn's stream while it streams), so a batch sent again after
    Redis went away mid-answer adds nothing twice.

    Use as ``async with``: leaving it stops the sender, so a next attempt's events never interleave
    with this one's."""

    RETRY_EVERY_S = 0.25

    def __init__(self, events: TurnEvents, turn_id: str) -> None:
        self.events = events
        self.turn_id = turn_id
        self.pending: deque[tuple[str, dict[str, Any]]] = deque()
        self._ids: deque[str] = deque()  # the entry ids of the pending events that have one
        self._next: tuple[int, int] | None = None  # the next explicit id, once the first is out
        self._sender: asyncio.Task[None] | None = None

    async def __aenter__(self) -> TurnPublisher:
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._sender is not None and not self._sender.done():
            self._sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sender

    async def publish(self, type_: str, data: dict[str, Any]) -> None:
        self.pending.append((type_, data))
        if self._sender is None or self._sender.done():
            self._sender = asyncio.create_task(self._send())

    def _batch(self) -> tuple[list[tuple[str, dict[str, Any]]], list[str] | None]:
        if self._next is None:  # the first event: Redis gives its id
            return [self.pending[0]], None
        while len(self._ids) < len(self.pending):
            ms, seq = self._next
            self._ids.append(f"{ms}-{seq}")
            self._next = (ms, seq + 1)
        return list(self.pending), list(self._ids)

    async def _send(self) -> None:
        while self.pending:
            batch, ids = self._batch()
            try:
                added = await self.events.publish_many(self.turn_id, batch, ids)
            except REDIS_UNAVAILABLE as exc:
                degraded("turn events held in the worker until Redis is back", exc)
                await asyncio.sleep(self.RETRY_EVERY_S)
                continue
            if self._next is None:
                ms, _, seq = added[0].partition("-")
                self._next = (int(ms), int(seq) + 1)
            for _ in batch:
                self.pending.popleft()
            if ids:
                self._ids.clear()

    async def flush(self, grace_s: float) -> bool:
        """Wait up to ``grace_s`` for what is still held to go out. False if some could not: clients
        then get the reply from the turn's result instead of the stream."""
        if self._sender is not None and not self._sender.done():
            await asyncio.wait({self._sender}, timeout=grace_s)
        if self._sender is not None and not self._sender.done():
            await self.__aexit__()
        elif self._sender is not None and not self._sender.cancelled() and self._sender.exception():
            log.error("turn %s: its events' sender failed", self.turn_id, exc_info=self._sender.exception())
        return not self.pending
