"""The chat task queue's worker: which workflows and activities it runs, and with which clients."""

from __future__ import annotations

from datetime import timedelta

from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from activities.stack_probe import StackProbeActivities
from infra.resources import Resources
from workflows.stack_probe import StackProbeWorkflow

WORKFLOWS = [StackProbeWorkflow]

# Heavy or stateless libraries are imported once outside the sandbox rather than per workflow run.
PASSTHROUGH = ("pydantic", "pydantic_core", "yaml", "infra", "activities", "db", "sqlalchemy")


def sandbox_runner() -> SandboxedWorkflowRunner:
    return SandboxedWorkflowRunner(
        restrictions=SandboxRestrictions.default.with_passthrough_modules(*PASSTHROUGH)
    )


def build_chat_worker(res: Resources, *, task_queue: str | None = None) -> Worker:
    probe = StackProbeActivities(res.sessions, res.redis, res.model)
    return Worker(
        res.temporal,
        task_queue=task_queue or res.policy.queue("chat"),
        workflows=WORKFLOWS,
        activities=[probe.probe_postgres, probe.probe_redis, probe.probe_model],
        workflow_runner=sandbox_runner(),
        graceful_shutdown_timeout=timedelta(seconds=10),
    )
