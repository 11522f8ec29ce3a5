"""The retrieve step: the tenant's top-k chunks (hybrid search), with ids and versions for provenance."""

from __future__ import annotations

from pydantic import BaseModel
from temporalio import activity

from activities.prompt import ContextChunk
from activities.search import HybridSearch


class RetrieveInput(BaseModel):
    tenant_id: str
    query: str
    k: int = 4


class RetrieveResult(BaseModel):
    chunks: list[ContextChunk]
    embedding_model: str | None = None
    embedding_version: str | None = None


class RetrievalActivities:
    def __init__(self, search: HybridSearch) -> None:
        self.search = search

    @activity.defn(name="retrieve")
    async def retrieve(self, inp: RetrieveInput) -> RetrieveResult:
        found = await self.search.search(inp.tenant_id, inp.query, inp.k)
        return RetrieveResult(
            chunks=found.chunks,
            embedding_model=found.embedding_model,
            embedding_version=found.embedding_version,
        )
