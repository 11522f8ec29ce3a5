"""The retrieve step, part of the turn's prepare step (activities/chat/prepare_turn.py): the tenant's
top-k chunks (hybrid search), with ids and versions for provenance."""

from __future__ import annotations

import time

from activities.adapters.retrieval_observer import RetrievalObserver
from activities.adapters.search import HybridSearch
from activities.contracts.turn import RetrieveInput, RetrieveResult
from infra.telemetry import metrics


class RetrievalActivities:
    def __init__(self, search: HybridSearch, observer: RetrievalObserver | None = None) -> None:
        self.search = search
        self.observer = observer

    async def retrieve(self, inp: RetrieveInput) -> RetrieveResult:
        started = time.perf_counter()
        found = await self.search.search(inp.tenant_id, inp.query, inp.k)
        metrics.retrieval_duration.record(time.perf_counter() - started, {"cached": found.cached})
        if self.observer is not None and inp.k > 0:
            self.observer.observe(inp.tenant_id, found)
        return RetrieveResult(
            chunks=found.chunks,
            embedding_model=found.embedding_model,
            embedding_version=found.embedding_version,
        )
