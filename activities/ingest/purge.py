"""Purge: remove tombstoned chunks and deleted documents for good, once they are older than the
retention, tenant by tenant (row-level security scopes each transaction), in bounded batches."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity

from activities.contracts.maintenance import PurgeInput, PurgeReport
from db.documents import purge
from db.engine import scope_to_tenant

BATCH = 1000


class PurgeActivities:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.sessions = sessions

    @activity.defn(name="purge_tombstones")
    async def purge_tombstones(self, inp: PurgeInput) -> PurgeReport:
        report = PurgeReport(dry_run=inp.dry_run)
        async with self.sessions() as session:
            tenants = [str(r[0]) for r in await session.execute(text("SELECT id FROM tenants ORDER BY id"))]
        for tenant in tenants:
            report.tenants += 1
            for table in ("chunks", "documents"):
                while True:
                    async with self.sessions.begin() as session:
                        await scope_to_tenant(session, tenant)
                        count = await purge(
                            session, table, inp.older_than_s, limit=BATCH, dry_run=inp.dry_run
                        )
                    setattr(report, table, getattr(report, table) + count)
                    activity.heartbeat(report.model_dump())
                    if inp.dry_run or count < BATCH:
                        break
        return report
