"""Where webhooks may go (temporal.yaml `webhooks:`): https by default, and never to an internal address
unless the deployment allows that host."""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel, ConfigDict, Field

from infra.config.durations import Duration


class WebhookPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # Hosts a webhook may reach over plain http (local development only); every other one needs https.
    allow_http_hosts: list[str] = Field(default_factory=list)
    # Hosts (names) or networks (CIDRs) a webhook may reach although they are loopback, private,
    # link-local or otherwise not public: a receiver inside the deployment's own network.
    allow_private: list[str] = Field(default_factory=list)
    # What a receiver may answer and how long it may take: past either, the delivery is abandoned.
    max_response_bytes: int = Field(default=65_536, ge=0)
    timeout: Duration = timedelta(seconds=10)
