"""Tell a non-interactive caller its turn is done: POST the result to the webhook it gave, only where the
webhook rules allow (activities/adapters/webhook_sender.py); a refusal is audited and final."""

from __future__ import annotations

import hashlib
import hmac
import uuid

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.adapters.webhook_sender import WebhookSender
from activities.contracts.turn import WebhookInput
from activities.logic.webhook_targets import WebhookRefused
from db.access import tenant_webhook_hosts
from db.models import AuditEvent

SIGNATURE_HEADER = "X-Turnflow-Signature"


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class WebhookActivities:
    def __init__(
        self, sender: WebhookSender, secret: str | None, sessions: async_sessionmaker[AsyncSession]
    ) -> None:
        self.sender = sender
        self.secret = secret
        self.sessions = sessions

    @activity.defn(name="notify_webhook")
    async def notify_webhook(self, inp: WebhookInput) -> None:
        body = inp.result.model_dump_json().encode()
        headers = {"Content-Type": "application/json", "X-Turnflow-Turn-ID": inp.result.turn_id}
        if self.secret:
            headers[SIGNATURE_HEADER] = signature(self.secret, body)
        tenant = uuid.UUID(inp.tenant_id) if inp.tenant_id else None
        try:
            hosts = await tenant_webhook_hosts(self.sessions, tenant) if tenant else None
            answer = await self.sender.post(inp.url, body, headers, hosts)
        except WebhookRefused as exc:
            await self._audit_refusal(tenant, inp, exc)
            # Where it may not go now, it may not go on a retry either (the rules decide, not luck).
            raise ApplicationError(str(exc), exc.code, type="WebhookRefused", non_retryable=True) from exc
        if 400 <= answer.status < 500 and answer.status not in (408, 429):
            # The receiver refuses it: retrying the same body will not change its mind.
            raise ApplicationError(
                f"webhook {inp.url} answered {answer.status}", type="WebhookRejected", non_retryable=True
            )
        if answer.status >= 400:
            raise ApplicationError(f"webhook {inp.url} answered {answer.status}", type="WebhookFailed")

    async def _audit_refusal(self, tenant: uuid.UUID | None, inp: WebhookInput, exc: WebhookRefused) -> None:
        async with self.sessions.begin() as session:
            session.add(
                AuditEvent(
                    tenant_id=tenant,
                    actor="turnflow-webhooks",
                    action="webhook.refused",
                    object_type="turn",
                    object_id=inp.result.turn_id,
                    details={"refused": exc.code, "reason": str(exc), "url": inp.url},
                )
            )
