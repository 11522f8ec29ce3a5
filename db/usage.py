"""Usage and cost per tenant and model over a time range, summed from the per-message records."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy import Integer, cast, func, select
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


async def model_health(session: AsyncSession, since: datetime) -> list[ModelHealth]:
    """Each model version's replies, errors and first-token latency since ``since`` (a canary's own)."""
    ttft = Message.ttft_ms
    rows = (
        await session.execute(
            select(
                func.coalesce(Message.model_id, ""),
                func.coalesce(Message.model_version, ""),
                func.count(),
                func.sum(cast(Message.finish_reason == "error", Integer)),
                func.percentile_cont(0.5).within_group(ttft),
                func.percentile_cont(0.95).within_group(ttft),
            )
            .where(Message.role == "assistant", Message.created_at >= since)
            .group_by(Message.model_id, Message.model_version)
        )
    ).all()
    return [
        ModelHealth(
            m,
            v,
            int(n),
            int(e or 0),
            float(p50) if p50 is not None else None,
            float(p95) if p95 is not None else None,
        )
        for m, v, n, e, p50, p95 in rows
    ]
