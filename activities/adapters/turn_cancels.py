"""A turn's cancel, heard by the process streaming its reply. The API raises the turn's flag (a Redis
key, for an inference that has not begun yet) and announces it on a channel; each process listens on
that channel once, for all the replies it streams, so a cancel costs no polling while nobody cancels.

A local activity hears of a workflow cancel only at its workflow task's next heartbeat, seconds away:
this is how a cancel reaches a local inference within a moment.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from redis.asyncio import Redis

from activities.adapters.channels import follow_channel
from activities.adapters.outages import REDIS_UNAVAILABLE, degraded

log = logging.getLogger("turnflow.turns")

CHANNEL = "turnflow:turns:cancelled"
RELISTEN_S = 1.0


def cancel_key(turn_id: str) -> str:
    return f"turnflow:turn:{turn_id}:cancel"


class TurnCancels:
    def __init__(self, redis: Redis, retention_s: int) -> None:
        self.redis, self.retention_s = redis, retention_s
        self._waiting: dict[str, set[asyncio.Event]] = {}
        self._listener: asyncio.Task[None] | None = None

    async def request(self, turn_id: str) -> None:
        """Ask the turn to stop generating, wherever it streams, now or when its inference begins."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.set(cancel_key(turn_id), b"1", ex=self.retention_s)
            pipe.publish(CHANNEL, turn_id)
            await pipe.execute()

    async def requested(self, turn_id: str) -> bool:
        """Whether the turn was asked to stop (False while Redis cannot say: the reply goes on)."""
        try:
            return bool(await self.redis.exists(cancel_key(turn_id)))
        except REDIS_UNAVAILABLE as exc:
            degraded("turn cancel flags unread until Redis is back", exc)
            return False

    @contextlib.asynccontextmanager
    async def watch(self, turn_id: str) -> AsyncIterator[asyncio.Event]:
        """An event set when the turn is cancelled, while the block runs. Enter it before checking
        `requested`: a cancel after that is announced to it, one before is the flag."""
        event = asyncio.Event()
        self._waiting.setdefault(turn_id, set()).add(event)
        if self._listener is None or self._listener.done():
            self._listener = asyncio.create_task(self._listen())
        try:
            yield event
        finally:
            events = self._waiting.get(turn_id, set())
            events.discard(event)
            if not events:
                self._waiting.pop(turn_id, None)

    def _fire(self, turn_id: str) -> None:
        for event in self._waiting.get(turn_id, ()):
            event.set()

    async def _listen(self) -> None:
        await follow_channel(
            self.redis,
            CHANNEL,
            self._fire,
            on_subscribed=self._catch_up,
            outage="turn cancels not heard until Redis is back",
            retry_s=RELISTEN_S,
        )

    async def _catch_up(self) -> None:
        # Announced while this process was not listening yet (or lost its connection): the flags say.
        for turn_id in list(self._waiting):
            if await self.requested(turn_id):
                self._fire(turn_id)

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._listener
