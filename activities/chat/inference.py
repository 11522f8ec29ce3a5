"""The infer step: stream from the model routing chose, publish every token as it arrives, heartbeat,
and tell the endpoint's circuit breaker how it went.

A retried attempt (after a crash, or a fallback to another model) first publishes a ``reset`` event:
the client discards the partial text it has and the new attempt streams the reply from the start.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime

import httpcore2
import httpx
import httpx2
from huggingface_hub.errors import HfHubHTTPError
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.adapters.breaker import CircuitBreakers
from activities.adapters.model_adapters import ModelAdapter, ToolCallPiece
from activities.adapters.model_call import ModelCall
from activities.adapters.model_registry import ModelRegistry
from activities.adapters.outages import REDIS_UNAVAILABLE, degraded
from activities.adapters.turn_cancels import TurnCancels
from activities.adapters.turn_events import StreamedReply, TurnEvents, TurnPublisher, turn_meta
from activities.contracts.route import ModelTarget
from activities.contracts.sampling import ToolCall
from activities.contracts.turn import InferInput, InferResult
from activities.logic.safety import SafetyEngine

# An endpoint that cannot be reached, drops the stream, or does not answer in time. huggingface_hub's
# client is on httpx2, and a stream's transport errors arrive from httpcore2 unwrapped; our own
# health and tokenize calls are on httpx.
_UNREACHABLE = (
    httpx.HTTPError,
    httpx2.HTTPError,
    httpcore2.NetworkError,
    httpcore2.ProtocolError,
    httpcore2.TimeoutException,
    OSError,
    TimeoutError,
)
# How long a finished reply waits for Redis to take the events it holds (an outage mid-stream).
EVENT_FLUSH_GRACE_S = 30.0


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


class ToolCalls:
    """The tool calls of a reply, put together from their streamed pieces; each piece becomes a
    `tool_call` event in OpenAI's delta form (the first of a call names it, the rest add arguments)."""

    def __init__(self, turn_id: str) -> None:
        self.turn_id = turn_id
        self._calls: dict[int, dict[str, str]] = {}
        self.pieces = 0

    def __bool__(self) -> bool:
        return bool(self._calls)

    def add(self, piece: ToolCallPiece) -> dict[str, object]:
        self.pieces += 1
        event: dict[str, object] = {"index": piece.index, "arguments": piece.arguments}
        if piece.index not in self._calls:
            # A server that names no id gets one that is stable across this turn's replays.
            call_id = piece.id or f"call_{self.turn_id[-12:]}_{piece.index}"
            self._calls[piece.index] = {"id": call_id, "name": piece.name or "", "arguments": ""}
            event |= {"id": call_id, "name": piece.name or ""}
        elif piece.name and not self._calls[piece.index]["name"]:
            self._calls[piece.index]["name"] = piece.name
            event["name"] = piece.name
        self._calls[piece.index]["arguments"] += piece.arguments
        return event

    def done(self) -> list[ToolCall]:
        return [ToolCall(**self._calls[i]) for i in sorted(self._calls)]


