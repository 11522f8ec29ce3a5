"""Circuit breakers on the real Redis: shared by workers, opening on error rate or slowness, half-opening
for one probe after the cool-down, closing again on recovery."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest_asyncio
from redis.asyncio import Redis

from activities.adapters.breaker import CircuitBreakers
from infra.config.models import BreakerPolicy
from tests.support.services import Services

POLICY = BreakerPolicy(
    window=timedelta(seconds=30),
    min_calls=4,
    failure_rate=0.5,
    consecutive_failures=10,  # the rate decides, in these tests
    slow_call=timedelta(milliseconds=500),
    cooldown=timedelta(milliseconds=400),
)


@pytest_asyncio.fixture
async def redis(services: Services) -> AsyncIterator[Redis]:
    client = Redis.from_url(services.endpoints.redis_url)
    try:
        yield client
    finally:
        await client.aclose()


def endpoint() -> str:
    return f"http://model-{uuid.uuid4().hex[:8]}:80"


async def test_opens_at_the_failure_rate_once_enough_calls_are_in_the_window(redis: Redis) -> None:
    worker_a, worker_b = CircuitBreakers(redis, POLICY), CircuitBreakers(redis, POLICY)
    url = endpoint()
    assert await worker_a.record(url, "failed") == "closed"  # one call is not a rate
    assert await worker_b.record(url, "ok") == "closed"
    assert await worker_a.record(url, "failed") == "closed"  # 2 of 3: not enough calls yet
    assert await worker_b.record(url, "failed") == "open"  # 3 of 4, from two workers
    assert (await worker_a.views([url]))[url].state == "open"
    assert not await worker_a.acquire(url) and not await worker_b.acquire(url)


async def test_mostly_healthy_traffic_keeps_it_closed(redis: Redis) -> None:
    breakers = CircuitBreakers(redis, POLICY)
    url = endpoint()
    for outcome in ["ok", "failed", "ok", "ok", "failed", "ok", "ok"]:
        assert await breakers.record(url, outcome) == "closed"  # type: ignore[arg-type]
    assert (await breakers.views([url]))[url].admits


async def test_slow_first_tokens_count_against_the_endpoint(redis: Redis) -> None:
    breakers = CircuitBreakers(redis, POLICY)
    url = endpoint()
    assert breakers.outcome_of(900.0) == "slow" and breakers.outcome_of(80.0) == "ok"
    states = [await breakers.record(url, breakers.outcome_of(900.0)) for _ in range(4)]
    assert states == ["closed", "closed", "closed", "open"]


async def test_half_opens_for_one_probe_then_closes_or_reopens(redis: Redis) -> None:
    breakers = CircuitBreakers(redis, POLICY)
    url = endpoint()
    for _ in range(4):
        await breakers.record(url, "failed")
    assert not (await breakers.views([url]))[url].admits
    await asyncio.sleep(POLICY.cooldown.total_seconds() + 0.1)

    # Cooled down: the next caller probes, and only one at a time.
    assert (await breakers.views([url]))[url].probe_ready
    assert await breakers.acquire(url) and not await breakers.acquire(url)
    assert await breakers.record(url, "failed") == "open"  # the probe failed: open again
    assert not await breakers.acquire(url)

    await asyncio.sleep(POLICY.cooldown.total_seconds() + 0.1)
    assert await breakers.acquire(url)
    assert await breakers.record(url, "ok") == "closed"  # recovered
    assert (await breakers.views([url]))[url].state == "closed"
    assert await breakers.acquire(url) and await breakers.acquire(url)
    # And the window starts afresh: old failures do not count against it.
    assert await breakers.record(url, "failed") == "closed"


async def test_a_late_success_does_not_close_an_open_circuit(redis: Redis) -> None:
    breakers = CircuitBreakers(redis, POLICY)
    url = endpoint()
    for _ in range(4):
        await breakers.record(url, "failed")
    assert await breakers.record(url, "ok") == "open"
    assert not await breakers.acquire(url)


async def test_consecutive_failures_open_it_despite_a_window_of_successes(redis: Redis) -> None:
    breakers = CircuitBreakers(redis, POLICY.model_copy(update={"consecutive_failures": 2}))
    url = endpoint()
    for _ in range(10):
        await breakers.record(url, "ok")
    assert await breakers.record(url, "failed") == "closed"
    assert await breakers.record(url, "ok") == "closed"  # a success ends the streak
    assert await breakers.record(url, "failed") == "closed"
    assert await breakers.record(url, "failed") == "open"  # 2 in a row, though 10 of 14 were fine
