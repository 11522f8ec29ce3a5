"""Messages and conversations: the one place that writes them (a turn's exchange, moderation's verdict,
retention's deletes) and the reads the turn's path needs."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, cast

from sqlalchemy import ColumnElement, Table, delete, exists, func, select, tuple_, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import Conversation, Message, Tenant


async def recent_messages(session: AsyncSession, conversation_id: str, limit: int) -> list[dict[str, str]]:
    """The last ``limit`` shown messages of a conversation, oldest first, as the prompt takes them."""
    rows = (
        await session.scalars(
            select(Message)
            .where(
                Message.conversation_id == uuid.UUID(conversation_id),
                Message.redacted.is_(False),
                Message.content != "",
                # A tool exchange belongs to the OpenAI-style request that carried it.
                Message.role != "tool",
                Message.tool_calls.is_(None),
            )
            # Newest first; within a turn (one timestamp) the reply before the question,
            # so that reversed, each question precedes its reply.
            .order_by(Message.created_at.desc(), Message.role.asc())
            .limit(limit)
        )
    ).all()
    return [{"role": r.role, "content": r.content} for r in reversed(rows)]


# Message ids follow from the turn: the API names a reply's id before it is written (the OpenAI-style
# route's completion id), and a retried persist writes the same one.
MESSAGE_IDS = uuid.UUID("5f0b7c1e-2f6a-4c1d-9a57-7d1c3a1e9b20")


def message_id_for(turn_id: str, role: str) -> uuid.UUID:
    return uuid.uuid5(MESSAGE_IDS, f"{turn_id}\x1f{role}")


async def insert_exchange(
    session: AsyncSession, *exchange: dict[str, Any]
) -> tuple[dict[str, uuid.UUID], bool]:
    """A turn's question and reply (and a tool exchange), once: ``(ids by role, inserted)``. A retry
    finds the rows (unique on turn and role), inserts nothing and returns the ids the first wrote."""
    # Every row names every column: a multi-row INSERT takes its columns from the first row.
    columns = {k: None for row in exchange for k in row}
    rows = [{**columns, **row, "id": message_id_for(row["turn_id"], row["role"])} for row in exchange]
    # On the table, not the entity: a Core INSERT skips the ORM's bulk-insert machinery (a tenth of
    # the step's CPU, for two rows).
    table = cast(Table, Message.__table__)
    ids: dict[str, uuid.UUID] = dict(
        (
            await session.execute(
                insert(table)
                .values(rows)
                .on_conflict_do_nothing(constraint="uq_messages_turn_role")
                .returning(table.c.role, table.c.id)
            )
        ).all()
    )
    if len(ids) == len(rows):
        return ids, True
    turn_id = exchange[0]["turn_id"]
    found = await session.execute(select(Message.role, Message.id).where(Message.turn_id == turn_id))
    return dict(found.all()), False


async def tenant_name(session: AsyncSession, tenant_id: uuid.UUID) -> str | None:
    return await session.scalar(select(Tenant.name).where(Tenant.id == tenant_id))


async def redact_message(session: AsyncSession, message_id: str, reason: str) -> uuid.UUID | None:
    """Mark a message redacted; its tenant's id, or None when it was already redacted (or is gone)."""
    changed: uuid.UUID | None = (
        await session.execute(
            update(Message)
            .where(Message.id == uuid.UUID(message_id), Message.redacted.is_(False))
            .values(redacted=True, redaction_reason=reason)
            .returning(Message.tenant_id)
        )
    ).scalar_one_or_none()
    return changed


async def record_moderation(session: AsyncSession, message_id: str, record: dict[str, Any]) -> None:
    """What moderation decided about a message: which moderator, its version, the categories."""
    await session.execute(
        update(Message).where(Message.id == uuid.UUID(message_id)).values(moderation=record)
    )


def _emptied(tenant_id: uuid.UUID, cutoff: datetime) -> ColumnElement[bool]:
    """Conversations made before the cutoff with no message after it."""
    recent = exists().where(Message.conversation_id == Conversation.id, Message.created_at >= cutoff)
    return (Conversation.tenant_id == tenant_id) & (Conversation.created_at < cutoff) & ~recent


