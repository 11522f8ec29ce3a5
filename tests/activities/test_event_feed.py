"""The API process's one reader of turns' event streams (activities/adapters/event_feed.py), on real
Redis: every follower gets its own turn's events in order, a follower joining is served at once, a
follower that stops taking holds no more than the bound and loses nothing, and the publisher's
batches (several tokens in one round trip) read back as single events."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from activities.adapters import event_feed
from activities.adapters.event_feed import EventFeed
from activities.adapters.turn_events import stream_key
from infra.runtime.resources import Resources


def turn() -> str:
    return f"turn-{uuid.uuid4()}"


async def test_followers_of_several_turns_share_one_reader(resources: Resources) -> None:
    events, feed = resources.events, EventFeed(resources.redis, resources.events)
    a, b = turn(), turn()
    try:
        async with feed.follow(a, "0-0") as fa, feed.follow(b, "0-0") as fb:
            await events.publish_many(a, [("turn", {}), ("token", {"text": "x", "index": 0})])
            await events.publish(b, "turn", {"n": 1})
            got_a = await fa.take(2.0)
            got_b = await fb.take(2.0)
            assert [e.type for e in got_a] == ["turn", "token"] and got_a[1].data["text"] == "x"
            assert [(e.type, e.data) for e in got_b] == [("turn", {"n": 1})]
            assert await fa.take(0.2) == []  # nothing new: an empty answer after the wait
            # A second follower of the same turn, from the start, sees it all too (a resumed client).
            async with feed.follow(a, "0-0") as again:
                assert [e.id for e in await again.take(2.0)] == [e.id for e in got_a]
    finally:
        await feed.close()


async def test_a_follower_joining_is_served_without_waiting_for_the_current_read(
    resources: Resources,
) -> None:
    events, feed = resources.events, EventFeed(resources.redis, resources.events)
    idle, late = turn(), turn()
    try:
        async with feed.follow(idle, "0-0"):
            await asyncio.sleep(0.1)  # the reader is blocked on the idle turn's stream
            async with feed.follow(late, "0-0") as follower:
                await events.publish(late, "turn", {})
                started = time.monotonic()
                assert [e.type for e in await follower.take(5.0)] == ["turn"]
                assert time.monotonic() - started < event_feed.BLOCK_MS / 1000 / 2
    finally:
        await feed.close()


async def test_a_follower_that_stops_taking_holds_a_bounded_number_and_loses_nothing(
    resources: Resources, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(event_feed, "HELD", 8)
    events, feed = resources.events, EventFeed(resources.redis, resources.events)
    slow = turn()
    try:
        async with feed.follow(slow, "0-0") as follower:
            await events.publish_many(slow, [("token", {"text": str(i), "index": i}) for i in range(30)])
            await asyncio.sleep(0.5)
            assert len(follower.held) == 8  # the rest wait in Redis, not in this process
            seen: list[str] = []
            while len(seen) < 30:
                seen += [e.data["text"] for e in await follower.take(2.0)]
            assert seen == [str(i) for i in range(30)]
    finally:
        await feed.close()


async def test_a_stream_that_cannot_be_read_fails_its_followers_only(resources: Resources) -> None:
    events, feed = resources.events, EventFeed(resources.redis, resources.events)
    bad, good = turn(), turn()
    try:
        async with feed.follow(bad, "0-0") as broken, feed.follow(good, "0-0") as fine:
            await resources.redis.xadd(stream_key(bad), {"type": "token", "data": "not json"})
            with pytest.raises(ValueError):
                await broken.take(2.0)
            await events.publish(good, "turn", {})
            assert [e.type for e in await fine.take(2.0)] == ["turn"]
    finally:
        await feed.close()
