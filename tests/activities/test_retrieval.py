"""Retrieval on real pgvector with real embeddings: tenant-filtered top-k, versions recorded on the turn."""

from __future__ import annotations

import hashlib
import logging
import uuid

import pytest
from sqlalchemy import event, update

from activities.adapters.search import invalidate_tenant
from activities.chat.retrieval import RetrievalActivities
from activities.contracts.turn import RetrieveInput
from db.access import ensure_tenant
from db.documents import chunk_row, insert_chunks
from db.engine import scope_to_tenant
from db.models import Chunk, Document
from infra.runtime.resources import Resources
from tests.support.api_harness import ApiServer
from tests.support.sse import collect

FACTS = [
    "The Zorblat lighthouse stands on the island of Quentara and was built in 1887.",
    "Quentara island is known for its purple sand beaches and strong winds.",
    "Sourdough bread needs a starter made of flour and water.",
]


async def add_document(res: Resources, tenant: uuid.UUID, texts: list[str]) -> list[uuid.UUID]:
    vectors = await res.embedder.embed(texts)
    async with res.sessions.begin() as session:
        await scope_to_tenant(session, tenant)
        doc = Document(
            id=uuid.uuid4(),
            tenant_id=tenant,
            source=f"test-{uuid.uuid4().hex[:8]}",
            content_hash=hashlib.sha256("".join(texts).encode() + uuid.uuid4().bytes).hexdigest(),
            status="ready",
        )
        session.add(doc)
        await session.flush()
        # As the ingestion writes them: sealed, with the tsvector of the clear text.
        rows = [
            chunk_row(
                tenant_id=tenant,
                document_id=doc.id,
                document_version=1,
                ordinal=i,
                text=sealed,
                token_count=len(t.split()),
                embedding=v,
                embedding_model=res.embedder.model_id,
                embedding_version=res.embedder.version,
                chunker={},
                live=True,
            )
            for i, (t, sealed, v) in enumerate(
                zip(texts, await res.sealer.seal_all(tenant, texts), vectors, strict=True)
            )
        ]
        await insert_chunks(session, rows, texts)
    return [row["id"] for row in rows]


async def test_top_k_is_tenant_filtered_and_skips_tombstones(resources: Resources) -> None:
    mine = await ensure_tenant(resources.sessions, f"t-{uuid.uuid4().hex[:8]}")
    other = await ensure_tenant(resources.sessions, f"t-{uuid.uuid4().hex[:8]}")
    ids = await add_document(resources, mine, FACTS)
    await add_document(resources, other, ["The Zorblat lighthouse is painted green, says the other tenant."])
    retrieval = RetrievalActivities(resources.search)

    found = await retrieval.retrieve(
        RetrieveInput(tenant_id=str(mine), query="When was the Zorblat lighthouse built?", k=2)
    )
    assert [c.id for c in found.chunks] == [str(ids[0]), str(ids[1])]
    assert found.chunks[0].score > found.chunks[1].score > 0
    assert all(
        c.document_version == 1 and c.embedding_version == resources.embedder.version for c in found.chunks
    )

    async with resources.sessions.begin() as session:
        await scope_to_tenant(session, mine)
        await session.execute(
            update(Chunk).where(Chunk.id == ids[0]).values(live=False, tombstoned_at=Chunk.created_at)
        )
    again = await retrieval.retrieve(RetrieveInput(tenant_id=str(mine), query="Zorblat lighthouse", k=5))
    assert str(ids[0]) not in [c.id for c in again.chunks] and len(again.chunks) == 2

    empty = await ensure_tenant(resources.sessions, f"t-{uuid.uuid4().hex[:8]}")
    assert (await retrieval.retrieve(RetrieveInput(tenant_id=str(empty), query="Zorblat", k=3))).chunks == []


