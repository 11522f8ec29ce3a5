"""Re-embedding a tenant's chunks with a new embedding model or version, without a moment of
inconsistent search: new vectors are written beside the old ones (queries keep using the tenant's
active version), a canary check compares the two, one UPDATE switches the tenant, and only then
are the old vectors dropped."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from redis.asyncio import Redis
from sqlalchemy import Row, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.adapters.embedder import Embedder, Embedders
from activities.adapters.lexicon import refresh_lexicon
from activities.adapters.sealed_text import SealedText
from activities.adapters.search import invalidate_tenant
from activities.contracts.reembed import (
    BatchInput,
    CanaryInput,
    CanaryResult,
    Plan,
    ReembedInput,
    Target,
    TenantStep,
)
from db.documents import active_embedding, drop_other_embeddings, insert_reembedded, vector_literal
from db.engine import scope_to_tenant
from db.lexicon import lexicon_state, record_weights

# Live chunks of the tenant's active version that have no twin on the target version yet.
_MISSING = """
    FROM chunks c
    WHERE c.tenant_id = :tenant AND c.live
      AND c.embedding_model = :src_model AND c.embedding_version = :src_version
      AND NOT EXISTS (
        SELECT 1 FROM chunks t
        WHERE t.document_id = c.document_id AND t.document_version = c.document_version
          AND t.ordinal = c.ordinal AND t.embedding_model = :model AND t.embedding_version = :version
      )
