"""Per-model figures and recent failures for the operators' dashboard, from each reply's record."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Float, cast, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import Message, Tenant


def _pct(p: float, column: Any) -> Any:
    return func.percentile_disc(p).within_group(column.asc())


async def model_summaries(session: AsyncSession, since: datetime, until: datetime) -> list[dict[str, Any]]:
    """Per model: turns, errors, p50/p95 TTFT and turn latency (ms), decode speed (output tokens per
    second after the first token, the turn's mean), cost per 1k messages."""
    reply = Message
    decode_s = (reply.latency_ms - reply.ttft_ms) / 1000
    speed = func.avg(cast(reply.output_tokens, Float) / func.nullif(decode_s, 0)).filter(
        reply.output_tokens > 1, reply.ttft_ms.is_not(None)
    )
    rows = await session.execute(
        select(
            func.coalesce(reply.model_id, "none"),
            func.count(),
            func.count().filter(reply.finish_reason == "error"),
            _pct(0.5, reply.ttft_ms),
            _pct(0.95, reply.ttft_ms),
            _pct(0.5, reply.latency_ms),
            _pct(0.95, reply.latency_ms),
            speed,
            func.coalesce(func.sum(reply.cost_usd), 0),
        )
        .where(reply.role == "assistant", reply.created_at >= since, reply.created_at < until)
        .group_by(reply.model_id)
        .order_by(reply.model_id)
    )
    out = []
    for model, turns, errors, ttft50, ttft95, lat50, lat95, tps, cost in rows:
        out.append(
            {
                "model": model,
                "turns": int(turns),
                "errors": int(errors),
                "ttft_ms": {"p50": ttft50, "p95": ttft95},
                "turn_ms": {"p50": lat50, "p95": lat95},
                "tokens_per_s": round(float(tps), 2) if tps is not None else None,
                "cost_per_1k_messages_usd": float(Decimal(cost) * 1000 / turns) if turns else None,
            }
        )
    return out


async def recent_failures(session: AsyncSession, limit: int) -> list[dict[str, Any]]:
    """The latest failed turns, newest first, with their error as the client saw it."""
    rows = await session.execute(
        select(Message.turn_id, Tenant.name, Message.model_id, Message.error, Message.created_at)
        .join(Tenant, Tenant.id == Message.tenant_id)
        .where(Message.role == "assistant", Message.finish_reason == "error")
        .order_by(Message.created_at.desc())
        .limit(limit)
    )
    return [
        {
            "turn_id": turn_id,
            "tenant": tenant,
            "model": model,
            "error": error or {},
            "at": at.isoformat(),
        }
        for turn_id, tenant, model, error, at in rows
    ]
