"""`turnflow eval retrieval`: load a BEIR data set into a scratch tenant and score vector-only,
full-text-only and hybrid search on it (nDCG@10, recall@10, recall@100, MRR@10, latency)."""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import delete, select

from activities.adapters.search import SearchMode
from activities.logic.chunking import Chunker, ChunkerSettings
from db.access import ensure_tenant
from db.documents import delete_tenant_documents
from db.engine import scope_to_tenant
from db.models import Document, Tenant
from infra.eval.beir import BeirDataset
from infra.eval.bulk_ingest import BulkStats, TextDocument, bulk_ingest
from infra.eval.ir_metrics import mrr_at, ndcg_at, recall_at
from infra.eval.stats import percentile
from infra.runtime.resources import Resources

MODES: tuple[SearchMode, ...] = ("vector", "text", "hybrid")
SOURCE_PREFIX = "beir:"


@dataclass
class ModeReport:
    ndcg_10: float = 0.0
    recall_10: float = 0.0
    recall_100: float = 0.0
    mrr_10: float = 0.0
    latency_ms: list[float] = field(default_factory=list)
    # The same search as a chat turn asks it (k = the turn's, candidates as configured).
    turn_latency_ms: list[float] = field(default_factory=list)

    def as_dict(self) -> dict[str, float]:
        return {
            "ndcg@10": round(self.ndcg_10, 4),
            "recall@10": round(self.recall_10, 4),
            "recall@100": round(self.recall_100, 4),
            "mrr@10": round(self.mrr_10, 4),
            "latency_p50_ms": round(percentile(self.latency_ms, 50) or 0.0, 2),
            "latency_p95_ms": round(percentile(self.latency_ms, 95) or 0.0, 2),
            "turn_latency_p50_ms": round(percentile(self.turn_latency_ms, 50) or 0.0, 2),
            "turn_latency_p95_ms": round(percentile(self.turn_latency_ms, 95) or 0.0, 2),
        }


async def evaluate(
    res: Resources,
    data: BeirDataset,
    *,
    modes: tuple[SearchMode, ...] = MODES,
    chunk_k: int = 200,
    chunker: ChunkerSettings | None = None,
    keep: bool = False,
    on_ingest: Callable[[int], None] | None = None,
    on_query: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Documents rank by their best chunk; ``chunk_k`` chunks per query leave ≥ 100 distinct documents.

    The scratch tenant is named after the corpus, the chunker and the embedder: one kept with
    ``keep`` is reused by the next run on the same corpus instead of being ingested again."""
    embedder = res.embedders.default
    chunking = chunker or ChunkerSettings()
    recipe = json.dumps([data.fingerprint, chunking.as_record(), embedder.model_id, embedder.version])
    name = f"eval-{hashlib.sha256(recipe.encode()).hexdigest()[:16]}"
    tenant = await ensure_tenant(res.sessions, name)
    try:
        sources = await _sources(res, tenant)
        reused = len(sources) == len(data.corpus)
        stats = BulkStats(documents=len(sources))
        if not reused:
            async with res.sessions.begin() as session:
                await scope_to_tenant(session, tenant)
                await delete_tenant_documents(session, tenant)
            stats = await bulk_ingest(
                res.sessions,
                res.sealer,
                embedder,
                Chunker(res.embedder.tokenizer_file, chunking),
                tenant,
                [TextDocument(SOURCE_PREFIX + d.id, d.title or None, d.content) for d in data.corpus],
                progress=on_ingest,
            )
            sources = await _sources(res, tenant)
        elif on_ingest:
            on_ingest(len(data.corpus))
        reports = {mode: ModeReport() for mode in modes}
        turn_k = res.settings.retrieval_k
        for qid, query in data.queries.items():
            relevant = data.qrels[qid]
            for mode in modes:
                # As a turn asks it first: its question's embedding is not cached yet (mode by mode,
                # only the first one's is not: a turn's retrieval is one hybrid search).
                start = time.perf_counter()
                await res.search.search(tenant, query, turn_k, mode, use_cache=False)
                reports[mode].turn_latency_ms.append((time.perf_counter() - start) * 1000)
                start = time.perf_counter()
                found = await res.search.search(tenant, query, chunk_k, mode, use_cache=False)
                reports[mode].latency_ms.append((time.perf_counter() - start) * 1000)
                ranked: list[str] = []
                for chunk in found.chunks:
                    doc = sources[uuid.UUID(chunk.document_id)][len(SOURCE_PREFIX) :]
                    if doc not in ranked:
                        ranked.append(doc)
                r = reports[mode]
                r.ndcg_10 += ndcg_at(ranked, relevant, 10)
                r.recall_10 += recall_at(ranked, relevant, 10)
                r.recall_100 += recall_at(ranked, relevant, 100)
                r.mrr_10 += mrr_at(ranked, relevant, 10)
            if on_query:
                on_query(1)
        n = len(data.queries)
        for r in reports.values():
            r.ndcg_10, r.recall_10, r.recall_100, r.mrr_10 = (
                r.ndcg_10 / n,
                r.recall_10 / n,
                r.recall_100 / n,
                r.mrr_10 / n,
            )
        return {
            "tenant": name,
            "documents": stats.documents,
            "reused": reused,
            "chunks": stats.chunks if not reused else None,
            "ingest_seconds": round(stats.seconds, 1) if not reused else None,
            "chunks_per_second": round(stats.chunks / stats.seconds, 1) if stats.seconds else None,
            "queries": n,
            "embedding_model": f"{embedder.model_id}@{embedder.version}",
            "chunk_k": chunk_k,
            "turn_k": turn_k,
            "modes": {mode: reports[mode].as_dict() for mode in modes},
        }
    finally:
        if not keep:  # the tenant's documents and chunks go with it (foreign keys cascade)
            async with res.sessions.begin() as session:
                await session.execute(delete(Tenant).where(Tenant.id == tenant))


async def _sources(res: Resources, tenant: uuid.UUID) -> dict[uuid.UUID, str]:
    async with res.sessions.begin() as session:
        await scope_to_tenant(session, tenant)
        rows = await session.execute(select(Document.id, Document.source).where(Document.tenant_id == tenant))
        return {doc_id: source for doc_id, source in rows.all()}
