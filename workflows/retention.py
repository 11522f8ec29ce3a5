"""RetentionWorkflow: expired transcripts go, per tenant, from Postgres and Redis
(activities/ingest/retention.py).
Runs daily from temporal.yaml's schedule; `dry_run` only reports what would go."""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.contracts.maintenance import RetentionInput, RetentionReport

from workflows.policy_options import run_with_policy


@workflow.defn(name="retention")
class RetentionWorkflow:
    @workflow.run
    async def run(self, inp: RetentionInput) -> RetentionReport:
        return await run_with_policy(inp.options, "retention_purge", inp, RetentionReport)
