"""Records what each turn's retrieval saw (scores, the query's embedding) for drift signals, off the
turn's path: samples are written after the activity has answered, together, at most a second late
(one transaction for all of them, not one per turn); a failed write or a crash loses that second's
samples, never a turn."""

from __future__ import annotations

import asyncio
import logging
import uuid

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from activities.adapters.search import SearchResult
from db.models import RetrievalObservation

log = logging.getLogger("turnflow.drift")


class RetrievalObserver:
    FLUSH_EVERY_S = 1.0

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.sessions = sessions
        self._rows: list[RetrievalObservation] = []
        self._writer: asyncio.Task[None] | None = None  # held, so a pending write is not collected

    def observe(self, tenant_id: str, found: SearchResult) -> None:
        scores = [c.score for c in found.chunks]
        row = RetrievalObservation(
            tenant_id=uuid.UUID(tenant_id),
            results=len(scores),
            top_score=max(scores) if scores else None,
            mean_score=sum(scores) / len(scores) if scores else None,
            embedding_version=found.embedding_version,
            query_embedding=found.query_vector.tolist() if found.query_vector is not None else None,
        )
        self._rows.append(row)
        if self._writer is None or self._writer.done():
            self._writer = asyncio.get_running_loop().create_task(self._write_soon())

    async def _write_soon(self) -> None:
        await asyncio.sleep(self.FLUSH_EVERY_S)
        await self.flush()

    async def flush(self) -> None:
        rows, self._rows = self._rows, []
        if not rows:
            return
        try:
            async with self.sessions.begin() as session:
                session.add_all(rows)
        except Exception as exc:  # samples, not records: never fail or slow a turn for them
            log.warning("%d retrieval observations not recorded: %s", len(rows), exc)
