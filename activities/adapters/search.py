"""Hybrid search over a tenant's live chunks: pgvector (HNSW, cosine, or exact for a small tenant)
and BM25 (db/lexicon.py: a sparse vector per chunk, the tenant's IDF at query time); both methods'
candidates are reranked on what Postgres computed, and the top-k goes to the prompt.

Each method's top-n ids, then once per candidate what ranking reads (cosine similarity, BM25 score,
ranks), all computed by Postgres: one statement for a single method, two for hybrid (its BM25 half
runs while the question is embedded); only the top-k's text is opened.

Every query is scoped to one tenant twice: by its WHERE clause and by row-level security (the
transaction is scoped to the tenant first). Only chunks embedded with the tenant's active embedding
version are searched. Query embeddings and whole results are cached in Redis; a tenant's result
cache is invalidated by bumping its generation whenever its documents change.

Chunk text is sealed at rest (sealed_text.py): it is opened here, after the database has ranked, and
cached results are sealed again. What the database searches stays clear: the embeddings, the
tsvector and the BM25 vector of each chunk (docs/security.md says why).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np
from redis.asyncio import Redis
from sqlalchemy import TextClause, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from activities.adapters.embedder import Embedder, Embedders
from activities.adapters.outages import REDIS_UNAVAILABLE, degraded
from activities.adapters.sealed_text import SealedText
from activities.contracts.turn import ContextChunk
from db.documents import search_shape, vector_literal
from db.engine import scope_to_tenant
from db.models import LEXICON_DIM
from db.vector_index import AnnIndex, hnsw_settings, set_local
from infra.telemetry import metrics

SearchMode = Literal["hybrid", "vector", "text"]
# How long a process trusts what it saw of a tenant (its embedding, whether it has chunks) while its
# generation stays the same: a change that forgot to bump it is seen within this anyway.
SHAPE_TTL_S = 30.0
SHAPES_KEPT = 10_000
RRF_K = 60  # the constant from Cormack et al. (2009); ranks past ~60 barely count


@dataclass(frozen=True)
class SearchSettings:
    candidates: int = 20  # per method, before fusion (the search asks for max(candidates, k))
    index: AnnIndex = field(default_factory=AnnIndex)
    ef_search: int = 100
    ivfflat_probes: int = 10
    # Bounds an iterative scan whose filter matches nothing (an empty or unknown tenant).
    max_scan_tuples: int = 20_000
    cache_ttl_s: int = 300
    # Tenants with at most this many chunks are searched exactly (fast, and recall 1.0).
    exact_max_rows: int = 5_000
    # The BM25 vectors' HNSW scan: 200 keeps 97% of the exact top 10 on SciFact (100: 93%; 400:
    # 99% at 1.6x the time). The vector scan keeps its own ef_search (above).
    lexical_ef_search: int = 200
    # Default reranker: weights of semantic similarity, BM25 (relative to the best candidate's) and the
    # fused rank. Tuned on SciFact's train split (bench/tune_retrieval.py): with BM25's own score as a
    # feature the fused rank adds nothing (0.7381 nDCG@10 at 0, 0.7372 at 1, 0.7359 at 2).
    semantic_weight: float = 1.0
    lexical_weight: float = 0.4
    fusion_weight: float = 0.0


@dataclass
class Candidate:
    id: str
    document_id: str
    document_version: int
    embedding_version: str
    text: str
    similarity: float  # cosine similarity to the query, computed in Postgres
    bm25: float = 0.0  # the chunk's BM25 score for the query, computed in Postgres
    ranks: dict[str, int] = field(default_factory=dict)
    score: float = 0.0

    @property
    def fused(self) -> float:
        return sum(1.0 / (RRF_K + r) for r in self.ranks.values())


class Reranker(Protocol):
    def rerank(self, query: str, candidates: list[Candidate]) -> list[Candidate]: ...


class LexicalSemanticReranker:
    """Cosine similarity to the query, plus its BM25 score relative to the best candidate's, plus the
    fused rank: all computed by Postgres, so ranking reads no chunk text."""

    def __init__(self, settings: SearchSettings) -> None:
        self.s = settings

    def rerank(self, query: str, candidates: list[Candidate]) -> list[Candidate]:
        best = max((c.bm25 for c in candidates), default=0.0) or 1.0
        for c in candidates:
            c.score = (
                self.s.semantic_weight * c.similarity
                + self.s.lexical_weight * c.bm25 / best
                + self.s.fusion_weight * c.fused
            )
        return sorted(candidates, key=lambda c: (c.score, c.id), reverse=True)


def query_digest(query: str) -> str:
    """Cache identity of a query: case and spacing do not make a different question."""
    return hashlib.sha256(" ".join(query.lower().split()).encode()).hexdigest()


@dataclass
class SearchResult:
    chunks: list[ContextChunk]
    embedding_model: str | None
    embedding_version: str | None
    cached: bool = False
    # The query's embedding, when this search computed or fetched one (drift signals read it).
    query_vector: np.ndarray | None = None


def _scope(alias: str = "") -> str:
    """A tenant's searchable chunks: live, of its active embedding (row-level security checks again)."""
    c = f"{alias}." if alias else ""
    return (
        f"{c}tenant_id = :tenant AND {c}live AND {c}embedding_model = :model"
        f" AND {c}embedding_version = :version"
    )


