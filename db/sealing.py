"""Rows written in the clear (before text was sealed at rest, or with sealing off), found and sealed in
place: a batch per transaction, one tenant at a time (row-level security), resumable at any point since
a sealed row no longer matches. `turnflow codec seal-at-rest` runs it."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from db.engine import scope_to_tenant

# Every column holding a tenant's own words, and the prefix of a sealed value
# (activities/adapters/sealed_text.py).
TEXT_COLUMNS = (("messages", "content"), ("conversations", "title"), ("chunks", "text"))
BYTES_COLUMNS = (("document_uploads", "content"),)
SEALED_PREFIX = "tf1:"


def _clear(column: str, is_bytes: bool) -> str:
    if is_bytes:
        return f"substring({column} from 1 for 4) <> convert_to('{SEALED_PREFIX}', 'UTF8')"
    return f"{column} <> '' AND left({column}, 4) <> '{SEALED_PREFIX}'"


async def seal_clear_rows(
    sessions: async_sessionmaker[AsyncSession],
    tenant: uuid.UUID,
    seal_text: Callable[[uuid.UUID, str], Awaitable[str]],
    seal_bytes: Callable[[uuid.UUID, bytes], Awaitable[bytes]],
    batch: int = 500,
) -> dict[str, int]:
    """How many rows of each table were sealed."""
    counts: dict[str, int] = {}
    columns = [(t, c, False) for t, c in TEXT_COLUMNS] + [(t, c, True) for t, c in BYTES_COLUMNS]
    for table, column, is_bytes in columns:
        counts[table] = 0
        while True:
            async with sessions.begin() as session:
                await scope_to_tenant(session, tenant)
                rows = (
                    await session.execute(
                        text(
                            f"SELECT id, {column} FROM {table} WHERE tenant_id = :tenant"
                            f" AND {_clear(column, is_bytes)} LIMIT :n FOR UPDATE"
                        ),
                        {"tenant": tenant, "n": batch},
                    )
                ).all()
                if not rows:
                    break
                sealed = [
                    {"id": row_id, "value": await (seal_bytes if is_bytes else seal_text)(tenant, value)}
                    for row_id, value in rows
                ]
                await session.execute(text(f"UPDATE {table} SET {column} = :value WHERE id = :id"), sealed)
            counts[table] += len(rows)
    return counts
