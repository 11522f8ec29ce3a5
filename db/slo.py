"""SLO reports, computed from each reply's own record (messages, role assistant) over a window.

Percentiles are nearest-rank (Postgres' percentile_disc): the smallest recorded value that at least
p% of the turns do not exceed. So a latency objective is met exactly when its good turns (at or under
the threshold) are at least p% of the eligible ones, and its error budget is the (100 - p)% of
eligible turns allowed over the threshold.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from pydantic import BaseModel
from sqlalchemy import ColumnElement, and_, func, or_, select, true
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from db.models import Message
from infra.config.durations import format_duration
from infra.config.objectives import Objective

# A failure on our side: the turn errored with an error the client may retry (model down, timeouts).
# Refused input and refused routes are the request's, not the platform's, and do not count.
_OURS = Message.error["retryable"].as_boolean().is_(True)


class ObjectiveReport(BaseModel):
    name: str
    kind: str
    description: str
    objective: str  # the objective in words, e.g. "p95 ttft <= 2000 ms"
    value: float | None  # ms for latency, a ratio for availability, USD for cost
    unit: str
    eligible: int  # turns the objective counts
    good: int  # of those, turns within it
    met: bool | None  # None: no data in the window
    error_budget_remaining: float | None  # 1: untouched, 0: spent, below 0: overspent


def _budget(bad: int, allowed: float) -> float | None:
    return round(1 - bad / allowed, 4) if allowed > 0 else None


async def _latency(
    session: AsyncSession, name: str, o: Objective, scope: ColumnElement[bool]
) -> ObjectiveReport:
    assert o.field and o.percentile is not None and o.threshold is not None
    column = Message.ttft_ms if o.field == "ttft" else Message.latency_ms
    limit_ms = o.threshold.total_seconds() * 1000
    value, good, eligible = (
        await session.execute(
            select(
                func.percentile_disc(o.percentile / 100).within_group(column.asc()),
                func.count().filter(column <= limit_ms),
                func.count(),
            ).where(scope, column.is_not(None), Message.finish_reason.not_in(("error", "cancelled")))
        )
    ).one()
    good, eligible = int(good), int(eligible)
    allowed = (1 - o.percentile / 100) * eligible
    return ObjectiveReport(
        name=name,
        kind=o.kind,
        description=o.description,
        objective=f"p{o.percentile:g} {o.field} <= {limit_ms:g} ms",
        value=float(value) if value is not None else None,
        unit="ms",
        eligible=eligible,
        good=good,
        met=(float(value) <= limit_ms) if value is not None else None,
        error_budget_remaining=_budget(eligible - good, allowed),
    )


async def _availability(
    session: AsyncSession, name: str, o: Objective, scope: ColumnElement[bool]
) -> ObjectiveReport:
    assert o.target is not None
    answered = Message.finish_reason.not_in(("error", "cancelled"))
    failed = and_(Message.finish_reason == "error", _OURS)
    good, eligible = (
        await session.execute(
            select(func.count().filter(answered), func.count()).where(scope, or_(answered, failed))
        )
    ).one()
    good, eligible = int(good), int(eligible)
    value = good / eligible if eligible else None
    return ObjectiveReport(
        name=name,
        kind=o.kind,
        description=o.description,
        objective=f"answered >= {o.target:.2%}",
        value=value,
        unit="ratio",
        eligible=eligible,
        good=good,
        met=(value >= o.target) if value is not None else None,
        error_budget_remaining=_budget(eligible - good, (1 - o.target) * eligible),
    )


async def _cost(
    session: AsyncSession, name: str, o: Objective, scope: ColumnElement[bool]
) -> ObjectiveReport:
    assert o.threshold_usd is not None
    spent, messages = (
        await session.execute(select(func.coalesce(func.sum(Message.cost_usd), 0), func.count()).where(scope))
    ).one()
    messages = int(messages)
    per_1k = Decimal(spent or 0) * 1000 / messages if messages else None
    return ObjectiveReport(
        name=name,
        kind=o.kind,
        description=o.description,
        objective=f"cost per 1k messages <= ${o.threshold_usd}",
        value=float(per_1k) if per_1k is not None else None,
        unit="usd",
        eligible=messages,
        good=messages if per_1k is not None and per_1k <= o.threshold_usd else 0,
        met=(per_1k <= o.threshold_usd) if per_1k is not None else None,
        error_budget_remaining=round(float(1 - per_1k / o.threshold_usd), 4) if per_1k is not None else None,
    )


_KINDS = {"latency": _latency, "availability": _availability, "cost": _cost}


async def slo_report(
    session: AsyncSession,
    objectives: dict[str, Objective],
    since: datetime,
    until: datetime,
    tenant_id: uuid.UUID | None = None,
) -> tuple[int, list[ObjectiveReport]]:
    """(turns in the window, one report per objective)."""
    scope = and_(
        Message.role == "assistant",
        Message.created_at >= since,
        Message.created_at < until,
        true() if tenant_id is None else Message.tenant_id == tenant_id,
    )
    turns = int(await session.scalar(select(func.count()).where(scope)) or 0)
    reports = [await _KINDS[o.kind](session, name, o, scope) for name, o in objectives.items()]
    return turns, reports


class SloOut(BaseModel):
    """An SLO report as the API and the CLI give it."""

    scope: str  # "platform", or the tenant's name
    window: str
    since: datetime
    until: datetime
    turns: int
    objectives: list[ObjectiveReport]


async def compute_slo(
    sessions: async_sessionmaker[AsyncSession],
    objectives: dict[str, Objective],
    span: timedelta,
    tenant: uuid.UUID | None,
    scope: str,
) -> SloOut:
    until = datetime.now(UTC)
    since = until - span
    async with sessions() as session:
        turns, reports = await slo_report(session, objectives, since, until, tenant)
    return SloOut(
        scope=scope,
        window=format_duration(span),
        since=since,
        until=until,
        turns=turns,
        objectives=reports,
    )