# The query's BM25 side (db/lexicon.py): each of its lexemes known to the tenant, weighted by its IDF
# over the tenant's live chunks now. NULL when none of its terms occur in the tenant's chunks.
_QUERY_VECTOR = f"""
    qterms AS (
        SELECT lexeme AS term, coalesce(cardinality(positions), 1) AS qtf
        FROM unnest(to_tsvector('english', CAST(:query AS text)))
    ), qweights AS (
        SELECT bm25_term_id(q.term) AS i,
               sum(q.qtf * ln(1 + (tot.chunks - s.df + 0.5) / (s.df + 0.5))) AS idf
        FROM qterms q
        JOIN lexicon_totals tot
          ON tot.tenant_id = :tenant AND tot.embedding_model = :model AND tot.embedding_version = :version
        JOIN lexicon_terms s
          ON s.tenant_id = :tenant AND s.embedding_model = :model AND s.embedding_version = :version
         AND s.term = q.term AND s.df > 0
        GROUP BY 1
    ), qv AS (
        SELECT CAST('{{' || string_agg(i || ':' || idf, ',' ORDER BY i) || '}}/{LEXICON_DIM}' AS sparsevec)
               AS v
        FROM qweights
    )"""

# Top-n by BM25: the inner product of the chunk's and the query's vectors is the chunk's BM25 score.
# Exactly (every chunk of a small tenant, read through the tenant index), or through the HNSW index
# on the vectors; chunks that share no term with the query score 0 and are no candidates.
_EXACT_LEXICAL_CANDIDATES = f"""
    lexmine AS MATERIALIZED (SELECT id, bm25 FROM chunks WHERE {_scope()}),
    lex AS (
        SELECT id, row_number() OVER (ORDER BY score DESC, id) AS rank FROM (
            SELECT m.id, -(m.bm25 <#> qv.v) AS score FROM lexmine m, qv
            WHERE qv.v IS NOT NULL ORDER BY m.bm25 <#> qv.v LIMIT :n
        ) top WHERE score > 0
    )"""
_ANN_LEXICAL_CANDIDATES = f"""
    lex AS (
        SELECT id, row_number() OVER (ORDER BY score DESC, id) AS rank FROM (
            SELECT id, -(bm25 <#> (SELECT v FROM qv)) AS score FROM chunks
            WHERE (SELECT v FROM qv) IS NOT NULL AND {_scope()}
            ORDER BY bm25 <#> (SELECT v FROM qv) LIMIT :n
        ) top WHERE score > 0
    )"""

