"""BM25 in Postgres (db/lexicon.py, migration 0009) on real pgvector: the scores are BM25's, per tenant,
its statistics follow every path that changes what is searchable, and re-weighting keeps searches whole."""

from __future__ import annotations

import math
import uuid
from collections import Counter
from dataclasses import replace

from sqlalchemy import text, update

from activities.adapters.lexicon import refresh_lexicon
from activities.adapters.search import HybridSearch
from db.access import ensure_tenant
from db.documents import tombstone_document
from db.engine import scope_to_tenant
from db.lexicon import K1, B, lexicon_state, record_weights, reweight_batch, weights_for
from db.models import Chunk, Document
from infra.runtime.resources import Resources
from tests.activities.test_retrieval import add_document

CORPUS = [
    "Vitamin D deficiency is linked to bone fractures in elderly patients.",
    "Bone density falls with age; calcium and vitamin D slow the loss.",
    "Influenza vaccines reduce hospital admissions among elderly patients.",
    "Regular exercise improves bone density and balance, reducing falls.",
    "Sourdough bread needs a starter made of flour and water.",
]
QUERY = "Does vitamin D prevent bone fractures in the elderly?"


async def new_tenant(res: Resources) -> uuid.UUID:
    return await ensure_tenant(res.sessions, f"bm25-{uuid.uuid4().hex[:8]}")


async def lexemes(res: Resources, texts: list[str]) -> list[Counter[str]]:
    """Each text's lexemes with their counts, as Postgres analyses it (the English configuration)."""
    async with res.sessions() as session:
        rows = await session.execute(
            text(
                "SELECT n, u.lexeme, cardinality(u.positions) FROM unnest(CAST(:t AS text[]))"
                " WITH ORDINALITY AS d(t, n), unnest(to_tsvector('english', d.t)) AS u"
            ),
            {"t": texts},
        )
        counts: list[Counter[str]] = [Counter() for _ in texts]
        for n, lexeme, tf in rows:
            counts[n - 1][lexeme] = tf
    return counts


def reference_bm25(docs: list[Counter[str]], query: Counter[str], avgdl: float) -> list[float]:
    """BM25 as Robertson and Lucene write it: IDF ln(1 + (N - df + 0.5) / (df + 0.5))."""
    n = len(docs)
    scores = []
    for doc in docs:
        dl = sum(doc.values())
        score = 0.0
        for term, qtf in query.items():
            df = sum(1 for d in docs if term in d)
            if not df or term not in doc:
                continue
            idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
            tf = doc[term]
            score += qtf * idf * tf * (K1 + 1) / (tf + K1 * (1 - B + B * dl / avgdl))
        scores.append(score)
    return scores


async def text_scores(res: Resources, tenant: uuid.UUID, query: str) -> dict[str, float]:
    found = await res.search.search(tenant, query, 50, "text", use_cache=False)
    return {c.id: c.score for c in found.chunks}


async def test_text_search_scores_are_bm25_of_the_tenants_own_corpus(resources: Resources) -> None:
    mine, other = await new_tenant(resources), await new_tenant(resources)
    ids = await add_document(resources, mine, CORPUS)
    await refresh_lexicon(resources.sessions, mine, resources.embedder.model_id, resources.embedder.version)
    before = await text_scores(resources, mine, QUERY)

    docs = await lexemes(resources, CORPUS)
    [query] = await lexemes(resources, [QUERY])
    avgdl = sum(sum(d.values()) for d in docs) / len(docs)
    expected = reference_bm25(docs, query, avgdl)
    got = [before.get(str(i), 0.0) for i in ids]
    assert all(abs(g - e) < 1e-4 for g, e in zip(got, expected, strict=True)), (got, expected)
    assert max(before, key=lambda k: before[k]) == str(ids[0])  # the fracture abstract
    assert str(ids[4]) not in before  # no query term: not a candidate at all

    # Another tenant's documents, full of the same terms, change nothing of this tenant's scores.
    await add_document(resources, other, ["vitamin bone fracture elderly " * 5] * 20)
    await refresh_lexicon(resources.sessions, other, resources.embedder.model_id, resources.embedder.version)
    assert await text_scores(resources, mine, QUERY) == before


