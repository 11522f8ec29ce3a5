"""The retrieve step: the tenant's top-k chunks by vector similarity, with ids and versions."""

from __future__ import annotations

import uuid

from pydantic import BaseModel
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity

from activities.embedder import Embedder
from activities.prompt import ContextChunk
from db.models import Chunk


class RetrieveInput(BaseModel):
    tenant_id: str
    query: str
    k: int = 4


class RetrieveResult(BaseModel):
    chunks: list[ContextChunk]
    embedding_model: str


class RetrievalActivities:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], embedder: Embedder) -> None:
        self.sessions = sessions
        self.embedder = embedder

    @activity.defn(name="retrieve")
    async def retrieve(self, inp: RetrieveInput) -> RetrieveResult:
        tenant = uuid.UUID(inp.tenant_id)
        live = (
            Chunk.tenant_id == tenant,
            Chunk.tombstoned_at.is_(None),
            Chunk.embedding_model == self.embedder.model_id,
            Chunk.embedding_version == self.embedder.version,
        )
        async with self.sessions() as session:
            # A tenant without documents costs one indexed lookup, not an embedding.
            if await session.scalar(select(Chunk.id).where(*live).limit(1)) is None:
                return RetrieveResult(chunks=[], embedding_model=self.embedder.model_id)
            [vector] = await self.embedder.embed([inp.query])
            # Filtered HNSW scans stop early; iterative scans keep going until k rows pass the filter.
            await session.execute(text("SET LOCAL hnsw.iterative_scan = relaxed_order"))
            distance = Chunk.embedding.cosine_distance(vector)
            rows = (
                await session.execute(
                    select(Chunk, distance.label("distance")).where(*live).order_by(distance).limit(inp.k)
                )
            ).all()
        return RetrieveResult(
            chunks=[
                ContextChunk(
                    id=str(row.Chunk.id),
                    document_id=str(row.Chunk.document_id),
                    document_version=row.Chunk.document_version,
                    embedding_version=row.Chunk.embedding_version,
                    text=row.Chunk.text,
                    score=1.0 - float(row.distance),
                )
                for row in sorted(rows, key=lambda r: r.distance)
            ],
            embedding_model=self.embedder.model_id,
        )
