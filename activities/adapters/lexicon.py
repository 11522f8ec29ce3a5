"""Keep a tenant's BM25 vectors in step with its corpus (db/lexicon.py says what drifts and why).

Run after a tenant's chunks change (a document goes live, a re-embedding switches): a no-op unless the
live average length has drifted past db.lexicon.DRIFT, or the BM25 parameters changed. Then the new
weights are recorded first (chunks written from now on use them) and the tenant's vectors are
rewritten in batches, a transaction each; searches meanwhile mix vectors of the two averages, which
differ by about DRIFT at most.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from db.engine import scope_to_tenant
from db.lexicon import REWEIGHT_BATCH, lexicon_state, record_weights, reweight_batch, weights_for

log = logging.getLogger("turnflow.lexicon")


async def refresh_lexicon(
    sessions: async_sessionmaker[AsyncSession],
    tenant: uuid.UUID | str,
    model: str,
    version: str,
    *,
    batch: int = REWEIGHT_BATCH,
    progress: Callable[[int], None] | None = None,
) -> int:
    """How many chunks were rewritten (0 when the vectors were current)."""
    async with sessions.begin() as session:
        await scope_to_tenant(session, tenant)
        state = await lexicon_state(session, tenant, model, version)
        if not state.stale:
            return 0
        weights = weights_for(state.avgdl)
        await record_weights(session, tenant, model, version, weights)
    log.info(
        "tenant %s: BM25 vectors rewritten for an average length of %.1f (were %s)",
        tenant,
        weights.avgdl,
        f"{state.weighted.avgdl:.1f}" if state.weighted else "unset",
    )
    done, after = 0, uuid.UUID(int=0)
    while True:
        async with sessions.begin() as session:
            await scope_to_tenant(session, tenant)
            last, count = await reweight_batch(session, tenant, model, version, weights, after, batch)
        if last is None:
            return done
        after, done = last, done + count
        if progress:
            progress(done)
