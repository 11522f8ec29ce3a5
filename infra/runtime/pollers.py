"""Who is polling a task queue now. Temporal lists a poller for minutes after it stops; one seen
within the last long poll (Temporal's is about a minute) plus a margin is a worker still there."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client

SEEN_WITHIN = timedelta(seconds=90)


async def recent_pollers(
    client: Client, task_queue: str, build: str | None = None, within: timedelta = SEEN_WITHIN
) -> list[str]:
    """Identities of the workers that polled the queue's workflow tasks ``within`` ago (of ``build`` only,
    when given)."""
    resp = await client.workflow_service.describe_task_queue(
        DescribeTaskQueueRequest(
            namespace=client.namespace,
            task_queue=TaskQueue(name=task_queue),
            task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
        )
    )
    now = datetime.now(UTC)
    return sorted(
        {
            p.identity
            for p in resp.pollers
            if now - p.last_access_time.ToDatetime(tzinfo=UTC) < within
            and (build is None or p.deployment_options.build_id == build)
        }
    )
