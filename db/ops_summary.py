"""The operators' dashboard's reads from replies' records: recent failed turns, and moderation."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Float, cast, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import Message, Tenant


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


async def moderation_summary(session: AsyncSession, since: datetime, until: datetime) -> list[dict[str, Any]]:
    """Per moderator over the window: replies judged, redacted, judged without a verdict, and how long
    and how many tokens redacted replies were shown before their `redact` (p50, p95)."""
    record = Message.moderation
    # Grouped by its label: two renderings of the same JSON path bind two parameters, which
    # Postgres cannot tell are equal.
    moderator = record["moderator"].astext.label("moderator")
    seconds = cast(record["exposure"]["seconds"].astext, Float)
    tokens = cast(record["exposure"]["tokens"].astext, Float)
    rows = await session.execute(
        select(
            moderator,
            func.count(),
            func.count().filter(Message.redacted.is_(True)),
            func.count().filter(record["unavailable"].astext == "true"),
            *(func.percentile_cont(q).within_group(seconds) for q in (0.5, 0.95)),
            *(func.percentile_cont(q).within_group(tokens) for q in (0.5, 0.95)),
        )
        .where(
            Message.role == "assistant",
            record.is_not(None),
            Message.created_at >= since,
            Message.created_at < until,
        )
        .group_by(moderator)
        .order_by(moderator)
    )
    return [
        {
            "moderator": name,
            "judged": judged,
            "redacted": redacted,
            "without_verdict": unavailable,
            "exposure_s": {"p50": s50, "p95": s95},
            "exposure_tokens": {"p50": t50, "p95": t95},
        }
        for name, judged, redacted, unavailable, s50, s95, t50, t95 in rows
    ]
