"""Retention: each tenant's transcripts older than its retention (`retention_days` in its settings, else
TURNFLOW_TRANSCRIPT_RETENTION_DAYS; neither: kept) are deleted from Postgres, with their turns' event
streams and the conversations' context caches in Redis, in bounded batches. `dry_run` only counts."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from redis.asyncio import Redis
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity

from activities.adapters.context_cache import recent_key
from activities.adapters.turn_events import stream_key
from activities.contracts.maintenance import RetentionInput, RetentionReport, TenantRetention
from db.messages import count_expired, delete_emptied_conversations, delete_expired
from db.models import AuditEvent, Tenant

BATCH = 500


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
            done.messages, done.streams, done.conversations = await count_expired(
                session, tenant_id, done.cutoff
            )

    async def _purge(self, tenant_id: uuid.UUID, done: TenantRetention) -> None:
        while True:
            async with self.sessions.begin() as session:
                gone = await delete_expired(session, tenant_id, done.cutoff, BATCH)
            turns = set(gone)
            if turns:
                done.streams += int(await self.redis.delete(*(stream_key(t) for t in turns)))
            done.messages += len(gone)
            activity.heartbeat(done.model_dump(mode="json"))
            if len(gone) < BATCH:
                break
        async with self.sessions.begin() as session:
            emptied = await delete_emptied_conversations(session, tenant_id, done.cutoff)
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