# Exact, for a tenant with few chunks: reading them all through the tenant index beats an HNSW scan
# that must skip every other tenant's rows (the planner tends to pick the latter).
_EXACT_VECTOR_CANDIDATES = f"""
    mine AS MATERIALIZED (SELECT id, embedding FROM chunks WHERE {_scope()}),
    vec AS (
        SELECT id, row_number() OVER (ORDER BY distance, id) AS rank FROM (
            SELECT id, embedding <=> CAST(:vector AS vector) AS distance FROM mine ORDER BY distance LIMIT :n
        ) top
    )"""


def _ann_vector_candidates(index: AnnIndex) -> str:
    return f"""
    vec AS (
        SELECT id, row_number() OVER (ORDER BY distance, id) AS rank FROM (
            SELECT id, embedding <=> CAST(:vector AS vector) AS distance FROM chunks
            WHERE {_scope()} ORDER BY {index.order_by()} LIMIT :n
        ) top
    )"""


def _candidates_sql(vector: str | None, lexical: str | None) -> TextClause:
    """Each method's top-n ids (or, for hybrid's second half, the BM25 ones already found), then,
    once per candidate, what ranking reads: its text, cosine similarity, BM25 score and ranks."""
    parts = [_QUERY_VECTOR]
    methods = []
    if vector:
        parts.append(vector)
        methods.append("vec")
    if lexical:
        parts.append(lexical)
        methods.append("lex")
    ids = " UNION ".join(f"SELECT id FROM {m}" for m in methods)
    joins = " ".join(f"LEFT JOIN {m} ON {m}.id = c.id" for m in methods)
    return text(
        f"""
        WITH {", ".join(parts)}
        SELECT c.id, c.document_id, c.document_version, c.embedding_version, c.text,
               coalesce(1 - (c.embedding <=> CAST(:vector AS vector)), 0) AS similarity,
               coalesce(-(c.bm25 <#> qv.v), 0) AS bm25,
               {"vec.rank" if vector else "NULL"} AS vector_rank,
               {"lex.rank" if lexical else "NULL"} AS text_rank
        FROM ({ids}) AS ids JOIN chunks c ON c.id = ids.id {joins} CROSS JOIN qv
        """
    )


# Hybrid in two statements, so that the lexical half runs while the question is being embedded (in a
# thread, on the other core): the BM25 candidates first, then the vector candidates and what ranking
# reads, with the BM25 candidates passed back in.
def _lexical_only_sql(lexical: str) -> TextClause:
    return text(f"WITH {_QUERY_VECTOR}, {lexical} SELECT id, rank FROM lex")


_KNOWN_LEXICAL = """
    lex AS (SELECT * FROM unnest(CAST(:lex_ids AS uuid[]), CAST(:lex_ranks AS bigint[])) AS l(id, rank))"""