class InferenceActivities:
    def __init__(
        self,
        registry: ModelRegistry,
        breakers: CircuitBreakers,
        events: TurnEvents,
        cancels: TurnCancels,
        safety: SafetyEngine,
    ) -> None:
        self.registry = registry
        self.breakers = breakers
        self.events = events
        self.cancels = cancels
        self.safety = safety

    @activity.defn(name="infer")
    async def infer(self, inp: InferInput) -> InferResult:
        """One attempt at one model of the turn's chain (``inp.target``), on the replica routing chose."""
        async with (
            self.cancels.watch(inp.turn_id) as cancelled,
            TurnPublisher(self.events, inp.turn_id) as publisher,
        ):
            return await self._attempt(inp, cancelled, publisher)

    async def _attempt(
        self, inp: InferInput, cancelled: asyncio.Event, publisher: TurnPublisher
    ) -> InferResult:
        target = inp.target
        if target is None:
            raise ApplicationError(
                "infer needs a routed target", type="ModelRequestRejected", non_retryable=True
            )
        if target.name not in self.registry:
            raise ApplicationError(
                f"model {target.name} is no longer in the registry", type="ModelUnknown", non_retryable=True
            )
        if await self.cancels.requested(inp.turn_id):
            return self._cancelled(target, [])  # cancelled before its inference began
        if not await self.breakers.acquire(target.endpoint):
            # Another worker opened this endpoint's circuit since routing: the next model, now.
            raise ApplicationError(f"{target.name}: circuit open", type="CircuitOpen", non_retryable=True)
        attempt = activity.info().attempt
        meta = turn_meta(
            inp.turn_id,
            inp.conversation_id,
            inp.request_id,
            model=target.name,
            model_version=target.version,
            route=inp.route_rule,
            degraded=inp.degraded,
            attempt=attempt,
        )
        first = inp.first_choice and attempt == 1
        if first and activity.info().is_local and await self._began(inp.turn_id):
            # Run again: after its worker died (a reset, then the reply anew), or after Temporal could
            # not take its finished task (the reply its client already has).
            if (earlier := await self._streamed_reply(inp.turn_id)) is not None:
                reply = self._reply_of(target, earlier.text, earlier.tokens, earlier.finish_reason)
                calls = [
                    ToolCall(id=c["id"], name=c["function"]["name"], arguments=c["function"]["arguments"])
                    for c in earlier.tool_calls
                ]
                return reply.model_copy(update={"tool_calls": calls})
            first = False
        await publisher.publish("turn" if first else "reset", meta)
        adapter = self.registry.adapter(target.name)
        with ModelCall(target, inp) as call:
            try:
                async with keep_heartbeating():
                    result = await self._stream_unless_cancelled(
                        adapter, target, inp, call, publisher, cancelled
                    )
                    if not await publisher.flush(EVENT_FLUSH_GRACE_S):
                        activity.logger.warning(
                            "turn %s: %d events never reached Redis; clients get the reply from the"
                            " turn's result",
                            inp.turn_id,
                            len(publisher.pending),
                        )
            except HfHubHTTPError as exc:
                status = exc.response.status_code if exc.response is not None else None
                if status is not None and 400 <= status < 500 and status not in (408, 429):
                    # Our request was wrong, not the endpoint: the breaker does not count it.
                    raise ApplicationError(
                        f"{target.name} refused the request: {exc}",
                        type="ModelRequestRejected",
                        non_retryable=True,
                    ) from exc
                await self._failed(target, exc)
                raise
            except _UNREACHABLE as exc:
                await self._failed(target, exc)
                raise
        # Slowness counts against an endpoint only where a turn could go elsewhere: the last resort,
        # busy, still answers (admission control is what sheds load, with Retry-After).
        slow_counts = self.registry.has_alternative(target.name)
        outcome = self.breakers.outcome_of(result.ttft_ms) if slow_counts else "ok"
        await self.breakers.record(target.endpoint, outcome)
        return result

    async def _stream_unless_cancelled(
        self,
        adapter: ModelAdapter,
        target: ModelTarget,
        inp: InferInput,
        call: ModelCall,
        publisher: TurnPublisher,
        cancelled: asyncio.Event,
    ) -> InferResult:
        """The stream, stopped when the turn is cancelled (TurnCancels) or its deadline passes: what
        was streamed so far is then the reply, ``cancelled`` or ``out_of_time``."""
        parts: list[str] = []
        stream = asyncio.create_task(self._stream(adapter, target, inp, call, publisher, parts))
        watch = asyncio.create_task(cancelled.wait())
        left = (inp.deadline - datetime.now(UTC)).total_seconds() if inp.deadline else None
        try:
            await asyncio.wait({stream, watch}, timeout=left, return_when=asyncio.FIRST_COMPLETED)
            if stream.done():
                return stream.result()
            stream.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await stream
            reason = "cancelled" if watch.done() else "out_of_time"
            activity.logger.info("turn %s %s after %d tokens", inp.turn_id, reason, len(parts))
            return self._cancelled(target, parts, reason)
        finally:
            for task in (stream, watch):
                task.cancel()

    async def _streamed_reply(self, turn_id: str) -> StreamedReply | None:
        try:
            return await self.events.streamed_reply(turn_id)
        except REDIS_UNAVAILABLE as exc:
            degraded("a turn's earlier reply unknown until Redis is back", exc)
            return None

    async def _began(self, turn_id: str) -> bool:
        try:
            return await self.events.began(turn_id)
        except REDIS_UNAVAILABLE as exc:  # a first attempt, as far as anyone can tell
            degraded("a turn's earlier attempt unknown until Redis is back", exc)
            return False

    @classmethod
    def _cancelled(cls, target: ModelTarget, parts: list[str], reason: str = "cancelled") -> InferResult:
        return cls._reply_of(target, "".join(parts), len(parts), reason)

    @staticmethod
    def _reply_of(target: ModelTarget, text: str, tokens: int, finish_reason: str) -> InferResult:
        """A reply not (or no longer) streamed by this attempt: a stopped one, or an earlier run's."""
        return InferResult(
            text=text,
            model=target.name,
            model_version=target.version,
            output_tokens=tokens,
            ttft_ms=None,
            finish_reason=finish_reason,
        )

    async def _failed(self, target: ModelTarget, exc: BaseException) -> None:
        if await self.breakers.record(target.endpoint, "failed") == "open":
            # This failure opened the circuit: give up on the model now rather than retry into it.
            raise ApplicationError(
                f"{target.name}: circuit opened ({exc})", type="CircuitOpen", non_retryable=True
            ) from exc

    async def _stream(
        self,
        adapter: ModelAdapter,
        target: ModelTarget,
        inp: InferInput,
        call: ModelCall,
        publisher: TurnPublisher,
        parts: list[str],
    ) -> InferResult:
        """The reply streamed into ``parts`` (what a cancel keeps) and published token by token."""
        monitor = self.safety.output_monitor()
        start = time.perf_counter()
        ttft_ms: float | None = None
        finish_reason = "stop"
        safety_rule = None
        input_tokens = output_tokens = None
        response_model = None
        calls = ToolCalls(inp.turn_id)
        try:
            async for delta in adapter.stream_chat(
                target.endpoint, inp.messages, inp.max_tokens, inp.temperature, inp.sampling
            ):
                for piece in delta.tool_calls:
                    if ttft_ms is None:
                        ttft_ms = (time.perf_counter() - start) * 1000
                        call.first_token()
                    await publisher.publish("tool_call", calls.add(piece))
                if delta.text:
                    if ttft_ms is None:
                        ttft_ms = (time.perf_counter() - start) * 1000
                        call.first_token()
                    verdict = monitor.feed(delta.text)
                    if not verdict.allowed:
                        finish_reason, safety_rule = "content_filter", verdict.rule
                        break
                    parts.append(delta.text)
                    await publisher.publish("token", {"text": delta.text, "index": len(parts) - 1})
                if delta.finish_reason:
                    finish_reason = delta.finish_reason
                input_tokens = delta.input_tokens or input_tokens
                output_tokens = delta.output_tokens or output_tokens
                response_model = delta.model or response_model
        except asyncio.CancelledError:
            activity.logger.info("turn %s cancelled after %d tokens", inp.turn_id, len(parts))
            raise
        if calls and finish_reason == "stop":
            finish_reason = "tool_calls"  # what OpenAI says; some servers say `stop`
        result = InferResult(
            text="".join(parts),
            model=target.name,
            model_version=target.version,
            input_tokens=input_tokens if safety_rule is None else None,
            # The server's count when it gives one (exact); else one streamed chunk is one token.
            output_tokens=(
                output_tokens if output_tokens and safety_rule is None else len(parts) + calls.pieces
            ),
            ttft_ms=ttft_ms,
            finish_reason=finish_reason,
            safety_rule=safety_rule,
            tool_calls=calls.done(),
        )
        call.finished(result, response_model)
        return result
