"""How a process leaves (SIGTERM: a rolling deploy, a scale-down): temporal.yaml's `shutdown:`."""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel, ConfigDict

from infra.config.durations import Duration


class ShutdownPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # A worker stops polling at once and gives the activities it holds this long to finish; past it
    # they are cancelled, and a turn's inference moves to another worker (heartbeat timeout, `reset`).
    worker_grace: Duration = timedelta(seconds=20)
    # An API process stops taking new turns (readiness 503) and asks its SSE clients to reconnect
    # elsewhere with Last-Event-ID; it exits once they have gone, or after this long.
    api_grace: Duration = timedelta(seconds=10)
