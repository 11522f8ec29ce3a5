"""Tenants' wrapped data keys (migration 0007): read, create once, re-wrap, destroy."""

from __future__ import annotations

import uuid
from collections.abc import Callable

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from db.models import AuditEvent, TenantKey


async def current_key(session: AsyncSession, tenant: uuid.UUID) -> TenantKey | None:
    """The tenant's newest key (destroyed or not)."""
    return await session.scalar(
        select(TenantKey).where(TenantKey.tenant_id == tenant).order_by(TenantKey.version.desc()).limit(1)
    )


async def key_version(session: AsyncSession, tenant: uuid.UUID, version: int) -> TenantKey | None:
    return await session.get(TenantKey, (tenant, version))


async def add_first_key(session: AsyncSession, tenant: uuid.UUID, wrapped: bytes, kek_id: str) -> None:
    """Version 1, unless another process made it first (then theirs stands)."""
    await session.execute(
        insert(TenantKey)
        .values(tenant_id=tenant, version=1, wrapped=wrapped, kek_id=kek_id)
        .on_conflict_do_nothing(index_elements=["tenant_id", "version"])
    )


async def destroy_keys(session: AsyncSession, tenant: uuid.UUID) -> int:
    """Crypto-shredding: every key of the tenant, gone; how many were still there."""
    gone = await session.execute(
        update(TenantKey)
        .where(TenantKey.tenant_id == tenant, TenantKey.wrapped.is_not(None))
        .values(wrapped=None, destroyed_at=func.now())
    )
    return int(gone.rowcount)  # type: ignore[attr-defined]


async def rewrap_all(
    session: AsyncSession,
    rewrap: Callable[[bytes, str], tuple[bytes, str]],
    tenant: uuid.UUID | None = None,
) -> int:
    """Every live key (of ``tenant``, or of all) wrapped again by ``rewrap`` (wrapped, kek id → new
    wrapped, new kek id); the data they encrypt is not touched."""
    query = select(TenantKey).where(TenantKey.wrapped.is_not(None))
    if tenant is not None:
        query = query.where(TenantKey.tenant_id == tenant)
    keys = (await session.scalars(query)).all()
    changed = 0
    for key in keys:
        assert key.wrapped is not None and key.kek_id is not None
        wrapped, kek_id = rewrap(key.wrapped, key.kek_id)
        if kek_id != key.kek_id:
            key.wrapped, key.kek_id = wrapped, kek_id
            changed += 1
    return changed


async def shred_tenant(sessions: async_sessionmaker[AsyncSession], tenant: uuid.UUID, actor: str) -> int:
    """Destroy the tenant's keys and audit it (how many; nothing else is left to say)."""
    async with sessions.begin() as session:
        destroyed = await destroy_keys(session, tenant)
        session.add(
            AuditEvent(
                tenant_id=tenant,
                actor=actor,
                action="tenant_keys.shred",
                object_type="tenant",
                object_id=str(tenant),
                details={"keys_destroyed": destroyed},
            )
        )
    return destroyed
