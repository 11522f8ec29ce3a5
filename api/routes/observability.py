"""SLOs, drift signals and the operators' dashboard data.

`GET /v1/slo` reports the caller's tenant; an `operator` key sees the whole platform (or one tenant by
name). Drift and the dashboard are platform-wide: operators only.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query
from sqlalchemy import select
from temporalio.service import RPCError

from api.core.deps import ResourcesDep
from api.core.errors import error_responses
from api.core.tenancy import PrincipalDep, require
from api.core.text_fields import StorableStr
from api.routes.metrics import refresh_breakers
from db.drift import DriftOut, compute_drift
from db.feedback import VersionFeedback, feedback_by_version
from db.models import Tenant
from db.ops_summary import moderation_summary, recent_failures
from db.slo import SloOut, compute_slo
from db.usage import model_health
from infra.config.durations import parse_duration
from infra.runtime.rollouts import rollout_states
from infra.telemetry import metrics

router = APIRouter(tags=["observability"])


def _maybe_float(value: Decimal | None) -> float | None:
    return float(value) if value is not None else None


operators = APIRouter(tags=["observability"], dependencies=[Depends(require("operator"))])

MAX_WINDOW = timedelta(days=90)


WindowQuery = Annotated[
    str | None,
    Query(
        max_length=20,
        pattern=r"^\d+(\.\d+)?(ms|s|m|h|d)$",
        description="e.g. 15m, 1h, 7d (default: temporal.yaml's)",
    ),
]


def _window(res: ResourcesDep, window: str | None) -> timedelta:
    try:
        span = parse_duration(window) if window else res.policy.slo.window
    except (ValueError, OverflowError) as exc:
        raise HTTPException(422, f"window: not a duration turnflow can use ({window})") from exc
    if not timedelta(0) < span <= MAX_WINDOW:
        raise HTTPException(422, f"window must be more than 0 and at most {MAX_WINDOW.days} days")
    return span


@router.get("/v1/slo", responses=error_responses(404))
async def read_slo(
    res: ResourcesDep,
    principal: PrincipalDep,
    window: WindowQuery = None,
    tenant: Annotated[
        StorableStr | None, Query(max_length=200, description="one tenant by name (operators; default: all)")
    ] = None,
) -> SloOut:
    """Each objective of temporal.yaml's `slo:` over the window: its value, whether it is met, and the
    error budget left. Computed from the recorded turns, so it matches a hand count over them."""
    span = _window(res, window)
    if "operator" not in principal.scopes:
        if tenant is not None and tenant != principal.tenant_name:
            raise HTTPException(404, f"tenant {tenant!r} not found")
        return await compute_slo(
            res.sessions, res.policy.slo.objectives, span, principal.tenant_id, principal.tenant_name
        )
    if tenant is None:
        return await compute_slo(res.sessions, res.policy.slo.objectives, span, None, "platform")
    async with res.sessions() as session:
        found = await session.scalar(select(Tenant.id).where(Tenant.name == tenant))
    if found is None:
        raise HTTPException(404, f"tenant {tenant!r} not found")
    return await compute_slo(res.sessions, res.policy.slo.objectives, span, found, tenant)


@operators.get("/v1/drift", responses=error_responses(404))
async def read_drift(res: ResourcesDep) -> DriftOut:
    """Retrieval score distributions and query-embedding centroids per tenant, and p95 latency per model
    version: the recent window against the baseline before it, flagged past temporal.yaml's `drift:`."""
    return await compute_drift(res.sessions, res.policy.drift)


def _feedback(found: VersionFeedback | None) -> dict[str, Any]:
    if found is None:
        return {"up": 0, "down": 0, "mean_score": None}
    return {"up": found.up, "down": found.down, "mean_score": found.mean_score}


@operators.get("/v1/dashboard/summary", responses=error_responses(404))
async def dashboard_summary(res: ResourcesDep, window: WindowQuery = None) -> dict[str, Any]:
    """What /dashboard shows: SLOs, per-model latency percentiles, TTFT, tokens/s, cost per 1k
    messages and users' feedback, breaker states, drift flags, canary rollouts (running ones and the
    latest that ended), moderation (redactions and how long redacted replies were shown) and recent
    failed turns with links into the Temporal UI."""
    span = _window(res, window)
    slo = await compute_slo(res.sessions, res.policy.slo.objectives, span, None, "platform")
    until = datetime.now(UTC)
    async with res.sessions() as session:
        models = await model_health(session, until - span, until)
        verdicts = {
            (f.model, f.model_version): f for f in await feedback_by_version(session, until - span, until)
        }
        failures = await recent_failures(session, limit=20)
        moderation = await moderation_summary(session, until - span, until)
    try:
        rollouts, rollouts_error = await rollout_states(res.temporal, limit=10), None
    except RPCError as exc:  # Temporal down: the rest of the page still loads, and says so
        rollouts, rollouts_error = [], f"Temporal did not answer: {exc.message}"
    await refresh_breakers(res)
    ui = res.settings.temporal_ui.rstrip("/")
    namespace = res.policy.namespace
    return {
        "generated_at": until.isoformat(),
        "slo": slo.model_dump(mode="json"),
        "models": [
            {
                "model": m.model,
                "model_version": m.model_version,
                "turns": m.replies,
                "errors": m.errors,
                "ttft_ms": {"p50": m.ttft_p50_ms, "p95": m.ttft_p95_ms},
                "turn_ms": {"p50": m.turn_p50_ms, "p95": m.turn_p95_ms},
                "tokens_per_s": m.tokens_per_s,
                "cost_per_1k_messages_usd": _maybe_float(m.cost_per_1k_messages),
                "feedback": _feedback(verdicts.get((m.model, m.model_version))),
            }
            for m in models
        ],
        "rollouts": rollouts,
        "rollouts_error": rollouts_error,
        "breakers": [
            {"model": model, "endpoint": endpoint, "state": state}
            for (model, endpoint), state in sorted(metrics.breaker_view.items())
        ],
        "drift": (await compute_drift(res.sessions, res.policy.drift)).model_dump(mode="json"),
        "failures": [
            {**f, "temporal_url": f"{ui}/namespaces/{namespace}/workflows/{f['turn_id']}"} for f in failures
        ],
        "moderation": moderation,
        "temporal_ui": ui,
    }
