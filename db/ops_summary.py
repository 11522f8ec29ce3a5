"""Recent failed turns for the operators' dashboard, from each reply's record."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
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
