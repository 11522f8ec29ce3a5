"""Circuit breakers per model endpoint, shared by every worker through Redis.

closed: calls go through, and each outcome (ok, failed, or slow: a first token later than
`slow_call`) lands in a sliding window; when at least `min_calls` are in the window and the failed or
slow share reaches `failure_rate`, or the last `consecutive_failures` calls all went wrong (a server
that just died, behind a window full of earlier successes), the circuit opens. open: calls are
refused until `cooldown` has passed. Then one caller at a time may probe (half-open): a good probe
closes the circuit, a bad one opens it for another cooldown. Each transition is one Lua script, so
workers never race.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Literal

from redis.asyncio import Redis

from activities.adapters.outages import REDIS_UNAVAILABLE, degraded
from infra.config.models import BreakerPolicy

State = Literal["closed", "open", "half_open"]
Outcome = Literal["ok", "failed", "slow"]

PREFIX = "turnflow:breaker:"

# KEYS: state hash, window of all calls, window of bad calls. ARGV: now_ms, outcome (0 ok, 1 bad),
# window_ms, min_calls, failure_rate, cooldown_ms, a unique member, consecutive failures that open it.
# Returns the state after.
_RECORD = """
local now = tonumber(ARGV[1])
local bad = tonumber(ARGV[2]) == 1
local state = redis.call('HGET', KEYS[1], 'state') or 'closed'
if state == 'open' then
  return 'open'  -- a call that started before the circuit opened: its outcome changes nothing
end
if state == 'half_open' then
  -- the probe's outcome decides
  if bad then
    redis.call('HSET', KEYS[1], 'state', 'open', 'open_until', now + tonumber(ARGV[6]))
    redis.call('HDEL', KEYS[1], 'probe_until')
    return 'open'
  end
  redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
  return 'closed'
end
local since = now - tonumber(ARGV[3])
redis.call('ZADD', KEYS[2], now, ARGV[7])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', since)
redis.call('PEXPIRE', KEYS[2], ARGV[3])
if bad then
  redis.call('ZADD', KEYS[3], now, ARGV[7])
  redis.call('PEXPIRE', KEYS[3], ARGV[3])
end
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', since)
local calls = redis.call('ZCARD', KEYS[2])
local failed = redis.call('ZCARD', KEYS[3])
local streak = 0
if bad then
  streak = redis.call('HINCRBY', KEYS[1], 'streak', 1)
else
  redis.call('HSET', KEYS[1], 'streak', 0)
end
if streak >= tonumber(ARGV[8]) or (calls >= tonumber(ARGV[4]) and failed / calls >= tonumber(ARGV[5])) then
  redis.call('HSET', KEYS[1], 'state', 'open', 'open_until', now + tonumber(ARGV[6]), 'streak', 0)
  redis.call('DEL', KEYS[2], KEYS[3])
  return 'open'
end
return 'closed'
"""

# KEYS: state hash. ARGV: now_ms, probe_ms. Returns 1 when a call may go, 0 when it may not.
_ACQUIRE = """
local now = tonumber(ARGV[1])
local state = redis.call('HGET', KEYS[1], 'state')
if not state or state == 'closed' then return 1 end
if state == 'open' and now < tonumber(redis.call('HGET', KEYS[1], 'open_until')) then return 0 end
local probe_until = tonumber(redis.call('HGET', KEYS[1], 'probe_until') or '0')
if now < probe_until then return 0 end
redis.call('HSET', KEYS[1], 'state', 'half_open', 'probe_until', now + tonumber(ARGV[2]))
return 1
"""


@dataclass(frozen=True)
class BreakerView:
    state: State
    # open, but its cool-down is over: the next caller may probe
    probe_ready: bool = False

    @property
    def admits(self) -> bool:
        return self.state == "closed" or self.probe_ready


class CircuitBreakers:
    def __init__(self, redis: Redis, policy: BreakerPolicy) -> None:
        self.redis = redis
        self.policy = policy
        self._record = redis.register_script(_RECORD)
        self._acquire = redis.register_script(_ACQUIRE)

    @staticmethod
    def _keys(endpoint: str) -> list[str]:
        # Hash-tagged by endpoint: each script's keys are in one Redis Cluster slot.
        base = f"{PREFIX}{{{endpoint}}}"
        return [base, base + ":calls", base + ":failed"]

    @staticmethod
    def _now_ms() -> int:
        return int(time.time() * 1000)

    async def views(self, endpoints: list[str]) -> dict[str, BreakerView]:
        """Every endpoint's state in one round trip, without side effects."""
        pipe = self.redis.pipeline(transaction=False)
        for url in endpoints:
            pipe.hmget(self._keys(url)[0], "state", "open_until", "probe_until")
        now = self._now_ms()
        views: dict[str, BreakerView] = {}
        for url, (state, open_until, probe_until) in zip(endpoints, await pipe.execute(), strict=True):
            if state is None or state == b"closed":
                views[url] = BreakerView("closed")
                continue
            cooled = now >= int(open_until or 0)
            idle = now >= int(probe_until or 0)
            name: State = "open" if state == b"open" else "half_open"
            views[url] = BreakerView(name, probe_ready=cooled and idle)
        return views

    async def acquire(self, endpoint: str) -> bool:
        """May a call go to this endpoint now? Closed: yes. Open and cooled down: one probe at a time."""
        probe_ms = int(self.policy.cooldown.total_seconds() * 1000)
        try:
            return bool(await self._acquire(keys=self._keys(endpoint)[:1], args=[self._now_ms(), probe_ms]))
        except REDIS_UNAVAILABLE as exc:
            degraded("circuit breakers admit every call", exc)
            return True

    async def record(self, endpoint: str, outcome: Outcome) -> State:
        p = self.policy
        try:
            state = await self._record(
                keys=self._keys(endpoint),
                args=[
                    self._now_ms(),
                    0 if outcome == "ok" else 1,
                    int(p.window.total_seconds() * 1000),
                    p.min_calls,
                    p.failure_rate,
                    int(p.cooldown.total_seconds() * 1000),
                    f"{self._now_ms()}:{uuid.uuid4().hex}",
                    p.consecutive_failures,
                ],
            )
        except REDIS_UNAVAILABLE as exc:
            degraded("circuit breakers not told of call outcomes", exc)
            return "closed"
        return "open" if state == b"open" else "closed"

    def outcome_of(self, ttft_ms: float | None) -> Outcome:
        slow_ms = self.policy.slow_call.total_seconds() * 1000
        return "slow" if ttft_ms is not None and ttft_ms > slow_ms else "ok"

    async def reset(self, endpoint: str) -> None:
        await self.redis.delete(*self._keys(endpoint))
