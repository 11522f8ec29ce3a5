"""The chat turn's quick steps: validate and assemble the prompt (parts of the prepare step,
activities/chat/prepare_turn.py), and the partial text a cancelled turn keeps (a local activity)."""

from __future__ import annotations

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
from activities.logic.prompt import PromptTooLong, assemble
from activities.logic.safety import SafetyEngine
from infra.config.prompts import DEFAULT_PROMPTS, PromptSpec, base_prompt


class TurnSteps:
    def __init__(
        self,
        safety: SafetyEngine,
        transcript: Transcript,
        events: TurnEvents,
        registry: ModelRegistry,
        prompts: dict[str, PromptSpec] | None = None,
    ) -> None:
        self.registry = registry
        self.prompts = prompts or DEFAULT_PROMPTS
        self.safety = safety
        self.transcript = transcript
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
            history = await self.transcript.recent(inp.tenant_id, inp.conversation_id)
        # A template dropped from temporal.yaml since routing chose it: the base serves.
        template = inp.template if inp.template in self.prompts else base_prompt(self.prompts)
        try:
            # The routed model's own tokenizer and chat template.
            counter = self.registry.adapter(inp.model).counter
            prompt = await assemble(
                inp.user_text,
                history,
                inp.chunks,
                inp.budget,
                counter,
                system=self.prompts[template].system,
                images=inp.images,
                tool_exchange=inp.tool_exchange,
            )
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
            template_version=template,
            tokens_estimated=counter.estimated,
        )

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