async def test_turn_uses_and_records_retrieved_context(api: ApiServer, resources: Resources) -> None:
    name = f"t-{uuid.uuid4().hex[:8]}"
    tenant = await ensure_tenant(resources.sessions, name)
    ids = await add_document(resources, tenant, FACTS)
    headers = await api.headers_for(name)
    conv = await api.conversation(headers)
    async with api.client.stream(
        "POST",
        f"/v1/conversations/{conv}/messages",
        headers=headers,
        json={"content": "When was the Zorblat lighthouse built?", "max_tokens": 24, "temperature": 0},
    ) as resp:
        seen = await collect(resp)
    assert seen[0].data["degraded"] is False
    listed = (await api.client.get(f"/v1/conversations/{conv}/messages", headers=headers)).json()
    provenance = listed[1]["retrieved_chunks"]
    assert provenance and provenance[0]["id"] == str(ids[0])
    assert {"document_id", "document_version", "embedding_version", "score"} <= set(provenance[0])
    assert listed[1]["input_tokens"] > 60  # the passages are in the prompt


async def owner_of(resources: Resources, conversation_id: str) -> uuid.UUID:
    from db.models import Conversation

    async with resources.sessions() as session:
        return (await session.get_one(Conversation, uuid.UUID(conversation_id))).tenant_id


async def test_recent_context_falls_back_to_postgres_when_redis_lost_it(
    api: ApiServer, resources: Resources
) -> None:
    from activities.adapters.context_cache import recent_key
    from activities.chat.transcript import Transcript

    conv = await api.conversation()
    async with api.client.stream(
        "POST", f"/v1/conversations/{conv}/messages", json={"content": "My name is Ada.", "max_tokens": 8}
    ) as resp:
        await collect(resp)
    transcript = Transcript(resources.sessions, resources.redis, resources.events)
    tenant = str(await owner_of(resources, conv))
    from_redis = await transcript.recent(tenant, conv)
    assert [m["role"] for m in from_redis] == ["user", "assistant"]
    assert from_redis[0]["content"] == "My name is Ada."  # opened: Redis holds it sealed
    await resources.redis.delete(recent_key(conv))  # evicted
    assert await transcript.recent(tenant, conv) == from_redis  # read back from Postgres...
    assert await resources.redis.exists(recent_key(conv)) == 1  # ...and cached again


async def test_embedding_draws_no_progress_bar_in_the_service_log(
    resources: Resources, capfd: pytest.CaptureFixture[str]
) -> None:
    # Services log at INFO, where sentence-transformers would draw a tqdm bar per call.
    logging.getLogger("sentence_transformers").setLevel(logging.INFO)
    try:
        vectors = await resources.embedder.embed(["why do lighthouses have lenses?"])
    finally:
        logging.getLogger("sentence_transformers").setLevel(logging.NOTSET)
    assert len(vectors) == 1
    assert "Batches" not in capfd.readouterr().err


async def test_a_tenant_is_looked_up_once_per_documents_generation(resources: Resources) -> None:
    """Retrieval remembers, per tenant and generation, what it searches: an empty tenant's next
    search, or a query asked before, costs no database statement; a new document (its generation
    bumped) is found at once."""
    statements: list[str] = []

    def count(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        statements.append(statement)

    tenant = await ensure_tenant(resources.sessions, f"t-{uuid.uuid4().hex[:8]}")
    retrieval = RetrievalActivities(resources.search)
    ask = RetrieveInput(tenant_id=str(tenant), query="When was the Zorblat lighthouse built?", k=2)
    event.listen(resources.engine.sync_engine, "before_cursor_execute", count)
    try:
        assert (await retrieval.retrieve(ask)).chunks == []
        first = len(statements)
        assert first > 0
        assert (await retrieval.retrieve(ask)).chunks == []
        assert len(statements) == first  # nothing asked of Postgres the second time

        await add_document(resources, tenant, FACTS)
        await invalidate_tenant(resources.redis, tenant)  # as ingestion does when a document goes live
        found = await retrieval.retrieve(ask)
        assert len(found.chunks) == 2 and "1887" in found.chunks[0].text
        searched = len(statements)
        again = await retrieval.retrieve(ask)  # the same question: the cached result
        assert again.chunks == found.chunks and len(statements) == searched
    finally:
        event.remove(resources.engine.sync_engine, "before_cursor_execute", count)
