"""Feedback on replies: record, replace, withdraw (one current verdict per message and key), and the
rows an export or a report reads, joined to the reply's provenance."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, delete, func, literal_column, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import Feedback, Message, Tenant

REASONS = ("inaccurate", "unhelpful", "unsafe", "other")


@dataclass(frozen=True)
class RatedReply:
    """What a verdict is about: the reply and the provenance its metrics are labelled with."""

    message_id: uuid.UUID
    model: str | None
    version: str | None


async def find_reply(session: AsyncSession, tenant_id: uuid.UUID, message_id: uuid.UUID) -> RatedReply | None:
    """The tenant's reply with this id; None for another tenant's, a question, or no such message."""
    row = (
        await session.execute(
            select(Message.id, Message.model_id, Message.model_version).where(
                Message.id == message_id, Message.tenant_id == tenant_id, Message.role == "assistant"
            )
        )
    ).one_or_none()
    return RatedReply(row[0], row[1], row[2]) if row else None


async def record_feedback(
    session: AsyncSession,
    tenant_id: uuid.UUID,
    message_id: uuid.UUID,
    key_id: uuid.UUID,
    score: int,
    reason: str | None,
    comment: str | None,
) -> tuple[Feedback, bool]:
    """Insert or replace the key's verdict on the message: (the row, whether it replaced one)."""
    table = cast(Table, Feedback.__table__)
    values = {"score": score, "reason": reason, "comment": comment, "updated_at": func.now()}
    stmt = insert(table).values(
        id=uuid.uuid4(), tenant_id=tenant_id, message_id=message_id, key_id=key_id, **values
    )
    # xmax is 0 for a freshly inserted row, the old row's transaction id for an updated one.
    returned = (
        await session.execute(
            stmt.on_conflict_do_update(constraint="uq_feedback_message_key", set_=values).returning(
                table.c.id,
                literal_column("xmax <> 0").label("replaced"),
            )
        )
    ).one()
    row = await session.get(Feedback, returned[0], populate_existing=True)
    assert row is not None
    return row, bool(returned[1])


async def withdraw_feedback(session: AsyncSession, message_id: uuid.UUID, key_id: uuid.UUID) -> int | None:
    """Delete the key's verdict on the message; the score it had, or None when there was none."""
    gone = await session.execute(
        delete(Feedback)
        .where(Feedback.message_id == message_id, Feedback.key_id == key_id)
        .returning(Feedback.score)
    )
    return gone.scalar_one_or_none()


async def export_rows(
    session: AsyncSession, since: datetime, until: datetime, tenant_id: uuid.UUID | None = None
) -> AsyncIterator[dict[str, Any]]:
    """Every current verdict updated in [since, until), with the reply's provenance, oldest first."""
    query = (
        select(
            Feedback.id.label("feedback_id"),
            Feedback.tenant_id,
            Tenant.name.label("tenant"),
            Feedback.message_id,
            Message.conversation_id,
            Message.turn_id,
            Feedback.score,
            Feedback.reason,
            Feedback.comment,
            Feedback.created_at,
            Feedback.updated_at,
            Message.model_id.label("model"),
            Message.model_version,
            Message.prompt_template_version,
            Message.route,
            Message.retrieved_chunks,
            Message.ttft_ms,
            Message.latency_ms,
            Message.output_tokens,
            Message.cost_usd,
            Message.redacted,
            Message.error,
        )
        .join(Message, Message.id == Feedback.message_id)
        .join(Tenant, Tenant.id == Feedback.tenant_id)
        .where(Feedback.updated_at >= since, Feedback.updated_at < until)
        .order_by(Feedback.updated_at, Feedback.id)
    )
    if tenant_id is not None:
        query = query.where(Feedback.tenant_id == tenant_id)
    for row in await session.execute(query):
        yield dict(row._mapping)


@dataclass(frozen=True)
class VersionFeedback:
    model: str
    model_version: str
    up: int
    down: int

    @property
    def mean_score(self) -> float | None:
        return (self.up - self.down) / (self.up + self.down) if self.up + self.down else None


async def feedback_by_version(
    session: AsyncSession, since: datetime, until: datetime
) -> list[VersionFeedback]:
    """Thumbs up and down on the replies each model version gave in [since, until) (the dashboard)."""
    rows = await session.execute(
        select(
            func.coalesce(Message.model_id, ""),
            func.coalesce(Message.model_version, ""),
            func.count().filter(Feedback.score > 0),
            func.count().filter(Feedback.score < 0),
        )
        .join(Feedback, Feedback.message_id == Message.id)
        .where(Message.created_at >= since, Message.created_at < until)
        .group_by(Message.model_id, Message.model_version)
        .order_by(Message.model_id, Message.model_version)
    )
    return [VersionFeedback(m, v, up, down) for m, v, up, down in rows]
