"""PurgeTombstonesWorkflow: tombstoned chunks and deleted documents are removed for good once older
than the retention. Runs daily from temporal.yaml's schedule; `dry_run` only counts."""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.contracts.maintenance import PurgeInput, PurgeReport

from workflows.policy_options import run_with_policy


@workflow.defn(name="purge_tombstones")
class PurgeTombstonesWorkflow:
    @workflow.run
    async def run(self, inp: PurgeInput) -> PurgeReport:
        return await run_with_policy(inp.options, "purge_tombstones", inp, PurgeReport)
