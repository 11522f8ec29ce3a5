"""End to end through the real stack: a workflow on the worker writes Postgres, Redis, and streams a reply."""

from __future__ import annotations

import uuid

from sqlalchemy import select

from db.models import AuditEvent
from infra.runtime.resources import Resources
from tests.support.replay import replay
from workers.chat import build_chat_worker
from workflows.stack_probe import StackProbeInput, StackProbeResult


async def test_stack_probe_touches_every_service(resources: Resources, task_queue: str) -> None:
    workflow_id = f"smoke-{uuid.uuid4()}"
    async with build_chat_worker(resources, task_queue=task_queue):
        result = await resources.temporal.execute_workflow(
            "stack_probe",
            StackProbeInput(options=resources.policy.options_for("stack_probe")),
            id=workflow_id,
            task_queue=task_queue,
            result_type=StackProbeResult,
        )
        history = await resources.temporal.get_workflow_handle(workflow_id).fetch_history()
    # The history just made replays cleanly against the current workflow code.
    await replay(history, codec=resources.codec)

    # A row in Postgres, written by the activity, keyed by the workflow id.
    async with resources.sessions() as session:
        row = await session.get(AuditEvent, result.audit_event_id)
        assert row is not None
        assert (row.action, row.object_id) == ("stack.probe", workflow_id)
        ids = (await session.scalars(select(AuditEvent.id).where(AuditEvent.object_id == workflow_id))).all()
        assert ids == [result.audit_event_id]

    # A key in Redis, with an expiry.
    assert result.redis_key == f"turnflow:probe:{workflow_id}"
    assert await resources.redis.exists(result.redis_key) == 1
    assert 0 < await resources.redis.ttl(result.redis_key) <= 3600

    # A streamed completion from the real model server: several chunks, real text.
    assert result.model.chunks >= 2
    assert result.model.text.strip()
    assert result.model.model
    assert result.model.ttft_ms > 0


async def test_probe_postgres_is_idempotent_on_retry(resources: Resources) -> None:
    """A retried attempt (same probe id) finds the row the first attempt wrote instead of adding one."""
    from temporalio.testing import ActivityEnvironment

    from activities.chat.stack_probe import StackProbeActivities
    from activities.contracts.probe import ProbeRequest

    acts = StackProbeActivities(resources.sessions, resources.redis, resources.model)
    request = ProbeRequest(probe_id=f"retry-{uuid.uuid4()}", prompt="hi")
    env = ActivityEnvironment()
    first = await env.run(acts.probe_postgres, request)
    second = await env.run(acts.probe_postgres, request)
    assert first == second
    async with resources.sessions() as session:
        rows = (
            await session.scalars(select(AuditEvent).where(AuditEvent.object_id == request.probe_id))
        ).all()
    assert len(rows) == 1
