"""ErasureWorkflow: erase what a request covers, in batches of conversations, then audit the counts.

Durable and resumable: a worker that dies mid-batch leaves the batch to be retried (each is
idempotent), and a plan made again after a restart finds only what is left. The workflow id names the
request (`erase-<tenant>-<scope>`), so asking twice joins the erasure already under way.
"""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.contracts.maintenance import ErasureBatch, ErasureCounts, ErasureInput, ErasureRecord

from workflows.policy_options import run_with_policy

BATCH = 20


@workflow.defn(name="erase_data")
class ErasureWorkflow:
    @workflow.run
    async def run(self, inp: ErasureInput) -> ErasureCounts:
        conversations: list[str] = await run_with_policy(inp.options, "erasure_plan", inp, list[str])
        counts = ErasureCounts()
        for start in range(0, len(conversations), BATCH):
            batch = ErasureBatch(
                tenant_id=inp.tenant_id, conversation_ids=conversations[start : start + BATCH]
            )
            done = await run_with_policy(inp.options, "erase_conversations", batch, ErasureCounts)
            counts = counts.add(done)
        if inp.conversation_ids is None and inp.end_user is None:
            # The whole tenant: its keys go too (crypto-shredding what any copy still holds).
            await run_with_policy(inp.options, "shred_tenant_key", inp, int)
        record = ErasureRecord(request=inp, counts=counts)
        await run_with_policy(inp.options, "record_erasure", record, type(None))
        return counts
