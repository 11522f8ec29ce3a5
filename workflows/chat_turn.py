"""ChatTurnWorkflow: one chat turn, durably. Prepare (validate ∥ retrieve ∥ route, then assemble) →
infer → persist → moderate.

Every step is a local activity by default, so the whole turn is one workflow task: no server round
trip before the first token or after the last (README, "Latency"; temporal.yaml says how inference
is cancelled and how a dead worker is noticed). Every step's timeouts, retries and fallbacks come
from temporal.yaml, carried in the input.

A turn is pinned to the build it started on (Worker Versioning, infra/runtime/deployments.py): it
finishes on that build's workers, so a new build changes this code freely, with no `workflow.patched`.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from temporalio import workflow
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.contracts.route import RouteDecision, RouteRequest
    from activities.contracts.turn import (
        AssembleResult,
        CachedReply,
        CachePut,
        ChatTurnInput,
        ChatTurnResult,
        InferInput,
        InferResult,
        ModerationInput,
        PersistInput,
        PersistResult,
        PrepareInput,
        PrepareResult,
        RetrieveInput,
        ServeCachedInput,
        SourcesInput,
        TurnRef,
        TurnStatus,
        ValidateInput,
        WebhookDelivery,
        WebhookInput,
    )
    from infra.config.policy import WorkflowOptions

from workflows.policy_options import StepFailed, run_with_policy
from workflows.search_attributes import MODEL, TENANT
from workflows.webhook import DeliverWebhookWorkflow

# Of its whole-turn timeout, what a turn keeps to stop its step in progress (which may take a
# heartbeat or two) and record that it ran out; at most a third of it.
DEADLINE_RESERVE = timedelta(seconds=15)
# Tokens an answer from the sources may take however short the reply's own budget.
SOURCES_MIN_BUDGET = 96


def _error_of(exc: StepFailed) -> tuple[str, str, bool]:
    """(code, message, retryable) for the client, from a failed step."""
    cause = exc.reason
    if isinstance(cause, ApplicationError) and cause.type == "InputRejected":
        code = str(cause.details[0]) if cause.details else "input_rejected"
        return code, cause.message, False
    if isinstance(cause, ApplicationError) and cause.type == "RouteRefused":
        return str(cause.details[0]), cause.message, bool(cause.details[1])
    if exc.activity_name.startswith("infer"):
        return "model_unavailable", "the model did not answer; try again", True
    return "turn_failed", f"the turn could not be prepared ({exc.activity_name}); try again", True


@dataclass
class _Generated:
    reply: InferResult
    status: TurnStatus
    fallbacks: list[dict[str, str]]
    # Where the reply came from when no model made it now: the response cache, or the sources.
    cached: CachedReply | None = None
    degraded_mode: str | None = None


@workflow.defn(name="chat_turn")
class ChatTurnWorkflow:
    # Set when the turn's own deadline cancels it (as opposed to a client's cancel).
    _out_of_time = False
    # The user's text as validation left it, once it has (what a turn that runs out records).
    _user_text: str | None = None
    # The reply to moderate once the turn's result stands.
    _moderation: ModerationInput | None = None
    # When inference must stop for the turn to end within its whole-turn timeout.
    _deadline: datetime | None = None

    @workflow.run
    async def run(self, inp: ChatTurnInput) -> ChatTurnResult:
        result = await self._turn_by_deadline(inp)
        if self._moderation is not None:
            await self._moderate(self._moderation)
        if inp.webhook_url:
            # Non-interactive callers may ask to be told; delivery is a child of its own, so the turn
            # ends now (polls see it completed) however long the receiver takes to accept it.
            webhook = WebhookInput(url=inp.webhook_url, result=result, tenant_id=inp.tenant_id)
            await workflow.start_child_workflow(
                DeliverWebhookWorkflow.run,
                WebhookDelivery(options=inp.options, webhook=webhook),
                id=f"{inp.turn_id}/webhook",
                parent_close_policy=workflow.ParentClosePolicy.ABANDON,
            )
        return result

    @staticmethod
    async def _moderate(moderation: ModerationInput) -> None:
        """Out of band for the client (its `done` is out; the verdict follows as an event of its own)
        and outside the turn's deadline, but in the turn's own workflow, as a local activity: a child
        workflow per turn cost about as much Temporal work as the whole turn (measured: half the
        server's CPU per turn). A moderation that fails leaves the reply standing, unmoderated."""
        try:
            await run_with_policy(moderation.options, "moderate_message", moderation, bool)
        except StepFailed as exc:
            workflow.logger.warning("no moderation verdict for %s: %s", moderation.message_id, exc)
            unavailable = moderation.model_copy(update={"unavailable": True})
            try:  # the tenant's fail-open or fail-closed choice, recorded
                await run_with_policy(moderation.options, "moderate_message", unavailable, bool)
            except StepFailed as again:
                workflow.logger.warning("moderation of %s did not run: %s", moderation.message_id, again)

    async def _turn_by_deadline(self, inp: ChatTurnInput) -> ChatTurnResult:
        """The turn, ended by the workflow itself shortly before the whole-turn timeout would end it
        without a trace: one that runs out of time is recorded with an explicit, retryable error."""
        timeout = workflow.info().execution_timeout
        if not timeout:
            return await self._turn(inp)
        budget = timeout - min(DEADLINE_RESERVE, timeout / 3)
        # A local inference stops by itself at this time (InferInput.deadline): the timer below
        # reaches a workflow task busy with it only at the task's next heartbeat.
        self._deadline = workflow.now() + budget
        turn = asyncio.create_task(self._turn(inp))
        try:
            await workflow.wait_condition(turn.done, timeout=budget)
        except TimeoutError:
            if self._out_of_time:  # inference stopped at the deadline itself: its record is under way
                return await turn
            self._out_of_time = True
            turn.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await turn
            return await self._record_timed_out(inp)
        except asyncio.CancelledError:
            # Cancelled by the client: the turn keeps what was streamed (see _turn) and ends.
            turn.cancel()
            return await turn
        return turn.result()

    async def _record_timed_out(self, inp: ChatTurnInput) -> ChatTurnResult:
        timeout = workflow.info().execution_timeout
        limit = f"{timeout.total_seconds():g} s" if timeout else "unset"
        message = f"the turn ran out of time (its whole-turn timeout is {limit}); try again"
        return await self._record_error(
            inp,
            self._user_text or inp.user_text,
            {"code": "turn_timed_out", "message": message, "retryable": True},
        )

    async def _turn(self, inp: ChatTurnInput) -> ChatTurnResult:
        """The turn's phases in order: each returns what the next needs, or the turn's result when it
        ended there (an error already recorded)."""
        started = workflow.now()
        prepared = await self._prepare(inp)
        if isinstance(prepared, ChatTurnResult):
            return prepared
        generated = await self._generate(inp, prepared)
        if isinstance(generated, ChatTurnResult):
            return generated
        return await self._record(inp, prepared, generated, started)

    async def _prepare(self, inp: ChatTurnInput) -> PrepareResult | ChatTurnResult:
        """Validation, retrieval and routing side by side, then the prompt: one local activity
        (activities/chat/prepare_turn.py). A refusal ends the turn with its code; retrieval that
        fails or runs past its deadline degrades it instead."""
        opts = inp.options
        step = PrepareInput(
            check=ValidateInput(
                tenant_id=inp.tenant_id,
                conversation_id=inp.conversation_id,
                text=inp.user_text,
                pii_policy=inp.pii_policy,
            ),
            retrieve=RetrieveInput(tenant_id=inp.tenant_id, query=inp.user_text, k=inp.retrieval_k),
            route=RouteRequest(
                tenant_id=inp.tenant_id,
                conversation_id=inp.conversation_id,
                turn_id=inp.turn_id,
                requested_model=inp.model,
                latency_budget_ms=inp.latency_budget_ms,
                interactive=inp.interactive,
                max_tokens=inp.max_tokens,
            ),
            retrieval=opts.activity("retrieve"),
            history=inp.history,
            images=inp.images,
            tool_exchange=inp.tool_exchange,
            temperature=inp.temperature,
            sampling=inp.sampling,
        )
        try:
            found = await run_with_policy(opts, "prepare_turn", step, PrepareResult)
        except StepFailed as exc:
            # The text the API hands over is the one its own check already redacted.
            return await self._finish_error(inp, inp.user_text, exc)
        self._user_text = found.user_text
        self._set_model(found.route.chain[0].name)
        if found.degraded:
            workflow.logger.warning("retrieval failed or timed out; answering without context")
        return found

    async def _generate(self, inp: ChatTurnInput, prep: PrepareResult) -> _Generated | ChatTurnResult:
        """Inference along the route's chain (or the response cache's reply); a client's cancel keeps
        what was streamed; when every model fails, an answer from the sources if there is one."""
        opts, route, prompt = inp.options, prep.route, prep.prompt
        if prep.cache is not None and prep.cache.hit is not None:
            return await self._serve_cached(inp, prep, prep.cache.hit)
        if inp.sources_only or route.unavailable:  # shed at capacity, or every circuit open: no model
            reason = "overloaded" if inp.sources_only else "models_failed"
            if (answered := await self._answer_from_sources(inp, prep, [], reason)) is not None:
                return answered
            error = {
                "code": reason if inp.sources_only else "model_unavailable",
                "message": route.unavailable
                or "every model is busy and no passage answers the question; try again",
                "retryable": True,
            }
            return await self._record_error(inp, prep.user_text, error, prompt, route)
        infer = InferInput(
            turn_id=inp.turn_id,
            conversation_id=inp.conversation_id,
            request_id=inp.request_id,
            model=inp.model or "",
            messages=prompt.messages,
            max_tokens=route.max_tokens,
            temperature=inp.temperature,
            sampling=inp.sampling,
            degraded=prep.degraded,
            prompt_tokens=prompt.prompt_tokens,
            deadline=self._deadline,
        )
        fallbacks: list[dict[str, str]] = []
        try:
            reply = await self._infer_along(opts, route, infer, fallbacks)
        except asyncio.CancelledError:
            if self._out_of_time:
                raise  # not the client: the turn's deadline (recorded by _turn_by_deadline)
            # Cancelled by the client: keep what was streamed, and say so.
            partial = await run_with_policy(opts, "partial_text", TurnRef(turn_id=inp.turn_id), str)
            served = route.chain[len(fallbacks)]
            reply = InferResult(
                text=partial,
                model=served.name,
                model_version=served.version,
                output_tokens=0,
                ttft_ms=None,
                finish_reason="cancelled",
            )
            return _Generated(reply, "cancelled", fallbacks)
        except StepFailed as exc:
            if (
                answered := await self._answer_from_sources(inp, prep, fallbacks, "models_failed")
            ) is not None:
                return answered
            return await self._finish_error(
                inp, prep.user_text, exc, prompt=prompt, route=route, fallbacks=fallbacks
            )
        if reply.finish_reason == "out_of_time":  # it stopped at the turn's deadline
            self._out_of_time = True
            return await self._record_timed_out(inp)
        # Stopped by the turn's cancel flag (the API's cancel): the reply is what was streamed.
        status: TurnStatus = "cancelled" if reply.finish_reason == "cancelled" else "completed"
        return _Generated(reply, status, fallbacks)

    async def _serve_cached(self, inp: ChatTurnInput, prep: PrepareResult, hit: CachedReply) -> _Generated:
        step = ServeCachedInput(
            turn_id=inp.turn_id,
            conversation_id=inp.conversation_id,
            request_id=inp.request_id,
            target=prep.route.chain[0],
            route_rule=prep.route.rule,
            cached=hit,
            started=workflow.info().start_time,
        )
        reply = await run_with_policy(inp.options, "serve_cached", step, InferResult)
        return _Generated(reply, "completed", [], cached=hit)

    async def _answer_from_sources(
        self, inp: ChatTurnInput, prep: PrepareResult, fallbacks: list[dict[str, str]], reason: str
    ) -> _Generated | None:
        """The sources' own sentences, when the tenant allows it and retrieval found passages."""
        used = [c for c in prep.chunks if c.id in prep.prompt.chunks_used] or prep.chunks
        if not (prep.degraded_answers and used):
            return None
        step = SourcesInput(
            turn_id=inp.turn_id,
            tenant_id=inp.tenant_id,
            conversation_id=inp.conversation_id,
            request_id=inp.request_id,
            question=prep.user_text,
            chunks=used,
            # The reply's budget, but room for one cited sentence at least (a whole one or none).
            budget=max(prep.route.max_tokens, SOURCES_MIN_BUDGET),
            reason=reason,
        )
        try:
            reply = await run_with_policy(inp.options, "answer_from_sources", step, InferResult)
        except StepFailed as exc:
            workflow.logger.warning("no answer from the sources either: %s", exc)
            return None
        return _Generated(reply, "completed", fallbacks, degraded_mode="extractive")

    async def _record(
        self, inp: ChatTurnInput, prep: PrepareResult, gen: _Generated, started: datetime
    ) -> ChatTurnResult:
        """The exchange persisted with its provenance, moderation queued, and the turn's result."""
        route, reply, prompt = prep.route, gen.reply, prep.prompt
        modelless = gen.cached is not None or gen.degraded_mode is not None
        if reply.model != route.chain[0].name and not modelless:
            self._set_model(reply.model)
        # A reply no model made now (cached, or from the sources) cost no model tokens.
        input_tokens = 0 if modelless else reply.input_tokens or prompt.prompt_tokens
        served = route.chain[0] if modelless else next(t for t in route.chain if t.name == reply.model)
        cost = served.cost(input_tokens, reply.output_tokens)
        latency_ms = (workflow.now() - started).total_seconds() * 1000
        saved = await self._persist(
            inp,
            user_text=prep.user_text,
            pii_redacted=bool(prep.validation.pii_counts or inp.pii_counts),
            assistant_text=reply.text,
            status=gen.status,
            model_id=reply.model,
            model_version=reply.model_version,
            prompt_template_version=prompt.template_version,
            retrieved_chunks=[
                {
                    "id": c.id,
                    "document_id": c.document_id,
                    "document_version": c.document_version,
                    "embedding_version": c.embedding_version,
                    "score": round(c.score, 4),
                }
                for c in prep.chunks
                if c.id in prompt.chunks_used
            ],
            input_tokens=input_tokens,
            output_tokens=reply.output_tokens,
            ttft_ms=reply.ttft_ms,
            latency_ms=round(latency_ms, 1),
            finish_reason=reply.finish_reason,
            degraded=prep.degraded,
            # A cached reply carries the verdict of the turn it came from (only clean ones are kept).
            moderation_pending=bool(reply.text) and gen.cached is None,
            route={
                **(self._route_record(route, gen.fallbacks, served=reply.model, prompt=prompt) or {}),
                **self._origin(gen),
            },
            cost_usd=cost,
            interactive=inp.interactive,
            tool_calls=reply.tool_calls,
            cached_from=gen.cached,
            degraded_mode=gen.degraded_mode,
            images=inp.images,
            tool_exchange=inp.tool_exchange,
        )
        if reply.text and gen.cached is None:
            put = self._cache_put(inp, prep, gen, saved.assistant_message_id)
            self._queue_moderation(inp, saved.assistant_message_id, reply.text, put, prep.user_text)
        return ChatTurnResult(
            turn_id=inp.turn_id,
            conversation_id=inp.conversation_id,
            status=gen.status,
            text=reply.text,
            message_id=saved.assistant_message_id,
            model=reply.model,
            model_version=reply.model_version,
            route_rule=route.rule,
            finish_reason=reply.finish_reason,
            input_tokens=input_tokens,
            output_tokens=reply.output_tokens,
            cost_usd=cost,
            ttft_ms=reply.ttft_ms,
            degraded=prep.degraded,
            tool_calls=reply.tool_calls,
            degraded_mode=gen.degraded_mode,
            cached=gen.cached is not None,
        )

    @staticmethod
    def _origin(gen: _Generated) -> dict[str, object]:
        """On the reply's route record: that it came from the cache (and whence), or the sources."""
        if gen.cached is not None:
            return {
                "cache": {"hit": True, "turn_id": gen.cached.turn_id, "message_id": gen.cached.message_id}
            }
        if gen.degraded_mode is not None:
            return {"degraded": gen.degraded_mode}
        return {}

    @staticmethod
    def _cache_put(
        inp: ChatTurnInput, prep: PrepareResult, gen: _Generated, message_id: str
    ) -> CachePut | None:
        """What the response cache keeps of this reply, once moderation finds it clean: a whole
        reply of the model the key names, to a turn that had its context."""
        reply, first = gen.reply, prep.route.chain[0]
        whole = (
            gen.status == "completed" and reply.finish_reason in ("stop", "length") and not reply.tool_calls
        )
        if prep.cache is None or not whole or gen.degraded_mode or prep.degraded or reply.model != first.name:
            return None
        cached = CachedReply(
            text=reply.text,
            model=reply.model,
            model_version=reply.model_version,
            finish_reason=reply.finish_reason,
            turn_id=inp.turn_id,
            message_id=message_id,
            conversation_id=inp.conversation_id,
        )
        return CachePut(tenant_id=inp.tenant_id, key=prep.cache.key, reply=cached)

    def _queue_moderation(
        self,
        inp: ChatTurnInput,
        message_id: str,
        text: str,
        cache: CachePut | None = None,
        question: str | None = None,
    ) -> None:
        """Moderated by run(), once the turn's result stands."""
        self._moderation = ModerationInput(
            options=inp.options,
            turn_id=inp.turn_id,
            message_id=message_id,
            text=text,
            cache=cache,
            question=question,
        )

    async def _infer_along(
        self, opts: WorkflowOptions, route: RouteDecision, infer: InferInput, fallbacks: list[dict[str, str]]
    ) -> InferResult:
        """Each model of the chain in turn, under the infer step's retry policy, until one answers.
        ``fallbacks`` collects the models that failed and why."""
        for position, target in enumerate(route.chain):
            attempt = infer.model_copy(
                update={
                    "model": target.name,
                    "target": target,
                    "route_rule": route.rule,
                    "first_choice": position == 0,
                }
            )
            try:
                result: InferResult = await run_with_policy(opts, "infer", attempt, InferResult)
                return result
            except StepFailed as exc:
                reason = exc.reason
                kind = reason.type if isinstance(reason, ApplicationError) and reason.type else "error"
                fallbacks.append({"model": target.name, "error": kind})
                if position == len(route.chain) - 1:
                    raise
                workflow.logger.warning(
                    "%s failed (%s); falling back to %s", target.name, kind, route.chain[position + 1].name
                )
        raise AssertionError("unreachable: a route's chain is never empty")

    @staticmethod
    def _set_model(name: str) -> None:
        """The model, as a search attribute, for runs started with turnflow's attributes (registered)."""
        if workflow.info().typed_search_attributes.get(TENANT) is not None:
            workflow.upsert_search_attributes([MODEL.value_set(name)])

    @staticmethod
    def _route_record(
        route: RouteDecision | None,
        fallbacks: list[dict[str, str]],
        served: str | None,
        prompt: AssembleResult | None = None,
    ) -> dict[str, object] | None:
        """What the transcript keeps about how the model was chosen (and, when it was so, that the
        prompt's tokens were estimated for want of the model's tokenizer)."""
        if route is None:
            return None
        estimated = (
            {"prompt_tokens_estimated": True} if prompt is not None and prompt.tokens_estimated else {}
        )
        return {
            **estimated,
            "rule": route.rule,
            "reason": route.reason,
            "chain": [f"{t.name}@{t.version}" for t in route.chain],
            "endpoints": {t.name: t.endpoint for t in route.chain},
            "skipped": route.skipped,
            "fallbacks": fallbacks,
            "served_by": served,
            "canary": any(t.canary and t.name == served for t in route.chain),
            "max_tokens": route.max_tokens,
            "arm": route.arm,
            "prompt_arm": route.prompt_arm,
        }

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
        self,
        inp: ChatTurnInput,
        user_text: str,
        exc: StepFailed,
        prompt: AssembleResult | None = None,
        route: RouteDecision | None = None,
        fallbacks: list[dict[str, str]] | None = None,
    ) -> ChatTurnResult:
        """Record the user's message with an explicit error reply, and tell the client."""
        code, message, retryable = _error_of(exc)
        error = {"code": code, "message": message, "retryable": retryable}
        return await self._record_error(inp, user_text, error, prompt, route, fallbacks)

    async def _record_error(
        self,
        inp: ChatTurnInput,
        user_text: str,
        error: dict[str, object],
        prompt: AssembleResult | None = None,
        route: RouteDecision | None = None,
        fallbacks: list[dict[str, str]] | None = None,
    ) -> ChatTurnResult:
        await self._persist(
            inp,
            user_text=user_text,
            pii_redacted=bool(inp.pii_counts),
            assistant_text="",
            status="error",
            model_id=route.chain[0].name if route else inp.model,
            prompt_template_version=prompt.template_version if prompt else None,
            finish_reason="error",
            error=error,
            route=self._route_record(route, fallbacks or [], served=None, prompt=prompt),
            interactive=inp.interactive,
        )
        return ChatTurnResult(
            turn_id=inp.turn_id, conversation_id=inp.conversation_id, status="error", error=error
        )
