"""ChatTurnWorkflow: one chat turn, durably. Validate → retrieve → assemble → infer → persist → moderate.

The quick steps are local activities (no server round trip); inference is a regular activity so it
heartbeats, can be cancelled, and moves to another worker if this one dies. Every step's timeouts,
retries and fallbacks come from temporal.yaml, carried in the input.
"""

from __future__ import annotations

import asyncio
from typing import Any

from temporalio import workflow
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.retrieval import RetrieveInput, RetrieveResult
    from activities.turn_models import (
        AssembleInput,
        AssembleResult,
        ChatTurnInput,
        ChatTurnResult,
        InferInput,
        InferResult,
        ModerationInput,
        PersistInput,
        PersistResult,
        TurnRef,
        TurnStatus,
        ValidateInput,
        ValidateResult,
    )

from workflows.moderation import ModerationWorkflow
from workflows.policy_options import StepFailed, run_with_policy
from workflows.search_attributes import MODEL


def _error_of(exc: StepFailed) -> tuple[str, str, bool]:
    """(code, message, retryable) for the client, from a failed step."""
    cause = exc.reason
    if isinstance(cause, ApplicationError) and cause.type == "InputRejected":
        code = str(cause.details[0]) if cause.details else "input_rejected"
        return code, cause.message, False
    if exc.activity_name.startswith("infer"):
        return "model_unavailable", "the model did not answer; try again", True
    return "turn_failed", f"the turn could not be prepared ({exc.activity_name}); try again", True


@workflow.defn(name="chat_turn")
class ChatTurnWorkflow:
    @workflow.run
    async def run(self, inp: ChatTurnInput) -> ChatTurnResult:
        opts = inp.options
        started = workflow.now()
        # Validation and retrieval run side by side: the text the API hands over is already redacted,
        # so retrieval need not wait for the check (whose verdict still gates everything after).
        validation, retrieval = await asyncio.gather(
            run_with_policy(
                opts,
                "validate_turn",
                ValidateInput(
                    tenant_id=inp.tenant_id, conversation_id=inp.conversation_id, text=inp.user_text
                ),
                ValidateResult,
            ),
            run_with_policy(
                opts,
                "retrieve",
                RetrieveInput(tenant_id=inp.tenant_id, query=inp.user_text, k=inp.retrieval_k),
                RetrieveResult,
            ),
            return_exceptions=True,
        )
        if isinstance(validation, BaseException):
            if isinstance(validation, StepFailed):
                return await self._finish_error(inp, inp.user_text, validation)
            raise validation
        valid, user_text = validation, validation.text
        # Retrieval failing or past its deadline degrades the turn instead of stalling it.
        degraded = False
        if isinstance(retrieval, StepFailed):
            workflow.logger.warning("retrieval failed or timed out; answering without context")
            chunks, degraded = [], True
        elif isinstance(retrieval, BaseException):
            raise retrieval
        else:
            chunks = retrieval.chunks

        try:
            prompt = await run_with_policy(
                opts,
                "assemble_prompt",
                AssembleInput(
                    conversation_id=inp.conversation_id,
                    user_text=user_text,
                    chunks=chunks,
                    budget=inp.context_tokens - inp.max_tokens,
                    history=inp.history,
                ),
                AssembleResult,
            )
        except StepFailed as exc:
            return await self._finish_error(inp, user_text, exc)

        status: TurnStatus = "completed"
        try:
            reply = await run_with_policy(
                opts,
                "infer",
                InferInput(
                    turn_id=inp.turn_id,
                    conversation_id=inp.conversation_id,
                    request_id=inp.request_id,
                    model=inp.model,
                    messages=prompt.messages,
                    max_tokens=inp.max_tokens,
                    temperature=inp.temperature,
                    degraded=degraded,
                ),
                InferResult,
            )
        except asyncio.CancelledError:
            # Cancelled by the client: keep what was streamed, and say so.
            status = "cancelled"
            partial = await run_with_policy(opts, "partial_text", TurnRef(turn_id=inp.turn_id), str)
            reply = InferResult(
                text=partial, model=inp.model, output_tokens=0, ttft_ms=None, finish_reason="cancelled"
            )
        except StepFailed as exc:
            return await self._finish_error(inp, user_text, exc, prompt=prompt)

        if reply.model != inp.model:
            workflow.upsert_search_attributes([MODEL.value_set(reply.model)])
        latency_ms = (workflow.now() - started).total_seconds() * 1000
        saved = await self._persist(
            inp,
            user_text=user_text,
            pii_redacted=bool(valid.pii_counts or inp.pii_counts),
            assistant_text=reply.text,
            status=status,
            model_id=reply.model,
            prompt_template_version=prompt.template_version,
            retrieved_chunks=[
                {
                    "id": c.id,
                    "document_id": c.document_id,
                    "document_version": c.document_version,
                    "embedding_version": c.embedding_version,
                    "score": round(c.score, 4),
                }
                for c in chunks
                if c.id in prompt.chunks_used
            ],
            input_tokens=prompt.prompt_tokens,
            output_tokens=reply.output_tokens,
            ttft_ms=reply.ttft_ms,
            latency_ms=round(latency_ms, 1),
            finish_reason=reply.finish_reason,
            degraded=degraded,
            moderation_pending=bool(reply.text),
        )
        if reply.text:
            await workflow.start_child_workflow(
                ModerationWorkflow.run,
                ModerationInput(
                    options=opts, turn_id=inp.turn_id, message_id=saved.assistant_message_id, text=reply.text
                ),
                id=f"{inp.turn_id}/moderation",
                parent_close_policy=workflow.ParentClosePolicy.ABANDON,
            )
        return ChatTurnResult(
            turn_id=inp.turn_id,
            conversation_id=inp.conversation_id,
            status=status,
            text=reply.text,
            message_id=saved.assistant_message_id,
            model=reply.model,
            finish_reason=reply.finish_reason,
            input_tokens=prompt.prompt_tokens,
            output_tokens=reply.output_tokens,
            ttft_ms=reply.ttft_ms,
            degraded=degraded,
        )

    async def _persist(self, inp: ChatTurnInput, **fields: Any) -> PersistResult:
        """The persist step, with the turn's identifiers filled in."""
        ids = {
            "turn_id": inp.turn_id,
            "tenant_id": inp.tenant_id,
            "conversation_id": inp.conversation_id,
            "request_id": inp.request_id,
        }
        step = PersistInput.model_validate({**ids, **fields})
        return await run_with_policy(inp.options, "persist_turn", step, PersistResult)

    async def _finish_error(
        self, inp: ChatTurnInput, user_text: str, exc: StepFailed, prompt: AssembleResult | None = None
    ) -> ChatTurnResult:
        """Record the user's message with an explicit error reply, and tell the client."""
        code, message, retryable = _error_of(exc)
        error = {"code": code, "message": message, "retryable": retryable}
        await self._persist(
            inp,
            user_text=user_text,
            pii_redacted=bool(inp.pii_counts),
            assistant_text="",
            status="error",
            model_id=inp.model,
            prompt_template_version=prompt.template_version if prompt else None,
            finish_reason="error",
            error=error,
        )
        return ChatTurnResult(
            turn_id=inp.turn_id, conversation_id=inp.conversation_id, status="error", error=error
        )
