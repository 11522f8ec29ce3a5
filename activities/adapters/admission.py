"""Admission control for interactive turns: at most ``limit`` in flight on the chat task queue, across
every API process (a Redis sorted set of turn ids, scored by when each would time out). Past the limit
a new turn is refused at once (503, `Retry-After`, retryable) rather than queued behind work the model
cannot do in time.

A turn leaves the set when its transcript is persisted (activities/chat/transcript.py), whatever its end;
one that never gets there (a whole-turn timeout) leaves when its score passes. A client retrying a turn
it started (the same Idempotency-Key) is always let in: that is not new work.
"""

from __future__ import annotations

import time

from redis.asyncio import Redis

from infra.telemetry import metrics

PREFIX = "turnflow:turns:inflight:"

# KEYS: the set. ARGV: now_ms, limit, turn id, deadline_ms. Returns {admitted (1/0), in flight}.
_ADMIT = """
local now, limit = tonumber(ARGV[1]), tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZSCORE', KEYS[1], ARGV[3]) then
  return {1, redis.call('ZCARD', KEYS[1])}
end
local inflight = redis.call('ZCARD', KEYS[1])
if inflight >= limit then
  return {0, inflight}
end
redis.call('ZADD', KEYS[1], ARGV[4], ARGV[3])
return {1, inflight + 1}
"""


class Overloaded(Exception):
    def __init__(self, inflight: int, retry_after_s: int) -> None:
        super().__init__(f"turnflow is at capacity ({inflight} turns in flight); retry in {retry_after_s} s")
        self.retry_after_s = retry_after_s


class TurnAdmission:
    def __init__(self, redis: Redis, queue: str, limit: int, retry_after_s: int) -> None:
        self.redis = redis
        self.key = PREFIX + queue
        self.limit = limit
        self.retry_after_s = retry_after_s
        self._admit = redis.register_script(_ADMIT)

    async def admit(self, turn_id: str, timeout_s: float) -> None:
        """Let the turn in, or raise Overloaded. ``timeout_s``: when it leaves the set at the latest."""
        now = int(time.time() * 1000)
        admitted, inflight = await self._admit(
            keys=[self.key], args=[now, self.limit, turn_id, now + int(timeout_s * 1000)]
        )
        if not admitted:
            metrics.turns_shed.add(1)
            raise Overloaded(int(inflight), self.retry_after_s)

    async def release(self, turn_id: str) -> None:
        await self.redis.zrem(self.key, turn_id)
