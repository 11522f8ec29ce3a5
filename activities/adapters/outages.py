"""Outages of the services a turn leans on, as the clients report them, and a throttled log line.

Redis is turnflow's cache and event bus, never its record: while it is unreachable, turns go on
without it where they can (caches miss, breakers admit, tokens wait in memory). While Temporal
restarts, workers and API followers retry. Each says so in the log, at most once per interval per
thing degraded rather than once per call."""

from __future__ import annotations

import logging
import time

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from temporalio.service import RPCError, RPCStatusCode

# What redis-py raises when the server is down, restarting or not answering in time.
REDIS_UNAVAILABLE = (RedisConnectionError, RedisTimeoutError)
WARN_EVERY_S = 10.0

log = logging.getLogger("turnflow.outages")
_last_warned: dict[str, float] = {}


def temporal_unavailable(exc: BaseException) -> bool:
    """Temporal down or restarting (a call to retry), not a refusal of the call itself."""
    return isinstance(exc, RPCError) and exc.status in (
        RPCStatusCode.UNAVAILABLE,
        RPCStatusCode.DEADLINE_EXCEEDED,
    )


def degraded(what: str, exc: BaseException, dependency: str = "redis") -> None:
    """Log that ``what`` went on without ``dependency`` (throttled per ``what``)."""
    now = time.monotonic()
    if now - _last_warned.get(what, -WARN_EVERY_S) >= WARN_EVERY_S:
        _last_warned[what] = now
        log.warning("%s unavailable (%s): %s", dependency, exc.__class__.__name__, what)
