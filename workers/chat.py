"""The chat task queue's worker: which workflows and activities it runs, and with which clients."""

from __future__ import annotations

import sys
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from temporalio.worker import UnsandboxedWorkflowRunner, Worker, WorkflowRunner
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from activities.adapters.moderators import make_moderator
from activities.adapters.retrieval_observer import RetrievalObserver
from activities.chat.cached_reply import CachedReplies
from activities.chat.inference import InferenceActivities
from activities.chat.moderation import ModerationActivities
from activities.chat.prepare_turn import TurnPreparation
from activities.chat.retrieval import RetrievalActivities
from activities.chat.route_turn import RouteActivities
from activities.chat.sources_answer import SourcesAnswers
from activities.chat.stack_probe import StackProbeActivities
from activities.chat.transcript import Transcript
from activities.chat.turn_steps import TurnSteps
from activities.chat.webhook import WebhookActivities
from infra.config.settings import WorkerKind
from infra.runtime.deployments import deployment_config
from infra.runtime.resources import Resources
from workflows.chat_turn import ChatTurnWorkflow
from workflows.stack_probe import StackProbeWorkflow
from workflows.webhook import DeliverWebhookWorkflow

WORKFLOWS = [ChatTurnWorkflow, StackProbeWorkflow, DeliverWebhookWorkflow]

# Heavy or stateless libraries are imported once outside the sandbox rather than per workflow run.
PASSTHROUGH = (
    "pydantic",
    "pydantic_core",
    "yaml",
    "infra",
    "activities",
    "db",
    "sqlalchemy",
    "workflows.policy_options",
    "workflows.search_attributes",
)


def sandbox_runner(bytecode_cache: Path | None = None) -> SandboxedWorkflowRunner:
    if bytecode_cache is not None:
        keep_bytecode(bytecode_cache)
    return SandboxedWorkflowRunner(
        restrictions=SandboxRestrictions.default.with_passthrough_modules(*PASSTHROUGH)
    )


def chat_runner(res: Resources) -> WorkflowRunner:
    """The chat worker's runner. Its workflows are pinned, short and replay-tested (tests/workflows run
    them in the sandbox, as tests/histories' replays do): per turn, the sandbox's fresh import of the
    workflow modules and its proxies cost more than the rest of the workflow's code."""
    if res.settings.chat_workflow_sandbox:
        return sandbox_runner(res.settings.data_dir / "pycache")
    return UnsandboxedWorkflowRunner()


def keep_bytecode(cache_dir: Path) -> None:
    """The sandbox imports a workflow's module afresh for every run. Under PYTHONDONTWRITEBYTECODE
    (usual in containers, and set on this project's machines) no bytecode is ever cached, so every
    turn compiled workflows/*.py from source again: ~5 ms of each turn's time to first token. The
    bytecode goes to a cache in the data dir instead of the source tree."""
    if sys.dont_write_bytecode:
        sys.pycache_prefix = sys.pycache_prefix or str(cache_dir.resolve())
        sys.dont_write_bytecode = False


def chat_activities(res: Resources) -> list[Callable[..., Any]]:
    res.registry.check()
    transcript = Transcript(
        res.sessions,
        res.redis,
        res.events,
        res.rate_limits,
        res.admission,
        tenant_label=res.settings.metrics_tenant_label,
    )
    moderation = res.policy.moderation
    cache = res.response_cache if res.settings.response_cache else None
    steps = TurnSteps(res.safety, transcript, res.events, res.registry, res.policy.prompts)
    inference = InferenceActivities(res.registry, res.breakers, res.events, res.cancels, res.safety)
    router = RouteActivities(
        res.registry, res.breakers, res.sessions, res.redis, res.settings.max_tokens, res.policy.prompts
    )
    retrieval = RetrievalActivities(res.search, RetrievalObserver(res.sessions))
    probe = StackProbeActivities(res.sessions, res.redis, res.model)
    return [
        TurnPreparation(steps, retrieval, router, cache, moderation.moderator).prepare_turn,
        steps.partial_text,
        inference.infer,
        transcript.persist_turn,
        WebhookActivities(res.webhooks, res.settings.webhook_secret, res.sessions).notify_webhook,
        ModerationActivities(
            res.sessions,
            make_moderator(moderation, res.safety, res.registry, res.http),
            res.events,
            cache,
            policies=router.tenant_policy,
            timeout_s=moderation.timeout.total_seconds(),
            on_failure=moderation.on_failure,
        ).moderate_message,
        CachedReplies(res.events).serve_cached,
        SourcesAnswers(res.sessions, res.events).answer_from_sources,
        probe.probe_postgres,
        probe.probe_redis,
        probe.probe_model,
    ]


def build_chat_worker(
    res: Resources, *, task_queue: str | None = None, slots: int | None = None, kind: WorkerKind = "chat"
) -> Worker:
    """``slots`` caps concurrent tasks of each kind; work beyond it goes to other workers.

    The same worker, on the `batch` queue with few slots, runs non-interactive turns apart. Each is a
    version (this build) of its kind's Worker Deployment, its turns pinned to it."""
    return Worker(
        res.temporal,
        task_queue=task_queue or res.policy.queue(kind),
        deployment_config=deployment_config(res.settings, kind),
        workflows=WORKFLOWS,
        activities=chat_activities(res),
        workflow_runner=chat_runner(res),
        # SIGTERM: stop polling, let held activities finish this long (temporal.yaml `shutdown:`).
        graceful_shutdown_timeout=res.policy.shutdown.worker_grace,
        # Heartbeats are what carries a cancel to a generating activity: the SDK's default throttle
        # (80% of the heartbeat timeout, 4 s here) let a cancelled turn generate for seconds more.
        max_heartbeat_throttle_interval=timedelta(seconds=1),
        max_concurrent_workflow_tasks=slots,
        max_concurrent_activities=slots,
        max_concurrent_local_activities=slots,
    )


def build_batch_worker(res: Resources, *, task_queue: str | None = None) -> Worker:
    """Non-interactive turns: their own queue and slots, so they never take an interactive turn's."""
    return build_chat_worker(res, task_queue=task_queue, slots=res.settings.batch_worker_slots, kind="batch")
