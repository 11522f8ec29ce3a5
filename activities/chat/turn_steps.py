"""The chat turn's quick steps: validate and assemble the prompt (parts of the prepare step,
activities/chat/prepare_turn.py), and the partial text a cancelled turn keeps (a local activity)."""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.adapters.model_registry import ModelRegistry
from activities.adapters.turn_events import TurnEvents
from activities.chat.transcript import Transcript
from activities.contracts.turn import (
    AssembleInput,
    AssembleResult,
    TurnRef,
    ValidateInput,
    ValidateResult,
)
from activities.logic.input_guard import InputRejected, guard_input
from activities.logic.prompt import TEMPLATE_VERSION, PromptTooLong, TokenCounter, assemble
from activities.logic.safety import SafetyEngine
from db.models import Conversation


class TurnSteps:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        safety: SafetyEngine,
        transcript: Transcript,
        counter: TokenCounter,
        events: TurnEvents,
        registry: ModelRegistry,
    ) -> None:
        self.registry = registry
        self.sessions = sessions
        self.safety = safety
        self.transcript = transcript
        self.counter = counter
        self.events = events

    async def validate_turn(self, inp: ValidateInput) -> ValidateResult:
        """The input guard, again, in the workflow (its verdict and safety version are recorded in the
        turn's history). The conversation is not looked up again: every route that starts a turn has
        just checked it is the tenant's (`require_conversation`) or made it, and a query here was a
        round trip to Postgres before every first token."""
        try:
            guarded = guard_input(inp.text, self.safety, inp.pii_policy)
        except InputRejected as exc:
            raise ApplicationError(str(exc), exc.code, type="InputRejected", non_retryable=True) from exc
        return ValidateResult(
            text=guarded.text, pii_counts=guarded.pii_counts, safety_version=guarded.safety_version
        )

    async def assemble_prompt(self, inp: AssembleInput) -> AssembleResult:
        history = inp.history
        if history is None:
            tenant = inp.tenant_id or await self._owner_of(inp.conversation_id)
            history = await self.transcript.recent(tenant, inp.conversation_id)
        try:
            # The routed model's own tokenizer (turns recorded before routing: the default model's).
            counter = self.registry.adapter(inp.model).counter if inp.model else self.counter
            prompt = await assemble(inp.user_text, history, inp.chunks, inp.budget, counter)
        except PromptTooLong as exc:
            raise ApplicationError(
                str(exc), "prompt_too_long", type="InputRejected", non_retryable=True
            ) from exc
        return AssembleResult(
            messages=prompt.messages,
            prompt_tokens=prompt.prompt_tokens,
            history_used=prompt.history_used,
            chunks_used=prompt.chunks_used,
            compressed=prompt.compressed,
            template_version=TEMPLATE_VERSION,
        )

    async def _owner_of(self, conversation_id: str) -> str:
        async with self.sessions() as session:
            owner = await session.scalar(
                select(Conversation.tenant_id).where(Conversation.id == uuid.UUID(conversation_id))
            )
        return str(owner)

    @activity.defn(name="partial_text")
    async def partial_text(self, inp: TurnRef) -> str:
        """The text streamed so far by the latest attempt (what a cancelled turn keeps)."""
        parts: list[str] = []
        for event in await self.events.read_all(inp.turn_id):
            if event.type == "reset":
                parts.clear()
            elif event.type == "token":
                parts.append(str(event.data["text"]))
        return "".join(parts)
