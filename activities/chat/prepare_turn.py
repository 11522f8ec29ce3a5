"""The turn's first step: everything before inference, in one local activity.

Validation, retrieval and routing run side by side (the text the API hands over is already redacted,
so retrieval need not wait for the check, whose verdict still gates what follows), then the prompt is
assembled. As four local activities these cost the turn three more activations of the workflow and
their markers: ~4 ms of Temporal's own floor before the first token and ~5 ms of CPU
(bench/temporal_floor.py, docs/performance.md: issue 17); each is still a span of its own, under
this step's.

Refusals end the turn with their code: InputRejected (validation, a prompt that cannot fit) and
RouteRefused (routing), both non-retryable. Retrieval that fails or runs past its deadline (its own
temporal.yaml policy) degrades the turn instead. Any other failure fails the step, and its policy
retries it whole: every part of it only reads.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import TypeVar

from opentelemetry import trace
from temporalio import activity

from activities.adapters.outages import REDIS_UNAVAILABLE, degraded
from activities.adapters.response_cache import ResponseCache, cache_key
from activities.chat.retrieval import RetrievalActivities
from activities.chat.route_turn import RouteActivities
from activities.chat.step_policy import within_policy
from activities.chat.turn_steps import TurnSteps
from activities.contracts.turn import (
    AssembleInput,
    CacheLookup,
    PrepareInput,
    PrepareResult,
    RetrieveResult,
)
from infra.telemetry import metrics

log = logging.getLogger("turnflow.turns")
tracer = trace.get_tracer("turnflow.turns")

T = TypeVar("T")


async def _step(name: str, work: Awaitable[T]) -> T:
    with tracer.start_as_current_span(name):
        return await work


class TurnPreparation:
    def __init__(
        self,
        steps: TurnSteps,
        retrieval: RetrievalActivities,
        router: RouteActivities,
        cache: ResponseCache | None = None,
        moderator: str = "rules",
    ) -> None:
        self.steps = steps
        self.retrieval = retrieval
        self.router = router
        self.cache = cache
        # Who moderates replies now: a cached reply another moderator cleared is not served.
        self.moderator = moderator

    @activity.defn(name="prepare_turn")
    async def prepare_turn(self, inp: PrepareInput) -> PrepareResult:
        validation, retrieval, route = await asyncio.gather(
            _step("validate_turn", self.steps.validate_turn(inp.check)),
            _step("retrieve", self._retrieve(inp)),
            _step("route_turn", self.router.route_turn(inp.route)),
            return_exceptions=True,
        )
        # The check's verdict first: a refused input is refused whatever routing said.
        if isinstance(validation, BaseException):
            raise validation
        if isinstance(route, BaseException):
            raise route
        assert not isinstance(retrieval, BaseException)  # _retrieve turns its failures into None
        assemble = AssembleInput(
            tenant_id=inp.check.tenant_id,
            conversation_id=inp.check.conversation_id,
            model=route.chain[0].name,
            user_text=validation.text,
            chunks=retrieval.chunks if retrieval else [],
            budget=route.prompt_budget,
            history=inp.history,
            images=inp.images,
            tool_exchange=inp.tool_exchange,
            template=route.prompt_arm["template"] if route.prompt_arm else None,
        )
        prompt = await _step("assemble_prompt", self.steps.assemble_prompt(assemble))
        found = PrepareResult(validation=validation, route=route, retrieval=retrieval, prompt=prompt)
        policy = await self.router.tenant_policy(inp.check.tenant_id)
        found.degraded_answers = policy.degraded_answers
        if self.cache is not None and self._repeatable(inp, found, policy.response_cache):
            found.cache = await _step("response_cache", self._look_up(inp, found))
        return found

    def _repeatable(self, inp: PrepareInput, found: PrepareResult, mode: str) -> bool:
        """Whether this request's answer is meant to repeat: temperature 0 (the request's, else the
        model's default), or a tenant that asked for exact caching; never with tools or images,
        whose answers depend on more than the prompt's text."""
        if mode == "off" or inp.images or (inp.sampling and inp.sampling.tools):
            return False
        target = found.route.chain[0]
        temperature = inp.temperature
        if temperature is None:
            temperature = self.router.registry.spec(target.name).params.temperature
        return mode == "exact" or temperature == 0

    async def _look_up(self, inp: PrepareInput, found: PrepareResult) -> CacheLookup | None:
        assert self.cache is not None
        prompt, target = found.prompt, found.route.chain[0]
        key = cache_key(
            target,
            prompt.template_version,
            prompt.messages,
            [c for c in found.chunks if c.id in prompt.chunks_used],
            inp.temperature,
            found.route.max_tokens,
            inp.sampling,
            found.validation.safety_version,
        )
        try:
            hit = await self.cache.get(inp.check.tenant_id, key)
        except REDIS_UNAVAILABLE as exc:
            degraded("the response cache skipped until Redis is back", exc)
            return None
        # A hit from another model version (a canary's share moved) is not this turn's answer, nor
        # one a moderator other than today's cleared.
        if hit is not None and (
            (hit.model, hit.model_version) != (target.name, target.version)
            or (hit.moderator or "").split(" ")[0] != self.moderator
        ):
            hit = None
        metrics.response_cache.add(1, {"result": "hit" if hit else "miss"})
        return CacheLookup(key=key, hit=hit)

    async def _retrieve(self, inp: PrepareInput) -> RetrieveResult | None:
        """The tenant's context, or None past retrieval's deadline or retries (the turn degrades)."""
        try:
            return await within_policy(inp.retrieval, lambda: self.retrieval.retrieve(inp.retrieve))
        except Exception as exc:
            log.warning("retrieval failed or timed out; answering without context: %r", exc)
            return None
