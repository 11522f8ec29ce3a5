"""When no model can answer (every model of the chain failed or its circuit is open, or admission
shed the turn) and retrieval found passages: an extractive answer from them
(activities/logic/extractive.py), marked `degraded: "extractive"`, with a note the client can show.
Without a sentence to give, the step raises and the turn's explicit `error` stands."""

from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.adapters.tokens import estimate_tokens
from activities.adapters.turn_events import TurnEvents, turn_meta
from activities.contracts.turn import InferResult, SourcesInput
from activities.logic.extractive import NOTE, extractive_answer
from db.documents import live_documents
from db.engine import scope_to_tenant
from infra.telemetry import metrics

EXTRACTIVE = "extractive"


class SourcesAnswers:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], events: TurnEvents) -> None:
        self.sessions = sessions
        self.events = events

    @activity.defn(name="answer_from_sources")
    async def answer_from_sources(self, inp: SourcesInput) -> InferResult:
        tenant = uuid.UUID(inp.tenant_id)
        async with self.sessions.begin() as session:
            await scope_to_tenant(session, tenant)  # documents are behind row-level security
            documents = await live_documents(session, tenant, {uuid.UUID(c.document_id) for c in inp.chunks})
        # A passage of a document deleted since retrieval is not quoted.
        chunks = [c for c in inp.chunks if c.document_id in documents]
        titles = {d: doc.title or doc.source for d, doc in documents.items()}
        text = extractive_answer(inp.question, chunks, titles, inp.budget, estimate_tokens)
        if not text:
            raise ApplicationError(
                "no passage has a sentence to answer with", type="NothingToQuote", non_retryable=True
            )
        meta = turn_meta(
            inp.turn_id,
            inp.conversation_id,
            inp.request_id,
            model=None,
            degraded=EXTRACTIVE,
            attempt=activity.info().attempt,
            note=NOTE,
        )
        # After a model's partial reply (or an earlier attempt of this step), `reset` clears it.
        await self.events.publish_reply(inp.turn_id, meta, text)
        metrics.degraded_answers.add(1, {"reason": inp.reason})
        return InferResult(
            text=text,
            model=EXTRACTIVE,
            input_tokens=0,
            output_tokens=0,
            ttft_ms=None,
            finish_reason=EXTRACTIVE,
        )
