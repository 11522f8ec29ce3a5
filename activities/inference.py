"""The infer step: stream from the model server, publish every token as it arrives, heartbeat.

A retried attempt (after a crash, or a fallback to another model) first publishes a ``reset`` event:
the client discards the partial text it has and the new attempt streams the reply from the start.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from huggingface_hub import AsyncInferenceClient
from huggingface_hub.errors import HfHubHTTPError
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.safety import OutputMonitor, SafetyEngine
from activities.turn_events import TurnEvents
from activities.turn_models import InferInput, InferResult


@asynccontextmanager
async def keep_heartbeating() -> AsyncIterator[None]:
    """Heartbeat on a clock, not per token: a long prefill is not a dead worker, a dead process is.

    Cancellation also arrives through heartbeats, so this keeps cancel latency near the interval.
    """
    if activity.info().is_local:
        yield  # a local activity lives inside its workflow task, which has its own liveness
        return
    timeout = activity.info().heartbeat_timeout
    interval = min(timeout.total_seconds() / 3, 1.0) if timeout else 1.0

    async def beat() -> None:
        while True:
            activity.heartbeat()
            await asyncio.sleep(interval)

    task = asyncio.create_task(beat())
    try:
        yield
    finally:
        task.cancel()


class ModelEndpoint:
    def __init__(self, name: str, client: AsyncInferenceClient) -> None:
        self.name = name
        self.client = client


class InferenceActivities:
    def __init__(
        self, primary: ModelEndpoint, fallback: ModelEndpoint, events: TurnEvents, safety: SafetyEngine
    ) -> None:
        self.primary = primary
        self.fallback = fallback
        self.events = events
        self.safety = safety

    @activity.defn(name="infer")
    async def infer(self, inp: InferInput) -> InferResult:
        return await self._generate(self.primary, inp, first_choice=True)

    @activity.defn(name="infer_fallback")
    async def infer_fallback(self, inp: InferInput) -> InferResult:
        return await self._generate(self.fallback, inp, first_choice=False)

    async def _generate(self, endpoint: ModelEndpoint, inp: InferInput, *, first_choice: bool) -> InferResult:
        attempt = activity.info().attempt
        meta = {
            "turn_id": inp.turn_id,
            "conversation_id": inp.conversation_id,
            "request_id": inp.request_id,
            "model": endpoint.name,
            "degraded": inp.degraded,
            "attempt": attempt,
        }
        await self.events.publish(inp.turn_id, "turn" if first_choice and attempt == 1 else "reset", meta)
        monitor = self.safety.output_monitor()
        try:
            async with keep_heartbeating():
                return await self._stream(endpoint, inp, monitor)
        except HfHubHTTPError as exc:
            status = exc.response.status_code if exc.response is not None else None
            if status is not None and 400 <= status < 500 and status not in (408, 429):
                raise ApplicationError(
                    f"{endpoint.name} refused the request: {exc}",
                    type="ModelRequestRejected",
                    non_retryable=True,
                ) from exc
            raise

    async def _stream(self, endpoint: ModelEndpoint, inp: InferInput, monitor: OutputMonitor) -> InferResult:
        start = time.perf_counter()
        ttft_ms: float | None = None
        parts: list[str] = []
        finish_reason = "stop"
        safety_rule = None
        try:
            stream = await endpoint.client.chat_completion(
                messages=inp.messages,
                max_tokens=inp.max_tokens,
                temperature=inp.temperature,
                stream=True,
            )
            async for chunk in stream:
                if not chunk.choices:
                    continue
                choice = chunk.choices[0]
                delta = choice.delta.content or ""
                if delta:
                    if ttft_ms is None:
                        ttft_ms = (time.perf_counter() - start) * 1000
                    verdict = monitor.feed(delta)
                    if not verdict.allowed:
                        finish_reason, safety_rule = "content_filter", verdict.rule
                        break
                    parts.append(delta)
                    await self.events.publish(inp.turn_id, "token", {"text": delta, "index": len(parts) - 1})
                if choice.finish_reason:
                    finish_reason = choice.finish_reason
        except asyncio.CancelledError:
            activity.logger.info("turn %s cancelled after %d tokens", inp.turn_id, len(parts))
            raise
        return InferResult(
            text="".join(parts),
            model=endpoint.name,
            output_tokens=len(parts),
            ttft_ms=ttft_ms,
            finish_reason=finish_reason,
            safety_rule=safety_rule,
        )
