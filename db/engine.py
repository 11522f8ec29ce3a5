"""The async engine and session factory; one engine per process, made from the resolved URL."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.ext import asyncio as sqlalchemy_asyncio
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

# The role migrations create for the application: row-level security binds it (see 0002).
APP_ROLE = "turnflow_app"


def make_engine(database_url: str, *, pool_size: int = 10, role: str | None = APP_ROLE) -> AsyncEngine:
    """``role``: every connection switches to it, so tenant isolation holds even for a login that
    owns the tables (the embedded stack's superuser). None keeps the login's own role."""
    # pool_pre_ping: a Postgres restart must not hand out dead connections.
    # Through the module, so that tracing (infra/telemetry/setup.py), once set up, wraps the call.
    engine = sqlalchemy_asyncio.create_async_engine(database_url, pool_size=pool_size, pool_pre_ping=True)
    if role:

        @event.listens_for(engine.sync_engine, "connect")
        def _set_role(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute(f'SET ROLE "{role}"')
            cursor.close()
            dbapi_connection.commit()

    return engine


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


async def scope_to_tenant(session: AsyncSession, tenant_id: uuid.UUID | str) -> None:
    """Make the current transaction act for one tenant: row-level security on documents, uploads
    and chunks then shows and accepts only that tenant's rows. Call it first in each transaction."""
    await session.execute(
        text("SELECT set_config('turnflow.tenant', :tenant, true)"), {"tenant": str(tenant_id)}
    )
