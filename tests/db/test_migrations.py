"""Migrations: a fresh database goes to head with pgvector, the indexes, and back down cleanly."""

from __future__ import annotations

import psycopg
import pytest

from db.migrate import upgrade_async
from tests.support.services import psycopg_url


async def test_upgrade_downgrade_upgrade(fresh_database: str) -> None:
    from alembic import command

    from db.migrate import alembic_config

    await upgrade_async(fresh_database)
    with psycopg.connect(psycopg_url(fresh_database)) as conn:
        tables = {r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname='public'")}
        assert {
            "tenants",
            "api_keys",
            "conversations",
            "messages",
            "documents",
            "chunks",
            "audit_events",
        } <= (tables)
        assert conn.execute("SELECT extversion FROM pg_extension WHERE extname='vector'").fetchone()
        index = conn.execute(
            "SELECT indexdef FROM pg_indexes WHERE indexname = 'ix_chunks_embedding_hnsw'"
        ).fetchone()
        assert index and "hnsw" in index[0] and "vector_cosine_ops" in index[0]
        # Written by the application from the clear text (the stored text is sealed: migration 0008),
        # and still indexed for full-text search.
        tsv = conn.execute(
            "SELECT is_generated FROM information_schema.columns "
            "WHERE table_name = 'chunks' AND column_name = 'tsv'"
        ).fetchone()
        assert tsv == ("NEVER",)
        assert conn.execute("SELECT 1 FROM pg_indexes WHERE indexname = 'ix_chunks_tsv'").fetchone()

    import asyncio

    await asyncio.to_thread(command.downgrade, alembic_config(fresh_database), "base")
    with psycopg.connect(psycopg_url(fresh_database)) as conn:
        left = {r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname='public'")}
        assert left == {"alembic_version"}
    await upgrade_async(fresh_database)


async def test_transcript_idempotency_constraint(fresh_database: str) -> None:
    """The (turn_id, role) unique key is what makes a retried persist unable to write twice."""
    await upgrade_async(fresh_database)
    with psycopg.connect(psycopg_url(fresh_database)) as conn:
        tenant = conn.execute(
            "INSERT INTO tenants (id, name) VALUES (gen_random_uuid(), 't') RETURNING id"
        ).fetchone()
        conv = conn.execute(
            "INSERT INTO conversations (id, tenant_id) VALUES (gen_random_uuid(), %s) RETURNING id", tenant
        ).fetchone()
        insert = (
            "INSERT INTO messages (id, tenant_id, conversation_id, turn_id, role, content) "
            "VALUES (gen_random_uuid(), %s, %s, 'turn-1', 'assistant', 'hi')"
        )
        conn.execute(insert, (tenant[0], conv[0]))  # type: ignore[index]
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute(insert, (tenant[0], conv[0]))  # type: ignore[index]
