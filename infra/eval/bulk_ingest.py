"""Bulk ingestion for evaluation and benchmarks: the same parsing-free path as a text document
(redact → chunk → embed → seal → live chunks), in large batches, without a workflow per document."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from activities.adapters.embedder import Embedder
from activities.adapters.lexicon import refresh_lexicon
from activities.adapters.sealed_text import SealedText
from activities.logic.chunking import Chunker, TextChunk
from activities.logic.pii import redact
from db.documents import chunk_row, insert_chunks, insert_documents
from db.engine import scope_to_tenant
from db.models import Tenant


@dataclass(frozen=True)
class TextDocument:
    source: str
    title: str | None
    text: str


@dataclass
class BulkStats:
    documents: int = 0
    chunks: int = 0
    seconds: float = 0.0


def _chunk_all(chunker: Chunker, texts: list[str]) -> list[list[TextChunk]]:
    return [chunker.chunk(t) for t in texts]


async def bulk_ingest(
    sessions: async_sessionmaker[AsyncSession],
    sealer: SealedText,
    embedder: Embedder,
    chunker: Chunker,
    tenant: uuid.UUID,
    docs: list[TextDocument],
    *,
    batch_docs: int = 128,
    progress: Callable[[int], None] | None = None,
) -> BulkStats:
    loop = asyncio.get_running_loop()
    start = loop.time()
    stats = BulkStats()
    async with sessions.begin() as session:
        await session.execute(
            update(Tenant)
            .where(Tenant.id == tenant)
            .values(embedding_model=embedder.model_id, embedding_version=embedder.version)
        )

    async def prepared(
        batch: list[TextDocument],
    ) -> tuple[list[list[TextChunk]], list[str], list[Any], list[str]]:
        texts = [redact(d.text).text for d in batch]
        pieces = await asyncio.to_thread(_chunk_all, chunker, texts)
        flat = [p.text for doc_pieces in pieces for p in doc_pieces]
        return pieces, flat, await embedder.embed(flat), await sealer.seal_all(tenant, flat)

    batches = [docs[offset : offset + batch_docs] for offset in range(0, len(docs), batch_docs)]
    # The next batch is chunked and embedded (in threads) while this one is written: the embedder,
    # the cost, never waits for Postgres.
    ahead = asyncio.ensure_future(prepared(batches[0])) if batches else None
    for i, batch in enumerate(batches):
        assert ahead is not None
        pieces, flat, embedded, sealed_texts = await ahead
        ahead = asyncio.ensure_future(prepared(batches[i + 1])) if i + 1 < len(batches) else None
        vectors, sealed = iter(embedded), iter(sealed_texts)
        doc_rows: list[dict[str, Any]] = []
        chunk_rows: list[dict[str, Any]] = []
        for doc, doc_pieces in zip(batch, pieces, strict=True):
            doc_id = uuid.uuid4()
            doc_rows.append(
                {
                    "id": doc_id,
                    "tenant_id": tenant,
                    "source": doc.source,
                    "title": doc.title,
                    "mime_type": "text/plain",
                    "content_hash": hashlib.sha256(doc.text.encode()).hexdigest(),
                    "version": 1,
                    "status": "ready",
                    "size_bytes": len(doc.text.encode()),
                    "chunk_count": len(doc_pieces),
                    "embedded_count": len(doc_pieces),
                }
            )
            chunk_rows.extend(
                chunk_row(
                    tenant_id=tenant,
                    document_id=doc_id,
                    document_version=1,
                    ordinal=n,
                    text=next(sealed),
                    token_count=piece.token_count,
                    embedding=next(vectors),
                    embedding_model=embedder.model_id,
                    embedding_version=embedder.version,
                    chunker=chunker.settings.as_record(),
                    live=True,
                )
                for n, piece in enumerate(doc_pieces)
            )
        async with sessions.begin() as session:
            await scope_to_tenant(session, tenant)
            await insert_documents(session, doc_rows)
            await insert_chunks(session, chunk_rows, flat)
        stats.documents += len(batch)
        stats.chunks += len(chunk_rows)
        if progress:
            progress(len(batch))
    # The corpus's own average length for its BM25 vectors (they were written with the default).
    await refresh_lexicon(sessions, tenant, embedder.model_id, embedder.version)
    stats.seconds = loop.time() - start
    return stats
