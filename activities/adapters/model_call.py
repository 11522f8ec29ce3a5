"""One model call as the GenAI semantic conventions describe it: a ``chat {model}`` client span and
the ``gen_ai.*`` metrics (token usage, duration, time to first token, time per output token).

Message content is never put on the span: prompts and replies stay in the encrypted history.
"""

from __future__ import annotations

import asyncio
import time
from types import TracebackType
from urllib.parse import urlsplit

from huggingface_hub.errors import HfHubHTTPError
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from temporalio.exceptions import ApplicationError

from activities.contracts.route import ModelTarget
from activities.contracts.turn import InferInput, InferResult
from infra.telemetry import genai, metrics
from infra.telemetry.span_store import REQUEST_ID, TURN_ID

_tracer = trace.get_tracer("turnflow.inference")
# What huggingface_hub sends as the model to a bare URL; servers echo it back as the response's model.
_URL_PLACEHOLDER = "dummy"


def _error_type(exc: BaseException) -> str:
    """Low-cardinality, as the conventions ask: our error type, the HTTP status, or the class."""
    if isinstance(exc, ApplicationError) and exc.type == "CircuitOpen" and exc.__cause__ is not None:
        return _error_type(exc.__cause__)  # the failure that opened it, not our reaction to it
    if isinstance(exc, ApplicationError) and exc.type:
        return exc.type
    if isinstance(exc, HfHubHTTPError) and exc.response is not None:
        return str(exc.response.status_code)
    return type(exc).__name__


class ModelCall:
    def __init__(self, target: ModelTarget, inp: InferInput) -> None:
        self.target = target
        self.prompt_tokens = inp.prompt_tokens
        self.provider = genai.PROVIDERS.get(target.provider, target.provider)
        self.labels = {
            genai.OPERATION_NAME: genai.CHAT,
            genai.PROVIDER_NAME: self.provider,
            genai.REQUEST_MODEL: target.name,
        }
        self._span: Span = _tracer.start_span(
            f"{genai.CHAT} {target.name}",
            kind=SpanKind.CLIENT,
            attributes={
                **self.labels,
                genai.REQUEST_MAX_TOKENS: inp.max_tokens,
                genai.CONVERSATION_ID: inp.conversation_id,
                genai.SERVER_ADDRESS: urlsplit(target.endpoint).hostname or target.endpoint,
                "turnflow.model.version": target.version,
                TURN_ID: inp.turn_id,
                REQUEST_ID: inp.request_id,
            },
        )
        if inp.temperature is not None:
            self._span.set_attribute(genai.REQUEST_TEMPERATURE, inp.temperature)
        self._started = time.perf_counter()
        self._first_token: float | None = None
        self._use = trace.use_span(self._span, end_on_exit=True)

    def __enter__(self) -> ModelCall:
        self._use.__enter__()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if isinstance(exc, asyncio.CancelledError):
            # The client cancelled the turn: not the model's failure.
            self._span.set_attribute(genai.RESPONSE_FINISH_REASONS, ["cancelled"])
        elif exc is not None:
            self._failed(_error_type(exc))
        self._use.__exit__(exc_type, exc, tb)

    def first_token(self) -> None:
        self._first_token = time.perf_counter()
        self._span.add_event("gen_ai.first_token")

    def _failed(self, error_type: str) -> None:
        self._span.set_attribute(genai.ERROR_TYPE, error_type)
        self._span.set_status(Status(StatusCode.ERROR, error_type))
        labels = {**self.labels, genai.ERROR_TYPE: error_type}
        metrics.operation_duration.record(time.perf_counter() - self._started, labels)
        metrics.model_errors.add(1, {"model": self.target.name, genai.ERROR_TYPE: error_type})

    def finished(self, result: InferResult, response_model: str | None) -> None:
        done = time.perf_counter()
        response = response_model if response_model not in (None, _URL_PLACEHOLDER) else self.target.name
        self._span.set_attributes(
            {
                genai.RESPONSE_MODEL: response,
                genai.RESPONSE_FINISH_REASONS: [result.finish_reason],
                genai.USAGE_OUTPUT_TOKENS: result.output_tokens,
            }
        )
        # The server's count when it reports one, else the prompt as the model's tokenizer counted it.
        input_tokens = result.input_tokens if result.input_tokens is not None else self.prompt_tokens
        if input_tokens is not None:
            self._span.set_attribute(genai.USAGE_INPUT_TOKENS, input_tokens)
        labels = {**self.labels, genai.RESPONSE_MODEL: response}
        metrics.operation_duration.record(done - self._started, labels)
        if input_tokens is not None:
            metrics.token_usage.record(input_tokens, {**labels, genai.TOKEN_TYPE: "input"})
        metrics.token_usage.record(result.output_tokens, {**labels, genai.TOKEN_TYPE: "output"})
        if self._first_token is None:
            return
        metrics.time_to_first_token.record(self._first_token - self._started, labels)
        decode_s = done - self._first_token
        if result.output_tokens > 1 and decode_s > 0:
            metrics.time_per_output_token.record(decode_s / (result.output_tokens - 1), labels)
            metrics.output_tokens_per_second.record((result.output_tokens - 1) / decode_s, labels)
