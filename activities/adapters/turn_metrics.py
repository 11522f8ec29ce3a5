"""What a finished turn adds to the metrics: counted once, when its transcript is first written."""

from __future__ import annotations

from typing import cast

from activities.contracts.turn import PersistInput
from infra.telemetry import metrics


def record_turn(inp: PersistInput, tenant: str) -> None:
    model = inp.model_id or "none"
    # Whose fault a failed turn was: ours (the client may retry) or the request's (refused input).
    fault = "none" if inp.status != "error" else "ours" if (inp.error or {}).get("retryable") else "request"
    metrics.turns.add(1, {"tenant": tenant, "model": model, "status": inp.status, "fault": fault})
    if inp.latency_ms is not None:
        metrics.turn_duration.record(
            inp.latency_ms / 1000, {"model": model, "status": inp.status, "interactive": inp.interactive}
        )
    if inp.cost_usd:
        metrics.cost.add(float(inp.cost_usd), {"tenant": tenant, "model": model})
    route = inp.route or {}
    fallbacks = cast(list[dict[str, str]], route.get("fallbacks") or [])
    to = str(route.get("served_by") or "none")
    for fell in fallbacks:
        metrics.fallbacks.add(1, {"from_model": fell["model"], "to_model": to, "error.type": fell["error"]})
