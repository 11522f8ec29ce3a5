"""Tell a non-interactive caller its turn is done: POST the result to the webhook it gave."""

from __future__ import annotations

import hashlib
import hmac

import httpx
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.contracts.turn import WebhookInput

SIGNATURE_HEADER = "X-Turnflow-Signature"


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class WebhookActivities:
    def __init__(self, http: httpx.AsyncClient, secret: str | None) -> None:
        self.http = http
        self.secret = secret

    @activity.defn(name="notify_webhook")
    async def notify_webhook(self, inp: WebhookInput) -> None:
        body = inp.result.model_dump_json().encode()
        headers = {"Content-Type": "application/json", "X-Turnflow-Turn-ID": inp.result.turn_id}
        if self.secret:
            headers[SIGNATURE_HEADER] = signature(self.secret, body)
        resp = await self.http.post(inp.url, content=body, headers=headers, timeout=10.0)
        if 400 <= resp.status_code < 500 and resp.status_code not in (408, 429):
            # The receiver refuses it: retrying the same body will not change its mind.
            raise ApplicationError(
                f"webhook {inp.url} answered {resp.status_code}", type="WebhookRejected", non_retryable=True
            )
        resp.raise_for_status()