async def count_expired(
    session: AsyncSession, tenant_id: uuid.UUID, cutoff: datetime
) -> tuple[int, int, int]:
    """What retention would remove: (messages, their turns, conversations left empty)."""
    old = (Message.tenant_id == tenant_id) & (Message.created_at < cutoff)
    messages = await session.scalar(select(func.count()).where(old))
    turns = await session.scalar(select(func.count(func.distinct(Message.turn_id))).where(old))
    emptied = await session.scalar(select(func.count()).where(_emptied(tenant_id, cutoff)))
    return int(messages or 0), int(turns or 0), int(emptied or 0)


async def delete_expired(
    session: AsyncSession, tenant_id: uuid.UUID, cutoff: datetime, limit: int
) -> list[str]:
    """Up to ``limit`` of the tenant's messages older than the cutoff; the turn ids they belonged to."""
    batch = select(Message.id).where(Message.tenant_id == tenant_id, Message.created_at < cutoff).limit(limit)
    gone = await session.execute(delete(Message).where(Message.id.in_(batch)).returning(Message.turn_id))
    return list(gone.scalars().all())


async def delete_emptied_conversations(
    session: AsyncSession, tenant_id: uuid.UUID, cutoff: datetime
) -> list[uuid.UUID]:
    gone = await session.execute(
        delete(Conversation).where(_emptied(tenant_id, cutoff)).returning(Conversation.id)
    )
    return list(gone.scalars().all())


async def create_conversation(
    session: AsyncSession,
    tenant_id: uuid.UUID,
    title: str | None,
    meta: dict[str, Any] | None = None,
    end_user: str | None = None,
) -> uuid.UUID:
    conversation = Conversation(
        id=uuid.uuid4(), tenant_id=tenant_id, title=title, meta=meta or {}, end_user=end_user
    )
    session.add(conversation)
    return conversation.id


async def list_conversations(
    session: AsyncSession,
    tenant_id: uuid.UUID,
    limit: int,
    after: tuple[datetime, uuid.UUID] | None = None,
    end_user: str | None = None,
) -> list[Conversation]:
    """The tenant's conversations, newest first, from just past ``after`` (the last one of the page
    before: keyset pagination, so rows made meanwhile neither repeat nor go missing)."""
    query = select(Conversation).where(Conversation.tenant_id == tenant_id)
    if end_user is not None:
        query = query.where(Conversation.end_user == end_user)
    if after is not None:
        query = query.where(tuple_(Conversation.created_at, Conversation.id) < tuple_(*after))
    order = (Conversation.created_at.desc(), Conversation.id.desc())
    return list((await session.scalars(query.order_by(*order).limit(limit))).all())


# --- erasure on request ---------------------------------------------------------------------------


async def conversations_to_erase(
    session: AsyncSession,
    tenant_id: uuid.UUID,
    conversation_ids: list[uuid.UUID] | None = None,
    end_user: str | None = None,
) -> list[uuid.UUID]:
    """The tenant's conversations an erasure covers: the ones named, an end user's, or all of them."""
    query = select(Conversation.id).where(Conversation.tenant_id == tenant_id)
    if conversation_ids is not None:
        query = query.where(Conversation.id.in_(conversation_ids))
    if end_user is not None:
        query = query.where(Conversation.end_user == end_user)
    return list((await session.scalars(query.order_by(Conversation.id))).all())


async def turns_of(session: AsyncSession, conversation_ids: list[uuid.UUID]) -> list[str]:
    found = await session.scalars(
        select(Message.turn_id).where(Message.conversation_id.in_(conversation_ids)).distinct()
    )
    return sorted(found.all())


async def delete_conversations(session: AsyncSession, conversation_ids: list[uuid.UUID]) -> tuple[int, int]:
    """The conversations and their messages, gone: (messages, conversations) deleted."""
    messages = await session.execute(delete(Message).where(Message.conversation_id.in_(conversation_ids)))
    conversations = await session.execute(delete(Conversation).where(Conversation.id.in_(conversation_ids)))
    return int(messages.rowcount), int(conversations.rowcount)  # type: ignore[attr-defined]
