"""Typed model of ``temporal.yaml``: the product's durable retry, timeout, fallback and schedule policy.

This is not Temporal's own client config (``temporal.toml``); it is turnflow's policy file. It is
validated when a process starts, and a bad file is refused with the path to the bad field.
"""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from infra.config.durations import Duration, parse_duration
from infra.config.models import BreakerPolicy, ModelSpec, check_registry
from infra.config.moderation import ModerationPolicy
from infra.config.objectives import DriftPolicy, ExperimentPolicy, SloPolicy
from infra.config.prompts import DEFAULT_PROMPTS, PromptSpec, check_prompts
from infra.config.residency import StoreName, StoreSpec
from infra.config.rollouts import RolloutPolicy
from infra.config.shutdown import ShutdownPolicy
from infra.config.webhooks import WebhookPolicy

__all__ = ["Duration", "parse_duration"]  # re-exported: callers read durations through the policy


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RetryPolicy(_Strict):
    initial_interval: Duration = timedelta(seconds=1)
    backoff: float = Field(default=2.0, ge=1.0)
    maximum_interval: Duration = timedelta(seconds=30)
    maximum_attempts: int = Field(default=3, ge=0, description="0 means unlimited")
    non_retryable: list[str] = Field(default_factory=list)


class ActivityPolicy(_Strict):
    start_to_close: Duration = timedelta(seconds=30)
    schedule_to_close: Duration | None = None
    heartbeat: Duration | None = None
    retry: RetryPolicy = RetryPolicy()
    # Activities to run instead, in order, once this one has exhausted its retries.
    fallback: list[str] = Field(default_factory=list)
    local: bool = Field(default=False, description="run as a local activity (no server round trip)")


class WorkflowPolicy(_Strict):
    task_queue: str
    execution_timeout: Duration | None = None
    activities: list[str] = Field(default_factory=list)


_CRON_FIELD = re.compile(r"^[\d*/,\-A-Za-z?]+$")


class SchedulePolicy(_Strict):
    workflow: str
    cron: str
    task_queue: str
    paused: bool = False

    @model_validator(mode="after")
    def _check_cron(self) -> SchedulePolicy:
        fields = self.cron.split()
        if self.cron.startswith("@"):
            return self
        if len(fields) != 5 or not all(_CRON_FIELD.match(f) for f in fields):
            raise ValueError(f"cron must have 5 fields (min hour dom month dow): {self.cron!r}")
        return self


class WorkflowOptions(_Strict):
    """The slice of the policy one workflow run needs, passed in its input so history records it."""

    activities: dict[str, ActivityPolicy]
    execution_timeout: Duration | None = None

    def activity(self, name: str) -> ActivityPolicy:
        return self.activities[name]


class Policy(_Strict):
    namespace: str = "default"
    task_queues: dict[str, str]
    activities: dict[str, ActivityPolicy]
    workflows: dict[str, WorkflowPolicy]
    schedules: dict[str, SchedulePolicy] = Field(default_factory=dict)
    # The model registry (infra/config/models.py) and when a model endpoint's circuit opens.
    models: dict[str, ModelSpec] = Field(default_factory=dict)
    breaker: BreakerPolicy = BreakerPolicy()
    # Where each store keeps tenants' data (infra/config/residency.py); a store left out has no tags.
    stores: dict[StoreName, StoreSpec] = Field(default_factory=dict)
    # What operators hold the platform to (GET /v1/slo), and when retrieval or latency has drifted.
    slo: SloPolicy = SloPolicy()
    drift: DriftPolicy = DriftPolicy()
    experiments: ExperimentPolicy = ExperimentPolicy()
    rollouts: RolloutPolicy = RolloutPolicy()
    # Versions of the chat prompt template; one is the base, others may be its canaries.
    prompts: dict[str, PromptSpec] = Field(default_factory=lambda: dict(DEFAULT_PROMPTS))
    webhooks: WebhookPolicy = WebhookPolicy()
    shutdown: ShutdownPolicy = ShutdownPolicy()
    # Which moderator checks replies out of band, and when it cannot (infra/config/moderation.py).
    moderation: ModerationPolicy = ModerationPolicy()

    @model_validator(mode="after")
    def _check_references(self) -> Policy:
        check_registry(self.models)
        check_prompts(self.prompts)
        guard = self.moderation.llama_guard
        if self.moderation.moderator == "llama_guard" and guard and guard.model not in self.models:
            raise ValueError(f"moderation: llama_guard.model {guard.model} is not in models:")
        if same := sorted(set(self.prompts) & set(self.models)):
            raise ValueError(f"prompts and models share the names {', '.join(same)}; experiments need one")
        if "prepare_turn" in self.activities and not self.models:
            raise ValueError("models: chat turns need at least one model")
        queues = set(self.task_queues)
        for name, act in self.activities.items():
            for target in act.fallback:
                if target not in self.activities:
                    raise ValueError(f"activities.{name}.fallback names unknown activity {target!r}")
                if target == name:
                    raise ValueError(f"activities.{name}.fallback names itself")
        for name, wf in self.workflows.items():
            if wf.task_queue not in queues:
                raise ValueError(f"workflows.{name}.task_queue {wf.task_queue!r} is not in task_queues")
            for act_name in wf.activities:
                if act_name not in self.activities:
                    raise ValueError(f"workflows.{name} lists unknown activity {act_name!r}")
        for name, sched in self.schedules.items():
            if sched.task_queue not in queues:
                raise ValueError(f"schedules.{name}.task_queue {sched.task_queue!r} is not in task_queues")
            if sched.workflow not in self.workflows:
                raise ValueError(f"schedules.{name}.workflow {sched.workflow!r} is not in workflows")
        return self

    def queue(self, key: str) -> str:
        return self.task_queues[key]

    def options_for(self, workflow: str) -> WorkflowOptions:
        wf = self.workflows[workflow]
        needed = set(wf.activities)
        # Fallbacks run inside the same workflow, so they travel with it.
        frontier = list(needed)
        while frontier:
            for target in self.activities[frontier.pop()].fallback:
                if target not in needed:
                    needed.add(target)
                    frontier.append(target)
        return WorkflowOptions(
            activities={n: self.activities[n] for n in sorted(needed)},
            execution_timeout=wf.execution_timeout,
        )


class PolicyError(ValueError):
    """The policy file is missing or invalid; the message names the file and the bad field."""


def _read_mapping(path: Path) -> dict[str, Any]:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise PolicyError(f"{path}: file not found") from exc
    except yaml.YAMLError as exc:
        raise PolicyError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise PolicyError(f"{path}: expected a mapping at the top level")
    return raw


def load_policy(path: Path, overlay: Path | None = None) -> Policy:
    """The policy file, with each top-level section of ``overlay`` (when given) replacing its own: a
    deployment renders the sections it decides (the Helm chart: `models:` and `task_queues:`)."""
    raw = _read_mapping(path)
    source = str(path)
    if overlay is not None:
        raw |= _read_mapping(overlay)
        source = f"{path} with {overlay}"
    try:
        return Policy.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}" for err in exc.errors()
        )
        raise PolicyError(f"{source}: {problems}") from exc
