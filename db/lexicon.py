"""BM25 over a tenant's chunks, served by Postgres (migration 0009 says how it is stored).

The document side of BM25 (saturated, length-normalised term frequencies) is each chunk's `bm25`
sparse vector, computed when the chunk is written with its tenant's recorded average length; the
query side (IDF) comes from the tenant's term statistics at search time, so it is always current.
Only the average length can go stale as a corpus grows: `refresh_weights` rewrites a tenant's
vectors when the live average has drifted more than DRIFT from the one they were computed with.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

# Tuned on SciFact's train split (bench/tune_retrieval.py, bench/RETRIEVAL.md): k1 1.2, b 0.4 beat
# Anserini's BEIR defaults (0.9, 0.4) and Lucene's (1.2, 0.75), narrowly.
K1 = 1.2
B = 0.4
# Until a tenant's first chunks are live: about what a 200-token chunk has (lexeme positions; SciFact's
# chunks average 69.7).
DEFAULT_AVGDL = 70.0
# Vectors are rewritten once the live average length moves this far from theirs.
DRIFT = 0.10
REWEIGHT_BATCH = 2_000


@dataclass(frozen=True)
class Weights:
    avgdl: float
    k1: float
    b: float


def weights_for(avgdl: float) -> Weights:
    """This code's BM25 parameters, with an average length (read at call time: tuning sets them)."""
    return Weights(avgdl, K1, B)


@dataclass(frozen=True)
class LexiconState:
    chunks: int
    avgdl: float  # of the live chunks now
    weighted: Weights | None  # what the stored vectors were computed with

    @property
    def stale(self) -> bool:
        w = self.weighted
        if not self.chunks:
            return False
        if w is None or (w.k1, w.b) != (K1, B):
            return True
        return abs(self.avgdl - w.avgdl) > DRIFT * max(self.avgdl, 1.0)


_STATE = text(
    """
    SELECT chunks, length, weighted_avgdl, weighted_k1, weighted_b FROM lexicon_totals
    WHERE tenant_id = :tenant AND embedding_model = :model AND embedding_version = :version
    """
)


async def lexicon_state(
    session: AsyncSession, tenant: uuid.UUID | str, model: str, version: str
) -> LexiconState:
    row = (
        await session.execute(_STATE, {"tenant": str(tenant), "model": model, "version": version})
    ).one_or_none()
    if row is None:
        return LexiconState(chunks=0, avgdl=0.0, weighted=None)
    chunks, length, avgdl, k1, b = row
    weighted = Weights(avgdl, k1, b) if avgdl is not None and k1 is not None and b is not None else None
    return LexiconState(chunks=int(chunks), avgdl=length / chunks if chunks else 0.0, weighted=weighted)


async def document_weights(
    session: AsyncSession, tenant: uuid.UUID | str, model: str, version: str
) -> Weights:
    """What a new chunk's vector is computed with: the tenant's recorded weights, so that all of its
    vectors agree, or the defaults for a tenant with none yet."""
    state = await lexicon_state(session, tenant, model, version)
    if state.weighted is not None and (state.weighted.k1, state.weighted.b) == (K1, B):
        return state.weighted
    return weights_for(state.avgdl or DEFAULT_AVGDL)


async def record_weights(
    session: AsyncSession, tenant: uuid.UUID | str, model: str, version: str, weights: Weights
) -> None:
    await session.execute(
        text(
            """
            INSERT INTO lexicon_totals AS t (tenant_id, embedding_model, embedding_version,
                                             weighted_avgdl, weighted_k1, weighted_b)
            VALUES (:tenant, :model, :version, :avgdl, :k1, :b)
            ON CONFLICT (tenant_id, embedding_model, embedding_version) DO UPDATE
              SET weighted_avgdl = excluded.weighted_avgdl, weighted_k1 = excluded.weighted_k1,
                  weighted_b = excluded.weighted_b
            """
        ),
        {
            "tenant": str(tenant),
            "model": model,
            "version": version,
            "avgdl": weights.avgdl,
            "k1": weights.k1,
            "b": weights.b,
        },
    )


_REWEIGHT = text(
    """
    WITH batch AS (
        SELECT id FROM chunks
        WHERE tenant_id = :tenant AND embedding_model = :model AND embedding_version = :version
          AND id > :after
        ORDER BY id LIMIT :n
    )
    UPDATE chunks c SET bm25 = bm25_document(c.tsv, :avgdl, :k1, :b)
    FROM batch WHERE c.id = batch.id
    RETURNING c.id
    """
)


async def reweight_batch(
    session: AsyncSession,
    tenant: uuid.UUID | str,
    model: str,
    version: str,
    weights: Weights,
    after: uuid.UUID,
    n: int = REWEIGHT_BATCH,
) -> tuple[uuid.UUID | None, int]:
    """The next ``n`` chunks (by id, after ``after``) rewritten with ``weights``: the last id (None when
    none were left) and how many."""
    ids = (
        (
            await session.execute(
                _REWEIGHT,
                {
                    "tenant": str(tenant),
                    "model": model,
                    "version": version,
                    "after": after,
                    "n": n,
                    "avgdl": weights.avgdl,
                    "k1": weights.k1,
                    "b": weights.b,
                },
            )
        )
        .scalars()
        .all()
    )
    return (max(ids) if ids else None), len(ids)
