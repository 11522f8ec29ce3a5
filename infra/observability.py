"""SLO and drift reports as the API and the CLI give them (computed from the database)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from pydantic import BaseModel

from db.drift import DriftSignal, drift_report
from db.slo import ObjectiveReport, slo_report
from infra.durations import format_duration
from infra.resources import Resources


class SloOut(BaseModel):
    scope: str  # "platform", or the tenant's name
    window: str
    since: datetime
    until: datetime
    turns: int
    objectives: list[ObjectiveReport]


class DriftOut(BaseModel):
    since: datetime
    until: datetime
    baseline_since: datetime
    flagged: int
    signals: list[DriftSignal]


async def compute_slo(res: Resources, span: timedelta, tenant: uuid.UUID | None, scope: str) -> SloOut:
    until = datetime.now(UTC)
    since = until - span
    async with res.sessions() as session:
        turns, reports = await slo_report(session, res.policy.slo.objectives, since, until, tenant)
    return SloOut(
        scope=scope,
        window=format_duration(span),
        since=since,
        until=until,
        turns=turns,
        objectives=reports,
    )


async def compute_drift(res: Resources) -> DriftOut:
    now = datetime.now(UTC)
    policy = res.policy.drift
    async with res.sessions() as session:
        signals = await drift_report(session, policy, now)
    return DriftOut(
        since=now - policy.window,
        until=now,
        baseline_since=now - policy.window - policy.baseline,
        flagged=sum(s.flagged for s in signals),
        signals=signals,
    )