class HybridSearch:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        embedders: Embedders,
        redis: Redis,
        sealer: SealedText,
        settings: SearchSettings | None = None,
        reranker: Reranker | None = None,
    ) -> None:
        self.sessions = sessions
        self.embedders = embedders
        self.redis = redis
        self.sealer = sealer
        self.settings = settings or SearchSettings()
        self.reranker = reranker or LexicalSemanticReranker(self.settings)
        self._ann_candidates = _ann_vector_candidates(self.settings.index)
        # The statements, built once: each method alone, and hybrid's two halves.
        vectors = (_EXACT_VECTOR_CANDIDATES, self._ann_candidates)
        lexicals = (_EXACT_LEXICAL_CANDIDATES, _ANN_LEXICAL_CANDIDATES)
        self._candidates: dict[tuple[str | None, str | None], TextClause] = {
            (vector, None): _candidates_sql(vector, None) for vector in vectors
        }
        self._candidates |= {(None, lexical): _candidates_sql(None, lexical) for lexical in lexicals}
        self._lexical_first = {lexical: _lexical_only_sql(lexical) for lexical in lexicals}
        self._with_known_lexical = {vector: _candidates_sql(vector, _KNOWN_LEXICAL) for vector in vectors}
        # tenant → (generation, until, embedding model, version, chunks): see _shape_of.
        self._shapes: OrderedDict[str, tuple[int, float, str | None, str | None, int]] = OrderedDict()

    async def search(
        self,
        tenant_id: uuid.UUID | str,
        query: str,
        k: int,
        mode: SearchMode = "hybrid",
        *,
        use_cache: bool = True,
    ) -> SearchResult:
        tenant = str(tenant_id)
        cold = not use_cache  # the caller wants no cache at all: the question is embedded anew too
        use_cache = use_cache and self.settings.cache_ttl_s > 0
        generation = await self._generation(tenant) if use_cache else None
        known = self._shape_of(tenant, generation)
        # Cache writes go out while the statements run; the search awaits them before it returns.
        writes: list[asyncio.Task[None]] = []
        # The question is embedded (in a thread) from the moment the tenant is known to have chunks,
        # while the transaction's first round trips and the BM25 statement run.
        embedding: asyncio.Future[np.ndarray] | None = None
        if known is not None:
            # What the tenant searches, as of its documents' generation: an empty tenant, or a query
            # asked before, costs no database round trip at all.
            model, version, size = known
            embedder = self.embedders.get(model, version)
            if embedder is None or k <= 0 or not size:
                return SearchResult([], model, version)
            cache_key = self._cache_key(tenant, generation, embedder, mode, k, query)
            if cache_key and (hit := await self._cached(tenant, cache_key, embedder)):
                return hit
            if mode != "text":
                embedding = self._embed_in_background(embedder, query, cold, writes)
        try:
            async with self.sessions.begin() as session:
                await scope_to_tenant(session, tenant)
                if known is None:
                    default = self.embedders.default
                    model, version, size = await search_shape(
                        session, tenant, default.model_id, default.version
                    )
                    embedder = self.embedders.get(model, version)
                    if embedder is None or k <= 0:
                        # A tenant on an embedding this deployment cannot compute: answer without context.
                        return SearchResult([], model, version)
                    model, version = embedder.model_id, embedder.version
                    cache_key = self._cache_key(tenant, generation, embedder, mode, k, query)
                    if cache_key and (hit := await self._cached(tenant, cache_key, embedder)):
                        return hit
                    self._remember_shape(tenant, generation, model, version, size)
                    if not size:  # a tenant without documents costs one indexed lookup, not an embedding
                        return SearchResult([], model, version)
                    if mode != "text":
                        embedding = self._embed_in_background(embedder, query, cold, writes)
                params = {
                    "tenant": tenant,
                    "model": model,
                    "version": version,
                    "n": max(self.settings.candidates, k),
                }
                assert embedder is not None  # both ways here returned without one
                # A small tenant is read exactly; a large one through the indexes, with settings for this
                # transaction: each HNSW scan its own ef_search (the BM25 one needs more, see
                # SearchSettings), so hybrid sets the vectors' again between its two statements.
                exact = size <= self.settings.exact_max_rows
                vector_sql = lexical_sql = None
                vector_ann: dict[str, str] = {}
                lexical_ann: dict[str, str] = {}
                if mode in ("hybrid", "vector"):
                    vector_sql = _EXACT_VECTOR_CANDIDATES if exact else self._ann_candidates
                    if not exact:
                        vector_ann = self.settings.index.session_settings(
                            ef_search=self.settings.ef_search,
                            probes=self.settings.ivfflat_probes,
                            max_scan_tuples=self.settings.max_scan_tuples,
                        )
                if mode in ("hybrid", "text"):
                    lexical_sql = _EXACT_LEXICAL_CANDIDATES if exact else _ANN_LEXICAL_CANDIDATES
                    if not exact:
                        lexical_ann = hnsw_settings(
                            ef_search=self.settings.lexical_ef_search,
                            max_scan_tuples=self.settings.max_scan_tuples,
                        )
                first = vector_ann | lexical_ann  # hybrid: the lexical statement runs first
                if first:
                    await session.execute(*set_local(first))
                params["query"] = query
                query_vector: np.ndarray | None = None
                if vector_sql and lexical_sql:
                    assert embedding is not None
                    lexical = (await session.execute(self._lexical_first[lexical_sql], params)).all()
                    query_vector = await embedding
                    if again := {k: v for k, v in vector_ann.items() if first.get(k) != v}:
                        await session.execute(*set_local(again))
                    rows = await session.execute(
                        self._with_known_lexical[vector_sql],
                        {
                            **params,
                            "vector": vector_literal(query_vector),
                            "lex_ids": [r.id for r in lexical],
                            "lex_ranks": [r.rank for r in lexical],
                        },
                    )
                else:
                    # Full text alone ranks by BM25 only: no embedding to compute.
                    if vector_sql:
                        assert embedding is not None
                        query_vector = await embedding
                    literal = None if query_vector is None else vector_literal(query_vector)
                    rows = await session.execute(
                        self._candidates[(vector_sql, lexical_sql)], {**params, "vector": literal}
                    )
                candidates = [_candidate(row) for row in rows]
        finally:
            if embedding is not None and not embedding.done():
                embedding.cancel()  # the search failed before it needed the vector
        ranked = self._rank(query, candidates, mode)[:k]
        # Only what goes to the prompt is opened (decrypted).
        for c, opened in zip(
            ranked, await self.sealer.open_all(tenant, [c.text for c in ranked]), strict=True
        ):
            c.text = opened
        chunks = [
            ContextChunk(
                id=c.id,
                document_id=c.document_id,
                document_version=c.document_version,
                embedding_version=c.embedding_version,
                text=c.text,
                score=round(c.score, 6),
            )
            for c in ranked
        ]
        if cache_key:
            cached = json.dumps([c.model_dump() for c in chunks])
            writes.append(
                asyncio.create_task(self._cache_set(cache_key, await self.sealer.seal(tenant, cached)))
            )
            _count_cache("result", hit=False)
        await asyncio.gather(*writes)
        return SearchResult(chunks, model, version, query_vector=query_vector)

    async def _cached(self, tenant: str, cache_key: str, embedder: Embedder) -> SearchResult | None:
        hit = await self._cache_get(cache_key)
        if not hit:
            return None
        _count_cache("result", hit=True)
        chunks = [
            ContextChunk.model_validate(c) for c in json.loads(await self.sealer.open(tenant, hit.decode()))
        ]
        return SearchResult(chunks, embedder.model_id, embedder.version, cached=True)

    def _shape_of(self, tenant: str, generation: int | None) -> tuple[str | None, str | None, int] | None:
        """(embedding model, version, live chunks) last seen at this generation."""
        entry = self._shapes.get(tenant)
        if generation is None or entry is None or entry[0] != generation or entry[1] < time.monotonic():
            return None
        return entry[2], entry[3], entry[4]

    def _remember_shape(
        self, tenant: str, generation: int | None, model: str | None, version: str | None, size: int
    ) -> None:
        if generation is None:
            return
        self._shapes[tenant] = (generation, time.monotonic() + SHAPE_TTL_S, model, version, size)
        self._shapes.move_to_end(tenant)
        while len(self._shapes) > SHAPES_KEPT:
            self._shapes.popitem(last=False)

    def _rank(self, query: str, candidates: list[Candidate], mode: SearchMode) -> list[Candidate]:
        if mode == "vector":
            for c in candidates:
                c.score = c.similarity
            return sorted(candidates, key=lambda c: c.score, reverse=True)
        if mode == "text":
            for c in candidates:
                c.score = c.bm25
            return sorted(candidates, key=lambda c: (c.score, c.id), reverse=True)
        return self.reranker.rerank(query, candidates)

    def _embed_in_background(
        self, embedder: Embedder, query: str, cold: bool, writes: list[asyncio.Task[None]]
    ) -> asyncio.Future[np.ndarray]:
        return asyncio.ensure_future(self.query_vector(embedder, query, cached=not cold, writes=writes))

    async def query_vector(
        self,
        embedder: Embedder,
        query: str,
        *,
        cached: bool,
        writes: list[asyncio.Task[None]],
    ) -> np.ndarray:
        """The query's embedding, from Redis when this model version has embedded the same text
        (``cached``: looked up there first). A new one is written back there in the background: its
        task is appended to ``writes``, for the caller to await."""
        digest = query_digest(query)
        key = f"qemb:{embedder.model_id}:{embedder.version}:{digest}"
        hit = await self._cache_get(key) if cached else None
        if hit is not None:
            _count_cache("embedding", hit=True)
            return np.frombuffer(hit, dtype=np.float32)
        [vector] = await embedder.embed([query])
        array = np.asarray(vector, dtype=np.float32)
        writes.append(asyncio.create_task(self._cache_set(key, array.tobytes(), ttl_s=86_400)))
        _count_cache("embedding", hit=False)
        return array

    async def _generation(self, tenant: str) -> int | None:
        """The tenant's documents' generation (bumped whenever they change); None while Redis is
        unreachable: then a cached result could be stale, so the search neither reads nor writes
        the cache, nor trusts what it remembers of the tenant."""
        try:
            return int(await self.redis.get(generation_key(tenant)) or 0)
        except REDIS_UNAVAILABLE as exc:
            degraded("search cache skipped", exc)
            return None

    @staticmethod
    def _cache_key(
        tenant: str, generation: int | None, embedder: Embedder, mode: str, k: int, query: str
    ) -> str | None:
        if generation is None:
            return None
        digest = query_digest(query)[:32]
        return f"search:{tenant}:{generation}:{embedder.model_id}:{embedder.version}:{mode}:{k}:{digest}"

    # The cache is only a cache: Redis down means a miss, and nothing stored.
    async def _cache_get(self, key: str) -> bytes | None:
        try:
            value = await self.redis.get(key)
            return value.encode() if isinstance(value, str) else value
        except REDIS_UNAVAILABLE as exc:
            degraded("search cache read missed", exc)
            return None

    async def _cache_set(self, key: str, value: str | bytes, ttl_s: int | None = None) -> None:
        try:
            await self.redis.set(key, value, ex=ttl_s or self.settings.cache_ttl_s)
        except REDIS_UNAVAILABLE as exc:
            degraded("search cache write skipped", exc)


def _count_cache(cache: str, *, hit: bool) -> None:
    """A metric, not a Redis counter: no round trip on the search path."""
    metrics.retrieval_cache.add(1, {"cache": cache, "result": "hit" if hit else "miss"})


def generation_key(tenant: str) -> str:
    return f"search:gen:{tenant}"


async def invalidate_tenant(redis: Redis, tenant: uuid.UUID | str) -> None:
    """Cached results of the tenant's queries are stale from now on (they age out by TTL)."""
    await redis.incr(generation_key(str(tenant)))


def _candidate(row: Any) -> Candidate:
    ranks = {m: r for m, r in (("vector", row.vector_rank), ("text", row.text_rank)) if r is not None}
    return Candidate(
        id=str(row.id),
        document_id=str(row.document_id),
        document_version=row.document_version,
        embedding_version=row.embedding_version,
        text=row.text,
        similarity=float(row.similarity),
        bm25=float(row.bm25),
        ranks=ranks,
    )
