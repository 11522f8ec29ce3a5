"""Per-tenant rate limits in Redis over a sliding window (a log of entries, one Lua script per check):
requests per window on every authenticated route (api/core/tenancy.py), and tokens per window, checked
before a turn starts and counted when its reply is persisted (activities/chat/transcript.py).

Limits come from settings (TURNFLOW_RATE_LIMIT_*) and a tenant's own `requests_per_min` /
`tokens_per_min`. Over a limit the caller learns how long until the oldest entry leaves the window.
"""

from __future__ import annotations

import time
import uuid

from redis.asyncio import Redis

from activities.adapters.outages import REDIS_UNAVAILABLE, degraded

PREFIX = "turnflow:ratelimit:"

# KEYS: the window's sorted set. ARGV: now_ms, window_ms, limit, member, weight (0: only check),
# "count" when every entry weighs 1 (else "sum"). Members are "<id>:<weight>"; returns
# {allowed (1/0), ms until the oldest entry leaves}.
_WINDOW = """
local now, window, limit = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local used = 0
if ARGV[6] == 'count' then
  used = redis.call('ZCARD', KEYS[1])  -- every entry weighs 1: no need to read them
else
  for _, member in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
    used = used + tonumber(string.match(member, ':(%d+)$'))
  end
end
if used >= limit then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return {0, tonumber(oldest[2]) + window - now}
end
if tonumber(ARGV[5]) > 0 then
  redis.call('ZADD', KEYS[1], now, ARGV[4])
  redis.call('PEXPIRE', KEYS[1], window)
end
return {1, 0}
"""


class RateLimited(Exception):
    def __init__(self, what: str, limit: int, retry_ms: int) -> None:
        super().__init__(f"rate limit: {limit} {what} per window")
        self.what = what
        self.limit = limit
        self.retry_ms = retry_ms


class RateLimiter:
    def __init__(self, redis: Redis, window_s: float) -> None:
        self.redis = redis
        self.window_ms = int(window_s * 1000)
        self._window = redis.register_script(_WINDOW)

    async def _take(self, key: str, limit: int, member: str, weight: int, *, unit: bool = False) -> int:
        now = int(time.time() * 1000)
        mode = "count" if unit else "sum"
        try:
            allowed, retry_ms = await self._window(
                keys=[PREFIX + key], args=[now, self.window_ms, limit, f"{member}:{weight}", weight, mode]
            )
        except REDIS_UNAVAILABLE as exc:
            # Limits fail open (as Envoy's rate limiter does by default): an outage of the counter
            # must not refuse every request. Turns stay bounded by admission, which fails closed.
            degraded("rate limits not enforced", exc)
            return 0
        return 0 if allowed else int(retry_ms)

    async def request(self, tenant_id: str, limit: int) -> None:
        """Count one request; RateLimited when the tenant has made ``limit`` within the window."""
        if retry := await self._take(f"{tenant_id}:requests", limit, uuid.uuid4().hex, 1, unit=True):
            raise RateLimited("requests", limit, retry)

    async def tokens_allow(self, tenant_id: str, limit: int) -> None:
        """RateLimited when the tenant's turns used ``limit`` tokens within the window (before a turn)."""
        if retry := await self._take(f"{tenant_id}:tokens", limit, "check", 0):
            raise RateLimited("tokens", limit, retry)

    async def tokens_used(self, tenant_id: str, turn_id: str, tokens: int) -> None:
        """Record a finished turn's tokens (once per turn: the member is the turn id)."""
        if tokens > 0:
            await self._take(f"{tenant_id}:tokens", 2**62, turn_id, tokens)
