"""The stack probe's data: what a probe asks of the model and what it saw."""

from __future__ import annotations

from pydantic import BaseModel


class ProbeRequest(BaseModel):
    probe_id: str
    prompt: str


class ModelProbeResult(BaseModel):
    text: str
    chunks: int
    ttft_ms: float
    model: str | None