"""


class ReembedActivities:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        embedders: Embedders,
        redis: Redis,
        sealer: SealedText,
        embedder_residency: Iterable[str] = (),
    ) -> None:
        self.sessions = sessions
        self.embedders = embedders
        self.redis = redis
        self.sealer = sealer
        # A tenant's text goes to the embedder only if it carries all the tenant's residency tags.
        self.embedder_residency = sorted(set(embedder_residency))

    def _embedder(self, target: Target) -> Embedder:
        return self.embedders.require(target.model, target.version)

    @activity.defn(name="reembed_plan")
    async def reembed_plan(self, inp: ReembedInput) -> Plan:
        """The target (default: this deployment's embedder) and the tenants not on it yet."""
        chosen = (
            self.embedders.require(inp.target_model, inp.target_version)
            if inp.target_model
            else self.embedders.default
        )
        target = Target(model=chosen.model_id, version=chosen.version)
        async with self.sessions() as session:
            rows = await session.execute(
                text(
                    "SELECT id, residency_tags <@ CAST(:allowed AS text[]) FROM tenants"
                    " WHERE embedding_model IS NOT NULL"
                    " AND (embedding_model, embedding_version) IS DISTINCT FROM (:model, :version)"
                    " ORDER BY created_at"
                ),
                {"model": target.model, "version": target.version, "allowed": self.embedder_residency},
            )
            tenants: list[str] = []
            excluded: list[str] = []
            for tenant, allowed in rows:
                (tenants if allowed else excluded).append(str(tenant))
        if excluded:
            activity.logger.warning(
                "not re-embedding %d tenant(s) whose residency the embedder lacks: %s",
                len(excluded),
                ", ".join(excluded),
            )
        if inp.tenant_ids is not None:
            wanted = set(inp.tenant_ids)
            tenants = [t for t in tenants if t in wanted]
        return Plan(target=target, tenant_ids=tenants)

    @activity.defn(name="reembed_batch")
    async def reembed_batch(self, inp: BatchInput) -> int:
        """Embed one batch of the tenant's chunks with the target and write them beside the old
        vectors; 0 when none is left. Idempotent: a retried batch finds its chunks already done."""
        embedder = self._embedder(inp.target)
        async with self.sessions.begin() as session:
            await scope_to_tenant(session, inp.tenant_id)
            src_model, src_version = await active_embedding(session, inp.tenant_id)
            params = {
                "tenant": inp.tenant_id,
                "src_model": src_model,
                "src_version": src_version,
                "model": inp.target.model,
                "version": inp.target.version,
            }
            rows = (
                await session.execute(
                    text(f"SELECT c.id, c.text {_MISSING} ORDER BY c.id LIMIT :n"),
                    {**params, "n": inp.batch_size},
                )
            ).all()
            if not rows:
                return 0
            activity.heartbeat(f"embedding {len(rows)}")
            vectors = await embedder.embed(await self.sealer.open_all(inp.tenant_id, [r.text for r in rows]))
            await insert_reembedded(
                session,
                {r.id: v for r, v in zip(rows, vectors, strict=True)},
                inp.target.model,
                inp.target.version,
            )
        activity.heartbeat(f"embedded {len(rows)}")
        return len(rows)

    @activity.defn(name="reembed_canary")
    async def reembed_canary(self, inp: CanaryInput) -> CanaryResult:
        """How often a chunk's own opening words find it in the top 10, on the target version and on
        the current one (the same sample of the tenant's chunks for both)."""
        new_embedder = self._embedder(inp.target)
        async with self.sessions.begin() as session:
            await scope_to_tenant(session, inp.tenant_id)
            model, version = await active_embedding(session, inp.tenant_id)
            current = self.embedders.get(model, version)
            sample = (
                await session.execute(
                    text(
                        "SELECT document_id, ordinal, text FROM chunks WHERE tenant_id = :tenant AND live"
                        " AND embedding_model = :model AND embedding_version = :version ORDER BY id LIMIT :n"
                    ),
                    {
                        "tenant": inp.tenant_id,
                        "model": inp.target.model,
                        "version": inp.target.version,
                        "n": inp.queries,
                    },
                )
            ).all()
            kept = Target(model=model, version=version) if model and version else None
            if not sample:
                return CanaryResult(queries=0, recall_new=1.0, recall_current=1.0, current=kept)
            texts = await self.sealer.open_all(inp.tenant_id, [r.text for r in sample])
            queries = [" ".join(t.split()[:24]) for t in texts]
            recall_new = await _self_recall(session, inp.tenant_id, new_embedder, sample, queries)
            recall_current = (
                await _self_recall(session, inp.tenant_id, current, sample, queries) if current else 0.0
            )
        return CanaryResult(
            queries=len(sample), recall_new=recall_new, recall_current=recall_current, current=kept
        )

    @activity.defn(name="reembed_switch")
    async def reembed_switch(self, inp: TenantStep) -> int:
        """Point the tenant at the target in one UPDATE, once every live chunk has its twin;
        otherwise fail (retryable) so the workflow embeds what arrived meanwhile first."""
        async with self.sessions.begin() as session:
            await scope_to_tenant(session, inp.tenant_id)
            # Lock the tenant row: an ingestion choosing its embedder waits for the switch.
            src = (
                await session.execute(
                    text("SELECT embedding_model, embedding_version FROM tenants WHERE id = :t FOR UPDATE"),
                    {"t": inp.tenant_id},
                )
            ).one()
            params = {
                "tenant": inp.tenant_id,
                "src_model": src[0],
                "src_version": src[1],
                "model": inp.target.model,
                "version": inp.target.version,
            }
            missing = await session.scalar(text(f"SELECT count(*) {_MISSING}"), params)
            if missing:
                raise ApplicationError(
                    f"{missing} chunks have no target vector yet", type="ReembedIncomplete"
                )
            await session.execute(
                text(
                    "UPDATE tenants SET embedding_model = :model, embedding_version = :version"
                    " WHERE id = :tenant"
                ),
                params,
            )
            # The twins' BM25 vectors are copies of the source's: so are the weights they were made with.
            source = await lexicon_state(session, inp.tenant_id, src[0] or "", src[1] or "")
            if source.weighted is not None:
                await record_weights(
                    session, inp.tenant_id, inp.target.model, inp.target.version, source.weighted
                )
        await invalidate_tenant(self.redis, inp.tenant_id)
        await refresh_lexicon(self.sessions, inp.tenant_id, inp.target.model, inp.target.version)
        return 0

    @activity.defn(name="reembed_drop_other_versions")
    async def reembed_drop_other_versions(self, inp: TenantStep) -> int:
        """Delete the tenant's vectors on any version but ``inp.target``: after a switch, the old
        ones; after a failed canary (target = the version kept), the abandoned new ones."""
        dropped = 0
        while True:
            async with self.sessions.begin() as session:
                await scope_to_tenant(session, inp.tenant_id)
                count = await drop_other_embeddings(
                    session, inp.tenant_id, inp.target.model, inp.target.version, limit=1000
                )
            dropped += count
            activity.heartbeat(dropped)
            if count == 0:
                return dropped


async def _self_recall(
    session: AsyncSession, tenant: str, embedder: Embedder, sample: Sequence[Row[Any]], queries: list[str]
) -> float:
    vectors = await embedder.embed(queries)
    hits = 0
    for row, vector in zip(sample, vectors, strict=True):
        top = await session.execute(
            text(
                "SELECT document_id, ordinal FROM chunks WHERE tenant_id = :tenant AND live"
                " AND embedding_model = :model AND embedding_version = :version"
                " ORDER BY embedding <=> CAST(:vector AS vector) LIMIT 10"
            ),
            {
                "tenant": tenant,
                "model": embedder.model_id,
                "version": embedder.version,
                "vector": vector_literal(vector),
            },
        )
        if (row.document_id, row.ordinal) in {(r.document_id, r.ordinal) for r in top}:
            hits += 1
    return hits / len(sample)
