"""Usage and cost per tenant and model over a time range, summed from the per-message records."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Float, Integer, cast, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import Message, Tenant


@dataclass(frozen=True)
class UsageRow:
    tenant: str
    model: str
    model_version: str
    messages: int
    errors: int
    input_tokens: int
    output_tokens: int
    cost_usd: Decimal

    @property
    def cost_per_1k_messages(self) -> Decimal:
        return (self.cost_usd * 1000 / self.messages) if self.messages else Decimal(0)


async def usage_report(
    session: AsyncSession, since: datetime, until: datetime, tenant_id: uuid.UUID | None = None
) -> list[UsageRow]:
    """One row per tenant, model and version; the sums are exact (NUMERIC), so they match the rows."""
    reply = Message
    query = (
        select(
            Tenant.name,
            func.coalesce(reply.model_id, ""),
            func.coalesce(reply.model_version, ""),
            func.count(),
            func.sum(cast(reply.finish_reason == "error", Integer)),
            func.coalesce(func.sum(reply.input_tokens), 0),
            func.coalesce(func.sum(reply.output_tokens), 0),
            func.coalesce(func.sum(reply.cost_usd), 0),
        )
        .join(Tenant, Tenant.id == reply.tenant_id)
        .where(reply.role == "assistant", reply.created_at >= since, reply.created_at < until)
        .group_by(Tenant.name, reply.model_id, reply.model_version)
        .order_by(Tenant.name, reply.model_id, reply.model_version)
    )
    if tenant_id is not None:
        query = query.where(reply.tenant_id == tenant_id)
    rows = (await session.execute(query)).all()
    return [
        UsageRow(t, m, v, int(n), int(e or 0), int(i or 0), int(o or 0), Decimal(c or 0))
        for t, m, v, n, e, i, o, c in rows
    ]


@dataclass(frozen=True)
class ModelHealth:
    model: str
    model_version: str
    replies: int
    errors: int
    ttft_p50_ms: float | None
    ttft_p95_ms: float | None
    turn_p50_ms: float | None = None
    turn_p95_ms: float | None = None
    # Decode speed: output tokens after the first, over the time from first token to the turn's end.
    tokens_per_s: float | None = None
    cost_usd: Decimal = Decimal(0)

    @property
    def cost_per_1k_messages(self) -> Decimal | None:
        return self.cost_usd * 1000 / self.replies if self.replies else None


def _float(value: Any) -> float | None:
    return float(value) if value is not None else None


async def model_health(
    session: AsyncSession, since: datetime, until: datetime | None = None
) -> list[ModelHealth]:
    """Each model version's replies, errors, first-token and turn latency, decode speed and cost in
    [since, until) (a canary's own; the operators' dashboard)."""
    ttft, turn = Message.ttft_ms, Message.latency_ms
    decode_s = (turn - ttft) / 1000
    speed = func.avg(cast(Message.output_tokens - 1, Float) / func.nullif(decode_s, 0)).filter(
        Message.output_tokens > 1, ttft.is_not(None)
    )
    query = (
        select(
            func.coalesce(Message.model_id, ""),
            func.coalesce(Message.model_version, ""),
            func.count(),
            func.sum(cast(Message.finish_reason == "error", Integer)),
            func.percentile_cont(0.5).within_group(ttft),
            func.percentile_cont(0.95).within_group(ttft),
            func.percentile_cont(0.5).within_group(turn),
            func.percentile_cont(0.95).within_group(turn),
            speed,
            func.coalesce(func.sum(Message.cost_usd), 0),
        )
        .where(Message.role == "assistant", Message.created_at >= since)
        .group_by(Message.model_id, Message.model_version)
        .order_by(Message.model_id, Message.model_version)
    )
    if until is not None:
        query = query.where(Message.created_at < until)
    return [
        ModelHealth(
            m,
            v,
            int(n),
            int(e or 0),
            _float(t50),
            _float(t95),
            _float(l50),
            _float(l95),
            _float(tps),
            Decimal(cost or 0),
        )
        for m, v, n, e, t50, t95, l50, l95, tps, cost in (await session.execute(query)).all()
    ]
