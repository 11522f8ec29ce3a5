"""What a local inference learns from Redis about its turn, on real Redis: a cancel (announced to the
process streaming the reply, kept as a flag for an inference that begins later), and whether an
earlier run already streamed the reply."""

from __future__ import annotations

import asyncio
import uuid

from activities.adapters.turn_cancels import TurnCancels
from infra.runtime.resources import Resources


async def test_a_cancel_is_heard_by_the_watching_process_at_once(resources: Resources) -> None:
    turn = f"turn-{uuid.uuid4()}"
    streaming, api = TurnCancels(resources.redis, 60), TurnCancels(resources.redis, 60)
    try:
        async with streaming.watch(turn) as cancelled:
            assert not await streaming.requested(turn)
            await asyncio.sleep(0.2)  # its listener subscribed
            assert not cancelled.is_set()
            await api.request(f"turn-{uuid.uuid4()}")  # another turn's cancel is not this one's
            await asyncio.sleep(0.2)
            assert not cancelled.is_set()
            await api.request(turn)
            await asyncio.wait_for(cancelled.wait(), 1.0)
    finally:
        await streaming.close()


async def test_a_cancel_before_the_inference_began_is_its_flag(resources: Resources) -> None:
    turn = f"turn-{uuid.uuid4()}"
    late = TurnCancels(resources.redis, 60)
    await TurnCancels(resources.redis, 60).request(turn)
    try:
        assert await late.requested(turn)
        # A process that begins listening after the announcement still hears of it (from the flag).
        async with late.watch(turn) as cancelled:
            await asyncio.wait_for(cancelled.wait(), 1.0)
    finally:
        await late.close()


async def test_a_turn_run_again_finds_the_reply_its_stream_finished(resources: Resources) -> None:
    """What a local inference run again reads back: the last attempt's tokens once the stream says
    `done` (Temporal could not take the finished task), nothing while it is unfinished (a dead worker:
    the run streams the reply anew)."""
    events, turn = resources.events, f"turn-{uuid.uuid4()}"
    assert not await events.began(turn) and await events.streamed_reply(turn) is None
    await events.publish(turn, "turn", {})
    for i, text in enumerate(["Hel", "lo"]):
        await events.publish(turn, "token", {"text": text, "index": i})
    assert await events.began(turn) and await events.streamed_reply(turn) is None  # not finished
    await events.publish(turn, "reset", {})
    for i, text in enumerate(["Good", "bye", "."]):
        await events.publish(turn, "token", {"text": text, "index": i})
    await events.publish(turn, "done", {"finish_reason": "length"})
    assert await events.streamed_reply(turn) == ("Goodbye.", 3, "length", [])


async def test_a_batch_sent_again_after_its_answer_was_lost_adds_nothing_twice(resources: Resources) -> None:
    """The inference's publisher gives every event after the first an explicit id, so a retry of a
    batch Redis had already applied (Redis went away before answering) leaves one copy of each."""
    from activities.adapters.turn_events import TurnPublisher

    events, turn = resources.events, f"turn-{uuid.uuid4()}"
    async with TurnPublisher(events, turn) as publisher:
        await publisher.publish("turn", {})
        for i in range(5):
            await publisher.publish("token", {"text": str(i), "index": i})
        assert await publisher.flush(5.0)
    sent = await events.read_all(turn)
    assert [e.type for e in sent] == ["turn", *["token"] * 5]
    first_ms, _, first_seq = sent[0].id.partition("-")
    assert [e.id for e in sent[1:]] == [f"{first_ms}-{int(first_seq) + k}" for k in range(1, 6)]
    # The same tokens again under the same ids, with one more: only the new one is added.
    again = [("token", {"text": str(i), "index": i}) for i in range(3, 6)]
    ids = [sent[4].id, sent[5].id, f"{first_ms}-{int(first_seq) + 6}"]
    assert await events.publish_many(turn, again, ids) == ids
    assert [e.data["index"] for e in await events.read_all(turn) if e.type == "token"] == list(range(6))
