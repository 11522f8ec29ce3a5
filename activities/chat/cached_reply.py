"""A response cache hit (activities/adapters/response_cache.py), served as a turn: the `turn` event
says it is cached and where it came from, then the reply's tokens, all at once.

At once, not paced like a model: the answer exists already, and pacing it would only add latency to
look like generation; clients render token events as they come either way.
"""

from __future__ import annotations

from datetime import UTC, datetime

from temporalio import activity

from activities.adapters.turn_events import TurnEvents, turn_meta
from activities.contracts.turn import InferResult, ServeCachedInput
from infra.telemetry import metrics


class CachedReplies:
    def __init__(self, events: TurnEvents) -> None:
        self.events = events

    @activity.defn(name="serve_cached")
    async def serve_cached(self, inp: ServeCachedInput) -> InferResult:
        cached, target = inp.cached, inp.target
        meta = turn_meta(
            inp.turn_id,
            inp.conversation_id,
            inp.request_id,
            model=target.name,
            model_version=target.version,
            route=inp.route_rule,
            attempt=activity.info().attempt,
            cached={"turn_id": cached.turn_id, "message_id": cached.message_id},
        )
        await self.events.publish_reply(inp.turn_id, meta, cached.text)
        ttft_s = (datetime.now(UTC) - inp.started).total_seconds()
        metrics.response_cache_ttft.record(max(ttft_s, 0.0), {"model": target.name})
        return InferResult(
            text=cached.text,
            model=target.name,
            model_version=target.version,
            # No model ran: the reply cost no model tokens.
            input_tokens=0,
            output_tokens=0,
            ttft_ms=round(ttft_s * 1000, 1),
            finish_reason=cached.finish_reason,
        )
