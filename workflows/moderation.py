"""ModerationWorkflow: runs out of band after a reply is persisted, so moderation never delays a turn."""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.contracts.turn import ModerationInput

from workflows.policy_options import run_with_policy


@workflow.defn(name="moderate_turn")
class ModerationWorkflow:
    @workflow.run
    async def run(self, inp: ModerationInput) -> bool:
        return await run_with_policy(inp.options, "moderate_message", inp, bool)
