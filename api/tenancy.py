"""Which tenant a request acts for. Until API keys exist, the `X-Tenant` header names it (or `default`)."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import Depends, Header, HTTPException
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.deps import ResourcesDep
from db.models import Tenant

DEFAULT_TENANT = "default"


async def ensure_tenant(sessions: async_sessionmaker[AsyncSession], name: str) -> uuid.UUID:
    async with sessions.begin() as session:
        await session.execute(insert(Tenant).values(id=uuid.uuid4(), name=name).on_conflict_do_nothing())
        tenant_id: uuid.UUID = (
            await session.execute(select(Tenant.id).where(Tenant.name == name))
        ).scalar_one()
    return tenant_id


async def current_tenant(
    res: ResourcesDep, x_tenant: Annotated[str | None, Header(max_length=200)] = None
) -> uuid.UUID:
    name = x_tenant or DEFAULT_TENANT
    async with res.sessions() as session:
        tenant_id = await session.scalar(select(Tenant.id).where(Tenant.name == name))
    if tenant_id is None:
        raise HTTPException(404, f"tenant {name!r} not found")
    return tenant_id


TenantDep = Annotated[uuid.UUID, Depends(current_tenant)]
