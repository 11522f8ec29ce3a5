"""Records what each turn's retrieval saw (scores, the query's embedding) for drift signals, off the
turn's path: the write runs after the activity has answered, and a failed write loses one sample."""

from __future__ import annotations

import asyncio
import logging
import uuid

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from activities.adapters.search import SearchResult
from db.models import RetrievalObservation

log = logging.getLogger("turnflow.drift")


class RetrievalObserver:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.sessions = sessions
        self._writing: set[asyncio.Task[None]] = set()  # held, so pending writes are not collected

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
        task = asyncio.get_running_loop().create_task(self._write(row))
        self._writing.add(task)
        task.add_done_callback(self._writing.discard)

    async def _write(self, row: RetrievalObservation) -> None:
        try:
            async with self.sessions.begin() as session:
                session.add(row)
        except Exception as exc:  # a sample, not a record: never fail or slow a turn for it
            log.warning("retrieval observation not recorded: %s", exc)