async def test_statistics_follow_activation_tombstones_and_deletes(resources: Resources) -> None:
    tenant = await new_tenant(resources)
    model, version = resources.embedder.model_id, resources.embedder.version
    first = await add_document(resources, tenant, CORPUS[:3])
    second = await add_document(resources, tenant, CORPUS[3:])

    async def recount() -> tuple[dict[str, int], dict[str, int]]:
        """The statistics as kept, and as counted from scratch over the live chunks."""
        async with resources.sessions.begin() as session:
            await scope_to_tenant(session, tenant)
            kept = dict(
                (
                    await session.execute(
                        text("SELECT term, df FROM lexicon_terms WHERE tenant_id = :t AND df > 0"),
                        {"t": tenant},
                    )
                ).all()
            )
            counted = dict(
                (
                    await session.execute(
                        text(
                            "SELECT u.lexeme, count(*) FROM chunks c, unnest(c.tsv) AS u"
                            " WHERE c.tenant_id = :t AND c.live GROUP BY 1"
                        ),
                        {"t": tenant},
                    )
                ).all()
            )
        return kept, counted

    kept, counted = await recount()
    assert kept == counted and kept["bone"] == 3

    # A document's chunks tombstoned (deleted or superseded): out of the statistics and the results.
    async with resources.sessions.begin() as session:
        await scope_to_tenant(session, tenant)
        doc_id = (await session.get_one(Chunk, first[0])).document_id
        await tombstone_document(session, await session.get_one(Document, doc_id))
    kept, counted = await recount()
    assert kept == counted and kept["bone"] == 1
    found = await resources.search.search(tenant, QUERY, 10, "text", use_cache=False)
    assert {c.id for c in found.chunks} <= {str(i) for i in second}
    async with resources.sessions.begin() as session:
        await scope_to_tenant(session, tenant)
        assert (await lexicon_state(session, tenant, model, version)).chunks == 2

    # Chunks going live later (as an ingestion activates a version), then deleted for good.
    async with resources.sessions.begin() as session:
        await scope_to_tenant(session, tenant)
        await session.execute(update(Chunk).where(Chunk.id.in_(first)).values(live=True, tombstoned_at=None))
    kept, counted = await recount()
    assert kept == counted and kept["bone"] == 3
    async with resources.sessions.begin() as session:
        await scope_to_tenant(session, tenant)
        await session.execute(text("DELETE FROM documents WHERE id = :d"), {"d": doc_id})
    kept, counted = await recount()
    assert kept == counted and kept["bone"] == 1


async def test_reweighting_keeps_every_search_whole_and_ends_at_bm25_of_the_new_corpus(
    resources: Resources,
) -> None:
    tenant = await new_tenant(resources)
    model, version = resources.embedder.model_id, resources.embedder.version
    ids = await add_document(resources, tenant, CORPUS)
    await refresh_lexicon(resources.sessions, tenant, model, version)
    # Much longer documents arrive: the average length moves far past the drift bound.
    long_docs = [" ".join([CORPUS[i % 4]] * 6) for i in range(8)]
    ids += await add_document(resources, tenant, long_docs)
    async with resources.sessions.begin() as session:
        await scope_to_tenant(session, tenant)
        state = await lexicon_state(session, tenant, model, version)
    assert state.stale and state.weighted is not None and state.avgdl > 2 * state.weighted.avgdl

    # Rewritten two chunks at a time, with a search between batches: always the full k, live only.
    weights, after, rewritten = weights_for(state.avgdl), uuid.UUID(int=0), 0
    async with resources.sessions.begin() as session:
        await scope_to_tenant(session, tenant)
        await record_weights(session, tenant, model, version, weights)
    while True:
        found = await resources.search.search(tenant, QUERY, 6, "hybrid", use_cache=False)
        assert len(found.chunks) == 6 and {c.id for c in found.chunks} <= {str(i) for i in ids}
        async with resources.sessions.begin() as session:
            await scope_to_tenant(session, tenant)
            last, count = await reweight_batch(session, tenant, model, version, weights, after, 2)
        if last is None:
            break
        after, rewritten = last, rewritten + count
    assert rewritten == len(ids)

    texts = CORPUS + long_docs
    docs = await lexemes(resources, texts)
    [query] = await lexemes(resources, [QUERY])
    expected = reference_bm25(docs, query, sum(sum(d.values()) for d in docs) / len(docs))
    scores = await text_scores(resources, tenant, QUERY)
    got = [scores.get(str(i), 0.0) for i in ids]
    assert all(abs(g - e) < 1e-4 for g, e in zip(got, expected, strict=True)), (got, expected)
    # Current now: another refresh rewrites nothing.
    assert await refresh_lexicon(resources.sessions, tenant, model, version) == 0


async def test_a_large_tenants_index_path_finds_what_the_exact_path_finds(resources: Resources) -> None:
    tenant = await new_tenant(resources)
    ids = await add_document(resources, tenant, CORPUS)
    await refresh_lexicon(resources.sessions, tenant, resources.embedder.model_id, resources.embedder.version)
    # The same search with every tenant treated as large: HNSW over embeddings and BM25 vectors.
    indexed = HybridSearch(
        resources.sessions,
        resources.embedders,
        resources.redis,
        resources.sealer,
        replace(resources.search.settings, exact_max_rows=0),
    )
    for mode in ("text", "vector", "hybrid"):
        exact = await resources.search.search(tenant, QUERY, 3, mode, use_cache=False)
        ann = await indexed.search(tenant, QUERY, 3, mode, use_cache=False)
        assert [c.id for c in ann.chunks] == [c.id for c in exact.chunks], mode
        assert [c.text for c in ann.chunks] == [c.text for c in exact.chunks] and ann.chunks[0].text in CORPUS
    assert (await indexed.search(tenant, QUERY, 3, "text", use_cache=False)).chunks[0].id == str(ids[0])
