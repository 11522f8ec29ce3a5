"""The ingestion steps: parse + redact + chunk (one activity, so the text never enters history),
embed in resumable batches, then make the new version live and tombstone the old in one transaction."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

from redis.asyncio import Redis
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.adapters.embedder import Embedder, Embedders
from activities.adapters.lexicon import refresh_lexicon
from activities.adapters.sealed_text import SealedText
from activities.adapters.search import invalidate_tenant
from activities.contracts.ingest import (
    DocumentRef,
    EmbedInput,
    FailInput,
    IngestInput,
    IngestResult,
    Prepared,
)
from activities.logic.chunking import Chunker, ChunkerSettings
from activities.logic.parsing import DocumentRejected, parse
from activities.logic.pii import redact
from db.documents import (
    NotEmbedded,
    activate_version,
    active_embedding,
    chunk_row,
    chunks_to_embed,
    count_chunks,
    fail_version,
    insert_chunks,
    set_version_state,
    store_vectors,
)
from db.engine import scope_to_tenant
from db.models import DocumentUpload, Tenant


class IngestionActivities:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        embedders: Embedders,
        redis: Redis,
        sealer: SealedText,
        tokenizer_file: Path,
    ) -> None:
        self.sessions = sessions
        self.embedders = embedders
        self.redis = redis
        self.sealer = sealer
        self.tokenizer_file = tokenizer_file

    @activity.defn(name="parse_and_chunk")
    async def parse_and_chunk(self, inp: IngestInput) -> Prepared:
        tenant, doc_id = uuid.UUID(inp.tenant_id), uuid.UUID(inp.document_id)
        async with self.sessions.begin() as session:
            await scope_to_tenant(session, tenant)
            upload = await session.get(DocumentUpload, uuid.UUID(inp.upload_id))
            embedder = await self._embedder_for(session, tenant)
            if upload is None:
                # A retry after this version went live (the upload is deleted then): nothing to redo.
                count = await count_chunks(session, doc_id, inp.version, embedder.model_id, embedder.version)
                return Prepared(
                    chunk_count=count, embedding_model=embedder.model_id, embedding_version=embedder.version
                )
            content, mime = upload.content, upload.mime_type
            owner = await session.get(Tenant, tenant)
            pii_policy = (owner.settings.get("pii") if owner else None) or {}
        content = await self.sealer.open_bytes(tenant, content)
        try:
            text = await asyncio.to_thread(parse, content, mime)
        except DocumentRejected as exc:
            raise ApplicationError(str(exc), exc.code, type="DocumentRejected", non_retryable=True) from exc
        redacted = redact(text, pii_policy)  # before the index or any model sees the text
        chunker = Chunker(
            self.tokenizer_file,
            ChunkerSettings(max_tokens=inp.chunker.max_tokens, overlap_tokens=inp.chunker.overlap_tokens),
        )
        pieces = await asyncio.to_thread(chunker.chunk, redacted.text)
        record = chunker.settings.as_record()
        clear = [piece.text for piece in pieces]
        sealed = await self.sealer.seal_all(tenant, clear)
        async with self.sessions.begin() as session:
            await scope_to_tenant(session, tenant)
            rows = [
                chunk_row(
                    tenant_id=tenant,
                    document_id=doc_id,
                    document_version=inp.version,
                    ordinal=i,
                    text=sealed[i],
                    token_count=piece.token_count,
                    embedding_model=embedder.model_id,
                    embedding_version=embedder.version,
                    chunker=record,
                    live=False,
                )
                for i, piece in enumerate(pieces)
            ]
            await insert_chunks(session, rows, clear)
            await set_version_state(
                session,
                doc_id,
                inp.version,
                status="ingesting",
                chunk_count=len(pieces),
                pii_counts=redacted.counts,
            )
        activity.logger.info("document %s v%d: %d chunks", doc_id, inp.version, len(pieces))
        return Prepared(
            chunk_count=len(pieces),
            embedding_model=embedder.model_id,
            embedding_version=embedder.version,
            pii_counts=redacted.counts,
        )

    @activity.defn(name="embed_chunks")
    async def embed_chunks(self, inp: EmbedInput) -> int:
        """Embed the version's chunks that have no vector yet, a batch per transaction, heartbeating
        the count done: a retry after a crash starts where the last committed batch ended."""
        embedder = self.embedders.require(inp.embedding_model, inp.embedding_version)
        tenant, doc_id = uuid.UUID(inp.tenant_id), uuid.UUID(inp.document_id)
        done = 0
        while True:
            async with self.sessions.begin() as session:
                await scope_to_tenant(session, tenant)
                rows = await chunks_to_embed(
                    session, doc_id, inp.version, embedder.model_id, embedder.version, inp.batch_size
                )
                if not rows:
                    return done
                vectors = await embedder.embed(await self.sealer.open_all(tenant, [r.text for r in rows]))
                await store_vectors(
                    session, doc_id, inp.version, {r.id: v for r, v in zip(rows, vectors, strict=True)}
                )
                done += len(rows)
            activity.heartbeat(done)

    @activity.defn(name="activate_document")
    async def activate_document(self, ref: DocumentRef) -> IngestResult:
        """The new version's chunks go live and every older version's are tombstoned, in one
        transaction: a query sees the old document or the new one, never a mix."""
        tenant, doc_id = uuid.UUID(ref.tenant_id), uuid.UUID(ref.document_id)
        async with self.sessions.begin() as session:
            await scope_to_tenant(session, tenant)
            try:
                done = await activate_version(session, ref.tenant_id, doc_id, ref.version)
            except NotEmbedded as exc:
                raise ApplicationError(str(exc), type="NotEmbedded") from exc
        if done.status != "ready":
            return IngestResult(
                document_id=ref.document_id,
                version=ref.version,
                status=done.status,
                embed_again_with=done.embed_again_with,
            )
        await invalidate_tenant(self.redis, tenant)
        if done.embedding is not None:  # the tenant's corpus changed: its BM25 lengths may have drifted
            await refresh_lexicon(self.sessions, tenant, *done.embedding)
        return IngestResult(
            document_id=ref.document_id, version=ref.version, status="ready", chunk_count=done.chunk_count
        )

    @activity.defn(name="mark_document_failed")
    async def mark_document_failed(self, inp: FailInput) -> IngestResult:
        ref = inp.document
        tenant, doc_id = uuid.UUID(ref.tenant_id), uuid.UUID(ref.document_id)
        async with self.sessions.begin() as session:
            await scope_to_tenant(session, tenant)
            await fail_version(session, doc_id, ref.version, f"{inp.code}: {inp.message}")
        return IngestResult(
            document_id=ref.document_id,
            version=ref.version,
            status="failed",
            error={"code": inp.code, "message": inp.message},
        )

    async def _embedder_for(self, session: AsyncSession, tenant: uuid.UUID) -> Embedder:
        """The tenant's active embedder; a tenant's first document pins it to this deployment's
        default, so a later change of default does not hide its documents before a re-embed."""
        model, version = await active_embedding(session, str(tenant))
        embedder = self.embedders.get(model, version)
        if model is None:
            await session.execute(
                update(Tenant)
                .where(Tenant.id == tenant, Tenant.embedding_model.is_(None))
                .values(
                    embedding_model=self.embedders.default.model_id,
                    embedding_version=self.embedders.default.version,
                )
            )
        if embedder is None:
            raise ApplicationError(
                f"the tenant searches with {model}@{version}, which this deployment cannot compute; "
                "re-embed it (turnflow reembed) or configure that embedder",
                type="EmbedderUnavailable",
                non_retryable=True,
            )
        return embedder
