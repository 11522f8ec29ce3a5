"""ReembedWorkflow: move tenants to another embedding model or version, tenant by tenant:
embed in batches beside the old vectors → canary check → atomic switch → drop the old vectors.

Runs from a Temporal Schedule (temporal.yaml: the deployment's default embedder as target) or on
demand (`turnflow reembed`). Batches are activities: a crash loses at most the batch in flight, and
long runs continue as new with what they finished so far.
"""

from __future__ import annotations

from typing import Any

from temporalio import workflow
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.contracts.reembed import (
        BatchInput,
        CanaryInput,
        CanaryResult,
        Plan,
        ReembedInput,
        ReembedResult,
        Target,
        TenantReport,
        TenantStep,
    )

from workflows.policy_options import StepFailed, run_with_policy

# Switch attempts while documents keep arriving for the tenant (each embeds what came meanwhile).
MAX_SWITCH_ATTEMPTS = 5


@workflow.defn(name="reembed")
class ReembedWorkflow:
    def __init__(self) -> None:
        self._progress: dict[str, Any] = {"stage": "planning"}

    @workflow.query
    def progress(self) -> dict[str, Any]:
        """The stage, the tenant in progress, chunks embedded for it, and tenants done."""
        return self._progress

    @workflow.run
    async def run(self, inp: ReembedInput) -> ReembedResult:
        plan = await run_with_policy(inp.options, "reembed_plan", inp, Plan)
        done = list(inp.done)
        finished = {r.tenant_id for r in done}
        todo = [t for t in plan.tenant_ids if t not in finished]
        self._progress = {
            "stage": "embedding",
            "target": f"{plan.target.model}@{plan.target.version}",
            "tenants_total": len(todo) + len(done),
            "tenants_done": len(done),
        }
        for tenant in todo:
            report = await self._move(inp, plan.target, tenant)
            if report is None:  # the history is long: go on in a fresh run, keeping what is done
                workflow.continue_as_new(inp.model_copy(update={"done": done, "tenant_ids": todo}))
            done.append(report)
            self._progress["tenants_done"] = len(done)
        self._progress["stage"] = "done"
        return ReembedResult(target=plan.target, tenants=done)

    async def _embed_all(self, inp: ReembedInput, target: Target, tenant: str) -> int | None:
        """Batches until none is left; None when the run should continue as new first."""
        embedded = 0
        while True:
            count = await run_with_policy(
                inp.options,
                "reembed_batch",
                BatchInput(tenant_id=tenant, target=target, batch_size=inp.batch_size),
                int,
            )
            embedded += count
            self._progress["embedded"] = self._progress.get("embedded", 0) + count
            if count == 0:
                return embedded
            if workflow.info().is_continue_as_new_suggested():
                return None

    async def _move(self, inp: ReembedInput, target: Target, tenant: str) -> TenantReport | None:
        opts = inp.options
        self._progress.update(tenant=tenant, embedded=0, stage="embedding")
        embedded = await self._embed_all(inp, target, tenant)
        if embedded is None:
            return None
        self._progress["stage"] = "canary"
        canary = await run_with_policy(
            opts,
            "reembed_canary",
            CanaryInput(tenant_id=tenant, target=target, queries=inp.canary_queries),
            CanaryResult,
        )
        passed = canary.recall_new >= inp.min_canary_recall and (
            canary.recall_new >= canary.recall_current - inp.max_canary_drop
        )
        if not passed:
            workflow.logger.warning("tenant %s keeps its embedding version: canary %s", tenant, canary)
            dropped = 0
            if canary.current is not None:  # drop the new vectors; the tenant searches on as before
                dropped = await run_with_policy(
                    opts,
                    "reembed_drop_other_versions",
                    TenantStep(tenant_id=tenant, target=canary.current),
                    int,
                )
            return TenantReport(
                tenant_id=tenant, status="kept", embedded=embedded, canary=canary, dropped=dropped
            )
        self._progress["stage"] = "switching"
        for _ in range(MAX_SWITCH_ATTEMPTS):
            try:
                await run_with_policy(
                    opts, "reembed_switch", TenantStep(tenant_id=tenant, target=target), int
                )
                break
            except StepFailed as exc:
                if not (isinstance(exc.reason, ApplicationError) and exc.reason.type == "ReembedIncomplete"):
                    raise
                more = await self._embed_all(inp, target, tenant)  # documents arrived meanwhile
                embedded += more or 0
        else:
            raise ApplicationError(
                f"tenant {tenant} kept receiving documents; switch not done", non_retryable=True
            )
        self._progress["stage"] = "dropping"
        dropped = await run_with_policy(
            opts, "reembed_drop_other_versions", TenantStep(tenant_id=tenant, target=target), int
        )
        return TenantReport(
            tenant_id=tenant, status="switched", embedded=embedded, canary=canary, dropped=dropped
        )
