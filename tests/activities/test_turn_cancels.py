"""A turn's cancel on real Redis: announced to the process streaming the reply, kept as a flag for an
inference that begins later."""

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
