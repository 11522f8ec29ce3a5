"""A worker process serves only the task queues its kinds name (TURNFLOW_WORKER_KINDS): the Helm
chart runs one Deployment per kind, each scaled on its own queue. On the real dev server."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

import pytest
from temporalio.client import Client

from infra.config.policy import load_policy
from infra.runtime.pollers import recent_pollers
from tests.support.api_harness import isolated_settings
from tests.support.services import Services
from workers.main import run_workers

pytestmark = pytest.mark.timeout(120)


async def test_a_chat_only_worker_polls_the_chat_queue_and_no_other(
    services: Services, tmp_path: Path
) -> None:
    settings = isolated_settings(services, tmp_path, worker_kinds="chat", worker_metrics_port=None)
    policy = load_policy(settings.policy_file)
    client = await Client.connect(services.endpoints.temporal_address, namespace=policy.namespace)
    stop = asyncio.Event()
    worker = asyncio.create_task(run_workers(settings, stop))
    try:
        deadline = time.monotonic() + 60
        while not await recent_pollers(client, policy.queue("chat")):
            assert not worker.done(), worker.exception()
            assert time.monotonic() < deadline, "the chat worker never polled its queue"
            await asyncio.sleep(0.5)
        # A few more polls' time: a worker of the other kinds would have polled theirs by now too.
        await asyncio.sleep(2)
        assert await recent_pollers(client, policy.queue("batch")) == []
        assert await recent_pollers(client, policy.queue("ingest")) == []
    finally:
        stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(worker, 60)
