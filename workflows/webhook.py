"""DeliverWebhookWorkflow: tells a non-interactive caller its turn's result, apart from the turn.

A child the turn starts and abandons: the turn completes (and polls say so) at once, while delivery
retries under `notify_webhook`'s policy for as long as the receiver refuses.
"""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.contracts.turn import WebhookDelivery, WebhookInput
    from infra.config.policy import WorkflowOptions

from workflows.policy_options import StepFailed, run_with_policy


async def deliver(options: WorkflowOptions, webhook: WebhookInput) -> bool:
    """True once delivered; False when the receiver never accepted it (the turn stands either way)."""
    try:
        await run_with_policy(options, "notify_webhook", webhook, type(None))
    except StepFailed as exc:
        workflow.logger.warning("webhook %s gave up: %s", webhook.url, exc.reason)
        return False
    return True


@workflow.defn(name="deliver_webhook")
class DeliverWebhookWorkflow:
    @workflow.run
    async def run(self, inp: WebhookDelivery) -> bool:
        return await deliver(inp.options, inp.webhook)
