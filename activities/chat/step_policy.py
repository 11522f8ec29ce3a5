"""A step that runs inside another activity, under its own temporal.yaml policy.

Retrieval runs inside the turn's prepare step (one local activity instead of four: bench/REPORT.md,
issue 17), yet keeps its own deadline and retries from `activities.retrieve`: each attempt within
``start_to_close``, all of them within ``schedule_to_close``, with the policy's backoff between them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from infra.config.policy import ActivityPolicy

T = TypeVar("T")


async def within_policy(policy: ActivityPolicy, attempt: Callable[[], Awaitable[T]]) -> T:
    """``attempt()`` until it succeeds or the policy gives up; the last error (TimeoutError past a
    deadline) is raised then."""
    retry = policy.retry
    whole = policy.schedule_to_close.total_seconds() if policy.schedule_to_close else None
    async with asyncio.timeout(whole):
        interval = retry.initial_interval.total_seconds()
        tried = 0
        while True:
            tried += 1
            try:
                async with asyncio.timeout(policy.start_to_close.total_seconds()):
                    return await attempt()
            except Exception as exc:
                if type(exc).__name__ in retry.non_retryable or tried == retry.maximum_attempts:
                    raise
            await asyncio.sleep(interval)
            interval = min(interval * retry.backoff, retry.maximum_interval.total_seconds())
