"""One Redis reader per API process for every turn it streams: a single blocking XREAD over all the
followed turns' streams, its entries handed to each follower. With a read per follower, 32 streams
cost 32 XREADs per token; with this, one for all of them.

Each follower holds at most ``HELD`` events it has not taken yet: past that its stream is read no
further until it catches up, so a client that stops reading costs no memory beyond that bound (the
events wait in Redis). A follower joining, or one catching up, wakes the reader through a small
stream of its own, so nobody waits for the current read's timeout.

On a Redis Cluster (``by_slot``) one XREAD may only name keys of one slot, so there is one reader per
feed group in use (at most ``FEED_GROUPS``, turn_events.py): a group's streams, and its reader's wake
stream, carry the group's hash tag.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

from redis.asyncio import Redis

from activities.adapters.outages import REDIS_UNAVAILABLE, degraded
from activities.adapters.turn_events import TurnEvent, TurnEvents, feed_group, stream_key

log = logging.getLogger("turnflow.events")

BLOCK_MS = 1000
HELD = 512
RETRY_S = 0.25


def _order(entry_id: str) -> tuple[int, int]:
    """A stream id ("ms-seq") as what it sorts by."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def _after(a: str, b: str) -> bool:
    return _order(a) > _order(b)


class Follower:
    """One client's view of one turn's stream: ``take`` waits for the events after ``last``."""

    def __init__(self, feed: _GroupFeed, turn_id: str, after: str) -> None:
        self.feed = feed
        self.turn_id = turn_id
        self.last = after  # the last id handed to this follower (taken or held)
        self.held: deque[TurnEvent] = deque()
        self.error: BaseException | None = None
        self.broken: BaseException | None = None  # its stream could not be read: for good
        self._ready = asyncio.Event()

    @property
    def has_room(self) -> bool:
        return len(self.held) < HELD

    def give(self, events: list[TurnEvent]) -> None:
        fresh = [e for e in events if _after(e.id, self.last)][: HELD - len(self.held)]
        if fresh:
            self.held.extend(fresh)
            self.last = fresh[-1].id
            self._ready.set()

    def fail(self, exc: BaseException) -> None:
        """The reader's last read met ``exc`` (Redis away)."""
        self.error = exc
        self._ready.set()

    def recover(self) -> None:
        self.error = None

    def break_with(self, exc: BaseException) -> None:
        self.broken = exc
        self._ready.set()

    async def take(self, timeout_s: float) -> list[TurnEvent]:
        """What came since the last take; [] if nothing did within ``timeout_s``. Raises what the
        reader met (Redis unreachable) so the caller degrades as it would reading itself."""
        if not self.held and self.error is None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._ready.wait(), timeout_s)
        self._ready.clear()
        if self.broken is not None:
            raise self.broken
        if self.error is not None and not self.held:
            exc, self.error = self.error, None
            raise exc
        was_full = not self.has_room
        taken = list(self.held)
        self.held.clear()
        if was_full:
            await self.feed.wake()  # its stream is read again
        return taken


class EventFeed:
    """Followers of turns' streams, read by one reader (one per feed group on a Redis Cluster)."""

    def __init__(self, redis: Redis, events: TurnEvents, *, by_slot: bool = False) -> None:
        self.redis, self.events, self.by_slot = redis, events, by_slot
        self._groups: dict[int, _GroupFeed] = {}

    def follow(self, turn_id: str, after: str) -> contextlib.AbstractAsyncContextManager[Follower]:
        group = feed_group(turn_id) if self.by_slot else 0
        if group not in self._groups:
            self._groups[group] = _GroupFeed(self.redis, self.events, group)
        return self._groups[group].follow(turn_id, after)

    async def close(self) -> None:
        for group in self._groups.values():
            await group.close()


class _GroupFeed:
    """The followers of one feed group's streams, and their one reader."""

    def __init__(self, redis: Redis, events: TurnEvents, group: int) -> None:
        self.redis = redis
        self.events = events
        self._wake_key = f"turnflow:feed:{{g{group}}}:{uuid.uuid4().hex}:wake"
        self._wake_last = "0-0"
        self._followers: dict[str, list[Follower]] = {}
        self._reader: asyncio.Task[None] | None = None

    @contextlib.asynccontextmanager
    async def follow(self, turn_id: str, after: str) -> AsyncIterator[Follower]:
        follower = Follower(self, turn_id, after)
        self._followers.setdefault(stream_key(turn_id), []).append(follower)
        try:
            if self._reader is None or self._reader.done():
                self._reader = asyncio.create_task(self._read())
            else:
                await self.wake()
            yield follower
        finally:
            key = stream_key(turn_id)
            followers = self._followers.get(key, [])
            if follower in followers:
                followers.remove(follower)
            if not followers:
                self._followers.pop(key, None)

    async def wake(self) -> None:
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.xadd(self._wake_key, {"w": 1}, maxlen=1)
                pipe.expire(self._wake_key, 60)
                await pipe.execute()
        except REDIS_UNAVAILABLE:
            pass  # the reader meets the outage too, and tells its followers

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        with contextlib.suppress(*REDIS_UNAVAILABLE):
            await self.redis.delete(self._wake_key)

    def _positions(self) -> dict[str, str]:
        """Each followed stream from its least advanced follower that has room."""
        positions: dict[str, str] = {}
        for key, followers in self._followers.items():
            open_ = [f.last for f in followers if f.has_room]
            if open_:
                positions[key] = min(open_, key=_order)
        return positions

    async def _read(self) -> None:
        while self._followers:
            streams: dict[Any, Any] = {**self._positions(), self._wake_key: self._wake_last}
            try:
                result: Any = await self.redis.xread(streams, block=BLOCK_MS, count=HELD)
            except REDIS_UNAVAILABLE as exc:
                degraded("streams wait, then end with the turn's result", exc)
                for followers in list(self._followers.values()):
                    for follower in followers:
                        follower.fail(exc)
                await asyncio.sleep(RETRY_S)
                continue
            except Exception as exc:
                # Not an outage (e.g. a Redis Cluster refusing keys of two slots): its followers fail
                # at once rather than wait on a reader that is gone; the next follow starts another.
                log.exception("the event feed's read failed")
                for followers in list(self._followers.values()):
                    for follower in followers:
                        follower.break_with(exc)
                return
            for followers in list(self._followers.values()):
                for follower in followers:
                    follower.recover()  # Redis answers again
            for raw_key, entries in result or []:
                key = raw_key.decode() if isinstance(raw_key, bytes) else raw_key
                if key == self._wake_key:
                    last = entries[-1][0]
                    self._wake_last = last.decode() if isinstance(last, bytes) else last
                    continue
                readers = self._followers.get(key)
                if not readers:
                    continue
                try:
                    decoded = await self.events.decode(readers[0].turn_id, entries)
                except Exception as exc:
                    # An entry that cannot be opened fails its turn's followers, not every stream.
                    log.exception("events of %s could not be read", readers[0].turn_id)
                    for follower in self._followers.pop(key, []):
                        follower.break_with(exc)
                    continue
                for follower in readers:
                    follower.give(decoded)
