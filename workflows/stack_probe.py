"""StackProbeWorkflow: touch every dependency once, through the worker, and report what it saw.

Used by the smoke test, by ``turnflow doctor --probe``, and as a scheduled synthetic canary.
"""

from __future__ import annotations

from pydantic import BaseModel
from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.contracts.probe import ModelProbeResult, ProbeRequest
    from infra.config.policy import WorkflowOptions

from workflows.policy_options import run_with_policy


class StackProbeInput(BaseModel):
    options: WorkflowOptions
    prompt: str = "Reply with the single word: ready"


class StackProbeResult(BaseModel):
    audit_event_id: int
    redis_key: str
    model: ModelProbeResult


@workflow.defn(name="stack_probe")
class StackProbeWorkflow:
    @workflow.run
    async def run(self, inp: StackProbeInput) -> StackProbeResult:
        request = ProbeRequest(probe_id=workflow.info().workflow_id, prompt=inp.prompt)
        row_id = await run_with_policy(inp.options, "probe_postgres", request, int)
        key = await run_with_policy(inp.options, "probe_redis", request, str)
        model = await run_with_policy(inp.options, "probe_model", request, ModelProbeResult)
        return StackProbeResult(audit_event_id=row_id, redis_key=key, model=model)
