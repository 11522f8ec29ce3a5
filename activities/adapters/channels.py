"""Following a Redis pub/sub channel for as long as a process runs, across Redis outages: each
(re)subscription first lets the follower catch up on what it may have missed while it was not
listening, then hands it every message."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from redis.asyncio import Redis

from activities.adapters.outages import degraded


async def follow_channel(
    redis: Redis,
    channel: str,
    on_message: Callable[[str], None],
    *,
    on_subscribed: Callable[[], Awaitable[None]],
    outage: str,
    on_outage: Callable[[], None] | None = None,
    retry_s: float = 1.0,
) -> None:
    """Runs until cancelled. ``outage`` says what the process goes without while Redis is away."""
    while True:
        try:
            async with redis.pubsub() as pubsub:
                await pubsub.subscribe(channel)
                await on_subscribed()  # what was announced while this process was not listening
                async for message in pubsub.listen():
                    if message.get("type") == "message":
                        data = message["data"]
                        on_message(data.decode() if isinstance(data, bytes) else str(data))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # Redis away: nothing to hear; listen again when it is back
            degraded(outage, exc)
            if on_outage is not None:
                on_outage()
            await asyncio.sleep(retry_s)
