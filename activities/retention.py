"""Retention: each tenant's transcripts older than its retention (`retention_days` in its settings, else
TURNFLOW_TRANSCRIPT_RETENTION_DAYS; neither: kept) are deleted from Postgres, with their turns' event
streams and the conversations' context caches in Redis, in bounded batches. `dry_run` only counts."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from pydantic import BaseModel, Field
from redis.asyncio import Redis
from sqlalchemy import delete, exists, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity

from activities.transcript import recent_key
from activities.turn_events import stream_key
from db.models import AuditEvent, Conversation, Message, Tenant
from infra.policy import WorkflowOptions

BATCH = 500


class RetentionInput(BaseModel):
    options: WorkflowOptions
    dry_run: bool = False


class TenantRetention(BaseModel):
    tenant: str
    retention_days: int
    cutoff: datetime
    messages: int = 0
    conversations: int = 0
    streams: int = 0


class RetentionReport(BaseModel):
    dry_run: bool = False
    tenants: list[TenantRetention] = Field(default_factory=list)
    kept_forever: list[str] = Field(default_factory=list)


class RetentionActivities:
    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], redis: Redis, default_days: int | None
    ) -> None:
        self.sessions = sessions
        self.redis = redis
        self.default_days = default_days

    @activity.defn(name="retention_purge")
    async def retention_purge(self, inp: RetentionInput) -> RetentionReport:
        report = RetentionReport(dry_run=inp.dry_run)
        async with self.sessions() as session:
            tenants = (await session.execute(select(Tenant.id, Tenant.name, Tenant.settings))).all()
        for tenant_id, name, settings in tenants:
            days = settings.get("retention_days", self.default_days)
            if days is None:
                report.kept_forever.append(name)
                continue
            cutoff = datetime.now(UTC) - timedelta(days=int(days))
            done = TenantRetention(tenant=name, retention_days=int(days), cutoff=cutoff)
            if inp.dry_run:
                await self._count(tenant_id, done)
            else:
                await self._purge(tenant_id, done)
            report.tenants.append(done)
            activity.heartbeat(report.model_dump(mode="json"))
        return report

    async def _count(self, tenant_id: uuid.UUID, done: TenantRetention) -> None:
        async with self.sessions() as session:
            old = (Message.tenant_id == tenant_id) & (Message.created_at < done.cutoff)
            done.messages = int(await session.scalar(select(func.count()).where(old)) or 0)
            done.streams = int(
                await session.scalar(select(func.count(func.distinct(Message.turn_id))).where(old)) or 0
            )
            done.conversations = int(
                await session.scalar(select(func.count()).where(self._emptied(tenant_id, done))) or 0
            )

    @staticmethod
    def _emptied(tenant_id: uuid.UUID, done: TenantRetention):  # type: ignore[no-untyped-def]
        """Conversations made before the cutoff with no message after it."""
        recent = exists().where(Message.conversation_id == Conversation.id, Message.created_at >= done.cutoff)
        return (Conversation.tenant_id == tenant_id) & (Conversation.created_at < done.cutoff) & ~recent

    async def _purge(self, tenant_id: uuid.UUID, done: TenantRetention) -> None:
        while True:
            async with self.sessions.begin() as session:
                batch = (
                    select(Message.id)
                    .where(Message.tenant_id == tenant_id, Message.created_at < done.cutoff)
                    .limit(BATCH)
                )
                gone = (
                    (
                        await session.execute(
                            delete(Message).where(Message.id.in_(batch)).returning(Message.turn_id)
                        )
                    )
                    .scalars()
                    .all()
                )
            turns = set(gone)
            if turns:
                done.streams += int(await self.redis.delete(*(stream_key(t) for t in turns)))
            done.messages += len(gone)
            activity.heartbeat(done.model_dump(mode="json"))
            if len(gone) < BATCH:
                break
        async with self.sessions.begin() as session:
            emptied = (
                (
                    await session.execute(
                        delete(Conversation).where(self._emptied(tenant_id, done)).returning(Conversation.id)
                    )
                )
                .scalars()
                .all()
            )
            done.conversations = len(emptied)
            session.add(
                AuditEvent(
                    tenant_id=tenant_id,
                    actor="retention",
                    action="retention.purge",
                    details=done.model_dump(mode="json"),
                )
            )
        if emptied:
            await self.redis.delete(*(recent_key(str(c)) for c in emptied))
