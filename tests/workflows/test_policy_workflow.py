"""The policy drives real Temporal behaviour: retries as declared, then the fallback chain; schedules.

Runs on the time-skipping test server, so retry intervals cost no wall time. The model activities
here are fakes registered under the real names: the test is about our workflow's handling of them.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import yaml
from temporalio import activity
from temporalio.client import Client, WorkflowFailureError
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.contracts.probe import ModelProbeResult, ProbeRequest
from infra.config.policy import Policy, load_policy
from infra.config.settings import REPO_ROOT
from infra.runtime.schedules import ensure_schedules
from tests.support.services import Services
from workers.chat import sandbox_runner
from workflows.stack_probe import StackProbeInput, StackProbeResult, StackProbeWorkflow


def policy_with(tmp_path: Path, edit: object) -> Policy:
    data = yaml.safe_load((REPO_ROOT / "temporal.yaml").read_text())
    edit(data)  # type: ignore[operator]
    path = tmp_path / "temporal.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_policy(path)


class FakeProbes:
    """Stand-ins for the probe activities; the model one fails in the way each test chooses."""

    def __init__(self, model_error: Exception | None) -> None:
        self.model_error = model_error
        self.calls: list[tuple[str, int]] = []

    @activity.defn(name="probe_postgres")
    async def postgres(self, req: ProbeRequest) -> int:
        self.calls.append(("probe_postgres", activity.info().attempt))
        return 1

    @activity.defn(name="probe_redis")
    async def redis(self, req: ProbeRequest) -> str:
        self.calls.append(("probe_redis", activity.info().attempt))
        return "k"

    @activity.defn(name="probe_model")
    async def model(self, req: ProbeRequest) -> ModelProbeResult:
        self.calls.append(("probe_model", activity.info().attempt))
        if self.model_error:
            raise self.model_error
        return ModelProbeResult(text="primary", chunks=1, ttft_ms=1, model="gpu")

    @activity.defn(name="probe_model_cpu")
    async def model_cpu(self, req: ProbeRequest) -> ModelProbeResult:
        self.calls.append(("probe_model_cpu", activity.info().attempt))
        return ModelProbeResult(text="fallback", chunks=1, ttft_ms=1, model="cpu")


def add_cpu_fallback(data: dict) -> None:  # type: ignore[type-arg]
    data["activities"]["probe_model"]["fallback"] = ["probe_model_cpu"]
    data["activities"]["probe_model"]["retry"]["maximum_attempts"] = 4
    data["activities"]["probe_model_cpu"] = {"start_to_close": "30s", "retry": {"maximum_attempts": 2}}


async def run_probe(client: Client, policy: Policy, fakes: FakeProbes) -> StackProbeResult:
    queue = f"policy-{uuid.uuid4()}"
    async with Worker(
        client,
        task_queue=queue,
        workflows=[StackProbeWorkflow],
        activities=[fakes.postgres, fakes.redis, fakes.model, fakes.model_cpu],
        workflow_runner=sandbox_runner(),
    ):
        return await client.execute_workflow(
            "stack_probe",
            StackProbeInput(options=policy.options_for("stack_probe")),
            id=f"policy-{uuid.uuid4()}",
            task_queue=queue,
            result_type=StackProbeResult,
        )


async def test_retries_as_declared_then_falls_back(
    time_skipping: WorkflowEnvironment, tmp_path: Path
) -> None:
    fakes = FakeProbes(model_error=RuntimeError("model server down"))
    result = await run_probe(time_skipping.client, policy_with(tmp_path, add_cpu_fallback), fakes)
    assert result.model.text == "fallback"
    model_attempts = [a for name, a in fakes.calls if name == "probe_model"]
    assert model_attempts == [1, 2, 3, 4]  # maximum_attempts: 4, from the policy
    assert ("probe_model_cpu", 1) in fakes.calls


async def test_non_retryable_error_skips_retries(time_skipping: WorkflowEnvironment, tmp_path: Path) -> None:
    error = ApplicationError("prompt rejected", type="ModelRequestRejected")
    fakes = FakeProbes(model_error=error)
    result = await run_probe(time_skipping.client, policy_with(tmp_path, add_cpu_fallback), fakes)
    assert [a for name, a in fakes.calls if name == "probe_model"] == [1]
    assert result.model.text == "fallback"


async def test_without_fallback_the_failure_surfaces(
    time_skipping: WorkflowEnvironment, tmp_path: Path
) -> None:
    def two_attempts(data: dict) -> None:  # type: ignore[type-arg]
        data["activities"]["probe_model"]["retry"]["maximum_attempts"] = 2

    fakes = FakeProbes(model_error=RuntimeError("model server down"))
    with pytest.raises(WorkflowFailureError):
        await run_probe(time_skipping.client, policy_with(tmp_path, two_attempts), fakes)
    assert [a for name, a in fakes.calls if name == "probe_model"] == [1, 2]


async def test_schedules_are_created_then_updated(services: Services, tmp_path: Path) -> None:
    name = f"probe-{uuid.uuid4().hex[:8]}"

    def schedule(cron: str) -> object:
        def edit(data: dict) -> None:  # type: ignore[type-arg]
            data["schedules"] = {name: {"workflow": "stack_probe", "cron": cron, "task_queue": "chat"}}

        return edit

    client = await Client.connect(services.endpoints.temporal_address, data_converter=pydantic_data_converter)
    assert await ensure_schedules(client, policy_with(tmp_path, schedule("*/15 * * * *"))) == [name]
    assert await ensure_schedules(client, policy_with(tmp_path, schedule("0 3 * * *"))) == [name]
    desc = await client.get_schedule_handle(name).describe()
    try:
        # The server stores cron as a structured calendar: the update's "0 3 * * *" is 03:00 daily.
        [calendar] = desc.schedule.spec.calendars
        assert (calendar.hour[0].start, calendar.hour[0].end) == (3, 3)
        assert (calendar.minute[0].start, calendar.minute[0].end) == (0, 0)
        action = desc.schedule.action
        assert action.workflow == "stack_probe"  # type: ignore[attr-defined]
        assert action.task_queue == "turnflow-chat"  # type: ignore[attr-defined]
    finally:
        await client.get_schedule_handle(name).delete()
