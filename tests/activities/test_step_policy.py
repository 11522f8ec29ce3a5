"""A step inside another activity (retrieval inside the prepare step) keeps its own temporal.yaml
policy: attempts, each within start_to_close, all within schedule_to_close, backoff between them."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

import pytest

from activities.chat.step_policy import within_policy
from infra.config.policy import ActivityPolicy, RetryPolicy


def policy(attempts: int, each_ms: int, whole_ms: int | None = None, non_retryable: list[str] | None = None):
    return ActivityPolicy(
        start_to_close=timedelta(milliseconds=each_ms),
        schedule_to_close=timedelta(milliseconds=whole_ms) if whole_ms else None,
        retry=RetryPolicy(
            initial_interval=timedelta(milliseconds=10),
            backoff=2.0,
            maximum_interval=timedelta(milliseconds=40),
            maximum_attempts=attempts,
            non_retryable=non_retryable or [],
        ),
    )


class Flaky:
    def __init__(self, failures: int, error: type[Exception] = ConnectionError, hang_s: float = 0) -> None:
        self.failures, self.error, self.hang_s = failures, error, hang_s
        self.calls: list[float] = []

    async def __call__(self) -> str:
        self.calls.append(time.monotonic())
        if len(self.calls) <= self.failures:
            if self.hang_s:
                await asyncio.sleep(self.hang_s)
            raise self.error("not yet")
        return "found"


async def test_a_failed_attempt_is_tried_again_after_the_backoff() -> None:
    step = Flaky(failures=2)
    assert await within_policy(policy(attempts=3, each_ms=500), step) == "found"
    assert len(step.calls) == 3
    gaps = [b - a for a, b in zip(step.calls, step.calls[1:], strict=False)]
    assert gaps[0] >= 0.009 and gaps[1] >= 0.019  # 10 ms, then 20 ms


async def test_the_last_attempts_error_is_raised_once_they_are_spent() -> None:
    step = Flaky(failures=5)
    with pytest.raises(ConnectionError):
        await within_policy(policy(attempts=2, each_ms=500), step)
    assert len(step.calls) == 2


async def test_a_non_retryable_error_is_not_tried_again() -> None:
    step = Flaky(failures=5, error=PermissionError)
    with pytest.raises(PermissionError):
        await within_policy(policy(attempts=5, each_ms=500, non_retryable=["PermissionError"]), step)
    assert len(step.calls) == 1


async def test_an_attempt_past_start_to_close_times_out_and_is_tried_again() -> None:
    step = Flaky(failures=1, hang_s=10)
    started = time.monotonic()
    assert await within_policy(policy(attempts=2, each_ms=100), step) == "found"
    assert 0.1 <= time.monotonic() - started < 1 and len(step.calls) == 2


async def test_schedule_to_close_bounds_every_attempt_together() -> None:
    step = Flaky(failures=100, hang_s=10)
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        await within_policy(policy(attempts=0, each_ms=100, whole_ms=250), step)  # 0: unlimited attempts
    assert 0.25 <= time.monotonic() - started < 1 and 2 <= len(step.calls) <= 3
