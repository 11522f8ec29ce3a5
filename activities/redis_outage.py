"""Redis is turnflow's cache and event bus, never its record: while it is unreachable, turns go on
without it where they can (caches miss, breakers admit, tokens wait in memory) and say so in the log,
at most once per interval per thing degraded rather than once per call."""

from __future__ import annotations

import logging
import time

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

# What redis-py raises when the server is down, restarting or not answering in time.
REDIS_UNAVAILABLE = (RedisConnectionError, RedisTimeoutError)
WARN_EVERY_S = 10.0

log = logging.getLogger("turnflow.redis")
_last_warned: dict[str, float] = {}


def degraded(what: str, exc: BaseException) -> None:
    """Log that ``what`` went on without Redis (throttled per ``what``)."""
    now = time.monotonic()
    if now - _last_warned.get(what, -WARN_EVERY_S) >= WARN_EVERY_S:
        _last_warned[what] = now
        log.warning("redis unavailable (%s): %s", exc.__class__.__name__, what)
