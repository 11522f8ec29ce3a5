"""Documents, their uploads and their chunks: the one place that writes them.

Every function takes a session whose transaction the caller scoped to the tenant (row-level security,
`db.engine.scope_to_tenant`); the caller decides what one transaction holds.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from sqlalchemy import bindparam, delete, func, literal_column, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from db.lexicon import document_weights
from db.models import Chunk, Document, DocumentUpload

CHUNK_UNIQUE = "uq_chunks_position_embedding"


async def active_embedding(session: AsyncSession, tenant: str) -> tuple[str | None, str | None]:
    """The embedding model and version the tenant's chunks are searched with (None: no document yet)."""
    row = (
        await session.execute(
            text("SELECT embedding_model, embedding_version FROM tenants WHERE id = :tenant"),
            {"tenant": tenant},
        )
    ).first()
    return (row[0], row[1]) if row else (None, None)


async def search_shape(
    session: AsyncSession, tenant: str, default_model: str, default_version: str
) -> tuple[str | None, str | None, int]:
    """The tenant's active embedding (None: no document activated yet) and how many live chunks it
    searches with it (or with the default embedding, before any activation), in one indexed lookup:
    the count is the BM25 statistics' (db/lexicon.py), kept exact by triggers on every write."""
    row = (
        await session.execute(
            text(
                "SELECT t.embedding_model, t.embedding_version, coalesce(l.chunks, 0)"
                " FROM (SELECT CAST(:tenant AS uuid) AS id) AS asked"
                " LEFT JOIN tenants t ON t.id = asked.id"
                " LEFT JOIN lexicon_totals l ON l.tenant_id = asked.id"
                " AND l.embedding_model = coalesce(t.embedding_model, :model)"
                " AND l.embedding_version = coalesce(t.embedding_version, :version)"
            ),
            {"tenant": tenant, "model": default_model, "version": default_version},
        )
    ).first()
    assert row is not None  # one row, whatever the tenant
    return row[0], row[1], int(row[2])


def vector_literal(vector: np.ndarray | Sequence[float]) -> str:
    """pgvector's text form of a vector, for a CAST(:param AS vector)."""
    return "[" + ",".join(f"{x:.7g}" for x in np.asarray(vector, dtype=np.float32)) + "]"


def chunk_row(
    *,
    tenant_id: uuid.UUID,
    document_id: uuid.UUID,
    document_version: int,
    ordinal: int,
    text: str,
    token_count: int,
    embedding_model: str,
    embedding_version: str,
    chunker: dict[str, Any],
    live: bool,
    embedding: Sequence[float] | None = None,
) -> dict[str, Any]:
    """One chunk as a row: the shape every writer of chunks uses."""
    return {
        "id": uuid.uuid4(),
        "tenant_id": tenant_id,
        "document_id": document_id,
        "document_version": document_version,
        "ordinal": ordinal,
        "text": text,
        "token_count": token_count,
        "embedding": embedding,
        "embedding_model": embedding_model,
        "embedding_version": embedding_version,
        "chunker": chunker,
        "live": live,
    }


async def insert_chunks(
    session: AsyncSession, rows: list[dict[str, Any]], clear_texts: Sequence[str]
) -> None:
    """Chunks not there yet (a retried step finds its own and adds nothing); one executemany.

    ``rows[i]["text"]`` is what is stored (sealed); ``clear_texts[i]`` the text it seals, from which
    Postgres computes the chunk's tsvector and its BM25 vector (db/lexicon.py) in the INSERT itself:
    the clear text is a statement parameter, never stored. All rows are of one tenant and embedding."""
    if not rows:
        return
    first = rows[0]
    weights = await document_weights(
        session, first["tenant_id"], first["embedding_model"], first["embedding_version"]
    )
    tsv = func.to_tsvector(literal_column("'english'::regconfig"), bindparam("clear_text"))
    statement = (
        insert(Chunk)
        .values(tsv=tsv, bm25=func.bm25_document(tsv, weights.avgdl, weights.k1, weights.b))
        .on_conflict_do_nothing(constraint=CHUNK_UNIQUE)
    )
    await session.execute(
        statement, [{**row, "clear_text": clear} for row, clear in zip(rows, clear_texts, strict=True)]
    )


async def insert_documents(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    await session.execute(insert(Document), rows)


# --- intake: a new version of a source, or the same bytes again ------------------------------------


@dataclass(frozen=True)
class RecordedUpload:
    document: Document
    # The upload whose ingestion should run now: a new version's, or a pending one that never started.
    upload_id: uuid.UUID | None
    new_version: bool


async def record_upload(
    session: AsyncSession,
    tenant: uuid.UUID,
    *,
    source: str,
    title: str | None,
    mime_type: str,
    content: bytes,
    digest: str,
    workflow_id_for: Callable[[str, int], str],
) -> RecordedUpload:
    """The source's next version with its upload, or the existing document when these bytes are
    already there (then the upload still waiting to be ingested, if its start never happened)."""
    # Lock the source's row (if any): two uploads of one source must not both make version n+1.
    doc = await session.scalar(
        select(Document)
        .where(Document.tenant_id == tenant, Document.source == source, Document.deleted_at.is_(None))
        .with_for_update()
    )
    same_bytes = await session.scalar(
        select(Document).where(
            Document.tenant_id == tenant,
            Document.content_hash == digest,
            Document.deleted_at.is_(None),
            Document.status.in_(("pending", "ingesting", "ready")),
        )
    )
    if same_bytes is not None and (doc is None or doc.id == same_bytes.id):
        pending = await session.scalar(
            select(DocumentUpload.id).where(
                DocumentUpload.document_id == same_bytes.id,
                DocumentUpload.document_version == same_bytes.version,
            )
        )
        waiting = pending if pending is not None and same_bytes.status in ("pending", "ingesting") else None
        return RecordedUpload(same_bytes, waiting, new_version=False)
    if doc is None:
        doc = Document(id=uuid.uuid4(), tenant_id=tenant, source=source, version=1)
        session.add(doc)
    else:
        doc.version += 1
    doc.title = title or doc.title
    doc.mime_type = mime_type
    doc.content_hash = digest
    doc.size_bytes = len(content)
    doc.status, doc.error, doc.chunk_count, doc.embedded_count = "pending", None, 0, 0
    doc.workflow_id = workflow_id_for(str(doc.id), doc.version)
    await session.flush()
    upload = DocumentUpload(
        id=uuid.uuid4(),
        tenant_id=tenant,
        document_id=doc.id,
        document_version=doc.version,
        filename=source,
        mime_type=mime_type,
        content=content,
    )
    session.add(upload)
    return RecordedUpload(doc, upload.id, new_version=True)


# --- ingestion of one version --------------------------------------------------------------------


async def set_version_state(session: AsyncSession, doc_id: uuid.UUID, version: int, **values: Any) -> None:
    """Update the document if ``version`` is still its current one (a newer upload decides otherwise)."""
    await session.execute(
        update(Document).where(Document.id == doc_id, Document.version == version).values(**values)
    )


async def count_chunks(
    session: AsyncSession, doc_id: uuid.UUID, version: int, embedding_model: str, embedding_version: str
) -> int:
    found = await session.scalar(
        select(func.count()).where(
            Chunk.document_id == doc_id,
            Chunk.document_version == version,
            Chunk.embedding_model == embedding_model,
            Chunk.embedding_version == embedding_version,
        )
    )
    return int(found or 0)


async def chunks_to_embed(
    session: AsyncSession,
    doc_id: uuid.UUID,
    version: int,
    embedding_model: str,
    embedding_version: str,
    limit: int,
) -> Sequence[Any]:
    """The next ``limit`` chunks of the version with no vector yet, in order: rows of (id, text)."""
    rows = await session.execute(
        select(Chunk.id, Chunk.text)
        .where(
            Chunk.document_id == doc_id,
            Chunk.document_version == version,
            Chunk.embedding_model == embedding_model,
            Chunk.embedding_version == embedding_version,
            Chunk.embedding.is_(None),
        )
        .order_by(Chunk.ordinal)
        .limit(limit)
    )
    return rows.all()


async def store_vectors(
    session: AsyncSession, doc_id: uuid.UUID, version: int, vectors: dict[uuid.UUID, Sequence[float]]
) -> None:
    """The chunks' vectors (ORM bulk update by primary key: one executemany) and the document's count."""
    await session.execute(update(Chunk), [{"id": k, "embedding": v} for k, v in vectors.items()])
    await set_version_state(session, doc_id, version, embedded_count=Document.embedded_count + len(vectors))


@dataclass(frozen=True)
class Activation:
    # ingesting: embed again with ``embed_again_with`` (a re-embed switched the tenant meanwhile)
    status: Literal["ready", "deleted", "superseded", "ingesting"]
    chunk_count: int = 0
    embed_again_with: tuple[str, str] | None = None
    # ready: the embedding (model, version) its chunks went live under
    embedding: tuple[str, str] | None = None


class NotEmbedded(Exception):
    def __init__(self, missing: int) -> None:
        super().__init__(f"{missing} chunks still have no vector")


async def activate_version(session: AsyncSession, tenant: str, doc_id: uuid.UUID, version: int) -> Activation:
    """The version's chunks go live and every older version's are tombstoned, in the caller's one
    transaction: a query sees the old document or the new one, never a mix. Raises NotEmbedded."""
    doc = await session.get(Document, doc_id, with_for_update=True)
    if doc is None or doc.deleted_at is not None:
        return Activation("deleted")
    if doc.version != version:
        return Activation("superseded")  # a newer upload of this source arrived; it decides
    this_version = (Chunk.document_id == doc_id, Chunk.document_version == version)
    model, embedding_version = await active_embedding(session, tenant)
    stale = await session.scalar(
        select(func.count()).where(
            *this_version, (Chunk.embedding_model != model) | (Chunk.embedding_version != embedding_version)
        )
    )
    if model is not None and embedding_version is not None and stale:
        # A re-embed switched the tenant while this ran: these vectors would never be found.
        await session.execute(
            update(Chunk)
            .where(*this_version)
            .values(embedding=None, embedding_model=model, embedding_version=embedding_version)
        )
        return Activation("ingesting", embed_again_with=(model, embedding_version))
    missing = await session.scalar(select(func.count()).where(*this_version, Chunk.embedding.is_(None)))
    if missing:
        raise NotEmbedded(int(missing))
    await session.execute(update(Chunk).where(*this_version, Chunk.tombstoned_at.is_(None)).values(live=True))
    await session.execute(
        update(Chunk)
        .where(Chunk.document_id == doc_id, Chunk.document_version != version, Chunk.tombstoned_at.is_(None))
        .values(live=False, tombstoned_at=func.now())
    )
    count = int(
        await session.scalar(select(func.count(func.distinct(Chunk.ordinal))).where(*this_version)) or 0
    )
    doc.status, doc.chunk_count, doc.error = "ready", count, None
    await session.execute(delete(DocumentUpload).where(DocumentUpload.document_id == doc_id))
    live_under = (model, embedding_version) if model is not None and embedding_version is not None else None
    return Activation("ready", chunk_count=count, embedding=live_under)


async def fail_version(session: AsyncSession, doc_id: uuid.UUID, version: int, error: str) -> None:
    """This version's chunks never went live: drop them (a previous version stays searchable)."""
    await session.execute(
        delete(Chunk).where(
            Chunk.document_id == doc_id, Chunk.document_version == version, Chunk.live.is_(False)
        )
    )
    await set_version_state(session, doc_id, version, status="failed", error=error)
    await session.execute(
        delete(DocumentUpload).where(
            DocumentUpload.document_id == doc_id, DocumentUpload.document_version == version
        )
    )


# --- deletion, purge, re-embedding -----------------------------------------------------------------


async def tombstone_document(session: AsyncSession, doc: Document) -> None:
    """The document and its chunks leave every query now; a purge removes them for good later."""
    await session.execute(
        update(Chunk)
        .where(Chunk.document_id == doc.id, Chunk.tombstoned_at.is_(None))
        .values(live=False, tombstoned_at=func.now())
    )
    doc.deleted_at, doc.status = func.now(), "deleted"


async def delete_tenant_documents(session: AsyncSession, tenant: uuid.UUID) -> None:
    """Every document of the tenant, their chunks and uploads with them (foreign keys cascade)."""
    await session.execute(delete(Document).where(Document.tenant_id == tenant))


# What a purge removes: tombstoned chunks, deleted documents, past an age.
_PURGEABLE = {
    "chunks": "tombstoned_at < now() - CAST(:age AS interval)",
    "documents": "deleted_at < now() - CAST(:age AS interval)",
}


async def purge(session: AsyncSession, table: str, older_than_s: int, *, limit: int, dry_run: bool) -> int:
    """Up to ``limit`` of the tenant's tombstoned rows of ``table`` older than the age, removed (or,
    dry, counted): how many."""
    where, age = _PURGEABLE[table], {"age": f"{older_than_s} seconds"}
    if dry_run:
        return int(await session.scalar(text(f"SELECT count(*) FROM {table} WHERE {where}"), age) or 0)
    result = await session.execute(
        text(f"DELETE FROM {table} WHERE id IN (SELECT id FROM {table} WHERE {where} LIMIT {int(limit)})"),
        age,
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


async def insert_reembedded(
    session: AsyncSession, vectors: dict[uuid.UUID, Sequence[float]], model: str, version: str
) -> None:
    """Each chunk again beside itself, with a vector of the target model and version."""
    await session.execute(
        text(
            """
            INSERT INTO chunks (id, tenant_id, document_id, document_version, ordinal, text, tsv, bm25,
                token_count, embedding, embedding_model, embedding_version, chunker, live, created_at)
            SELECT :new_id, tenant_id, document_id, document_version, ordinal, text, tsv, bm25, token_count,
                CAST(:vector AS vector), :model, :version, chunker, live, now()
            FROM chunks WHERE id = :id
            ON CONFLICT ON CONSTRAINT uq_chunks_position_embedding DO NOTHING
            """
        ),
        [
            {"new_id": uuid.uuid4(), "id": k, "vector": vector_literal(v), "model": model, "version": version}
            for k, v in vectors.items()
        ],
    )


async def drop_other_embeddings(
    session: AsyncSession, tenant: str, model: str, version: str, limit: int
) -> int:
    """Up to ``limit`` of the tenant's chunks whose vectors are of any model or version but this one."""
    result = await session.execute(
        text(
            "DELETE FROM chunks WHERE id IN (SELECT id FROM chunks WHERE tenant_id = :tenant AND"
            " (embedding_model, embedding_version) IS DISTINCT FROM (:model, :version)"
            f" LIMIT {int(limit)})"
        ),
        {"tenant": tenant, "model": model, "version": version},
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


async def live_documents(
    session: AsyncSession, tenant: uuid.UUID, ids: set[uuid.UUID]
) -> dict[str, Document]:
    """The tenant's documents among ``ids`` that are not deleted, by id."""
    if not ids:
        return {}
    found = await session.scalars(
        select(Document).where(
            Document.tenant_id == tenant, Document.id.in_(ids), Document.deleted_at.is_(None)
        )
    )
    return {str(d.id): d for d in found}


async def documents_cited(
    session: AsyncSession, tenant: uuid.UUID, messages: Sequence[Any]
) -> dict[str, Document]:
    """The live documents the messages' retrieved passages came from, by id."""
    ids = {
        uuid.UUID(str(chunk["document_id"]))
        for m in messages
        for chunk in m.retrieved_chunks or []
        if chunk.get("document_id")
    }
    return await live_documents(session, tenant, ids)
